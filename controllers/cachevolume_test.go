package controllers

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

func withCacheVolume(size, class string) func(*v1alpha1.ImageBuild) {
	return func(ib *v1alpha1.ImageBuild) {
		if ib.Spec.Cache == nil {
			ib.Spec.Cache = &v1alpha1.Cache{}
		}
		ib.Spec.Cache.Volume = &v1alpha1.CacheVolume{Size: resource.MustParse(size)}
		if class != "-" {
			ib.Spec.Cache.Volume.StorageClassName = ptr.To(class)
		}
	}
}

func (w *ibWrapper) CacheVolume(size, class string) *ibWrapper {
	withCacheVolume(size, class)(&w.ImageBuild)
	return w
}

func (w *ibWrapper) Platforms(ps ...string) *ibWrapper { w.Spec.Platforms = ps; return w }

// constructCacheClaim: the claim's name, labels, controller, access mode, size and class.
func TestImageBuild_constructCacheClaim(t *testing.T) {
	ib := makeImageBuild("app", "team").CacheVolume("5Gi", "fast").Obj()
	got := constructCacheClaim(ib, "")
	want := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: "app-cache", Namespace: "team",
			Labels: map[string]string{managedByLabel: managedByValue, v1alpha1.LabelImageBuild: "app"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageBuild", Name: "app",
				UID: "uid-app", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To("fast"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("constructCacheClaim() (-want +got):\n%s", diff)
	}

	// The cluster's default class: none named. One claim per platform.
	ib = makeImageBuild("app", "team").CacheVolume("1Gi", "-").Platforms("linux/amd64", "linux/arm/v7").Obj()
	got = constructCacheClaim(ib, "linux/arm/v7")
	if got.Name != "app-cache-linux-arm-v7" || got.Labels[v1alpha1.LabelPlatform] != "linux-arm-v7" || got.Spec.StorageClassName != nil {
		t.Errorf("claim of linux/arm/v7: name %s, labels %v, class %v", got.Name, got.Labels, got.Spec.StorageClassName)
	}
	if diff := cmp.Diff([]string{"app-cache-linux-amd64", "app-cache-linux-arm-v7"}, cacheClaimNames(ib)); diff != "" {
		t.Errorf("cacheClaimNames() (-want +got):\n%s", diff)
	}
	if names := cacheClaimNames(makeImageBuild("app", "team").Obj()); names != nil {
		t.Errorf("cacheClaimNames() without spec.cache.volume = %v", names)
	}
}

// constructPod mounts the claim in the executor container only, at /slipway/state, which it
// passes as --state-dir; without spec.cache.volume, neither.
func TestImageBuild_constructPod_cacheVolume(t *testing.T) {
	opts := podOptions{executorImage: "slipway/executor:v1", gitAuth: gitAuthBasic}
	plain := constructPod(makeImageBuild("app", "ns").GitSecret("git").Obj(), opts)
	for _, v := range plain.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			t.Errorf("pod without spec.cache.volume has volume %+v", v)
		}
	}
	if args := plain.Spec.Containers[0].Args; slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--state-dir") }) {
		t.Errorf("pod without spec.cache.volume: args %q", args)
	}

	ib := makeImageBuild("app", "ns").GitSecret("git").CacheVolume("2Gi", "-").Obj()
	pod := constructPod(ib, opts)
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	v, ok := vols[cacheVolumeName]
	if !ok || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "app-cache" || v.PersistentVolumeClaim.ReadOnly {
		t.Fatalf("cache volume %+v, want claim app-cache", v)
	}
	exec := pod.Spec.Containers[0]
	if !slices.ContainsFunc(exec.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == cacheVolumeName && m.MountPath == "/slipway/state" && !m.ReadOnly && m.SubPath == ""
	}) {
		t.Errorf("executor mounts %+v, want the cache volume at /slipway/state", exec.VolumeMounts)
	}
	if !slices.Contains(exec.Args, "--state-dir=/slipway/state") {
		t.Errorf("executor args %q, want --state-dir=/slipway/state", exec.Args)
	}
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers %+v, want the credentials one", pod.Spec.InitContainers)
	}
	for _, m := range pod.Spec.InitContainers[0].VolumeMounts {
		if m.Name == cacheVolumeName {
			t.Errorf("the credentials container mounts the cache volume: %+v", m)
		}
	}
	if pod.Spec.SecurityContext.SeccompProfile == nil || exec.SecurityContext.Privileged == nil || *exec.SecurityContext.Privileged {
		t.Errorf("security context changed: %+v / %+v", pod.Spec.SecurityContext, exec.SecurityContext)
	}

	// Without the registry cache the volume alone keeps the cache mounts: --state-dir, and
	// nothing that turns cache mounts off.
	off := makeImageBuild("app", "ns").CacheVolume("2Gi", "-").Obj()
	off.Spec.Cache.Disabled = true
	args := constructPod(off, opts).Spec.Containers[0].Args
	if !slices.Contains(args, "--cache=false") || !slices.Contains(args, "--state-dir=/slipway/state") ||
		slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--cache-mounts") }) {
		t.Errorf("cache disabled with a volume: args %q, want --cache=false and --state-dir, cache mounts left on", args)
	}

	// Each platform's pod its own claim.
	ib = makeImageBuild("app", "ns").CacheVolume("2Gi", "-").Platforms("linux/amd64", "linux/arm64").Obj()
	o := opts
	o.platform, o.native = "linux/arm64", true
	if claim := podCacheClaim(constructPod(ib, o)); claim != "app-cache-linux-arm64" {
		t.Errorf("pod of linux/arm64 mounts claim %q, want app-cache-linux-arm64", claim)
	}
}

