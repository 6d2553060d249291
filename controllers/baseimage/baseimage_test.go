package baseimage_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/controllers/baseimage"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

const (
	user     = "puller"
	password = "pull-Passw0rd-secret"
)

// dockerConfig is a .dockerconfigjson with auths for each host.
func dockerConfig(t *testing.T, auths map[string][2]string) []byte {
	t.Helper()
	m := map[string]any{}
	for host, up := range auths {
		m[host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(up[0] + ":" + up[1]))}
	}
	b, err := json.Marshal(map[string]any{"auths": m})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keychain(t *testing.T, auths map[string][2]string) authn.Keychain {
	t.Helper()
	kc, err := baseimage.Keychain(map[string][]byte{".dockerconfigjson": dockerConfig(t, auths)})
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, d interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func pushImage(t *testing.T, ref string, img v1.Image, auth authn.Authenticator) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(auth)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return digestOf(t, img)
}

// pushIndex pushes a multi-platform tag: an index with img for the
// machine's platform and another image for arm.
func pushIndex(t *testing.T, ref string, img v1.Image, auth authn.Authenticator) string {
	t.Helper()
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
		mutate.IndexAddendum{Add: randomImage(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}}},
	)
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithAuth(auth)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return digestOf(t, idx)
}

// TestCheck_tagMoves: against Debian's docker-registry with basic auth, a
// base whose tag was pushed again has moved (built digest, new digest),
// for a single-platform tag and for a multi-platform one (the index's
// digest); before that, nothing moved.
func TestCheck_tagMoves(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	plain, multi := reg.Ref("library/debian:bookworm"), reg.Ref("distroless/static:nonroot")
	d1 := pushImage(t, plain, randomImage(t), reg.Auth())
	i1 := pushIndex(t, multi, randomImage(t), reg.Auth())
	bases := []baseimage.Base{{Ref: plain, Digest: d1}, {Ref: multi, Digest: i1}}
	o := baseimage.Options{Keychain: keychain(t, map[string][2]string{reg.Host(): {user, password}})}

	moved, err := baseimage.Check(t.Context(), bases, o)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(moved) != 0 {
		t.Fatalf("moved %v before any push", moved)
	}

	d2 := pushImage(t, plain, randomImage(t), reg.Auth())
	i2 := pushIndex(t, multi, randomImage(t), reg.Auth())
	moved, err = baseimage.Check(t.Context(), bases, o)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	want := []baseimage.Moved{{Ref: plain, Built: d1, Now: d2}, {Ref: multi, Built: i1, Now: i2}}
	if diff := cmp.Diff(want, moved); diff != "" {
		t.Errorf("moved (-want +got)\n%s", diff)
	}
}

// spyRegistry is go-containerregistry's in-memory registry recording each
// request's method, path and Authorization header.
type spyRegistry struct {
	host string
	mu   sync.Mutex
	reqs []spied
}

type spied struct{ method, path, auth string }

func startSpyRegistry(t *testing.T) *spyRegistry {
	t.Helper()
	s := &spyRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, spied{r.Method, r.URL.Path, r.Header.Get("Authorization")})
		s.mu.Unlock()
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.host = strings.TrimPrefix(srv.URL, "http://")
	return s
}

func (s *spyRegistry) requests() []spied {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]spied(nil), s.reqs...)
}

