package controllers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/imageindex"
	"github.com/slipway-dev/slipway/controllers/imagesign"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// makeNode is a node of os/arch with labels, Ready unless notReady.
func makeNode(name, arch string, notReady bool, labels map[string]string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		corev1.LabelOSStable: "linux", corev1.LabelArchStable: arch}}}
	for k, v := range labels {
		n.Labels[k] = v
	}
	status := corev1.ConditionTrue
	if notReady {
		status = corev1.ConditionFalse
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}}
	return n
}

func TestPlatformPlacements(t *testing.T) {
	cordoned := makeNode("s390x", "s390x", false, nil)
	cordoned.Spec.Unschedulable = true
	tainted := makeNode("riscv", "riscv64", false, nil)
	tainted.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "riscv", Effect: corev1.TaintEffectNoSchedule}}
	preferNot := makeNode("ppc", "ppc64le", false, nil)
	preferNot.Spec.Taints = []corev1.Taint{{Key: "spare", Effect: corev1.TaintEffectPreferNoSchedule}}
	nodes := []corev1.Node{
		makeNode("amd", "amd64", false, map[string]string{"pool": "builders"}),
		makeNode("arm", "arm64", false, nil),
		makeNode("arm32", "arm", true, nil),
		cordoned, tainted, preferNot,
	}
	tolerateRiscv := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "riscv", Effect: corev1.TaintEffectNoSchedule}}

	tests := []struct {
		name        string
		platforms   []string
		emulation   bool
		selector    map[string]string
		tolerations []corev1.Toleration
		want        []bool
		problem     string // a platform the problem names; "" for none
	}{
		{"a Ready node of each architecture", []string{"linux/amd64", "linux/arm64"}, false, nil, nil, []bool{true, true}, ""},
		{"a variant runs on a node of its architecture", []string{"linux/arm64/v8"}, false, nil, nil, []bool{true}, ""},
		{"a NotReady node does not count", []string{"linux/amd64", "linux/arm/v7"}, false, nil, nil, nil, "linux/arm/v7"},
		{"nor does a cordoned one", []string{"linux/s390x"}, false, nil, nil, nil, "linux/s390x"},
		{"nor a node whose taint is not tolerated", []string{"linux/riscv64"}, false, nil, nil, nil, "linux/riscv64"},
		{"a tolerated taint is fine", []string{"linux/riscv64"}, false, nil, tolerateRiscv, []bool{true}, ""},
		{"PreferNoSchedule does not keep a pod off", []string{"linux/ppc64le"}, false, nil, nil, []bool{true}, ""},
		{"the build's selector applies", []string{"linux/amd64", "linux/arm64"}, false, map[string]string{"pool": "builders"}, nil, nil, "linux/arm64"},
		{"with emulation, what has no node is emulated", []string{"linux/amd64", "linux/arm/v7", "linux/mips64le"}, true, nil, nil,
			[]bool{true, false, false}, ""},
		{"a selector's architecture is replaced by the platform's", []string{"linux/arm64"}, false,
			map[string]string{corev1.LabelArchStable: "amd64"}, nil, []bool{true}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := makeImageBuild("app", "ns").Obj()
			ib.Spec.Platforms, ib.Spec.Emulation = tc.platforms, tc.emulation
			got, problem := platformPlacements(nodes, ib, tc.selector, tc.tolerations)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("native (-want +got)\n%s", diff)
			}
			if tc.problem == "" {
				if problem != "" {
					t.Errorf("problem = %q, want none", problem)
				}
				return
			}
			for _, want := range []string{"platform " + tc.problem + " ", "add a node of that architecture", "spec.emulation: true", "binfmt"} {
				if !strings.Contains(problem, want) {
					t.Errorf("problem = %q, want it to say %q", problem, want)
				}
			}
		})
	}
}

