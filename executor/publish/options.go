// Package publish writes the outputs of a finished build: it pushes a
// v1.Image to every destination and writes the tarball, OCI layout and
// digest files that kaniko's --tar-path, --oci-layout-path, --digest-file
// and --image-name-with-digest-file ask for. Building never pushes; only
// this package talks to a registry on the way out.
//
// RegistryOptions also carries the registry settings that pulls use
// (insecure registries, TLS verification, credentials), so every remote
// call of the executor is configured in one place.
package publish

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryOptions are the registry settings shared by pulls and pushes,
// named after kaniko's flags.
type RegistryOptions struct {
	// Insecure (--insecure) lets pushes use plain HTTP to any registry.
	Insecure bool
	// InsecurePull (--insecure-pull) lets pulls use plain HTTP to any registry.
	InsecurePull bool
	// InsecureRegistries (--insecure-registry, repeatable) are host[:port]
	// names that pulls and pushes may reach over plain HTTP.
	InsecureRegistries []string
	// SkipTLSVerify (--skip-tls-verify) accepts any certificate on pushes.
	SkipTLSVerify bool
	// SkipTLSVerifyPull (--skip-tls-verify-pull) accepts any certificate on pulls.
	SkipTLSVerifyPull bool
	// SkipTLSVerifyRegistries (--skip-tls-verify-registry, repeatable) are
	// host[:port] names whose certificates are not verified.
	SkipTLSVerifyRegistries []string
	// Mirrors (--registry-mirror, repeatable) are registries, as host[:port]
	// with an optional path prefix, tried in order for pulls of images on
	// Docker Hub (index.docker.io) before Docker Hub itself, as kaniko's
	// flag of that name: busybox from a mirror "m:5000/hub" is pulled as
	// m:5000/hub/library/busybox. Pushes never use them.
	Mirrors []string
	// SkipDefaultRegistryFallback (--skip-default-registry-fallback): a pull
	// that no mirror answers fails instead of going to Docker Hub.
	SkipDefaultRegistryFallback bool
	// Retries (--push-retry) is how many more times a failed push to one
	// destination is tried, with exponential backoff starting at one
	// second. The default, 0, tries once; transient HTTP errors (5xx, 429,
	// resets) are also retried within an attempt, as go-containerregistry does.
	Retries int
	// Keychain resolves credentials. The default is DefaultKeychain: the
	// Docker config file where kaniko looks for it.
	Keychain authn.Keychain
	// Jobs is how many blobs are uploaded or downloaded at once per
	// repository. The default, 0, is go-containerregistry's (4).
	Jobs int
	// Trace, when set, gets a line for every registry request: its method,
	// host and path (never its query or headers, which may carry tokens),
	// the response status and how long it took. --verbosity=trace sets it.
	Trace io.Writer

	clients *clients
	cache   *cacheCalls // the limits of a cache's calls (ForCache), nil for others
}

// clients are the shared go-containerregistry clients of Share, by
// registry and direction.
type clients struct {
	mu      sync.Mutex
	pullers map[string]*remote.Puller
	pushers map[string]*remote.Pusher
}

// Share makes the Remote options of every later call reuse one client per
// registry and direction (go-containerregistry's Puller and Pusher). A
// client pings its registry and exchanges a token once per repository, and
// a Pusher uploads a blob once however many images hold it, where separate
// calls would each start over. A build shares its clients from start to end.
func (o *RegistryOptions) Share() {
	o.clients = &clients{pullers: map[string]*remote.Puller{}, pushers: map[string]*remote.Pusher{}}
}

// retryDelay is the first wait between push attempts and between
// retries of transient HTTP errors; tests shorten it.
var retryDelay = time.Second

// insecure reports whether reg may be reached over plain HTTP.
func (o RegistryOptions) insecure(reg name.Registry, forPush bool) bool {
	if (forPush && o.Insecure) || (!forPush && o.InsecurePull) {
		return true
	}
	return listed(o.InsecureRegistries, reg)
}

// skipVerify reports whether reg's TLS certificate is accepted unverified.
func (o RegistryOptions) skipVerify(reg name.Registry, forPush bool) bool {
	if (forPush && o.SkipTLSVerify) || (!forPush && o.SkipTLSVerifyPull) {
		return true
	}
	return listed(o.SkipTLSVerifyRegistries, reg)
}

// listed reports whether reg is one of hosts, comparing normalised names
// so that "docker.io" matches "index.docker.io".
func listed(hosts []string, reg name.Registry) bool {
	return slices.ContainsFunc(hosts, func(h string) bool {
		r, err := name.NewRegistry(h, name.WeakValidation)
		if err != nil {
			return h == reg.RegistryStr()
		}
		return r.RegistryStr() == reg.RegistryStr()
	})
}

func (o RegistryOptions) keychain() authn.Keychain {
	if o.Keychain != nil {
		return o.Keychain
	}
	return DefaultKeychain
}

var (
	skipVerifyOnce      sync.Once
	skipVerifyTransport http.RoundTripper
)

