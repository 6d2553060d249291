package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/binfmt"
	"github.com/slipway-dev/slipway/test/testenv"
)

func TestParsePlatforms(t *testing.T) {
	got, err := parsePlatforms("arm64, linux/arm/v6,arm,riscv64,")
	if err != nil {
		t.Fatal(err)
	}
	want := []v1.Platform{
		{OS: "linux", Architecture: "arm64"},
		{OS: "linux", Architecture: "arm", Variant: "v6"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
		{OS: "linux", Architecture: "riscv64"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for s, msg := range map[string]string{
		"":              "none given",
		"sparc64":       `no ELF machine is known for architecture "sparc64"`,
		"windows/arm64": "only linux executables",
	} {
		if _, err := parsePlatforms(s); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parsePlatforms(%q): %v, want %q", s, err, msg)
		}
	}
}

func TestRun_flags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name-prefix="}, "--name-prefix"},
		{[]string{"--name-prefix=a/b"}, "--name-prefix"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--platforms=mips128"}, "no ELF machine"},
	} {
		if err := run(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q): %v, want %q", tc.args, err, tc.want)
		}
	}
}

// kernel mounts binfmt_misc when needed and skips when it cannot (not root).
func kernel(t *testing.T) {
	t.Helper()
	if err := binfmt.Mount(binfmt.DefaultDir); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("binfmt_misc cannot be mounted here (needs root): %v", err)
		}
		t.Fatal(err)
	}
	testenv.RequireQEMUUserStatic(t)
}

func prefix(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := "slipway-test-" + hex.EncodeToString(b) + "-"
	t.Cleanup(func() {
		// Whatever a failed run left of ours.
		entries, _ := binfmt.ReadEntries(binfmt.DefaultDir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name, p) {
				if err := binfmt.Unregister(binfmt.DefaultDir, e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	})
	return p
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(args, &out); err != nil {
		t.Fatalf("slipway-binfmt %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

// On this machine's kernel, with platforms no other test emulates (riscv64, s390x,
// mips64le), so that their handlers cannot interfere: register, again (no-op), replace
// its own changed entry, register beside another's that serves (left alone), uninstall only its own.
func TestRun_kernel(t *testing.T) {
	kernel(t)
	p := prefix(t)
	other := prefix(t)
	common := []string{"--name-prefix=" + p, "--qemu-dir=/usr/libexec/qemu-binfmt", "--conf-dir=" + binfmt.DebianConfDir}

	out := runOK(t, append(common, "--platforms=riscv64,s390x")...)
	want := "linux/riscv64: registered " + p + "riscv64 (interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P, flags OPF)\n" +
		"linux/s390x: registered " + p + "s390x (interpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P, flags OPF)\n"
	if out != want {
		t.Errorf("first run printed\n%s\nwant\n%s", out, want)
	}
	for _, pl := range []v1.Platform{{OS: "linux", Architecture: "riscv64"}, {OS: "linux", Architecture: "s390x"}} {
		h, err := binfmt.Find(binfmt.DefaultDir, pl)
		if err != nil {
			t.Errorf("Find(%s) after registering: %v", pl.Architecture, err)
		} else if !strings.HasPrefix(h.Name, p) || !strings.Contains(h.Flags, "F") {
			t.Errorf("Find(%s) = %+v, want %s* with F", pl.Architecture, h, p)
		}
	}

	out = runOK(t, append(common, "--platforms=riscv64,s390x")...)
	if want := "linux/riscv64: already registered as " + p + "riscv64\nlinux/s390x: already registered as " + p + "s390x\n"; out != want {
		t.Errorf("second run printed\n%s\nwant\n%s", out, want)
	}

	// Its own entry as another image version left it: replaced.
	if err := binfmt.Unregister(binfmt.DefaultDir, p+"riscv64"); err != nil {
		t.Fatal(err)
	}
	old, err := binfmt.QEMUConf(binfmt.DebianConfDir, v1.Platform{OS: "linux", Architecture: "riscv64"})
	if err != nil {
		t.Fatal(err)
	}
	old.Name, old.Interpreter = p+"riscv64", "/usr/bin/qemu-riscv64-static"
	if err := binfmt.Register(binfmt.DefaultDir, old); err != nil {
		t.Fatal(err)
	}
	out = runOK(t, append(common, "--platforms=riscv64")...)
	if want := "linux/riscv64: replaced " + p + "riscv64 (interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P, flags OPF)\n"; out != want {
		t.Errorf("run over a changed entry printed\n%s\nwant\n%s", out, want)
	}

	// Another's entry serving mips64le: left alone, and ours registered too.
	theirs, err := binfmt.QEMUConf(binfmt.DebianConfDir, v1.Platform{OS: "linux", Architecture: "mips64le"})
	if err != nil {
		t.Fatal(err)
	}
	theirs.Name = other + "mips64el"
	if err := binfmt.Register(binfmt.DefaultDir, theirs); err != nil {
		t.Fatal(err)
	}
	out = runOK(t, append(common, "--platforms=mips64le")...)
	if want := "linux/mips64le: registered " + p + "mips64el (interpreter /usr/libexec/qemu-binfmt/mips64el-binfmt-P, flags OPF), ahead of " + theirs.Name + ", which also serve it and are left alone\n"; out != want {
		t.Errorf("run with another's mips64el entry printed\n%s\nwant\n%s", out, want)
	}

	// Uninstall removes its own entries only.
	out = runOK(t, append(common, "--uninstall", "--platforms=riscv64,s390x,mips64le")...)
	want = "linux/riscv64: removed " + p + "riscv64\nlinux/s390x: removed " + p + "s390x\nlinux/mips64le: removed " + p + "mips64el\n"
	if out != want {
		t.Errorf("uninstall printed\n%s\nwant\n%s", out, want)
	}
	for _, n := range []string{p + "riscv64", p + "s390x", p + "mips64el"} {
		if _, err := binfmt.ReadEntry(binfmt.DefaultDir, n); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after uninstall: %v", n, err)
		}
	}
	if _, err := binfmt.ReadEntry(binfmt.DefaultDir, theirs.Name); err != nil {
		t.Errorf("another's entry %s after uninstall: %v", theirs.Name, err)
	}

	// The native platform: nothing to do.
	out = runOK(t, append(common, "--platforms=amd64")...)
	if want := "linux/amd64: runs natively on this node, nothing to register\n"; out != want {
		t.Errorf("native run printed %q, want %q", out, want)
	}
}

func TestRun_missingEmulator(t *testing.T) {
	kernel(t)
	p := prefix(t)
	err := run([]string{"--name-prefix=" + p, "--qemu-dir=" + t.TempDir(), "--platforms=riscv64"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "linux/riscv64: the emulator: stat ") {
		t.Errorf("run with no emulator: %v", err)
	}
}