func TestDuplicatePlatforms(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"}, ""},
		{[]string{"linux/arm64", "linux/arm64/v8"}, "linux/arm64 and linux/arm64/v8"},
		{[]string{"linux/arm", "linux/amd64", "linux/arm/v7"}, "linux/arm and linux/arm/v7"},
	} {
		got := duplicatePlatforms(tc.in)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("duplicatePlatforms(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The pod of a platform is the single-platform pod with its own name, label, platform flags
// and node selector: nothing about its privileges changes, emulated or not.
func TestConstructPod_platform(t *testing.T) {
	ib := makeImageBuild("app", "ns").PushSecret("push").Obj()
	ib.Status.Attempt = 2
	ib.Spec.NodeSelector = map[string]string{"pool": "builders"}
	ib.Spec.Platforms = []string{"linux/amd64", "linux/arm/v7"}
	opts := podOptions{executorImage: "slipway/executor:test"}
	single := constructPod(ib, opts)

	for _, native := range []bool{true, false} {
		o := opts
		o.platform, o.native = "linux/arm/v7", native
		pod := constructPod(ib, o)
		if pod.Name != "app-1-2-linux-arm-v7" || pod.Labels[v1alpha1.LabelPlatform] != "linux-arm-v7" || pod.Labels[v1alpha1.LabelAttempt] != "2" {
			t.Errorf("native %v: name %s, labels %v", native, pod.Name, pod.Labels)
		}
		wantSel := map[string]string{"pool": "builders", corev1.LabelOSStable: "linux"}
		if native {
			wantSel[corev1.LabelArchStable] = "arm"
		}
		if diff := cmp.Diff(wantSel, pod.Spec.NodeSelector); diff != "" {
			t.Errorf("native %v: nodeSelector (-want +got)\n%s", native, diff)
		}
		args := pod.Spec.Containers[0].Args
		if !slices.Contains(args, "--custom-platform=linux/arm/v7") || !slices.Contains(args, "--push-by-digest") {
			t.Errorf("native %v: args %v lack --custom-platform=linux/arm/v7 --push-by-digest", native, args)
		}
		rest := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--custom-platform=linux/arm/v7" || a == "--push-by-digest" })
		if diff := cmp.Diff(single.Spec.Containers[0].Args, rest); diff != "" {
			t.Errorf("native %v: the other args differ from a single pod's (-single +platform)\n%s", native, diff)
		}
		if diff := cmp.Diff(single.Spec.SecurityContext, pod.Spec.SecurityContext); diff != "" {
			t.Errorf("native %v: pod securityContext differs (-single +platform)\n%s", native, diff)
		}
		for i := range single.Spec.Containers {
			if diff := cmp.Diff(single.Spec.Containers[i].SecurityContext, pod.Spec.Containers[i].SecurityContext); diff != "" {
				t.Errorf("native %v: container securityContext differs (-single +platform)\n%s", native, diff)
			}
		}
		if diff := cmp.Diff(single.Spec.InitContainers, pod.Spec.InitContainers); diff != "" {
			t.Errorf("native %v: init containers differ (-single +platform)\n%s", native, diff)
		}
		if c := pod.Spec.Containers[0].SecurityContext; c.Privileged == nil || *c.Privileged || pod.Spec.AutomountServiceAccountToken == nil ||
			*pod.Spec.AutomountServiceAccountToken || len(pod.Spec.Volumes) != len(single.Spec.Volumes) {
			t.Errorf("native %v: the pod is privileged, mounts a token, or has other volumes", native)
		}
	}
}

func TestSlotState_free(t *testing.T) {
	for _, tc := range []struct {
		st   slotState
		want bool
	}{
		{slotState{limit: 0, need: 8}, true},
		{slotState{limit: 4, running: 2, need: 2}, true},
		{slotState{limit: 4, running: 3, need: 2}, false},
		{slotState{limit: 4, running: 1, olderSlots: 2, need: 2}, false},
		{slotState{limit: 4, running: 1, olderSlots: 2, need: 1}, true},
		{slotState{limit: 4, running: 3}, true}, // need 0 is 1
	} {
		if got := tc.st.free(); got != tc.want {
			t.Errorf("%+v.free() = %v, want %v", tc.st, got, tc.want)
		}
	}
	ib := makeImageBuild("app", "ns").Obj()
	ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64", "linux/s390x"}
	if n := slotsNeeded(ib, 2); n != 2 {
		t.Errorf("slotsNeeded(3 platforms, limit 2) = %d, want 2 (it starts when every slot is free)", n)
	}
	if n := slotsNeeded(ib, 0); n != 3 {
		t.Errorf("slotsNeeded(3 platforms, no limit) = %d, want 3", n)
	}
}

// createNodes creates nodes (cluster-wide objects), sets their status and their taints (the
// API server taints a new node not-ready, which the node lifecycle controller, absent here,
// lifts once it is Ready); they are deleted when the test ends. Tests place their builds
// with a node selector of their own, so other tests' nodes do not matter.
func createNodes(t *testing.T, c client.Client, nodes ...corev1.Node) {
	t.Helper()
	ctx := context.Background()
	for i := range nodes {
		n := nodes[i].DeepCopy()
		status, taints := n.Status, n.Spec.Taints
		if err := c.Create(ctx, n); err != nil {
			t.Fatalf("creating node %s: %v", n.Name, err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), n) })
		n.Status = status
		if err := c.Status().Update(ctx, n); err != nil {
			t.Fatalf("setting the status of node %s: %v", n.Name, err)
		}
		n.Spec.Taints = taints
		if err := c.Update(ctx, n); err != nil {
			t.Fatalf("setting the taints of node %s: %v", n.Name, err)
		}
	}
}

