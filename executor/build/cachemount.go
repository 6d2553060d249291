package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/copier"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// cacheStore holds the directories of RUN --mount=type=cache for one
// build, as BuildKit's cache mounts live as long as its daemon (here: the
// executor's build). They are in the work directory, outside every stage
// root, in a directory only the executor may enter (0700), and are moved
// into a stage's root for the step that mounts them and moved back after
// it (copied where the two are on different file systems): their content
// is never in a layer nor in a cache key.
//
// A cache is found by its key (see cacheKey): the mount's id and what it
// starts from. A key may have several instances, as BuildKit's cache
// records may: a step takes a free one; when every one is busy,
// sharing=private makes a new one and sharing=locked waits. Without
// mount(2) a directory cannot be in two roots at once, so sharing=shared
// (the default) waits too: two stages' steps use the cache one after the
// other, each seeing what the other wrote, rather than at the same time.
type cacheStore struct {
	dir string // created on first use

	// Kept between builds (see mountpersist.go): persist says how (nil:
	// none is), platforms are the build's target platforms (in the keys),
	// persisted the caches of the build that are kept, by cacheKey.
	persist *CacheMounts
	state   *State
	// The restores under way (mountpersist.go), and how to stop them.
	restores     sync.WaitGroup
	restoreCtx   context.Context
	stopRestores context.CancelFunc
	platforms    string
	persisted    map[string]*persisted
	log          io.Writer
	rootfsOpts   []rootfs.Option

	mu   sync.Mutex
	keys map[string]*cacheKeyState
	next int // names instances
	// seeded lists, for each instance of a cache that starts from a tree
	// (from=), the paths of the tree copied into it so far (see seed).
	seeded map[string][]string
}

type cacheKeyState struct {
	free  []string      // instances not in use, by directory name
	n     int           // instances in all
	freed chan struct{} // closed, and replaced, when one is given back
	// restoreTaken is set once the first instance asked for the saved
	// mount (which it is, when one was restored).
	restoreTaken bool
}

func newCacheStore(dir string) *cacheStore {
	return &cacheStore{dir: dir, keys: map[string]*cacheKeyState{}, seeded: map[string][]string{}, persisted: map[string]*persisted{}, log: io.Discard}
}

// acquire takes an instance of the cache key for one step. fresh is true
// when it is new: its directory does not exist yet and the caller makes
// (and seeds) it at filepath.Join(s.dir, name).
func (s *cacheStore) acquire(ctx context.Context, key string, sharing instructions.ShareMode) (name string, fresh bool, err error) {
	for {
		s.mu.Lock()
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			s.mu.Unlock()
			return "", false, fmt.Errorf("creating the cache mount store: %w", err)
		}
		st := s.keys[key]
		if st == nil {
			st = &cacheKeyState{freed: make(chan struct{})}
			s.keys[key] = st
		}
		if n := len(st.free); n > 0 {
			name = st.free[n-1]
			st.free = st.free[:n-1]
			s.mu.Unlock()
			return name, false, nil
		}
		if st.n == 0 && !st.restoreTaken {
			// The first instance is the saved mount's, when there is one
			// (mountpersist.go): it is reserved while its restore ends, so
			// that other steps wait for it as for any busy instance.
			st.restoreTaken = true
			st.n++
			s.next++
			sum := sha256.Sum256([]byte(key))
			name = fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:8]), s.next)
			s.mu.Unlock()
			restored, err := s.takeRestored(ctx, key)
			if err != nil {
				s.mu.Lock()
				st.n--
				st.restoreTaken = false
				close(st.freed)
				st.freed = make(chan struct{})
				s.mu.Unlock()
				return "", false, err
			}
			if restored != "" {
				return restored, false, nil
			}
			return name, true, nil
		}
		if st.n == 0 || sharing == instructions.MountSharingPrivate {
			st.n++
			s.next++
			sum := sha256.Sum256([]byte(key))
			name = fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:8]), s.next)
			s.mu.Unlock()
			return name, true, nil
		}
		freed := st.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return "", false, context.Cause(ctx)
		}
	}
}

// release gives an instance back. When keep is false the instance is
// dropped (its directory removed if still there): the step replaced or
// removed the cache directory itself, or setting it up failed.
func (s *cacheStore) release(key, name string, keep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.keys[key]
	if keep {
		st.free = append(st.free, name)
	} else {
		st.n--
		delete(s.seeded, name)
		// The store is the executor's own, outside every root.
		_ = os.RemoveAll(filepath.Join(s.dir, name))
	}
	close(st.freed)
	st.freed = make(chan struct{})
}

