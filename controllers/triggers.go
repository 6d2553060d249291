package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/baseimage"
	"github.com/slipway-dev/slipway/controllers/gitpoll"
	"github.com/slipway-dev/slipway/controllers/tagtemplate"
)

// What starts a build besides the spec (issue 14). The trust boundaries:
//
//   - The git server is asked only for its refs (gitpoll), with the credentials of the
//     ImageBuild's own source Secret; listings are shared only between ImageBuilds with the
//     same URL and the same credentials, so no ImageBuild learns the commits of a repository
//     its Secret cannot read.
//   - A webhook request (untrusted until verified, see controllers/webhook) only records the
//     time it arrived, in the annotation WebhookAnnotation; the controller then lists the
//     refs itself: the payload's commit is never built.
//   - A base image's registry is asked for a digest (HEAD) with the credentials of the
//     ImageBuild's push Secret; a moved digest only starts a build, which pulls and verifies
//     the image as any build does.

// WebhookAnnotation is set by the webhook receiver on an ImageBuild to the time (RFC 3339) of
// the latest verified push for it; the controller, on whichever replica leads, then lists the
// repository's refs at once. It carries nothing from the request but its time.
const WebhookAnnotation = "build.slipway.dev/webhook-received"

// followInterval is the interval of an ImageBuild that follows its revision without
// source.git.interval (a webhook trigger, or tags that need the commit): a daily listing, in
// case a webhook delivery was lost.
const followInterval = 24 * time.Hour

// defaultBaseInterval is how often base images are checked without source.git.interval.
const defaultBaseInterval = time.Hour

// initTriggers makes the reconciler's trigger state; SetupWithManager calls it.
func (r *ImageBuildReconciler) initTriggers() {
	r.triggerMu.Lock()
	defer r.triggerMu.Unlock()
	if r.changes == nil {
		r.changes = make(chan event.GenericEvent, 1024)
		r.subscriptions = map[types.NamespacedName]subscription{}
		r.webhooks = map[types.NamespacedName]webhookSeen{}
		r.asked = map[types.NamespacedName]askedBuild{}
	}
}

