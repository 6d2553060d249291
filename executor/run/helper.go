package run

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Init must be called first thing in main, before flags are parsed or goroutines started,
// by any program that uses Chroot (and in TestMain by tests that do). In a process that
// Chroot re-executed as its namespace helper or as a step's init stage, Init does that
// job and exits the process (the init stage by becoming the step's command); otherwise it
// returns at once.
func Init() {
	switch os.Getenv(helperEnv) {
	case "1":
		os.Exit(helperMain())
	case initEnvValue:
		os.Exit(initMain())
	case netnsEnvValue:
		os.Exit(netnsMain())
	}
	initCalled = true
}

// Descriptors the helper inherits.
const (
	helperConfigFD = 3 // helperConfig, gob-encoded
	helperResultFD = 4 // helperResult, gob-encoded
)

// helperMain is the namespace helper: PID 1 of fresh mount, PID, UTS and IPC namespaces,
// root of the host. It reads a helperConfig and writes a helperResult. Its stdout and
// stderr are the command's; it writes nothing there itself.
func helperMain() int {
	// Keep the command from inheriting the pipes.
	syscall.CloseOnExec(helperConfigFD)
	syscall.CloseOnExec(helperResultFD)
	cfgF := os.NewFile(helperConfigFD, "config")
	resF := os.NewFile(helperResultFD, "result")
	var res helperResult
	var cfg helperConfig
	if err := gob.NewDecoder(cfgF).Decode(&cfg); err != nil {
		res = helperResult{Err: fmt.Sprintf("reading the helper's configuration: %v", err), Setup: true}
	} else {
		res = helperRun(cfg)
	}
	cfgF.Close()
	if err := gob.NewEncoder(resF).Encode(res); err != nil {
		return 1
	}
	return 0
}

// helperRun starts the init stage (in the user namespace, if any), sets up the root and
// pivots into it, lets the init stage become the command, and reaps every child until
// the command is done.
func helperRun(cfg helperConfig) helperResult {
	setupFailed := func(err error) helperResult {
		var nsErr *userNSError
		return helperResult{Err: fmt.Sprintf("setting up the root: %v", err), Setup: true, UserNS: errors.As(err, &nsErr)}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return setupFailed(fmt.Errorf("making / private: %w", err))
	}
	// A proc of the new PID namespace over the host's, in this mount namespace only, so
	// that the init stage has a PID here, for its user namespace, and /proc/self is us.
	// It goes with the host's root at the pivot.
	if err := mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return setupFailed(err)
	}
	// Docker's (runc's) default, whatever the executor's own is.
	syscall.Umask(0o022)
	// The UTS namespace is the helper's, new: the init stage and the command share it.
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return setupFailed(fmt.Errorf("setting the hostname: %w", err))
		}
	}
	init, err := startInit(cfg.UserNS, cfg.NoNetwork)
	if err != nil {
		return setupFailed(err)
	}
	defer init.close()
	if cfg.NoNetwork {
		if err := joinNetwork(init.pid); err != nil {
			init.kill()
			return setupFailed(err)
		}
	}
	if err := setupRoot(cfg, init.pid); err != nil {
		init.kill()
		return setupFailed(err)
	}
	// Nothing in the root may open /proc/1/fd, /proc/1/exe and the like, whatever its
	// capabilities (it has no CAP_SYS_PTRACE either).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		init.kill()
		return setupFailed(fmt.Errorf("making the helper undumpable: %w", err))
	}
	if err := init.exec(initConfig{
		Path: cfg.Path, Args: cfg.Args, Env: cfg.Env, Dir: cfg.Dir,
		UID: cfg.UID, GID: cfg.GID, Groups: cfg.Groups,
		Caps: cfg.Caps, Filter: cfg.Filter, NoNewPrivs: cfg.NoNewPrivs,
	}); err != nil {
		return helperResult{Err: err.Error()}
	}
	// As PID 1 we inherit every orphan of the command: reap them all until the command
	// itself is done. Those still running die with the namespace when we exit.
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return helperResult{Err: fmt.Sprintf("waiting for %s: %v", cfg.Path, err)}
		}
		if wpid == init.pid {
			return helperResult{Status: int(ws)}
		}
	}
}

