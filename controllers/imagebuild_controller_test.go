package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// newImageBuild creates an ImageBuild in ns, as kubectl apply would (defaults from the CRD).
func newImageBuild(t *testing.T, c client.Client, ns, name string, mutate ...func(*v1alpha1.ImageBuild)) client.ObjectKey {
	t.Helper()
	ib := &v1alpha1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ImageBuildSpec{
			Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git", Revision: "main"}},
			Output: v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
		},
	}
	for _, m := range mutate {
		m(ib)
	}
	if err := c.Create(context.Background(), ib); err != nil {
		t.Fatalf("creating ImageBuild %s: %v", name, err)
	}
	return client.ObjectKeyFromObject(ib)
}

func succeededResult() string {
	return encodeResult(result.Result{
		Success: true, Digest: testDigest,
		References: []string{"registry.example.com/org/app:v1@" + testDigest},
		Commit:     "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
		Stages:     []result.Stage{{Name: "0", Instructions: 3, CacheHits: 2, Millis: 900}},
		CacheHits:  2, CacheMisses: 1,
	})
}

func phaseIs(p v1alpha1.BuildPhase) func(*v1alpha1.ImageBuild) bool {
	return func(ib *v1alpha1.ImageBuild) bool { return ib.Status.Phase == p }
}

func conditionIs(typ string, s metav1.ConditionStatus, reason string) func(*v1alpha1.ImageBuild) bool {
	return func(ib *v1alpha1.ImageBuild) bool {
		c := apimeta.FindStatusCondition(ib.Status.Conditions, typ)
		return c != nil && c.Status == s && c.Reason == reason && c.ObservedGeneration == ib.Generation
	}
}

func TestImageBuildReconciler_Reconcile_succeeds(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	ib := waitStatus(t, c, key, "Pending with a pod", conditionIs("Reconciling", metav1.ConditionTrue, "PodCreated"))
	if ib.Status.PodName != "app-1-1" || ib.Status.Phase != v1alpha1.PhasePending {
		t.Fatalf("status after creation: %s", describe(ib))
	}
	pod := waitPod(t, c, ns, "app-1-1")
	if !metav1.IsControlledBy(pod, ib) {
		t.Errorf("pod %s is not controlled by the ImageBuild: %v", pod.Name, pod.OwnerReferences)
	}
	if got := pod.Spec.ActiveDeadlineSeconds; got == nil || *got != 3600 {
		t.Errorf("activeDeadlineSeconds = %v, want 3600 (the CRD's default timeout)", got)
	}

	k.run(ns, "app-1-1")
	waitStatus(t, c, key, "Running", phaseIs(v1alpha1.PhaseRunning))

	k.finish(ns, "app-1-1", 0, "Completed", succeededResult())
	ib = waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
	st := ib.Status
	if st.Phase != v1alpha1.PhaseSucceeded || st.Image == nil || st.Image.Digest != testDigest || st.Image.ShortDigest != "0123456789ab" ||
		st.Source == nil || st.Source.Commit == "" || st.Cache == nil || st.Cache.Hits != 2 || st.Duration == "" ||
		len(st.Stages) != 1 || st.CompletionTime == nil {
		t.Errorf("status after success: %+v", st)
	}
	if apimeta.FindStatusCondition(st.Conditions, "Reconciling") != nil || apimeta.FindStatusCondition(st.Conditions, "Stalled") != nil {
		t.Errorf("Reconciling or Stalled left after success: %s", describe(ib))
	}

	// Events are emitted after the status write: the Succeeded one names the ImageBuild.
	eventually(t, 10*time.Second, "a Succeeded event", func() (bool, string) {
		var evs eventsv1.EventList
		if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason)
			if e.Reason == "Succeeded" && e.Regarding.Name == "app" && e.Regarding.Kind == "ImageBuild" {
				return true, ""
			}
		}
		return false, fmt.Sprint(seen)
	})
}

