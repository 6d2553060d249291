package cache

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// Keys as the build makes them: hex SHA-256 sums, valid as tags.
const (
	key1 = "1111111111111111111111111111111111111111111111111111111111111111"
	key2 = "2222222222222222222222222222222222222222222222222222222222222222"
	key3 = "3333333333333333333333333333333333333333333333333333333333333333"
)

// testRegistry is an in-memory registry that counts blob downloads.
type testRegistry struct {
	srv *httptest.Server

	mu       sync.Mutex
	blobGET  map[string]int // digest → GET count
	requests []string       // "METHOD PATH" of every request
	fail     func(r *http.Request) int
	serve    func(w http.ResponseWriter, r *http.Request) bool // true: served
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{blobGET: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		fail, serve := tr.fail, tr.serve
		tr.requests = append(tr.requests, r.Method+" "+r.URL.Path)
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			tr.blobGET[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		}
		tr.mu.Unlock()
		if fail != nil {
			if code := fail(r); code != 0 {
				http.Error(w, "injected failure", code)
				return
			}
		}
		if serve != nil && serve(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *testRegistry) repo(t *testing.T, path string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(strings.TrimPrefix(tr.srv.URL, "http://") + "/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (tr *testRegistry) gets(h v1.Hash) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.blobGET[h.String()]
}

// since returns the requests made after the first n.
func (tr *testRegistry) since(n int) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.requests[n:]...)
}

func (tr *testRegistry) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.requests)
}

func randomLayer(t *testing.T) v1.Layer {
	t.Helper()
	img, err := random.Image(2048, 1)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls[0]
}

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)

func TestCache_Lookup_afterStore(t *testing.T) {
	tr := newTestRegistry(t)
	c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0)})
	l := randomLayer(t)
	c.Store(key1, l, t0, v1.Platform{})
	c.Store(key2, nil, t0, v1.Platform{})
	if n, err := flush(c); n != 2 || err != nil {
		t.Fatalf("Flush = %d, %v; want 2, nil", n, err)
	}

	type entry struct {
		Digest, DiffID v1.Hash
		Size           int64
		HasLayer       bool
		Created        time.Time
	}
	summarize := func(e Entry) entry {
		s := entry{Created: e.Created.UTC()}
		if e.Layer != nil {
			s.HasLayer = true
			s.Digest, _ = e.Layer.Digest()
			s.DiffID, _ = e.Layer.DiffID()
			s.Size, _ = e.Layer.Size()
		}
		return s
	}
	wantDigest, _ := l.Digest()
	wantDiffID, _ := l.DiffID()
	wantSize, _ := l.Size()

	tests := []struct {
		key  string
		want entry
	}{
		{key: key1, want: entry{Digest: wantDigest, DiffID: wantDiffID, Size: wantSize, HasLayer: true, Created: t0}},
		{key: key2, want: entry{Created: t0}},
	}
	for _, tc := range tests {
		t.Run(tc.key[:4], func(t *testing.T) {
			// A fresh Cache, as a new build would have.
			c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0.Add(time.Hour)), TTL: 24 * time.Hour})
			e, err := c.Lookup(context.Background(), tc.key)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if diff := cmp.Diff(tc.want, summarize(e)); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
		})
	}

	// A lookup reads no layer bytes; reading the hit's layer does.
	if n := tr.gets(wantDigest); n != 0 {
		t.Errorf("layer blob downloaded %d times by Store and Lookup, want 0", n)
	}
	e, err := c.Lookup(context.Background(), key1)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.Layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	if n := tr.gets(wantDigest); n != 1 {
		t.Errorf("layer blob downloaded %d times after reading it, want 1", n)
	}
}

