package main

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/sbom"
	"github.com/slipway-dev/slipway/executor/sbom/sbomtest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// withGenerator makes the SBOM generator, for the test, a list of the
// regular files of the tree it is given (their paths in the tree), as a
// JSON document of the format asked for, which names the image as the
// real one does (sbom.Validate accepts it); the trees it saw are recorded.
// Its fingerprint names it and the format.
func withGenerator(t *testing.T) *[]string {
	t.Helper()
	var mu sync.Mutex
	var roots []string
	oldStart, oldFingerprint := startSBOM, sbomFingerprint
	startSBOM = func(ctx context.Context, opts sbom.Options) (sbomGenerator, error) {
		return &fakeGenerator{format: opts.Format, seen: func(root string) {
			mu.Lock()
			roots = append(roots, root)
			mu.Unlock()
		}}, nil
	}
	sbomFingerprint = func(opts sbom.Options) (string, error) { return "fake-generator " + opts.Format, nil }
	t.Cleanup(func() { startSBOM, sbomFingerprint = oldStart, oldFingerprint })
	return &roots
}

// fakeGenerator is withGenerator's generator.
type fakeGenerator struct {
	format string
	seen   func(root string)
}

func (g *fakeGenerator) Run(ctx context.Context, root, imageName string) (*sbom.Result, error) {
	g.seen(root)
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, "/"+rel)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	doc := map[string]any{"format": g.format, "name": imageName, "files": files}
	if g.format == sbom.FormatCycloneDXJSON {
		doc["bomFormat"] = "CycloneDX"
		doc["metadata"] = map[string]any{"component": map[string]any{"name": imageName}}
	} else {
		doc["spdxVersion"] = "SPDX-2.3"
	}
	b, err := json.Marshal(doc)
	return &sbom.Result{Document: b}, err
}

func (g *fakeGenerator) Close() {}

// --sbom: the generator reads the image's whole file tree (the base's
// files and the build's, a file the build deleted gone); its document is a
// second statement of the image's attestation manifest after the
// provenance, predicate type SPDX's, or CycloneDX's with
// --sbom-format=cyclonedx, as BuildKit puts its SBOM beside the
// provenance, and names the image by its digest. The tree is the builder's
// final stage when its last step ran there (chroot isolation); a stage
// left partial (a COPY onto its base's layers, not unpacked) has the
// image's layers unpacked in the work directory instead, removed after.
func TestExecute_sbomAttached(t *testing.T) {
	env := newCorpusEnv(t)
	roots := withGenerator(t)
	for _, tc := range []struct {
		format, predicate string
		dockerfile        string
		tree              string // where the generator's tree is, in the work directory
	}{
		{"spdx", attest.PredicateSPDX, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN rm /bin/true\n", "/work/stages/"},
		{"cyclonedx", attest.PredicateCycloneDX, "ARG BASE\nFROM $BASE AS b\nRUN rm /bin/true\nFROM b\nCOPY a.txt /a.txt\n", "/work/sbom-"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			ctxDir := writeDockerfile(t, tc.dockerfile)
			dest := env.reg.Ref("app/sbom:" + tc.format)
			b := runExecutor(t, "--context=dir://"+ctxDir, "--insecure-registry="+env.reg.Host(), "--build-arg=BASE="+env.base,
				"--destination="+dest, "--sbom=true", "--sbom-format="+tc.format)
			if b.exit != 0 {
				t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
			}
			p := readPushed(t, remoteIndex(t, dest))
			img := p.images[0].Digest
			if got := p.predicates[img]; len(got) != 2 || got[0] != attest.PredicateSLSAProvenance || got[1] != tc.predicate {
				t.Fatalf("attestation predicates %v; want the provenance then %s", got, tc.predicate)
			}
			var st struct {
				Subject   []struct{ Digest map[string]string }
				Predicate struct {
					Format string
					Name   string
					Files  []string
				}
			}
			if err := json.Unmarshal(p.statements[img][1], &st); err != nil {
				t.Fatal(err)
			}
			if st.Subject[0].Digest["sha256"] != img.Hex || st.Predicate.Format != tc.format+"-json" || !strings.HasSuffix(st.Predicate.Name, "app/sbom@"+img.String()) {
				t.Errorf("SBOM statement: subject %+v, format %q, name %q; want the name app/sbom@%s", st.Subject, st.Predicate.Format, st.Predicate.Name, img)
			}
			files := st.Predicate.Files
			if !slices.Contains(files, "/a.txt") || !slices.Contains(files, "/bin/busybox") || slices.Contains(files, "/bin/true") {
				t.Errorf("the SBOM's tree has %v; want the base's and the build's files, without the deleted /bin/true", files)
			}
			if want := strings.Join(b.res.Attestations[0].PredicateTypes, ","); want != attest.PredicateSLSAProvenance+","+tc.predicate {
				t.Errorf("result predicate types %s", want)
			}
			last := (*roots)[len(*roots)-1]
			// runExecutor's --work-dir is a directory "work".
			if !strings.Contains(last, tc.tree) {
				t.Errorf("the generator read %s; want a tree under %s", last, tc.tree)
			}
			if _, err := os.Stat(last); err == nil && tc.tree == "/work/sbom-" {
				t.Errorf("the SBOM's tree %s is left behind", last)
			}
		})
	}
}