func TestImageBuildReconciler_Reconcile_buildFailureIsNotRetried(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	k.finish(ns, "app-1-1", 1, "Error", encodeResult(result.Result{Failure: &result.Failure{
		Reason: result.ReasonDockerfileInvalid, Message: "unknown instruction: FORM", Line: 2, Instruction: "FORM busybox"}}))
	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "DockerfileInvalid"))
	f := ib.Status.Failure
	if ib.Status.Phase != v1alpha1.PhaseFailed || f == nil || f.Line != 2 || f.Pod != "app-1-1" || f.Container != "executor" {
		t.Fatalf("status after a Dockerfile error: %s failure=%+v", describe(ib), f)
	}
	if c := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionFalse ||
		!strings.Contains(c.Message, "line 2") {
		t.Errorf("Ready = %+v, want False naming line 2", c)
	}
	time.Sleep(time.Second)
	if names := podNames(t, c, ns); len(names) != 1 {
		t.Errorf("pods after a Dockerfile error = %v, want only app-1-1", names)
	}
}

func TestImageBuildReconciler_Reconcile_oomKilledAndTimeout(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	oom := newImageBuild(t, c, ns, "oom")
	k.run(ns, "oom-1-1")
	k.finish(ns, "oom-1-1", 137, "OOMKilled", "")
	waitStatus(t, c, oom, "OOMKilled", conditionIs("Ready", metav1.ConditionFalse, "OOMKilled"))

	slow := newImageBuild(t, c, ns, "slow", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Timeout = &metav1.Duration{Duration: 90 * time.Second}
	})
	pod := waitPod(t, c, ns, "slow-1-1")
	if got := pod.Spec.ActiveDeadlineSeconds; got == nil || *got != 90 {
		t.Errorf("activeDeadlineSeconds = %v, want 90", got)
	}
	k.run(ns, "slow-1-1")
	k.update(ns, "slow-1-1", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.Reason = "DeadlineExceeded"
		s.Message = "Pod was active on the node longer than the specified deadline"
	})
	ib := waitStatus(t, c, slow, "Timeout", conditionIs("Stalled", metav1.ConditionTrue, "Timeout"))
	if ib.Status.Phase != v1alpha1.PhaseFailed {
		t.Errorf("status after the deadline: %s", describe(ib))
	}
	time.Sleep(time.Second)
	if names := podNames(t, c, ns); len(names) != 2 {
		t.Errorf("pods = %v, want oom-1-1 and slow-1-1 only (no retries)", names)
	}
}

func TestImageBuildReconciler_Reconcile_retriesLostPods(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{MaxRetries: ptr.To[int32](2)})
	k := kubelet{t, c}
	ctx := context.Background()

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	// Deleted mid-build: retried.
	if err := c.Delete(ctx, waitPod(t, c, ns, "app-1-1")); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "app-1-2")
	ib := waitStatus(t, c, key, "attempt 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.PodName == "app-1-2" })
	if ib.Status.Retries != 1 || ib.Status.Failure == nil || ib.Status.Failure.Reason != "PodDeleted" {
		t.Errorf("status after the first retry: %s failure=%+v", describe(ib), ib.Status.Failure)
	}

	// Evicted by the kubelet: retried.
	k.update(ns, "app-1-2", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.Reason = "Evicted"
		s.Message = "The node was low on resource: memory."
	})
	waitPod(t, c, ns, "app-1-3")

	// Deleted again: no retries left.
	if err := c.Delete(ctx, waitPod(t, c, ns, "app-1-3")); err != nil {
		t.Fatal(err)
	}
	ib = waitStatus(t, c, key, "Failed with PodDeleted", conditionIs("Stalled", metav1.ConditionTrue, "PodDeleted"))
	if ib.Status.Retries != 2 || ib.Status.Phase != v1alpha1.PhaseFailed {
		t.Errorf("status after the last attempt: %s", describe(ib))
	}
	time.Sleep(time.Second)
	if names := podNames(t, c, ns); len(names) != 1 || names[0] != "app-1-2" {
		t.Errorf("pods = %v, want only the evicted app-1-2 kept for its logs", names)
	}
}