// An entry is a plain OCI image: OCI media types (the layer's bytes under
// the OCI name), the key in the config's label and in an annotation, the
// creation time in the standard annotation, the layer's diff ID on its
// descriptor.
func TestCache_Store_plainImage(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "team/cache")
	c := New(Options{Repo: repo, Now: clockAt(t0)})
	l := randomLayer(t)
	if mt, _ := l.MediaType(); mt != types.DockerLayer {
		t.Fatalf("the test layer is a %s, want a Docker layer", mt)
	}
	wantDiffID, _ := l.DiffID()
	c.Store(key1, l, t0, v1.Platform{})
	c.Store(key2, nil, t0, v1.Platform{})
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{key1, key2} {
		img, err := remote.Image(repo.Tag(key))
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("validate.Image(%s): %v", key[:4], err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
			t.Errorf("%s: media types %s, %s; want OCI's", key[:4], m.MediaType, m.Config.MediaType)
		}
		wantAnn := map[string]string{keyAnnotation: key, createdAnnotation: "2024-05-01T12:00:00.123456789Z"}
		if diff := cmp.Diff(wantAnn, m.Annotations); diff != "" {
			t.Errorf("%s: manifest annotations (-want +got):\n%s", key[:4], diff)
		}
		if key == key1 {
			if len(m.Layers) != 1 {
				t.Fatalf("%s: %d layers, want 1", key[:4], len(m.Layers))
			}
			if d := m.Layers[0]; d.MediaType != types.OCILayer || d.Annotations[diffIDAnnotation] != wantDiffID.String() {
				t.Errorf("%s: layer descriptor %s with annotations %v; want %s with diff ID %s",
					key[:4], d.MediaType, d.Annotations, types.OCILayer, wantDiffID)
			}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := cf.Config.Labels[keyLabel]; got != key {
			t.Errorf("%s: key label = %q", key[:4], got)
		}
		if !cf.Created.Time.Equal(t0) {
			t.Errorf("%s: config created %v, want %v", key[:4], cf.Created.Time, t0)
		}
	}
}

// A lookup is one request, the manifest's: the layer's digest, diff ID,
// size and media type come from it, and nothing is fetched until the
// layer's bytes are read.
func TestCache_Lookup_oneRequest(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	l := randomLayer(t)
	// A fresh Cache, as a new build would have; its client is shared, as
	// the executor's are, so the registry's ping is made once, up front.
	puller, err := remote.NewPuller()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(repo.Tag("ping"), remote.Reuse(puller)); err == nil {
		t.Fatal("HEAD of an unknown tag succeeded")
	}
	store := New(Options{Repo: repo})
	store.Store(key1, l, t0, v1.Platform{})
	if _, err := flush(store); err != nil {
		t.Fatal(err)
	}
	c := New(Options{Repo: repo, Remote: func(bool) []remote.Option { return []remote.Option{remote.Reuse(puller)} }})
	n := tr.count()
	e, err := c.Lookup(context.Background(), key1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := e.Layer.Digest()
	diffID, _ := e.Layer.DiffID()
	size, _ := e.Layer.Size()
	mt, _ := e.Layer.MediaType()
	wantD, _ := l.Digest()
	wantDiffID, _ := l.DiffID()
	wantSize, _ := l.Size()
	if d != wantD || diffID != wantDiffID || size != wantSize || mt != types.OCILayer {
		t.Errorf("layer %s, diff ID %s, size %d, %s; want %s, %s, %d, %s", d, diffID, size, mt, wantD, wantDiffID, wantSize, types.OCILayer)
	}
	want := []string{"GET /v2/cache/manifests/" + key1}
	if diff := cmp.Diff(want, tr.since(n)); diff != "" {
		t.Errorf("requests of a lookup (-want +got):\n%s", diff)
	}
	rc, err := e.Layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	wrc, _ := l.Compressed()
	wantBytes, _ := io.ReadAll(wrc)
	if !bytes.Equal(got, wantBytes) {
		t.Errorf("the layer's bytes differ from what was stored")
	}
}

// Entries that earlier versions wrote (Docker manifests without
// annotations) are read through their config, and give the same entry.
func TestCache_Lookup_dockerEntry(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	l := randomLayer(t)
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.DockerManifestSchema2), types.DockerConfigJSON), l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: t0}
	cf.Config.Labels = map[string]string{keyLabel: key1}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Tag(key1), img); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{Repo: repo}).Lookup(context.Background(), key1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := e.Layer.Digest()
	diffID, _ := e.Layer.DiffID()
	wantD, _ := l.Digest()
	wantDiffID, _ := l.DiffID()
	if d != wantD || diffID != wantDiffID || !e.Created.Equal(t0) {
		t.Errorf("entry: layer %s, diff ID %s, created %v; want %s, %s, %v", d, diffID, e.Created, wantD, wantDiffID, t0)
	}
}

