package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/baseimage"
	"github.com/slipway-dev/slipway/controllers/gitpoll"
)

// defaultHistory is how many builds status.history keeps when spec.retention.history is unset.
const defaultHistory = 10

func historyLimit(ib *v1alpha1.ImageBuild) int {
	if r := ib.Spec.Retention; r != nil && r.History != nil && *r.History > 0 {
		return int(*r.History)
	}
	return defaultHistory
}

// runPolicy is ib's run policy, Serial when unset (objects stored before the field had a default).
func runPolicy(ib *v1alpha1.ImageBuild) v1alpha1.RunPolicy {
	if ib.Spec.RunPolicy == "" {
		return v1alpha1.RunPolicySerial
	}
	return ib.Spec.RunPolicy
}

// specCause is the cause of the build that a new generation or rebuild annotation asks for.
func specCause(ib *v1alpha1.ImageBuild) v1alpha1.BuildCause {
	switch {
	case ib.Status.ObservedGeneration == 0:
		return v1alpha1.CauseCreated
	case ib.Status.ObservedGeneration != ib.Generation:
		return v1alpha1.CauseSpecChanged
	}
	return v1alpha1.CauseManual
}

// startBuild returns the status of the next build of ib, started at now for req: build number
// one more than the latest, the next attempt (newBuildStatus), and a history record (result
// Running) in front of the history, which keeps at most historyLimit records. The latest
// build's record, if it still runs, becomes Superseded unless keepRunning (runPolicy Parallel
// keeps it running beside the new one). A pending request (status.next) is consumed; what the
// latest successful build was FROM (status.baseImages) is kept for the base image trigger.
func startBuild(ib *v1alpha1.ImageBuild, req v1alpha1.BuildRequest, keepRunning bool, now time.Time) v1alpha1.ImageBuildStatus {
	prev := &ib.Status
	st := newBuildStatus(ib)
	st.BuildNumber = prev.BuildNumber + 1
	st.Cause = req.Cause
	st.BaseImages = prev.BaseImages
	history := make([]v1alpha1.BuildRecord, 0, len(prev.History)+1)
	history = append(history, v1alpha1.BuildRecord{
		Number:    st.BuildNumber,
		Cause:     req.Cause,
		Commit:    req.Commit,
		StartTime: &metav1.Time{Time: now},
		Result:    v1alpha1.BuildResultRunning,
	})
	for _, rec := range prev.History {
		if rec.Result == v1alpha1.BuildResultRunning && !keepRunning {
			rec.Result = v1alpha1.BuildResultSuperseded
			rec.Duration = formatDuration(now.Sub(rec.StartTime.Time))
		}
		history = append(history, rec)
	}
	st.History = trimHistory(history, historyLimit(ib))
	return st
}

// trimHistory keeps the newest limit records, and every record of a build that still runs
// (runPolicy Parallel): its pod is found through it.
func trimHistory(h []v1alpha1.BuildRecord, limit int) []v1alpha1.BuildRecord {
	out := h[:0:0]
	for i, rec := range h {
		if i < limit || rec.Result == v1alpha1.BuildResultRunning {
			out = append(out, rec)
		}
	}
	return out
}

// recordLatest copies the latest build's outcome, as st now says it, into its history record:
// its pod, commit, digest, base images (from the executor's result in pod, when it has one),
// duration, and result once it has ended (a failure that will be retried still runs).
func recordLatest(st *v1alpha1.ImageBuildStatus, pod *corev1.Pod) {
	i := recordIndex(st.History, st.BuildNumber)
	if i < 0 {
		return
	}
	rec := &st.History[i]
	if st.PodName != "" {
		rec.PodName = st.PodName
	}
	// The commit a build was pinned to stays its commit: the executor was told to build that
	// one, and what its result says (the executor image is the spec's to choose) does not
	// change what the next listing is compared with. An unpinned build's commit is the one it
	// reports, if it is one (hexadecimal, as git names commits).
	if rec.Commit == "" && st.Source != nil && gitpoll.IsCommit(st.Source.Commit) {
		rec.Commit = st.Source.Commit
	}
	if pod != nil {
		if res, ok := podResult(pod); ok {
			if rec.Commit == "" && gitpoll.IsCommit(res.Commit) {
				rec.Commit = res.Commit
			}
			if len(res.Bases) > 0 {
				rec.BaseImages = make([]string, 0, len(res.Bases))
				for _, b := range res.Bases {
					rec.BaseImages = append(rec.BaseImages, b.Ref+"@"+b.Digest)
				}
			}
		}
	}
	switch {
	case st.Phase == v1alpha1.PhaseSucceeded:
		rec.Result = v1alpha1.BuildResultSucceeded
		rec.Reason = ""
		if st.Image != nil {
			rec.Digest = st.Image.Digest
		}
		rec.Duration = st.Duration
	case st.Phase == v1alpha1.PhaseFailed:
		rec.Result = v1alpha1.BuildResultFailed
		if st.Failure != nil {
			rec.Reason = st.Failure.Reason
		}
		rec.Duration = st.Duration
	default:
		rec.Result = v1alpha1.BuildResultRunning
	}
}

