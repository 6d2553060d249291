package controllers

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/gitpoll"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/testenv"
)

// gitRepo is a repository served by git http-backend with basic auth, whose main branch the
// test moves.
type gitRepo struct {
	t          *testing.T
	work, bare string
	url        string
}

const gitPassword = "p0ll-s3cret-passw0rd"

func newGitRepo(t *testing.T) *gitRepo {
	root := t.TempDir()
	r := &gitRepo{t: t, work: gitserver.NewWorkRepo(t)}
	gitserver.WriteFiles(t, r.work, map[string]string{"Dockerfile": "FROM scratch\n"})
	gitserver.Commit(t, r.work, "first")
	r.bare = gitserver.Publish(t, r.work, root, "org/app.git", true)
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("ci", gitPassword))
	r.url = srv.URL + "/org/app.git"
	return r
}

// push commits a change to main and pushes it; it returns the new commit.
func (r *gitRepo) push(msg string) string {
	gitserver.WriteFiles(r.t, r.work, map[string]string{"version": msg})
	c := gitserver.Commit(r.t, r.work, msg)
	gitserver.Git(r.t, r.work, "push", "-q", r.bare, "main")
	return c
}

func (r *gitRepo) head() string {
	return strings.TrimSpace(gitserver.Git(r.t, r.bare, "rev-parse", "refs/heads/main"))
}

// followingBuild creates the ImageBuild "app" that follows main of repo every 30s (the
// shortest interval; webhook annotations make the tests faster than that), with a tag made
// from the branch and the commit, under policy.
func followingBuild(t *testing.T, c client.Client, ns string, repo *gitRepo, policy v1alpha1.RunPolicy) client.ObjectKey {
	t.Helper()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns}, Type: corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "ci", "password": gitPassword}}
	if err := c.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	return newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Source.Git = v1alpha1.GitSource{URL: repo.url, Revision: "main", SecretRef: &corev1.LocalObjectReference{Name: "git"},
			Interval: &metav1.Duration{Duration: 30 * time.Second}}
		ib.Spec.Output.AdditionalTags = []string{"{{.Branch}}-{{.ShortCommit}}", "build-{{.BuildNumber}}"}
		ib.Spec.RunPolicy = policy
	})
}

// pushed tells the controller, as the webhook receiver does, that a push arrived.
func pushed(t *testing.T, c client.Client, key client.ObjectKey) {
	t.Helper()
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ib.DeepCopy())
	if ib.Annotations == nil {
		ib.Annotations = map[string]string{}
	}
	ib.Annotations[WebhookAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatal(err)
	}
}

func triggerOptions() Options {
	return Options{Poll: gitpoll.Options{RefreshInterval: time.Millisecond, Timeout: 10 * time.Second}}
}

// builtFrom checks that pod builds commit (the context pinned to it) and pushes the tags
// made from it.
func builtFrom(t *testing.T, pod *corev1.Pod, repoURL, commit string, number int) {
	t.Helper()
	args := pod.Spec.Containers[0].Args
	for _, want := range []string{
		"--context=" + repoURL + "#" + commit,
		"--destination=registry.example.com/org/app:main-" + commit[:7],
		fmt.Sprintf("--destination=registry.example.com/org/app:build-%d", number),
	} {
		if !slices.Contains(args, want) {
			t.Errorf("pod %s: args %v lack %s", pod.Name, args, want)
		}
	}
}

func commitResult(commit string) string {
	return encodeResult(result.Result{Success: true, Digest: testDigest, Commit: commit})
}

