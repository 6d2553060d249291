package layer

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// emptyTar is a tar archive with no entries: its end-of-archive marker,
// two zero blocks, all a tar writer closed at once writes.
var emptyTar = make([]byte, 1024)

// Empty returns the layer of a step that changed nothing: an empty tar,
// compressed as o says. BuildKit exports such a layer for every RUN, COPY,
// ADD and WORKDIR, changes or not (its differ writes the empty tar, and
// containerd compresses it with Go's compress/gzip). Ours is gzipped the
// same way, so with the default level it is BuildKit's very blob (32 bytes,
// sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1);
// with zstd it is compressed as Write compresses. Either way the same
// options give the same bytes.
func Empty(o Options) (v1.Layer, error) {
	var b bytes.Buffer
	var zw io.WriteCloser
	switch o.Compression {
	case Zstd:
		level := zstd.SpeedDefault
		if o.Level > 0 {
			level = zstd.EncoderLevelFromZstd(o.Level)
		}
		w, err := zstd.NewWriter(&b, zstd.WithEncoderLevel(level))
		if err != nil {
			return nil, err
		}
		zw = w
	case Gzip, "":
		level := gzip.DefaultCompression
		if o.Level != 0 {
			level = o.Level
		}
		w, err := gzip.NewWriterLevel(&b, level)
		if err != nil {
			return nil, fmt.Errorf("compressing the empty layer: %w", err)
		}
		zw = w
	default:
		return nil, fmt.Errorf("unknown compression %q (want gzip or zstd)", o.Compression)
	}
	if _, err := zw.Write(emptyTar); err != nil {
		return nil, fmt.Errorf("compressing the empty layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing the empty layer: %w", err)
	}
	return &memLayer{
		compressed: b.Bytes(),
		digest:     sha256Hash(b.Bytes()),
		diffID:     sha256Hash(emptyTar),
		mediaType:  o.MediaType(),
	}, nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// memLayer is a small compressed layer held in memory.
type memLayer struct {
	compressed     []byte
	digest, diffID v1.Hash
	mediaType      types.MediaType
}

func (l *memLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *memLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *memLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}

// Uncompressed is the layer's tar (Uncompressed of the package decompresses
// by magic bytes).
func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	return Uncompressed(l)
}