// Placement on a cluster of amd64 and arm64 nodes: each platform's pod selects its
// architecture; a platform without a node runs under emulation only when the spec asks for it,
// and otherwise the build fails before any pod exists, naming the platform and both fixes.
func TestImageBuildReconciler_Reconcile_platformPlacement(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	pool := map[string]string{"slipway-test/pool": ns}
	createNodes(t, c, makeNode(ns+"-amd", "amd64", false, pool), makeNode(ns+"-arm", "arm64", false, pool),
		makeNode(ns+"-s390x", "s390x", true, pool))
	startManager(t, ns, Options{})
	platformsOf := func(ps ...string) func(*v1alpha1.ImageBuild) {
		return func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Platforms = ps
			ib.Spec.NodeSelector = pool
		}
	}

	native := newImageBuild(t, c, ns, "native", platformsOf("linux/amd64", "linux/arm64"))
	waitStatus(t, c, native, "pods created", conditionIs("Ready", metav1.ConditionFalse, v1alpha1.ReasonPodCreated))
	for _, p := range []struct{ pod, arch string }{{"native-1-1-linux-amd64", "amd64"}, {"native-1-1-linux-arm64", "arm64"}} {
		pod := waitPod(t, c, ns, p.pod)
		want := map[string]string{"slipway-test/pool": ns, corev1.LabelOSStable: "linux", corev1.LabelArchStable: p.arch}
		if diff := cmp.Diff(want, pod.Spec.NodeSelector); diff != "" {
			t.Errorf("%s nodeSelector (-want +got)\n%s", p.pod, diff)
		}
	}
	ib := waitStatus(t, c, native, "two platforms pending", func(ib *v1alpha1.ImageBuild) bool { return len(ib.Status.Platforms) == 2 })
	for i, ps := range ib.Status.Platforms {
		if ps.Emulated || ps.Phase != v1alpha1.PhasePending || ps.Platform != ib.Spec.Platforms[i] {
			t.Errorf("status.platforms[%d] = %+v, want %s Pending, not emulated", i, ps, ib.Spec.Platforms[i])
		}
	}
	if ib.Status.PodName != "" || ib.Status.Phase != v1alpha1.PhasePending {
		t.Errorf("status: %s; want Pending without a single podName", describe(ib))
	}

	emulated := newImageBuild(t, c, ns, "emulated", platformsOf("linux/amd64", "linux/s390x"), func(ib *v1alpha1.ImageBuild) { ib.Spec.Emulation = true })
	amd := waitPod(t, c, ns, "emulated-1-1-linux-amd64")
	s390 := waitPod(t, c, ns, "emulated-1-1-linux-s390x")
	if _, ok := s390.Spec.NodeSelector[corev1.LabelArchStable]; ok || s390.Spec.NodeSelector[corev1.LabelOSStable] != "linux" {
		t.Errorf("emulated pod's nodeSelector = %v, want kubernetes.io/os and no architecture", s390.Spec.NodeSelector)
	}
	if amd.Spec.NodeSelector[corev1.LabelArchStable] != "amd64" {
		t.Errorf("the amd64 pod of an emulated build: nodeSelector %v, want its architecture (a node has it)", amd.Spec.NodeSelector)
	}
	if diff := cmp.Diff(amd.Spec.Containers[0].SecurityContext, s390.Spec.Containers[0].SecurityContext); diff != "" {
		t.Errorf("the emulated pod's securityContext differs (-native +emulated)\n%s", diff)
	}
	ib = waitStatus(t, c, emulated, "platforms", func(ib *v1alpha1.ImageBuild) bool { return len(ib.Status.Platforms) == 2 })
	if ib.Status.Platforms[0].Emulated || !ib.Status.Platforms[1].Emulated {
		t.Errorf("status.platforms = %+v, want linux/s390x emulated only", ib.Status.Platforms)
	}

	refused := newImageBuild(t, c, ns, "refused", platformsOf("linux/amd64", "linux/s390x"))
	ib = waitStatus(t, c, refused, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonNoNodeForPlatform))
	msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message
	for _, want := range []string{"platform linux/s390x", "kubernetes.io/arch=s390x", "add a node of that architecture", "spec.emulation: true"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Failure.Reason != v1alpha1.ReasonNoNodeForPlatform {
		t.Errorf("status: %s", describe(ib))
	}
	time.Sleep(500 * time.Millisecond)
	for _, n := range podNames(t, c, ns) {
		if strings.HasPrefix(n, "refused-") {
			t.Errorf("pod %s exists for a build that no node can run", n)
		}
	}
}

// pushPlatformImage pushes a small image whose configuration names platform to repo by digest
// only, as an executor run with --custom-platform and --push-by-digest does, and returns its
// digest.
func pushPlatformImage(t *testing.T, reg *testenv.Registry, repo, platform string) string {
	t.Helper()
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	os, arch, variant := splitPlatform(platform)
	cf.OS, cf.Architecture, cf.Variant = os, arch, variant
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewDigest(repo + "@" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return d.String()
}

// platformResult is what an executor run for one platform with --push-by-digest reports.
func platformResult(repo, digest string, hits, misses int) string {
	return encodeResult(result.Result{Success: true, Digest: digest, References: []string{repo + "@" + digest},
		Commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904", CacheHits: hits, CacheMisses: misses,
		Bases: []result.Base{{Ref: "docker.io/library/busybox:1.36", Digest: testDigest}}})
}

// pushSecret creates Secret name in ns holding user and password for reg.
func pushSecret(t *testing.T, c client.Client, ns, name string, reg *testenv.Registry, user, password string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		StringData: map[string]string{".dockerconfigjson": `{"auths":{"` + reg.Host() + `":{"auth":"` + auth + `"}}}`}}); err != nil {
		t.Fatal(err)
	}
}