// An ImageBuild that follows its branch builds each commit the branch moves to, pinned to
// that commit, with the tags made from it; a push reported by a webhook (the annotation the
// receiver writes) makes the manager list the refs at once; under runPolicy Serial a push
// during a build waits in status.next, the newest one only.
func TestImageBuildReconciler_Reconcile_followsItsBranch(t *testing.T) {
	repo := newGitRepo(t)
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, triggerOptions())
	k := kubelet{t, c}
	startedBefore := map[v1alpha1.BuildCause]float64{}
	for _, cause := range []v1alpha1.BuildCause{v1alpha1.CauseCreated, v1alpha1.CauseWebhook} {
		startedBefore[cause] = counterValue(t, "slipway_builds_started_total", map[string]string{"cause": string(cause)})
	}
	key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicySerial)

	// Build 1: the spec's, pinned to the commit a listing found.
	a := repo.head()
	builtFrom(t, waitPod(t, c, ns, "app-1-1"), repo.url, a, 1)
	k.finish(ns, "app-1-1", 0, "Completed", commitResult(a))
	ib := waitStatus(t, c, key, "build 1 succeeded", phaseIs(v1alpha1.PhaseSucceeded))
	if ib.Status.BuildNumber != 1 || ib.Status.Cause != v1alpha1.CauseCreated || len(ib.Status.History) != 1 ||
		ib.Status.History[0].Commit != a || ib.Status.History[0].Result != v1alpha1.BuildResultSucceeded {
		t.Fatalf("after build 1: %s; history %+v", describe(ib), ib.Status.History)
	}

	// A push reported by a webhook: build 2, of the new commit.
	b := repo.push("two")
	pushed(t, c, key)
	builtFrom(t, waitPod(t, c, ns, "app-1-2"), repo.url, b, 2)
	ib = waitStatus(t, c, key, "build 2 started", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == 2 })
	if ib.Status.Cause != v1alpha1.CauseWebhook {
		t.Errorf("build 2's cause = %s, want Webhook", ib.Status.Cause)
	}
	k.run(ns, "app-1-2")

	// Two pushes while build 2 runs: only the newest waits.
	repo.push("three")
	pushed(t, c, key)
	d := repo.push("four")
	pushed(t, c, key)
	ib = waitStatus(t, c, key, "the newest push waiting", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.Next != nil && ib.Status.Next.Commit == d
	})
	if ib.Status.BuildNumber != 2 || ib.Status.Phase != v1alpha1.PhaseRunning {
		t.Errorf("a push during build 2 changed it: %s", describe(ib))
	}
	if names := podNames(t, c, ns); len(names) != 2 {
		t.Errorf("pods = %v, want only those of builds 1 and 2 (Serial)", names)
	}
	k.finish(ns, "app-1-2", 0, "Completed", commitResult(b))
	builtFrom(t, waitPod(t, c, ns, "app-1-3"), repo.url, d, 3)
	ib = waitStatus(t, c, key, "build 3 started", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == 3 })
	if ib.Status.Next != nil || len(ib.Status.History) != 3 || ib.Status.History[1].Result != v1alpha1.BuildResultSucceeded ||
		ib.Status.History[1].Commit != b || ib.Status.History[0].Commit != d {
		t.Errorf("after build 3 started: next %+v, history %+v", ib.Status.Next, ib.Status.History)
	}

	// The events name each build's cause; no event, status or pod names the git password.
	var evs eventsv1.EventList
	if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, e := range evs.Items {
		notes = append(notes, e.Note)
		if strings.Contains(e.Note, gitPassword) {
			t.Errorf("event %q names the git password", e.Note)
		}
	}
	for _, want := range []string{"Build 1 started (cause Created)", "Build 2 started (cause Webhook)", "Build 3 started (cause Webhook)",
		"A webhook push made main resolve to " + d[:12] + "; it starts when build 2 ends (runPolicy Serial)"} {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("no event %q among %q", want, notes)
		}
	}
	if strings.Contains(describe(ib), gitPassword) || strings.Contains(fmt.Sprint(ib.Status.History), gitPassword) {
		t.Error("the status names the git password")
	}
	// slipway_builds_started_total counts builds by cause (other tests' builds may add to it).
	for cause, n := range map[v1alpha1.BuildCause]float64{v1alpha1.CauseCreated: 1, v1alpha1.CauseWebhook: 2} {
		if got := counterValue(t, "slipway_builds_started_total", map[string]string{"cause": string(cause)}) - startedBefore[cause]; got < n {
			t.Errorf("slipway_builds_started_total{cause=%s} grew by %v, want at least %v", cause, got, n)
		}
	}
}

