package run

import (
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Init must be called first thing in main, before flags are parsed or goroutines started,
// by any program that uses Chroot (and in TestMain by tests that do). In a process that
// Chroot re-executed as its namespace helper, Init does the helper's job and exits the
// process; otherwise it returns at once.
func Init() {
	if os.Getenv(helperEnv) != "1" {
		initCalled = true
		return
	}
	os.Exit(helperMain())
}

// helperMain is the namespace helper: PID 1 of fresh mount, PID, UTS and IPC namespaces.
// It reads a helperConfig on fd 3 and writes a helperResult on fd 4. Its stdout and stderr
// are the command's; it writes nothing there itself.
func helperMain() int {
	// Keep the command from inheriting the pipes.
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	cfgF := os.NewFile(3, "config")
	resF := os.NewFile(4, "result")
	var res helperResult
	var cfg helperConfig
	if err := gob.NewDecoder(cfgF).Decode(&cfg); err != nil {
		res.Err = fmt.Sprintf("reading the helper's configuration: %v", err)
	} else {
		res = helperRun(cfg)
	}
	cfgF.Close()
	if err := gob.NewEncoder(resF).Encode(res); err != nil {
		return 1
	}
	return 0
}

// helperRun sets up the mounts, runs the command and reaps every child until the
// command is done.
func helperRun(cfg helperConfig) helperResult {
	if err := setupMounts(cfg); err != nil {
		return helperResult{Err: fmt.Sprintf("setting up the root: %v", err)}
	}
	// Docker's (runc's) default, whatever the executor's own is.
	syscall.Umask(0o022)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return helperResult{Err: fmt.Sprintf("opening %s: %v", os.DevNull, err)}
	}
	proc, err := os.StartProcess(cfg.Path, cfg.Args, &os.ProcAttr{
		Dir:   cfg.Dir,
		Env:   cfg.Env,
		Files: []*os.File{devNull, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{
			Chroot: cfg.Root,
			Credential: &syscall.Credential{
				Uid: cfg.UID, Gid: cfg.GID, Groups: append([]uint32{}, cfg.Groups...),
			},
		},
	})
	devNull.Close()
	if err != nil {
		return helperResult{Err: fmt.Sprintf("starting %s: %v", cfg.Path, unwrapStart(err))}
	}
	// As PID 1 we inherit every orphan of the command: reap them all until the command
	// itself is done. Those still running die with the namespace when we exit.
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return helperResult{Err: fmt.Sprintf("waiting for %s: %v", cfg.Path, err)}
		}
		if pid == proc.Pid {
			return helperResult{Status: int(ws)}
		}
	}
}

// unwrapStart drops the "fork/exec <path>:" prefix of os.StartProcess errors.
func unwrapStart(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// setupMounts mounts what cfg asks for; see Chroot.
func setupMounts(cfg helperConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	if cfg.Proc != "" {
		if err := mount("proc", cfg.Proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return err
		}
	}
	if cfg.Dev != "" {
		if err := setupDev(cfg.Dev); err != nil {
			return err
		}
	}
	if cfg.Sys != "" {
		err := mount("sysfs", cfg.Sys, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		if err != nil {
			// Refused in a user namespace that does not own the network namespace.
			if err := bindReadOnly("/sys", cfg.Sys, true); err != nil {
				return err
			}
		}
	}
	for _, f := range cfg.Files {
		if err := bindReadOnly(f.Source, f.Target, false); err != nil {
			return err
		}
	}
	return nil
}

// devices are bound from the host's /dev into the new one.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

func setupDev(dev string) error {
	if err := mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	for _, d := range devices {
		src := "/dev/" + d
		if _, err := os.Stat(src); err != nil {
			continue // tty, in some sandboxes
		}
		target := filepath.Join(dev, d)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return fmt.Errorf("creating %s: %w", target, err)
		}
		if err := mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", pts, err)
	}
	const ptsFlags = unix.MS_NOSUID | unix.MS_NOEXEC
	if err := mount("devpts", pts, "devpts", ptsFlags, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		// gid=5 (tty) may be unmapped in a user namespace.
		if err := mount("devpts", pts, "devpts", ptsFlags, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
			return err
		}
	}
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", shm, err)
	}
	if err := mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=65536k"); err != nil {
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
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Join(dev, name), err)
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
	var sfs unix.Statfs_t
	if err := unix.Statfs(target, &sfs); err != nil {
		return fmt.Errorf("reading the mount flags of %s: %w", target, err)
	}
	ro := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for st, ms := range map[int64]uintptr{
		unix.ST_NOSUID:     unix.MS_NOSUID,
		unix.ST_NODEV:      unix.MS_NODEV,
		unix.ST_NOEXEC:     unix.MS_NOEXEC,
		unix.ST_NOATIME:    unix.MS_NOATIME,
		unix.ST_NODIRATIME: unix.MS_NODIRATIME,
		unix.ST_RELATIME:   unix.MS_RELATIME,
	} {
		if sfs.Flags&st != 0 {
			ro |= ms
		}
	}
	if err := unix.Mount("", target, "", ro, ""); err != nil {
		return fmt.Errorf("making %s read-only: %w", target, err)
	}
	return nil
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", source, target, err)
	}
	return nil
}
