package cache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// Twins (issue 17): unpacking a layer a build pulls (a base image's, a cached
// step's) is mostly gzip's decompression when the layer is gzip-compressed,
// and gzip cannot be decompressed in parallel: for a Debian base of 100 MB,
// about 1 s of CPU against 0.2 s for zstd. So a build that unpacks such a
// layer from its gzip bytes also stores, in the background, a zstd
// re-encoding of the same tar next to the entries: the layer's twin, tagged
// "sha256-HEX.zstd" (HEX the original's digest), a plain single-layer image
// like an entry, its key annotation "zstd:" and the original's digest, its
// layer annotated with the diff ID of the tar. A later build that must
// unpack the original reads its twin instead. Images keep the original
// layer (their digests never change): a twin is only ever unpacked.
//
// Like an entry, a twin is whatever the last writer of the repository put
// there. It is used only if its manifest is one this package writes (as an
// entry's), its layer is zstd and no larger than the original, its diff ID
// is the original's, and its bytes are what its descriptor says (size,
// digest) and decompress to that diff ID. Twin.Open checks all of that as
// the bytes stream and fails at their end otherwise (ErrRefused); the twin
// is a miss for the rest of the build, and the next build that unpacks the
// original writes it again. Its decompression needs at most twinWindow of
// history, whatever its frames ask for. A twin does not expire: it names
// the layer it stands for by digest, as an index does.

// twinWindow is the zstd window twins are written with, and the largest a
// twin's frames may ask for when read: it bounds the memory of both sides.
// (8 MiB, zstd's default, makes the Debian base's twin 1% smaller, for some
// 20 MB more of memory in the build that makes it and in one that reads it.)
const twinWindow = 2 << 20

// TwinMinSize is the compressed size from which a layer is worth a twin:
// below it, gzip's decompression takes a few milliseconds.
const TwinMinSize = 1 << 20

// twinTag is the tag of the twin of the layer whose digest is original.
func twinTag(original v1.Hash) string {
	return original.Algorithm + "-" + original.Hex + ".zstd"
}

// twinKey is what a twin's key annotation holds.
func twinKey(original v1.Hash) string { return "zstd:" + original.String() }

// A Twin is the stored twin of a layer, found by Cache.Twin.
type Twin struct {
	c        *Cache
	original v1.Hash
	layer    *describedLayer
}

// Size is the twin's compressed size.
func (t *Twin) Size() int64 { return t.layer.desc.Size }

// Twin returns the twin of the layer whose digest is original and whose diff
// ID is diffID: ErrMiss when there is none or it was refused in this build,
// another error when it could not be read or is not one this package
// writes, or its diff ID is not diffID, or it is larger than maxSize bytes
// (the original's size: a twin is never larger). Its bytes are fetched when
// opened.
func (c *Cache) Twin(ctx context.Context, original, diffID v1.Hash, maxSize int64) (*Twin, error) {
	c.mu.Lock()
	refused := c.twins[original] == twinRefused
	c.mu.Unlock()
	if refused {
		return nil, ErrMiss
	}
	tag := twinTag(original)
	ref := c.o.Repo.Tag(tag)
	_, layers, err := c.read(ctx, tag, twinKey(original), "layer twin")
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("layer twin %s has %d layers, want one", ref, len(layers))
	}
	var dl *describedLayer
	switch l := layers[0].(type) {
	case *remote.MountableLayer:
		dl, _ = l.Layer.(*describedLayer)
	case *describedLayer:
		dl = l
	}
	switch {
	case dl == nil:
		return nil, fmt.Errorf("layer twin %s: unexpected layer %T", ref, layers[0])
	case dl.desc.MediaType != types.OCILayerZStd:
		return nil, fmt.Errorf("layer twin %s: a layer of media type %s, want %s", ref, dl.desc.MediaType, types.OCILayerZStd)
	case dl.diffID != diffID:
		return nil, fmt.Errorf("layer twin %s: its diff ID is %s, not the layer's %s", ref, dl.diffID, diffID)
	case dl.desc.Size > maxSize:
		return nil, fmt.Errorf("layer twin %s: %d bytes, more than the layer's %d", ref, dl.desc.Size, maxSize)
	}
	dl.refuse = func() { c.refuseTwin(original) }
	return &Twin{c: c, original: original, layer: dl}, nil
}

