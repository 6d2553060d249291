package sbom

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/executor/sbom/sbomtest"
)

func marker(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "slipway-host-marker-" + hex.EncodeToString(b)
}

func dpkgStanza(name, version string) string {
	return fmt.Sprintf("Package: %s\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 1\nMaintainer: Nobody <nobody@example.org>\nArchitecture: amd64\nVersion: %s\nDescription: test package\n\n", name, version)
}

func npmLock(name string) string {
	return fmt.Sprintf(`{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {"": {"name": "app", "version": "1.0.0"}, "node_modules/%s": {"version": "6.6.6"}}}`, name)
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestGenerate_symlinksStayInTree: a tree whose package databases and lock
// files are symbolic links to host files (absolute, relative past the
// tree's root, and through a linked directory) gets an SBOM of what the
// links name inside the tree, as in a container, and nothing of the host
// files, whose packages carry a marker that must not appear.
func TestGenerate_symlinksStayInTree(t *testing.T) {
	mark := marker(t)
	host := t.TempDir() // outside the tree
	writeFiles(t, host, map[string]string{
		"dpkg/status":           dpkgStanza(mark+"-deb", "6.6.6"),
		"npm/package-lock.json": npmLock(mark + "-npm"),
		"apk/db/installed":      "P:" + mark + "-apk\nV:6.6.6\nA:x86_64\n\n",
		"go/go.mod":             "module example.com/" + mark + "\n\ngo 1.22\n\nrequire example.com/" + mark + "-dep v6.6.6\n",
		"pip/requirements.txt":  mark + "-pip==6.6.6\n",
	})

	root := t.TempDir()
	// Inside the tree, at the host paths, files with packages that may appear.
	inTree := filepath.Join(root, host)
	writeFiles(t, inTree, map[string]string{
		"dpkg/status":           dpkgStanza("in-tree-deb", "1.0"),
		"npm/package-lock.json": npmLock("in-tree-npm"),
		"apk/db/installed":      "P:in-tree-apk\nV:1.0-r0\nA:x86_64\n\n",
		"pip/requirements.txt":  "in-tree-pip==1.0\n",
	})
	up := strings.Repeat("../", 20)
	// A linked directory, absolute: /var/lib/dpkg -> HOST/dpkg.
	symlink(t, filepath.Join(host, "dpkg"), filepath.Join(root, "var/lib/dpkg"))
	// A linked file, relative, climbing past the root.
	symlink(t, up+strings.TrimPrefix(host, "/")+"/npm/package-lock.json", filepath.Join(root, "app/package-lock.json"))
	// A linked directory, relative, climbing past the root.
	symlink(t, "../../"+up+strings.TrimPrefix(host, "/")+"/apk/db", filepath.Join(root, "lib/apk/db"))
	// Links to host files with nothing at their in-tree target.
	symlink(t, filepath.Join(host, "go/go.mod"), filepath.Join(root, "src/go.mod"))
	symlink(t, up+strings.TrimPrefix(host, "/")+"/go", filepath.Join(root, "gosrc"))
	// A link to the host's pip file whose in-tree target exists.
	symlink(t, filepath.Join(host, "pip/requirements.txt"), filepath.Join(root, "srv/requirements.txt"))

	for _, format := range []string{FormatSPDXJSON, FormatCycloneDXJSON} {
		doc := run(t, root, Options{Format: format}).Document
		if i := bytes.Index(doc, []byte(mark)); i >= 0 {
			lo, hi := max(0, i-200), min(len(doc), i+200)
			t.Errorf("%s: the host's marker is in the SBOM: ...%s...", format, doc[lo:hi])
		}
		// The links were followed, inside the tree.
		for _, name := range []string{"in-tree-deb", "in-tree-npm", "in-tree-apk", "in-tree-pip"} {
			if !bytes.Contains(doc, []byte(`"`+name+`"`)) {
				t.Errorf("%s: %s, behind a link inside the tree, is not in the SBOM", format, name)
			}
		}
	}
}

// craftedDpkgStatus writes a dpkg status of n packages into a new tree.
func craftedDpkgStatus(t *testing.T, n int) string {
	t.Helper()
	root := t.TempDir()
	p := filepath.Join(root, "var/lib/dpkg/status")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		w.WriteString(dpkgStanza(fmt.Sprintf("crafted%d", i), fmt.Sprintf("1.0.%d", i)))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestGenerate_craftedDpkgStatusIsBounded: a dpkg status of 100,000
// packages (19 MB) takes syft 35 s, 1.2 GB of memory and a 98 MB document
// when nothing bounds it. With a memory limit the run is killed at it; with
// a smaller per-file cap the status is skipped; with a short timeout the
// run is killed at the timeout; with a small output cap a document of 5,000
// packages is refused. (With the default limits, 512 MiB, the run was
// killed after 52 s on a loaded 2-core machine: the child's GOMEMLIMIT of a
// quarter of the limit slows its growth.)
func TestGenerate_craftedDpkgStatusIsBounded(t *testing.T) {
	huge := craftedDpkgStatus(t, 100_000)
	large := craftedDpkgStatus(t, 5_000)
	bin := sbomtest.Binary(t)
	for _, tc := range []struct {
		name    string
		root    string
		opts    Options
		wantErr string // "" for success
		within  time.Duration
	}{
		{"memory limit", huge, Options{MaxMemory: 256 << 20}, "more than 256 MiB of memory", 2 * time.Minute},
		{"per-file cap", huge, Options{MaxFileSize: 1 << 20}, "", time.Minute},
		{"timeout", huge, Options{Timeout: 2 * time.Second}, "did not finish within 2s", 10 * time.Second},
		{"output cap", large, Options{MaxOutput: 1 << 20}, "larger than 1 MiB", time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Binary = bin
			start := time.Now()
			res, err := Run(context.Background(), tc.root, tc.opts)
			took := time.Since(start)
			t.Logf("took %v, error: %v", took.Round(time.Millisecond), err)
			if took > tc.within {
				t.Errorf("took %v, want under %v", took, tc.within)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d bytes, peak RSS %d MiB", len(res.Document), res.PeakRSS>>20)
			d := parseSPDX(t, res.Document)
			if n := len(ofType(spdxPackages(d), "deb")); n != 0 {
				t.Errorf("%d deb packages from a status over the per-file cap", n)
			}
		})
	}
}

// TestGenerate_exclude: paths given in Options.Exclude (a /proc of the
// container's own root, the executor's /slipway) are not cataloged.
func TestGenerate_exclude(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"app/requirements.txt":         "kept==1.0\n",
		"slipway/requirements.txt":     "excluded-slipway==1.0\n",
		"proc/1/root/requirements.txt": "excluded-proc==1.0\n",
		"proc-not/requirements.txt":    "kept-too==1.0\n",
	})
	doc := run(t, root, Options{Exclude: []string{"/slipway", "/proc"}}).Document
	for _, name := range []string{"kept", "kept-too"} {
		if !bytes.Contains(doc, []byte(`"`+name+`"`)) {
			t.Errorf("%s is missing", name)
		}
	}
	for _, name := range []string{"excluded-slipway", "excluded-proc"} {
		if bytes.Contains(doc, []byte(name)) {
			t.Errorf("%s, under an excluded path, is in the SBOM", name)
		}
	}
}

