package run

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// defaultFilter is Docker's default seccomp profile compiled for this machine's native
// ABI only, with the terminal ioctls of ttyIoctls refused: the filter of every step but
// those whose executables run through a compat ABI (see stepFilter).
var defaultFilter = sync.OnceValues(func() ([]unix.SockFilter, error) { return profileFilter(false) })

// compatFilter is defaultFilter with this machine's compat ABI (compatABIs) allowed too,
// with the same rules.
var compatFilter = sync.OnceValues(func() ([]unix.SockFilter, error) { return profileFilter(true) })

// profileFilter compiles Docker's default profile and ttyIoctls for the native ABI, and
// for this machine's compat ABI too if withCompat.
func profileFilter(withCompat bool) ([]unix.SockFilter, error) {
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("compiling the seccomp profile: %w", err)
	}
	var compat *arch.Info
	if withCompat {
		c, ok := compatABIs[runtime.GOARCH]
		if !ok {
			return nil, fmt.Errorf("compiling the seccomp profile: %s has no compat ABI", runtime.GOARCH)
		}
		compat = c.info
	}
	p, err := defaultProfile()
	if err != nil {
		return nil, err
	}
	return compileFilter(p, ttyIoctls, native, compat)
}

// compatABI is an ABI through which the kernel of one architecture runs the executables
// of another itself, natively, with system call numbers and an audit architecture of
// their own.
type compatABI struct {
	arch string     // the executables' architecture, as GOARCH and OCI platforms name it
	info *arch.Info // the ABI's system call table and audit architecture
}

// compatABIs are, by this machine's GOARCH, the sub-architectures of Docker's profile
// (moby's archMap, which libseccomp adds to the filter of every container: x86-64 → x86
// and x32, AArch64 → ARM) that an image platform's executables use: linux/386 on amd64,
// linux/arm on arm64. x32 is left out: no image platform is made of x32 executables.
// Which steps run through one is the caller's to say (Spec.CompatArch): the builder says
// so of the stages whose platform binfmt.Native calls native, 386 on amd64 (arm on arm64
// is not, there: a binfmt_misc handler runs it, whose interpreter makes native calls).
var compatABIs = map[string]compatABI{
	"amd64": {arch: "386", info: arch.I386},
	"arm64": {arch: "arm", info: arch.ARM},
}

// checkCompatArch checks a Spec.CompatArch: empty, or the architecture of this machine's
// compat ABI.
func checkCompatArch(a string) error {
	if a == "" {
		return nil
	}
	if c, ok := compatABIs[runtime.GOARCH]; ok && c.arch == a {
		return nil
	}
	return fmt.Errorf("checking the architecture: this machine (%s) does not run %s executables through a compat ABI", runtime.GOARCH, a)
}

// stepFilter returns the seccomp filter of a step: defaultFilter, the native ABI alone,
// unless its executables are of compatArch (Spec.CompatArch), the architecture of this
// machine's compat ABI, which compatFilter allows as well. Docker allows the compat ABIs
// to every container; here every other step keeps the narrower filter, so that a 32-bit
// program (with the older, multiplexed system calls of its ABI, such as socketcall, that
// the profile's argument rules cannot look into) runs only where the stage's platform
// needs it.
func stepFilter(compatArch string) ([]unix.SockFilter, error) {
	if compatArch == "" {
		return defaultFilter()
	}
	if err := checkCompatArch(compatArch); err != nil {
		return nil, err
	}
	return compatFilter()
}

// ttyIoctls refuses (EPERM) the ioctls that push input into a terminal: TIOCSTI, which
// types a character as if at the keyboard, and TIOCLINUX, whose TIOCL_SETSEL/PASTESEL
// paste into a virtual console. Docker's profile allows both; bubblewrap refuses them
// since CVE-2017-5226 (a sandboxed program typing commands into the terminal of whoever
// started it). A step has no controlling terminal (the helper starts in a session of its
// own), so the kernel refuses TIOCSTI already, unless CAP_SYS_ADMIN is held; this is
// defence in depth. The request is compared on its low 32 bits only: the kernel takes it
// as an unsigned int, so high bits the caller sets must not get around the rule (as they
// did around flatpak's, CVE-2019-10063).
var ttyIoctls = []specs.LinuxSyscall{{
	Names:    []string{"ioctl"},
	Action:   specs.ActErrno,
	ErrnoRet: &eperm,
	Args:     []specs.LinuxSeccompArg{{Index: 1, Value: 0xffffffff, ValueTwo: unix.TIOCSTI, Op: specs.OpMaskedEqual}},
}, {
	Names:    []string{"ioctl"},
	Action:   specs.ActErrno,
	ErrnoRet: &eperm,
	Args:     []specs.LinuxSeccompArg{{Index: 1, Value: 0xffffffff, ValueTwo: unix.TIOCLINUX, Op: specs.OpMaskedEqual}},
}}

