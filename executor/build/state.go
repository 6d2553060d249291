package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/copier"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// State is a directory kept between builds (executor --state-dir; in a
// cluster, a volume of the ImageBuild's: issue 17), holding what a later
// build can start from instead of making it again:
//
//   - trees/ID: the unpacked file tree of a stage as its layers make it
//     (rootfs), with the diff IDs of those layers (layers.json). A stage
//     whose layers begin with a kept tree's starts from that tree, moved
//     into place, and applies only the layers after them. Only under chroot
//     isolation, whose stage roots are directories of the work directory:
//     in place the root is the container's own, which no volume can be.
//     At most maxTrees are kept, the least recently used dropped first.
//   - mounts/KEY: the directory of a cache mount kept between builds (see
//     mountpersist.go), with the digest of the saved mount it matches in
//     the cache repository, if any (KEY.json): a build takes it instead of
//     downloading that saved mount.
//
// One build at a time uses a directory: an exclusive flock on its lock
// file, taken when it is opened. A directory that another build holds,
// that holds something else than a state directory (it is left as it
// is), one of another version, or one the build cannot read or write is
// not used, with a warning: the build runs as without it. A directory
// that fills up loses what did not fit.
//
// What the directory can do to a build: it is written only by the
// executor, from trees and cache mounts of earlier builds of the same
// ImageBuild, whose RUN steps made them. Under chroot isolation no step can
// reach it (it is outside every root). A kept tree is what its layers make,
// but for what layers never hold (sockets, security.selinux attributes);
// a kept cache mount is, as in the cache repository, what the steps left.
type State struct {
	dir  string
	lock *os.File
	log  io.Writer

	mu     sync.Mutex
	report result.State
	trees  []*keptTree
	// candidates are the stage roots to keep when the build ends.
	candidates []treeCandidate
	taken      map[string]bool // trees moved out for this build, by ID
}

// stateVersion is the first line of a state directory's version file;
// another one is not used (and its trees and mounts are removed).
const stateVersion = "slipway-state 1"

// maxTrees is how many unpacked trees a state directory keeps.
const maxTrees = 4

type keptTree struct {
	id      string
	diffIDs []string
	used    time.Time
	// indexed is set when the tree keeps its layers' indexes
	// (rootfs.Index; index-N.gz), which let it be reverted to fewer
	// layers (rootfs.Revert).
	indexed bool
	size    int64 // its regular files' bytes (the file "size")
}

type treeCandidate struct {
	root    string
	diffIDs []string
	indexes [][]byte // nil unless every layer's index is known
	size    int64
}

// OpenState opens dir as the build's state directory, making it if it
// does not exist. It never fails: a directory it cannot use is reported
// (State's report, a warning in log) and the build runs without it, as
// with a nil State. Close ends its use.
func OpenState(dir string, log io.Writer) *State {
	s := &State{dir: dir, log: log, taken: map[string]bool{}}
	if err := s.open(); err != nil {
		s.reset(err.Error())
		s.dir = ""
		return s
	}
	return s
}

func (s *State) reset(why string) {
	s.report.Reset = why
	fmt.Fprintf(s.log, "WARNING: the state directory is not used: %s\n", result.Sanitize(why))
}

