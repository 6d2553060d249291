package controllers

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

// newBuildStatus is the status of a build that starts for ib's current generation and rebuild
// annotation: attempt 1 of a new generation, or the next attempt of a rebuild. Everything
// observed of the previous build is cleared.
func newBuildStatus(ib *v1alpha1.ImageBuild) v1alpha1.ImageBuildStatus {
	attempt := int32(1)
	if ib.Status.ObservedGeneration == ib.Generation {
		attempt = ib.Status.Attempt + 1
	}
	st := v1alpha1.ImageBuildStatus{
		Phase:              v1alpha1.PhasePending,
		Conditions:         append([]metav1.Condition(nil), ib.Status.Conditions...),
		ObservedGeneration: ib.Generation,
		ObservedRebuild:    ib.Annotations[v1alpha1.RebuildAnnotation],
		Attempt:            attempt,
	}
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
	return st
}

// isNewBuild reports whether ib asks for a build that its status does not describe yet: a new
// generation, or a new value of the rebuild annotation.
func isNewBuild(ib *v1alpha1.ImageBuild) bool {
	return ib.Status.ObservedGeneration != ib.Generation ||
		ib.Status.ObservedRebuild != ib.Annotations[v1alpha1.RebuildAnnotation]
}

// computeStatus returns ib's status after observing pod, the executor pod named
// ib.Status.PodName (nil when it does not exist). It is a pure function.
//
//   - pending pod:   phase Pending, Ready=False/PodCreated, Reconciling=True.
//   - running pod:   phase Running, startTime, Ready=False/Building, Reconciling=True.
//   - succeeded pod: phase Succeeded with the executor's result (image, commit, cache,
//     stages), completionTime, duration; Ready=True/Succeeded; Reconciling and Stalled removed.
//   - pod being deleted, not ended yet: phase Running while it runs; Ready=False and
//     Reconciling=True with reason PodDeleted (or Evicted) saying that the attempt ends once
//     the pod has stopped (no other attempt starts before).
//   - failed, deleted (gone, or ended once deleted) or evicted pod: phase Failed with
//     status.failure (see podFailure); Ready=False and Stalled=True with the failure's reason;
//     Reconciling removed. Whether the failure is retried is decided afterwards by planRetry.
//   - succeeded or failed pod whose executor wrote a result: status.warnings and
//     status.warningCount from its findings (observeWarnings).
//
// A finished status, or one without a pod yet, is returned unchanged.
func computeStatus(ib *v1alpha1.ImageBuild, pod *corev1.Pod, now time.Time) v1alpha1.ImageBuildStatus {
	st := *ib.Status.DeepCopy()
	if st.Phase.Finished() || st.PodName == "" || st.NextRetryTime != nil {
		return st
	}
	gen := ib.Generation

	if pod == nil {
		fail(&st, gen, podFailure(nil, st.PodName), result.Result{}, now)
		return st
	}
	if pod.DeletionTimestamp != nil && !podFinished(pod) {
		// One executor at a time: a pod being deleted may go on building, and pushing, for
		// its grace period. The attempt fails (and may be retried, by another pod) once this
		// one has stopped: gone, or ended.
		if pod.Status.Phase == corev1.PodRunning {
			st.Phase = v1alpha1.PhaseRunning
			if st.StartTime == nil {
				st.StartTime = containerStarted(pod)
			}
		}
		f := podFailure(pod, st.PodName)
		msg := fmt.Sprintf("Executor pod %s is being deleted (attempt %d); the attempt ends once it has stopped", pod.Name, st.Attempt)
		if f.Reason != v1alpha1.ReasonPodDeleted {
			msg = fmt.Sprintf("%s; the attempt ends once it has stopped", f.Message)
		}
		setCondition(&st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, f.Reason, msg)
		setCondition(&st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, f.Reason, msg)
		return st
	}

	if podFinished(pod) {
		observeWarnings(&st, pod) // the build checks' findings, whether it succeeded or failed
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		res, ok := podResult(pod)
		if ok && !res.Success && res.Failure != nil {
			fail(&st, gen, podFailure(pod, st.PodName), res, now)
			return st
		}
		succeed(&st, gen, pod, res, now)
	case corev1.PodFailed:
		res, _ := podResult(pod)
		fail(&st, gen, podFailure(pod, st.PodName), res, now)
	case corev1.PodRunning:
		st.Phase = v1alpha1.PhaseRunning
		if st.StartTime == nil {
			st.StartTime = containerStarted(pod)
		}
		setCondition(&st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonBuilding,
			fmt.Sprintf("Executor pod %s is running (attempt %d)", pod.Name, st.Attempt))
		setCondition(&st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonBuilding,
			fmt.Sprintf("Building %s", ib.Spec.Output.Image))
	default:
		st.Phase = v1alpha1.PhasePending
		msg := fmt.Sprintf("Executor pod %s is pending (attempt %d)", pod.Name, st.Attempt)
		if w := waitingReason(pod); w != "" {
			msg += ": " + w
		}
		setCondition(&st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPodCreated, msg)
		setCondition(&st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonPodCreated, msg)
	}
	return st
}

