package rootfs

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Snapshotter finds what changed in a tree since its last look, as an
// overlay filesystem's upper directory would hold it, and writes it as a
// layer. It is not safe for concurrent use.
type Snapshotter struct {
	root string
	opts *options
	base map[string]*state
	buf  []byte
}

// state is what a snapshot compares: the lstat of an entry.
type state struct {
	mode         uint32 // type and permission bits, as st_mode
	uid, gid     uint32
	nlink        uint32
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
	btime        int64 // birth time in nanoseconds, 0 when unknown
	ino          uint64
	dev, rdev    uint64
	link         string // symlink target
}

func (s *state) isDir() bool { return s.mode&unix.S_IFMT == unix.S_IFDIR }

// sameInode reports whether a and b are the same inode, not one re-created
// with a reused number (when the filesystem reports birth times).
func sameInode(a, b *state) bool {
	return a.ino == b.ino && a.dev == b.dev && a.btime == b.btime
}

// equal reports whether an entry is unchanged. A directory's ctime and
// size change when entries come and go, which its children's own states
// already show; what is written for the directory itself (mode, owner,
// mtime) is compared. So a runner that adds a mount point and removes it
// again (restoring the mtime) leaves no trace, as overlay would not.
func (s *state) equal(o *state) bool {
	if s.mode != o.mode || s.uid != o.uid || s.gid != o.gid || s.mtime != o.mtime ||
		!sameInode(s, o) || s.rdev != o.rdev || s.link != o.link {
		return false
	}
	if s.isDir() {
		return true
	}
	return s.size == o.size && s.ctime == o.ctime
}

// NewSnapshotter walks root once and records the lstat of every entry but
// the excluded ones, as the baseline of the first Snapshot. Options other
// than WithExclude have no effect on it.
func NewSnapshotter(root string, opts ...Option) (*Snapshotter, error) {
	s := &Snapshotter{root: root, opts: newOptions(opts), buf: make([]byte, 1<<20)}
	t, err := openTree(root, s.opts)
	if err != nil {
		return nil, err
	}
	defer t.close()
	s.base = make(map[string]*state)
	if err := s.walkScope(t, "", s.base); err != nil {
		return nil, fmt.Errorf("recording the state of %s: %w", root, err)
	}
	return s, nil
}

// NewFullSnapshotter is NewSnapshotter with an empty baseline: its first
// Snapshot writes the whole tree (every entry but the root itself), as a
// layer that makes the tree from nothing. It walks nothing until then.
func NewFullSnapshotter(root string, opts ...Option) *Snapshotter {
	return &Snapshotter{root: root, opts: newOptions(opts), buf: make([]byte, 1<<20), base: map[string]*state{}}
}

// Size is the bytes of the regular files of the tree as the Snapshotter
// last recorded it (a file of several links counted for each), without a
// walk.
func (s *Snapshotter) Size() int64 {
	var n int64
	for _, st := range s.base {
		if st.mode&unix.S_IFMT == unix.S_IFREG {
			n += st.size
		}
	}
	return n
}

// SnapshotOption configures one Snapshot.
type SnapshotOption func(*snapshotOptions)

type snapshotOptions struct {
	paths    []string
	full     bool
	modTime  time.Time
	clampSet bool
	index    *Index
	// defaultMounts are the names DefaultMounts gave.
	defaultMounts []string
}

// Paths limits a snapshot to these subtrees and their parent directories,
// for steps that know what they wrote (COPY): only they are walked. Paths are
// root-relative or absolute in the root; symlinks among their parents are
// resolved inside the root. Deletions are found only inside them. The default
// walks the whole tree; repeated options add up.
func Paths(rels ...string) SnapshotOption {
	return func(o *snapshotOptions) {
		for _, r := range rels {
			if cleanRel(r) == "" {
				o.full = true
			}
			o.paths = append(o.paths, r)
		}
	}
}

