package result

import (
	"fmt"
	"strings"
	"testing"
)

// TestEncode_platforms: a result of several platforms keeps, within
// MaxSize, every platform with its digest and cache counts; the stage
// summaries (the build's and each platform's) go first.
func TestEncode_platforms(t *testing.T) {
	r := Result{Success: true, Digest: "sha256:" + strings.Repeat("a", 64)}
	for i := range 8 {
		p := Platform{Platform: fmt.Sprintf("linux/arch%d", i), Digest: fmt.Sprintf("sha256:%064d", i), CacheHits: i, CacheMisses: 1, Millis: 1000}
		for j := range 10 {
			s := Stage{Name: fmt.Sprintf("stage-with-a-long-name-%d", j), Platform: p.Platform, Instructions: 12, Millis: 1234}
			p.Stages = append(p.Stages, s)
			r.Stages = append(r.Stages, s)
		}
		r.Platforms = append(r.Platforms, p)
	}
	b := Encode(r)
	if len(b) > MaxSize {
		t.Fatalf("%d bytes, more than %d", len(b), MaxSize)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Platforms) != 8 || got.Stages != nil {
		t.Fatalf("%d platforms, %d stages; want 8 and none", len(got.Platforms), len(got.Stages))
	}
	for i, p := range got.Platforms {
		want := r.Platforms[i]
		if p.Platform != want.Platform || p.Digest != want.Digest || p.CacheHits != want.CacheHits || p.Stages != nil {
			t.Errorf("platform %d: %+v, want %s %s without stages", i, p, want.Platform, want.Digest)
		}
	}
	if r.Platforms[0].Stages == nil {
		t.Errorf("Encode changed its argument's platforms")
	}
}
