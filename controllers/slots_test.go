package controllers

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

func TestSlotTracker_active(t *testing.T) {
	nn := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }
	var s slotTracker
	s.launch(nn("a"), t0, nn("a-1-1"))
	s.launch(nn("b"), t0, nn("b-1-1"))

	tests := []struct {
		name   string
		cached map[types.NamespacedName]bool
		now    time.Time
		want   int
	}{
		{"launched pods the cache has not seen count", nil, t0.Add(time.Second), 2},
		{"a launched pod the cache shows finished does not count", map[types.NamespacedName]bool{nn("a-1-1"): false}, t0.Add(time.Second), 1},
		{"cached running pods count once", map[types.NamespacedName]bool{nn("a-1-1"): true, nn("x-1-1"): true}, t0.Add(time.Second), 3},
		{"launches expire after the grace period", nil, t0.Add(2 * launchGrace), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.active(tc.cached, tc.now); got != tc.want {
				t.Errorf("active() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSlotTracker_queued(t *testing.T) {
	var s slotTracker
	k := types.NamespacedName{Namespace: "ns", Name: "a"}
	s.queue(k)
	if got := s.queued(); len(got) != 1 || got[0] != k {
		t.Fatalf("queued() = %v, want [%v]", got, k)
	}
	s.launch(k, t0, types.NamespacedName{Namespace: "ns", Name: "a-1-1"})
	if got := s.queued(); len(got) != 0 {
		t.Errorf("queued() after launch = %v, want none", got)
	}
	if !s.launched(k) {
		t.Error("launched() = false after launch")
	}
	s.forget(k)
	if s.launched(k) {
		t.Error("launched() = true after forget")
	}
}

// readCounter counts the ImageBuilds a reconciler reads from the API server, by name.
type readCounter struct {
	client.Reader
	mu    sync.Mutex
	reads map[string]int
}

func (r *readCounter) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*v1alpha1.ImageBuild); ok {
		r.mu.Lock()
		r.reads[key.Name]++
		r.mu.Unlock()
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r *readCounter) take() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.reads
	r.reads = map[string]int{}
	return m
}

// A slot that frees wakes the head of the queue, not every queued build: under load, each
// wake costs a read of the API server (issue 13's load benchmark found 89 requests per build
// with 500 builds queued behind 8 slots).
func TestImageBuildReconciler_Reconcile_freedSlotWakesTheHeadOnly(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	counter := &readCounter{reads: map[string]int{}}
	startManagerWrapped(t, ns, Options{MaxConcurrentBuilds: 1}, nil, func(r client.Reader) client.Reader {
		counter.Reader = r
		return counter
	})
	k := kubelet{t, c}

	a := newImageBuild(t, c, ns, "a")
	waitPod(t, c, ns, "a-1-1")
	// Same creation second or not, the queue's order is then b, c, d, e (olderThan).
	var queued []client.ObjectKey
	for _, name := range []string{"b", "c", "d", "e"} {
		queued = append(queued, newImageBuild(t, c, ns, name))
	}
	for _, key := range queued {
		ib := waitStatus(t, c, key, key.Name+" queued", phaseIs(v1alpha1.PhaseQueued))
		msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message
		if want := "Waiting for a build slot (at most 1 builds run at once; older builds start first)"; msg != want {
			t.Errorf("%s: Ready message = %q, want %q", key.Name, msg, want)
		}
	}
	// Let the reconciles of the queueing settle, then count from here.
	time.Sleep(500 * time.Millisecond)
	counter.take()

	k.finish(ns, "a-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, a, "a succeeded", phaseIs(v1alpha1.PhaseSucceeded))
	waitPod(t, c, ns, "b-1-1")
	waitStatus(t, c, queued[0], "b pending", phaseIs(v1alpha1.PhasePending))
	time.Sleep(500 * time.Millisecond)
	reads := counter.take()
	if reads["b"] == 0 {
		t.Errorf("b, the head of the queue, was not reconciled when a's slot freed: reads %v", reads)
	}
	for _, name := range []string{"c", "d", "e"} {
		if reads[name] != 0 {
			t.Errorf("%s, behind b in the queue, was read %d times from the API server when a's slot freed (reads %v)",
				name, reads[name], reads)
		}
	}
	if names := podNames(t, c, ns); !slices.Equal(names, []string{"a-1-1", "b-1-1"}) {
		t.Errorf("pods = %v, want a-1-1 and b-1-1", names)
	}
}

// A queued build that leaves the queue without taking the slot it was woken for (its Secret
// went away while it waited) wakes the next one: the slot does not stay idle.
func TestImageBuildReconciler_Reconcile_headLeavingWithoutASlotWakesTheNext(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{MaxConcurrentBuilds: 1})
	k := kubelet{t, c}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns}, StringData: map[string]string{"token": "t"}}
	if err := c.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	newImageBuild(t, c, ns, "a")
	waitPod(t, c, ns, "a-1-1")
	b := newImageBuild(t, c, ns, "b", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Secrets = []v1alpha1.BuildSecret{{ID: "token",
			SecretKeyRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "api"}, Key: "token"}}}
	})
	cc := newImageBuild(t, c, ns, "c")
	waitStatus(t, c, b, "b queued", phaseIs(v1alpha1.PhaseQueued))
	waitStatus(t, c, cc, "c queued", phaseIs(v1alpha1.PhaseQueued))
	if err := c.Delete(context.Background(), secret); err != nil {
		t.Fatal(err)
	}

	k.finish(ns, "a-1-1", 0, "Completed", succeededResult())
	waitStatus(t, c, b, "b waiting for its Secret", conditionIs("Ready", metav1.ConditionFalse, "SecretNotFound"))
	waitPod(t, c, ns, "c-1-1")
	waitStatus(t, c, cc, "c pending", phaseIs(v1alpha1.PhasePending))
}

