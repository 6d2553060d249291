package build_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/test/testenv"
)

// docsTar is a tar of text files under usr/share/docs of some 12 MB, which
// compresses as a base image's files do, to more than cache.TwinMinSize;
// seed makes its words.
func docsTar(t *testing.T, seed int64, extra ...string) []byte {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name, body string) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	for i := 0; i < 40; i++ {
		var body strings.Builder
		for body.Len() < 300<<10 {
			fmt.Fprintf(&body, "usr/lib/x86_64-linux-gnu/lib%d.so.%d: ELF 64-bit LSB shared object %x\n", r.Intn(5000), r.Intn(7), r.Uint32())
		}
		add(fmt.Sprintf("usr/share/docs/f%d", i), body.String())
	}
	for i := 0; i+1 < len(extra); i += 2 {
		add(extra[i], extra[i+1])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bigBase is a base image of busybox and a large gzip layer (docsTar),
// that layer first or last.
type bigBase struct {
	ref    string
	layers []v1.Layer // as pushed
	docs   v1.Layer
	tar    []byte // the docs layer's
}

func pushBigBase(t *testing.T, f *fixture, docsFirst bool) bigBase {
	t.Helper()
	busybox, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	bl, err := busybox.Layers()
	if err != nil {
		t.Fatal(err)
	}
	data := docsTar(t, 1)
	docs, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := docs.Size(); size < cache.TwinMinSize {
		t.Fatalf("the docs layer is %d bytes, want at least cache.TwinMinSize (%d)", size, cache.TwinMinSize)
	}
	layers := append(append([]v1.Layer{}, bl...), docs)
	if docsFirst {
		layers = append([]v1.Layer{docs}, bl...)
	}
	cf, err := busybox.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: cf.OS, Architecture: cf.Architecture, Config: cf.Config})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(f.reg.host + "/base/bigbase:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	f.base = ref.String()
	return bigBase{ref: ref.String(), layers: layers, docs: docs, tar: data}
}

// The Dockerfile of the twin tests: a change of "a" runs the RUN again,
// which needs the base's whole tree.
const twinDockerfile = `FROM {{BASE}}
COPY a /a
RUN cat /a /usr/share/docs/f3 > /out
`

func hashOf(t *testing.T, f func() (v1.Hash, error)) v1.Hash {
	t.Helper()
	h, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// twinOf reads the twin the cache holds for l (its layer descriptor), nil
// when there is none.
func twinOf(t *testing.T, f *fixture, l v1.Layer) *v1.Descriptor {
	t.Helper()
	d := hashOf(t, l.Digest)
	img, err := remote.Image(f.cacheTo.Tag("sha256-" + d.Hex + ".zstd"))
	if err != nil {
		return nil
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("the twin of %s has %d layers", d, len(m.Layers))
	}
	return &m.Layers[0]
}

// A build that unpacks a base's gzip layer stores its zstd twin in the
// cache; a later build that must unpack the base reads the twin instead of
// the layer, makes the same tree, and its image keeps the layer.
func TestBuild_layerTwin(t *testing.T) {
	for _, docsFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("docsFirst=%v", docsFirst), func(t *testing.T) {
			f := newFixture(t, map[string]string{"a": "one\n"})
			base := pushBigBase(t, f, docsFirst)
			mustBuild(t, f, twinDockerfile, true)

			twin := twinOf(t, f, base.docs)
			if twin == nil {
				t.Fatal("the first build stored no twin of the docs layer")
			}
			if twin.MediaType != types.OCILayerZStd {
				t.Errorf("the twin is a %s, want %s", twin.MediaType, types.OCILayerZStd)
			}
			if got, want := twin.Annotations["dev.slipway.cache.diff-id"], hashOf(t, base.docs.DiffID).String(); got != want {
				t.Errorf("the twin's diff ID is %s, want the layer's %s", got, want)
			}

			writeContext(t, f.ctxDir, map[string]string{"a": "two\n"})
			f.reg.resetCounts()
			img, _ := mustBuild(t, f, twinDockerfile, true)
			if n := f.reg.gets(hashOf(t, base.docs.Digest)); n != 0 {
				t.Errorf("the docs layer was downloaded %d times, want 0 (its twin instead)", n)
			}
			if n := f.reg.gets(twin.Digest); n != 1 {
				t.Errorf("the twin was downloaded %d times, want 1", n)
			}
			ls := layerDigests(t, img)
			for i, l := range base.layers {
				if i >= len(ls) || ls[i] != hashOf(t, l.Digest) {
					t.Fatalf("the image's layers %v do not start with the base's", ls)
				}
			}
			want := "two\n" + docsFile(t, base.tar, "usr/share/docs/f3")
			if got, _ := fileContent(t, img, "/out"); got != want {
				t.Errorf("/out holds %d bytes, want the changed file and the base's docs file (%d bytes)", len(got), len(want))
			}
		})
	}
}