func TestImageBuildReconciler_Reconcile_newGenerationStopsTheOldBuild(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	ctx := context.Background()

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	waitStatus(t, c, key, "Running", phaseIs(v1alpha1.PhaseRunning))

	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(ctx, key, ib); err != nil {
		t.Fatal(err)
	}
	ib.Spec.Source.Git.Revision = "v2"
	if err := c.Update(ctx, ib); err != nil {
		t.Fatal(err)
	}
	waitPodGone(t, c, ns, "app-1-1")
	pod := waitPod(t, c, ns, "app-2-1")
	if !strings.Contains(strings.Join(pod.Spec.Containers[0].Args, " "), "--context=https://git.example.com/org/app.git#v2") {
		t.Errorf("new pod args = %v, want the new revision", pod.Spec.Containers[0].Args)
	}
	ib = waitStatus(t, c, key, "generation 2 pending", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.ObservedGeneration == 2 && ib.Status.PodName == "app-2-1"
	})
	if ib.Status.Attempt != 1 {
		t.Errorf("attempt = %d, want 1", ib.Status.Attempt)
	}
	if names := podNames(t, c, ns); len(names) != 1 {
		t.Errorf("pods = %v, want one build only", names)
	}
	k.finish(ns, "app-2-1", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
}

func TestImageBuildReconciler_Reconcile_rebuildAnnotation(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	ctx := context.Background()

	key := newImageBuild(t, c, ns, "app")
	k.finish(ns, "app-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))

	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(ctx, key, ib); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Annotations = map[string]string{v1alpha1.RebuildAnnotation: "1"}
	if err := c.Patch(ctx, ib, patch); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "app-1-2")
	ib = waitStatus(t, c, key, "rebuild pending", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.ObservedRebuild == "1" && ib.Status.Phase == v1alpha1.PhasePending
	})
	if ib.Status.Image != nil || apimeta.IsStatusConditionTrue(ib.Status.Conditions, "Ready") {
		t.Errorf("the previous result is still reported: %s", describe(ib))
	}
	k.finish(ns, "app-1-2", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "Ready again", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
}

func TestImageBuildReconciler_Reconcile_deletionRemovesPods(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	// envtest has no garbage collector: the controller itself removes the pods.
	waitPodGone(t, c, ns, "app-1-1")
}

func TestImageBuildReconciler_Reconcile_queue(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{MaxConcurrentBuilds: 1})
	k := kubelet{t, c}

	a := newImageBuild(t, c, ns, "a")
	waitPod(t, c, ns, "a-1-1")
	// Creation times have a resolution of one second: wait so the queue order is by age.
	time.Sleep(1100 * time.Millisecond)
	b := newImageBuild(t, c, ns, "b")
	time.Sleep(1100 * time.Millisecond)
	cc := newImageBuild(t, c, ns, "c")
	waitStatus(t, c, b, "b queued", conditionIs("Reconciling", metav1.ConditionTrue, "Queued"))
	waitStatus(t, c, cc, "c queued", phaseIs(v1alpha1.PhaseQueued))

	k.finish(ns, "a-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, a, "a Ready", phaseIs(v1alpha1.PhaseSucceeded))
	waitPod(t, c, ns, "b-1-1")
	time.Sleep(500 * time.Millisecond)
	if ib := waitStatus(t, c, cc, "c still queued", phaseIs(v1alpha1.PhaseQueued)); ib.Status.PodName != "" {
		t.Errorf("c started while b runs: %s", describe(ib))
	}

	k.finish(ns, "b-1-1", 1, "Error", encodeResult(result.Result{Failure: &result.Failure{Reason: result.ReasonRunFailed, Message: "exit 1"}}))
	waitPod(t, c, ns, "c-1-1")
	waitStatus(t, c, cc, "c pending", phaseIs(v1alpha1.PhasePending))
}