// TestRun_errors: what Run refuses, and that it says why.
func TestRun_errors(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, lockFiles)
	file := filepath.Join(root, "app/requirements.txt")
	for _, tc := range []struct {
		name    string
		root    string
		opts    Options
		wantErr string
	}{
		{"unknown format", root, Options{Format: "spdx-tag-value"}, `unknown SBOM format "spdx-tag-value"`},
		{"missing tree", filepath.Join(root, "nope"), Options{}, "no such file or directory"},
		{"tree is a file", file, Options{}, "is not a directory"},
		{"missing binary", root, Options{Binary: filepath.Join(root, "no-slipway-sbom")}, "starting"},
		{"memory limit", root, Options{MaxMemory: 32 << 20}, "more than 32 MiB of memory"},
		{"exclude everything", root, Options{Exclude: []string{"/"}}, "would exclude the whole tree"},
		{"missing temporary directory", root, Options{TempDir: filepath.Join(root, "no-tmp")}, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Binary == "" {
				tc.opts.Binary = sbomtest.Binary(t)
			}
			_, err := Run(context.Background(), tc.root, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

// TestGenerate_childEnvironment: the child sees none of the caller's
// environment (a credential in it stays out), no PATH to run programs from,
// and proxies pointing at a closed port.
func TestGenerate_childEnvironment(t *testing.T) {
	env := childEnv("/tmp/x", withDefaults(Options{}))
	t.Setenv("SLIPWAY_TEST_SECRET", "hunter2")
	for _, kv := range env {
		if strings.Contains(kv, "hunter2") {
			t.Errorf("the child's environment has %q", kv)
		}
	}
	want := map[string]bool{"PATH=/nonexistent": true, "HTTPS_PROXY=http://127.0.0.1:9": true, "GOPROXY=off": true, "HOME=/tmp/x": true}
	for _, kv := range env {
		delete(want, kv)
	}
	if len(want) > 0 {
		t.Errorf("the child's environment %q lacks %v", env, want)
	}
}

// TestExecutor_doesNotLinkSyft: the executor's binary imports this package
// but none of syft, which stays in slipway-sbom.
func TestExecutor_doesNotLinkSyft(t *testing.T) {
	for _, pkg := range []string{"./executor", "./executor/sbom"} {
		cmd := exec.Command("go", "list", "-deps", pkg)
		cmd.Dir = repoRoot(t)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/anchore/") || strings.HasPrefix(dep, "modernc.org/") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

// TestGenerate_specialFiles: FIFOs where the dpkg status and an npm lock
// file belong (a reader would block on them forever), symbolic-link loops,
// links to / and .. and to /proc/self/root: the run finishes at once and
// catalogs the tree's one real lock file.
func TestGenerate_specialFiles(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"app/requirements.txt": "real==1.0\n"})
	for _, p := range []string{"var/lib/dpkg/status", "srv/package-lock.json"} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(full, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	symlink(t, "b", filepath.Join(root, "loop/a"))
	symlink(t, "a", filepath.Join(root, "loop/b"))
	symlink(t, "/", filepath.Join(root, "host"))
	symlink(t, "..", filepath.Join(root, "app/up"))
	symlink(t, "/proc/self/root", filepath.Join(root, "procroot"))
	start := time.Now()
	d := parseSPDX(t, run(t, root, Options{Timeout: time.Minute}).Document)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("took %v", took)
	}
	if got := ofType(spdxPackages(d), "pypi"); len(got["pypi real"]) != 1 {
		t.Errorf("pypi packages %v, want real", got)
	}
}

// TestRun_withoutNetworkNamespace: where no network namespace can be made
// (here: clone flags the kernel refuses, EINVAL, as an unprivileged caller
// gets EPERM), the child runs without one and says so.
func TestRun_withoutNetworkNamespace(t *testing.T) {
	defer func(f uintptr) { isolationFlags = f }(isolationFlags)
	isolationFlags = syscall.CLONE_NEWNS | syscall.CLONE_FS // "both CLONE_NEWNS and CLONE_FS": EINVAL
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"app/requirements.txt": "fallback==1.0\n"})
	res := run(t, root, Options{})
	if res.NetworkIsolated {
		t.Errorf("NetworkIsolated is true")
	}
	if !bytes.Contains(res.Document, []byte(`"fallback"`)) {
		t.Errorf("the document lacks the package")
	}
}
