package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/imagetest"
)

// cacheVolumeFiles is a repository whose one RUN step mounts the cache id "vol" at /cache: it
// records what the mount held when the step began (/seen: the stamp, or "none"), writes a stamp
// of the build's NONCE into the mount unless one is there, and copies the mount's stamp into
// the image (/stamp). A new NONCE makes the RUN miss the layer cache, so that a stamp in /seen
// can only come from the cache mount. It also records whether it can see the executor's state
// directory, where the pod mounts the volume (/statevisible: yes or no).
var cacheVolumeFiles = map[string]string{
	"Dockerfile": `ARG BASE=busybox:latest
FROM ${BASE}
ARG NONCE
RUN --mount=type=cache,target=/cache,id=vol \
    sh -c 'echo "$NONCE" > /nonce; cat /cache/stamp > /seen 2>/dev/null || echo none > /seen; test -f /cache/stamp || echo "stamp-$NONCE" > /cache/stamp; cp /cache/stamp /stamp; test -d /slipway/state && echo yes > /statevisible || echo no > /statevisible'
`,
}

// TestCacheVolume: spec.cache.volume on the local cluster (its local-path-provisioner, the
// default StorageClass). The first build gets a claim of its own, bound by the provisioner,
// and finds the volume empty; a rebuild (a spec change: a new NONCE, so the RUN step misses
// the layer cache) runs in a new pod that finds the first build's cache mount in the volume
// (state.found, mountsUsed 1; the executor's log says it restored the mount from there rather
// than from the cache repository), and its image holds the stamp the first build's step left in the mount. Nothing
// of the volume is in either image, though the steps, which run in the executor's container (in
// place), can reach it (README, Security). Deleting the ImageBuild deletes the claim, and its volume.
func TestCacheVolume(t *testing.T) {
	e := newEnv(t, nil, cacheVolumeFiles)
	const repo = "e2e/cachevolume"
	ctx := context.Background()
	ib := e.imageBuild("vol", repo)
	ib.Spec.BuildArgs = append(ib.Spec.BuildArgs, v1alpha1.BuildArg{Name: "NONCE", Value: ptr.To(nonce())})
	ib.Spec.Cache = &v1alpha1.Cache{Volume: &v1alpha1.CacheVolume{Size: resource.MustParse("64Mi")}}
	e.create(ib)

	// 1. The first build: an empty volume.
	first := e.waitSucceeded("vol")
	logStatus(t, "first", first)
	files := e.volumeImageFiles(repo, first.Status.Image.Digest)
	seen, stampA := files["/seen"], files["/stamp"]
	if seen != "none" || !strings.HasPrefix(stampA, "stamp-") {
		t.Fatalf("first build: /seen %q, /stamp %q; want none and a new stamp", seen, stampA)
	}
	if files["/statevisible"] != "yes" {
		t.Errorf("first build: the RUN step sees /slipway/state: %q; the README says a step can reach the volume", files["/statevisible"])
	}
	if v := first.Status.Cache.Volume; v == nil || v.ClaimName != "vol-cache" || v.Found || v.MountsUsed != 0 || v.Reset != "" {
		t.Errorf("first build: status.cache.volume %+v, want claim vol-cache found empty", v)
	}

	// The claim: the ImageBuild's, of the default class, bound by the provisioner.
	var claim corev1.PersistentVolumeClaim
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "vol-cache"}, &claim); err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(&claim, first) || claim.Status.Phase != corev1.ClaimBound ||
		ptr.Deref(claim.Spec.StorageClassName, "") != "local-path" || claim.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("64Mi")) != 0 {
		t.Fatalf("claim vol-cache: owners %+v, phase %s, class %v, request %v; want the ImageBuild's, Bound, local-path, 64Mi",
			claim.OwnerReferences, claim.Status.Phase, ptr.Deref(claim.Spec.StorageClassName, "<none>"), claim.Spec.Resources.Requests.Storage())
	}
	pv := claim.Spec.VolumeName

	// 2. A rebuild in a new pod: the spec changes (a new NONCE).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur v1alpha1.ImageBuild
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "vol"}, &cur); err != nil {
			return err
		}
		for i := range cur.Spec.BuildArgs {
			if cur.Spec.BuildArgs[i].Name == "NONCE" {
				cur.Spec.BuildArgs[i].Value = ptr.To(nonce())
			}
		}
		return k8s.Update(ctx, &cur)
	})
	if err != nil {
		t.Fatal(err)
	}
	second := e.wait("vol", 5*time.Minute, "generation 2 finished", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Generation >= 2 && finished(ib)
	})
	logStatus(t, "second", second)
	if second.Status.Phase != v1alpha1.PhaseSucceeded || second.Status.PodName == first.Status.PodName {
		t.Fatalf("second build: phase %s, pod %s (first %s); want Succeeded in a new pod", second.Status.Phase, second.Status.PodName, first.Status.PodName)
	}
	files = e.volumeImageFiles(repo, second.Status.Image.Digest)
	seen, stamp := files["/seen"], files["/stamp"]
	if seen != stampA || stamp != stampA {
		t.Errorf("second build: /seen %q, /stamp %q; want the first build's stamp %q from the volume", seen, stamp, stampA)
	}
	v := second.Status.Cache.Volume
	if v == nil || v.ClaimName != "vol-cache" || !v.Found || v.MountsUsed != 1 || v.Reset != "" || v.Bytes <= 0 {
		t.Errorf("second build: status.cache.volume %+v, want claim vol-cache found, 1 mount used, some bytes", v)
	}
	// The executor counts the mount restored (status.cache.mounts), from the volume's copy
	// rather than by downloading the saved mount's layers, as its log says.
	if m := second.Status.Cache.Mounts; m == nil || m.Restored != 1 {
		t.Errorf("second build: status.cache.mounts %+v, want 1 restored", m)
	}
	if line := restoreLine(t, e.ns, second.Status.PodName); !strings.Contains(line, "(the state directory)") {
		t.Errorf("second build: the executor's log says %q, want the mount restored from the state directory", line)
	}
	if msg := readyMessage(second); !strings.Contains(msg, "cache volume: 1 cache mounts reused") {
		t.Errorf("second build: Ready message %q does not say the volume was used", msg)
	}

	// 3. Deleting the ImageBuild deletes the claim (the garbage collector), then its volume
	// (reclaimPolicy Delete).
	if err := k8s.Delete(ctx, second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		errClaim := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "vol-cache"}, &corev1.PersistentVolumeClaim{})
		errPV := k8s.Get(ctx, client.ObjectKey{Name: pv}, &corev1.PersistentVolume{})
		if apierrors.IsNotFound(errClaim) && apierrors.IsNotFound(errPV) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("2m after the ImageBuild was deleted: claim vol-cache: %v; volume %s: %v", errClaim, pv, errPV)
		}
		time.Sleep(time.Second)
	}
}

