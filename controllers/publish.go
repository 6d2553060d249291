package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/imageindex"
	"github.com/slipway-dev/slipway/controllers/imagesign"
)

// What the manager pushes itself once a build's executor pods have pushed their images: the
// image index of a multi-platform build (spec.platforms), and the signature and signed
// attestations of a build with a signing key (signing.go). Both run in the background, so
// that a slow registry does not hold the controller's one worker: the reconcile starts a job,
// and reads its outcome once notify has woken it.
//
// The registries are the tenants' to name, and one may never answer: a tenant's jobs must not
// make another's wait past its deadline. So (review15, finding 3):
//   - at most one job of a namespace runs at a time; the others of that namespace wait for
//     it, those of other namespaces do not;
//   - a running job takes a slot of the manager's for each try of a step (sem for the index,
//     signSem for the signing), and the try's deadline (indexTimeout, signTimeout) starts
//     once it has the slot: waiting does not eat into it;
//   - each request to a registry has its own timeout (imageindex.NewTransport), so a try ends
//     with "no answer in time" rather than at the deadline when one request hangs.
// A job waits for its turn for as long as it takes (until it is cancelled: a newer build, the
// ImageBuild deleted, the manager stopping); the build is Running meanwhile.

// buildID names the attempt of ib's build whose outputs a job pushes.
func buildID(ib *v1alpha1.ImageBuild) string {
	return fmt.Sprintf("%s/%d/%d", ib.UID, ib.Status.BuildNumber, ib.Status.Attempt)
}

// publishRequest is one job: the index to assemble and push first (nil for a build of one
// pod, whose executor pushed what the tags name), then what to sign (nil for an unsigned
// build; its Digest is the index's when index is set).
type publishRequest struct {
	index *imageindex.Request
	sign  *imagesign.Request
}

// publishResult is what a job pushed.
type publishResult struct {
	index  imageindex.Result
	signed imagesign.Result
}

// publishError is a job's failure, with the step that failed.
type publishError struct {
	step string // "index" or "sign"
	err  error
}

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// publisher runs the jobs. Each ImageBuild has at most one job, that of its latest attempt;
// starting another or forgetting it cancels the one before.
type publisher struct {
	notify   func(types.NamespacedName)
	assemble func(context.Context, imageindex.Request) (imageindex.Result, error)
	sign     func(context.Context, *imagesign.Job) (imagesign.Result, error)
	// tries and wait: a step that fails for a reason that may pass (imageindex.Retryable,
	// imagesign.Retryable) is tried again, after wait, then twice that; 3 tries and a second
	// by default. A signing step tried again does not push again what it pushed already.
	tries int
	wait  time.Duration
	// indexTimeout and signTimeout bound one try of each step, from the moment it has its
	// slot (imageindex.Timeout, imagesign.Timeout).
	indexTimeout, signTimeout time.Duration
	// sem bounds the index tries that talk to registries at once (4); signSem the signing
	// tries (1): each holds the statements it signs in memory (imagesign.MaxStatements).
	sem, signSem chan struct{}

	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	jobs map[types.NamespacedName]*publishJob
	// namespaces are the namespaces with a job, each with its turn: a semaphore of one.
	namespaces map[string]*namespaceTurn
}

// namespaceTurn is a namespace's turn to run a job, and how many of its jobs want it.
type namespaceTurn struct {
	turn    chan struct{}
	waiting int
}

// publishJob is one build's job: done once it has ended, with res or err.
type publishJob struct {
	id     string
	cancel context.CancelFunc
	done   bool
	res    publishResult
	err    error
	end    time.Time
}

func newPublisher(notify func(types.NamespacedName)) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	return &publisher{notify: notify, assemble: imageindex.Assemble,
		sign:  func(ctx context.Context, j *imagesign.Job) (imagesign.Result, error) { return j.Run(ctx) },
		tries: 3, wait: time.Second, indexTimeout: imageindex.Timeout, signTimeout: imagesign.Timeout,
		sem: make(chan struct{}, 4), signSem: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, jobs: map[types.NamespacedName]*publishJob{}, namespaces: map[string]*namespaceTurn{}}
}

// Start runs until ctx ends, then cancels the jobs (a manager Runnable, on the leader only).
func (a *publisher) Start(ctx context.Context) error {
	<-ctx.Done()
	a.cancel()
	return nil
}

