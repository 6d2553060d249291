package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/imageindex"
	"github.com/slipway-dev/slipway/controllers/imagesign"
	"github.com/slipway-dev/slipway/executor/result"
)

// Multi-platform builds (spec.platforms, issue 15).
//
// An attempt of such a build is one executor pod per platform, all created at once (each
// takes a build slot; the build waits in the queue until it has them all), named
// <imagebuild>-<generation>-<attempt>-<platform, "/" made "-">. Each runs the executor with
// --custom-platform and --push-by-digest: it pushes its image to the output repository by
// digest, under no tag. A pod goes to a Ready node of its platform's architecture when one
// matches the build's placement; else, with spec.emulation, anywhere its selector allows;
// else the build fails before any pod exists (NoNodeForPlatform).
//
// The build's status follows the pods (each through computeStatus, as a single pod's):
//   - a platform that fails fails the build with its reason, its message prefixed with the
//     platform; the other platforms' pods are deleted, no tag is pushed; a retry (planRetry,
//     as for one pod) runs every platform again in a new attempt, once the old pods are gone;
//   - when every platform has succeeded, the manager reads their manifests back and pushes
//     the index under the tags (imageindex.Assemble, in the background: indexAssembler), with
//     the credentials of the push Secret of the ImageBuild's own namespace; then the build
//     has succeeded, and status.image is the index's.

// multiPlatform reports whether ib builds for spec.platforms.
func multiPlatform(ib *v1alpha1.ImageBuild) bool { return len(ib.Spec.Platforms) > 0 }

// platformSuffix is p as a name and label value: "/" made "-" (linux-arm-v7). The CRD admits
// only [a-z0-9] between the slashes, so no two platforms have the same suffix.
func platformSuffix(p string) string { return strings.ReplaceAll(p, "/", "-") }

// platformPodName is the deterministic name of the executor pod of platform p in an attempt.
func platformPodName(ib *v1alpha1.ImageBuild, attempt int32, p string) string {
	return podName(ib, attempt) + "-" + platformSuffix(p)
}

// currentPods are the names of the executor pods of ib's current attempt: one, or one per
// platform.
func currentPods(ib *v1alpha1.ImageBuild) map[string]bool {
	if !multiPlatform(ib) {
		return map[string]bool{podName(ib, ib.Status.Attempt): true}
	}
	names := make(map[string]bool, len(ib.Spec.Platforms))
	for _, p := range ib.Spec.Platforms {
		names[platformPodName(ib, ib.Status.Attempt, p)] = true
	}
	return names
}

// hasPods reports whether the build of st has created its executor pods.
func hasPods(st *v1alpha1.ImageBuildStatus) bool {
	return st.PodName != "" || (len(st.Platforms) > 0 && st.Platforms[0].PodName != "")
}

// splitPlatform is os, architecture and variant of p (os/arch[/variant]).
func splitPlatform(p string) (os, arch, variant string) {
	parts := strings.SplitN(p, "/", 3)
	os = parts[0]
	if len(parts) > 1 {
		arch = parts[1]
	}
	if len(parts) > 2 {
		variant = parts[2]
	}
	return os, arch, variant
}

// platformSelector is base with the node labels of platform p: its OS always, its
// architecture when the pod runs natively (replacing any the base names).
func platformSelector(base map[string]string, p string, native bool) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	os, arch, _ := splitPlatform(p)
	out[corev1.LabelOSStable] = os
	if native {
		out[corev1.LabelArchStable] = arch
	}
	return out
}

// duplicatePlatforms names two of ps that are the same platform as OCI normalises them
// (linux/arm64 and linux/arm64/v8, linux/arm and linux/arm/v7); "" when there are none.
func duplicatePlatforms(ps []string) string {
	seen := map[string]string{}
	for _, p := range ps {
		spec, err := platforms.Parse(p)
		if err != nil {
			continue // the CRD's pattern admits only what parses
		}
		key := platforms.Format(platforms.Normalize(spec))
		if first, ok := seen[key]; ok {
			return fmt.Sprintf("spec.platforms names %s twice: %s and %s", key, first, p)
		}
		seen[key] = p
	}
	return ""
}

