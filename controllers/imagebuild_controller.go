// Package controllers holds the ImageBuild controller: it runs one executor pod per build
// attempt and reports the executor's result on the ImageBuild's status.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/gitpoll"
	"github.com/slipway-dev/slipway/executor/result"
)

// ownerIndex is the field index of executor pods by the name of their controlling ImageBuild.
const ownerIndex = ".metadata.controller.imagebuild"

// Options configure an ImageBuildReconciler. The zero value of a field means its default.
type Options struct {
	// ExecutorImage is the executor pods' image unless an ImageBuild overrides it. Required.
	ExecutorImage string
	// HostUsersMode decides whether executor pods run in their own user namespace
	// (hostUsers: false): auto asks the nodes (see userns.go), true and false force it. Empty:
	// HostUsers decides.
	HostUsersMode HostUsersMode
	// HostUsers true leaves executor pods in the host's user namespace (hostUsers unset);
	// false sets hostUsers: false. It applies when HostUsersMode is empty; beware that its
	// zero value asks for user namespaces.
	HostUsers bool
	// MaxConcurrentBuilds bounds the executor pods running at once across the cluster; builds
	// beyond it wait in phase Queued, oldest first. 0 means no bound.
	MaxConcurrentBuilds int
	// Resources apply to executor containers of ImageBuilds without spec.resources.
	Resources corev1.ResourceRequirements
	// NodeSelector and Tolerations place executor pods of ImageBuilds that set none.
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// MaxRetries is the number of retries of a build that failed for a transient reason; 0
	// means none. The default, when nil, is 3.
	MaxRetries *int32
	// RetryBackoff is the wait before the first retry, doubling each time up to
	// MaxRetryBackoff. The defaults are 10s and 5m.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Poll configures the listings of the revisions that ImageBuilds follow (gitpoll); its
	// Notify is the reconciler's.
	Poll gitpoll.Options
	// BaseImageInterval, when set, is how often the base images of ImageBuilds with
	// triggers.baseImages are checked, instead of their source.git.interval (or an hour).
	BaseImageInterval time.Duration
	// CacheRepositoryPrefixes are the cache repositories that namespaces may use besides those
	// under their output repository (see checkCacheRepository); none by default.
	CacheRepositoryPrefixes []CacheRepositoryPrefix
	// DefaultSigningSecret, when its Name is set, is the Secret of the manager's own namespace
	// whose cosign key signs the builds of ImageBuilds without spec.signing (signing.go). It
	// is read there only, never copied into another namespace.
	DefaultSigningSecret types.NamespacedName
	// ManagerImage is the manager's own image, when known: executor pods record it in their
	// provenance as a dependency of the builder (--builder-dependency).
	ManagerImage string
}

// ImageBuildReconciler reconciles ImageBuilds with their executor pods.
//
// It runs with one worker: the queue of --max-concurrent-builds is decided one build at a time.
type ImageBuildReconciler struct {
	// Client reads pods and ImageBuilds from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads directly from the API server: the ImageBuild at the start of each
	// reconcile (its status must not be stale, or a build could start twice), and Secrets
	// (which the manager does not cache).
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Clock is the time source; the real clock when nil.
	Clock   clock.PassiveClock
	Options Options

	// Poller follows the revisions of ImageBuilds that poll (source.git.interval), have a
	// webhook trigger or tags made from the commit; nil turns all of that off.
	Poller *gitpoll.Poller
	// Bases checks the base images of ImageBuilds with triggers.baseImages (SetupWithManager
	// makes it); nil turns that off.
	Bases *baseWatcher
	// Publisher pushes, in the background, the image indexes of multi-platform builds
	// (spec.platforms) and the signatures of signed builds; SetupWithManager makes it.
	Publisher *publisher

	slots   slotTracker
	keys    keyCache // the signing keys read (signing.go)
	metrics *buildMetrics
	wakeups chan event.GenericEvent // see wakeQueue
	// changes are the ImageBuilds whose trigger found something (the poller, the base image
	// watcher): each is reconciled.
	changes chan event.GenericEvent

	triggerMu     sync.Mutex
	subscriptions map[types.NamespacedName]subscription
	webhooks      map[types.NamespacedName]webhookSeen // what each WebhookAnnotation was made of
	asked         map[types.NamespacedName]askedBuild
}

// +kubebuilder:rbac:groups=build.slipway.dev,resources=imagebuilds,verbs=get;list;watch
// +kubebuilder:rbac:groups=build.slipway.dev,resources=imagebuilds/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=list
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// pendingEvent is an Event emitted once the status patch of the reconcile succeeded.
type pendingEvent struct {
	related      runtime.Object
	typ, reason  string
	action, note string
}

