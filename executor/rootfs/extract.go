package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	xattrPrefix    = "SCHILY.xattr."
)

// Extract applies one uncompressed layer tar stream onto root with OCI and
// Docker layer semantics:
//
//   - entries are created with their type, mode (setuid, setgid and sticky
//     included), ownership (unless WithOwner or WithoutOwnership), access
//     and modification times (the access time no earlier than the
//     modification time, as Docker) and the extended attributes of their
//     PAX records (as WithXattrs says); directories get their
//     times once the whole layer is written; missing parents are created
//     with mode 0755; a hard link's header's metadata is applied to the
//     inode it links to, as in Docker, unless WithoutHardLinkMetadata;
//   - an existing entry of another type is replaced; an existing directory
//     meeting a directory entry is kept and gets the entry's metadata;
//   - ".wh.NAME" removes NAME as lower layers left it; ".wh..wh..opq" empties
//     its directory of what lower layers put there, keeping what this layer
//     adds, whatever the order of the entries; other ".wh..wh." names are
//     AUFS metadata and ignored; ".wh.", ".wh.." and ".wh..." (whiteouts of
//     "", "." and "..") are refused; WithoutWhiteouts makes them all files;
//   - device nodes and FIFOs that cannot be made (EPERM) and extended
//     attributes that cannot be set in the security and trusted namespaces
//     (EPERM, ENOTSUP), or in any namespace on a filesystem without support
//     (ENOTSUP), are skipped and reported to the WithSkipped callback, unless
//     WithDevices or WithXattrs say otherwise; entries of other types fail,
//     unless WithUnknownTypesSkipped.
//
// Containment: every name, link target and whiteout resolves inside root as
// in a chroot: absolute names and symlinks met on the way (absolute or
// relative) stay inside root. Names and hard link targets that climb out with
// ".." are refused, as are hard links to missing or excluded files. Symlinks
// are created with whatever target they carry; they are never followed out of
// root. Excluded paths are skipped silently, also when reached through a
// symlink. WithBeneath refuses what leaves the root instead of resolving it
// inside.
//
// Size: with WithMaxSize, the content of the layer's files is bounded, and
// a layer that expands past the bound fails on the entry that would cross
// it, before it is written.
//
// Extract streams: it keeps no temporary files and does not sync. An error
// about an entry is an *EntryError naming it, and leaves the entries before
// it applied (and the entry itself, partly written, when reading or writing
// its content failed): the root is then not a faithful tree and must not be
// used as one.
//
// Extract is the executor's only tar extractor: with the options that make
// an archive no layer (WithoutWhiteouts, WithOwner or WithoutOwnership,
// WithDevices, WithXattrs, WithUnknownTypesSkipped, WithoutRootEntry,
// WithBeneath) it extracts ADD's archives and tar:// build contexts too.
func Extract(root string, r io.Reader, opts ...Option) error {
	o := newOptions(opts)
	t, err := openTree(root, o)
	if err != nil {
		return err
	}
	defer t.close()
	x := &extractor{
		t:       t,
		rm:      remover{t: t},
		written: make(map[string]bool),
		keep:    make(map[string]bool),
		covSeen: make(map[string]bool),
		buf:     make([]byte, 1<<20),
		pfd:     -1,
	}
	defer x.dropParent()
	tr := tar.NewReader(r)
	for i := 1; ; i++ {
		if o.ctx != nil {
			if err := o.ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &EntryError{Index: i, Err: err}
		}
		x.path = ""
		// add passes tr through when there is no index.
		if err := x.entry(hdr, o.index.add(hdr, tr)); err != nil {
			return &EntryError{Index: i, Name: hdr.Name, Path: x.path, Err: err}
		}
	}
	return x.setDirTimes()
}

var (
	// ErrLayerTooLarge is what Extract's error wraps when a layer expands
	// past the WithMaxSize limit.
	ErrLayerTooLarge = errors.New("the layer expands past the size limit")
	// ErrOutside is what Extract's error wraps when an entry's name or hard
	// link target climbs out of the root with "..", or has a ".." component
	// at all under WithBeneath.
	ErrOutside = errors.New("path escapes the root")
	// ErrAbsolute is what Extract's error wraps when an entry's name or hard
	// link target is absolute under WithBeneath.
	ErrAbsolute = errors.New("absolute path")
)

