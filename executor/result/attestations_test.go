package result

import (
	"fmt"
	"strings"
	"testing"
)

// TestEncode_attestations: a build of 8 platforms with provenance, SBOM,
// referrers and signatures fits in MaxSize with every platform and every
// attestation manifest's digest; past that, the attestations' details go,
// then the images' signatures (the index's stays), then the last
// attestations, counted.
func TestEncode_attestations(t *testing.T) {
	d := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	r := Result{Success: true, Digest: d(1), References: []string{"registry.example.com/team/app@" + d(1)}}
	r.Signatures = append(r.Signatures, Signature{Digest: d(1), Signature: d(2), Attestations: d(3)})
	for i := range 8 {
		p := fmt.Sprintf("linux/arch%d", i)
		r.Platforms = append(r.Platforms, Platform{Platform: p, Digest: d(10 + i), CacheHits: 3, CacheMisses: 1, Millis: 1000})
		r.Attestations = append(r.Attestations, Attestation{Platform: p, Image: d(10 + i), Manifest: d(20 + i), Referrer: d(30 + i),
			PredicateTypes: []string{"https://slsa.dev/provenance/v1", "https://spdx.dev/Document"}})
		r.Signatures = append(r.Signatures, Signature{Digest: d(10 + i), Signature: d(40 + i), Attestations: d(50 + i)})
	}
	b := Encode(r)
	if len(b) > MaxSize {
		t.Fatalf("%d bytes, more than %d", len(b), MaxSize)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Platforms) != 8 || len(got.Attestations) != 8 || got.AttestationsOmitted != 0 {
		t.Fatalf("%d platforms, %d attestations (%d omitted); want 8, 8", len(got.Platforms), len(got.Attestations), got.AttestationsOmitted)
	}
	for i, a := range got.Attestations {
		if a.Image != d(10+i) || a.Manifest != d(20+i) {
			t.Errorf("attestation %d: %+v", i, a)
		}
	}
	if len(got.Signatures) == 0 || got.Signatures[0] != r.Signatures[0] {
		t.Errorf("signatures %+v; want the index's first", got.Signatures)
	}

	// A long failure-free document: 16 attestations and long references.
	for i := 8; i < MaxAttestations; i++ {
		r.Attestations = append(r.Attestations, Attestation{Platform: "linux/x", Image: d(100 + i), Manifest: d(200 + i), Referrer: d(300 + i)})
	}
	for i := range 10 {
		r.References = append(r.References, "registry.example.com/"+strings.Repeat("x", 60)+fmt.Sprint(i)+"@"+d(1))
	}
	b = Encode(r)
	if len(b) > MaxSize {
		t.Fatalf("%d bytes, more than %d", len(b), MaxSize)
	}
	got, _ = Decode(b)
	if got.Digest != d(1) || len(got.Signatures) != 1 || got.AttestationsOmitted == 0 || len(got.Attestations)+got.AttestationsOmitted != MaxAttestations {
		t.Errorf("digest %s, %d signatures, %d attestations + %d omitted", got.Digest, len(got.Signatures), len(got.Attestations), got.AttestationsOmitted)
	}
	if len(r.Attestations[0].PredicateTypes) == 0 {
		t.Errorf("Encode changed its argument's attestations")
	}
}