func succeed(st *v1alpha1.ImageBuildStatus, gen int64, pod *corev1.Pod, res result.Result, now time.Time) {
	st.Phase = v1alpha1.PhaseSucceeded
	st.Failure = nil
	if st.StartTime == nil {
		st.StartTime = containerStarted(pod)
	}
	st.CompletionTime = containerFinished(pod, now)
	st.Duration = buildDuration(res, st.StartTime, st.CompletionTime)
	if res.Commit != "" {
		st.Source = &v1alpha1.SourceStatus{Commit: res.Commit}
	}
	if res.Digest != "" || len(res.References) > 0 {
		st.Image = &v1alpha1.ImageStatus{
			Digest:      res.Digest,
			ShortDigest: shortDigest(res.Digest),
			References:  res.References,
		}
		st.Image.Attestations, st.Image.SBOM = attestationsOf(res)
	}
	st.Cache = &v1alpha1.CacheStatus{Hits: int32(res.CacheHits), Misses: int32(res.CacheMisses), Mounts: cacheMountsStatus(res.CacheMounts)}
	st.Cache.Volume = cacheVolumeStatus(pod, res.State) // spec.cache.volume: cachevolume.go
	// What triggers.baseImages compares: the bases of the latest successful build (none when
	// its result names none: a FROM scratch image, or an executor that does not report them).
	st.BaseImages = nil
	for _, b := range res.Bases {
		st.BaseImages = append(st.BaseImages, v1alpha1.BaseImage{Reference: b.Ref, Digest: b.Digest})
	}
	st.Stages = nil
	for _, s := range res.Stages {
		st.Stages = append(st.Stages, v1alpha1.StageStatus{
			Name:         s.Name,
			Instructions: int32(s.Instructions),
			CacheHits:    int32(s.CacheHits),
			Duration:     formatDuration(time.Duration(s.Millis) * time.Millisecond),
		})
	}
	msg := "Built and pushed the image"
	if st.Image != nil && st.Image.Digest != "" {
		msg = "Built and pushed " + st.Image.Digest
	}
	if st.Duration != "" {
		msg += " in " + st.Duration
	}
	msg += fmt.Sprintf(", %d of %d cache lookups hit", res.CacheHits, res.CacheHits+res.CacheMisses)
	msg += cacheMountsMessage(st.Cache.Mounts)
	msg += cacheVolumeMessage(st.Cache.Volume)
	setCondition(st, gen, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, msg)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionReconciling)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
}

// cacheMountsStatus is status.cache.mounts from the executors' results (one result, or one per
// pod of spec.platforms): counts and sizes summed, each duration the longest (the pods run at
// the same time); nil when none reports cache mounts. Only counts, sizes and durations: no
// mount's id, path or content. The result is the executor image's to write
// (spec.executorImage): a negative figure counts as 0 and a sum stops at its type's maximum,
// so that the status always passes the CRD's validation (its minimums), and a duration no
// build takes (past a year) is not shown.
func cacheMountsStatus(results ...*result.CacheMounts) *v1alpha1.CacheMountsStatus {
	var st *v1alpha1.CacheMountsStatus
	var restoreMillis, saveMillis int64
	for _, m := range results {
		if m == nil {
			continue
		}
		if st == nil {
			st = &v1alpha1.CacheMountsStatus{}
		}
		st.Restored = addCount(st.Restored, m.Restored)
		st.Saved = addCount(st.Saved, m.Saved)
		st.Skipped = addCount(st.Skipped, m.Skipped)
		st.RestoredBytes = addSize(st.RestoredBytes, m.RestoredBytes)
		st.SavedBytes = addSize(st.SavedBytes, m.SavedBytes)
		st.UploadedBytes = addSize(st.UploadedBytes, m.UploadedBytes)
		restoreMillis = max(restoreMillis, m.RestoreMillis)
		saveMillis = max(saveMillis, m.SaveMillis)
	}
	if st == nil {
		return nil
	}
	st.RestoreDuration = shownMillis(restoreMillis)
	st.SaveDuration = shownMillis(saveMillis)
	return st
}

