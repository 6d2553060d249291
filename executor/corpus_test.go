package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/testenv"
)

func TestMain(m *testing.M) {
	// The chroot runner re-executes this test binary as its namespace helper.
	run.Init()
	os.Exit(m.Run())
}

// corpusDir holds one directory per case: the build context (Dockerfile
// and files) and case.json, which is not part of the context.
const corpusDir = "testdata/corpus"

// corpusCase is a case's case.json. In the Dockerfile and in build arg
// values, {{REGISTRY}} is replaced by the test registry's host:port; build
// arg values may also use {{BASE}} (the busybox base image) and {{HTTP}}
// (the URL of a test HTTP server serving httpFiles). BASE={{BASE}} is
// always passed.
type corpusCase struct {
	name string

	// Description says what the case proves.
	Description string `json:"description"`
	// Dockerfile is the Dockerfile's path in the context; default "Dockerfile".
	Dockerfile string            `json:"dockerfile,omitempty"`
	BuildArgs  map[string]string `json:"buildArgs,omitempty"`
	Target     string            `json:"target,omitempty"`

	// Stdout is what the image prints when run (Entrypoint + Cmd); nil: not run.
	Stdout *string `json:"stdout,omitempty"`
	// Config holds fields of the image's container config (as JSON, by their
	// names in the config file: "Env", "Cmd", ...) that must be exactly so;
	// null means the field is absent.
	Config map[string]json.RawMessage `json:"config,omitempty"`
	// Author is the config's author (MAINTAINER); empty: not checked.
	Author string `json:"author,omitempty"`
	// Files are paths of the flattened image that must be so.
	Files map[string]wantFile `json:"files,omitempty"`
	// NewLayers is how many layers the build adds on top of its base
	// (Docker's count: one per RUN/COPY/ADD that changed something); -1
	// or absent: not checked.
	NewLayers *int `json:"newLayers,omitempty"`
	// Failure is the expected failure; nil: the build succeeds.
	Failure *wantFailure `json:"failure,omitempty"`

	// Buildah describes how buildah's image differs, for the differential test.
	Buildah buildahNotes `json:"buildah,omitempty"`
}

// wantFile is the expectation for one path, as in the conformance suite;
// unset fields are not checked.
type wantFile = conformanceFile

type wantFailure struct {
	Reason   result.Reason `json:"reason"`
	Line     int           `json:"line"`
	ExitCode int           `json:"exitCode,omitempty"`
}

// buildahNotes list the documented differences from buildah for a case.
type buildahNotes struct {
	// Skip, if set, says why the case is not built by buildah at all.
	Skip string `json:"skip,omitempty"`
	// Differences maps a config field ("config.WorkingDir") or a path
	// ("/app/x") to the reason our image is the Docker-correct one. Each
	// listed difference must really occur, so the list stays true.
	Differences map[string]string `json:"differences,omitempty"`
}

// httpFiles are served by the test HTTP server for ADD of a URL.
var httpFiles = map[string]string{
	"/hello.txt":        "hello over http\n",
	"/dir/payload.json": `{"from":"http"}` + "\n",
}

// httpModTime is the Last-Modified of every served file.
var httpModTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

func loadCorpus(t *testing.T) []*corpusCase {
	t.Helper()
	dirs, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	var cases []*corpusCase
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(corpusDir, d.Name(), "case.json"))
		if err != nil {
			t.Fatal(err)
		}
		c := &corpusCase{name: d.Name()}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			t.Fatalf("%s/case.json: %v", d.Name(), err)
		}
		if c.Dockerfile == "" {
			c.Dockerfile = "Dockerfile"
		}
		cases = append(cases, c)
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	return cases
}

// corpusEnv is what the cases build against.
type corpusEnv struct {
	reg  *testenv.Registry
	base string // the busybox base image in reg
	http string // URL of the server of httpFiles
}

func newCorpusEnv(t *testing.T) *corpusEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := httpFiles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", httpModTime.Format(http.TimeFormat))
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return &corpusEnv{reg: reg, base: base, http: srv.URL}
}

func (e *corpusEnv) expand(s string) string {
	return strings.NewReplacer("{{REGISTRY}}", e.reg.Host(), "{{BASE}}", e.base, "{{HTTP}}", e.http).Replace(s)
}

// buildArgs returns the case's build args, BASE first, as K=V.
func (e *corpusEnv) buildArgs(c *corpusCase) []string {
	args := []string{"BASE=" + e.base}
	keys := make([]string, 0, len(c.BuildArgs))
	for k := range c.BuildArgs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, k+"="+e.expand(c.BuildArgs[k]))
	}
	return args
}

// prepareContext copies the case's directory without case.json to a new
// directory, with {{REGISTRY}} replaced in its Dockerfiles, and returns it.
func (e *corpusEnv) prepareContext(t *testing.T, c *corpusCase) string {
	t.Helper()
	src := filepath.Join(corpusDir, c.name)
	dst := filepath.Join(t.TempDir(), "context")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "case.json" {
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(strings.ToLower(filepath.Base(p)), "dockerfile") && !strings.HasSuffix(p, ".dockerignore") {
			b = []byte(e.expand(string(b)))
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copying the context of %s: %v", c.name, err)
	}
	return dst
}

// buildResult is one run of the executor.
type buildResult struct {
	exit   int
	res    result.Result
	resRaw string
	log    string
}

// executorBuild runs the executor in-process on the case's context and
// pushes to ref.
func (e *corpusEnv) executorBuild(t *testing.T, c *corpusCase, ctxDir, ref string, extra ...string) buildResult {
	t.Helper()
	args := []string{
		"--context=dir://" + ctxDir,
		"--dockerfile=" + c.Dockerfile,
		"--destination=" + ref,
		"--insecure-registry=" + e.reg.Host(),
	}
	for _, a := range e.buildArgs(c) {
		args = append(args, "--build-arg="+a)
	}
	if c.Target != "" {
		args = append(args, "--target="+c.Target)
	}
	return runExecutor(t, append(args, extra...)...)
}

// pullImage fetches ref from the test registry and validates it.
func pullImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validating %s: %v", ref, err)
	}
	return img
}