// Open returns the twin's tar, decompressed as it is read, and checked: the
// read that ends it, or Close, fails with an error wrapping ErrRefused
// unless the twin's bytes are its descriptor's size and digest (the digest
// checked by go-containerregistry's reader of the blob, remote.Layer) and
// decompress to its diff ID; Close reads what the caller left, to know. A
// refused twin is a miss from then on. Its frames may use a window of at
// most twinWindow.
func (t *Twin) Open() (io.ReadCloser, error) {
	return t.layer.openTar(func(r io.Reader) (io.Reader, func(), error) {
		d, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(twinWindow), zstd.WithDecoderMaxMemory(twinWindow))
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	})
}

// The states of a layer's twin in c.twins.
const (
	twinStoring = 1 + iota // being written or written by this process
	twinRefused            // refused: a miss; a new one may replace it
)

func (c *Cache) refuseTwin(original v1.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.twins == nil {
		c.twins = map[v1.Hash]int{}
	}
	c.twins[original] = twinRefused
}

// NewTwin returns a writer that makes the twin of the layer whose digest is
// original and whose diff ID is diffID from the layer's tar (all of it, in
// order), in a temporary file under dir; Close stores it in the background
// (Flush reports the outcome). It returns nil when this process stores or
// stored that twin already.
//
// The tar is hashed and compressed in a goroutine of its own, a few MiB
// behind the writer (which waits beyond that). A twin of a tar that does
// not compress is given up, after its first 16 MiB or at its end (it would
// gain nothing: gzip's stored blocks are copied as fast as zstd's), and so
// is a twin no smaller than maxSize (the original's size); the writer then
// only discards.
func (c *Cache) NewTwin(original, diffID v1.Hash, maxSize int64, dir string) *TwinWriter {
	c.mu.Lock()
	if c.twins == nil {
		c.twins = map[v1.Hash]int{}
	}
	if c.twins[original] == twinStoring {
		c.mu.Unlock()
		return nil
	}
	c.twins[original] = twinStoring
	c.mu.Unlock()
	w := &TwinWriter{c: c, original: original, diffID: diffID, maxSize: maxSize, dir: dir,
		chunks: make(chan []byte, twinChunks), free: make(chan []byte, twinChunks+1), done: make(chan struct{})}
	go w.compress()
	return w
}

// twinChunks is how many chunks of twinChunk bytes a TwinWriter holds
// between its writer and its compressor: 2 MiB.
const (
	twinChunks = 8
	twinChunk  = 256 << 10
)

// A twin that does not make the tar smaller than incompressibleRatio is
// given up, after its first incompressibleAfter bytes or at its end.
const (
	incompressibleAfter = 16 << 20
	incompressibleRatio = 0.95
)

// A TwinWriter makes a layer's twin from its tar; see Cache.NewTwin. Only
// one goroutine may call its methods.
type TwinWriter struct {
	c                *Cache
	original, diffID v1.Hash
	maxSize          int64
	dir              string

	cur      []byte // the chunk being filled
	chunks   chan []byte
	free     chan []byte
	done     chan struct{} // closed when compress returns
	gaveUp   atomic.Bool   // the twin was given up: Write only discards
	finished bool          // finish was called

	// Set by compress before done is closed.
	file   string
	size   int64
	digest v1.Hash
	tar    v1.Hash // what the tar hashed to
	err    error
}

// Write takes the next bytes of the tar. It never fails: a twin that cannot
// be made is not stored.
func (w *TwinWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.gaveUp.Load() {
		return n, nil
	}
	for len(p) > 0 {
		if w.cur == nil {
			select {
			case w.cur = <-w.free:
			default:
				w.cur = make([]byte, 0, twinChunk)
			}
		}
		k := copy(w.cur[len(w.cur):cap(w.cur)], p)
		w.cur = w.cur[:len(w.cur)+k]
		p = p[k:]
		if len(w.cur) == cap(w.cur) {
			w.send()
		}
	}
	return n, nil
}