// notifyChange has key reconciled: a trigger found something for it. It blocks only while
// a thousand such requests wait for the controller.
func (r *ImageBuildReconciler) notifyChange(key types.NamespacedName) {
	r.changes <- event.GenericEvent{Object: &v1alpha1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
}

// follows reports whether ib's builds are pinned to a commit the manager resolved: it polls
// its revision, has a webhook trigger, or has tags made from the commit. A revision that is
// a full commit SHA is pinned already.
func follows(ib *v1alpha1.ImageBuild) bool {
	if gitpoll.IsCommit(ib.Spec.Source.Git.Revision) {
		return false
	}
	if ib.Spec.Source.Git.Interval != nil || (ib.Spec.Triggers != nil && ib.Spec.Triggers.Webhook != nil) {
		return true
	}
	return slices.ContainsFunc(ib.Spec.Output.AdditionalTags, usesCommit)
}

// usesCommit reports whether the tag template t names the commit ({{.Commit}},
// {{.ShortCommit}}): the templates' grammar (tagtemplate.Validate) has fields and nothing else.
func usesCommit(t string) bool {
	return tagtemplate.Validate(t) == nil && strings.Contains(t, "Commit")
}

func pollInterval(ib *v1alpha1.ImageBuild) time.Duration {
	if i := ib.Spec.Source.Git.Interval; i != nil {
		return i.Duration
	}
	return followInterval
}

// subscription is what the controller last subscribed an ImageBuild with: it subscribes
// again (reading the Secret again) only when this changes, or after a listing failed.
type subscription struct {
	url, revision, secret string
	interval              time.Duration
	at                    time.Time
}

// resubscribeAfterError is how long a failed listing waits before the controller reads the
// source Secret again (it may have been fixed) and subscribes anew; rereadSecret how long a
// working subscription goes on before the Secret is read again (it may have been rotated or
// deleted).
const (
	resubscribeAfterError = time.Minute
	rereadSecret          = 10 * time.Minute
)

// observe keeps the manager's watches of ib (its revision, its base images, its webhook
// annotation) in line with its spec, and returns what they found. It reads a Secret only
// when a watch has to be set up anew.
func (r *ImageBuildReconciler) observe(ctx context.Context, ib *v1alpha1.ImageBuild, now time.Time) (observed, error) {
	key := client.ObjectKeyFromObject(ib)
	var obs observed
	if r.Poller != nil {
		st, err := r.followRevision(ctx, ib, key, now)
		if err != nil {
			return obs, err
		}
		_, obs.following = r.Poller.Latest(key)
		obs.commit, obs.ref, obs.startedAt, obs.listErr = st.Commit, st.Ref, st.StartedAt, st.Err
		obs.byWebhook = r.webhookReceived(ib, key, now, st.StartedAt)
	}
	if r.Bases != nil {
		moved, err := r.followBases(ctx, ib, key)
		if err != nil {
			return obs, err
		}
		obs.baseChanged = len(moved) > 0
		obs.moved = moved
	}
	return obs, nil
}

// followRevision subscribes ib to the poller when it follows its revision, and returns what
// the latest listing said of it; the zero Status when it does not follow.
func (r *ImageBuildReconciler) followRevision(ctx context.Context, ib *v1alpha1.ImageBuild, key types.NamespacedName, now time.Time) (gitpoll.Status, error) {
	if !follows(ib) {
		r.unfollow(key)
		return gitpoll.Status{}, nil
	}
	git := ib.Spec.Source.Git
	want := subscription{url: git.URL, revision: git.Revision, interval: pollInterval(ib)}
	if git.SecretRef != nil {
		want.secret = git.SecretRef.Name
	}
	st, subscribed := r.Poller.Latest(key)
	r.triggerMu.Lock()
	had, ok := r.subscriptions[key]
	r.triggerMu.Unlock()
	current := subscribed && ok && had.url == want.url && had.revision == want.revision &&
		had.secret == want.secret && had.interval == want.interval
	age := now.Sub(had.at)
	if current && age < rereadSecret && (st.Err == nil || age < resubscribeAfterError) {
		return st, nil
	}
	creds, err := r.gitCredentials(ctx, ib)
	if err != nil {
		if _, missing := errors.AsType[*missingReferenceError](err); missing {
			// The Secret is gone: no listing goes on with the credentials it held.
			r.unfollow(key)
		}
		return gitpoll.Status{}, err
	}
	if err := r.Poller.Subscribe(key, gitpoll.Source{URL: git.URL, Revision: git.Revision, Credentials: creds}, want.interval); err != nil {
		if errors.Is(err, gitpoll.ErrCommit) {
			return gitpoll.Status{}, nil
		}
		// A URL the poller cannot list or unusable credentials: the build goes on unpinned,
		// and the executor says what is wrong with the source.
		log.FromContext(ctx).Info("Cannot follow the revision", "error", err.Error())
		return gitpoll.Status{Err: err, StartedAt: now, CheckedAt: now}, nil
	}
	want.at = now
	r.triggerMu.Lock()
	r.subscriptions[key] = want
	r.triggerMu.Unlock()
	st, _ = r.Poller.Latest(key)
	return st, nil
}

// unfollow forgets every watch of key.
func (r *ImageBuildReconciler) unfollow(key types.NamespacedName) {
	if r.Poller != nil {
		r.Poller.Unsubscribe(key)
	}
	r.triggerMu.Lock()
	delete(r.subscriptions, key)
	r.triggerMu.Unlock()
}

// gitCredentials reads spec.source.git.secretRef for the poller.
func (r *ImageBuildReconciler) gitCredentials(ctx context.Context, ib *v1alpha1.ImageBuild) (gitpoll.Credentials, error) {
	ref := ib.Spec.Source.Git.SecretRef
	if ref == nil {
		return gitpoll.Credentials{}, nil
	}
	s, err := r.getSecret(ctx, ib.Namespace, ref.Name, "spec.source.git.secretRef")
	if err != nil {
		return gitpoll.Credentials{}, err
	}
	return gitpoll.Credentials{
		Username:      string(s.Data[corev1.BasicAuthUsernameKey]),
		Password:      string(s.Data[corev1.BasicAuthPasswordKey]),
		SSHPrivateKey: s.Data[corev1.SSHAuthPrivateKey],
		KnownHosts:    s.Data["known_hosts"],
	}, nil
}

// webhookSeen is what this manager made of an ImageBuild's WebhookAnnotation: its value, when
// it saw it, and the start of the first listing begun after that (zero until there is one).
type webhookSeen struct {
	value   string
	seenAt  time.Time
	listing time.Time
	stale   bool // seen long after it was written (a restarted manager): no listing is its
}

// webhookStale is how old a webhook annotation a manager sees for the first time may be and
// still be taken for a push to look for (a manager that starts sees every old one).
const webhookStale = 10 * time.Minute

// webhookReceived handles ib's WebhookAnnotation: a value this manager has not seen makes the
// poller list the repository now, and the first listing begun after that is the webhook's.
// It reports whether the listing that began at listingStarted is that one: a commit it found
// moved is then the webhook's (cause Webhook), a later listing's is polling's (Commit).
func (r *ImageBuildReconciler) webhookReceived(ib *v1alpha1.ImageBuild, key types.NamespacedName, now, listingStarted time.Time) bool {
	v := ib.Annotations[WebhookAnnotation]
	if v == "" {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return false
	}
	r.triggerMu.Lock()
	w := r.webhooks[key]
	fresh := w.value != v
	if fresh {
		w = webhookSeen{value: v, seenAt: now, stale: now.Sub(at) > webhookStale}
	}
	if w.listing.IsZero() && !listingStarted.IsZero() && !listingStarted.Before(w.seenAt) {
		w.listing = listingStarted
	}
	r.webhooks[key] = w
	r.triggerMu.Unlock()
	if fresh && !w.stale {
		r.Poller.Refresh(key)
	}
	return !w.stale && !w.listing.IsZero() && listingStarted.Equal(w.listing)
}

// followBases watches the base images of ib's latest successful build when
// triggers.baseImages asks for it, and returns those that moved.
func (r *ImageBuildReconciler) followBases(ctx context.Context, ib *v1alpha1.ImageBuild, key types.NamespacedName) ([]baseimage.Moved, error) {
	if ib.Spec.Triggers == nil || !ib.Spec.Triggers.BaseImages || len(ib.Status.BaseImages) == 0 {
		r.Bases.forget(key)
		return nil, nil
	}
	bases := make([]baseimage.Base, 0, len(ib.Status.BaseImages))
	for _, b := range ib.Status.BaseImages {
		bases = append(bases, baseimage.Base{Ref: b.Reference, Digest: b.Digest})
	}
	interval := defaultBaseInterval
	switch {
	case r.Options.BaseImageInterval > 0:
		interval = r.Options.BaseImageInterval
	case ib.Spec.Source.Git.Interval != nil:
		interval = ib.Spec.Source.Git.Interval.Duration
	}
	secret := ""
	if ref := ib.Spec.Output.PushSecretRef; ref != nil {
		secret = ref.Name
	}
	if r.Bases.current(key, bases, secret, interval, time.Now()) {
		return r.Bases.moved(key), nil
	}
	var opts baseimage.Options
	if secret != "" {
		s, err := r.getSecret(ctx, ib.Namespace, secret, "spec.output.pushSecretRef")
		if err != nil {
			return nil, err
		}
		kc, err := baseimage.Keychain(s.Data)
		if err != nil {
			return nil, missingReference("Secret %q (spec.output.pushSecretRef): %v", secret, err)
		}
		opts.Keychain = kc
	}
	if ib.Spec.Output.Insecure {
		// output.insecure covers the registries the executor is told are insecure (the push
		// and the cache repositories'), nothing else: a base image on another registry is
		// checked over TLS only, so its credentials never go over plain HTTP.
		for _, repo := range []string{outputRepository(ib.Spec.Output.Image), cacheRepository(ib)} {
			if h := registryHost(repo); h != "" && !slices.Contains(opts.Insecure, h) {
				opts.Insecure = append(opts.Insecure, h)
			}
		}
	}
	r.Bases.watch(key, bases, secret, interval, opts)
	return nil, nil
}

// baseWatcher checks, in the background, whether the base images of ImageBuilds moved: each
// watched ImageBuild's bases every interval (jittered), a few checks at a time. The
// reconcile reads the answers (moved); notify wakes it when they change.
type baseWatcher struct {
	notify func(types.NamespacedName)
	check  func(context.Context, []baseimage.Base, baseimage.Options) ([]baseimage.Moved, error)
	sem    chan struct{}

	mu      sync.Mutex
	ctx     context.Context
	entries map[types.NamespacedName]*baseEntry
}

type baseEntry struct {
	since    time.Time // when the watch was set up (its Secret read)
	bases    []baseimage.Base
	secret   string
	interval time.Duration
	opts     baseimage.Options
	timer    *time.Timer
	moved    []baseimage.Moved
	err      error
}

func newBaseWatcher(notify func(types.NamespacedName)) *baseWatcher {
	return &baseWatcher{notify: notify, check: baseimage.Check, sem: make(chan struct{}, 4),
		entries: map[types.NamespacedName]*baseEntry{}}
}

// Start runs the watcher until ctx ends (a manager Runnable, on the leader only).
func (w *baseWatcher) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	for key, e := range w.entries {
		w.scheduleLocked(key, e, 0)
	}
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	return nil
}

