package controllers

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// computeStatus maps the executor's cacheMounts into status.cache.mounts and the Ready message
// says how many were restored and saved; a result without them leaves both without.
func TestImageBuild_computeStatus_cacheMounts(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name       string
		mounts     *result.CacheMounts
		want       *v1alpha1.CacheMountsStatus
		wantSuffix string
	}{
		{
			name:       "none reported",
			wantSuffix: "3 of 6 cache lookups hit",
		},
		{
			name: "restored and saved",
			mounts: &result.CacheMounts{Restored: 2, RestoredBytes: 300 << 20, RestoreMillis: 1500,
				Saved: 3, SavedBytes: 310 << 20, UploadedBytes: 12 << 20, SaveMillis: 2345},
			want: &v1alpha1.CacheMountsStatus{Restored: 2, RestoredBytes: 300 << 20, RestoreDuration: "1.5s",
				Saved: 3, SavedBytes: 310 << 20, UploadedBytes: 12 << 20, SaveDuration: "2.3s"},
			wantSuffix: "3 of 6 cache lookups hit, cache mounts: 2 restored, 3 saved",
		},
		{
			name:       "skipped ones are said",
			mounts:     &result.CacheMounts{Saved: 1, SavedBytes: 10, SaveMillis: 20, Skipped: 1},
			want:       &v1alpha1.CacheMountsStatus{Saved: 1, SavedBytes: 10, SaveDuration: "20ms", Skipped: 1},
			wantSuffix: "cache mounts: 0 restored, 1 saved, 1 skipped",
		},
		{
			// The executor image is the spec's to choose: figures the CRD would refuse (a
			// negative count or size) or no build takes are not copied.
			name: "a hostile executor's figures",
			mounts: &result.CacheMounts{Restored: -1, RestoredBytes: -5, RestoreMillis: -7,
				Saved: math.MaxInt64, SavedBytes: math.MaxInt64, UploadedBytes: -1, SaveMillis: math.MaxInt64, Skipped: math.MinInt64},
			want:       &v1alpha1.CacheMountsStatus{Saved: math.MaxInt32, SavedBytes: math.MaxInt64},
			wantSuffix: "cache mounts: 0 restored, 2147483647 saved",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := makeImageBuild("app", "ns").Status(started()).Obj()
			pod := makePod("app-1-1").Terminated(t0, t1, 0, "Completed", encodeResult(result.Result{
				Success: true, Digest: digest, CacheHits: 3, CacheMisses: 3, CacheMounts: tc.mounts})).Obj()
			st := computeStatus(ib, pod, now)
			if st.Phase != v1alpha1.PhaseSucceeded || st.Cache == nil || st.Cache.Hits != 3 || st.Cache.Misses != 3 {
				t.Fatalf("status %+v, cache %+v", st, st.Cache)
			}
			if diff := cmp.Diff(tc.want, st.Cache.Mounts); diff != "" {
				t.Errorf("status.cache.mounts (-want +got):\n%s", diff)
			}
			ready := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
			if ready == nil || !strings.HasSuffix(ready.Message, tc.wantSuffix) {
				t.Errorf("Ready message %+v, want it to end with %q", ready, tc.wantSuffix)
			}
		})
	}
}

// cacheMountsStatus of the results of several pods (spec.platforms): counts and sizes summed,
// durations the longest, results without cache mounts left out, sums bounded.
func TestImageBuild_cacheMountsStatus(t *testing.T) {
	tests := []struct {
		name    string
		results []*result.CacheMounts
		want    *v1alpha1.CacheMountsStatus
	}{
		{name: "no result", want: nil},
		{name: "none reports cache mounts", results: []*result.CacheMounts{nil, nil}, want: nil},
		{
			name:    "reported with nothing done",
			results: []*result.CacheMounts{{}},
			want:    &v1alpha1.CacheMountsStatus{},
		},
		{
			name: "two platforms and one without",
			results: []*result.CacheMounts{
				{Restored: 1, RestoredBytes: 100, RestoreMillis: 900, Saved: 1, SavedBytes: 120, UploadedBytes: 20, SaveMillis: 300},
				nil,
				{Restored: 2, RestoredBytes: 50, RestoreMillis: 1200, Saved: 2, SavedBytes: 60, UploadedBytes: 5, SaveMillis: 100, Skipped: 1},
			},
			want: &v1alpha1.CacheMountsStatus{Restored: 3, RestoredBytes: 150, RestoreDuration: "1.2s",
				Saved: 3, SavedBytes: 180, UploadedBytes: 25, SaveDuration: "300ms", Skipped: 1},
		},
		{
			name: "sums stop at the maximum, negatives count as 0",
			results: []*result.CacheMounts{
				{Restored: math.MaxInt32, RestoredBytes: math.MaxInt64 - 1, Saved: -3, SavedBytes: 7},
				{Restored: 5, RestoredBytes: 9, Saved: 2, SavedBytes: -7},
			},
			want: &v1alpha1.CacheMountsStatus{Restored: math.MaxInt32, RestoredBytes: math.MaxInt64, Saved: 2, SavedBytes: 7},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, cacheMountsStatus(tc.results...)); diff != "" {
				t.Errorf("cacheMountsStatus() (-want +got):\n%s", diff)
			}
		})
	}
}