// Reconcile brings one ImageBuild one step closer to a finished build, and writes its status
// once, in a deferred patch. What must happen once per change of the status (the events of
// the step, the metrics of a finished build, the release of its build slot: see afterWrite)
// happens after that patch succeeds, so a failed patch, retried by the next reconcile, does
// not count a build twice.
func (r *ImageBuildReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	logger := log.FromContext(ctx)

	ib := &v1alpha1.ImageBuild{}
	if err := r.APIReader.Get(ctx, req.NamespacedName, ib); err != nil {
		if apierrors.IsNotFound(err) {
			r.slots.forget(req.NamespacedName)
			r.unfollow(req.NamespacedName)
			if r.Bases != nil {
				r.Bases.forget(req.NamespacedName)
			}
			r.Publisher.forget(req.NamespacedName)
			return ctrl.Result{}, r.deleteOrphans(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, fmt.Errorf("getting ImageBuild: %w", err)
	}
	if ib.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}

	orig := ib.DeepCopy()
	var evs []pendingEvent
	defer func() {
		if !equality.Semantic.DeepEqual(orig.Status, ib.Status) {
			if err := r.Client.Status().Patch(ctx, ib, client.MergeFrom(orig)); err != nil {
				if !apierrors.IsNotFound(err) {
					retErr = errors.Join(retErr, fmt.Errorf("patching ImageBuild status: %w", err))
				}
				return
			}
		}
		r.afterWrite(orig, ib)
		r.emit(ib, evs)
	}()

	res, evs, err := r.reconcileBuild(ctx, ib)
	if err != nil {
		return res, err
	}
	if ib.Status.Phase != orig.Status.Phase {
		logger.Info("Changed phase", "imagebuild", klog.KObj(ib), "from", orig.Status.Phase, "to", ib.Status.Phase,
			"pod", ib.Status.PodName)
	}
	return res, nil
}

// reconcileBuild is one step of the state machine; it changes ib.Status and nothing else of ib.
//
//  1. The triggers' watches are brought in line with the spec, and what they found is read
//     (observe: the revision's commit, a webhook, moved base images).
//  2. A new generation or rebuild annotation starts a new build (startBuild); else a trigger
//     asks for one, which runPolicy starts, keeps in status.next, or runs beside the latest
//     (trigger); else a finished build starts the one status.next holds.
//  3. Pods of other builds still running are deleted (not those of earlier builds runPolicy
//     Parallel keeps); nothing starts until they are gone.
//  4. A finished build only applies the pods' retention.
//  5. A build waiting for a retry starts its next attempt when the backoff has passed.
//  6. A build without a pod is pinned to a commit when it follows its revision (pin; it may
//     wait for a listing, reason Resolving), then creates it, unless its cache repository is
//     not one its namespace may use (phase Failed, Ready=False and
//     Stalled=True/CacheRepositoryNotAllowed, no retry) or its signing key cannot be used
//     (SigningKeyInvalid, the same), a tag template cannot be rendered
//     (InvalidTag), the queue is full (phase Queued), or a referenced Secret or ConfigMap is
//     missing (Ready=False/SecretNotFound, error for backoff).
//  7. A build with a pod takes its status from it (computeStatus); a signed build that
//     succeeded is signed by the manager (signPushed: Running until then); then maybe a
//     retry (planRetry); its history record follows (recordLatest).
//
// A multi-platform build (spec.platforms) does 6 and 7 with one pod per platform and pushes
// the image index once they have all succeeded (reconcilePlatforms, platforms.go).
func (r *ImageBuildReconciler) reconcileBuild(ctx context.Context, ib *v1alpha1.ImageBuild) (ctrl.Result, []pendingEvent, error) {
	now := r.now()
	var evs []pendingEvent

	pods, err := r.ownedPods(ctx, ib)
	if err != nil {
		return ctrl.Result{}, nil, err
	}
	obs, err := r.observe(ctx, ib, now)
	var missing *missingReferenceError
	if err != nil && !errors.As(err, &missing) { // a missing Secret is the build's to report
		return ctrl.Result{}, nil, err
	}
	if i := recordIndex(ib.Status.History, ib.Status.BuildNumber); i >= 0 && ib.Status.History[i].StartTime != nil {
		obs.fresh = !obs.startedAt.Before(r.askedAt(client.ObjectKeyFromObject(ib), ib.Status.BuildNumber, ib.Status.History[i].StartTime.Time))
	}
	// 1, 2. What the triggers found; a new build: the spec's, or a trigger's (runPolicy).
	switch {
	case isNewBuild(ib):
		r.startBuild(ib, v1alpha1.BuildRequest{Cause: specCause(ib), Time: metav1.NewTime(now)}, false, now)
		evs = append(evs, buildStartedEvent(ib))
	default:
		if req := triggeredBuild(ib, obs, now); req != nil {
			evs = append(evs, r.trigger(ib, *req, obs, now)...)
		} else if ib.Status.Phase.Finished() && ib.Status.Next != nil {
			r.startBuild(ib, *ib.Status.Next, false, now)
			evs = append(evs, buildStartedEvent(ib))
		}
	}
	if runPolicy(ib) == v1alpha1.RunPolicyParallel {
		recordParallel(&ib.Status, pods, now)
	}
	// 3. Never two builds (but those runPolicy Parallel keeps): stop every running pod that is
	// not the current attempt's.
	stopping, err := r.stopOthers(ctx, ib, pods, &evs)
	if err != nil {
		return ctrl.Result{}, evs, err
	}

	// 4. Finished.
	if ib.Status.Phase.Finished() {
		return r.applyRetention(ctx, ib, pods, now), evs, nil
	}

	// 5. Waiting for a retry.
	if t := ib.Status.NextRetryTime; t != nil {
		if wait := t.Sub(now); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, evs, nil
		}
		ib.Status.NextRetryTime = nil
		ib.Status.Attempt++
		ib.Status.PodName = ""
		ib.Status.StartTime = nil
		ib.Status.Platforms = nil
	}
	if multiPlatform(ib) {
		return r.reconcilePlatforms(ctx, ib, pods, obs, stopping, now, evs)
	}

	// 6. No pod yet: adopt the one a previous reconcile created, or create it.
	if ib.Status.PodName == "" {
		name := podName(ib, ib.Status.Attempt)
		if pod, err := r.findPod(ctx, ib, name); err != nil {
			return ctrl.Result{}, evs, err
		} else if pod != nil {
			ib.Status.PodName = name
		} else {
			if stopping {
				setCondition(&ib.Status, ib.Generation, v1alpha1.ConditionReconciling, metav1.ConditionTrue,
					v1alpha1.ReasonPodCreated, "Waiting for the executor pod of the previous build to stop")
				return ctrl.Result{}, evs, nil
			}
			if wait, ok := r.pin(ib, obs, now); !ok {
				return ctrl.Result{RequeueAfter: wait}, evs, nil
			}
			return r.startPod(ctx, ib, obs, now, evs)
		}
	}

	// 7. Observe the pod.
	pod, err := r.getPod(ctx, ib.Namespace, ib.Status.PodName)
	if err != nil {
		return ctrl.Result{}, evs, err
	}
	prev := ib.Status.Phase
	ib.Status = computeStatus(ib, pod, now)
	defer recordLatest(&ib.Status, pod)
	// A signed build has succeeded once the manager has signed what its pod pushed.
	if err := r.signPushed(ctx, ib, now); err != nil {
		return ctrl.Result{}, evs, err
	}
	var own []corev1.Pod
	if pod != nil {
		own = []corev1.Pod{*pod}
	}
	res, evs := r.concludeAttempt(ctx, ib, prev, pod, own, now, evs)
	return res, evs, nil
}

