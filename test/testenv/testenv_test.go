package testenv

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestBusyboxImage(t *testing.T) {
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	lmt, err := layers[0].MediaType()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{string(mt), string(lmt), cfg.OS, cfg.Architecture, strings.Join(cfg.Config.Cmd, " "), fmt.Sprint(len(cfg.History))}
	want := []string{string(types.DockerManifestSchema2), string(types.DockerLayer), "linux", "amd64", "sh", "1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("media types, platform, Cmd, history (-want +got):\n%s", diff)
	}

	// Every entry is owned numerically, dated 0, and the expected ones are there.
	type meta struct {
		Type     byte
		Mode     int64
		Uid, Gid int
		Link     string
	}
	entries := map[string]meta{}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %v, owner %q:%q; want 0 and numeric owners", h.Name, h.ModTime, h.Uname, h.Gname)
		}
		names = append(names, h.Name)
		entries[h.Name] = meta{h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("entries out of order: %q before %q", names[i-1], names[i])
		}
	}
	wantEntries := map[string]meta{
		"bin/busybox": {tar.TypeReg, 0o755, 0, 0, ""},
		"bin/sh":      {tar.TypeSymlink, 0o777, 0, 0, "busybox"},
		"bin/ls":      {tar.TypeSymlink, 0o777, 0, 0, "busybox"},
		"etc/passwd":  {tar.TypeReg, 0o644, 0, 0, ""},
		"etc/group":   {tar.TypeReg, 0o644, 0, 0, ""},
		"tmp/":        {tar.TypeDir, 0o1777, 0, 0, ""},
		"root/":       {tar.TypeDir, 0o700, 0, 0, ""},
		"home/app/":   {tar.TypeDir, 0o755, AppUID, AppGID, ""},
	}
	gotEntries := map[string]meta{}
	for n := range wantEntries {
		gotEntries[n] = entries[n]
	}
	if diff := cmp.Diff(wantEntries, gotEntries); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if _, ok := entries["bin/busybox/"]; ok {
		t.Error("bin/busybox is also a directory")
	}

	// Built twice, the image is the same.
	again, err := buildBusybox()
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, err := again.Digest()
	if err != nil || d1 != d2 {
		t.Errorf("digests differ between builds: %s, %s (%v)", d1, d2, err)
	}
}

// pull fetches ref with auth and validates it.
func pull(t *testing.T, ref string, auth authn.Authenticator) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(auth))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validating %s: %v", ref, err)
	}
	return img
}

func TestStartRegistry(t *testing.T) {
	reg := StartRegistry(t)
	ref := PushBusybox(t, reg)
	if want := reg.Host() + "/library/busybox:latest"; ref != want {
		t.Errorf("PushBusybox() = %q, want %q", ref, want)
	}
	got := pull(t, ref, authn.Anonymous)
	want, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := want.Digest()
	gd, err := got.Digest()
	if err != nil || gd != wd {
		t.Errorf("pulled digest %s (%v), want %s", gd, err, wd)
	}

	// Deletes are enabled.
	r, err := name.NewDigest(reg.Ref("library/busybox@"+wd.String()), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(r); err != nil {
		t.Errorf("deleting %s: %v", r, err)
	}
}

func TestStartRegistry_basicAuth(t *testing.T) {
	reg := StartRegistry(t, WithBasicAuth("builder", "pa55word"))
	resp, err := http.Get("http://" + reg.Host() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials: %d, want 401", resp.StatusCode)
	}

	ref := PushBusybox(t, reg)
	pull(t, ref, reg.Auth())

	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Image(r, remote.WithAuth(&authn.Basic{Username: "builder", Password: "wrong"}))
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Errorf("pulling with a wrong password: %v, want 401", err)
	}

	// The DOCKER_CONFIG directory holds working credentials.
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	if _, err := remote.Image(r, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		t.Errorf("pulling with DOCKER_CONFIG credentials: %v", err)
	}
}

func TestRegistry_stop(t *testing.T) {
	var reg *Registry
	t.Run("inner", func(t *testing.T) { reg = StartRegistry(t) })
	// The inner test's cleanup has stopped the process.
	if err := exec.Command("kill", "-0", fmt.Sprint(reg.cmd.Process.Pid)).Run(); err == nil {
		t.Errorf("docker-registry (pid %d) still runs after its test ended", reg.cmd.Process.Pid)
	}
	if _, err := os.Stat(RegistryBinary); err != nil {
		t.Skip("no registry")
	}
}