// nodeFits reports whether an executor pod with selector and tolerations can run on node:
// the node is Ready and schedulable, has selector's labels, and every NoSchedule or
// NoExecute taint of it is tolerated. (The pod's affinity is not consulted.)
func nodeFits(node *corev1.Node, selector map[string]string, tolerations []corev1.Toleration) bool {
	if node.Spec.Unschedulable || !labels.SelectorFromSet(selector).Matches(labels.Set(node.Labels)) {
		return false
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return false
	}
	for i := range node.Spec.Taints {
		taint := &node.Spec.Taints[i]
		if taint.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		tolerated := func(t corev1.Toleration) bool {
			// Lt and Gt (alpha in the scheduler) count as not tolerating: the pod may not fit.
			return t.ToleratesTaint(logr.Discard(), taint, false)
		}
		if !slices.ContainsFunc(tolerations, tolerated) {
			return false
		}
	}
	return true
}

// platformPlacements decides, for each of ib's platforms, whether its pod runs natively: on a
// node of nodes that fits it with base (the build's selector) and its platform's OS and
// architecture labels. A platform without such a node runs under emulation when
// spec.emulation is true; otherwise problem names the first such platform and the two ways
// to build it. It is a pure function.
func platformPlacements(nodes []corev1.Node, ib *v1alpha1.ImageBuild, base map[string]string, tolerations []corev1.Toleration) (native []bool, problem string) {
	native = make([]bool, len(ib.Spec.Platforms))
	for i, p := range ib.Spec.Platforms {
		selector := platformSelector(base, p, true)
		native[i] = slices.ContainsFunc(nodes, func(n corev1.Node) bool { return nodeFits(&n, selector, tolerations) })
		if !native[i] && !ib.Spec.Emulation {
			os, arch, _ := splitPlatform(p)
			return nil, fmt.Sprintf("No Ready node for platform %s (labels %s=%s, %s=%s) can run the executor pod "+
				"(it must also match the build's nodeSelector and tolerate the node's taints), and spec.emulation is false: "+
				"add a node of that architecture, or set spec.emulation: true and register QEMU binfmt_misc handlers "+
				"on the nodes (the chart's binfmt DaemonSet: binfmt.enabled=true)", p, corev1.LabelOSStable, os, corev1.LabelArchStable, arch)
		}
	}
	return native, ""
}

// placePlatforms lists the nodes (read when the pods are made, rather than cached, as for user
// namespaces: nodes are large and builds infrequent) and decides each platform's placement
// (platformPlacements).
func (r *ImageBuildReconciler) placePlatforms(ctx context.Context, ib *v1alpha1.ImageBuild, opts podOptions) ([]bool, string, error) {
	o := opts
	o.platform = ""
	base, tolerations := placement(ib, o)
	listSel := maps.Clone(base)
	delete(listSel, corev1.LabelArchStable)
	var nodes corev1.NodeList
	if err := r.APIReader.List(ctx, &nodes, client.MatchingLabels(listSel)); err != nil {
		return nil, "", fmt.Errorf("listing nodes for spec.platforms: %w", err)
	}
	native, problem := platformPlacements(nodes.Items, ib, base, tolerations)
	return native, problem, nil
}

// platformsStarted reports whether status.platforms describes the pods of ib's current
// attempt, one per platform of the spec.
func platformsStarted(ib *v1alpha1.ImageBuild) bool {
	st := &ib.Status
	if len(st.Platforms) != len(ib.Spec.Platforms) {
		return false
	}
	for i, p := range ib.Spec.Platforms {
		if st.Platforms[i].Platform != p || st.Platforms[i].PodName != platformPodName(ib, st.Attempt, p) {
			return false
		}
	}
	return true
}

// findPlatformPods returns the pods of the current attempt that exist, by platform (see
// findPod).
func (r *ImageBuildReconciler) findPlatformPods(ctx context.Context, ib *v1alpha1.ImageBuild) (map[string]*corev1.Pod, error) {
	found := map[string]*corev1.Pod{}
	for _, p := range ib.Spec.Platforms {
		pod, err := r.findPod(ctx, ib, platformPodName(ib, ib.Status.Attempt, p))
		if err != nil {
			return nil, err
		}
		if pod != nil {
			found[p] = pod
		}
	}
	return found, nil
}

