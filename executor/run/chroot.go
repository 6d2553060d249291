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

	"golang.org/x/sys/unix"
)

// Chroot returns the Runner for use outside a pod (local CLI, tests); it needs root
// privileges (CAP_SYS_ADMIN, CAP_SYS_CHROOT) and Init.
//
// Each Run re-executes the current binary (/proc/self/exe) as a helper in new mount, PID,
// UTS and IPC namespaces and a new session, without a controlling terminal; the helper is
// PID 1 there, and stays root of the host. It makes every mount private, starts the init
// stage (this binary again, in a new user namespace where the host allows one: see
// WithUserNamespace), makes the root a mount of its own (nodev: a device node in the
// image opens nothing; not nosuid: setuid programs such as su and sudo work, as in a
// docker build; idmapped for the user namespace), mounts inside it:
//
//   - /proc: a proc of the new PID namespace, with Docker's masked paths (/proc/kcore,
//     /proc/keys, …, hidden) and read-only paths (/proc/sys, /proc/sysrq-trigger, …);
//   - /dev: a tmpfs (mode 755, nodev) with null, zero, full, random, urandom and tty bound
//     from the host's /dev, pts (a new devpts instance), ptmx -> pts/ptmx, shm (a tmpfs,
//     mode 1777), and the fd, stdin, stdout, stderr and core symlinks into /proc; tty
//     opens the opener's controlling terminal, and the command has none (ENXIO), so the
//     terminal of whoever started the executor is out of its reach;
//   - /sys: a read-only sysfs, or, if sysfs is refused, a bind of the host's /sys and the
//     mounts beneath it (cgroup hierarchies), every one of them read-only;
//   - /etc/hosts and /etc/resolv.conf: read-only binds of the host's files (of generated
//     localhost-only files if the host has none). A path that exists in the root as
//     something other than a regular file is left alone.
//
// and pivot_root(2)s into it, detaching the host's root, so that no path the helper, the
// command or its children can name (/proc/1/root included) leads out of the root. The
// init stage, moved into the root with the helper, then keeps only Docker's default
// capabilities (DefaultCapabilities: bounding, permitted and effective sets for UID 0, the
// bounding set only for another user, no inheritable or ambient ones), less NET_RAW and
// NET_BIND_SERVICE when there is no user namespace (see below), installs Docker's default
// seccomp profile (narrower in two ways: the native ABI alone, with the machine's compat
// ABI added only for a step of Spec.CompatArch, see stepFilter; and the terminal ioctls
// TIOCSTI and TIOCLINUX refused, see ttyIoctls), takes the user and groups of the Spec,
// checks that the command's path does not lead through a magic link of /proc
// (/proc/self/exe would be the executor's binary: see checkNoMagicLink) and execs the
// command. The helper reaps orphans and reports the command's status; the command can
// neither signal nor trace it. When the command exits, the helper exits, which kills
// whatever the command left behind and discards every mount with the namespaces; if ctx
// is done first, the helper is killed, with the same effect.
//
// A step with Spec.Network NetworkNone has no network: the init stage is started in a new
// network namespace too (made with its user namespace, so owned by it, as a container's
// is), whose loopback the helper brings up from a thread it moves into it, and mounts the
// step's sysfs from (so /sys/class/net shows lo alone). Nothing of the host's network,
// its loopback included, is reachable from it; NET_RAW and NET_BIND_SERVICE act on that
// namespace only, and are kept.
//
// What it does not confine:
//
//   - The network, by default: the command shares the host's network namespace (a
//     docker build's default network reaches registries; Docker gives each step a
//     namespace of its own on a bridge, we do not). It reaches whatever the executor reaches, services
//     listening on the host's loopback included, and may listen on the host's ports. In
//     a user namespace NET_RAW and NET_BIND_SERVICE count for nothing over the host's
//     network namespace; without one they would be the host's (a packet socket sniffs
//     every interface, loopback included), so they are dropped (stepCapMask): no step can
//     sniff or forge packets or bind a privileged port (below 1024, or what
//     net.ipv4.ip_unprivileged_port_start says), and ping works only where
//     net.ipv4.ping_group_range allows ICMP sockets.
//   - The hostname: the UTS namespace is new, but starts with the host's name, unless
//     Spec.Hostname names it (then /etc/hosts also maps that name to 127.0.0.1).
//   - Resources: no cgroup of its own; CPU, memory, PIDs and disk are limited only as the
//     executor is.
//   - Its output: Spec.Stdout and Spec.Stderr reach the command as they are; if one is a
//     terminal, the command can write escape sequences to it (it cannot type into it: it
//     is not the command's controlling terminal, and TIOCSTI is refused anyway).
//   - The kernel: what Docker's seccomp profile allows of it, the command may use.
//
// The command runs without no_new_privs unless WithNoNewPrivileges is given: BuildKit's
// RUN does the same (oci.WithNewPrivileges), so that a setuid program (sudo in a RUN under
// a non-root USER) works. The Dockerfile chooses the user a step runs as anyway, root
// included, so setuid adds nothing an attacker lacks.
//
// The mount points are left as BuildKit's runc executor leaves them. /proc, /dev and /sys,
// made when the root lacks them (mode 0755, owned by root, empty), stay: runc makes them,
// and BuildKit's cleanup of mount stubs (executor.MountStubsCleaner) never removes them,
// so a step's layer holds them when its root had none. /proc and /sys must be
// directories, not symlinks, as runc requires of the targets of proc and sysfs. Run then
// removes the stubs of /etc/hosts and /etc/resolv.conf it made (including /etc itself if
// the root had none, unless the command put something in it), as MountStubsCleaner does,
// and restores the access and modification times of the directories it created them in,
// so a snapshot comparing lstat results (except ctime, which cannot be set) sees only
// what the command changed and the three mount points. It does so through descriptors
// opened before the step, never by path, so what the command did to the root (a
// directory renamed, a symlink to a host directory in its place) cannot turn the cleanup
// onto another file. A directory's times the command changed keep the command's values.
// The ctime of such a parent does change (nothing can set it): a snapshotter comparing
// ctime sees, say, /etc as changed, with the same metadata, when the root has /etc but no
// /etc/hosts. If the process dies during Run, the created stubs stay (the mounts do not).
//
// Runs on different roots may happen concurrently; two at once on one root may not.
func Chroot(opts ...ChrootOption) Runner {
	r := &chrootRunner{userns: defaultUserNamespace}
	for _, o := range opts {
		o(r)
	}
	return r
}

