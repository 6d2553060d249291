package build_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// Tests of cache mounts kept between builds (issue 17). Each build is a
// fresh executor: a new work directory, a new cache client, a new
// build.CacheMounts; what one build saves the next one finds only in the
// registry.

// mountBuild runs one build with cache mounts kept in f's cache repository
// under scope, waits for its saves as the executor does, and returns its
// image and what it did with saved mounts.
func mountBuild(t *testing.T, f *fixture, dockerfile, scope string, set ...func(*build.CacheMounts)) (v1.Image, *result.CacheMounts) {
	t.Helper()
	img, stats, err := tryMountBuild(t, f, dockerfile, scope, set...)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return img, stats
}

func tryMountBuild(t *testing.T, f *fixture, dockerfile, scope string, set ...func(*build.CacheMounts)) (v1.Image, *result.CacheMounts, error) {
	t.Helper()
	var cm *build.CacheMounts
	// The saves log after the build returns: the log is read after Wait.
	var logBuf strings.Builder
	img, _, err := f.build(t, dockerfile, true, func(o *build.Options) {
		o.Log = &syncBuilder{b: &logBuf}
		cm = &build.CacheMounts{Store: o.Cache.(*cache.Cache), Repo: f.cacheTo.Name(), Scope: scope, MaxSize: 1 << 30}
		for _, s := range set {
			s(cm)
		}
		o.CacheMounts = cm
	})
	stats := cm.Wait(t.Context())
	f.log = logBuf.String()
	t.Logf("build log:\n%s\ncache mounts: %+v", f.log, stats)
	return img, stats, err
}

// out is the content of /out in img.
func out(t *testing.T, img v1.Image) string {
	t.Helper()
	s, ok := fileContent(t, img, "/out")
	if !ok {
		t.Fatal("the image has no /out")
	}
	return s
}

var savedLayers = regexp.MustCompile(`Cache mount id=\S+: saved .* \((\d+) layers?, (.*) uploaded\)`)

// savedLayerCount is how many layers the last build's save of one mount
// wrote, from its log.
func savedLayerCount(t *testing.T, log string) string {
	t.Helper()
	m := savedLayers.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("the log says no cache mount was saved:\n%s", log)
	}
	return m[1]
}