// NeedLeaderElection: only the leader reconciles.
func (a *publisher) NeedLeaderElection() bool { return true }

// job is a copy of key's job of build id, if there is one.
func (a *publisher) job(key types.NamespacedName, id string) (publishJob, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j := a.jobs[key]
	if j == nil || j.id != id {
		return publishJob{}, false
	}
	return *j, true
}

// start begins key's job for build id, cancelling any other of key. The job has no deadline
// of its own: each try of its steps has one, once it runs (publish).
func (a *publisher) start(key types.NamespacedName, id string, req publishRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.jobs[key]; old != nil {
		old.cancel()
	}
	ctx, cancel := context.WithCancel(a.ctx)
	j := &publishJob{id: id, cancel: cancel}
	a.jobs[key] = j
	go a.run(ctx, key, j, req)
}

// forget cancels and drops key's job.
func (a *publisher) forget(key types.NamespacedName) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := a.jobs[key]; j != nil {
		j.cancel()
		delete(a.jobs, key)
	}
}

func (a *publisher) run(ctx context.Context, key types.NamespacedName, j *publishJob, req publishRequest) {
	defer j.cancel()
	res, err := a.publish(ctx, key.Namespace, req)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	a.mu.Lock()
	if a.jobs[key] != j { // cancelled and replaced or forgotten
		a.mu.Unlock()
		return
	}
	j.done, j.res, j.err, j.end = true, res, err, time.Now()
	a.mu.Unlock()
	if a.notify != nil {
		a.notify(key)
	}
}

// publish runs req's steps, once no other job of namespace runs: the index, then the signing
// of what the tags name; each try with its slot and its deadline (try).
func (a *publisher) publish(ctx context.Context, namespace string, req publishRequest) (publishResult, error) {
	var res publishResult
	turn, done := a.turnOf(namespace)
	defer done()
	if !acquire(ctx, turn) {
		return res, ctx.Err()
	}
	defer func() { <-turn }()
	if req.index != nil {
		err := a.retry(ctx, imageindex.Retryable, func() error {
			return a.try(ctx, a.sem, a.indexTimeout, func(ctx context.Context) error {
				var err error
				res.index, err = a.assemble(ctx, *req.index)
				return err
			})
		})
		if err != nil {
			return res, &publishError{step: "index", err: err}
		}
	}
	if req.sign == nil {
		return res, nil
	}
	sr := *req.sign
	if req.index != nil {
		sr.Digest = res.index.Digest
	}
	job := imagesign.NewJob(sr)
	err := a.retry(ctx, imagesign.Retryable, func() error {
		return a.try(ctx, a.signSem, a.signTimeout, func(ctx context.Context) error {
			var err error
			res.signed, err = a.sign(ctx, job)
			return err
		})
	})
	if err != nil {
		return res, &publishError{step: "sign", err: err}
	}
	return res, nil
}

// retry calls step until it succeeds, fails for a reason retryable does not pass, or has been
// tried a.tries times, waiting a.wait and then twice as long each time between.
func (a *publisher) retry(ctx context.Context, retryable func(error) bool, step func() error) error {
	wait := a.wait
	for try := 1; ; try++ {
		err := step()
		if err == nil || try >= a.tries || !retryable(err) || ctx.Err() != nil {
			if err == nil && ctx.Err() != nil {
				err = ctx.Err()
			}
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
		wait *= 2
	}
}

// try runs step with a slot of sem, under a deadline of timeout from the moment it has it;
// ctx's error when ctx ends while it waits.
func (a *publisher) try(ctx context.Context, sem chan struct{}, timeout time.Duration, step func(context.Context) error) error {
	if !acquire(ctx, sem) {
		return ctx.Err()
	}
	defer func() { <-sem }()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return step(tctx)
}

// turnOf is namespace's turn (a semaphore of one), and done, to call once the job
// that asked no longer wants it.
func (a *publisher) turnOf(namespace string) (chan struct{}, func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.namespaces[namespace]
	if n == nil {
		n = &namespaceTurn{turn: make(chan struct{}, 1)}
		a.namespaces[namespace] = n
	}
	n.waiting++
	return n.turn, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if n.waiting--; n.waiting == 0 {
			delete(a.namespaces, namespace)
		}
	}
}

// acquire takes a slot of sem, unless ctx ends first.
func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}
