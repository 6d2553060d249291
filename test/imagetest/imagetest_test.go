package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/test/testenv"
)

func TestMain(m *testing.M) {
	run.Init()
	os.Exit(m.Run())
}

type tarEntry struct {
	hdr  tar.Header
	data string
}

func file(name string, mode int64, data string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
}

func dir(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func layer(t *testing.T, entries ...tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestFlatten(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image,
		layer(t,
			dir("a/", 0o755),
			file("a/keep", 0o644, "keep"),
			file("a/gone", 0o644, "gone"),
			dir("o/", 0o755),
			file("o/lower", 0o644, "lower"),
			dir("d/", 0o755),
			file("d/child", 0o644, "x"),
			file("suid", 0o4755, "s"),
			tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "a/keep", Mode: 0o777}},
			dir("tmp/", 0o1777),
		),
		layer(t,
			file("a/.wh.gone", 0, ""),
			// The opaque marker comes after an entry of its own layer: that entry stays.
			file("o/upper", 0o600, "upper"),
			file("o/.wh..wh..opq", 0, ""),
			file("d", 0o640, "now a file"),
			tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hard", Linkname: "suid"}},
			tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "owned", Mode: 0o2750, Uid: 1000, Gid: 50}},
		),
	)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	const sEmpty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	digest := func(s string) string {
		tree, err := Flatten(mustImage(t, layer(t, file("f", 0o644, s))))
		if err != nil {
			t.Fatal(err)
		}
		return tree["/f"].Digest
	}
	want := map[string]Entry{
		"/a":       {Type: tar.TypeDir, Mode: 0o755},
		"/a/keep":  {Type: tar.TypeReg, Mode: 0o644, Size: 4, Digest: digest("keep")},
		"/o":       {Type: tar.TypeDir, Mode: 0o755},
		"/o/upper": {Type: tar.TypeReg, Mode: 0o600, Size: 5, Digest: digest("upper")},
		"/d":       {Type: tar.TypeReg, Mode: 0o640, Size: 10, Digest: digest("now a file")},
		"/suid":    {Type: tar.TypeReg, Mode: 0o4755, Size: 1, Digest: digest("s")},
		"/hard":    {Type: tar.TypeReg, Mode: 0o4755, Size: 1, Digest: digest("s")},
		"/link":    {Type: tar.TypeSymlink, Mode: 0o777, Linkname: "a/keep"},
		"/tmp":     {Type: tar.TypeDir, Mode: 0o1777},
		"/owned":   {Type: tar.TypeReg, Mode: 0o2750, UID: 1000, GID: 50, Digest: sEmpty},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Flatten (-want +got):\n%s", diff)
	}
	if d := DiffTrees(want, got, nil); len(d) != 0 {
		t.Errorf("DiffTrees of equal trees = %q", d)
	}
	got["/extra"] = Entry{Type: tar.TypeDir, Mode: 0o700}
	delete(got, "/tmp")
	e := got["/a/keep"]
	e.Mode = 0o600
	got["/a/keep"] = e
	wantDiff := []string{
		"~/a/keep: file 0644 0:0 4 bytes " + shortDigest(want["/a/keep"].Digest) + " => file 0600 0:0 4 bytes " + shortDigest(want["/a/keep"].Digest),
		"+/extra: dir 0700 0:0",
		"-/tmp: dir 1777 0:0",
	}
	if diff := cmp.Diff(wantDiff, DiffTrees(want, got, nil)); diff != "" {
		t.Errorf("DiffTrees (-want +got):\n%s", diff)
	}
}

func mustImage(t *testing.T, ls ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Run needs root (chroot in new namespaces)")
	}
	base, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Entrypoint = []string{"/bin/sh", "-c"}
	cfg.Config.Cmd = []string{`echo "$(id -u):$(id -g) $(awk '/^Groups:/ {print $2, $3}' /proc/self/status) $PWD $GREETING $HOME"`}
	cfg.Config.Env = append(cfg.Config.Env, "GREETING=hi")
	cfg.Config.User = "app"
	cfg.Config.WorkingDir = "/srv/made"
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Run(context.Background(), img, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1000:1000 50 1000 /srv/made hi /home/app\n"; got != want {
		t.Errorf("Run() = %q, want %q", got, want)
	}

	got, err = Run(context.Background(), img, RunOptions{Cmd: []string{"exit 3"}})
	var ee *run.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Errorf("Run(exit 3) = %q, %v; want exit code 3", got, err)
	}
}
