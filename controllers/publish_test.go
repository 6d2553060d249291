package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/imageindex"
)

// waitNotified waits for key's notification, failing the test after within.
func waitNotified(t *testing.T, notified chan client.ObjectKey, key client.ObjectKey, within time.Duration, why func() string) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case k := <-notified:
			if k == key {
				return
			}
		case <-deadline:
			t.Fatalf("%s's job did not end within %s: %s", key, within, why())
		}
	}
}

func indexJob(repo string) publishRequest {
	return publishRequest{index: &imageindex.Request{Repository: repo}}
}

// One tenant's registry that never answers (a tarpit) must not make another namespace's
// index push wait for it: review15 showed four such jobs holding the four slots, and another
// namespace's job timing out (PushFailed) without ever being tried.
func TestPublisher_otherNamespacesNotStarved(t *testing.T) {
	notified := make(chan client.ObjectKey, 16)
	a := newPublisher(func(k client.ObjectKey) { notified <- k })
	t.Cleanup(a.cancel)
	var victimTried atomic.Bool
	var tarpits atomic.Int32
	a.assemble = func(ctx context.Context, req imageindex.Request) (imageindex.Result, error) {
		if req.Repository == "victim.example/app" {
			victimTried.Store(true)
			return imageindex.Result{Digest: testDigest}, nil
		}
		tarpits.Add(1)
		<-ctx.Done() // answers nothing until the try's deadline
		return imageindex.Result{}, ctx.Err()
	}
	for i := range 4 {
		a.start(client.ObjectKey{Namespace: "attacker", Name: fmt.Sprint("app-", i)}, "1", indexJob("tarpit.example/app"))
	}
	for tarpits.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	victim := client.ObjectKey{Namespace: "victim", Name: "app"}
	a.start(victim, "1", indexJob("victim.example/app"))
	waitNotified(t, notified, victim, 10*time.Second, func() string {
		return fmt.Sprintf("tried %v, %d tarpit tries running", victimTried.Load(), tarpits.Load())
	})
	if j, _ := a.job(victim, "1"); j.err != nil || !victimTried.Load() {
		t.Errorf("the victim's job: %+v (tried %v), want its index pushed", j, victimTried.Load())
	}
}

// A try's deadline starts once it has its slot: a job that waited for one has the whole
// timeout to push.
func TestPublisher_deadlineStartsWithSlot(t *testing.T) {
	notified := make(chan client.ObjectKey, 16)
	a := newPublisher(func(k client.ObjectKey) { notified <- k })
	t.Cleanup(a.cancel)
	const timeout = 2 * time.Second
	a.indexTimeout = timeout
	a.tries = 1
	a.sem = make(chan struct{}, 1) // one slot: the second job waits for the first's deadline
	var left atomic.Int64
	a.assemble = func(ctx context.Context, req imageindex.Request) (imageindex.Result, error) {
		if req.Repository == "tarpit.example/app" {
			<-ctx.Done()
			return imageindex.Result{}, ctx.Err()
		}
		dl, _ := ctx.Deadline()
		left.Store(int64(time.Until(dl)))
		return imageindex.Result{Digest: testDigest}, nil
	}
	tarpit := client.ObjectKey{Namespace: "slow", Name: "app"}
	a.start(tarpit, "1", indexJob("tarpit.example/app"))
	time.Sleep(200 * time.Millisecond)
	waiting := client.ObjectKey{Namespace: "other", Name: "app"}
	a.start(waiting, "1", indexJob("other.example/app"))
	waitNotified(t, notified, waiting, 10*time.Second, func() string { return "never ran" })
	j, _ := a.job(waiting, "1")
	if got := time.Duration(left.Load()); j.err != nil || got < timeout*3/4 {
		t.Errorf("the job that waited for a slot: err %v, %s of its deadline left when it ran; want success with about %s", j.err, got, timeout)
	}
}

