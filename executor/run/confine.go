package run

import (
	"encoding/gob"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	seccompbpf "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
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

// DefaultCapabilities returns the names of the capabilities a RUN step keeps under Chroot:
// Docker's default set.
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

var defaultFilter = sync.OnceValues(func() ([]unix.SockFilter, error) {
	p, err := defaultProfile()
	if err != nil {
		return nil, err
	}
	f, skipped, err := compileFilter(p)
	if err != nil {
		return nil, err
	}
	if len(skipped) > 0 {
		// Not so today; a new profile with a condition compileFilter cannot express must
		// be looked at, not silently narrowed.
		return nil, fmt.Errorf("compiling the default seccomp profile: cannot express the rules for %v", skipped)
	}
	return f, nil
})

// defaultProfile returns Docker's default seccomp profile (moby's, which containerd's
// matches) resolved for this architecture, this kernel and the default capabilities.
func defaultProfile() (*specs.LinuxSeccomp, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: DefaultCapabilities(),
	}}}
	p, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("resolving the default seccomp profile: %w", err)
	}
	return p, nil
}

// compileFilter compiles p to a classic BPF program for the native architecture (libseccomp
// needs cgo, which the executor is built without). It follows runc with libseccomp in
// everything but these, where it denies what libseccomp would allow:
//
//   - Only the native ABI is allowed. On amd64 the profile also allows the x86 (int 0x80)
//     and x32 ABIs; here an x32 system call fails with ENOSYS and an x86 one takes the
//     default action (EPERM), so 32-bit programs cannot run in a step.
//   - A rule with an argument condition BPF here cannot express (SCMP_CMP_MASKED_EQ with a
//     non-zero second value) is left out if it allows, and is an error otherwise; the
//     names of the system calls of rules left out are returned. The default profile has
//     none.
//
// System calls the architecture does not have are skipped, as runc does. A profile that
// gives one system call rules with different actions is refused, so that the order of the
// checks cannot matter.
func compileFilter(p *specs.LinuxSeccomp) (filter []unix.SockFilter, skipped []string, err error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, nil, fmt.Errorf("compiling the seccomp profile: %w", err)
	}
	def, err := seccompAction(p.DefaultAction, p.DefaultErrnoRet)
	if err == nil && def&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO && def != seccompbpf.ActionErrno {
		err = fmt.Errorf("errno %d: only EPERM can be the default", def&unix.SECCOMP_RET_DATA)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("compiling the seccomp profile: default action: %w", err)
	}
	policy := seccompbpf.Policy{DefaultAction: def}
	actionOf := map[string]seccompbpf.Action{}
	for _, rule := range p.Syscalls {
		act, err := seccompAction(rule.Action, rule.ErrnoRet)
		if err != nil {
			return nil, nil, fmt.Errorf("compiling the seccomp profile: rule for %v: %w", rule.Names, err)
		}
		var names []string
		for _, n := range rule.Names {
			if _, ok := info.SyscallNames[n]; !ok {
				continue
			}
			if a, seen := actionOf[n]; seen && a != act {
				return nil, nil, fmt.Errorf("compiling the seccomp profile: %s has rules with different actions", n)
			}
			actionOf[n] = act
			names = append(names, n)
		}
		if len(names) == 0 || act == def {
			continue
		}
		group := seccompbpf.SyscallGroup{Action: act}
		if len(rule.Args) == 0 {
			group.Names = names
			policy.Syscalls = append(policy.Syscalls, group)
			continue
		}
		conds, ok := seccompConditions(rule.Args)
		if !ok {
			if rule.Action != specs.ActAllow {
				return nil, nil, fmt.Errorf("compiling the seccomp profile: cannot express the conditions of the rule for %v", names)
			}
			skipped = append(skipped, names...)
			continue
		}
		for _, n := range names {
			group.NamesWithCondtions = append(group.NamesWithCondtions, seccompbpf.NameWithConditions{Name: n, Conditions: conds})
		}
		policy.Syscalls = append(policy.Syscalls, group)
	}
	insts, err := policy.Assemble()
	if err != nil {
		return nil, nil, fmt.Errorf("compiling the seccomp profile: %w", err)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, nil, fmt.Errorf("compiling the seccomp profile: %w", err)
	}
	if len(raw) > 4096 { // BPF_MAXINSNS
		return nil, nil, fmt.Errorf("compiling the seccomp profile: %d instructions, more than the kernel takes", len(raw))
	}
	filter = make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return filter, skipped, nil
}

// seccompAction converts a profile action.
func seccompAction(a specs.LinuxSeccompAction, errnoRet *uint) (seccompbpf.Action, error) {
	switch a {
	case specs.ActAllow:
		return seccompbpf.ActionAllow, nil
	case specs.ActErrno:
		errno := uint(unix.EPERM)
		if errnoRet != nil {
			errno = *errnoRet
		}
		if errno == uint(unix.EPERM) {
			// The library's ActionErrno means EPERM, and is the only errno action it
			// takes as a default.
			return seccompbpf.ActionErrno, nil
		}
		if errno > 0xffff { // SECCOMP_RET_DATA
			return 0, fmt.Errorf("errno %d out of range", errno)
		}
		return seccompbpf.Action(unix.SECCOMP_RET_ERRNO | uint32(errno)), nil
	case specs.ActKill, specs.ActKillThread:
		return seccompbpf.ActionKillThread, nil
	case specs.ActKillProcess:
		return seccompbpf.ActionKillProcess, nil
	case specs.ActTrap:
		return seccompbpf.ActionTrap, nil
	case specs.ActLog:
		return seccompbpf.ActionLog, nil
	}
	return 0, fmt.Errorf("unsupported action %s", a)
}

// seccompConditions converts a rule's argument conditions; all must hold, as in
// libseccomp. It reports false for one BPF here cannot express.
func seccompConditions(args []specs.LinuxSeccompArg) (seccompbpf.ArgumentConditions, bool) {
	var conds seccompbpf.ArgumentConditions
	for _, a := range args {
		c := seccompbpf.Condition{Argument: uint32(a.Index), Value: a.Value}
		switch a.Op {
		case specs.OpEqualTo:
			c.Operation = seccompbpf.Equal
		case specs.OpNotEqual:
			c.Operation = seccompbpf.NotEqual
		case specs.OpLessThan:
			c.Operation = seccompbpf.LessThan
		case specs.OpLessEqual:
			c.Operation = seccompbpf.LessOrEqual
		case specs.OpGreaterThan:
			c.Operation = seccompbpf.GreaterThan
		case specs.OpGreaterEqual:
			c.Operation = seccompbpf.GreaterOrEqual
		case specs.OpMaskedEqual:
			// (arg & Value) == ValueTwo; with ValueTwo 0 that is "none of Value's bits set".
			if a.ValueTwo != 0 {
				return nil, false
			}
			c.Operation = seccompbpf.BitsNotSet
		default:
			return nil, false
		}
		if a.Index > 5 {
			return nil, false
		}
		conds = append(conds, c)
	}
	return conds, true
}