func (s *spyRegistry) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// TestCheck_credentialsOnlyToTheirRegistry: with credentials for one
// registry, checking bases in it and in another registry (another port of
// the same address) sends them to the first only; the other sees HEAD
// requests for manifests and the /v2/ ping, never a manifest or blob GET.
func TestCheck_credentialsOnlyToTheirRegistry(t *testing.T) {
	private := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	other := startSpyRegistry(t)
	pd := pushImage(t, private.Ref("library/debian:bookworm"), randomImage(t), private.Auth())
	od := pushImage(t, other.host+"/library/alpine:3", randomImage(t), authn.Anonymous)
	other.reset()

	bases := []baseimage.Base{
		{Ref: private.Ref("library/debian:bookworm"), Digest: pd},
		{Ref: other.host + "/library/alpine:3", Digest: "sha256:" + strings.Repeat("0", 64)},
	}
	moved, err := baseimage.Check(t.Context(), bases, baseimage.Options{Keychain: keychain(t, map[string][2]string{private.Host(): {user, password}})})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if want := []baseimage.Moved{{Ref: bases[1].Ref, Built: bases[1].Digest, Now: od}}; !cmp.Equal(want, moved) {
		t.Errorf("moved %v, want %v", moved, want)
	}
	reqs := other.requests()
	if len(reqs) == 0 {
		t.Fatal("the other registry saw no request")
	}
	for _, r := range reqs {
		if r.auth != "" {
			t.Errorf("%s %s reached the other registry with an Authorization header", r.method, r.path)
		}
		if r.method != http.MethodHead && r.path != "/v2/" {
			t.Errorf("%s %s: want only HEAD requests (and the /v2/ ping)", r.method, r.path)
		}
	}
}

// TestCheck_pinnedNotChecked: a base given by digest never moves, and its
// registry is not asked; a base without a recorded digest is not either.
func TestCheck_pinnedNotChecked(t *testing.T) {
	reg := startSpyRegistry(t)
	d := pushImage(t, reg.host+"/library/debian:bookworm", randomImage(t), authn.Anonymous)
	pushImage(t, reg.host+"/library/debian:bookworm", randomImage(t), authn.Anonymous) // the tag moves
	reg.reset()
	bases := []baseimage.Base{
		{Ref: reg.host + "/library/debian@" + d, Digest: d},
		{Ref: reg.host + "/library/debian:bookworm"},
	}
	moved, err := baseimage.Check(t.Context(), bases, baseimage.Options{})
	if err != nil || len(moved) != 0 {
		t.Errorf("Check = %v, %v; want nothing moved and no error", moved, err)
	}
	if n := len(reg.requests()); n != 0 {
		t.Errorf("%d requests for a pinned base, want none", n)
	}
}