// A two-platform build against a registry that requires credentials: each pod's result names
// its image pushed by digest; the manager reads them back with the push Secret of the
// ImageBuild's namespace and pushes one index under the output tag and the additional tag.
// Neither the password nor the encoded credentials appear in the status or the events.
func TestImageBuildReconciler_Reconcile_platformIndex(t *testing.T) {
	const user, password = "pusher", "index-Passw0rd-42"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	repo := reg.Ref("team/app")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	pushSecret(t, c, ns, "push", reg, user, password)

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns} // no node: both emulated
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1", AdditionalTags: []string{"stable"},
			PushSecretRef: &corev1.LocalObjectReference{Name: "push"}}
	})
	amd := pushPlatformImage(t, reg, repo, "linux/amd64")
	arm := pushPlatformImage(t, reg, repo, "linux/arm64")

	k.run(ns, "app-1-1-linux-amd64")
	k.run(ns, "app-1-1-linux-arm64")
	waitStatus(t, c, key, "Running", phaseIs(v1alpha1.PhaseRunning))
	k.finish(ns, "app-1-1-linux-amd64", 0, "Completed", platformResult(repo, amd, 3, 1))
	ib := waitStatus(t, c, key, "amd64 done", func(ib *v1alpha1.ImageBuild) bool {
		return len(ib.Status.Platforms) == 2 && ib.Status.Platforms[0].Phase == v1alpha1.PhaseSucceeded
	})
	if ib.Status.Phase != v1alpha1.PhaseRunning {
		t.Errorf("with one platform of two done: %s, want Running", describe(ib))
	}
	tag, _ := name.NewTag(repo + ":v1")
	if _, err := remote.Head(tag, remote.WithAuth(reg.Auth())); err == nil {
		t.Error("the tag exists before every platform has succeeded")
	}
	k.finish(ns, "app-1-1-linux-arm64", 0, "Completed", platformResult(repo, arm, 1, 3))
	ib = waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))

	// The tags name the index the status names, and the index names both images.
	st := ib.Status
	for _, tag := range []string{"v1", "stable"} {
		ref, _ := name.NewTag(repo + ":" + tag)
		idx, err := remote.Index(ref, remote.WithAuth(reg.Auth()))
		if err != nil {
			t.Fatalf("reading %s: %v", ref, err)
		}
		d, _ := idx.Digest()
		mt, _ := idx.MediaType()
		if st.Image == nil || d.String() != st.Image.Digest || mt != types.DockerManifestList {
			t.Errorf("%s is %s (%s); status.image = %+v", ref, d, mt, st.Image)
		}
		im, _ := idx.IndexManifest()
		var got []string
		for _, m := range im.Manifests {
			got = append(got, m.Platform.String()+"@"+m.Digest.String())
		}
		if diff := cmp.Diff([]string{"linux/amd64@" + amd, "linux/arm64@" + arm}, got); diff != "" {
			t.Errorf("%s manifests (-want +got)\n%s", ref, diff)
		}
	}
	wantRefs := []string{repo + ":v1@" + st.Image.Digest, repo + ":stable@" + st.Image.Digest}
	if diff := cmp.Diff(wantRefs, st.Image.References); diff != "" {
		t.Errorf("status.image.references (-want +got)\n%s", diff)
	}
	if st.Image.ShortDigest != shortDigest(st.Image.Digest) || st.Cache == nil || st.Cache.Hits != 4 || st.Cache.Misses != 4 ||
		st.Source == nil || st.Source.Commit == "" || len(st.BaseImages) != 1 || st.Duration == "" || st.CompletionTime == nil {
		t.Errorf("status after the index: image %+v cache %+v source %+v bases %+v duration %q", st.Image, st.Cache, st.Source, st.BaseImages, st.Duration)
	}
	for i, want := range []struct {
		digest       string
		hits, misses int32
	}{{amd, 3, 1}, {arm, 1, 3}} {
		ps := st.Platforms[i]
		if ps.Phase != v1alpha1.PhaseSucceeded || ps.Digest != want.digest || ps.Cache == nil || ps.Cache.Hits != want.hits ||
			ps.Cache.Misses != want.misses || ps.Duration == "" || !ps.Emulated || ps.Failure != nil {
			t.Errorf("status.platforms[%d] = %+v", i, ps)
		}
	}
	if apimeta.FindStatusCondition(st.Conditions, "Reconciling") != nil {
		t.Errorf("Reconciling left after success: %s", describe(ib))
	}
	if h := st.History[0]; h.Result != v1alpha1.BuildResultSucceeded || h.Digest != st.Image.Digest {
		t.Errorf("history[0] = %+v, want Succeeded with the index digest", h)
	}
	msg := apimeta.FindStatusCondition(st.Conditions, "Ready").Message
	if !strings.Contains(msg, st.Image.Digest) || !strings.Contains(msg, "linux/amd64, linux/arm64") {
		t.Errorf("Ready message %q names neither the index nor the platforms", msg)
	}

	// kubectl get -o wide: the index's digest, and the platforms.
	if got := tableCell(t, ns, "app", "Digest"); got != st.Image.ShortDigest {
		t.Errorf("DIGEST column = %v, want %s", got, st.Image.ShortDigest)
	}
	if got := tableCell(t, ns, "app", "Platforms"); got != `["linux/amd64","linux/arm64"]` {
		t.Errorf("PLATFORMS column = %v", got)
	}

	// The Secret's password, in clear or encoded as the Secret holds it, is nowhere to read.
	waitEvent(t, c, ns, "Succeeded")
	noCredentials(t, c, ns, key, password, base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

// waitEvent waits for an event of reason in ns and returns the events.
func waitEvent(t *testing.T, c client.Client, ns, reason string) []eventsv1.Event {
	t.Helper()
	var evs eventsv1.EventList
	eventually(t, 10*time.Second, "a "+reason+" event", func() (bool, string) {
		if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason)
			if e.Reason == reason {
				return true, ""
			}
		}
		return false, fmt.Sprint(seen)
	})
	return evs.Items
}

