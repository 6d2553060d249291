package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BuildKit's attestation layout (exporter/containerimage/writer.go,
// util/attestation).
const (
	// MediaTypeInToto is the media type of a layer holding one in-toto
	// statement (in-toto's PayloadType).
	MediaTypeInToto = "application/vnd.in-toto+json"
	// AnnotationPredicateType names a statement layer's predicate type.
	AnnotationPredicateType = "in-toto.io/predicate-type"
	// AnnotationReferenceType and AnnotationReferenceDigest mark an
	// attestation manifest in the index, and name the image it is about.
	AnnotationReferenceType   = "vnd.docker.reference.type"
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	// ReferenceTypeAttestation is AnnotationReferenceType's value.
	ReferenceTypeAttestation = "attestation-manifest"
	// ArtifactTypeAttestation is the artifactType of BuildKit's OCI
	// artifact form of an attestation manifest (oci-artifact=true).
	ArtifactTypeAttestation = "application/vnd.docker.attestation.manifest.v1+json"
	// PredicateSPDX and PredicateCycloneDX are the predicate types of an
	// SBOM statement.
	PredicateSPDX      = "https://spdx.dev/Document"
	PredicateCycloneDX = "https://cyclonedx.org/bom"
)

// Platform is an attestation manifest's platform in the index:
// unknown/unknown, so that no runtime picks it (BuildKit's intotoPlatform).
var Platform = v1.Platform{OS: "unknown", Architecture: "unknown"}

// Statement is one in-toto statement, as JSON, with its predicate type.
type Statement struct {
	PredicateType string
	JSON          []byte
}

// Manifest is the attestation manifest of statements as BuildKit's image
// exporter writes it by default (commitAttestationsManifest without
// oci-artifact): an OCI image manifest whose config is an image config of
// platform unknown/unknown with a diff_id per statement, and whose layers
// are the statements (media type MediaTypeInToto, annotated with their
// predicate type), in order. It names no subject: the index's descriptor
// of it does (IndexEntry).
func Manifest(statements []Statement) (v1.Image, error) {
	layers, err := statementLayers(statements)
	if err != nil {
		return nil, err
	}
	// BuildKit's attestationsConfig.
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: Platform.OS, Architecture: Platform.Architecture}}
	cfg.RootFS.Type = "layers"
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.desc.Digest)
	}
	rawCfg, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding the attestation manifest's config: %w", err)
	}
	return rawImage(ocispec.MediaTypeImageConfig, rawCfg, layers, "", nil)
}

// Referrer is the attestation manifest of statements in BuildKit's OCI
// artifact form (oci-artifact=true): artifactType ArtifactTypeAttestation,
// the empty config, the same layers as Manifest, and subject the image it
// is about, so that a registry with the OCI 1.1 referrers API lists it
// among the image's referrers.
func Referrer(statements []Statement, subject v1.Descriptor) (v1.Image, error) {
	layers, err := statementLayers(statements)
	if err != nil {
		return nil, err
	}
	sub := &ocispec.Descriptor{MediaType: string(subject.MediaType), Digest: digestOf(subject.Digest), Size: subject.Size}
	return rawImage(ocispec.DescriptorEmptyJSON.MediaType, ocispec.DescriptorEmptyJSON.Data, layers, ArtifactTypeAttestation, sub)
}

// IndexEntry is the index's addendum of the attestation manifest att
// about the image of digest img: platform unknown/unknown, annotated
// attestation-manifest and with the image's digest, as BuildKit's.
func IndexEntry(att v1.Image, img v1.Hash) mutate.IndexAddendum {
	p := Platform
	return mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
		MediaType: types.OCIManifestSchema1,
		Platform:  &p,
		Annotations: map[string]string{
			AnnotationReferenceType:   ReferenceTypeAttestation,
			AnnotationReferenceDigest: img.String(),
		},
	}}
}

// PlatformImage is an image of the index with its platform, and the
// attestation manifest about it (nil for none).
type PlatformImage struct {
	Platform    v1.Platform
	Image       v1.Image
	Attestation v1.Image
}

