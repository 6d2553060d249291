package build

import (
	"context"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/cache"
)

// Cache is where a build finds the steps an earlier build made and keeps
// the ones it makes: each file system step's layer, under the step's key,
// and the index of each layer it reads or makes (see rootfs.Index), which
// lets a COPY after cached steps run without unpacking the tree below it.
// How entries and indexes are named and stored is the cache's business
// (cache.Cache keeps them in a registry repository); the build only knows
// keys and layer digests.
//
// Keys are what planning computed: hex SHA-256 sums of a step's inputs and
// its parent's key. The cache is untrusted input to the build (see package
// cache), and a failing cache never fails a build: a lookup that fails is a
// miss, a write that fails is reported by Flush.
//
// Every method may be called from several goroutines at once. Store and
// StoreIndex return at once and write in the background; Flush waits for
// those writes.
type Cache interface {
	// Lookup returns the entry stored under key. A miss (no such entry, or
	// it expired) is an error that is cache.ErrMiss; any other error is a
	// cache that could not be read, or an entry it does not trust, which
	// the build takes as a miss as well (warning of it once). The entry's
	// layer may be fetched only when read, and its bytes checked then: an
	// error wrapping cache.ErrRefused from reading or closing it means they
	// are not what the entry said. The cache must then answer cache.ErrMiss
	// for key from then on, and the build starts again (at most
	// maxCacheRefusals times), so that it is built without the entry.
	Lookup(ctx context.Context, key string) (cache.Entry, error)

	// Store keeps layer under key, as made at created (a later build served
	// from the entry dates its step with it) for platform (the stage's: the
	// key holds it too); layer is never nil here.
	Store(key string, layer v1.Layer, created time.Time, platform v1.Platform)

	// Index returns the index of the layer whose (compressed) digest is
	// layer, as StoreIndex was given it: cache.ErrMiss when there is none;
	// any other error is an index that could not be read, and the build
	// reads the layer instead.
	Index(ctx context.Context, layer v1.Hash) ([]byte, error)

	// StoreIndex keeps index (rootfs.Index's bytes, gzip-compressed) as the
	// index of the layer whose digest is layer. Unless replace is set, an
	// index the cache holds already is kept; the build replaces one it
	// could not read, and that of a layer it made.
	StoreIndex(layer v1.Hash, index []byte, replace bool)

	// Mountable returns a layer of the built image as its push should see
	// it: a layer the cache stores may come back as one the push mounts
	// from the cache instead of uploading it again (after waiting, until
	// ctx is done, for its upload to the cache when that pays); any other
	// layer comes back unchanged.
	Mountable(ctx context.Context, l v1.Layer) v1.Layer

	// Flush waits for the writes that Store and StoreIndex started so far,
	// or until ctx is done. It says how many entries were written and how
	// many writes were still under way; its error is the first write that
	// failed or, with writes still under way, ctx's cause. The writes that
	// are still under way go on in the background.
	Flush(ctx context.Context) (cache.Flushed, error)
}

// NoCache returns the cache of a build without one: every lookup misses,
// what it is given is dropped, and Flush has nothing to wait for. A build
// given NoCache (or no Cache) computes no cache keys and indexes no layers,
// work that only a cache could use: its reports count no hits or misses.
func NoCache() Cache { return noCache{} }

type noCache struct{}

func (noCache) Lookup(context.Context, string) (cache.Entry, error) {
	return cache.Entry{}, cache.ErrMiss
}
func (noCache) Store(string, v1.Layer, time.Time, v1.Platform) {}
func (noCache) Index(context.Context, v1.Hash) ([]byte, error) {
	return nil, cache.ErrMiss
}
func (noCache) StoreIndex(v1.Hash, []byte, bool)                 {}
func (noCache) Mountable(_ context.Context, l v1.Layer) v1.Layer { return l }
func (noCache) Flush(context.Context) (cache.Flushed, error)     { return cache.Flushed{}, nil }

// The registry-backed cache is one.
var _ Cache = (*cache.Cache)(nil)
