package publish

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// slowRegistry is a registry whose manifest GETs answer after a delay,
// and whose blob GETs, with stallBodies, send their headers and half their
// body, then stall for a second.
type slowRegistry struct {
	delay       atomic.Int64 // time.Duration
	stallBodies atomic.Bool
}

func (s *slowRegistry) handler(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/"):
			time.Sleep(time.Duration(s.delay.Load()))
		case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && s.stallBodies.Load():
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			body := rec.Body.Bytes()
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
			}
			return
		}
		inner.ServeHTTP(w, r)
	})
}

// The cache's calls (ForCache) time out when the registry is slower than
// CacheLimits.Timeout to answer or to send a body, and are then refused at
// once; the same registry's calls for pulls and pushes wait as long as it
// takes.
func TestRegistryOptions_ForCache_timeout(t *testing.T) {
	slow := &slowRegistry{}
	srv := httptest.NewServer(slow.handler(registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	o := RegistryOptions{InsecureRegistries: []string{host}, Keychain: authn.NewMultiKeychain()}
	o.Share()
	ref, err := ParseReference(host+"/app/cache:k", o, true)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := remote.Write(ref, img, o.Remote(ctx, ref, true)...); err != nil {
		t.Fatal(err)
	}
	const timeout = 100 * time.Millisecond
	slow.delay.Store(int64(4 * timeout))

	// Pulls of images have no timeout.
	if _, err := remote.Get(ref, o.Remote(ctx, ref, false)...); err != nil {
		t.Fatalf("a pull of an image with a slow answer: %v", err)
	}

	c := o.ForCache(CacheLimits{Timeout: timeout, Retries: 1})
	start := time.Now()
	_, err = remote.Get(ref, c.Remote(ctx, ref, false)...)
	var te *timeoutError
	if !errors.As(err, &te) || te.earlier {
		t.Fatalf("a cache lookup answered after %s: error %v, want the timeout", 4*timeout, err)
	}
	if took := time.Since(start); took >= 4*timeout {
		t.Errorf("the cache lookup took %s, want it to end after %s", took, timeout)
	}
	// Later calls, even to a registry that answers again, end at once.
	slow.delay.Store(0)
	start = time.Now()
	_, err = remote.Get(ref, c.Remote(ctx, ref, false)...)
	if !errors.As(err, &te) || !te.earlier || time.Since(start) >= timeout {
		t.Errorf("a cache call after a timeout: %v after %s, want the earlier timeout at once", err, time.Since(start))
	}
	// The image's own calls are unaffected.
	if _, err := remote.Get(ref, o.Remote(ctx, ref, false)...); err != nil {
		t.Errorf("a pull of an image after the cache timed out: %v", err)
	}

	// A body that stalls halfway times out too.
	c = o.ForCache(CacheLimits{Timeout: timeout})
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	l, err := remote.Layer(ref.Context().Digest(d.String()), c.Remote(ctx, ref, false)...)
	if err != nil {
		t.Fatal(err)
	}
	slow.stallBodies.Store(true)
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	start = time.Now()
	_, err = io.Copy(io.Discard, rc)
	if !errors.As(err, &te) {
		t.Errorf("reading a cache blob that stalls: %v, want the timeout", err)
	}
	if took := time.Since(start); took >= time.Second {
		t.Errorf("reading a cache blob that stalls took %s, want it to end after %s", took, timeout)
	}
}