// addCount is a + n, n < 0 counting as 0, at most math.MaxInt32.
func addCount(a int32, n int) int32 {
	return int32(min(int64(a)+int64(min(max(n, 0), math.MaxInt32)), math.MaxInt32))
}

// addSize is a + n, n < 0 counting as 0, at most math.MaxInt64.
func addSize(a, n int64) int64 {
	n = max(n, 0)
	if a > math.MaxInt64-n {
		return math.MaxInt64
	}
	return a + n
}

// shownMillis is a duration of the executor's in milliseconds for people: "" for none, or one
// no build takes.
func shownMillis(ms int64) string {
	if ms <= 0 || ms >= maxShownMillis {
		return ""
	}
	return formatDuration(time.Duration(ms) * time.Millisecond)
}

// cacheMountsMessage is what the Ready message says of the cache mounts: ", cache mounts: 1
// restored, 2 saved" (and skipped, if any), "" when the build reported none.
func cacheMountsMessage(m *v1alpha1.CacheMountsStatus) string {
	if m == nil {
		return ""
	}
	msg := fmt.Sprintf(", cache mounts: %d restored, %d saved", m.Restored, m.Saved)
	if m.Skipped > 0 {
		msg += fmt.Sprintf(", %d skipped", m.Skipped)
	}
	return msg
}

// fail sets st to the failure f; res is the executor's result, if any
// (its duration).
func fail(st *v1alpha1.ImageBuildStatus, gen int64, f v1alpha1.Failure, res result.Result, now time.Time) {
	st.Phase = v1alpha1.PhaseFailed
	st.Failure = &f
	st.CompletionTime = &metav1.Time{Time: now}
	st.Duration = buildDuration(res, st.StartTime, st.CompletionTime)
	msg := result.Located(int(f.Line), f.Message)
	setCondition(st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, f.Reason, msg)
	setCondition(st, gen, v1alpha1.ConditionStalled, metav1.ConditionTrue, f.Reason, msg)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionReconciling)
}

// podFailure says why pod failed, in one place. pod may be nil (deleted). The order matters:
// the pod-level reasons set by the kubelet (deadline, eviction) explain a killed executor
// better than its exit code, and an executor that wrote a result knows best otherwise.
func podFailure(pod *corev1.Pod, name string) v1alpha1.Failure {
	f := v1alpha1.Failure{Pod: name}
	if pod == nil {
		f.Reason = v1alpha1.ReasonPodDeleted
		f.Message = fmt.Sprintf("Executor pod %s was deleted before the build ended", name)
		return f
	}
	term := executorTerminated(pod)
	if term != nil {
		f.Container = executorContainer
		f.ExitCode = term.ExitCode
	}
	res, hasResult := podResult(pod)

	switch {
	case pod.Status.Reason == "DeadlineExceeded":
		f.Reason = v1alpha1.ReasonTimeout
		f.Message = fmt.Sprintf("The build ran longer than its timeout (%ds)", deref(pod.Spec.ActiveDeadlineSeconds))
	case pod.Status.Reason == "Evicted":
		f.Reason = v1alpha1.ReasonEvicted
		f.Message = "Executor pod was evicted: " + pod.Status.Message
	case disruption(pod) != "":
		f.Reason = v1alpha1.ReasonEvicted
		f.Message = "Executor pod was disrupted: " + disruption(pod)
	case pod.DeletionTimestamp != nil && (!podFinished(pod) || stoppedByDeletion(pod)):
		// The executor stops when its pod is deleted, and may then report why its build
		// broke off (a RUN step killed, a push cancelled): the deletion is the cause.
		f.Reason = v1alpha1.ReasonPodDeleted
		f.Message = fmt.Sprintf("Executor pod %s was deleted before the build ended", name)
	case term != nil && term.Reason == "OOMKilled":
		f.Reason = v1alpha1.ReasonOOMKilled
		f.Message = "The executor ran out of memory; raise spec.resources.limits.memory"
	case hasResult && res.Failure != nil:
		f.Reason = executorReason(res.Failure.Reason)
		f.Message = res.Failure.Message
		f.Line = int32(res.Failure.Line)
		f.Instruction = res.Failure.Instruction
		if res.Failure.ExitCode != 0 {
			f.ExitCode = int32(res.Failure.ExitCode)
		}
		f.Transient = res.Failure.Transient
	case term != nil && killSignal(term) != "":
		f.Reason = v1alpha1.ReasonExecutorKilled
		f.Message = fmt.Sprintf("The executor was killed by %s (exit code %d) before it wrote a result", killSignal(term), term.ExitCode)
	case term != nil:
		f.Reason = v1alpha1.ReasonBuildFailed
		f.Message = fmt.Sprintf("The executor exited with code %d without a result", term.ExitCode)
	default:
		f.Reason = v1alpha1.ReasonPodFailed
		f.Message = "Executor pod failed"
		if pod.Status.Reason != "" {
			f.Message += ": " + pod.Status.Reason
		}
		if pod.Status.Message != "" {
			f.Message += ": " + pod.Status.Message
		}
	}
	return f
}