// concludeAttempt does what the status just observed implies, prev being the phase before:
// a failed attempt may be retried (planRetry: Retrying event); a build that has just ended
// gets its events (finished, build checks' findings), its pods' retention (pods), starts
// the build a trigger asked for meanwhile, and, on success, has its base images watched. pod
// is the pod the events relate to (nil for none).
func (r *ImageBuildReconciler) concludeAttempt(ctx context.Context, ib *v1alpha1.ImageBuild, prev v1alpha1.BuildPhase, pod *corev1.Pod,
	pods []corev1.Pod, now time.Time, evs []pendingEvent) (ctrl.Result, []pendingEvent) {
	var result ctrl.Result
	if ib.Status.Phase == v1alpha1.PhaseFailed {
		failure := *ib.Status.Failure
		if wait := planRetry(&ib.Status, ib.Generation, r.retryPolicy().forBuild(ib), now); wait > 0 {
			evs = append(evs, pendingEvent{related: related(pod), typ: corev1.EventTypeWarning, reason: v1alpha1.ReasonRetrying,
				action: "Retry", note: fmt.Sprintf("Attempt %d failed with %s; retrying in %s", ib.Status.Attempt, failure.Reason, wait)})
			return ctrl.Result{RequeueAfter: wait}, evs
		}
	}
	if ib.Status.Phase.Finished() && !prev.Finished() {
		evs = append(evs, finishedEvent(ib, pod))
		if e, ok := warningsEvent(ib, pod); ok { // the build checks' findings: one event per build
			evs = append(evs, e)
		}
		if len(pods) > 0 {
			result = r.applyRetention(ctx, ib, pods, now)
		}
		if ib.Status.Next != nil {
			// The build a trigger asked for meanwhile (runPolicy Serial) starts once this
			// one's end is written.
			result = ctrl.Result{RequeueAfter: time.Millisecond}
		}
		if r.Bases != nil && ib.Status.Phase == v1alpha1.PhaseSucceeded {
			// Watch what this build was FROM (triggers.baseImages) from now on.
			if _, err := r.followBases(ctx, ib, client.ObjectKeyFromObject(ib)); err != nil {
				log.FromContext(ctx).Info("Cannot watch the base images", "error", err.Error())
			}
		}
	}
	return result, evs
}

// startPod creates the executor pod of the current attempt, or leaves the build Queued when
// --max-concurrent-builds pods already run or older builds wait. It sets phase Pending or
// Queued with Ready=False and Reconciling=True. A build whose cache repository its namespace
// may not use (--cache-repository-prefix) fails before any pod exists: phase Failed,
// Ready=False and Stalled=True with reason CacheRepositoryNotAllowed, Reconciling removed; so
// does a signed build whose key cannot be used (SigningKeyInvalid: signing.go), or that
// runPolicy Parallel would leave unsigned (SigningUnsupported). A build with spec.cache.volume
// has its claims made first (prepareCacheVolumes, cachevolume.go): a claim of such a name that
// the ImageBuild does not control fails it the same way (CacheVolumeConflict), one being
// deleted holds it Pending (CacheVolumePending).
// A multi-platform build creates its pods, one per platform, in startPlatformPods.
func (r *ImageBuildReconciler) startPod(ctx context.Context, ib *v1alpha1.ImageBuild, obs observed, now time.Time, evs []pendingEvent) (ctrl.Result, []pendingEvent, error) {
	key := client.ObjectKeyFromObject(ib)
	gen := ib.Generation

	if problem := cacheRepositoryProblem(ib, r.Options.CacheRepositoryPrefixes); problem != "" {
		fail(&ib.Status, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonCacheRepositoryNotAllowed, Message: problem}, result.Result{}, now)
		evs = append(evs, pendingEvent{typ: corev1.EventTypeWarning, reason: v1alpha1.ReasonCacheRepositoryNotAllowed, action: "Build", note: problem})
		return ctrl.Result{}, evs, nil
	}

	opts, err := r.podOptions(ctx, ib)
	var missing *missingReferenceError
	if errors.As(err, &missing) {
		ib.Status.Phase = v1alpha1.PhasePending
		setCondition(&ib.Status, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, missing.Message)
		setCondition(&ib.Status, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonSecretNotFound, missing.Message)
	}
	if err != nil {
		return ctrl.Result{}, evs, err
	}
	if err := r.checkSigningKey(ctx, ib); err != nil {
		keyErr, isKey := errors.AsType[*signingKeyError](err)
		if !isKey {
			return ctrl.Result{}, evs, err
		}
		fail(&ib.Status, gen, v1alpha1.Failure{Reason: keyErr.failureReason(), Message: keyErr.msg}, result.Result{}, now)
		evs = append(evs, pendingEvent{typ: corev1.EventTypeWarning, reason: keyErr.failureReason(), action: "Build", note: keyErr.msg})
		return ctrl.Result{}, evs, nil
	}
	opts.commit = pinnedCommit(ib)
	if opts.tags, err = renderTags(ib, opts.commit, obs); err != nil {
		reason := v1alpha1.ReasonInvalidTag
		if opts.commit == "" && slices.ContainsFunc(ib.Spec.Output.AdditionalTags, usesCommit) {
			reason = string(result.ReasonSourceFetchFailed)
		}
		fail(&ib.Status, gen, v1alpha1.Failure{Reason: reason, Message: err.Error()}, result.Result{}, now)
		evs = append(evs, pendingEvent{typ: corev1.EventTypeWarning, reason: reason, action: "Build", note: err.Error()})
		return ctrl.Result{}, evs, nil
	}
	if res, done, err := r.prepareCacheVolumes(ctx, ib, now, &evs); done || err != nil {
		return res, evs, err
	}
	if multiPlatform(ib) {
		return r.startPlatformPods(ctx, ib, opts, now, evs)
	}

	if queued, err := r.queueIfFull(ctx, ib, &evs); err != nil || queued {
		return ctrl.Result{}, evs, err
	}

	pod := constructPod(ib, opts)
	if err := r.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, evs, fmt.Errorf("creating executor pod %s: %w", pod.Name, err)
	}
	r.slots.launch(key, now, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
	ib.Status.PodName = pod.Name
	ib.Status.Phase = v1alpha1.PhasePending
	msg := fmt.Sprintf("Created executor pod %s (attempt %d)", pod.Name, ib.Status.Attempt)
	setCondition(&ib.Status, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPodCreated, msg)
	setCondition(&ib.Status, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonPodCreated, msg)
	evs = append(evs, pendingEvent{related: pod, typ: corev1.EventTypeNormal, reason: v1alpha1.ReasonPodCreated, action: "Build", note: msg})
	return ctrl.Result{}, evs, nil
}

