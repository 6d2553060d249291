package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/binfmt"
)

var qemuMu sync.Mutex

// RequireQEMUUserStatic makes sure Debian's qemu-user-static is installed
// (its emulators and /usr/lib/binfmt.d rules), running hack/deps.sh
// qemu-user-static when it is not.
func RequireQEMUUserStatic(t testing.TB) {
	t.Helper()
	qemuMu.Lock()
	defer qemuMu.Unlock()
	if _, err := os.Stat(filepath.Join(binfmt.DebianConfDir, "qemu-aarch64.conf")); err == nil {
		return
	}
	cmd := exec.Command(filepath.Join(repoRoot(), "hack", "deps.sh"), "qemu-user-static")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing Debian's qemu-user-static (hack/deps.sh qemu-user-static): %v\n%s", err, out)
	}
}

// RequireEmulation makes this machine's kernel run executables of arch
// (a GOARCH: arm64, arm, riscv64, ...) through QEMU for the rest of the
// test, as the chart's binfmt DaemonSet does on a node: it mounts
// binfmt_misc at binfmt.DefaultDir if needed and registers Debian's QEMU
// rule for arch with the F (fix-binary) flag under the name
// slipway-test-<random>-<qemu arch>, unregistered when the test ends. It
// registers nothing when arch is native. It returns the entry's name ("" when native). It skips the test when
// binfmt_misc cannot be mounted (not root), and installs Debian's
// qemu-user-static when it is missing.
//
// The kernel's table is the machine's: while the test runs, every process
// on the machine runs arch's executables through the handler.
func RequireEmulation(t testing.TB, arch string) string {
	t.Helper()
	p := v1.Platform{OS: "linux", Architecture: arch}
	if arch == "arm" {
		p.Variant = "v7"
	}
	if binfmt.Native(p) {
		return ""
	}
	if err := binfmt.Mount(binfmt.DefaultDir); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("binfmt_misc cannot be mounted here (needs root), so %s executables cannot be emulated: %v", arch, err)
		}
		t.Fatal(err)
	}
	RequireQEMUUserStatic(t)
	e, err := binfmt.QEMUConf(binfmt.DebianConfDir, p)
	if err != nil {
		t.Fatal(err)
	}
	qarch, err := binfmt.QEMUArch(p)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	e.Name = "slipway-test-" + hex.EncodeToString(b) + "-" + qarch
	if err := binfmt.Register(binfmt.DefaultDir, e); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := binfmt.Unregister(binfmt.DefaultDir, e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("unregistering the QEMU handler %s: %v", e.Name, err)
		}
	})
	return e.Name
}