// TestCacheMounts_roundTrip: what a step leaves in a cache mount is there
// for the next build's steps (files added, changed and removed), saved as
// a layer of changes on top of the first save; the images hold none of it.
func TestCacheMounts_roundTrip(t *testing.T) {
	for _, real := range []bool{false, true} {
		t.Run(map[bool]string{false: "in-memory registry", true: "docker-registry"}[real], func(t *testing.T) {
			f := newFixture(t, nil)
			if real {
				reg := testenv.StartRegistry(t)
				repo, err := name.NewRepository(reg.Ref("cache"))
				if err != nil {
					t.Fatal(err)
				}
				f.cacheTo = repo
			}
			img, st := mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c,id=deps sh -c 'echo one > /c/a && mkdir /c/d && echo x > /c/d/x && echo old > /c/gone'
`, "ns/a")
			if st == nil || st.Saved != 1 || st.Restored != 0 || st.SavedBytes != 10 {
				t.Fatalf("first build: cache mounts %+v, want one saved of 10 bytes, none restored", st)
			}
			if got := savedLayerCount(t, f.log); got != "1" {
				t.Errorf("first save: %s layers, want 1", got)
			}
			for p := range flatten(t, img) {
				if strings.HasPrefix(p, "c/") {
					t.Errorf("the image holds %s, from the cache mount", p)
				}
			}

			img, st = mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/cache,id=deps sh -c 'cat /cache/a /cache/d/x > /out && echo two > /cache/b && rm /cache/gone && echo ONE > /cache/a'
`, "ns/a")
			if got := out(t, img); got != "one\nx\n" {
				t.Errorf("second build read %q from the cache mount, want the first build's %q", got, "one\nx\n")
			}
			if st == nil || st.Restored != 1 || st.RestoredBytes != 10 || st.Saved != 1 {
				t.Fatalf("second build: cache mounts %+v, want one restored (10 bytes) and saved", st)
			}
			if got := savedLayerCount(t, f.log); got != "2" {
				t.Errorf("second save: %s layers, want 2 (the first and the changes)", got)
			}
			for p := range flatten(t, img) {
				if strings.HasPrefix(p, "cache/") {
					t.Errorf("the image holds %s, from the cache mount", p)
				}
			}

			img, _ = mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c,id=deps sh -c 'cat /c/a /c/b /c/d/x > /out && test ! -e /c/gone'
`, "ns/a")
			if got := out(t, img); got != "ONE\ntwo\nx\n" {
				t.Errorf("third build read %q, want %q (the second build's changes on the first's)", got, "ONE\ntwo\nx\n")
			}
		})
	}
}

// spyTransport records the paths the cache's registry calls ask for.
type spyTransport struct {
	mu    sync.Mutex
	paths []string
}

func (s *spyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.paths = append(s.paths, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (s *spyTransport) asked(sub string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.paths {
		if strings.Contains(p, sub) {
			out = append(out, p)
		}
	}
	return out
}

// TestCacheMounts_onlyForStepsThatRun: a build the layer cache serves
// whole neither restores nor saves a mount (it asks the registry nothing
// about one); a build whose step with the mount runs restores it, and one
// whose only missed step mounts nothing does not.
func TestCacheMounts_onlyForStepsThatRun(t *testing.T) {
	f := newFixture(t, map[string]string{"src": "1"})
	dockerfile := `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'date +%s%N >> /c/log'
COPY src /src
`
	mountBuild(t, f, dockerfile, "s")
	spy := &spyTransport{}
	f.cacheRemote = []remote.Option{remote.WithTransport(spy)}

	_, st := mountBuild(t, f, dockerfile, "s")
	if st != nil {
		t.Errorf("a build served from the cache did something with cache mounts: %+v", st)
	}
	if asked := spy.asked(".mount"); len(asked) > 0 {
		t.Errorf("a build served from the cache asked for saved mounts: %v", asked)
	}

	// Only the COPY after the RUN misses: the RUN is served, so its mount
	// is not needed.
	writeContext(t, f.ctxDir, map[string]string{"src": "2"})
	_, st = mountBuild(t, f, dockerfile, "s")
	if st != nil {
		t.Errorf("a build whose RUN was served from the cache did something with cache mounts: %+v", st)
	}
	if asked := spy.asked(".mount"); len(asked) > 0 {
		t.Errorf("a build whose RUN was served from the cache asked for saved mounts: %v", asked)
	}
}

// TestCacheMounts_scopes: a mount saved under one scope (the controller's
// namespace) is never restored under another, nor for another id; the same
// id and scope find it.
func TestCacheMounts_scopes(t *testing.T) {
	f := newFixture(t, nil)
	mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c,id=shared sh -c 'echo tenant-a-secret > /c/f'
`, "namespace/a")
	read := `FROM {{BASE}}
ARG N
RUN --mount=type=cache,target=/c,id=shared sh -c 'echo $N; cat /c/f > /out 2>/dev/null || echo empty > /out'
`
	img, st := mountBuild(t, f, strings.Replace(read, "ARG N", "ARG N=b", 1), "namespace/b")
	if got := out(t, img); got != "empty\n" {
		t.Errorf("a build in scope namespace/b read %q from scope namespace/a's mount", got)
	}
	if st.Restored != 0 {
		t.Errorf("scope namespace/b restored %d mounts", st.Restored)
	}
	img, _ = mountBuild(t, f, strings.Replace(read, "id=shared", "id=other", 1), "namespace/a")
	if got := out(t, img); got != "empty\n" {
		t.Errorf("another id read %q", got)
	}
	img, _ = mountBuild(t, f, strings.Replace(read, "ARG N", "ARG N=a", 1), "namespace/a")
	if got := out(t, img); got != "tenant-a-secret\n" {
		t.Errorf("the same scope and id read %q, want the saved mount's", got)
	}
}

// TestCacheMounts_compaction: saves add layers of changes up to
// cache.MaxMountLayers, then write the whole mount as one layer again; every
// build sees all that the builds before it wrote.
func TestCacheMounts_compaction(t *testing.T) {
	f := newFixture(t, nil)
	var counts []string
	for i := range cache.MaxMountLayers + 2 {
		img, _ := mountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'ls /c > /out; echo %d > /c/f%02d'
`, i, i), "s")
		var want strings.Builder
		for j := range i {
			fmt.Fprintf(&want, "f%02d\n", j)
		}
		if got := out(t, img); got != want.String() {
			t.Fatalf("build %d saw %q in the cache mount, want %q", i, got, want.String())
		}
		counts = append(counts, savedLayerCount(t, f.log))
	}
	want := []string{"1", "2", "3", "4", "5", "6", "7", "8", "1", "2"}
	if strings.Join(counts, ",") != strings.Join(want, ",") {
		t.Errorf("layers of each save: %v, want %v", counts, want)
	}
}

// TestCacheMounts_maxSize: a mount larger than MaxSize is not saved (a
// warning, the build succeeds); a saved mount larger than the restoring
// build's MaxSize is not restored.
func TestCacheMounts_maxSize(t *testing.T) {
	f := newFixture(t, nil)
	write := `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'head -c 8192 /dev/zero > /c/big'
`
	_, st := mountBuild(t, f, write, "s", func(cm *build.CacheMounts) { cm.MaxSize = 4096 })
	if st == nil || st.Saved != 0 || st.Skipped != 1 {
		t.Fatalf("an 8 KiB mount with a 4 KiB bound: %+v, want it skipped, not saved", st)
	}
	if !strings.Contains(f.log, "WARNING: cache mount id=/c: not saved: it holds 8.0 KiB, more than the most a cache mount may hold (4.0 KiB") {
		t.Errorf("the log does not warn of the mount not saved:\n%s", f.log)
	}
	mountBuild(t, f, strings.Replace(write, "8192", "8193", 1), "s")
	img, st := mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'ls /c > /out'
`, "s", func(cm *build.CacheMounts) { cm.MaxSize = 4096 })
	if got := out(t, img); got != "" {
		t.Errorf("a saved mount over the bound was restored: the step saw %q", got)
	}
	if st == nil || st.Restored != 0 || st.Skipped != 1 {
		t.Errorf("cache mounts %+v, want the saved one skipped", st)
	}
}

// mountTag finds the one saved mount's tag in repo.
func mountTag(t *testing.T, repo name.Repository) name.Tag {
	t.Helper()
	tags, err := remote.List(repo)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, tag := range tags {
		if strings.HasSuffix(tag, ".mount") {
			found = append(found, tag)
		}
	}
	if len(found) != 1 {
		t.Fatalf("saved mounts in %s: %v, want one", repo, found)
	}
	return repo.Tag(found[0])
}

// TestCacheMounts_untrustedSaved: whoever can push to the cache repository
// can write a saved mount. One whose layer is not what its manifest says
// is an empty mount and a warning; one that tries to leave the store
// (symlinks, "..", absolute names) or make device nodes writes nothing
// outside the build's cache mount and makes no device.
func TestCacheMounts_untrustedSaved(t *testing.T) {
	f := newFixture(t, nil)
	mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`, "s")
	tag := mountTag(t, f.cacheTo)
	desc, err := remote.Get(tag)
	if err != nil {
		t.Fatal(err)
	}
	read := func(n int) string {
		return fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo %d; ls -la /c > /out; cat /c/f >> /out 2>&1 || true'
`, n)
	}

	t.Run("diff ID mismatch", func(t *testing.T) {
		var m map[string]any
		if err := json.Unmarshal(desc.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		l := m["layers"].([]any)[0].(map[string]any)
		l["annotations"].(map[string]any)["dev.slipway.cache.diff-id"] = "sha256:" + strings.Repeat("0", 64)
		putManifest(t, tag, m)
		img, st := mountBuild(t, f, read(1), "s")
		if got := out(t, img); strings.Contains(got, "saved") {
			t.Errorf("a refused saved mount was used: the step saw %q", got)
		}
		if st == nil || st.Restored != 0 || st.Skipped != 1 {
			t.Errorf("cache mounts %+v, want the refused one skipped", st)
		}
		if !strings.Contains(f.log, "WARNING: cache mount id=/c: the saved one is not used, it starts empty") {
			t.Errorf("no warning of the refused mount:\n%s", f.log)
		}
	})

	t.Run("escapes", func(t *testing.T) {
		outside := t.TempDir()
		layer := tarLayer(t, []tar.Header{
			{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: outside},
			{Typeflag: tar.TypeReg, Name: "abs/planted", Size: 5},
			{Typeflag: tar.TypeSymlink, Name: "rel", Linkname: "../../../../../../../../" + outside},
			{Typeflag: tar.TypeReg, Name: "rel/planted2", Size: 5},
			{Typeflag: tar.TypeReg, Name: outside + "/planted3", Size: 5},
			{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3, Mode: 0o666},
			{Typeflag: tar.TypeBlock, Name: "disk", Devmajor: 8, Devminor: 0, Mode: 0o666},
			{Typeflag: tar.TypeReg, Name: "f", Size: 5},
		})
		pushSavedMount(t, f, tag, desc, layer)
		img, st := mountBuild(t, f, read(2), "s")
		if st == nil || st.Restored != 1 {
			t.Fatalf("cache mounts %+v, want the crafted one restored (contained)", st)
		}
		entries, err := os.ReadDir(outside)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			t.Errorf("restoring a crafted saved mount wrote outside the store: %v", entries)
		}
		got := out(t, img)
		for _, dev := range []string{" null", " disk"} {
			if strings.Contains(got, dev) {
				t.Errorf("the crafted saved mount made a device node%s:\n%s", dev, got)
			}
		}
	})
}

