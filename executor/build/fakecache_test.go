package build_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
)

// fakeCache is an in-memory build.Cache for tests that need a cache's
// behaviour, not the registry's: Store copies the layer's bytes at once
// (Flush has nothing to wait for), Lookup hands them back, and it counts
// what the build did with it. A layer can be made to fail its check as a
// registry-backed entry's does (refuse), and lookups to fail (lookupErr).
type fakeCache struct {
	mu      sync.Mutex
	entries map[string]fakeEntry
	indexes map[v1.Hash][]byte
	refused map[string]bool
	// lookupErr, when set, is every lookup's error.
	lookupErr error
	// reads counts the entries' layers read (opened), by key.
	reads map[string]int
	// stores counts the Store calls since the last Flush; stored all.
	stores, stored int
}

type fakeEntry struct {
	compressed, uncompressed []byte
	digest, diffID           v1.Hash
	mediaType                types.MediaType
	created                  time.Time
	bad                      bool // reading the layer fails with cache.ErrRefused
}

var _ build.Cache = (*fakeCache)(nil)

func newFakeCache() *fakeCache {
	return &fakeCache{entries: map[string]fakeEntry{}, indexes: map[v1.Hash][]byte{}, refused: map[string]bool{}, reads: map[string]int{}}
}

func (c *fakeCache) Lookup(_ context.Context, key string) (cache.Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lookupErr != nil {
		return cache.Entry{}, c.lookupErr
	}
	e, ok := c.entries[key]
	if !ok || c.refused[key] {
		return cache.Entry{}, cache.ErrMiss
	}
	return cache.Entry{Layer: &fakeLayer{e: e, c: c, key: key}, Created: e.created}, nil
}

func (c *fakeCache) Store(key string, l v1.Layer, created time.Time, _ v1.Platform) {
	e := fakeEntry{created: created}
	var err error
	if e.compressed, err = readAll(l.Compressed()); err == nil {
		e.uncompressed, err = readAll(l.Uncompressed())
	}
	if err == nil {
		e.digest, err = l.Digest()
	}
	if err == nil {
		e.diffID, err = l.DiffID()
	}
	if err == nil {
		e.mediaType, err = l.MediaType()
	}
	if err != nil {
		panic(fmt.Sprintf("fakeCache.Store: %v", err)) // the build's own layer
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[key] = e
	c.stores++
}

func readAll(rc io.ReadCloser, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (c *fakeCache) Index(_ context.Context, layer v1.Hash) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ix, ok := c.indexes[layer]; ok {
		return ix, nil
	}
	return nil, cache.ErrMiss
}

func (c *fakeCache) StoreIndex(layer v1.Hash, index []byte, replace bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.indexes[layer]; ok && !replace {
		return
	}
	c.indexes[layer] = index
}

func (c *fakeCache) Mountable(_ context.Context, l v1.Layer) v1.Layer { return l }

func (c *fakeCache) Flush(context.Context) (cache.Flushed, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stored += c.stores
	c.stores = 0
	return cache.Flushed{Stored: c.stored}, nil
}

// refuse makes reading key's layer fail as a registry-backed entry whose
// bytes are not what it says does.
func (c *fakeCache) refuse(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	e.bad = true
	c.entries[key] = e
}

// keys returns the keys stored, in no order.
func (c *fakeCache) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.entries {
		out = append(out, k)
	}
	return out
}

// layerReads returns how many times entries' layers were read in all.
func (c *fakeCache) layerReads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reads {
		n += r
	}
	return n
}

// fakeLayer is an entry's layer: reading it is counted, and a bad one's
// reader fails with cache.ErrRefused at its end, after which its key
// misses.
type fakeLayer struct {
	e   fakeEntry
	c   *fakeCache
	key string
}

func (l *fakeLayer) Digest() (v1.Hash, error)            { return l.e.digest, nil }
func (l *fakeLayer) DiffID() (v1.Hash, error)            { return l.e.diffID, nil }
func (l *fakeLayer) Size() (int64, error)                { return int64(len(l.e.compressed)), nil }
func (l *fakeLayer) MediaType() (types.MediaType, error) { return l.e.mediaType, nil }

func (l *fakeLayer) Compressed() (io.ReadCloser, error) {
	return l.opened(io.NopCloser(bytes.NewReader(l.e.compressed))), nil
}

func (l *fakeLayer) Uncompressed() (io.ReadCloser, error) {
	return l.opened(io.NopCloser(bytes.NewReader(l.e.uncompressed))), nil
}

func (l *fakeLayer) opened(rc io.ReadCloser) io.ReadCloser {
	l.c.mu.Lock()
	l.c.reads[l.key]++
	l.c.mu.Unlock()
	if !l.e.bad {
		return rc
	}
	return &refusingReader{rc: rc, refuse: func() error {
		l.c.mu.Lock()
		l.c.refused[l.key] = true
		l.c.mu.Unlock()
		return fmt.Errorf("%w: fake entry %s", cache.ErrRefused, l.key)
	}}
}

// refusingReader reads a layer and fails at its end, and on Close.
type refusingReader struct {
	rc     io.ReadCloser
	refuse func() error
	err    error
}

func (r *refusingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.rc.Read(p)
	if err == io.EOF {
		r.err = r.refuse()
		return n, r.err
	}
	return n, err
}

func (r *refusingReader) Close() error {
	if r.err == nil {
		io.Copy(io.Discard, r)
	}
	r.rc.Close()
	return r.err
}