// An EntryError is an error of Extract about one entry of the archive, or
// about reading it (Name is then empty). Its message quotes the entry's
// name; a caller that must not quote the archive's content builds its own
// from Index and Path.
type EntryError struct {
	// Index is the entry's position in the archive, 1 for the first.
	Index int
	// Name is the entry's name as the archive has it.
	Name string
	// Path is the root-relative path (symlinks resolved) the entry was
	// being written to, "" when the error came before it was known.
	Path string
	// Err is what went wrong.
	Err error
}

func (e *EntryError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("reading layer: %v", e.Err)
	}
	return fmt.Sprintf("extracting layer entry %q: %v", e.Name, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// A LinkTargetError is what an EntryError wraps when a hard link's target
// is refused or cannot be linked to.
type LinkTargetError struct {
	// Target is the hard link's target as the archive has it.
	Target string
	Err    error
}

func (e *LinkTargetError) Error() string { return fmt.Sprintf("linking to %q: %v", e.Target, e.Err) }

func (e *LinkTargetError) Unwrap() error { return e.Err }

type dirTime struct {
	rel          string
	atime, mtime time.Time
}

type extractor struct {
	t  *tree
	rm remover
	// covSeen holds the covered names (WithCovered) this layer has entries
	// at or under.
	covSeen map[string]bool
	// written holds the (resolved) paths this layer created; keep holds them
	// and their ancestors, which an opaque whiteout must not remove.
	written, keep map[string]bool
	dirTimes      []dirTime
	buf           []byte
	// size is the content written so far, bounded by t.opts.maxSize.
	size int64
	// The last parent directory opened, since consecutive entries mostly
	// share one. Dropped whenever something is removed.
	pdir, preal string
	pfd         int
	// path is where the current entry goes, once known, for EntryError.
	path string
}

func (x *extractor) dropParent() {
	if x.pfd >= 0 {
		unix.Close(x.pfd)
	}
	x.pfd, x.pdir, x.preal = -1, "", ""
}

// parent opens (creating if asked) the directory dir and returns its
// descriptor and resolved path. The descriptor stays owned by x.
func (x *extractor) parent(dir string, create bool) (int, string, error) {
	if x.pfd >= 0 && x.pdir == dir {
		return x.pfd, x.preal, nil
	}
	x.dropParent()
	var (
		fd   int
		real string
		err  error
	)
	if create {
		fd, real, err = x.t.mkdirAll(dir)
	} else {
		fd, real, err = x.t.openDir(dir)
	}
	if err != nil {
		return -1, "", err
	}
	x.pfd, x.pdir, x.preal = fd, dir, real
	return fd, real, nil
}

// entryRel cleans a tar name into a root-relative path, refusing names that
// climb out of the root with "..". Absolute names are taken as relative,
// unless beneath (WithBeneath), which refuses them, empty names and any
// ".." component.
func entryRel(name string, beneath bool) (string, error) {
	if beneath {
		switch {
		case name == "":
			return "", errors.New("empty name")
		case strings.HasPrefix(name, "/"):
			return "", ErrAbsolute
		case slices.Contains(strings.Split(name, "/"), ".."):
			return "", ErrOutside
		}
	}
	n := strings.TrimLeft(name, "/")
	c := path.Clean(n)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", ErrOutside
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}

func (x *extractor) markWritten(rel string) {
	if fn := x.t.opts.written; fn != nil && !x.written[rel] {
		fn(rel)
	}
	x.written[rel] = true
	for p := rel; !x.keep[p]; {
		x.keep[p] = true
		if p == "" {
			break
		}
		p, _ = split(p)
	}
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	o := x.t.opts
	rel, err := entryRel(hdr.Name, o.beneath)
	if err != nil {
		return err
	}
	dir, name := split(rel)
	x.coverEntry(rel, dir, name)
	if strings.HasPrefix(name, whiteoutPrefix) && !o.noWhiteouts {
		return x.whiteout(dir, name)
	}
	if o.excluded(rel) || (rel == "" && o.keepRoot) {
		return nil
	}
	if rel == "" {
		name = "."
	}
	pfd, preal, err := x.parent(dir, true)
	if err != nil {
		return err
	}
	real := join(preal, name)
	if rel == "" {
		real = ""
	}
	x.path = real
	if o.excluded(real) || x.skipType(hdr.Typeflag) {
		return nil
	}
	uid, gid, chown := x.owner(hdr)

	// Replace what is there unless directory meets directory.
	var st unix.Stat_t
	exists := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists && !(hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		if rel == "" {
			return errors.New("replacing the root with a non-directory")
		}
		kept, err := x.rm.removeAll(pfd, name, real)
		if err != nil {
			return err
		}
		if kept {
			return errors.New("replacing a directory that holds excluded paths")
		}
		// pfd itself is still valid: only its child went.
		exists = false
	}

	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !exists {
			if err := unix.Mkdirat(pfd, name, 0o700); err != nil {
				return &os.PathError{Op: "mkdirat", Path: real, Err: err}
			}
		}
		if err := x.setMeta(pfd, name, real, hdr, mode, false, chown); err != nil {
			return err
		}
		x.dirTimes = append(x.dirTimes, dirTime{real, accessTime(hdr), hdr.ModTime})
	case tar.TypeReg, tar.TypeRegA:
		if err := x.writeFile(pfd, name, real, hdr, mode, chown, r); err != nil {
			return err
		}
		if err := setTimes(pfd, name, real, hdr); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, name); err != nil {
			return &os.PathError{Op: "symlinkat", Path: real, Err: err}
		}
		if err := x.setMeta(pfd, name, real, hdr, mode, true, chown); err != nil {
			return err
		}
		if err := setTimes(pfd, name, real, hdr); err != nil {
			return err
		}
	case tar.TypeLink:
		if err := x.link(pfd, name, real, hdr); err != nil {
			return err
		}
		if o.linkNoMeta {
			break
		}
		// Like Docker, apply the header's metadata to the linked inode,
		// unless it is a symlink (chmod would follow it).
		if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lstat", Path: real, Err: err}
		}
		// A chown clears security.capability even when it changes nothing,
		// so skip it when the owner is already right.
		isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
		chown = chown && (int(st.Uid) != uid || int(st.Gid) != gid)
		if err := x.setMeta(pfd, name, real, hdr, mode, isLink, chown); err != nil {
			return err
		}
		if err := setTimes(pfd, name, real, hdr); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, name, typ|mode&0o777, int(dev)); err != nil {
			if (err == unix.EPERM && o.devices == UnlessDenied) || o.devices == BestEffort {
				x.t.opts.skip(real, &os.PathError{Op: "mknodat", Path: real, Err: err})
				return nil
			}
			return &os.PathError{Op: "mknodat", Path: real, Err: err}
		}
		if err := x.setMeta(pfd, name, real, hdr, mode, false, chown); err != nil {
			return err
		}
		if err := setTimes(pfd, name, real, hdr); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported entry type %q", hdr.Typeflag)
	}
	x.markWritten(real)
	return nil
}

