package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	cosignOnce sync.Once
	cosignPath string
	cosignErr  error
)

// Cosign returns the path of the real cosign CLI, built from the version of
// its Go module pinned in hack/tools/cosign/go.mod by
// hack/tools/cosign/build.sh (CGO_ENABLED=0, -trimpath, cosign's release
// ldflags) and cached as CacheDir()/bin/cosign-<version>. The first call on a
// machine builds it, which takes several minutes; later ones find it there.
// Nothing is downloaded but Go modules.
func Cosign(t testing.TB) string {
	t.Helper()
	cosignOnce.Do(func() {
		start := time.Now()
		var out, errb bytes.Buffer
		cmd := exec.Command("bash", filepath.Join(repoRoot(), "hack", "tools", "cosign", "build.sh"))
		cmd.Env = append(os.Environ(), "SLIPWAY_CACHE="+CacheDir())
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			cosignErr = fmt.Errorf("hack/tools/cosign/build.sh: %v\n%s", err, tail(errb.Bytes()))
			return
		}
		cosignPath = strings.TrimSpace(out.String())
		if errb.Len() > 0 {
			// It built: say so, and how long it took.
			t.Logf("%s(took %s)", errb.String(), time.Since(start).Round(time.Second))
		}
	})
	if cosignErr != nil {
		t.Fatalf("building cosign: %v", cosignErr)
	}
	return cosignPath
}

// CosignCommand returns a command running the real cosign with args, in an
// environment of its own: HOME a temporary directory of t (no TUF root,
// cosign config or Docker credentials of the machine's user reach it),
// DOCKER_CONFIG as given (Registry.DockerConfig) or empty, and no COSIGN_* or
// SIGSTORE_* variables of the caller.
func CosignCommand(t testing.TB, dockerConfig string, args ...string) *exec.Cmd {
	t.Helper()
	bin := Cosign(t)
	home := t.TempDir()
	if dockerConfig == "" {
		dockerConfig = filepath.Join(home, ".docker")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = home
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"DOCKER_CONFIG=" + dockerConfig,
		"TUF_ROOT=" + filepath.Join(home, ".sigstore", "root"),
	}
	return cmd
}

// CosignKeyPair makes a key pair with the real `cosign generate-key-pair`,
// its private key encrypted with password (given in COSIGN_PASSWORD, as
// cosign reads it), and returns cosign.key and cosign.pub: the key format
// under test is the one cosign writes.
func CosignKeyPair(t testing.TB, password string) (priv, pub []byte) {
	t.Helper()
	cmd := CosignCommand(t, "", "generate-key-pair")
	cmd.Env = append(cmd.Env, "COSIGN_PASSWORD="+password)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	priv, err := os.ReadFile(filepath.Join(cmd.Dir, "cosign.key"))
	if err != nil {
		t.Fatalf("cosign generate-key-pair wrote no key: %v", err)
	}
	pub, err = os.ReadFile(filepath.Join(cmd.Dir, "cosign.pub"))
	if err != nil {
		t.Fatalf("cosign generate-key-pair wrote no public key: %v", err)
	}
	return priv, pub
}