func (s *State) open() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("making it: %w", withoutPath(err))
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("opening its lock: %w", withoutPath(err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("another build uses it (%w)", err)
	}
	s.lock = f
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.Close()
		return withoutPath(err)
	}
	version, err := os.ReadFile(filepath.Join(s.dir, "version"))
	switch {
	case err == nil && strings.TrimSpace(string(version)) == stateVersion:
		s.report.Found = true
	case err == nil:
		// Ours, of another version: what it keeps is not read.
		for _, d := range []string{"trees", "mounts", "tmp"} {
			if err := os.RemoveAll(filepath.Join(s.dir, d)); err != nil {
				s.Close()
				return withoutPath(err)
			}
		}
		s.report.Reset = "it was written by another version of the executor, and was emptied"
	case errors.Is(err, os.ErrNotExist):
		for _, e := range entries {
			if e.Name() != "lock" {
				// Not ours: left as it is.
				s.Close()
				return fmt.Errorf("it holds %q and no state of this executor's", result.Excerpt(e.Name(), 60))
			}
		}
	default:
		s.Close()
		return withoutPath(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "version"), []byte(stateVersion+"\n"), 0o600); err != nil {
		s.Close()
		return withoutPath(err)
	}
	for _, d := range []string{"trees", "mounts", "tmp"} {
		// In a pod, RUN steps can reach the directory: what it holds is
		// never followed out of it (a symlink here is refused).
		p := filepath.Join(s.dir, d)
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			s.Close()
			return withoutPath(err)
		}
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			s.Close()
			return fmt.Errorf("its %s is not a directory", d)
		}
	}
	// What an interrupted build left half made.
	if err := clearDir(filepath.Join(s.dir, "tmp")); err != nil {
		s.Close()
		return withoutPath(err)
	}
	s.readTrees()
	return nil
}

// Close ends the build's use of the directory (its lock). What the build
// keeps there is moved in by Keep before.
func (s *State) Close() {
	if s != nil && s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// Report is what the build found in and left in the directory.
func (s *State) Report() *result.State {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.report
	return &r
}

func (s *State) usable() bool { return s != nil && s.dir != "" }

// WorkDir is where a build using the directory keeps its work directory,
// on the directory's file system so that trees and mounts move in and
// out; "" without a usable directory.
func (s *State) WorkDir() string {
	if !s.usable() {
		return ""
	}
	return filepath.Join(s.dir, "tmp")
}

// readTrees reads the kept trees' descriptions; a tree without a readable
// one is removed.
func (s *State) readTrees() {
	entries, err := os.ReadDir(filepath.Join(s.dir, "trees"))
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(s.dir, "trees", e.Name())
		var t keptTree
		raw, err := os.ReadFile(filepath.Join(p, "layers.json"))
		if err == nil {
			err = json.Unmarshal(raw, &t.diffIDs)
		}
		fi, serr := os.Stat(filepath.Join(p, "layers.json"))
		if err != nil || serr != nil || !e.IsDir() || treeID(t.diffIDs) != e.Name() {
			_ = os.RemoveAll(p)
			continue
		}
		t.id, t.used = e.Name(), fi.ModTime()
		_, ierr := os.Stat(filepath.Join(p, fmt.Sprintf("index-%d.gz", len(t.diffIDs)-1)))
		t.indexed = ierr == nil
		if raw, err := os.ReadFile(filepath.Join(p, "size")); err == nil {
			t.size, _ = strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		}
		s.trees = append(s.trees, &t)
	}
}

