package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// CacheDir is where hack/ scripts and tests keep what they make once:
// $SLIPWAY_CACHE, or ~/.cache/slipway.
func CacheDir() string {
	if d := os.Getenv("SLIPWAY_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "slipway-cache")
	}
	return filepath.Join(home, ".cache", "slipway")
}

// repoRoot is the checkout this file is in.
func repoRoot() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..")
}

var debsMu sync.Mutex

// ForeignDeb returns the directory into which Debian's package pkg for
// the Debian architecture arch (busybox-static, arm64) is unpacked, not
// installed: CacheDir()/debs/PKG_ARCH/root. The first call on a machine
// runs `hack/deps.sh --foreign pkg:arch`, which adds the architecture to
// dpkg, downloads the .deb with apt-get and unpacks it there.
func ForeignDeb(pkg, arch string) (string, error) {
	debsMu.Lock()
	defer debsMu.Unlock()
	dir := filepath.Join(CacheDir(), "debs", pkg+"_"+arch)
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return filepath.Join(dir, "root"), nil
	}
	cmd := exec.Command(filepath.Join(repoRoot(), "hack", "deps.sh"), "--foreign", pkg+":"+arch)
	cmd.Env = append(os.Environ(), "SLIPWAY_CACHE="+CacheDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("fetching Debian's %s:%s (hack/deps.sh --foreign %s:%s): %v\n%s", pkg, arch, pkg, arch, err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err != nil {
		return "", fmt.Errorf("hack/deps.sh --foreign %s:%s left no %s: %w", pkg, arch, dir, err)
	}
	return filepath.Join(dir, "root"), nil
}
