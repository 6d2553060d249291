// Package cache is the registry-backed layer cache. Each cached step is a
// plain single-layer OCI image (or a layer-less one, for a step that
// changed nothing) tagged with the step's key in the cache repository, so
// any OCI registry stores it. Its manifest carries, as annotations, the key,
// when the step made it and its layer's diff ID, so a lookup is one
// manifest read: the layer's bytes stay in the registry until a later step
// needs the file system, and pushes of the built image mount them from
// there. Entries written before the annotations (Docker manifests) are
// still read, through their config.
//
// Next to the entries, the repository holds layer indexes (tagged
// "sha256-HEX.index"): each layer's tar headers without the file contents,
// the same kind of plain image. A copy that misses after hits reads them
// instead of the layers below it (see rootfs.Index).
package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// keyLabel is set on every cache image's config, with the key it stores;
// keyAnnotation on its manifest too. createdAnnotation (the standard one)
// dates the manifest as the config's created field does, and
// diffIDAnnotation gives each layer descriptor its layer's diff ID.
const (
	keyLabel          = "dev.slipway.cache.key"
	keyAnnotation     = keyLabel
	createdAnnotation = "org.opencontainers.image.created"
	diffIDAnnotation  = "dev.slipway.cache.diff-id"
)

// Options configure a Cache.
type Options struct {
	// Repo is the cache repository.
	Repo name.Repository
	// TTL is how long an entry is used after it was written; 0 means
	// forever. kaniko's default is two weeks.
	TTL time.Duration
	// Remote returns the options of calls to the cache repository (auth,
	// transport); pull is false for writes.
	Remote func(pull bool) []remote.Option
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
}

// Cache looks steps up and stores them. It is safe for concurrent use.
type Cache struct {
	o Options

	wg       sync.WaitGroup
	layers   sync.WaitGroup // uploads of the entries' layers
	mu       sync.Mutex
	storeErr error
	stored   int
}

// New returns a Cache.
func New(o Options) *Cache {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Remote == nil {
		o.Remote = func(bool) []remote.Option { return nil }
	}
	return &Cache{o: o}
}

// Repo is the cache repository.
func (c *Cache) Repo() name.Repository { return c.o.Repo }

// Entry is a cached step.
type Entry struct {
	// Layer is the step's layer, nil when the step changed nothing. Its
	// bytes are fetched only when read.
	Layer v1.Layer
	// Created is when the step made its layer (what Store was given).
	Created time.Time
}

// ErrMiss is returned for keys that are not cached (or expired).
var ErrMiss = errors.New("not in the cache")

// Lookup returns the entry of key: ErrMiss when there is none or it
// expired, another error when the cache could not be read (which callers
// treat as a miss too).
func (c *Cache) Lookup(ctx context.Context, key string) (Entry, error) {
	created, layers, err := c.read(ctx, key, key, "cache entry")
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Created: created}
	if c.o.TTL > 0 && c.o.Now().Sub(e.Created) > c.o.TTL {
		return Entry{}, ErrMiss
	}
	switch len(layers) {
	case 0:
	case 1:
		e.Layer = layers[0]
	default:
		return Entry{}, fmt.Errorf("cache entry %s has %d layers, want at most one", c.o.Repo.Tag(key), len(layers))
	}
	return e, nil
}

// read reads the image tagged tag, which must hold key (what names it in
// errors): when it was made and its layers, ErrMiss when there is no such
// tag. An annotated manifest says all of that; an entry without the
// annotations is read through its config.
func (c *Cache) read(ctx context.Context, tag, key, what string) (time.Time, []v1.Layer, error) {
	ref := c.o.Repo.Tag(tag)
	opts := append(c.o.Remote(true), remote.WithContext(ctx))
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || isUnknown(te)) {
			return time.Time{}, nil, ErrMiss
		}
		return time.Time{}, nil, fmt.Errorf("looking up %s: %w", ref, err)
	}
	if !desc.MediaType.IsImage() {
		return time.Time{}, nil, fmt.Errorf("%s %s is a %s, not an image", what, ref, desc.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	if held, ok := m.Annotations[keyAnnotation]; ok {
		if held != key {
			return time.Time{}, nil, fmt.Errorf("%s %s does not hold %s", what, ref, key)
		}
		created, err := time.Parse(time.RFC3339Nano, m.Annotations[createdAnnotation])
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("reading %s %s: annotation %s: %w", what, ref, createdAnnotation, err)
		}
		layers := make([]v1.Layer, 0, len(m.Layers))
		for _, d := range m.Layers {
			diffID, err := v1.NewHash(d.Annotations[diffIDAnnotation])
			if err != nil {
				return time.Time{}, nil, fmt.Errorf("reading %s %s: layer %s: annotation %s: %w", what, ref, d.Digest, diffIDAnnotation, err)
			}
			l, err := remote.Layer(c.o.Repo.Digest(d.Digest.String()), opts...)
			if err != nil {
				return time.Time{}, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
			}
			// Still a MountableLayer outside, so that pushes mount it.
			if ml, ok := l.(*remote.MountableLayer); ok {
				l = &remote.MountableLayer{Layer: &describedLayer{Layer: ml.Layer, desc: d, diffID: diffID}, Reference: ml.Reference}
			} else {
				l = &describedLayer{Layer: l, desc: d, diffID: diffID}
			}
			layers = append(layers, l)
		}
		return created.UTC(), layers, nil
	}
	img, err := desc.Image()
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	if cfg.Config.Labels[keyLabel] != key {
		return time.Time{}, nil, fmt.Errorf("%s %s does not hold %s", what, ref, key)
	}
	layers, err := img.Layers()
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	return cfg.Created.Time.UTC(), layers, nil
}