// restoreLine is the line of the executor's log of ns/pod that says a cache mount was restored
// ("Cache mount ...: restored ... (from where) in ..."), "" when there is none.
func restoreLine(t *testing.T, ns, pod string) string {
	t.Helper()
	b, err := clientset.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "executor"}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("the log of %s/%s: %v", ns, pod, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Cache mount ") && strings.Contains(l, ": restored ") {
			return l
		}
	}
	return ""
}

func logStatus(t *testing.T, what string, ib *v1alpha1.ImageBuild) {
	t.Helper()
	b, _ := json.Marshal(ib.Status.Cache)
	t.Logf("%s build: pod %s, digest %s, status.cache %s, duration %s", what, ib.Status.PodName, ib.Status.Image.Digest, b, ib.Status.Duration)
}

// volumeImageFiles reads /seen, /stamp and /statevisible from repo@digest, by path, without
// their newline, and fails the test when the image holds the cache mount's file or anything of
// the executor's state directory.
func (e *env) volumeImageFiles(repo, digest string) map[string]string {
	e.t.Helper()
	ref, err := name.ParseReference(e.reg.Ref(repo+"@"+digest), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		e.t.Fatalf("reading %s: %v", ref, err)
	}
	tree, data, err := imagetest.FlattenContents(img)
	if err != nil {
		e.t.Fatal(err)
	}
	for p := range tree {
		if p == "/cache/stamp" || p == "/slipway" || strings.HasPrefix(p, "/slipway/") {
			e.t.Errorf("%s: the image holds %s", ref, p)
		}
	}
	files := map[string]string{}
	for _, p := range []string{"/seen", "/stamp", "/statevisible"} {
		if _, ok := data[p]; !ok {
			e.t.Fatalf("%s: no %s in the image", ref, p)
		}
		files[p] = strings.TrimSuffix(string(data[p]), "\n")
	}
	return files
}
