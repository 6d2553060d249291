package build_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/testenv"
)

func TestMain(m *testing.M) {
	run.Init()
	os.Exit(m.Run())
}

// testRegistry is an in-memory registry that counts blob downloads and can
// be told to fail.
type testRegistry struct {
	srv  *httptest.Server
	host string

	mu      sync.Mutex
	blobGET map[string]int // "sha256:..." → GET count
	uploads int            // blob upload sessions started without a mount
	mounts  int            // cross-repository mount requests
	fail    int            // when set, every request gets this status
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{blobGET: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		fail := tr.fail
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			tr.blobGET[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/") {
			if r.URL.Query().Get("mount") != "" {
				tr.mounts++
			} else {
				tr.uploads++
			}
		}
		tr.mu.Unlock()
		if fail != 0 {
			http.Error(w, "injected failure", fail)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	tr.host = strings.TrimPrefix(tr.srv.URL, "http://")
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *testRegistry) resetCounts() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.blobGET = map[string]int{}
}

func (tr *testRegistry) gets(d v1.Hash) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.blobGET[d.String()]
}

func (tr *testRegistry) repo(t *testing.T, path string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(tr.host + "/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushBusybox pushes the test busybox image and returns its reference.
func pushBusybox(t *testing.T, tr *testRegistry) string {
	t.Helper()
	img, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatalf("building the busybox image: %v", err)
	}
	ref, err := name.ParseReference(tr.host + "/base/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing the base image: %v", err)
	}
	return ref.String()
}

// writeContext writes files (slash paths → content) under dir.
func writeContext(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fixture is a build environment: a registry holding the base image and
// the cache, and a context directory.
type fixture struct {
	reg     *testRegistry
	base    string
	ctxDir  string
	cacheTo name.Repository
	epoch   *time.Time
	// cacheRemote, when set, are the options of the cache's registry calls.
	cacheRemote []remote.Option
	// secrets are given to the build (executor --secret).
	secrets map[string][]byte
	// fake, when set, is the cache of builds with one instead of the
	// registry's (cacheTo).
	fake *fakeCache
	// log is the last build's log.
	log string
}

func newFixture(t *testing.T, files map[string]string) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("chroot builds need root")
	}
	f := &fixture{reg: newTestRegistry(t), ctxDir: t.TempDir()}
	f.base = pushBusybox(t, f.reg)
	f.cacheTo = f.reg.repo(t, "cache")
	writeContext(t, f.ctxDir, files)
	return f
}

