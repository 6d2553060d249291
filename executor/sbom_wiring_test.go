package main

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/sbom/sbomtest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// withGenerator makes the SBOM generator, for the test, a list of the
// regular files of the tree it is given (their paths in the tree), as a
// JSON document of the format asked for; the trees it saw are recorded.
func withGenerator(t *testing.T) *[]string {
	t.Helper()
	var roots []string
	old := generateSBOM
	generateSBOM = func(ctx context.Context, root, format, imageName string) ([]byte, error) {
		roots = append(roots, root)
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
		return json.Marshal(map[string]any{"format": format, "name": imageName, "files": files})
	}
	t.Cleanup(func() { generateSBOM = old })
	return &roots
}

// --sbom: the generator reads the image's whole file tree (the base's
// files and the build's, a file the build deleted gone), unpacked in the
// work directory and removed after; its document is a second statement of
// the image's attestation manifest after the provenance, predicate type
// SPDX's, or CycloneDX's with --sbom-format=cyclonedx, as BuildKit puts
// its SBOM beside the provenance. The COPY stage reuses the base's layers
// from the cache-less build: the builder's own tree would be partial.
func TestExecute_sbomAttached(t *testing.T) {
	env := newCorpusEnv(t)
	roots := withGenerator(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN rm /bin/true\n")
	for _, tc := range []struct{ format, predicate string }{
		{"spdx", attest.PredicateSPDX},
		{"cyclonedx", attest.PredicateCycloneDX},
	} {
		t.Run(tc.format, func(t *testing.T) {
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
			if st.Subject[0].Digest["sha256"] != img.Hex || st.Predicate.Format != tc.format+"-json" || !strings.Contains(st.Predicate.Name, "app/sbom:"+tc.format) {
				t.Errorf("SBOM statement: subject %+v, format %q, name %q", st.Subject, st.Predicate.Format, st.Predicate.Name)
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
			if !strings.Contains(last, "/work/sbom-") {
				t.Errorf("the tree was unpacked at %s, outside the work directory", last)
			}
			if _, err := os.Stat(last); err == nil {
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
