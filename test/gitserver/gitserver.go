// Package gitserver starts real git servers on 127.0.0.1 for tests: Git's
// smart HTTP (`git http-backend` behind Go's net/http/cgi, optionally with
// basic auth) and Debian's OpenSSH server with its own host key and one
// authorized client key. It also has small helpers to make repositories with
// the git command line. Nothing is downloaded: a missing binary fails the
// test and names the Debian package.
package gitserver

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Git runs git with args in dir and returns its trimmed standard output. The
// author and committer are fixed, so commits are reproducible given the
// same dates.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
		"GIT_ALLOW_PROTOCOL=file:http:https:ssh",
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// WriteFiles writes files (slash-separated path → content) under dir,
// creating parent directories.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// NewWorkRepo makes a non-bare repository in a new temporary directory
// with "main" as its initial branch, and returns its path.
func NewWorkRepo(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	Git(t, dir, "init", "-q", "-b", "main")
	Git(t, dir, "config", "protocol.file.allow", "always")
	return dir
}

// Commit adds every change in the work repository dir and commits it with
// message, and returns the new commit's SHA.
func Commit(t testing.TB, dir, message string) string {
	t.Helper()
	Git(t, dir, "add", "-A")
	Git(t, dir, "commit", "-q", "--allow-empty", "-m", message)
	return Git(t, dir, "rev-parse", "HEAD")
}

// Publish makes a bare mirror of the work repository work at root/name (name
// like "org/repo.git"), with all its refs, and returns the bare
// repository's path. allowSHA makes the server serve any reachable commit
// by its SHA (uploadpack.allowReachableSHA1InWant), as GitHub and GitLab do.
func Publish(t testing.TB, work, root, name string, allowSHA bool) string {
	t.Helper()
	bare := filepath.Join(root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bare); err == nil {
		if err := os.RemoveAll(bare); err != nil {
			t.Fatal(err)
		}
	}
	Git(t, filepath.Dir(bare), "clone", "-q", "--mirror", "--no-local", work, bare)
	Git(t, bare, "config", "http.receivepack", "false")
	Git(t, bare, "config", "uploadpack.allowReachableSHA1InWant", fmt.Sprint(allowSHA))
	Git(t, bare, "config", "uploadpack.allowFilter", "true")
	return bare
}

// HTTPServer serves the bare repositories under a root directory with Git's
// smart HTTP protocol.
type HTTPServer struct {
	// URL is the server's base URL, http://127.0.0.1:PORT, without a slash.
	URL string
	srv *http.Server
}

// HTTPOption configures StartHTTP.
type HTTPOption func(*httpConfig)

type httpConfig struct {
	user, password string
	spy            *Spy
}

// Spy records the Authorization headers a server received, to prove that
// credentials did not go where they must not.
type Spy struct {
	mu   sync.Mutex
	seen []string
}

// WithSpy records every request's Authorization header (empty when it had
// none) in spy.
func WithSpy(spy *Spy) HTTPOption {
	return func(c *httpConfig) { c.spy = spy }
}

// Authorizations returns the Authorization headers received so far, one
// per request, empty for a request without one.
func (s *Spy) Authorizations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// Requests is how many requests the server received.
func (s *Spy) Requests() int { return len(s.Authorizations()) }

// Credentialed returns the Authorization headers that were not empty.
func (s *Spy) Credentialed() []string {
	var out []string
	for _, a := range s.Authorizations() {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// WithBasicAuth makes the server answer 401 to any request without user
// and password. By default no credentials are needed.
func WithBasicAuth(user, password string) HTTPOption {
	return func(c *httpConfig) { c.user, c.password = user, password }
}

// StartHTTP serves the repositories under root (repository "org/x.git" at
// URL+"/org/x.git") with `git http-backend` on 127.0.0.1 at a free port,
// and stops when the test ends.
func StartHTTP(t testing.TB, root string, opts ...HTTPOption) *HTTPServer {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git: %v: install Debian's git", err)
	}
	var c httpConfig
	for _, o := range opts {
		o(&c)
	}
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + root,
		},
		// http-backend complains on stderr about unknown repositories,
		// which tests ask for on purpose.
		Stderr: io.Discard,
	}
	var h http.Handler = backend
	if c.user != "" {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != c.user || p != c.password {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			backend.ServeHTTP(w, r)
		})
	}
	if spy := c.spy; spy != nil {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			spy.mu.Lock()
			spy.seen = append(spy.seen, r.Header.Get("Authorization"))
			spy.mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	s := &HTTPServer{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h}}
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// Host is the server's host:port.
func (s *HTTPServer) Host() string { return strings.TrimPrefix(s.URL, "http://") }