// build runs one build as a fresh executor would: a new cache client, a new
// work directory, a freshly opened context. The Dockerfile's {{BASE}} is
// replaced with the base image's reference. opts change the build's
// options last (a hostname, ssh agents, ...); the log is in f.log.
func (f *fixture) build(t *testing.T, dockerfile string, withCache bool, opts ...func(*build.Options)) (v1.Image, *build.Report, error) {
	t.Helper()
	bc, err := source.Open(f.ctxDir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var logBuf strings.Builder
	o := build.Options{
		Dockerfile:      []byte(strings.ReplaceAll(dockerfile, "{{BASE}}", f.base)),
		DockerfilePath:  "Dockerfile",
		Context:         bc,
		Isolation:       build.Chroot,
		WorkDir:         t.TempDir(),
		SourceDateEpoch: f.epoch,
		Log:             &syncBuilder{b: &logBuf},
		Secrets:         f.secrets,
	}
	switch {
	case withCache && f.fake != nil:
		o.Cache = f.fake
	case withCache:
		remoteOpts := f.cacheRemote
		o.Cache = cache.New(cache.Options{Repo: f.cacheTo, Remote: func(bool) []remote.Option { return remoteOpts }})
	}
	for _, opt := range opts {
		opt(&o)
	}
	img, rep, err := buildAndFlush(t, o)
	f.log = logBuf.String()
	t.Logf("build log:\n%s", f.log)
	return img, rep, err
}

// buildAndFlush runs Build, then flushes its cache as the executor does
// before it exits (so that the next build finds what this one stored). A
// write that failed is logged: the executor only warns of it too.
func buildAndFlush(t *testing.T, o build.Options) (v1.Image, *build.Report, error) {
	t.Helper()
	// The image's base and cached layers are read lazily with the build's
	// context, so it must outlive the build: the test's context does.
	img, rep, err := build.Build(t.Context(), o)
	if o.Cache != nil {
		if f, ferr := o.Cache.Flush(t.Context()); ferr != nil {
			t.Logf("writing the layer cache (%d entries written): %v", f.Stored, ferr)
		}
	}
	return img, rep, err
}

type syncBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func mustBuild(t *testing.T, f *fixture, dockerfile string, withCache bool) (v1.Image, *build.Report) {
	t.Helper()
	img, rep, err := f.build(t, dockerfile, withCache)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return img, rep
}

// fileEntry is a file of a flattened image, comparable.
type fileEntry struct {
	Type     byte
	Mode     int64
	UID, GID int
	Size     int64
	Link     string
	SHA256   string
	ModTime  int64
}

// flatten returns the image's file tree (mutate.Extract: whiteouts applied).
func flatten(t *testing.T, img v1.Image) map[string]fileEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]fileEntry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the flattened image: %v", err)
		}
		s := sha256.New()
		if _, err := io.Copy(s, tr); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = fileEntry{
			Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid, Size: h.Size,
			Link: h.Linkname, SHA256: hex.EncodeToString(s.Sum(nil)), ModTime: h.ModTime.Unix(),
		}
	}
	return out
}

// fileContent returns the content of one file of the image.
func fileContent(t *testing.T, img v1.Image, p string) (string, bool) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") == strings.TrimPrefix(p, "/") {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b), true
		}
	}
}