var eperm = uint(unix.EPERM)

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

// compileFilter compiles p to a classic BPF program for the native ABI and, if compat is
// not nil, for that compat ABI of the native architecture (compatABIs) too: libseccomp,
// which runc uses, needs cgo, and the executor is built without. It takes the system call
// numbers from go-seccomp-bpf's tables (that library's own compiler clobbers the
// accumulator with an argument when a rule's conditions fail, so that later rules compare
// the wrong value). Every argument comparison of the runtime spec is compiled exactly as
// libseccomp does: on all 64 bits for a 64-bit ABI, on the low 32 bits for a 32-bit one
// (libseccomp's _db_rule_gen_32; the kernel takes those arguments as 32-bit values), where
// a value with high bits is refused. Each ABI gets the same rules, resolved by name in its
// own table, as libseccomp applies a profile to every architecture of its filter.
//
// It is narrower than runc with libseccomp in that only the ABIs asked for are allowed.
// On amd64 Docker's profile also allows the x86 (int 0x80) and x32 ABIs to every
// container; here an x32 system call fails with ENOSYS and any other architecture's takes
// the default action (EPERM), so 32-bit programs cannot run in a step unless compat is
// the x86 ABI (see stepFilter).
//
// System calls an ABI does not have are skipped, as runc does. A profile that gives one
// system call rules with different actions is refused, so that the order of the rules
// cannot matter.
//
// The rules of first are checked before p's, whatever their action: a call that matches
// one of them gets its action, one that matches none goes on to p's rules (or p's
// default action). They narrow p (ttyIoctls) without editing its rules.
//
// The program checks the architecture, and jumps to that ABI's section (or returns the
// default action), which checks each system call with rules in turn, in number order, in
// a block of its own: a block whose rules' conditions all fail ends with the default
// action, so no comparison runs on a clobbered accumulator.
func compileFilter(p *specs.LinuxSeccomp, first []specs.LinuxSyscall, native, compat *arch.Info) ([]unix.SockFilter, error) {
	fail := func(err error) ([]unix.SockFilter, error) {
		return nil, fmt.Errorf("compiling the seccomp profile: %w", err)
	}
	if !littleEndian() {
		return fail(fmt.Errorf("big-endian machines are not supported"))
	}
	def, err := seccompAction(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return fail(fmt.Errorf("default action: %w", err))
	}
	nativeCode, err := abiSection(p, first, native, def)
	if err != nil {
		return fail(err)
	}
	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: 4, Size: 4}} // seccomp_data.arch
	var compatCode []bpf.Instruction
	if compat != nil {
		if compat.ID == native.ID {
			return fail(fmt.Errorf("%s is not a compat ABI of %s", compat.Name, native.Name))
		}
		if compatCode, err = abiSection(p, first, compat, def); err != nil {
			return fail(err)
		}
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(compat.ID), SkipFalse: 1},
			// Past the next two instructions and the native section.
			bpf.Jump{Skip: uint32(2 + len(nativeCode))},
		)
	}
	prog = append(prog,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
		bpf.RetConstant{Val: def},
	)
	prog = append(prog, nativeCode...)
	prog = append(prog, compatCode...)

	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fail(err)
	}
	if len(raw) > 4096 { // BPF_MAXINSNS
		return fail(fmt.Errorf("%d instructions, more than the kernel takes", len(raw)))
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return filter, nil
}

// bits32 reports whether info's ABI passes 32-bit arguments.
func bits32(info *arch.Info) bool {
	switch info {
	case arch.I386, arch.ARM:
		return true
	}
	return false
}

