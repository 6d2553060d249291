package controllers

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

const (
	commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	commitC = "cccccccccccccccccccccccccccccccccccccccc"
)

// built is an ImageBuild whose build 1 (cause Created, commit A) is in phase.
func built(phase v1alpha1.BuildPhase, mutate ...func(*v1alpha1.ImageBuild)) *v1alpha1.ImageBuild {
	ib := makeImageBuild("app", "ns").Revision("main").Generation(1).Obj()
	ib.Spec.Source.Git.Interval = &metav1.Duration{Duration: time.Minute}
	res := v1alpha1.BuildResultRunning
	switch phase {
	case v1alpha1.PhaseSucceeded:
		res = v1alpha1.BuildResultSucceeded
	case v1alpha1.PhaseFailed:
		res = v1alpha1.BuildResultFailed
	}
	ib.Status = v1alpha1.ImageBuildStatus{
		Phase: phase, ObservedGeneration: 1, Attempt: 1, BuildNumber: 1, Cause: v1alpha1.CauseCreated, PodName: "app-1-1",
		History: []v1alpha1.BuildRecord{{Number: 1, Cause: v1alpha1.CauseCreated, Commit: commitA, PodName: "app-1-1",
			StartTime: &metav1.Time{Time: t0}, Result: res}},
	}
	for _, m := range mutate {
		m(ib)
	}
	return ib
}

func TestTriggeredBuild(t *testing.T) {
	now := t0.Add(time.Hour)
	tests := []struct {
		name  string
		ib    *v1alpha1.ImageBuild
		obs   observed
		cause v1alpha1.BuildCause // "" for none
		want  string              // the request's commit
	}{
		{"the revision at the built commit asks for nothing", built(v1alpha1.PhaseSucceeded), observed{fresh: true, commit: commitA}, "", ""},
		{"a new commit asks for a build", built(v1alpha1.PhaseSucceeded), observed{fresh: true, commit: commitB}, v1alpha1.CauseCommit, commitB},
		{"a new commit while building asks too (the run policy decides)", built(v1alpha1.PhaseRunning), observed{fresh: true, commit: commitB}, v1alpha1.CauseCommit, commitB},
		{"a failed build at the same commit is not tried again", built(v1alpha1.PhaseFailed), observed{fresh: true, commit: commitA}, "", ""},
		{"a failed build and a new commit: built", built(v1alpha1.PhaseFailed), observed{fresh: true, commit: commitB}, v1alpha1.CauseCommit, commitB},
		{"found by the listing a webhook asked for: cause Webhook", built(v1alpha1.PhaseSucceeded),
			observed{fresh: true, commit: commitB, byWebhook: true}, v1alpha1.CauseWebhook, commitB},
		{"the commit already waiting in status.next is not asked again", built(v1alpha1.PhaseRunning, func(ib *v1alpha1.ImageBuild) {
			ib.Status.Next = &v1alpha1.BuildRequest{Cause: v1alpha1.CauseCommit, Commit: commitB}
		}), observed{fresh: true, commit: commitB}, "", ""},
		{"a newer commit than status.next's replaces it", built(v1alpha1.PhaseRunning, func(ib *v1alpha1.ImageBuild) {
			ib.Status.Next = &v1alpha1.BuildRequest{Cause: v1alpha1.CauseCommit, Commit: commitB}
		}), observed{fresh: true, commit: commitC}, v1alpha1.CauseCommit, commitC},
		{"an unpinned build that has not said its commit is waited for", built(v1alpha1.PhaseRunning, func(ib *v1alpha1.ImageBuild) {
			ib.Status.History[0].Commit = ""
		}), observed{fresh: true, commit: commitB}, "", ""},
		{"the first build is the spec's", built(v1alpha1.PhaseRunning, func(ib *v1alpha1.ImageBuild) { ib.Status.BuildNumber = 0 }),
			observed{fresh: true, commit: commitB}, "", ""},
		{"a moved base after a success asks for a build of the same commit", built(v1alpha1.PhaseSucceeded),
			observed{fresh: true, commit: commitA, baseChanged: true}, v1alpha1.CauseBaseImage, commitA},
		{"a moved base after a failure does not (it would fail again)", built(v1alpha1.PhaseFailed),
			observed{fresh: true, commit: commitA, baseChanged: true}, "", ""},
		{"a moved base while building does not (the build pulls it)", built(v1alpha1.PhaseRunning),
			observed{fresh: true, commit: commitA, baseChanged: true}, "", ""},
		{"a failed listing's last commit does not (a build may have fetched a newer one since)", built(v1alpha1.PhaseSucceeded),
			observed{fresh: true, commit: commitB, listErr: errors.New("401")}, "", ""},
		{"a listing begun before the latest build was asked for does not", built(v1alpha1.PhaseSucceeded),
			observed{commit: commitB}, "", ""},
		{"a new commit wins over a moved base", built(v1alpha1.PhaseSucceeded),
			observed{fresh: true, commit: commitB, baseChanged: true}, v1alpha1.CauseCommit, commitB},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := triggeredBuild(tc.ib, tc.obs, now)
			switch {
			case tc.cause == "" && req != nil:
				t.Errorf("triggeredBuild = %+v, want none", *req)
			case tc.cause != "" && req == nil:
				t.Errorf("triggeredBuild = none, want cause %s", tc.cause)
			case req != nil && (req.Cause != tc.cause || req.Commit != tc.want || !req.Time.Time.Equal(now)):
				t.Errorf("triggeredBuild = %+v, want cause %s commit %s at %v", *req, tc.cause, tc.want, now)
			}
		})
	}
}