// configWithoutTimes is the image's config with every creation time zeroed.
func configWithoutTimes(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{}
	for i := range cf.History {
		cf.History[i].Created = v1.Time{}
	}
	return cf
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type counts struct{ Hits, Misses int }

func cacheCounts(rep *build.Report) counts {
	return counts{rep.CacheHits, rep.CacheMisses}
}

var context1 = map[string]string{
	"a.txt":     "alpha\n",
	"dir/b.txt": "bravo\n",
	"dir/c.txt": "charlie\n",
}

// cachedDockerfile has five steps with cache keys: RUN, WORKDIR, COPY,
// COPY, RUN; the rest is metadata.
const cachedDockerfile = `FROM {{BASE}}
ENV GREETING=hello
RUN echo "$GREETING" > /hello && mkdir -p /data
WORKDIR /app
COPY a.txt ./
COPY dir/ ./dir/
RUN cat /app/a.txt /app/dir/b.txt > /app/all.txt
LABEL org.example.test=yes
CMD ["sh"]
`

func TestBuild_cacheWarm(t *testing.T) {
	for _, reproducible := range []bool{false, true} {
		t.Run(fmt.Sprintf("reproducible=%v", reproducible), func(t *testing.T) {
			f := newFixture(t, context1)
			if reproducible {
				epoch := time.Unix(1700000000, 0).UTC()
				f.epoch = &epoch
			}
			cold, coldRep := mustBuild(t, f, cachedDockerfile, true)
			if diff := cmp.Diff(counts{0, 5}, cacheCounts(coldRep)); diff != "" {
				t.Errorf("cold cache counts (-want +got):\n%s", diff)
			}
			if err := validate.Image(cold); err != nil {
				t.Errorf("validate.Image(cold): %v", err)
			}

			f.reg.resetCounts()
			warm, warmRep := mustBuild(t, f, cachedDockerfile, true)
			if diff := cmp.Diff(counts{5, 0}, cacheCounts(warmRep)); diff != "" {
				t.Errorf("warm cache counts (-want +got):\n%s", diff)
			}
			for _, d := range layerDigests(t, cold) {
				if n := f.reg.gets(d); n != 0 {
					t.Errorf("the warm build downloaded layer %s %d times, want 0", d, n)
				}
			}
			if len(warmRep.Stages) != 1 || warmRep.Stages[0].CacheHits != 5 {
				t.Errorf("warm stage report = %+v, want one stage with 5 hits", warmRep.Stages)
			}

			if diff := cmp.Diff(layerDigests(t, cold), layerDigests(t, warm)); diff != "" {
				t.Errorf("layers (-cold +warm):\n%s", diff)
			}
			if diff := cmp.Diff(configWithoutTimes(t, cold), configWithoutTimes(t, warm)); diff != "" {
				t.Errorf("config without times (-cold +warm):\n%s", diff)
			}
			if diff := cmp.Diff(flatten(t, cold), flatten(t, warm)); diff != "" {
				t.Errorf("file tree (-cold +warm):\n%s", diff)
			}
			if err := validate.Image(warm); err != nil {
				t.Errorf("validate.Image(warm): %v", err)
			}
			if reproducible {
				if c, w := digest(t, cold), digest(t, warm); c != w {
					t.Errorf("reproducible: warm digest %s, cold %s", w, c)
				}
			}
			if got, _ := fileContent(t, warm, "app/all.txt"); got != "alpha\nbravo\n" {
				t.Errorf("/app/all.txt = %q", got)
			}
		})
	}
}

// TestBuild_cacheWarm_sameDigest checks what commit 3c69b2b promises: steps
// dated by when their layer was made, so a rebuild from the cache gives the
// same image even without SOURCE_DATE_EPOCH.
func TestBuild_cacheWarm_sameDigest(t *testing.T) {
	f := newFixture(t, context1)
	cold, _ := mustBuild(t, f, cachedDockerfile, true)
	time.Sleep(1100 * time.Millisecond) // a later second
	warm, _ := mustBuild(t, f, cachedDockerfile, true)
	if c, w := digest(t, cold), digest(t, warm); c != w {
		cc, _ := cold.RawConfigFile()
		wc, _ := warm.RawConfigFile()
		t.Errorf("warm digest %s, cold %s\ncold config: %s\nwarm config: %s", w, c, cc, wc)
	}
}

func TestBuild_cacheChange(t *testing.T) {
	f := newFixture(t, context1)
	f.fake = newFakeCache()
	mustBuild(t, f, cachedDockerfile, true)
	writeContext(t, f.ctxDir, map[string]string{"dir/b.txt": "BRAVO CHANGED\n"})
	img, rep := mustBuild(t, f, cachedDockerfile, true)
	// RUN, WORKDIR, COPY a.txt hit; COPY dir/ and the last RUN miss.
	if diff := cmp.Diff(counts{3, 2}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	for p, want := range map[string]string{
		"app/dir/b.txt": "BRAVO CHANGED\n",
		"app/dir/c.txt": "charlie\n",
		"app/a.txt":     "alpha\n",
		"app/all.txt":   "alpha\nBRAVO CHANGED\n",
		"hello":         "hello\n",
	} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("%s = %q (found %v), want %q", p, got, ok, want)
		}
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}

	// The changed build stored its new steps: a third build hits them all.
	_, rep = mustBuild(t, f, cachedDockerfile, true)
	if diff := cmp.Diff(counts{5, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("third build cache counts (-want +got):\n%s", diff)
	}
}

func TestBuild_cacheUnavailable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, cacheReg *testRegistry)
	}{
		{name: "closed server", setup: func(t *testing.T, r *testRegistry) { r.srv.Close() }},
		{name: "500", setup: func(t *testing.T, r *testRegistry) {
			r.mu.Lock()
			r.fail = http.StatusInternalServerError
			r.mu.Unlock()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, context1)
			cacheReg := newTestRegistry(t)
			f.cacheTo = cacheReg.repo(t, "cache")
			f.cacheRemote = []remote.Option{remote.WithRetryBackoff(remote.Backoff{Steps: 1})}
			tc.setup(t, cacheReg)
			img, rep := mustBuild(t, f, cachedDockerfile, true)
			if diff := cmp.Diff(counts{0, 5}, cacheCounts(rep)); diff != "" {
				t.Errorf("cache counts (-want +got):\n%s", diff)
			}
			if got, _ := fileContent(t, img, "app/all.txt"); got != "alpha\nbravo\n" {
				t.Errorf("/app/all.txt = %q", got)
			}
		})
	}
}

