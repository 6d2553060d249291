package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// TestParsePlatforms: --custom-platform values, repeated or comma-separated,
// normalised as BuildKit's dockerui parsePlatforms does, without
// duplicates; Windows and what does not parse are refused.
func TestParsePlatforms(t *testing.T) {
	got, err := parsePlatforms([]string{"linux/amd64,linux/arm64/v8", "linux/arm", "linux/aarch64", " linux/x86_64 ", "linux/armhf,linux/arm/v6"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, dockerfile.FormatPlatform(p))
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"}, names); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"windows/amd64", "linux/amd64/v2/x", "linux/"} {
		if _, err := parsePlatforms([]string{bad}); err == nil || !strings.Contains(err.Error(), "--custom-platform="+bad) {
			t.Errorf("parsePlatforms(%q) = %v, want an error naming it", bad, err)
		}
	}
}

// TestParseFlags_platforms: a tarball cannot hold the index of several
// platforms (BuildKit's docker exporter refuses too); --push-by-digest
// with --no-push pushes nothing and is refused.
func TestParseFlags_platforms(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error, "" for none
	}{
		{[]string{"--no-push", "--tar-path=/tmp/x.tar", "--custom-platform=linux/amd64,linux/arm64"}, "--tar-path writes a docker-archive tarball"},
		{[]string{"--no-push", "--tar-path=/tmp/x.tar", "--custom-platform=linux/arm64"}, ""},
		{[]string{"--no-push", "--tar-path=/tmp/x.tar", "--custom-platform=linux/arm64", "--custom-platform=linux/arm64/v8"}, ""},
		{[]string{"--no-push", "--push-by-digest"}, "--push-by-digest"},
		{[]string{"--no-push", "--custom-platform=windows/amd64"}, "Windows images are not supported"},
	} {
		_, err := parseFlags(append(tc.args, "--isolation=chroot"))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one saying %q", tc.args, err, tc.want)
		}
	}
}

// platformDockerfile cross-builds: a stage of the build platform writes a
// note for the target (ARG TARGETARCH), and the final stage FROM scratch
// takes its TARGETARCH's file and the note.
const platformDockerfile = `ARG BASE
FROM --platform=$BUILDPLATFORM $BASE AS builder
ARG TARGETARCH
RUN echo "built on $(uname -m) for $TARGETARCH" > /note
FROM scratch
ARG TARGETARCH
COPY arch-$TARGETARCH /whoami
COPY --from=builder /note /note
`

type platformExec struct {
	reg    *testenv.Registry
	base   string
	ctxDir string
}

