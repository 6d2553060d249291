package build_test

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/binfmt"
	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/testenv"
)

// platformEnv is a registry (testenv's distribution registry) holding
// busybox for this machine only (single) and the multi-platform busybox
// (multi: amd64, arm64/v8, arm/v7), and a context directory.
type platformEnv struct {
	reg    *testenv.Registry
	single string
	multi  string
	ctxDir string
	// cache, when set, is every build's cache.
	cache *fakeCache
	// log is the last build's log.
	log string
}

func newPlatformEnv(t *testing.T, files map[string]string) *platformEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("chroot builds need root")
	}
	e := &platformEnv{reg: testenv.StartRegistry(t), ctxDir: t.TempDir()}
	e.single = testenv.PushBusybox(t, e.reg)
	e.multi = testenv.PushMultiPlatformBusybox(t, e.reg)
	writeContext(t, e.ctxDir, files)
	return e
}

// mustPlatform parses a platform as --custom-platform does.
func mustPlatform(t *testing.T, s string) ocispec.Platform {
	t.Helper()
	p, err := dockerfile.ParsePlatform(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// build builds dockerfile ({{SINGLE}} and {{MULTI}} replaced with the two
// busybox references) for platforms (none: the build platform,
// implicitly), with chroot isolation; opts change the options last.
func (e *platformEnv) build(t *testing.T, dockerfile string, platforms []string, opts ...func(*build.Options)) ([]build.PlatformImage, *build.Report, error) {
	t.Helper()
	bc, err := source.Open(e.ctxDir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var logBuf strings.Builder
	df := strings.NewReplacer("{{SINGLE}}", e.single, "{{MULTI}}", e.multi).Replace(dockerfile)
	o := build.Options{
		Dockerfile:     []byte(df),
		DockerfilePath: "Dockerfile",
		Context:        bc,
		Isolation:      build.Chroot,
		WorkDir:        t.TempDir(),
		Log:            &syncBuilder{b: &logBuf},
	}
	if e.cache != nil {
		o.Cache = e.cache
	}
	for _, p := range platforms {
		o.Platforms = append(o.Platforms, mustPlatform(t, p))
	}
	for _, opt := range opts {
		opt(&o)
	}
	imgs, rep, err := build.BuildAll(t.Context(), o)
	e.log = logBuf.String()
	t.Logf("build log:\n%s", e.log)
	return imgs, rep, err
}

func (e *platformEnv) mustBuild(t *testing.T, dockerfile string, platforms []string, opts ...func(*build.Options)) ([]build.PlatformImage, *build.Report) {
	t.Helper()
	imgs, rep, err := e.build(t, dockerfile, platforms, opts...)
	if err != nil {
		t.Fatalf("BuildAll: %v", err)
	}
	if len(imgs) != max(len(platforms), 1) {
		t.Fatalf("%d images for %d platforms", len(imgs), len(platforms))
	}
	return imgs, rep
}

// noEmulation is an Emulator of a machine that runs its own platform
// only, and no other: every foreign RUN fails the build before it starts.
type noEmulation struct{ asked *[]string }

func (noEmulation) Native(p ocispec.Platform) bool {
	return dockerfile.SamePlatform(p, dockerfile.NativePlatform())
}

func (n noEmulation) Handler(p ocispec.Platform) (string, error) {
	if n.asked != nil {
		*n.asked = append(*n.asked, dockerfile.FormatPlatform(p))
	}
	return "", fmt.Errorf("%s executables cannot run here (test: no emulation)", dockerfile.FormatPlatform(p))
}

func withoutEmulation(o *build.Options) { o.Emulator = noEmulation{} }

// configPlatform is the image config's os/arch[/variant].
func configPlatform(t *testing.T, img v1.Image) string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return dockerfile.FormatPlatform(ocispec.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant})
}

// elfMachine is the ELF machine of the file p of img.
func elfMachine(t *testing.T, img v1.Image, p string) elf.Machine {
	t.Helper()
	data, ok := fileContent(t, img, p)
	if !ok {
		t.Fatalf("%s is not in the image", p)
	}
	f, err := elf.NewFile(strings.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return f.Machine
}

// TestBuild_platformArgsExplicit is BuildKit's testPlatformArgsExplicit: a
// build for darwin/ppc64le (a platform this machine cannot run) whose
// stage FROM --platform=$BUILDPLATFORM runs here and writes the TARGET*
// args it declares, the build arg TARGETOS replacing only that arg; the
// final stage, FROM scratch, runs nothing. The image's config names the
// target platform (finalizeResultImage).
func TestBuild_platformArgsExplicit(t *testing.T) {
	e := newPlatformEnv(t, nil)
	df := `
FROM --platform=$BUILDPLATFORM {{SINGLE}} AS build
ARG TARGETPLATFORM
ARG TARGETOS
RUN mkdir /out && echo -n $TARGETPLATFORM > /out/platform && echo -n $TARGETOS > /out/os
FROM scratch
COPY --from=build out .
`
	imgs, _ := e.mustBuild(t, df, []string{"darwin/ppc64le"}, withoutEmulation, func(o *build.Options) {
		o.BuildArgs = map[string]string{"TARGETOS": "freebsd"}
	})
	img := imgs[0].Image
	for p, want := range map[string]string{"platform": "darwin/ppc64le", "os": "freebsd"} {
		if got, _ := fileContent(t, img, p); got != want {
			t.Errorf("/%s = %q, want %q", p, got, want)
		}
	}
	if got := configPlatform(t, img); got != "darwin/ppc64le" {
		t.Errorf("config platform %s, want darwin/ppc64le", got)
	}
}

// TestBuild_platformArgsImplicit is BuildKit's testPlatformArgsImplicit:
// without a platform asked for, TARGETOS is this machine's, and FROM
// build-${TARGETOS} names the stage of that name.
func TestBuild_platformArgsImplicit(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"foo": "d0", "foo2": "d1"})
	df := "FROM scratch AS build-linux\nCOPY foo bar\nFROM build-${TARGETOS}\nCOPY foo2 bar2\n"
	imgs, _ := e.mustBuild(t, df, nil)
	for p, want := range map[string]string{"bar": "d0", "bar2": "d1"} {
		if got, _ := fileContent(t, imgs[0].Image, p); got != want {
			t.Errorf("/%s = %q, want %q", p, got, want)
		}
	}
	if got, want := configPlatform(t, imgs[0].Image), dockerfile.FormatPlatform(dockerfile.NativePlatform()); got != want {
		t.Errorf("config platform %s, want %s", got, want)
	}
}