// noCredentials fails the test when any secret string shows in the ImageBuild (its status
// above all) or the events of ns.
func noCredentials(t *testing.T, c client.Client, ns string, key client.ObjectKey, secrets ...string) {
	t.Helper()
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	var evs eventsv1.EventList
	if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]any{"the ImageBuild": ib, "the events": evs.Items} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s show a credential (%q)", what, s)
			}
		}
	}
}

// The index is pushed with the push Secret of the ImageBuild's own namespace, never a Secret
// of the same name elsewhere: a namespace whose Secret holds wrong credentials gets a
// PushFailed build and no tag, although another namespace's "push" Secret would work. The
// wrong password shows nowhere either.
func TestImageBuildReconciler_Reconcile_platformIndexOwnSecretOnly(t *testing.T) {
	const user, password = "pusher", "right-Passw0rd"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	repo := reg.Ref("team/other")
	c := startEnv(t)
	victim := newNamespace(t, c, nil)
	pushSecret(t, c, victim, "push", reg, user, password)
	ns := newNamespace(t, c, nil)
	const wrong = "guessed-Passw0rd"
	pushSecret(t, c, ns, "push", reg, user, wrong)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
		ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](0)}
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1", PushSecretRef: &corev1.LocalObjectReference{Name: "push"}}
	})
	// The images exist (pushed with the right credentials, as if another build had).
	amd := pushPlatformImage(t, reg, repo, "linux/amd64")
	arm := pushPlatformImage(t, reg, repo, "linux/arm64")
	k.finish(ns, "app-1-1-linux-amd64", 0, "Completed", platformResult(repo, amd, 0, 2))
	k.finish(ns, "app-1-1-linux-arm64", 0, "Completed", platformResult(repo, arm, 0, 2))
	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, string(result.ReasonPushFailed)))
	if f := ib.Status.Failure; f == nil || !strings.Contains(f.Message, "refused the credentials") {
		t.Errorf("failure = %+v, want the registry's refusal of the credentials", f)
	}
	ref, _ := name.NewTag(repo + ":v1")
	if _, err := remote.Head(ref, remote.WithAuth(reg.Auth())); err == nil {
		t.Error("the tag was pushed")
	}
	noCredentials(t, c, ns, key, wrong, password, base64.StdEncoding.EncodeToString([]byte(user+":"+wrong)))
}

