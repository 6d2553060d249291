package layer

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestEmpty: the gzip empty layer is BuildKit's blob for a step that
// changed nothing (the 32 bytes of containerd's compress/gzip of an empty
// tar); zstd's is as deterministic. Both hold the empty tar.
func TestEmpty(t *testing.T) {
	const diffID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
	tests := []struct {
		name       string
		opts       Options
		wantDigest string
		wantSize   int64
		wantType   types.MediaType
	}{
		{name: "gzip", opts: Options{}, wantDigest: "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1", wantSize: 32, wantType: types.DockerLayer},
		{name: "gzip OCI", opts: Options{Compression: Gzip, OCI: true}, wantDigest: "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1", wantSize: 32, wantType: types.OCILayer},
		{name: "zstd", opts: Options{Compression: Zstd}, wantType: types.OCILayerZStd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Empty(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Empty(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := l.Digest()
			d2, _ := again.Digest()
			if d != d2 {
				t.Errorf("digests differ: %s, %s", d, d2)
			}
			if tc.wantDigest != "" && d.String() != tc.wantDigest {
				t.Errorf("digest %s, want %s", d, tc.wantDigest)
			}
			if size, _ := l.Size(); tc.wantSize != 0 && size != tc.wantSize {
				t.Errorf("size %d, want %d", size, tc.wantSize)
			}
			if got, _ := l.DiffID(); got.String() != diffID {
				t.Errorf("diff ID %s, want %s", got, diffID)
			}
			if mt, _ := l.MediaType(); mt != tc.wantType {
				t.Errorf("media type %s, want %s", mt, tc.wantType)
			}
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, make([]byte, 1024)) {
				t.Errorf("uncompressed: %d bytes, want the 1024 zero bytes of an empty tar", len(b))
			}
		})
	}
}
