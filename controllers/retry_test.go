package controllers

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

// A pod being deleted may go on building and pushing for its grace period: the next attempt
// starts only once it has stopped (here: once it is gone; envtest has no kubelet, so a
// finalizer of the test's holds the pod in Terminating).
func TestImageBuildReconciler_Reconcile_deletedPodIsWaitedFor(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{RetryBackoff: 100 * time.Millisecond})
	k := kubelet{t, c}
	ctx := context.Background()
	const finalizer = "test.slipway.dev/hold"

	key := newImageBuild(t, c, ns, "app")
	pod := waitPod(t, c, ns, "app-1-1")
	pod.Finalizers = append(pod.Finalizers, finalizer)
	if err := c.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	k.run(ns, "app-1-1")
	if err := c.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ib := waitStatus(t, c, key, "Ready=False/PodDeleted while the pod stops", conditionIs("Ready", metav1.ConditionFalse, "PodDeleted"))
	if r := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready"); !strings.Contains(r.Message, "is being deleted") {
		t.Errorf("Ready = %+v, want a message saying the pod is being deleted", r)
	}
	// Well past the backoff, still one pod, and the build is not failed yet.
	time.Sleep(2 * time.Second)
	if names := podNames(t, c, ns); !slices.Equal(names, []string{"app-1-1"}) {
		t.Fatalf("pods while app-1-1 is being deleted = %v, want only app-1-1", names)
	}
	if err := c.Get(ctx, key, ib); err != nil {
		t.Fatal(err)
	}
	if ib.Status.Phase != v1alpha1.PhaseRunning || ib.Status.Retries != 0 {
		t.Errorf("status while the pod is being deleted: %s", describe(ib))
	}

	// Gone: the attempt failed with PodDeleted, and is retried by a new pod.
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	pod.Finalizers = nil
	if err := c.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "app-1-2")
	ib = waitStatus(t, c, key, "attempt 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.PodName == "app-1-2" })
	if ib.Status.Retries != 1 || ib.Status.Failure == nil || ib.Status.Failure.Reason != "PodDeleted" {
		t.Errorf("status of the retry: %s failure=%+v", describe(ib), ib.Status.Failure)
	}
}

// An executor killed by a signal before it wrote a result (SIGKILL: exit code 137, not
// OOMKilled) lost its pod's work, not the build's: ExecutorKilled, retried.
func TestImageBuildReconciler_Reconcile_killedExecutorIsRetried(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{RetryBackoff: 100 * time.Millisecond})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	k.finish(ns, "app-1-1", 137, "Error", "")
	waitPod(t, c, ns, "app-1-2")
	ib := waitStatus(t, c, key, "attempt 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.PodName == "app-1-2" })
	f := ib.Status.Failure
	if ib.Status.Retries != 1 || f == nil || f.Reason != "ExecutorKilled" || !strings.Contains(f.Message, "SIGKILL") {
		t.Errorf("status of the retry: %s failure=%+v", describe(ib), f)
	}
	k.run(ns, "app-1-2")
	k.finish(ns, "app-1-2", 0, "Completed", succeededResult())
	ib = waitStatus(t, c, key, "Succeeded", phaseIs(v1alpha1.PhaseSucceeded))
	if ib.Status.Attempt != 2 || ib.Status.Retries != 1 || ib.Status.Failure != nil {
		t.Errorf("status after the retry succeeded: %s failure=%+v", describe(ib), ib.Status.Failure)
	}
}