// emulatedPod reports whether pod, of platform p, was placed without p's architecture.
func emulatedPod(pod *corev1.Pod, p string) bool {
	_, arch, _ := splitPlatform(p)
	return pod.Spec.NodeSelector[corev1.LabelArchStable] != arch
}

// newPlatformStatuses are the status.platforms of an attempt whose pods were just created or
// found (pods, by platform; emulated says how each was placed when it has no pod there).
func newPlatformStatuses(ib *v1alpha1.ImageBuild, pods map[string]*corev1.Pod, native []bool) []v1alpha1.PlatformStatus {
	out := make([]v1alpha1.PlatformStatus, 0, len(ib.Spec.Platforms))
	for i, p := range ib.Spec.Platforms {
		ps := v1alpha1.PlatformStatus{Platform: p, Phase: v1alpha1.PhasePending, PodName: platformPodName(ib, ib.Status.Attempt, p)}
		switch pod := pods[p]; {
		case pod != nil:
			ps.Emulated = emulatedPod(pod, p)
			ps.Node = pod.Spec.NodeName
		case native != nil:
			ps.Emulated = !native[i]
		}
		out = append(out, ps)
	}
	return out
}

// reconcilePlatforms is steps 6 and 7 of reconcileBuild for a multi-platform build: the
// attempt's pods are found or created (startPod), then observed (observePlatforms).
func (r *ImageBuildReconciler) reconcilePlatforms(ctx context.Context, ib *v1alpha1.ImageBuild, pods []corev1.Pod, obs observed,
	stopping bool, now time.Time, evs []pendingEvent) (ctrl.Result, []pendingEvent, error) {
	if !platformsStarted(ib) {
		found, err := r.findPlatformPods(ctx, ib)
		if err != nil {
			return ctrl.Result{}, evs, err
		}
		if len(found) < len(ib.Spec.Platforms) {
			if stopping {
				setCondition(&ib.Status, ib.Generation, v1alpha1.ConditionReconciling, metav1.ConditionTrue,
					v1alpha1.ReasonPodCreated, "Waiting for the executor pods of the previous attempt or build to stop")
				return ctrl.Result{}, evs, nil
			}
			if wait, ok := r.pin(ib, obs, now); !ok {
				return ctrl.Result{RequeueAfter: wait}, evs, nil
			}
			return r.startPod(ctx, ib, obs, now, evs)
		}
		// A previous reconcile created them and its status write was lost.
		ib.Status.Platforms = newPlatformStatuses(ib, found, nil)
	}
	return r.observePlatforms(ctx, ib, pods, obs, now, evs)
}

