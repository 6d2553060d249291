package imageindex

// Attacks on Assemble by a tenant who runs the output registry (spec.output.image is
// free-form), from the security review of issue 15 (review15): each failed before the guard
// of transport.go. They use Assemble and the errors' text only, as the controller does
// (publishFailure writes err.Error() into status.failure.message and an event).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// fakeRegistry is a registry of the tenant's on 127.0.0.1: it answers /v2/ with 200 and
// every other request with route.
func fakeRegistry(t *testing.T, route http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		route(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// recorder is an internal service of the manager's network: it records who reached it.
type recorder struct {
	mu   sync.Mutex
	seen []string
	srv  *httptest.Server
}

func newRecorder(t *testing.T, status int, body string) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.Method+" "+r.URL.String()+" authorization="+r.Header.Get("Authorization"))
		rec.mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) port() string { return r.srv.URL[strings.LastIndex(r.srv.URL, ":")+1:] }

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// staticKeychain gives the tenant's push Secret's credentials for every registry.
type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// statusMessage is err as the controller writes it into status.failure.message.
func statusMessage(err error) string { return "Pushing the image index: " + fmt.Sprint(err) }

const internalSecret = "INTERNAL-ONLY: token=s3cr3t-from-the-managers-network"

// The tenant's registry redirects the manager's manifest GET to an internal service named by
// DNS ("localhost": ggcr's own redirect check refuses only private IP literals). The service
// must not be reached, and its answer must not reach the tenant's status.
func TestAssemble_attack_redirectToInternalHost(t *testing.T) {
	internal := newRecorder(t, http.StatusForbidden, internalSecret)
	host := fakeRegistry(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/sha256:") {
			http.Redirect(w, r, "http://localhost:"+internal.port()+"/latest/meta-data/iam?x=1", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	})
	_, err := Assemble(context.Background(), Request{
		Repository: host + "/team/app", Tags: []string{"v1"}, Insecure: true, Keychain: staticKeychain{"tenant", "tenant-password"},
		Manifests: []Manifest{{Platform: "linux/amd64", Digest: "sha256:" + strings.Repeat("a", 64)}},
	})
	msg := statusMessage(err)
	if err == nil || strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "meta-data") {
		t.Errorf("status.failure.message would be %q: want an error without the internal answer or the redirect's URL", msg)
	}
	if got := internal.requests(); len(got) > 0 {
		t.Errorf("the internal service was reached: %q", got)
	}
	if !strings.Contains(msg, "redirected the manager to another host") {
		t.Errorf("message %q does not say the redirect was refused", msg)
	}
}

// An error answer's body (ggcr keeps up to 64 KiB of it) never reaches the message: the
// status code, the host and our words do.
func TestAssemble_attack_errorBodyNotReflected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"raw body", http.StatusForbidden, internalSecret + strings.Repeat(" padding", 8000), "the registry refused access (HTTP 403 from 127.0.0.1)"},
		{"registry error JSON", http.StatusBadRequest, `{"errors":[{"code":"DENIED","message":"` + internalSecret + `","detail":"` + internalSecret + `"}]}`,
			"unexpected answer (HTTP 400 from 127.0.0.1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := fakeRegistry(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			})
			_, err := Assemble(context.Background(), Request{Repository: host + "/team/app", Tags: []string{"v1"}, Insecure: true,
				Manifests: []Manifest{{Platform: "linux/amd64", Digest: "sha256:" + strings.Repeat("a", 64)}}})
			msg := statusMessage(err)
			if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "padding") || strings.Contains(msg, "DENIED") {
				t.Errorf("the registry's answer reaches the message: %q", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("message %q does not say %q", msg, tc.want)
			}
			if len(msg) > 1024 {
				t.Errorf("message of %d bytes, want at most 1024", len(msg))
			}
		})
	}
}

// hugeManifest is a Docker image manifest whose configuration declares size and digest.
func hugeManifest(size int64, configDigest string) ([]byte, string) {
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "size": size, "digest": configDigest},
		"layers": []any{},
	})
	sum := sha256.Sum256(m)
	return m, "sha256:" + hex.EncodeToString(sum[:])
}

// serveZeros writes n zero bytes to w, counting them, until the client goes away.
func serveZeros(w http.ResponseWriter, n int64, served *atomic.Int64) {
	w.Header().Set("Content-Length", fmt.Sprint(n))
	chunk := make([]byte, 1<<20)
	for left := n; left > 0; {
		c := chunk[:min(int64(len(chunk)), left)]
		k, err := w.Write(c)
		served.Add(int64(k))
		left -= int64(k)
		if err != nil {
			return
		}
	}
}

