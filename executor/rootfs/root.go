package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Root is a root directory held open for changes made by name, for callers
// that work on a stage's tree while untrusted code may change it (RUN
// --mount's set-up and clean-up around the step). Directories are looked
// up with openat2 and RESOLVE_IN_ROOT, so absolute symlinks and ".." met on
// the way resolve inside the root, as in a chroot; a Dir, once open, stays
// the same directory whatever is renamed or replaced by a symlink around
// it, and its methods act on one entry by name without following it.
// Nothing a Root or a Dir does can reach a file outside the root, nor an
// excluded path (see WithExclude).
//
// The methods are not safe for concurrent use of the same Dir.
type Root struct {
	t *tree
}

// OpenRoot opens the directory dir as a Root. Only the exclusions of opts
// apply.
func OpenRoot(dir string, opts ...Option) (*Root, error) {
	t, err := openTree(dir, newOptions(opts))
	if err != nil {
		return nil, err
	}
	return &Root{t: t}, nil
}

// Close closes the root; Dirs opened from it stay usable until closed.
func (r *Root) Close() error {
	r.t.close()
	return nil
}

// OpenDir opens the directory rel (root-relative; a leading slash is
// allowed), resolving symlinks inside the root. The error satisfies
// errors.Is(err, fs.ErrNotExist) when a component is missing, and
// errors.Is(err, unix.ENOTDIR) when one is not a directory.
func (r *Root) OpenDir(rel string) (*Dir, error) {
	fd, real, err := r.t.openDir(cleanRel(rel))
	if err != nil {
		return nil, err
	}
	return &Dir{t: r.t, fd: fd, rel: real}, nil
}

// Dir is a directory inside a Root, held open by descriptor.
type Dir struct {
	t   *tree
	fd  int    // O_PATH
	rel string // where it was when opened, resolved; for messages and exclusions
}

// Rel returns the root-relative path the directory had when it was opened.
func (d *Dir) Rel() string { return d.rel }

// Close closes the directory.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

func (d *Dir) child(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("%q in %s: not an entry name", name, d.rel)
	}
	rel := join(d.rel, name)
	if d.t.opts.excluded(rel) {
		return "", fmt.Errorf("%s: excluded path", rel)
	}
	return rel, nil
}

// Lstat returns the file information of the entry name, not following it.
func (d *Dir) Lstat(name string) (fs.FileInfo, error) {
	if _, err := d.child(name); err != nil {
		return nil, err
	}
	return os.Lstat(procPath(d.fd, name))
}

// Times returns the directory's own access and modification times.
func (d *Dir) Times() (atime, mtime time.Time, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return time.Time{}, time.Time{}, &os.PathError{Op: "fstat", Path: d.rel, Err: err}
	}
	return time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()), nil
}

// SetTimes sets the directory's own access and modification times.
func (d *Dir) SetTimes(atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	// The descriptor's /proc link names the directory itself, wherever it is.
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(d.fd), ts, 0); err != nil {
		return &os.PathError{Op: "utimensat", Path: d.rel, Err: err}
	}
	return nil
}

// Mkdir makes the directory name with mode perm (permission, setuid,
// setgid and sticky bits, umask not applied) and, when uid is not
// negative, owner uid:gid, and returns it open. An existing entry of that
// name is an error (fs.ErrExist), a symlink included.
func (d *Dir) Mkdir(name string, perm fs.FileMode, uid, gid int) (*Dir, error) {
	rel, err := d.child(name)
	if err != nil {
		return nil, err
	}
	if err := unix.Mkdirat(d.fd, name, 0o700); err != nil {
		return nil, &os.PathError{Op: "mkdirat", Path: rel, Err: err}
	}
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: rel, Err: err}
	}
	if err := setOwnerMode(fd, rel, perm, uid, gid); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Dir{t: d.t, fd: fd, rel: rel}, nil
}

// WriteFile creates the regular file name holding data, with mode perm
// and, when uid is not negative, owner uid:gid. An existing entry of that
// name is an error (fs.ErrExist), a symlink included.
func (d *Dir) WriteFile(name string, data []byte, perm fs.FileMode, uid, gid int) error {
	rel, err := d.child(name)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := setOwnerMode(fd, rel, perm, uid, gid); err != nil {
		return err
	}
	return f.Close()
}

func setOwnerMode(fd int, rel string, perm fs.FileMode, uid, gid int) error {
	if uid >= 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return &os.PathError{Op: "fchown", Path: rel, Err: err}
		}
	}
	if err := unix.Fchmod(fd, unixMode(perm)); err != nil {
		return &os.PathError{Op: "fchmod", Path: rel, Err: err}
	}
	return nil
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}

// RemoveAll removes the entry name and, when it is a directory, everything
// under it, without following symlinks, leaving excluded paths and what
// leads to them. A missing entry is not an error.
func (d *Dir) RemoveAll(name string) error {
	rel, err := d.child(name)
	if err != nil {
		return err
	}
	kept, err := remover{t: d.t}.removeAll(d.fd, name, rel)
	if err != nil {
		return err
	}
	if kept {
		return fmt.Errorf("removing %s: it holds excluded paths", rel)
	}
	return nil
}

// Rename renames the entry oldName to newName in the same directory,
// replacing what newName was unless it is a non-empty directory.
func (d *Dir) Rename(oldName, newName string) error {
	orel, err := d.child(oldName)
	if err != nil {
		return err
	}
	if _, err := d.child(newName); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, oldName, d.fd, newName); err != nil {
		return &os.LinkError{Op: "renameat", Old: orel, New: join(d.rel, newName), Err: err}
	}
	return nil
}

// RemoveDir removes the entry name if it is still the directory sub (the
// same inode) and is empty; removed is false, with no error, when it is
// not empty, is missing, or is something else now.
func (d *Dir) RemoveDir(name string, sub *Dir) (removed bool, err error) {
	rel, err := d.child(name)
	if err != nil {
		return false, err
	}
	var now, want unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &now, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	if err := unix.Fstat(sub.fd, &want); err != nil {
		return false, &os.PathError{Op: "fstat", Path: sub.rel, Err: err}
	}
	if now.Dev != want.Dev || now.Ino != want.Ino {
		return false, nil
	}
	switch err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR); err {
	case nil:
		return true, nil
	case unix.ENOTEMPTY, unix.EEXIST, unix.ENOENT:
		return false, nil
	default:
		return false, &os.PathError{Op: "rmdir", Path: rel, Err: err}
	}
}