// startPlatformPods creates the executor pods of the current attempt, one per platform,
// placed by placePlatforms, once the queue has a slot for each (haveSlot); pods a previous
// reconcile created are kept, and then the build does not queue again. It sets phase
// Pending (or Queued) with Ready=False and Reconciling=True, and status.platforms. Two
// platforms that are one (InvalidPlatforms) or a platform no node can build
// (NoNodeForPlatform) fail the build at once: phase Failed, Ready=False and Stalled=True.
func (r *ImageBuildReconciler) startPlatformPods(ctx context.Context, ib *v1alpha1.ImageBuild, opts podOptions, now time.Time,
	evs []pendingEvent) (ctrl.Result, []pendingEvent, error) {
	key := client.ObjectKeyFromObject(ib)
	gen := ib.Generation
	if msg := duplicatePlatforms(ib.Spec.Platforms); msg != "" {
		fail(&ib.Status, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonInvalidPlatforms, Message: msg}, result.Result{}, now)
		evs = append(evs, pendingEvent{typ: corev1.EventTypeWarning, reason: v1alpha1.ReasonInvalidPlatforms, action: "Build", note: msg})
		return ctrl.Result{}, evs, nil
	}
	found, err := r.findPlatformPods(ctx, ib)
	if err != nil {
		return ctrl.Result{}, evs, err
	}
	native, problem, err := r.placePlatforms(ctx, ib, opts)
	if err != nil {
		return ctrl.Result{}, evs, err
	}
	if problem != "" {
		fail(&ib.Status, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonNoNodeForPlatform, Message: problem}, result.Result{}, now)
		evs = append(evs, pendingEvent{typ: corev1.EventTypeWarning, reason: v1alpha1.ReasonNoNodeForPlatform, action: "Build", note: problem})
		return ctrl.Result{}, evs, nil
	}
	if len(found) == 0 {
		if queued, err := r.queueIfFull(ctx, ib, &evs); err != nil || queued {
			return ctrl.Result{}, evs, err
		}
	}
	var created []types.NamespacedName
	for i, p := range ib.Spec.Platforms {
		if found[p] != nil {
			continue
		}
		o := opts
		o.platform, o.native = p, native[i]
		pod := constructPod(ib, o)
		if err := r.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			r.slots.launch(key, now, created...) // what was created holds its slots
			return ctrl.Result{}, evs, fmt.Errorf("creating executor pod %s: %w", pod.Name, err)
		}
		created = append(created, client.ObjectKeyFromObject(pod))
		how := "on a node of its architecture"
		if !native[i] {
			how = "under emulation, on any node (no Ready node of its architecture; spec.emulation)"
		}
		evs = append(evs, pendingEvent{related: pod, typ: corev1.EventTypeNormal, reason: v1alpha1.ReasonPodCreated, action: "Build",
			note: fmt.Sprintf("Created executor pod %s for %s %s (attempt %d)", pod.Name, p, how, ib.Status.Attempt)})
	}
	r.slots.launch(key, now, created...)
	ib.Status.Platforms = newPlatformStatuses(ib, found, native)
	ib.Status.Phase = v1alpha1.PhasePending
	msg := fmt.Sprintf("Created the executor pods of %s (attempt %d)", strings.Join(ib.Spec.Platforms, ", "), ib.Status.Attempt)
	setCondition(&ib.Status, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPodCreated, msg)
	setCondition(&ib.Status, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonPodCreated, msg)
	return ctrl.Result{}, evs, nil
}

// platformPod is one platform's pod as observed, nil when it does not exist.
type platformPod struct {
	pod        *corev1.Pod
	failedNow  bool // the platform failed in this reconcile, by itself
	stoppedNow bool // its pod was deleted in this reconcile because another platform failed
}

