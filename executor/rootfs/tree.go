package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// tree is an open root directory. All lookups go through openat2 with
// RESOLVE_IN_ROOT, so symlinks and ".." resolve as inside a chroot, or
// with RESOLVE_BENEATH (WithBeneath), so that those leaving the root fail.
type tree struct {
	fd      int    // O_PATH descriptor of the root
	real    string // the root's absolute path with symlinks resolved
	dev     uint64 // the root's device
	opts    *options
	resolve uint64 // the openat2 resolve flags of lookups
}

func openTree(root string, o *options) (*tree, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", root, &os.PathError{Op: "open", Path: root, Err: err})
	}
	real, err := fdPath(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("resolving root %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inspecting root %s: %w", root, err)
	}
	t := &tree{fd: fd, real: real, dev: st.Dev, opts: o, resolve: resolveFlags}
	if o.beneath {
		t.resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS
	}
	return t, nil
}

func (t *tree) close() { unix.Close(t.fd) }

// fdPath returns the path the kernel holds for fd.
func fdPath(fd int) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	return p, nil
}

// procPath names the entry name inside the directory open as dirfd without
// resolving anything else again; the final component is not followed by the
// l* calls that receive it.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// open opens rel inside the root, resolving symlinks as a chroot would.
func (t *tree) open(rel string, flags int, resolve uint64) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve}
	for {
		fd, err := unix.Openat2(t.fd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
		}
		return fd, nil
	}
}

// openDir opens the directory rel (O_PATH) and returns it with the path it
// really has inside the root once symlinks are resolved.
func (t *tree) openDir(rel string) (int, string, error) {
	fd, err := t.open(rel, unix.O_PATH|unix.O_DIRECTORY, t.resolve)
	if err != nil {
		return -1, "", err
	}
	real, err := t.relOf(fd)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	return fd, real, nil
}

// relOf returns the root-relative path of an open descriptor.
func (t *tree) relOf(fd int) (string, error) {
	p, err := fdPath(fd)
	if err != nil {
		return "", err
	}
	if t.real == "/" {
		return strings.TrimPrefix(p, "/"), nil
	}
	if p == t.real {
		return "", nil
	}
	if rest, ok := strings.CutPrefix(p, t.real+"/"); ok {
		return rest, nil
	}
	return "", fmt.Errorf("resolving %s: outside the root %s", p, t.real)
}

// mkdirAll opens the directory rel, creating it and its missing ancestors
// (mode 0755, like Docker, owned as WithOwner says) inside the root.
func (t *tree) mkdirAll(rel string) (int, string, error) {
	fd, real, err := t.openDir(rel)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, real, err
	}
	if t.opts.beneath {
		// A symlink on the way is followed only where it leads beneath
		// the root, and its target is never made.
		return t.mkdirSteps(rel)
	}
	// Like Docker, a symlink met on the way whose target is missing leads to
	// that target being made: find the path the symlinks lead to (inside the
	// root, lexically) and make its directories. Every step below still goes
	// through openat2, so a wrong answer cannot escape the root.
	if joined, err := securejoin.SecureJoin(t.real, rel); err == nil {
		if r, err := filepath.Rel(t.real, joined); err == nil {
			if r = cleanRel(filepath.ToSlash(r)); r != "" {
				rel = r
			}
		}
	}
	return t.mkdirSteps(rel)
}

// mkdirSteps makes the missing directories of rel one component after the
// other, each looked up again through openat2.
func (t *tree) mkdirSteps(rel string) (int, string, error) {
	parts := strings.Split(rel, "/")
	pfd, preal := t.fd, ""
	closeParent := func() {
		if pfd != t.fd {
			unix.Close(pfd)
		}
	}
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		fd, real, err := t.openDir(prefix)
		if errors.Is(err, unix.ENOENT) {
			if t.opts.excluded(join(preal, parts[i])) {
				closeParent()
				return -1, "", fmt.Errorf("creating directory %s: excluded", join(preal, parts[i]))
			}
			merr := unix.Mkdirat(pfd, parts[i], 0o755)
			if merr != nil && merr != unix.EEXIST {
				closeParent()
				return -1, "", &os.PathError{Op: "mkdirat", Path: prefix, Err: merr}
			}
			if merr == nil {
				if err := t.madeDir(pfd, parts[i], join(preal, parts[i])); err != nil {
					closeParent()
					return -1, "", err
				}
			}
			fd, real, err = t.openDir(prefix)
		}
		closeParent()
		if err != nil {
			return -1, "", err
		}
		pfd, preal = fd, real
	}
	return pfd, preal, nil
}

// madeDir gives the directory name of pfd, just made on the way to an
// entry, the owner of WithOwner, and reports it to WithWritten.
func (t *tree) madeDir(pfd int, name, real string) error {
	if o := t.opts.owner; o != nil {
		if err := unix.Fchownat(pfd, name, o.uid, o.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "lchown", Path: real, Err: err}
		}
	}
	if t.opts.written != nil {
		t.opts.written(real)
	}
	return nil
}

// remover deletes trees without following symlinks and without touching
// excluded paths, or, when sameDev is set, other filesystems.
type remover struct {
	t       *tree
	sameDev bool
}

// removeAll removes name (rel inside the root) from the directory open as
// dirfd. It returns kept=true when an excluded path (or another filesystem)
// inside it had to stay, in which case the directory remains. name must be
// one entry of dirfd: "", ".", ".." and names with a slash are refused, so
// that it never reaches dirfd itself or its parent.
func (r remover) removeAll(dirfd int, name, rel string) (kept bool, err error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return false, fmt.Errorf("removing %q: not an entry of its directory", rel)
	}
	if r.t.opts.excluded(rel) {
		return true, nil
	}
	err = unix.Unlinkat(dirfd, name, 0)
	switch err {
	case nil, unix.ENOENT:
		return false, nil
	case unix.EISDIR, unix.EPERM:
	default:
		return false, &os.PathError{Op: "unlinkat", Path: rel, Err: err}
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "openat", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if r.sameDev {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return false, &os.PathError{Op: "fstat", Path: rel, Err: err}
		}
		if st.Dev != r.t.dev {
			return true, nil
		}
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return false, fmt.Errorf("reading directory %s: %w", rel, err)
	}
	for _, n := range names {
		k, err := r.removeAll(fd, n, join(rel, n))
		if err != nil {
			return false, err
		}
		kept = kept || k
	}
	if kept {
		return true, nil
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return false, &os.PathError{Op: "rmdir", Path: rel, Err: err}
	}
	return false, nil
}