// recordParallel brings the records of earlier builds that still run beside the latest one
// (runPolicy Parallel) up to date from their pods, pods being the ImageBuild's executor pods:
// a finished pod ends its build (Succeeded or Failed, never retried), a pod that is gone fails
// it with PodDeleted. It reports whether a record changed.
func recordParallel(st *v1alpha1.ImageBuildStatus, pods []corev1.Pod, now time.Time) bool {
	changed := false
	for i := range st.History {
		rec := &st.History[i]
		if rec.Number == st.BuildNumber || rec.Result != v1alpha1.BuildResultRunning || rec.PodName == "" {
			continue
		}
		var pod *corev1.Pod
		for j := range pods {
			if pods[j].Name == rec.PodName {
				pod = &pods[j]
			}
		}
		if pod != nil && !podFinished(pod) {
			continue
		}
		changed = true
		end := now
		if pod != nil {
			if t := podFinishedAt(pod); !t.IsZero() {
				end = t
			}
		}
		if rec.StartTime != nil {
			rec.Duration = formatDuration(end.Sub(rec.StartTime.Time))
		}
		if pod == nil {
			rec.Result, rec.Reason = v1alpha1.BuildResultFailed, v1alpha1.ReasonPodDeleted
			continue
		}
		res, ok := podResult(pod)
		if ok && rec.Commit == "" && gitpoll.IsCommit(res.Commit) {
			rec.Commit = res.Commit
		}
		if pod.Status.Phase == corev1.PodSucceeded && ok && res.Success {
			rec.Result, rec.Reason, rec.Digest = v1alpha1.BuildResultSucceeded, "", res.Digest
			continue
		}
		rec.Result, rec.Reason = v1alpha1.BuildResultFailed, podFailure(pod, pod.Name).Reason
		if ok && res.Failure != nil {
			rec.Reason = executorReason(res.Failure.Reason)
		}
	}
	return changed
}

// parallelPods are the names of the pods of earlier builds that run beside the latest one.
func parallelPods(st *v1alpha1.ImageBuildStatus) map[string]bool {
	names := map[string]bool{}
	for _, rec := range st.History {
		if rec.Number != st.BuildNumber && rec.Result == v1alpha1.BuildResultRunning && rec.PodName != "" {
			names[rec.PodName] = true
		}
	}
	return names
}

func recordIndex(h []v1alpha1.BuildRecord, number int64) int {
	for i := range h {
		if h[i].Number == number {
			return i
		}
	}
	return -1
}

// latestCommit is the commit of the latest build: the one it reported, else the one the
// trigger that started it found; "" when neither is known yet.
func latestCommit(st *v1alpha1.ImageBuildStatus) string {
	if i := recordIndex(st.History, st.BuildNumber); i >= 0 && st.History[i].Commit != "" {
		return st.History[i].Commit
	}
	if st.Source != nil {
		return st.Source.Commit
	}
	return ""
}

// observed is what the manager found outside the ImageBuild: the commit its revision names
// now (gitpoll; "" when not known), when a verified webhook last asked for a check, and
// whether an image the latest successful build was FROM moved.
type observed struct {
	// commit is what the latest listing found the revision at (ref, the ref it resolved to),
	// startedAt when that listing began, and listErr why it failed (commit is then the last
	// one found, if any).
	commit    string
	ref       string
	startedAt time.Time
	following bool // the poller follows the revision (its source Secret was read)
	// fresh: that listing began after the latest build was asked for (askedAt), so what it
	// says is no older than what that build built.
	fresh   bool
	listErr error
	// byWebhook: that listing is the first begun after a webhook push (webhookReceived).
	byWebhook bool
	// baseChanged: moved lists the base images of the latest successful build that moved.
	baseChanged bool
	moved       []baseimage.Moved
}

// triggeredBuild is the build that what the manager observed asks for, nil when none: the
// revision at another commit than the latest build's, in a listing that succeeded and began
// after that build was asked for (cause Webhook when that listing is the one a webhook push
// asked for, else Commit); else, when the latest build succeeded and nothing waits,
// a base image that moved (BaseImage, of the latest build's commit). A request the status
// already holds (status.next) is not asked for again. It is a pure function.
//
// A listing that failed keeps the last commit it found, which may be older than what a build
// fetched since with other credentials: building it again would tag an older commit as the
// newest build, so only a fresh, successful listing counts.
func triggeredBuild(ib *v1alpha1.ImageBuild, obs observed, now time.Time) *v1alpha1.BuildRequest {
	st := &ib.Status
	if st.BuildNumber == 0 {
		return nil // the first build is the spec's (Created)
	}
	if obs.commit != "" && obs.listErr == nil && obs.fresh {
		known := latestCommit(st)
		building := !st.Phase.Finished()
		switch {
		case known == "" && building:
			// The latest build fetches the revision itself and has not said what it found.
		case obs.commit == known:
		case st.Next != nil && st.Next.Commit == obs.commit:
		default:
			cause := v1alpha1.CauseCommit
			if obs.byWebhook {
				cause = v1alpha1.CauseWebhook
			}
			return &v1alpha1.BuildRequest{Cause: cause, Commit: obs.commit, Time: metav1.Time{Time: now}}
		}
	}
	if obs.baseChanged && st.Phase == v1alpha1.PhaseSucceeded && st.Next == nil {
		return &v1alpha1.BuildRequest{Cause: v1alpha1.CauseBaseImage, Commit: latestCommit(st), Time: metav1.Time{Time: now}}
	}
	return nil
}
