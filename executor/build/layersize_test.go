package build_test

import (
	"archive/tar"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/testenv"
)

// bombLayer is a layer holding one zero-filled file of size bytes: gzip
// makes it about a thousand times smaller.
func bombLayer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Mode: 0o644, Size: size})
			if err == nil {
				_, err = io.CopyN(tw, zeroReader{}, size)
			}
			if err == nil {
				err = tw.Close()
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestBuild_maxLayerSize builds on an image with a gzip bomb layer (64 MiB
// of zeros in about 64 KiB) under a 16 MiB limit, reading it each way a
// build reads image layers: each build fails, naming the entry, the limit
// and the flag, and reports no image.
func TestBuild_maxLayerSize(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	busybox, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	bomb := bombLayer(t, 64<<20)
	if sz, err := bomb.Size(); err != nil || sz > 1<<20 {
		t.Fatalf("the bomb layer is %d bytes compressed (%v), want it small", sz, err)
	}
	img, err := mutate.AppendLayers(busybox, bomb)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(f.reg.host + "/base/bomb:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	const limit = 16 << 20
	for _, tc := range []struct{ name, dockerfile string }{
		{"base image", "FROM " + ref.String() + "\nRUN true\n"},
		{"COPY --from an image", "FROM {{BASE}}\nCOPY --from=" + ref.String() + " /bomb /bomb\n"},
		{"RUN --mount from an image", "FROM {{BASE}}\nRUN --mount=from=" + ref.String() + ",target=/m true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bc, err := source.Open(f.ctxDir, "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			o := build.Options{
				Dockerfile:   []byte(strings.ReplaceAll(tc.dockerfile, "{{BASE}}", f.base)),
				Context:      bc,
				Isolation:    build.Chroot,
				WorkDir:      t.TempDir(),
				MaxLayerSize: limit,
			}
			img, _, err := build.Build(t.Context(), o)
			if err == nil {
				t.Fatalf("Build() succeeded, want it to fail on the bomb")
			}
			if img != nil {
				t.Errorf("Build() failed but returned an image")
			}
			if !errors.Is(err, rootfs.ErrLayerTooLarge) {
				t.Errorf("Build() = %v, want rootfs.ErrLayerTooLarge", err)
			}
			t.Logf("Build() = %v", err)
			for _, want := range []string{`"bomb"`, "16777216", "--max-layer-size"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Build() = %v, want it to name %s", err, want)
				}
			}
		})
	}
	// Without a limit the same layer is read.
	bc, err := source.Open(f.ctxDir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	o := build.Options{Dockerfile: []byte("FROM " + ref.String() + "\nRUN test -s /bomb\n"), Context: bc, Isolation: build.Chroot, WorkDir: t.TempDir()}
	if _, _, err := build.Build(t.Context(), o); err != nil {
		t.Errorf("Build() without a limit = %v", err)
	}
}