// judgeClaim: a claim is used only when the ImageBuild (this one: its UID) controls it.
func TestImageBuild_judgeClaim(t *testing.T) {
	ib := makeImageBuild("app", "ns").CacheVolume("1Gi", "-").Obj()
	ref := func(kind, name, uid string, controller bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: kind, Name: name, UID: types.UID(uid), Controller: ptr.To(controller)}}
	}
	deleting := &metav1.Time{Time: t0}
	tests := []struct {
		name    string
		owners  []metav1.OwnerReference
		deleted *metav1.Time
		want    claimState
		who     string
	}{
		{name: "ours", owners: ref("ImageBuild", "app", "uid-app", true), want: claimOurs},
		{name: "ours, being deleted", owners: ref("ImageBuild", "app", "uid-app", true), deleted: deleting, want: claimGoing},
		{name: "a deleted ImageBuild of the same name's", owners: ref("ImageBuild", "app", "uid-old", true), want: claimGoing},
		{name: "no owner", want: claimForeign, who: "it has no controller"},
		{name: "owned by us but not as controller", owners: ref("ImageBuild", "app", "uid-app", false), want: claimForeign, who: "it has no controller"},
		{name: "another ImageBuild's", owners: ref("ImageBuild", "other", "uid-other", true), want: claimForeign, who: "its controller is ImageBuild other"},
		{name: "a StatefulSet's", owners: ref("StatefulSet", "db", "uid-db", true), want: claimForeign, who: "its controller is StatefulSet db"},
		{name: "someone's, being deleted", deleted: deleting, want: claimGoing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "app-cache", Namespace: "ns",
				OwnerReferences: tc.owners, DeletionTimestamp: tc.deleted}}
			got, who := judgeClaim(ib, claim)
			if got != tc.want || who != tc.who {
				t.Errorf("judgeClaim() = %d, %q; want %d, %q", got, who, tc.want, tc.who)
			}
		})
	}
}