// queueIfFull reports whether ib must wait for build slots (haveSlot), and then makes it
// Queued: phase Queued, Ready=False and Reconciling=True with reason Queued, a Queued event
// when it joins the queue.
func (r *ImageBuildReconciler) queueIfFull(ctx context.Context, ib *v1alpha1.ImageBuild, evs *[]pendingEvent) (bool, error) {
	slot, err := r.haveSlot(ctx, ib)
	if err != nil || slot.free() {
		return false, err
	}
	// The condition's message stays the same while the build waits (a count in it would
	// be stale at once, and rewriting it would cost a status write per freed slot); the
	// event says how the queue stood when the build joined it.
	msg := fmt.Sprintf("Waiting for a build slot (at most %d builds run at once; older builds start first)", slot.limit)
	if slot.need > 1 {
		msg = fmt.Sprintf("Waiting for %d build slots, one per platform (at most %d executor pods run at once; older builds start first)",
			slot.need, slot.limit)
	}
	if ib.Status.Phase != v1alpha1.PhaseQueued {
		*evs = append(*evs, pendingEvent{typ: corev1.EventTypeNormal, reason: v1alpha1.ReasonQueued, action: "Queue",
			note: fmt.Sprintf("Queued: %d of %d build slots in use, %d older builds waiting", slot.running, slot.limit, slot.older)})
	}
	gen := ib.Generation
	ib.Status.Phase = v1alpha1.PhaseQueued
	setCondition(&ib.Status, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonQueued, msg)
	setCondition(&ib.Status, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonQueued, msg)
	r.slots.queue(client.ObjectKeyFromObject(ib))
	return true, nil
}

// missingReferenceError is a Secret or ConfigMap that a build needs and that is missing, or
// lacks the key or type it needs. Like Flux's waiting errors (serror.Waiting), it is not the
// spec's fault for good: the build waits in phase Pending with Ready=False and
// Reconciling=True (reason SecretNotFound), and the reconcile returns the error so that
// controller-runtime retries with backoff until the object is there. Message is for people;
// it names the object and the field that references it, never a Secret's data.
type missingReferenceError struct {
	Message string
}

func (e *missingReferenceError) Error() string { return e.Message }

func missingReference(format string, args ...any) error {
	return &missingReferenceError{Message: fmt.Sprintf(format, args...)}
}

