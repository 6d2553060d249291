package testenv

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// debianArch is Debian's architecture whose busybox-static serves a
// platform (os/arch/variant, with arm's variant defaulted to v7): armhf
// is ARMv7 with VFP, armel ARMv5TE (which v6 runs too).
var debianArch = map[string]string{
	"linux/arm64":    "arm64",
	"linux/arm64/v8": "arm64",
	"linux/arm/v7":   "armhf",
	"linux/arm/v6":   "armel",
	"linux/arm/v5":   "armel",
	"linux/386":      "i386",
	"linux/ppc64le":  "ppc64el",
	"linux/s390x":    "s390x",
	"linux/mips64le": "mips64el",
}

var (
	platformImagesMu sync.Mutex
	platformImages   = map[string]v1.Image{}
)

// BusyboxImageFor returns BusyboxImage's image for platform p: the same
// files, users and applet links, made from Debian's busybox-static of p's
// architecture (fetched once by hack/deps.sh --foreign, unpacked, never
// installed), with the config's os, architecture and variant set to p's
// (arm without a variant is arm/v7). For linux/amd64 without a variant it
// is BusyboxImage itself. Each image is built once per process and, like
// BusyboxImage, depends only on the busybox binaries.
//
// The applet links are those of this machine's busybox (/bin/busybox
// --list): the foreign binary cannot run here without emulation, and
// Debian builds every architecture's busybox-static from one
// configuration.
func BusyboxImageFor(p v1.Platform) (v1.Image, error) {
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "arm" && p.Variant == "" {
		p.Variant = "v7"
	}
	key := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		key += "/" + p.Variant
	}
	if key == "linux/amd64" {
		return BusyboxImage()
	}
	arch, ok := debianArch[key]
	if !ok {
		return nil, fmt.Errorf("no Debian busybox-static for platform %s (known: linux/amd64 and %s)", key, strings.Join(slices.Sorted(maps.Keys(debianArch)), ", "))
	}
	platformImagesMu.Lock()
	defer platformImagesMu.Unlock()
	if img, ok := platformImages[key]; ok {
		return img, nil
	}
	root, err := ForeignDeb("busybox-static", arch)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(filepath.Join(root, "bin", "busybox"))
	if err != nil {
		return nil, fmt.Errorf("reading Debian's busybox-static:%s: %w", arch, err)
	}
	version, err := os.ReadFile(filepath.Join(root, "..", "done"))
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets (%s, hack/deps.sh installs busybox-static): %w", BusyboxPath, err)
	}
	img, err := busyboxImageFor(bin, strings.Fields(string(out)), p,
		fmt.Sprintf("Debian busybox-static:%s %s /bin/busybox", arch, debVersion(string(version))))
	if err != nil {
		return nil, err
	}
	platformImages[key] = img
	return img, nil
}

// debVersion returns the Version field of a dpkg-deb -f output.
func debVersion(fields string) string {
	for _, l := range strings.Split(fields, "\n") {
		if v, ok := strings.CutPrefix(l, "Version: "); ok {
			return v
		}
	}
	return "(unknown version)"
}

// busyboxImageFor builds BusyboxImage's layer and config from bin for p.
func busyboxImageFor(bin []byte, applets []string, p v1.Platform, source string) (v1.Image, error) {
	layer, err := busyboxLayer(bin, applets)
	if err != nil {
		return nil, fmt.Errorf("building busybox layer: %w", err)
	}
	epoch := v1.Time{Time: time.Unix(0, 0).UTC()}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      epoch,
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       v1.Config{Env: []string{busyboxEnvPath}, Cmd: []string{"sh"}},
	})
	if err != nil {
		return nil, fmt.Errorf("building busybox config: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   epoch,
			CreatedBy: "slipway testenv: " + source + ", applet links, /etc/passwd, /etc/group",
		},
		MediaType: types.DockerLayer,
	})
	if err != nil {
		return nil, fmt.Errorf("appending busybox layer: %w", err)
	}
	return img, nil
}

// MultiPlatformBusyboxPlatforms are the platforms of the index that
// PushMultiPlatformBusybox pushes, in its order (Docker Hub's busybox
// names arm64 with variant v8 too).
var MultiPlatformBusyboxPlatforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64", Variant: "v8"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
}

// MultiPlatformBusybox returns a Docker manifest list of BusyboxImageFor
// each of MultiPlatformBusyboxPlatforms, each descriptor with its platform.
func MultiPlatformBusybox() (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, p := range MultiPlatformBusyboxPlatforms {
		img, err := BusyboxImageFor(p)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{MediaType: types.DockerManifestSchema2, Platform: &p},
		})
	}
	return idx, nil
}

// PushMultiPlatformBusybox pushes MultiPlatformBusybox to reg as
// library/busybox:multiplatform and returns the reference
// (HOST:PORT/library/busybox:multiplatform).
func PushMultiPlatformBusybox(t testing.TB, reg *Registry) string {
	t.Helper()
	idx, err := MultiPlatformBusybox()
	if err != nil {
		t.Fatal(err)
	}
	s := reg.Ref("library/busybox:multiplatform")
	ref, err := name.NewTag(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatalf("pushing %s: %v", s, err)
	}
	return s
}
