package sbom

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	cyclonedx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-cmp/cmp"
	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx/v2/v2_3"
	"github.com/spdx/tools-golang/spdxlib"

	"github.com/slipway-dev/slipway/executor/sbom/sbomtest"
)

// repoRoot is the checkout this file is in.
func repoRoot(t testing.TB) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..")
}

// run generates the tree's SBOM with the test's binary and logs its cost.
func run(t *testing.T, root string, opts Options) *Result {
	t.Helper()
	opts.Binary = sbomtest.Binary(t)
	res, err := Run(context.Background(), root, opts)
	if err != nil {
		t.Fatal(err)
	}
	format := opts.Format
	if format == "" {
		format = FormatSPDXJSON
	}
	t.Logf("%s of %s: %d bytes in %v, peak RSS %d MiB, own network namespace: %v",
		format, root, len(res.Document), res.Duration.Round(time.Millisecond), res.PeakRSS>>20, res.NetworkIsolated)
	return res
}

// parseSPDX reads doc with the SPDX project's Go parser as an SPDX 2.3
// document and validates it with its spdxlib (every relationship's
// elements exist).
func parseSPDX(t *testing.T, doc []byte) *v2_3.Document {
	t.Helper()
	var d v2_3.Document
	if err := spdxjson.ReadInto(bytes.NewReader(doc), &d); err != nil {
		t.Fatalf("parsing the SPDX document: %v", err)
	}
	if d.SPDXVersion != "SPDX-2.3" {
		t.Fatalf("spdxVersion %q, want SPDX-2.3", d.SPDXVersion)
	}
	if err := spdxlib.ValidateDocument(&d); err != nil {
		t.Fatalf("the SPDX document does not validate: %v", err)
	}
	return &d
}

// parseCycloneDX reads doc with the CycloneDX project's Go decoder.
func parseCycloneDX(t *testing.T, doc []byte) *cyclonedx.BOM {
	t.Helper()
	var bom cyclonedx.BOM
	if err := cyclonedx.NewBOMDecoder(bytes.NewReader(doc), cyclonedx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("decoding the CycloneDX document: %v", err)
	}
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion < cyclonedx.SpecVersion1_5 {
		t.Fatalf("bomFormat %q, specVersion %v: want CycloneDX 1.5 or later", bom.BOMFormat, bom.SpecVersion)
	}
	return &bom
}

// purlOf is a package's purl, "" without one.
func purlOf(p *v2_3.Package) string {
	for _, r := range p.PackageExternalReferences {
		if r.RefType == "purl" {
			return r.Locator
		}
	}
	return ""
}

// spdxPackages maps "purl-type name" to the versions the document lists
// for it, sorted.
func spdxPackages(d *v2_3.Document) map[string][]string {
	m := map[string][]string{}
	for _, p := range d.Packages {
		purl := purlOf(p)
		typ, _, ok := strings.Cut(strings.TrimPrefix(purl, "pkg:"), "/")
		if !ok {
			continue
		}
		k := typ + " " + p.PackageName
		m[k] = append(m[k], p.PackageVersion)
	}
	for _, v := range m {
		sort.Strings(v)
	}
	return m
}

// cdxPackages is spdxPackages for a CycloneDX document.
func cdxPackages(bom *cyclonedx.BOM) map[string][]string {
	m := map[string][]string{}
	if bom.Components == nil {
		return m
	}
	for _, c := range *bom.Components {
		typ, _, ok := strings.Cut(strings.TrimPrefix(c.PackageURL, "pkg:"), "/")
		if !ok {
			continue
		}
		k := typ + " " + c.Name
		m[k] = append(m[k], c.Version)
	}
	for _, v := range m {
		sort.Strings(v)
	}
	return m
}

// ofType keeps the entries of m of one purl type.
func ofType(m map[string][]string, typ string) map[string][]string {
	out := map[string][]string{}
	for k, v := range m {
		if strings.HasPrefix(k, typ+" ") {
			out[k] = v
		}
	}
	return out
}

