package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/test/testenv"
)

func TestPullReferences(t *testing.T) {
	o := publish.RegistryOptions{Mirrors: []string{"127.0.0.1:5000", "https://mirror.example/hub/"}, InsecureRegistries: []string{"127.0.0.1:5000"}}
	for _, c := range []struct {
		in   string
		skip bool
		want []string
	}{
		{in: "busybox", want: []string{"127.0.0.1:5000/library/busybox:latest", "mirror.example/hub/library/busybox:latest", "index.docker.io/library/busybox:latest"}},
		{in: "docker.io/tonistiigi/x:1", skip: true, want: []string{"127.0.0.1:5000/tonistiigi/x:1", "mirror.example/hub/tonistiigi/x:1"}},
		{in: "busybox@sha256:" + strings.Repeat("a", 64), skip: true, want: []string{"127.0.0.1:5000/library/busybox@sha256:" + strings.Repeat("a", 64), "mirror.example/hub/library/busybox@sha256:" + strings.Repeat("a", 64)}},
		// Other registries never go through a mirror.
		{in: "ghcr.io/org/img:2", want: []string{"ghcr.io/org/img:2"}},
	} {
		o.SkipDefaultRegistryFallback = c.skip
		refs, err := publish.PullReferences(c.in, o)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		var got []string
		for _, r := range refs {
			got = append(got, r.Name())
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s (skip fallback %v): %q, want %q", c.in, c.skip, got, c.want)
		}
	}
	// The mirror marked insecure is reached over plain HTTP.
	refs, _ := publish.PullReferences("busybox", o)
	if refs[0].Context().Scheme() != "http" || refs[1].Context().Scheme() != "https" {
		t.Errorf("schemes %s, %s; want http for the insecure mirror, https for the other", refs[0].Context().Scheme(), refs[1].Context().Scheme())
	}
}

// FROM busybox is pulled from --registry-mirror, as kaniko's flag does; with
// --skip-default-registry-fallback, an image the mirror lacks fails the
// build naming it, without trying Docker Hub.
func TestExecute_registryMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images")
	}
	reg := testenv.StartRegistry(t)
	testenv.PushBusybox(t, reg)
	dir := t.TempDir()
	writeFile(t, dir, "Dockerfile", "FROM busybox\nRUN echo from-mirror > /m\n")
	b := runExecutor(t, "--context=dir://"+dir, "--destination="+reg.Ref("out/m:1"), "--insecure-registry="+reg.Host(),
		"--registry-mirror="+reg.Host(), "--skip-default-registry-fallback")
	if b.exit != 0 {
		t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
	}
	writeFile(t, dir, "Dockerfile", "FROM nosuchimage\n")
	b = runExecutor(t, "--context=dir://"+dir, "--destination="+reg.Ref("out/m:2"), "--insecure-registry="+reg.Host(),
		"--registry-mirror="+reg.Host(), "--skip-default-registry-fallback")
	if b.exit == 0 || b.res.Failure == nil || !strings.Contains(b.res.Failure.Message, reg.Host()+"/library/nosuchimage:latest") || strings.Contains(b.log, "index.docker.io") {
		t.Errorf("build of an image the mirror lacks: exit %d, result %s; want a failure naming the mirror's reference and no Docker Hub pull\n%s", b.exit, b.resRaw, b.log)
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A mirror is trusted with tags only: one that answers a digest reference
// with another manifest fails the build, as the README says, whatever it
// claims in Docker-Content-Digest.
func TestExecute_registryMirrorCannotSwapADigest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	baseRef, err := name.ParseReference(base, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	baseImg, err := remote.Image(baseRef)
	if err != nil {
		t.Fatal(err)
	}
	want, err := baseImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	evil, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	evilRef, err := name.ParseReference(reg.Ref("library/busybox:evil"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(evilRef, evil); err != nil {
		t.Fatal(err)
	}
	evilManifest, err := evil.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	evilType, err := evil.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	backend, err := url.Parse("http://" + reg.Host())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(backend)
	swapped := 0
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+want.String()) {
			swapped++
			w.Header().Set("Content-Type", string(evilType))
			w.Header().Set("Docker-Content-Digest", want.String())
			w.Write(evilManifest)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(mirror.Close)
	mirrorHost := strings.TrimPrefix(mirror.URL, "http://")

	dir := t.TempDir()
	writeFile(t, dir, "Dockerfile", "FROM busybox@"+want.String()+"\nRUN echo built > /x\n")
	dest := reg.Ref("out/swapped:1")
	b := runExecutor(t, "--context=dir://"+dir, "--destination="+dest, "--insecure-registry="+reg.Host(),
		"--insecure-registry="+mirrorHost, "--registry-mirror="+mirrorHost, "--skip-default-registry-fallback")
	if swapped == 0 {
		t.Fatalf("the mirror was never asked for %s; log:\n%s", want, b.log)
	}
	if b.exit == 0 || b.res.Failure == nil {
		t.Fatalf("the build succeeded on a manifest that is not %s; result %s", want, b.resRaw)
	}
	if !strings.Contains(b.res.Failure.Message, "digest") {
		t.Errorf("failure %q does not say the digest did not match", b.res.Failure.Message)
	}
	assertNotPushed(t, dest)
}
