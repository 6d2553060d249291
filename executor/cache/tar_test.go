package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// openTarOf looks key up in a fresh Cache and opens its layer's tar.
func openTarOf(t *testing.T, c *Cache, key string) (io.ReadCloser, error) {
	t.Helper()
	e, err := c.Lookup(context.Background(), key)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	inner := e.Layer
	if ml, ok := inner.(*remote.MountableLayer); ok {
		inner = ml.Layer
	}
	o, ok := inner.(interface{ OpenTar() (io.ReadCloser, error) })
	if !ok {
		t.Fatalf("an entry's layer (%T) has no OpenTar", inner)
	}
	return o.OpenTar()
}

// An entry's layer opened as a tar is its tar, decompressed once and
// checked as it is read: a layer that is not its diff ID is refused at its
// end (and its key is a miss from then on); a reader given up early is no
// refusal.
func TestCache_OpenTar(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	data := compressibleTar(t, 1000, "entry")
	l := gzipLayer(t, data)
	c := New(Options{Repo: repo})
	c.Store(key1, l, t0, v1.Platform{})
	// Larger than what a reader decompresses ahead of its caller (a few MiB),
	// so that one given up early has not read it all.
	evil := compressibleTar(t, 4000, "evil")
	if err := remote.Write(repo.Tag(key2), entryOf(t, annotations(key2), addendum(gzipLayer(t, evil), types.OCILayer, sha256Of(data)))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	t.Run("genuine", func(t *testing.T) {
		rc, err := openTarOf(t, New(Options{Repo: repo}), key1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("read %d bytes, %v; want the layer's tar", len(got), err)
		}
	})
	t.Run("not its diff ID", func(t *testing.T) {
		c := New(Options{Repo: repo})
		rc, err := openTarOf(t, c, key2)
		if err != nil {
			t.Fatal(err)
		}
		_, rerr := io.ReadAll(rc)
		cerr := rc.Close()
		if !errors.Is(rerr, ErrRefused) || !errors.Is(cerr, ErrRefused) {
			t.Errorf("read = %v, close = %v; want both ErrRefused", rerr, cerr)
		}
		if _, err := c.Lookup(context.Background(), key2); !errors.Is(err, ErrMiss) {
			t.Errorf("Lookup after the refusal = %v, want ErrMiss", err)
		}
	})
	t.Run("given up", func(t *testing.T) {
		c := New(Options{Repo: repo})
		rc, err := openTarOf(t, c, key2)
		if err != nil {
			t.Fatal(err)
		}
		rc.Read(make([]byte, 100))
		rc.(interface{ Abort() }).Abort()
		if err := rc.Close(); errors.Is(err, ErrRefused) {
			t.Errorf("Close after Abort = %v, want no refusal", err)
		}
		if _, err := c.Lookup(context.Background(), key2); err != nil {
			t.Errorf("Lookup after a reader was given up = %v, want the entry", err)
		}
	})
}
