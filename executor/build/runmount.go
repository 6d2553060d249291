package build

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/crypto/ssh/agent"

	"github.com/slipway-dev/slipway/executor/copier"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/source"
)

// RUN --mount is emulated in the stage's root without mount(2): the
// executor pod has no CAP_SYS_ADMIN, and in-place isolation runs in the
// pod's own root. Before the command each target is made in the root (what
// was there is set aside next to it under a hidden name, missing parents
// are created), and afterwards it is removed, with whatever the command
// wrote under it, and what was there is put back, so that the step's layer
// holds what the command wrote elsewhere, as with Docker's mounts:
//
//   - type=bind copies the source (the build context by default, a stage
//     or an image with from=) to the target; writes are discarded, and
//     read-only is not enforced;
//   - type=cache is a directory of the build's cache store (cacheStore),
//     moved in for the step and back out after it, so the steps of one build
//     that mount one cache see each other's files, as with BuildKit (a fresh
//     executor starts with none, as BuildKit in a fresh pod);
//   - type=tmpfs is an empty directory;
//   - type=secret is a file (or, with env=, a variable) holding a secret
//     given to the executor with --secret; it never enters the cache key;
//   - type=ssh is a unix socket served by the executor: an ssh agent that
//     signs with the keys given with --ssh (sshmount.go).
//
// Parent directories the command did not touch get their times back, so
// the layer does not list them.

// mountTypeScript is the directory BuildKit mounts at heredocDir for a
// RUN heredoc that starts with #! (see heredocArgs): it holds one file,
// script, of content secret and mode mode, owned by root.
const mountTypeScript instructions.MountType = "heredoc"

// heredocDir is where BuildKit mounts a RUN heredoc's script.
const heredocDir = "/dev/pipes"

// runMount is one RUN --mount, planned.
type runMount struct {
	typ    instructions.MountType
	target string // absolute in the stage, clean
	// type=bind: the source, copied to target when the step runs.
	src *copier.Walked                        // the build context, walked for the key
	req copier.Request                        // source (and for the context, ignore rules)
	dir func(context.Context) (string, error) // a stage's or image's tree
	// type=cache and tmpfs (a directory), secret (a file): owner and mode.
	uid, gid int
	mode     fs.FileMode
	// type=cache: the store's key, how it is shared, and the path of the
	// mounted directory in the cache ("" for the cache itself); a cache
	// seeded from a stage or an image reads it with dir.
	cacheKey string
	sharing  instructions.ShareMode
	sel      string
	mkdir    bool // sel is made with uid, gid and mode when the cache is new
	persist  bool // the cache is kept between builds (mountpersist.go)
	// type=secret (type=ssh: env is SSH_AUTH_SOCK, secret its value)
	secret []byte
	env    string // the variable to set to the secret; "" for none
	file   bool   // whether the secret is a file at target too
	// type=ssh: the agent served at target.
	agent agent.Agent
	// mountTypeScript: the script's name in the directory.
	script string
}

// mountKey is what of a mount goes into the step's cache key: never a
// secret's value.
type mountKey struct {
	Type, Target, From, Source string
	ReadOnly                   bool
	UID, GID                   int
	Mode                       fs.FileMode
	ID, Env                    string
	Content                    string // a bind source's content key
	Required                   bool   `json:",omitempty"` // type=ssh
}