// pin waits (reason Resolving) for a listing that began after the build was asked for, then
// pins the build to its commit; a failed listing leaves the build unpinned.
func TestImageBuildReconciler_pin(t *testing.T) {
	asked := t0.Add(time.Minute).Add(123 * time.Millisecond)
	r := &ImageBuildReconciler{Poller: gitpoll.New(gitpoll.Options{})}
	r.initTriggers()
	newIB := func() *v1alpha1.ImageBuild {
		return built(v1alpha1.PhasePending, func(ib *v1alpha1.ImageBuild) {
			ib.Status.History[0].Commit = ""
			ib.Status.History[0].StartTime = &metav1.Time{Time: asked}
		})
	}
	tests := []struct {
		name       string
		obs        observed
		wantPinned string
		wantWait   bool
	}{
		{"a listing from before the request is waited out", observed{following: true, commit: commitA, startedAt: asked.Add(-time.Millisecond)}, "", true},
		{"a listing begun after the request pins its commit", observed{following: true, commit: commitB, startedAt: asked.Add(time.Millisecond)}, commitB, false},
		{"not followed (its Secret is missing): not waited for, the build reports the Secret", observed{}, "", false},
		{"a failed listing after the request leaves it unpinned",
			observed{commit: commitA, startedAt: asked.Add(time.Millisecond), listErr: errors.New("connection refused")}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := newIB()
			wait, ok := r.pin(ib, tc.obs, asked)
			if ok == tc.wantWait || (tc.wantWait && wait <= 0) {
				t.Fatalf("pin = %v, %v; want waiting %v", wait, ok, tc.wantWait)
			}
			if got := pinnedCommit(ib); got != tc.wantPinned {
				t.Errorf("pinned %q, want %q", got, tc.wantPinned)
			}
			if cond := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready"); tc.wantWait &&
				(cond == nil || cond.Reason != v1alpha1.ReasonResolving || !strings.Contains(cond.Message, "Resolving main of")) {
				t.Errorf("Ready = %+v, want reason Resolving", cond)
			}
		})
	}
	// Read back from the API server, the request time has lost its fraction of a second: a
	// listing must begin a whole second after it.
	ib := newIB()
	ib.Status.History[0].StartTime = &metav1.Time{Time: asked.Truncate(time.Second)}
	if _, ok := r.pin(ib, observed{following: true, commit: commitB, startedAt: asked.Truncate(time.Second).Add(500 * time.Millisecond)}, asked); ok {
		t.Error("pinned to a listing that may have begun before the request")
	}
}

// A manager that starts finds the branch moved since the latest build: a build of cause
// Commit (no webhook asked for it).
func TestImageBuildReconciler_Reconcile_restartFindsANewCommit(t *testing.T) {
	repo := newGitRepo(t)
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	m := startManager(t, ns, triggerOptions())
	k := kubelet{t, c}
	key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicySerial)
	a := repo.head()
	waitPod(t, c, ns, "app-1-1")
	k.finish(ns, "app-1-1", 0, "Completed", commitResult(a))
	waitStatus(t, c, key, "build 1 succeeded", phaseIs(v1alpha1.PhaseSucceeded))
	m.stop()
	// A manager that did not start build 1 knows when it was asked for only to the second (as
	// the API server keeps times), so only a listing begun a second after that counts: a
	// restart within the same second waits for the next interval.
	time.Sleep(1100 * time.Millisecond)

	b := repo.push("two")
	startManager(t, ns, triggerOptions())
	builtFrom(t, waitPod(t, c, ns, "app-1-2"), repo.url, b, 2)
	ib := waitStatus(t, c, key, "build 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == 2 })
	if ib.Status.Cause != v1alpha1.CauseCommit {
		t.Errorf("cause = %s, want Commit", ib.Status.Cause)
	}
}

