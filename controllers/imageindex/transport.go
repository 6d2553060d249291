package imageindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-dev/slipway/executor/result"
)

// The manager's calls to a build's output registry (the index push here, the signing in
// controllers/imagesign) go through a guard, NewTransport. The output registry is the
// tenant's to name (spec.output.image is free-form), so nothing it answers may turn the
// manager against its own network or fill its memory:
//
//   - Hosts. A request goes to the output registry's host, or to the token service (realm)
//     the registry named in a Bearer challenge, over https only (the push Secret's
//     credentials go there: ggcr's token flow). A redirect to any other host is refused, and
//     so is an upload location on another host, with one exception: a blob GET redirected
//     over https, as registries serve blobs from storage (Docker Hub from Cloudflare, GHCR,
//     ECR from S3), which may go to public addresses only and carries no credentials (ggcr
//     adds them for the registry's host and the realm's alone).
//   - Addresses. Each connection goes to an address the guard resolved itself, so no second
//     lookup can rebind it. The output registry's own host may resolve to any address (the
//     local cluster's registry is 127.0.0.1 or the CNI bridge's); the token service to a
//     non-public address only when the output registry resolves to one too (an in-cluster
//     registry's token service); every other host to public addresses only: not loopback,
//     link-local (cloud metadata services), private (RFC 1918, RFC 4193), shared
//     (100.64.0.0/10), unspecified, multicast or reserved (publicAddr).
//   - Sizes. An answer's body is read up to MaxManifest for a manifest, MaxBlob for a blob
//     and maxOther for anything else (pings, tokens, errors); a longer one fails the read
//     (*TooLargeError), before the manager holds more.
//   - Time. Each request, the reading of its answer's body included, ends after the
//     request timeout (RequestTimeout by default), and waits at most 30 s for the answer's
//     headers: a registry that never answers holds a job for that long, not for ever.
//
// A proxy of the environment (HTTPS_PROXY) is the administrator's: it is dialled as it is,
// and the request's target is held to the same rules before the request is sent to it (the
// proxy resolves the name again, which the guard cannot see; a name the manager cannot
// resolve itself is refused).
//
// Nothing of what a registry sends reaches a message (RegistryError): the refusals
// (*RefusedError, *TooLargeError) say in our words which host and what rule.

// Limits on what the manager reads from a registry.
const (
	// MaxManifest bounds a manifest or index (ggcr's own limit is 100 MiB).
	MaxManifest = 4 << 20
	// MaxConfig bounds an image's configuration, checked on its descriptor before it is read.
	MaxConfig = 8 << 20
	// MaxBlob bounds the body of any blob: the largest the manager reads is an attestation
	// statement (controllers/imagesign.MaxStatement).
	MaxBlob = 16 << 20
	// maxOther bounds any other answer: pings, tokens, errors.
	maxOther = 1 << 20
	// RequestTimeout is how long one request may take by default, its answer's body included.
	RequestTimeout = time.Minute
	// Connection and header timeouts of every request.
	dialTimeout           = 10 * time.Second
	tlsHandshakeTimeout   = 10 * time.Second
	responseHeaderTimeout = 30 * time.Second
)

// RefusedError is a request the guard did not make: the host it would have reached (a
// host name, shortened) and which rule refused it, in our words.
type RefusedError struct {
	Host   string
	Reason string
}

func (e *RefusedError) Error() string {
	return "the manager refused to reach " + e.Host + ": " + e.Reason
}

// TooLargeError is an answer longer than the manager reads.
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the registry's answer is larger than %s, the most the manager reads", mib(e.Limit))
}

// mib is n bytes in MiB, for messages.
func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// NewTransport returns the transport of the manager's calls to the output registry reg (see
// above). base gives the TLS configuration and the proxy (Go's default transport's when nil);
// its dialer is replaced. timeout bounds each request (RequestTimeout when zero).
func NewTransport(reg name.Registry, base *http.Transport, timeout time.Duration) http.RoundTripper {
	return newGuard(reg, base, timeout)
}

// guard is NewTransport's transport.
type guard struct {
	registryHost string // the output registry's host name, lower case
	registryPort string // its port as named, "" for the scheme's
	inner        *http.Transport
	timeout      time.Duration
	// resolve and public are net.DefaultResolver's lookup and publicAddr; tests change them.
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	public  func(netip.Addr) bool

	mu              sync.Mutex
	realms          map[string]bool // host:port of the token services the registry named
	proxies         map[string]bool // host:port of the proxies the environment named
	privateRegistry *bool           // whether the registry's host resolves to a non-public address
}