// Index is the OCI image index of images, each with its platform, then
// the attestation manifest of each that has one, in the order of images,
// as BuildKit's image exporter lays out a build with attestations. The
// images must be OCI manifests: BuildKit refuses attestations with Docker
// media types ("cannot export attestations with oci-mediatypes=false").
func Index(images []PlatformImage) (v1.ImageIndex, error) {
	if len(images) == 0 {
		return nil, errors.New("making an image index: no image")
	}
	var adds, atts []mutate.IndexAddendum
	for _, pi := range images {
		mt, err := pi.Image.MediaType()
		if err != nil {
			return nil, fmt.Errorf("making an image index: %w", err)
		}
		if mt != types.OCIManifestSchema1 {
			return nil, fmt.Errorf("making an image index with attestations: the image of %s is a %s, not an OCI manifest", pi.Platform, mt)
		}
		p := pi.Platform
		adds = append(adds, mutate.IndexAddendum{Add: pi.Image, Descriptor: v1.Descriptor{MediaType: mt, Platform: &p}})
		if pi.Attestation != nil {
			d, err := pi.Image.Digest()
			if err != nil {
				return nil, fmt.Errorf("making an image index: %w", err)
			}
			atts = append(atts, IndexEntry(pi.Attestation, d))
		}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx, append(adds, atts...)...), nil
}

// statementLayer is a statement as a layer: its bytes and descriptor.
type statementLayer struct {
	data []byte
	desc ocispec.Descriptor
}

func statementLayers(statements []Statement) ([]statementLayer, error) {
	if len(statements) == 0 {
		return nil, errors.New("an attestation manifest needs a statement")
	}
	out := make([]statementLayer, len(statements))
	for i, s := range statements {
		if s.PredicateType == "" {
			return nil, fmt.Errorf("statement %d has no predicate type", i+1)
		}
		d := digestOfBytes(s.JSON)
		out[i] = statementLayer{data: s.JSON, desc: ocispec.Descriptor{
			MediaType:   MediaTypeInToto,
			Digest:      d,
			Size:        int64(len(s.JSON)),
			Annotations: map[string]string{AnnotationPredicateType: s.PredicateType},
		}}
	}
	return out, nil
}

// rawImage is the image of the manifest of config (of media type cfgType)
// and layers, with artifactType and subject when given.
func rawImage(cfgType string, cfg []byte, layers []statementLayer, artifactType string, subject *ocispec.Descriptor) (v1.Image, error) {
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       ocispec.Descriptor{MediaType: cfgType, Digest: digestOfBytes(cfg), Size: int64(len(cfg))},
		Subject:      subject,
	}
	m.SchemaVersion = 2
	if cfgType == ocispec.DescriptorEmptyJSON.MediaType {
		m.Config = ocispec.DescriptorEmptyJSON
		m.Config.Data = nil
	}
	blobs := map[v1.Hash]blob{}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.desc)
		h, err := v1.NewHash(l.desc.Digest.String())
		if err != nil {
			return nil, err
		}
		blobs[h] = blob{data: l.data, mt: types.MediaType(l.desc.MediaType)}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding the attestation manifest: %w", err)
	}
	return partial.CompressedToImage(&core{manifest: raw, config: cfg, blobs: blobs})
}

// core is an image of bytes in memory, for partial.CompressedToImage.
type core struct {
	manifest, config []byte
	blobs            map[v1.Hash]blob
}

type blob struct {
	data []byte
	mt   types.MediaType
}

func (c *core) RawConfigFile() ([]byte, error) { return c.config, nil }
func (c *core) MediaType() (types.MediaType, error) {
	return types.OCIManifestSchema1, nil
}
func (c *core) RawManifest() ([]byte, error) { return c.manifest, nil }

func (c *core) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	b, ok := c.blobs[h]
	if !ok {
		return nil, fmt.Errorf("attestation manifest: no blob %s", h)
	}
	return &memLayer{h: h, blob: b}, nil
}

// memLayer is a statement's blob, stored as it is (no compression).
type memLayer struct {
	h v1.Hash
	blob
}

func (l *memLayer) Digest() (v1.Hash, error)            { return l.h, nil }
func (l *memLayer) Size() (int64, error)                { return int64(len(l.data)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.data)), nil
}

func digestOfBytes(b []byte) digest.Digest { return digest.FromBytes(b) }

func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }
