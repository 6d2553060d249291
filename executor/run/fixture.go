package run

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"unsafe"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// fixture creates what the helper needs in a root (mount points) and removes again what
// BuildKit removes.
//
// Two kinds of mount point, as BuildKit's runc executor leaves them:
//
//   - those of the OCI spec's default mounts, /proc, /dev and /sys (mountPoint): runc
//     makes them when the root lacks them (libcontainer's mountToRootfs, MkdirAllInRoot
//     with mode 0755) and nothing removes them, so they stay in the step's layer, as empty
//     directories owned by root. What runc mounts beneath them (/dev/pts, /dev/shm,
//     /dev/mqueue in the /dev tmpfs, /sys/fs/cgroup in sysfs) is inside those file
//     systems and leaves nothing in the root;
//   - the stubs of /etc/hosts and /etc/resolv.conf (ensure): runc makes them too (an
//     empty file, mode 0644, and the missing directories on the way), and BuildKit's
//     executor.MountStubsCleaner (executor/stubs.go; RemoveMountStubsRecursive, which
//     the Dockerfile frontend always sets, takes the directories too) removes each one
//     that is still an empty file or directory after the step. undo does that.
//
// Everything goes through descriptors: the parent directory of each stub it creates is
// held open from its creation until undo, and undo removes the entry by name from that
// directory, only if it is still the inode created. So whatever the command did in
// between (renamed a directory, put a symlink to a host directory in its place), undo
// acts on nothing but what the fixture made, wherever in the root it now is. The mount
// points that stay are not looked at again after the step.
type fixture struct {
	root     int    // the root, open as a directory
	rootPath string // its host path, symlinks resolved
	created  []made // in the order of creation
	temp     []string
}

// made is an entry the fixture created.
type made struct {
	parent   int    // the directory it was created in, open until undo
	name     string // its name there
	dev, ino uint64
	dir      bool
}

// resolveIn is how the fixture resolves a path below the root: inside it, and meeting no
// symlink (securejoin has resolved those while computing the path).
const resolveIn = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func newFixture(root string) (*fixture, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", root, err)
	}
	return &fixture{root: fd, rootPath: root}, nil
}

// openDir opens the directory rel (relative to the root, "" for the root itself).
func (f *fixture) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(f.root, rel, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: resolveIn,
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// ensure returns the path of name inside the root, relative to it and free of symlinks,
// creating it (a directory if dir, else an empty file) and its missing parents if it does
// not exist, without changing the times of any existing directory; undo removes what it
// created. It returns "" for a file that exists as something other than a regular file
// (or whose parent is not a directory), and an error for a directory that does.
func (f *fixture) ensure(name string, dir bool) (string, error) {
	return f.ensureIn(name, dir, false)
}

// mountPoint returns the path inside the root of the mount point name of an OCI default
// mount (/proc, /dev, /sys), relative to the root and free of symlinks, creating the
// directory (mode 0755, owned by the fixture's user: root) and its missing parents if it
// does not exist. What it creates stays, as runc leaves it (see fixture), with the times
// of its parent changed as runc's mkdir changes them. With ordinary (proc and sysfs), a
// name that exists as a symlink or anything but a directory is an error, as runc refuses
// to mount proc or sysfs through one ("must be mounted on ordinary directory"); otherwise
// symlinks resolve inside the root, as runc resolves the target of a tmpfs mount.
func (f *fixture) mountPoint(name string, ordinary bool) (string, error) {
	if ordinary {
		var st unix.Stat_t
		rel := path.Clean("/" + name)[1:]
		for {
			err := unix.Fstatat(f.root, rel, &st, unix.AT_SYMLINK_NOFOLLOW)
			if err == unix.EINTR {
				continue
			}
			if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return "", fmt.Errorf("preparing %s in the root: exists and is not a directory (proc and sysfs are mounted on an ordinary directory only, as runc does)", name)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return "", fmt.Errorf("preparing %s in the root: %w", name, err)
			}
			break
		}
	}
	return f.ensureIn(name, true, true)
}