func TestBuild_cacheMultiStage(t *testing.T) {
	const dockerfile = `FROM {{BASE}} AS builder
RUN mkdir /out && echo built > /out/file
COPY a.txt /out/a.txt
FROM {{BASE}}
COPY dir/b.txt /b.txt
COPY --from=builder /out /result
RUN cat /result/file /result/a.txt /b.txt > /summary
`
	f := newFixture(t, context1)
	f.fake = newFakeCache()
	_, rep := mustBuild(t, f, dockerfile, true)
	if diff := cmp.Diff(counts{0, 5}, cacheCounts(rep)); diff != "" {
		t.Errorf("cold cache counts (-want +got):\n%s", diff)
	}

	// The builder stage hits entirely; the final stage misses from its
	// first COPY, so COPY --from needs the builder's tree from its cached
	// layers.
	writeContext(t, f.ctxDir, map[string]string{"dir/b.txt": "new b\n"})
	img, rep := mustBuild(t, f, dockerfile, true)
	if diff := cmp.Diff(counts{2, 3}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	var got []string
	for _, s := range rep.Stages {
		got = append(got, fmt.Sprintf("%s:%d/%d", s.Name, s.CacheHits, s.Instructions))
	}
	if diff := cmp.Diff([]string{"builder:2/2", "1:0/3"}, got); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
	for p, want := range map[string]string{
		"result/file":  "built\n",
		"result/a.txt": "alpha\n",
		"summary":      "built\nalpha\nnew b\n",
	} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("%s = %q (found %v), want %q", p, got, ok, want)
		}
	}

	// Fully warm: the final stage's COPY --from hits too, and no cached
	// layer is read.
	reads := f.fake.layerReads()
	img2, rep := mustBuild(t, f, dockerfile, true)
	if diff := cmp.Diff(counts{5, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("warm cache counts (-want +got):\n%s", diff)
	}
	if n := f.fake.layerReads() - reads; n != 0 {
		t.Errorf("the warm build read cached layers %d times, want 0", n)
	}
	if diff := cmp.Diff(layerDigests(t, img), layerDigests(t, img2)); diff != "" {
		t.Errorf("layers (-changed +warm):\n%s", diff)
	}
}