// send hands the current chunk to the compressor, unless it stopped.
func (w *TwinWriter) send() {
	select {
	case w.chunks <- w.cur:
	case <-w.done:
	}
	w.cur = nil
}

// compress hashes what it is sent and writes it as zstd into a temporary
// file, until the writer closes chunks or the twin is given up.
func (w *TwinWriter) compress() {
	defer close(w.done)
	giveUp := func(err error) {
		if w.err == nil {
			w.err = err
		}
		w.gaveUp.Store(true)
		for range w.chunks {
		}
	}
	f, err := os.CreateTemp(w.dir, "twin-*.tar.zst")
	if err != nil {
		giveUp(err)
		return
	}
	w.file = f.Name()
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	cw := &countingWriter{w: bw, h: sha256.New()}
	// The fastest level, on one core: a Debian base's 210 MB tar in 0.8 s of
	// CPU, to 89% of its gzip size (WithLowerEncoderMem would double the
	// time).
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(twinWindow))
	if err != nil {
		giveUp(err)
		return
	}
	tar := sha256.New()
	var in int64
	for chunk := range w.chunks {
		tar.Write(chunk)
		if _, err := enc.Write(chunk); err != nil {
			giveUp(err)
			return
		}
		in += int64(len(chunk))
		select {
		case w.free <- chunk[:0]:
		default:
		}
		if in >= incompressibleAfter && float64(cw.n) > incompressibleRatio*float64(in) || cw.n >= w.maxSize {
			giveUp(errIncompressible)
			return
		}
	}
	if err := enc.Close(); err != nil {
		giveUp(err)
		return
	}
	if err := bw.Flush(); err != nil {
		giveUp(err)
		return
	}
	if err := f.Close(); err != nil {
		giveUp(err)
		return
	}
	if cw.n >= w.maxSize || float64(cw.n) > incompressibleRatio*float64(in) {
		giveUp(errIncompressible)
		return
	}
	w.size = cw.n
	w.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", cw.h.Sum(nil))}
	w.tar = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", tar.Sum(nil))}
}

var errIncompressible = errors.New("the layer's tar does not compress")

type countingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// finish ends the compression and returns the twin's file, "" when there
// is none to store.
func (w *TwinWriter) finish() string {
	if !w.finished {
		w.finished = true
		if len(w.cur) > 0 {
			w.send()
		}
		close(w.chunks)
		<-w.done
		if w.err != nil && w.file != "" {
			os.Remove(w.file)
			w.file = ""
		}
	}
	return w.file
}

// Abort gives the twin up (the layer was not read to its end, or its bytes
// are not what they should be); another build will make it.
func (w *TwinWriter) Abort() {
	if f := w.finish(); f != "" {
		os.Remove(f)
		w.file = ""
	}
	w.c.mu.Lock()
	if w.c.twins[w.original] == twinStoring {
		delete(w.c.twins, w.original)
	}
	w.c.mu.Unlock()
}

// Close ends the tar and, if its twin was made and the tar is the
// original's (its diff ID), stores the twin in the background. It reports
// whether it stores one.
func (w *TwinWriter) Close() bool {
	file := w.finish()
	if file == "" || w.tar != w.diffID {
		w.Abort()
		return false
	}
	w.file = "" // the store removes it
	c := w.c
	c.background(false, func() error {
		defer os.Remove(file)
		ref := c.o.Repo.Tag(twinTag(w.original))
		l := &twinFile{path: file, digest: w.digest, diffID: w.diffID, size: w.size}
		if err := c.write(ref, l, time.Unix(0, 0), twinKey(w.original), v1.Platform{}); err != nil {
			return fmt.Errorf("writing layer twin %s: %w", ref, err)
		}
		return nil
	})
	return true
}

// twinFile is a twin's zstd blob in a file, with its digests known.
type twinFile struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *twinFile) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *twinFile) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *twinFile) Size() (int64, error)                { return l.size, nil }
func (l *twinFile) MediaType() (types.MediaType, error) { return types.OCILayerZStd, nil }
func (l *twinFile) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *twinFile) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("a layer twin is not read uncompressed here")
}