// TestBuildAll_exportMultiPlatform is BuildKit's testExportMultiPlatform
// (its Linux platforms; Windows images are not built here): one Dockerfile
// for several platforms, each image with its TARGETARCH's file, its
// TARGETPLATFORM in a label and its platform in the config, linux/arm
// normalised to linux/arm/v7.
func TestBuildAll_exportMultiPlatform(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{
		"arch-arm": "i am arm", "arch-amd64": "i am amd64", "arch-s390x": "i am s390x", "arch-ppc64le": "i am ppc64le",
	})
	df := "FROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nLABEL target=$TARGETPLATFORM\nCOPY arch-$TARGETARCH whoami\n"
	for _, tc := range []struct {
		platforms []string
		want      []string // os/arch[/variant], then the file's content
	}{
		{[]string{"linux/amd64", "linux/arm", "linux/s390x"}, []string{"linux/amd64", "i am amd64", "linux/arm/v7", "i am arm", "linux/s390x", "i am s390x"}},
		{[]string{"linux/arm/v6", "linux/ppc64le"}, []string{"linux/arm/v6", "i am arm", "linux/ppc64le", "i am ppc64le"}},
	} {
		t.Run(strings.Join(tc.platforms, ","), func(t *testing.T) {
			imgs, rep := e.mustBuild(t, df, tc.platforms, withoutEmulation)
			var got []string
			for i, pi := range imgs {
				whoami, _ := fileContent(t, pi.Image, "whoami")
				got = append(got, configPlatform(t, pi.Image), whoami)
				cf, err := pi.Image.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				if l := cf.Config.Labels["target"]; l != dockerfile.FormatPlatform(pi.Platform) {
					t.Errorf("label target = %q, want %q", l, dockerfile.FormatPlatform(pi.Platform))
				}
				if d := digest(t, pi.Image); rep.Platforms[i].Digest != d.String() || rep.Platforms[i].Platform != dockerfile.FormatPlatform(pi.Platform) {
					t.Errorf("report of platform %d: %+v, want %s with digest %s", i, rep.Platforms[i], dockerfile.FormatPlatform(pi.Platform), d)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBuild_baseImageFromIndex: a base image is resolved from its index
// for the stage's platform with containerd's matcher, as BuildKit does
// (imageutil.Config with platforms.Only): the index's arm64/v8 serves
// linux/arm64, arm/v7 serves arm/v7, and nothing serves arm/v6 (only older
// variants are compatible) or s390x, which fails with the platforms the
// index has.
func TestBuild_baseImageFromIndex(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"a.txt": "a\n"})
	idx := pullIndex(t, e.multi)
	df := "FROM {{MULTI}}\nCOPY a.txt /a.txt\n"
	for _, tc := range []struct {
		platform string
		want     v1.Platform // the index entry used
		machine  elf.Machine
	}{
		{"linux/arm64", testenv.MultiPlatformBusyboxPlatforms[1], elf.EM_AARCH64},
		{"linux/arm64/v8", testenv.MultiPlatformBusyboxPlatforms[1], elf.EM_AARCH64},
		{"linux/arm/v7", testenv.MultiPlatformBusyboxPlatforms[2], elf.EM_ARM},
		{"linux/amd64", testenv.MultiPlatformBusyboxPlatforms[0], elf.EM_X86_64},
	} {
		t.Run(tc.platform, func(t *testing.T) {
			imgs, _ := e.mustBuild(t, df, []string{tc.platform}, withoutEmulation)
			base := indexChild(t, idx, tc.want)
			if got, want := layerDigests(t, imgs[0].Image)[0], layerDigests(t, base)[0]; got != want {
				t.Errorf("first layer %s, want %s (the index's %s image)", got, want, tc.want)
			}
			if m := elfMachine(t, imgs[0].Image, "bin/busybox"); m != tc.machine {
				t.Errorf("busybox is for %s, want %s", m, tc.machine)
			}
		})
	}
	for _, p := range []string{"linux/arm/v6", "linux/s390x"} {
		t.Run(p, func(t *testing.T) {
			_, _, err := e.build(t, df, []string{p}, withoutEmulation)
			var be *build.Error
			if !errors.As(err, &be) || be.Reason != result.ReasonBaseImagePullFailed || be.Line != 1 {
				t.Fatalf("error %v, want BaseImagePullFailed at line 1", err)
			}
			for _, s := range []string{"no match for platform " + p, "it has linux/amd64, linux/arm/v7, linux/arm64/v8"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// TestBuild_baseImageCompatibleVariant: with no image of the platform's
// own variant, containerd's matcher takes a compatible one, best first:
// arm/v7 runs arm/v6 executables, and the index's arm/v6 image serves it.
func TestBuild_baseImageCompatibleVariant(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"a.txt": "a\n"})
	v6 := v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, v6} {
		img, err := testenv.BusyboxImageFor(p)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ref := e.reg.Ref("library/busybox:amd64-armv6")
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	imgs, _ := e.mustBuild(t, "FROM "+ref+"\nCOPY a.txt /a.txt\n", []string{"linux/arm/v7"}, withoutEmulation)
	if got, want := layerDigests(t, imgs[0].Image)[0], layerDigests(t, indexChild(t, idx, v6))[0]; got != want {
		t.Errorf("first layer %s, want the arm/v6 image's %s", got, want)
	}
	if got := configPlatform(t, imgs[0].Image); got != "linux/arm/v7" {
		t.Errorf("config platform %s, want the target's, linux/arm/v7", got)
	}
}

// TestBuild_singlePlatformBaseOfAnotherPlatform is BuildKit's
// testBaseImagePlatformMismatch: an image that is no index is used for
// any platform, whatever its config says (containerd's images.Manifest
// does not look at a manifest's platform), and the build checks warn:
// InvalidBaseImagePlatform. The image's config names the target.
func TestBuild_singlePlatformBaseOfAnotherPlatform(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"foo": "test"})
	var found *check.Report
	imgs, _ := e.mustBuild(t, "\nFROM {{SINGLE}}\nCOPY foo /foo\n", []string{"linux/arm64"}, withoutEmulation, func(o *build.Options) {
		o.Checks = &build.Checks{Found: func(r *check.Report) { found = r }}
	})
	if got := configPlatform(t, imgs[0].Image); got != "linux/arm64" {
		t.Errorf("config platform %s, want linux/arm64", got)
	}
	want := check.Finding{Rule: "InvalidBaseImagePlatform", Line: 2,
		Message: fmt.Sprintf("Base image %s was pulled with platform %q, expected %q for current build", e.single, "linux/amd64", "linux/arm64")}
	var got []check.Finding
	for _, f := range found.Findings {
		if f.Rule == want.Rule {
			f.URL = ""
			got = append(got, f)
		}
	}
	if diff := cmp.Diff([]check.Finding{want}, got); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
}

// TestBuild_cacheKeyHoldsThePlatform: a step for arm64 never takes the
// layer a step for amd64 left in the cache, even where nothing else tells
// the two apart: FROM scratch, and FROM an image that is no index (the
// same digest for both). Keys without the platform (before issue 15)
// made the second build all hits.
func TestBuild_cacheKeyHoldsThePlatform(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"a.txt": "a\n"})
	e.cache = newFakeCache()
	for _, df := range []string{
		"FROM scratch\nCOPY a.txt /a.txt\n",
		"FROM {{SINGLE}}\nCOPY a.txt /a.txt\n",
	} {
		t.Run(strings.Fields(df)[1], func(t *testing.T) {
			_, rep := e.mustBuild(t, df, []string{"linux/amd64"}, withoutEmulation)
			if got := cacheCounts(rep); got != (counts{0, 1}) {
				t.Fatalf("first build: %+v, want one miss", got)
			}
			_, rep = e.mustBuild(t, df, []string{"linux/arm64"}, withoutEmulation)
			if got := cacheCounts(rep); got != (counts{0, 1}) {
				t.Errorf("arm64 after amd64: %+v, want a miss: the amd64 layer is not arm64's", got)
			}
			_, rep = e.mustBuild(t, df, []string{"linux/amd64"}, withoutEmulation)
			if got := cacheCounts(rep); got != (counts{1, 0}) {
				t.Errorf("amd64 again: %+v, want a hit", got)
			}
		})
	}
}

// TestBuild_copyFromImageIsForTheTarget: COPY --from=IMAGE and RUN
// --mount=from=IMAGE read the image of the build's target platform, not
// of the stage's (BuildKit makes them stages of their own, without a
// platform, resolved for the target: toCommand, detectRunMount), here in
// a stage FROM --platform=$BUILDPLATFORM.
func TestBuild_copyFromImageIsForTheTarget(t *testing.T) {
	e := newPlatformEnv(t, nil)
	df := `FROM --platform=$BUILDPLATFORM {{SINGLE}}
COPY --from={{MULTI}} /bin/busybox /copied
RUN --mount=from={{MULTI}},target=/m cp /m/bin/busybox /mounted
`
	imgs, _ := e.mustBuild(t, df, []string{"linux/arm64"}, withoutEmulation)
	for _, p := range []string{"copied", "mounted"} {
		if m := elfMachine(t, imgs[0].Image, p); m != elf.EM_AARCH64 {
			t.Errorf("/%s is for %s, want the target's %s", p, m, elf.EM_AARCH64)
		}
	}
}

// TestBuild_stageOfAStageHasItsPlatform: a stage FROM an earlier stage has
// that stage's platform, whatever its own --platform says (BuildKit's
// dispatchState.init; moby/buildkit#4929): its RUN runs on the build
// platform, natively, with no emulation at all.
func TestBuild_stageOfAStageHasItsPlatform(t *testing.T) {
	e := newPlatformEnv(t, nil)
	df := "FROM --platform=$BUILDPLATFORM {{SINGLE}} AS tools\nFROM --platform=linux/arm64 tools\nRUN uname -m > /arch\n"
	imgs, _ := e.mustBuild(t, df, []string{"linux/arm64"}, withoutEmulation)
	if got, _ := fileContent(t, imgs[0].Image, "arch"); got != "x86_64\n" {
		t.Errorf("/arch = %q, want the build platform's x86_64", got)
	}
}

// TestBuild_foreignRunWithoutHandler: a RUN in a stage of a platform this
// machine does not run, with no handler to run it, fails the build before
// any step runs and before any layer is pulled, reason PlatformUnsupported,
// at the first such RUN's line, naming the platform and the fix; a stage of
// the build platform has no RUN that needs one, nor has a stage without
// RUN. The real kernel is asked (binfmt_misc) for a platform no test
// registers a handler for.
func TestBuild_foreignRunWithoutHandler(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	df := `FROM --platform=$BUILDPLATFORM {{BASE}} AS native
RUN echo native > /n
FROM scratch AS files
COPY a.txt /a
FROM {{BASE}}
COPY --from=native /n /n
COPY --from=files /a /a
RUN echo foreign > /f
RUN true
`
	for _, tc := range []struct {
		name     string
		emulator build.Emulator
		platform string
		want     []string
	}{
		{"test emulator", noEmulation{}, "linux/arm64", []string{"linux/arm64 executables cannot run here"}},
		{"the kernel", nil, "linux/mips64le", []string{"no binfmt_misc handler", "linux/mips64le", "register QEMU for mips64le with the F (fix-binary) flag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.emulator == nil && !kernelHasNoHandler(t, tc.platform) {
				return
			}
			f.reg.resetCounts()
			_, _, err := f.build(t, df, false, func(o *build.Options) {
				o.Platforms = []ocispec.Platform{mustPlatform(t, tc.platform)}
				if tc.emulator != nil {
					o.Emulator = tc.emulator
				}
			})
			var be *build.Error
			if !errors.As(err, &be) {
				t.Fatalf("error %v, want a *build.Error", err)
			}
			if be.Reason != result.ReasonPlatformUnsupported || be.Line != 8 || be.Platform != tc.platform || be.Instruction != "RUN echo foreign > /f" {
				t.Errorf("error %+v, want PlatformUnsupported at line 8 (RUN echo foreign > /f) for %s", be, tc.platform)
			}
			for _, s := range append(tc.want, "RUN in stage 2 for "+tc.platform, "FROM --platform=$BUILDPLATFORM") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if strings.Contains(f.log, "RUN echo native") || strings.Contains(f.log, "Built stage") {
				t.Errorf("a step ran before the error; log:\n%s", f.log)
			}
			img, err := testenv.BusyboxImage()
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range layerDigests(t, img) {
				if n := f.reg.gets(d); n != 0 {
					t.Errorf("the base layer %s was pulled %d times before the error", d, n)
				}
			}
		})
	}
}

// kernelHasNoHandler reports whether the kernel runs no executables of
// platform p (a handler some process registered meanwhile would run it),
// skipping the test then.
func kernelHasNoHandler(t *testing.T, p string) bool {
	t.Helper()
	if _, err := build.KernelEmulator("/proc/sys/fs/binfmt_misc", t.TempDir()).Handler(mustPlatform(t, p)); err == nil {
		t.Skipf("the kernel has a binfmt_misc handler for %s", p)
		return false
	}
	return true
}

// TestBuild_runUnderEmulation: with QEMU registered for the platform
// (testenv.RequireEmulation, as the chart's binfmt DaemonSet does on a
// node), a RUN in a stage of that platform simply runs, chrooted: the
// kernel hands its executables to the emulator.
func TestBuild_runUnderEmulation(t *testing.T) {
	e := newPlatformEnv(t, nil)
	for _, tc := range []struct{ arch, platform, want string }{
		{"arm64", "linux/arm64", "aarch64"},
		{"arm", "linux/arm/v7", "armv7l"},
	} {
		t.Run(tc.platform, func(t *testing.T) {
			testenv.RequireEmulation(t, tc.arch)
			df := "FROM {{MULTI}}\nRUN uname -m > /arch\nRUN echo $(uname -m) > /arch2\n"
			imgs, _ := e.mustBuild(t, df, []string{tc.platform})
			for _, p := range []string{"arch", "arch2"} {
				if got, _ := fileContent(t, imgs[0].Image, p); got != tc.want+"\n" {
					t.Errorf("/%s = %q, want %q", p, got, tc.want+"\n")
				}
			}
			if !strings.Contains(e.log, "RUN steps for "+tc.platform+" run through the kernel's binfmt_misc handler slipway-test-") {
				t.Errorf("the log does not name the handler")
			}
			if !strings.Contains(e.log, "["+tc.platform+" 2/3] RUN uname -m > /arch") {
				t.Errorf("the log does not name the platform of the step")
			}
		})
	}
}

// TestBuild_cachedForeignRunNeedsNoHandler: a foreign RUN the cache serves
// does not run, and needs no handler: a build whose every such step hits
// the cache goes through without emulation.
func TestBuild_cachedForeignRunNeedsNoHandler(t *testing.T) {
	e := newPlatformEnv(t, nil)
	e.cache = newFakeCache()
	df := "FROM {{MULTI}}\nRUN uname -m > /arch\n"
	t.Run("with QEMU", func(t *testing.T) {
		testenv.RequireEmulation(t, "arm64")
		e.mustBuild(t, df, []string{"linux/arm64"})
	})
	var asked []string
	imgs, rep := e.mustBuild(t, df, []string{"linux/arm64"}, func(o *build.Options) { o.Emulator = noEmulation{asked: &asked} })
	if got := cacheCounts(rep); got != (counts{1, 0}) {
		t.Errorf("cache %+v, want the RUN from the cache", got)
	}
	if len(asked) != 0 {
		t.Errorf("the emulator was asked for %v", asked)
	}
	if got, _ := fileContent(t, imgs[0].Image, "arch"); got != "aarch64\n" {
		t.Errorf("/arch = %q, want aarch64", got)
	}
}

// shareDockerfile has a stage of the build platform that writes random
// bytes (built once, the same bytes are in every platform's image; built
// per platform, they differ), {{ARG}} in it, and a final stage per
// platform.
const shareDockerfile = `FROM --platform=$BUILDPLATFORM {{SINGLE}} AS builder
{{ARG}}
RUN head -c 16 /dev/urandom | od -An -tx1 > /stamp
FROM scratch
ARG TARGETARCH
COPY --from=builder /stamp /stamp
COPY arch-$TARGETARCH /whoami
`

// TestBuildAll_sharesStages: a stage whose platform and inputs are the
// same for every platform (FROM --platform=$BUILDPLATFORM, reading no
// TARGET* arg) is built once for all; one that declares ARG TARGETARCH
// sees another value per platform, and is built per platform, as BuildKit
// would (its RUN's environment differs). With and without a cache.
func TestBuildAll_sharesStages(t *testing.T) {
	for _, tc := range []struct {
		name       string
		arg        string
		cache      bool
		wantShared bool
	}{
		{"no TARGET arg", "", false, true},
		{"no TARGET arg, cache", "", true, true},
		{"ARG TARGETARCH", "ARG TARGETARCH", false, false},
		{"ARG BUILDARCH", "ARG BUILDARCH", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPlatformEnv(t, map[string]string{"arch-amd64": "amd64", "arch-arm64": "arm64", "arch-s390x": "s390x"})
			if tc.cache {
				e.cache = newFakeCache()
			}
			df := strings.ReplaceAll(shareDockerfile, "{{ARG}}", tc.arg)
			imgs, rep := e.mustBuild(t, df, []string{"linux/amd64", "linux/arm64", "linux/s390x"}, withoutEmulation)
			stamps := map[string]bool{}
			for _, pi := range imgs {
				s, ok := fileContent(t, pi.Image, "stamp")
				if !ok || s == "" {
					t.Fatalf("no /stamp for %s", dockerfile.FormatPlatform(pi.Platform))
				}
				stamps[s] = true
				if got, _ := fileContent(t, pi.Image, "whoami"); got != pi.Platform.Architecture {
					t.Errorf("/whoami = %q for %s", got, pi.Platform.Architecture)
				}
			}
			builds := strings.Count(e.log, " builder] Built stage")
			wantBuilds, wantStamps := 3, 3
			if tc.wantShared {
				wantBuilds, wantStamps = 1, 1
			}
			if builds != wantBuilds || len(stamps) != wantStamps {
				t.Errorf("builder built %d times, %d different stamps; want %d and %d", builds, len(stamps), wantBuilds, wantStamps)
			}
			if len(rep.Stages) != wantBuilds+3 {
				t.Errorf("report: %d stages, want %d (each built stage once)", len(rep.Stages), wantBuilds+3)
			}
			for _, pr := range rep.Platforms {
				if len(pr.Stages) != 2 || pr.Stages[0].Name != "builder" || pr.Stages[0].Platform != "linux/amd64" {
					t.Errorf("platform %s: stages %+v, want builder (linux/amd64) and 1", pr.Platform, pr.Stages)
				}
			}
		})
	}
}

