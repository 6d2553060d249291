package build

import (
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// bases are the images the build read (FROM, COPY --from and RUN --mount
// from= images), for the result: each stage's FROM image in build order,
// then the others by reference, without duplicates, at most
// result.MaxBases; the second value counts those left out. The controller
// checks them for a tag that moved since (spec.triggers.baseImages).
func (b *builder) bases() ([]result.Base, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var order []string
	for _, i := range b.plan.Order {
		if st := b.plan.Stages[i]; st.BaseStage < 0 && !strings.EqualFold(st.Base, dockerfile.Scratch) {
			order = append(order, st.Base)
		}
	}
	var rest []string
	for s := range b.images {
		if !slices.Contains(order, s) {
			rest = append(rest, s)
		}
	}
	slices.Sort(rest)
	var out []result.Base
	omitted := 0
	for _, s := range append(order, rest...) {
		src := b.images[s]
		if src == nil || src.err != nil || src.ref == "" {
			continue
		}
		bs := result.Base{Ref: src.ref, Digest: src.resolved.String()}
		if src.index {
			bs.Manifest = src.digest.String()
		}
		if slices.Contains(out, bs) {
			continue
		}
		if len(out) == result.MaxBases {
			omitted++
			continue
		}
		out = append(out, bs)
	}
	return out, omitted
}

// normalizedRef is an image reference as the result names it: registry,
// repository and tag or digest in full, Docker Hub as "docker.io"
// ("debian:bookworm" → "docker.io/library/debian:bookworm"), as
// distribution's ParseNormalizedNamed and TagNameOnly make BuildKit's. A
// tag and a digest both given keep the digest, which is what is pulled.
func normalizedRef(s string) (string, error) {
	r, err := name.ParseReference(s)
	if err != nil {
		return "", err
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr(), nil
	}
	return repo + ":" + r.Identifier(), nil
}
