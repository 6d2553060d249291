package sbom

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	rpmdb "github.com/anchore/go-rpmdb/pkg"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/spdx/tools-golang/spdx/v2/v2_3"

	"github.com/slipway-dev/slipway/test/testenv"

	// go-rpmdb reads the SQLite rpmdb through this driver, as syft does.
	_ "modernc.org/sqlite"
)

// spdxID finds the SPDX id of the package of the purl type and name.
func spdxID(t *testing.T, d *v2_3.Document, typ, name string) string {
	t.Helper()
	for _, p := range d.Packages {
		if p.PackageName == name && strings.HasPrefix(purlOf(p), "pkg:"+typ+"/") {
			return string(p.PackageSPDXIdentifier)
		}
	}
	t.Fatalf("no %s package %s in the document", typ, name)
	return ""
}

// hasRelationship tells whether the document says "a TYPE b".
func hasRelationship(d *v2_3.Document, a, typ, b string) bool {
	for _, r := range d.Relationships {
		if string(r.RefA.ElementRefID) == a && r.Relationship == typ && string(r.RefB.ElementRefID) == b {
			return true
		}
	}
	return false
}

// TestGenerate_goBinary builds a Go program with one module dependency
// into a tree: the SBOM lists the program's module, the dependency at its
// version, the standard library at the toolchain's version, and says that
// the dependency is a dependency of the program.
func TestGenerate_goBinary(t *testing.T) {
	src := t.TempDir()
	goSum, err := os.ReadFile(filepath.Join(repoRoot(t), "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	var sum []string
	for _, l := range strings.Split(string(goSum), "\n") {
		if strings.HasPrefix(l, "github.com/google/go-cmp v0.7.0") {
			sum = append(sum, l)
		}
	}
	writeFiles(t, src, map[string]string{
		"go.mod":  "module example.com/sbomprobe\n\ngo 1.24\n\nrequire github.com/google/go-cmp v0.7.0\n",
		"go.sum":  strings.Join(sum, "\n") + "\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"github.com/google/go-cmp/cmp\"\n)\n\nvar version = \"dev\"\n\nfunc main() { fmt.Println(version, cmp.Diff(1, 2)) }\n",
	})
	root := t.TempDir()
	bin := filepath.Join(root, "usr", "local", "bin", "sbomprobe")
	// The main module's version as release builds set it: syft reads it
	// from the -X flag in the build information (which -trimpath would
	// leave out; the main module's version would then be UNKNOWN).
	build := exec.Command("go", "build", "-buildvcs=false", "-ldflags=-X main.version=v1.2.3", "-o", bin, ".")
	build.Dir = src
	// Offline: go-cmp v0.7.0 is in the module cache as this repository's dependency.
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}

	d := parseSPDX(t, run(t, root, Options{}).Document)
	want := map[string][]string{
		"golang example.com/sbomprobe":    {"v1.2.3"},
		"golang github.com/google/go-cmp": {"v0.7.0"},
		"golang stdlib":                   {strings.TrimSpace(string(goVersion))},
	}
	if diff := cmp.Diff(want, ofType(spdxPackages(d), "golang")); diff != "" {
		t.Errorf("Go packages (-want +got):\n%s", diff)
	}
	main := spdxID(t, d, "golang", "example.com/sbomprobe")
	dep := spdxID(t, d, "golang", "github.com/google/go-cmp")
	if !hasRelationship(d, dep, "DEPENDENCY_OF", main) {
		t.Errorf("no relationship %s DEPENDENCY_OF %s", dep, main)
	}
	for _, p := range d.Packages {
		if p.PackageName == "github.com/google/go-cmp" && purlOf(p) != "pkg:golang/github.com/google/go-cmp@v0.7.0" {
			t.Errorf("go-cmp's purl is %q", purlOf(p))
		}
	}
}

// lockFiles is a tree with an npm lock file, pip requirements, a poetry
// lock file and a go.mod, and what the SBOM must list of them.
var lockFiles = map[string]string{
	"app/package-lock.json": `{
  "name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {
    "": {"name": "app", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0", "ms": "2.1.3"}},
    "node_modules/left-pad": {"version": "1.3.0", "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz", "license": "WTFPL"},
    "node_modules/ms": {"version": "2.1.3", "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz", "license": "MIT"}
  }
}
`,
	"app/requirements.txt": "requests==2.31.0\nurllib3==2.0.7  # pinned\n",
	"svc/poetry.lock": `[[package]]
name = "flask"
version = "3.0.0"
description = "A simple framework for building complex web applications."
optional = false
python-versions = ">=3.8"
files = []

[[package]]
name = "click"
version = "8.1.7"
description = "Composable command line interface toolkit"
optional = false
python-versions = ">=3.7"
files = []

[metadata]
lock-version = "2.0"
python-versions = "^3.11"
content-hash = "0000000000000000000000000000000000000000000000000000000000000000"
`,
	"src/go.mod": "module example.com/svc\n\ngo 1.22\n\nrequire (\n\tgithub.com/google/uuid v1.6.0\n\tgolang.org/x/text v0.14.0 // indirect\n)\n",
}

var lockFilePackages = map[string][]string{
	"npm left-pad":                  {"1.3.0"},
	"npm ms":                        {"2.1.3"},
	"pypi requests":                 {"2.31.0"},
	"pypi urllib3":                  {"2.0.7"},
	"pypi flask":                    {"3.0.0"},
	"pypi click":                    {"8.1.7"},
	"golang github.com/google/uuid": {"v1.6.0"},
	"golang golang.org/x/text":      {"v0.14.0"},
}

// contains reports the entries of want that got lacks or lists with other
// versions.
func missing(want, got map[string][]string) []string {
	var out []string
	for k, v := range want {
		if !cmp.Equal(v, got[k]) {
			out = append(out, fmt.Sprintf("%s %v (got %v)", k, v, got[k]))
		}
	}
	sort.Strings(out)
	return out
}

func TestGenerate_lockFiles(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, lockFiles)
	res := run(t, root, Options{})
	if os.Geteuid() == 0 && !res.NetworkIsolated {
		t.Errorf("run as root, the child had no network namespace of its own")
	}
	d := parseSPDX(t, res.Document)
	if m := missing(lockFilePackages, spdxPackages(d)); m != nil {
		t.Errorf("SPDX lacks %s\nall: %v", strings.Join(m, "; "), spdxPackages(d))
	}
	bom := parseCycloneDX(t, run(t, root, Options{Format: FormatCycloneDXJSON}).Document)
	if m := missing(lockFilePackages, cdxPackages(bom)); m != nil {
		t.Errorf("CycloneDX lacks %s\nall: %v", strings.Join(m, "; "), cdxPackages(bom))
	}
}