func TestBuild_layerCounts(t *testing.T) {
	const dockerfile = `FROM {{BASE}}
ENV A=1
LABEL l=v
CMD ["sh"]
RUN true
WORKDIR /tmp
WORKDIR /newdir
RUN touch /newdir/x
EXPOSE 80
`
	type hist struct {
		CreatedBy string
		Empty     bool
	}
	want := []hist{
		{"ENV A=1", true},
		{"LABEL l=v", true},
		{`CMD ["sh"]`, true},
		// A RUN and a WORKDIR that change nothing have the empty layer,
		// as in BuildKit (testExportedHistory).
		{"RUN /bin/sh -c true # buildkit", false},
		{"WORKDIR /tmp", false},
		{"WORKDIR /newdir", false},
		{"RUN /bin/sh -c touch /newdir/x # buildkit", false},
		{"EXPOSE [80/tcp]", true},
	}
	base, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	baseCfg, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	baseLayers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, withCache := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", withCache), func(t *testing.T) {
			f := newFixture(t, nil)
			f.fake = newFakeCache()
			builds := 1
			if withCache {
				builds = 2 // cold, then from the cache
			}
			for i := 0; i < builds; i++ {
				img, _ := mustBuild(t, f, dockerfile, withCache)
				cf, err := img.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				var got []hist
				for _, h := range cf.History[len(baseCfg.History):] {
					got = append(got, hist{h.CreatedBy, h.EmptyLayer})
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("build %d: history (-want +got):\n%s", i+1, diff)
				}
				ls, err := img.Layers()
				if err != nil {
					t.Fatal(err)
				}
				if got, want := len(ls), len(baseLayers)+4; got != want {
					t.Errorf("build %d: %d layers, want %d", i+1, got, want)
				}
				if err := validate.Image(img); err != nil {
					t.Errorf("build %d: validate.Image: %v", i+1, err)
				}
				// The first RUN's layer holds only the mount points runc
				// made, as BuildKit's (the base has no /proc, /dev, /sys:
				// TestBuild_runMountPoints); the first WORKDIR's is empty;
				// the second WORKDIR's holds the new directory only; the
				// last RUN's the new file only.
				for j, wantFiles := range [][]string{{"dev", "proc", "sys"}, nil, {"newdir"}, {"newdir", "newdir/x"}} {
					files := layerFiles(t, ls[len(baseLayers)+j])
					if diff := cmp.Diff(wantFiles, files); diff != "" {
						t.Errorf("build %d: layer %d files (-want +got):\n%s", i+1, j, diff)
					}
				}
			}
		})
	}
}

func layerFiles(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/"))
	}
}