// treeID names the tree of layers with these diff IDs.
func treeID(diffIDs []string) string {
	h := sha256.New()
	for _, d := range diffIDs {
		fmt.Fprintln(h, d)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diffIDsOf lists the layers' diff IDs.
func diffIDsOf(layers []v1.Layer) ([]string, error) {
	ids := make([]string, len(layers))
	for i, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		ids[i] = d.String()
	}
	return ids, nil
}

// takeTree moves to dst (which must not exist) the kept tree that makes
// the longest run of layers that starts layers, and returns how many of
// the layers it holds (0 when none is kept: dst is not made then) and
// their indexes (nil entries for those it has none of). A tree of those
// layers and more is reverted to them (rootfs.Revert), when it kept its
// layers' indexes: only what its further layers touched is undone, from
// the indexes and, for files they changed, the layers themselves (read
// with open, by their index in layers). opts are the extraction's options.
func (s *State) takeTree(dst string, layers []v1.Layer, open func(i int) (io.ReadCloser, error), opts []rootfs.Option) (int, [][]byte) {
	if !s.usable() || len(layers) == 0 {
		return 0, nil
	}
	ids, err := diffIDsOf(layers)
	if err != nil {
		return 0, nil
	}
	common := func(t *keptTree) int {
		n := 0
		for n < len(t.diffIDs) && n < len(ids) && t.diffIDs[n] == ids[n] {
			n++
		}
		return n
	}
	s.mu.Lock()
	var best *keptTree
	bestN := 0
	for _, t := range s.trees {
		n := common(t)
		if s.taken[t.id] || n == 0 || n < len(t.diffIDs) && !t.indexed {
			continue
		}
		// The most layers in common; then the fewest to undo.
		if n > bestN || n == bestN && len(t.diffIDs) < len(best.diffIDs) {
			best, bestN = t, n
		}
	}
	if best != nil {
		s.taken[best.id] = true
	}
	s.mu.Unlock()
	if best == nil {
		return 0, nil
	}
	dir := filepath.Join(s.dir, "trees", best.id)
	defer os.RemoveAll(dir)
	fail := func(err error) (int, [][]byte) {
		fmt.Fprintf(s.log, "WARNING: the state directory's tree of %d layers is not used: %s\n", len(best.diffIDs), result.Sanitize(withoutPath(err).Error()))
		_ = os.RemoveAll(dst)
		return 0, nil
	}
	var indexes [][]byte
	if best.indexed {
		for i := range best.diffIDs {
			ix, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("index-%d.gz", i)))
			if err != nil {
				return fail(err)
			}
			indexes = append(indexes, ix)
		}
	}
	if err := os.Rename(filepath.Join(dir, "rootfs"), dst); err != nil {
		return fail(err)
	}
	if bestN < len(best.diffIDs) {
		start := time.Now()
		err := rootfs.Revert(dst, indexes[:bestN], indexes[bestN:], open, opts...)
		if err != nil {
			return fail(fmt.Errorf("taking it back to %d of its layers: %w", bestN, err))
		}
		fmt.Fprintf(s.log, "Took the state directory's tree of %d layers back to its first %d in %.1fs\n", len(best.diffIDs), bestN, time.Since(start).Seconds())
		indexes = indexes[:bestN]
	}
	s.mu.Lock()
	s.report.TreesUsed++
	s.mu.Unlock()
	return bestN, indexes
}

// openLayer opens layer l's tar for a revert of a kept tree, from its
// twin when the cache has one (see unpacking); no twin is made from it.
func (b *builder) openLayer(ctx context.Context, l v1.Layer) (io.ReadCloser, error) {
	u := b.startUnpacking(ctx, []v1.Layer{l})
	rc, err := u.open(0)
	if err != nil {
		u.done(0, false)
		u.close()
		return nil, err
	}
	return &revertReader{ReadCloser: rc, u: u}, nil
}

type revertReader struct {
	io.ReadCloser
	u *unpacking
}

func (r *revertReader) Close() error {
	r.u.done(0, false)
	err := r.ReadCloser.Close()
	r.u.close()
	return err
}

// knownIndexes records the indexes of layers a kept tree held (nil ones
// are unknown), so that the tree's next keep has them too.
func (b *builder) knownIndexes(layers []v1.Layer, indexes [][]byte) {
	for i, ix := range indexes {
		if i >= len(layers) || ix == nil {
			continue
		}
		if d, err := layers[i].Digest(); err == nil {
			if _, loaded := b.sh.indexes.LoadOrStore(d, ix); !loaded {
				b.sh.indexed.Store(d, true)
			}
		}
	}
}

// keepTrees records, for the state directory, every stage root the build
// left whole (chroot isolation): its tree is what its layers make.
func (set *buildSet) keepTrees(ctx context.Context) {
	st := set.o.State
	if !st.usable() || set.o.Isolation != Chroot {
		return
	}
	for _, s := range set.distinct() {
		s.rootMu.Lock()
		root, taken := s.root, s.rootTaken
		s.rootMu.Unlock()
		if root != "" && !taken && s.err == nil {
			var size int64
			if s.sb != nil && s.sb.snap != nil {
				size = s.sb.snap.Size()
			}
			st.keepTree(root, s.layers, set.indexesOf(ctx, s.layers), size)
		}
	}
}