func TestImageBuildReconciler_Reconcile_managerRestartAdoptsThePod(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	m := startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	waitStatus(t, c, key, "Running", phaseIs(v1alpha1.PhaseRunning))
	m.stop()

	// The build ends while no manager runs.
	k.finish(ns, "app-1-1", 0, "Completed", succeededResult())

	startManager(t, ns, Options{})
	ib := waitStatus(t, c, key, "Ready after the restart", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
	if ib.Status.Image == nil || ib.Status.Image.Digest != testDigest || ib.Status.Attempt != 1 {
		t.Errorf("status after the restart: %s", describe(ib))
	}
	if names := podNames(t, c, ns); len(names) != 1 || names[0] != "app-1-1" {
		t.Errorf("pods = %v, want the one pod app-1-1", names)
	}
}

func TestImageBuildReconciler_Reconcile_missingSecret(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Output.PushSecretRef = &corev1.LocalObjectReference{Name: "push"}
		ib.Spec.Source.Git.SecretRef = &corev1.LocalObjectReference{Name: "git"}
		ib.Spec.Secrets = []v1alpha1.BuildSecret{{ID: "token",
			SecretKeyRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "api"}, Key: "token"}}}
	})
	ib := waitStatus(t, c, key, "SecretNotFound", conditionIs("Ready", metav1.ConditionFalse, "SecretNotFound"))
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.Contains(msg, "spec.source.git.secretRef") {
		t.Errorf("Ready message = %q, want it to name spec.source.git.secretRef", msg)
	}
	const password = "s3cr3t-pa55word"
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns}, Type: corev1.SecretTypeBasicAuth,
			StringData: map[string]string{"username": "u", "password": password}},
		{ObjectMeta: metav1.ObjectMeta{Name: "push", Namespace: ns}, Type: corev1.SecretTypeDockerConfigJson,
			StringData: map[string]string{".dockerconfigjson": `{"auths":{"registry.example.com":{"auth":"` + password + `"}}}`}},
		{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns}, StringData: map[string]string{"other": password}},
	} {
		if err := c.Create(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	// The build secret's Secret exists, without the key.
	ib = waitStatus(t, c, key, "the build secret's key named", func(ib *v1alpha1.ImageBuild) bool {
		cond := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready")
		return cond != nil && cond.Reason == "SecretNotFound" && strings.Contains(cond.Message, `spec.secrets[0].secretKeyRef) has no key "token"`)
	})
	api := &corev1.Secret{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "api"}, api); err != nil {
		t.Fatal(err)
	}
	api.StringData = map[string]string{"token": password}
	if err := c.Update(context.Background(), api); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, c, ns, "app-1-1")
	ib = waitStatus(t, c, key, "PodCreated", conditionIs("Ready", metav1.ConditionFalse, "PodCreated"))
	b, _ := pod.Marshal()
	if strings.Contains(string(b), password) || strings.Contains(describe(ib), password) {
		t.Error("a secret value reached the pod spec or the status")
	}
	// The Secrets are mounted read-only in the init container that stages them, never in the
	// executor container, where the Dockerfile's RUN steps run; nor is any in its environment.
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers = %d, want the one that stages the credentials", len(pod.Spec.InitContainers))
	}
	var vols []string
	for _, m := range pod.Spec.InitContainers[0].VolumeMounts {
		if !m.ReadOnly && m.Name != "credentials" {
			t.Errorf("mount %s is writable", m.Name)
		}
		vols = append(vols, m.MountPath)
	}
	if want := []string{"/var/run/secrets/slipway/git", "/var/run/secrets/slipway/docker", "/var/run/secrets/slipway/secrets", "/slipway/credentials"}; !slices.Equal(vols, want) {
		t.Errorf("init container mounts = %v, want %v: the git, push and build secrets, and the staged credentials", vols, want)
	}
	exec := pod.Spec.Containers[0]
	if len(exec.VolumeMounts) != 1 || exec.VolumeMounts[0].Name != "credentials" {
		t.Errorf("executor mounts = %v, want only the staged credentials", exec.VolumeMounts)
	}
	for _, e := range exec.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("executor environment variable %s comes from a Secret", e.Name)
		}
	}
}