// apkInstalled is an Alpine installed database of two packages.
const apkInstalled = `C:Q1Jr2aw6mUHA5Gwlf7Gn3iDqMBqsA=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407278
I:663552
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
t:1700000000
c:0000000000000000000000000000000000000000
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1000000000000000000000000000=

C:Q1kw2y8hWAwDqSlqQx1nD2Eq5X8qA=
P:busybox
V:1.36.1-r15
A:x86_64
S:513422
I:946176
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1700000000
c:0000000000000000000000000000000000000000
D:so:libc.musl-x86_64.so.1
F:bin
R:busybox

`

// apkPackages parses an apk installed database on its own.
func apkPackages(t *testing.T, db string) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	var name string
	s := bufio.NewScanner(strings.NewReader(db))
	for s.Scan() {
		l := s.Text()
		switch {
		case strings.HasPrefix(l, "P:"):
			name = l[2:]
		case strings.HasPrefix(l, "V:"):
			m["apk "+name] = append(m["apk "+name], l[2:])
		}
	}
	return m
}

// rpmPackages lists an rpmdb with go-rpmdb directly (the library syft's
// cataloger uses, without syft), as syft writes versions: [EPOCH:]VERSION-RELEASE.
func rpmPackages(t *testing.T, path string) map[string][]string {
	t.Helper()
	db, err := rpmdb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pkgs, err := db.ListPackages()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, p := range pkgs {
		v := p.Version + "-" + p.Release
		if p.Epoch != nil {
			v = fmt.Sprintf("%d:%s", *p.Epoch, v)
		}
		m["rpm "+p.Name] = append(m["rpm "+p.Name], v)
	}
	for _, v := range m {
		sort.Strings(v)
	}
	return m
}

