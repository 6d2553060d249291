package source

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/test/gitserver"
)

// resetAll accepts connections and resets each at once (SO_LINGER 0), as a
// host whose server process is gone behind a proxy does.
func resetAll(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// Unreachable tells a git server that could not be reached, or failed on
// its side, from a source it refused: only the first may be fetched later
// by the same build (the controller retries it with spec.retry.sourceFetch).
// A wrong URL, revision or credentials must never be retried in a loop.
func TestUnreachable(t *testing.T) {
	root, _ := smallRepo(t)
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("alice", secretPassword))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	status := func(code int) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "injected", code)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	// The refs are listed, then the connection breaks off while the pack
	// is fetched.
	backend, _ := url.Parse(srv.URL)
	rp := httputil.NewSingleHostReverseProxy(backend)
	brokenPack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(brokenPack.Close)

	auth := map[string]string{"GIT_USERNAME": "alice", "GIT_PASSWORD": secretPassword}
	tests := []struct {
		name            string
		url             string
		env             map[string]string
		wantUnreachable bool
		wantMsg         string
	}{
		{"connection refused", closed + "/org/app.git#main", nil, true, "the host is unreachable"},
		{"connection reset", "http://" + resetAll(t) + "/org/app.git#main", nil, true, ""},
		{"broken off while fetching", brokenPack.URL + "/org/app.git#main", auth, true, "fetching refs/heads/main"},
		{"503", status(http.StatusServiceUnavailable) + "/org/app.git#main", nil, true, "the server failed (HTTP 503 Service Unavailable)"},
		{"500", status(http.StatusInternalServerError) + "/org/app.git#main", nil, true, "the server failed (HTTP 500 Internal Server Error)"},
		{"429", status(http.StatusTooManyRequests) + "/org/app.git#main", nil, true, "the server refused for now (HTTP 429 Too Many Requests)"},
		{"unknown repository", srv.URL + "/org/nope.git#main", auth, false, "repository not found"},
		{"unknown revision", srv.URL + "/org/app.git#no-such-branch", auth, false, "repository does not contain ref no-such-branch"},
		{"no credentials", srv.URL + "/org/app.git#main", nil, false, "the server requires credentials"},
		{"wrong credentials", srv.URL + "/org/app.git#main", map[string]string{"GIT_USERNAME": "alice", "GIT_PASSWORD": "nope"}, false, "the server refused the credentials"},
		{"403", status(http.StatusForbidden) + "/org/app.git#main", nil, false, ""},
		{"unresolvable host", "https://nowhere.invalid/org/app.git", nil, false, "the host name does not resolve"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FetchWithInfo(t.Context(), tc.url, "", filepath.Join(t.TempDir(), "context"), FetchOptions{Getenv: envOf(tc.env)})
			if err == nil {
				t.Fatal("FetchWithInfo succeeded")
			}
			t.Logf("error: %v", err)
			if got := Unreachable(err); got != tc.wantUnreachable {
				t.Errorf("Unreachable() = %v, want %v", got, tc.wantUnreachable)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
			// The classification survives the scrubbing of credentials
			// from the message, and a wrapping by the caller.
			if got := Unreachable(errors.Join(errors.New("reading inputs"), err)); got != tc.wantUnreachable {
				t.Errorf("Unreachable() of the wrapped error = %v, want %v", got, tc.wantUnreachable)
			}
		})
	}
	if Unreachable(errors.New("dial tcp: connection refused")) {
		t.Error("Unreachable() of an error that is not a fetch's: true, want false")
	}
}