func TestImageBuildReconciler_Reconcile_podSecurityBaseline(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
	startManager(t, ns, Options{})
	ctx := context.Background()

	// The API server really enforces the level: a privileged pod is refused.
	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}},
	}
	if err := c.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "baseline") {
		t.Fatalf("creating a privileged pod: err = %v, want a refusal by Pod Security baseline", err)
	}

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Source.Git.SecretRef = &corev1.LocalObjectReference{Name: "ssh"}
	})
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ssh", Namespace: ns}, Type: corev1.SecretTypeSSHAuth,
		Data: map[string][]byte{"ssh-privatekey": []byte("key"), "known_hosts": []byte("host")}}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, c, ns, "app-1-1")
	waitStatus(t, c, key, "PodCreated", conditionIs("Reconciling", metav1.ConditionTrue, "PodCreated"))
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted")
	}
	// Options.HostUsers is false here: the pod runs in a user namespace, and is still admitted.
	if pod.Spec.HostUsers == nil || *pod.Spec.HostUsers {
		t.Errorf("hostUsers = %v, want false", pod.Spec.HostUsers)
	}
	if env := pod.Spec.Containers[0].Env; len(env) != 0 {
		t.Errorf("env = %v, want none: the ssh-auth secret is staged by the init container", env)
	}
}

// TestImageBuild_validation checks that the API server refuses bad ImageBuilds with a message
// naming the field.
func TestImageBuild_validation(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	str := func(s string) *string { return &s }
	tests := []struct {
		name   string
		mutate func(*v1alpha1.ImageBuild)
		want   string
	}{
		{"git URL without a scheme", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = "git.example.com/app" }, "spec.source.git.url"},
		{"git URL with a fragment", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = "https://h/a.git#main" }, "spec.source.git.url"},
		{"git URL with credentials", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = "https://u:p@h/a.git" }, "must not carry credentials"},
		{"git URL with a token as user", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = "git://ghp_token@h/a.git" }, "must not carry credentials"},
		{"ssh URL with a password", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = "ssh://git:pw@h/a.git" }, "must not carry credentials"},
		{"missing git URL", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = "" }, "spec.source.git.url"},
		{"image with a digest", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output.Image = "r.io/app@" + testDigest }, "spec.output.image"},
		{"image with upper case", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output.Image = "r.io/App:v1" }, "spec.output.image"},
		{"missing image", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output.Image = "" }, "spec.output.image"},
		{"bad additional tag", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output.AdditionalTags = []string{"-x"} }, "spec.output.additionalTags[0]"},
		{"context outside the repository", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.ContextDir = "a/../../etc" }, "spec.source.contextDir"},
		{"absolute Dockerfile", func(ib *v1alpha1.ImageBuild) { ib.Spec.Dockerfile = "/etc/passwd" }, "spec.dockerfile"},
		{"timeout too short", func(ib *v1alpha1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: time.Second} }, "spec.timeout"},
		{"build secret id climbing out", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Secrets = []v1alpha1.BuildSecret{{ID: "..", SecretKeyRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}
		}, "spec.secrets[0].id"},
		{"optional build secret", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Secrets = []v1alpha1.BuildSecret{{ID: "t", SecretKeyRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k", Optional: ptr.To(true)}}}
		}, "optional is not supported"},
		{"value and valueFrom", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.BuildArgs = []v1alpha1.BuildArg{{Name: "A", Value: str("1"), ValueFrom: &v1alpha1.BuildArgSource{
				ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}, Key: "k"}}}}
		}, "spec.buildArgs[0]"},
		{"valueFrom with both sources", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.BuildArgs = []v1alpha1.BuildArg{{Name: "A", ValueFrom: &v1alpha1.BuildArgSource{
				ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}, Key: "k"},
				SecretKeyRef:    &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}}
		}, "spec.buildArgs[0].valueFrom"},
		{"build argument shadowing PATH", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.BuildArgs = []v1alpha1.BuildArg{{Name: "PATH", ValueFrom: &v1alpha1.BuildArgSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}}
		}, "spec.buildArgs[0]"},
		{"bad build argument name", func(ib *v1alpha1.ImageBuild) { ib.Spec.BuildArgs = []v1alpha1.BuildArg{{Name: "1A"}} }, "spec.buildArgs[0].name"},
		{"cache repository while disabled", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Cache = &v1alpha1.Cache{Repository: "r.io/cache", Disabled: true}
		}, "spec.cache: Invalid value: repository cannot be set"},
		{"negative retention", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Retention = &v1alpha1.Retention{TTLSecondsAfterFinished: ptr.To[int32](-1)}
		}, "spec.retention.ttlSecondsAfterFinished"},
		{"name too long for pods", func(ib *v1alpha1.ImageBuild) { ib.Name = strings.Repeat("a", 64) }, "metadata.name"},
		{"retry limit above 10", func(ib *v1alpha1.ImageBuild) { ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](11)} }, "spec.retry.limit"},
		{"negative retry limit", func(ib *v1alpha1.ImageBuild) { ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](-1)} }, "spec.retry.limit"},
		{"retry of source fetches without retries", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Retry = &v1alpha1.Retry{SourceFetch: true, Limit: ptr.To[int32](0)}
		}, "spec.retry: Invalid value: sourceFetch retries nothing with limit 0"},
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
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}

	// The same object with good values is accepted, with its defaults.
	ok := &v1alpha1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "good", Namespace: ns},
		Spec: v1alpha1.ImageBuildSpec{
			Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "git@github.com:org/app.git", Revision: "refs/pull/42/head"}, ContextDir: "services/api"},
			Output: v1alpha1.Output{Image: "127.0.0.1:5999/team/app", AdditionalTags: []string{"latest"}},
			Cache:  &v1alpha1.Cache{TTL: &metav1.Duration{Duration: time.Hour}},
			Retry:  &v1alpha1.Retry{Limit: ptr.To[int32](5), SourceFetch: true},
		},
	}
	if err := c.Create(context.Background(), ok); err != nil {
		t.Fatalf("creating a valid ImageBuild: %v", err)
	}
	if ok.Spec.Dockerfile != "Dockerfile" || ok.Spec.Timeout == nil || ok.Spec.Timeout.Duration != time.Hour {
		t.Errorf("defaults: dockerfile=%q timeout=%v", ok.Spec.Dockerfile, ok.Spec.Timeout)
	}
}