// skipType reports whether entries of type typ are skipped whole, as
// WithDevices and WithUnknownTypesSkipped say.
func (x *extractor) skipType(typ byte) bool {
	switch typ {
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink:
		return false
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return x.t.opts.devices == Ignored
	}
	return x.t.opts.skipUnknown
}

// owner returns the owner hdr's entry gets, and whether Extract sets it
// (WithOwner, WithoutOwnership).
func (x *extractor) owner(hdr *tar.Header) (uid, gid int, chown bool) {
	switch o := x.t.opts; {
	case o.owner != nil:
		return o.owner.uid, o.owner.gid, true
	case o.noOwnership:
		return 0, 0, false
	}
	return hdr.Uid, hdr.Gid, true
}

// writeFile creates a regular file and streams its content, then sets its
// ownership, extended attributes and mode through the open descriptor.
func (x *extractor) writeFile(pfd int, name, real string, hdr *tar.Header, mode uint32, chown bool, r io.Reader) error {
	fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: real, Err: err}
	}
	f := os.NewFile(uintptr(fd), real)
	defer f.Close()
	if err := x.copyContent(f, r, real, hdr.Size); err != nil {
		return err
	}
	if chown {
		uid, gid, _ := x.owner(hdr)
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return &os.PathError{Op: "fchown", Path: real, Err: err}
		}
	}
	for k, v := range x.xattrRecords(hdr) {
		attr, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if err := x.xattrErr(real, attr, unix.Fsetxattr(fd, attr, []byte(v), 0)); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "fchmod", Path: real, Err: err}
	}
	return f.Close()
}

