package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/imagetest"
)

// cacheMountFiles is a repository whose one RUN step mounts the cache id "shared" at /cache:
// it records what the mount held when the step began (/seen: the stamp, or "none"), writes a
// stamp unique to the build (its NONCE) into the mount unless one is there, and copies the
// mount's stamp into the image (/stamp). NONCE makes every build's RUN miss the layer cache,
// so that a stamp in /seen can only come from the cache mount.
var cacheMountFiles = map[string]string{
	"Dockerfile": `ARG BASE=busybox:latest
FROM ${BASE}
ARG NONCE
RUN --mount=type=cache,target=/cache,id=shared \
    sh -c 'echo "$NONCE" > /nonce; cat /cache/stamp > /seen 2>/dev/null || echo none > /seen; test -f /cache/stamp || echo "stamp-$NONCE-$(date +%s)" > /cache/stamp; cp /cache/stamp /stamp'
`,
}

// TestCacheMounts: a cache mount outlives the executor pod. A first ImageBuild's RUN step
// writes a stamp into its cache mount; a second ImageBuild of the same namespace (another
// name, the same cache repository), whose step misses the layer cache, finds that stamp in its
// mount, and its status counts the restore. A build with spec.cache.mounts.enabled false finds
// the mount empty and leaves the saved one alone. A build in another namespace that uses the
// very same cache repository (the same output repository: the default cache repository is
// under it), the same mount id and platform, so that only the namespace tells their keys apart,
// never sees the first namespace's stamp, and saves its own mount beside it.
func TestCacheMounts(t *testing.T) {
	e := newEnv(t, nil, cacheMountFiles)
	const repo = "e2e/cachemounts"
	build := func(e *env, name string, mutate func(*v1alpha1.ImageBuild)) (*v1alpha1.ImageBuild, string, string) {
		t.Helper()
		ib := e.imageBuild(name, repo)
		ib.Spec.BuildArgs = append(ib.Spec.BuildArgs, v1alpha1.BuildArg{Name: "NONCE", Value: ptr.To(nonce())})
		ib.Spec.Cache = &v1alpha1.Cache{Mounts: &v1alpha1.CacheMounts{MaxSize: ptr.To(resource.MustParse("64Mi"))}}
		if mutate != nil {
			mutate(ib)
		}
		e.create(ib)
		ib = e.waitSucceeded(name)
		b, _ := json.Marshal(ib.Status.Cache)
		t.Logf("%s/%s: digest %s, status.cache %s, duration %s", e.ns, name, ib.Status.Image.Digest, b, ib.Status.Duration)
		seen, stamp := e.stampFiles(repo, ib.Status.Image.Digest)
		t.Logf("%s/%s: /seen %q, /stamp %q", e.ns, name, seen, stamp)
		return ib, seen, stamp
	}
	mountTags := func() map[string]string {
		t.Helper()
		r, err := name.NewRepository(e.reg.Ref(repo+"/cache"), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		tags, err := remote.List(r, remote.WithAuth(e.reg.Auth()))
		if err != nil {
			t.Fatalf("listing %s: %v", r, err)
		}
		out := map[string]string{}
		for _, tag := range tags {
			if !strings.HasSuffix(tag, ".mount") {
				continue
			}
			d, err := remote.Head(r.Tag(tag), remote.WithAuth(e.reg.Auth()))
			if err != nil {
				t.Fatalf("HEAD %s: %v", tag, err)
			}
			out[tag] = d.Digest.String()
		}
		return out
	}

	// 1. The first build finds an empty mount and saves it.
	first, seen, stampA := build(e, "first", nil)
	if seen != "none" || !strings.HasPrefix(stampA, "stamp-") {
		t.Fatalf("first build: /seen %q, /stamp %q; want none and a new stamp", seen, stampA)
	}
	if m := first.Status.Cache.Mounts; m == nil || m.Saved != 1 || m.Restored != 0 || m.SavedBytes != int64(len(stampA)+1) {
		t.Errorf("first build: status.cache.mounts %+v, want 1 saved of %d bytes, none restored", m, len(stampA)+1)
	}
	saved := mountTags()
	if len(saved) != 1 {
		t.Fatalf("after the first build the cache repository has the saved mounts %v, want one", saved)
	}

	// 2. Another ImageBuild of the namespace, in a new pod, restores it.
	second, seen, stamp := build(e, "second", nil)
	if seen != stampA || stamp != stampA {
		t.Errorf("second build: /seen %q, /stamp %q; want the first build's stamp %q", seen, stamp, stampA)
	}
	if m := second.Status.Cache.Mounts; m == nil || m.Restored != 1 || m.RestoredBytes != int64(len(stampA)+1) {
		t.Errorf("second build: status.cache.mounts %+v, want 1 restored of %d bytes", m, len(stampA)+1)
	}
	saved = mountTags()
	if msg := readyMessage(second); !strings.Contains(msg, "cache mounts: 1 restored") {
		t.Errorf("second build: Ready message %q does not say the restore", msg)
	}

	// 3. mounts.enabled false: an empty mount, nothing restored or saved.
	off, seen, stamp := build(e, "off", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Cache.Mounts = &v1alpha1.CacheMounts{Enabled: ptr.To(false)}
	})
	if seen != "none" || stamp == stampA {
		t.Errorf("build without cache mounts: /seen %q, /stamp %q; want an empty mount", seen, stamp)
	}
	if m := off.Status.Cache.Mounts; m != nil && (m.Restored != 0 || m.Saved != 0) {
		t.Errorf("build without cache mounts: status.cache.mounts %+v, want none restored or saved", m)
	}
	if diff := cmp.Diff(saved, mountTags()); diff != "" {
		t.Errorf("a build without cache mounts changed the saved mounts (-before +after):\n%s", diff)
	}

	// 4. Another namespace, the same registry, output repository and so cache repository, the
	// same Dockerfile and mount id: only the scope (the namespace) differs, and the mount
	// starts empty.
	b := e.otherNamespace()
	other, seen, stampB := build(b, "first", nil)
	if seen != "none" || stampB == stampA || !strings.HasPrefix(stampB, "stamp-") {
		t.Errorf("another namespace's build: /seen %q, /stamp %q; want an empty mount, not %q", seen, stampB, stampA)
	}
	if m := other.Status.Cache.Mounts; m == nil || m.Restored != 0 || m.Saved != 1 {
		t.Errorf("another namespace's build: status.cache.mounts %+v, want none restored, 1 saved", m)
	}
	if r := cacheRepoArg(t, b.ns, other.Status.PodName); r != cacheRepoArg(t, e.ns, first.Status.PodName) {
		t.Fatalf("the namespaces' pods use the cache repositories %s and %s: the test needs them to share one", r, cacheRepoArg(t, e.ns, first.Status.PodName))
	}
	if tags := mountTags(); len(tags) != 2 {
		t.Errorf("saved mounts %v after both namespaces' builds, want two (one key each)", tags)
	}

	// And the first namespace still finds its own.
	_, seen, _ = build(e, "third", nil)
	if seen == stampB {
		t.Errorf("the first namespace restored the other's stamp %q", stampB)
	} else if seen != stampA {
		t.Errorf("third build: /seen %q, want %q", seen, stampA)
	}
}

