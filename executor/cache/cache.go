// Package cache is the registry-backed layer cache. Each cached step is a
// plain single-layer image (or a layer-less one, for a step that changed
// nothing) tagged with the step's key in the cache repository, so any OCI
// registry stores it. A lookup reads the manifest and the small config
// only: the layer's bytes stay in the registry until a later step needs
// the file system, and pushes of the built image mount them from there.
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

// keyLabel is set on every cache image, with the key it stores.
const keyLabel = "dev.slipway.cache.key"

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
	cfg, layers, err := c.read(ctx, key, key, "cache entry")
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Created: cfg.Created.Time.UTC()}
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

// read reads the image tagged tag, which must carry key in its key label
// (what names it in errors): its config and layers, ErrMiss when there is
// no such tag.
func (c *Cache) read(ctx context.Context, tag, key, what string) (*v1.ConfigFile, []v1.Layer, error) {
	ref := c.o.Repo.Tag(tag)
	img, err := remote.Image(ref, append(c.o.Remote(true), remote.WithContext(ctx))...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || isUnknown(te)) {
			return nil, nil, ErrMiss
		}
		return nil, nil, fmt.Errorf("looking up %s: %w", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	if cfg.Config.Labels[keyLabel] != key {
		return nil, nil, fmt.Errorf("%s %s does not hold %s", what, ref, key)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	return cfg, layers, nil
}

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
	c.background(true, func() error {
		ref := c.o.Repo.Tag(key)
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
// created, with key in its key label.
func (c *Cache) write(ref name.Tag, layer v1.Layer, created time.Time, key string) error {
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	if layer != nil {
		var err error
		if img, err = mutate.AppendLayers(img, layer); err != nil {
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
	return remote.Write(ref, img, c.o.Remote(false)...)
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
// (replace overwrites an index that could not be read). Wait reports the
// outcome.
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

// Wait waits for the stores started so far (entries and indexes) and
// returns how many entries were stored and the first error.
func (c *Cache) Wait() (stored int, err error) {
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stored, c.storeErr
}
