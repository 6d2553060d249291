package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Saved cache mounts (issue 17): the directory of a RUN --mount=type=cache
// is kept between builds next to the entries, under a tag derived from its
// key, "sha256-HEX.mount" (HEX the SHA-256 of the key), as a plain OCI image
// of up to MaxMountLayers layers applied in order: the first holds the
// whole directory as some build saved it, each later one what a later build
// changed (with whiteouts for what it removed). Its manifest carries the key,
// when it was saved and the directory's size then (sizeAnnotation). A
// manifest is written only once every layer it names is in the repository,
// so two builds that save the same mount at once leave the manifest of one
// of them, whole.
//
// Like an entry, a saved mount is whatever the last writer of the
// repository put there: the manifest must be one this package writes, its
// layers' bytes are checked against their digests and diff IDs as they are
// read, and what the caller makes of them (executor/build) is bounded and
// contained as for any untrusted layer.

// MaxMountLayers is the most layers a saved mount has: a save that would
// make more writes the whole directory as one layer instead.
const MaxMountLayers = 8

// sizeAnnotation holds the size of a saved mount's directory (its regular
// files' bytes) when it was saved.
const sizeAnnotation = "dev.slipway.cache-mount.size"

// mountTag is the tag of key's saved mount in the cache repository.
func mountTag(key string) string {
	h := sha256.Sum256([]byte(key))
	return "sha256-" + hex.EncodeToString(h[:]) + ".mount"
}

// mountKey is what a saved mount's key annotation holds.
func mountKey(key string) string { return "mount:" + key }

// MountEntry is a saved cache mount.
type MountEntry struct {
	// Layers are applied in order onto an empty directory. Their bytes are
	// fetched when read, and checked then (ErrRefused).
	Layers []v1.Layer
	// Saved is when it was saved; Size the directory's size then, as the
	// saving build said (untrusted: a bound for the restore is the
	// caller's own).
	Saved time.Time
	Size  int64
	// Manifest is the saved mount's manifest digest.
	Manifest v1.Hash
}

// Mount returns the mount saved under key: ErrMiss when there is none or
// it expired (the cache's TTL counts from its save), another error when
// it could not be read or is not what StoreMount writes.
func (c *Cache) Mount(ctx context.Context, key string) (MountEntry, error) {
	tag := mountTag(key)
	saved, layers, ann, digest, err := c.readN(ctx, tag, mountKey(key), "saved cache mount", MaxMountLayers)
	if err != nil {
		return MountEntry{}, err
	}
	if c.o.TTL > 0 && c.o.Now().Sub(saved) > c.o.TTL {
		return MountEntry{}, ErrMiss
	}
	if len(layers) == 0 {
		return MountEntry{}, fmt.Errorf("saved cache mount %s has no layer", c.o.Repo.Tag(tag))
	}
	size, err := strconv.ParseInt(ann[sizeAnnotation], 10, 64)
	if err != nil || size < 0 {
		return MountEntry{}, fmt.Errorf("saved cache mount %s: annotation %s is not a size", c.o.Repo.Tag(tag), sizeAnnotation)
	}
	return MountEntry{Layers: layers, Saved: saved, Size: size, Manifest: digest}, nil
}

// StoreMount saves a mount under key, now: layers (at most MaxMountLayers,
// each a tar layer, applied in order) and the directory's size. Layers the
// repository holds already (those of the mount it was restored from) are
// not uploaded again. It returns when the manifest is written; it is not
// one of the writes Flush waits for. It returns the manifest's digest.
func (c *Cache) StoreMount(ctx context.Context, key string, layers []v1.Layer, size int64) (v1.Hash, error) {
	ref := c.o.Repo.Tag(mountTag(key))
	if len(layers) == 0 || len(layers) > MaxMountLayers {
		return v1.Hash{}, fmt.Errorf("writing saved cache mount %s: %d layers, want 1 to %d", ref, len(layers), MaxMountLayers)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("writing saved cache mount %s: %w", ref, err)
		}
		mt, err := l.MediaType()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("writing saved cache mount %s: %w", ref, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{
			Layer:       l,
			MediaType:   ociLayerType(mt),
			Annotations: map[string]string{diffIDAnnotation: diffID.String()},
		}); err != nil {
			return v1.Hash{}, fmt.Errorf("writing saved cache mount %s: %w", ref, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf = cf.DeepCopy()
	now := c.o.Now().UTC()
	cf.Created = v1.Time{Time: now}
	cf.Config.Labels = map[string]string{keyLabel: mountKey(key)}
	// A saved mount is no image to run: it names no platform of its own
	// (the key holds the build's).
	cf.OS, cf.Architecture = "unknown", "unknown"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, err
	}
	img = mutate.Annotations(img, map[string]string{
		keyAnnotation:     mountKey(key),
		createdAnnotation: now.Format(time.RFC3339Nano),
		sizeAnnotation:    strconv.FormatInt(size, 10),
	}).(v1.Image)
	opts := append(c.o.Remote(false), remote.WithContext(ctx))
	if err := remote.Write(ref, img, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("writing saved cache mount %s: %w", ref, err)
	}
	return img.Digest()
}