// docsFile is the content of name in the tar data.
func docsFile(t *testing.T, data []byte, name string) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the tar: %v", name, err)
		}
		if h.Name == name {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

// Attacks on twins by someone who can push to the cache repository,
// wherever the layer is in the base: a twin that is no zstd is left for
// the layer at once; one that is not the layer's tar is refused once read,
// and the build starts again without it (as for a refused entry). Either
// way the image is the genuine layer's, and the build replaces the twin
// with a genuine one.
func TestBuild_layerTwinPoisoned(t *testing.T) {
	evilTar := func(t *testing.T) []byte {
		return docsTar(t, 2, "usr/share/docs/f3", "evil docs\n", "etc/evil", "pwned\n")
	}
	// Within the window twins may ask for, so that only the content is
	// wrong.
	zstdOf := func(t *testing.T, data []byte) []byte {
		var b bytes.Buffer
		w, err := zstd.NewWriter(&b, zstd.WithWindowSize(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		return b.Bytes()
	}
	twinImage := func(t *testing.T, original, diffID v1.Hash, blob []byte) v1.Image {
		l := static.NewLayer(blob, types.OCILayerZStd)
		img := poisonedEntry(t, "zstd:"+original.String(), "1970-01-01T00:00:00Z", mutate.Addendum{
			Layer: l, MediaType: types.OCILayerZStd, Annotations: map[string]string{"dev.slipway.cache.diff-id": diffID.String()},
		})
		return img
	}
	skippable := func(payload string) []byte {
		return append([]byte{0x50, 0x2a, 0x4d, 0x18, byte(len(payload)), 0, 0, 0}, payload...)
	}
	tests := []struct {
		name string
		// poison writes the attacker's twin of the docs layer.
		poison func(t *testing.T, f *fixture, base bigBase)
		// early: the twin fails before its first bytes, and the layer is
		// read at once; else it fails once read and the build starts
		// again.
		early bool
	}{{
		name:  "bytes that are not zstd",
		early: true,
		poison: func(t *testing.T, f *fixture, base bigBase) {
			img := twinImage(t, hashOf(t, base.docs.Digest), hashOf(t, base.docs.DiffID), bytes.Repeat([]byte("not zstd "), 1000))
			if err := remote.Write(f.cacheTo.Tag("sha256-"+hashOf(t, base.docs.Digest).Hex+".zstd"), img); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "another tar under the layer's diff ID",
		poison: func(t *testing.T, f *fixture, base bigBase) {
			img := twinImage(t, hashOf(t, base.docs.Digest), hashOf(t, base.docs.DiffID), zstdOf(t, evilTar(t)))
			if err := remote.Write(f.cacheTo.Tag("sha256-"+hashOf(t, base.docs.Digest).Hex+".zstd"), img); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "a blob that is not its digest",
		poison: func(t *testing.T, f *fixture, base bigBase) {
			// A genuine twin with a skippable frame after it; the registry
			// serves the same bytes but for that frame: the same size and
			// tar, another digest.
			genuine := zstdOf(t, base.tar)
			img := twinImage(t, hashOf(t, base.docs.Digest), hashOf(t, base.docs.DiffID), append(genuine, skippable("good")...))
			if err := remote.Write(f.cacheTo.Tag("sha256-"+hashOf(t, base.docs.Digest).Hex+".zstd"), img); err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			f.cacheRemote = []remote.Option{remote.WithTransport(&swapBlobs{
				inner: http.DefaultTransport, swap: map[string]bool{m.Layers[0].Digest.String(): true},
				content: append(genuine, skippable("evil")...),
			})}
		},
	}}
	for _, tc := range tests {
		for _, docsFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/docsFirst=%v", tc.name, docsFirst), func(t *testing.T) {
				f := newFixture(t, map[string]string{"a": "one\n"})
				base := pushBigBase(t, f, docsFirst)
				mustBuild(t, f, twinDockerfile, true)
				if twinOf(t, f, base.docs) == nil {
					t.Fatal("the first build stored no twin")
				}
				tc.poison(t, f, base)

				writeContext(t, f.ctxDir, map[string]string{"a": "two\n"})
				img, _, err := f.build(t, twinDockerfile, true)
				if err != nil {
					t.Fatalf("Build with a poisoned twin: %v; want it built from the layer", err)
				}
				if _, ok := fileContent(t, img, "/etc/evil"); ok {
					t.Errorf("the image holds the attacker's /etc/evil")
				}
				want := "two\n" + docsFile(t, base.tar, "usr/share/docs/f3")
				if got, _ := fileContent(t, img, "/out"); got != want {
					t.Errorf("/out = %.40q..., want the changed file and the genuine docs file", got)
				}
				const restarted = "WARNING: a layer of the cache was refused, building again without it"
				withoutTwin := "WARNING: unpacking layer " + hashOf(t, base.docs.Digest).String() + " without its twin"
				switch {
				case tc.early && (strings.Contains(f.log, restarted) || !strings.Contains(f.log, withoutTwin)):
					t.Errorf("the log does not say %q alone: the build should not start again", withoutTwin)
				case !tc.early && !strings.Contains(f.log, restarted):
					t.Errorf("the log does not say %q", restarted)
				}

				// The build replaced the twin with the genuine one.
				f.cacheRemote = nil
				c := cache.New(cache.Options{Repo: f.cacheTo})
				tw, err := c.Twin(context.Background(), hashOf(t, base.docs.Digest), hashOf(t, base.docs.DiffID), 1<<40)
				if err != nil {
					t.Fatalf("reading the twin after the build: %v", err)
				}
				rc, err := tw.Open()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				if cerr := rc.Close(); err == nil {
					err = cerr
				}
				if err != nil || !bytes.Equal(got, base.tar) {
					t.Errorf("the twin after the build: %d bytes, %v; want the layer's tar", len(got), err)
				}
			})
		}
	}
}
