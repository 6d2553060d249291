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

// CosignCLI is one real cosign CLI.
type CosignCLI struct {
	Version string // "v3.1.3"
	Path    string
}

// cosignMajors are the major versions of cosign that tests verify with,
// newest last; hack/tools/cosign/<major>/go.mod pins each.
var cosignMajors = []string{"v2", "v3"}

var (
	cosignMu    sync.Mutex
	cosignBuilt = map[string]CosignCLI{}
)

// Cosigns returns the real cosign CLIs tests verify with, one of each major
// version (v2, v3), oldest first: each built from the version of its Go
// module pinned in hack/tools/cosign/<major>/go.mod by
// hack/tools/cosign/build.sh (CGO_ENABLED=0, -trimpath, cosign's release
// ldflags) and cached as CacheDir()/bin/cosign-<version>. The first call on
// a machine builds them, which takes several minutes each; later ones find
// them there. Nothing is downloaded but Go modules.
func Cosigns(t testing.TB) []CosignCLI {
	t.Helper()
	var clis []CosignCLI
	for _, major := range cosignMajors {
		clis = append(clis, cosignOf(t, major))
	}
	return clis
}

// Cosign returns the path of the newest pinned cosign CLI (v3); see Cosigns.
func Cosign(t testing.TB) string {
	t.Helper()
	return cosignOf(t, cosignMajors[len(cosignMajors)-1]).Path
}

func cosignOf(t testing.TB, major string) CosignCLI {
	t.Helper()
	cosignMu.Lock()
	defer cosignMu.Unlock()
	if cli, ok := cosignBuilt[major]; ok {
		return cli
	}
	start := time.Now()
	var out, errb bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(repoRoot(), "hack", "tools", "cosign", "build.sh"), major)
	cmd.Env = append(os.Environ(), "SLIPWAY_CACHE="+CacheDir())
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("building cosign %s: hack/tools/cosign/build.sh %s: %v\n%s", major, major, err, tail(errb.Bytes()))
	}
	if errb.Len() > 0 {
		// It built: say so, and how long it took.
		t.Logf("%s(took %s)", errb.String(), time.Since(start).Round(time.Second))
	}
	path := strings.TrimSpace(out.String())
	cli := CosignCLI{Version: strings.TrimPrefix(filepath.Base(path), "cosign-"), Path: path}
	cosignBuilt[major] = cli
	return cli
}

// CosignCommand returns a command running the cosign CLI at path with args,
// in an environment of its own: HOME and the working directory a temporary
// directory of t (no TUF root, cosign config or Docker credentials of the
// machine's user reach it), DOCKER_CONFIG as given (Registry.DockerConfig) or
// an empty one, and no COSIGN_* or SIGSTORE_* variables of the caller.
func CosignCommand(t testing.TB, path, dockerConfig string, args ...string) *exec.Cmd {
	t.Helper()
	home := t.TempDir()
	if dockerConfig == "" {
		dockerConfig = filepath.Join(home, ".docker")
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = home
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"DOCKER_CONFIG=" + dockerConfig,
	}
	return cmd
}

// CosignKeyPair makes a key pair with the real `cosign generate-key-pair`
// of the newest pinned cosign, its private key encrypted with password
// (given in COSIGN_PASSWORD, as cosign reads it), and returns cosign.key and
// cosign.pub: the key format under test is the one cosign writes.
func CosignKeyPair(t testing.TB, password string) (priv, pub []byte) {
	t.Helper()
	return CosignKeyPairWith(t, Cosign(t), password)
}

// CosignKeyPairWith is CosignKeyPair with the cosign CLI at path.
func CosignKeyPairWith(t testing.TB, path, password string) (priv, pub []byte) {
	t.Helper()
	cmd := CosignCommand(t, path, "", "generate-key-pair")
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

// String is "cosign v3.1.3".
func (c CosignCLI) String() string { return fmt.Sprintf("cosign %s", c.Version) }
