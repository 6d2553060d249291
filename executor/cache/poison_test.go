package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Attacks by someone who can push to the cache repository, and corruption: each entry is
// written under key1's tag as an attacker would, and must not be used.

// tarLayer is a gzip-compressed layer of files (name → content).
func tarLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func hashOf(t *testing.T, f func() (v1.Hash, error)) v1.Hash {
	t.Helper()
	h, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// entryOf is an entry as Store writes it, but with the given layer addenda and annotations.
func entryOf(t *testing.T, ann map[string]string, adds ...mutate.Addendum) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var err error
	for _, a := range adds {
		if img, err = mutate.Append(img, a); err != nil {
			t.Fatal(err)
		}
	}
	return mutate.Annotations(img, ann).(v1.Image)
}

func annotations(key string) map[string]string {
	return map[string]string{keyAnnotation: key, createdAnnotation: t0.Format(time.RFC3339Nano)}
}

func addendum(l v1.Layer, mt types.MediaType, diffID v1.Hash) mutate.Addendum {
	return mutate.Addendum{Layer: l, MediaType: mt, Annotations: map[string]string{diffIDAnnotation: diffID.String()}}
}

// Entries refused by their manifest: a miss at lookup, with an error that is not ErrMiss
// (the build's one warning line).
func TestCache_Lookup_poisonedManifest(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	good := tarLayer(t, map[string]string{"one": "1\n"})
	evil := tarLayer(t, map[string]string{"etc/evil": "pwned\n"})
	goodDiffID := hashOf(t, good.DiffID)
	evilDiffID := hashOf(t, evil.DiffID)
	foreign := mutate.Addendum{Layer: evil, MediaType: types.DockerForeignLayer, URLs: []string{"https://evil.example.com/layer"},
		Annotations: map[string]string{diffIDAnnotation: evilDiffID.String()}}
	index := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: entryOf(t, annotations(key1), addendum(evil, types.OCILayer, evilDiffID))})

	tests := []struct {
		name  string
		write func() error
	}{
		{name: "another key's annotation", write: func() error {
			return remote.Write(repo.Tag(key1), entryOf(t, annotations(key2), addendum(evil, types.OCILayer, evilDiffID)))
		}},
		{name: "two layers", write: func() error {
			return remote.Write(repo.Tag(key1), entryOf(t, annotations(key1), addendum(good, types.OCILayer, goodDiffID), addendum(evil, types.OCILayer, evilDiffID)))
		}},
		{name: "a foreign layer with URLs", write: func() error {
			return remote.Write(repo.Tag(key1), entryOf(t, annotations(key1), foreign))
		}},
		{name: "a layer that is not a tar", write: func() error {
			return remote.Write(repo.Tag(key1), entryOf(t, annotations(key1), addendum(evil, "application/vnd.example.payload", evilDiffID)))
		}},
		{name: "a config that is not an image config", write: func() error {
			return remote.Write(repo.Tag(key1), mutate.ConfigMediaType(entryOf(t, annotations(key1), addendum(evil, types.OCILayer, evilDiffID)), "application/vnd.example.config"))
		}},
		{name: "an index", write: func() error { return remote.WriteIndex(repo.Tag(key1), index) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.write(); err != nil {
				t.Fatal(err)
			}
			e, err := New(Options{Repo: repo}).Lookup(context.Background(), key1)
			if err == nil || errors.Is(err, ErrMiss) || e.Layer != nil {
				t.Errorf("Lookup = %+v, %v; want a refusal", e, err)
			}
		})
	}
}

// readAll reads l's compressed or uncompressed bytes to the end and closes them.
func readAll(l v1.Layer, uncompressed bool) error {
	open := l.Compressed
	if uncompressed {
		open = l.Uncompressed
	}
	rc, err := open()
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return err
}

// readSome reads the first n bytes of l's compressed bytes (as an extraction that stops at
// the tar's end does) and returns what Close says.
func readSome(l v1.Layer, n int64) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, rc, n); err != nil {
		rc.Close()
		return err
	}
	return rc.Close()
}

