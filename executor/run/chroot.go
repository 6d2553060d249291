package run

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// Chroot returns the Runner for use outside a pod (local CLI, tests); it needs root
// privileges (CAP_SYS_ADMIN, CAP_SYS_CHROOT) and Init.
//
// Each Run re-executes the current binary (/proc/self/exe) as a helper in new mount, PID,
// UTS and IPC namespaces; the helper is PID 1 there. It makes every mount private, mounts
// inside Spec.Root:
//
//   - /proc: a proc of the new PID namespace;
//   - /dev: a tmpfs (mode 755) with null, zero, full, random, urandom and tty bound from the
//     host's /dev, pts (a new devpts instance), ptmx -> pts/ptmx, shm (a tmpfs, mode 1777),
//     and the fd, stdin, stdout, stderr and core symlinks into /proc;
//   - /sys: a read-only sysfs, or a read-only bind of the host's /sys if sysfs is refused;
//   - /etc/hosts and /etc/resolv.conf: read-only binds of the host's files (of generated
//     localhost-only files if the host has none). A path that exists in the root as
//     something other than a regular file is left alone.
//
// then runs the command chrooted into Root as a child, reaps orphans, and reports the
// command's status. The hostname is the host's. When the command exits, the helper exits,
// which kills whatever the command left behind and discards every mount with the
// namespaces; if ctx is done first, the helper is killed, with the same effect.
//
// Afterwards Run removes the mount points it had to create in the root (including /etc
// itself if the root had none, unless the command put something in it) and restores the
// access and modification times of the directories it created them in, so a snapshot
// comparing lstat results (except ctime, which cannot be set) sees only what the command
// changed. A directory's times the command changed keep the command's values. The ctime
// of such a parent does change (nothing can set it): a snapshotter comparing ctime sees,
// say, /etc as changed, with the same metadata, when the root has /etc but no /etc/hosts.
// If the process dies during Run, the created mount points stay (the mounts do not).
//
// Runs on different roots may happen concurrently; two at once on one root may not.
func Chroot() Runner { return chrootRunner{} }

// helperEnv marks the process as the namespace helper; see Init.
const helperEnv = "_SLIPWAY_RUN_HELPER"

// initCalled records that Init ran in this process and returned.
var initCalled bool

type chrootRunner struct{}

// helperConfig is what Run sends the helper on fd 3, gob-encoded (which, unlike JSON,
// keeps strings that are not UTF-8 intact).
type helperConfig struct {
	Root   string   // absolute host path, symlinks resolved
	Path   string   // the executable, inside Root
	Args   []string // argv
	Env    []string
	Dir    string // inside Root
	UID    uint32
	GID    uint32
	Groups []uint32
	Proc   string // host path of the /proc mount point; empty: none
	Dev    string
	Sys    string
	Files  []bindFile // read-only file binds
}

type bindFile struct {
	Source string // host path
	Target string // host path inside Root
}

// helperResult is what the helper sends back on fd 4, gob-encoded.
type helperResult struct {
	Err    string // why the command did not run; empty if it ran
	Status int    // its wait status
}

func (chrootRunner) Run(ctx context.Context, s Spec) (retErr error) {
	if !initCalled {
		return errors.New("running in a chroot: run.Init was not called at the start of main")
	}
	root, err := resolveRoot(s.Root)
	if err != nil {
		return err
	}
	p, err := prepare(root, s)
	if err != nil {
		return err
	}
	cfg := helperConfig{
		Root: root, Path: p.path, Args: s.Args, Env: p.env, Dir: p.dir,
		UID: s.UID, GID: s.GID, Groups: s.Groups,
	}

	fx := &fixture{root: root}
	defer func() {
		retErr = errors.Join(retErr, fx.undo())
	}()
	if cfg.Proc, err = fx.ensure("/proc", true); err != nil {
		return err
	}
	if cfg.Dev, err = fx.ensure("/dev", true); err != nil {
		return err
	}
	if cfg.Sys, err = fx.ensure("/sys", true); err != nil {
		return err
	}
	for _, f := range []struct{ name, fallback string }{
		{"/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		{"/etc/resolv.conf", ""},
	} {
		target, err := fx.ensure(f.name, false)
		if err != nil {
			return err
		}
		if target == "" {
			continue
		}
		source, err := fx.hostFile(f.name, f.fallback)
		if err != nil {
			return err
		}
		cfg.Files = append(cfg.Files, bindFile{Source: source, Target: target})
	}
	return runHelper(ctx, cfg, s.Stdout, s.Stderr)
}

// resolveRoot checks that root is an absolute path to a directory, and resolves its
// symlinks.
func resolveRoot(root string) (string, error) {
	if !filepath.IsAbs(root) {
		return "", fmt.Errorf("checking root %q: not an absolute path", root)
	}
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("checking root %s: %w", root, err)
	}
	fi, err := os.Stat(r)
	if err != nil {
		return "", fmt.Errorf("checking root %s: %w", root, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("checking root %s: not a directory", root)
	}
	return r, nil
}

// runHelper starts the namespace helper with cfg and waits for its result.
func runHelper(ctx context.Context, cfg helperConfig, stdout, stderr io.Writer) error {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting the namespace helper: %w", err)
	}
	defer cfgR.Close()
	defer cfgW.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting the namespace helper: %w", err)
	}
	defer resR.Close()
	defer resW.Close()

	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"slipway-run"}
	cmd.Env = []string{helperEnv + "=1"}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{cfgR, resW} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		// The helper must not outlive us: its death ends the namespaces.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.WaitDelay = waitDelay

	// Pdeathsig fires when the thread that started the child exits; keep this one alive.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the namespace helper: %w", err)
	}
	cfgR.Close()
	resW.Close()
	writeErr := gob.NewEncoder(cfgW).Encode(cfg)
	cfgW.Close()
	out, readErr := io.ReadAll(resR)
	waitErr := cmd.Wait()

	if ctx.Err() != nil {
		return fmt.Errorf("running %s: %w", cfg.Args[0], ctx.Err())
	}
	var res helperResult
	if err := gob.NewDecoder(bytes.NewReader(out)).Decode(&res); err != nil {
		return fmt.Errorf("running %s: the namespace helper failed: %w",
			cfg.Args[0], errors.Join(waitErr, writeErr, readErr, err))
	}
	if res.Err != "" {
		return fmt.Errorf("running %s: %s", cfg.Args[0], res.Err)
	}
	return exitErrorFromStatus(syscall.WaitStatus(res.Status))
}