// TestBuildAll_logNamesPlatforms: in a build of several platforms each
// step's log line names its platform, as BuildKit's progress does, and a
// step whose TARGET* args name another platform than its stage's shows
// both ("linux/amd64->arm64": cross-compiling).
func TestBuildAll_logNamesPlatforms(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"arch-amd64": "amd64", "arch-arm64": "arm64"})
	df := strings.ReplaceAll(shareDockerfile, "{{ARG}}", "ARG TARGETARCH")
	e.mustBuild(t, df, []string{"linux/amd64", "linux/arm64"}, withoutEmulation)
	for _, want := range []string{
		"[linux/amd64 builder 1/3] FROM " + e.single,
		"[linux/amd64->arm64 builder 3/3] RUN head -c 16",
		"[linux/amd64 builder 3/3] RUN head -c 16",
		"[linux/arm64 1 4/4] COPY arch-$TARGETARCH /whoami",
		"[linux/amd64 1 4/4] COPY arch-$TARGETARCH /whoami",
		"[linux/arm64 1] Built stage",
	} {
		if !strings.Contains(e.log, want) {
			t.Errorf("the log has no %q", want)
		}
	}
}

// TestBuildAll_crossCompile: the cross-compiling Dockerfile BuildKit's
// documentation teaches, built for two platforms on a machine with no
// emulation at all: a Go toolchain stage FROM --platform=$BUILDPLATFORM
// (shared by both platforms: it reads no TARGET* arg), a stage FROM it
// that builds with GOOS=$TARGETOS GOARCH=$TARGETARCH, and a final stage
// FROM scratch that copies the program. Each image's program is for its
// platform; the amd64 one runs here.
func TestBuildAll_crossCompile(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{
		"hello.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from Go\") }\n",
	})
	golang := testenv.PushGoImage(t, e.reg)
	df := `FROM --platform=$BUILDPLATFORM ` + golang + ` AS toolchain
WORKDIR /src
RUN go version > /go-version
FROM toolchain AS build
ARG TARGETOS TARGETARCH
COPY hello.go .
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/hello hello.go
FROM scratch
COPY --from=build /out/hello /hello
ENTRYPOINT ["/hello"]
`
	imgs, rep := e.mustBuild(t, df, []string{"linux/amd64", "linux/arm64"}, withoutEmulation)
	for i, want := range []elf.Machine{elf.EM_X86_64, elf.EM_AARCH64} {
		if m := elfMachine(t, imgs[i].Image, "hello"); m != want {
			t.Errorf("%s: /hello is for %s, want %s", dockerfile.FormatPlatform(imgs[i].Platform), m, want)
		}
	}
	if n := strings.Count(e.log, " toolchain] Built stage"); n != 1 {
		t.Errorf("the toolchain stage was built %d times, want once", n)
	}
	if len(rep.Stages) != 5 {
		t.Errorf("%d stages built, want 5 (toolchain once, build and the final stage per platform)", len(rep.Stages))
	}
	dir := t.TempDir()
	data, _ := fileContent(t, imgs[0].Image, "hello")
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte(data), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := runHost(filepath.Join(dir, "hello"))
	if err != nil || out != "hello from Go\n" {
		t.Errorf("the amd64 program: %q, %v", out, err)
	}
}