func TestImageBuildReconciler_Reconcile_adoptsAPodCreatedBeforeItsStatusWasWritten(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	ctx := context.Background()

	// A manager created the pod and stopped before it could write the status.
	key := newImageBuild(t, c, ns, "app")
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(ctx, key, ib); err != nil {
		t.Fatal(err)
	}
	ib.Status.Attempt = 1
	pod := constructPod(ib, podOptions{executorImage: "slipway/executor:test", hostUsers: true})
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	startManager(t, ns, Options{})
	got := waitStatus(t, c, key, "the pod adopted", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.PodName == "app-1-1" })
	if got.Status.Attempt != 1 {
		t.Errorf("status: %s", describe(got))
	}
	time.Sleep(500 * time.Millisecond)
	if names := podNames(t, c, ns); len(names) != 1 {
		t.Errorf("pods = %v, want only app-1-1", names)
	}
}

func TestImageBuildReconciler_Reconcile_retention(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Retention = &v1alpha1.Retention{TTLSecondsAfterFinished: ptr.To[int32](1)}
	})
	k.finish(ns, "app-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
	waitPodGone(t, c, ns, "app-1-1")
	// The status outlives the pod.
	ib := waitStatus(t, c, key, "still Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
	if ib.Status.Image == nil || ib.Status.Image.Digest != testDigest {
		t.Errorf("status after the pod was deleted: %s", describe(ib))
	}
}

func TestImageBuildReconciler_Reconcile_metrics(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	before := counterValue(t, "slipway_builds_total", map[string]string{"result": "succeeded"})
	hitsBefore := counterValue(t, "slipway_build_cache_hits_total", nil)
	key := newImageBuild(t, c, ns, "app")
	k.finish(ns, "app-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
	eventually(t, 5*time.Second, "the build counted", func() (bool, string) {
		got := counterValue(t, "slipway_builds_total", map[string]string{"result": "succeeded"})
		hits := counterValue(t, "slipway_build_cache_hits_total", nil)
		return got == before+1 && hits == hitsBefore+2, fmt.Sprintf("builds %v -> %v, hits %v -> %v", before, got, hitsBefore, hits)
	})
	if n := counterValue(t, "slipway_builds_running", nil); n < 0 {
		t.Errorf("slipway_builds_running = %v", n)
	}
}

// flakyStatusClient fails the first status patch for which fail returns true, as an API
// server that is briefly unavailable would.
type flakyStatusClient struct {
	client.Client
	fail   func(client.Object) bool
	failed atomic.Int32
}

func (c *flakyStatusClient) Status() client.SubResourceWriter {
	return flakyStatusWriter{c.Client.Status(), c}
}

type flakyStatusWriter struct {
	client.SubResourceWriter
	c *flakyStatusClient
}

func (w flakyStatusWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if w.c.fail(obj) && w.c.failed.CompareAndSwap(0, 1) {
		return errors.New("injected: the API server is unavailable")
	}
	return w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// A status patch that fails is retried by the next reconcile, which finds the build finished
// again: the build is counted once, after the patch that succeeds.
func TestImageBuildReconciler_Reconcile_failedStatusWriteCountsOnce(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	flaky := &flakyStatusClient{fail: func(o client.Object) bool {
		ib, ok := o.(*v1alpha1.ImageBuild)
		return ok && ib.Status.Phase == v1alpha1.PhaseSucceeded
	}}
	startManagerWith(t, ns, Options{}, func(inner client.Client) client.Client {
		flaky.Client = inner
		return flaky
	})
	k := kubelet{t, c}

	before := counterValue(t, "slipway_builds_total", map[string]string{"result": "succeeded"})
	key := newImageBuild(t, c, ns, "app")
	k.finish(ns, "app-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, key, "Ready", conditionIs("Ready", metav1.ConditionTrue, "Succeeded"))
	if flaky.failed.Load() != 1 {
		t.Fatal("the status patch of the finished build did not fail: the test tests nothing")
	}
	eventually(t, 5*time.Second, "the build counted", func() (bool, string) {
		got := counterValue(t, "slipway_builds_total", map[string]string{"result": "succeeded"})
		return got >= before+1, fmt.Sprintf("builds %v -> %v", before, got)
	})
	time.Sleep(500 * time.Millisecond)
	if got := counterValue(t, "slipway_builds_total", map[string]string{"result": "succeeded"}); got != before+1 {
		t.Errorf("slipway_builds_total{result=succeeded} went from %v to %v, want one more", before, got)
	}
}

// An executor image may write any reason: one the API server refuses in a condition becomes
// BuildFailed, and the status is written.
func TestImageBuildReconciler_Reconcile_invalidExecutorReason(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.finish(ns, "app-1-1", 1, "Error", encodeResult(result.Result{Failure: &result.Failure{
		Reason: "not a reason; DROP TABLE", Message: "the executor broke"}}))
	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "BuildFailed"))
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Failure == nil || ib.Status.Failure.Reason != "BuildFailed" ||
		ib.Status.Failure.Message != "the executor broke" {
		t.Errorf("status after an invalid reason: %s failure=%+v", describe(ib), ib.Status.Failure)
	}
}

// --max-build-retries=0: a lost pod fails the build, with no second attempt.
func TestImageBuildReconciler_Reconcile_zeroRetries(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{MaxRetries: ptr.To[int32](0)})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	if err := c.Delete(context.Background(), waitPod(t, c, ns, "app-1-1")); err != nil {
		t.Fatal(err)
	}
	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "PodDeleted"))
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Retries != 0 || ib.Status.NextRetryTime != nil {
		t.Errorf("status after the pod was lost with no retries: %s", describe(ib))
	}
	time.Sleep(time.Second)
	if names := podNames(t, c, ns); slices.Contains(names, "app-1-2") {
		t.Errorf("pods = %v: a second attempt started", names)
	}
}

// counterValue sums the samples of a metric of controller-runtime's registry whose labels
// include labels.
func counterValue(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
