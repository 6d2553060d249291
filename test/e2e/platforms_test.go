package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/testenv"
)

// platformFiles: a builder stage on the build platform (no emulation: it writes what it was
// built on and for, as a cross-compiling stage would), then a RUN in each target platform's
// stage, which for a foreign platform runs under the node's binfmt_misc handler.
var platformFiles = map[string]string{
	"Dockerfile": `ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG TARGETPLATFORM BUILDPLATFORM
RUN mkdir /out && echo "built on $BUILDPLATFORM for $TARGETPLATFORM" > /out/built && uname -m >> /out/built
FROM ${BASE}
COPY --from=build /out/built /built
RUN uname -m > /arch
CMD ["cat", "/built", "/arch"]
`,
}

// TestMultiPlatform: spec.platforms linux/amd64 and linux/arm64 on the amd64 local cluster
// with spec.emulation: the amd64 pod runs on the amd64 node by the architecture selector, the
// arm64 one anywhere, its RUN under QEMU (the chart's binfmt DaemonSet, SLIPWAY_BINFMT=1); the
// manager pushes one Docker manifest list naming both images under the tag. Each platform's
// image has its platform in the config and the files its RUN steps wrote there; the tag's
// index is status.image.digest, and status.platforms has each digest.
func TestMultiPlatform(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the test expects an amd64 node, with arm64 emulated")
	}
	if os.Getenv("SLIPWAY_BINFMT") != "1" {
		t.Fatal("the chart's binfmt DaemonSet is not installed: run with SLIPWAY_BINFMT=1 (hack/e2e.sh sets it)")
	}
	e := newEnv(t, nil, platformFiles)
	testenv.PushMultiPlatformBusybox(t, e.reg)
	ib := e.imageBuild("multi", "e2e/multi")
	ib.Spec.BuildArgs[0].Value = ptrTo(e.regPods + "/library/busybox:multiplatform")
	ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
	ib.Spec.Emulation = true
	e.create(ib)
	got := e.waitSucceeded("multi")
	b, _ := json.MarshalIndent(got.Status.Platforms, "", "  ")
	t.Logf("index %s, duration %s; platforms:\n%s", got.Status.Image.Digest, got.Status.Duration, b)

	if len(got.Status.Platforms) != 2 {
		t.Fatalf("status.platforms has %d entries, want 2", len(got.Status.Platforms))
	}
	digests := map[string]string{}
	for _, p := range got.Status.Platforms {
		if p.Phase != v1alpha1.PhaseSucceeded || !strings.HasPrefix(p.Digest, "sha256:") {
			t.Errorf("platform %s: phase %s, digest %q, want Succeeded with a digest", p.Platform, p.Phase, p.Digest)
		}
		if want := p.Platform == "linux/arm64"; p.Emulated != want {
			t.Errorf("platform %s: emulated %v, want %v (the only node is amd64)", p.Platform, p.Emulated, want)
		}
		digests[p.Platform] = p.Digest
	}

	// The tag names the index the status names, and the index names each platform's image.
	tag, err := name.ParseReference(e.reg.Ref("e2e/multi:latest"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(tag, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		t.Fatalf("the tag is not an index: %v", err)
	}
	if d, _ := idx.Digest(); d.String() != got.Status.Image.Digest {
		t.Errorf("the tag is %s, status.image.digest %s", d, got.Status.Image.Digest)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ uname, built string }{
		"linux/amd64": {"x86_64\n", "built on linux/amd64 for linux/amd64\nx86_64\n"},
		"linux/arm64": {"aarch64\n", "built on linux/amd64 for linux/arm64\nx86_64\n"},
	}
	// Each platform's image, and (with the default provenance) an attestation manifest of each,
	// in BuildKit's layout: platform unknown/unknown, naming the image it is about.
	var images, attestations []v1.Descriptor
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == "unknown" {
			attestations = append(attestations, d)
		} else {
			images = append(images, d)
		}
	}
	if len(images) != len(want) {
		t.Errorf("the index names %d images, want %d: %+v", len(images), len(want), m.Manifests)
	}
	wantType := types.DockerManifestList // the executor's manifests are Docker's ...
	if len(attestations) > 0 {
		wantType = types.OCIImageIndex // ... but for attestations, which need OCI's
	}
	if m.MediaType != wantType {
		t.Errorf("the index is a %s, want a %s", m.MediaType, wantType)
	}
	for _, a := range attestations {
		about := a.Annotations["vnd.docker.reference.digest"]
		if a.Annotations["vnd.docker.reference.type"] != "attestation-manifest" ||
			!slices.ContainsFunc(images, func(d v1.Descriptor) bool { return d.Digest.String() == about }) {
			t.Errorf("attestation manifest %s (annotations %v) names none of the index's images", a.Digest, a.Annotations)
		}
	}
	if n := len(attestations); n != 0 && n != len(images) {
		t.Errorf("%d attestation manifests for %d images", n, len(images))
	}
	for _, d := range images {
		if d.Platform == nil {
			t.Errorf("manifest %s has no platform", d.Digest)
			continue
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		w, ok := want[p]
		if !ok {
			t.Errorf("the index names platform %s", p)
			continue
		}
		if digests[p] != d.Digest.String() {
			t.Errorf("%s: the index names %s, status.platforms %s", p, d.Digest, digests[p])
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != p {
			t.Errorf("%s: the config says %s/%s", p, cf.OS, cf.Architecture)
		}
		files := imageFiles(t, img, "arch", "built")
		if files["arch"] != w.uname {
			t.Errorf("%s: /arch is %q, want %q (the RUN ran on the platform's CPU, emulated or not)", p, files["arch"], w.uname)
		}
		if files["built"] != w.built {
			t.Errorf("%s: /built is %q, want %q (the builder stage ran natively, once per target)", p, files["built"], w.built)
		}
	}

	// Both pods were executor pods of this build; the amd64 one was pinned to amd64 nodes, the
	// emulated one was not, and neither was privileged.
	for _, p := range got.Status.Platforms {
		var pod corev1.Pod
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: p.PodName}, &pod); err != nil {
			t.Logf("platform %s: pod %s: %v (not checked)", p.Platform, p.PodName, err)
			continue
		}
		arch, pinned := pod.Spec.NodeSelector["kubernetes.io/arch"]
		switch p.Platform {
		case "linux/amd64":
			if arch != "amd64" {
				t.Errorf("pod %s: node selector %v, want kubernetes.io/arch=amd64", pod.Name, pod.Spec.NodeSelector)
			}
		case "linux/arm64":
			if pinned {
				t.Errorf("pod %s: node selector %v, want no architecture (emulated)", pod.Name, pod.Spec.NodeSelector)
			}
		}
		for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
			if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
				t.Errorf("pod %s container %s is privileged", pod.Name, c.Name)
			}
		}
	}

	// The amd64 image runs on the amd64 node.
	out := e.run("e2e/multi", digests["linux/amd64"])
	if !strings.Contains(out, "built on linux/amd64 for linux/amd64") || !strings.Contains(out, "x86_64") {
		t.Errorf("the amd64 image said %q", out)
	}

	// Without emulation, a platform no node has fails at once: no pod, no tag.
	e.create(func() *v1alpha1.ImageBuild {
		ib := e.imageBuild("arm-only", "e2e/arm-only")
		ib.Spec.BuildArgs[0].Value = ptrTo(e.regPods + "/library/busybox:multiplatform")
		ib.Spec.Platforms = []string{"linux/arm64"}
		return ib
	}())
	failed := e.waitFailed("arm-only")
	if failed.Status.Failure.Reason != v1alpha1.ReasonNoNodeForPlatform || !strings.Contains(failed.Status.Failure.Message, "linux/arm64") {
		t.Errorf("failure %+v, want %s naming linux/arm64", failed.Status.Failure, v1alpha1.ReasonNoNodeForPlatform)
	}
	if pods := e.pods("arm-only"); len(pods) != 0 {
		t.Errorf("the refused build made pods %v", pods)
	}
	e.checkNothingPushed("e2e/arm-only")
}

func ptrTo(s string) *string { return &s }

// imageFiles returns the contents of the named regular files (paths without the leading /) of
// img's flattened tree.
func imageFiles(t *testing.T, img v1.Image, names ...string) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		n := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		for _, want := range names {
			if n == want && h.Typeflag == tar.TypeReg {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				out[n] = string(b)
			}
		}
	}
}