// podOptions resolves what constructPod needs beyond the ImageBuild, checking that the
// referenced Secrets and ConfigMaps exist: a *missingReferenceError when one does not or lacks
// what the build needs, another error when one could not be read.
func (r *ImageBuildReconciler) podOptions(ctx context.Context, ib *v1alpha1.ImageBuild) (podOptions, error) {
	opts := podOptions{executorImage: r.Options.ExecutorImage, resources: r.Options.Resources,
		nodeSelector: r.Options.NodeSelector, tolerations: r.Options.Tolerations, managerImage: r.Options.ManagerImage}
	ns := ib.Namespace
	selector := ib.Spec.NodeSelector
	if selector == nil {
		selector = opts.nodeSelector
	}
	hostUsers, why, err := r.hostUsers(ctx, selector)
	if err != nil {
		return opts, err
	}
	if hostUsers && why != "" && r.Options.HostUsersMode == HostUsersAuto {
		log.FromContext(ctx).V(1).Info("Executor pod runs in the host's user namespace", "reason", why)
	}
	opts.hostUsers = hostUsers

	if ref := ib.Spec.Source.Git.SecretRef; ref != nil {
		s, err := r.getSecret(ctx, ns, ref.Name, "spec.source.git.secretRef")
		if err != nil {
			return opts, err
		}
		switch {
		case s.Type == corev1.SecretTypeSSHAuth || s.Data[corev1.SSHAuthPrivateKey] != nil:
			opts.gitAuth = gitAuthSSH
		case s.Type == corev1.SecretTypeBasicAuth || s.Data[corev1.BasicAuthPasswordKey] != nil:
			opts.gitAuth = gitAuthBasic
		default:
			return opts, missingReference("Secret %q (spec.source.git.secretRef) is neither of type %s nor %s",
				ref.Name, corev1.SecretTypeBasicAuth, corev1.SecretTypeSSHAuth)
		}
	}
	if ref := ib.Spec.Output.PushSecretRef; ref != nil {
		s, err := r.getSecret(ctx, ns, ref.Name, "spec.output.pushSecretRef")
		if err != nil {
			return opts, err
		}
		if s.Data[corev1.DockerConfigJsonKey] == nil {
			return opts, missingReference("Secret %q (spec.output.pushSecretRef) has no %s key; it must be of type %s",
				ref.Name, corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson)
		}
	}
	if a := ib.Spec.SSHAgent; a != nil && a.GitSecret && opts.gitAuth != gitAuthSSH {
		return opts, missingReference("spec.sshAgent.gitSecret needs spec.source.git.secretRef to name a Secret of type %s", corev1.SecretTypeSSHAuth)
	}
	if a := ib.Spec.SSHAgent; a != nil && a.SecretRef != nil {
		s, err := r.getSecret(ctx, ns, a.SecretRef.Name, "spec.sshAgent.secretRef")
		if err != nil {
			return opts, err
		}
		if s.Data[corev1.SSHAuthPrivateKey] == nil {
			return opts, missingReference("Secret %q (spec.sshAgent.secretRef) has no %s key; it must be of type %s",
				a.SecretRef.Name, corev1.SSHAuthPrivateKey, corev1.SecretTypeSSHAuth)
		}
	}
	for i, bs := range ib.Spec.Secrets {
		field := fmt.Sprintf("spec.secrets[%d].secretKeyRef", i)
		sec, err := r.getSecret(ctx, ns, bs.SecretKeyRef.Name, field)
		if err != nil {
			return opts, err
		}
		if _, ok := sec.Data[bs.SecretKeyRef.Key]; !ok {
			return opts, missingReference("Secret %q (%s) has no key %q", bs.SecretKeyRef.Name, field, bs.SecretKeyRef.Key)
		}
	}
	for i, a := range ib.Spec.BuildArgs {
		if a.ValueFrom == nil {
			continue
		}
		field := fmt.Sprintf("spec.buildArgs[%d].valueFrom", i)
		if err := r.checkBuildArgSource(ctx, ns, field, a.ValueFrom); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// checkBuildArgSource checks that the Secret or ConfigMap key a build argument reads exists,
// unless it is optional.
func (r *ImageBuildReconciler) checkBuildArgSource(ctx context.Context, ns, field string, from *v1alpha1.BuildArgSource) error {
	if s := from.SecretKeyRef; s != nil && !ptrTrue(s.Optional) {
		sec, err := r.getSecret(ctx, ns, s.Name, field+".secretKeyRef")
		if err != nil {
			return err
		}
		if _, ok := sec.Data[s.Key]; !ok {
			return missingReference("Secret %q (%s.secretKeyRef) has no key %q", s.Name, field, s.Key)
		}
	}
	if c := from.ConfigMapKeyRef; c != nil && !ptrTrue(c.Optional) {
		cm := &corev1.ConfigMap{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: c.Name}, cm); err != nil {
			if apierrors.IsNotFound(err) {
				return missingReference("ConfigMap %q (%s.configMapKeyRef) not found", c.Name, field)
			}
			return fmt.Errorf("getting ConfigMap %s: %w", c.Name, err)
		}
		_, inData := cm.Data[c.Key]
		_, inBinary := cm.BinaryData[c.Key]
		if !inData && !inBinary {
			return missingReference("ConfigMap %q (%s.configMapKeyRef) has no key %q", c.Name, field, c.Key)
		}
	}
	return nil
}

// getSecret reads a Secret that field references: a *missingReferenceError when it does not
// exist.
func (r *ImageBuildReconciler) getSecret(ctx context.Context, ns, name, field string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, missingReference("Secret %q (%s) not found", name, field)
		}
		return nil, fmt.Errorf("getting Secret %s: %w", name, err)
	}
	return s, nil
}

// slotState is how the build queue stands for one build: limit slots (--max-concurrent-builds),
// running executor pods, older builds that wait to start and the slots they need
// (olderSlots), and the slots the build needs (need: one per pod).
type slotState struct{ limit, running, older, olderSlots, need int }

// free reports whether the build may start: its slots are left once the older builds have
// theirs.
func (s slotState) free() bool {
	return s.limit <= 0 || s.running+s.olderSlots+max(s.need, 1) <= s.limit
}

// slotsNeeded is how many build slots ib's build takes: one per executor pod (one per
// platform of spec.platforms), at most limit: a build of more platforms than
// --max-concurrent-builds starts when every slot is free, and then runs all its pods.
func slotsNeeded(ib *v1alpha1.ImageBuild, limit int) int {
	n := max(len(ib.Spec.Platforms), 1)
	if limit > 0 {
		n = min(n, limit)
	}
	return n
}

// haveSlot reports how the queue stands for ib: the executor pods that run (counting those this
// manager just created and its cache may not show yet), and the builds older than ib that wait
// to start (waiting), with the slots each needs. All of it comes from the manager's cache and
// memory.
func (r *ImageBuildReconciler) haveSlot(ctx context.Context, ib *v1alpha1.ImageBuild) (slotState, error) {
	st := slotState{limit: r.Options.MaxConcurrentBuilds}
	if st.limit <= 0 {
		return st, nil
	}
	st.need = slotsNeeded(ib, st.limit)
	running, err := r.runningPods(ctx)
	if err != nil {
		return st, err
	}
	st.running = running
	if st.running+st.need > st.limit {
		return st, nil
	}
	var ibs v1alpha1.ImageBuildList
	if err := r.Client.List(ctx, &ibs); err != nil {
		return st, fmt.Errorf("listing ImageBuilds: %w", err)
	}
	for i := range ibs.Items {
		other := &ibs.Items[i]
		if other.UID != ib.UID && r.waiting(other) && olderThan(other, ib) {
			st.older++
			st.olderSlots += slotsNeeded(other, st.limit)
		}
	}
	return st, nil
}

