package build_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// TestBuild_reportsBases: the report names every image the build read
// (an ARG-expanded FROM, a FROM of a multi-platform tag, COPY --from and
// RUN --mount from= images, one given by digest), each once, with what its
// reference resolved to: the index's digest for the multi-platform tag,
// with the platform's manifest, and never a stage.
func TestBuild_reportsBases(t *testing.T) {
	f := newFixture(t, map[string]string{})
	img, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	// A second image, distinct from the base, under two tags.
	other, err := mutate.Config(img, v1.Config{Env: []string{"OTHER=1"}})
	if err != nil {
		t.Fatal(err)
	}
	otherRef := f.reg.host + "/lib/other:2"
	push(t, otherRef, other)
	otherDigest, _ := other.Digest()
	pinnedRef := f.reg.host + "/lib/other@" + otherDigest.String()
	mountRef := f.reg.host + "/lib/mounted:3"
	push(t, mountRef, other)
	// A multi-platform tag: an index with the build's platform.
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
	}})
	indexRef := f.reg.host + "/lib/multi:latest"
	r, err := name.ParseReference(indexRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	indexDigest, _ := idx.Digest()
	imgDigest, _ := img.Digest()

	dockerfile := `ARG BASE
FROM ${BASE} AS one
RUN --mount=from=` + mountRef + `,target=/m test -f /m/bin/busybox
FROM ` + indexRef + `
COPY --from=one /bin/busybox /b1
COPY --from=` + otherRef + ` /bin/busybox /b2
COPY --from=` + pinnedRef + ` /bin/busybox /b3
COPY --from=` + otherRef + ` /bin/busybox /b4
`
	_, rep, err := f.build(t, dockerfile, false, func(o *build.Options) {
		o.BuildArgs = map[string]string{"BASE": f.base}
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	want := []result.Base{
		// The FROM images in build order.
		{Ref: f.base, Digest: imgDigest.String()},
		{Ref: indexRef, Digest: indexDigest.String(), Manifest: imgDigest.String()},
		// Then the others by reference.
		{Ref: mountRef, Digest: otherDigest.String()},
		{Ref: otherRef, Digest: otherDigest.String()},
		{Ref: pinnedRef, Digest: otherDigest.String()},
	}
	if diff := cmp.Diff(want, rep.Bases); diff != "" {
		t.Errorf("bases (-want +got)\n%s", diff)
	}
	if rep.BasesOmitted != 0 {
		t.Errorf("BasesOmitted = %d", rep.BasesOmitted)
	}
	for _, b := range rep.Bases {
		if strings.Contains(b.Ref, "one") {
			t.Errorf("a stage is reported as a base: %v", b)
		}
	}
}

func push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}
