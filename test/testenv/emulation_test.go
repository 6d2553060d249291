package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/binfmt"
)

// Inside the subtest, Debian's arm64 busybox runs chrooted into a root
// with no QEMU in it (a build's root); after it, the handler is gone.
func TestRequireEmulation(t *testing.T) {
	debRoot, err := ForeignDeb("busybox-static", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(filepath.Join(debRoot, "bin", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	var name string
	t.Run("inner", func(t *testing.T) {
		name = RequireEmulation(t, "arm64")
		if !strings.HasPrefix(name, "slipway-test-") || !strings.HasSuffix(name, "-aarch64") {
			t.Errorf("entry name %q, want slipway-test-*-aarch64", name)
		}
		e, err := binfmt.ReadEntry(binfmt.DefaultDir, name)
		if err != nil || !e.Enabled || !strings.Contains(e.Flags, "F") {
			t.Errorf("entry %+v (%v), want enabled with F", e, err)
		}
		if _, err := binfmt.Find(binfmt.DefaultDir, v1.Platform{OS: "linux", Architecture: "arm64"}); err != nil {
			t.Error(err)
		}
		cmd := exec.Command("/bin/busybox", "uname", "-m")
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "aarch64" {
			t.Errorf("chrooted arm64 busybox uname -m: %q, %v", out, err)
		}
	})
	if _, err := os.Stat(filepath.Join(binfmt.DefaultDir, name)); !os.IsNotExist(err) {
		t.Errorf("%s still registered after the test (%v)", name, err)
	}
	if name := RequireEmulation(t, runtime.GOARCH); name != "" {
		t.Errorf("RequireEmulation(%s) on %[1]s registered %s", runtime.GOARCH, name)
	}
}