// savedMountTars are the uncompressed layers of the one saved mount in f's
// cache repository.
func savedMountTars(t *testing.T, f *fixture) [][]byte {
	t.Helper()
	desc, err := remote.Get(mountTag(t, f.cacheTo))
	if err != nil {
		t.Fatal(err)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// putManifest pushes the manifest m under tag.
func putManifest(t *testing.T, tag name.Tag, m map[string]any) {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(tag, rawManifest{raw}); err != nil {
		t.Fatal(err)
	}
}

type rawManifest struct{ b []byte }

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// tarLayer is an uncompressed tar of hdrs, each regular file holding
// "data\n" (Size 5).
func tarLayer(t *testing.T, hdrs []tar.Header) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("data\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
}

// pushSavedMount replaces the saved mount at tag (whose descriptor is
// desc) with one of layer alone, as a writer with push rights could: a
// manifest this package would accept.
func pushSavedMount(t *testing.T, f *fixture, tag name.Tag, desc *remote.Descriptor, l v1.Layer) {
	t.Helper()
	if err := remote.WriteLayer(f.cacheTo, l); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	diffID, _ := l.DiffID()
	size, _ := l.Size()
	m["layers"] = []any{map[string]any{
		"mediaType":   string(types.OCIUncompressedLayer),
		"digest":      d.String(),
		"size":        size,
		"annotations": map[string]string{"dev.slipway.cache.diff-id": diffID.String()},
	}}
	putManifest(t, tag, m)
}

// TestCacheMounts_concurrentSaves: two builds that restore the same saved
// mount and save it at the same time leave one of their versions whole,
// never a mix of the two.
func TestCacheMounts_concurrentSaves(t *testing.T) {
	f := newFixture(t, nil)
	mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'for i in $(seq 1 50); do echo base > /c/f$i; done'
`, "s")
	var wg sync.WaitGroup
	for _, who := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := tryMountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'for i in $(seq 1 50); do echo %s > /c/f$i; done; echo %s > /c/only-%s'
`, who, who, who), "s")
			if err != nil {
				t.Errorf("build %s: %v", who, err)
			}
		}()
	}
	wg.Wait()
	img, _ := mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'cat /c/* | sort | uniq -c > /out'
