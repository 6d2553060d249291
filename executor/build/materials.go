package build

import (
	"slices"
	"strings"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// materials are, for each builder (target platform) in order, every image
// its build read, for its provenance (executor/attest): the FROM image of
// each of its stages, and every other image (COPY --from, RUN --mount
// from=) read for the platform of one of its stages, each once, with the
// platform it was read for (result.Base has none: Platform gives it) and
// no limit on their number. An image read by a stage of the build
// platform is named in the materials of every target whose plan has a
// stage of that platform, which in a build of several platforms may name
// a COPY --from image of one target's stage in another's.
func (set *buildSet) materials() [][]Material {
	set.sh.mu.Lock()
	defer set.sh.mu.Unlock()
	out := make([][]Material, len(set.builders))
	for n, b := range set.builders {
		var keys []imageKey
		platforms := map[string]bool{}
		for _, i := range b.plan.Order {
			p := dockerfile.FormatPlatform(b.plan.StagePlatform(i))
			platforms[p] = true
			if st := b.plan.Stages[i]; st.BaseStage < 0 && !strings.EqualFold(st.Base, dockerfile.Scratch) {
				if k := (imageKey{ref: st.Base, platform: p}); !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
		}
		var rest []imageKey
		for k := range set.sh.images {
			if platforms[k.platform] && !slices.Contains(keys, k) {
				rest = append(rest, k)
			}
		}
		slices.SortFunc(rest, func(a, b imageKey) int {
			return strings.Compare(a.ref+" "+a.platform, b.ref+" "+b.platform)
		})
		for _, k := range append(keys, rest...) {
			src := set.sh.images[k]
			if src == nil || src.err != nil || src.ref == "" {
				continue
			}
			m := Material{Base: result.Base{Ref: src.ref, Digest: src.resolved.String()}, Platform: k.platform}
			if src.index {
				m.Manifest = src.digest.String()
			}
			if !slices.Contains(out[n], m) {
				out[n] = append(out[n], m)
			}
		}
	}
	return out
}

// Material is an image a build read, with the platform it was read for
// (os/arch[/variant]).
type Material struct {
	result.Base
	Platform string
}