// computeStatus maps the executor's state into status.cache.volume with the claim the pod
// mounted, and the Ready message says it; whatever an executor reports, the status passes the
// CRD's validation.
func TestImageBuild_computeStatus_cacheVolume(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	withClaim := func(p *corev1.Pod) *corev1.Pod {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: cacheVolumeName, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "app-cache"}}})
		return p
	}
	long := strings.Repeat("busy\x1b[31m ", 100)
	tests := []struct {
		name       string
		claim      bool
		state      *result.State
		want       *v1alpha1.CacheVolumeStatus
		wantSuffix string
	}{
		{name: "no volume", state: &result.State{Found: true, MountsUsed: 1}, wantSuffix: "3 of 6 cache lookups hit"},
		{name: "a volume, no state reported", claim: true, want: &v1alpha1.CacheVolumeStatus{ClaimName: "app-cache"},
			wantSuffix: "3 of 6 cache lookups hit"},
		{name: "empty, the first build", claim: true, state: &result.State{Bytes: 4096},
			want: &v1alpha1.CacheVolumeStatus{ClaimName: "app-cache", Bytes: 4096}, wantSuffix: "3 of 6 cache lookups hit"},
		{name: "found and used", claim: true, state: &result.State{Found: true, MountsUsed: 2, Bytes: 1 << 30},
			want:       &v1alpha1.CacheVolumeStatus{ClaimName: "app-cache", Found: true, MountsUsed: 2, Bytes: 1 << 30},
			wantSuffix: "cache volume: 2 cache mounts reused"},
		{name: "reset", claim: true, state: &result.State{Found: true, Reset: "another build holds it"},
			want:       &v1alpha1.CacheVolumeStatus{ClaimName: "app-cache", Found: true, Reset: "another build holds it"},
			wantSuffix: "cache volume not used: another build holds it"},
		{name: "a hostile executor's figures", claim: true,
			state: &result.State{Found: true, Reset: long, MountsUsed: math.MaxInt64, TreesUsed: -3, Bytes: -1},
			want: &v1alpha1.CacheVolumeStatus{ClaimName: "app-cache", Found: true, Reset: result.Excerpt(long, 256),
				MountsUsed: math.MaxInt32}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := makeImageBuild("app", "ns").Status(started()).Obj()
			pod := makePod("app-1-1").Terminated(t0, t1, 0, "Completed", encodeResult(result.Result{
				Success: true, Digest: digest, CacheHits: 3, CacheMisses: 3, State: tc.state})).Obj()
			if tc.claim {
				pod = withClaim(pod)
			}
			st := computeStatus(ib, pod, now)
			if st.Phase != v1alpha1.PhaseSucceeded || st.Cache == nil {
				t.Fatalf("status %+v", st)
			}
			if diff := cmp.Diff(tc.want, st.Cache.Volume); diff != "" {
				t.Errorf("status.cache.volume (-want +got):\n%s", diff)
			}
			if v := st.Cache.Volume; v != nil {
				if len(v.Reset) > 256 || strings.ContainsAny(v.Reset, "\x1b\n") {
					t.Errorf("reset %q: longer than the CRD allows, or with control characters", v.Reset)
				}
			}
			ready := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
			if tc.wantSuffix != "" && (ready == nil || !strings.HasSuffix(ready.Message, tc.wantSuffix)) {
				t.Errorf("Ready message %+v, want it to end with %q", ready, tc.wantSuffix)
			}
		})
	}
}