// One platform that fails fails the build with its reason, naming the platform; the other
// platform's pod is stopped and no tag is pushed; a per-platform event says which failed.
func TestImageBuildReconciler_Reconcile_platformFails(t *testing.T) {
	reg := testenv.StartRegistry(t)
	repo := reg.Ref("team/app")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1"}
	})
	amd := pushPlatformImage(t, reg, repo, "linux/amd64")
	k.finish(ns, "app-1-1-linux-amd64", 0, "Completed", platformResult(repo, amd, 1, 1))
	k.run(ns, "app-1-1-linux-arm-v7")
	k.run(ns, "app-1-1-linux-arm64")
	k.finish(ns, "app-1-1-linux-arm64", 1, "Error", encodeResult(result.Result{Failure: &result.Failure{
		Reason: result.ReasonRunFailed, Message: "/bin/sh -c make exited with 2", Line: 4, Instruction: "RUN make", ExitCode: 2}}))

	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, string(result.ReasonRunFailed)))
	f := ib.Status.Failure
	if ib.Status.Phase != v1alpha1.PhaseFailed || f == nil || f.Line != 4 || f.Pod != "app-1-1-linux-arm64" ||
		!strings.HasPrefix(f.Message, "Platform linux/arm64: ") || f.ExitCode != 2 {
		t.Errorf("failure = %+v, want RunFailed of linux/arm64 at line 4", f)
	}
	want := []struct {
		phase  v1alpha1.BuildPhase
		reason string
	}{{v1alpha1.PhaseSucceeded, ""}, {v1alpha1.PhaseFailed, "RunFailed"}, {v1alpha1.PhaseFailed, "PodDeleted"}}
	for i, w := range want {
		ps := ib.Status.Platforms[i]
		reason := ""
		if ps.Failure != nil {
			reason = ps.Failure.Reason
		}
		if ps.Phase != w.phase || reason != w.reason {
			t.Errorf("status.platforms[%d] = %s %s, want %s %s", i, ps.Phase, reason, w.phase, w.reason)
		}
	}
	waitPodGone(t, c, ns, "app-1-1-linux-arm-v7")
	tag, _ := name.NewTag(repo + ":v1")
	if _, err := remote.Head(tag); err == nil {
		t.Error("the tag was pushed although a platform failed")
	}
	eventually(t, 10*time.Second, "the build's RunFailed event and linux/arm64's, related to its pod", func() (bool, string) {
		var evs eventsv1.EventList
		if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var notes []string
		platform, build := false, false
		for _, e := range evs.Items {
			onPod := e.Related != nil && e.Related.Name == "app-1-1-linux-arm64"
			platform = platform || e.Reason == "RunFailed" && e.Action == "BuildPlatform" && onPod &&
				strings.HasPrefix(e.Note, "Platform linux/arm64 failed: Dockerfile line 4:")
			build = build || e.Reason == "RunFailed" && e.Action == "Build" && strings.HasPrefix(e.Note, "Platform linux/arm64: ")
			notes = append(notes, e.Reason+"/"+e.Action+": "+e.Note)
		}
		return platform && build, strings.Join(notes, " | ")
	})
	time.Sleep(500 * time.Millisecond)
	for _, n := range podNames(t, c, ns) {
		if strings.HasPrefix(n, "app-1-2") {
			t.Errorf("pod %s: a RUN failure was retried", n)
		}
	}
}

// A lost platform pod is retried as any lost pod is: the whole attempt again, every platform
// in a new pod, once the pods of the failed attempt are gone.
func TestImageBuildReconciler_Reconcile_platformRetry(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{MaxRetries: ptr.To[int32](1)})
	k := kubelet{t, c}
	ctx := context.Background()

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
	})
	k.run(ns, "app-1-1-linux-amd64")
	k.run(ns, "app-1-1-linux-arm64")
	if err := c.Delete(ctx, waitPod(t, c, ns, "app-1-1-linux-arm64")); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "app-1-2-linux-amd64")
	waitPod(t, c, ns, "app-1-2-linux-arm64")
	waitPodGone(t, c, ns, "app-1-1-linux-amd64")
	ib := waitStatus(t, c, key, "attempt 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.Attempt == 2 && len(ib.Status.Platforms) == 2 })
	if ib.Status.Retries != 1 || ib.Status.Failure == nil || ib.Status.Failure.Reason != v1alpha1.ReasonPodDeleted ||
		!strings.Contains(ib.Status.Failure.Message, "linux/arm64") {
		t.Errorf("after the retry: %s failure %+v", describe(ib), ib.Status.Failure)
	}
	for _, ps := range ib.Status.Platforms {
		if ps.Phase != v1alpha1.PhasePending || !strings.HasPrefix(ps.PodName, "app-1-2-") {
			t.Errorf("status.platforms: %+v, want pending pods of attempt 2", ps)
		}
	}
}

// Each platform's pod takes a build slot: a two-platform build waits until two are free, and
// a younger build does not take one before it.
func TestImageBuildReconciler_Reconcile_platformSlots(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{MaxConcurrentBuilds: 2})
	k := kubelet{t, c}

	single := newImageBuild(t, c, ns, "a")
	waitPod(t, c, ns, "a-1-1")
	multi := newImageBuild(t, c, ns, "b", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
	})
	ib := waitStatus(t, c, multi, "b queued", phaseIs(v1alpha1.PhaseQueued))
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.Contains(msg, "Waiting for 2 build slots") {
		t.Errorf("Ready message = %q, want it to wait for 2 slots", msg)
	}
	time.Sleep(time.Second) // same creation second or not, c is younger than b
	younger := newImageBuild(t, c, ns, "c")
	waitStatus(t, c, younger, "c queued behind b", phaseIs(v1alpha1.PhaseQueued))

	k.finish(ns, "a-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, single, "a done", phaseIs(v1alpha1.PhaseSucceeded))
	waitPod(t, c, ns, "b-1-1-linux-amd64")
	waitPod(t, c, ns, "b-1-1-linux-arm64")
	waitStatus(t, c, multi, "b pending", phaseIs(v1alpha1.PhasePending))
	time.Sleep(500 * time.Millisecond)
	if got := waitStatus(t, c, younger, "c still queued", phaseIs(v1alpha1.PhaseQueued)); got.Status.PodName != "" {
		t.Errorf("c started while b's two pods take both slots: %s", describe(got))
	}
	k.finish(ns, "b-1-1-linux-amd64", 1, "Error", encodeResult(result.Result{Failure: &result.Failure{Reason: result.ReasonDockerfileInvalid, Message: "x"}}))
	waitPod(t, c, ns, "c-1-1")
}

