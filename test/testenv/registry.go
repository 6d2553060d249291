// Package testenv starts the real components that integration tests use:
// Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1,
// and a busybox base image made from Debian's busybox-static. Nothing is
// downloaded: a missing component fails the test and names the Debian
// package that hack/deps.sh installs.
package testenv

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// RegistryBinary is Debian's distribution registry.
const RegistryBinary = "/usr/bin/docker-registry"

// readyTimeout bounds the wait for a started registry to answer /v2/.
const readyTimeout = 30 * time.Second

// Registry is a docker-registry process serving plain HTTP on 127.0.0.1,
// with its storage in a temporary directory of the test.
type Registry struct {
	host     string
	user     string
	password string
	dir      string
	cmd      *exec.Cmd
	exited   <-chan error // receives once the process has exited
}

// RegistryOption configures StartRegistry.
type RegistryOption func(*registryConfig)

type registryConfig struct {
	user, password string
}

// WithBasicAuth makes the registry require user and password (htpasswd
// with a bcrypt entry). By default the registry needs no credentials.
func WithBasicAuth(user, password string) RegistryOption {
	return func(c *registryConfig) { c.user, c.password = user, password }
}

// StartRegistry starts Debian's docker-registry on 127.0.0.1 at a free
// port, with filesystem storage under t.TempDir() and deletes enabled,
// waits until /v2/ answers, and stops the process (by its PID) when the
// test ends. The registry's log is in its directory, and in the failure
// message when it does not start.
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	if _, err := os.Stat(RegistryBinary); err != nil {
		t.Fatalf("%s: %v: install Debian's docker-registry (hack/deps.sh)", RegistryBinary, err)
	}
	var c registryConfig
	for _, o := range opts {
		o(&c)
	}
	dir := t.TempDir()
	var lastErr error
	// A free port found here may be taken before the registry binds it:
	// try again with another.
	for range 3 {
		r, err := startRegistry(dir, c)
		if err == nil {
			t.Cleanup(r.stop)
			return r
		}
		lastErr = err
	}
	t.Fatalf("starting docker-registry: %v", lastErr)
	return nil
}

func startRegistry(dir string, c registryConfig) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Registry{host: "127.0.0.1:" + strconv.Itoa(port), user: c.user, password: c.password, dir: dir}
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, err
	}
	auth := ""
	if c.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(c.password), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("hashing password: %w", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(c.user+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: slipway-test\n    path: %s\n", htpasswd)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, storage, r.host, auth)
	configPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	r.cmd = exec.Command(RegistryBinary, "serve", configPath)
	// The registry reads REGISTRY_* variables over its config file: give it
	// none of the caller's.
	r.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", RegistryBinary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- r.cmd.Wait() }()

	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + r.host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				r.exited = exited
				return r, nil
			}
		}
		select {
		case werr := <-exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("docker-registry on %s exited (%v) before answering; its log:\n%s", r.host, werr, tail(log))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("docker-registry on %s did not answer /v2/ in %s; its log:\n%s", r.host, readyTimeout, tail(log))
		}
	}
}

// stop ends the registry by its PID: SIGTERM, then SIGKILL if it has not
// exited within ten seconds.
func (r *Registry) stop() {
	pid := r.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-r.exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-r.exited
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last lines of a log.
func tail(log []byte) string {
	lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// Host returns the registry's host:port (127.0.0.1:PORT).
func (r *Registry) Host() string { return r.host }

// Ref returns the reference of repo (with an optional :tag or @digest) in
// this registry: HOST:PORT/repo.
func (r *Registry) Ref(repo string) string { return r.host + "/" + repo }

// Auth returns the authenticator for this registry: basic with the
// credentials of WithBasicAuth, or anonymous.
func (r *Registry) Auth() authn.Authenticator {
	if r.user == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.user, Password: r.password}
}

// DockerConfig writes a Docker config directory (for DOCKER_CONFIG)
// holding the registry's credentials, empty when it needs none, into a
// temporary directory of t, and returns the directory.
func (r *Registry) DockerConfig(t testing.TB) string {
	t.Helper()
	auths := map[string]any{}
	if r.user != "" {
		auths[r.host] = map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte(r.user + ":" + r.password)),
		}
	}
	b, err := json.MarshalIndent(map[string]any{"auths": auths}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// PushBusybox pushes BusyboxImage to reg as library/busybox:latest and
// returns the reference (HOST:PORT/library/busybox:latest).
func PushBusybox(t testing.TB, reg *Registry) string {
	t.Helper()
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	s := reg.Ref("library/busybox:latest")
	ref, err := name.NewTag(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatalf("pushing %s: %v", s, err)
	}
	return s
}
