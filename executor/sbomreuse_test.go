package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/sbom"
	"github.com/slipway-dev/slipway/executor/sbom/sbomtest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// Tests of what the SBOM costs (issue 16, sbom_wiring.go): made once per
// image, kept in the layer cache for a rebuild of the same image, made from
// the builder's own tree when it is whole, by a generator started ahead.

// countGenerators counts, around the generator of the test (the real one,
// or withGenerator's), the generators started and the trees they were
// given.
func countGenerators(t *testing.T) (starts, runs *atomic.Int32) {
	t.Helper()
	starts, runs = new(atomic.Int32), new(atomic.Int32)
	inner := startSBOM
	startSBOM = func(ctx context.Context, opts sbom.Options) (sbomGenerator, error) {
		g, err := inner(ctx, opts)
		if err != nil {
			return nil, err
		}
		starts.Add(1)
		return countedGenerator{g, runs}, nil
	}
	t.Cleanup(func() { startSBOM = inner })
	return starts, runs
}

type countedGenerator struct {
	sbomGenerator
	runs *atomic.Int32
}

func (g countedGenerator) Run(ctx context.Context, root, imageName string) (*sbom.Result, error) {
	g.runs.Add(1)
	return g.sbomGenerator.Run(ctx, root, imageName)
}

// withRealGenerator puts the test's slipway-sbom on PATH, where the
// executor finds it as beside itself in its image.
func withRealGenerator(t *testing.T) {
	t.Helper()
	t.Setenv("PATH", filepath.Dir(sbomtest.Binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// sbomPredicate is the SBOM statement's predicate of the pushed index's
// only image, and that image's digest.
func sbomPredicate(t *testing.T, ref string) ([]byte, v1.Hash) {
	t.Helper()
	p := readPushed(t, remoteIndex(t, ref))
	img := p.images[0].Digest
	if len(p.statements[img]) != 2 {
		t.Fatalf("%s: %d statements about %s, want the provenance and the SBOM", ref, len(p.statements[img]), img)
	}
	var st struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(p.statements[img][1], &st); err != nil {
		t.Fatal(err)
	}
	return st.Predicate, img
}

// A rebuild of the same image (every step from the cache, pushed under
// another tag) takes the SBOM the first build kept in the layer cache: no
// generator starts, nothing is unpacked or scanned, and its statement's
// document is byte for byte the first one's. The first build, signed
// (its SBOM in the statements about the image and about the index), ran
// the generator once, started ahead at its RUN step, on the builder's
// tree. Another format is another document: made again.
func TestExecute_sbomReusedFromCache(t *testing.T) {
	env := newCorpusEnv(t)
	withRealGenerator(t)
	starts, runs := countGenerators(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY status /var/lib/dpkg/status\nRUN echo built > /built\n")
	status := "Package: hello\nStatus: install ok installed\nPriority: optional\nSection: devel\nInstalled-Size: 100\n" +
		"Maintainer: Test <test@example.invalid>\nArchitecture: amd64\nVersion: 2.10-3\nDescription: example package\n hello world\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	priv, _ := testenv.CosignKeyPair(t, "pw")
	keyPath := filepath.Join(t.TempDir(), "cosign.key")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COSIGN_PASSWORD", "pw")
	common := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + env.reg.Host(), "--build-arg=BASE=" + env.base,
		"--cache=true", "--cache-repo=" + env.reg.Ref("app/reuse-cache"), "--sbom=true", "-v=debug"}

	first := runExecutor(t, append(common, "--destination="+env.reg.Ref("app/reuse:first"), "--sign-key="+keyPath)...)
	if first.exit != 0 {
		t.Fatalf("first build failed: %s\n%s", first.resRaw, first.log)
	}
	if starts.Load() != 1 || runs.Load() != 1 {
		t.Errorf("the first build started %d generators and ran %d; want one of each (one SBOM for the image and the index)", starts.Load(), runs.Load())
	}
	for _, line := range []string{"Started the SBOM generator ahead", "from the builder's tree"} {
		if !strings.Contains(first.log, line) {
			t.Errorf("the first build's log lacks %q:\n%s", line, first.log)
		}
	}
	doc1, img1 := sbomPredicate(t, env.reg.Ref("app/reuse:first"))
	if !bytes.Contains(doc1, []byte(`"versionInfo":"2.10-3"`)) || !bytes.Contains(doc1, []byte(`"name":"`+env.reg.Ref("app/reuse")+"@"+img1.String()+`"`)) {
		t.Fatalf("the first SBOM lacks the package or the image's name:\n%.2000s", doc1)
	}

	second := runExecutor(t, append(common, "--destination="+env.reg.Ref("app/reuse:second"))...)
	if second.exit != 0 {
		t.Fatalf("second build failed: %s\n%s", second.resRaw, second.log)
	}
	doc2, img2 := sbomPredicate(t, env.reg.Ref("app/reuse:second"))
	if img2 != img1 {
		t.Fatalf("the rebuild made image %s, not %s: the test needs the same image", img2, img1)
	}
	if starts.Load() != 1 || runs.Load() != 1 {
		t.Errorf("the rebuild started a generator or ran one (%d, %d in all)", starts.Load(), runs.Load())
	}
	if !strings.Contains(second.log, "CACHED SBOM of "+img1.String()) || strings.Contains(second.log, "Unpacked") {
		t.Errorf("the rebuild's log does not say the SBOM came from the cache, or says it unpacked:\n%s", second.log)
	}
	if !bytes.Equal(doc1, doc2) {
		t.Errorf("the rebuild's SBOM differs from the first:\n%s\n----\n%s", doc1, doc2)
	}

	third := runExecutor(t, append(common, "--destination="+env.reg.Ref("app/reuse:cdx"), "--sbom-format=cyclonedx")...)
	if third.exit != 0 {
		t.Fatalf("CycloneDX build failed: %s\n%s", third.resRaw, third.log)
	}
	if runs.Load() != 2 || strings.Contains(third.log, "CACHED SBOM") {
		t.Errorf("the CycloneDX rebuild ran %d generators in all, want 2 (the SPDX document is no CycloneDX one)", runs.Load())
	}
	doc3, _ := sbomPredicate(t, env.reg.Ref("app/reuse:cdx"))
	if err := sbom.Validate(doc3, sbom.FormatCycloneDXJSON, env.reg.Ref("app/reuse")+"@"+img1.String()); err != nil {
		t.Errorf("the CycloneDX SBOM: %v", err)
	}
}

// Whoever can push to the cache repository can put any document under an
// image's SBOM key. One that is no document of the format, or one about
// another image, is not used: the rebuild warns and makes the SBOM again,
// and attaches that. (A document of the format that names the image is
// used: the cache's writers are trusted with the image's layers as much.)
func TestExecute_sbomCachePoisoned(t *testing.T) {
	env := newCorpusEnv(t)
	roots := withGenerator(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN echo built > /built\n")
	cacheRepo := env.reg.Ref("app/poison-cache")
	common := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + env.reg.Host(), "--build-arg=BASE=" + env.base,
		"--cache=true", "--cache-repo=" + cacheRepo, "--sbom=true", "--destination=" + env.reg.Ref("app/poison:v1")}
	first := runExecutor(t, common...)
	if first.exit != 0 {
		t.Fatalf("first build failed: %s\n%s", first.resRaw, first.log)
	}
	_, img := sbomPredicate(t, env.reg.Ref("app/poison:v1"))
	imageName := env.reg.Ref("app/poison") + "@" + img.String()
	key := sbomKey(imageName, "fake-generator spdx-json")
	repo, err := name.NewRepository(cacheRepo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, doc string }{
		{"another image's", `{"spdxVersion":"SPDX-2.3","name":"` + env.reg.Ref("app/poison") + `@sha256:` + strings.Repeat("0", 64) + `","files":["/evil"]}`},
		{"CycloneDX for SPDX", `{"bomFormat":"CycloneDX","metadata":{"component":{"name":"` + imageName + `"}},"files":["/evil"]}`},
		{"no JSON", `{"spdxVersion":"SPDX-2.3","name":"` + imageName + `","files":["/evil"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cache.New(cache.Options{Repo: repo})
			c.StoreDocument(key, []byte(tc.doc))
			if _, err := c.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			before := len(*roots)
			b := runExecutor(t, common...)
			if b.exit != 0 {
				t.Fatalf("rebuild failed: %s\n%s", b.resRaw, b.log)
			}
			if len(*roots) != before+1 || !strings.Contains(b.log, "WARNING: the SBOM of "+img.String()+" in the cache is not used") {
				t.Errorf("the rebuild did not make the SBOM again (%d runs) or did not warn:\n%s", len(*roots)-before, b.log)
			}
			doc, got := sbomPredicate(t, env.reg.Ref("app/poison:v1"))
			if got != img || bytes.Contains(doc, []byte("/evil")) || !bytes.Contains(doc, []byte(`"/a.txt"`)) {
				t.Errorf("the rebuild attached %s about %s; want the generator's own about %s", doc, got, img)
			}
		})
	}
}

// deviceLayer is a layer with device nodes where the generator reads: the
// character device 1:5 (/dev/zero, endless) as an npm lock file, and a
// lock file linking to it. The builder, as root, extracts them as real
// devices into its tree; the SBOM's unpacked tree has none.
func deviceLayer(t *testing.T) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "app/package-lock.json", Typeflag: tar.TypeChar, Mode: 0o644, Devmajor: 1, Devminor: 5},
		{Name: "srv/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "srv/package-lock.json", Typeflag: tar.TypeSymlink, Linkname: "/app/package-lock.json"},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The SBOM made from the builder's tree (chroot isolation, the final
// stage's last step ran there) is the one the image's unpacked layers give
// (creation time and UUIDs aside), with the real generator: for a build
// whose steps wrote, deleted and read package files, with RUN mounts (a
// cache mount, a bind mount of the context) that leave mount points
// behind, on a base whose device nodes sit where a cataloger reads (the
// builder's tree has them as real devices, read by nothing: the run ends).
func TestExecute_sbomOfBuilderTreeIsTheImages(t *testing.T) {
	env := newCorpusEnv(t)
	withRealGenerator(t)
	baseRef, err := name.ParseReference(env.base, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	base, err := remote.Image(baseRef)
	if err != nil {
		t.Fatal(err)
	}
	crafted, err := mutate.AppendLayers(base, deviceLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	craftedRef, err := name.ParseReference(env.reg.Ref("base/devices:1"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(craftedRef, crafted); err != nil {
		t.Fatal(err)
	}
	ctxDir := writeDockerfile(t, `ARG BASE
FROM $BASE
COPY status /var/lib/dpkg/status
COPY requirements.txt /app/requirements.txt
RUN --mount=type=cache,target=/var/cache/pkgs echo cached > /var/cache/pkgs/x && mkdir -p /opt/web && printf '{"name":"web","version":"1.0.0","lockfileVersion":3,"packages":{"":{"name":"web","version":"1.0.0"},"node_modules/left-pad":{"version":"1.3.0"}}}' > /opt/web/package-lock.json
RUN --mount=type=bind,source=a.txt,target=/mnt/ctx/a.txt cat /mnt/ctx/a.txt && rm /app/requirements.txt && echo 'requests==2.31.0' > /opt/requirements.txt
`)
	status := "Package: hello\nStatus: install ok installed\nPriority: optional\nSection: devel\nInstalled-Size: 100\n" +
		"Maintainer: Test <test@example.invalid>\nArchitecture: amd64\nVersion: 2.10-3\nDescription: example package\n hello world\n"
	for p, content := range map[string]string{"status": status, "requirements.txt": "flask==3.0.0\n"} {
		if err := os.WriteFile(filepath.Join(ctxDir, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, format := range []string{"spdx", "cyclonedx"} {
		t.Run(format, func(t *testing.T) {
			dest := env.reg.Ref("app/tree:" + format)
			start := time.Now()
			b := runExecutor(t, "--context=dir://"+ctxDir, "--insecure-registry="+env.reg.Host(), "--build-arg=BASE="+craftedRef.String(),
				"--destination="+dest, "--sbom=true", "--sbom-format="+format, "-v=debug")
			if b.exit != 0 {
				t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
			}
			if took := time.Since(start); took > 2*time.Minute {
				t.Errorf("the build took %v", took)
			}
			if !strings.Contains(b.log, "from the builder's tree") {
				t.Fatalf("the SBOM was not made from the builder's tree:\n%s", b.log)
			}
			doc, img := sbomPredicate(t, dest)
			for _, want := range []string{"2.10-3", "left-pad", "requests", "2.31.0"} {
				if !bytes.Contains(doc, []byte(want)) {
					t.Errorf("the SBOM lacks %q", want)
				}
			}
			if bytes.Contains(doc, []byte("flask")) {
				t.Errorf("the SBOM lists flask, whose file a step deleted")
			}

			// The same image's layers, unpacked as for an image the
			// builder left no tree of.
			ref, err := name.ParseReference(env.reg.Ref("app/tree@"+img.String()), name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			pulled, err := remote.Image(ref)
			if err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(t.TempDir(), "rootfs")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unpackImage(context.Background(), attestedImage{image: pulled}, root, 0); err != nil {
				t.Fatal(err)
			}
			want, err := sbom.Generate(context.Background(), root, sbom.Options{Format: format + "-json", ImageName: env.reg.Ref("app/tree") + "@" + img.String(), Binary: sbomtest.Binary(t)})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := sbomtest.Normalize(t, doc), sbomtest.Normalize(t, want); !bytes.Equal(got, want) {
				t.Errorf("the SBOM of the builder's tree differs from the unpacked image's:\n%s\n----\n%s", got, want)
			}
		})
	}
}

// blockingGenerator's Run waits, up to 20 s, until its image (by the
// digest its name holds) is in the registry, then writes withGenerator's
// kind of document; or fails at once when fail is set.
type blockingGenerator struct {
	fakeGenerator
	fail bool
}

func (g *blockingGenerator) Run(ctx context.Context, root, imageName string) (*sbom.Result, error) {
	if g.fail {
		return nil, errors.New("the generator failed (test)")
	}
	ref, err := name.ParseReference(imageName, name.Insecure)
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := remote.Head(ref); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s was not pushed while its SBOM was made", imageName)
		}
	}
	return g.fakeGenerator.Run(ctx, root, imageName)
}

// The image goes up while its SBOM is made (the generator here waits for
// it in the registry before it writes anything); the index and its
// attestations after, under the tag. An SBOM that fails fails the build
// and tags nothing.
func TestExecute_imagePushedWhileSBOMIsMade(t *testing.T) {
	env := newCorpusEnv(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN echo built > /built\n")
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			old := startSBOM
			startSBOM = func(ctx context.Context, opts sbom.Options) (sbomGenerator, error) {
				return &blockingGenerator{fakeGenerator: fakeGenerator{format: opts.Format, seen: func(string) {}}, fail: fail}, nil
			}
			t.Cleanup(func() { startSBOM = old })
			dest := env.reg.Ref(fmt.Sprintf("app/overlap:fail-%v", fail))
			b := runExecutor(t, "--context=dir://"+ctxDir, "--insecure-registry="+env.reg.Host(), "--build-arg=BASE="+env.base,
				"--destination="+dest, "--sbom=true")
			if fail {
				if b.exit == 0 || !strings.Contains(b.resRaw, "the generator failed") {
					t.Fatalf("the build with a failing SBOM: %s", b.resRaw)
				}
				assertNotPushed(t, dest)
				return
			}
			if b.exit != 0 {
				t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
			}
			doc, img := sbomPredicate(t, dest)
			if !bytes.Contains(doc, []byte(`"/a.txt"`)) || !bytes.Contains(doc, []byte(img.String())) {
				t.Errorf("SBOM %s", doc)
			}
		})
	}
}

// Two platforms: each image has its own SBOM (its own tree, unpacked: a
// COPY on the base's layers leaves the builder's partial), and a rebuild
// takes both from the cache.
func TestExecute_sbomMultiPlatformReused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	base := testenv.PushMultiPlatformBusybox(t, reg)
	roots := withGenerator(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n")
	args := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + reg.Host(), "--build-arg=BASE=" + base,
		"--destination=" + reg.Ref("app/multi-sbom:v1"), "--custom-platform=linux/amd64,linux/arm64", "--sbom=true",
		"--cache=true", "--cache-repo=" + reg.Ref("app/multi-sbom-cache")}
	for _, run := range []struct {
		name   string
		trees  int
		cached int
	}{{"first", 2, 0}, {"rebuild", 0, 2}} {
		before := len(*roots)
		b := runExecutor(t, args...)
		if b.exit != 0 {
			t.Fatalf("%s build failed: %s\n%s", run.name, b.resRaw, b.log)
		}
		if got := len(*roots) - before; got != run.trees || strings.Count(b.log, "CACHED SBOM of") != run.cached {
			t.Errorf("%s build: %d trees scanned, %d SBOMs from the cache; want %d and %d\n%s", run.name, got, strings.Count(b.log, "CACHED SBOM of"), run.trees, run.cached, b.log)
		}
		p := readPushed(t, remoteIndex(t, reg.Ref("app/multi-sbom:v1")))
		if len(p.images) != 2 {
			t.Fatalf("%d images", len(p.images))
		}
		for _, img := range p.images {
			var st struct {
				Predicate struct{ Name string }
			}
			if err := json.Unmarshal(p.statements[img.Digest][1], &st); err != nil {
				t.Fatal(err)
			}
			if st.Predicate.Name != reg.Ref("app/multi-sbom")+"@"+img.Digest.String() {
				t.Errorf("%s build: the SBOM of %s names %s", run.name, img.Digest, st.Predicate.Name)
			}
		}
	}
}

// In place (the executor in its own root, as in a pod), the stage's tree
// is the container's root, with the executor's own files in it: the SBOM
// is made from the image's unpacked layers instead. It lists the image's
// package and none of the Go modules of the executor and slipway-sbom
// beside it in /slipway, which a scan of the root would list.
func TestExecute_inplaceSBOMUnpacked(t *testing.T) {
	for _, tool := range []string{"unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (util-linux and coreutils)", tool, err)
		}
	}
	env := newCorpusEnv(t)
	root := makeExecutorRoot(t)
	bin, err := os.ReadFile(sbomtest.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "slipway", sbom.BinaryName), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY status /var/lib/dpkg/status\nRUN echo built > /built\n")
	status := "Package: hello\nStatus: install ok installed\nPriority: optional\nSection: devel\nInstalled-Size: 100\n" +
		"Maintainer: Test <test@example.invalid>\nArchitecture: amd64\nVersion: 2.10-3\nDescription: example package\n hello world\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := env.reg.Ref("inplace/sbom:v1")
	args := []string{"--isolation=inplace", "--context=dir:///workspace", "--destination=" + dest,
		"--insecure-registry=" + env.reg.Host(), "--build-arg=BASE=" + env.base, "--result-file=/slipway/result.json",
		"--sbom=true", "-v=debug"}
	script := `set -e
mount -t proc proc "$ROOT/proc"
mount -t tmpfs -o mode=755,nosuid tmpfs "$ROOT/dev"
for d in null zero random urandom tty; do
	[ -e "/dev/$d" ] || continue
	touch "$ROOT/dev/$d"
	mount --bind "/dev/$d" "$ROOT/dev/$d"
done
mount --bind "$CONTEXT" "$ROOT/workspace"
mount -o remount,bind,ro "$ROOT/workspace"
exec chroot "$ROOT" /slipway/executor "$@"
`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--pid", "--fork", "--propagation", "private",
		"sh", "-c", script, "sh"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "ROOT=" + root, "CONTEXT=" + ctxDir, "HOME=/root"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	if !bytes.Contains(out, []byte("from its unpacked layers")) || bytes.Contains(out, []byte("from the builder's tree")) {
		t.Errorf("the in-place SBOM was not made from the unpacked image:\n%s", out)
	}
	doc, _ := sbomPredicate(t, dest)
	if !bytes.Contains(doc, []byte(`"versionInfo":"2.10-3"`)) {
		t.Errorf("the SBOM lacks the image's package:\n%.3000s", doc)
	}
	for _, own := range []string{"github.com/slipway-dev/slipway", "anchore/syft", "/slipway/"} {
		if bytes.Contains(doc, []byte(own)) {
			t.Errorf("the SBOM holds %q, of the executor's own files", own)
		}
	}
}