// NeedLeaderElection: only the leader's reconciles read the answers.
func (w *baseWatcher) NeedLeaderElection() bool { return true }

// current reports whether key is watched with these bases, Secret and interval, with
// credentials read recently enough: after a failed check a minute ago, or any ten minutes ago,
// the Secret is read again (it may have been rotated or deleted).
func (w *baseWatcher) current(key types.NamespacedName, bases []baseimage.Base, secret string, interval time.Duration, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.entries[key]
	if e == nil || !slices.Equal(e.bases, bases) || e.secret != secret || e.interval != interval {
		return false
	}
	age := now.Sub(e.since)
	return age < rereadSecret && (e.err == nil || age < resubscribeAfterError)
}

// watch (re)starts the watch of key: the first check comes after a jittered interval, since
// the bases come from a build that just pulled them.
func (w *baseWatcher) watch(key types.NamespacedName, bases []baseimage.Base, secret string, interval time.Duration, opts baseimage.Options) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.entries[key]; e != nil && e.timer != nil {
		e.timer.Stop()
	}
	e := &baseEntry{since: time.Now(), bases: slices.Clone(bases), secret: secret, interval: interval, opts: opts}
	if old := w.entries[key]; old != nil && slices.Equal(old.bases, bases) {
		e.moved = old.moved // the same bases, read with fresh credentials: what moved still did
	}
	w.entries[key] = e
	w.scheduleLocked(key, e, jitter(interval))
}

