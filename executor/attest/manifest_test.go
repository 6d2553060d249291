package attest

import (
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var quiet = registry.Logger(log.New(io.Discard, "", 0))

func ociImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(img, types.OCIManifestSchema1)
}

func statements() []Statement {
	return []Statement{
		{PredicateType: PredicateSLSAProvenance, JSON: []byte(`{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1"}`)},
		{PredicateType: PredicateSPDX, JSON: []byte(`{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://spdx.dev/Document"}`)},
	}
}

// The index of two platforms with their attestation manifests, as
// BuildKit's testMultiPlatformProvenance reads it (testutil.ReadImages):
// each image with its platform, then an attestation manifest per image,
// of platform unknown/unknown, annotated attestation-manifest with the
// image's digest, whose layers are the statements (application/vnd.in-toto+json,
// in-toto.io/predicate-type) and whose config is an unknown/unknown image
// config with a diff_id per statement. Pushed to a registry and read
// back, every manifest is valid.
func TestIndex_buildkitLayout(t *testing.T) {
	amd, arm := ociImage(t, "amd64"), ociImage(t, "arm64")
	attAmd, err := Manifest(statements())
	if err != nil {
		t.Fatal(err)
	}
	attArm, err := Manifest(statements()[:1])
	if err != nil {
		t.Fatal(err)
	}
	idx, err := Index([]PlatformImage{
		{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Image: amd, Attestation: attAmd},
		{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Image: arm, Attestation: attArm},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(quiet))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	ref, err := name.ParseReference(u.Host + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	got, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	// ggcr's validate counts no diff_id for a layer that is not a file
	// system layer, which BuildKit's attestation config has: the images
	// are validated in full, the attestation manifests for their blobs.
	if err := validate.Index(got, validate.Fast); err != nil {
		t.Fatalf("the pushed index is not valid: %v", err)
	}
	im, err := got.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 4 {
		t.Fatalf("index %s with %d manifests; want an OCI index of 4", im.MediaType, len(im.Manifests))
	}
	for i, img := range []v1.Image{amd, arm} {
		d, _ := img.Digest()
		imgDesc, attDesc := im.Manifests[i], im.Manifests[2+i]
		if imgDesc.Digest != d || imgDesc.Platform == nil || imgDesc.Platform.OS != "linux" {
			t.Errorf("manifest %d: %+v; want the image %s with its platform", i, imgDesc, d)
		}
		if attDesc.Platform == nil || attDesc.Platform.OS != "unknown" || attDesc.Platform.Architecture != "unknown" {
			t.Errorf("attestation %d platform %+v; want unknown/unknown", i, attDesc.Platform)
		}
		if attDesc.Annotations[AnnotationReferenceType] != "attestation-manifest" || attDesc.Annotations[AnnotationReferenceDigest] != d.String() {
			t.Errorf("attestation %d annotations %v; want attestation-manifest about %s", i, attDesc.Annotations, d)
		}
		pushed, err := got.Image(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(pushed); err != nil {
			t.Errorf("image %d is not valid: %v", i, err)
		}
		if attDesc.MediaType != types.OCIManifestSchema1 {
			t.Errorf("attestation %d media type %s", i, attDesc.MediaType)
		}
	}
	att, err := got.Image(im.Manifests[2].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := att.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != nil || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 2 {
		t.Errorf("attestation manifest %+v; want no subject, an image config and 2 layers", m)
	}
	for i, l := range m.Layers {
		st := statements()[i]
		if l.MediaType != MediaTypeInToto || l.Annotations[AnnotationPredicateType] != st.PredicateType {
			t.Errorf("layer %d: %s %v", i, l.MediaType, l.Annotations)
		}
		layer, err := att.LayerByDigest(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := layer.Compressed()
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != string(st.JSON) {
			t.Errorf("layer %d holds %s; want the statement", i, b)
		}
	}
	rawCfg, err := att.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(rawCfg, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "unknown" || cfg.Architecture != "unknown" || len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[0].String() != m.Layers[0].Digest.String() {
		t.Errorf("attestation config %s", rawCfg)
	}
}

// The referrer form (BuildKit's oci-artifact=true): artifactType, the
// empty config and the image as subject; a registry with the referrers
// API lists it among the image's referrers.
func TestReferrer_listedByTheRegistry(t *testing.T) {
	img := ociImage(t, "amd64")
	d, _ := img.Digest()
	sz, _ := img.Size()
	ref, err := Referrer(statements(), v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: sz})
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(ref); err != nil {
		t.Fatalf("referrer manifest not valid: %v", err)
	}
	m, err := ref.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject == nil || m.Subject.Digest != d || m.Subject.Size != sz || m.Config.MediaType != "application/vnd.oci.empty.v1+json" || m.Config.Size != 2 {
		t.Errorf("referrer manifest %+v", m)
	}
	raw, _ := ref.RawManifest()
	var withType struct {
		ArtifactType string `json:"artifactType"`
	}
	_ = json.Unmarshal(raw, &withType)
	if withType.ArtifactType != ArtifactTypeAttestation {
		t.Errorf("artifactType %q", withType.ArtifactType)
	}

	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(true), quiet))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	repo, _ := name.NewRepository(u.Host + "/app")
	if err := remote.Write(repo.Digest(d.String()), img); err != nil {
		t.Fatal(err)
	}
	rd, _ := ref.Digest()
	if err := remote.Write(repo.Digest(rd.String()), ref, remote.WithReferrersTagFallback(false)); err != nil {
		t.Fatal(err)
	}
	refs, err := remote.Referrers(repo.Digest(d.String()))
	if err != nil {
		t.Fatal(err)
	}
	rim, err := refs.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	// ggcr's registry lists a referrer's config media type as its
	// artifactType (the manifest's own is checked above).
	if len(rim.Manifests) != 1 || rim.Manifests[0].Digest != rd {
		t.Errorf("referrers %+v; want the attestation manifest %s", rim.Manifests, rd)
	}
}

// BuildKit refuses attestations with Docker media types.
func TestIndex_refusesDockerManifests(t *testing.T) {
	img, _ := random.Image(10, 1)
	att, _ := Manifest(statements())
	if _, err := Index([]PlatformImage{{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Image: img, Attestation: att}}); err == nil {
		t.Errorf("an index of a Docker manifest with an attestation was made")
	}
}
