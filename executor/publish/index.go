package publish

import (
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PlatformImage is one platform's image of a multi-platform build.
type PlatformImage struct {
	Platform v1.Platform
	Image    v1.Image
}

// Index is the image index of images, one entry per image in that order,
// each descriptor with its platform, as BuildKit's image exporter writes
// a multi-platform build: a Docker manifest list when the images are
// Docker manifests (the executor's --oci-media-types=false), an OCI image
// index when they are OCI manifests. The images must all be of one kind.
func Index(images []PlatformImage) (v1.ImageIndex, error) {
	if len(images) == 0 {
		return nil, errors.New("making an image index: no image")
	}
	var kind types.MediaType
	adds := make([]mutate.IndexAddendum, len(images))
	for i, pi := range images {
		mt, err := pi.Image.MediaType()
		if err != nil {
			return nil, fmt.Errorf("making an image index: %w", err)
		}
		switch {
		case i == 0:
			kind = mt
		case mt != kind:
			return nil, fmt.Errorf("making an image index: the image of %s is a %s, that of %s a %s", images[0].Platform, kind, pi.Platform, mt)
		}
		p := pi.Platform
		adds[i] = mutate.IndexAddendum{Add: pi.Image, Descriptor: v1.Descriptor{MediaType: mt, Platform: &p}}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	switch kind {
	case types.DockerManifestSchema2:
		idx = mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	case types.OCIManifestSchema1:
	default:
		return nil, fmt.Errorf("making an image index: images of media type %s", kind)
	}
	return mutate.AppendManifests(idx, adds...), nil
}
