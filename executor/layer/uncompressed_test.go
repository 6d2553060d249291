package layer

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestUncompressed opens layers written with each compression, and an
// uncompressed blob, and gets the tar back byte for byte.
func TestUncompressed(t *testing.T) {
	tarball := testTar(t, 7)
	for _, c := range []Compression{Gzip, Zstd} {
		t.Run(string(c), func(t *testing.T) {
			l, err := Write(t.TempDir(), Options{Compression: c}, func(w io.Writer) (bool, error) {
				_, err := w.Write(tarball)
				return true, err
			})
			if err != nil {
				t.Fatal(err)
			}
			assertContent(t, l.(*fileLayer), tarball)
		})
	}
	t.Run("uncompressed", func(t *testing.T) {
		l := static.NewLayer(tarball, types.DockerUncompressedLayer)
		rc, err := Uncompressed(l)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tarball) {
			t.Errorf("Uncompressed returned %d bytes, want the %d of the blob", len(got), len(tarball))
		}
	})
}

func assertContent(t *testing.T, l *fileLayer, want []byte) {
	t.Helper()
	rc, err := Uncompressed(l)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Uncompressed returned %d bytes differing from the %d written", len(got), len(want))
	}
}