// indexesOf are the indexes of layers: those the build read or made, the
// others from the cache (an extraction does not index a layer whose index
// the cache holds); nil when one is missing.
func (set *buildSet) indexesOf(ctx context.Context, layers []v1.Layer) [][]byte {
	out := make([][]byte, len(layers))
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil
		}
		if v, ok := set.sh.indexes.Load(d); ok && v.([]byte) != nil {
			out[i] = v.([]byte)
			continue
		}
		ix, err := set.o.Cache.Index(ctx, d)
		if err != nil || ix == nil {
			return nil
		}
		set.sh.indexes.Store(d, ix)
		out[i] = ix
	}
	return out
}

// keepTree records root, the tree of layers (whose indexes are indexes,
// or nil), to be kept when the build ends (Keep).
func (s *State) keepTree(root string, layers []v1.Layer, indexes [][]byte, size int64) {
	if !s.usable() || root == "" || len(layers) == 0 {
		return
	}
	ids, err := diffIDsOf(layers)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.candidates = append(s.candidates, treeCandidate{root: root, diffIDs: ids, indexes: indexes, size: size})
}

// Keep moves the trees the build recorded into the directory (the newest
// maxTrees kept in all), and measures what it holds. Call it once the
// trees are no longer used (after the image's SBOM), before Close.
func (s *State) Keep() {
	if !s.usable() {
		return
	}
	s.mu.Lock()
	cands := s.candidates
	s.candidates = nil
	s.mu.Unlock()
	now := time.Now()
	for _, c := range cands {
		id := treeID(c.diffIDs)
		dst := filepath.Join(s.dir, "trees", id)
		if _, err := os.Lstat(dst); err == nil {
			continue // kept already (taken trees' entries are gone)
		}
		tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "tree-")
		if err == nil {
			err = os.Rename(c.root, filepath.Join(tmp, "rootfs"))
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(tmp, "size"), []byte(strconv.FormatInt(c.size, 10)), 0o600)
		}
		for i, ix := range c.indexes {
			if err == nil {
				err = os.WriteFile(filepath.Join(tmp, fmt.Sprintf("index-%d.gz", i)), ix, 0o600)
			}
		}
		if err == nil {
			var raw []byte
			raw, err = json.Marshal(c.diffIDs)
			if err == nil {
				err = os.WriteFile(filepath.Join(tmp, "layers.json"), raw, 0o600)
			}
		}
		if err == nil {
			err = os.Rename(tmp, dst)
		}
		if err != nil {
			if tmp != "" {
				_ = os.RemoveAll(tmp)
			}
			fmt.Fprintf(s.log, "WARNING: a stage's tree is not kept in the state directory: %s\n", result.Sanitize(withoutPath(err).Error()))
			continue
		}
		s.trees = slices.DeleteFunc(s.trees, func(t *keptTree) bool { return t.id == id })
		s.trees = append(s.trees, &keptTree{id: id, diffIDs: c.diffIDs, used: now, indexed: c.indexes != nil, size: c.size})
	}
	// Taken trees are gone; the least recently used go past maxTrees.
	s.trees = slices.DeleteFunc(s.trees, func(t *keptTree) bool {
		_, err := os.Lstat(filepath.Join(s.dir, "trees", t.id))
		return err != nil
	})
	slices.SortFunc(s.trees, func(a, b *keptTree) int { return b.used.Compare(a.used) })
	for len(s.trees) > maxTrees {
		last := s.trees[len(s.trees)-1]
		_ = os.RemoveAll(filepath.Join(s.dir, "trees", last.id))
		s.trees = s.trees[:len(s.trees)-1]
	}
	// What it holds, from what each tree and mount recorded of itself
	// (walking trees of a whole image would cost a rebuild more than its
	// build).
	var size int64
	for _, t := range s.trees {
		size += t.size
	}
	if entries, err := os.ReadDir(filepath.Join(s.dir, "mounts")); err == nil {
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".json") {
				var rec mountRecord
				if raw, err := os.ReadFile(filepath.Join(s.dir, "mounts", e.Name())); err == nil && json.Unmarshal(raw, &rec) == nil {
					size += rec.Size
				}
			}
		}
	}
	s.mu.Lock()
	s.report.Bytes = size
	s.mu.Unlock()
}