`, "s")
	got := strings.TrimSpace(out(t, img))
	if !regexp.MustCompile(`^\s*51 (first|second)$`).MatchString(got) {
		t.Errorf("after two concurrent saves the mount holds:\n%s\nwant 51 files of one build", got)
	}
}

// TestCacheMounts_waitWithoutBuild: a nil CacheMounts waits for nothing.
func TestCacheMounts_waitWithoutBuild(t *testing.T) {
	var cm *build.CacheMounts
	if st := cm.Wait(context.Background()); st != nil {
		t.Errorf("Wait = %+v, want nil", st)
	}
}

// TestCacheMounts_saveReadsNoHostFile: a step that leaves in its cache
// mount a symlink to a file of the machine (absolute, and climbing out
// with ".."), which the step itself could not read, gets the link saved,
// never what it points to on the machine that saves it.
func TestCacheMounts_saveReadsNoHostFile(t *testing.T) {
	f := newFixture(t, nil)
	secret := filepath.Join(t.TempDir(), "host-secret")
	marker := "host-only-" + strings.Repeat("x", 16)
	if err := os.WriteFile(secret, []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	mountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'ln -s %s /c/abs && ln -s ../../../../../../../../..%s /c/rel && mkdir /c/d && ln -s / /c/d/root'
`, secret, secret), "s")
	var links []string
	for _, data := range savedMountTars(t, f) {
		if bytes.Contains(data, []byte(marker)) {
			t.Errorf("the saved mount holds the host file's content")
		}
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Typeflag == tar.TypeSymlink {
				links = append(links, h.Name)
			}
		}
	}
	slices.Sort(links)
	if want := []string{"abs", "d/root", "rel"}; !slices.Equal(links, want) {
		t.Errorf("symlinks saved: %v, want %v", links, want)
	}
}

// slowTransport delays the requests for saved mounts (until their
// context ends).
type slowTransport struct{ delay time.Duration }

func (s slowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, ".mount") {
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestCacheMounts_restoreEndsWithTheBuild: a build that fails before the
// step that mounts a cache leaves no restore behind: nothing writes into
// its work directory once it returned.
func TestCacheMounts_restoreEndsWithTheBuild(t *testing.T) {
	f := newFixture(t, nil)
	mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`, "s")
	f.cacheRemote = []remote.Option{remote.WithTransport(slowTransport{delay: time.Second})}
	work := t.TempDir()
	_, _, err := f.build(t, `FROM {{BASE}}
RUN exit 3
RUN --mount=type=cache,target=/c cat /c/f
`, true, func(o *build.Options) {
		o.WorkDir = work
		o.CacheMounts = &build.CacheMounts{Store: o.Cache.(*cache.Cache), Repo: f.cacheTo.Name(), Scope: "s"}
	})
	if err == nil {
		t.Fatal("the build did not fail")
	}
	if err := os.RemoveAll(work); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(work); err == nil {
		t.Error("a restore wrote into the work directory after the build returned")
	}
}