func TestStartBuild(t *testing.T) {
	now := t0.Add(time.Minute)
	ib := built(v1alpha1.PhaseRunning, func(ib *v1alpha1.ImageBuild) {
		ib.Status.BaseImages = []v1alpha1.BaseImage{{Reference: "docker.io/library/debian:12", Digest: "sha256:1"}}
		ib.Status.Next = &v1alpha1.BuildRequest{Cause: v1alpha1.CauseCommit, Commit: commitB}
	})
	req := v1alpha1.BuildRequest{Cause: v1alpha1.CauseCommit, Commit: commitB, Time: metav1.NewTime(now)}

	st := startBuild(ib, req, false, now)
	if st.BuildNumber != 2 || st.Cause != v1alpha1.CauseCommit || st.Attempt != 2 || st.Phase != v1alpha1.PhasePending || st.PodName != "" || st.Next != nil {
		t.Errorf("status = %+v: want build 2, cause Commit, the next attempt (pod name), Pending, no pod, next consumed", st)
	}
	if len(st.History) != 2 || st.History[0].Number != 2 || st.History[0].Commit != commitB || st.History[0].Result != v1alpha1.BuildResultRunning ||
		!st.History[0].StartTime.Time.Equal(now) {
		t.Errorf("history[0] = %+v, want build 2 of %s running since %v", st.History[0], commitB, now)
	}
	if got := st.History[1]; got.Number != 1 || got.Result != v1alpha1.BuildResultSuperseded || got.Duration != "1m0s" {
		t.Errorf("history[1] = %+v, want build 1 Superseded after 1m0s", got)
	}
	if len(st.BaseImages) != 1 {
		t.Errorf("baseImages = %v, want those of the latest success kept", st.BaseImages)
	}

	// Parallel keeps the running build running.
	if st := startBuild(ib, req, true, now); st.History[1].Result != v1alpha1.BuildResultRunning {
		t.Errorf("with keepRunning, history[1] = %+v, want it still Running", st.History[1])
	}

	// The history keeps retention.history records, and every build still running.
	ib.Spec.Retention = &v1alpha1.Retention{History: ptrInt32(2)}
	for i := 0; i < 4; i++ {
		ib.Status = startBuild(ib, req, true, now)
	}
	if n := len(ib.Status.History); n != 5 {
		t.Errorf("history of 5 running builds with retention.history 2 has %d records, want all 5", n)
	}
	for i := range ib.Status.History {
		ib.Status.History[i].Result = v1alpha1.BuildResultSucceeded
	}
	ib.Status = startBuild(ib, req, false, now)
	if n := len(ib.Status.History); n != 2 || ib.Status.History[0].Number != 6 || ib.Status.History[1].Number != 5 {
		t.Errorf("history = %+v, want builds 6 and 5 only", ib.Status.History)
	}
}

func ptrInt32(v int32) *int32 { return &v }

