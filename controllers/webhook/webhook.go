// Package webhook receives git servers' push webhooks for ImageBuilds.
//
// The manager serves a Handler on its own port under PathPrefix. A git server posts to
// /hooks/{namespace}/{name}, or /hooks/{namespace}/{name}/{provider} to name its kind
// (github, gitlab, gitea, forgejo, bitbucket, generic) instead of having it detected from
// the request's headers. The Handler asks Lookup for the ImageBuild's git URL, revision and
// webhook secret, verifies the request with that secret, and for a push to that URL and
// branch calls Trigger, which makes the manager list the repository's refs at once. The
// payload's commit is never trusted nor passed on: a push only says "look now".
//
// What is verified, per provider (the secret is the Target's Secret):
//   - GitHub (X-GitHub-Event): X-Hub-Signature-256 "sha256=<hex>", HMAC-SHA256 of the body.
//   - GitLab (X-Gitlab-Event): X-Gitlab-Token equals the secret.
//   - Gitea (X-Gitea-Event), Forgejo (X-Forgejo-Event): X-Gitea-Signature or
//     X-Forgejo-Signature, the hex HMAC-SHA256 of the body (of the JSON, which they sign
//     also when they send it as the field payload of a form).
//   - Bitbucket Cloud (X-Event-Key): X-Hub-Signature "sha256=<hex>", HMAC-SHA256 of the body.
//   - generic: X-Slipway-Signature-256 "sha256=<hex>", HMAC-SHA256 of the body; the body is
//     empty ("check now") or JSON {"repository": "<url>", "ref": "refs/heads/main"}, each
//     field optional.
//
// The caller is untrusted until verified, so:
//   - Only POST is served (405 otherwise); a body larger than the limit gets 413, one that
//     does not arrive within the body timeout 408; a request beyond the concurrency bound
//     gets 503 at once.
//   - A request that does not verify gets 401 {"result":"rejected","reason":"unauthorized"}
//     and changes nothing. An unknown ImageBuild, one without a webhook trigger or with an
//     empty secret, a missing or malformed signature and a wrong one all get the same 401,
//     after the same work (the body is read and an HMAC computed with a random key), so
//     that the endpoint is no oracle for which ImageBuilds exist.
//   - Signatures and tokens are compared in constant time (hmac.Equal), and the body is
//     parsed only after it verified.
//   - Verified requests are rate-limited per ImageBuild (a token bucket; 429 with
//     Retry-After beyond it). Unverified ones do not consume its tokens, so nobody without
//     the secret can use them up; a replayed delivery can, which only delays triggers until
//     the bucket refills, and the poller still follows the branch.
//   - Nothing logs or answers the body, the secret, a signature or a token: log lines name
//     the ImageBuild, the provider, the result and its reason.
//
// A verified request answers 202 {"result":"triggered"} when Trigger was called, and 200
// {"result":"ignored","reason":"..."} for an event that is not a push of the ImageBuild's
// branch (another branch, another repository, a tag, a ping, another event).
package webhook

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// PathPrefix is where the Handler serves: PathPrefix + "{namespace}/{name}[/{provider}]".
const PathPrefix = "/hooks/"

// Path is the path of the webhook of the ImageBuild key, for the git server's webhook URL.
func Path(key types.NamespacedName) string {
	return PathPrefix + key.Namespace + "/" + key.Name
}

// Provider is the kind of git server that sent a request.
type Provider string

// Providers.
const (
	GitHub    Provider = "github"
	GitLab    Provider = "gitlab"
	Gitea     Provider = "gitea"
	Forgejo   Provider = "forgejo"
	Bitbucket Provider = "bitbucket"
	Generic   Provider = "generic"
)

// Target is what Lookup tells of an ImageBuild with a webhook trigger.
type Target struct {
	// URL is the ImageBuild's spec.source.git.url.
	URL string
	// Revision is its spec.source.git.revision: a branch ("main" or "refs/heads/main"), a
	// tag ("refs/tags/v1"; a push of that tag matches), a commit SHA (no push matches), any
	// other ref, or empty for the repository's default branch.
	Revision string
	// Secret is the value of the webhook's Secret key. An empty Secret verifies nothing.
	Secret []byte
}

// Event is a verified push of the ImageBuild's branch, passed to Trigger.
type Event struct {
	// Provider is the kind of git server that sent it.
	Provider Provider
	// Ref is the full ref that was pushed (refs/heads/main, refs/tags/v1), or empty for a
	// generic request that named none ("check now").
	Ref string
	// Delivery is the git server's id of the delivery (X-GitHub-Delivery, X-Gitlab-Event-UUID,
	// X-Gitea-Delivery, X-Forgejo-Delivery, X-Request-UUID, X-Slipway-Delivery), empty when
	// there was none or it was not a short token of letters, digits and -_.:{}.
	Delivery string
}

// ErrNotFound is what Lookup returns when there is no such ImageBuild, it has no webhook
// trigger, or its Secret or key does not exist. The request then gets the same 401 as a bad
// signature.
var ErrNotFound = errors.New("no ImageBuild with a webhook trigger")

