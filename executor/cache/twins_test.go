package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// compressibleTar is a tar of text files (n of them, each a few KiB of
// numbered lines): it compresses well, as a base image's files do.
func compressibleTar(t *testing.T, n int, seed string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < n; i++ {
		var body bytes.Buffer
		for line := 0; line < 64; line++ {
			fmt.Fprintf(&body, "%s file %d line %d: the quick brown fox jumps over the lazy dog\n", seed, i, line)
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("usr/share/doc/p%d/copyright", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(body.Len())}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body.Bytes())
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipLayer is data as a gzip layer (go-containerregistry's tarball layer).
func gzipLayer(t *testing.T, data []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func sha256Of(data []byte) v1.Hash {
	sum := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

// storeTwin makes and stores the twin of l from its tar data, as a build
// that unpacks l does, and waits for it.
func storeTwin(t *testing.T, c *Cache, l v1.Layer, data []byte) bool {
	t.Helper()
	d, size, diffID := hashOf(t, l.Digest), sizeOf(t, l), hashOf(t, l.DiffID)
	w := c.NewTwin(d, diffID, size, t.TempDir())
	if w == nil {
		t.Fatal("NewTwin = nil for a layer without a twin")
	}
	// In pieces, as an extraction reads.
	for p := data; len(p) > 0; {
		k := min(len(p), 32<<10+7)
		w.Write(p[:k])
		p = p[k:]
	}
	stored := w.Close()
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	return stored
}

func sizeOf(t *testing.T, l v1.Layer) int64 {
	t.Helper()
	n, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// readTwin reads the twin of l through a fresh Cache (a later build's).
func readTwin(t *testing.T, repo Options, l v1.Layer) ([]byte, error) {
	t.Helper()
	c := New(repo)
	tw, err := c.Twin(context.Background(), hashOf(t, l.Digest), hashOf(t, l.DiffID), sizeOf(t, l))
	if err != nil {
		return nil, err
	}
	rc, err := tw.Open()
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return data, err
}

// A twin stored from a layer's tar is read back as that tar, from a zstd
// blob next to the entries; the original layer is untouched.
func TestCache_Twin_roundTrip(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	data := compressibleTar(t, 3000, "round trip")
	l := gzipLayer(t, data)
	if !storeTwin(t, New(Options{Repo: repo}), l, data) {
		t.Fatal("Close = false, want the twin stored")
	}

	got, err := readTwin(t, Options{Repo: repo}, l)
	if err != nil {
		t.Fatalf("reading the twin: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the twin gives %d bytes that are not the layer's tar (%d bytes)", len(got), len(data))
	}

	// What is stored: a plain image under sha256-HEX.zstd, keyed by the
	// original's digest, its one layer zstd with the tar's diff ID, smaller
	// than the original.
	d := hashOf(t, l.Digest)
	img, err := remote.Image(repo.Tag("sha256-" + d.Hex + ".zstd"))
	if err != nil {
		t.Fatalf("reading the twin's image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Annotations[keyAnnotation], "zstd:"+d.String(); got != want {
		t.Errorf("key annotation %q, want %q", got, want)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	ld := m.Layers[0]
	if ld.MediaType != types.OCILayerZStd {
		t.Errorf("layer of media type %s, want %s", ld.MediaType, types.OCILayerZStd)
	}
	if got, want := ld.Annotations[diffIDAnnotation], sha256Of(data).String(); got != want {
		t.Errorf("diff ID annotation %s, want %s", got, want)
	}
	if ld.Size >= sizeOf(t, l) {
		t.Errorf("the twin is %d bytes, the gzip layer %d: want it smaller", ld.Size, sizeOf(t, l))
	}
	if n := tr.gets(d); n != 0 {
		t.Errorf("the original layer was downloaded %d times, want 0 (it is not in the cache repository and not needed)", n)
	}
}

// A writer gives a twin up, and stores nothing, when what it was given is
// not the layer's tar, when the tar does not compress, or when the process
// stores that twin already.
func TestCache_NewTwin_notStored(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	data := compressibleTar(t, 500, "not stored")
	l := gzipLayer(t, data)
	d, diffID, size := hashOf(t, l.Digest), hashOf(t, l.DiffID), sizeOf(t, l)

	random := make([]byte, 20<<20)
	rand.Read(random)
	randomLayer := gzipLayer(t, random)

	tests := []struct {
		name  string
		write func(c *Cache) bool
	}{
		{name: "not the layer's tar", write: func(c *Cache) bool {
			w := c.NewTwin(d, diffID, size, t.TempDir())
			w.Write(compressibleTar(t, 500, "another tar"))
			return w.Close()
		}},
		{name: "part of the layer's tar", write: func(c *Cache) bool {
			w := c.NewTwin(d, diffID, size, t.TempDir())
			w.Write(data[:len(data)/2])
			return w.Close()
		}},
		{name: "aborted", write: func(c *Cache) bool {
			w := c.NewTwin(d, diffID, size, t.TempDir())
			w.Write(data)
			w.Abort()
			return false
		}},
		{name: "incompressible", write: func(c *Cache) bool {
			w := c.NewTwin(hashOf(t, randomLayer.Digest), hashOf(t, randomLayer.DiffID), sizeOf(t, randomLayer), t.TempDir())
			w.Write(random)
			return w.Close()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{Repo: repo})
			if tc.write(c) {
				t.Errorf("Close = true, want the twin given up")
			}
			if _, err := c.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			tags, _ := remote.List(repo)
			for _, tag := range tags {
				if strings.HasSuffix(tag, ".zstd") {
					t.Errorf("a twin was stored: %s", tag)
				}
			}
		})
	}

	t.Run("twice", func(t *testing.T) {
		c := New(Options{Repo: repo})
		if !storeTwin(t, c, l, data) {
			t.Fatal("the first twin was not stored")
		}
		if w := c.NewTwin(d, diffID, size, t.TempDir()); w != nil {
			t.Errorf("NewTwin = %v for a twin this process stored, want nil", w)
		}
	})
}

// Attacks by someone who can push to the cache repository, and corruption:
// each writes the twin of a layer as an attacker would, and a build must
// not unpack it (Twin refuses it at once, or its reader fails with
// ErrRefused once read), and must not look it up again.
func TestCache_Twin_poisoned(t *testing.T) {
	data := compressibleTar(t, 2000, "genuine")
	l := gzipLayer(t, data)
	d, diffID, size := hashOf(t, l.Digest), hashOf(t, l.DiffID), sizeOf(t, l)
	evilData := compressibleTar(t, 2000, "evil")
	// Within twinWindow unless opts say otherwise, so that each case is
	// wrong only as it says.
	zstdOf := func(data []byte, opts ...zstd.EOption) []byte {
		var b bytes.Buffer
		w, err := zstd.NewWriter(&b, append([]zstd.EOption{zstd.WithWindowSize(twinWindow)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		return b.Bytes()
	}
	// twin is a twin image as Close writes one, of blob annotated with diffID.
	twin := func(blob []byte, mt types.MediaType, diffID v1.Hash) v1.Image {
		return entryOf(t, annotations(twinKey(d)), addendum(static.NewLayer(blob, mt), mt, diffID))
	}
	// The genuine twin with a skippable frame after it, and the same bytes
	// but for that frame's content: the same size and tar, not the digest.
	skippable := func(payload string) []byte {
		return append([]byte{0x50, 0x2a, 0x4d, 0x18, byte(len(payload)), 0, 0, 0}, payload...)
	}
	withFrame := append(zstdOf(data), skippable("good")...)
	otherFrame := append(zstdOf(data), skippable("evil")...)
	// A zstd frame that needs a 64 MiB window: a decoder allowing it would
	// take that much memory.
	bigWindow := bytes.Repeat(data, 1+(64<<20)/len(data))
	bigWindowTwin := zstdOf(bigWindow, zstd.WithWindowSize(64<<20))

	tests := []struct {
		name string
		img  v1.Image
		// swap, when set, is served instead of every blob of the twin's
		// layer.
		swap []byte
		// atOnce: Twin refuses it from its manifest; else reading it does.
		atOnce bool
		// diffID and maxSize are the layer's, when not the genuine one's.
		diffID  v1.Hash
		maxSize int64
	}{
		{name: "another tar under the layer's diff ID", img: twin(zstdOf(evilData), types.OCILayerZStd, diffID)},
		{name: "another tar under its own diff ID", img: twin(zstdOf(evilData), types.OCILayerZStd, sha256Of(evilData)), atOnce: true},
		{name: "a blob that is not its digest", img: twin(withFrame, types.OCILayerZStd, diffID), swap: otherFrame},
		{name: "a blob longer than its size", img: twin(zstdOf(data), types.OCILayerZStd, diffID), swap: append(zstdOf(data), skippable("more")...)},
		{name: "bytes that are not zstd", img: twin([]byte(strings.Repeat("not zstd ", 1000)), types.OCILayerZStd, diffID)},
		{name: "the tar and more", img: twin(append(zstdOf(data), zstdOf([]byte("trailing"))...), types.OCILayerZStd, diffID)},
		// Its own diff ID, and room for its size, so that only the window is wrong.
		{name: "a frame past the window", img: twin(bigWindowTwin, types.OCILayerZStd, sha256Of(bigWindow)), diffID: sha256Of(bigWindow), maxSize: int64(len(bigWindowTwin))},
		{name: "a gzip layer", img: entryOf(t, annotations(twinKey(d)), addendum(l, types.OCILayer, diffID)), atOnce: true},
		{name: "larger than the layer", img: twin(append(zstdOf(data), make([]byte, size)...), types.OCILayerZStd, diffID), atOnce: true},
		{name: "another layer's twin", img: entryOf(t, annotations(twinKey(sha256Of([]byte("other")))), addendum(static.NewLayer(zstdOf(data), types.OCILayerZStd), types.OCILayerZStd, diffID)), atOnce: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestRegistry(t)
			repo := tr.repo(t, "cache")
			if err := remote.Write(repo.Tag(twinTag(d)), tc.img); err != nil {
				t.Fatal(err)
			}
			if tc.swap != nil {
				m, err := tc.img.Manifest()
				if err != nil {
					t.Fatal(err)
				}
				blob := m.Layers[0].Digest.String()
				tr.serve = func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+blob) {
						w.Write(tc.swap)
						return true
					}
					return false
				}
			}
			wantDiffID, maxSize := diffID, size
			if tc.maxSize != 0 {
				wantDiffID, maxSize = tc.diffID, tc.maxSize
			}
			c := New(Options{Repo: repo})
			tw, err := c.Twin(context.Background(), d, wantDiffID, maxSize)
			if tc.atOnce {
				if err == nil || errors.Is(err, ErrMiss) {
					t.Fatalf("Twin = %v, %v; want a refusal", tw, err)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Twin: %v (want it refused when read)", err)
			}
			rc, err := tw.Open()
			if err != nil {
				t.Fatal(err)
			}
			got, rerr := io.ReadAll(rc)
			cerr := rc.Close()
			if !errors.Is(rerr, ErrRefused) || !errors.Is(cerr, ErrRefused) {
				t.Errorf("reading the twin = %v, closing it = %v; want both ErrRefused", rerr, cerr)
			}
			t.Logf("refused: %v", rerr)
			if bytes.Contains(got, []byte("evil")) && rerr == nil {
				t.Errorf("the attacker's tar was read without an error")
			}
			// A miss from then on, and a new twin may replace it.
			if _, err := c.Twin(context.Background(), d, wantDiffID, maxSize); !errors.Is(err, ErrMiss) {
				t.Errorf("Twin after the refusal = %v, want ErrMiss", err)
			}
			if w := c.NewTwin(d, diffID, size, t.TempDir()); w == nil {
				t.Errorf("NewTwin = nil after a refused twin, want a writer to replace it")
			} else {
				w.Abort()
			}
		})
	}
}

// Reading a twin stops early when its reader is closed early, and still
// says whether the twin was what it says.
func TestCache_Twin_closedEarly(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	data := compressibleTar(t, 3000, "closed early")
	l := gzipLayer(t, data)
	if !storeTwin(t, New(Options{Repo: repo}), l, data) {
		t.Fatal("twin not stored")
	}
	c := New(Options{Repo: repo, Now: func() time.Time { return t0 }})
	tw, err := c.Twin(context.Background(), hashOf(t, l.Digest), hashOf(t, l.DiffID), sizeOf(t, l))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := tw.Open()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4096)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close after a partial read of a good twin = %v, want nil", err)
	}
	if !bytes.Equal(head, data[:4096]) {
		t.Errorf("the twin's first bytes are not the tar's")
	}
}