// abiSection compiles the rules of first and p for the ABI info, def being the default
// action: the code that runs once the architecture is known to be info's. It ends with a
// return.
func abiSection(p *specs.LinuxSeccomp, first []specs.LinuxSyscall, info *arch.Info, def uint32) ([]bpf.Instruction, error) {
	type rule struct {
		action uint32
		args   []specs.LinuxSeccompArg
	}
	short := bits32(info)
	rules := map[int][]rule{} // by system call number
	for _, r := range p.Syscalls {
		act, err := seccompAction(r.Action, r.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("rule for %v: %w", r.Names, err)
		}
		for _, name := range r.Names {
			nr, ok := info.SyscallNames[name]
			if !ok {
				continue
			}
			if prev := rules[nr]; len(prev) > 0 && prev[0].action != act {
				return nil, fmt.Errorf("%s has rules with different actions", name)
			}
			rules[nr] = append(rules[nr], rule{act, r.Args})
		}
	}
	firstRules := map[int][]rule{}
	for _, r := range first {
		act, err := seccompAction(r.Action, r.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("rule for %v: %w", r.Names, err)
		}
		if len(r.Args) == 0 {
			return nil, fmt.Errorf("rule for %v: a rule checked first needs conditions", r.Names)
		}
		for _, name := range r.Names {
			if nr, ok := info.SyscallNames[name]; ok {
				firstRules[nr] = append(firstRules[nr], rule{act, r.Args})
			}
		}
	}
	nrs := make([]int, 0, len(rules))
	for nr := range rules {
		nrs = append(nrs, nr)
	}
	for nr := range firstRules {
		if _, ok := rules[nr]; !ok {
			nrs = append(nrs, nr)
		}
	}
	sort.Ints(nrs)

	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}} // seccomp_data.nr
	if info == arch.X86_64 {
		// x32 shares x86-64's audit arch; its numbers carry __X32_SYSCALL_BIT.
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 0x40000000, SkipFalse: 1},
			bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		)
	}
	for _, nr := range nrs {
		var block []bpf.Instruction
		// A rule's code falls through to the next when its conditions fail.
		for _, r := range firstRules[nr] {
			code, err := ruleCode(r.args, r.action, short)
			if err != nil {
				return nil, fmt.Errorf("%s rule for %s: %w", info.Name, info.SyscallNumbers[nr], err)
			}
			block = append(block, code...)
		}
		unconditional, start := false, len(block)
		for _, r := range rules[nr] {
			if len(r.args) == 0 {
				// The other rules (same action) add nothing.
				block, unconditional = append(block[:start], bpf.RetConstant{Val: r.action}), true
				break
			}
			code, err := ruleCode(r.args, r.action, short)
			if err != nil {
				return nil, fmt.Errorf("%s rule for %s: %w", info.Name, info.SyscallNumbers[nr], err)
			}
			block = append(block, code...)
		}
		if !unconditional {
			// Conditions all failed: the default action, never a fall-through.
			block = append(block, bpf.RetConstant{Val: def})
		}
		if len(block) > 255 {
			return nil, fmt.Errorf("the %s rules for %s take %d instructions, more than a jump spans", info.Name, info.SyscallNumbers[nr], len(block))
		}
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipFalse: uint8(len(block))})
		prog = append(prog, block...)
	}
	return append(prog, bpf.RetConstant{Val: def}), nil
}

// Where a condition's jumps go.
const (
	toNext = iota // the next instruction
	toPass        // the next condition (or the rule's return, after the last)
	toFail        // past the rule's return: the next rule
)

// cond is one instruction of a condition's code, its jumps symbolic.
type cond struct {
	inst        bpf.Instruction // a load or an ALU operation; nil for a jump
	test        bpf.JumpTest
	val         uint32
	ifTrue, ifF int
}

// ruleCode compiles the conditions of a rule, all of which must hold (as in libseccomp),
// followed by the return of action; short: for an ABI of 32-bit arguments.
func ruleCode(args []specs.LinuxSeccompArg, action uint32, short bool) ([]bpf.Instruction, error) {
	var conds [][]cond
	for _, a := range args {
		c, err := condCode(a, short)
		if err != nil {
			return nil, err
		}
		conds = append(conds, c)
	}
	n := 1 // the return
	for _, c := range conds {
		n += len(c)
	}
	var out []bpf.Instruction
	for _, c := range conds {
		end := len(out) + len(c) // index of the next condition, or of the return
		for _, in := range c {
			i := len(out)
			if in.inst != nil {
				out = append(out, in.inst)
				continue
			}
			skip := func(to int) uint8 {
				switch to {
				case toPass:
					return uint8(end - i - 1)
				case toFail:
					return uint8(n - i - 1)
				}
				return 0
			}
			out = append(out, bpf.JumpIf{Cond: in.test, Val: in.val, SkipTrue: skip(in.ifTrue), SkipFalse: skip(in.ifF)})
		}
	}
	return append(out, bpf.RetConstant{Val: action}), nil
}