func newGuard(reg name.Registry, base *http.Transport, timeout time.Duration) *guard {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	if timeout <= 0 {
		timeout = RequestTimeout
	}
	u := url.URL{Host: reg.RegistryStr()}
	g := &guard{registryHost: strings.ToLower(u.Hostname()), registryPort: u.Port(), timeout: timeout,
		resolve: lookup, public: publicAddr, realms: map[string]bool{}, proxies: map[string]bool{}}
	t := base.Clone()
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	t.DialContext = g.dialer(d)
	t.DialTLSContext = nil
	t.Dial, t.DialTLS = nil, nil //nolint:staticcheck // cleared so that DialContext is the only way out
	if proxy := t.Proxy; proxy != nil {
		t.Proxy = func(req *http.Request) (*url.URL, error) {
			p, err := proxy(req)
			if err != nil || p == nil {
				return p, err
			}
			// The proxy connects to the target: hold the target to the address rules here.
			if _, err := g.permitted(req.Context(), hostPort(req.URL)); err != nil {
				return nil, err
			}
			g.mu.Lock()
			g.proxies[hostPort(p)] = true
			g.mu.Unlock()
			return p, nil
		}
	}
	t.TLSHandshakeTimeout = tlsHandshakeTimeout
	t.ResponseHeaderTimeout = min(responseHeaderTimeout, timeout)
	t.ExpectContinueTimeout = time.Second
	t.MaxResponseHeaderBytes = 64 << 10
	g.inner = t
	return g
}

// lookup resolves host: an IP address is itself.
func lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// hostPort is u's host:port, the host in lower case, the port the scheme's when u names none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// isRegistry reports whether u is on the output registry's host and port (either scheme's
// default port when it names none: ggcr tries https, then http, for an insecure registry).
func (g *guard) isRegistry(u *url.URL) bool {
	if !strings.EqualFold(u.Hostname(), g.registryHost) {
		return false
	}
	if g.registryPort == "" {
		return u.Port() == "" || u.Port() == "443" || u.Port() == "80"
	}
	_, port, _ := net.SplitHostPort(hostPort(u))
	return port == g.registryPort
}

func (g *guard) isRealm(hostport string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.realms[hostport]
}

// realmParam is the realm of a WWW-Authenticate challenge (RFC 6750: realm="...").
var realmParam = regexp.MustCompile(`(?i)(?:^|[\s,])realm\s*=\s*(?:"([^"]*)"|([^\s,]+))`)

// learnRealms records the token services that Bearer challenges of the registry name.
func (g *guard) learnRealms(challenges []string) {
	for _, c := range challenges {
		scheme, params, _ := strings.Cut(strings.TrimSpace(c), " ")
		if !strings.EqualFold(scheme, "bearer") {
			continue
		}
		m := realmParam.FindStringSubmatch(params)
		if m == nil {
			continue
		}
		u, err := url.Parse(m[1] + m[2])
		if err != nil || u.Host == "" {
			continue
		}
		g.mu.Lock()
		if len(g.realms) < 8 {
			g.realms[hostPort(u)] = true
		}
		g.mu.Unlock()
	}
}

// registryIsPrivate reports whether the output registry's host resolves to a non-public
// address (once per guard).
func (g *guard) registryIsPrivate(ctx context.Context) bool {
	g.mu.Lock()
	if p := g.privateRegistry; p != nil {
		g.mu.Unlock()
		return *p
	}
	g.mu.Unlock()
	addrs, err := g.resolve(ctx, g.registryHost)
	private := false
	for _, a := range addrs {
		private = private || !g.public(a)
	}
	if err != nil {
		return false // not remembered: the next lookup may answer
	}
	g.mu.Lock()
	g.privateRegistry = &private
	g.mu.Unlock()
	return private
}

// firstRequest is the request req was redirected from, first of all, and how many redirects
// led from it to req.
func firstRequest(req *http.Request) (*http.Request, int) {
	hops := 0
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
		hops++
	}
	return req, hops
}

// maxRedirects bounds the redirects of one request: ggcr's redirect check (checkRedirectSSRF)
// replaces Go's default, and with it the default's limit of 10, so a registry that redirects
// to itself would hold the manager until the job's deadline.
const maxRedirects = 10

// bodyLimit is how much of the answer to a request to the registry of path is read.
func bodyLimit(path string) int64 {
	switch {
	case strings.Contains(path, "/manifests/"):
		return MaxManifest
	case strings.Contains(path, "/blobs/") && !strings.Contains(path, "/blobs/uploads/"):
		return MaxBlob
	}
	return maxOther
}