// ModTime makes the layer reproducible: modification times later than t are
// written as t (a clamp, like SOURCE_DATE_EPOCH), and whiteouts get t. With
// t at the epoch every entry carries the epoch. By default entries carry
// their own times (to the second) and whiteouts the epoch.
func ModTime(t time.Time) SnapshotOption {
	return func(o *snapshotOptions) { o.modTime, o.clampSet = t, true }
}

// IndexTo makes Snapshot record the layer it writes in ix.
func IndexTo(ix *Index) SnapshotOption {
	return func(o *snapshotOptions) { o.index = ix }
}

// Snapshot compares the tree with the recorded state and writes to w an
// uncompressed layer tar of the differences, then records the new state as
// the baseline. The layer holds:
//
//   - each added or changed entry (by lstat: type, mode, owner, size, mtime,
//     ctime, inode, device, symlink target; content is only read to be
//     written) with all its parent directories and their current metadata;
//   - ".wh.NAME" in the parent of each deleted entry (only the topmost one);
//   - a directory removed and made again (another inode) as that directory,
//     ".wh..wh..opq" right after it, and all its contents;
//   - hard links: a second path to an inode already in this layer as a link
//     to the first in name order;
//   - extended attributes as PAX records, except security.selinux and
//     overlay's own;
//   - with DefaultMounts, the default mount points the image lacks, as
//     directories (see there).
//
// Entries are in lexical order of their paths (so parents come first; an
// opaque marker follows its directory), directories end with "/", owner
// names, access and change times are left out, and modification times are
// truncated to the second, so equal trees give identical bytes. Excluded
// paths and sockets never appear. A file named ".wh.", ".wh.." or ".wh..."
// cannot be stored (it would read as a whiteout of "", "." or ".."): its
// snapshot fails. When nothing changed, Snapshot writes nothing and returns
// changed=false.
func (s *Snapshotter) Snapshot(w io.Writer, opts ...SnapshotOption) (changed bool, err error) {
	var so snapshotOptions
	for _, opt := range opts {
		opt(&so)
	}
	t, err := openTree(s.root, s.opts)
	if err != nil {
		return false, err
	}
	defer t.close()

	scopes := []string{""}
	if len(so.paths) > 0 && !so.full {
		scopes = s.resolveScopes(t, so.paths)
	}
	cur := make(map[string]*state, len(s.base))
	for _, sc := range scopes {
		if err := s.walkScope(t, sc, cur); err != nil {
			return false, fmt.Errorf("snapshotting %s: %w", s.root, err)
		}
	}
	items := s.diff(cur, scopes)
	mounts := s.missingMounts(&so)
	if len(mounts) > 0 {
		items = append(items, mounts...)
		slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })
	}
	if len(items) > 0 {
		if err := s.write(t, w, items, &so); err != nil {
			return false, fmt.Errorf("snapshotting %s: %w", s.root, err)
		}
	}
	for _, it := range mounts {
		s.opts.covered.set(it.name, true)
	}
	s.rebase(cur, scopes)
	return len(items) > 0, nil
}

// resolveScopes resolves the parents of the given paths inside the root and
// drops the ones nested in others.
func (s *Snapshotter) resolveScopes(t *tree, paths []string) []string {
	var out []string
	for _, p := range paths {
		rel := cleanRel(p)
		dir, name := split(rel)
		if fd, real, err := t.openDir(dir); err == nil {
			unix.Close(fd)
			rel = join(real, name)
		}
		if rel == "" {
			return []string{""}
		}
		if !s.opts.excluded(rel) {
			out = append(out, rel)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	// Drop scopes inside another one; sorted, an ancestor comes first.
	kept := out[:0]
	for _, p := range out {
		if len(kept) > 0 && IsUnder(p, kept[len(kept)-1]) {
			continue
		}
		kept = append(kept, p)
	}
	return kept
}

// IsUnder reports whether the slash path p, relative to the root, is anc or
// inside it ("" being the root).
func IsUnder(p, anc string) bool {
	return anc == "" || p == anc || strings.HasPrefix(p, anc+"/")
}

func inScopes(p string, scopes []string) bool {
	for _, sc := range scopes {
		if IsUnder(p, sc) || IsUnder(sc, p) {
			return true
		}
	}
	return false
}

func statAt(dirfd int, name string) (*state, error) {
	var sx unix.Statx_t
	err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx)
	if err != nil {
		return nil, err
	}
	st := &state{
		mode:  uint32(sx.Mode),
		uid:   sx.Uid,
		gid:   sx.Gid,
		nlink: sx.Nlink,
		size:  int64(sx.Size),
		mtime: sx.Mtime.Sec*1e9 + int64(sx.Mtime.Nsec),
		ctime: sx.Ctime.Sec*1e9 + int64(sx.Ctime.Nsec),
		ino:   sx.Ino,
		dev:   unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		rdev:  unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
	}
	if sx.Mask&unix.STATX_BTIME != 0 {
		st.btime = sx.Btime.Sec*1e9 + int64(sx.Btime.Nsec)
	}
	if st.mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, 256)
		for {
			n, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				return nil, err
			}
			if n < len(buf) {
				st.link = string(buf[:n])
				break
			}
			buf = make([]byte, 2*len(buf))
		}
	}
	return st, nil
}