// Entries whose manifest is right but whose bytes are not: the lookup hits (it reads no
// layer), reading the layer fails with ErrRefused, whether read to its end or closed early,
// and from then on the key is a miss.
func TestCache_Lookup_poisonedLayer(t *testing.T) {
	good := tarLayer(t, map[string]string{"one": "1\n"})
	evil := tarLayer(t, map[string]string{"etc/evil": "pwned\n", "one": "1\n"})
	goodDigest := hashOf(t, good.Digest)
	goodDiffID := hashOf(t, good.DiffID)
	goodSize, _ := good.Size()
	goodBytes, _ := io.ReadAll(must(good.Compressed()))
	evilBytes, _ := io.ReadAll(must(evil.Compressed()))
	// Same length as the good blob, other bytes.
	flipped := bytes.Clone(goodBytes)
	flipped[len(flipped)/2] ^= 0xff

	tests := []struct {
		name string
		// entry is pushed under key1; serve, when set, replaces the bytes the registry serves
		// for the good layer's blob.
		entry func(t *testing.T) v1.Image
		serve []byte
	}{
		{name: "a layer that is not its diff ID", entry: func(t *testing.T) v1.Image {
			return entryOf(t, annotations(key1), addendum(evil, types.OCILayer, goodDiffID))
		}},
		{name: "a blob longer than its digest's", serve: append(bytes.Clone(goodBytes), evilBytes...)},
		{name: "a blob of another digest, longer", serve: evilBytes},
		{name: "a blob of another digest, same size", serve: flipped},
		{name: "a blob shorter than its descriptor", serve: goodBytes[:len(goodBytes)-8]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestRegistry(t)
			repo := tr.repo(t, "cache")
			entry := entryOf(t, annotations(key1), addendum(good, types.OCILayer, goodDiffID))
			if tc.entry != nil {
				entry = tc.entry(t)
			}
			if err := remote.Write(repo.Tag(key1), entry); err != nil {
				t.Fatal(err)
			}
			if tc.serve != nil {
				tr.swap(goodDigest, tc.serve)
			}
			for _, read := range []struct {
				name string
				read func(l v1.Layer) error
			}{
				{"compressed to the end", func(l v1.Layer) error { return readAll(l, false) }},
				{"uncompressed to the end", func(l v1.Layer) error { return readAll(l, true) }},
				{"the first bytes, then Close", func(l v1.Layer) error { return readSome(l, 10) }},
			} {
				c := New(Options{Repo: repo})
				e, err := c.Lookup(context.Background(), key1)
				if err != nil || e.Layer == nil {
					t.Fatalf("Lookup = %+v, %v; want a hit whose layer is refused when read", e, err)
				}
				if d, _ := e.Layer.Digest(); tc.entry == nil && d != goodDigest {
					t.Fatalf("hit's digest %s, want %s", d, goodDigest)
				}
				if s, _ := e.Layer.Size(); tc.entry == nil && s != goodSize {
					t.Fatalf("hit's size %d, want %d", s, goodSize)
				}
				if err := read.read(e.Layer); !errors.Is(err, ErrRefused) {
					t.Errorf("%s: %v, want ErrRefused", read.name, err)
				}
				if _, err := c.Lookup(context.Background(), key1); !errors.Is(err, ErrMiss) {
					t.Errorf("%s: Lookup after the refusal: %v, want ErrMiss", read.name, err)
				}
			}
		})
	}
}

// A good entry's layer reads back whole and unrefused, read in every way.
func TestCache_Lookup_checkedLayer(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	l := tarLayer(t, map[string]string{"one": strings.Repeat("1", 100000)})
	c := New(Options{Repo: repo})
	c.Store(key1, l, t0, v1.Platform{})
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func(v1.Layer) error{
		func(l v1.Layer) error { return readAll(l, false) },
		func(l v1.Layer) error { return readAll(l, true) },
		func(l v1.Layer) error { return readSome(l, 10) },
	} {
		e, err := c.Lookup(context.Background(), key1)
		if err != nil {
			t.Fatal(err)
		}
		if err := read(e.Layer); err != nil {
			t.Errorf("reading a good layer: %v", err)
		}
	}
	e, _ := c.Lookup(context.Background(), key1)
	rc, _ := e.Layer.Uncompressed()
	got, err := io.ReadAll(rc)
	rc.Close()
	want, _ := io.ReadAll(must(l.Uncompressed()))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("uncompressed layer: %d bytes, %v; want the %d stored", len(got), err, len(want))
	}
}

// go-containerregistry checks a remote layer's digest, but only once it is read to its end:
// an extraction that stops at the tar's end, before the compressed stream's, is not checked
// (and the size not at all). That is why the cache checks the bytes itself.
func TestGGCR_remoteLayerChecksOnlyAtTheEnd(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	good := tarLayer(t, map[string]string{"one": "1\n"})
	if err := remote.WriteLayer(repo, good); err != nil {
		t.Fatal(err)
	}
	d := hashOf(t, good.Digest)
	goodBytes, _ := io.ReadAll(must(good.Compressed()))
	flipped := bytes.Clone(goodBytes)
	flipped[len(flipped)/2] ^= 0xff
	tr.swap(d, flipped)
	l, err := remote.Layer(repo.Digest(d.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc := must(l.Compressed())
	if _, err := io.ReadAll(rc); err == nil {
		t.Errorf("go-containerregistry read other bytes to the end without an error")
	}
	rc.Close()
	rc = must(l.Compressed())
	io.CopyN(io.Discard, rc, 10)
	if err := rc.Close(); err != nil {
		t.Logf("go-containerregistry now checks on Close: %v", err)
	}
}

func must(rc io.ReadCloser, err error) io.ReadCloser {
	if err != nil {
		panic(err)
	}
	return rc
}

// swap makes the registry serve content for GETs of the blob d: a registry that does not
// check what it stores, or someone in front of it.
func (tr *testRegistry) swap(d v1.Hash, content []byte) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.serve = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			return false
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(content)
		return true
	}
}