// joinNetwork moves the calling goroutine's thread, locked to it for the rest of the
// helper's life, into the network namespace of process pid (the init stage's own), and
// brings its loopback up: the helper, root of the host, may configure it whoever owns it,
// and the sysfs it mounts on this thread then shows that namespace's interfaces.
func joinNetwork(pid int) error {
	runtime.LockOSThread()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the step's network namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering the step's network namespace: %w", err)
	}
	return loopbackUp()
}

// userNSError is a failure to set up the user namespace or the idmapped root: the host or
// the root's filesystem does not allow one.
type userNSError struct{ err error }

func (e *userNSError) Error() string { return e.err.Error() }
func (e *userNSError) Unwrap() error { return e.err }

// initProc is the init stage, started and waiting for its initConfig.
type initProc struct {
	pid  int
	cfgW *os.File // its fd 3
	errR *os.File // its fd 4
}

// startInit starts the init stage (this binary again), in a new user namespace mapped by
// ns unless ns.Size is 0, and in a new network namespace if noNetwork (made with the user
// namespace, so owned by it: the step's NET_RAW and NET_BIND_SERVICE work there, as in a
// container). It is started before the pivot, from the host's binary, and the pivot moves
// its root and working directory with ours; it waits for its configuration until the root
// is ready.
func startInit(ns IDMap, noNetwork bool) (*initProc, error) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer devNull.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting the init stage: %w", err)
	}
	defer cfgR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		cfgW.Close()
		return nil, fmt.Errorf("starting the init stage: %w", err)
	}
	defer errW.Close()
	sys := &syscall.SysProcAttr{}
	if ns.Size > 0 {
		m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ns.HostID), Size: int(ns.Size)}}
		sys.Cloneflags = syscall.CLONE_NEWUSER
		sys.UidMappings, sys.GidMappings = m, m
		sys.GidMappingsEnableSetgroups = true
		// Root of the namespace: the host's root is not mapped in it.
		sys.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if noNetwork {
		sys.Cloneflags |= syscall.CLONE_NEWNET
	}
	proc, err := os.StartProcess("/proc/self/exe", []string{"slipway-run-init"}, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{helperEnv + "=" + initEnvValue},
		Files: []*os.File{devNull, os.Stdout, os.Stderr, cfgR, errW},
		Sys:   sys,
	})
	if err != nil {
		cfgW.Close()
		errR.Close()
		what := "starting the init stage"
		if noNetwork {
			what += " in a network namespace of its own (the step has no network)"
		}
		err = fmt.Errorf("%s: %w", what, unwrapStart(err))
		if ns.Size > 0 {
			err = &userNSError{fmt.Errorf("in a user namespace: %w", err)}
		}
		return nil, err
	}
	p := &initProc{pid: proc.Pid, cfgW: cfgW, errR: errR}
	proc.Release() // we reap it with Wait4, like every other child
	var b [1]byte
	if _, err := io.ReadFull(errR, b[:]); err != nil || b[0] != initReady {
		p.kill()
		p.close()
		return nil, fmt.Errorf("starting the init stage: it exited before it was ready (%v)", err)
	}
	return p, nil
}

// exec hands p its configuration and returns once it has exec'd the command, or, if it
// could not, has exited; then the error says why. An empty cfg.Path (a probe) makes it
// exit at once, successfully.
func (p *initProc) exec(cfg initConfig) error {
	encErr := gob.NewEncoder(p.cfgW).Encode(cfg)
	p.cfgW.Close()
	msg, readErr := io.ReadAll(p.errR)
	if encErr == nil && readErr == nil && len(msg) == 0 {
		return nil // the pipe closed on exec (or on a probe's exit)
	}
	p.kill()
	if len(msg) > 0 {
		return errors.New(string(msg))
	}
	return fmt.Errorf("starting %s: %w", cfg.Path, errors.Join(encErr, readErr))
}