// stampFiles reads /seen and /stamp from repo@digest, without their newline.
func (e *env) stampFiles(repo, digest string) (seen, stamp string) {
	e.t.Helper()
	ref, err := name.ParseReference(e.reg.Ref(repo+"@"+digest), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		e.t.Fatalf("reading %s: %v", ref, err)
	}
	_, data, err := imagetest.FlattenContents(img)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range []string{"/seen", "/stamp"} {
		if _, ok := data[p]; !ok {
			e.t.Fatalf("%s: no %s in the image", ref, p)
		}
	}
	if _, ok := data["/cache/stamp"]; ok {
		e.t.Errorf("%s: the cache mount's file is in the image", ref)
	}
	return strings.TrimSuffix(string(data["/seen"]), "\n"), strings.TrimSuffix(string(data["/stamp"]), "\n")
}

// otherNamespace is e in a new namespace: the same registry and git server, the same Secrets.
func (e *env) otherNamespace() *env {
	e.t.Helper()
	o := *e
	o.ns = e.ns + "-b"
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.ns}}
	if err := k8s.Create(ctx, ns); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			o.dump()
		}
		k8s.Delete(context.Background(), ns)
	})
	for _, s := range []string{"git", "registry"} {
		var sec corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: s}, &sec); err != nil {
			e.t.Fatal(err)
		}
		cp := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s, Namespace: o.ns}, Type: sec.Type, Data: sec.Data}
		if err := k8s.Create(ctx, cp); err != nil {
			e.t.Fatal(err)
		}
	}
	return &o
}

// cacheRepoArg is the --cache-repo of the executor pod ns/pod.
func cacheRepoArg(t *testing.T, ns, pod string) string {
	t.Helper()
	var p corev1.Pod
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: pod}, &p); err != nil {
		t.Fatalf("pod %s/%s: %v", ns, pod, err)
	}
	for _, a := range p.Spec.Containers[0].Args {
		if r, ok := strings.CutPrefix(a, "--cache-repo="); ok {
			return r
		}
	}
	t.Fatalf("pod %s/%s has no --cache-repo", ns, pod)
	return ""
}

func readyMessage(ib *v1alpha1.ImageBuild) string {
	for _, c := range ib.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady {
			return c.Message
		}
	}
	return ""
}