// writeFiles writes files (slash paths relative to root) into root.
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

// debianTarball is the debootstrap Debian base of the bigbase benchmark
// (hack/baseimage --debian-tarball), made here the same way when the
// cache does not have it yet.
func debianTarball(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("SLIPWAY_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "slipway")
	}
	path := filepath.Join(cache, "bench", "debian-bookworm-minbase.tar.gz")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("%s is missing and debootstrap is not installed to make it (hack/deps.sh installs it)", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), "debootstrap-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	t.Logf("debootstrap --variant=minbase bookworm (a few minutes, once)")
	if out, err := exec.Command("debootstrap", "--variant=minbase", "bookworm", root).CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	tmp := path + fmt.Sprintf(".tmp%d", os.Getpid())
	sh := `tar -C "$1" --numeric-owner --sort=name --xattrs --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf - . | gzip -1 >"$2"`
	if out, err := exec.Command("sh", "-c", sh, "sh", root, tmp).CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// debianTree unpacks the Debian base into a temporary directory.
func debianTree(t *testing.T) string {
	t.Helper()
	tarball := debianTarball(t)
	root := t.TempDir()
	if out, err := exec.Command("tar", "-C", root, "--numeric-owner", "-xzf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarball, err, out)
	}
	return root
}

// dpkgInstalled parses a dpkg status file on its own: each stanza's
// Package and Version where Status ends in "installed".
func dpkgInstalled(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string][]string{}
	var name, version, status string
	flush := func() {
		if name != "" && strings.HasSuffix(status, " installed") {
			want["deb "+name] = append(want["deb "+name], version)
		}
		name, version, status = "", "", ""
	}
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			name = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		case strings.HasPrefix(line, "Status: "):
			status = strings.TrimPrefix(line, "Status: ")
		}
	}
	flush()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return want
}

func TestGenerate_debianBase(t *testing.T) {
	root := debianTree(t)
	want := dpkgInstalled(t, filepath.Join(root, "var/lib/dpkg/status"))
	if len(want) < 50 {
		t.Fatalf("the Debian base's dpkg status lists %d installed packages; a minbase has about 90", len(want))
	}

	res := run(t, root, Options{ImageName: "registry.example/debian:bookworm"})
	d := parseSPDX(t, res.Document)
	if d.DocumentName != "registry.example/debian:bookworm" {
		t.Errorf("document name %q, want the image's name", d.DocumentName)
	}
	if diff := cmp.Diff(want, ofType(spdxPackages(d), "deb")); diff != "" {
		t.Errorf("SPDX deb packages (-dpkg status +SBOM):\n%s", diff)
	}
	// Each Debian package's purl names the distribution and version.
	for _, p := range d.Packages {
		purl := purlOf(p)
		if !strings.HasPrefix(purl, "pkg:deb/") {
			continue
		}
		if u, err := url.PathUnescape(purl); err != nil || !strings.HasPrefix(u, "pkg:deb/debian/"+p.PackageName+"@"+p.PackageVersion+"?") {
			t.Errorf("package %s %s has purl %q, want pkg:deb/debian/%s@%s?...", p.PackageName, p.PackageVersion, purl, p.PackageName, p.PackageVersion)
		}
	}

	res = run(t, root, Options{Format: FormatCycloneDXJSON, ImageName: "registry.example/debian:bookworm"})
	bom := parseCycloneDX(t, res.Document)
	if diff := cmp.Diff(want, ofType(cdxPackages(bom), "deb")); diff != "" {
		t.Errorf("CycloneDX deb packages (-dpkg status +SBOM):\n%s", diff)
	}
	if bom.Metadata == nil || bom.Metadata.Component == nil || bom.Metadata.Component.Name != "registry.example/debian:bookworm" {
		t.Errorf("CycloneDX metadata component %+v, want the image's name", bom.Metadata)
	}
}