// ensureIn is ensure, or mountPoint when keep is set.
func (f *fixture) ensureIn(name string, dir, keep bool) (string, error) {
	host, err := securejoin.SecureJoin(f.rootPath, name)
	if err != nil {
		return "", fmt.Errorf("resolving %s in the root: %w", name, err)
	}
	rel, err := filepath.Rel(f.rootPath, host)
	if err != nil || rel == "." {
		return "", fmt.Errorf("resolving %s in the root: %s is not below it", name, host)
	}
	rel = filepath.ToSlash(rel)
	parentRel, base := path.Split(rel)
	parentRel = path.Clean("/" + parentRel)[1:]

	pfd, err := f.openDir(parentRel)
	if errors.Is(err, unix.ENOENT) {
		if _, err := f.ensureIn("/"+parentRel, true, keep); err != nil {
			return "", err
		}
		pfd, err = f.openDir(parentRel)
	}
	switch {
	case !dir && errors.Is(err, unix.ENOTDIR):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("preparing %s in the root: %w", name, err)
	}
	keepFd := false // held open for undo
	defer func() {
		if !keepFd {
			unix.Close(pfd)
		}
	}()

	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && dir && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return "", fmt.Errorf("preparing %s in the root: exists and is not a directory", name)
	case err == nil && !dir && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return "", nil
	case err == nil:
		return rel, nil
	case !errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("preparing %s in the root: %w", name, err)
	}

	ts, err := fdTimes(pfd)
	if err != nil {
		return "", fmt.Errorf("preparing %s in the root: %w", name, err)
	}
	if dir {
		err = unix.Mkdirat(pfd, base, 0o755)
	} else {
		var fd int
		fd, err = unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating %s in the root: %w", name, err)
	}
	if keep {
		// The mode runc's mkdir gives under the usual umask (022), whatever ours is.
		if err := unix.Fchmodat(pfd, base, 0o755, 0); err != nil {
			return "", fmt.Errorf("creating %s in the root: %w", name, err)
		}
		return rel, nil
	}
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", fmt.Errorf("creating %s in the root: %w", name, err)
	}
	keepFd = true
	f.created = append(f.created, made{parent: pfd, name: base, dev: st.Dev, ino: st.Ino, dir: dir})
	if err := setFdTimes(pfd, ts); err != nil {
		return "", fmt.Errorf("restoring the times of the parent of %s: %w", name, err)
	}
	return rel, nil
}

// hostFile returns the host's file name if it is a regular file (symlinks followed), or a
// temporary file holding fallback.
func (f *fixture) hostFile(name, fallback string) (string, error) {
	if fi, err := os.Stat(name); err == nil && fi.Mode().IsRegular() {
		return name, nil
	}
	tmp, err := os.CreateTemp("", "slipway-run-"+filepath.Base(name)+"-")
	if err != nil {
		return "", fmt.Errorf("generating %s: %w", name, err)
	}
	f.temp = append(f.temp, tmp.Name())
	_, err = tmp.WriteString(fallback)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err != nil {
		return "", fmt.Errorf("generating %s: %w", name, err)
	}
	return tmp.Name(), nil
}

// withHostsEntry generates a copy of the file source with line appended, removed by undo.
func (f *fixture) withHostsEntry(source, line string) (string, error) {
	b, err := os.ReadFile(source)
	if err != nil {
		return "", fmt.Errorf("generating /etc/hosts: %w", err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	b = append(b, line...)
	tmp, err := os.CreateTemp("", "slipway-run-hosts-")
	if err != nil {
		return "", fmt.Errorf("generating /etc/hosts: %w", err)
	}
	f.temp = append(f.temp, tmp.Name())
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err != nil {
		return "", fmt.Errorf("generating /etc/hosts: %w", err)
	}
	return tmp.Name(), nil
}

// undo removes what ensure created, newest first, keeping the times of the parent
// directories as they were just before (the original times, or those the command set). A
// directory the command put something in is kept, and so is a file it wrote to; an entry
// the command replaced (another inode under the name) is the command's. It must run only
// once the namespaces are gone, so that nothing is mounted on the mount points any more,
// and it closes the fixture.
func (f *fixture) undo() error {
	var errs []error
	for i := len(f.created) - 1; i >= 0; i-- {
		m := f.created[i]
		if err := m.remove(); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", m.name, err))
		}
		unix.Close(m.parent)
	}
	f.created = nil
	for _, t := range f.temp {
		if err := os.Remove(t); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", t, err))
		}
	}
	f.temp = nil
	unix.Close(f.root)
	return errors.Join(errs...)
}

// remove removes m from its parent if it is still what was made, empty, and restores the
// parent's times.
func (m made) remove() error {
	ts, err := fdTimes(m.parent)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(m.parent, m.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Dev != m.dev || st.Ino != m.ino {
		return nil
	}
	if m.dir {
		err = unix.Unlinkat(m.parent, m.name, unix.AT_REMOVEDIR)
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return nil
		}
	} else {
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
			return nil
		}
		err = unix.Unlinkat(m.parent, m.name, 0)
	}
	if err != nil {
		return err
	}
	if err := setFdTimes(m.parent, ts); err != nil {
		return fmt.Errorf("restoring the times of its parent: %w", err)
	}
	return nil
}

// fdTimes returns the access and modification times of the file open as fd.
func fdTimes(fd int) ([2]unix.Timespec, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return [2]unix.Timespec{}, err
	}
	return [2]unix.Timespec{st.Atim, st.Mtim}, nil
}

// setFdTimes sets the access and modification times of the file open as fd
// (utimensat(fd, NULL, ...), which x/sys/unix has no wrapper for).
func setFdTimes(fd int, ts [2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