// describedLayer is a layer of an annotated entry: what its descriptor
// says is answered without a request; its bytes are fetched when read.
type describedLayer struct {
	v1.Layer
	desc   v1.Descriptor
	diffID v1.Hash
}

func (l *describedLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *describedLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *describedLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *describedLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *describedLayer) Descriptor() (*v1.Descriptor, error) { d := l.desc; return &d, nil }

func isUnknown(te *transport.Error) bool {
	for _, d := range te.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return false
}

// Store writes key's entry in the background; layer is nil for a step that
// changed nothing, created is when the step made it (a build served from
// the entry later dates the step with it, so its image is the same). Wait
// reports the outcome.
func (c *Cache) Store(key string, layer v1.Layer, created time.Time) {
	big := false
	if layer != nil {
		if size, err := layer.Size(); err == nil && size >= MountWorthwhile {
			big = true
			c.layers.Add(1)
		}
	}
	c.background(true, func() error {
		ref := c.o.Repo.Tag(key)
		if layer != nil {
			// The layer first, for WaitLayers; writing the entry then finds
			// it there.
			err := remote.WriteLayer(c.o.Repo, layer, c.o.Remote(false)...)
			if big {
				c.layers.Done()
			}
			if err != nil {
				return fmt.Errorf("writing cache entry %s: %w", ref, err)
			}
		}
		if err := c.write(ref, layer, created, key); err != nil {
			return fmt.Errorf("writing cache entry %s: %w", ref, err)
		}
		return nil
	})
}

// background runs store in the background for Wait to report; entry says
// whether it stores an entry (which Wait counts).
func (c *Cache) background(entry bool, store func() error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := store()
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil && c.storeErr == nil {
			c.storeErr = err
		}
		if err == nil && entry {
			c.stored++
		}
	}()
}

// write pushes to ref a plain image of layer (none when nil), created at
// created, with key in its key label and its annotations.
func (c *Cache) write(ref name.Tag, layer v1.Layer, created time.Time, key string) error {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if layer != nil {
		diffID, err := layer.DiffID()
		if err != nil {
			return err
		}
		mt, err := layer.MediaType()
		if err != nil {
			return err
		}
		if img, err = mutate.Append(img, mutate.Addendum{
			Layer:       layer,
			MediaType:   ociLayerType(mt),
			Annotations: map[string]string{diffIDAnnotation: diffID.String()},
		}); err != nil {
			return err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created.UTC()}
	cf.Config.Labels = map[string]string{keyLabel: key}
	cf.OS, cf.Architecture = runtime.GOOS, runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	// RFC 3339 with nanoseconds, as the config's created field is written,
	// so that an entry read either way dates its step alike.
	img = mutate.Annotations(img, map[string]string{
		keyAnnotation:     key,
		createdAnnotation: cf.Created.Format(time.RFC3339Nano),
	}).(v1.Image)
	return remote.Write(ref, img, c.o.Remote(false)...)
}

// ociLayerType is the OCI media type of a layer of type mt: the same bytes
// under the name an OCI manifest uses.
func ociLayerType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	}
	return mt
}

// indexTag is the tag of layer's index in the cache repository.
func indexTag(layer v1.Hash) string {
	return layer.Algorithm + "-" + layer.Hex + ".index"
}

// indexKey is what an index image's key label holds.
func indexKey(layer v1.Hash) string { return "index:" + layer.String() }

// StoreIndex writes, in the background, the index of the layer whose
// (compressed) digest is layer: the gzip-compressed tar of its headers that
// rootfs.Index makes. It is stored as a plain single-layer image dated at
// the epoch, unless the repository has it already and replace is false
// (replace overwrites an index that could not be read, and saves asking
// whether there is one). Wait reports the outcome.
func (c *Cache) StoreIndex(layer v1.Hash, index []byte, replace bool) {
	c.background(false, func() error {
		ref := c.o.Repo.Tag(indexTag(layer))
		if !replace {
			if _, err := remote.Head(ref, c.o.Remote(true)...); err == nil {
				return nil
			}
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(index)), nil
		})
		if err == nil {
			err = c.write(ref, l, time.Unix(0, 0), indexKey(layer))
		}
		if err != nil {
			return fmt.Errorf("writing layer index %s: %w", ref, err)
		}
		return nil
	})
}

// Index returns the index of the layer whose digest is layer, as
// StoreIndex was given it (gzip-compressed): ErrMiss when there is none,
// another error when it could not be read. Indexes do not expire: they
// describe a layer, which never changes.
func (c *Cache) Index(ctx context.Context, layer v1.Hash) ([]byte, error) {
	ref := c.o.Repo.Tag(indexTag(layer))
	_, layers, err := c.read(ctx, indexTag(layer), indexKey(layer), "layer index")
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("layer index %s has %d layers, want one", ref, len(layers))
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return nil, fmt.Errorf("reading layer index %s: %w", ref, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading layer index %s: %w", ref, err)
	}
	return data, nil
}

// MountWorthwhile is the compressed size from which a push had better wait
// for a new layer to reach the cache repository and mount it from there
// than upload it a second time at once. A smaller layer costs less to send
// again than the wait; the push's mount attempt then simply turns into
// its upload.
const MountWorthwhile = 1 << 20

// WaitLayers waits until the layers of at least MountWorthwhile bytes of
// the entries stored so far are in the cache repository, or failed to get
// there; the rest of each entry (and the indexes) may still be being
// written. A push that waits for them mounts those layers from the cache
// repository instead of uploading them a second time.
func (c *Cache) WaitLayers() { c.layers.Wait() }

// Wait waits for the stores started so far (entries and indexes) and
// returns how many entries were stored and the first error.
func (c *Cache) Wait() (stored int, err error) {
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stored, c.storeErr
}
