// Package sbomtest builds the slipway-sbom program for tests of packages
// that call executor/sbom.Generate.
package sbomtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	once sync.Once
	path string
	err  error
)

// Binary builds cmd/slipway-sbom once per test process, as the executor
// image's build does (CGO_ENABLED=0, -trimpath), and returns its path: pass
// it as sbom.Options.Binary, or put its directory on PATH. The first build
// on a machine compiles syft (minutes); later ones only link (seconds).
// The binary is left in a temporary directory for the process's lifetime.
func Binary(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		_, self, _, _ := runtime.Caller(0)
		repo := filepath.Join(filepath.Dir(self), "..", "..", "..")
		dir, e := os.MkdirTemp("", "slipway-sbom-bin-")
		if e != nil {
			err = e
			return
		}
		p := filepath.Join(dir, "slipway-sbom")
		cmd := exec.Command("go", "build", "-trimpath", "-o", p, "./cmd/slipway-sbom")
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("go build ./cmd/slipway-sbom: %v\n%s", e, out)
			return
		}
		path = p
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Normalize returns an SPDX or CycloneDX JSON document without what its
// generator makes anew on every run — SPDX's creation time and document
// namespace (a random UUID), CycloneDX's serial number (a random UUID) and
// timestamp — with its keys sorted: two runs of the same tree give the same
// bytes.
func Normalize(t testing.TB, doc []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatalf("normalizing the SBOM: %v", err)
	}
	delete(m, "documentNamespace")
	delete(m, "serialNumber")
	for _, k := range []string{"creationInfo", "metadata"} {
		if sub, ok := m[k].(map[string]any); ok {
			delete(sub, "created")
			delete(sub, "timestamp")
		}
	}
	out, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}