// rpmFixture copies an rpmdb of go-rpmdb's test data (real databases of
// the distributions) to dst.
func rpmFixture(t *testing.T, name, dst string) {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/anchore/go-rpmdb").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/anchore/go-rpmdb: %v", err)
	}
	src, err := os.Open(filepath.Join(strings.TrimSpace(string(dir)), "pkg", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestGenerate_osPackageDatabases: Alpine's installed database, the
// SQLite rpmdb of Rocky Linux 9 and the Berkeley DB rpmdb of CentOS 7,
// each in a tree of its own.
func TestGenerate_osPackageDatabases(t *testing.T) {
	t.Run("apk", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{
			"lib/apk/db/installed": apkInstalled,
			// syft names the distribution in the purl from it (and without it writes none)
			"etc/os-release": "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
		})
		d := parseSPDX(t, run(t, root, Options{}).Document)
		if diff := cmp.Diff(apkPackages(t, apkInstalled), ofType(spdxPackages(d), "apk")); diff != "" {
			t.Errorf("apk packages (-database +SBOM):\n%s", diff)
		}
	})
	for _, tc := range []struct{ name, fixture, path string }{
		{"rpm sqlite", "rockylinux-9/rpmdb.sqlite", "var/lib/rpm/rpmdb.sqlite"},
		{"rpm bdb", "centos7-plain/Packages", "var/lib/rpm/Packages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dst := filepath.Join(root, filepath.FromSlash(tc.path))
			rpmFixture(t, tc.fixture, dst)
			want := rpmPackages(t, dst)
			if len(want) < 100 {
				t.Fatalf("the fixture lists %d packages", len(want))
			}
			// syft copies the rpmdb into the child's temporary directory,
			// which Run makes in TempDir and removes.
			tmp := t.TempDir()
			d := parseSPDX(t, run(t, root, Options{TempDir: tmp}).Document)
			if diff := cmp.Diff(want, ofType(spdxPackages(d), "rpm")); diff != "" {
				t.Errorf("rpm packages (-database +SBOM):\n%s", diff)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("%d entries left in TempDir, want none", len(left))
			}
		})
	}
}

// untarImage writes the flattened file system of img into dir (test
// images only: regular files, directories and symbolic links).
func untarImage(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+h.Name)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestGenerate_goImage: the tree of test/testenv's GoImage (busybox and
// this machine's Go toolchain, 140 MB, 3,700 files) lists every Go program
// of the toolchain (bin/go, pkg/tool/linux_amd64/*) with the standard
// library at the toolchain's version.
func TestGenerate_goImage(t *testing.T) {
	img, err := testenv.GoImage()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	untarImage(t, img, root)
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	tools, err := os.ReadDir(filepath.Join(root, testenv.GoImageGOROOT, "pkg/tool/linux_amd64"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cmd/go"}
	for _, e := range tools {
		want = append(want, "cmd/"+e.Name())
	}

	d := parseSPDX(t, run(t, root, Options{ImageName: "golang:host"}).Document)
	got := ofType(spdxPackages(d), "golang")
	for _, name := range want {
		if _, ok := got["golang "+name]; !ok {
			t.Errorf("the toolchain's %s is not in the SBOM", name)
		}
	}
	if v := got["golang stdlib"]; len(v) == 0 || v[0] != strings.TrimSpace(string(goVersion)) {
		t.Errorf("stdlib versions %v, want %s", v, goVersion)
	}
}