// The API server refuses a spec.cache.volume that cannot be: no size, less than 1Mi, a
// fraction of a byte, a class that is no name, runPolicy Parallel.
func TestImageBuild_validationCacheVolume(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	spec := func(volume map[string]any, runPolicy string) map[string]any {
		s := map[string]any{
			"source": map[string]any{"git": map[string]any{"url": "https://git.example.com/org/app.git"}},
			"output": map[string]any{"image": "registry.example.com/org/app:v1"},
			"cache":  map[string]any{"volume": volume},
		}
		if runPolicy != "" {
			s["runPolicy"] = runPolicy
		}
		return s
	}
	create := func(name string, s map[string]any) (*v1alpha1.ImageBuild, error) {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "ImageBuild",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec":     s,
		}}
		if err := c.Create(context.Background(), u); err != nil {
			return nil, err
		}
		var ib v1alpha1.ImageBuild
		err := runtimeFromUnstructured(u, &ib)
		return &ib, err
	}
	bad := []struct {
		name string
		spec map[string]any
		want string
	}{
		{"no size", spec(map[string]any{"storageClassName": "fast"}, ""), "spec.cache.volume.size: Required value"},
		{"too small", spec(map[string]any{"size": "1Ki"}, ""), "must be a whole number of bytes, at least 1Mi"},
		{"negative", spec(map[string]any{"size": "-1Gi"}, ""), "spec.cache.volume.size"},
		{"a fraction of a byte", spec(map[string]any{"size": "1048576.5"}, ""), "must be a whole number of bytes"},
		{"not a class name", spec(map[string]any{"size": "1Gi", "storageClassName": "Fast/SSD"}, ""), "spec.cache.volume.storageClassName"},
		{"runPolicy Parallel", spec(map[string]any{"size": "1Gi"}, "Parallel"), "runPolicy Parallel is not supported with cache.volume"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := create("bad", tc.spec)
			if err == nil {
				_ = c.Delete(context.Background(), &v1alpha1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}})
				t.Fatal("the API server accepted the ImageBuild")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %s", err, tc.want)
			}
		})
	}
	good := []struct {
		name  string
		spec  map[string]any
		bytes int64
	}{
		{"1Mi", spec(map[string]any{"size": "1Mi"}, ""), 1 << 20},
		{"a number of bytes, SerialLatestOnly", spec(map[string]any{"size": int64(1 << 30)}, "SerialLatestOnly"), 1 << 30},
		{"no class", spec(map[string]any{"size": "10Gi", "storageClassName": ""}, ""), 10 << 30},
	}
	for i, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			ib, err := create("good-"+string(rune('a'+i)), tc.spec)
			if err != nil {
				t.Fatalf("creating a valid ImageBuild: %v", err)
			}
			if v := ib.Spec.Cache.Volume; v == nil || v.Size.Value() != tc.bytes {
				t.Errorf("spec.cache.volume %+v, want size %d bytes", v, tc.bytes)
			}
		})
	}
}