// LookupFunc returns the Target of the ImageBuild key, or ErrNotFound (possibly wrapped)
// when it has none: no such ImageBuild, no webhook trigger, no such Secret or key. Another
// error means it could not tell for any ImageBuild (the cache is not synced): the request
// gets 503, and the error is logged, so it must name no secret. A Lookup that failed
// otherwise for existing ImageBuilds only would tell callers which exist. It reads the
// manager's cache; ctx is the request's.
type LookupFunc func(ctx context.Context, key types.NamespacedName) (*Target, error)

// TriggerFunc starts a resolution of the branch of the ImageBuild key. It is called on the
// request's goroutine, at most once per request, and should not block.
type TriggerFunc func(key types.NamespacedName, ev Event)

// Handler is the http.Handler of the webhook port. Make one with New.
type Handler struct {
	lookup      LookupFunc
	trigger     TriggerFunc
	maxBody     int64
	limit       rate.Limit
	burst       int
	bodyTimeout time.Duration
	log         logr.Logger
	slots       chan struct{}
	dummyKey    []byte

	mu        sync.Mutex
	limiters  map[types.NamespacedName]*rate.Limiter
	lastSweep time.Time
}

// Option configures a Handler.
type Option func(*Handler)

// WithMaxBodyBytes limits request bodies to n bytes; a larger one gets 413. The default
// is 1 MiB (GitHub caps its payloads at 25 MB, but a push of a few commits is a few KiB).
func WithMaxBodyBytes(n int64) Option {
	return func(h *Handler) {
		if n > 0 {
			h.maxBody = n
		}
	}
}

// WithRateLimit lets each ImageBuild's verified requests through at r per second with
// bursts of burst; beyond it they get 429 with Retry-After. The default is 1 per second,
// bursts of 5.
func WithRateLimit(r rate.Limit, burst int) Option {
	return func(h *Handler) {
		if r > 0 && burst > 0 {
			h.limit, h.burst = r, burst
		}
	}
}

// WithMaxConcurrent bounds the requests handled at once, over all ImageBuilds; one more
// gets 503 with Retry-After at once. With the body limit it bounds the memory bodies take.
// The default is 16.
func WithMaxConcurrent(n int) Option {
	return func(h *Handler) {
		if n > 0 {
			h.slots = make(chan struct{}, n)
		}
	}
}

// WithBodyTimeout bounds the time a request's body takes to arrive; a slower one gets 408.
// The default is 10 seconds. The http.Server should still set ReadHeaderTimeout.
func WithBodyTimeout(d time.Duration) Option {
	return func(h *Handler) {
		if d > 0 {
			h.bodyTimeout = d
		}
	}
}

// WithLogger sets the logger of one line per request (at V(1) but for triggers). The
// default discards.
func WithLogger(l logr.Logger) Option {
	return func(h *Handler) { h.log = l }
}

// New returns a Handler that looks ImageBuilds up with lookup and calls trigger for
// verified pushes of their branch.
func New(lookup LookupFunc, trigger TriggerFunc, opts ...Option) *Handler {
	h := &Handler{
		lookup:      lookup,
		trigger:     trigger,
		maxBody:     1 << 20,
		limit:       1,
		burst:       5,
		bodyTimeout: 10 * time.Second,
		log:         logr.Discard(),
		slots:       make(chan struct{}, 16),
		dummyKey:    make([]byte, 32),
		limiters:    map[types.NamespacedName]*rate.Limiter{},
	}
	_, _ = rand.Read(h.dummyKey) // never fails (crypto/rand documents it)
	for _, o := range opts {
		o(h)
	}
	return h
}

// response is the body of every answer.
type response struct {
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
}

// Results.
const (
	resultTriggered = "triggered"
	resultIgnored   = "ignored"
	resultRejected  = "rejected"
)

// reasonUnauthorized is the one reason of every 401.
const reasonUnauthorized = "unauthorized"