// runPolicy SerialLatestOnly stops the running build for the new commit (Superseded);
// Parallel lets both run and records each.
func TestImageBuildReconciler_Reconcile_runPolicies(t *testing.T) {
	t.Run("SerialLatestOnly", func(t *testing.T) {
		repo := newGitRepo(t)
		c := startEnv(t)
		ns := newNamespace(t, c, nil)
		startManager(t, ns, triggerOptions())
		k := kubelet{t, c}
		key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicySerialLatestOnly)
		waitPod(t, c, ns, "app-1-1")
		k.run(ns, "app-1-1")
		waitStatus(t, c, key, "build 1 running", phaseIs(v1alpha1.PhaseRunning))

		b := repo.push("two")
		pushed(t, c, key)
		waitPodGone(t, c, ns, "app-1-1")
		builtFrom(t, waitPod(t, c, ns, "app-1-2"), repo.url, b, 2)
		ib := waitStatus(t, c, key, "build 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == 2 })
		if len(ib.Status.History) != 2 || ib.Status.History[1].Result != v1alpha1.BuildResultSuperseded {
			t.Errorf("history = %+v, want build 1 Superseded", ib.Status.History)
		}
	})
	t.Run("Parallel", func(t *testing.T) {
		repo := newGitRepo(t)
		c := startEnv(t)
		ns := newNamespace(t, c, nil)
		startManager(t, ns, triggerOptions())
		k := kubelet{t, c}
		key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicyParallel)
		a := repo.head()
		waitPod(t, c, ns, "app-1-1")
		k.run(ns, "app-1-1")
		waitStatus(t, c, key, "build 1 running", phaseIs(v1alpha1.PhaseRunning))

		b := repo.push("two")
		pushed(t, c, key)
		builtFrom(t, waitPod(t, c, ns, "app-1-2"), repo.url, b, 2)
		time.Sleep(300 * time.Millisecond)
		if names := podNames(t, c, ns); !slices.Equal(names, []string{"app-1-1", "app-1-2"}) {
			t.Errorf("pods = %v, want builds 1 and 2 running side by side", names)
		}
		// Build 1 ends after build 2 started: its record says so, the status stays build 2's.
		k.finish(ns, "app-1-1", 0, "Completed", commitResult(a))
		ib := waitStatus(t, c, key, "build 1 recorded", func(ib *v1alpha1.ImageBuild) bool {
			return len(ib.Status.History) == 2 && ib.Status.History[1].Result == v1alpha1.BuildResultSucceeded
		})
		if ib.Status.BuildNumber != 2 || ib.Status.Phase.Finished() || ib.Status.History[1].Digest != testDigest {
			t.Errorf("after build 1 ended: %s; history %+v", describe(ib), ib.Status.History)
		}
		k.finish(ns, "app-1-2", 0, "Completed", commitResult(b))
		ib = waitStatus(t, c, key, "build 2 succeeded", phaseIs(v1alpha1.PhaseSucceeded))
		if ib.Status.History[0].Result != v1alpha1.BuildResultSucceeded || ib.Status.History[0].Commit != b {
			t.Errorf("history = %+v", ib.Status.History)
		}
	})
}

// A spec change while a build runs stops it (Superseded) whatever the policy, and the next
// build is pinned to the branch as it is then.
func TestImageBuildReconciler_Reconcile_specChangeSupersedes(t *testing.T) {
	repo := newGitRepo(t)
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, triggerOptions())
	k := kubelet{t, c}
	key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicyParallel)
	waitPod(t, c, ns, "app-1-1")
	k.run(ns, "app-1-1")

	b := repo.push("two")
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Spec.Target = "runtime"
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatal(err)
	}
	waitPodGone(t, c, ns, "app-1-1")
	builtFrom(t, waitPod(t, c, ns, "app-2-1"), repo.url, b, 2)
	ib = waitStatus(t, c, key, "build 2", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == 2 })
	if ib.Status.Cause != v1alpha1.CauseSpecChanged || ib.Status.History[1].Result != v1alpha1.BuildResultSuperseded {
		t.Errorf("cause %s, history %+v: want SpecChanged and build 1 Superseded", ib.Status.Cause, ib.Status.History)
	}
}

