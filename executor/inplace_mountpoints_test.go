package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/test/testenv"
)

// TestExecute_inplaceMountPoints: a RUN's layer holds /proc, /dev and /sys
// (directories, 0755, 0:0) where the image lacked them, in place as with
// chroot, though in place the pod's own are there and no snapshot sees
// them: runc makes the mount points of the default mounts and BuildKit
// keeps them (client/mergediff_test.go diffOpTestCases adds /proc and /sys
// to its busybox "so they don't show up in every diff of an exec on it").
// A base that has them keeps them; a RUN heredoc's /dev/pipes mount makes
// /dev a stub its cleaner removes; a stage FROM a stage whose RUN made them
// adds nothing. Each target is built in place and with chroot, both
// reproducible, into the same image.
func TestExecute_inplaceMountPoints(t *testing.T) {
	for _, tool := range []string{"unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (util-linux and coreutils)", tool, err)
		}
	}
	const dockerfile = `ARG BASE
ARG WITH
FROM $BASE AS plain
RUN true

FROM plain AS again
RUN echo x > /x

FROM $BASE AS heredoc
RUN <<EOF
#!/bin/sh
echo hi > /hi
EOF

FROM $WITH AS with
RUN true
`
	e := newPlatformExec(t, dockerfile)
	with := pushWithMountPoints(t, e.reg)
	root := makeExecutorRoot(t)
	for _, tc := range []struct {
		target string
		want   []string // the last layer's entries
	}{
		{"plain", []string{"dev/", "proc/", "sys/"}},
		{"again", []string{"x"}},
		{"heredoc", []string{"hi", "proc/", "sys/"}},
		{"with", nil},
	} {
		t.Run(tc.target, func(t *testing.T) {
			ref := e.reg.Ref("app/mountpoints-" + tc.target + ":inplace")
			args := []string{"--isolation=inplace", "--context=dir:///workspace", "--destination=" + ref,
				"--insecure-registry=" + e.reg.Host(), "--build-arg=BASE=" + e.base, "--build-arg=WITH=" + with,
				"--target=" + tc.target, "--reproducible", "--result-file=/slipway/result.json"}
			out, err := runInPlace(t, root, e.ctxDir, args)
			raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
			if err != nil {
				t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
			}
			img := pullImage(t, ref)
			ls, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := ls[len(ls)-1].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var got []string
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, h.Name)
				if h.Typeflag == tar.TypeDir && (h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0) {
					t.Errorf("%s: mode %o, owner %d:%d; want 755, 0:0", h.Name, h.Mode, h.Uid, h.Gid)
				}
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("the last layer (-want +got):\n%s\nin-place output:\n%s", diff, out)
			}
			chrootRef := e.reg.Ref("app/mountpoints-" + tc.target + ":chroot")
			e.mustRun(t, "app/mountpoints-"+tc.target+":chroot", "--build-arg=WITH="+with, "--target="+tc.target, "--reproducible")
			di, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			dc, err := pullImage(t, chrootRef).Digest()
			if err != nil {
				t.Fatal(err)
			}
			if di != dc {
				t.Errorf("in place %s, chroot %s; want the same image", di, dc)
			}
		})
	}
}

// pushWithMountPoints pushes the test busybox with a layer holding /proc
// (0555), /dev (0711) and /sys (0555), and returns its reference.
func pushWithMountPoints(t *testing.T, reg *testenv.Registry) string {
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
	s := reg.Ref("library/with-mount-points:latest")
	ref, err := name.NewTag(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatalf("pushing %s: %v", s, err)
	}
	return s
}
