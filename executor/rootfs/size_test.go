package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// bombLayer is a gzip-compressed layer of one zero-filled file of size
// bytes after the given small files: it compresses about a thousandfold.
func bombLayer(t testing.TB, size int64, small ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, e := range small {
		h := e.hdr
		must(t, tw.WriteHeader(&h))
		_, err := tw.Write([]byte(e.body))
		must(t, err)
	}
	must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Mode: 0o644, Size: size, ModTime: epoch}))
	_, err := io.CopyN(tw, zeros{}, size)
	must(t, err)
	must(t, tw.Close())
	must(t, zw.Close())
	return buf.Bytes()
}

// TestExtract_maxSize checks that a layer is held to WithMaxSize: a gzip
// bomb (64 KiB expanding to 64 MiB) fails on its entry, naming it and
// the limit, before anything of it is written, and the files before it,
// within the limit, are there.
func TestExtract_maxSize(t *testing.T) {
	const limit = 1 << 20
	layer := bombLayer(t, 64<<20, fileE("a", strings.Repeat("a", 1000), 0o644))
	if len(layer) > 128<<10 {
		t.Fatalf("the bomb is %d bytes compressed, want it small", len(layer))
	}
	root := t.TempDir()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	must(t, err)
	err = Extract(root, zr, WithMaxSize(limit))
	if !errors.Is(err, ErrLayerTooLarge) || !strings.Contains(err.Error(), `"bomb"`) || !strings.Contains(err.Error(), "1048576") {
		t.Fatalf("Extract() = %v, want ErrLayerTooLarge naming the entry and the limit", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "bomb")); err == nil && fi.Size() > 0 {
		t.Errorf("bomb has %d bytes written", fi.Size())
	}
	if b, err := os.ReadFile(filepath.Join(root, "a")); err != nil || len(b) != 1000 {
		t.Errorf("a: %d bytes, %v; want the file before the bomb", len(b), err)
	}

	// Exactly the limit passes; one byte more, spread over files, fails on
	// the file that crosses it.
	half := strings.Repeat("x", limit/2)
	mustExtract(t, t.TempDir(), layerTar(t, fileE("a", half, 0o644), fileE("b", half, 0o644)), WithMaxSize(limit))
	err = Extract(t.TempDir(), bytes.NewReader(layerTar(t, fileE("a", half, 0o644), fileE("b", half+"x", 0o644))), WithMaxSize(limit))
	if !errors.Is(err, ErrLayerTooLarge) || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("Extract() = %v, want ErrLayerTooLarge naming b", err)
	}
	// Every layer has its own count; by default there is no limit.
	root = t.TempDir()
	for range 2 {
		mustExtract(t, root, layerTar(t, fileE("a", half, 0o644), fileE("b", half, 0o644)), WithMaxSize(limit))
	}
	mustExtract(t, t.TempDir(), layerTar(t, fileE("a", half+half+"x", 0o644)))
}