// The API server refuses a spec.cache.mounts that cannot be, and takes maxSize in either
// form a Quantity has (a string, or a number of bytes).
func TestImageBuild_validationCacheMounts(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	spec := func(mounts map[string]any, disabled bool) map[string]any {
		cache := map[string]any{"mounts": mounts}
		if disabled {
			cache["disabled"] = true
		}
		return map[string]any{
			"source": map[string]any{"git": map[string]any{"url": "https://git.example.com/org/app.git"}},
			"output": map[string]any{"image": "registry.example.com/org/app:v1"},
			"cache":  cache,
		}
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
		{"negative", spec(map[string]any{"maxSize": "-1Gi"}, false), "spec.cache.mounts.maxSize: Invalid value"},
		{"negative number", spec(map[string]any{"maxSize": int64(-1)}, false), "spec.cache.mounts.maxSize: Invalid value"},
		{"a fraction of a byte", spec(map[string]any{"maxSize": "0.5"}, false), "must be a whole number of bytes from 0 (no limit) to 1Ti"},
		{"millibytes", spec(map[string]any{"maxSize": "100m"}, false), "must be a whole number of bytes"},
		{"past 1Ti", spec(map[string]any{"maxSize": "1025Gi"}, false), "must be a whole number of bytes from 0 (no limit) to 1Ti"},
		{"past 1Ti as a number", spec(map[string]any{"maxSize": int64(1)<<40 + 1}, false), "to 1Ti"},
		{"not a size", spec(map[string]any{"maxSize": "2GB"}, false), "spec.cache.mounts.maxSize"},
		{"mounts while the cache is disabled", spec(map[string]any{"enabled": false}, true), "mounts cannot be set when disabled is true"},
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
		{"0 is no limit", spec(map[string]any{"maxSize": "0"}, false), 0},
		{"1536Mi", spec(map[string]any{"maxSize": "1536Mi", "enabled": true}, false), 1536 << 20},
		{"1Ti", spec(map[string]any{"maxSize": "1Ti"}, false), 1 << 40},
		{"a number of bytes", spec(map[string]any{"maxSize": int64(1048576)}, false), 1 << 20},
		{"decimal units", spec(map[string]any{"maxSize": "1.5G"}, false), 1500000000},
	}
	for i, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			ib, err := create("good-"+string(rune('a'+i)), tc.spec)
			if err != nil {
				t.Fatalf("creating a valid ImageBuild: %v", err)
			}
			m := ib.Spec.Cache.Mounts
			if m == nil || m.MaxSize == nil || m.MaxSize.Value() != tc.bytes {
				t.Errorf("spec.cache.mounts %+v, want maxSize %d bytes", m, tc.bytes)
			}
		})
	}
	// enabled: false with the cache on is a spec.
	if _, err := create("off", spec(map[string]any{"enabled": false}, false)); err != nil {
		t.Errorf("mounts.enabled false: %v", err)
	}
}

