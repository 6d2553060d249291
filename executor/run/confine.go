package run

import (
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the last stage before a step's command: the "init" process that the
// namespace helper starts inside the stage root. It confines itself the way runc confines a
// container's process (capabilities, seccomp, optionally no_new_privs, then the user) and
// execs the command. The helper itself stays privileged, as PID 1, to reap.

// defaultCaps is Docker's default capability set, the one a RUN step keeps: containerd's
// defaultUnixCaps and moby's caps.DefaultCapabilities hold the same fourteen.
var defaultCaps = []struct {
	name string
	num  int
}{
	{"CAP_CHOWN", unix.CAP_CHOWN},
	{"CAP_DAC_OVERRIDE", unix.CAP_DAC_OVERRIDE},
	{"CAP_FSETID", unix.CAP_FSETID},
	{"CAP_FOWNER", unix.CAP_FOWNER},
	{"CAP_MKNOD", unix.CAP_MKNOD},
	{"CAP_NET_RAW", unix.CAP_NET_RAW},
	{"CAP_SETGID", unix.CAP_SETGID},
	{"CAP_SETUID", unix.CAP_SETUID},
	{"CAP_SETFCAP", unix.CAP_SETFCAP},
	{"CAP_SETPCAP", unix.CAP_SETPCAP},
	{"CAP_NET_BIND_SERVICE", unix.CAP_NET_BIND_SERVICE},
	{"CAP_SYS_CHROOT", unix.CAP_SYS_CHROOT},
	{"CAP_KILL", unix.CAP_KILL},
	{"CAP_AUDIT_WRITE", unix.CAP_AUDIT_WRITE},
}

// DefaultCapabilities returns the names of the capabilities a RUN step keeps under Chroot
// when it runs in a user namespace: Docker's default set. Without a user namespace a step
// keeps them but CAP_NET_RAW and CAP_NET_BIND_SERVICE, unless it has a network namespace
// of its own (see stepCapMask).
func DefaultCapabilities() []string {
	names := make([]string, len(defaultCaps))
	for i, c := range defaultCaps {
		names[i] = c.name
	}
	return names
}

// defaultCapMask is defaultCaps as a bit mask (bit n is capability n), as in
// /proc/<pid>/status.
func defaultCapMask() uint64 {
	var m uint64
	for _, c := range defaultCaps {
		m |= 1 << c.num
	}
	return m
}

// hostNetCaps are the capabilities that act on a network namespace: a packet socket
// (AF_PACKET) sees every frame of every interface, loopback included, and a raw socket
// can forge any packet; a port below 1024 is one a host service may expect to own.
const hostNetCaps = 1<<unix.CAP_NET_RAW | 1<<unix.CAP_NET_BIND_SERVICE

// stepCapMask is where the capabilities of a step are decided: Docker's default set
// (defaultCapMask), less hostNetCaps when the step has no user namespace of its own and
// shares the host's network namespace (ownNetwork false: a step with Spec.Network
// NetworkNone has a network namespace of its own, where they reach nothing of the host's).
//
// A step shares the host's network namespace (a docker build's default network reaches
// registries; Docker gives each step a network namespace of its own, we do not). In a user
// namespace, NET_RAW and NET_BIND_SERVICE are capabilities over that namespace's
// resources only, not over the host's network namespace, which belongs to the initial one:
// they count for nothing. Without one (the host or the root's filesystem refuses it, or
// WithoutUserNamespace), they would be the host's: a root step could sniff the node's
// traffic, credentials sent to 127.0.0.1 included, or bind a privileged port. There they
// are dropped from every set, as podman drops NET_RAW by default: the one way our set
// differs from Docker's. What it costs: ping and traceroute with raw sockets (ping works
// still where net.ipv4.ping_group_range admits the group) and servers started during a
// build on ports below 1024 (unless net.ipv4.ip_unprivileged_port_start allows them).
func stepCapMask(userns, ownNetwork bool) uint64 {
	if userns || ownNetwork {
		return defaultCapMask()
	}
	return defaultCapMask() &^ hostNetCaps
}

// initConfig is what the helper sends the init stage on fd 3, gob-encoded.
type initConfig struct {
	Path   string // the executable, inside the root
	Args   []string
	Env    []string
	Dir    string
	UID    uint32
	GID    uint32
	Groups []uint32
	// Caps is the bounding set, and the permitted and effective sets of a command run as
	// UID 0; a command run as another user keeps none (as in Docker), unless a file
	// capability or a setuid bit gives it some.
	Caps uint64
	// Filter is the seccomp program, installed on the command.
	Filter []unix.SockFilter
	// NoNewPrivs sets no_new_privs: see WithNoNewPrivileges.
	NoNewPrivs bool
}

// initEnvValue marks, in helperEnv, the init stage.
const initEnvValue = "init"

// initReady is the byte the init stage writes on fd 4 once it runs.
const initReady = 'R'

// initMain is the init stage: it writes initReady on fd 4, reads an initConfig on fd 3,
// confines itself and execs the command. If that fails, it writes why on fd 4
// (close-on-exec, so the helper sees EOF when the exec succeeds) and exits 127.
func initMain() int {
	// Capabilities, credentials and the seccomp filter are per thread; execve keeps those
	// of the thread that calls it, so everything happens on this one.
	runtime.LockOSThread()
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	cfgF := os.NewFile(3, "config")
	errF := os.NewFile(4, "error")
	// Tell the helper we are running (a dynamically linked binary has loaded its
	// libraries), so that it may pivot.
	if _, err := errF.Write([]byte{initReady}); err != nil {
		return 127
	}
	var cfg initConfig
	err := gob.NewDecoder(cfgF).Decode(&cfg)
	cfgF.Close()
	switch {
	case err != nil:
		err = fmt.Errorf("reading the init configuration: %w", err)
	case cfg.Path == "":
		return 0 // a probe
	default:
		err = confineAndExec(cfg)
	}
	fmt.Fprint(errF, err.Error())
	return 127
}

// confineAndExec drops to cfg's privileges and execs the command; it returns only on
// failure. The order is runc's: the bounding set while CAP_SETPCAP is held, the seccomp
// filter while CAP_SYS_ADMIN is (without no_new_privs the kernel requires it), then the
// user and the remaining capabilities; every call after the filter is one the default
// profile allows.
func confineAndExec(cfg initConfig) error {
	// Our stdin was opened before the pivot: take the root's /dev/null instead.
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/null: %w", err)
	}
	if err := unix.Dup3(null, 0, 0); err != nil {
		return fmt.Errorf("opening /dev/null: %w", err)
	}
	unix.Close(null)
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if cfg.Caps&(1<<c) != 0 {
			continue
		}
		if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, e)
		}
	}
	if cfg.NoNewPrivs {
		if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
			return fmt.Errorf("setting no_new_privs: %w", e)
		}
	}
	if len(cfg.Filter) > 0 {
		prog := unix.SockFprog{Len: uint16(len(cfg.Filter)), Filter: &cfg.Filter[0]}
		if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); e != 0 {
			return fmt.Errorf("installing the seccomp filter: %w", e)
		}
	}
	// Raw calls: Go's Setuid and friends change every thread, and they need not.
	groups := cfg.Groups
	var gp unsafe.Pointer
	if len(groups) > 0 {
		gp = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(gp), 0); e != 0 {
		return fmt.Errorf("setting the supplementary groups %v: %w", groups, e)
	}
	g := uintptr(cfg.GID)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, g, g, g); e != 0 {
		return fmt.Errorf("setting the group to %d: %w", cfg.GID, e)
	}
	u := uintptr(cfg.UID)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, u, u, u); e != 0 {
		return fmt.Errorf("setting the user to %d: %w", cfg.UID, e)
	}
	// A change to a non-zero user has emptied the permitted and effective sets already;
	// this empties the inheritable set too, as Docker does since 20.10.14.
	var keep uint64
	if cfg.UID == 0 {
		keep = cfg.Caps
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(keep), Permitted: uint32(keep)},
		{Effective: uint32(keep >> 32), Permitted: uint32(keep >> 32)},
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("setting capabilities: %w", e)
	}
	if err := syscall.Chdir(cfg.Dir); err != nil {
		return fmt.Errorf("changing to the working directory %s: %w", cfg.Dir, err)
	}
	if err := checkNoMagicLink(cfg); err != nil {
		return err
	}
	err = syscall.Exec(cfg.Path, cfg.Args, cfg.Env)
	return fmt.Errorf("starting %s: %w", cfg.Path, err)
}

