package cache

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// OpenTar returns the layer's tar, decompressed once (gzip, zstd or none,
// by its magic bytes) and checked as it is read: the read that ends it, or
// Close, fails with an error wrapping ErrRefused unless the layer's bytes
// are its descriptor's size and digest (the digest checked by
// go-containerregistry's reader of the blob) and decompress to its diff
// ID; Close reads what the caller left, to know. Its key is a miss from
// then on. It is Uncompressed for a reader that wants the tar (an
// extraction): Compressed checks the diff ID by decompressing the bytes
// once more, beside whoever decompresses them.
//
// The layer is fetched, decompressed and hashed in goroutines of its own, a
// few MiB ahead of the reader.
func (l *describedLayer) OpenTar() (io.ReadCloser, error) {
	return l.openTar(decompressor)
}

// decompressor decompresses r by its magic bytes, as the build's
// extraction does (executor/layer.Uncompressed).
func decompressor(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		g, err := pgzip.NewReaderN(br, 1<<20, 4)
		if err != nil {
			return nil, nil, err
		}
		return g, func() { g.Close() }, nil
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	}
	return br, func() {}, nil
}

// openTar opens the layer's tar with the decompressor decompress makes; see
// OpenTar.
func (l *describedLayer) openTar(decompress func(io.Reader) (io.Reader, func(), error)) (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		l.refuse()
		return nil, fmt.Errorf("%w: %s: layer %s: fetching it: %v", ErrRefused, l.ref, l.desc.Digest, err)
	}
	r := &tarReader{l: l, rc: rc, decompress: decompress, chunks: make(chan []byte, tarChunks), free: make(chan []byte, tarChunks+1), done: make(chan struct{})}
	go r.produce()
	return r, nil
}

// tarChunks is how many chunks of tarChunk bytes a tarReader holds between
// its two sides: 2 MiB decompressed ahead of its reader.
const (
	tarChunks = 8
	tarChunk  = 256 << 10
)

// tarReader reads a layer decompressed: produce decompresses it into
// chunks, hashing them, and decides at the end whether the layer was what
// it says (err, set before done is closed).
type tarReader struct {
	l          *describedLayer
	rc         io.ReadCloser
	decompress func(io.Reader) (io.Reader, func(), error)
	chunks     chan []byte   // decompressed, in order; closed at the end
	free       chan []byte   // chunks the reader is done with
	done       chan struct{} // closed once err is set
	err        error

	buf     []byte // the chunk being read, cur what is left of it
	cur     []byte
	ended   bool
	closed  bool
	aborted atomic.Bool
}

func (r *tarReader) produce() {
	defer close(r.done)
	defer close(r.chunks)
	l := r.l
	compressed := &countingReader{r: io.LimitReader(r.rc, l.desc.Size+1)}
	diffID := sha256.New()
	var failed error
	d, closeDec, err := r.decompress(compressed)
	if err != nil {
		failed = fmt.Errorf("decompressing it: %v", err)
	}
	for failed == nil {
		var buf []byte
		select {
		case buf = <-r.free:
		default:
			buf = make([]byte, tarChunk)
		}
		n, err := io.ReadFull(d, buf[:cap(buf)])
		diffID.Write(buf[:n])
		if n > 0 {
			r.chunks <- buf[:n]
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			failed = fmt.Errorf("decompressing it: %v", err)
		}
	}
	if closeDec != nil {
		closeDec()
	}
	if failed == nil {
		// A decompressor may end before its input (gzip's trailer, or
		// bytes after it): read on, to count and check them all.
		if _, err := io.Copy(io.Discard, compressed); err != nil {
			failed = fmt.Errorf("reading it: %v", err)
		}
	}
	got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diffID.Sum(nil))}
	switch {
	case failed != nil:
		r.err = failed
	case compressed.n != l.desc.Size:
		r.err = fmt.Errorf("%d bytes or more, not %d", compressed.n, l.desc.Size)
	case got != l.diffID:
		r.err = fmt.Errorf("uncompressed it is %s, not its diff ID %s", got, l.diffID)
	default:
		return
	}
	if r.aborted.Load() {
		r.err = errAborted
		return
	}
	l.refuse()
	r.err = fmt.Errorf("%w: %s: layer %s: %v", ErrRefused, l.ref, l.desc.Digest, r.err)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (r *tarReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.ended {
			if r.err != nil {
				return 0, r.err
			}
			return 0, io.EOF
		}
		chunk, ok := <-r.chunks
		if !ok {
			<-r.done
			r.ended = true
			continue
		}
		r.buf, r.cur = chunk, chunk
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	if len(r.cur) == 0 {
		select {
		case r.free <- r.buf[:0]:
		default:
		}
		r.buf = nil
	}
	return n, nil
}

// Started waits until the reader has its first bytes, or ended, and
// returns the error of one that ended before giving any (a twin that could
// not be fetched or is no zstd, a layer that is no archive of its
// compression): its caller may read another source instead, which the
// extraction then never met. It must be called before the first Read, by
// the goroutine that reads or one that hands the reader over to it.
func (r *tarReader) Started() error {
	if r.buf != nil || r.ended {
		return nil
	}
	chunk, ok := <-r.chunks
	if !ok {
		<-r.done
		r.ended = true
		return r.err
	}
	r.buf, r.cur = chunk, chunk
	return nil
}

// errAborted is the error of a reader given up.
var errAborted = errors.New("the layer's reader was given up")

// Abort gives the reader up: it stops fetching, and the layer is not
// checked (nor refused); Close then returns at once.
func (r *tarReader) Abort() {
	r.aborted.Store(true)
	r.rc.Close()
}

// Close reads what the caller left of the layer, so that it is checked,
// and returns the verdict.
func (r *tarReader) Close() error {
	if !r.closed {
		r.closed = true
		for range r.chunks {
		}
		<-r.done
		r.ended = true
		r.rc.Close()
	}
	return r.err
}
