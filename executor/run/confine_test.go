package run

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data as the filter reads it. x/net/bpf's VM loads words
// big-endian where the kernel loads them in the machine's order, so each 32-bit word is
// stored big-endian at the offset it has on a little-endian machine.
func seccompData(nr, auditArch uint32, args [6]uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], auditArch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[16+8*i+4:], uint32(a>>32))
	}
	return b
}

// wantAction is what libseccomp makes of p for a call of a 64-bit ABI: the action of a
// rule whose conditions all hold, or the default.
func wantAction(p *specs.LinuxSeccomp, name string, args [6]uint64) uint32 {
	return wantActionABI(p, name, args, false)
}

// wantActionABI is wantAction for a 64-bit ABI or, if short, a 32-bit one, whose rules
// libseccomp compares on the low 32 bits of the arguments and values alone.
func wantActionABI(p *specs.LinuxSeccomp, name string, args [6]uint64, short bool) uint32 {
	action := func(a specs.LinuxSeccompAction, errno *uint) uint32 {
		switch a {
		case specs.ActAllow:
			return unix.SECCOMP_RET_ALLOW
		case specs.ActErrno:
			e := uint32(unix.EPERM)
			if errno != nil {
				e = uint32(*errno)
			}
			return unix.SECCOMP_RET_ERRNO | e
		}
		panic("unexpected action " + string(a))
	}
	for _, rule := range p.Syscalls {
		named := false
		for _, n := range rule.Names {
			named = named || n == name
		}
		if !named {
			continue
		}
		holds := true
		for _, c := range rule.Args {
			a, v, v2 := args[c.Index], c.Value, c.ValueTwo
			if short {
				a, v, v2 = uint64(uint32(a)), uint64(uint32(v)), uint64(uint32(v2))
			}
			switch c.Op {
			case specs.OpEqualTo:
				holds = holds && a == v
			case specs.OpNotEqual:
				holds = holds && a != v
			case specs.OpLessThan:
				holds = holds && a < v
			case specs.OpLessEqual:
				holds = holds && a <= v
			case specs.OpGreaterThan:
				holds = holds && a > v
			case specs.OpGreaterEqual:
				holds = holds && a >= v
			case specs.OpMaskedEqual:
				holds = holds && a&v == v2
			}
		}
		if holds {
			return action(rule.Action, rule.ErrnoRet)
		}
	}
	return action(p.DefaultAction, p.DefaultErrnoRet)
}

// TestCompileFilter_defaultProfile runs the compiled default profile in a BPF interpreter
// for every system call of the architecture, with the argument values its rules name and
// their neighbours, and compares the outcome with the profile's.
func TestCompileFilter_defaultProfile(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the expectations below are x86-64's")
	}
	p, err := defaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	vm := filterVM(t, p)
	run := func(nr, auditArch uint32, args [6]uint64) uint32 {
		t.Helper()
		return runFilter(t, vm, nr, auditArch, args)
	}

	values := ruleValues(p.Syscalls)
	const auditArchX86_64 = 0xc000003e
	info := arch.X86_64
	allowed := 0
	for name, nr := range info.SyscallNames {
		for _, args := range argTries(values[name]) {
			want, got := wantAction(p, name, args), run(uint32(nr), auditArchX86_64, args)
			if got != want {
				t.Errorf("%s%v: %#x, want %#x", name, args, got, want)
			}
			if got == unix.SECCOMP_RET_ALLOW && args == [6]uint64{} {
				allowed++
			}
		}
	}
	if allowed < 300 {
		t.Errorf("%d system calls allowed with zero arguments; the profile allows over 300", allowed)
	}

	// The two narrowings compileFilter documents.
	if got := run(uint32(info.SyscallNames["read"])|0x40000000, auditArchX86_64, [6]uint64{}); got != unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS) {
		t.Errorf("an x32 read: %#x, want ENOSYS", got)
	}
	const auditArchI386 = 0x40000003
	if got := run(3 /* read */, auditArchI386, [6]uint64{}); got != unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM) {
		t.Errorf("an i386 read: %#x, want EPERM", got)
	}
}

// ruleValues returns the argument values worth trying for each system call that rules
// name: around every value they compare with.
func ruleValues(rules []specs.LinuxSyscall) map[string][]uint64 {
	values := map[string][]uint64{}
	for _, rule := range rules {
		for _, n := range rule.Names {
			for _, c := range rule.Args {
				vs := []uint64{c.Value, c.Value - 1, c.Value + 1, c.Value | 1<<32, 0xffffffff, ^uint64(0)}
				for bit := 0; bit < 64; bit++ {
					if c.Value&(1<<bit) != 0 {
						vs = append(vs, 1<<bit, c.Value&^(1<<bit))
					}
				}
				values[n] = append(values[n], vs...)
			}
		}
	}
	return values
}

// argTries returns the arguments to try a system call with: all zero, and each of
// values in each argument.
func argTries(values []uint64) [][6]uint64 {
	tries := [][6]uint64{{}}
	for _, v := range values {
		for i := range 6 {
			var args [6]uint64
			args[i] = v
			tries = append(tries, args)
		}
	}
	return tries
}

// filterVM compiles p for x86-64, with the rules of first checked first, and loads it in
// x/net/bpf's interpreter.
func filterVM(t *testing.T, p *specs.LinuxSeccomp, first ...specs.LinuxSyscall) *bpf.VM {
	t.Helper()
	return abiFilterVM(t, p, arch.X86_64, nil, first...)
}