// stoppedByDeletion reports whether pod, deleted and not succeeded, ended because of its
// deletion: its executor never finished, or finished once the deletion was asked for
// (deletionTimestamp less the grace period; both stored in whole seconds, so a failure of its
// own in the second of the deletion counts as the deletion's), not before.
func stoppedByDeletion(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp == nil || pod.Status.Phase == corev1.PodSucceeded {
		return false
	}
	term := executorTerminated(pod)
	if term == nil || term.FinishedAt.IsZero() {
		return true
	}
	asked := pod.DeletionTimestamp.Add(-time.Duration(deref(pod.DeletionGracePeriodSeconds)) * time.Second)
	return !term.FinishedAt.Time.Before(asked.Truncate(time.Second))
}

// signalNames are the Linux numbers of the signals that end a process unless it handles them.
var signalNames = map[int32]string{1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS",
	8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"}

// killSignal names the signal that ended the executor, "" when it exited by itself: the
// runtime reports a process killed by signal N with exit code 128+N (the executor itself exits
// with 0 or 1).
func killSignal(term *corev1.ContainerStateTerminated) string {
	n := term.Signal
	if n == 0 && term.ExitCode > 128 && term.ExitCode <= 128+64 {
		n = term.ExitCode - 128
	}
	if n <= 0 {
		return ""
	}
	if name, ok := signalNames[n]; ok {
		return name
	}
	return fmt.Sprintf("signal %d", n)
}

// conditionReason is what the API server accepts as a metav1.Condition's reason (its
// validation: the pattern and at most 1024 characters).
var conditionReason = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// executorReason is the reason an executor reported, as the failure's and the conditions'
// reason: BuildFailed when it is not a valid condition reason. The executor image is the
// spec's to choose (spec.executorImage), so its result is not trusted: an invalid reason
// copied into a condition would make every status patch of the ImageBuild fail validation.
func executorReason(r result.Reason) string {
	if len(r) > 1024 || !conditionReason.MatchString(string(r)) {
		return v1alpha1.ReasonBuildFailed
	}
	return string(r)
}

// retryPolicy bounds retries of retryable failures.
type retryPolicy struct {
	// maxRetries is the number of retries after the first attempt.
	maxRetries int32
	// backoff is the wait before the first retry; it doubles for each next one, up to maxBackoff.
	backoff, maxBackoff time.Duration
	// sourceFetch retries a SourceFetchFailed the executor found transient (spec.retry).
	sourceFetch bool
}

// forBuild is p with what ib's spec.retry sets: its limit instead of p's, and whether a
// transient source fetch failure is retried.
func (p retryPolicy) forBuild(ib *v1alpha1.ImageBuild) retryPolicy {
	if r := ib.Spec.Retry; r != nil {
		if r.Limit != nil {
			p.maxRetries = max(*r.Limit, 0)
		}
		p.sourceFetch = r.SourceFetch
	}
	return p
}

// retryable reports whether a build that failed with f may succeed if run again: the pod was
// lost (deleted, evicted, killed by a signal, failed to run), or the executor reports a failure
// that may be transient (executor/result: a push, an internal error), or the manager could not
// push the signature (SigningFailed, as a push), or the platforms of a
// multi-platform build fetched different commits (RevisionMoved), or, when p.sourceFetch,
// a source fetch that the executor found transient (the git server unreachable). A source the
// server refused, Dockerfile and RUN errors, a build check's finding (CheckFailed), timeouts
// and OOM kills (with the same limits) are not retried.
func (p retryPolicy) retryable(f *v1alpha1.Failure) bool {
	switch f.Reason {
	case v1alpha1.ReasonPodDeleted, v1alpha1.ReasonEvicted, v1alpha1.ReasonPodFailed, v1alpha1.ReasonExecutorKilled,
		string(result.ReasonPushFailed), string(result.ReasonInternal), v1alpha1.ReasonRevisionMoved, v1alpha1.ReasonSigningFailed:
		return true
	case string(result.ReasonSourceFetchFailed):
		return p.sourceFetch && f.Transient
	}
	return false
}

// planRetry turns a Failed status into a retry when its failure is retryable under p and
// retries are left: phase Pending, nextRetryTime set, Ready=False and Reconciling=True with
// reason Retrying, Stalled removed, the failure kept for people to read. It returns the wait,
// zero when st is left as it is. p is the manager's policy with the ImageBuild's spec.retry
// applied (retryPolicy.forBuild).
func planRetry(st *v1alpha1.ImageBuildStatus, gen int64, p retryPolicy, now time.Time) time.Duration {
	if st.Phase != v1alpha1.PhaseFailed || st.Failure == nil || !p.retryable(st.Failure) || st.Retries >= p.maxRetries {
		return 0
	}
	wait := p.backoff << st.Retries
	if wait > p.maxBackoff || wait <= 0 {
		wait = p.maxBackoff
	}
	st.Retries++
	st.Phase = v1alpha1.PhasePending
	st.NextRetryTime = &metav1.Time{Time: now.Add(wait)}
	st.CompletionTime = nil
	st.Duration = ""
	msg := fmt.Sprintf("Attempt %d failed (%s: %s); retry %d of %d in %s",
		st.Attempt, st.Failure.Reason, st.Failure.Message, st.Retries, p.maxRetries, wait)
	setCondition(st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRetrying, msg)
	setCondition(st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonRetrying, msg)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
	return wait
}

func setCondition(st *v1alpha1.ImageBuildStatus, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             reason,
		Message:            msg,
		ObservedGeneration: gen,
	})
}

