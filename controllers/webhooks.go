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

// secretTTL is how long a webhook Secret's value is kept: requests (verified or not) for one
// ImageBuild read its Secret from the API server at most once in that time.
const secretTTL = 30 * time.Second

// Handler is the http.Handler of the webhook port.
func (w *WebhookReceiver) Handler() http.Handler {
	if w.patches == nil {
		w.patches = make(chan struct{}, 8)
	}
	opts := append([]webhook.Option{webhook.WithLogger(w.Log)}, w.Options...)
	return webhook.New(w.lookup, w.trigger, opts...)
}

// Start serves until ctx ends (a manager Runnable).
func (w *WebhookReceiver) Start(ctx context.Context) error {
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	ln, err := net.Listen("tcp", w.Addr)
	if err != nil {
		return fmt.Errorf("webhook receiver: %w", err)
	}
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

// secretCache keeps the values of webhook Secrets' keys for secretTTL.
type secretCache struct {
	mu      sync.Mutex
	entries map[secretKey]cachedSecret
}

type secretKey struct {
	name types.NamespacedName
	key  string
}

type cachedSecret struct {
	value []byte // nil: the Secret or key does not exist
	at    time.Time
}

// get returns the value of key in the Secret name, from the cache when fresh; a missing
// Secret or key is webhook.ErrNotFound (and cached as such).
func (c *secretCache) get(ctx context.Context, r client.Reader, name types.NamespacedName, key string) ([]byte, error) {
	k := secretKey{name, key}
	now := time.Now()
	c.mu.Lock()
	if e, ok := c.entries[k]; ok && now.Sub(e.at) < secretTTL {
		c.mu.Unlock()
		if e.value == nil {
			return nil, webhook.ErrNotFound
		}
		return e.value, nil
	}
	c.mu.Unlock()

	s := &corev1.Secret{}
	var value []byte
	switch err := r.Get(ctx, name, s); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, errors.New("reading webhook Secrets from the API server failed")
	default:
		if v := s.Data[key]; len(v) > 0 {
			value = v
		}
	}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[secretKey]cachedSecret{}
	}
	for old, e := range c.entries { // forget what expired, so the cache stays small
		if now.Sub(e.at) >= secretTTL {
			delete(c.entries, old)
		}
	}
	c.entries[k] = cachedSecret{value: value, at: now}
	c.mu.Unlock()
	if value == nil {
		return nil, webhook.ErrNotFound
	}
	return value, nil
}