// cacheMoves is false to copy caches in and out even where they could be
// moved (tests of the copying path).
var cacheMoves = true

// acquireCaches takes an instance of each cache the mounts use, in the
// order of their keys, so that two steps waiting for each other's caches
// cannot each hold one the other waits for.
func (sb *stageBuilder) acquireCaches(ctx context.Context, mounts []*runMount) (map[*runMount]*cacheUse, error) {
	var cms []*runMount
	for _, rm := range mounts {
		if rm.typ == instructions.MountTypeCache {
			cms = append(cms, rm)
		}
	}
	if len(cms) == 0 {
		return nil, nil
	}
	slices.SortFunc(cms, func(a, b *runMount) int { return strings.Compare(a.cacheKey, b.cacheKey) })
	uses := map[*runMount]*cacheUse{}
	var err error
	for i, rm := range cms {
		if i > 0 && cms[i-1].cacheKey == rm.cacheKey {
			err = fmt.Errorf("%s and %s mount the same cache, which this executor cannot do in one step (it has no mount(2)): give one an id of its own", cms[i-1].target, rm.target)
		}
		var name string
		var fresh bool
		if err == nil {
			name, fresh, err = sb.b.caches.acquire(ctx, rm.cacheKey, rm.sharing)
		}
		if err != nil {
			for _, u := range uses {
				u.release()
			}
			return nil, err
		}
		uses[rm] = &cacheUse{store: sb.b.caches, key: rm.cacheKey, name: name, fresh: fresh, keep: !fresh,
			inst: filepath.Join(sb.b.caches.dir, name)}
	}
	return uses, nil
}

// cacheUse is an instance of a cache in the store, taken for one step.
type cacheUse struct {
	store *cacheStore
	key   string
	name  string // the instance's directory in the store
	fresh bool   // made for this step
	inst  string // its path
	// home is the directory of the store holding the mounted directory,
	// homeName its name there: where it goes back.
	home     *rootfs.Dir
	homeName string
	sel      string // the mounted directory's path in the instance
	root     string // the stage's root it is in
	ctx      context.Context
	placed   bool // in the root now
	copied   bool // copied in, not moved: copy back
	keep     bool // whether the instance is kept when given back
}

func (u *cacheUse) release() {
	u.home.Close()
	u.home = nil
	u.store.release(u.key, u.name, u.keep)
}

