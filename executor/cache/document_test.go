package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// A document stored under a key reads back whole from another Cache of the
// repository (a later build), as a plain image of the repository; another
// key misses.
func TestCache_Document(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	c := New(Options{Repo: repo, Now: clockAt(t0)})
	doc := []byte(`{"spdxVersion":"SPDX-2.3","name":"r/app@sha256:1111"}`)
	const key = "r/app@sha256:1111 spdx-json generator sha256:2222"
	c.StoreDocument(key, doc)
	if n, err := flush(c); err != nil || n != 0 {
		t.Fatalf("Flush: %d entries, %v; want 0 (a document is no entry), nil", n, err)
	}
	img, err := remote.Image(repo.Tag(documentTag(key)))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	if !strings.HasSuffix(documentTag(key), ".doc") || len(documentTag(key)) > 128 {
		t.Errorf("tag %q", documentTag(key))
	}

	got, err := New(Options{Repo: repo}).Document(context.Background(), key, 1<<20)
	if err != nil {
		t.Fatalf("Document: %v", err)
	}
	if !bytes.Equal(got, doc) {
		t.Errorf("Document = %q, want %q", got, doc)
	}
	if _, err := c.Document(context.Background(), key+" other", 1<<20); !errors.Is(err, ErrMiss) {
		t.Errorf("Document of another key: %v, want ErrMiss", err)
	}
	if _, err := c.Document(context.Background(), key, int64(len(doc)-1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Document with a limit below its size: %v, want ErrTooLarge", err)
	}
}

// What a writer of the repository can put under a document's tag is
// refused with an error that is not a miss: an image annotated with
// another key (a document copied from another image's tag), a cache entry,
// a layer that is not a tar of the one document file, a layer whose bytes
// are not its digest's, a layer past the limit before it is read.
func TestCache_Document_poisoned(t *testing.T) {
	const key = "r/app@sha256:1111 spdx-json generator sha256:2222"
	doc := []byte(`{"spdxVersion":"SPDX-2.3"}`)
	for _, tc := range []struct {
		name    string
		poison  func(t *testing.T, tr *testRegistry, c *Cache)
		max     int64
		wantErr error
		want    string
	}{
		{name: "another key's document", poison: func(t *testing.T, tr *testRegistry, c *Cache) {
			c.StoreDocument("r/app@sha256:3333 spdx-json generator sha256:2222", doc)
			flush(c)
			copyTag(t, tr, documentTag("r/app@sha256:3333 spdx-json generator sha256:2222"), documentTag(key))
		}, want: "annotated with another key"},
		{name: "a cache entry", poison: func(t *testing.T, tr *testRegistry, c *Cache) {
			c.Store(key1, randomLayer(t), t0, v1Platform())
			flush(c)
			copyTag(t, tr, key1, documentTag(key))
		}, want: "annotated with another key"},
		{name: "two files", poison: func(t *testing.T, tr *testRegistry, c *Cache) {
			l := orderedTarLayer(t, documentName, string(doc), "other", "x")
			writeEntry(t, tr, documentTag(key), entryOf(t, annotations(documentKey(key)), addendum(l, types.OCILayer, hashOf(t, l.DiffID))))
		}, want: "more than one file"},
		{name: "another file", poison: func(t *testing.T, tr *testRegistry, c *Cache) {
			l := tarLayer(t, map[string]string{"etc/passwd": "root:x:0:0::/root:/bin/sh\n"})
			writeEntry(t, tr, documentTag(key), entryOf(t, annotations(documentKey(key)), addendum(l, types.OCILayer, hashOf(t, l.DiffID))))
		}, want: `holds "etc/passwd"`},
		{name: "bytes not the digest's", poison: func(t *testing.T, tr *testRegistry, c *Cache) {
			c.StoreDocument(key, doc)
			flush(c)
			img, err := remote.Image(tr.repo(t, "cache").Tag(documentTag(key)))
			if err != nil {
				t.Fatal(err)
			}
			ls, _ := img.Layers()
			d, _ := ls[0].Digest()
			good, _ := io.ReadAll(must(ls[0].Compressed()))
			bad := bytes.Clone(good)
			bad[len(bad)/2] ^= 0xff
			tr.swap(d, bad)
		}, wantErr: ErrRefused},
		{name: "a layer past the limit", poison: func(t *testing.T, tr *testRegistry, c *Cache) {
			c.StoreDocument(key, bytes.Repeat([]byte{'x'}, 256<<10))
			flush(c)
		}, max: 1 << 10, wantErr: ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestRegistry(t)
			c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0)})
			tc.poison(t, tr, c)
			max := tc.max
			if max == 0 {
				max = 1 << 20
			}
			_, err := New(Options{Repo: tr.repo(t, "cache")}).Document(context.Background(), key, max)
			switch {
			case err == nil || errors.Is(err, ErrMiss):
				t.Fatalf("Document: %v, want a refusal", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("Document: %v, want %v", err, tc.wantErr)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("Document: %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// copyTag points the tag to at what the tag from of the "cache" repository
// holds.
func copyTag(t *testing.T, tr *testRegistry, from, to string) {
	t.Helper()
	repo := tr.repo(t, "cache")
	img, err := remote.Image(repo.Tag(from))
	if err != nil {
		t.Fatal(err)
	}
	writeEntry(t, tr, to, img)
}

func writeEntry(t *testing.T, tr *testRegistry, tag string, img v1.Image) {
	t.Helper()
	if err := remote.Write(tr.repo(t, "cache").Tag(tag), img); err != nil {
		t.Fatal(err)
	}
}

func v1Platform() v1.Platform { return v1.Platform{OS: "linux", Architecture: "amd64"} }

// orderedTarLayer is a layer of the files named and given in pairs, in
// that order.
func orderedTarLayer(t *testing.T, files ...string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[i+1]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[i+1]))
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}