func (w *baseWatcher) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.entries[key]; e != nil {
		if e.timer != nil {
			e.timer.Stop()
		}
		delete(w.entries, key)
	}
}

// moved is what the latest check of key found moved.
func (w *baseWatcher) moved(key types.NamespacedName) []baseimage.Moved {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.entries[key]; e != nil {
		return e.moved
	}
	return nil
}

func (w *baseWatcher) scheduleLocked(key types.NamespacedName, e *baseEntry, after time.Duration) {
	if w.ctx == nil {
		return // Start schedules it
	}
	e.timer = time.AfterFunc(after, func() { w.run(key, e) })
}

func (w *baseWatcher) run(key types.NamespacedName, e *baseEntry) {
	w.mu.Lock()
	ctx := w.ctx
	w.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	w.sem <- struct{}{}
	moved, err := w.check(ctx, e.bases, e.opts)
	<-w.sem
	w.mu.Lock()
	if w.entries[key] != e { // forgotten or replaced meanwhile
		w.mu.Unlock()
		return
	}
	changed := !slices.Equal(moved, e.moved) || fmt.Sprint(err) != fmt.Sprint(e.err)
	e.moved, e.err = moved, err
	if err != nil {
		log.FromContext(ctx).Info("Could not check every base image", "imagebuild", key.String(), "error", err.Error())
	}
	w.scheduleLocked(key, e, jitter(e.interval))
	w.mu.Unlock()
	if changed && len(moved) > 0 && w.notify != nil {
		w.notify(key)
	}
}