// triggers.baseImages: once the tag a successful build was FROM names another image (the
// registry's tag re-pushed), the next build starts (cause BaseImage), of the same commit. The
// registry requires the credentials of the push Secret (that they go to no other registry is
// baseimage's TestCheck_credentialsOnlyToTheirRegistry).
func TestImageBuildReconciler_Reconcile_baseImageMoved(t *testing.T) {
	repo := newGitRepo(t)
	const user, password = "puller", "base-passw0rd"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	base := reg.Ref("library/debian:12")
	first := pushRandom(t, base, reg)

	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	opts := triggerOptions()
	opts.BaseImageInterval = 200 * time.Millisecond
	startManager(t, ns, opts)
	k := kubelet{t, c}
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "push", Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		StringData: map[string]string{".dockerconfigjson": `{"auths":{"` + reg.Host() + `":{"auth":"` + auth + `"}}}`}}); err != nil {
		t.Fatal(err)
	}
	key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicySerial)
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Spec.Triggers = &v1alpha1.Triggers{BaseImages: true}
	ib.Spec.Output.PushSecretRef = &corev1.LocalObjectReference{Name: "push"}
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatal(err)
	}
	ib = waitStatus(t, c, key, "the build of generation 2", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.ObservedGeneration == 2 && ib.Status.PodName != ""
	})
	a := repo.head()
	k.finish(ns, ib.Status.PodName, 0, "Completed", encodeResult(result.Result{Success: true, Digest: testDigest, Commit: a,
		Bases: []result.Base{{Ref: base, Digest: first}}}))
	ib = waitStatus(t, c, key, "built", phaseIs(v1alpha1.PhaseSucceeded))
	n := ib.Status.BuildNumber
	if len(ib.Status.BaseImages) != 1 || ib.Status.BaseImages[0].Digest != first {
		t.Fatalf("baseImages = %+v, want %s at %s", ib.Status.BaseImages, base, first)
	}
	// Checked every 200ms: the tag has not moved, nothing starts.
	time.Sleep(time.Second)
	if got := waitStatus(t, c, key, "still built", phaseIs(v1alpha1.PhaseSucceeded)); got.Status.BuildNumber != n {
		t.Fatalf("a build started while the base had not moved: %s", describe(got))
	}

	second := pushRandom(t, base, reg)
	ib = waitStatus(t, c, key, "the base image's build", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == n+1 })
	if ib.Status.Cause != v1alpha1.CauseBaseImage || ib.Status.History[0].Commit != a {
		t.Errorf("cause %s, history %+v: want BaseImage, of commit %s", ib.Status.Cause, ib.Status.History, a)
	}
	builtFrom(t, waitPod(t, c, ns, ib.Status.PodName), repo.url, a, int(n+1))

	// That build pulls the moved base and says so: nothing starts again while the tag stays.
	k.finish(ns, ib.Status.PodName, 0, "Completed", encodeResult(result.Result{Success: true, Digest: testDigest, Commit: a,
		Bases: []result.Base{{Ref: base, Digest: second}}}))
	ib = waitStatus(t, c, key, "the base image's build done", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.BuildNumber == n+1 && ib.Status.Phase == v1alpha1.PhaseSucceeded
	})
	if len(ib.Status.BaseImages) != 1 || ib.Status.BaseImages[0].Digest != second {
		t.Errorf("baseImages = %+v, want %s at %s", ib.Status.BaseImages, base, second)
	}
	time.Sleep(time.Second) // five checks
	if got := waitStatus(t, c, key, "still built", phaseIs(v1alpha1.PhaseSucceeded)); got.Status.BuildNumber != n+1 {
		t.Fatalf("a build started though the base has not moved since: %s", describe(got))
	}
}