// walkScope records the parents of scope, scope itself and, when it is a
// directory, everything under it, into out. Parents are looked up
// lexically, one checked directory after another, so no symlink is followed.
func (s *Snapshotter) walkScope(t *tree, scope string, out map[string]*state) error {
	if scope != "" {
		parts := strings.Split(scope, "/")
		for i := range parts {
			rel := strings.Join(parts[:i+1], "/")
			st, err := statAt(t.fd, rel)
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil
			}
			if err != nil {
				return &os.PathError{Op: "statx", Path: rel, Err: err}
			}
			out[rel] = st
			if !st.isDir() {
				return nil
			}
		}
	}
	fd, err := t.open(scope, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return err
	}
	return s.walkDir(fd, scope, out)
}

// walkDir records everything under the directory open as fd (rel) into
// out, and closes fd. Directories are read in parallel: the walk is bound by
// system calls, which run concurrently.
func (s *Snapshotter) walkDir(fd int, rel string, out map[string]*state) error {
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		tokens   = make(chan struct{}, walkers())
	)
	var visit func(fd int, rel string)
	visit = func(fd int, rel string) {
		found, dirs, err := s.readDir(fd, rel)
		mu.Lock()
		for _, f := range found {
			out[f.rel] = f.st
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		failed := firstErr != nil
		mu.Unlock()
		for _, d := range dirs {
			if failed {
				unix.Close(d.fd)
				continue
			}
			select {
			case tokens <- struct{}{}:
				wg.Add(1)
				go func() {
					defer wg.Done()
					visit(d.fd, d.rel)
					<-tokens
				}()
			default:
				visit(d.fd, d.rel)
			}
		}
	}
	visit(fd, rel)
	wg.Wait()
	return firstErr
}

// walkers is how many directories are read at once; a test seam.
var walkers = func() int { return max(2, 2*runtime.GOMAXPROCS(0)) }

type found struct {
	rel string
	st  *state
}

type openDir struct {
	fd  int
	rel string
}

// readDir lstats the entries of the directory open as fd (rel), opens its
// subdirectories for the caller, and closes fd.
func (s *Snapshotter) readDir(fd int, rel string) ([]found, []openDir, error) {
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, nil, fmt.Errorf("reading directory %s: %w", rel, err)
	}
	out := make([]found, 0, len(names))
	var dirs []openDir
	for _, n := range names {
		child := join(rel, n)
		if s.opts.excludedSelf(child) {
			continue
		}
		st, err := statAt(fd, n)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err == nil && st.mode&unix.S_IFMT == unix.S_IFSOCK {
			continue
		}
		if err == nil && st.isDir() {
			var cfd int
			cfd, err = unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil {
				dirs = append(dirs, openDir{cfd, child})
			}
		}
		if err != nil {
			for _, d := range dirs {
				unix.Close(d.fd)
			}
			return out, nil, &os.PathError{Op: "lstat", Path: child, Err: err}
		}
		out = append(out, found{child, st})
	}
	return out, dirs, nil
}