func TestRecordLatest(t *testing.T) {
	ib := built(v1alpha1.PhaseRunning)
	st := ib.Status
	st.Phase = v1alpha1.PhaseSucceeded
	st.Duration = "1.5s"
	st.Image = &v1alpha1.ImageStatus{Digest: testDigest}
	pod := makePod("app-1-1").Phase(corev1.PodSucceeded).Obj()
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Message: encodeResult(result.Result{Success: true, Digest: testDigest, Commit: commitA,
			Bases: []result.Base{{Ref: "docker.io/library/busybox:1.36", Digest: "sha256:abc"}}}),
	}}}}
	recordLatest(&st, pod)
	got := st.History[0]
	if got.Result != v1alpha1.BuildResultSucceeded || got.Digest != testDigest || got.Duration != "1.5s" || got.Commit != commitA ||
		len(got.BaseImages) != 1 || got.BaseImages[0] != "docker.io/library/busybox:1.36@sha256:abc" {
		t.Errorf("record = %+v", got)
	}

	// A pinned build keeps its pin whatever the executor's result says.
	pinned := ib.Status.DeepCopy()
	pinned.Phase = v1alpha1.PhaseSucceeded
	res := commitResult(commitB)
	podB := makePod("app-1-1").Phase(corev1.PodSucceeded).Obj()
	podB.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: res}}}}
	recordLatest(pinned, podB)
	if got := pinned.History[0].Commit; got != commitA {
		t.Errorf("a pinned build's commit became %s after a result naming %s, want its pin %s", got, commitB, commitA)
	}
	// An unpinned build takes the result's commit, if it names one.
	for _, c := range []struct{ reported, want string }{{commitB, commitB}, {"ref:subdir", ""}, {"main", ""}} {
		unpinned := ib.Status.DeepCopy()
		unpinned.History[0].Commit = ""
		podC := podB.DeepCopy()
		podC.Status.ContainerStatuses[0].State.Terminated.Message = commitResult(c.reported)
		recordLatest(unpinned, podC)
		if got := unpinned.History[0].Commit; got != c.want {
			t.Errorf("an unpinned build reporting commit %q recorded %q, want %q", c.reported, got, c.want)
		}
	}

	st.Phase = v1alpha1.PhaseFailed
	st.Failure = &v1alpha1.Failure{Reason: "RunFailed"}
	recordLatest(&st, nil)
	if got := st.History[0]; got.Result != v1alpha1.BuildResultFailed || got.Reason != "RunFailed" {
		t.Errorf("record of a failure = %+v", got)
	}
	// A failure that will be retried (phase Pending again) still runs.
	st.Phase = v1alpha1.PhasePending
	recordLatest(&st, nil)
	if got := st.History[0]; got.Result != v1alpha1.BuildResultRunning {
		t.Errorf("record of a build waiting for a retry = %+v, want Running", got)
	}
}

func TestRecordParallel(t *testing.T) {
	now := t0.Add(time.Minute)
	st := v1alpha1.ImageBuildStatus{BuildNumber: 3, History: []v1alpha1.BuildRecord{
		{Number: 3, PodName: "app-1-3", Result: v1alpha1.BuildResultRunning, StartTime: &metav1.Time{Time: t0}},
		{Number: 2, PodName: "app-1-2", Result: v1alpha1.BuildResultRunning, StartTime: &metav1.Time{Time: t0}},
		{Number: 1, PodName: "app-1-1", Result: v1alpha1.BuildResultRunning, StartTime: &metav1.Time{Time: t0}},
	}}
	pods := []corev1.Pod{
		*makePod("app-1-3").Phase(corev1.PodRunning).Obj(),
		*makePod("app-1-2").Terminated(t0, t0.Add(30*time.Second), 0, "Completed",
			encodeResult(result.Result{Success: true, Digest: testDigest, Commit: commitB})).Phase(corev1.PodSucceeded).Obj(),
	}
	if !recordParallel(&st, pods, now) {
		t.Fatal("recordParallel reported no change")
	}
	if got := st.History[0]; got.Result != v1alpha1.BuildResultRunning {
		t.Errorf("the latest build's record = %+v: recordParallel leaves it to recordLatest", got)
	}
	if got := st.History[1]; got.Result != v1alpha1.BuildResultSucceeded || got.Digest != testDigest || got.Commit != commitB || got.Duration != "30s" {
		t.Errorf("build 2 = %+v, want Succeeded with its digest and commit after 30s", got)
	}
	if got := st.History[2]; got.Result != v1alpha1.BuildResultFailed || got.Reason != v1alpha1.ReasonPodDeleted {
		t.Errorf("build 1 (pod gone) = %+v, want Failed, PodDeleted", got)
	}
	if names := parallelPods(&st); len(names) != 0 {
		t.Errorf("parallelPods = %v, want none left running", names)
	}
}

func TestRenderTags(t *testing.T) {
	ib := built(v1alpha1.PhasePending, func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Source.Git.Revision = "feature/login"
		ib.Spec.Output.AdditionalTags = []string{"latest", "{{.Branch}}-{{.ShortCommit}}-{{.Timestamp}}", "build-{{.BuildNumber}}"}
	})
	tags, err := renderTags(ib, commitA, observed{ref: "refs/heads/feature/login"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"latest", "feature-login-aaaaaaa-" + strconv.FormatInt(t0.Unix(), 10), "build-1"}
	if strings.Join(tags, " ") != strings.Join(want, " ") {
		t.Errorf("tags = %v, want %v", tags, want)
	}
	_, err = renderTags(ib, "", observed{listErr: errors.New("listing the refs of https://git.example.com/org/app.git: connection refused")})
	if err == nil || !strings.Contains(err.Error(), "needs the commit") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("renderTags without the commit: %v, want an error naming why the commit is unknown", err)
	}
	if !follows(ib) {
		t.Error("an ImageBuild with source.git.interval does not follow its revision")
	}
	ib.Spec.Source.Git.Interval = nil
	if !follows(ib) {
		t.Error("an ImageBuild with a tag made from the commit does not follow its revision")
	}
	ib.Spec.Output.AdditionalTags = []string{"build-{{.BuildNumber}}"}
	if follows(ib) {
		t.Error("an ImageBuild with no interval, webhook or commit tag follows its revision")
	}
}