// pushRandom pushes a random image to ref and returns its digest.
func pushRandom(t *testing.T, ref string, reg *testenv.Registry) string {
	t.Helper()
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestPollingLoad measures issue 14's load figure: 200 ImageBuilds that follow the same branch
// of one repository with the same credentials make one listing per interval between them,
// not 200. It takes a few minutes (intervals are at least 30 s), so it runs only with
// SLIPWAY_BENCH=1 (`make bench-load` runs it) and prints what it counted at the git server.
func TestPollingLoad(t *testing.T) {
	if os.Getenv("SLIPWAY_BENCH") != "1" {
		t.Skip("a benchmark of several minutes: SLIPWAY_BENCH=1 runs it (make bench-load)")
	}
	const n, interval, intervals = 200, 30 * time.Second, 3
	root := t.TempDir()
	work := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, work, map[string]string{"Dockerfile": "FROM scratch\n"})
	gitserver.Commit(t, work, "first")
	gitserver.Publish(t, work, root, "org/app.git", true)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("ci", gitPassword), gitserver.WithSpy(spy))
	url := srv.URL + "/org/app.git"

	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": "ci", "password": gitPassword}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range n {
		newImageBuild(t, c, ns, fmt.Sprintf("app-%03d", i), func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Source.Git = v1alpha1.GitSource{URL: url, Revision: "main", SecretRef: &corev1.LocalObjectReference{Name: "git"},
				Interval: &metav1.Duration{Duration: interval}}
		})
	}
	eventually(t, 2*time.Minute, "every build pinned", func() (bool, string) {
		var ibs v1alpha1.ImageBuildList
		if err := c.List(context.Background(), &ibs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		pinned := 0
		for _, ib := range ibs.Items {
			if ib.Status.PodName != "" && pinnedCommit(&ib) != "" {
				pinned++
			}
		}
		return pinned == n, fmt.Sprintf("%d of %d pinned", pinned, n)
	})
	settled := time.Now()
	// Only listings reach the git server here: envtest runs no executor pod.
	base := countListings(spy)
	time.Sleep(intervals * interval)
	listings := countListings(spy) - base
	t.Logf("polling load: %d ImageBuilds, one repository, interval %s: %d listings to pin every first build (in %.1f s); "+
		"then %d listings in %d intervals (%.1f per interval; %d if each ImageBuild listed for itself)",
		n, interval, base, settled.Sub(start).Seconds(), listings, intervals, float64(listings)/intervals, n*intervals)
	if listings > intervals+1 {
		t.Errorf("%d listings in %d intervals, want at most one per interval", listings, intervals)
	}
}

// countListings counts the requests that carried the credentials: one per listing (a 401
// challenge, if the client waited for one, is not a listing).
func countListings(spy *gitserver.Spy) int {
	return len(spy.Credentialed())
}

// An ImageBuild that follows its revision with a source Secret that does not exist yet says
// SecretNotFound (not Resolving for ever); once the Secret is there its build is pinned.
func TestImageBuildReconciler_Reconcile_followingWaitsForItsSecret(t *testing.T) {
	repo := newGitRepo(t)
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, triggerOptions())
	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Source.Git = v1alpha1.GitSource{URL: repo.url, Revision: "main", SecretRef: &corev1.LocalObjectReference{Name: "git"},
			Interval: &metav1.Duration{Duration: 30 * time.Second}}
		ib.Spec.Output.AdditionalTags = []string{"{{.Branch}}-{{.ShortCommit}}", "build-{{.BuildNumber}}"}
	})
	waitStatus(t, c, key, "SecretNotFound", conditionIs("Ready", metav1.ConditionFalse, "SecretNotFound"))
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": "ci", "password": gitPassword}}); err != nil {
		t.Fatal(err)
	}
	builtFrom(t, waitPod(t, c, ns, "app-1-1"), repo.url, repo.head(), 1)
}