// jitter is d ±10%, so that ImageBuilds created together do not poll together.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// trigger applies runPolicy to req, a build a trigger asks for: it starts at once when the
// latest build has ended; else Serial keeps it as status.next (the newest wins),
// SerialLatestOnly starts it and stops the running build (Superseded), Parallel starts it
// beside the running one.
func (r *ImageBuildReconciler) trigger(ib *v1alpha1.ImageBuild, req v1alpha1.BuildRequest, obs observed, now time.Time) []pendingEvent {
	policy := runPolicy(ib)
	switch {
	case ib.Status.Phase.Finished(), policy == v1alpha1.RunPolicySerialLatestOnly:
		r.startBuild(ib, req, false, now)
	case policy == v1alpha1.RunPolicyParallel:
		r.startBuild(ib, req, true, now)
	default:
		ib.Status.Next = &req
		return []pendingEvent{{typ: corev1.EventTypeNormal, reason: "BuildQueued", action: "Build",
			note: fmt.Sprintf("%s; it starts when build %d ends (runPolicy Serial)", describeRequest(ib, req, obs), ib.Status.BuildNumber)}}
	}
	return []pendingEvent{buildStartedEvent(ib, describeRequest(ib, req, obs))}
}

// describeRequest says what a trigger found, for events.
func describeRequest(ib *v1alpha1.ImageBuild, req v1alpha1.BuildRequest, obs observed) string {
	switch req.Cause {
	case v1alpha1.CauseBaseImage:
		refs := make([]string, 0, len(obs.moved))
		for _, m := range obs.moved {
			refs = append(refs, m.Ref)
		}
		return fmt.Sprintf("Base image moved: %s", strings.Join(refs, ", "))
	case v1alpha1.CauseWebhook:
		return fmt.Sprintf("A webhook push made %s resolve to %s", revisionName(ib), shortCommit(req.Commit))
	}
	return fmt.Sprintf("%s moved to %s", revisionName(ib), shortCommit(req.Commit))
}