// transport returns the shared HTTP transport for reg, so that connections
// are reused between the permission check, pulls and pushes.
func (o RegistryOptions) transport(reg name.Registry, forPush bool) http.RoundTripper {
	t := remote.DefaultTransport
	if o.skipVerify(reg, forPush) {
		skipVerifyOnce.Do(func() {
			t := remote.DefaultTransport.(*http.Transport).Clone()
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by --skip-tls-verify
			skipVerifyTransport = t
		})
		t = skipVerifyTransport
	}
	if o.Trace != nil {
		return traceTransport{w: o.Trace, inner: t}
	}
	return t
}

// traceTransport writes a line per request to w.
type traceTransport struct {
	w     io.Writer
	inner http.RoundTripper
}

func (t traceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.inner.RoundTrip(req)
	status := ""
	if err != nil {
		status = "error"
	} else {
		status = strconv.Itoa(resp.StatusCode)
	}
	fmt.Fprintf(t.w, "%s registry: %s %s%s -> %s in %.1fms\n", start.Format("15:04:05.000"), req.Method, req.URL.Host, req.URL.Path, status,
		float64(time.Since(start).Microseconds())/1000)
	return resp, err
}

// Remote returns the options of a remote call (pull when forPush is false)
// to ref's registry: credentials from the keychain, the transport that
// the TLS settings ask for, the number of jobs, retries of transient
// errors, and ctx; for a cache's calls (ForCache), its timeout and retries.
func (o RegistryOptions) Remote(ctx context.Context, ref name.Reference, forPush bool) []remote.Option {
	reg := ref.Context().Registry
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(o.keychain()),
		remote.WithTransport(o.bounded(o.transport(reg, forPush), reg.RegistryStr())),
		remote.WithUserAgent("slipway"),
		remote.WithRetryBackoff(o.backoff()),
	}
	if o.Jobs > 0 {
		opts = append(opts, remote.WithJobs(o.Jobs))
	}
	if o.clients != nil {
		if reuse, ok := o.clients.reuse(reg.RegistryStr(), forPush, opts); ok {
			opts = append(opts, reuse)
		}
	}
	return opts
}

// reuse returns the option that reuses the client of reg for pushes or
// pulls, made with opts the first time. It reports false when no client
// could be made; each call then makes its own, and reports the error.
func (c *clients) reuse(reg string, forPush bool, opts []remote.Option) (remote.Option, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if forPush {
		return reuseOf(c.pushers, reg, remote.NewPusher, opts)
	}
	return reuseOf(c.pullers, reg, remote.NewPuller, opts)
}

// reuseOf is reuse for one kind of client, kept in made.
func reuseOf[C *remote.Puller | *remote.Pusher](made map[string]C, reg string, newClient func(...remote.Option) (C, error), opts []remote.Option) (remote.Option, bool) {
	cl, ok := made[reg]
	if !ok {
		var err error
		if cl, err = newClient(opts...); err != nil {
			return nil, false
		}
		made[reg] = cl
	}
	return remote.Reuse(cl), true
}

// PullReferences returns the references a pull of s tries, in order: for an
// image on Docker Hub, the same repository and tag or digest on each mirror,
// then Docker Hub unless SkipDefaultRegistryFallback; otherwise s alone.
// A digest pulled from a mirror is still checked against the digest s names
// (go-containerregistry verifies what it fetches by digest), so a mirror can
// serve only what Docker Hub would for a digest reference; for a tag it is
// trusted as the operator's choice of registry.
func PullReferences(s string, o RegistryOptions) ([]name.Reference, error) {
	ref, err := ParseReference(s, o, false)
	if err != nil {
		return nil, err
	}
	if ref.Context().RegistryStr() != name.DefaultRegistry || len(o.Mirrors) == 0 {
		return []name.Reference{ref}, nil
	}
	var refs []name.Reference
	for _, m := range o.Mirrors {
		m = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(m, "https://"), "http://"), "/")
		in := m + "/" + ref.Context().RepositoryStr()
		if d, ok := ref.(name.Digest); ok {
			in += "@" + d.DigestStr()
		} else {
			in += ":" + ref.Identifier()
		}
		mref, err := ParseReference(in, o, false)
		if err != nil {
			return nil, fmt.Errorf("registry mirror %q: %w", m, err)
		}
		refs = append(refs, mref)
	}
	if !o.SkipDefaultRegistryFallback {
		refs = append(refs, ref)
	}
	return refs, nil
}

// ParseReference parses s as a tag or digest reference (a missing tag is
// "latest"); when o lets its registry be reached over plain HTTP for a
// push (forPush) or a pull, the reference says so, and go-containerregistry
// then falls back to HTTP, as a registry on 127.0.0.1:PORT needs.
func ParseReference(s string, o RegistryOptions, forPush bool) (name.Reference, error) {
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("parsing reference %q: %w", s, err)
	}
	if !o.insecure(ref.Context().Registry, forPush) {
		return ref, nil
	}
	ref, err = name.ParseReference(s, name.WeakValidation, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("parsing reference %q: %w", s, err)
	}
	return ref, nil
}
