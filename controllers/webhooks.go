package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/webhook"
)

// +kubebuilder:rbac:groups=build.slipway.dev,resources=imagebuilds,verbs=patch

// WebhookReceiver serves the git servers' push webhooks (controllers/webhook) on its own
// address, on every replica of the manager. What it may do with a request is narrow: find the
// ImageBuild the path names (the manager's cache) and the webhook Secret it names (its own
// namespace's, read from the API server and kept for secretTTL), and, for a verified push of
// its URL and branch, set WebhookAnnotation on it to the current time. The controller, on the
// leader, then lists the repository's refs; nothing of the request reaches a build.
type WebhookReceiver struct {
	// Addr is the address to listen on (":8082").
	Addr string
	// Client reads ImageBuilds from the manager's cache and patches their annotation.
	Client client.Client
	// APIReader reads the webhook Secrets (the manager caches none).
	APIReader client.Reader
	Log       logr.Logger
	// Options of the Handler (limits); its defaults when empty.
	Options []webhook.Option

	secrets secretCache
	patches chan struct{} // bounds the annotation writes running at once
}

// Bounds of the webhook port: header bytes per request, connections at once (more wait in the
// kernel's backlog), and how long a body may take to arrive (a git server sends its payload at
// once; a trickled body holds one of the handler's 16 slots only that long).
const (
	webhookMaxHeaderBytes = 64 << 10
	webhookMaxConnections = 256
	webhookBodyTimeout    = 3 * time.Second
)

// secretTTL is how long a webhook Secret's value is kept: requests (verified or not) for one
// ImageBuild read its Secret from the API server at most once in that time.
const secretTTL = 30 * time.Second

// Handler is the http.Handler of the webhook port.
func (w *WebhookReceiver) Handler() http.Handler {
	if w.patches == nil {
		w.patches = make(chan struct{}, 8)
	}
	opts := append([]webhook.Option{webhook.WithLogger(w.Log), webhook.WithBodyTimeout(webhookBodyTimeout)}, w.Options...)
	return webhook.New(w.lookup, w.trigger, opts...)
}

// Start serves until ctx ends (a manager Runnable).
func (w *WebhookReceiver) Start(ctx context.Context) error {
	// The port is reachable by anyone who can reach the manager: headers are small, slow
	// requests are cut short, and connections are bounded, so that nobody holds the
	// manager's memory or the handler's slots for long.
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: webhookMaxHeaderBytes,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	ln, err := net.Listen("tcp", w.Addr)
	if err != nil {
		return fmt.Errorf("webhook receiver: %w", err)
	}
	ln = netutil.LimitListener(ln, webhookMaxConnections)
	w.Log.Info("Serving git webhooks", "address", ln.Addr().String(), "path", webhook.PathPrefix+"<namespace>/<name>")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	case err := <-errc:
		return err
	}
}

// NeedLeaderElection: every replica serves webhooks (the Service spreads them); the
// annotation reaches the leader.
func (w *WebhookReceiver) NeedLeaderElection() bool { return false }

func (w *WebhookReceiver) lookup(ctx context.Context, key types.NamespacedName) (*webhook.Target, error) {
	ib := &v1alpha1.ImageBuild{}
	if err := w.Client.Get(ctx, key, ib); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, webhook.ErrNotFound
		}
		return nil, errors.New("reading ImageBuilds from the manager's cache failed")
	}
	t := ib.Spec.Triggers
	if t == nil || t.Webhook == nil {
		return nil, webhook.ErrNotFound
	}
	ref := t.Webhook.SecretRef
	secret, err := w.secrets.get(ctx, w.APIReader, types.NamespacedName{Namespace: key.Namespace, Name: ref.Name}, ref.Key)
	if err != nil {
		return nil, err
	}
	return &webhook.Target{URL: ib.Spec.Source.Git.URL, Revision: ib.Spec.Source.Git.Revision, Secret: secret}, nil
}

// trigger sets WebhookAnnotation on the ImageBuild, in the background (the Handler must not
// block), a few at a time; when more are running, the push is left to the poller.
func (w *WebhookReceiver) trigger(key types.NamespacedName, ev webhook.Event) {
	select {
	case w.patches <- struct{}{}:
	default:
		w.Log.Info("Too many webhook triggers at once; the poller will find the push", "imagebuild", key.String())
		return
	}
	go func() {
		defer func() { <-w.patches }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := annotateWebhook(ctx, w.Client, key, time.Now()); err != nil {
			w.Log.Error(err, "Could not record the webhook push", "imagebuild", key.String(), "provider", string(ev.Provider))
		}
	}()
}

// annotateWebhook sets WebhookAnnotation on the ImageBuild key to at.
func annotateWebhook(ctx context.Context, c client.Client, key types.NamespacedName, at time.Time) error {
	ib := &v1alpha1.ImageBuild{}
	ib.Namespace, ib.Name = key.Namespace, key.Name
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, WebhookAnnotation, at.UTC().Format(time.RFC3339Nano))
	return c.Patch(ctx, ib, client.RawPatch(types.MergePatchType, patch))
}

// secretCache keeps the values of webhook Secrets' keys for secretTTL. A read is done once for
// all the requests that want it at the same time (singleflight), with a context of its own (a
// caller that hangs up at once must not cancel it, or every request would cost a read), and a
// read that failed is remembered for secretErrorTTL.
type secretCache struct {
	mu      sync.Mutex
	entries map[secretKey]cachedSecret
	reads   singleflight.Group
}

// secretErrorTTL is how long a failed read of a webhook Secret is answered from memory.
const secretErrorTTL = 5 * time.Second

// secretReadTimeout bounds one read of a webhook Secret.
const secretReadTimeout = 10 * time.Second

// errSecretRead is what a failed read answers: the handler logs it, so it names nothing.
var errSecretRead = errors.New("reading webhook Secrets from the API server failed")

type secretKey struct {
	name types.NamespacedName
	key  string
}

type cachedSecret struct {
	value  []byte // nil: the Secret or key does not exist
	failed bool   // the read failed
	at     time.Time
}

func (e cachedSecret) fresh(now time.Time) bool {
	if e.failed {
		return now.Sub(e.at) < secretErrorTTL
	}
	return now.Sub(e.at) < secretTTL
}

func (e cachedSecret) answer() ([]byte, error) {
	switch {
	case e.failed:
		return nil, errSecretRead
	case e.value == nil:
		return nil, webhook.ErrNotFound
	}
	return e.value, nil
}

// get returns the value of key in the Secret name, from the cache when fresh; a missing
// Secret or key is webhook.ErrNotFound (and cached as such).
func (c *secretCache) get(ctx context.Context, r client.Reader, name types.NamespacedName, key string) ([]byte, error) {
	k := secretKey{name, key}
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && e.fresh(time.Now()) {
		return e.answer()
	}
	v, _, _ := c.reads.Do(name.String()+"\x00"+key, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), secretReadTimeout)
		defer cancel()
		e := cachedSecret{at: time.Now()}
		s := &corev1.Secret{}
		switch err := r.Get(rctx, name, s); {
		case apierrors.IsNotFound(err):
		case err != nil:
			e.failed = true
		default:
			if v := s.Data[key]; len(v) > 0 {
				e.value = v
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.entries == nil {
			c.entries = map[secretKey]cachedSecret{}
		}
		for old, o := range c.entries { // forget what expired, so the cache stays small
			if !o.fresh(e.at) {
				delete(c.entries, old)
			}
		}
		c.entries[k] = e
		return e, nil
	})
	return v.(cachedSecret).answer()
}