// observePlatforms takes each platform's status from its pod, and the build's from theirs:
// a platform failed (the build fails, the others are stopped, planRetry may retry it); all
// succeeded (the index is pushed, assembleIndex); else the build is Pending or Running.
func (r *ImageBuildReconciler) observePlatforms(ctx context.Context, ib *v1alpha1.ImageBuild, pods []corev1.Pod, obs observed,
	now time.Time, evs []pendingEvent) (ctrl.Result, []pendingEvent, error) {
	st := &ib.Status
	prev := st.Phase
	byName := map[string]*corev1.Pod{}
	for i := range pods {
		byName[pods[i].Name] = &pods[i]
	}
	seen := make([]platformPod, len(st.Platforms))
	for i := range st.Platforms {
		ps := &st.Platforms[i]
		pod := byName[ps.PodName]
		if pod == nil {
			var err error
			if pod, err = r.getPod(ctx, ib.Namespace, ps.PodName); err != nil {
				return ctrl.Result{}, evs, err
			}
		}
		seen[i].pod = pod
		if pod != nil && pod.Spec.NodeName != "" {
			ps.Node = pod.Spec.NodeName
		}
		if ps.Phase.Finished() {
			continue
		}
		sub := observePlatform(ib, ps, pod, now)
		seen[i].failedNow = ps.Phase == v1alpha1.PhaseFailed
		if sub.StartTime != nil && (st.StartTime == nil || sub.StartTime.Before(st.StartTime)) {
			st.StartTime = sub.StartTime.DeepCopy()
		}
	}

	failed := slices.IndexFunc(st.Platforms, func(ps v1alpha1.PlatformStatus) bool { return ps.Phase == v1alpha1.PhaseFailed })
	switch {
	case failed >= 0:
		if err := r.stopPlatforms(ctx, ib, seen, failed); err != nil {
			return ctrl.Result{}, evs, err
		}
		f := *st.Platforms[failed].Failure
		f.Message = fmt.Sprintf("Platform %s: %s", st.Platforms[failed].Platform, f.Message)
		fail(st, ib.Generation, f, result.Result{}, now)
		for i, s := range seen {
			ps := &st.Platforms[i]
			switch {
			case s.failedNow:
				// Action BuildPlatform: the build's own event of the same reason and pod
				// (finishedEvent) must not fold into this one's series.
				evs = append(evs, pendingEvent{related: related(s.pod), typ: corev1.EventTypeWarning, reason: ps.Failure.Reason,
					action: "BuildPlatform", note: fmt.Sprintf("Platform %s failed: %s", ps.Platform, result.Located(int(ps.Failure.Line), ps.Failure.Message))})
			case s.stoppedNow:
				evs = append(evs, pendingEvent{related: s.pod.DeepCopy(), typ: corev1.EventTypeNormal, reason: "PodStopped", action: "Delete",
					note: fmt.Sprintf("Deleted executor pod %s of %s: platform %s failed", s.pod.Name, ps.Platform, st.Platforms[failed].Platform)})
			}
		}
	case !slices.ContainsFunc(st.Platforms, func(ps v1alpha1.PlatformStatus) bool { return ps.Phase != v1alpha1.PhaseSucceeded }):
		done, wait, err := r.assembleIndex(ctx, ib, seen, obs, now)
		if err != nil || !done {
			return wait, evs, err
		}
	default:
		platformsProgress(ib, seen)
	}
	if st.Phase.Finished() {
		warningsFrom(st, seen)
	}
	first := seen[0].pod
	if st.Phase.Finished() && failed >= 0 {
		first = seen[failed].pod
	}
	res, evs := r.concludeAttempt(ctx, ib, prev, first, platformPodList(seen), now, evs)
	recordLatest(st, first)
	return res, evs, nil
}

// observePlatform brings ps up to date from its pod, through computeStatus as for a build of
// one pod, and returns that pod's status. A platform whose executor succeeded without
// reporting a digest fails (IndexInvalid): its image cannot go into the index.
func observePlatform(ib *v1alpha1.ImageBuild, ps *v1alpha1.PlatformStatus, pod *corev1.Pod, now time.Time) v1alpha1.ImageBuildStatus {
	scratch := &v1alpha1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Name: ib.Name, Namespace: ib.Namespace, Generation: ib.Generation},
		Spec: ib.Spec, Status: v1alpha1.ImageBuildStatus{Phase: ps.Phase, PodName: ps.PodName, Attempt: ib.Status.Attempt}}
	sub := computeStatus(scratch, pod, now)
	ps.Phase = sub.Phase
	switch sub.Phase {
	case v1alpha1.PhaseSucceeded:
		ps.Duration = sub.Duration
		ps.Cache = sub.Cache
		if sub.Image == nil || !sha256Digest.MatchString(sub.Image.Digest) {
			ps.Phase = v1alpha1.PhaseFailed
			ps.Failure = &v1alpha1.Failure{Reason: v1alpha1.ReasonIndexInvalid, Pod: ps.PodName, Container: executorContainer,
				Message: "The executor reported no image digest: does the executor image support --push-by-digest?"}
			return sub
		}
		ps.Digest, ps.Index = platformDigests(pod, sub.Image.Digest)
	case v1alpha1.PhaseFailed:
		ps.Duration = sub.Duration
		ps.Failure = sub.Failure
	}
	return sub
}

// platformDigests are the digest of the image a platform's executor pushed and of the index
// it pushed it in (with its attestation manifest), "" for none: with an attestation, the
// result's digest is the index's and its one platform (or attestation) names the image.
func platformDigests(pod *corev1.Pod, pushed string) (image, index string) {
	res, _ := podResult(pod)
	image = pushed
	switch {
	case len(res.Platforms) == 1 && sha256Digest.MatchString(res.Platforms[0].Digest):
		image = res.Platforms[0].Digest
	case len(res.Attestations) == 1 && sha256Digest.MatchString(res.Attestations[0].Image):
		image = res.Attestations[0].Image
	}
	if image != pushed {
		index = pushed
	}
	return image, index
}

