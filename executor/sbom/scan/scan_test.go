package scan

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScan_noNetworkNoPrograms catalogs a tree whose go.mod, Go binary,
// npm lock file and pip requirements would each make syft's default
// configuration reach out: `go list` in the module's directory (which
// downloads modules through GOPROXY), and license look-ups at the Go
// proxy, npm's and PyPI's registries. Every proxy variable and GOPROXY
// point at a listener of the test, and the only `go` on PATH records that
// it ran: the listener sees no connection and `go` does not run, while the
// same environment does catch an HTTP request and a `go` run made by the
// test itself (the sensors work).
func TestScan_noNetworkNoPrograms(t *testing.T) {
	// A Go binary with a module dependency, built before PATH changes.
	src, root := t.TempDir(), t.TempDir()
	writeFiles(t, src, map[string]string{
		"go.mod":  "module example.com/netprobe\n\ngo 1.24\n",
		"main.go": "package main\n\nfunc main() {}\n",
	})
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, "bin/netprobe"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	writeFiles(t, root, map[string]string{
		"src/go.mod":  "module example.com/svc\n\ngo 1.22\n\nrequire github.com/google/uuid v1.6.0\n",
		"src/main.go": "package main\n\nimport _ \"github.com/google/uuid\"\n\nfunc main() {}\n",
		"app/package-lock.json": `{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {"": {"name": "app", "version": "1.0.0"}, "node_modules/left-pad": {"version": "1.3.0"}}}`,
		"app/requirements.txt": "requests==2.31.0\n",
	})

	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	proxy := "http://" + ln.Addr().String()
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "GOPROXY"} {
		t.Setenv(k, proxy)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Setenv("GOFLAGS", "-mod=mod")
	fakeBin := t.TempDir()
	ran := filepath.Join(t.TempDir(), "go-ran")
	if err := os.WriteFile(filepath.Join(fakeBin, "go"), []byte("#!/bin/sh\necho \"$@\" >>"+ran+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fakeBin)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	doc, err := Scan(ctx, root, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Packages []struct {
			Name string `json:"name"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range d.Packages {
		names = append(names, p.Name)
	}
	for _, want := range []string{"github.com/google/uuid", "left-pad", "requests", "example.com/netprobe"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("%s is not in the SBOM (packages: %v)", want, names)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the scan made %d connections through the proxy", n)
	}
	if b, err := os.ReadFile(ran); err == nil {
		t.Errorf("the scan ran go: %s", b)
	}

	// The sensors: a request through the environment's proxy, and `go`.
	resp, err := http.Get("http://registry.npmjs.org/left-pad")
	if err == nil {
		resp.Body.Close()
	}
	if conns.Load() == 0 {
		t.Errorf("the test's proxy did not see the test's own request (err %v)", err)
	}
	_ = exec.Command("go", "list").Run()
	if _, err := os.Stat(ran); err != nil {
		t.Errorf("the fake go did not record the test's own run: %v", err)
	}
}

// TestScan_readCap: a sequential read past MaxFileSize fails, a read of
// the whole file at the cap succeeds.
func TestScan_readCap(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"app/requirements.txt": "capped==1.0\n" + strings.Repeat("# padding\n", 1000)})
	size := int64(len("capped==1.0\n") + 10*1000)
	for _, tc := range []struct {
		max  int64
		want bool
	}{{size, true}, {size - 1, false}} {
		doc, err := Scan(context.Background(), root, Config{MaxFileSize: tc.max})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(doc), `"capped"`); got != tc.want {
			t.Errorf("MaxFileSize %d for a %d-byte file: package listed %v, want %v", tc.max, size, got, tc.want)
		}
	}
}