// waitClaim waits for the claim to exist and returns it.
func waitClaim(t *testing.T, c client.Client, ns, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	claim := &corev1.PersistentVolumeClaim{}
	eventually(t, 20*time.Second, "claim "+name, func() (bool, string) {
		err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, claim)
		return err == nil, errString(err)
	})
	return claim
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Through the manager: the claim is made with the spec's size and class, controlled by the
// ImageBuild; the pod mounts it with --state-dir; the status has what the executor reported;
// a rebuild uses the same claim; a larger size asks it to grow (refused here: the claim is not
// bound, as no provisioner runs in envtest, which the event says); dropping spec.cache.volume
// deletes it.
func TestImageBuildReconciler_Reconcile_cacheVolume(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	ctx := context.Background()

	key := newImageBuild(t, c, ns, "app", withCacheVolume("3Gi", "fast"))
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(ctx, key, ib); err != nil {
		t.Fatal(err)
	}
	claim := waitClaim(t, c, ns, "app-cache")
	if !metav1.IsControlledBy(claim, ib) {
		t.Errorf("claim owners %+v, want the ImageBuild as controller", claim.OwnerReferences)
	}
	if size := claim.Spec.Resources.Requests[corev1.ResourceStorage]; size.Cmp(resource.MustParse("3Gi")) != 0 ||
		ptr.Deref(claim.Spec.StorageClassName, "") != "fast" || !slices.Equal(claim.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("claim spec %+v, want 3Gi of class fast, ReadWriteOnce", claim.Spec)
	}
	pod := waitPod(t, c, ns, "app-1-1")
	if got := podCacheClaim(pod); got != "app-cache" {
		t.Errorf("pod mounts claim %q, want app-cache", got)
	}
	if !slices.Contains(pod.Spec.Containers[0].Args, "--state-dir=/slipway/state") {
		t.Errorf("pod args %q", pod.Spec.Containers[0].Args)
	}
	waitEvent(t, c, ns, "CacheVolumeCreated")

	k.finish(ns, "app-1-1", 0, "Completed", encodeResult(result.Result{Success: true, Digest: testDigest,
		State: &result.State{Found: true, MountsUsed: 1, Bytes: 8192}}))
	ib = waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))
	want := &v1alpha1.CacheVolumeStatus{ClaimName: "app-cache", Found: true, MountsUsed: 1, Bytes: 8192}
	if diff := cmp.Diff(want, ib.Status.Cache.Volume); diff != "" {
		t.Errorf("status.cache.volume (-want +got):\n%s", diff)
	}
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.HasSuffix(msg, "cache volume: 1 cache mounts reused") {
		t.Errorf("Ready message %q", msg)
	}

	// A rebuild: the same claim, no other.
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Annotations = map[string]string{v1alpha1.RebuildAnnotation: "1"}
	if err := c.Patch(ctx, ib, patch); err != nil {
		t.Fatal(err)
	}
	if got := podCacheClaim(waitPod(t, c, ns, "app-1-2")); got != "app-cache" {
		t.Errorf("the rebuild's pod mounts claim %q, want app-cache", got)
	}
	var claims corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &claims, client.InNamespace(ns)); err != nil || len(claims.Items) != 1 {
		t.Errorf("claims after the rebuild: %d (%v), want 1", len(claims.Items), err)
	}

	// A larger size: the claim is asked to grow, which the API server refuses (unbound).
	k.finish(ns, "app-1-2", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "rebuild Ready", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.Attempt == 2 && ib.Status.Phase == v1alpha1.PhaseSucceeded
	})
	update(t, c, key, func(ib *v1alpha1.ImageBuild) { ib.Spec.Cache.Volume.Size = resource.MustParse("5Gi") })
	waitPod(t, c, ns, "app-2-1")
	evs := waitEvent(t, c, ns, v1alpha1.ReasonCacheVolumeNotResized)
	for _, e := range evs {
		if e.Reason == v1alpha1.ReasonCacheVolumeNotResized && !strings.Contains(e.Note, "PersistentVolumeClaim app-cache keeps its size 3Gi") {
			t.Errorf("event note %q", e.Note)
		}
	}
	k.finish(ns, "app-2-1", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "generation 2 Ready", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.ObservedGeneration == 2 && ib.Status.Phase == v1alpha1.PhaseSucceeded
	})

	// No volume any more: the claim is deleted (kept by the API server's claim protection
	// while in use; nothing removes its finalizer in envtest) and the pod mounts none.
	update(t, c, key, func(ib *v1alpha1.ImageBuild) { ib.Spec.Cache = nil })
	if got := podCacheClaim(waitPod(t, c, ns, "app-3-1")); got != "" {
		t.Errorf("pod without spec.cache.volume mounts claim %q", got)
	}
	eventually(t, 10*time.Second, "the claim to be deleted", func() (bool, string) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app-cache"}, claim)
		return apierrors.IsNotFound(err) || claim.DeletionTimestamp != nil, errString(err)
	})
}

// update changes the ImageBuild's spec.
func update(t *testing.T, c client.Client, key client.ObjectKey, mutate func(*v1alpha1.ImageBuild)) {
	t.Helper()
	eventually(t, 10*time.Second, "updating "+key.Name, func() (bool, string) {
		ib := &v1alpha1.ImageBuild{}
		if err := c.Get(context.Background(), key, ib); err != nil {
			return false, err.Error()
		}
		mutate(ib)
		err := c.Update(context.Background(), ib)
		return err == nil, errString(err)
	})
}