// mountRecord is what the directory keeps beside a cache mount: the
// digest of the saved mount in the cache repository it is a copy of.
type mountRecord struct {
	Manifest string `json:"manifest,omitempty"`
	// TarBytes is the uncompressed size of the saved mount's layers;
	// Size its regular files' bytes.
	TarBytes int64 `json:"tarBytes,omitempty"`
	Size     int64 `json:"size,omitempty"`
}

// takeMount moves or copies the kept cache mount key to dst (which must
// not exist) when it is a copy of the saved mount manifest ("" when the
// build keeps mounts only here), and reports whether it did, with the
// saved mount's TarBytes.
func (s *State) takeMount(key, manifest, dst string) (bool, int64) {
	if !s.usable() {
		return false, 0
	}
	p := filepath.Join(s.dir, "mounts", key)
	raw, err := os.ReadFile(p + ".json")
	var rec mountRecord
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err != nil || rec.Manifest != manifest {
		return false, 0
	}
	if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
		// Not what keepMount left (a symlink a step planted in a pod):
		// never followed.
		_ = os.Remove(p)
		_ = os.Remove(p + ".json")
		return false, 0
	}
	if err := moveTree(p, dst); err != nil {
		fmt.Fprintf(s.log, "WARNING: the state directory's copy of a cache mount is not used: %s\n", result.Sanitize(withoutPath(err).Error()))
		_ = os.RemoveAll(dst)
		return false, 0
	}
	_ = os.Remove(p + ".json")
	s.mu.Lock()
	s.report.MountsUsed++
	s.mu.Unlock()
	return true, rec.TarBytes
}

// keepMount moves or copies the cache mount at src into the directory as
// key, a copy of the saved mount manifest ("" for none) whose layers'
// uncompressed size is tarBytes.
func (s *State) keepMount(key, manifest string, tarBytes, size int64, src string) {
	if !s.usable() {
		return
	}
	p := filepath.Join(s.dir, "mounts", key)
	_ = os.Remove(p + ".json")
	if err := os.RemoveAll(p); err != nil {
		return
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "mount-")
	if err == nil {
		err = moveTree(src, filepath.Join(tmp, "m"))
	}
	if err == nil {
		err = os.Rename(filepath.Join(tmp, "m"), p)
	}
	if err == nil {
		var raw []byte
		raw, _ = json.Marshal(mountRecord{Manifest: manifest, TarBytes: tarBytes, Size: size})
		err = os.WriteFile(p+".json", raw, 0o600)
	}
	if tmp != "" {
		_ = os.RemoveAll(tmp)
	}
	if err != nil {
		_ = os.RemoveAll(p)
		fmt.Fprintf(s.log, "WARNING: a cache mount is not kept in the state directory: %s\n", result.Sanitize(withoutPath(err).Error()))
	}
}

// moveTree renames the directory src to dst, or copies it (owners, modes
// and times kept) where the two are on different file systems.
func moveTree(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	_, err = copier.Copy(context.Background(), copier.Request{SrcRoot: src, Sources: []string{"/"}, WorkDir: "/", KeepOwner: true,
		DestRoot: dst, Dest: "/"})
	return err
}

// clearDir removes what dir holds.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