func TestCache_Lookup_miss(t *testing.T) {
	tr := newTestRegistry(t)
	c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0)})
	c.Store(key1, nil, t0, v1.Platform{})
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		repo string
		key  string
	}{
		{name: "unknown key", repo: "cache", key: key3},
		{name: "unknown repository", repo: "nothing/here", key: key1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{Repo: tr.repo(t, tc.repo)})
			e, err := c.Lookup(context.Background(), tc.key)
			if !errors.Is(err, ErrMiss) {
				t.Errorf("Lookup = %+v, %v; want ErrMiss", e, err)
			}
		})
	}
}

func TestCache_Lookup_ttl(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	c := New(Options{Repo: repo, Now: clockAt(t0)})
	c.Store(key1, randomLayer(t), t0, v1.Platform{})
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	const ttl = 14 * 24 * time.Hour
	tests := []struct {
		name    string
		ttl     time.Duration
		now     time.Time
		wantHit bool
	}{
		{name: "fresh", ttl: ttl, now: t0.Add(time.Minute), wantHit: true},
		{name: "just before expiry", ttl: ttl, now: t0.Add(ttl - time.Second), wantHit: true},
		{name: "expired", ttl: ttl, now: t0.Add(ttl + time.Second), wantHit: false},
		{name: "no TTL is forever", ttl: 0, now: t0.Add(100 * ttl), wantHit: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{Repo: repo, TTL: tc.ttl, Now: clockAt(tc.now)})
			e, err := c.Lookup(context.Background(), key1)
			if tc.wantHit {
				if err != nil || e.Layer == nil {
					t.Errorf("Lookup = %+v, %v; want a hit", e, err)
				}
				return
			}
			if !errors.Is(err, ErrMiss) {
				t.Errorf("Lookup = %+v, %v; want ErrMiss", e, err)
			}
		})
	}
}

func TestCache_Lookup_corrupt(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	withLabels := func(img v1.Image, labels map[string]string) v1.Image {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.Config.Labels = labels
		cf.Created = v1.Time{Time: t0}
		img, err = mutate.ConfigFile(img, cf)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	twoLayers, err := mutate.AppendLayers(empty.Image, randomLayer(t), randomLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	oneLayer, err := mutate.AppendLayers(empty.Image, randomLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	annotated := func(img v1.Image, ann map[string]string) v1.Image {
		return mutate.Annotations(img, ann).(v1.Image)
	}
	tests := []struct {
		name string
		img  v1.Image
	}{
		{name: "no key label", img: withLabels(empty.Image, nil)},
		{name: "another key's label", img: withLabels(empty.Image, map[string]string{keyLabel: key2})},
		{name: "two layers", img: withLabels(twoLayers, map[string]string{keyLabel: key1})},
		{name: "another key's annotation", img: annotated(withLabels(empty.Image, map[string]string{keyLabel: key1}),
			map[string]string{keyAnnotation: key2, createdAnnotation: t0.Format(time.RFC3339Nano)})},
		{name: "unreadable created annotation", img: annotated(empty.Image,
			map[string]string{keyAnnotation: key1, createdAnnotation: "yesterday"})},
		{name: "layer without its diff ID", img: annotated(withLabels(oneLayer, map[string]string{keyLabel: key1}),
			map[string]string{keyAnnotation: key1, createdAnnotation: t0.Format(time.RFC3339Nano)})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := remote.Write(repo.Tag(key1), tc.img); err != nil {
				t.Fatal(err)
			}
			c := New(Options{Repo: repo, Now: clockAt(t0)})
			e, err := c.Lookup(context.Background(), key1)
			if err == nil {
				t.Fatalf("Lookup = %+v, want an error", e)
			}
			if errors.Is(err, ErrMiss) {
				t.Errorf("Lookup error %v is ErrMiss, want a read error", err)
			}
			if e.Layer != nil {
				t.Errorf("Lookup returned a layer with the error")
			}
		})
	}
}

func TestCache_Lookup_unreachable(t *testing.T) {
	t.Run("closed server", func(t *testing.T) {
		tr := newTestRegistry(t)
		repo := tr.repo(t, "cache")
		tr.srv.Close()
		c := New(Options{Repo: repo})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e, err := c.Lookup(ctx, key1)
		if err == nil || errors.Is(err, ErrMiss) {
			t.Errorf("Lookup = %+v, %v; want an error that is not ErrMiss", e, err)
		}
	})
	for _, code := range []int{http.StatusInternalServerError, http.StatusForbidden, http.StatusUnauthorized} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			tr := newTestRegistry(t)
			tr.fail = func(*http.Request) int { return code }
			c := New(Options{Repo: tr.repo(t, "cache"), Remote: func(bool) []remote.Option {
				return []remote.Option{remote.WithRetryBackoff(remote.Backoff{Steps: 1})}
			}})
			e, err := c.Lookup(context.Background(), key1)
			if err == nil || errors.Is(err, ErrMiss) {
				t.Errorf("Lookup = %+v, %v; want an error that is not ErrMiss", e, err)
			}
		})
	}
}

