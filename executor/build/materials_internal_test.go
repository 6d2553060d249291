package build

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// TestMaterials_perPlatform: each platform's materials are its FROM images
// (read for it, with its manifest of an index) and the other images read
// for it, past result.MaxBases too; an image of the other platform is not
// among them.
func TestMaterials_perPlatform(t *testing.T) {
	h := func(i int) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)} }
	sh := &shared{images: map[imageKey]*imageSource{}}
	set := &buildSet{sh: sh}
	for n, p := range []string{"linux/amd64", "linux/arm64"} {
		pp, _ := dockerfile.ParsePlatform(p)
		plan := &dockerfile.Plan{Order: []int{0}, Stages: []*dockerfile.Stage{{Index: 0, Base: "busybox", BaseStage: -1}}, TargetPlatform: pp}
		set.builders = append(set.builders, &builder{plan: plan, sh: sh})
		sh.images[imageKey{ref: "busybox", platform: p}] = &imageSource{ref: "docker.io/library/busybox:latest", resolved: h(1), index: true, digest: h(10 + n)}
	}
	for i := range result.MaxBases + 2 {
		sh.images[imageKey{ref: fmt.Sprintf("copy-%02d", i), platform: "linux/arm64"}] = &imageSource{ref: fmt.Sprintf("docker.io/library/copy-%02d:latest", i), resolved: h(100 + i), digest: h(100 + i)}
	}
	got := set.materials()
	wantAmd := []Material{{Base: result.Base{Ref: "docker.io/library/busybox:latest", Digest: h(1).String(), Manifest: h(10).String()}, Platform: "linux/amd64"}}
	if diff := cmp.Diff(wantAmd, got[0]); diff != "" {
		t.Errorf("amd64 materials (-want +got):\n%s", diff)
	}
	if n := len(got[1]); n != result.MaxBases+3 {
		t.Errorf("arm64 has %d materials, want busybox and %d others", n, result.MaxBases+2)
	}
	if got[1][0].Manifest != h(11).String() || got[1][1].Ref != "docker.io/library/copy-00:latest" || got[1][1].Platform != "linux/arm64" {
		t.Errorf("arm64 materials start %+v", got[1][:2])
	}
}