// spec.retry, through the reconciler: sourceFetch retries a source fetch the executor found
// transient (the git server unreachable), up to spec.retry.limit; a source the server refused
// is never retried; without spec.retry neither is; limit 0 retries nothing, not even a lost pod.
func TestImageBuildReconciler_Reconcile_specRetry(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{RetryBackoff: 100 * time.Millisecond})
	k := kubelet{t, c}
	ctx := context.Background()
	sourceFailed := func(transient bool) string {
		return encodeResult(result.Result{Failure: &result.Failure{Reason: result.ReasonSourceFetchFailed,
			Message: "fetching git context https://git.example.com/org/app.git at main: the host is unreachable", Transient: transient}})
	}
	retry := func(r *v1alpha1.Retry) func(*v1alpha1.ImageBuild) {
		return func(ib *v1alpha1.ImageBuild) { ib.Spec.Retry = r }
	}

	unreachable := newImageBuild(t, c, ns, "unreachable", retry(&v1alpha1.Retry{SourceFetch: true, Limit: ptr.To[int32](1)}))
	refused := newImageBuild(t, c, ns, "refused", retry(&v1alpha1.Retry{SourceFetch: true}))
	notAsked := newImageBuild(t, c, ns, "not-asked")
	noRetries := newImageBuild(t, c, ns, "no-retries", retry(&v1alpha1.Retry{Limit: ptr.To[int32](0)}))

	for _, name := range []string{"unreachable-1-1", "refused-1-1", "not-asked-1-1", "no-retries-1-1"} {
		k.run(ns, name)
	}
	k.finish(ns, "unreachable-1-1", 1, "Error", sourceFailed(true))
	k.finish(ns, "refused-1-1", 1, "Error", sourceFailed(false))
	k.finish(ns, "not-asked-1-1", 1, "Error", sourceFailed(true))
	if err := c.Delete(ctx, waitPod(t, c, ns, "no-retries-1-1")); err != nil {
		t.Fatal(err)
	}

	// Retried once, then the limit.
	k.run(ns, "unreachable-1-2")
	ib := waitStatus(t, c, unreachable, "attempt 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.PodName == "unreachable-1-2" })
	if ib.Status.Retries != 1 || ib.Status.Failure == nil || ib.Status.Failure.Reason != "SourceFetchFailed" {
		t.Errorf("the retried build: %s failure=%+v", describe(ib), ib.Status.Failure)
	}
	k.finish(ns, "unreachable-1-2", 1, "Error", sourceFailed(true))
	ib = waitStatus(t, c, unreachable, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "SourceFetchFailed"))
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Retries != 1 || !ib.Status.Failure.Transient {
		t.Errorf("after the last retry: %s failure=%+v", describe(ib), ib.Status.Failure)
	}

	for _, key := range []client.ObjectKey{refused, notAsked} {
		ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "SourceFetchFailed"))
		if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Retries != 0 || ib.Status.NextRetryTime != nil {
			t.Errorf("%s: %s", key.Name, describe(ib))
		}
	}
	ib = waitStatus(t, c, noRetries, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "PodDeleted"))
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Retries != 0 {
		t.Errorf("limit 0: %s", describe(ib))
	}

	time.Sleep(time.Second)
	names := podNames(t, c, ns)
	slices.Sort(names)
	if want := []string{"not-asked-1-1", "refused-1-1", "unreachable-1-1", "unreachable-1-2"}; !slices.Equal(names, want) {
		t.Errorf("pods = %v, want %v", names, want)
	}
	retrying := eventMessages(t, c, ns, "Retrying")
	if len(retrying) != 1 || !strings.HasPrefix(retrying[0], "unreachable: Attempt 1 failed with SourceFetchFailed; retrying in") {
		t.Errorf("Retrying events = %q, want one of unreachable's attempt 1, naming SourceFetchFailed", retrying)
	}
}

// eventMessages lists "object: message" of the events of namespace ns with reason.
func eventMessages(t *testing.T, c client.Client, ns, reason string) []string {
	t.Helper()
	var msgs []string
	eventually(t, 10*time.Second, reason+" events", func() (bool, string) {
		var evs corev1.EventList
		if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		msgs = nil
		for _, e := range evs.Items {
			if e.Reason == reason {
				msgs = append(msgs, e.InvolvedObject.Name+": "+e.Message)
			}
		}
		return len(msgs) > 0, "none"
	})
	return msgs
}
