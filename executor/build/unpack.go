package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// Unpacking a tree (issue 17): the layers of one extraction are applied in
// order by the one extractor (rootfs.Extract), each streamed from the
// registry into it as it is decompressed; the next layer is opened as
// soon as a layer starts, so that it is fetched and decompressed a few MiB
// ahead (its reader's buffers) while that one is extracted; the twins of
// all are looked up at once.
//
// A gzip layer pulled from a registry is read from its twin when the cache
// has one (cache.Twin: the same tar, zstd-compressed, several times faster
// to decompress), checked as a cache entry is: a twin that fails before its
// first bytes reach the extractor (it cannot be fetched, is no zstd) is
// left for the layer itself at once; one that turns out not to be what it
// says once read fails the extraction with cache.ErrRefused, and the build
// starts again without it (as for a refused entry, see Build). A gzip
// layer unpacked from its own bytes gives the cache its tar for a twin on
// the way (cache.NewTwin), which the cache stores only if the whole tar was
// read and is the layer's diff ID. A cache entry's layer is decompressed
// once, checked as it is (cache.OpenTar).
//
// Measured on a Debian base of 100 MB (210 MB of tar) and a cached layer
// of 100 MB (bench case bigrun, a change before a RUN, 2 cores):
// decompressing the next layers wholly ahead, into temporary files, made
// the rebuild slower than streaming them one after the other (1.84 s
// against 1.49 s, medians of 5): what it saved in waiting it spent again
// writing and reading the files, with no core to spare.

// twinCache is a Cache that keeps layer twins (cache.Cache does).
type twinCache interface {
	Twin(ctx context.Context, original, diffID v1.Hash, maxSize int64) (*cache.Twin, error)
	NewTwin(original, diffID v1.Hash, maxSize int64, dir string) *cache.TwinWriter
}

// unpackAhead is how many layers after the one extracted are opened
// ahead of their turn.
const unpackAhead = 1

// maxTrailer is how much of a layer's tar after its end-of-archive marker
// is read for its twin (tar writers pad to a 10 KiB record).
const maxTrailer = 1 << 20

// unpacking is one extraction's layers on their way to the extractor.
// Only the extraction's goroutine calls its methods.
type unpacking struct {
	b      *builder
	ctx    context.Context
	cancel context.CancelFunc
	tc     twinCache // nil without twins
	jobs   []*unpackJob
	next   int // the next layer to open
	wg     sync.WaitGroup
}

// unpackJob is one layer.
type unpackJob struct {
	l      v1.Layer
	digest v1.Hash
	// twinable is set for a gzip layer pulled from a registry, large
	// enough for a twin to pay: the cache may hold one, or get one.
	twinable bool
	diffID   v1.Hash
	size     int64
	looked   chan struct{} // closed once the twin was looked up
	twin     *cache.Twin   // what the lookup found
	// indexed is closed once the cache was asked whether it has the
	// layer's index; hasIndex is its answer.
	indexed  chan struct{}
	hasIndex bool

	// ready is closed once the layer was opened: rc, or err.
	ready  chan struct{}
	rc     io.ReadCloser
	err    error
	raw    io.ReadCloser     // rc before its tar was teed to tw
	taken  bool              // the extraction took rc
	tw     *cache.TwinWriter // takes the tar for a twin
	whole  bool              // all of the tar was read
	opened bool
}

// startUnpacking looks up the twins of layers; close must be called once
// done, whatever happened.
func (b *builder) startUnpacking(ctx context.Context, layers []v1.Layer) *unpacking {
	ctx, cancel := context.WithCancel(ctx)
	u := &unpacking{b: b, ctx: ctx, cancel: cancel}
	u.tc, _ = b.opts.Cache.(twinCache)
	ic, _ := b.opts.Cache.(indexCache)
	for _, l := range layers {
		j := &unpackJob{l: l, looked: make(chan struct{}), indexed: make(chan struct{}), ready: make(chan struct{})}
		j.digest, _ = l.Digest()
		if ic == nil || !b.keyed {
			close(j.indexed)
		} else if _, seen := b.sh.indexed.Load(j.digest); seen {
			close(j.indexed)
		} else {
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer close(j.indexed)
				j.hasIndex = ic.HasIndex(ctx, j.digest)
			}()
		}
		if u.tc != nil && twinable(l) {
			diffID, derr := l.DiffID()
			size, serr := l.Size()
			j.twinable = derr == nil && serr == nil && size >= cache.TwinMinSize
			j.diffID, j.size = diffID, size
		}
		u.jobs = append(u.jobs, j)
		if !j.twinable {
			close(j.looked)
			continue
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer close(j.looked)
			t, err := u.tc.Twin(ctx, j.digest, j.diffID, j.size)
			if err != nil && !errors.Is(err, cache.ErrMiss) && ctx.Err() == nil {
				fmt.Fprintf(b.log, "WARNING: unpacking layer %s without its twin: %v\n", j.digest, err)
			}
			j.twin = t
		}()
	}
	return u
}

