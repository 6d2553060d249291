package build_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/test/testenv"
)

// layerHeaders returns the headers of a layer's entries, by name (without
// "./" and a directory's "/").
func layerHeaders(t *testing.T, l v1.Layer) map[string]tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = *h
	}
}

// checkMountPointLayer checks that l holds exactly the directories dirs
// and the files others, and that the directories are as runc makes a
// mount point: mode 0755, owned by 0:0, with nothing in them.
func checkMountPointLayer(t *testing.T, what string, l v1.Layer, dirs []string, others ...string) {
	t.Helper()
	hs := layerHeaders(t, l)
	var got []string
	for n := range hs {
		got = append(got, n)
	}
	want := append(append([]string(nil), dirs...), others...)
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b }), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: entries (-want +got):\n%s", what, diff)
	}
	for _, d := range dirs {
		h, ok := hs[d]
		if !ok {
			continue
		}
		if h.Typeflag != tar.TypeDir || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: /%s is type %c, mode %o, owner %d:%d; want a directory, 755, 0:0", what, d, h.Typeflag, h.Mode, h.Uid, h.Gid)
		}
	}
}

// TestBuild_runMountPoints: a RUN on a base without /proc, /dev and /sys
// (the test busybox has none) leaves them in its layer, as BuildKit does:
// runc makes the mount points of the OCI spec's default mounts, and
// BuildKit's executor.MountStubsCleaner removes only the stubs of
// /etc/hosts, /etc/resolv.conf and the step's own mounts. BuildKit's
// client/mergediff_test.go (diffOpTestCases) says so of its own busybox:
// "busybox doesn't have /proc or /sys in its base image, add them so they
// don't show up in every diff of an exec on it". A base that has them keeps
// them as they are; a RUN heredoc's script, mounted at /dev/pipes, makes
// /dev a stub of its mount, which the cleaner removes.
func TestBuild_runMountPoints(t *testing.T) {
	mountPoints := []string{"dev", "proc", "sys"}
	t.Run("base without them", func(t *testing.T) {
		f := newFixture(t, nil)
		img, _ := mustBuild(t, f, "FROM {{BASE}}\nRUN true\nRUN true\nRUN echo x > /x\n", false)
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != 4 {
			t.Fatalf("%d layers, want 4", len(ls))
		}
		checkMountPointLayer(t, "first RUN", ls[1], mountPoints)
		checkMountPointLayer(t, "second RUN", ls[2], nil)
		checkMountPointLayer(t, "third RUN", ls[3], nil, "x")
	})
	t.Run("base with them", func(t *testing.T) {
		f := newFixture(t, nil)
		f.base = pushBaseWithMountPoints(t, f.reg)
		img, _ := mustBuild(t, f, "FROM {{BASE}}\nRUN true\n", false)
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		checkMountPointLayer(t, "RUN", ls[len(ls)-1], nil)
		flat := flatten(t, img)
		for n, mode := range map[string]int64{"proc": 0o555, "dev": 0o711, "sys": 0o555} {
			if e := flat[n]; e.Type != tar.TypeDir || e.Mode != mode || e.UID != 0 || e.ModTime != 0 {
				t.Errorf("/%s in the image: %+v, want the base's (mode %o, mtime 0)", n, e, mode)
			}
		}
	})
	t.Run("heredoc script", func(t *testing.T) {
		f := newFixture(t, nil)
		img, _ := mustBuild(t, f, "FROM {{BASE}}\nRUN <<EOF\n#!/bin/sh\necho hi > /hi\nEOF\n", false)
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		checkMountPointLayer(t, "RUN", ls[len(ls)-1], []string{"proc", "sys"}, "hi")
	})
}

// pushBaseWithMountPoints pushes the test busybox with a layer of its own
// holding /proc (0555), /dev (0711) and /sys (0555), dated the epoch, and
// returns its reference.
func pushBaseWithMountPoints(t *testing.T, tr *testRegistry) string {
	t.Helper()
	base, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []struct {
		name string
		mode int64
	}{{"dev", 0o711}, {"proc", 0o555}, {"sys", 0o555}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name + "/", Mode: d.mode, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(tr.host + "/base/with-mount-points:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}
