package run

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/test/testenv"
)

// TestCompileFilter_compatABI: with a compat ABI (x86 beside x86-64, ARM beside AArch64,
// run in the interpreter whatever this machine is), every system call of that ABI gets
// what libseccomp makes of the profile for a 32-bit architecture: the same rules, by
// name in its own table, compared on the low 32 bits of arguments and values, the
// terminal ioctls refused first. The native ABI gets what the native-only filter gives
// it, x32 calls still fail with ENOSYS, another architecture's get the default action,
// and the native-only filter refuses every call of the compat ABI.
func TestCompileFilter_compatABI(t *testing.T) {
	p, err := defaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	eperm := unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	first := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: ttyIoctls}
	values := ruleValues(append(append([]specs.LinuxSyscall{}, p.Syscalls...), ttyIoctls...))
	for _, tc := range []struct{ native, compat *arch.Info }{
		{arch.X86_64, arch.I386},
		{arch.AARCH64, arch.ARM},
	} {
		t.Run(tc.compat.Name, func(t *testing.T) {
			both := abiFilterVM(t, p, tc.native, tc.compat, ttyIoctls...)
			alone := abiFilterVM(t, p, tc.native, nil, ttyIoctls...)
			compatID := uint32(tc.compat.ID)
			allowed := 0
			for name, nr := range tc.compat.SyscallNames {
				for _, args := range argTries(values[name]) {
					want := wantActionABI(first, name, args, true)
					if want == unix.SECCOMP_RET_ALLOW {
						want = wantActionABI(p, name, args, true)
					}
					got := runFilter(t, both, uint32(nr), compatID, args)
					if got != want {
						t.Errorf("%s %s%v: %#x, want %#x", tc.compat.Name, name, args, got, want)
					}
					if got == unix.SECCOMP_RET_ALLOW && args == [6]uint64{} {
						allowed++
					}
					if got := runFilter(t, alone, uint32(nr), compatID, args); got != eperm {
						t.Errorf("native only: %s %s%v: %#x, want EPERM", tc.compat.Name, name, args, got)
					}
				}
			}
			if allowed < 300 {
				t.Errorf("%d %s system calls allowed with zero arguments; the profile allows over 300", allowed, tc.compat.Name)
			}
			nativeID := uint32(tc.native.ID)
			for name, nr := range tc.native.SyscallNames {
				for _, args := range argTries(values[name]) {
					if got, want := runFilter(t, both, uint32(nr), nativeID, args), runFilter(t, alone, uint32(nr), nativeID, args); got != want {
						t.Errorf("%s %s%v: %#x, the native-only filter %#x", tc.native.Name, name, args, got, want)
					}
				}
			}
			if tc.native == arch.X86_64 {
				read := uint32(tc.native.SyscallNames["read"])
				if got := runFilter(t, both, read|0x40000000, nativeID, [6]uint64{}); got != unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS) {
					t.Errorf("an x32 read: %#x, want ENOSYS", got)
				}
			}
			if got := runFilter(t, both, 3, uint32(arch.PPC64LE.ID), [6]uint64{}); got != eperm {
				t.Errorf("a ppc64le call: %#x, want EPERM", got)
			}
		})
	}
}

// TestCompileFilter_compat32BitValues: a rule comparing with a value of more than 32 bits
// cannot be compiled for a 32-bit ABI (libseccomp compares the low halves there) and is
// refused, not truncated.
func TestCompileFilter_compat32BitValues(t *testing.T) {
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{
		Names: []string{"personality"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: 0, Value: 1<<32 | 8, Op: specs.OpEqualTo}},
	}}}
	if _, err := compileFilter(p, nil, arch.X86_64, nil); err != nil {
		t.Fatalf("x86-64 alone: %v", err)
	}
	if _, err := compileFilter(p, nil, arch.X86_64, arch.I386); err == nil || !strings.Contains(err.Error(), "more than 32 bits") {
		t.Errorf("with x86: %v, want an error about the value", err)
	}
	if _, err := compileFilter(p, nil, arch.X86_64, arch.X86_64); err == nil {
		t.Error("x86-64 as its own compat ABI: no error")
	}
}

// TestStepFilter: a step of no CompatArch gets the native ABI alone, one of this
// machine's compat ABI's architecture gets it as well, another architecture is an
// error; on amd64 the filters the chroot runner installs refuse and allow an i386 read
// accordingly.
func TestStepFilter(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the expectations below are amd64's")
	}
	for _, tc := range []struct {
		compat string
		want   uint32 // for an i386 read
	}{
		{"", unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{"386", unix.SECCOMP_RET_ALLOW},
	} {
		f, err := stepFilter(tc.compat)
		if err != nil {
			t.Fatalf("stepFilter(%q): %v", tc.compat, err)
		}
		vm := vmOf(t, f)
		if got := runFilter(t, vm, 3 /* read */, uint32(arch.I386.ID), [6]uint64{}); got != tc.want {
			t.Errorf("stepFilter(%q): an i386 read: %#x, want %#x", tc.compat, got, tc.want)
		}
		if got := runFilter(t, vm, 0 /* read */, uint32(arch.X86_64.ID), [6]uint64{}); got != unix.SECCOMP_RET_ALLOW {
			t.Errorf("stepFilter(%q): an x86-64 read: %#x, want it allowed", tc.compat, got)
		}
	}
	for _, bad := range []string{"arm", "arm64", "amd64", "i386"} {
		if _, err := stepFilter(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("stepFilter(%q): %v, want an error naming it", bad, err)
		}
		if _, err := prepare("/", Spec{Args: []string{"/bin/sh"}, CompatArch: bad}); err == nil {
			t.Errorf("a Spec of CompatArch %q: no error", bad)
		}
	}
}