// fixture creates what the helper needs in a root and removes it again.
type fixture struct {
	root    string
	created []string // host paths, in the order of creation
	temp    []string // host files outside the root
}

// ensure returns the host path of name inside the root, creating it (a directory if dir,
// else an empty file) and its missing parents if it does not exist, without changing the
// times of any existing directory. It returns "" for a file that exists as something
// other than a regular file, and an error for a directory that does.
func (f *fixture) ensure(name string, dir bool) (string, error) {
	host, err := securejoin.SecureJoin(f.root, name)
	if err != nil {
		return "", fmt.Errorf("resolving %s in the root: %w", name, err)
	}
	fi, err := os.Lstat(host)
	switch {
	case err == nil && dir && !fi.IsDir():
		return "", fmt.Errorf("preparing %s in the root: exists and is not a directory", name)
	case err == nil && !dir && !fi.Mode().IsRegular():
		return "", nil
	case err == nil:
		return host, nil
	case !dir && errors.Is(err, unix.ENOTDIR):
		return "", nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("preparing %s in the root: %w", name, err)
	}
	parent := filepath.Dir(host)
	if parent != f.root {
		rel, err := filepath.Rel(f.root, parent)
		if err != nil {
			return "", fmt.Errorf("preparing %s in the root: %w", name, err)
		}
		if _, err := f.ensure("/"+rel, true); err != nil {
			return "", err
		}
	}
	ts, err := times(parent)
	if err != nil {
		return "", fmt.Errorf("preparing %s in the root: %w", name, err)
	}
	if dir {
		err = unix.Mkdir(host, 0o755)
	} else {
		var fd int
		fd, err = unix.Open(host, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating %s in the root: %w", name, err)
	}
	f.created = append(f.created, host)
	if err := setTimes(parent, ts); err != nil {
		return "", fmt.Errorf("restoring the times of %s: %w", parent, err)
	}
	return host, nil
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

// undo removes what ensure created, newest first, keeping the times of the parent
// directories as they were just before (the original times, or those the command set). A
// directory the command put something in is kept. It must run only once the namespaces
// are gone, so that nothing is mounted on the mount points any more.
func (f *fixture) undo() error {
	var errs []error
	for i := len(f.created) - 1; i >= 0; i-- {
		host := f.created[i]
		parent := filepath.Dir(host)
		ts, err := times(parent)
		if err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", host, err))
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(host, &st); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing %s: %w", host, err))
			}
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			err = unix.Rmdir(host)
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
				continue // the command's now
			}
		case unix.S_IFREG:
			if st.Size != 0 {
				continue
			}
			err = unix.Unlink(host)
		default:
			continue // replaced by the command
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", host, err))
			continue
		}
		if err := setTimes(parent, ts); err != nil {
			errs = append(errs, fmt.Errorf("restoring the times of %s: %w", parent, err))
		}
	}
	f.created = nil
	for _, t := range f.temp {
		if err := os.Remove(t); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", t, err))
		}
	}
	f.temp = nil
	return errors.Join(errs...)
}

// times returns the access and modification times of p (not following a symlink).
func times(p string) ([2]unix.Timespec, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return [2]unix.Timespec{}, err
	}
	return [2]unix.Timespec{st.Atim, st.Mtim}, nil
}

func setTimes(p string, ts [2]unix.Timespec) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}