// runningPods counts the executor pods that hold a build slot.
func (r *ImageBuildReconciler) runningPods(ctx context.Context) (int, error) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.MatchingLabels{managedByLabel: managedByValue}); err != nil {
		return 0, fmt.Errorf("listing executor pods: %w", err)
	}
	cached := map[types.NamespacedName]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		cached[client.ObjectKeyFromObject(p)] = !podFinished(p)
	}
	return r.slots.active(cached, r.now()), nil
}

// newBuildGrace bounds how long a build that was never reconciled holds its place in the queue.
const newBuildGrace = time.Minute

// waiting reports whether the cached ib waits for a build slot and this manager has not
// launched its pod: it is Queued (in the cache or in this manager's memory), or it is new and
// not reconciled yet. A new build will ask for a slot as soon as the one worker gets to it, and
// a younger build the worker happens to reach first must not take that slot; it keeps its place
// for newBuildGrace, so that a build whose first status write keeps failing cannot block the
// queue for good.
func (r *ImageBuildReconciler) waiting(ib *v1alpha1.ImageBuild) bool {
	if ib.DeletionTimestamp != nil {
		return false
	}
	key := client.ObjectKeyFromObject(ib)
	switch {
	case r.slots.launched(key), r.slots.left(key):
		return false
	case ib.Status.Phase == v1alpha1.PhaseQueued || r.slots.isQueued(key):
		return true
	case ib.Status.Phase == "":
		return r.now().Sub(ib.CreationTimestamp.Time) < newBuildGrace
	}
	return false
}

// olderThan orders the queue: creation time, then namespace and name.
func olderThan(a, b *v1alpha1.ImageBuild) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// ownedPods lists the executor pods of ib's name from the cache, by index.
func (r *ImageBuildReconciler) ownedPods(ctx context.Context, ib *v1alpha1.ImageBuild) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ib.Namespace), client.MatchingFields{ownerIndex: ib.Name}); err != nil {
		return nil, fmt.Errorf("listing executor pods: %w", err)
	}
	return pods.Items, nil
}

// stopOthers deletes the unfinished pods that are not the current attempt's (an older
// generation's or attempt's, a previous ImageBuild of the same name's), and reports whether
// any is still there.
func (r *ImageBuildReconciler) stopOthers(ctx context.Context, ib *v1alpha1.ImageBuild, pods []corev1.Pod, evs *[]pendingEvent) (bool, error) {
	current := currentPods(ib)
	parallel := parallelPods(&ib.Status)
	stopping := false
	for i := range pods {
		p := &pods[i]
		ours := metav1.IsControlledBy(p, ib)
		if ours && (current[p.Name] || podFinished(p) || parallel[p.Name]) {
			continue
		}
		stopping = true
		if p.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, p, client.Preconditions{UID: &p.UID}); err != nil && !apierrors.IsNotFound(err) {
			return true, fmt.Errorf("deleting executor pod %s of a previous build: %w", p.Name, err)
		}
		*evs = append(*evs, pendingEvent{related: p.DeepCopy(), typ: corev1.EventTypeNormal, reason: "PodStopped", action: "Delete",
			note: fmt.Sprintf("Deleted executor pod %s of a previous build", p.Name)})
	}
	return stopping, nil
}

// applyRetention deletes finished pods older than spec.retention.ttlSecondsAfterFinished and
// asks to be called again when the next one expires.
func (r *ImageBuildReconciler) applyRetention(ctx context.Context, ib *v1alpha1.ImageBuild, pods []corev1.Pod, now time.Time) ctrl.Result {
	ret := ib.Spec.Retention
	if ret == nil || ret.TTLSecondsAfterFinished == nil {
		return ctrl.Result{}
	}
	ttl := time.Duration(*ret.TTLSecondsAfterFinished) * time.Second
	var next time.Duration
	for i := range pods {
		p := &pods[i]
		if !podFinished(p) || p.DeletionTimestamp != nil {
			continue
		}
		end := podFinishedAt(p)
		if end.IsZero() && ib.Status.CompletionTime != nil {
			end = ib.Status.CompletionTime.Time
		}
		if wait := end.Add(ttl).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		if err := r.Client.Delete(ctx, p, client.Preconditions{UID: &p.UID}); err != nil && !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "Could not delete expired executor pod", "pod", klog.KObj(p))
		}
	}
	return ctrl.Result{RequeueAfter: next}
}

// deleteOrphans deletes the unfinished pods of a deleted ImageBuild at once, without waiting
// for the garbage collector.
func (r *ImageBuildReconciler) deleteOrphans(ctx context.Context, key types.NamespacedName) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(key.Namespace), client.MatchingFields{ownerIndex: key.Name}); err != nil {
		return fmt.Errorf("listing executor pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, p, client.Preconditions{UID: &p.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting executor pod %s of a deleted ImageBuild: %w", p.Name, err)
		}
		log.FromContext(ctx).Info("Deleted executor pod of a deleted ImageBuild", "pod", klog.KObj(p))
	}
	return nil
}

// getPod reads a pod from the cache, and from the API server when the cache does not have it
// (it may not have seen a pod just created). It returns nil when the pod does not exist.
func (r *ImageBuildReconciler) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	key := types.NamespacedName{Namespace: ns, Name: name}
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, pod)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting executor pod %s: %w", name, err)
	}
	return pod, nil
}

// findPod looks for the pod a previous reconcile may have created for the current attempt. The
// cache is enough, unless this manager created a pod for ib within launchGrace (then its status
// write may have failed, and the cache not show the pod yet): a queued build must not cost a
// read of the API server each time it is looked at. Should the cache miss a pod all the same
// (another manager created it an instant before this one took over), creating it again fails
// with AlreadyExists, which startPod takes as created.
func (r *ImageBuildReconciler) findPod(ctx context.Context, ib *v1alpha1.ImageBuild, name string) (*corev1.Pod, error) {
	if r.slots.launched(client.ObjectKeyFromObject(ib)) {
		return r.getPod(ctx, ib.Namespace, name)
	}
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: name}, pod)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting executor pod %s: %w", name, err)
	}
	return pod, nil
}

