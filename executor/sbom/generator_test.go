package sbom

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/sbom/sbomtest"
)

// TestGenerator_startedAhead: a generator started before its tree exists
// (Start), given the tree a while later, writes the document Run writes for
// the same tree in one go (creation time and UUIDs aside), in both formats,
// and names the image Run names. The wait covers the license classifier's
// build, so the run after it takes less than a whole run.
func TestGenerator_startedAhead(t *testing.T) {
	for _, format := range []string{FormatSPDXJSON, FormatCycloneDXJSON} {
		t.Run(format, func(t *testing.T) {
			opts := Options{Format: format, Binary: sbomtest.Binary(t), TempDir: t.TempDir()}
			g, err := Start(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			// The tree is made after the start, as the executor unpacks
			// an image while the generator prepares.
			root := t.TempDir()
			writeFiles(t, root, lockFiles)
			time.Sleep(3 * time.Second)
			ahead, err := g.Run(context.Background(), root, "registry.example/app@sha256:"+strings.Repeat("ab", 32))
			if err != nil {
				t.Fatal(err)
			}
			opts.ImageName = "registry.example/app@sha256:" + strings.Repeat("ab", 32)
			whole := run(t, root, opts)
			t.Logf("started ahead: %v after the request; whole run: %v", ahead.Duration.Round(time.Millisecond), whole.Duration.Round(time.Millisecond))
			if diff := cmp.Diff(string(sbomtest.Normalize(t, whole.Document)), string(sbomtest.Normalize(t, ahead.Document))); diff != "" {
				t.Errorf("the document of a generator started ahead differs (-whole run +started ahead):\n%s", diff)
			}
			if err := Validate(ahead.Document, format, opts.ImageName); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if _, err := g.Run(context.Background(), root, "x"); err == nil {
				t.Errorf("a second Run succeeded")
			}
			if entries, _ := os.ReadDir(opts.TempDir); len(entries) != 0 {
				t.Errorf("the temporary directory holds %d entries after the run", len(entries))
			}
		})
	}
}

// TestGenerator_closeUnused: a generator never given a tree is killed by
// Close at once (while it builds its classifier, or waits), with its
// process group and temporary directory gone; its context ends it too.
func TestGenerator_closeUnused(t *testing.T) {
	tmp := t.TempDir()
	g, err := Start(context.Background(), Options{Binary: sbomtest.Binary(t), TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	pid := g.c.cmd.Process.Pid
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	g.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the child %d still runs after Close", pid)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("the temporary directory holds %d entries after Close", len(entries))
	}
	g.Close() // twice is fine

	ctx, cancel := context.WithCancel(context.Background())
	g, err = Start(ctx, Options{Binary: sbomtest.Binary(t), TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	cancel()
	root := t.TempDir()
	if _, err := g.Run(context.Background(), root, ""); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Run after the start's context ended: %v, want it canceled", err)
	}
}

// TestGenerator_limitsWhileWaiting: the memory limit holds from the start,
// while the child builds its classifier before any tree is given; Run then
// says so.
func TestGenerator_limitsWhileWaiting(t *testing.T) {
	g, err := Start(context.Background(), Options{Binary: sbomtest.Binary(t), TempDir: t.TempDir(), MaxMemory: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// The watch kills it (a zombie until Run reaps it).
	stat := "/proc/" + strconv.Itoa(g.c.cmd.Process.Pid) + "/stat"
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st, err := os.ReadFile(stat); err != nil || bytes.Contains(st, []byte(") Z ")) {
			break
		}
	}
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"app/requirements.txt": "a==1.0\n"})
	if _, err := g.Run(context.Background(), root, ""); err == nil || !strings.Contains(err.Error(), "more than 32 MiB of memory") {
		t.Errorf("Run: %v, want the memory limit", err)
	}
}

// TestValidate: what a document from elsewhere (the cache) must be to be
// used: a JSON document of the format that names the image.
func TestValidate(t *testing.T) {
	const name = "registry.example/app@sha256:0123"
	spdx := `{"spdxVersion":"SPDX-2.3","name":"` + name + `","packages":[]}`
	cdx := `{"bomFormat":"CycloneDX","metadata":{"component":{"name":"` + name + `"}}}`
	for _, tc := range []struct {
		name, doc, format, wantErr string
	}{
		{"spdx", spdx, FormatSPDXJSON, ""},
		{"cyclonedx", cdx, FormatCycloneDXJSON, ""},
		{"spdx as cyclonedx", spdx, FormatCycloneDXJSON, "not CycloneDX"},
		{"cyclonedx as spdx", cdx, FormatSPDXJSON, "not SPDX-2.3"},
		{"other image", strings.Replace(spdx, "0123", "4567", 1), FormatSPDXJSON, "names registry.example/app@sha256:4567"},
		{"other component", strings.Replace(cdx, "0123", "4567", 1), FormatCycloneDXJSON, "names registry.example/app@sha256:4567"},
		{"no JSON", "{", FormatSPDXJSON, "no JSON document"},
		{"trailing data", spdx + "{}", FormatSPDXJSON, "no JSON document"},
		{"unknown format", spdx, "spdx-tag-value", "unknown SBOM format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate([]byte(tc.doc), tc.format, name)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestGenerate_whereverTheTree: the same tree at two paths gives the same
// document (creation time and UUIDs aside), in both formats: where the
// executor unpacked an image, or left its build's tree, is no part of its
// SBOM (CycloneDX's component reference was a hash of it).
func TestGenerate_whereverTheTree(t *testing.T) {
	a, b := t.TempDir(), filepath.Join(t.TempDir(), "elsewhere", "rootfs")
	writeFiles(t, a, lockFiles)
	writeFiles(t, b, lockFiles)
	for _, format := range []string{FormatSPDXJSON, FormatCycloneDXJSON} {
		opts := Options{Format: format, ImageName: "registry.example/app@sha256:" + strings.Repeat("cd", 32)}
		da, db := run(t, a, opts).Document, run(t, b, opts).Document
		if diff := cmp.Diff(string(sbomtest.Normalize(t, da)), string(sbomtest.Normalize(t, db))); diff != "" {
			t.Errorf("%s: the document depends on where the tree is (-%s +%s):\n%s", format, a, b, diff)
		}
		if bytes.Contains(da, []byte(a)) || bytes.Contains(db, []byte(b)) {
			t.Errorf("%s: the document names the tree's path", format)
		}
	}
}

// TestFingerprint: the generator's fingerprint is the same for the same
// binary and options, and changes with the binary's bytes and with each
// option that changes a document.
func TestFingerprint(t *testing.T) {
	bin := sbomtest.Binary(t)
	fp := func(o Options) string {
		t.Helper()
		s, err := Fingerprint(o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := Options{Binary: bin}
	if fp(base) != fp(Options{Binary: bin, Format: FormatSPDXJSON}) {
		t.Errorf("the default format's fingerprint differs from spdx-json's")
	}
	other := filepath.Join(t.TempDir(), BinaryName)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{fp(base): "base"}
	for what, o := range map[string]Options{
		"another binary":   {Binary: other},
		"CycloneDX":        {Binary: bin, Format: FormatCycloneDXJSON},
		"an exclusion":     {Binary: bin, Exclude: []string{"/slipway"}},
		"a per-file limit": {Binary: bin, MaxFileSize: 1 << 20},
	} {
		s := fp(o)
		if prev, dup := seen[s]; dup {
			t.Errorf("%s has the fingerprint of %s: %s", what, prev, s)
		}
		seen[s] = what
	}
	if _, err := Fingerprint(Options{Binary: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Errorf("Fingerprint of a missing binary succeeded")
	}
}

// TestGenerator_yieldsTheCPU: the child, every thread of it, runs at nice
// value childNice (it prepares beside the build).
func TestGenerator_yieldsTheCPU(t *testing.T) {
	g, err := Start(context.Background(), Options{Binary: sbomtest.Binary(t), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	time.Sleep(300 * time.Millisecond) // its runtime's threads are up
	dir := "/proc/" + strconv.Itoa(g.c.cmd.Process.Pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of the child: %v, %v", tasks, err)
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			continue // ended
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		// Field 19 of stat, the nice value, is the 17th after the name.
		if nice := fields[16]; nice != strconv.Itoa(childNice) {
			t.Errorf("thread %s runs at nice %s, want %d", task.Name(), nice, childNice)
		}
	}
}