// dirMode is what of a directory's mode Mkdir takes.
func dirMode(fi fs.FileMode) fs.FileMode {
	return fi & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// fillCache puts the cache's directory at name in parent (in root): moved
// out of the store, or copied where the store and the root are on two file
// systems. A new instance is made first: empty, or with its "cache"
// directory (uid, gid, mode); one that starts from a from= tree gets the
// part of the tree the mount shows when it first shows it (see seed).
func (sb *stageBuilder) fillCache(ctx context.Context, root string, rm *runMount, u *cacheUse, parent *rootfs.Dir, name string) error {
	u.sel, u.root, u.ctx = rm.sel, root, context.WithoutCancel(ctx)
	if u.fresh {
		if err := makeCache(rm, u.inst); err != nil {
			return err
		}
		u.keep = true
	}
	if rm.dir != nil {
		sel, damaged, err := u.store.seed(ctx, rm, u)
		if err != nil {
			u.keep = u.keep && !damaged
			return err
		}
		u.sel = sel
	}
	store, err := rootfs.OpenRoot(u.store.dir)
	if err != nil {
		return err
	}
	defer store.Close()
	if u.sel == "" {
		if u.home, err = store.OpenDir(""); err != nil {
			return err
		}
		u.homeName = u.name
	} else {
		inst, err := rootfs.OpenRoot(u.inst)
		if err != nil {
			return err
		}
		defer inst.Close()
		if u.home, err = inst.OpenDir(path.Dir(u.sel)); err != nil {
			return fmt.Errorf("source=%s in the cache: %w", rm.sel, err)
		}
		u.homeName = path.Base(u.sel)
	}
	fi, err := u.home.Lstat(u.homeName)
	if err != nil {
		return fmt.Errorf("source=%s in the cache: %w", rm.sel, err)
	}
	if !fi.IsDir() {
		// A symlink included: it is not followed, in or out of the cache.
		return fmt.Errorf("source=%s in the cache is not a directory", rm.sel)
	}
	if cacheMoves {
		err := rootfs.Move(u.home, u.homeName, parent, name)
		if err == nil {
			u.placed = true
			return nil
		}
		if !errors.Is(err, unix.EXDEV) {
			return err
		}
	}
	st := fi.Sys().(*syscall.Stat_t)
	d, err := parent.Mkdir(name, dirMode(fi.Mode()), owner(int(st.Uid)), int(st.Gid))
	if err != nil {
		return err
	}
	d.Close()
	u.placed, u.copied = true, true
	_, err = copier.Copy(ctx, copier.Request{SrcRoot: u.inst, Sources: []string{"/" + u.sel}, WorkDir: "/", KeepOwner: true,
		DestRoot: root, Dest: "/" + path.Join(parent.Rel(), name) + "/"})
	return err
}

// makeCache makes a new instance at inst (a path in the store): empty, or,
// for a cache without from= that mounts its "cache" directory, with that
// directory made with uid, gid and the permission bits of mode, as
// BuildKit's setCacheUIDGID makes it (llb.Mkdir, whose file op takes
// mode&0777 under buildkitd's umask 0).
func makeCache(rm *runMount, inst string) error {
	if err := os.Mkdir(inst, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(inst, 0o755); err != nil {
		return err
	}
	if rm.mkdir && rm.dir == nil {
		return mkdirCache(filepath.Join(inst, rm.sel), rm)
	}
	return nil
}

// mkdirCache makes the directory p with rm's uid, gid and mode (its
// permission bits).
func mkdirCache(p string, rm *runMount) error {
	if err := os.Mkdir(p, 0o700); err != nil {
		return err
	}
	if o := owner(rm.uid); o >= 0 {
		if err := os.Lchown(p, o, rm.gid); err != nil {
			return err
		}
	}
	return os.Chmod(p, rm.mode.Perm())
}

// seed makes sure the instance u holds the part of its from= tree that rm
// mounts, and returns where that is in the instance; on failure, damaged
// says whether the instance may have been left half changed.
//
// In BuildKit a cache that starts from a tree is a copy of the whole tree
// (its cache record is made from the tree's ref: mounts'
// getRefCacheDirNoCache), of which a mount shows the source= path, resolved
// in the copy as a selector is (executor/oci's sub: fs.RootPath), or the
// "cache" directory setCacheUIDGID adds with uid, gid and mode, unless the
// tree has one (the file op's Mkdir leaves what exists). Steps with the same
// cache and other source= paths see other parts of the one copy. Copying a
// whole stage for each new cache would cost much more than the part shown,
// so the copy is made a part at a time, when a mount first shows it: the
// path resolved in the tree (so a symlink there leads where BuildKit's
// resolution would), copied in with what it holds, where no copied part
// holds it already; a part copied before beneath it is kept as the steps
// left it. Steps see only what they mount, so what the instance holds
// beside the parts copied in is never seen, and the result is BuildKit's.
func (s *cacheStore) seed(ctx context.Context, rm *runMount, u *cacheUse) (sel string, damaged bool, err error) {
	tree, err := rm.dir(ctx)
	if err != nil {
		return "", false, err
	}
	what := "source=/" + rm.sel
	if rm.mkdir {
		what = "the cache directory /cache"
	}
	src, err := securejoin.SecureJoin(tree, rm.sel)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", what, withoutPath(err))
	}
	rel, err := filepath.Rel(tree, src)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false, fmt.Errorf("%s: resolving it in the from= tree: %v", what, err)
	}
	sel = filepath.ToSlash(rel)
	if sel == "." {
		sel = ""
	}
	s.mu.Lock()
	done := slices.Clone(s.seeded[u.name])
	s.mu.Unlock()
	for _, p := range done {
		if p == "" || p == sel || strings.HasPrefix(sel, p+"/") {
			return sel, false, nil // copied before: as the steps left it
		}
	}
	fi, err := os.Lstat(src)
	switch {
	case errors.Is(err, fs.ErrNotExist) && rm.mkdir:
		// setCacheUIDGID's Mkdir, which makes no parents.
		if pfi, perr := os.Stat(filepath.Dir(src)); perr != nil || !pfi.IsDir() {
			return "", false, fmt.Errorf("%s: it resolves to /%s in the from= tree, whose parent is not a directory there", what, sel)
		}
		if err := os.MkdirAll(filepath.Join(u.inst, path.Dir(sel)), 0o755); err != nil {
			return "", true, err
		}
		if err := mkdirCache(filepath.Join(u.inst, sel), rm); err != nil {
			return "", true, err
		}
	case err != nil:
		return "", false, fmt.Errorf("%s in the from= tree: %w", what, withoutPath(err))
	case !fi.IsDir():
		return "", false, fmt.Errorf("%s in the from= tree is not a directory", what)
	default:
		if err := s.copyPart(ctx, rm, u, tree, sel, fi, done); err != nil {
			return "", true, fmt.Errorf("%s: copying it from the from= tree: %w", what, err)
		}
	}
	var now []string
	for _, p := range done {
		if sel != "" && !strings.HasPrefix(p, sel+"/") {
			now = append(now, p)
		}
	}
	s.mu.Lock()
	s.seeded[u.name] = append(now, sel)
	s.mu.Unlock()
	return sel, false, nil
}