// planMounts turns a RUN's --mount flags into mounts, with what the cache
// key needs of them; cacheable is false when the step cannot be cached (it
// binds a stage that cannot be).
func (sb *stageBuilder) planMounts(ctx context.Context, c *instructions.RunCommand, wd string) (mounts []*runMount, keys []mountKey, cacheable bool, err error) {
	if err := c.Expand(sb.expand); err != nil {
		return nil, nil, false, fail(result.ReasonDockerfileInvalid, err)
	}
	cacheable = true
	nSSH := 0
	for _, m := range instructions.GetMounts(c) {
		rm := &runMount{typ: m.Type}
		k := mountKey{Type: string(m.Type), From: m.From, Source: m.Source, ReadOnly: m.ReadOnly}
		target := m.Target
		switch m.Type {
		case instructions.MountTypeSSH:
			if err := sb.planSSH(m, nSSH, wd, rm, &k); err != nil {
				return nil, nil, false, err
			}
			nSSH++
			mounts, keys = append(mounts, rm), append(keys, k)
			continue
		case instructions.MountTypeSecret:
			var given bool
			if target, given, err = sb.planSecret(m, rm, &k); err != nil {
				return nil, nil, false, err
			}
			if !given {
				continue // as BuildKit: an optional secret that is missing is not mounted
			}
		case instructions.MountTypeCache:
			rm.mode = 0o755
			if err := sb.planCache(ctx, m, rm, &k); err != nil {
				return nil, nil, false, err
			}
			if m.From != "" && k.Content == "" {
				cacheable = false
			}
		case instructions.MountTypeTmpfs:
			if m.From != "" {
				return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=tmpfs,from=%s: a tmpfs has no source", m.From))
			}
			rm.mode = 0o777 | fs.ModeSticky
		case instructions.MountTypeBind:
			if err := sb.planBind(ctx, m, rm, &k); err != nil {
				return nil, nil, false, err
			}
			if k.Content == "" {
				cacheable = false
			}
		default:
			return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s is not supported by this executor", m.Type))
		}
		setMountOwner(m, rm)
		k.UID, k.GID, k.Mode = rm.uid, rm.gid, rm.mode
		if rm.typ == instructions.MountTypeSecret && !rm.file {
			mounts, keys = append(mounts, rm), append(keys, k)
			continue
		}
		if target == "" {
			return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s needs a target", m.Type))
		}
		if !path.IsAbs(target) {
			target = path.Join(wd, target)
		}
		rm.target = path.Clean(target)
		if rm.target == "/" {
			return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s: the target cannot be /", m.Type))
		}
		k.Target = rm.target
		mounts, keys = append(mounts, rm), append(keys, k)
	}
	return mounts, keys, cacheable, nil
}