// indexCache is a Cache that tells whether it has a layer's index
// (cache.Cache does).
type indexCache interface {
	HasIndex(ctx context.Context, layer v1.Hash) bool
}

// newIndex returns an index to fill while the ith layer is extracted, as
// builder.newIndex does, but none for a layer whose index the cache has
// already: indexing a Debian base's 10,000 entries takes some 0.1 s of the
// extraction's own time, and StoreIndex would keep the index there.
func (u *unpacking) newIndex(i int) *rootfs.Index {
	j := u.jobs[i]
	select {
	case <-j.indexed:
		if j.hasIndex {
			u.b.sh.indexed.LoadOrStore(j.digest, true)
			return nil
		}
	case <-u.ctx.Done():
	}
	return u.b.newIndex(j.digest)
}

// twinable reports whether l is a gzip layer pulled from a registry.
func twinable(l v1.Layer) bool {
	if _, ok := l.(*remote.MountableLayer); !ok {
		return false
	}
	mt, err := l.MediaType()
	return err == nil && (mt == types.DockerLayer || mt == types.OCILayer)
}

// tarOpener is a layer that opens its tar checked as it decompresses it, so
// that it is decompressed once (a cache entry's layer, see cache.OpenTar).
type tarOpener interface {
	OpenTar() (io.ReadCloser, error)
}

// openTar opens l's tar for an extraction.
func openTar(l v1.Layer) (io.ReadCloser, error) {
	inner := l
	if ml, ok := l.(*remote.MountableLayer); ok {
		inner = ml.Layer
	}
	if o, ok := inner.(tarOpener); ok {
		return o.OpenTar()
	}
	return layer.Uncompressed(l)
}

// openUpTo opens the layers up to the ith, each in a goroutine of its own
// (it waits for its twin's lookup first).
func (u *unpacking) openUpTo(i int) {
	for ; u.next <= i && u.next < len(u.jobs); u.next++ {
		j := u.jobs[u.next]
		j.opened = true
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer close(j.ready)
			select {
			case <-j.looked:
			case <-u.ctx.Done():
				j.err = u.ctx.Err()
				return
			}
			if j.twin != nil {
				// A twin that fails before its first bytes (it cannot be
				// fetched, is no zstd, asks for too large a window) is
				// left for the layer at once; one that fails later fails
				// the extraction (see above).
				rc, err := j.twin.Open()
				if err == nil {
					if s, ok := rc.(starter); ok {
						if err = s.Started(); err != nil {
							rc.Close()
						}
					}
				}
				if err == nil {
					j.rc, j.raw = rc, rc
					return
				}
				if u.ctx.Err() != nil {
					j.err = u.ctx.Err()
					return
				}
				fmt.Fprintf(u.b.log, "WARNING: unpacking layer %s without its twin: %v\n", j.digest, err)
			}
			if j.rc, j.err = openTar(j.l); j.err != nil {
				return
			}
			j.raw = j.rc
			if j.twinable {
				if j.tw = u.tc.NewTwin(j.digest, j.diffID, j.size, u.b.layers); j.tw != nil {
					j.rc = layer.Tee(j.rc, j.tw)
				}
			}
		}()
	}
}

// open returns the tar of the ith layer, and opens the next ones.
func (u *unpacking) open(i int) (io.ReadCloser, error) {
	u.openUpTo(i + unpackAhead)
	j := u.jobs[i]
	select {
	case <-j.ready:
	case <-u.ctx.Done():
		return nil, u.ctx.Err()
	}
	j.taken = true
	return j.rc, j.err
}

// extracted is called once the ith layer's tar was extracted from rc,
// before rc is closed: its twin gets the rest of the tar.
func (u *unpacking) extracted(i int, rc io.Reader) {
	j := u.jobs[i]
	if j.tw == nil {
		return
	}
	n, err := io.Copy(io.Discard, io.LimitReader(rc, maxTrailer+1))
	j.whole = err == nil && n <= maxTrailer
}

// done ends the ith layer's turn; ok says it was applied whole and its
// reader closed without an error: only then is its twin stored.
func (u *unpacking) done(i int, ok bool) {
	j := u.jobs[i]
	if j.tw != nil {
		if ok && j.whole {
			j.tw.Close()
		} else {
			j.tw.Abort()
		}
		j.tw = nil
	}
}

// starter is a reader that can tell whether it fails before its first
// bytes (cache's readers).
type starter interface{ Started() error }

// aborter is a reader that can be given up without reading it to its end.
type aborter interface{ Abort() }

// close gives up the layers opened and not extracted, and waits for what is
// still under way.
func (u *unpacking) close() {
	u.cancel()
	for _, j := range u.jobs {
		if !j.opened || j.taken {
			continue
		}
		<-j.ready
		if a, ok := j.raw.(aborter); ok {
			a.Abort()
		}
		if j.rc != nil {
			j.rc.Close()
		}
		if j.tw != nil {
			j.tw.Abort()
		}
	}
	u.wg.Wait()
}