// At most one job of a namespace runs at a time: the others of that namespace wait for it,
// those of other namespaces do not.
func TestPublisher_oneJobPerNamespace(t *testing.T) {
	notified := make(chan client.ObjectKey, 16)
	a := newPublisher(func(k client.ObjectKey) { notified <- k })
	t.Cleanup(a.cancel)
	release := make(chan struct{})
	var mu sync.Mutex
	running, most := map[string]int{}, map[string]int{}
	var order []string
	a.assemble = func(ctx context.Context, req imageindex.Request) (imageindex.Result, error) {
		ns, _, _ := strings.Cut(req.Repository, "/")
		mu.Lock()
		running[ns]++
		most[ns] = max(most[ns], running[ns])
		order = append(order, req.Repository)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running[ns]--
			mu.Unlock()
		}()
		if req.Repository == "a/first" {
			select {
			case <-release:
			case <-ctx.Done():
				return imageindex.Result{}, ctx.Err()
			}
		}
		return imageindex.Result{Digest: testDigest}, nil
	}
	first, second := client.ObjectKey{Namespace: "a", Name: "first"}, client.ObjectKey{Namespace: "a", Name: "second"}
	other := client.ObjectKey{Namespace: "b", Name: "app"}
	a.start(first, "1", indexJob("a/first"))
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.start(second, "1", indexJob("a/second"))
	a.start(other, "1", indexJob("b/app"))
	waitNotified(t, notified, other, 10*time.Second, func() string { return "namespace b waited for namespace a" })
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if running["a"] != 1 || strings.Contains(strings.Join(order, " "), "a/second") {
		t.Errorf("while a/first runs: %v ran, %d of namespace a running; want a/second waiting", order, running["a"])
	}
	mu.Unlock()
	close(release)
	waitNotified(t, notified, second, 10*time.Second, func() string { return "a/second never ran" })
	mu.Lock()
	defer mu.Unlock()
	if most["a"] != 1 {
		t.Errorf("%d jobs of namespace a ran at once, want 1", most["a"])
	}
}

// A job's failure message is bounded, whatever the error says.
func TestPublishFailure_bounded(t *testing.T) {
	for _, step := range []string{"index", "sign"} {
		f := publishFailure(&publishError{step: step, err: errors.New(strings.Repeat("registry said: x ", 5000))})
		if len(f.Message) > maxPublishMessage+64 {
			t.Errorf("%s: a failure message of %d bytes", step, len(f.Message))
		}
	}
}

// End to end, as review15 made it: the tenant's registry redirects the manager's read of a
// platform's manifest to an internal service named by DNS. The manager does not go there;
// the build fails (PushFailed, not retried: the registry would redirect again) with a
// message in our words, and neither the status nor the events hold the internal answer or
// the redirect's URL.
func TestImageBuildReconciler_Reconcile_platformIndexRedirected(t *testing.T) {
	const secret = "INTERNAL-ONLY: token=s3cr3t-from-the-managers-network"
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, secret)
	}))
	t.Cleanup(internal.Close)
	port := internal.URL[strings.LastIndex(internal.URL, ":")+1:]
	tenant := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/manifests/sha256:"):
			http.Redirect(w, r, "http://localhost:"+port+"/latest/meta-data/iam", http.StatusFound)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(tenant.Close)
	repo := strings.TrimPrefix(tenant.URL, "http://") + "/team/app"

	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}
	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
		ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](0)}
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1", Insecure: true}
	})
	amd, arm := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	k.finish(ns, "app-1-1-linux-amd64", 0, "Completed", platformResult(repo, amd, 0, 1))
	k.finish(ns, "app-1-1-linux-arm64", 0, "Completed", platformResult(repo, arm, 0, 1))
	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "PushFailed"))
	msg := ib.Status.Failure.Message
	if !strings.Contains(msg, "refused to reach localhost") || !strings.Contains(msg, "redirected the manager to another host") {
		t.Errorf("failure message %q does not say the redirect was refused", msg)
	}
	if n := internalHits.Load(); n > 0 {
		t.Errorf("the internal service was reached %d times", n)
	}
	evs := waitEvent(t, c, ns, "PushFailed")
	var texts []string
	texts = append(texts, msg)
	for _, cond := range ib.Status.Conditions {
		texts = append(texts, cond.Message)
	}
	for _, e := range evs {
		texts = append(texts, e.Note)
	}
	for _, s := range texts {
		if strings.Contains(s, "s3cr3t") || strings.Contains(s, "meta-data") {
			t.Errorf("the internal answer or the redirect's URL shows: %q", s)
		}
	}
}