// sha256Digest is a digest the index may name.
var sha256Digest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// stopPlatforms deletes the pods of the platforms that have not ended, since platform failed;
// each is recorded Failed with reason PodDeleted.
func (r *ImageBuildReconciler) stopPlatforms(ctx context.Context, ib *v1alpha1.ImageBuild, seen []platformPod, failed int) error {
	for i := range ib.Status.Platforms {
		ps := &ib.Status.Platforms[i]
		if ps.Phase.Finished() {
			continue
		}
		pod := seen[i].pod
		if pod != nil && pod.DeletionTimestamp == nil && !podFinished(pod) {
			if err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting executor pod %s of %s: %w", pod.Name, ps.Platform, err)
			}
			seen[i].stoppedNow = true
		}
		ps.Phase = v1alpha1.PhaseFailed
		ps.Failure = &v1alpha1.Failure{Reason: v1alpha1.ReasonPodDeleted, Pod: ps.PodName,
			Message: fmt.Sprintf("Stopped: platform %s failed", ib.Status.Platforms[failed].Platform)}
	}
	return nil
}

// platformsProgress sets the phase and conditions of a build whose platforms have not all
// ended: Running once a pod runs (or has finished), else Pending; the conditions' message
// says where each platform is.
func platformsProgress(ib *v1alpha1.ImageBuild, seen []platformPod) {
	st := &ib.Status
	st.Phase = v1alpha1.PhasePending
	reason := v1alpha1.ReasonPodCreated
	parts := make([]string, 0, len(seen))
	for i, s := range seen {
		ps := &st.Platforms[i]
		state := strings.ToLower(string(ps.Phase))
		switch {
		case ps.Phase == v1alpha1.PhaseRunning || ps.Phase == v1alpha1.PhaseSucceeded:
			st.Phase, reason = v1alpha1.PhaseRunning, v1alpha1.ReasonBuilding
		case s.pod != nil && s.pod.DeletionTimestamp != nil:
			state = "being deleted"
		case s.pod != nil:
			if w := waitingReason(s.pod); w != "" {
				state += " (" + w + ")"
			}
		}
		if ps.Emulated {
			state += ", emulated"
		}
		parts = append(parts, ps.Platform+": "+state)
	}
	msg := fmt.Sprintf("Executor pods of attempt %d: %s", st.Attempt, strings.Join(parts, "; "))
	setCondition(st, ib.Generation, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	setCondition(st, ib.Generation, v1alpha1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
}

// assembleIndex pushes the index of a build whose platforms have all succeeded, in the
// background (publisher), and, for a signed build, signs it (signing.go) in the same job;
// it reports whether the build has ended: it fails when the platforms built different commits
// (RevisionMoved, retried), the signing key cannot be used (SigningKeyInvalid, before the
// index is pushed), or the index could not be made (IndexInvalid) or pushed (PushFailed,
// retried), or signed (AttestationInvalid; SigningFailed, retried); it succeeds once the index
// is pushed (and signed). While the job runs, phase is Running, with Ready=False and
// Reconciling=True. A missing push Secret is a *missingReferenceError (Ready=False,
// SecretNotFound).
func (r *ImageBuildReconciler) assembleIndex(ctx context.Context, ib *v1alpha1.ImageBuild, seen []platformPod, obs observed,
	now time.Time) (bool, ctrl.Result, error) {
	st := &ib.Status
	gen := ib.Generation
	commit, problem := platformCommits(st, seen)
	if problem != "" {
		fail(st, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonRevisionMoved, Message: problem}, result.Result{}, now)
		return true, ctrl.Result{}, nil
	}
	if r.Publisher == nil {
		return false, ctrl.Result{}, errors.New("no publisher: the reconciler was not set up with SetupWithManager")
	}
	key := client.ObjectKeyFromObject(ib)
	id := buildID(ib)
	job, ok := r.Publisher.job(key, id)
	if !ok {
		req, err := r.indexRequest(ctx, ib, obs)
		if tagErr, isTag := errors.AsType[*tagError](err); isTag {
			fail(st, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonInvalidTag, Message: tagErr.Error()}, result.Result{}, now)
			return true, ctrl.Result{}, nil
		}
		var signReq *imagesign.Request
		if err == nil && r.signs(ib) {
			signReq, err = r.signRequest(ctx, ib, "") // its digest is the index's, once pushed
		}
		if keyErr, isKey := errors.AsType[*signingKeyError](err); isKey {
			fail(st, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonSigningKeyInvalid,
				Message: "The image index was not pushed: " + keyErr.msg}, result.Result{}, now)
			return true, ctrl.Result{}, nil
		}
		if missing, isMissing := errors.AsType[*missingReferenceError](err); isMissing {
			st.Phase = v1alpha1.PhaseRunning
			setCondition(st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, missing.Message)
			setCondition(st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonSecretNotFound, missing.Message)
		}
		if err != nil {
			return false, ctrl.Result{}, err
		}
		r.Publisher.start(key, id, publishRequest{index: &req, sign: signReq})
		job.id = id
	}
	if !job.done {
		st.Phase = v1alpha1.PhaseRunning
		msg := fmt.Sprintf("Pushing the image index of %s to %s", strings.Join(ib.Spec.Platforms, ", "), outputRepository(ib.Spec.Output.Image))
		if r.signs(ib) {
			msg += ", and signing it"
		}
		setCondition(st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonBuilding, msg)
		setCondition(st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonBuilding, msg)
		return false, ctrl.Result{}, nil
	}
	if job.err != nil {
		f := publishFailure(job.err)
		if pe, ok := errors.AsType[*publishError](job.err); ok && pe.step == "sign" {
			f.Message = fmt.Sprintf("The image index %s was pushed under its tags but is not signed: %s", job.res.index.Digest, f.Message)
		}
		fail(st, gen, f, result.Result{}, now)
		return true, ctrl.Result{}, nil
	}
	succeedPlatforms(ib, seen, commit, job)
	if r.signs(ib) {
		signed(ib, job)
	}
	return true, ctrl.Result{}, nil
}