// The real generator (executor/sbom, slipway-sbom on PATH as beside the
// executor in its image): the SPDX statement of an image holding a dpkg
// database lists its package with its version; with --sign-key the SBOM is
// also a cosign attestation that `cosign verify-attestation --type
// spdxjson` accepts, beside the provenance's.
func TestExecute_sbomOfDpkgPackages(t *testing.T) {
	env := newCorpusEnv(t)
	t.Setenv("PATH", filepath.Dir(sbomtest.Binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY status /var/lib/dpkg/status\n")
	status := "Package: hello\nStatus: install ok installed\nPriority: optional\nSection: devel\nInstalled-Size: 100\n" +
		"Maintainer: Test <test@example.invalid>\nArchitecture: amd64\nVersion: 2.10-3\nDescription: example package\n hello world\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	priv, pub := testenv.CosignKeyPair(t, "pw")
	keyDir := t.TempDir()
	keyPath, pubPath := filepath.Join(keyDir, "cosign.key"), filepath.Join(keyDir, "cosign.pub")
	os.WriteFile(keyPath, priv, 0o600)
	os.WriteFile(pubPath, pub, 0o600)
	t.Setenv("COSIGN_PASSWORD", "pw")

	dest := env.reg.Ref("app/sbom-dpkg:v1")
	b := runExecutor(t, "--context=dir://"+ctxDir, "--insecure-registry="+env.reg.Host(), "--build-arg=BASE="+env.base,
		"--destination="+dest, "--sbom=true", "--sign-key="+keyPath)
	if b.exit != 0 {
		t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
	}
	p := readPushed(t, remoteIndex(t, dest))
	img := p.images[0].Digest
	if got := p.predicates[img]; len(got) != 2 || got[1] != attest.PredicateSPDX {
		t.Fatalf("predicates %v; want the provenance and SPDX", got)
	}
	var st struct {
		Predicate struct {
			SPDXVersion string `json:"spdxVersion"`
			Packages    []struct {
				Name        string `json:"name"`
				VersionInfo string `json:"versionInfo"`
			} `json:"packages"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(p.statements[img][1], &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, pk := range st.Predicate.Packages {
		found = found || (pk.Name == "hello" && pk.VersionInfo == "2.10-3")
	}
	if st.Predicate.SPDXVersion != "SPDX-2.3" || !found {
		t.Errorf("SPDX %q with packages %+v; want hello 2.10-3", st.Predicate.SPDXVersion, st.Predicate.Packages)
	}
	for _, ref := range []string{dest, env.reg.Ref("app/sbom-dpkg") + "@" + img.String()} {
		out, err := cosignCLI(t, testenv.Cosign(t), env.reg, append(append([]string{"verify-attestation", "--key", pubPath, "--type", "spdxjson"}, cosignNoTlog...), ref)...)
		if err != nil {
			t.Errorf("cosign verify-attestation --type spdxjson %s: %v\n%s", ref, err, out)
		}
	}
}
