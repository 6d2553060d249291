package main

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// urlSpy serves /file (200) and anything else as 404, recording whether
// the URL's credentials were sent, as basic auth.
type urlSpy struct {
	mu   sync.Mutex
	auth []string
}

func (s *urlSpy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); ok {
		s.mu.Lock()
		s.auth = append(s.auth, u+":"+p)
		s.mu.Unlock()
	}
	if r.URL.Path == "/file" {
		w.Write([]byte("downloaded\n"))
		return
	}
	http.NotFound(w, r)
}

// The password (and a token given as the user name) of an ADD URL reaches
// no log line, no result field (message, instruction) and nothing of the
// image: the URL is shown with its user info replaced by "***".
func TestExecute_addURLPasswordStaysOut(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	const secret = "s3cr3t"
	spy := &urlSpy{}
	srv := httptest.NewServer(spy)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))

	for _, tc := range []struct {
		name, dockerfile string
		args             []string
		reason           result.Reason // "" for success
	}{
		{"404", "FROM scratch\nADD http://user:" + secret + "@" + host + "/missing /x\n", nil, result.ReasonCopyFailed},
		{"token as user name, 404", "FROM scratch\nADD http://" + secret + "@" + host + "/missing /x\n", nil, result.ReasonCopyFailed},
		{"connection refused", "FROM scratch\nADD http://user:" + secret + "@127.0.0.1:1/x /x\n", nil, result.ReasonCopyFailed},
		{"a password with a slash", "FROM scratch\nADD http://user:" + secret + "/x@" + host + "/file /x\n", nil, result.ReasonCopyFailed},
		{"unparsable URL", "FROM scratch\nADD http://user:" + secret + "@[::1/x /x\n", nil, ""},
		{"through a build arg", "FROM scratch\nARG URL\nADD ${URL} /x\nADD http://" + host + "/missing /y\n",
			[]string{"--build-arg=URL=http://user:" + secret + "@" + host + "/file"}, result.ReasonCopyFailed},
		{"then a failing RUN", "ARG BASE\nFROM $BASE\nADD http://user:" + secret + "@" + host + "/file /x\nRUN false\n",
			[]string{"--build-arg=BASE=" + base}, result.ReasonRunFailed},
		{"a bad flag", "FROM scratch\nADD --chmod=nope http://user:" + secret + "@" + host + "/file /x\n", nil, ""},
		{"success", "ARG BASE\nFROM $BASE\nADD http://user:" + secret + "@" + host + "/file /x\nRUN cat /x\n",
			[]string{"--build-arg=BASE=" + base, "--cache=true", "--cache-repo=" + reg.Ref("app/cache"), "--insecure-registry=" + reg.Host()}, "success"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctxDir := writeDockerfile(t, tc.dockerfile)
			layout := filepath.Join(t.TempDir(), "layout")
			args := append([]string{"--context=dir://" + ctxDir, "--no-push", "--oci-layout-path=" + layout}, tc.args...)
			b := runExecutor(t, args...)
			switch {
			case tc.reason == "success":
				if b.exit != 0 || !b.res.Success {
					t.Fatalf("exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
				}
			case b.exit == 0 || b.res.Failure == nil:
				t.Fatalf("the build succeeded; log:\n%s", b.log)
			case tc.reason != "" && b.res.Failure.Reason != tc.reason:
				t.Errorf("reason %s, want %s: %s", b.res.Failure.Reason, tc.reason, b.resRaw)
			}
			if b.res.Failure != nil {
				t.Logf("message: %s; instruction: %s", b.res.Failure.Message, b.res.Failure.Instruction)
			}
			if strings.Contains(b.log, secret) {
				t.Errorf("the password reached the log:\n%s", b.log)
			}
			if strings.Contains(b.resRaw, secret) {
				t.Errorf("the password reached the result: %s", b.resRaw)
			}
			// Every file of the image: manifests, config (history), layers.
			filepath.WalkDir(layout, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(data), secret) {
					t.Errorf("the password is in the image's %s", p)
				}
				return nil
			})
		})
	}
	// The credentials were sent, to the host they were given for.
	spy.mu.Lock()
	defer spy.mu.Unlock()
	if len(spy.auth) == 0 {
		t.Errorf("the URL's credentials never reached the server")
	}
}

// The context URL's user info stays out of the messages too.
func TestExecute_contextURLPasswordStaysOut(t *testing.T) {
	const secret = "s3cr3t"
	for _, u := range []string{
		"https://user:" + secret + "@127.0.0.1:1/repo.git",
		"https://" + secret + "@127.0.0.1:1/repo.git",
		"git://user:" + secret + "@127.0.0.1:1/repo.git",
	} {
		b := runExecutor(t, "--context="+u, "--no-push")
		if b.exit == 0 {
			t.Fatalf("%s: the build succeeded", u)
		}
		if strings.Contains(b.log, secret) || strings.Contains(b.resRaw, secret) {
			t.Errorf("%s: the password reached the log or the result:\n%s\n%s", u, b.log, b.resRaw)
		}
	}
}
