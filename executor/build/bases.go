package build

import (
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// bases are the images the build read (FROM, COPY --from and RUN --mount
// from= images), for the result: each stage's FROM image in build order
// (each platform's stages in turn), then the others by reference, without
// duplicates, at most result.MaxBases; the second value counts those left
// out. The controller checks them for a tag that moved since
// (spec.triggers.baseImages). A reference read for several platforms is
// one base; its Manifest is left out when they resolved it to different
// manifests of its index.
func (set *buildSet) bases() ([]result.Base, int) {
	set.sh.mu.Lock()
	defer set.sh.mu.Unlock()
	var order []imageKey
	for _, b := range set.builders {
		for _, i := range b.plan.Order {
			if st := b.plan.Stages[i]; st.BaseStage < 0 && !strings.EqualFold(st.Base, dockerfile.Scratch) {
				k := imageKey{ref: st.Base, platform: dockerfile.FormatPlatform(b.plan.StagePlatform(i))}
				if !slices.Contains(order, k) {
					order = append(order, k)
				}
			}
		}
	}
	var rest []imageKey
	for k := range set.sh.images {
		if !slices.Contains(order, k) {
			rest = append(rest, k)
		}
	}
	slices.SortFunc(rest, func(a, b imageKey) int {
		if c := strings.Compare(a.ref, b.ref); c != 0 {
			return c
		}
		return strings.Compare(a.platform, b.platform)
	})
	var out []result.Base
	omitted := map[result.Base]bool{}
	for _, k := range append(order, rest...) {
		src := set.sh.images[k]
		if src == nil || src.err != nil || src.ref == "" {
			continue
		}
		bs := result.Base{Ref: src.ref, Digest: src.resolved.String()}
		if src.index {
			bs.Manifest = src.digest.String()
		}
		if i := slices.IndexFunc(out, func(o result.Base) bool { return o.Ref == bs.Ref && o.Digest == bs.Digest }); i >= 0 {
			if out[i].Manifest != bs.Manifest {
				out[i].Manifest = ""
			}
			continue
		}
		if len(out) == result.MaxBases {
			omitted[result.Base{Ref: bs.Ref, Digest: bs.Digest}] = true
			continue
		}
		out = append(out, bs)
	}
	return out, len(omitted)
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