// pullIndex reads the index ref names.
func pullIndex(t *testing.T, ref string) v1.ImageIndex {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return idx
}

// indexChild is the image of idx whose descriptor names platform p.
func indexChild(t *testing.T, idx v1.ImageIndex, p v1.Platform) v1.Image {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Equals(p) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("the index has no image for %s", p)
	return nil
}

// runHost runs a program on this machine and returns its output.
func runHost(path string, args ...string) (string, error) {
	out, err := exec.Command(path, args...).CombinedOutput()
	return string(out), err
}

// TestBuild_cacheEntryNamesThePlatform: the registry cache's entry of a
// step for arm64 is an image whose config says linux/arm64, not this
// machine's platform.
func TestBuild_cacheEntryNamesThePlatform(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"a.txt": "a\n"})
	repo, err := name.NewRepository(e.reg.Ref("app/cache"))
	if err != nil {
		t.Fatal(err)
	}
	c := cache.New(cache.Options{Repo: repo, Remote: func(bool) []remote.Option { return nil }})
	e.mustBuild(t, "FROM scratch\nCOPY a.txt /a.txt\n", []string{"linux/arm/v7"}, withoutEmulation, func(o *build.Options) { o.Cache = c })
	if _, err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(repo)
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	for _, tag := range tags {
		if strings.HasSuffix(tag, ".index") {
			continue
		}
		entries++
		img, err := remote.Image(repo.Tag(tag))
		if err != nil {
			t.Fatal(err)
		}
		if got := configPlatform(t, img); got != "linux/arm/v7" {
			t.Errorf("cache entry %s says %s, want linux/arm/v7", tag, got)
		}
	}
	if entries != 1 {
		t.Errorf("%d cache entries (tags %v), want 1", entries, tags)
	}
}