// abiFilterVM is filterVM for the native ABI and compat ABI given.
func abiFilterVM(t *testing.T, p *specs.LinuxSeccomp, native, compat *arch.Info, first ...specs.LinuxSyscall) *bpf.VM {
	t.Helper()
	filter, err := compileFilter(p, first, native, compat)
	if err != nil {
		t.Fatalf("compileFilter: %v", err)
	}
	raw := make([]bpf.RawInstruction, len(filter))
	for i, f := range filter {
		raw[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}
	}
	insts, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter has instructions the interpreter does not know")
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatalf("loading the filter: %v", err)
	}
	return vm
}

func runFilter(t *testing.T, vm *bpf.VM, nr, auditArch uint32, args [6]uint64) uint32 {
	t.Helper()
	got, err := vm.Run(seccompData(nr, auditArch, args))
	if err != nil {
		t.Fatalf("running the filter: %v", err)
	}
	return uint32(got)
}

// TestCompileFilter_operators checks every comparison, on both halves of an argument,
// against libseccomp's meaning, with several rules for one system call.
func TestCompileFilter_operators(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the system call numbers below are x86-64's")
	}
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	const big = 0x1_0000_0005
	ops := []specs.LinuxSeccompOperator{
		specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
		specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpMaskedEqual,
	}
	// System calls 0 to 6, one per operator, each with a rule on argument 1 (small value)
	// and one on arguments 2 and 3 together (values with high halves).
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &eperm}
	names := []string{"read", "write", "open", "close", "stat", "fstat", "lstat"}
	for i, op := range ops {
		p.Syscalls = append(p.Syscalls,
			specs.LinuxSyscall{Names: []string{names[i]}, Action: specs.ActErrno, ErrnoRet: &enosys, Args: []specs.LinuxSeccompArg{
				{Index: 1, Value: 7, ValueTwo: 3, Op: op},
			}},
			specs.LinuxSyscall{Names: []string{names[i]}, Action: specs.ActErrno, ErrnoRet: &enosys, Args: []specs.LinuxSeccompArg{
				{Index: 2, Value: big, ValueTwo: big &^ 1, Op: op},
				{Index: 3, Value: 0xffff_ffff_0000_0000, ValueTwo: 0x8000_0000_0000_0000, Op: op},
			}},
		)
	}
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"getpid"}, Action: specs.ActAllow})
	vm := filterVM(t, p)
	values := []uint64{0, 1, 3, 6, 7, 8, 0xffff_ffff, big - 1, big, big + 1, big &^ 1, 1 << 32,
		0x8000_0000_0000_0000, 0xffff_ffff_0000_0000, 0xffff_ffff_0000_0001, ^uint64(0)}
	const auditArchX86_64 = 0xc000003e
	for _, name := range append(names, "getpid", "getuid") {
		nr := uint32(arch.X86_64.SyscallNames[name])
		for _, v1 := range values {
			for _, v2 := range values {
				for _, args := range [][6]uint64{{0, v1, v2, v2}, {0, v1, v2, v1}, {0, v2, v1, v2 ^ v1}} {
					if got, want := runFilter(t, vm, nr, auditArchX86_64, args), wantAction(p, name, args); got != want {
						t.Fatalf("%s%v: %#x, want %#x", name, args, got, want)
					}
				}
			}
		}
	}
}

// TestCompileFilter_ttyIoctls: the default filter refuses TIOCSTI and TIOCLINUX, with any
// high bits (the kernel ignores them), and allows every other ioctl as Docker's profile
// does.
func TestCompileFilter_ttyIoctls(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the system call numbers below are x86-64's")
	}
	p, err := defaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	vm := filterVM(t, p, ttyIoctls...)
	const auditArchX86_64 = 0xc000003e
	ioctl := uint32(arch.X86_64.SyscallNames["ioctl"])
	eperm := unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	for _, tc := range []struct {
		req  uint64
		want uint32
	}{
		{unix.TIOCSTI, eperm},
		{unix.TIOCLINUX, eperm},
		{1<<32 | unix.TIOCSTI, eperm},
		{0xffffffff<<32 | unix.TIOCLINUX, eperm},
		{unix.TCGETS, unix.SECCOMP_RET_ALLOW},
		{unix.TIOCSCTTY, unix.SECCOMP_RET_ALLOW},
		{unix.TIOCSTI + 1, unix.SECCOMP_RET_ALLOW},
		{unix.TIOCSTI << 32, unix.SECCOMP_RET_ALLOW}, // the kernel sees request 0
		{0, unix.SECCOMP_RET_ALLOW},
	} {
		if got := runFilter(t, vm, ioctl, auditArchX86_64, [6]uint64{1, tc.req}); got != tc.want {
			t.Errorf("ioctl(1, %#x): %#x, want %#x", tc.req, got, tc.want)
		}
	}
	// The rest of the profile is unchanged.
	for name, want := range map[string]uint32{"read": unix.SECCOMP_RET_ALLOW, "keyctl": eperm} {
		if got := runFilter(t, vm, uint32(arch.X86_64.SyscallNames[name]), auditArchX86_64, [6]uint64{}); got != want {
			t.Errorf("%s: %#x, want %#x", name, got, want)
		}
	}
}