// podResult decodes the executor's termination message.
func podResult(pod *corev1.Pod) (result.Result, bool) {
	term := executorTerminated(pod)
	if term == nil || strings.TrimSpace(term.Message) == "" {
		return result.Result{}, false
	}
	res, err := result.Decode([]byte(term.Message))
	return res, err == nil
}

func executorTerminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == executorContainer {
			return cs.State.Terminated
		}
	}
	return nil
}

func podFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// disruption is the message of the pod's DisruptionTarget condition (eviction API,
// preemption, node shutdown), empty when it has none.
func disruption(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			if c.Message != "" {
				return c.Reason + ": " + c.Message
			}
			return c.Reason
		}
	}
	return ""
}

// waitingReason is why the executor container waits (ErrImagePull, ...), empty if it does not.
func waitingReason(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == executorContainer && cs.State.Waiting != nil && cs.State.Waiting.Reason != "" {
			w := cs.State.Waiting
			if w.Message != "" {
				return w.Reason + ": " + w.Message
			}
			return w.Reason
		}
	}
	return ""
}

func containerStarted(pod *corev1.Pod) *metav1.Time {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != executorContainer {
			continue
		}
		if r := cs.State.Running; r != nil && !r.StartedAt.IsZero() {
			return r.StartedAt.DeepCopy()
		}
		if t := cs.State.Terminated; t != nil && !t.StartedAt.IsZero() {
			return t.StartedAt.DeepCopy()
		}
	}
	return pod.Status.StartTime.DeepCopy()
}

func containerFinished(pod *corev1.Pod, now time.Time) *metav1.Time {
	if t := executorTerminated(pod); t != nil && !t.FinishedAt.IsZero() {
		return t.FinishedAt.DeepCopy()
	}
	return &metav1.Time{Time: now}
}

// podFinishedAt is when a finished pod ended, for retention; zero when unknown.
func podFinishedAt(pod *corev1.Pod) time.Time {
	if t := executorTerminated(pod); t != nil {
		return t.FinishedAt.Time
	}
	return time.Time{}
}

// buildDuration is how long the build took, for people: the executor's own
// measure when its result has one (res.Millis), else completionTime -
// startTime. Those are whole seconds once stored (metav1.Time), so a
// difference of zero reads "<1s" rather than "0s".
func buildDuration(res result.Result, start, end *metav1.Time) string {
	// The result is the executor image's to write: a figure no build
	// takes (negative, or more than a year) is not shown.
	if res.Millis > 0 && res.Millis < maxShownMillis {
		return formatDuration(time.Duration(res.Millis) * time.Millisecond)
	}
	if start == nil || end == nil || end.Before(start) {
		return ""
	}
	d := end.Sub(start.Time)
	if d < time.Second {
		return "<1s"
	}
	return formatDuration(d)
}

// maxShownMillis bounds an executor's reported duration: a year.
const maxShownMillis = 365 * 24 * 3600 * 1000

// formatDuration shows d as precisely as a person reads it: milliseconds
// under a second (111ms), tenths of a second under a minute (1.5s), whole
// seconds from there (1m23s).
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// shortDigest is the first 12 hex digits of a sha256 digest.
func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) < 12 {
		return hex
	}
	return hex[:12]
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