// failingLayer is a layer whose bytes cannot be read.
type failingLayer struct{ v1.Layer }

func (failingLayer) Compressed() (io.ReadCloser, error) {
	return nil, errors.New("layer file vanished")
}

func TestCache_Flush(t *testing.T) {
	tests := []struct {
		name      string
		layers    []v1.Layer // one Store each, keys derived from the index
		down      bool       // the registry rejects every write
		wantCount int
		wantErr   string
	}{
		{name: "nothing stored"},
		{name: "several", layers: []v1.Layer{randomLayer(t), nil, randomLayer(t), nil, randomLayer(t)}, wantCount: 5},
		{name: "one fails", layers: []v1.Layer{randomLayer(t), failingLayer{randomLayer(t)}, nil}, wantCount: 2, wantErr: "layer file vanished"},
		{name: "registry rejects writes", layers: []v1.Layer{randomLayer(t), nil}, down: true, wantCount: 0, wantErr: "writing cache entry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestRegistry(t)
			if tc.down {
				tr.fail = func(r *http.Request) int {
					if r.Method != http.MethodGet && r.Method != http.MethodHead {
						return http.StatusForbidden
					}
					return 0
				}
			}
			c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0)})
			for i, l := range tc.layers {
				c.Store(strings.Repeat(string(rune('a'+i)), 64), l, t0, v1.Platform{})
			}
			n, err := flush(c)
			if n != tc.wantCount {
				t.Errorf("Flush count = %d, want %d", n, tc.wantCount)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Flush error = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Flush error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCache_Flush_again(t *testing.T) {
	// Flush reports the stores started so far; more may follow.
	tr := newTestRegistry(t)
	c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0)})
	c.Store(key1, nil, t0, v1.Platform{})
	if n, err := flush(c); n != 1 || err != nil {
		t.Fatalf("first Flush = %d, %v", n, err)
	}
	c.Store(key2, randomLayer(t), t0, v1.Platform{})
	if n, err := flush(c); n != 2 || err != nil {
		t.Fatalf("second Flush = %d, %v; want 2, nil", n, err)
	}
}

func TestCache_Repo(t *testing.T) {
	repo, err := name.NewRepository("example.com/a/b")
	if err != nil {
		t.Fatal(err)
	}
	if got := New(Options{Repo: repo}).Repo(); got != repo {
		t.Errorf("Repo() = %v, want %v", got, repo)
	}
}