// A ChrootOption configures Chroot.
type ChrootOption func(*chrootRunner)

// WithNoNewPrivileges sets no_new_privs on every command: setuid and setgid bits and file
// capabilities then raise no privileges, so a RUN under a non-root USER cannot use sudo or
// su. The default is off, as in BuildKit.
func WithNoNewPrivileges() ChrootOption {
	return func(r *chrootRunner) { r.noNewPrivs = true }
}

// WithUserNamespace maps IDs 0 to size-1 of every step to host IDs hostID to
// hostID+size-1 (users and groups alike) where the host allows a user namespace and an
// idmapped mount of the root's filesystem. The default is hostID 2147418112 (0x7fff0000),
// size 65536: a range no host account uses. A step whose user or groups fall outside the
// range fails; files the image has owned by IDs outside it appear owned by the overflow
// ID (nobody) and cannot be chowned or changed by the step.
func WithUserNamespace(hostID, size uint32) ChrootOption {
	return func(r *chrootRunner) { r.userns = IDMap{HostID: hostID, Size: size} }
}

// WithoutUserNamespace runs every step in the host's user namespace.
func WithoutUserNamespace() ChrootOption {
	return func(r *chrootRunner) { r.userns = IDMap{} }
}

// helperEnv marks the process as the namespace helper or the init stage; see Init.
const helperEnv = "_SLIPWAY_RUN_HELPER"

// initCalled records that Init ran in this process and returned.
var initCalled bool

type chrootRunner struct {
	noNewPrivs bool
	userns     IDMap // Size 0: none
	// sysBind, for tests, takes the fallback of a host where sysfs cannot be mounted.
	sysBind bool
}