func revisionName(ib *v1alpha1.ImageBuild) string {
	if rev := ib.Spec.Source.Git.Revision; rev != "" {
		return rev
	}
	return "the default branch"
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// buildStartedEvent says that build number N started, and why.
func buildStartedEvent(ib *v1alpha1.ImageBuild, why ...string) pendingEvent {
	note := fmt.Sprintf("Build %d started (cause %s)", ib.Status.BuildNumber, ib.Status.Cause)
	if len(why) > 0 && why[0] != "" {
		note += ": " + why[0]
	}
	return pendingEvent{typ: corev1.EventTypeNormal, reason: "BuildStarted", action: "Build", note: note}
}

// resolveWait is how long a build of an ImageBuild that follows its revision waits before
// the reconcile looks again for the listing that pins its commit.
const resolveWait = time.Second

// pin fixes the commit the current build of an ImageBuild that follows its revision builds:
// that of a listing that began after the build was asked for, so that a spec change or a
// rebuild builds the branch as it is, and the tags made from the commit name what was built.
// It reports false, with the time to wait, while that listing has not come; a listing that
// failed leaves the build unpinned (the executor then fetches the revision itself and says
// what is wrong with it).
func (r *ImageBuildReconciler) pin(ib *v1alpha1.ImageBuild, obs observed, now time.Time) (time.Duration, bool) {
	st := &ib.Status
	i := recordIndex(st.History, st.BuildNumber)
	if r.Poller == nil || !follows(ib) || i < 0 || st.History[i].Commit != "" {
		return 0, true
	}
	if !obs.following && obs.listErr == nil {
		// Not subscribed: its source Secret is missing, which starting the build reports
		// (SecretNotFound); the build is pinned when it is there.
		return 0, true
	}
	key := client.ObjectKeyFromObject(ib)
	if asked := st.History[i].StartTime; asked != nil && obs.startedAt.Before(r.askedAt(key, st.BuildNumber, asked.Time)) {
		r.Poller.Refresh(key)
		msg := fmt.Sprintf("Resolving %s of %s", revisionName(ib), ib.Spec.Source.Git.URL)
		setCondition(st, ib.Generation, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonResolving, msg)
		setCondition(st, ib.Generation, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonResolving, msg)
		// The poller tells when a listing changed what it knows, not when one ended: look
		// again soon.
		return resolveWait, false
	}
	if obs.listErr == nil && obs.commit != "" {
		st.History[i].Commit = obs.commit
	}
	return 0, true
}

// askedAt is when build number n of key was asked for, as precisely as this manager knows:
// the time it recorded when it started the build (rememberAsked), else the record's start
// time read back from the API server, which has lost its fraction of a second, plus a second,
// so that a listing that began after it surely came after the request.
func (r *ImageBuildReconciler) askedAt(key types.NamespacedName, n int64, stored time.Time) time.Time {
	r.triggerMu.Lock()
	a, ok := r.asked[key]
	r.triggerMu.Unlock()
	if ok && a.number == n {
		return a.at
	}
	if stored.Nanosecond() == 0 {
		return stored.Add(time.Second)
	}
	return stored
}

// startBuild sets ib's status to that of its next build (startBuild), and remembers when it
// was asked for, to the nanosecond (askedAt).
func (r *ImageBuildReconciler) startBuild(ib *v1alpha1.ImageBuild, req v1alpha1.BuildRequest, keepRunning bool, now time.Time) {
	ib.Status = startBuild(ib, req, keepRunning, now)
	if r.Bases != nil {
		// What the new build is FROM is watched once it succeeds (followBases): what moved
		// since the last one is this build's to pick up, not a reason for another.
		r.Bases.forget(client.ObjectKeyFromObject(ib))
	}
	// The index and signature of a build that a newer one replaces are not pushed.
	r.Publisher.forget(client.ObjectKeyFromObject(ib))
	r.triggerMu.Lock()
	defer r.triggerMu.Unlock()
	if r.asked != nil {
		r.asked[client.ObjectKeyFromObject(ib)] = askedBuild{number: ib.Status.BuildNumber, at: now}
	}
}

type askedBuild struct {
	number int64
	at     time.Time
}

// pinnedCommit is the commit the current build was pinned to (pin, or the trigger that
// started it), "" when the executor resolves the revision itself.
func pinnedCommit(ib *v1alpha1.ImageBuild) string {
	if !follows(ib) {
		return ""
	}
	if i := recordIndex(ib.Status.History, ib.Status.BuildNumber); i >= 0 {
		return ib.Status.History[i].Commit
	}
	return ""
}

// renderTags renders spec.output.additionalTags for the current build (tagtemplate): its
// branch, pinned commit, start time and number. A template that needs the commit of a build
// that is not pinned fails, naming why the commit is unknown.
func renderTags(ib *v1alpha1.ImageBuild, commit string, obs observed) ([]string, error) {
	st := &ib.Status
	when := time.Time{}
	if i := recordIndex(st.History, st.BuildNumber); i >= 0 && st.History[i].StartTime != nil {
		when = st.History[i].StartTime.Time
	}
	branch := branchOf(ib.Spec.Source.Git.Revision)
	if obs.ref != "" { // what the listing resolved the revision to ("v1" may be a tag)
		branch = branchOf(obs.ref)
	}
	data := tagtemplate.Data{Branch: branch, Commit: commit, Timestamp: when, BuildNumber: st.BuildNumber}
	tags := make([]string, 0, len(ib.Spec.Output.AdditionalTags))
	for _, t := range ib.Spec.Output.AdditionalTags {
		if commit == "" && usesCommit(t) {
			why := "the manager could not list the repository's refs"
			if obs.listErr != nil {
				why += ": " + obs.listErr.Error()
			}
			return nil, fmt.Errorf("additional tag %q needs the commit, which is not known: %s", t, why)
		}
		tag, err := tagtemplate.Render(t, data)
		if err != nil {
			return nil, fmt.Errorf("additional tag %q: %w", t, err)
		}
		tags = append(tags, tag)
	}
	return tags, nil
}

// branchOf is the branch a revision names: "main" or "refs/heads/main" is main; a tag, a
// commit, another ref or the default branch (empty) is "".
func branchOf(rev string) string {
	switch {
	case strings.HasPrefix(rev, "refs/heads/"):
		return strings.TrimPrefix(rev, "refs/heads/")
	case strings.HasPrefix(rev, "refs/"), rev == "HEAD", gitpoll.IsCommit(rev):
		return ""
	}
	return rev
}