// The API server refuses what spec.platforms cannot be.
func TestImageBuild_validationPlatforms(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	nine := []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386", "linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/mips64le"}
	tests := []struct {
		name   string
		mutate func(*v1alpha1.ImageBuild)
		want   string
	}{
		{"a platform of another OS", func(ib *v1alpha1.ImageBuild) { ib.Spec.Platforms = []string{"windows/amd64"} }, "only linux platforms"},
		{"upper case", func(ib *v1alpha1.ImageBuild) { ib.Spec.Platforms = []string{"linux/AMD64"} }, "spec.platforms[0]"},
		{"no architecture", func(ib *v1alpha1.ImageBuild) { ib.Spec.Platforms = []string{"linux"} }, "spec.platforms[0]"},
		{"too deep", func(ib *v1alpha1.ImageBuild) { ib.Spec.Platforms = []string{"linux/arm/v7/x"} }, "spec.platforms[0]"},
		{"twice", func(ib *v1alpha1.ImageBuild) { ib.Spec.Platforms = []string{"linux/amd64", "linux/amd64"} }, "spec.platforms[1]: Duplicate"},
		{"more than 8", func(ib *v1alpha1.ImageBuild) { ib.Spec.Platforms = nine }, "spec.platforms"},
		{"an architecture in nodeSelector", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Platforms = []string{"linux/arm64"}
			ib.Spec.NodeSelector = map[string]string{corev1.LabelArchStable: "amd64"}
		}, "nodeSelector cannot set kubernetes.io/arch"},
		{"runPolicy Parallel", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Platforms = []string{"linux/arm64"}
			ib.Spec.RunPolicy = v1alpha1.RunPolicyParallel
		}, "runPolicy Parallel is not supported with platforms"},
		{"emulation without platforms", func(ib *v1alpha1.ImageBuild) { ib.Spec.Emulation = true }, "emulation applies to platforms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := &v1alpha1.ImageBuild{
				ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns},
				Spec: v1alpha1.ImageBuildSpec{
					Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
					Output: v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
				},
			}
			tc.mutate(ib)
			err := c.Create(context.Background(), ib)
			if err == nil {
				_ = c.Delete(context.Background(), ib)
				t.Fatal("the API server accepted the ImageBuild")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %s", err, tc.want)
			}
		})
	}
	ok := &v1alpha1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "good", Namespace: ns},
		Spec: v1alpha1.ImageBuildSpec{
			Source:    v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
			Output:    v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
			Platforms: nine[:8], Emulation: true, NodeSelector: map[string]string{"pool": "builders"},
			RunPolicy: v1alpha1.RunPolicySerialLatestOnly,
		},
	}
	if err := c.Create(context.Background(), ok); err != nil {
		t.Fatalf("creating a valid ImageBuild with 8 platforms: %v", err)
	}
}

// What the pods report is checked before the index is pushed: platforms that built different
// commits fail the build (RevisionMoved, retried by the policy: here none), and an executor
// that reports another platform's image for its own (spec.executorImage is the spec's to
// choose) fails it with IndexInvalid, not retried; neither pushes a tag.
func TestImageBuildReconciler_Reconcile_platformResultsChecked(t *testing.T) {
	reg := testenv.StartRegistry(t)
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	build := func(name string) (client.ObjectKey, string) {
		repo := reg.Ref("team/" + name)
		return newImageBuild(t, c, ns, name, func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
			ib.Spec.Emulation = true
			ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
			ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](0)}
			ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1"}
		}), repo
	}
	noTag := func(repo string) {
		t.Helper()
		tag, _ := name.NewTag(repo + ":v1")
		if _, err := remote.Head(tag); err == nil {
			t.Errorf("%s was pushed", tag)
		}
	}

	moved, repo := build("moved")
	amd := pushPlatformImage(t, reg, repo, "linux/amd64")
	arm := pushPlatformImage(t, reg, repo, "linux/arm64")
	k.finish(ns, "moved-1-1-linux-amd64", 0, "Completed", platformResult(repo, amd, 0, 1))
	k.finish(ns, "moved-1-1-linux-arm64", 0, "Completed", encodeResult(result.Result{Success: true, Digest: arm,
		Commit: "1111111111111111111111111111111111111111"}))
	ib := waitStatus(t, c, moved, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonRevisionMoved))
	if msg := ib.Status.Failure.Message; !strings.Contains(msg, "linux/amd64: 4b825dc642cb") || !strings.Contains(msg, "linux/arm64: 111111111111") {
		t.Errorf("failure message %q does not name both platforms' commits", msg)
	}
	noTag(repo)

	liar, repo := build("liar")
	amd = pushPlatformImage(t, reg, repo, "linux/amd64")
	k.finish(ns, "liar-1-1-linux-amd64", 0, "Completed", platformResult(repo, amd, 0, 1))
	k.finish(ns, "liar-1-1-linux-arm64", 0, "Completed", platformResult(repo, amd, 0, 1))
	ib = waitStatus(t, c, liar, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonIndexInvalid))
	if msg := ib.Status.Failure.Message; !strings.Contains(msg, "is for linux/amd64, not linux/arm64") {
		t.Errorf("failure message %q does not say the image is of another platform", msg)
	}
	noTag(repo)
}