// The API server refuses what the triggers cannot use: an interval out of bounds, an unknown
// run policy or template field, a template with anything but fields, an optional webhook
// Secret, a history out of bounds; it takes the README's example, with its defaults.
func TestImageBuild_validation_triggers(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	tests := []struct {
		name   string
		mutate func(*v1alpha1.ImageBuild)
		want   string
	}{
		{"interval under 30s", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Source.Git.Interval = &metav1.Duration{Duration: 10 * time.Second}
		}, "spec.source.git.interval"},
		{"interval over a week", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Source.Git.Interval = &metav1.Duration{Duration: 200 * time.Hour}
		}, "spec.source.git.interval"},
		{"unknown run policy", func(ib *v1alpha1.ImageBuild) { ib.Spec.RunPolicy = "Sometimes" }, "spec.runPolicy"},
		{"unknown template field", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output.AdditionalTags = []string{"{{.Author}}"} }, "spec.output.additionalTags[0]"},
		{"template function", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Output.AdditionalTags = []string{`{{printf "%s" .Branch}}`}
		}, "spec.output.additionalTags[0]"},
		{"template pipeline", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Output.AdditionalTags = []string{"{{.Branch | html}}"}
		}, "spec.output.additionalTags[0]"},
		{"template starting a tag with a dot", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Output.AdditionalTags = []string{".{{.Branch}}"}
		}, "spec.output.additionalTags[0]"},
		{"optional webhook Secret", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Triggers = &v1alpha1.Triggers{Webhook: &v1alpha1.WebhookTrigger{SecretRef: corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "hook"}, Key: "secret", Optional: ptr.To(true)}}}
		}, "optional is not supported"},
		{"history of 0", func(ib *v1alpha1.ImageBuild) { ib.Spec.Retention = &v1alpha1.Retention{History: ptr.To[int32](0)} }, "spec.retention.history"},
		{"history over 100", func(ib *v1alpha1.ImageBuild) { ib.Spec.Retention = &v1alpha1.Retention{History: ptr.To[int32](101)} }, "spec.retention.history"},
	}
	base := func(name string) *v1alpha1.ImageBuild {
		return &v1alpha1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ImageBuildSpec{
				Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://github.com/slipway-dev/demo", Revision: "main"}},
				Output: v1alpha1.Output{Image: "registry.example.com/team-a/demo:latest"},
			},
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := base("bad")
			tc.mutate(ib)
			err := c.Create(context.Background(), ib)
			if err == nil {
				_ = c.Delete(context.Background(), ib)
				t.Fatal("the API server accepted the ImageBuild")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}

	good := base("good")
	good.Spec.Source.Git.Interval = &metav1.Duration{Duration: 5 * time.Minute}
	good.Spec.Triggers = &v1alpha1.Triggers{BaseImages: true, Webhook: &v1alpha1.WebhookTrigger{SecretRef: corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "demo-webhook"}, Key: "secret"}}}
	good.Spec.Output.AdditionalTags = []string{"{{.Branch}}-{{.ShortCommit}}-{{.Timestamp}}", "build-{{ .BuildNumber }}", "{{.Commit}}", "stable"}
	good.Spec.Retention = &v1alpha1.Retention{}
	if err := c.Create(context.Background(), good); err != nil {
		t.Fatalf("the README's example was refused: %v", err)
	}
	if good.Spec.RunPolicy != v1alpha1.RunPolicySerial || good.Spec.Retention.History == nil || *good.Spec.Retention.History != 10 {
		t.Errorf("defaults: runPolicy %q, retention %+v; want Serial and history 10", good.Spec.RunPolicy, good.Spec.Retention)
	}
}

// The first listing begun after this manager saw a new webhook annotation is the webhook's
// (what it finds moved has cause Webhook); later listings are polling's; an annotation written
// long before the manager first saw it (a restart) is nobody's push.
func TestImageBuildReconciler_webhookReceived(t *testing.T) {
	r := &ImageBuildReconciler{Poller: gitpoll.New(gitpoll.Options{})}
	r.initTriggers()
	seen := t0.Add(time.Hour)
	ib := makeImageBuild("app", "ns").Obj()
	key := client.ObjectKeyFromObject(ib)
	ib.Annotations = map[string]string{WebhookAnnotation: seen.Add(-time.Second).Format(time.RFC3339Nano)}
	steps := []struct {
		name    string
		now     time.Time
		listing time.Time
		want    bool
	}{
		{"a listing begun before the push was seen", seen, seen.Add(-time.Minute), false},
		{"the first listing begun after it", seen.Add(time.Second), seen.Add(500 * time.Millisecond), true},
		{"the same listing, read again", seen.Add(2 * time.Second), seen.Add(500 * time.Millisecond), true},
		{"the next listing (polling)", seen.Add(time.Minute), seen.Add(30 * time.Second), false},
	}
	for _, s := range steps {
		if got := r.webhookReceived(ib, key, s.now, s.listing); got != s.want {
			t.Errorf("%s: webhookReceived = %v, want %v", s.name, got, s.want)
		}
	}
	ib.Annotations[WebhookAnnotation] = t0.Format(time.RFC3339Nano) // another push, written an hour before it is seen
	if r.webhookReceived(ib, key, seen, seen) || r.webhookReceived(ib, key, seen.Add(time.Second), seen.Add(time.Second)) {
		t.Error("an annotation written long before the manager saw it was taken for a push")
	}
}