// helperConfig is what Run sends the helper on fd 3, gob-encoded (which, unlike JSON,
// keeps strings that are not UTF-8 intact).
type helperConfig struct {
	Root string // absolute host path, symlinks resolved
	// UserNS, if its Size is not 0, maps the user namespace the command runs in.
	UserNS IDMap
	Path   string   // the executable, inside Root; empty for a probe (set up only)
	Args   []string // argv
	Env    []string
	Dir    string // inside Root
	UID    uint32
	GID    uint32
	Groups []uint32
	// Proc, Dev and Sys are mount points, relative to Root and free of symlinks; empty:
	// none.
	Proc, Dev, Sys string
	// DevKeep names entries of the root's Dev bound, read-only, into the step's (see
	// Spec.Dev).
	DevKeep []string
	// SysBind binds the host's /sys without trying sysfs first (tests).
	SysBind bool
	Files   []bindFile // read-only file binds
	// NoNetwork gives the helper, and so the command, a network namespace of its own with
	// only the loopback interface, up (Spec.Network NetworkNone).
	NoNetwork bool
	// Hostname, when set, is the UTS namespace's host name (Spec.Hostname).
	Hostname string
	// CompatArch is Spec.CompatArch: it chooses Filter (stepFilter).
	CompatArch string
	Caps       uint64 // see initConfig and stepCapMask
	Filter     []unix.SockFilter
	NoNewPrivs bool
}

type bindFile struct {
	Source string // host path
	Target string // relative to Root, free of symlinks
}

// helperResult is what the helper sends back on fd 4, gob-encoded.
type helperResult struct {
	Err    string // why the command did not run; empty if it ran
	Setup  bool   // Err is about setting up the namespaces and mounts
	UserNS bool   // Err is about setting up the user namespace or the idmapped root
	Status int    // its wait status
}

func (r *chrootRunner) Run(ctx context.Context, s Spec) error {
	root, err := resolveRoot(s.Root)
	if err != nil {
		return err
	}
	p, err := prepare(root, s)
	if err != nil {
		return err
	}
	return r.run(ctx, helperConfig{
		Root: root, Path: p.path, Args: s.Args, Env: p.env, Dir: p.dir,
		UID: s.UID, GID: s.GID, Groups: s.Groups, DevKeep: s.Dev,
		NoNetwork: p.noNetwork, Hostname: s.Hostname, CompatArch: s.CompatArch,
	}, s.Stdout, s.Stderr)
}

