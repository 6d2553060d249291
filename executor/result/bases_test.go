package result

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func manyBases(n int) []Base {
	var out []Base
	for i := range n {
		out = append(out, Base{
			Ref:      fmt.Sprintf("registry.example.com/team/project/base-image-%02d:2024-12-07-with-a-long-tag", i),
			Digest:   "sha256:" + strings.Repeat(fmt.Sprintf("%x", i%16), 64),
			Manifest: "sha256:" + strings.Repeat("f", 64),
		})
	}
	return out
}

// TestEncode_bases: bases survive a round trip; when the document would
// not fit, the platform manifests go first, then the last bases, counted
// in BasesOmitted, and what is kept is the start of the list.
func TestEncode_bases(t *testing.T) {
	small := Result{Success: true, Digest: "sha256:" + strings.Repeat("a", 64), Bases: manyBases(2)}
	got, err := Decode(Encode(small))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(small.Bases, got.Bases); diff != "" {
		t.Errorf("round trip (-want +got)\n%s", diff)
	}

	big := Result{Success: true, Digest: "sha256:" + strings.Repeat("a", 64), Bases: manyBases(MaxBases), BasesOmitted: 3,
		Stages: []Stage{{Name: "build", Instructions: 3}}}
	for range 12 {
		big.References = append(big.References, "registry.example.com/team/project/app:"+strings.Repeat("t", 40)+"@sha256:"+strings.Repeat("b", 64))
	}
	b := Encode(big)
	if len(b) > MaxSize {
		t.Fatalf("encoded %d bytes, more than %d", len(b), MaxSize)
	}
	got, err = Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Bases) == 0 || len(got.Bases) == MaxBases {
		t.Fatalf("%d bases kept of %d: the test should make Encode drop some, not all", len(got.Bases), MaxBases)
	}
	if want := 3 + MaxBases - len(got.Bases); got.BasesOmitted != want {
		t.Errorf("BasesOmitted = %d, want %d", got.BasesOmitted, want)
	}
	for i, bs := range got.Bases {
		want := big.Bases[i]
		want.Manifest = ""
		if bs != want {
			t.Errorf("base %d = %+v, want %+v (the list's start, without the manifest)", i, bs, want)
		}
	}
	if len(got.References) != len(big.References) || got.Digest != big.Digest {
		t.Error("Encode dropped the references or the digest to fit the bases")
	}
}
