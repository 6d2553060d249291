package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