// The publisher tries a step that may succeed again (3 tries, doubling waits), not one the
// images cannot make, and a job that a newer build replaced says nothing when it ends.
func TestPublisher(t *testing.T) {
	key := client.ObjectKey{Namespace: "ns", Name: "app"}
	start := func(errs ...error) (*publisher, *int, chan client.ObjectKey) {
		notified := make(chan client.ObjectKey, 10)
		a := newPublisher(func(k client.ObjectKey) { notified <- k })
		a.wait = time.Millisecond
		calls := 0
		a.assemble = func(ctx context.Context, req imageindex.Request) (imageindex.Result, error) {
			calls++
			if calls <= len(errs) && errs[calls-1] != nil {
				return imageindex.Result{}, errs[calls-1]
			}
			return imageindex.Result{Digest: testDigest}, nil
		}
		t.Cleanup(a.cancel)
		return a, &calls, notified
	}
	wait := func(a *publisher, notified chan client.ObjectKey, id string) publishJob {
		t.Helper()
		select {
		case <-notified:
		case <-time.After(10 * time.Second):
			t.Fatal("no notification")
		}
		j, ok := a.job(key, id)
		if !ok || !j.done {
			t.Fatalf("job %s: %+v, %v; want done", id, j, ok)
		}
		return j
	}
	index := func(repo string) publishRequest { return publishRequest{index: &imageindex.Request{Repository: repo}} }

	a, calls, notified := start(errors.New("connection reset"), errors.New("502"))
	a.start(key, "1", index(""))
	if j := wait(a, notified, "1"); j.err != nil || j.res.index.Digest != testDigest || *calls != 3 {
		t.Errorf("after two transient errors: %+v in %d calls, want success in 3", j, *calls)
	}

	a, calls, notified = start(errors.New("a"), errors.New("b"), errors.New("c"), errors.New("d"))
	a.start(key, "1", index(""))
	if j := wait(a, notified, "1"); j.err == nil || *calls != 3 {
		t.Errorf("always failing: %+v in %d calls, want the error after 3", j, *calls)
	}

	a, calls, notified = start(&imageindex.InvalidError{})
	a.start(key, "1", index(""))
	if j := wait(a, notified, "1"); j.err == nil || *calls != 1 {
		t.Errorf("invalid: %+v in %d calls, want the error at once", j, *calls)
	} else if f := publishFailure(j.err); f.Reason != v1alpha1.ReasonIndexInvalid {
		t.Errorf("invalid index: failure %+v, want IndexInvalid", f)
	}

	// The signing step follows the index, with the index's digest, and is tried again as
	// the index is; an invalid attestation is not.
	a, calls, notified = start()
	var signed []string
	signErrs := []error{errors.New("connection reset"), nil}
	a.sign = func(ctx context.Context, j *imagesign.Job) (imagesign.Result, error) {
		signed = append(signed, j.Digest)
		if err := signErrs[len(signed)-1]; err != nil {
			return imagesign.Result{}, err
		}
		return imagesign.Result{Signature: "sha256:sig"}, nil
	}
	a.start(key, "1", publishRequest{index: &imageindex.Request{}, sign: &imagesign.Request{}})
	if j := wait(a, notified, "1"); j.err != nil || j.res.signed.Signature != "sha256:sig" || *calls != 1 ||
		!slices.Equal(signed, []string{testDigest, testDigest}) {
		t.Errorf("index and signing: %+v; index calls %d, signed %v", j, *calls, signed)
	}
	signed, signErrs = nil, []error{&imagesign.InvalidError{}}
	a.start(key, "2", publishRequest{sign: &imagesign.Request{Digest: testDigest}})
	if j := wait(a, notified, "2"); j.err == nil || len(signed) != 1 {
		t.Errorf("invalid attestation: %+v in %d calls, want the error at once", j, len(signed))
	} else if f := publishFailure(j.err); f.Reason != v1alpha1.ReasonAttestationInvalid {
		t.Errorf("invalid attestation: failure %+v, want AttestationInvalid", f)
	}

	// A job replaced by a newer build's is cancelled and never reported.
	a, _, notified = start()
	started, block := make(chan struct{}), make(chan struct{})
	a.assemble = func(ctx context.Context, req imageindex.Request) (imageindex.Result, error) {
		if req.Repository == "old" {
			close(started)
			<-ctx.Done()
			close(block)
			return imageindex.Result{}, ctx.Err()
		}
		return imageindex.Result{Digest: testDigest}, nil
	}
	a.start(key, "1", index("old"))
	<-started
	a.start(key, "2", index("new"))
	if j := wait(a, notified, "2"); j.err != nil {
		t.Errorf("the newer job: %+v", j)
	}
	<-block
	if _, ok := a.job(key, "1"); ok {
		t.Error("the replaced job is still there")
	}
	select {
	case k := <-notified:
		t.Errorf("the replaced job notified %v", k)
	case <-time.After(100 * time.Millisecond):
	}
}