// retryPolicy is Options' retry policy with its defaults: 3 retries (none when MaxRetries is
// 0), backoff from 10s up to 5m.
func (r *ImageBuildReconciler) retryPolicy() retryPolicy {
	p := retryPolicy{maxRetries: 3, backoff: r.Options.RetryBackoff, maxBackoff: r.Options.MaxRetryBackoff}
	if n := r.Options.MaxRetries; n != nil {
		p.maxRetries = max(*n, 0)
	}
	if p.backoff == 0 {
		p.backoff = 10 * time.Second
	}
	if p.maxBackoff == 0 {
		p.maxBackoff = 5 * time.Minute
	}
	return p
}

func (r *ImageBuildReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// afterWrite does what the status written (or found unchanged) implies for this manager's
// memory and metrics, once that status is stored: a build that left the queue leaves the
// slot tracker's queue, and wakes the next in line when it left without taking a slot; a
// finished build, or one waiting for a retry, frees its build slot; a build that has just
// finished is counted in the metrics (finishedNow), once.
func (r *ImageBuildReconciler) afterWrite(orig, ib *v1alpha1.ImageBuild) {
	key := client.ObjectKeyFromObject(ib)
	wasWaiting := orig.Status.Phase == v1alpha1.PhaseQueued || orig.Status.Phase == ""
	if wasWaiting && ib.Status.Phase != v1alpha1.PhaseQueued {
		r.slots.dequeue(key)
		if !hasPods(&ib.Status) && r.wakeups != nil {
			r.wakeQueue()
		}
	}
	switch {
	case ib.Status.Phase.Finished():
		r.slots.forget(key) // it may have been queued
	case ib.Status.NextRetryTime != nil:
		r.slots.release(key)
	}
	if ib.Status.BuildNumber > orig.Status.BuildNumber {
		r.metrics.startedBuild(ib.Status.Cause)
	}
	if finishedNow(&orig.Status, &ib.Status) {
		r.metrics.finished(&ib.Status)
	}
}

// finishedNow reports whether the build of status now has ended since status before: it is
// finished, and before was unfinished or described another build (an earlier generation,
// rebuild or attempt).
func finishedNow(before, now *v1alpha1.ImageBuildStatus) bool {
	if !now.Phase.Finished() {
		return false
	}
	return !before.Phase.Finished() || before.ObservedGeneration != now.ObservedGeneration ||
		before.ObservedRebuild != now.ObservedRebuild || before.Attempt != now.Attempt
}

func (r *ImageBuildReconciler) emit(ib *v1alpha1.ImageBuild, evs []pendingEvent) {
	if r.Recorder == nil {
		return
	}
	for _, e := range evs {
		r.Recorder.Eventf(ib, e.related, e.typ, e.reason, e.action, "%s", e.note)
	}
}

// related is pod as an event's related object; nil when pod is.
func related(pod *corev1.Pod) runtime.Object {
	if pod == nil {
		return nil
	}
	return pod
}

func finishedEvent(ib *v1alpha1.ImageBuild, pod *corev1.Pod) pendingEvent {
	if ib.Status.Phase == v1alpha1.PhaseSucceeded {
		return pendingEvent{related: related(pod), typ: corev1.EventTypeNormal, reason: v1alpha1.ReasonSucceeded, action: "Build",
			note: apimeta.FindStatusCondition(ib.Status.Conditions, v1alpha1.ConditionReady).Message}
	}
	f := ib.Status.Failure
	return pendingEvent{related: related(pod), typ: corev1.EventTypeWarning, reason: f.Reason, action: "Build", note: f.Message}
}

// SetupWithManager registers the pod index, the metrics and the controller.
func (r *ImageBuildReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.ExecutorImage == "" {
		return errors.New("setting up the ImageBuild controller: no executor image")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, ownerIndex, indexOwner); err != nil {
		return fmt.Errorf("indexing pods by ImageBuild: %w", err)
	}
	m, err := registerMetrics(mgr.GetClient())
	if err != nil {
		return err
	}
	r.metrics = m
	r.wakeups = make(chan event.GenericEvent, 1)
	r.initTriggers()
	if r.Poller == nil {
		o := r.Options.Poll
		o.Notify = r.notifyChange
		r.Poller = gitpoll.New(o)
	}
	if r.Bases == nil {
		r.Bases = newBaseWatcher(r.notifyChange)
	}
	if r.Publisher == nil {
		r.Publisher = newPublisher(r.notifyChange)
	}
	for _, run := range []manager.Runnable{r.Poller, r.Bases, r.Publisher} {
		if err := mgr.Add(run); err != nil {
			return fmt.Errorf("adding the triggers' watchers: %w", err)
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Its own status writes do not wake an ImageBuild: only a new generation (spec) or a new
		// rebuild annotation, its creation and its deletion do (each reconcile returns when it
		// wants to be called again).
		For(&v1alpha1.ImageBuild{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Pod{}).
		// The claims of cache volumes (spec.cache.volume): one being deleted holds up a build.
		Owns(&corev1.PersistentVolumeClaim{}).
		// A pod that ends or goes away frees a slot: wake the head of the queue.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.queueHead), builder.WithPredicates(slotFreed{})).
		WatchesRawSource(source.Channel(r.wakeups, handler.EnqueueRequestsFromMapFunc(r.queueHead))).
		// A trigger found something: a commit, a listing error, a base image that moved.
		WatchesRawSource(source.Channel(r.changes, &handler.EnqueueRequestForObject{})).
		// One worker: the queue is decided one build at a time.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// queueHead wakes the builds at the head of the queue, as many as there are free build slots
// (at least one): the oldest that wait (see waiting), from the cache and this manager's memory.
// Waking every queued build each time a slot frees would cost each of them a read of the API
// server, hundreds per freed slot under load (issue 13's load benchmark).
func (r *ImageBuildReconciler) queueHead(ctx context.Context, _ client.Object) []reconcile.Request {
	var ibs v1alpha1.ImageBuildList
	if err := r.Client.List(ctx, &ibs); err != nil {
		log.FromContext(ctx).Error(err, "Could not list the queued ImageBuilds")
		return nil
	}
	var queued []*v1alpha1.ImageBuild
	for i := range ibs.Items {
		ib := &ibs.Items[i]
		if r.waiting(ib) && ib.Status.Phase != "" { // a new build is reconciled anyway
			queued = append(queued, ib)
		}
	}
	sort.Slice(queued, func(i, j int) bool { return olderThan(queued[i], queued[j]) })
	n := 1
	if limit := r.Options.MaxConcurrentBuilds; limit > 0 {
		if running, err := r.runningPods(ctx); err == nil {
			n = max(limit-running, 1)
		}
	} else {
		n = len(queued)
	}
	reqs := make([]reconcile.Request, 0, min(n, len(queued)))
	for _, ib := range queued[:min(n, len(queued))] {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ib)})
	}
	return reqs
}

// wakeQueue asks for queueHead to run again: the build just reconciled was waiting for a slot
// and left the queue without taking one (it failed, or waits for a Secret), so a slot it might
// have taken is free for the next. It never blocks: one pending wake-up is enough.
func (r *ImageBuildReconciler) wakeQueue() {
	select {
	case r.wakeups <- event.GenericEvent{Object: &v1alpha1.ImageBuild{}}:
	default:
	}
}

func indexOwner(obj client.Object) []string {
	owner := metav1.GetControllerOf(obj)
	if owner == nil || owner.Kind != "ImageBuild" || owner.APIVersion != v1alpha1.GroupVersion.String() {
		return nil
	}
	return []string{owner.Name}
}

// slotTracker remembers what the cache may not show yet: pods this manager created (which
// take a slot at once) and builds it queued.
type slotTracker struct {
	mu       sync.Mutex
	launches map[types.NamespacedName]launch // by ImageBuild
	// waiting is true for the builds this manager queued, false for those it took out of the
	// queue without launching them (a Secret went missing): the cache may still show them
	// Queued for a moment, and a build they seem to wait before must not wait for them.
	waiting map[types.NamespacedName]bool
}

type launch struct {
	pods []types.NamespacedName // one, or one per platform
	at   time.Time
}

// launchGrace is how long a created pod counts as running even when the cache does not show it.
const launchGrace = time.Minute

// launch records that this manager created pods for ib's build: each takes a slot.
func (s *slotTracker) launch(ib types.NamespacedName, now time.Time, pods ...types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.launches == nil {
		s.launches = map[types.NamespacedName]launch{}
	}
	s.launches[ib] = launch{pods: pods, at: now}
	delete(s.waiting, ib)
}

func (s *slotTracker) release(ib types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.launches, ib)
}

func (s *slotTracker) forget(ib types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.launches, ib)
	delete(s.waiting, ib)
}