// ServeHTTP handles one webhook request: path, method, concurrency bound, body, lookup,
// verification, rate limit, then the payload.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, provider, ok := parsePath(r.URL.Path)
	if !ok {
		reply(w, http.StatusNotFound, resultRejected, "not found: the path is "+PathPrefix+"{namespace}/{name}[/{provider}]")
		return
	}
	log := h.log.WithValues("imagebuild", key.String())
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reject(w, log, http.StatusMethodNotAllowed, "method "+clip(r.Method)+" is not allowed, only POST")
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		h.reject(w, log, http.StatusServiceUnavailable, "busy: too many webhook requests at once")
		return
	}

	body, status, reason := h.readBody(w, r)
	if status != 0 {
		h.reject(w, log, status, reason)
		return
	}

	if provider == "" {
		provider = detect(r.Header)
	}
	log = log.WithValues("provider", string(provider))

	var target *Target
	if validKey(key) {
		t, err := h.lookup(r.Context(), key)
		switch {
		case err == nil:
			target = t
		case !errors.Is(err, ErrNotFound):
			log.Error(err, "Could not look the ImageBuild up for a webhook request")
			w.Header().Set("Retry-After", "5")
			reply(w, http.StatusServiceUnavailable, resultRejected, "the ImageBuild could not be looked up; try again")
			return
		}
	}
	// Verify with the random key when there is nothing to verify against, so that an
	// unknown ImageBuild costs the same work as a bad signature, then reject it anyway.
	known := target != nil && len(target.Secret) > 0
	secret := h.dummyKey
	if known {
		secret = target.Secret
	}
	if !verify(provider, r.Header, signedContent(provider, r.Header, body), secret) || !known {
		h.reject(w, log, http.StatusUnauthorized, reasonUnauthorized)
		return
	}

	delivery := deliveryID(provider, r.Header)
	if delivery != "" {
		log = log.WithValues("delivery", delivery)
	}
	if wait, ok := h.allow(key); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		h.reject(w, log, http.StatusTooManyRequests, "rate limited: too many webhook requests for this ImageBuild")
		return
	}

	pushes, ignored, err := parse(provider, r.Header, body)
	if err != nil {
		h.reject(w, log, http.StatusBadRequest, err.Error())
		return
	}
	if ignored != "" {
		h.ignore(w, log, ignored)
		return
	}
	ref, why := match(target, pushes)
	if why != "" {
		h.ignore(w, log, why)
		return
	}
	h.trigger(key, Event{Provider: provider, Ref: ref, Delivery: delivery})
	log.Info("Triggered a resolution of the revision from a webhook", "result", resultTriggered, "ref", clip(ref))
	reply(w, http.StatusAccepted, resultTriggered, "")
}

func (h *Handler) reject(w http.ResponseWriter, log logr.Logger, status int, reason string) {
	log.V(1).Info("Rejected a webhook request", "result", resultRejected, "status", status, "reason", reason)
	reply(w, status, resultRejected, reason)
}

func (h *Handler) ignore(w http.ResponseWriter, log logr.Logger, reason string) {
	log.V(1).Info("Ignored a webhook event", "result", resultIgnored, "reason", reason)
	reply(w, http.StatusOK, resultIgnored, reason)
}

// reply writes a small JSON answer.
func reply(w http.ResponseWriter, status int, result, reason string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(response{Result: result, Reason: reason})
}

// readBody reads the whole body within the size limit and the body timeout, or returns the
// status and reason to reject the request with.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	tooLarge := "body larger than " + strconv.FormatInt(h.maxBody, 10) + " bytes"
	if r.ContentLength > h.maxBody {
		w.Header().Set("Connection", "close") // the body is not read
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.bodyTimeout)) // not supported by every ResponseWriter
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err == nil {
		_ = rc.SetReadDeadline(time.Time{})
		return body, 0, ""
	}
	// The rest of the body is not read: close the connection rather than have the server
	// wait for it after the answer.
	w.Header().Set("Connection", "close")
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, http.StatusRequestTimeout, "body not received within " + h.bodyTimeout.String()
	default:
		return nil, http.StatusBadRequest, "reading the body failed"
	}
}

// allow takes a token of key's bucket, or says how long until one is there.
func (h *Handler) allow(key types.NamespacedName) (time.Duration, bool) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	// Forget full buckets now and then: a new bucket starts full, so dropping one changes
	// nothing, and the map stays as small as the ImageBuilds recently called.
	if now.Sub(h.lastSweep) > time.Minute {
		for k, l := range h.limiters {
			if l.TokensAt(now) >= float64(h.burst) {
				delete(h.limiters, k)
			}
		}
		h.lastSweep = now
	}
	l := h.limiters[key]
	if l == nil {
		l = rate.NewLimiter(h.limit, h.burst)
		h.limiters[key] = l
	}
	res := l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// parsePath splits /hooks/{namespace}/{name}[/{provider}]. The names are not validated
// here (validKey): an invalid one is an unknown ImageBuild, not a wrong path.
func parsePath(p string) (types.NamespacedName, Provider, bool) {
	rest, ok := strings.CutPrefix(p, PathPrefix)
	if !ok {
		return types.NamespacedName{}, "", false
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return types.NamespacedName{}, "", false
	}
	key := types.NamespacedName{Namespace: clip(parts[0]), Name: clip(parts[1])}
	if len(parts) == 2 {
		return key, "", true
	}
	switch pr := Provider(parts[2]); pr {
	case GitHub, GitLab, Gitea, Forgejo, Bitbucket, Generic:
		return key, pr, true
	}
	return types.NamespacedName{}, "", false
}

// validKey says whether key can name an ImageBuild at all.
func validKey(key types.NamespacedName) bool {
	return len(validation.IsDNS1123Label(key.Namespace)) == 0 &&
		len(validation.IsDNS1123Subdomain(key.Name)) == 0
}

// clip makes a string from the request safe to answer and log: at most 256 bytes and an
// ellipsis, invalid UTF-8 and control characters replaced by '?'.
func clip(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i >= 256 {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