// indexOf is an index as rootfs.Index makes them: a gzip-compressed tar of
// empty entries.
func indexOf(t *testing.T, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCache_Index checks that a stored layer index is a valid plain image
// read back whole, that another layer's index is a miss, and that an image
// under an index's tag that is not that index is refused.
func TestCache_Index(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	c := New(Options{Repo: repo, Now: clockAt(t0)})
	layer := randomLayer(t)
	d, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	index := indexOf(t, "etc/hostname", "srv/app")
	c.StoreIndex(d, index, false)
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	c.StoreIndex(d, indexOf(t, "other"), false) // stored already: a no-op
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(repo.Tag(indexTag(d)))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}

	got, err := New(Options{Repo: repo}).Index(context.Background(), d)
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	if !bytes.Equal(got, index) {
		t.Errorf("Index = %q, want what was stored", got)
	}

	other := randomLayer(t)
	od, _ := other.Digest()
	if _, err := c.Index(context.Background(), od); !errors.Is(err, ErrMiss) {
		t.Errorf("Index of a layer never indexed: %v, want ErrMiss", err)
	}

	// A cache entry pushed under the other layer's index tag.
	c.Store(key1, layer, t0, v1.Platform{})
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
	entry, err := remote.Image(repo.Tag(key1))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Tag(indexTag(od)), entry); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Index(context.Background(), od); err == nil || errors.Is(err, ErrMiss) {
		t.Errorf("Index of a tag holding something else: %v, want an error naming it", err)
	}
}

// flush waits for c's writes and returns how many entries it stored.
func flush(c *Cache) (int, error) {
	f, err := c.Flush(context.Background())
	return f.Stored, err
}

// TestCache_Flush_context checks that Flush returns when its context ends,
// saying how many writes are still under way, and reports them once they
// end.
func TestCache_Flush_context(t *testing.T) {
	tr := newTestRegistry(t)
	release := make(chan struct{})
	tr.fail = func(r *http.Request) int {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			<-release // the entry's manifest hangs until released
		}
		return 0
	}
	c := New(Options{Repo: tr.repo(t, "cache"), Now: clockAt(t0)})
	c.Store(key1, nil, t0, v1.Platform{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	f, err := c.Flush(ctx)
	if f.Pending != 1 || f.Stored != 0 {
		t.Errorf("Flush on a hanging write = %+v, want 1 pending, 0 stored", f)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 writes still under way") {
		t.Errorf("Flush error = %v, want the deadline and the pending write", err)
	}
	close(release)
	if f, err := c.Flush(context.Background()); f != (Flushed{Stored: 1}) || err != nil {
		t.Errorf("Flush once released = %+v, %v; want 1 stored, nothing pending", f, err)
	}
}

// TestCache_Mountable checks that a stored layer comes back as a layer a
// push mounts from the cache repository (the entry's tag, as the executor
// always named it), a large one only once its upload ended, and that other
// layers come back as they are.
func TestCache_Mountable(t *testing.T) {
	tr := newTestRegistry(t)
	repo := tr.repo(t, "cache")
	c := New(Options{Repo: repo, Now: clockAt(t0)})

	other := randomLayer(t)
	if got := c.Mountable(t.Context(), other); got != other {
		t.Errorf("Mountable(a layer never stored) = %#v, want it unchanged", got)
	}

	small := randomLayer(t)
	c.Store(key1, small, t0, v1.Platform{})
	ml, ok := c.Mountable(t.Context(), small).(*remote.MountableLayer)
	if !ok || ml.Layer != small || ml.Reference.String() != repo.Tag(key1).String() {
		t.Errorf("Mountable(a stored layer) = %#v, want a MountableLayer of %s", ml, repo.Tag(key1))
	}

	// A large layer: Mountable waits for its blob's upload.
	release := make(chan struct{})
	var mu sync.Mutex
	uploaded := false
	tr.fail = func(r *http.Request) int {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			<-release
			mu.Lock()
			uploaded = true
			mu.Unlock()
		}
		return 0
	}
	img, err := random.Image(MountWorthwhile+1, 1)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	big := ls[0]
	c.Store(key2, big, t0, v1.Platform{})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	c.Mountable(ctx, big) // gives up with ctx
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("Mountable of a large layer being uploaded returned after %v, want it to wait for the upload or ctx", waited)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(release)
	}()
	ml, ok = c.Mountable(t.Context(), big).(*remote.MountableLayer)
	mu.Lock()
	done := uploaded
	mu.Unlock()
	if !done {
		t.Error("Mountable of a large layer returned before its upload ended")
	}
	if !ok || ml.Reference.String() != repo.Tag(key2).String() {
		t.Errorf("Mountable(a large stored layer) = %#v, want a MountableLayer of %s", ml, repo.Tag(key2))
	}
	if _, err := flush(c); err != nil {
		t.Fatal(err)
	}
}