// A claim of the cache volume's name that the ImageBuild does not control is never used or
// changed: the build fails with CacheVolumeConflict, Stalled, no pod is made. One of a deleted
// ImageBuild of the same name holds the build up (CacheVolumePending) until it is gone; then a
// claim of its own is made.
func TestImageBuildReconciler_Reconcile_cacheVolumeConflict(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	ctx := context.Background()

	// Someone's claim, say a database's, with the name the ImageBuild "db" would give its own.
	theirs := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "db-cache", Namespace: ns, Labels: map[string]string{"app": "db"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
	if err := c.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	key := newImageBuild(t, c, ns, "db", withCacheVolume("8Gi", "-"))
	ib := waitStatus(t, c, key, "CacheVolumeConflict", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonCacheVolumeConflict))
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Failure == nil ||
		!strings.Contains(ib.Status.Failure.Message, "PersistentVolumeClaim db-cache") || !strings.Contains(ib.Status.Failure.Message, "it has no controller") {
		t.Errorf("status: %s, failure %+v", describe(ib), ib.Status.Failure)
	}
	waitEvent(t, c, ns, v1alpha1.ReasonCacheVolumeConflict)
	time.Sleep(500 * time.Millisecond) // no retry either
	if pods := podNames(t, c, ns); len(pods) != 0 {
		t.Errorf("pods %v, want none", pods)
	}
	after := &corev1.PersistentVolumeClaim{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(theirs), after); err != nil {
		t.Fatal(err)
	}
	if len(after.OwnerReferences) != 0 || after.Labels[managedByLabel] != "" || after.DeletionTimestamp != nil ||
		after.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("their claim was changed: %+v", after.ObjectMeta)
	}

	// The claim of a deleted ImageBuild "app" (another UID), as the manager labelled it; the
	// garbage collector has not deleted it yet.
	old := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "app-cache", Namespace: ns,
			Labels: map[string]string{managedByLabel: managedByValue, v1alpha1.LabelImageBuild: "app"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageBuild", Name: "app",
				UID: "0ld-uid", Controller: ptr.To(true)}}},
		Spec: theirs.Spec,
	}
	if err := c.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	appKey := newImageBuild(t, c, ns, "app", withCacheVolume("2Gi", "-"))
	waitStatus(t, c, appKey, "CacheVolumePending", conditionIs("Reconciling", metav1.ConditionTrue, v1alpha1.ReasonCacheVolumePending))
	if slices.Contains(podNames(t, c, ns), "app-1-1") {
		t.Fatal("a pod was made while the old claim exists")
	}
	// The garbage collector's part: delete it (and the claim protection's: its finalizer).
	if err := c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the old claim to go", func() (bool, string) {
		cur := &corev1.PersistentVolumeClaim{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(old), cur); err != nil {
			return apierrors.IsNotFound(err), err.Error()
		}
		if cur.UID == old.UID && len(cur.Finalizers) > 0 {
			cur.Finalizers = nil
			_ = c.Update(ctx, cur)
		}
		return cur.UID != old.UID, "still there"
	})
	pod := waitPod(t, c, ns, "app-1-1")
	app := &v1alpha1.ImageBuild{}
	if err := c.Get(ctx, appKey, app); err != nil {
		t.Fatal(err)
	}
	claim := waitClaim(t, c, ns, "app-cache")
	if !metav1.IsControlledBy(claim, app) || podCacheClaim(pod) != "app-cache" {
		t.Errorf("new claim owners %+v, pod claim %q", claim.OwnerReferences, podCacheClaim(pod))
	}
}

// A build of two platforms: a claim per platform, each pod mounting its own.
func TestImageBuildReconciler_Reconcile_platformCacheVolumes(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	newImageBuild(t, c, ns, "app", withCacheVolume("1Gi", "-"), func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns} // no node: both emulated
	})
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		claim := waitClaim(t, c, ns, "app-cache-"+platformSuffix(p))
		if claim.Labels[v1alpha1.LabelPlatform] != platformSuffix(p) {
			t.Errorf("claim %s labels %v", claim.Name, claim.Labels)
		}
		if got := podCacheClaim(waitPod(t, c, ns, "app-1-1-"+platformSuffix(p))); got != claim.Name {
			t.Errorf("pod of %s mounts claim %q, want %s", p, got, claim.Name)
		}
	}
}
