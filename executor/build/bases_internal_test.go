package build

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

func TestNormalizedRef(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for in, want := range map[string]string{
		"debian":                              "docker.io/library/debian:latest",
		"debian:bookworm":                     "docker.io/library/debian:bookworm",
		"docker.io/library/debian:bookworm":   "docker.io/library/debian:bookworm",
		"index.docker.io/library/debian:12":   "docker.io/library/debian:12",
		"bitnami/redis:7":                     "docker.io/bitnami/redis:7",
		"gcr.io/distroless/static:nonroot":    "gcr.io/distroless/static:nonroot",
		"127.0.0.1:5000/base/busybox:1":       "127.0.0.1:5000/base/busybox:1",
		"debian@" + d:                         "docker.io/library/debian@" + d,
		"debian:bookworm@" + d:                "docker.io/library/debian@" + d,
		"registry.example.com:443/a/b/c:v1.2": "registry.example.com:443/a/b/c:v1.2",
	} {
		got, err := normalizedRef(in)
		if err != nil {
			t.Errorf("normalizedRef(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("normalizedRef(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBases_bounded: past result.MaxBases, bases are counted, not listed;
// the FROM images come first, so they are the ones kept; an image that
// failed to pull, or that two spellings name, is listed once or not at all.
func TestBases_bounded(t *testing.T) {
	digest := func(i int) v1.Hash {
		return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)}
	}
	plan := &dockerfile.Plan{
		Order:  []int{0, 1},
		Stages: []*dockerfile.Stage{{Index: 0, Base: "z/from:1", BaseStage: -1}, {Index: 1, Base: "scratch", BaseStage: -1}},
	}
	plan.TargetPlatform = dockerfile.NativePlatform()
	sh := &shared{images: map[imageKey]*imageSource{}}
	b := &buildSet{sh: sh, builders: []*builder{{plan: plan, sh: sh}}}
	add := func(s string, d v1.Hash, err error) {
		ref, _ := normalizedRef(s)
		sh.images[imageKey{ref: s, platform: dockerfile.FormatPlatform(plan.TargetPlatform)}] = &imageSource{ref: ref, resolved: d, digest: d, err: err}
	}
	add("z/from:1", digest(0), nil)
	for i := range 20 {
		add(fmt.Sprintf("a/copy-%02d:1", i), digest(i+1), nil)
	}
	add("a/broken:1", digest(99), errors.New("pull failed"))
	add("docker.io/a/copy-00:1", digest(1), nil) // the same as a/copy-00:1
	got, omitted := b.bases()
	if len(got) != result.MaxBases || omitted != 20+1-result.MaxBases {
		t.Fatalf("%d bases, %d omitted; want %d and %d", len(got), omitted, result.MaxBases, 21-result.MaxBases)
	}
	if got[0].Ref != "docker.io/z/from:1" || got[1].Ref != "docker.io/a/copy-00:1" || got[2].Ref != "docker.io/a/copy-01:1" {
		t.Errorf("bases start %v, want the FROM image, then the others in order", got[:3])
	}
	for _, bs := range got {
		if strings.Contains(bs.Ref, "broken") {
			t.Errorf("an image that failed to pull is listed: %v", bs)
		}
	}
}

// TestBases_platforms: a reference read for two platforms is one base; its
// manifest is named only when both resolved it to the same one.
func TestBases_platforms(t *testing.T) {
	h := func(i int) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)} }
	sh := &shared{images: map[imageKey]*imageSource{}}
	set := &buildSet{sh: sh}
	for n, p := range []string{"linux/amd64", "linux/arm64"} {
		pp, _ := dockerfile.ParsePlatform(p)
		plan := &dockerfile.Plan{Order: []int{0}, Stages: []*dockerfile.Stage{{Index: 0, Base: "busybox", BaseStage: -1}}, TargetPlatform: pp}
		set.builders = append(set.builders, &builder{plan: plan, sh: sh})
		sh.images[imageKey{ref: "busybox", platform: p}] = &imageSource{ref: "docker.io/library/busybox:latest", resolved: h(1), index: true, digest: h(10 + n)}
		sh.images[imageKey{ref: "single", platform: p}] = &imageSource{ref: "docker.io/library/single:latest", resolved: h(2), digest: h(2)}
	}
	got, omitted := set.bases()
	want := []result.Base{
		{Ref: "docker.io/library/busybox:latest", Digest: h(1).String()},
		{Ref: "docker.io/library/single:latest", Digest: h(2).String()},
	}
	if omitted != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("bases %v (%d omitted), want %v", got, omitted, want)
	}
}