// condCode compiles one comparison of a 64-bit argument, as two 32-bit halves, or, when
// short (an ABI of 32-bit arguments), of its low half alone, as libseccomp compiles a
// rule for a 32-bit architecture; a value there must fit in 32 bits.
func condCode(a specs.LinuxSeccompArg, short bool) ([]cond, error) {
	if a.Index > 5 {
		return nil, fmt.Errorf("argument %d: there are six", a.Index)
	}
	off := uint32(16 + 8*a.Index) // seccomp_data.args[i], low half first (little-endian)
	lo := cond{inst: bpf.LoadAbsolute{Off: off, Size: 4}}
	hi := cond{inst: bpf.LoadAbsolute{Off: off + 4, Size: 4}}
	vlo, vhi := uint32(a.Value), uint32(a.Value>>32)
	jump := func(t bpf.JumpTest, v uint32, ifTrue, ifFalse int) cond {
		return cond{test: t, val: v, ifTrue: ifTrue, ifF: ifFalse}
	}
	if short {
		if vhi != 0 || (a.Op == specs.OpMaskedEqual && a.ValueTwo>>32 != 0) {
			return nil, fmt.Errorf("argument %d: a value of more than 32 bits for a 32-bit ABI", a.Index)
		}
		switch a.Op {
		case specs.OpEqualTo:
			return []cond{lo, jump(bpf.JumpEqual, vlo, toPass, toFail)}, nil
		case specs.OpNotEqual:
			return []cond{lo, jump(bpf.JumpEqual, vlo, toFail, toPass)}, nil
		case specs.OpGreaterThan:
			return []cond{lo, jump(bpf.JumpGreaterThan, vlo, toPass, toFail)}, nil
		case specs.OpGreaterEqual:
			return []cond{lo, jump(bpf.JumpGreaterOrEqual, vlo, toPass, toFail)}, nil
		case specs.OpLessThan:
			return []cond{lo, jump(bpf.JumpGreaterOrEqual, vlo, toFail, toPass)}, nil
		case specs.OpLessEqual:
			return []cond{lo, jump(bpf.JumpGreaterThan, vlo, toFail, toPass)}, nil
		case specs.OpMaskedEqual:
			return []cond{lo, {inst: bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: vlo}}, jump(bpf.JumpEqual, uint32(a.ValueTwo), toPass, toFail)}, nil
		}
		return nil, fmt.Errorf("unsupported operator %s", a.Op)
	}
	switch a.Op {
	case specs.OpEqualTo:
		return []cond{hi, jump(bpf.JumpEqual, vhi, toNext, toFail), lo, jump(bpf.JumpEqual, vlo, toPass, toFail)}, nil
	case specs.OpNotEqual:
		return []cond{hi, jump(bpf.JumpEqual, vhi, toNext, toPass), lo, jump(bpf.JumpEqual, vlo, toFail, toPass)}, nil
	case specs.OpGreaterThan, specs.OpGreaterEqual:
		last := bpf.JumpGreaterThan
		if a.Op == specs.OpGreaterEqual {
			last = bpf.JumpGreaterOrEqual
		}
		return []cond{
			hi, jump(bpf.JumpGreaterThan, vhi, toPass, toNext), jump(bpf.JumpEqual, vhi, toNext, toFail),
			lo, jump(last, vlo, toPass, toFail),
		}, nil
	case specs.OpLessThan, specs.OpLessEqual:
		// a < v is not a >= v; a <= v is not a > v.
		last := bpf.JumpGreaterOrEqual
		if a.Op == specs.OpLessEqual {
			last = bpf.JumpGreaterThan
		}
		return []cond{
			hi, jump(bpf.JumpGreaterOrEqual, vhi, toNext, toPass), jump(bpf.JumpEqual, vhi, toNext, toFail),
			lo, jump(last, vlo, toFail, toPass),
		}, nil
	case specs.OpMaskedEqual:
		// (arg & Value) == ValueTwo
		and := func(m uint32) cond { return cond{inst: bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: m}} }
		return []cond{
			hi, and(vhi), jump(bpf.JumpEqual, uint32(a.ValueTwo>>32), toNext, toFail),
			lo, and(vlo), jump(bpf.JumpEqual, uint32(a.ValueTwo), toPass, toFail),
		}, nil
	}
	return nil, fmt.Errorf("unsupported operator %s", a.Op)
}

// seccompAction converts a profile action to a filter's return value.
func seccompAction(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	switch a {
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActErrno:
		errno := uint(unix.EPERM)
		if errnoRet != nil {
			errno = *errnoRet
		}
		if errno > unix.SECCOMP_RET_DATA {
			return 0, fmt.Errorf("errno %d out of range", errno)
		}
		return unix.SECCOMP_RET_ERRNO | uint32(errno), nil
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	}
	return 0, fmt.Errorf("unsupported action %s", a)
}

// littleEndian reports whether this machine stores the low half of a 64-bit argument
// first.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}