// vmOf loads a compiled filter in x/net/bpf's interpreter.
func vmOf(t *testing.T, filter []unix.SockFilter) *bpf.VM {
	t.Helper()
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

// i386Busybox returns the path of Debian's busybox-static:i386 (hack/deps.sh --foreign),
// a statically linked 32-bit x86 executable.
func i386Busybox(t *testing.T) string {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("i386 executables run natively on amd64 only")
	}
	dir, err := testenv.ForeignDeb("busybox-static", "i386")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "bin", "busybox")
}

// newCompatRoot returns newRoot with Debian's i386 busybox at /i386/busybox beside the
// native one.
func newCompatRoot(t *testing.T) string {
	t.Helper()
	bb := i386Busybox(t)
	root := newRoot(t, "i386/")
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "i386", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestChroot_compatArch: on the kernel, a 32-bit x86 program runs in a step of
// CompatArch 386, under the profile's rules for that ABI (its seccomp filter is on; the
// personality it allows, PER_LINUX32, works; unshare, which it refuses without
// CAP_SYS_ADMIN and the kernel allows there without the filter, fails), and native
// programs run beside it. uname -m says x86_64 there, as in a BuildKit step, which sets
// no personality. In a step of no CompatArch, the same program cannot make a system
// call: it dies, and the native one still runs.
func TestChroot_compatArch(t *testing.T) {
	root := newCompatRoot(t)
	compat := func(s *Spec) { s.CompatArch = "386" }
	const script = `/i386/busybox uname -m
/i386/busybox linux32 /i386/busybox uname -m
/i386/busybox grep -E '^Seccomp:' /proc/self/status
/i386/busybox unshare -U /i386/busybox true && echo unshared
echo native $(busybox uname -m)
`
	stdout, stderr, err := runSh(t, Chroot(), root, script, compat)
	if err != nil {
		t.Fatalf("Run: %v (stdout %q, stderr %q)", err, stdout, stderr)
	}
	want := "x86_64\ni686\nSeccomp:\t2\nnative x86_64\n"
	if stdout != want {
		t.Errorf("stdout %q, want %q (stderr %q)", stdout, want, stderr)
	}
	if !strings.Contains(stderr, "unshare") || !strings.Contains(strings.ToLower(stderr), unix.EPERM.Error()) {
		t.Errorf("stderr %q, want unshare refused (%v)", stderr, unix.EPERM)
	}

	_, stderr, err = runSh(t, Chroot(), root, "/i386/busybox echo ran")
	if err == nil || exitCode(err) <= 0 {
		t.Errorf("the i386 program in a native step: %v (stderr %q), want it to fail", err, stderr)
	}
	stdout, stderr, err = runSh(t, Chroot(), root, "/i386/busybox true || echo refused; busybox echo native")
	if err != nil || stdout != "refused\nnative\n" {
		t.Errorf("Run: %q, %v (stderr %q); want the i386 program refused and the native one run", stdout, err, stderr)
	}
}

// TestInPlace_compatArch_podProfile: in place the executor installs no filter; the pod's
// seccomp profile decides. Under Docker's default profile with the x86 ABI, as containerd's
// and CRI-O's RuntimeDefault have it on amd64, a step of CompatArch 386 runs a 32-bit
// program; under the same profile for x86-64 alone (a Localhost profile of that one
// architecture) it cannot.
func TestInPlace_compatArch_podProfile(t *testing.T) {
	switch os.Getenv(inPlaceChildEnv) {
	case "compat-with-x86", "compat-native-only":
		inPlaceCompatChild(t, os.Getenv(inPlaceChildEnv) == "compat-with-x86")
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	i386Busybox(t)
	hostSh(t)
	for _, role := range []string{"compat-with-x86", "compat-native-only"} {
		if _, err := runChild(t, "TestInPlace_compatArch_podProfile", role, "", nil); err != nil {
			t.Errorf("child %s: %v", role, err)
		}
	}
}

func inPlaceCompatChild(t *testing.T, withX86 bool) {
	bb := i386Busybox(t)
	filter, err := defaultFilter()
	if withX86 {
		filter, err = compatFilter()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		t.Fatalf("setting no_new_privs: %v", e)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		t.Fatalf("installing the seccomp filter on every thread: %v", e)
	}
	stdout, stderr, err := inPlaceSh(t, InPlace(), bb+" uname -m", func(s *Spec) { s.CompatArch = "386" })
	t.Logf("Run: %q, %v (stderr %q)", stdout, err, stderr)
	switch {
	case withX86 && (err != nil || stdout != "x86_64\n"):
		t.Errorf("under the profile with x86: %q, %v; want x86_64", stdout, err)
	case !withX86 && (err == nil || exitCode(err) <= 0):
		t.Errorf("under the profile of x86-64 alone: %q, %v; want the program to fail", stdout, err)
	}
}