func newPlatformExec(t *testing.T, dockerfile string) *platformExec {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	e := &platformExec{reg: reg, base: testenv.PushBusybox(t, reg), ctxDir: writeDockerfile(t, dockerfile)}
	for _, a := range []string{"amd64", "arm64", "arm", "s390x"} {
		if err := os.WriteFile(filepath.Join(e.ctxDir, "arch-"+a), []byte("i am "+a+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	return e
}

// run runs the executor on the context with the base image, pushing to
// repo (of the registry) unless args say --no-push.
func (e *platformExec) run(t *testing.T, repo string, args ...string) buildResult {
	t.Helper()
	all := []string{"--context=dir://" + e.ctxDir, "--insecure-registry=" + e.reg.Host(), "--build-arg=BASE=" + e.base}
	if repo != "" {
		all = append(all, "--destination="+e.reg.Ref(repo))
	}
	return runExecutor(t, append(all, args...)...)
}

func (e *platformExec) mustRun(t *testing.T, repo string, args ...string) buildResult {
	t.Helper()
	b := e.run(t, repo, args...)
	if b.exit != 0 || !b.res.Success {
		t.Fatalf("build failed: exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	return b
}

// getDescriptor reads what ref names; its error is the registry's.
func getDescriptor(t *testing.T, ref string) (*remote.Descriptor, error) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return remote.Get(r)
}

// notFound reports whether err is the registry's 404.
func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// TestExecute_multiPlatformIndex: --custom-platform with two platforms
// pushes an image index under the tag, a Docker manifest list (an OCI
// index with --oci-media-types), each entry with its platform, each image
// the one a build of that platform alone makes (--reproducible: the same
// digest, so the same file tree and config), its config naming its
// platform. The result's digest is the index's, and it lists each
// platform's image; the digest files hold the index's digest.
func TestExecute_multiPlatformIndex(t *testing.T) {
	e := newPlatformExec(t, platformDockerfile)
	digestFile := filepath.Join(t.TempDir(), "digest")
	namesFile := filepath.Join(t.TempDir(), "names")
	singles := map[string]string{}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		b := e.mustRun(t, "app/single:"+strings.ReplaceAll(p, "/", "-"), "--reproducible", "--custom-platform="+p)
		if len(b.res.Platforms) != 1 || b.res.Platforms[0].Platform != p || b.res.Platforms[0].Digest != b.res.Digest {
			t.Errorf("single build of %s: platforms %+v, digest %s", p, b.res.Platforms, b.res.Digest)
		}
		singles[p] = b.res.Digest
	}
	for _, tc := range []struct {
		name      string
		args      []string
		indexType types.MediaType
		imageType types.MediaType
	}{
		{"comma-separated", []string{"--custom-platform=linux/amd64,linux/arm64"}, types.DockerManifestList, types.DockerManifestSchema2},
		{"repeated, OCI", []string{"--custom-platform=linux/amd64", "--custom-platform=linux/arm64", "--oci-media-types"}, types.OCIImageIndex, types.OCIManifestSchema1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := e.reg.Ref("app/multi:" + strings.ReplaceAll(strings.ToLower(tc.name), " ", ""))
			ref = strings.ReplaceAll(ref, ",", "")
			b := e.mustRun(t, "", append(tc.args, "--destination="+ref, "--reproducible", "--digest-file="+digestFile, "--image-name-with-digest-file="+namesFile)...)
			desc, err := getDescriptor(t, ref)
			if err != nil {
				t.Fatal(err)
			}
			if desc.MediaType != tc.indexType {
				t.Errorf("the tag names a %s, want %s", desc.MediaType, tc.indexType)
			}
			if b.res.Digest != desc.Digest.String() {
				t.Errorf("result digest %s, the tag's %s", b.res.Digest, desc.Digest)
			}
			if raw, _ := os.ReadFile(digestFile); string(raw) != desc.Digest.String() {
				t.Errorf("digest file %q, want %s", raw, desc.Digest)
			}
			repo := strings.SplitN(ref, ":", 3)
			if raw, _ := os.ReadFile(namesFile); string(raw) != repo[0]+":"+repo[1]+"@"+desc.Digest.String()+"\n" {
				t.Errorf("name-with-digest file %q", raw)
			}
			idx, err := desc.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Index(idx); err != nil {
				t.Fatalf("validating the index: %v", err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != 2 || len(b.res.Platforms) != 2 {
				t.Fatalf("%d manifests, %d result platforms; want 2", len(im.Manifests), len(b.res.Platforms))
			}
			for i, want := range []string{"linux/amd64", "linux/arm64"} {
				d := im.Manifests[i]
				if d.Platform == nil || d.Platform.String() != want || d.MediaType != tc.imageType {
					t.Errorf("entry %d: platform %v, %s; want %s, %s", i, d.Platform, d.MediaType, want, tc.imageType)
				}
				if rp := b.res.Platforms[i]; rp.Platform != want || rp.Digest != d.Digest.String() {
					t.Errorf("result platform %d: %+v, want %s with digest %s", i, rp, want, d.Digest)
				}
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				cf, err := img.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				if cf.OS+"/"+cf.Architecture != want {
					t.Errorf("entry %d: config says %s/%s, want %s", i, cf.OS, cf.Architecture, want)
				}
				files, contents, err := imagetest.FlattenContents(img)
				if err != nil {
					t.Fatal(err)
				}
				arch := strings.TrimPrefix(want, "linux/")
				if got := string(contents["/whoami"]); got != "i am "+arch+"\n" {
					t.Errorf("%s: /whoami = %q", want, got)
				}
				if got := string(contents["/note"]); got != "built on x86_64 for "+arch+"\n" {
					t.Errorf("%s: /note = %q", want, got)
				}
				if tc.imageType == types.DockerManifestSchema2 && d.Digest.String() != singles[want] {
					single := pullImage(t, e.reg.Ref("app/single:"+strings.ReplaceAll(want, "/", "-")))
					sfiles, _ := imagetest.Flatten(single)
					t.Errorf("%s: %s in the index, %s built alone; trees (-alone +index):\n%s", want, d.Digest, singles[want], strings.Join(imagetest.DiffTrees(sfiles, files, nil), "\n"))
				}
			}
		})
	}
}

// TestExecute_pushByDigest: --push-by-digest pushes the image (or the
// index and its images) to the destination's repository by digest and
// writes no tag; the result names repo@digest.
func TestExecute_pushByDigest(t *testing.T) {
	e := newPlatformExec(t, platformDockerfile)
	for _, platforms := range []string{"linux/arm64", "linux/amd64,linux/arm64"} {
		t.Run(platforms, func(t *testing.T) {
			tag := e.reg.Ref("app/bydigest:" + strings.NewReplacer("/", "-", ",", "_").Replace(platforms))
			b := e.mustRun(t, "", "--destination="+tag, "--custom-platform="+platforms, "--push-by-digest")
			if _, err := getDescriptor(t, tag); !notFound(err) {
				t.Errorf("the tag %s: %v, want not found", tag, err)
			}
			byDigest := e.reg.Ref("app/bydigest@" + b.res.Digest)
			desc, err := getDescriptor(t, byDigest)
			if err != nil {
				t.Fatalf("%s: %v", byDigest, err)
			}
			if got := desc.MediaType.IsIndex(); got != strings.Contains(platforms, ",") {
				t.Errorf("pushed a %s for %s", desc.MediaType, platforms)
			}
			if diff := cmp.Diff([]string{byDigest}, b.res.References); diff != "" {
				t.Errorf("references (-want +got):\n%s", diff)
			}
			for _, p := range b.res.Platforms {
				if _, err := getDescriptor(t, e.reg.Ref("app/bydigest@"+p.Digest)); err != nil {
					t.Errorf("the %s image %s is not in the repository: %v", p.Platform, p.Digest, err)
				}
			}
		})
	}
}

// TestExecute_multiPlatformFailureTagsNothing: when one platform fails,
// the build fails, says which platform, and pushes nothing: no tag, no
// image of the platform that succeeded.
func TestExecute_multiPlatformFailureTagsNothing(t *testing.T) {
	e := newPlatformExec(t, platformDockerfile)
	if err := os.Remove(filepath.Join(e.ctxDir, "arch-s390x")); err != nil {
		t.Fatal(err)
	}
	b := e.run(t, "app/failed:v1", "--custom-platform=linux/amd64,linux/s390x")
	if b.exit == 0 || b.res.Success || b.res.Failure == nil {
		t.Fatalf("exit %d, %s; want a failure", b.exit, b.resRaw)
	}
	f := b.res.Failure
	if f.Reason != result.ReasonCopyFailed || f.Platform != "linux/s390x" || f.Line != 7 {
		t.Errorf("failure %+v, want CopyFailed at line 7 for linux/s390x", f)
	}
	repo, err := name.NewRepository(e.reg.Ref("app/failed"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(repo)
	if err != nil && !notFound(err) {
		t.Fatal(err)
	}
	if len(tags) != 0 {
		t.Errorf("tags %v after a failed build", tags)
	}
	if b.res.Digest != "" || len(b.res.References) != 0 {
		t.Errorf("the result names an image: %s", b.resRaw)
	}
	if !strings.Contains(b.log, "error: [linux/s390x] Dockerfile line 7: ") {
		t.Errorf("the log's error does not name the platform and line; log:\n%s", b.log)
	}
}

// TestExecute_ociLayoutIndex: --oci-layout-path holds the index of a build
// of several platforms, annotated with the destination, and its images.
func TestExecute_ociLayoutIndex(t *testing.T) {
	e := newPlatformExec(t, platformDockerfile)
	dir := filepath.Join(t.TempDir(), "layout")
	b := e.mustRun(t, "", "--no-push", "--destination="+e.reg.Ref("app/layout:v1"), "--oci-layout-path="+dir, "--custom-platform=linux/amd64,linux/arm/v7")
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Digest.String() != b.res.Digest || !tm.Manifests[0].MediaType.IsIndex() ||
		tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != e.reg.Ref("app/layout:v1") {
		t.Fatalf("layout index %+v, want the build's index %s, annotated", tm.Manifests, b.res.Digest)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatalf("validating the layout's index: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range im.Manifests {
		got = append(got, d.Platform.String())
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm/v7"}, got); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
}

// TestExecute_platformUnsupported: a RUN of a platform the node cannot run
// (no binfmt_misc handler) fails the build before it starts: reason
// PlatformUnsupported, the RUN's line and instruction, the platform, and a
// message that names the fix.
func TestExecute_platformUnsupported(t *testing.T) {
	e := newPlatformExec(t, "ARG BASE\nFROM $BASE\nCOPY arch-amd64 /a\nRUN true\n")
	p := ocispec.Platform{OS: "linux", Architecture: "mips64le"}
	b := e.run(t, "app/unsupported:v1", "--custom-platform="+dockerfile.FormatPlatform(p))
	if strings.Contains(b.log, "RUN steps for linux/mips64le run through") {
		t.Skip("the kernel has a binfmt_misc handler for linux/mips64le")
	}
	f := b.res.Failure
	if b.exit == 0 || f == nil || f.Reason != result.ReasonPlatformUnsupported || f.Line != 4 || f.Instruction != "RUN true" || f.Platform != "linux/mips64le" {
		t.Fatalf("exit %d, %s; want PlatformUnsupported at line 4 for linux/mips64le", b.exit, b.resRaw)
	}
	for _, s := range []string{"linux/mips64le", "binfmt_misc", "register QEMU for mips64le with the F (fix-binary) flag", "FROM --platform=$BUILDPLATFORM"} {
		if !strings.Contains(f.Message, s) {
			t.Errorf("message %q does not say %q", f.Message, s)
		}
	}
	if !strings.Contains(b.log, "error: [linux/mips64le] Dockerfile line 4: RUN in stage 0 for linux/mips64le") {
		t.Errorf("the log does not name the line; log:\n%s", b.log)
	}
	// The base image is for amd64 only: it is used, as BuildKit uses it,
	// and the checks warn (InvalidBaseImagePlatform).
	warned := false
	for _, w := range b.res.Warnings {
		warned = warned || (w.Rule == "InvalidBaseImagePlatform" && w.Line == 2 && strings.Contains(w.Message, `expected "linux/mips64le"`))
	}
	if !warned {
		t.Errorf("warnings %+v, want InvalidBaseImagePlatform at line 2", b.res.Warnings)
	}
}

// TestExecute_inplaceMultiPlatform: in place, the stages of two platforms
// are built one after another in the one root, and the index is the one a
// chroot build makes (--reproducible: the same digest).
func TestExecute_inplaceMultiPlatform(t *testing.T) {
	for _, tool := range []string{"unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (util-linux and coreutils)", tool, err)
		}
	}
	e := newPlatformExec(t, platformDockerfile)
	common := []string{"--custom-platform=linux/amd64,linux/arm64", "--reproducible"}
	chroot := e.mustRun(t, "app/multi-chroot:v1", common...)
	root := makeExecutorRoot(t)
	ref := e.reg.Ref("app/multi-inplace:v1")
	args := append([]string{"--isolation=inplace", "--context=dir:///workspace", "--destination=" + ref,
		"--insecure-registry=" + e.reg.Host(), "--build-arg=BASE=" + e.base, "--result-file=/slipway/result.json"}, common...)
	out, err := runInPlace(t, root, e.ctxDir, args)
	raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
	if err != nil {
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	res, err := result.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != chroot.res.Digest {
		t.Errorf("in place: index %s, chroot: %s; want the same\nin-place result %s\nchroot result %s", res.Digest, chroot.res.Digest, raw, chroot.resRaw)
	}
}

// TestExecute_inplaceEmulation: in place (the executor owns the root, as
// in its pod), a RUN of an emulated platform runs through the kernel's
// handler as with chroot: with the F flag the emulator was opened when it
// was registered, so the build's root need not hold it.
func TestExecute_inplaceEmulation(t *testing.T) {
	for _, tool := range []string{"unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (util-linux and coreutils)", tool, err)
		}
	}
	e := newPlatformExec(t, "ARG BASE\nFROM $BASE\nRUN echo $(uname -m) > /arch\n")
	multi := testenv.PushMultiPlatformBusybox(t, e.reg)
	testenv.RequireEmulation(t, "arm64")
	root := makeExecutorRoot(t)
	ref := e.reg.Ref("app/inplace-arm64:v1")
	args := []string{"--isolation=inplace", "--context=dir:///workspace", "--destination=" + ref,
		"--insecure-registry=" + e.reg.Host(), "--build-arg=BASE=" + multi, "--custom-platform=linux/arm64",
		"--result-file=/slipway/result.json"}
	out, err := runInPlace(t, root, e.ctxDir, args)
	raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
	if err != nil {
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	t.Logf("in-place output:\n%s", out)
	if !strings.Contains(out, "RUN steps for linux/arm64 run through") {
		t.Errorf("the log does not say how RUN steps for linux/arm64 run")
	}
	img := pullImage(t, ref)
	_, contents, err := imagetest.FlattenContents(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(contents["/arch"]); got != "aarch64\n" {
		t.Errorf("/arch = %q, want aarch64; output:\n%s", got, out)
	}
	if p := configPlatformOf(t, img); p != "linux/arm64" {
		t.Errorf("config platform %s", p)
	}
}

// runInPlace runs the executor in place in root (makeExecutorRoot), as
// TestExecute_inplace does, with the context bound at /workspace.
func runInPlace(t *testing.T, root, ctxDir string, args []string) (string, error) {
	t.Helper()
	script := `set -e
mount -t proc proc "$ROOT/proc"
mount -t tmpfs -o mode=755,nosuid tmpfs "$ROOT/dev"
for d in null zero random urandom tty; do
	[ -e "/dev/$d" ] || continue
	touch "$ROOT/dev/$d"
	mount --bind "/dev/$d" "$ROOT/dev/$d"
done
mount --bind "$CONTEXT" "$ROOT/workspace"
mount -o remount,bind,ro "$ROOT/workspace"
exec chroot "$ROOT" /slipway/executor "$@"
`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// As runExecutor: no attestation (the images are compared).
	args = append([]string{"--provenance=none"}, args...)
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--pid", "--fork", "--propagation", "private",
		"sh", "-c", script, "sh"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "ROOT=" + root, "CONTEXT=" + ctxDir, "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func configPlatformOf(t *testing.T, img v1.Image) string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.OS + "/" + cf.Architecture
}