// kill kills p and reaps it.
func (p *initProc) kill() {
	syscall.Kill(p.pid, syscall.SIGKILL)
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(p.pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}

func (p *initProc) close() {
	p.cfgW.Close()
	p.errR.Close()
}

// unwrapStart drops the "fork/exec <path>:" prefix of os.StartProcess errors.
func unwrapStart(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// setupRoot mounts the root and what cfg asks for in it, and pivots into it; see Chroot.
// From its end on, no path the helper or its children name leads out of the root. The
// root's mount is idmapped for the user namespace of the process initPID, if cfg has one.
func setupRoot(cfg helperConfig, initPID int) error {
	// The root becomes a mount of its own, nodev, so that a device node in the image (or
	// one the command makes, with CAP_MKNOD) opens nothing; not nosuid (see Chroot).
	if err := mountRoot(cfg.Root, cfg.UserNS.Size > 0, initPID); err != nil {
		return err
	}
	rootFD, err := unix.Open(cfg.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the root %s: %w", cfg.Root, err)
	}
	defer unix.Close(rootFD)

	// Everything is mounted before the pivot, through descriptors of the root: a bind's
	// source must be a mount of this namespace, and the host's are gone after it.
	if cfg.Proc != "" {
		err := mountIn(rootFD, cfg.Proc, func(target string) error {
			return mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		})
		if err != nil {
			return err
		}
	}
	if cfg.Sys != "" {
		err := errors.New("sysfs not tried")
		if !cfg.SysBind {
			err = mountIn(rootFD, cfg.Sys, func(target string) error {
				return mount("sysfs", target, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
			})
		}
		if err != nil {
			// Refused where the executor itself runs in a user namespace that does not
			// own the network namespace (rootless).
			err = bindTreeReadOnly(rootFD, "/sys", cfg.Sys)
		}
		if err != nil {
			return err
		}
	}
	if cfg.Dev != "" {
		// The root's entries to keep are opened before the tmpfs hides them.
		var keep []int
		defer func() {
			for _, fd := range keep {
				unix.Close(fd)
			}
		}()
		for _, name := range cfg.DevKeep {
			if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
				return fmt.Errorf("keeping /%s/%s: not a name", cfg.Dev, name)
			}
			fd, err := unix.Openat2(rootFD, cfg.Dev+"/"+name, &unix.OpenHow{
				Flags:   unix.O_PATH | unix.O_CLOEXEC,
				Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
			})
			if err != nil {
				return fmt.Errorf("opening /%s/%s in the root: %w", cfg.Dev, name, err)
			}
			keep = append(keep, fd)
		}
		if err := setupDev(rootFD, cfg.Dev, cfg.UserNS); err != nil {
			return err
		}
		for i, name := range cfg.DevKeep {
			if err := bindKept(rootFD, keep[i], cfg.Dev+"/"+name); err != nil {
				return err
			}
		}
	}
	for _, f := range cfg.Files {
		if err := bindIn(rootFD, f.Source, f.Target); err != nil {
			return err
		}
	}

	if err := pivotRoot(rootFD); err != nil {
		return err
	}

	// From here on every path is inside the root.
	if cfg.Proc != "" || cfg.Sys != "" {
		if err := maskPaths(); err != nil {
			return err
		}
	}
	return nil
}

// mountRoot mounts root on itself as a mount of its own, nodev, and idmapped for the user
// namespace of process initPID if userns: a file owned by host ID n then appears to it
// owned by ID n there (n below the mapping's size), and one it makes with ID n is stored
// with n. A failure to idmap is a *userNSError.
func mountRoot(root string, userns bool, initPID int) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		err = fmt.Errorf("cloning the mount of %s: %w", root, err)
		if !errors.Is(err, unix.ENOSYS) {
			return err
		}
		if userns {
			return &userNSError{err}
		}
		return bindRoot(root) // Linux < 5.2
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NODEV}
	if userns {
		nsFD, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", initPID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening the user namespace: %w", err)
		}
		defer unix.Close(nsFD)
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = uint64(nsFD)
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		switch {
		case userns:
			return &userNSError{fmt.Errorf("idmapping the mount of %s: %w", root, err)}
		case errors.Is(err, unix.ENOSYS):
			return bindRoot(root) // Linux < 5.12
		}
		return fmt.Errorf("making the mount of %s nodev: %w", root, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting the root on %s: %w", root, err)
	}
	return nil
}

// bindRoot is mountRoot without a user namespace, for kernels without mount_setattr.
func bindRoot(root string) error {
	if err := mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return remount(root, unix.MS_NODEV)
}

// fdPath names the file open as fd, for mount(2), which follows the magic link.
func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// mountIn calls do with a path naming rel inside the root open as rootFD, resolved with
// openat2 so that it cannot leave the root (and, the fixture having resolved symlinks,
// must not meet one).
func mountIn(rootFD int, rel string, do func(target string) error) error {
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("opening /%s in the root: %w", rel, err)
	}
	defer unix.Close(fd)
	if err := do(fdPath(fd)); err != nil {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	return nil
}