// platformCommits is the commit the platforms' executors fetched, and a problem when two of
// them fetched different ones (the revision moved between their fetches: the index would mix
// commits). A pod that is gone says nothing.
func platformCommits(st *v1alpha1.ImageBuildStatus, seen []platformPod) (string, string) {
	commit, from := "", ""
	for i, s := range seen {
		if s.pod == nil {
			continue
		}
		res, ok := podResult(s.pod)
		if !ok || res.Commit == "" {
			continue
		}
		if commit == "" {
			commit, from = res.Commit, st.Platforms[i].Platform
			continue
		}
		if res.Commit != commit {
			return "", fmt.Sprintf("The platforms built different commits (%s: %s, %s: %s): the revision moved while their pods fetched it",
				from, shortCommit(result.Excerpt(commit, 64)), st.Platforms[i].Platform, shortCommit(result.Excerpt(res.Commit, 64)))
		}
	}
	return commit, ""
}

// succeedPlatforms sets st to the success of a multi-platform build whose index job pushed:
// status.image is the index's, with the attestations each platform's executor reported,
// cache counts are the platforms' sums (cache mounts: cacheMountsStatus of their results), base images those of every platform (each once).
func succeedPlatforms(ib *v1alpha1.ImageBuild, seen []platformPod, commit string, job publishJob) {
	st := &ib.Status
	st.Phase = v1alpha1.PhaseSucceeded
	st.Failure = nil
	st.CompletionTime = &metav1.Time{Time: job.end}
	st.Duration = buildDuration(result.Result{}, st.StartTime, st.CompletionTime)
	idx := job.res.index
	st.Image = &v1alpha1.ImageStatus{Digest: idx.Digest, ShortDigest: shortDigest(idx.Digest), References: idx.References}
	for _, s := range seen {
		if s.pod == nil {
			continue
		}
		res, _ := podResult(s.pod)
		atts, sbom := attestationsOf(res)
		st.Image.Attestations = append(st.Image.Attestations, atts...)
		st.Image.SBOM = st.Image.SBOM || sbom
	}
	if commit != "" {
		st.Source = &v1alpha1.SourceStatus{Commit: commit}
	}
	cache := &v1alpha1.CacheStatus{}
	for _, ps := range st.Platforms {
		if ps.Cache != nil {
			cache.Hits += ps.Cache.Hits
			cache.Misses += ps.Cache.Misses
		}
	}
	var mounts []*result.CacheMounts
	for _, s := range seen {
		if s.pod != nil {
			res, _ := podResult(s.pod)
			mounts = append(mounts, res.CacheMounts)
		}
	}
	cache.Mounts = cacheMountsStatus(mounts...)
	st.Cache = cache
	st.BaseImages = nil
	for _, s := range seen {
		if s.pod == nil {
			continue
		}
		res, _ := podResult(s.pod)
		for _, b := range res.Bases {
			bi := v1alpha1.BaseImage{Reference: b.Ref, Digest: b.Digest}
			if !slices.Contains(st.BaseImages, bi) && len(st.BaseImages) < maxStatusBases {
				st.BaseImages = append(st.BaseImages, bi)
			}
		}
	}
	st.Stages = nil
	msg := fmt.Sprintf("Built and pushed %s, an index of %s", idx.Digest, strings.Join(ib.Spec.Platforms, ", "))
	if st.Duration != "" {
		msg += " in " + st.Duration
	}
	msg += fmt.Sprintf(", %d of %d cache lookups hit", cache.Hits, cache.Hits+cache.Misses)
	msg += cacheMountsMessage(cache.Mounts)
	setCondition(st, ib.Generation, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, msg)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionReconciling)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
}

