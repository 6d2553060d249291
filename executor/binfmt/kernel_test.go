package binfmt_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/binfmt"
	"github.com/slipway-dev/slipway/test/testenv"
)

var arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}

// kernelDir mounts binfmt_misc at binfmt.DefaultDir when it is not, and
// skips the test when it cannot be (not root).
func kernelDir(t *testing.T) string {
	t.Helper()
	if err := binfmt.Mount(binfmt.DefaultDir); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("binfmt_misc cannot be mounted here (needs root): %v", err)
		}
		t.Fatal(err)
	}
	return binfmt.DefaultDir
}

func testName(t *testing.T, suffix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "slipway-test-" + hex.EncodeToString(b) + "-" + suffix
}

// register registers e and unregisters it when the test ends.
func register(t *testing.T, dir string, e binfmt.Entry) {
	t.Helper()
	if err := binfmt.Register(dir, e); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := binfmt.Unregister(dir, e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// othersServe lists the enabled entries not named mine that also serve
// p: the table is the machine's, and another test may have registered one.
func othersServe(t *testing.T, dir string, p v1.Platform, mine ...string) []string {
	t.Helper()
	entries, err := binfmt.ReadEntries(dir)
	if err != nil {
		t.Fatal(err)
	}
	var others []string
	for _, e := range entries {
		if e.Enabled && !slices.Contains(mine, e.Name) && e.Serves(p) {
			others = append(others, e.Name)
		}
	}
	return others
}

// run runs Debian's arm64 busybox with args, chrooted into root when it
// is not empty, and returns its output.
func run(root, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	if root != "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// On this machine's kernel: Debian's QEMU rule for aarch64, registered
// with F, runs Debian's arm64 busybox, also chrooted into a root that
// holds no QEMU (as a build's root); without F Find says why a build
// cannot use it and the chrooted run indeed fails; unregistered, nothing
// runs it.
func TestKernel_registerFindRun(t *testing.T) {
	dir := kernelDir(t)
	testenv.RequireQEMUUserStatic(t)
	debRoot, err := testenv.ForeignDeb("busybox-static", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	// A root with busybox and nothing else.
	root := t.TempDir()
	bb, err := os.ReadFile(filepath.Join(debRoot, "bin", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}

	rule, err := binfmt.QEMUConf(binfmt.DebianConfDir, arm64)
	if err != nil {
		t.Fatal(err)
	}
	withF, withoutF := rule, rule
	withF.Name = testName(t, "aarch64")
	withoutF.Name = testName(t, "aarch64")
	withoutF.Flags = strings.ReplaceAll(rule.Flags, "F", "")

	t.Run("F", func(t *testing.T) {
		register(t, dir, withF)
		got, err := binfmt.ReadEntry(dir, withF.Name)
		if err != nil {
			t.Fatal(err)
		}
		// The kernel prints the flags in its own order (P, O, C, F).
		sortFlags := func(s string) string {
			b := []byte(s)
			sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
			return string(b)
		}
		got.Flags, withF.Flags = sortFlags(got.Flags), sortFlags(withF.Flags)
		if diff := cmp.Diff(withF, got); diff != "" {
			t.Errorf("entry read back from the kernel (-registered +read):\n%s", diff)
		}
		if err := binfmt.Register(dir, withF); !errors.Is(err, fs.ErrExist) {
			t.Errorf("registering %s twice: %v, want an error matching fs.ErrExist", withF.Name, err)
		}

		h, err := binfmt.Find(dir, arm64)
		if err != nil {
			t.Fatal(err)
		}
		if others := othersServe(t, dir, arm64, withF.Name); len(others) == 0 && h.Name != withF.Name {
			t.Errorf("Find = %+v, want %s", h, withF.Name)
		}
		if out, err := run("", filepath.Join(root, "bin", "busybox"), "uname", "-m"); err != nil || out != "aarch64" {
			t.Errorf("busybox uname -m: %q, %v; want aarch64", out, err)
		}
		if out, err := run(root, "/bin/busybox", "uname", "-m"); err != nil || out != "aarch64" {
			t.Errorf("busybox uname -m chrooted into a root without QEMU: %q, %v; want aarch64", out, err)
		}

		if err := binfmt.SetEnabled(dir, withF.Name, false); err != nil {
			t.Fatal(err)
		}
		if others := othersServe(t, dir, arm64); len(others) > 0 {
			t.Logf("not checking the disabled entry: %q also serve linux/arm64", others)
			return
		}
		if _, err := binfmt.Find(dir, arm64); err == nil || !strings.Contains(err.Error(), `"`+withF.Name+`" for ELF executables of linux/arm64 (EM_AARCH64, 64-bit little-endian) is disabled`) {
			t.Errorf("Find with the entry disabled: %v", err)
		}
	})

	t.Run("without F", func(t *testing.T) {
		register(t, dir, withoutF)
		if others := othersServe(t, dir, arm64, withoutF.Name); len(others) > 0 {
			t.Skipf("%q also serve linux/arm64", others)
		}
		_, err := binfmt.Find(dir, arm64)
		if err == nil || !strings.Contains(err.Error(), `"`+withoutF.Name+`" (interpreter `+rule.Interpreter) || !strings.Contains(err.Error(), "lacks the F (fix-binary) flag") {
			t.Errorf("Find = %v, want the missing F flag named", err)
		}
		// The host has the interpreter, a build's root does not.
		if out, err := run("", filepath.Join(root, "bin", "busybox"), "uname", "-m"); err != nil || out != "aarch64" {
			t.Errorf("busybox uname -m outside the chroot: %q, %v", out, err)
		}
		if out, err := run(root, "/bin/busybox", "uname", "-m"); err == nil {
			t.Errorf("busybox ran chrooted without the F flag (%q); the kernel looks for the interpreter inside the root", out)
		}
	})

	t.Run("unregistered", func(t *testing.T) {
		// Both entries are gone: their subtests' cleanups have run.
		for _, n := range []string{withF.Name, withoutF.Name} {
			if _, err := binfmt.ReadEntry(dir, n); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("entry %s after Unregister: %v, want not found", n, err)
			}
		}
		if err := binfmt.Unregister(dir, withF.Name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("unregistering %s again: %v, want fs.ErrNotExist", withF.Name, err)
		}
		if others := othersServe(t, dir, arm64); len(others) > 0 {
			t.Skipf("%q also serve linux/arm64", others)
		}
		if _, err := binfmt.Find(dir, arm64); err == nil || !strings.Contains(err.Error(), "no binfmt_misc handler under "+dir+" matches ELF executables of linux/arm64") {
			t.Errorf("Find with no handler: %v", err)
		}
		_, err := run("", filepath.Join(root, "bin", "busybox"), "true")
		if !errors.Is(err, syscall.ENOEXEC) {
			t.Errorf("running arm64 busybox with no handler: %v, want exec format error", err)
		}
	})
}

// Probe, with no binfmt_misc mount needed, tells the three cases apart on loong64 (which no
// other test emulates): no handler, a handler whose interpreter is not in this root (as one
// without F looks from a container), a handler with F.
func TestKernel_probe(t *testing.T) {
	dir := kernelDir(t)
	testenv.RequireQEMUUserStatic(t)
	loong := v1.Platform{OS: "linux", Architecture: "loong64"}
	if others := othersServe(t, dir, loong); len(others) > 0 {
		t.Skipf("%q serve linux/loong64 already", others)
	}
	work := t.TempDir()
	if err := binfmt.Probe(work, loong); err == nil || !strings.Contains(err.Error(), "the kernel runs no ELF executables of linux/loong64 (EM_LOONGARCH, 64-bit little-endian)") {
		t.Errorf("Probe with no handler: %v", err)
	}

	rule, err := binfmt.QEMUConf(binfmt.DebianConfDir, loong)
	if err != nil {
		t.Fatal(err)
	}
	missing := rule
	missing.Name = testName(t, "loongarch64")
	missing.Flags = "P"
	missing.Interpreter = "/nonexistent/loongarch64-binfmt-P"
	t.Run("interpreter not in this root", func(t *testing.T) {
		register(t, dir, missing)
		err := binfmt.Probe(work, loong)
		if err == nil || !strings.Contains(err.Error(), "its interpreter cannot be opened from this container's root (no such file or directory): it lacks the F (fix-binary) flag") {
			t.Errorf("Probe: %v", err)
		}
	})
	withF := rule
	withF.Name = testName(t, "loongarch64")
	t.Run("F", func(t *testing.T) {
		register(t, dir, withF)
		if err := binfmt.Probe(work, loong); err != nil {
			t.Errorf("Probe: %v", err)
		}
		// Check takes Find's answer where binfmt_misc is mounted, Probe's where not.
		if err := binfmt.Check(dir, work, loong); err != nil {
			t.Errorf("Check: %v", err)
		}
		if err := binfmt.Check(t.TempDir(), work, loong); err != nil {
			t.Errorf("Check without a binfmt_misc mount: %v", err)
		}
	})
	if err := binfmt.Check(t.TempDir(), work, loong); err == nil {
		t.Error("Check without a mount and with no handler: nil")
	}
	if err := binfmt.Check(dir, work, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}); err != nil {
		t.Errorf("Check(native): %v", err)
	}
}