// pivotRoot makes the root open as rootFD the root of the mount namespace, and detaches
// the old one, so that nothing of the host's filesystem stays reachable by path.
func pivotRoot(rootFD int) error {
	oldFD, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the old root: %w", err)
	}
	defer unix.Close(oldFD)
	if err := unix.Fchdir(rootFD); err != nil {
		return fmt.Errorf("entering the root: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one, so no directory is needed
	// in the stage root to put it in; it is then unmounted from there.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivoting into the root: %w", err)
	}
	if err := unix.Fchdir(oldFD); err != nil {
		return fmt.Errorf("entering the old root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering the root: %w", err)
	}
	return nil
}

// devices are bound from the host's /dev into the new one.
//
// tty is the device (5, 0) that opens the opener's controlling terminal, not a terminal
// itself: the one runc makes with mknod, which a user namespace may not do. The step runs
// in a session of its own with no controlling terminal (the helper is started with
// setsid), so it opens nothing (ENXIO), as in a docker build; a step that makes a pty of
// its own /dev/pts its controlling terminal (script, expect) opens that pty through it.
// The caller's terminal, if any, is never reachable through it.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// setupDev mounts the step's /dev on rel inside the root open as rootFD, binding the
// host's devices into it. Everything in it is made through a descriptor of the new tmpfs.
// With a user namespace, /dev, /dev/shm and the tty group of /dev/pts are its root's and
// its group 5.
func setupDev(rootFD int, rel string, ns IDMap) error {
	owner, ttyGID := "", uint32(5)
	if ns.Size > 5 {
		owner = fmt.Sprintf(",uid=%d,gid=%d", ns.HostID, ns.HostID)
		ttyGID = ns.HostID + 5
	}
	// nodev: the command has CAP_MKNOD, as in Docker, but a node it makes here opens
	// nothing (Docker's device cgroup does that job there). The bound devices below are
	// mounts of their own, of the host's /dev, and work.
	err := mountIn(rootFD, rel, func(target string) error {
		return mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_STRICTATIME, "mode=755,size=65536k"+owner)
	})
	if err != nil {
		return err
	}
	// This lookup finds the tmpfs (the first one's descriptor named the directory under).
	devFD, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: resolveIn,
	})
	if err != nil {
		return fmt.Errorf("opening /%s: %w", rel, err)
	}
	defer unix.Close(devFD)
	in := func(name string) string { return fdPath(devFD) + "/" + name }
	for _, d := range devices {
		src := "/dev/" + d
		if _, err := os.Stat(src); err != nil {
			continue // tty, in some sandboxes
		}
		fd, err := unix.Openat(devFD, d, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return fmt.Errorf("creating /%s/%s: %w", rel, d, err)
		}
		unix.Close(fd)
		if err := mount(src, in(d), "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(devFD, "pts", 0o755); err != nil {
		return fmt.Errorf("creating /%s/pts: %w", rel, err)
	}
	const ptsFlags = unix.MS_NOSUID | unix.MS_NOEXEC
	if err := mount("devpts", in("pts"), "devpts", ptsFlags, fmt.Sprintf("newinstance,ptmxmode=0666,mode=0620,gid=%d", ttyGID)); err != nil {
		// The tty group may be unmapped where the executor runs in a user namespace.
		if err := mount("devpts", in("pts"), "devpts", ptsFlags, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(devFD, "shm", 0o755); err != nil {
		return fmt.Errorf("creating /%s/shm: %w", rel, err)
	}
	if err := mount("shm", in("shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"+owner); err != nil {
		return err
	}
	for name, target := range map[string]string{
		"ptmx":   "pts/ptmx",
		"fd":     "/proc/self/fd",
		"stdin":  "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2",
		"core":   "/proc/kcore",
	} {
		if err := unix.Symlinkat(target, devFD, name); err != nil {
			return fmt.Errorf("creating /%s/%s: %w", rel, name, err)
		}
	}
	return nil
}

// bindIn binds the host path source (not the mounts beneath it) on rel inside the root
// open as rootFD, read-only.
func bindIn(rootFD int, source, rel string) error {
	err := mountIn(rootFD, rel, func(target string) error {
		return mount(source, target, "", unix.MS_BIND, "")
	})
	if err != nil {
		return err
	}
	// A second lookup finds the bind (the first one's descriptor names what is under it).
	return mountIn(rootFD, rel, func(target string) error {
		return remount(target, unix.MS_RDONLY)
	})
}

// bindKept binds what the descriptor src names (a directory or a file of the root, opened
// before the step's /dev hid it) on rel inside the root open as rootFD, made for it,
// read-only.
func bindKept(rootFD, src int, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return fmt.Errorf("inspecting /%s: %w", rel, err)
	}
	dir, name := path.Split(rel)
	err := mountIn(rootFD, strings.TrimSuffix(dir, "/"), func(parent string) error {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return unix.Mkdir(parent+"/"+name, 0o755)
		}
		fd, err := unix.Open(parent+"/"+name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := mountIn(rootFD, rel, func(target string) error {
		return mount(fdPath(src), target, "", unix.MS_BIND, "")
	}); err != nil {
		return err
	}
	return mountIn(rootFD, rel, func(target string) error {
		return remount(target, unix.MS_RDONLY)
	})
}

// bindTreeReadOnly binds the host path source and every mount beneath it (/sys/fs/cgroup,
// say) on rel inside the root open as rootFD, all of them read-only: the tree is cloned,
// made read-only with mount_setattr(AT_RECURSIVE), and only then attached, so no part of
// it is ever writable in the root. A remount of the top alone would leave the mounts
// beneath it as writable as the host's. Where the kernel has no mount_setattr (before
// 5.12) the mounts beneath are left out: source alone is bound, read-only.
func bindTreeReadOnly(rootFD int, source, rel string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return bindIn(rootFD, source, rel)
		}
		return fmt.Errorf("cloning the mounts of %s: %w", source, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return bindIn(rootFD, source, rel)
		}
		return fmt.Errorf("making the mounts of %s read-only: %w", source, err)
	}
	target, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("opening /%s in the root: %w", rel, err)
	}
	defer unix.Close(target)
	if err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting %s on /%s: %w", source, rel, err)
	}
	return nil
}

