package imagesign

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/executor/sign"
)

// The unit tests push BuildKit-layout indexes to go-containerregistry's in-memory registry and
// read back what Run pushed in cosign's layout; controllers/signing_test.go has the real cosign
// verify what the manager signs.

func newSigner(t *testing.T) sign.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.FromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newRepo(t *testing.T) name.Repository {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/team/app")
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// inToto is an in-toto v1 statement of predicateType about the digests.
func inToto(predicateType string, digests ...v1.Hash) []byte {
	var subjects []map[string]any
	for _, d := range digests {
		subjects = append(subjects, map[string]any{"name": "pkg:docker/team/app@v1", "digest": map[string]string{d.Algorithm: d.Hex}})
	}
	b, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v1", "predicateType": predicateType,
		"subject": subjects, "predicate": map[string]any{"buildDefinition": map[string]any{"buildType": "test"}}})
	return b
}

// attestationManifest is an OCI image manifest of the statements as in-toto layers.
func attestationManifest(t *testing.T, statements ...[]byte) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, st := range statements {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(st, MediaTypeInToto)})
		if err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// pushIndex pushes an index of img (linux/amd64) and, when att is not nil, the attestation
// manifest att about about (BuildKit's annotations), and returns its digest.
func pushIndex(t *testing.T, repo name.Repository, img, att v1.Image, about v1.Hash) v1.Hash {
	t.Helper()
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	if att != nil {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1,
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": about.String()}}})
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(repo.Digest(d.String()), idx); err != nil {
		t.Fatal(err)
	}
	return d
}

func ociImage(t *testing.T) (v1.Image, v1.Hash) {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return img, d
}

// signedStatements are the statements of the DSSE envelopes under subject's .att tag.
func signedStatements(t *testing.T, repo name.Repository, subject v1.Hash) []map[string]any {
	t.Helper()
	tag, _ := sign.AttestationTag(repo.Digest(subject.String()))
	img, err := remote.Image(tag)
	if err != nil {
		t.Fatalf("reading %s: %v", tag, err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		var env struct{ Payload string }
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		p, _ := base64.StdEncoding.DecodeString(env.Payload)
		var st map[string]any
		if err := json.Unmarshal(p, &st); err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

func digestsOf(st map[string]any) []string {
	var out []string
	for _, s := range st["subject"].([]any) {
		out = append(out, "sha256:"+s.(map[string]any)["digest"].(map[string]any)["sha256"].(string))
	}
	return out
}

// A statement that names other digests besides its image (an executor pod the build took over
// could write one, to have the manager sign an attestation of another image) is signed about
// its image and the index only: the other subjects are dropped, the rest of it is kept. The
// image's and the index's .att hold it; a second Run of the same job pushes nothing more.
func TestJob_Run_restrictsSubjects(t *testing.T) {
	repo := newRepo(t)
	img, d := ociImage(t)
	victim := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("f", 64)}
	att := attestationManifest(t, inToto("https://slsa.dev/provenance/v1", d, victim), inToto("https://spdx.dev/Document", d))
	index := pushIndex(t, repo, img, att, d)
	ad, _ := att.Digest()

	job := NewJob(Request{Repository: repo.String(), Digest: index.String(), Signer: newSigner(t)})
	res, err := job.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.SBOM || len(res.Attestations) != 2 || res.Attestations[0].Subject != d.String() || res.Attestations[0].Manifest != ad.String() ||
		res.Attestations[0].Platform != "linux/amd64" || res.Attestations[1].Subject != index.String() || res.Signature == "" {
		t.Fatalf("result %+v", res)
	}
	for _, subject := range []v1.Hash{d, index} {
		sts := signedStatements(t, repo, subject)
		if len(sts) != 2 {
			t.Fatalf("%s.att holds %d statements, want 2", subject, len(sts))
		}
		for _, st := range sts {
			if got := digestsOf(st); !slices.Equal(got, []string{d.String(), index.String()}) {
				t.Errorf("%s.att: a statement about %v, want the image and the index only", subject, got)
			}
			if st["predicate"] == nil || st["_type"] != "https://in-toto.io/Statement/v1" {
				t.Errorf("%s.att: the statement lost its fields: %v", subject, st)
			}
		}
	}
	victimTag, _ := sign.AttestationTag(repo.Digest(victim.String()))
	if _, err := remote.Head(victimTag); err == nil {
		t.Errorf("%s was written", victimTag)
	}

	// Run again (a retry after a later step failed): nothing is appended twice.
	if _, err := job.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(signedStatements(t, repo, index)); n != 2 {
		t.Errorf("after a second run the index's .att holds %d statements, want 2", n)
	}
}

// An image under the tags (no attestations: --provenance=none) gets its signature alone.
func TestJob_Run_image(t *testing.T) {
	repo := newRepo(t)
	img, d := ociImage(t)
	if err := remote.Write(repo.Digest(d.String()), img); err != nil {
		t.Fatal(err)
	}
	res, err := NewJob(Request{Repository: repo.String(), Digest: d.String(), Signer: newSigner(t)}).Run(context.Background())
	if err != nil || res.Signature == "" || len(res.Attestations) != 0 || res.SBOM {
		t.Fatalf("Run = %+v, %v; want a signature alone", res, err)
	}
	sigTag, _ := sign.SignatureTag(repo.Digest(d.String()))
	if desc, err := remote.Head(sigTag); err != nil || desc.Digest.String() != res.Signature {
		t.Errorf("%s: %v %v, want %s", sigTag, desc, err, res.Signature)
	}
}

// What cannot be signed as it is fails with an *InvalidError (not retried), before anything
// is pushed.
func TestJob_Run_invalid(t *testing.T) {
	repo := newRepo(t)
	img, d := ociImage(t)
	other := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("e", 64)}
	big := bytes.Repeat([]byte(" "), MaxStatement+1)
	copy(big, inToto("x", d))

	for _, tc := range []struct {
		name  string
		att   v1.Image
		about v1.Hash
		want  string
	}{
		{"about an image the index does not hold", attestationManifest(t, inToto("x", d)), other, "which the index does not hold"},
		{"a statement about another image", attestationManifest(t, inToto("x", other)), d, "no subject names the image"},
		{"not an in-toto statement", attestationManifest(t, []byte(`{"_type":"other","predicateType":"x","subject":[]}`)), d, "not an in-toto statement"},
		{"no predicate type", attestationManifest(t, []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[]}`)), d, "no predicateType"},
		{"a statement too large", attestationManifest(t, big), d, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			index := pushIndex(t, repo, img, tc.att, tc.about)
			_, err := NewJob(Request{Repository: repo.String(), Digest: index.String(), Signer: newSigner(t)}).Run(context.Background())
			if _, ok := errors.AsType[*InvalidError](err); !ok || !strings.Contains(err.Error(), tc.want) || Retryable(err) {
				t.Fatalf("Run: %v; want an *InvalidError saying %q", err, tc.want)
			}
			sigTag, _ := sign.SignatureTag(repo.Digest(index.String()))
			if _, err := remote.Head(sigTag); err == nil {
				t.Errorf("%s was pushed", sigTag)
			}
		})
	}
}