// haveSlot keeps a new build's place in the queue before its first reconcile (the one worker
// may reach a younger build first), for newBuildGrace only.
func TestImageBuildReconciler_haveSlot_newBuildsKeepTheirPlace(t *testing.T) {
	now := t0.Add(time.Hour)
	build := func(name string, created time.Time, phase v1alpha1.BuildPhase) *v1alpha1.ImageBuild {
		ib := makeImageBuild(name, "ns").Obj()
		ib.UID = types.UID(name)
		ib.CreationTimestamp = metav1.NewTime(created)
		ib.Status.Phase = phase
		return ib
	}
	running := makePod("x-1-1").Phase(corev1.PodRunning).Obj()
	running.Labels = map[string]string{managedByLabel: managedByValue}
	young := build("young", now.Add(-time.Second), "")

	tests := []struct {
		name      string
		others    []client.Object
		wantOlder int
		wantFree  bool
	}{
		{"an older new build keeps its place", []client.Object{build("new", now.Add(-2*time.Second), "")}, 1, false},
		{"an older queued build keeps its place", []client.Object{build("q", now.Add(-time.Hour), v1alpha1.PhaseQueued)}, 1, false},
		{"an older new build never reconciled within the grace does not block",
			[]client.Object{build("stuck", now.Add(-newBuildGrace-time.Second), "")}, 0, true},
		{"an older running or finished build does not wait",
			[]client.Object{build("r", now.Add(-time.Hour), v1alpha1.PhaseRunning), build("s", now.Add(-time.Hour), v1alpha1.PhaseSucceeded)}, 0, true},
		{"a younger queued build does not count", []client.Object{build("z", now, v1alpha1.PhaseQueued)}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append([]client.Object{young.DeepCopy(), running.DeepCopy()}, tc.others...)
			r := &ImageBuildReconciler{
				Client:  fake.NewClientBuilder().WithScheme(envScheme).WithObjects(objs...).WithStatusSubresource(&v1alpha1.ImageBuild{}).Build(),
				Clock:   clocktesting.NewFakePassiveClock(now),
				Options: Options{MaxConcurrentBuilds: 2},
			}
			st, err := r.haveSlot(context.Background(), young)
			if err != nil {
				t.Fatal(err)
			}
			if st.running != 1 || st.older != tc.wantOlder || st.free() != tc.wantFree {
				t.Errorf("haveSlot = %+v (free %v), want 1 running, %d older, free %v", st, st.free(), tc.wantOlder, tc.wantFree)
			}
		})
	}
}