// maskedPaths and readOnlyPaths are containerd's defaults (runc's spec and moby's are the
// same lists): parts of /proc and /sys that show or change the host, hidden and made
// read-only. /proc/sys is the one that matters most: a root step could otherwise set
// kernel.core_pattern, whose handler the host runs.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
		"/sys/devices/virtual/powercap", "/proc/scsi",
	}
	readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// maskPaths hides maskedPaths (an empty read-only tmpfs over a directory, /dev/null over
// a file) and makes readOnlyPaths read-only. It runs after the pivot.
func maskPaths() error {
	for _, p := range maskedPaths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			continue // not there: this kernel, or no /proc or /sys
		}
		var err error
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0")
		} else {
			err = mount("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return err
		}
	}
	for _, p := range readOnlyPaths {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := bindReadOnly(p, p, true); err != nil {
			return err
		}
	}
	return nil
}

// bindReadOnly binds source on target and makes the bind read-only, keeping the flags a
// user namespace may have locked on the source's mount.
func bindReadOnly(source, target string, recursive bool) error {
	flags := uintptr(unix.MS_BIND)
	if recursive {
		flags |= unix.MS_REC
	}
	if err := mount(source, target, "", flags, ""); err != nil {
		return err
	}
	if err := remount(target, unix.MS_RDONLY); err != nil {
		return fmt.Errorf("making %s read-only: %w", target, err)
	}
	return nil
}

// remount adds flags to the bind mount at target, keeping those it has (a user namespace
// may have locked them).
func remount(target string, flags uintptr) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(target, &sfs); err != nil {
		return fmt.Errorf("reading the mount flags of %s: %w", target, err)
	}
	flags |= unix.MS_REMOUNT | unix.MS_BIND
	for st, ms := range map[int64]uintptr{
		unix.ST_RDONLY:     unix.MS_RDONLY,
		unix.ST_NOSUID:     unix.MS_NOSUID,
		unix.ST_NODEV:      unix.MS_NODEV,
		unix.ST_NOEXEC:     unix.MS_NOEXEC,
		unix.ST_NOATIME:    unix.MS_NOATIME,
		unix.ST_NODIRATIME: unix.MS_NODIRATIME,
		unix.ST_RELATIME:   unix.MS_RELATIME,
	} {
		if sfs.Flags&st != 0 {
			flags |= ms
		}
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("remounting %s: %w", target, err)
	}
	return nil
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", source, target, err)
	}
	return nil
}