// TestBuild_handlerWithoutFixBinaryRefused: a binfmt_misc handler without
// the F flag would have the kernel open its interpreter by path inside
// the build's root, which the Dockerfile controls (here a stage puts a
// file of its own at that path): the build refuses it before any step
// runs (PlatformUnsupported), and nothing of the root is ever run as the
// interpreter. The handler is for linux/mips64, which no other test
// emulates, and is removed when the test ends.
func TestBuild_handlerWithoutFixBinaryRefused(t *testing.T) {
	e := newPlatformEnv(t, map[string]string{"attacker-interp": "#!/bin/sh\necho owned > /owned\n"})
	if !binfmt.Mounted(binfmt.DefaultDir) {
		if err := binfmt.Mount(binfmt.DefaultDir); err != nil {
			t.Skipf("binfmt_misc cannot be mounted: %v", err)
		}
	}
	testenv.RequireQEMUUserStatic(t)
	mips64 := v1.Platform{OS: "linux", Architecture: "mips64"}
	entry, err := binfmt.QEMUConf(binfmt.DebianConfDir, mips64)
	if err != nil {
		t.Fatal(err)
	}
	entry.Name = fmt.Sprintf("slipway-test-%d-nofix-mips64", os.Getpid())
	entry.Interpreter = "/attacker-interp"
	entry.Flags = strings.ReplaceAll(entry.Flags, "F", "")
	if err := binfmt.Register(binfmt.DefaultDir, entry); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := binfmt.Unregister(binfmt.DefaultDir, entry.Name); err != nil {
			t.Errorf("unregistering %s: %v", entry.Name, err)
		}
	})
	df := `FROM scratch AS payload
COPY --chmod=755 attacker-interp /attacker-interp
FROM {{SINGLE}}
COPY --from=payload /attacker-interp /attacker-interp
RUN echo ran > /ran
`
	_, _, err = e.build(t, df, []string{"linux/mips64"})
	var be *build.Error
	if !errors.As(err, &be) || be.Reason != result.ReasonPlatformUnsupported || be.Line != 5 || be.Platform != "linux/mips64" {
		t.Fatalf("error %v, want PlatformUnsupported at line 5 for linux/mips64", err)
	}
	for _, s := range []string{entry.Name, "lacks the F (fix-binary) flag"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	if strings.Contains(e.log, "Built stage") || strings.Contains(e.log, "RUN echo ran") {
		t.Errorf("a step ran; log:\n%s", e.log)
	}
}