// copyContent writes the entry's content, of size bytes as its header says,
// to f, counting it against the layer's limit: it fails before writing when
// size goes past it, and while writing should the content be longer.
func (x *extractor) copyContent(f *os.File, r io.Reader, real string, size int64) error {
	max := x.t.opts.maxSize
	if max > 0 {
		if size > max-x.size {
			return fmt.Errorf("%w of %d bytes: its files hold %d bytes before %s, which has %d", ErrLayerTooLarge, max, x.size, real, size)
		}
		// The tar reader holds an entry to its size; this holds it
		// to the limit whatever the reader does.
		r = io.LimitReader(r, max-x.size+1)
	}
	// Hide ReadFrom and WriteTo so that the big buffer is used.
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{r}, x.buf)
	x.size += n
	if err != nil {
		return fmt.Errorf("writing %s: %w", real, err)
	}
	if max > 0 && x.size > max {
		return fmt.Errorf("%w of %d bytes: writing %s", ErrLayerTooLarge, max, real)
	}
	return nil
}

// setMeta sets ownership (when chown), then extended attributes, then the
// mode (chown clears setuid, setgid and security.capability) of name in the
// directory pfd, without following it when it is a symlink.
func (x *extractor) setMeta(pfd int, name, real string, hdr *tar.Header, mode uint32, symlink, chown bool) error {
	if chown {
		uid, gid, _ := x.owner(hdr)
		if err := unix.Fchownat(pfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lchown", Path: real, Err: err}
		}
	}
	for k, v := range x.xattrRecords(hdr) {
		attr, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if err := x.xattrErr(real, attr, unix.Lsetxattr(procPath(pfd, name), attr, []byte(v), 0)); err != nil {
			return err
		}
	}
	if symlink {
		return nil
	}
	if err := unix.Fchmodat(pfd, name, mode, 0); err != nil {
		return &os.PathError{Op: "chmod", Path: real, Err: err}
	}
	return nil
}

// xattrRecords returns the PAX records of hdr, or none when extended
// attributes are ignored (XattrsIgnored).
func (x *extractor) xattrRecords(hdr *tar.Header) map[string]string {
	if x.t.opts.xattrs == Ignored {
		return nil
	}
	return hdr.PAXRecords
}

// xattrErr decides which failures to set an extended attribute are skipped
// (WithXattrs).
func (x *extractor) xattrErr(real, attr string, err error) error {
	if err == nil {
		return nil
	}
	privileged := strings.HasPrefix(attr, "security.") || strings.HasPrefix(attr, "trusted.")
	denied := err == unix.ENOTSUP || (privileged && err == unix.EPERM)
	if p := x.t.opts.xattrs; p == BestEffort || (p == UnlessDenied && denied) {
		x.t.opts.skip(real, fmt.Errorf("setting extended attribute %s: %w", attr, err))
		return nil
	}
	return fmt.Errorf("setting extended attribute %s on %s: %w", attr, real, err)
}