type itemKind int

const (
	kindEntry itemKind = iota
	kindOpaque
	kindWhiteout
	kindMountPoint // a default mount point the image lacks (DefaultMounts)
)

// item is one entry of the layer to write.
type item struct {
	key  string // sort key
	name string // tar name, without the trailing slash of directories
	kind itemKind
	st   *state
}

// diff lists the layer's entries, sorted.
func (s *Snapshotter) diff(cur map[string]*state, scopes []string) []item {
	emit := make(map[string]item)
	opaque := make(map[string]bool)
	for rel, c := range cur {
		o := s.base[rel]
		if o != nil && c.equal(o) {
			continue
		}
		emit[rel] = item{key: rel, name: rel, st: c}
		if o != nil && o.isDir() && c.isDir() && !sameInode(o, c) && inScopes(rel, scopes) && !isAncestorOfScope(rel, scopes) {
			opaque[rel] = true
			k := rel + "/\x00"
			emit[k] = item{key: k, name: join(rel, whiteoutOpaque), kind: kindOpaque}
		}
	}
	if len(opaque) > 0 {
		for rel, c := range cur {
			for p := rel; p != ""; {
				p, _ = split(p)
				if opaque[p] {
					emit[rel] = item{key: rel, name: rel, st: c}
					break
				}
			}
		}
	}
	for rel := range s.base {
		if cur[rel] != nil || !inScopes(rel, scopes) {
			continue
		}
		dir, name := split(rel)
		if dir != "" {
			pc, po := cur[dir], s.base[dir]
			if pc == nil || po == nil || !pc.isDir() || !sameInode(pc, po) || opaque[dir] {
				continue // the parent went or was replaced: nothing to hide
			}
		}
		k := join(dir, whiteoutPrefix+name)
		emit[k] = item{key: k, name: k, kind: kindWhiteout}
	}
	// Parents of everything, with their current metadata.
	for _, it := range emit {
		for p, _ := split(it.name); p != ""; p, _ = split(p) {
			if _, ok := emit[p]; ok {
				break
			}
			if c := cur[p]; c != nil {
				emit[p] = item{key: p, name: p, st: c}
			}
		}
	}
	items := make([]item, 0, len(emit))
	for _, it := range emit {
		items = append(items, it)
	}
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })
	return items
}

func isAncestorOfScope(rel string, scopes []string) bool {
	for _, sc := range scopes {
		if sc != rel && IsUnder(sc, rel) {
			return true
		}
	}
	return false
}

// rebase makes the walked state the new baseline.
func (s *Snapshotter) rebase(cur map[string]*state, scopes []string) {
	if len(scopes) == 1 && scopes[0] == "" {
		s.base = cur
		return
	}
	for rel := range s.base {
		if inScopes(rel, scopes) {
			delete(s.base, rel)
		}
	}
	for rel, c := range cur {
		s.base[rel] = c
	}
}

type inodeKey struct{ dev, ino uint64 }

