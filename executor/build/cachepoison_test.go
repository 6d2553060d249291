package build_test

import (
	"archive/tar"
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Attacks on the layer cache by someone who can push to the cache repository (see
// executor/cache): each replaces the entries a first build stored with a poisoned one under
// the same tag, and a second build that needs the file system of the poisoned step (its
// next step changed) must treat it as a miss, run the step again and make an image without
// the attacker's file.
func TestBuild_cachePoisoned(t *testing.T) {
	const before = `FROM {{BASE}}
RUN echo one > /one
RUN echo two > /two
`
	const after = `FROM {{BASE}}
RUN echo one > /one
RUN echo TWO > /two
`
	evil := evilLayer(t)
	tests := []struct {
		name string
		// poison returns what to push under the tag of an entry whose annotated key is key
		// and whose manifest is m (nil: leave the entry as it is).
		poison func(t *testing.T, key string, m *v1.Manifest, genuine v1.Layer) v1.Image
		// swap, when set, makes the cache's registry serve the evil layer's bytes for every
		// layer blob of an entry.
		swap bool
	}{{
		name: "another key's entry",
		poison: func(t *testing.T, key string, m *v1.Manifest, genuine v1.Layer) v1.Image {
			return poisonedEntry(t, strings.Repeat("e", 64), m.Annotations["org.opencontainers.image.created"], evilAnnotated(t, evil, nil))
		},
	}, {
		name: "a layer that is not its diff ID",
		poison: func(t *testing.T, key string, m *v1.Manifest, genuine v1.Layer) v1.Image {
			diffID, _ := genuine.DiffID()
			return poisonedEntry(t, key, m.Annotations["org.opencontainers.image.created"], evilAnnotated(t, evil, &diffID))
		},
	}, {
		name: "a blob that is not its digest",
		swap: true,
	}, {
		name: "two layers",
		poison: func(t *testing.T, key string, m *v1.Manifest, genuine v1.Layer) v1.Image {
			diffID, _ := genuine.DiffID()
			return poisonedEntry(t, key, m.Annotations["org.opencontainers.image.created"],
				mutate.Addendum{Layer: genuine, MediaType: types.OCILayer, Annotations: map[string]string{"dev.slipway.cache.diff-id": diffID.String()}},
				evilAnnotated(t, evil, nil))
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			mustBuild(t, f, before, true)

			// The attacker lists the cache's tags and replaces every entry.
			tags, err := remote.List(f.cacheTo)
			if err != nil {
				t.Fatal(err)
			}
			entryLayers := map[string]bool{}
			for _, tag := range tags {
				if strings.HasSuffix(tag, ".index") {
					continue
				}
				img, err := remote.Image(f.cacheTo.Tag(tag))
				if err != nil {
					t.Fatal(err)
				}
				m, err := img.Manifest()
				if err != nil {
					t.Fatal(err)
				}
				ls, err := img.Layers()
				if err != nil || len(ls) != 1 {
					t.Fatalf("entry %s: %d layers, %v", tag, len(ls), err)
				}
				entryLayers[m.Layers[0].Digest.String()] = true
				if tc.poison != nil {
					if err := remote.Write(f.cacheTo.Tag(tag), tc.poison(t, tag, m, ls[0])); err != nil {
						t.Fatal(err)
					}
				}
			}
			if len(entryLayers) != 2 {
				t.Fatalf("the first build stored %d entries with layers, want 2", len(entryLayers))
			}
			if tc.swap {
				evilBytes := compressed(t, evil)
				f.cacheRemote = []remote.Option{remote.WithTransport(&swapBlobs{
					inner: http.DefaultTransport, swap: entryLayers, content: evilBytes,
				})}
			}

			img, rep, err := f.build(t, after, true)
			if err != nil {
				t.Fatalf("Build with a poisoned cache: %v; want it to build without the entry", err)
			}
			if diff := cmp.Diff(counts{0, 2}, cacheCounts(rep)); diff != "" {
				t.Errorf("cache counts (-want +got):\n%s", diff)
			}
			files := flatten(t, img)
			if _, ok := files["etc/evil"]; ok {
				t.Errorf("the image holds the attacker's /etc/evil")
			}
			for p, want := range map[string]string{"one": "one\n", "two": "TWO\n"} {
				if got, ok := fileContent(t, img, p); !ok || got != want {
					t.Errorf("/%s = %q (found %v), want %q", p, got, ok, want)
				}
			}
		})
	}
}

// evilLayer is the attacker's layer: the step's own file, and /etc/evil.
func evilLayer(t *testing.T) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range map[string]string{"one": "one\n", "etc/evil": "pwned\n"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// evilAnnotated is the evil layer as an entry's layer, annotated with diffID (its own when
// nil).
func evilAnnotated(t *testing.T, evil v1.Layer, diffID *v1.Hash) mutate.Addendum {
	t.Helper()
	d, err := evil.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if diffID != nil {
		d = *diffID
	}
	return mutate.Addendum{Layer: evil, MediaType: types.OCILayer, Annotations: map[string]string{"dev.slipway.cache.diff-id": d.String()}}
}

// poisonedEntry is an entry as the executor writes them, annotated with key and created,
// holding the given layers.
func poisonedEntry(t *testing.T, key, created string, layers ...mutate.Addendum) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var err error
	for _, a := range layers {
		if img, err = mutate.Append(img, a); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"dev.slipway.cache.key": key}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return mutate.Annotations(img, map[string]string{"dev.slipway.cache.key": key, "org.opencontainers.image.created": created}).(v1.Image)
}

func compressed(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
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

// swapBlobs is a registry that serves content for the blobs of swap: what a registry that
// does not check the digests of what it stores, or an attacker in front of it, can do.
type swapBlobs struct {
	inner   http.RoundTripper
	swap    map[string]bool
	content []byte

	mu     sync.Mutex
	served int
}

func (s *swapBlobs) RoundTrip(r *http.Request) (*http.Response, error) {
	i := strings.LastIndex(r.URL.Path, "/blobs/")
	if r.Method == http.MethodGet && i >= 0 && s.swap[r.URL.Path[i+len("/blobs/"):]] {
		s.mu.Lock()
		s.served++
		s.mu.Unlock()
		return &http.Response{
			StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Type": {"application/octet-stream"}},
			Body:          io.NopCloser(bytes.NewReader(s.content)),
			ContentLength: int64(len(s.content)),
			Request:       r,
		}, nil
	}
	return s.inner.RoundTrip(r)
}