// Through the manager: the executor pod of each namespace gets its own scope, the spec's
// flags reach it, and the status (ImageBuild and each of spec.platforms) has what the
// executors reported, written past the CRD's validation whatever an executor reported.
func TestImageBuildReconciler_Reconcile_cacheMounts(t *testing.T) {
	c := startEnv(t)
	nsA := newNamespace(t, c, nil)
	nsB := newNamespace(t, c, nil)
	startManagerIn(t, []string{nsA, nsB}, Options{}, nil, nil)
	k := kubelet{t, c}

	// The same ImageBuild, output and so cache repository in two namespaces.
	mounts := func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Cache = &v1alpha1.Cache{Mounts: &v1alpha1.CacheMounts{MaxSize: ptr.To(resource.MustParse("512Mi"))}}
	}
	keyA := newImageBuild(t, c, nsA, "app", mounts)
	keyB := newImageBuild(t, c, nsB, "app", mounts)
	for _, ns := range []string{nsA, nsB} {
		args := waitPod(t, c, ns, "app-1-1").Spec.Containers[0].Args
		for _, want := range []string{"--cache-repo=registry.example.com/org/app/cache", "--cache-mount-scope=namespace/" + ns, "--cache-mount-max-size=536870912"} {
			if !slices.Contains(args, want) {
				t.Errorf("pod of %s: no %s in %q", ns, want, args)
			}
		}
	}

	k.finish(nsA, "app-1-1", 0, "Completed", encodeResult(result.Result{Success: true, Digest: testDigest, CacheHits: 1, CacheMisses: 2,
		CacheMounts: &result.CacheMounts{Restored: 1, RestoredBytes: 4096, RestoreMillis: 250, Saved: 1, SavedBytes: 8192, UploadedBytes: 1024, SaveMillis: 120}}))
	ib := waitStatus(t, c, keyA, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))
	want := &v1alpha1.CacheMountsStatus{Restored: 1, RestoredBytes: 4096, RestoreDuration: "250ms", Saved: 1, SavedBytes: 8192,
		UploadedBytes: 1024, SaveDuration: "120ms"}
	if diff := cmp.Diff(want, ib.Status.Cache.Mounts); diff != "" {
		t.Errorf("status.cache.mounts (-want +got):\n%s", diff)
	}
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.HasSuffix(msg, "cache mounts: 1 restored, 1 saved") {
		t.Errorf("Ready message %q", msg)
	}

	// An executor that reports negative figures still gets its build's status written.
	k.finish(nsB, "app-1-1", 0, "Completed", encodeResult(result.Result{Success: true, Digest: testDigest,
		CacheMounts: &result.CacheMounts{Restored: -1, RestoredBytes: -1, Saved: 1, SavedBytes: -2, Skipped: -4}}))
	ib = waitStatus(t, c, keyB, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))
	if diff := cmp.Diff(&v1alpha1.CacheMountsStatus{Saved: 1}, ib.Status.Cache.Mounts); diff != "" {
		t.Errorf("status.cache.mounts of a hostile result (-want +got):\n%s", diff)
	}

	// mounts.enabled false reaches the pod of a new generation.
	var cur v1alpha1.ImageBuild
	if err := c.Get(context.Background(), keyA, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Cache.Mounts = &v1alpha1.CacheMounts{Enabled: ptr.To(false)}
	if err := c.Update(context.Background(), &cur); err != nil {
		t.Fatal(err)
	}
	args := waitPod(t, c, nsA, "app-2-1").Spec.Containers[0].Args
	if !slices.Contains(args, "--cache-mounts=false") || !slices.Contains(args, "--cache-mount-scope=namespace/"+nsA) ||
		slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--cache-mount-max-size") }) {
		t.Errorf("pod of generation 2: args %q, want --cache-mounts=false and the scope", args)
	}
}

// A build of two platforms: each platform's status has its pod's cache mounts, the build's the
// sums (durations the longest), and the Ready message says them.
func TestImageBuildReconciler_Reconcile_platformCacheMounts(t *testing.T) {
	reg := testenv.StartRegistry(t)
	repo := reg.Ref("team/app")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns} // no node: both emulated
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1"}
	})
	mounts := map[string]*result.CacheMounts{
		"linux/amd64": {Restored: 1, RestoredBytes: 1000, RestoreMillis: 400, Saved: 1, SavedBytes: 1500, UploadedBytes: 500, SaveMillis: 90},
		"linux/arm64": {Restored: 0, Saved: 2, SavedBytes: 700, UploadedBytes: 700, SaveMillis: 1300, Skipped: 1},
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		pod := "app-1-1-" + platformSuffix(p)
		args := waitPod(t, c, ns, pod).Spec.Containers[0].Args
		if !slices.Contains(args, "--cache-mount-scope=namespace/"+ns) || !slices.Contains(args, "--custom-platform="+p) {
			t.Errorf("pod %s: args %q, want the namespace's scope and its platform", pod, args)
		}
		d := pushPlatformImage(t, reg, repo, p)
		k.finish(ns, pod, 0, "Completed", encodeResult(result.Result{Success: true, Digest: d, References: []string{repo + "@" + d},
			Commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904", CacheHits: 1, CacheMisses: 1, CacheMounts: mounts[p]}))
	}
	ib := waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))
	want := []*v1alpha1.CacheMountsStatus{
		{Restored: 1, RestoredBytes: 1000, RestoreDuration: "400ms", Saved: 1, SavedBytes: 1500, UploadedBytes: 500, SaveDuration: "90ms"},
		{Saved: 2, SavedBytes: 700, UploadedBytes: 700, SaveDuration: "1.3s", Skipped: 1},
	}
	for i, ps := range ib.Status.Platforms {
		if ps.Cache == nil {
			t.Fatalf("status.platforms[%d].cache is empty", i)
		}
		if diff := cmp.Diff(want[i], ps.Cache.Mounts); diff != "" {
			t.Errorf("status.platforms[%d].cache.mounts (-want +got):\n%s", i, diff)
		}
	}
	sum := &v1alpha1.CacheMountsStatus{Restored: 1, RestoredBytes: 1000, RestoreDuration: "400ms", Saved: 3, SavedBytes: 2200,
		UploadedBytes: 1200, SaveDuration: "1.3s", Skipped: 1}
	if diff := cmp.Diff(sum, ib.Status.Cache.Mounts); diff != "" {
		t.Errorf("status.cache.mounts (-want +got):\n%s", diff)
	}
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.HasSuffix(msg, "cache mounts: 1 restored, 3 saved, 1 skipped") {
		t.Errorf("Ready message %q", msg)
	}
}

// runtimeFromUnstructured converts what the API server returned into an ImageBuild.
func runtimeFromUnstructured(u *unstructured.Unstructured, ib *v1alpha1.ImageBuild) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ib)
}
