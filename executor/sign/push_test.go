package sign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore/pkg/signature"
)

// The unit tests of the layout run against ggcr's in-memory registry and
// check it field by field; cosign_test.go has the real cosign CLI verify
// what this package pushes to Debian's docker-registry.

func memRegistry(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// pushRandom pushes a random image to host/repo and returns its digest.
func pushRandom(t *testing.T, host, repo string) name.Digest {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(host+"/"+repo+":latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.Context().Digest(h.String())
}

func testSigner(t *testing.T) Signer {
	t.Helper()
	s, err := FromPrivateKey(mustECDSA(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cosignVerifier loads the public key as cosign verify --key does
// (signature.LoadVerifier with SHA-256).
func cosignVerifier(t *testing.T, s Signer) signature.Verifier {
	t.Helper()
	v, err := signature.LoadVerifier(s.PublicKey(), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readTagImage reads the image under tag and checks that its config lists
// a diff ID per layer, each the layer's digest (the layers are not
// compressed), as cosign's images have. (ggcr's validate.Image does not
// apply: it counts only layers of tar media types.)
func readTagImage(t *testing.T, tag name.Tag) (v1.Image, *v1.Manifest) {
	t.Helper()
	img, err := remote.Image(tag)
	if err != nil {
		t.Fatalf("reading %s: %v", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var digests []v1.Hash
	for _, l := range m.Layers {
		digests = append(digests, l.Digest)
	}
	if diff := cmp.Diff(digests, cf.RootFS.DiffIDs); diff != "" {
		t.Errorf("%s: config diff IDs are not the layer digests (-layers +diffIDs):\n%s", tag, diff)
	}
	return img, m
}

func layerBytes(t *testing.T, img v1.Image, d v1.Hash) []byte {
	t.Helper()
	l, err := img.LayerByDigest(d)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPushSignature_layout(t *testing.T) {
	host := memRegistry(t)
	img := pushRandom(t, host, "team/app")
	s := testSigner(t)

	got, err := PushSignature(context.Background(), img, s)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v1.NewHash(img.DigestStr())
	tag, err := SignatureTag(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := host + "/team/app:sha256-" + h.Hex + ".sig"; tag.String() != want {
		t.Errorf("signature tag %s, want %s", tag, want)
	}
	sigImg, m := readTagImage(t, tag)
	if d, _ := sigImg.Digest(); d != got {
		t.Errorf("PushSignature returned %s, the tag holds %s", got, d)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("manifest %s with config %s, want cosign's OCI manifest and config", m.MediaType, m.Config.MediaType)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	l := m.Layers[0]
	if l.MediaType != SimpleSigningMediaType {
		t.Errorf("layer media type %s, want %s", l.MediaType, SimpleSigningMediaType)
	}
	if len(l.Annotations) != 1 {
		t.Errorf("layer annotations %v, want only %s", l.Annotations, SignatureAnnotation)
	}
	payload := layerBytes(t, sigImg, l.Digest)
	// cosign's simple-signing payload: the repository as docker-reference
	// (cosign sign's default identity), the digest, cosign's type.
	var p map[string]any
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"critical": map[string]any{
			"identity": map[string]any{"docker-reference": host + "/team/app"},
			"image":    map[string]any{"docker-manifest-digest": h.String()},
			"type":     "cosign container image signature",
		},
		"optional": nil,
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
	sig, err := base64.StdEncoding.DecodeString(l.Annotations[SignatureAnnotation])
	if err != nil {
		t.Fatal(err)
	}
	if err := cosignVerifier(t, s).VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)); err != nil {
		t.Errorf("signature does not verify over the payload: %v", err)
	}
}

func TestPushSignature_appendsAndDedupes(t *testing.T) {
	host := memRegistry(t)
	img := pushRandom(t, host, "app")
	a, b := testSigner(t), testSigner(t)
	ctx := context.Background()
	tag, _ := SignatureTag(img)

	first, err := PushSignature(ctx, img, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PushSignature(ctx, img, b); err != nil {
		t.Fatal(err)
	}
	sigImg, m := readTagImage(t, tag)
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers after two keys signed, want 2", len(m.Layers))
	}
	// The first layer is still A's signature, the second B's.
	for i, s := range []Signer{a, b} {
		sig, _ := base64.StdEncoding.DecodeString(m.Layers[i].Annotations[SignatureAnnotation])
		payload := layerBytes(t, sigImg, m.Layers[i].Digest)
		if err := cosignVerifier(t, s).VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)); err != nil {
			t.Errorf("layer %d does not verify with key %d: %v", i, i, err)
		}
	}
	two, _ := sigImg.Digest()
	if two == first {
		t.Error("the second signature left the .sig manifest as it was")
	}

	// A signs again: its signature is there already (ECDSA signatures
	// differ each time, but the payload is the same and the old one
	// verifies), so nothing is added and nothing is written.
	again, err := PushSignature(ctx, img, a)
	if err != nil {
		t.Fatal(err)
	}
	if again != two {
		t.Errorf("signing again returned %s, want the unchanged %s", again, two)
	}
	if _, m := readTagImage(t, tag); len(m.Layers) != 2 {
		t.Errorf("%d layers after A signed again, want 2", len(m.Layers))
	}
}

func TestPushSignature_tagReplacedAfterWrite(t *testing.T) {
	host := memRegistry(t)
	img := pushRandom(t, host, "app")
	s := testSigner(t)
	tag, _ := SignatureTag(img)

	// Another writer replaces the .sig tag right after our first write with
	// an image that has its own signature layer only.
	foreign := static.NewLayer([]byte(`{"other":"writer"}`), SimpleSigningMediaType)
	other, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: foreign, Annotations: map[string]string{SignatureAnnotation: "b3RoZXI="}})
	if err != nil {
		t.Fatal(err)
	}
	var attempts []int
	testHookAfterWrite = func(attempt int) {
		attempts = append(attempts, attempt)
		if attempt == 1 {
			if err := remote.Write(tag, other); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { testHookAfterWrite = nil })

	got, err := PushSignature(context.Background(), img, s)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{1, 2}, attempts); diff != "" {
		t.Errorf("write attempts (-want +got):\n%s", diff)
	}
	sigImg, m := readTagImage(t, tag)
	if d, _ := sigImg.Digest(); d != got {
		t.Errorf("returned %s, the tag holds %s", got, d)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want the other writer's and ours", len(m.Layers))
	}
	if fd, _ := foreign.Digest(); m.Layers[0].Digest != fd {
		t.Errorf("the other writer's layer is gone")
	}

	// A writer that replaces it after every write: an error, not a
	// signature silently lost.
	img2 := pushRandom(t, host, "app2")
	tag2, _ := SignatureTag(img2)
	testHookAfterWrite = func(int) {
		if err := remote.Write(tag2, other); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := PushSignature(context.Background(), img2, s); err == nil || !strings.Contains(err.Error(), "replaced by another writer") {
		t.Errorf("error %v, want one saying the tag was replaced", err)
	}
}

// statement returns a minimal in-toto v1 statement about img.
func statement(img name.Digest, predicateType string, predicate any) []byte {
	h, _ := v1.NewHash(img.DigestStr())
	b, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": img.Repository.Name(), "digest": map[string]string{"sha256": h.Hex}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	if err != nil {
		panic(err)
	}
	return b
}

func TestPushAttestations_layout(t *testing.T) {
	host := memRegistry(t)
	img := pushRandom(t, host, "app")
	s := testSigner(t)
	statements := [][]byte{
		statement(img, "https://slsa.dev/provenance/v1", map[string]any{"buildDefinition": map[string]any{"buildType": "https://example.com/t"}}),
		statement(img, "https://spdx.dev/Document", map[string]any{"spdxVersion": "SPDX-2.3"}),
	}
	got, err := PushAttestations(context.Background(), img, statements, s)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v1.NewHash(img.DigestStr())
	tag, _ := AttestationTag(img)
	if want := host + "/app:sha256-" + h.Hex + ".att"; tag.String() != want {
		t.Errorf("attestation tag %s, want %s", tag, want)
	}
	attImg, m := readTagImage(t, tag)
	if d, _ := attImg.Digest(); d != got {
		t.Errorf("PushAttestations returned %s, the tag holds %s", got, d)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want one per statement", len(m.Layers))
	}
	v := cosignVerifier(t, s)
	for i, l := range m.Layers {
		if l.MediaType != DSSEMediaType {
			t.Errorf("layer %d media type %s, want %s", i, l.MediaType, DSSEMediaType)
		}
		var st struct {
			PredicateType string `json:"predicateType"`
		}
		_ = json.Unmarshal(statements[i], &st)
		wantAnn := map[string]string{PredicateTypeAnnotation: st.PredicateType, SignatureAnnotation: ""}
		if diff := cmp.Diff(wantAnn, l.Annotations); diff != "" {
			t.Errorf("layer %d annotations (-want +got):\n%s", i, diff)
		}
		var env dsse.Envelope
		if err := json.Unmarshal(layerBytes(t, attImg, l.Digest), &env); err != nil {
			t.Fatal(err)
		}
		if env.PayloadType != InTotoPayloadType {
			t.Errorf("payloadType %q", env.PayloadType)
		}
		payload, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(payload, statements[i]) {
			t.Errorf("layer %d payload is not statement %d", i, i)
		}
		if len(env.Signatures) != 1 {
			t.Fatalf("%d signatures in the envelope, want 1", len(env.Signatures))
		}
		sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
		// DSSE signs PAE(payloadType, payload), not the payload.
		pae := dsse.PAE(env.PayloadType, payload)
		if err := v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(pae)); err != nil {
			t.Errorf("layer %d: envelope signature does not verify over PAE: %v", i, err)
		}
	}

	// Attesting again appends, as cosign attest does without --replace.
	if _, err := PushAttestations(context.Background(), img, statements[:1], s); err != nil {
		t.Fatal(err)
	}
	if _, m := readTagImage(t, tag); len(m.Layers) != 3 {
		t.Errorf("%d layers after a second attestation, want 3", len(m.Layers))
	}
}

func TestPushAttestations_refusesBadStatements(t *testing.T) {
	host := memRegistry(t)
	img := pushRandom(t, host, "app")
	other := pushRandom(t, host, "other")
	s := testSigner(t)
	good := statement(img, "https://slsa.dev/provenance/v1", map[string]any{})
	for _, tc := range []struct {
		name       string
		statements [][]byte
		want       string
	}{
		{"none", nil, "no statements"},
		{"another image's", [][]byte{good, statement(other, "https://slsa.dev/provenance/v1", map[string]any{})}, "statement 2: in-toto statement (predicateType https://slsa.dev/provenance/v1) has no subject with the image's digest"},
		{"not JSON", [][]byte{[]byte("{")}, "statement 1: not an in-toto statement"},
		{"not a statement", [][]byte{[]byte(`{"_type":"https://example.com/x","predicateType":"p"}`)}, `_type "https://example.com/x"`},
		{"no predicate type", [][]byte{bytes.Replace(good, []byte(`"predicateType":"https://slsa.dev/provenance/v1"`), []byte(`"predicateType":""`), 1)}, "without a predicateType"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PushAttestations(context.Background(), img, tc.statements, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			// Nothing was pushed: not even the good statement before the bad.
			tag, _ := AttestationTag(img)
			_, err = remote.Head(tag)
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
				t.Errorf("%s: %v, want 404: nothing pushed", tag, err)
			}
		})
	}
}

func TestPush_zeroSigner(t *testing.T) {
	host := memRegistry(t)
	img := pushRandom(t, host, "app")
	if _, err := PushSignature(context.Background(), img, Signer{}); err == nil {
		t.Error("PushSignature with a zero Signer succeeded")
	}
	if _, err := PushAttestations(context.Background(), img, [][]byte{statement(img, "p", nil)}, Signer{}); err == nil {
		t.Error("PushAttestations with a zero Signer succeeded")
	}
}