func (s *Snapshotter) write(t *tree, w io.Writer, items []item, so *snapshotOptions) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	whiteoutTime := time.Unix(0, 0)
	if so.clampSet {
		whiteoutTime = so.modTime
	}
	links := make(map[inodeKey]string)
	for _, it := range items {
		if it.kind == kindMountPoint {
			hdr := mountPointHeader(it.name, so)
			so.index.add(hdr, nil)
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("writing %s: %w", it.name, err)
			}
			continue
		}
		if it.kind != kindEntry {
			hdr := &tar.Header{Name: it.name, Typeflag: tar.TypeReg, ModTime: whiteoutTime}
			so.index.add(hdr, nil)
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("writing %s: %w", it.name, err)
			}
			continue
		}
		if err := s.writeEntry(t, tw, it, so, links); err != nil {
			return fmt.Errorf("writing %s: %w", it.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

func (s *Snapshotter) writeEntry(t *tree, tw *tar.Writer, it item, so *snapshotOptions, links map[inodeKey]string) error {
	if _, name := split(it.name); strings.HasPrefix(name, whiteoutPrefix) {
		// A file the step named ".wh.." would be read back as a whiteout
		// of ".", which Extract (and containerd) refuse.
		if _, _, err := whiteoutTarget(name); err != nil {
			return fmt.Errorf("storing %s in a layer: %w", it.name, err)
		}
	}
	st := it.st
	mtime := time.Unix(st.mtime/1e9, st.mtime%1e9).Truncate(time.Second)
	if so.clampSet && mtime.After(so.modTime) {
		mtime = so.modTime
	}
	hdr := &tar.Header{
		Name:    it.name,
		Mode:    int64(st.mode & 0o7777),
		Uid:     int(st.uid),
		Gid:     int(st.gid),
		ModTime: mtime,
	}
	var file *os.File
	switch st.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = st.link
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.size
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		hdr.Typeflag = map[uint32]byte{unix.S_IFCHR: tar.TypeChar, unix.S_IFBLK: tar.TypeBlock, unix.S_IFIFO: tar.TypeFifo}[st.mode&unix.S_IFMT]
		hdr.Devmajor = int64(unix.Major(st.rdev))
		hdr.Devminor = int64(unix.Minor(st.rdev))
	default:
		return nil
	}
	if hdr.Typeflag != tar.TypeDir && st.nlink > 1 {
		k := inodeKey{st.dev, st.ino}
		if first, ok := links[k]; ok {
			// Like Docker, the link carries the inode's metadata and
			// extended attributes, which extractors apply to it again.
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		}
		links[k] = it.name
	}
	var err error
	if hdr.Typeflag == tar.TypeReg {
		var fd int
		fd, err = t.open(it.name, unix.O_RDONLY|unix.O_NOFOLLOW, unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS)
		if err != nil {
			return err
		}
		file = os.NewFile(uintptr(fd), it.name)
		defer file.Close()
		hdr.PAXRecords, err = xattrRecords(func(dest []byte) (int, error) { return unix.Flistxattr(fd, dest) },
			func(attr string, dest []byte) (int, error) { return unix.Fgetxattr(fd, attr, dest) })
	} else {
		p := t.real + "/" + it.name
		hdr.PAXRecords, err = xattrRecords(func(dest []byte) (int, error) { return unix.Llistxattr(p, dest) },
			func(attr string, dest []byte) (int, error) { return unix.Lgetxattr(p, attr, dest) })
	}
	if err != nil {
		return err
	}
	var content io.Reader
	if file != nil {
		content = io.LimitReader(file, hdr.Size)
	}
	content = so.index.add(hdr, content)
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if file != nil {
		n, err := io.CopyBuffer(tw, content, s.buf)
		if err != nil {
			return err
		}
		if n != hdr.Size {
			return fmt.Errorf("file shrank from %d to %d bytes while being read", hdr.Size, n)
		}
	}
	return nil
}

// xattrRecords reads the extended attributes worth keeping as PAX records.
func xattrRecords(list func([]byte) (int, error), get func(string, []byte) (int, error)) (map[string]string, error) {
	n, err := list(nil)
	if err == unix.ENOTSUP || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing extended attributes: %w", err)
	}
	names := make([]byte, n)
	if n, err = list(names); err != nil {
		return nil, fmt.Errorf("listing extended attributes: %w", err)
	}
	var recs map[string]string
	for _, attr := range strings.Split(strings.TrimRight(string(names[:n]), "\x00"), "\x00") {
		if attr == "" || attr == "security.selinux" || strings.HasPrefix(attr, "trusted.overlay.") || strings.HasPrefix(attr, "user.overlay.") {
			continue
		}
		sz, err := get(attr, nil)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading extended attribute %s: %w", attr, err)
		}
		val := make([]byte, sz)
		if sz, err = get(attr, val); err != nil {
			return nil, fmt.Errorf("reading extended attribute %s: %w", attr, err)
		}
		if recs == nil {
			recs = make(map[string]string)
		}
		recs[xattrPrefix+attr] = string(val[:sz])
	}
	return recs, nil
}