// maxStatusBases bounds status.baseImages (the CRD's MaxItems).
const maxStatusBases = 16

// warningsFrom sets the build checks' findings of a finished multi-platform build from the
// first platform whose executor reported a result (the checks read the Dockerfile, the same
// for every platform).
func warningsFrom(st *v1alpha1.ImageBuildStatus, seen []platformPod) {
	for _, s := range seen {
		if s.pod == nil {
			continue
		}
		if _, ok := podResult(s.pod); ok {
			observeWarnings(st, s.pod)
			return
		}
	}
}

func platformPodList(seen []platformPod) []corev1.Pod {
	var pods []corev1.Pod
	for _, s := range seen {
		if s.pod != nil {
			pods = append(pods, *s.pod)
		}
	}
	return pods
}

// tagError is an additional tag that could not be rendered.
type tagError struct{ err error }

func (e *tagError) Error() string { return e.err.Error() }

// indexRequest is what assembling ib's index needs: the output repository, the tags (the
// output image's, then the additional tags rendered as for the pods), each platform's image
// (and the index it pushed it in, with its attestations), and the registry credentials of the
// push Secret, read from ib's own namespace (pushAccess).
func (r *ImageBuildReconciler) indexRequest(ctx context.Context, ib *v1alpha1.ImageBuild, obs observed) (imageindex.Request, error) {
	out := ib.Spec.Output
	req := imageindex.Request{Repository: outputRepository(out.Image), Insecure: out.Insecure}
	tag, err := name.NewTag(out.Image)
	if err != nil {
		return req, &tagError{fmt.Errorf("spec.output.image %q: %w", out.Image, err)}
	}
	req.Tags = []string{tag.TagStr()}
	extra, err := renderTags(ib, pinnedCommit(ib), obs)
	if err != nil {
		return req, &tagError{err}
	}
	for _, t := range extra {
		if !slices.Contains(req.Tags, t) {
			req.Tags = append(req.Tags, t)
		}
	}
	for _, ps := range ib.Status.Platforms {
		req.Manifests = append(req.Manifests, imageindex.Manifest{Platform: ps.Platform, Digest: ps.Digest, Index: ps.Index})
	}
	req.Keychain, req.Transport, err = r.pushAccess(ctx, ib)
	if err != nil {
		return req, err
	}
	return req, nil
}
