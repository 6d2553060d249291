package imageindex

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// tokenRegistry is ggcr's in-memory registry behind Bearer authentication: requests need
// the token "good", which the token service at realm gives for user:password; others get a
// challenge naming realm.
func tokenRegistry(t *testing.T, realm *string) *httptest.Server {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+*realm+`",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// tokenService is a token service over TLS that gives "good" for user:password.
func tokenService(t *testing.T, user, password string, calls *atomic.Int32) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"token":"good"}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// resolveAs makes the guard resolve name to 127.0.0.1 (the httptest servers' certificates
// name example.com), and everything else as it would.
func resolveAs(g *guard, hostName string) {
	g.resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host == hostName {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return lookup(ctx, host)
	}
}

// A registry's token service (realm) on another host gets the credentials over https, and
// is reached at a private address only when the registry's own address is one too: a
// registry on the internet cannot send the manager's credentials, or the manager, into its
// own network.
func TestGuard_tokenService(t *testing.T) {
	const user, password = "tenant", "tenant-password"
	var calls atomic.Int32
	tokens := tokenService(t, user, password, &calls)
	port := tokens.URL[strings.LastIndex(tokens.URL, ":")+1:]
	var realm string
	srv := tokenRegistry(t, &realm)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/team/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	base := tokens.Client().Transport.(*http.Transport) // trusts the token service's certificate
	auth := &authn.Basic{Username: user, Password: password}

	for _, tc := range []struct {
		name            string
		realm           string
		registryPrivate bool
		want            string // "" for success
	}{
		{"on another host, the registry's address private", "https://example.com:" + port + "/token", true, ""},
		{"on a private address, the registry's public", "https://example.com:" + port + "/token", false, "resolves to a loopback, link-local, private or reserved address"},
		{"over plain HTTP on another host", "http://example.com:" + port + "/token", true, "over plain HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			realm = tc.realm
			calls.Store(0)
			g := newGuard(repo.Registry, base, 0)
			resolveAs(g, "example.com")
			g.privateRegistry = &tc.registryPrivate
			err := remote.Write(repo.Tag("v1"), img, remote.WithAuth(auth), remote.WithTransport(g))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("pushing through the token service: %v", err)
			case tc.want == "" && calls.Load() == 0:
				t.Error("the token service was not asked")
			case tc.want != "" && (err == nil || !strings.Contains(Explain(err, true), tc.want)):
				t.Errorf("err = %v (%s), want %q", err, Explain(err, true), tc.want)
			case tc.want != "" && calls.Load() > 0:
				t.Errorf("the token service was reached %d times", calls.Load())
			}
		})
	}
}

// Registries serve blobs from storage elsewhere (a redirect of the blob GET): the guard
// follows such a redirect over https to a public address, and no other redirect to another
// host.
func TestGuard_redirects(t *testing.T) {
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	rawCfg, _ := img.RawConfigFile()
	var storageHits atomic.Int32
	storage := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageHits.Add(1)
		w.Write(rawCfg)
	}))
	t.Cleanup(storage.Close)
	storageURL, _ := url.Parse(storage.URL)

	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var redirect func(r *http.Request) string // where to send r, "" to serve it
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := redirect(r); to != "" {
			http.Redirect(w, r, to, http.StatusTemporaryRedirect)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/team/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	ref := repo.Digest(d.String())
	redirect = func(*http.Request) string { return "" }
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}

	blob := func(to string) func(r *http.Request) string {
		return func(r *http.Request) string {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+cfgName.String()) && r.URL.RawQuery == "" {
				return to
			}
			return ""
		}
	}
	manifest := func(to string) func(r *http.Request) string {
		return func(r *http.Request) string {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
				return to
			}
			return ""
		}
	}
	storageAt := func(scheme string) string {
		return scheme + "://example.com:" + storageURL.Port() + "/bucket/config?signature=x"
	}
	for _, tc := range []struct {
		name     string
		redirect func(r *http.Request) string
		public   bool // the storage's address counts as public (as a CDN's would)
		want     string
		storage  bool // the storage serves the configuration
	}{
		{"a blob to public storage over https", blob(storageAt("https")), true, "", true},
		{"a blob to its own host", blob("/v2/team/app/blobs/" + cfgName.String() + "?from=redirect"), false, "", false},
		{"in a loop", func(r *http.Request) string {
			if r.URL.Path == "/v2/" {
				return ""
			}
			return r.URL.Path + "?again"
		}, false, "redirected the manager more than 10 times", false},
		{"a blob to a private address", blob(storageAt("https")), false, "resolves to a loopback, link-local, private or reserved address", false},
		{"a blob over plain HTTP", blob(storageAt("http")), true, "over plain HTTP", false},
		{"a manifest to another host", manifest(storageAt("https")), true, "redirected the manager to another host", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redirect = tc.redirect
			storageHits.Store(0)
			g := newGuard(repo.Registry, storage.Client().Transport.(*http.Transport), 0)
			resolveAs(g, "example.com")
			if tc.public {
				g.public = func(netip.Addr) bool { return true }
			}
			got, err := remote.Image(ref, remote.WithTransport(g))
			var cf *v1.ConfigFile
			if err == nil {
				cf, err = got.ConfigFile()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("reading through the redirect: %v", err)
			case tc.want == "" && cf.RootFS.Type != "layers":
				t.Errorf("configuration %+v", cf)
			case tc.want != "" && (err == nil || !strings.Contains(Explain(err, false), tc.want)):
				t.Errorf("err = %v (%s), want %q", err, Explain(err, false), tc.want)
			}
			if (storageHits.Load() > 0) != tc.storage {
				t.Errorf("the storage was reached %d times", storageHits.Load())
			}
		})
	}
}

// admit: which requests go out, and how much of their answer is read.
func TestGuard_admit(t *testing.T) {
	reg, _ := name.NewRegistry("registry.example:5000")
	g := newGuard(reg, nil, 0)
	g.learnRealms([]string{`Basic realm="registry"`, `Bearer realm="https://auth.example/token",service="registry.example"`,
		`bearer service="x", realm=http://plain.example/token`})
	req := func(method, u string, from *http.Request) *http.Request {
		r := httptest.NewRequest(method, u, nil)
		if from != nil {
			r.Response = &http.Response{Request: from}
		}
		return r
	}
	manifestGet := req("GET", "https://registry.example:5000/v2/team/app/manifests/sha256:aa", nil)
	blobGet := req("GET", "https://registry.example:5000/v2/team/app/blobs/sha256:aa", nil)
	upload := req("POST", "https://registry.example:5000/v2/team/app/blobs/uploads/", nil)
	for _, tc := range []struct {
		name  string
		req   *http.Request
		limit int64
		want  string
	}{
		{"a manifest", manifestGet, MaxManifest, ""},
		{"a blob", blobGet, MaxBlob, ""},
		{"an upload", upload, maxOther, ""},
		{"the ping, over http", req("GET", "http://registry.example:5000/v2/", nil), maxOther, ""},
		{"the token service", req("GET", "https://auth.example/token?scope=x", nil), maxOther, ""},
		{"a token service over plain HTTP", req("GET", "http://plain.example/token", nil), 0, "over plain HTTP"},
		{"another port of the registry's host", req("GET", "https://registry.example:5001/v2/", nil), 0, "neither the output registry"},
		{"an upload location elsewhere", req("PATCH", "https://uploads.example/u/1", nil), 0, "neither the output registry"},
		{"a blob redirected to storage", req("GET", "https://cdn.example/b?sig=1", blobGet), MaxBlob, ""},
		{"a blob redirected twice", req("GET", "https://cdn2.example/b", req("GET", "https://cdn.example/b?sig=1", blobGet)), MaxBlob, ""},
		{"a blob redirected over http", req("GET", "http://cdn.example/b", blobGet), 0, "over plain HTTP"},
		{"a manifest redirected elsewhere", req("GET", "https://cdn.example/m", manifestGet), 0, "redirected the manager to another host"},
		{"an upload redirected elsewhere", req("POST", "https://cdn.example/u", upload), 0, "redirected the manager to another host"},
		{"a manifest redirected to the registry", req("GET", "https://registry.example:5000/v2/team/app/manifests/x", manifestGet), MaxManifest, ""},
		{"another scheme", req("GET", "ftp://registry.example:5000/v2/", nil), 0, "not HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, err := g.admit(tc.req)
			got := ""
			if err != nil {
				got = err.Error()
				if _, ok := errors.AsType[*RefusedError](err); !ok {
					t.Errorf("err %T, want a *RefusedError", err)
				}
			}
			if limit != tc.limit || (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("admit = %d, %q; want %d, %q", limit, got, tc.limit, tc.want)
			}
		})
	}
}

