package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
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
//     included), ownership (unless WithoutOwnership), modification time and
//     the extended attributes of their PAX records; directories get their
//     times once the whole layer is written; missing parents are created
//     with mode 0755;
//   - an existing entry of another type is replaced; an existing directory
//     meeting a directory entry is kept and gets the entry's metadata;
//   - ".wh.NAME" removes NAME as lower layers left it; ".wh..wh..opq" empties
//     its directory of what lower layers put there, keeping what this layer
//     adds, whatever the order of the entries; other ".wh..wh." names are
//     AUFS metadata and ignored; ".wh.", ".wh.." and ".wh..." (whiteouts of
//     "", "." and "..") are refused;
//   - device nodes that cannot be made (EPERM) and extended attributes that
//     cannot be set in the security and trusted namespaces (EPERM, ENOTSUP),
//     or in any namespace on a filesystem without support (ENOTSUP), are
//     skipped and reported to the WithSkipped callback.
//
// Containment: every name, link target and whiteout resolves inside root as
// in a chroot: absolute names and symlinks met on the way (absolute or
// relative) stay inside root. Names and hard link targets that climb out with
// ".." are refused, as are hard links to missing or excluded files. Symlinks
// are created with whatever target they carry; they are never followed out of
// root. Excluded paths are skipped silently, also when reached through a
// symlink.
//
// Size: with WithMaxSize, the content of the layer's files is bounded, and
// a layer that expands past the bound fails on the entry that would cross
// it, before it is written.
//
// Extract streams: it keeps no temporary files and does not sync. An error
// names the entry and leaves the entries before it applied (and the entry
// itself, partly written, when reading or writing its content failed): the
// root is then not a faithful tree and must not be used as one.
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
		buf:     make([]byte, 1<<20),
		pfd:     -1,
	}
	defer x.dropParent()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		// add passes tr through when there is no index.
		if err := x.entry(hdr, o.index.add(hdr, tr)); err != nil {
			return fmt.Errorf("extracting layer entry %q: %w", hdr.Name, err)
		}
	}
	return x.setDirTimes()
}

// ErrLayerTooLarge is what Extract's error wraps when a layer expands past
// the WithMaxSize limit.
var ErrLayerTooLarge = errors.New("the layer expands past the size limit")

type dirTime struct {
	rel          string
	atime, mtime time.Time
}

type extractor struct {
	t  *tree
	rm remover
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
// climb out of the root with "..". Absolute names are taken as relative.
func entryRel(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	c := path.Clean(n)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errors.New("path escapes the root")
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}

func (x *extractor) markWritten(rel string) {
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
	rel, err := entryRel(hdr.Name)
	if err != nil {
		return err
	}
	dir, name := split(rel)
	if strings.HasPrefix(name, whiteoutPrefix) {
		return x.whiteout(dir, name)
	}
	if x.t.opts.excluded(rel) {
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
	if x.t.opts.excluded(real) {
		return nil
	}

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
		if err := x.setMeta(pfd, name, real, hdr, mode, false, !x.t.opts.noOwnership); err != nil {
			return err
		}
		x.dirTimes = append(x.dirTimes, dirTime{real, accessTime(hdr), hdr.ModTime})
	case tar.TypeReg, tar.TypeRegA:
		if err := x.writeFile(pfd, name, real, hdr, mode, r); err != nil {
			return err
		}
		if err := setTimes(pfd, name, real, hdr); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, name); err != nil {
			return &os.PathError{Op: "symlinkat", Path: real, Err: err}
		}
		if err := x.setMeta(pfd, name, real, hdr, mode, true, !x.t.opts.noOwnership); err != nil {
			return err
		}
		if err := setTimes(pfd, name, real, hdr); err != nil {
			return err
		}
	case tar.TypeLink:
		if err := x.link(pfd, name, real, hdr); err != nil {
			return err
		}
		// Like Docker, apply the header's metadata to the linked inode,
		// unless it is a symlink (chmod would follow it).
		if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lstat", Path: real, Err: err}
		}
		// A chown clears security.capability even when it changes nothing,
		// so skip it when the owner is already right.
		isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
		chown := !x.t.opts.noOwnership && (int(st.Uid) != hdr.Uid || int(st.Gid) != hdr.Gid)
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
			if err == unix.EPERM {
				x.t.opts.skip(real, &os.PathError{Op: "mknodat", Path: real, Err: err})
				return nil
			}
			return &os.PathError{Op: "mknodat", Path: real, Err: err}
		}
		if err := x.setMeta(pfd, name, real, hdr, mode, false, !x.t.opts.noOwnership); err != nil {
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

// writeFile creates a regular file and streams its content, then sets its
// ownership, extended attributes and mode through the open descriptor.
func (x *extractor) writeFile(pfd int, name, real string, hdr *tar.Header, mode uint32, r io.Reader) error {
	fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: real, Err: err}
	}
	f := os.NewFile(uintptr(fd), real)
	defer f.Close()
	if err := x.copyContent(f, r, real, hdr.Size); err != nil {
		return err
	}
	if !x.t.opts.noOwnership {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return &os.PathError{Op: "fchown", Path: real, Err: err}
		}
	}
	for k, v := range hdr.PAXRecords {
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
		if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lchown", Path: real, Err: err}
		}
	}
	for k, v := range hdr.PAXRecords {
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

// xattrErr decides which failures to set an extended attribute are skipped.
func (x *extractor) xattrErr(real, attr string, err error) error {
	if err == nil {
		return nil
	}
	privileged := strings.HasPrefix(attr, "security.") || strings.HasPrefix(attr, "trusted.")
	if err == unix.ENOTSUP || (privileged && err == unix.EPERM) {
		x.t.opts.skip(real, fmt.Errorf("setting extended attribute %s: %w", attr, err))
		return nil
	}
	return fmt.Errorf("setting extended attribute %s on %s: %w", attr, real, err)
}

// link makes name a hard link to the entry's Linkname, resolved inside the
// root. The target must exist and not be excluded.
func (x *extractor) link(pfd int, name, real string, hdr *tar.Header) error {
	target, err := entryRel(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("linking to %q: %w", hdr.Linkname, err)
	}
	if target == "" {
		return fmt.Errorf("linking to %q: not a file", hdr.Linkname)
	}
	tdir, tname := split(target)
	tfd, treal, err := x.t.openDir(tdir)
	if err != nil {
		return fmt.Errorf("linking to %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tfd)
	if x.t.opts.excluded(target) || x.t.opts.excluded(join(treal, tname)) {
		return fmt.Errorf("linking to %q: excluded path", hdr.Linkname)
	}
	if err := unix.Linkat(tfd, tname, pfd, name, 0); err != nil {
		return fmt.Errorf("linking to %q: %w", hdr.Linkname, &os.PathError{Op: "linkat", Path: real, Err: err})
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
		fd, _, err := x.t.openDir(dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("setting times of %s: %w", d.rel, err)
		}
		err = utimes(fd, name, d.rel, d.atime, d.mtime)
		unix.Close(fd)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("setting times of %s: %w", d.rel, err)
		}
	}
	return nil
}