// withoutPath drops the host path of a *fs.PathError: messages name paths
// as the Dockerfile does.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// copyPart copies the directory sel (fi) of tree into the instance u,
// whose parts done were copied before: those beneath sel are set aside and
// put back in the new copy. Every path used is in the store, made by the
// executor: what the steps changed lies only in the parts, moved whole.
func (s *cacheStore) copyPart(ctx context.Context, rm *runMount, u *cacheUse, tree, sel string, fi fs.FileInfo, done []string) error {
	type aside struct{ part, tmp string }
	var kept []aside
	for i, p := range done {
		if sel != "" && !strings.HasPrefix(p, sel+"/") {
			continue
		}
		tmp := fmt.Sprintf("%s.part-%d", u.inst, i)
		if err := os.Rename(filepath.Join(u.inst, p), tmp); err != nil {
			return err
		}
		kept = append(kept, aside{p, tmp})
	}
	defer func() {
		for _, k := range kept {
			if k.tmp != "" { // left only on failure
				_ = os.RemoveAll(k.tmp)
			}
		}
	}()
	// What is there now at sel are the directories made to hold the parts.
	dest := filepath.Join(u.inst, sel)
	if sel == "" {
		entries, err := os.ReadDir(u.inst)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(u.inst, e.Name())); err != nil {
				return err
			}
		}
	} else {
		if err := os.RemoveAll(dest); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return err
		}
	}
	req := rm.req
	req.SrcRoot, req.Sources, req.DestRoot, req.Dest = tree, []string{"/" + sel}, u.inst, "/"+sel+"/"
	if _, err := copier.Copy(ctx, req); err != nil {
		return err
	}
	// The copy made the directory 0755 and root's: it is the source's.
	st := fi.Sys().(*syscall.Stat_t)
	if o := owner(int(st.Uid)); o >= 0 {
		if err := os.Lchown(dest, o, int(st.Gid)); err != nil {
			return err
		}
	}
	if err := os.Chmod(dest, fi.Mode()); err != nil {
		return err
	}
	for i, k := range kept {
		p := filepath.Join(u.inst, k.part)
		// The new copy has the part's parents: the part was resolved in the
		// same tree, so they are directories there.
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Rename(k.tmp, p); err != nil {
			return err
		}
		kept[i].tmp = ""
	}
	return nil
}

// putBack returns the cache's directory from the root to the store after
// the step, and reports whether the instance is kept: not when the step
// removed or replaced the directory itself (a mount point cannot be
// removed; here its cache is lost, and the next step starts a new one).
func (u *cacheUse) putBack(m *mounted) bool {
	if !u.placed {
		return u.keep
	}
	fi, err := m.parent.Lstat(m.name)
	if err != nil || !fi.IsDir() {
		return false
	}
	if !u.copied {
		return rootfs.Move(m.parent, m.name, u.home, u.homeName) == nil
	}
	if err := u.home.RemoveAll(u.homeName); err != nil {
		return false
	}
	st := fi.Sys().(*syscall.Stat_t)
	d, err := u.home.Mkdir(u.homeName, dirMode(fi.Mode()), owner(int(st.Uid)), int(st.Gid))
	if err != nil {
		return false
	}
	d.Close()
	_, err = copier.Copy(u.ctx, copier.Request{SrcRoot: u.root, Sources: []string{"/" + path.Join(m.parent.Rel(), m.name)}, WorkDir: "/", KeepOwner: true,
		DestRoot: u.inst, Dest: "/" + u.sel + "/"})
	return err == nil
}