// A manifest whose configuration claims to be huge: the manager read all of it into memory
// (ggcr's remoteImage.RawConfigFile reads the size the manifest declares; 256 MiB made the
// manager allocate 572 MiB, past the chart's memory limit: an OOM kill stops every tenant's
// builds). A size of -1 is ggcr's "unknown": no bound at all. The configuration must not be
// read.
func TestAssemble_attack_hugeConfig(t *testing.T) {
	const size = 256 << 20
	sum := sha256.Sum256([]byte("not the configuration"))
	cfgDigest := "sha256:" + hex.EncodeToString(sum[:])
	for _, declared := range []int64{size, -1} {
		t.Run(fmt.Sprint(declared), func(t *testing.T) {
			manifest, mDigest := hugeManifest(declared, cfgDigest)
			var served atomic.Int64
			var blobGets atomic.Int32
			host := fakeRegistry(t, func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasSuffix(r.URL.Path, "/manifests/"+mDigest):
					w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
					w.Header().Set("Docker-Content-Digest", mDigest)
					w.Write(manifest)
				case strings.HasSuffix(r.URL.Path, "/blobs/"+cfgDigest):
					blobGets.Add(1)
					serveZeros(w, size, &served)
				default:
					w.WriteHeader(http.StatusNotFound)
				}
			})
			_, err := Assemble(context.Background(), Request{Repository: host + "/team/app", Tags: []string{"v1"}, Insecure: true,
				Manifests: []Manifest{{Platform: "linux/amd64", Digest: mDigest}}})
			if served.Load() > 0 || blobGets.Load() > 0 {
				t.Errorf("the manager read %d MiB of the configuration (%d GETs)", served.Load()>>20, blobGets.Load())
			}
			if err == nil || !strings.Contains(err.Error(), "the configuration of") || Retryable(err) {
				t.Errorf("err = %v (retryable %v), want the configuration's size refused, not retried", err, Retryable(err))
			}
		})
	}
}

// A manifest far larger than any image's (ggcr reads up to 100 MiB of one) is not read past
// MaxManifest.
func TestAssemble_attack_hugeManifest(t *testing.T) {
	const size = 64 << 20
	digest := "sha256:" + strings.Repeat("b", 64)
	var served atomic.Int64
	host := fakeRegistry(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+digest) {
			w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
			serveZeros(w, size, &served)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	})
	_, err := Assemble(context.Background(), Request{Repository: host + "/team/app", Tags: []string{"v1"}, Insecure: true,
		Manifests: []Manifest{{Platform: "linux/amd64", Digest: digest}}})
	// The server may have written a few MiB into socket buffers before the manager hung up.
	if served.Load() > 16<<20 {
		t.Errorf("the registry served %d MiB of a manifest before the manager stopped reading", served.Load()>>20)
	}
	if err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") {
		t.Errorf("err = %v, want the manifest refused as too large", err)
	}
}

// An insecure (plain HTTP) registry names a token service on another host, over plain HTTP:
// ggcr accepts such a realm for an insecure registry and sends it the push Secret's
// credentials in clear. The manager must not.
func TestAssemble_attack_plainHTTPRealm(t *testing.T) {
	tokens := newRecorder(t, http.StatusOK, `{"token":"t"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://localhost:`+tokens.port()+`/token",service="reg"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	_, err := Assemble(context.Background(), Request{Repository: host + "/team/app", Tags: []string{"v1"}, Insecure: true,
		Keychain:  staticKeychain{"tenant", "tenant-password"},
		Manifests: []Manifest{{Platform: "linux/amd64", Digest: "sha256:" + strings.Repeat("a", 64)}}})
	for _, r := range tokens.requests() {
		if strings.Contains(r, "Basic") {
			t.Errorf("the credentials went to the plain-HTTP token service of another host: %s", r)
		}
	}
	if msg := statusMessage(err); !strings.Contains(msg, "over plain HTTP") {
		t.Errorf("message %q does not say the plain-HTTP token service was refused", msg)
	}
}

// A registry that sends its answer a byte at a time holds a request no longer than the
// request timeout (the caller's deadline aside).
func TestAssemble_attack_tarpit(t *testing.T) {
	digest := "sha256:" + strings.Repeat("c", 64)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	host := fakeRegistry(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
		w.Header().Set("Content-Length", "100000")
		for {
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(100 * time.Millisecond):
			case <-stop:
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	_, err := Assemble(ctx, Request{Repository: host + "/team/app", Tags: []string{"v1"}, Insecure: true, RequestTimeout: time.Second,
		Manifests: []Manifest{{Platform: "linux/amd64", Digest: digest}}})
	if took := time.Since(start); took > 20*time.Second || err == nil || !strings.Contains(err.Error(), "no answer in time") {
		t.Errorf("Assemble took %s: %v; want 'no answer in time' after about the request timeout", took.Round(time.Millisecond), err)
	}
}