func TestBuild_errors(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		withCache  bool
		want       build.Error // Reason, Line, ExitCode compared
	}{
		{
			name:       "failing RUN",
			dockerfile: "FROM {{BASE}}\nENV A=1\nRUN echo about to fail && exit 3\n",
			want:       build.Error{Reason: result.ReasonRunFailed, Line: 3, ExitCode: 3},
		},
		{
			name:       "failing RUN with the cache",
			dockerfile: "FROM {{BASE}}\nRUN true\n\nRUN exit 42\n",
			withCache:  true,
			want:       build.Error{Reason: result.ReasonRunFailed, Line: 4, ExitCode: 42},
		},
		{
			name:       "failing RUN in an earlier stage",
			dockerfile: "FROM {{BASE}} AS a\nRUN exit 7\nFROM {{BASE}}\nCOPY --from=a /etc/passwd /p\n",
			want:       build.Error{Reason: result.ReasonRunFailed, Line: 2, ExitCode: 7},
		},
		{
			// The last stage reads a stage while another fails.
			name:       "a stage failing while another is copied from",
			dockerfile: "FROM scratch AS ok\nCOPY a.txt /a\nFROM scratch AS bad\nCOPY nope /x/\nFROM scratch\nCOPY --from=ok /a /a\nCOPY --from=bad / /b\n",
			want:       build.Error{Reason: result.ReasonCopyFailed, Line: 4},
		},
		{
			name:       "missing COPY source",
			dockerfile: "FROM {{BASE}}\nCOPY a.txt /a\nCOPY missing.txt /m\n",
			want:       build.Error{Reason: result.ReasonCopyFailed, Line: 3},
		},
		{
			name:       "missing COPY source with the cache",
			dockerfile: "FROM {{BASE}}\nCOPY a.txt /a\nCOPY missing.txt /m\n",
			withCache:  true,
			want:       build.Error{Reason: result.ReasonCopyFailed, Line: 3},
		},
		{
			name:       "missing COPY --from source",
			dockerfile: "FROM {{BASE}} AS a\nFROM {{BASE}}\nCOPY --from=a /nope /n\n",
			want:       build.Error{Reason: result.ReasonCopyFailed, Line: 3},
		},
		{
			name:       "bad base image",
			dockerfile: "FROM {{BASE}}-does-not-exist\nRUN true\n",
			want:       build.Error{Reason: result.ReasonBaseImagePullFailed, Line: 1},
		},
		{
			name:       "bad base image in the second stage",
			dockerfile: "FROM {{BASE}}\nRUN true\n\nFROM {{BASE}}-does-not-exist\n",
			withCache:  true,
			want:       build.Error{Reason: result.ReasonBaseImagePullFailed, Line: 4},
		},
		{
			name:       "bad COPY --from image",
			dockerfile: "FROM {{BASE}}\nCOPY --from={{BASE}}-nope /x /x\n",
			want:       build.Error{Reason: result.ReasonBaseImagePullFailed, Line: 2},
		},
		{
			name:       "invalid Dockerfile",
			dockerfile: "FROM {{BASE}}\nFROB x\n",
			want:       build.Error{Reason: result.ReasonDockerfileInvalid, Line: 2},
		},
		{
			name:       "ADD --checksum of a local file",
			dockerfile: "FROM {{BASE}}\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d a.txt /a\n",
			want:       build.Error{Reason: result.ReasonDockerfileInvalid, Line: 2},
		},
		{
			name:       "ADD --checksum of two URLs",
			dockerfile: "FROM {{BASE}}\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d http://127.0.0.1:1/a http://127.0.0.1:1/b /d/\n",
			want:       build.Error{Reason: result.ReasonDockerfileInvalid, Line: 2},
		},
		{
			name:       "ADD --checksum that is not a digest",
			dockerfile: "FROM {{BASE}}\nARG SUM=md5:abc\nADD --checksum=$SUM http://127.0.0.1:1/a /a\n",
			want:       build.Error{Reason: result.ReasonDockerfileInvalid, Line: 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, map[string]string{"a.txt": "a\n"})
			f.fake = newFakeCache()
			img, _, err := f.build(t, tc.dockerfile, tc.withCache)
			if err == nil {
				t.Fatalf("Build = %v, want an error", img)
			}
			var be *build.Error
			if !errors.As(err, &be) {
				t.Fatalf("Build error %v (%T), want a *build.Error", err, err)
			}
			got := build.Error{Reason: be.Reason, Line: be.Line, ExitCode: be.ExitCode}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("error %q (-want +got):\n%s", err, diff)
			}
		})
	}
}

// A layer's file times are clamped to SOURCE_DATE_EPOCH, so the epoch is in
// every step's key: a dated build does not take an undated build's layers
// (whose files carry their own times), nor those of another date, and a
// rebuild with the same date hits.
func TestBuild_cacheKeyedBySourceDateEpoch(t *testing.T) {
	f := newFixture(t, context1)
	f.fake = newFakeCache()
	_, undated := mustBuild(t, f, cachedDockerfile, true)
	if diff := cmp.Diff(counts{0, 5}, cacheCounts(undated)); diff != "" {
		t.Errorf("undated build (-want +got):\n%s", diff)
	}
	for i, sec := range []int64{1700000000, 1600000000} {
		epoch := time.Unix(sec, 0).UTC()
		f.epoch = &epoch
		img, rep := mustBuild(t, f, cachedDockerfile, true)
		if diff := cmp.Diff(counts{0, 5}, cacheCounts(rep)); diff != "" {
			t.Errorf("build %d dated %d (-want +got):\n%s", i, sec, diff)
		}
		for p, e := range flatten(t, img) {
			if e.ModTime > sec {
				t.Errorf("build dated %d: %s has mtime %d, later than the epoch", sec, p, e.ModTime)
			}
		}
		_, again := mustBuild(t, f, cachedDockerfile, true)
		if diff := cmp.Diff(counts{5, 0}, cacheCounts(again)); diff != "" {
			t.Errorf("rebuild dated %d (-want +got):\n%s", sec, diff)
		}
	}
}