// lastCap returns the highest capability number the kernel knows.
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("reading the last capability: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("reading the last capability: bad value %q", b)
	}
	return n, nil
}

// checkNoMagicLink refuses a command whose path leads through a magic link of /proc.
// This process was started from the executor's binary, so its /proc/self/exe names that
// binary, on the host: a command path through it (a symlink to /proc/self/exe, with a
// regular file at /proc/self/exe in the image so that the lookup in the root passes)
// would run the executor's own binary as the step, holding it open, as in CVE-2019-5736.
// openat2's RESOLVE_NO_MAGICLINKS makes the kernel resolve the path as exec will, and
// fail with ELOOP at any /proc/<pid>/{exe,root,cwd,fd/<n>} on the way.
//
// Checking and then exec'ing by path is not racy here: none of the step's processes
// exists yet (this one becomes the first), the helper is ours, and nothing else runs in
// this mount namespace; nothing in the root changes between the check and the exec
// except by the host.
//
// What this cannot check: the interpreter the kernel loads itself, a script's "#!" line
// or an ELF binary's PT_INTERP, resolved during the exec. One naming /proc/self/exe runs
// the executor's binary too (this process's exe until the exec completes). That stays
// harmless: the binary is busy (ETXTBSY) for as long as the executor runs, which it does
// until the step's PID namespace is gone, and every process of the step dies with that
// namespace (the helper is its PID 1), so no step process holds the binary open once the
// executor has exited; in a user namespace its owner, the host's root, is not mapped
// either. The same goes for /proc/1/exe (the helper's), which the step cannot open: the
// helper's capabilities are not a subset of its own.
func checkNoMagicLink(cfg initConfig) error {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(unix.AT_FDCWD, cfg.Path, &how)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if !errors.Is(err, unix.ELOOP) {
		return nil // exec reports it, as it would have
	}
	// ELOOP also means too many symlinks: then the path without the flag fails as well.
	how.Resolve = 0
	if fd, err := unix.Openat2(unix.AT_FDCWD, cfg.Path, &how); err == nil {
		unix.Close(fd)
		name := cfg.Path
		if len(cfg.Args) > 0 && cfg.Args[0] != cfg.Path {
			name = fmt.Sprintf("%s (%s)", cfg.Args[0], cfg.Path)
		}
		return fmt.Errorf("refusing to run %s: the path leads through a magic link of /proc (such as /proc/self/exe), which would name the executor's own binary", name)
	}
	return nil
}