// assertNotPushed checks that ref has no manifest in the registry.
func assertNotPushed(t *testing.T, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(r)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD %s after a failed build: %v; want 404 (nothing pushed)", ref, err)
	}
}

func TestExecute_corpus(t *testing.T) {
	cases := loadCorpus(t)
	if len(cases) < 30 {
		t.Errorf("the corpus has %d cases, want at least 30", len(cases))
	}
	env := newCorpusEnv(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ref := env.reg.Ref("corpus/" + c.name + ":slipway")
			b := env.executorBuild(t, c, env.prepareContext(t, c), ref)
			if c.Failure != nil {
				checkFailure(t, c, b)
				assertNotPushed(t, ref)
				return
			}
			if b.exit != 0 || !b.res.Success {
				t.Fatalf("build failed: exit %d, result %s; log:\n%s", b.exit, b.resRaw, b.log)
			}
			img := pullImage(t, ref)
			checkImage(t, c, env, img, b)
		})
	}
}

func checkFailure(t *testing.T, c *corpusCase, b buildResult) {
	t.Helper()
	if b.exit == 0 || b.res.Success || b.res.Failure == nil {
		t.Fatalf("build succeeded (exit %d, result %s), want %s at line %d", b.exit, b.resRaw, c.Failure.Reason, c.Failure.Line)
	}
	f := b.res.Failure
	got := wantFailure{Reason: f.Reason, Line: f.Line, ExitCode: f.ExitCode}
	if diff := cmp.Diff(*c.Failure, got); diff != "" {
		t.Errorf("failure (-want +got):\n%s\nresult: %s\nlog:\n%s", diff, b.resRaw, b.log)
	}
	if f.Message == "" {
		t.Error("failure has no message")
	}
	if b.res.Digest != "" || len(b.res.References) != 0 {
		t.Errorf("failed build reports digest %q and references %q", b.res.Digest, b.res.References)
	}
}

func checkImage(t *testing.T, c *corpusCase, env *corpusEnv, img v1.Image, b buildResult) {
	t.Helper()
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if b.res.Digest != digest.String() {
		t.Errorf("result digest %s, pushed %s", b.res.Digest, digest)
	}
	if len(b.res.References) != 1 || !strings.HasSuffix(b.res.References[0], "@"+digest.String()) {
		t.Errorf("result references %q, want one ending in @%s", b.res.References, digest)
	}
	if mt, err := img.MediaType(); err != nil || mt != types.DockerManifestSchema2 {
		t.Errorf("manifest media type %s (%v), want %s", mt, err, types.DockerManifestSchema2)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
	}

	// Config fields.
	if len(c.Config) > 0 {
		gotJSON, err := json.Marshal(cfg.Config)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(gotJSON, &got); err != nil {
			t.Fatal(err)
		}
		for field, want := range c.Config {
			if diff := cmp.Diff(normJSON(t, want), normJSON(t, got[field])); diff != "" {
				t.Errorf("config %s (-want +got):\n%s", field, diff)
			}
		}
	}

	if c.Author != "" && cfg.Author != c.Author {
		t.Errorf("author %q, want %q", cfg.Author, c.Author)
	}

	// Layers: Docker's count, and the history agrees with the layers.
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	nonEmpty := 0
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			nonEmpty++
		}
	}
	if nonEmpty != len(layers) {
		t.Errorf("%d non-empty history entries for %d layers", nonEmpty, len(layers))
	}
	if c.NewLayers != nil && *c.NewLayers >= 0 {
		baseLayers := 1
		if baseIsScratch(c) {
			baseLayers = 0
		}
		if got := len(layers) - baseLayers; got != *c.NewLayers {
			t.Errorf("%d new layers, want %d", got, *c.NewLayers)
		}
	}

	// Files.
	if len(c.Files) > 0 {
		tree, contents, err := imagetest.FlattenContents(img)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range slices.Sorted(maps.Keys(c.Files)) {
			checkConformanceFile(t, p, c.Files[p], tree, contents)
		}
	}

	// Running it.
	if c.Stdout != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := imagetest.Run(ctx, img, imagetest.RunOptions{})
		if err != nil {
			t.Errorf("running the image: %v", err)
		} else if diff := cmp.Diff(*c.Stdout, out); diff != "" {
			t.Errorf("image output (-want +got):\n%s", diff)
		}
	}
	if t.Failed() {
		t.Logf("executor log:\n%s", b.log)
	}
}

// baseIsScratch reports whether the case's final image starts from scratch;
// such cases say so in their description.
func baseIsScratch(c *corpusCase) bool {
	return strings.Contains(c.Description, "FROM scratch")
}

func normJSON(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("config value %s: %v", raw, err)
	}
	return v
}

var typeNames = map[string]byte{"file": tar.TypeReg, "dir": tar.TypeDir, "symlink": tar.TypeSymlink}