func (s *slotTracker) queue(ib types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting == nil {
		s.waiting = map[types.NamespacedName]bool{}
	}
	s.waiting[ib] = true
}

func (s *slotTracker) dequeue(ib types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting == nil {
		s.waiting = map[types.NamespacedName]bool{}
	}
	s.waiting[ib] = false
}

// left reports whether this manager took ib out of the queue without launching it.
func (s *slotTracker) left(ib types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.waiting[ib]
	return ok && !q
}

func (s *slotTracker) queued() []types.NamespacedName {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]types.NamespacedName, 0, len(s.waiting))
	for k, q := range s.waiting {
		if q {
			keys = append(keys, k)
		}
	}
	return keys
}

func (s *slotTracker) isQueued(ib types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting[ib]
}

func (s *slotTracker) launched(ib types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.launches[ib]
	return ok
}

// active counts the running pods: the unfinished ones of the cache (cached maps each cached
// pod to whether it is unfinished), and those launched within launchGrace that the cache does
// not show yet.
func (s *slotTracker) active(cached map[types.NamespacedName]bool, now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, unfinished := range cached {
		if unfinished {
			n++
		}
	}
	for ib, l := range s.launches {
		if now.Sub(l.at) > launchGrace {
			delete(s.launches, ib)
			continue
		}
		for _, pod := range l.pods {
			if _, seen := cached[pod]; !seen {
				n++
			}
		}
	}
	return n
}

// slotFreed passes the pod events that free a build slot: a pod that finished or went away.
type slotFreed struct{ predicate.Funcs }

func (slotFreed) Create(event.CreateEvent) bool   { return false }
func (slotFreed) Generic(event.GenericEvent) bool { return false }
func (slotFreed) Delete(event.DeleteEvent) bool   { return true }
func (slotFreed) Update(e event.UpdateEvent) bool {
	oldPod, ok1 := e.ObjectOld.(*corev1.Pod)
	newPod, ok2 := e.ObjectNew.(*corev1.Pod)
	return ok1 && ok2 && !podFinished(oldPod) && podFinished(newPod)
}

func ptrTrue(b *bool) bool { return b != nil && *b }

// CacheOptions are the manager's cache options the controller needs: only executor pods and
// the claims of cache volumes (labelled app.kubernetes.io/managed-by=slipway) are cached, not
// every pod and claim of the cluster.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{managedByLabel: managedByValue})
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   {Label: managed},
		&corev1.PersistentVolumeClaim{}: {Label: managed},
	}}
}
