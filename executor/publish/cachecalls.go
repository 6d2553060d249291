package publish

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// CacheLimits bound the calls to the layer cache's registry. A cache is an
// optimisation: one that is slow or failing must cost a build little, so
// its requests get a timeout and fewer retries than the pulls of the base
// image and the pushes of the destinations, which get neither.
type CacheLimits struct {
	// Timeout is how long a request may wait on the registry: for the
	// response's headers once the request is sent, for each read of the
	// response's body, and for the registry to take each part of an
	// upload. Time the build spends on its own side (producing an upload,
	// using what it read) does not count. A request that times out fails,
	// and so does every later call to the cache, at once: a cache that
	// stalled once is not waited on again in the same build. 0: no timeout.
	Timeout time.Duration
	// Retries is how many more times a request that failed transiently
	// (5xx, 429, a reset connection) is tried, CacheRetryDelay apart, then
	// three times as long each time. A timeout is not tried again.
	Retries int
}

// CacheRetryDelay is the first wait between tries of a cache request.
var CacheRetryDelay = 250 * time.Millisecond

// cacheCalls are the limits of the calls to one cache, and whether one of
// them timed out.
type cacheCalls struct {
	limits  CacheLimits
	stalled atomic.Pointer[timeoutError]
}

// ForCache returns o for the calls to a layer cache's registry: the same
// credentials and TLS settings, with l's timeout and retries, and (when o
// shares clients) clients of its own, since a client keeps the transport
// and retries it was made with, and the destinations' must keep theirs.
func (o RegistryOptions) ForCache(l CacheLimits) RegistryOptions {
	o.cache = &cacheCalls{limits: l}
	if o.clients != nil {
		o.Share()
	}
	return o
}

// backoff is the retry backoff of o's calls: the cache's when o is for a
// cache (ForCache), else three tries, retryDelay then three times as long
// apart.
func (o RegistryOptions) backoff() remote.Backoff {
	if o.cache != nil {
		return remote.Backoff{Duration: CacheRetryDelay, Factor: 3, Jitter: 0.1, Steps: 1 + max(o.cache.limits.Retries, 0)}
	}
	return remote.Backoff{Duration: retryDelay, Factor: 3, Jitter: 0.1, Steps: 3}
}

// bounded wraps t in the cache's timeout when o is for a cache.
func (o RegistryOptions) bounded(t http.RoundTripper, host string) http.RoundTripper {
	if o.cache == nil || o.cache.limits.Timeout <= 0 {
		return t
	}
	return &stallTransport{inner: t, host: host, calls: o.cache}
}

// timeoutError is a cache request that timed out. It is not temporary, so
// go-containerregistry does not try it again.
type timeoutError struct {
	host    string
	timeout time.Duration
	earlier bool // a later call, refused because an earlier one timed out
}

func (e *timeoutError) Error() string {
	if e.earlier {
		return fmt.Sprintf("the cache registry %s did not answer within %s earlier in this build, and is not asked again", e.host, e.timeout)
	}
	return fmt.Sprintf("the cache registry %s did not answer within %s (--cache-timeout)", e.host, e.timeout)
}

func (e *timeoutError) Timeout() bool { return true }

// stallTransport fails a request that waits on the registry longer than
// the cache's timeout (see CacheLimits.Timeout), and every request after
// one did.
type stallTransport struct {
	inner http.RoundTripper
	host  string
	calls *cacheCalls
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if e := t.calls.stalled.Load(); e != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &timeoutError{host: e.host, timeout: e.timeout, earlier: true}
	}
	ctx, cancel := context.WithCancel(req.Context())
	w := &watchdog{calls: t.calls, err: &timeoutError{host: t.host, timeout: t.calls.limits.Timeout}, cancel: cancel}
	w.waiting() // from the start of the request to its answer
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedUpload{ReadCloser: req.Body, w: w}
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		w.stop()
		return nil, w.explain(err)
	}
	w.idle()
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w}
	return resp, nil
}

// watchdog cancels a request when it has waited on the registry for the
// timeout without a break.
type watchdog struct {
	calls  *cacheCalls
	err    *timeoutError
	cancel context.CancelFunc

	mu    sync.Mutex
	timer *time.Timer
	fired bool
}

// waiting starts (again) the wait on the registry.
func (w *watchdog) waiting() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer == nil {
		w.timer = time.AfterFunc(w.calls.limits.Timeout, w.fire)
		return
	}
	w.timer.Reset(w.calls.limits.Timeout)
}

// idle stops the clock while the build works on its own side.
func (w *watchdog) idle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}

// stop ends the request.
func (w *watchdog) stop() {
	w.idle()
	w.cancel()
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.fired = true
	w.mu.Unlock()
	w.calls.stalled.CompareAndSwap(nil, w.err)
	w.cancel()
}

// explain is err, or the timeout when the watchdog ended the request.
func (w *watchdog) explain(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fired {
		return w.err
	}
	return err
}

// watchedUpload is a request's body: the registry taking each part of it
// is waiting on the registry; the build producing it is not.
type watchedUpload struct {
	io.ReadCloser
	w *watchdog
}

func (u *watchedUpload) Read(p []byte) (int, error) {
	u.w.idle()
	n, err := u.ReadCloser.Read(p)
	u.w.waiting()
	return n, err
}

// watchedBody is a response's body: each read waits on the registry.
type watchedBody struct {
	io.ReadCloser
	w *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.waiting()
	n, err := b.ReadCloser.Read(p)
	b.w.idle()
	if err != nil && err != io.EOF {
		err = b.w.explain(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.w.stop()
	return err
}