// planSecret plans a secret mount: the secret's id (by default its
// target's base name), where it goes (a file, /run/secrets/ID by default,
// or an environment variable), and its value. given is false for an
// optional secret that was not given; a required one is an error, and so
// is a git credential, which no RUN step may read.
func (sb *stageBuilder) planSecret(m *instructions.Mount, rm *runMount, k *mountKey) (target string, given bool, err error) {
	target = m.Target
	id := m.CacheID
	if id == "" {
		id = path.Base(target)
	}
	if target == "" && m.Env == nil {
		target = "/run/secrets/" + id
	}
	rm.file = target != ""
	if m.Env != nil {
		rm.env = *m.Env
	}
	if strings.HasPrefix(id, source.SecretGitAuthToken) || strings.HasPrefix(id, source.SecretGitAuthHeader) {
		// Given for git fetches of that host only (see source.GitAuth):
		// a step that could read it could send it anywhere.
		return "", false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=secret,id=%s: this secret is a git credential for its host, which RUN steps may not read", id))
	}
	val, ok := sb.b.opts.Secrets[id]
	if !ok {
		if m.Required {
			return "", false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=secret,id=%s: the secret is required and was not given (the ImageBuild's spec.secrets, or executor --secret id=%s,src=FILE)", id, id))
		}
		return target, false, nil
	}
	rm.secret, rm.mode = val, 0o400
	k.ID, k.Env = id, rm.env
	return target, true, nil
}

// setMountOwner applies a mount's mode, uid and gid options to rm.
func setMountOwner(m *instructions.Mount, rm *runMount) {
	if m.Mode != nil {
		rm.mode = fs.FileMode(*m.Mode & 0o777)
		if *m.Mode&0o1000 != 0 {
			rm.mode |= fs.ModeSticky
		}
	}
	if m.UID != nil {
		rm.uid = int(*m.UID)
	}
	if m.GID != nil {
		rm.gid = int(*m.GID)
	}
}

// planBind resolves a bind mount's source: the build context, a stage or
// an image; k.Content gets the key of what it reads.
func (sb *stageBuilder) planBind(ctx context.Context, m *instructions.Mount, rm *runMount, k *mountKey) error {
	src := m.Source
	if src == "" {
		src = "/"
	}
	rm.req = copier.Request{Sources: []string{src}, WorkDir: "/"}
	if m.From == "" {
		bc := sb.b.opts.Context
		if bc == nil {
			return fail(result.ReasonCopyFailed, errors.New("RUN --mount=type=bind needs a build context, and this build has none"))
		}
		rm.req.SrcRoot, rm.req.Ignore, rm.req.IgnoreDescend = bc.Dir, bc.Excluded, bc.MayContainIncluded
		if !sb.b.keys {
			w, err := copier.Walk(ctx, rm.req)
			if err != nil {
				return fail(result.ReasonCopyFailed, fmt.Errorf("RUN --mount=type=bind,source=%s: %w", src, err))
			}
			rm.src = w
			return nil
		}
		w, files, err := copier.WalkSources(ctx, rm.req)
		if err != nil {
			return fail(result.ReasonCopyFailed, fmt.Errorf("RUN --mount=type=bind,source=%s: %w", src, err))
		}
		rm.src = w
		k.Content = "context:" + copier.KeyOf(files)
		return nil
	}
	rm.req.KeepOwner = true
	return sb.planFrom(ctx, m.From, rm, k)
}

// planFrom resolves a mount's from= (a stage or an image) into rm.dir;
// k.Content gets its key, "" when the stage cannot be cached.
func (sb *stageBuilder) planFrom(ctx context.Context, from string, rm *runMount, k *mountKey) error {
	if st := sb.b.plan.StageForFrom(from, sb.st.Index); st != nil {
		if sb.b.stages[st.Index].sb == nil {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=from=%s: the stage is not built for this target", from))
		}
		if key := sb.b.stages[st.Index].sb.key; key != "" {
			k.Content = "stage:" + key
		}
		rm.dir = func(ctx context.Context) (string, error) { return sb.b.stageTree(ctx, st.Index) }
		return nil
	}
	// An image is resolved for the build's target platform, as for COPY
	// --from (BuildKit's detectRunMount makes it an unregistered stage).
	img, err := sb.b.image(ctx, from, sb.b.platform)
	if err != nil {
		return fail(result.ReasonBaseImagePullFailed, err)
	}
	k.Content = "image:" + img.digest.String()
	rm.dir = func(ctx context.Context) (string, error) { return img.extracted(ctx, sb.b) }
	return nil
}

// planCache resolves a cache mount as BuildKit's dispatchRunMounts and
// mount manager (solver/llbsolver/mounts getRefCacheDir) do: the cache is
// found by its id (by default the target as written, cleaned) and what it
// starts from: nothing, a directory made with uid, gid and mode (when one
// of them is given and no source), or the tree of a from= stage or image.
// The mounted directory is the cache itself, its "cache" directory (made
// with uid, gid and mode), or its source= path. A cache seeded from a stage
// is a different cache from one of the same id seeded from another, as in
// BuildKit, whose key holds the base's ref. The cache's content is never
// part of the step's cache key; from='s key is (k.Content).
func (sb *stageBuilder) planCache(ctx context.Context, m *instructions.Mount, rm *runMount, k *mountKey) error {
	id := m.CacheID
	if id == "" {
		id = path.Clean(m.Target)
	}
	rm.sharing = m.CacheSharing
	if rm.sharing == "" {
		rm.sharing = instructions.MountSharingShared
	}
	k.ID = id
	base := ""
	if m.From != "" {
		rm.req = copier.Request{KeepOwner: true, WorkDir: "/"}
		if err := sb.planFrom(ctx, m.From, rm, k); err != nil {
			return err
		}
		// Within one build a stage or an image is one tree.
		if st := sb.b.plan.StageForFrom(m.From, sb.st.Index); st != nil {
			base = fmt.Sprintf("stage %d", st.Index)
		} else {
			base = k.Content
		}
	}
	rm.sel = strings.TrimPrefix(path.Clean("/"+m.Source), "/")
	if rm.sel == "" && (m.UID != nil || m.GID != nil || m.Mode != nil) {
		rm.sel, rm.mkdir = "cache", true
		mode := fs.FileMode(0o755)
		if m.Mode != nil {
			mode = fs.FileMode(*m.Mode)
		}
		var uid, gid uint64
		if m.UID != nil {
			uid = *m.UID
		}
		if m.GID != nil {
			gid = *m.GID
		}
		base += fmt.Sprintf(" mkdir %o %d:%d", mode, uid, gid)
	}
	rm.cacheKey = fmt.Sprintf("%q from %q", id, base)
	sb.b.caches.planPersist(rm, id)
	return nil
}

// mounted is a mount made in a root, to be undone. It holds descriptors
// of the directories it changed, opened before the step ran, so that
// undoing it acts on those directories wherever the step moved them, and
// never follows a symlink the step planted: nothing outside the root can
// be reached.
type mounted struct {
	rel     string       // the target, resolved in the root (for messages)
	parent  *rootfs.Dir  // the target's parent
	name    string       // the target's name in parent
	stash   string       // the name in parent of what was at the target; "" for nothing
	stubs   []mountStub  // parent directories made for it, outermost first
	anc     *rootfs.Dir  // the deepest directory that existed, whose entries change
	ancTime [2]time.Time // its times before the mount
	ancMod  time.Time    // its mtime once the mount was made; zero if unknown
	cache   *cacheUse    // type=cache: where the directory goes back
	ssh     *sshServer   // type=ssh: the agent served
}

// mountStub is a directory made for a mount: name in parent.
type mountStub struct {
	parent, dir *rootfs.Dir
	name        string
}

func (m *mounted) close() {
	m.ssh.stop()
	if m.cache != nil {
		m.cache.release()
	}
	m.parent.Close()
	m.anc.Close()
	for _, s := range m.stubs {
		s.dir.Close()
	}
}

// mount makes the mounts in root and returns how to undo them. Everything
// it does and undoes goes through descriptors of directories in root,
// opened with RESOLVE_IN_ROOT (see rootfs.Root): what a target's path or
// its parents resolve to, now or after the step changed them, stays in
// root. The build's exclusions do not apply: in place, a secret's default
// target is in /run/secrets, which snapshots exclude, and a step that runs
// in place can change the excluded paths itself anyway.
func (sb *stageBuilder) mount(ctx context.Context, root string, mounts []*runMount) (func() error, error) {
	if !slices.ContainsFunc(mounts, func(rm *runMount) bool { return rm.target != "" }) {
		return func() error { return nil }, nil
	}
	r, err := rootfs.OpenRoot(root)
	if err != nil {
		return nil, fail(result.ReasonRunFailed, fmt.Errorf("RUN --mount: %w", err))
	}
	defer r.Close()
	// The trees of from= are read first: a step must not hold a cache
	// while it waits for a stage whose steps may wait for that cache.
	mounts = slices.Clone(mounts)
	for i, rm := range mounts {
		if rm.dir == nil {
			continue
		}
		tree, err := rm.dir(ctx)
		if err != nil {
			return nil, fail(result.ReasonRunFailed, fmt.Errorf("RUN --mount=type=%s,target=%s: %w", rm.typ, rm.target, err))
		}
		c := *rm
		c.dir = func(context.Context) (string, error) { return tree, nil }
		mounts[i] = &c
	}
	uses, err := sb.acquireCaches(ctx, mounts)
	if err != nil {
		return nil, fail(result.ReasonRunFailed, fmt.Errorf("RUN --mount=type=cache: %w", err))
	}
	var done []*mounted
	undo := func() error {
		var first error
		for _, m := range slices.Backward(done) {
			if err := m.undo(); err != nil && first == nil {
				first = err
			}
			m.close()
		}
		for _, u := range uses {
			u.release() // the ones no mount took
		}
		return first
	}
	for _, rm := range mounts {
		if rm.target == "" {
			continue // a secret given as a variable only, an ssh agent not given
		}
		m, err := sb.mountOne(ctx, root, r, rm, uses[rm])
		if m != nil {
			done = append(done, m)
			if m.cache != nil {
				delete(uses, rm)
			}
		}
		if err != nil {
			undo()
			if rm.typ == mountTypeScript {
				return nil, fail(result.ReasonRunFailed, fmt.Errorf("RUN heredoc: writing the script %s: %w", path.Join(rm.target, rm.script), err))
			}
			return nil, fail(result.ReasonRunFailed, fmt.Errorf("RUN --mount=type=%s,target=%s: %w", rm.typ, rm.target, err))
		}
	}
	return undo, nil
}

func (sb *stageBuilder) mountOne(ctx context.Context, root string, r *rootfs.Root, rm *runMount, cache *cacheUse) (*mounted, error) {
	// The target with the symlinks on its way (its own included) resolved
	// in the root as they are now, as a mount would resolve them.
	host, err := securePath(root, rm.target)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(root, host)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, errors.New("the target resolves to the root")
	}
	rel = filepath.ToSlash(rel)
	dir, name := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	m := &mounted{rel: "/" + rel, name: name, cache: cache}
	// anc: the deepest directory of the way that exists.
	var parts []string
	if dir != "" {
		parts = strings.Split(dir, "/")
	}
	n := len(parts)
	for ; ; n-- {
		m.anc, err = r.OpenDir(strings.Join(parts[:n], "/"))
		if err == nil {
			break
		}
		if n == 0 || !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if atime, mtime, err := m.anc.Times(); err == nil {
		m.ancTime = [2]time.Time{atime, mtime}
	}
	// Make the missing directories (mode 0755, owned by root, as Docker
	// makes them); the last one, or anc, is the parent.
	cur := m.anc
	for _, part := range parts[n:] {
		next, err := cur.Mkdir(part, 0o755, owner(0), 0)
		if err != nil {
			return m, err
		}
		m.stubs = append(m.stubs, mountStub{parent: cur, dir: next, name: part})
		cur = next
	}
	m.parent = cur
	if _, err := m.parent.Lstat(name); err == nil {
		var b [8]byte
		rand.Read(b[:])
		stash := ".slipway-mount-" + hex.EncodeToString(b[:])
		if err := m.parent.Rename(name, stash); err != nil {
			return m, err
		}
		m.stash = stash
	}
	if cache != nil {
		if err := sb.fillCache(ctx, root, rm, cache, m.parent, name); err != nil {
			return m, err
		}
	} else if rm.typ == instructions.MountTypeSSH {
		if m.ssh, err = serveSSH(root, rm, m.parent, name); err != nil {
			return m, err
		}
	} else if err := sb.fill(ctx, root, rm, m.parent, name); err != nil {
		return m, err
	}
	if _, mtime, err := m.anc.Times(); err == nil {
		m.ancMod = mtime
	}
	return m, nil
}

// owner is uid for a chown, or -1 (leave it) when the executor cannot
// chown, not being root.
func owner(uid int) int {
	if os.Geteuid() != 0 {
		return -1
	}
	return uid
}

// fill makes the mount's content at name in parent.
func (sb *stageBuilder) fill(ctx context.Context, root string, rm *runMount, parent *rootfs.Dir, name string) error {
	switch rm.typ {
	case instructions.MountTypeSecret:
		return parent.WriteFile(name, rm.secret, rm.mode, owner(rm.uid), rm.gid)
	case instructions.MountTypeBind:
		// The copier resolves the target in the root as this did.
		req := rm.req
		req.DestRoot, req.Dest = root, "/"+path.Join(parent.Rel(), name)
		var err error
		if rm.src != nil {
			_, err = rm.src.Copy(ctx, req)
		} else {
			if req.SrcRoot, err = rm.dir(ctx); err != nil {
				return err
			}
			_, err = copier.Copy(ctx, req)
		}
		return err
	case mountTypeScript:
		d, err := parent.Mkdir(name, 0o755, owner(0), 0)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.WriteFile(rm.script, rm.secret, rm.mode, owner(0), 0)
	default:
		d, err := parent.Mkdir(name, rm.mode, owner(rm.uid), rm.gid)
		if err != nil {
			return err
		}
		return d.Close()
	}
}

// undo removes the mount and what the command wrote under it, puts back
// what was there, removes the parents it made when they are still empty
// and still theirs, and gives the directory whose entries it changed its
// times back when the command did not change them too. It works in the
// directories opened before the step, wherever the step moved them.
func (m *mounted) undo() error {
	m.ssh.stop() // nothing is served once the step is done
	untouched := false
	if !m.ancMod.IsZero() {
		if _, mtime, err := m.anc.Times(); err == nil && mtime.Equal(m.ancMod) {
			untouched = true
		}
	}
	if m.parent != nil {
		if m.cache != nil {
			m.cache.keep = m.cache.putBack(m)
		}
		if err := m.parent.RemoveAll(m.name); err != nil {
			return fmt.Errorf("removing the mount %s: %w", m.rel, err)
		}
		if m.stash != "" {
			if err := m.parent.Rename(m.stash, m.name); err != nil {
				return fmt.Errorf("putting %s back: %w", m.rel, err)
			}
		}
	}
	for _, s := range slices.Backward(m.stubs) {
		if removed, err := s.parent.RemoveDir(s.name, s.dir); err != nil || !removed {
			break // the command put something there, or moved it: it stays
		}
	}
	if untouched && !m.ancTime[1].IsZero() {
		_ = m.anc.SetTimes(m.ancTime[0], m.ancTime[1])
	}
	return nil
}