// run prepares the root for cfg (an empty cfg.Path is a probe), runs the helper, in a user
// namespace when the runner has one and the root's filesystem allows it, and cleans up.
func (r *chrootRunner) run(ctx context.Context, cfg helperConfig, stdout, stderr io.Writer) (retErr error) {
	if !initCalled {
		return errors.New("running in a chroot: run.Init was not called at the start of main")
	}
	filter, err := stepFilter(cfg.CompatArch)
	if err != nil {
		return err
	}
	cfg.Filter, cfg.NoNewPrivs, cfg.SysBind = filter, r.noNewPrivs, r.sysBind

	fx, err := newFixture(cfg.Root)
	if err != nil {
		return err
	}
	defer func() {
		retErr = errors.Join(retErr, fx.undo())
	}()
	// The mount points of the default mounts stay in the root, as runc leaves them in
	// BuildKit's (see fixture).
	if cfg.Proc, err = fx.mountPoint("/proc", true); err != nil {
		return err
	}
	if cfg.Dev, err = fx.mountPoint("/dev", false); err != nil {
		return err
	}
	if cfg.Sys, err = fx.mountPoint("/sys", true); err != nil {
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
		if f.name == "/etc/hosts" && cfg.Hostname != "" {
			// The host's entries, and the step's own name on the loopback, as BuildKit's
			// generated hosts file has it (executor/oci's "127.0.0.1 localhost NAME").
			if source, err = fx.withHostsEntry(source, "127.0.0.1\t"+cfg.Hostname+"\n"); err != nil {
				return err
			}
		}
		cfg.Files = append(cfg.Files, bindFile{Source: source, Target: target})
	}

	ns, known := r.userns, false
	if ns.Size > 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fx.root, &st); err != nil {
			return fmt.Errorf("inspecting root %s: %w", cfg.Root, err)
		}
		var iso Isolation
		if iso, known = lookupIsolation(st.Dev, ns); known && !iso.UserNamespace {
			ns = IDMap{}
		}
		if !known && ns.Size > 0 && cfg.NoNetwork {
			// A step with no network has its network namespace made with its user
			// namespace: a failure to make the one must not turn the other off for every
			// later step. Find out about the user namespace alone first, with a probe.
			probe := cfg
			probe.Path, probe.Args, probe.NoNetwork = "", nil, false
			if res, _ := runHelper(ctx, probe, ns, nil, nil); res != nil {
				switch {
				case res.Err == "":
					storeIsolation(st.Dev, ns, Isolation{UserNamespace: true, IDMap: ns})
					known = true
				case res.UserNS:
					storeIsolation(st.Dev, ns, Isolation{Reason: res.Err})
					ns, known = IDMap{}, true
				}
			}
		}
		if ns.Size > 0 {
			if err := ns.check(cfg); err != nil {
				return err
			}
			res, err := runHelper(ctx, cfg, ns, stdout, stderr)
			if res == nil || !res.UserNS || known {
				if !known && res != nil && !res.Setup {
					storeIsolation(st.Dev, ns, Isolation{UserNamespace: true, IDMap: ns})
				}
				return err
			}
			// The host or the root's filesystem refuses the user namespace or the idmapped
			// mount: run without.
			storeIsolation(st.Dev, ns, Isolation{Reason: res.Err})
		}
	}
	_, err = runHelper(ctx, cfg, IDMap{}, stdout, stderr)
	return err
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

// runHelper starts the namespace helper with cfg, in a user namespace mapped by ns unless
// ns.Size is 0, and waits for its result. It returns the helper's result, nil if there
// was none (the helper could not start, or was killed), and the error for Run.
func runHelper(ctx context.Context, cfg helperConfig, ns IDMap, stdout, stderr io.Writer) (*helperResult, error) {
	cfg.UserNS = ns
	cfg.Caps = stepCapMask(ns.Size > 0, cfg.NoNetwork)
	what := "running " + cfg.Args0()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting the namespace helper: %w", err)
	}
	defer cfgR.Close()
	defer cfgW.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting the namespace helper: %w", err)
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
		// A session of its own, without a controlling terminal, as runc gives a container
		// without a terminal: otherwise the command would share ours, and could type into
		// it (ioctl TIOCSTI on /dev/tty) whatever the user's shell reads next. It also
		// keeps the terminal's signals (^C, SIGHUP) from the step: the helper dies with us
		// anyway (Pdeathsig).
		Setsid: true,
		// The helper must not outlive us: its death ends the namespaces.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.WaitDelay = waitDelay

	// Pdeathsig fires when the thread that started the child exits; keep this one alive.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the namespace helper: %w", err)
	}
	cfgR.Close()
	resW.Close()
	writeErr := gob.NewEncoder(cfgW).Encode(cfg)
	cfgW.Close()
	out, readErr := io.ReadAll(resR)
	waitErr := cmd.Wait()

	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w", what, ctx.Err())
	}
	var res helperResult
	if err := gob.NewDecoder(bytes.NewReader(out)).Decode(&res); err != nil {
		return nil, fmt.Errorf("%s: the namespace helper failed: %w",
			what, errors.Join(waitErr, writeErr, readErr, err))
	}
	if res.Err != "" {
		return &res, fmt.Errorf("%s: %s", what, res.Err)
	}
	return &res, exitErrorFromStatus(syscall.WaitStatus(res.Status))
}

// Args0 names the command in errors; a probe has none.
func (c helperConfig) Args0() string {
	if len(c.Args) == 0 {
		return "nothing (setting up only)"
	}
	return c.Args[0]
}