func TestPublicAddr(t *testing.T) {
	var got []string
	for _, a := range []string{"127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "fe80::1%eth0",
		"fd00:ec2::254", "100.64.0.1", "0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "255.255.255.255", "::ffff:10.0.0.1",
		"64:ff9b::a9fe:a9fe", "2002:a00:1::", "198.18.0.1", "240.0.0.1", "fec0::1",
		"8.8.8.8", "2606:4700::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "104.16.0.1"} {
		if publicAddr(netip.MustParseAddr(a)) {
			got = append(got, a)
		}
	}
	if diff := cmp.Diff([]string{"8.8.8.8", "2606:4700::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "104.16.0.1"}, got); diff != "" {
		t.Errorf("public addresses (-want +got)\n%s", diff)
	}
}

// The local cluster's registry is on a loopback or bridge address: the output registry's own
// host may be any address, and its index is read and pushed as before (TestAssemble runs the
// distribution registry on 127.0.0.1). A request to another host that the registry did not
// name is refused.
func TestGuard_registryAddress(t *testing.T) {
	g := newGuard(mustRegistry(t, "127.0.0.1:5000"), nil, 0)
	for _, tc := range []struct {
		hostport string
		ok       bool
	}{
		{"127.0.0.1:5000", true}, {"127.0.0.1:80", true}, {"localhost:5000", false}, {"169.254.169.254:80", false}, {"10.0.0.1:443", false},
	} {
		_, err := g.permitted(context.Background(), tc.hostport)
		if (err == nil) != tc.ok {
			t.Errorf("permitted(%s) = %v, want allowed %v", tc.hostport, err, tc.ok)
		}
	}
}

func mustRegistry(t *testing.T, s string) name.Registry {
	t.Helper()
	r, err := name.NewRegistry(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Through a proxy of the environment: the proxy is dialled (whatever its address: it is the
// administrator's), and the target is held to the address rules before the request goes to
// it, since the guard does not dial the target itself.
func TestGuard_proxy(t *testing.T) {
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var redirectBlob atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if redirectBlob.Load() && strings.HasSuffix(r.URL.Path, "/blobs/"+cfgName.String()) {
			http.Redirect(w, r, "https://example.com:1/bucket/config", http.StatusTemporaryRedirect)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/team/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if err := remote.Write(repo.Digest(d.String()), img); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var proxied []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		proxied = append(proxied, r.Method+" "+r.Host)
		mu.Unlock()
		if r.Method == http.MethodConnect {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	proxyURL, _ := url.Parse(proxy.URL)
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.Proxy = http.ProxyURL(proxyURL)

	g := newGuard(repo.Registry, base, 0)
	got, err := remote.Image(repo.Digest(d.String()), remote.WithTransport(g))
	if err == nil {
		_, err = got.ConfigFile()
	}
	mu.Lock()
	n := len(proxied)
	mu.Unlock()
	if err != nil || n == 0 {
		t.Fatalf("reading through the proxy: %v, %d proxied requests", err, n)
	}

	redirectBlob.Store(true)
	g = newGuard(repo.Registry, base, 0)
	resolveAs(g, "example.com")
	got, err = remote.Image(repo.Digest(d.String()), remote.WithTransport(g))
	if err == nil {
		_, err = got.ConfigFile()
	}
	if err == nil || !strings.Contains(Explain(err, false), "resolves to a loopback, link-local, private or reserved address") {
		t.Errorf("a blob redirected to a private address through the proxy: %v (%s)", err, Explain(err, false))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range proxied {
		if strings.Contains(p, "example.com") {
			t.Errorf("the proxy was asked for %s", p)
		}
	}
}
