package dockerfile

import (
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform parses a platform as BuildKit does (containerd's
// platforms.Parse): os[/arch[/variant]], or an architecture alone for this
// machine's OS, normalised as platforms.Normalize does: aliases become
// their OCI names (x86_64 and x86-64 amd64, aarch64 arm64, armhf arm/v7),
// arm64/v8 is arm64, and arm without a variant is arm/v7.
func ParsePlatform(s string) (ocispec.Platform, error) {
	p, err := platforms.Parse(s)
	if err != nil {
		return ocispec.Platform{}, err
	}
	return platforms.Normalize(p), nil
}

// NativePlatform is the platform of this machine, as BuildKit's worker
// names it (platforms.Normalize of platforms.DefaultSpec): linux/amd64,
// linux/arm64, linux/arm/v7, ...
func NativePlatform() ocispec.Platform {
	return platforms.Normalize(platforms.DefaultSpec())
}

// FormatPlatform is p as os/arch[/variant], with the OS version when p
// has one (platforms.FormatAll).
func FormatPlatform(p ocispec.Platform) string {
	return platforms.FormatAll(p)
}

// SamePlatform reports whether a and b name the same platform once
// normalised (OS, architecture, variant and OS version).
func SamePlatform(a, b ocispec.Platform) bool {
	a, b = platforms.Normalize(a), platforms.Normalize(b)
	return a.OS == b.OS && a.Architecture == b.Architecture && a.Variant == b.Variant && a.OSVersion == b.OSVersion
}

// StagePlatform is the platform stage i is built for, by BuildKit's rules
// (dockerfile2llb):
//   - a stage FROM an earlier stage has that stage's platform, whatever
//     its own --platform says (dispatchState.init copies the base's
//     platform; moby/buildkit#4929, docker/buildx#3034);
//   - a stage FROM scratch has the target platform, whatever its own
//     --platform says (resolveReachableStages gives scratch
//     platformOpt.targetPlatform; moby/buildkit#5670 would change that,
//     and is not merged);
//   - a stage FROM an image has its --platform, else the target platform
//     (resolveBaseImage).
func (p *Plan) StagePlatform(i int) ocispec.Platform {
	st := p.Stages[i]
	switch {
	case st.BaseStage >= 0:
		return p.StagePlatform(st.BaseStage)
	case strings.EqualFold(st.Base, Scratch):
		return p.TargetPlatform
	case st.Platform != nil:
		return *st.Platform
	}
	return p.TargetPlatform
}
