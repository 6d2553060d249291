package layer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/zstd"
)

// testTar returns an uncompressed tar of a few files, some compressible and
// some not, large enough (about 5 MiB) to span several pgzip blocks.
func testTar(t testing.TB, seed int64) []byte {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < 6; i++ {
		data := make([]byte, 600<<10+i*1000)
		if i%2 == 0 {
			r.Read(data)
		} else {
			for j := range data {
				data[j] = byte('a' + j%7 + i)
			}
		}
		hdr := &tar.Header{Name: fmt.Sprintf("dir/file%d", i), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func writeBytes(data []byte) func(io.Writer) (bool, error) {
	return func(w io.Writer) (bool, error) {
		// Several writes of odd sizes, as a tar writer does.
		for len(data) > 0 {
			n := min(len(data), 12345)
			if _, err := w.Write(data[:n]); err != nil {
				return false, err
			}
			data = data[n:]
		}
		return true, nil
	}
}

func decompress(t *testing.T, c Compression, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case Zstd:
		d, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	default:
		g, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = g
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decompressing independently: %v", err)
	}
	return out
}

func readAll(t *testing.T, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWrite(t *testing.T) {
	input := testTar(t, 1)
	tests := []struct {
		name          string
		opts          Options
		wantMediaType types.MediaType
	}{
		{name: "default is gzip with Docker types", opts: Options{}, wantMediaType: types.DockerLayer},
		{name: "gzip", opts: Options{Compression: Gzip}, wantMediaType: types.DockerLayer},
		{name: "gzip OCI", opts: Options{Compression: Gzip, OCI: true}, wantMediaType: types.OCILayer},
		{name: "gzip best speed", opts: Options{Compression: Gzip, Level: 1}, wantMediaType: types.DockerLayer},
		{name: "zstd", opts: Options{Compression: Zstd}, wantMediaType: types.OCILayerZStd},
		{name: "zstd level 19", opts: Options{Compression: Zstd, Level: 19}, wantMediaType: types.OCILayerZStd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Write(dir, tc.opts, writeBytes(input))
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			if l == nil {
				t.Fatal("Write returned a nil layer")
			}
			files := dirEntries(t, dir)
			if len(files) != 1 {
				t.Fatalf("files in dir = %v, want one", files)
			}
			onDisk, err := os.ReadFile(filepath.Join(dir, files[0]))
			if err != nil {
				t.Fatal(err)
			}

			digest, _ := l.Digest()
			diffID, _ := l.DiffID()
			size, _ := l.Size()
			mt, _ := l.MediaType()
			type desc struct {
				Digest, DiffID v1.Hash
				Size           int64
				MediaType      types.MediaType
			}
			want := desc{Digest: sha(onDisk), DiffID: sha(input), Size: int64(len(onDisk)), MediaType: tc.wantMediaType}
			if diff := cmp.Diff(want, desc{digest, diffID, size, mt}); diff != "" {
				t.Errorf("layer (-want +got):\n%s", diff)
			}
			if mt != tc.opts.MediaType() {
				t.Errorf("MediaType = %s, Options.MediaType() = %s", mt, tc.opts.MediaType())
			}
			if got := decompress(t, tc.opts.Compression, onDisk); !bytes.Equal(got, input) {
				t.Errorf("independently decompressed file differs from the input (%d bytes, want %d)", len(got), len(input))
			}
			if got := readAll(t, l.Compressed); !bytes.Equal(got, onDisk) {
				t.Error("Compressed() differs from the file")
			}
			if got := readAll(t, l.Uncompressed); !bytes.Equal(got, input) {
				t.Errorf("Uncompressed() differs from the input (%d bytes, want %d)", len(got), len(input))
			}
			if tc.opts.Compression == Zstd {
				return // validate.Layer gunzips Compressed()
			}
			if err := validate.Layer(l); err != nil {
				t.Errorf("validate.Layer: %v", err)
			}
		})
	}
}

func TestWrite_empty(t *testing.T) {
	// An empty tar (two zero blocks) is still a layer when produce says so.
	var buf bytes.Buffer
	tar.NewWriter(&buf).Close()
	for _, c := range []Compression{Gzip, Zstd} {
		t.Run(string(c), func(t *testing.T) {
			l, err := Write(t.TempDir(), Options{Compression: c}, writeBytes(buf.Bytes()))
			if err != nil || l == nil {
				t.Fatalf("Write = %v, %v", l, err)
			}
			if got := readAll(t, l.Uncompressed); !bytes.Equal(got, buf.Bytes()) {
				t.Errorf("Uncompressed() = %d bytes, want %d", len(got), buf.Len())
			}
		})
	}
}

func TestWrite_nothingWritten(t *testing.T) {
	errProduce := errors.New("produce failed")
	tests := []struct {
		name    string
		opts    Options
		produce func(io.Writer) (bool, error)
		wantErr error
	}{
		{
			name:    "produce reports no change",
			produce: func(w io.Writer) (bool, error) { return false, nil },
		},
		{
			name: "produce wrote bytes then reports no change",
			produce: func(w io.Writer) (bool, error) {
				w.Write(make([]byte, 3<<20))
				return false, nil
			},
		},
		{
			name:    "zstd, no change",
			opts:    Options{Compression: Zstd},
			produce: func(w io.Writer) (bool, error) { return false, nil },
		},
		{
			name: "produce fails",
			produce: func(w io.Writer) (bool, error) {
				w.Write(make([]byte, 3<<20))
				return true, errProduce
			},
			wantErr: errProduce,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Write(dir, tc.opts, tc.produce)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Write error = %v, want %v", err, tc.wantErr)
			}
			if l != nil {
				t.Errorf("Write layer = %v, want nil", l)
			}
			if files := dirEntries(t, dir); len(files) != 0 {
				t.Errorf("files left in dir: %v", files)
			}
		})
	}
}

func TestWrite_unknownCompression(t *testing.T) {
	dir := t.TempDir()
	called := false
	l, err := Write(dir, Options{Compression: "lz4"}, func(w io.Writer) (bool, error) {
		called = true
		return true, nil
	})
	if err == nil || l != nil {
		t.Fatalf("Write = %v, %v; want an error", l, err)
	}
	if called {
		t.Error("produce was called for an unknown compression")
	}
	if files := dirEntries(t, dir); len(files) != 0 {
		t.Errorf("files left in dir: %v", files)
	}
}

func TestWrite_missingDir(t *testing.T) {
	_, err := Write(filepath.Join(t.TempDir(), "nope"), Options{}, writeBytes([]byte("x")))
	if err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
}

func TestWrite_deterministic(t *testing.T) {
	input := testTar(t, 2)
	for _, c := range []Compression{Gzip, Zstd} {
		t.Run(string(c), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
			var first v1.Hash
			for i, procs := range []int{1, 1, 2, 3, 8} {
				runtime.GOMAXPROCS(procs)
				l, err := Write(t.TempDir(), Options{Compression: c}, writeBytes(input))
				if err != nil {
					t.Fatal(err)
				}
				d, _ := l.Digest()
				if i == 0 {
					first = d
					continue
				}
				if d != first {
					t.Errorf("GOMAXPROCS=%d: digest %s, want %s (as with GOMAXPROCS=1)", procs, d, first)
				}
			}
		})
	}
}