// admit decides whether req may go out (the host rules) and how much of its answer is read.
func (g *guard) admit(req *http.Request) (int64, error) {
	u := req.URL
	first, hops := firstRequest(req)
	limit := int64(maxOther)
	if g.isRegistry(first.URL) {
		limit = bodyLimit(first.URL.Path)
	}
	host := result.Excerpt(u.Hostname(), 100)
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return 0, &RefusedError{Host: host, Reason: fmt.Sprintf("the scheme %q is not HTTP", result.Excerpt(u.Scheme, 16))}
	case hops > maxRedirects:
		return 0, &RefusedError{Host: host, Reason: fmt.Sprintf("the registry redirected the manager more than %d times", maxRedirects)}
	case g.isRegistry(u):
		return limit, nil
	case g.isRealm(hostPort(u)):
		if u.Scheme != "https" {
			return 0, &RefusedError{Host: host, Reason: "the registry's token service is on another host over plain HTTP, " +
				"where the credentials would travel unencrypted; the manager takes tokens over https only"}
		}
		return limit, nil
	case req.Response != nil && req.Method == http.MethodGet && g.isRegistry(first.URL) && bodyLimit(first.URL.Path) == MaxBlob:
		if u.Scheme != "https" {
			return 0, &RefusedError{Host: host, Reason: "the registry redirected a blob to another host over plain HTTP; the manager follows such redirects over https only"}
		}
		return MaxBlob, nil
	case req.Response != nil:
		return 0, &RefusedError{Host: host, Reason: "the registry redirected the manager to another host, which it does not follow " +
			"(it follows redirects to the output registry, its token service, and of blobs to public hosts over https)"}
	}
	return 0, &RefusedError{Host: host, Reason: "it is neither the output registry nor the token service the registry named"}
}

// RoundTrip sends req if admit lets it, with the request timeout, and bounds its answer's body.
func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	limit, err := g.admit(req)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	ctx, cancel := context.WithTimeout(req.Context(), g.timeout)
	resp, err := g.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && g.isRegistry(req.URL) {
		g.learnRealms(resp.Header.Values("WWW-Authenticate"))
	}
	if req.Method != http.MethodHead && resp.ContentLength > limit {
		resp.Body.Close()
		cancel()
		return nil, &TooLargeError{Limit: limit}
	}
	resp.Body = &boundedBody{rc: resp.Body, left: limit, limit: limit, cancel: cancel}
	return resp, nil
}

// boundedBody is an answer's body of at most limit bytes; closing it ends its request's
// timeout.
type boundedBody struct {
	rc          io.ReadCloser
	left, limit int64
	cancel      context.CancelFunc
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte tells a body of exactly limit bytes from a longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, &TooLargeError{Limit: b.limit}
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// dialer connects to an address of addr's host that permitted allows.
func (g *guard) dialer(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		g.mu.Lock()
		proxy := g.proxies[strings.ToLower(addr)]
		g.mu.Unlock()
		if proxy {
			return d.DialContext(ctx, network, addr)
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		addrs, err := g.permitted(ctx, addr)
		if err != nil {
			return nil, err
		}
		var errs []error
		for _, a := range addrs {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
}

// permitted resolves the host of hostport and returns the addresses a connection to it may
// use: any for the output registry's host, non-public ones for its token service when the
// registry's host resolves to one too, else public ones only. None is a *RefusedError.
func (g *guard) permitted(ctx context.Context, hostport string) ([]netip.Addr, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	host = strings.ToLower(host)
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	if host == g.registryHost {
		return addrs, nil
	}
	anyAddr := g.isRealm(strings.ToLower(hostport)) && g.registryIsPrivate(ctx)
	var out []netip.Addr
	for _, a := range addrs {
		if anyAddr || g.public(a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &RefusedError{Host: result.Excerpt(host, 100), Reason: "it resolves to a loopback, link-local, private or reserved address, " +
			"which the manager connects to only for the output registry (and its token service, when the registry's address is one too)"}
	}
	return out, nil
}

// Address ranges that are not public besides those netip classifies (loopback, link-local,
// multicast, unspecified, RFC 1918 and RFC 4193 private).
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (carrier-grade NAT; some clusters' pods)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

// IPv6 prefixes that carry an IPv4 address: NAT64 (RFC 6052) and 6to4 (RFC 3056).
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// publicAddr reports whether a is a public unicast address; an IPv4 address in IPv6 (mapped,
// NAT64, 6to4) is judged as itself.
func publicAddr(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return publicAddr(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return publicAddr(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
