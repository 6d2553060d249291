package build

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/opencontainers/go-digest"
)

func digestOf(h v1.Hash) digest.Digest {
	return digest.NewDigestFromEncoded(digest.Algorithm(h.Algorithm), h.Hex)
}

// builtImage is a v1.Image made of a config and compressed layers.
type builtImage struct {
	rawConfig   []byte
	rawManifest []byte
	mediaType   types.MediaType
	layers      []v1.Layer
	byDigest    map[v1.Hash]v1.Layer
}

// newImage serialises cfg (Docker's own config type, so every field Docker
// writes survives, HEALTHCHECK's StartInterval among them) and a manifest for
// layers; base layers are kept untouched so a push can mount them from
// their repository. History entries
// without a time get the image's creation time, as BuildKit's exporter does.
func newImage(cfg dockerspec.DockerOCIImage, layers []v1.Layer, oci bool) (v1.Image, error) {
	for i := range cfg.History {
		if cfg.History[i].Created == nil {
			cfg.History[i].Created = cfg.Created
		}
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = cfg.RootFS.DiffIDs[:0]
	for _, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, fmt.Errorf("reading a layer's diff ID: %w", err)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digestOf(d))
	}
	rawConfig, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	manifestType, configType := types.DockerManifestSchema2, types.DockerConfigJSON
	if oci {
		manifestType, configType = types.OCIManifestSchema1, types.OCIConfigJSON
	}
	sum := sha256.Sum256(rawConfig)
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     manifestType,
		Config: v1.Descriptor{
			MediaType: configType,
			Size:      int64(len(rawConfig)),
			Digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
		},
	}
	img := &builtImage{rawConfig: rawConfig, mediaType: manifestType, byDigest: map[v1.Hash]v1.Layer{}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("reading a layer's digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("reading the size of layer %s: %w", d, err)
		}
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		if conv := convertLayerType(mt, oci); conv != mt {
			mt, l = conv, withMediaType(l, conv)
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: size, Digest: d})
		img.layers = append(img.layers, l)
		img.byDigest[d] = l
	}
	if img.rawManifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	return img, nil
}

// convertLayerType maps a layer media type between the Docker and OCI
// families (the bytes are the same).
func convertLayerType(mt types.MediaType, oci bool) types.MediaType {
	switch {
	case oci && mt == types.DockerLayer:
		return types.OCILayer
	case !oci && mt == types.OCILayer:
		return types.DockerLayer
	case oci && mt == types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	case !oci && mt == types.OCIUncompressedLayer:
		return types.DockerUncompressedLayer
	}
	return mt
}

// withMediaType returns l under media type mt (of the other family: the
// same bytes), still mountable from its repository when it was.
func withMediaType(l v1.Layer, mt types.MediaType) v1.Layer {
	if ml, ok := l.(*remote.MountableLayer); ok {
		return &remote.MountableLayer{Layer: &typedLayer{Layer: ml.Layer, mt: mt}, Reference: ml.Reference}
	}
	return &typedLayer{Layer: l, mt: mt}
}

// typedLayer is a layer under another media type.
type typedLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *typedLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

// builtImage implements v1.Image itself (rather than through partial's
// extenders) so that its layers are the values it was given (under the
// manifest's media type when that differs): remote layers stay
// *remote.MountableLayer, which lets a push mount them across repositories
// instead of uploading them.
var _ v1.Image = (*builtImage)(nil)

func (i *builtImage) RawConfigFile() ([]byte, error)      { return i.rawConfig, nil }
func (i *builtImage) MediaType() (types.MediaType, error) { return i.mediaType, nil }
func (i *builtImage) RawManifest() ([]byte, error)        { return i.rawManifest, nil }
func (i *builtImage) Manifest() (*v1.Manifest, error) {
	return v1.ParseManifest(bytes.NewReader(i.rawManifest))
}
func (i *builtImage) ConfigName() (v1.Hash, error)        { return partial.ConfigName(i) }
func (i *builtImage) Digest() (v1.Hash, error)            { return partial.Digest(i) }
func (i *builtImage) ConfigFile() (*v1.ConfigFile, error) { return partial.ConfigFile(i) }
func (i *builtImage) Size() (int64, error)                { return int64(len(i.rawManifest)), nil }
func (i *builtImage) Layers() ([]v1.Layer, error)         { return append([]v1.Layer(nil), i.layers...), nil }

// LayerByDigest returns a layer, or the config as a layer.
func (i *builtImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := i.byDigest[h]; ok {
		return l, nil
	}
	if cfgName, _ := i.ConfigName(); h == cfgName {
		return partial.ConfigLayer(i)
	}
	return nil, fmt.Errorf("layer %s not found in the image", h)
}

// LayerByDiffID returns the layer with the given uncompressed digest.
func (i *builtImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if d, err := l.DiffID(); err == nil && d == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("layer with diff ID %s not found in the image", h)
}