// TestCheck_wrongCredentials: refused credentials (or none) are an error
// naming the base, without the password, and nothing is reported moved.
func TestCheck_wrongCredentials(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	ref := reg.Ref("library/debian:bookworm")
	d := pushImage(t, ref, randomImage(t), reg.Auth())
	pushImage(t, ref, randomImage(t), reg.Auth()) // moved, but who may know?
	for name, tc := range map[string]struct {
		kc   authn.Keychain
		want string
	}{
		"wrong": {keychain(t, map[string][2]string{reg.Host(): {user, "a-Wrong-passw0rd"}}), "the registry refused the credentials"},
		"none":  {nil, "the registry requires credentials"},
	} {
		t.Run(name, func(t *testing.T) {
			kc := tc.kc
			moved, err := baseimage.Check(t.Context(), []baseimage.Base{{Ref: ref, Digest: d}}, baseimage.Options{Keychain: kc})
			if err == nil || len(moved) != 0 {
				t.Fatalf("Check = %v, %v; want an error and nothing moved", moved, err)
			}
			if !strings.Contains(err.Error(), "checking base image "+ref+": "+tc.want) || !strings.Contains(err.Error(), "401") {
				t.Errorf("error %q: want it to name the base and the refusal", err)
			}
			if strings.Contains(err.Error(), "a-Wrong-passw0rd") || strings.Contains(err.Error(), password) {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// TestCheck_stalledRegistry: a registry that never answers is an error
// after the timeout, and the other bases are checked all the same.
func TestCheck_stalledRegistry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	good := startSpyRegistry(t)
	d1 := pushImage(t, good.host+"/library/debian:bookworm", randomImage(t), authn.Anonymous)
	d2 := pushImage(t, good.host+"/library/debian:bookworm", randomImage(t), authn.Anonymous)
	stalled := ln.Addr().String() + "/library/debian:bookworm"
	start := time.Now()
	moved, err := baseimage.Check(t.Context(), []baseimage.Base{
		{Ref: stalled, Digest: d1},
		{Ref: good.host + "/library/debian:bookworm", Digest: d1},
	}, baseimage.Options{Timeout: 300 * time.Millisecond})
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Check took %s with a timeout of 300ms", elapsed)
	}
	if err == nil || !strings.Contains(err.Error(), "checking base image "+stalled+": no answer within 300ms") {
		t.Errorf("error %v: want the stalled base named and the timeout", err)
	}
	if want := []baseimage.Moved{{Ref: good.host + "/library/debian:bookworm", Built: d1, Now: d2}}; !cmp.Equal(want, moved) {
		t.Errorf("moved %v, want %v", moved, want)
	}
}

// TestCheck_executorResult: the bases of an executor's result check as
// they are: a reference named twice is asked once; the platform manifest
// is not what is compared.
func TestCheck_executorResult(t *testing.T) {
	reg := startSpyRegistry(t)
	img := randomImage(t)
	ref := reg.host + "/library/debian:bookworm"
	idx := pushIndex(t, ref, img, authn.Anonymous)
	reg.reset()
	res := []result.Base{{Ref: ref, Digest: idx, Manifest: digestOf(t, img)}, {Ref: ref, Digest: idx}}
	moved, err := baseimage.Check(t.Context(), baseimage.FromResult(res), baseimage.Options{})
	if err != nil || len(moved) != 0 {
		t.Fatalf("Check = %v, %v; want nothing moved", moved, err)
	}
	heads := 0
	for _, r := range reg.requests() {
		if r.method == http.MethodHead {
			heads++
		}
	}
	if heads != 1 {
		t.Errorf("%d HEAD requests for one reference named twice, want 1", heads)
	}
}

// TestKeychain: which credentials each registry gets, as the executor's
// keychain (Docker's file store) finds them.
func TestKeychain(t *testing.T) {
	enc := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	cfg := `{"auths": {
		"registry.example.com": {"auth": "` + enc("reg", "reg-pw") + `"},
		"https://other.example.com/v1/": {"username": "other", "password": "other-pw"},
		"registry.example.com/team/app": {"auth": "` + enc("team", "team-pw") + `"},
		"https://index.docker.io/v1/": {"auth": "` + enc("hub", "hub-pw") + `"},
		"ports.example.com:5000": {"auth": "` + enc("ports", "ports-pw") + `"},
		"token.example.com": {"identitytoken": "an-identity-token"}
	}}`
	kc, err := baseimage.Keychain(map[string][]byte{".dockerconfigjson": []byte(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := baseimage.Keychain(map[string][]byte{".dockercfg": []byte(`{"registry.example.com": {"auth": "` + enc("reg", "reg-pw") + `", "email": "x@example.com"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kc   authn.Keychain
		repo string
		want authn.AuthConfig // zero: anonymous
	}{
		{kc, "registry.example.com/lib/x", authn.AuthConfig{Username: "reg", Password: "reg-pw"}},
		{kc, "registry.example.com/team/app", authn.AuthConfig{Username: "team", Password: "team-pw"}},
		{kc, "other.example.com/x", authn.AuthConfig{Username: "other", Password: "other-pw"}},
		{kc, "debian", authn.AuthConfig{Username: "hub", Password: "hub-pw"}},
		{kc, "docker.io/library/debian", authn.AuthConfig{Username: "hub", Password: "hub-pw"}},
		{kc, "ports.example.com:5000/x", authn.AuthConfig{Username: "ports", Password: "ports-pw"}},
		{kc, "token.example.com/x", authn.AuthConfig{IdentityToken: "an-identity-token"}},
		// Another port, another host, a sub-domain: nothing.
		{kc, "ports.example.com/x", authn.AuthConfig{}},
		{kc, "registry.example.com:8443/x", authn.AuthConfig{}},
		{kc, "evil.registry.example.com/x", authn.AuthConfig{}},
		{kc, "registry.example.com.evil.io/x", authn.AuthConfig{}},
		{kc, "ghcr.io/org/x", authn.AuthConfig{}},
		{legacy, "registry.example.com/x", authn.AuthConfig{Username: "reg", Password: "reg-pw"}},
		{legacy, "other.example.com/x", authn.AuthConfig{}},
	}
	for _, tc := range tests {
		repo, err := name.NewRepository(tc.repo)
		if err != nil {
			t.Fatal(err)
		}
		a, err := tc.kc.Resolve(repo)
		if err != nil {
			t.Fatalf("Resolve(%s): %v", tc.repo, err)
		}
		got, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, *got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tc.repo, diff)
		}
	}
}

// TestKeychain_runsNoHelper: a config naming a credential store or helper
// (which Docker would run as docker-credential-NAME) makes the keychain
// run nothing, even with such a program on the PATH.
func TestKeychain_runsNoHelper(t *testing.T) {
	bin := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	helper := "#!/bin/sh\ntouch " + marker + "\necho '{\"Username\":\"u\",\"Secret\":\"s\"}'\n"
	for _, n := range []string{"docker-credential-evil", "docker-credential-evilhelper"} {
		if err := os.WriteFile(filepath.Join(bin, n), []byte(helper), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	kc, err := baseimage.Keychain(map[string][]byte{".dockerconfigjson": []byte(`{"credsStore": "evil", "credHelpers": {"registry.example.com": "evilhelper"}, "auths": {}}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"registry.example.com/x", "other.example.com/x", "debian"} {
		r, _ := name.NewRepository(repo)
		a, err := kc.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		if a != authn.Anonymous {
			t.Errorf("%s: credentials %v, want anonymous", repo, a)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a credential helper ran (%v)", err)
	}
	// The control: Docker's own lookup of the same file runs the helper,
	// so the marker would show it.
	cf, err := config.LoadFromReader(strings.NewReader(`{"credsStore": "evil", "auths": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cf.GetAuthConfig("registry.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the control: Docker's lookup did not run the helper either (%v); the test proves nothing", err)
	}
}

func TestKeychain_errors(t *testing.T) {
	for _, tc := range []struct {
		data map[string][]byte
		want string
	}{
		{map[string][]byte{"config.json": []byte("{}")}, "no .dockerconfigjson or .dockercfg key"},
		{map[string][]byte{".dockerconfigjson": []byte(`{"auths": {"r": {"auth": "hunter2-not-base64!"}}}`)}, "reading .dockerconfigjson: an auth value is not base64"},
		{map[string][]byte{".dockerconfigjson": []byte(`{"auths": `)}, "reading .dockerconfigjson: not valid JSON"},
		{map[string][]byte{".dockercfg": []byte(`[1]`)}, "reading .dockercfg"},
	} {
		_, err := baseimage.Keychain(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Keychain: %v, want an error containing %q", err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q quotes the Secret", err)
		}
	}
}

// TestCheck_redirectToInternalHostRefused: a base image's registry (the Dockerfile names it, so
// the tenant does) answers the manager's HEAD with a redirect to another host name of this
// machine, standing for a service inside the manager's network. The guard refuses it: the
// internal service is never reached, and the error (the manager's log) holds no answer of it.
func TestCheck_redirectToInternalHostRefused(t *testing.T) {
	var internalHits int
	var mu sync.Mutex
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		internalHits++
		mu.Unlock()
		http.Error(w, "INTERNAL-ONLY secret=hunter2", http.StatusForbidden)
	}))
	defer internal.Close()
	_, port, _ := net.SplitHostPort(internal.Listener.Addr().String())
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, "http://localhost:"+port+"/latest/meta-data", http.StatusTemporaryRedirect)
	}))
	defer registry.Close()
	ref := strings.TrimPrefix(registry.URL, "http://") + "/app/base:latest"
	_, err := baseimage.Check(t.Context(), []baseimage.Base{{Ref: ref, Digest: "sha256:" + strings.Repeat("a", 64)}}, baseimage.Options{})
	if err == nil {
		t.Fatal("a redirect to another host was followed")
	}
	mu.Lock()
	defer mu.Unlock()
	if internalHits != 0 {
		t.Errorf("the internal service was reached %d times", internalHits)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error shows the internal answer: %v", err)
	}
}
