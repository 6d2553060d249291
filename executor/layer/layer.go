// Package layer turns a stream of uncompressed layer tar into a v1.Layer
// backed by one compressed file, compressing once (in parallel for gzip) and
// hashing both sides on the way, so nothing is read or compressed twice
// before a push.
package layer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// Compression is a layer compression algorithm.
type Compression string

const (
	// Gzip is the default, accepted by every registry and runtime.
	Gzip Compression = "gzip"
	// Zstd is smaller and faster; it needs OCI media types.
	Zstd Compression = "zstd"
)

// Options say how layers are compressed.
type Options struct {
	// Compression is Gzip (the default) or Zstd.
	Compression Compression
	// Level is the compression level; 0 means the algorithm's default.
	Level int
	// OCI selects OCI media types instead of Docker v2 ones (forced for zstd).
	OCI bool
}

// MediaType is the media type of a layer written with these options.
func (o Options) MediaType() types.MediaType {
	switch {
	case o.Compression == Zstd:
		return types.OCILayerZStd
	case o.OCI:
		return types.OCILayer
	default:
		return types.DockerLayer
	}
}

// Write runs produce with a writer for the uncompressed tar, and stores the
// compressed result in a new file under dir. It returns the layer, or nil
// when produce reports that it wrote nothing (then no file is kept).
func Write(dir string, o Options, produce func(io.Writer) (bool, error)) (v1.Layer, error) {
	f, err := os.CreateTemp(dir, "layer-*.tar")
	if err != nil {
		return nil, fmt.Errorf("creating layer file: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()

	compressedHash := sha256.New()
	counter := &countWriter{}
	fileBuf := bufio.NewWriterSize(f, 1<<20)
	compressedOut := io.MultiWriter(fileBuf, compressedHash, counter)

	var zw io.WriteCloser
	switch o.Compression {
	case Zstd:
		level := zstd.SpeedDefault
		if o.Level > 0 {
			level = zstd.EncoderLevelFromZstd(o.Level)
		}
		zw, err = zstd.NewWriter(compressedOut, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	case Gzip, "":
		level := pgzip.DefaultCompression
		if o.Level != 0 {
			level = o.Level
		}
		var gw *pgzip.Writer
		gw, err = pgzip.NewWriterLevel(compressedOut, level)
		if err == nil {
			// Fixed block size and count keep the output identical on
			// every machine, whatever its number of cores.
			err = gw.SetConcurrency(1<<20, 2*runtime.GOMAXPROCS(0))
		}
		zw = gw
	default:
		err = fmt.Errorf("unknown compression %q (want gzip or zstd)", o.Compression)
	}
	if err != nil {
		return nil, err
	}

	diffHash := sha256.New()
	uncompressed := bufio.NewWriterSize(io.MultiWriter(zw, diffHash), 1<<20)
	wrote, err := produce(uncompressed)
	if err != nil {
		return nil, err
	}
	if !wrote {
		return nil, nil
	}
	if err := uncompressed.Flush(); err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	if err := fileBuf.Flush(); err != nil {
		return nil, fmt.Errorf("writing layer file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing layer file: %w", err)
	}
	keep = true
	return &fileLayer{
		path:      f.Name(),
		digest:    toHash(compressedHash),
		diffID:    toHash(diffHash),
		size:      counter.n,
		mediaType: o.MediaType(),
	}, nil
}

func toHash(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// fileLayer is a compressed layer stored in a file, with known digests.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
	mediaType      types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

// Uncompressed decompresses the stored file.
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	if l.mediaType == types.OCILayerZStd {
		d, err := zstd.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			f.Close()
			return nil, err
		}
		return &readCloser{Reader: d, close: func() error { d.Close(); return f.Close() }}, nil
	}
	g, err := pgzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &readCloser{Reader: g, close: func() error { g.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
	// blob is the compressed blob behind the decompressor (see Drain); stop stops the
	// decompressor reading ahead of the consumer.
	blob io.Reader
	stop func()
}

func (r *readCloser) Close() error { return r.close() }

// Drain reads what is left of the compressed blob behind rc, a reader from Uncompressed that
// its consumer gave up on, up to limit bytes, and returns the error reading it ends with. A
// registry's blob is checked against its digest (and its length) only when it has been read to
// its end: a corrupt or cut-short download makes the extraction fail first, as a bad archive
// ("invalid tar header", "unexpected EOF"). Draining it finds the cause that matters: the
// registry did not send the blob the manifest names. Nil means the blob itself is intact.
func Drain(rc io.ReadCloser, limit int64) error {
	r, ok := rc.(*readCloser)
	if !ok || r.blob == nil {
		return nil
	}
	if r.stop != nil {
		r.stop()
	}
	_, err := io.Copy(io.Discard, io.LimitReader(r.blob, limit))
	return err
}

// Uncompressed opens l's content for extraction: the compressed blob,
// decompressed here by klauspost's gzip (parallel, reading ahead of the
// consumer) or zstd, chosen by the stream's magic bytes so a mislabelled
// media type cannot break it. Go's own gzip, which go-containerregistry
// uses, is several times slower on large base layers.
func Uncompressed(l v1.Layer) (io.ReadCloser, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(rc, 1<<20)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		rc.Close()
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		g, err := pgzip.NewReaderN(br, 1<<20, 4)
		if err != nil {
			rc.Close()
			return nil, err
		}
		stop := sync.OnceFunc(func() { g.Close() })
		return &readCloser{Reader: g, close: func() error { stop(); return rc.Close() }, blob: br, stop: stop}, nil
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		d, err := zstd.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, err
		}
		stop := sync.OnceFunc(d.Close)
		return &readCloser{Reader: d, close: func() error { stop(); return rc.Close() }, blob: br, stop: stop}, nil
	default:
		// An uncompressed layer.
		return &readCloser{Reader: br, close: rc.Close, blob: br}, nil
	}
}

// Tee returns rc copying what is read from it to w. For a reader from
// Uncompressed, Drain still reads what is left of its compressed blob.
func Tee(rc io.ReadCloser, w io.Writer) io.ReadCloser {
	if r, ok := rc.(*readCloser); ok {
		c := *r
		c.Reader = io.TeeReader(r.Reader, w)
		return &c
	}
	return &readCloser{Reader: io.TeeReader(rc, w), close: rc.Close}
}