// link makes name a hard link to the entry's Linkname, resolved inside the
// root. The target must exist and not be excluded.
func (x *extractor) link(pfd int, name, real string, hdr *tar.Header) error {
	target, err := entryRel(hdr.Linkname, x.t.opts.beneath)
	if err != nil {
		return &LinkTargetError{Target: hdr.Linkname, Err: err}
	}
	if target == "" {
		return &LinkTargetError{Target: hdr.Linkname, Err: errors.New("not a file")}
	}
	tdir, tname := split(target)
	tfd, treal, err := x.t.openDir(tdir)
	if err != nil {
		return &LinkTargetError{Target: hdr.Linkname, Err: err}
	}
	defer unix.Close(tfd)
	if x.t.opts.excluded(target) || x.t.opts.excluded(join(treal, tname)) {
		return &LinkTargetError{Target: hdr.Linkname, Err: errors.New("excluded path")}
	}
	if err := unix.Linkat(tfd, tname, pfd, name, 0); err != nil {
		return &LinkTargetError{Target: hdr.Linkname, Err: &os.PathError{Op: "linkat", Path: real, Err: err}}
	}
	return nil
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() || hdr.AccessTime.Before(hdr.ModTime) {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

func setTimes(pfd int, name, real string, hdr *tar.Header) error {
	return utimes(pfd, name, real, accessTime(hdr), hdr.ModTime)
}

func utimes(pfd int, name, real string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: real, Err: err}
	}
	return nil
}

// whiteoutTarget returns the name a whiteout entry's name (".wh.NAME")
// deletes, and aufs=true for the AUFS metadata names (".wh..wh.plnk",
// ".wh..wh.aufs", any ".wh..wh." but the opaque marker), which delete
// nothing. A whiteout of "", "." or ".." names no entry of its directory
// (it would delete the directory itself or its parent, which may be outside
// the root): it is an error.
func whiteoutTarget(name string) (target string, aufs bool, err error) {
	target = strings.TrimPrefix(name, whiteoutPrefix)
	switch {
	case target == "" || target == "." || target == "..":
		return "", false, fmt.Errorf("invalid whiteout %q: it names no entry of its directory", name)
	case name != whiteoutOpaque && strings.HasPrefix(target, whiteoutPrefix):
		return "", true, nil
	}
	return target, false, nil
}

// whiteout applies ".wh.NAME" or ".wh..wh..opq" found in dir. It deletes
// only entries of dir (resolved in the root), never dir itself or its parent.
func (x *extractor) whiteout(dir, name string) error {
	target, aufs, err := whiteoutTarget(name)
	if err != nil || aufs {
		return err
	}
	if x.t.opts.excluded(dir) {
		return nil
	}
	if name == whiteoutOpaque {
		fd, real, err := x.t.openDir(dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if x.t.opts.excluded(real) {
			return nil
		}
		x.dropParent()
		return x.purge(fd, real)
	}
	fd, preal, err := x.t.openDir(dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	real := join(preal, target)
	if x.written[real] || x.t.opts.excluded(real) {
		// A whiteout hides lower layers only.
		return nil
	}
	x.dropParent()
	_, err = x.rm.removeAll(fd, target, real)
	return err
}

// purge removes from the directory fd (rel) everything this layer did not
// write, keeping the way to what it did.
func (x *extractor) purge(fd int, rel string) error {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(dfd), rel)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", rel, err)
	}
	for _, n := range names {
		child := join(rel, n)
		if !x.keep[child] {
			if _, err := x.rm.removeAll(dfd, n, child); err != nil {
				return err
			}
			continue
		}
		cfd, err := unix.Openat(dfd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "openat", Path: child, Err: err}
		}
		err = x.purge(cfd, child)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// setDirTimes gives directories their times once nothing more is written
// into them.
func (x *extractor) setDirTimes() error {
	x.dropParent()
	for i := len(x.dirTimes) - 1; i >= 0; i-- {
		d := x.dirTimes[i]
		dir, name := split(d.rel)
		if d.rel == "" {
			name = "."
		}
		fd, real, err := x.t.openDir(dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("setting times of %s: %w", d.rel, err)
		}
		if real != dir {
			// A later entry replaced an ancestor with a symlink: the
			// directory is no longer there, and what the symlink leads
			// to (an excluded path, say) is not this layer's to date.
			unix.Close(fd)
			continue
		}
		err = utimes(fd, name, d.rel, d.atime, d.mtime)
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("setting times of %s: %w", d.rel, err)
		}
	}
	return nil
}
