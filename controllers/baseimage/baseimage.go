// Package baseimage tells whether the base images a build read have moved
// since: the security-patch case of spec.triggers.baseImages, where a tag
// such as debian:bookworm or gcr.io/distroless/static is re-pushed with
// fixes and the image built on it should be rebuilt.
//
// The executor's result names each base (FROM, COPY --from and RUN --mount
// from= images) with the digest its reference resolved to when the build
// pulled it (executor/result.Base): the digest the registry gave for the
// tag, an index's for a multi-platform tag. Check asks the registry the
// same question again with one HEAD request per reference (the digest is
// the Docker-Content-Digest header; no manifest or layer is downloaded, and
// Docker Hub does not count HEAD requests against its pull limit) and
// reports those whose digest differs.
//
// Comparing the tag's digest means that a multi-platform tag whose index
// changed for another platform only counts as moved: telling that apart
// would need the index itself (a GET, which Docker Hub counts as a pull)
// at every check. The rebuild it causes finds its own platform's base
// unchanged, so the layer cache serves it.
//
// A base given by digest (FROM debian@sha256:…) never moves and is not
// checked. Registry credentials come from a Secret of type
// kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg (Keychain),
// and go only to the registry they are given for; credential helpers and
// stores the file names are never run.
package baseimage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/slipway-dev/slipway/controllers/imageindex"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-dev/slipway/executor/result"
)

// Base is a base image of a build: its reference and the digest it
// resolved to then.
type Base struct {
	// Ref is the reference as the executor's result names it
	// ("docker.io/library/debian:bookworm").
	Ref string
	// Digest is what Ref resolved to when the build pulled it: the tag's
	// digest (an index's for a multi-platform tag).
	Digest string
}

// FromResult is the bases of an executor's result.
func FromResult(bases []result.Base) []Base {
	out := make([]Base, 0, len(bases))
	for _, b := range bases {
		out = append(out, Base{Ref: b.Ref, Digest: b.Digest})
	}
	return out
}

// Moved is a base whose reference resolves to another digest now.
type Moved struct {
	Ref string
	// Built is the digest the build used; Now is the reference's digest
	// now.
	Built, Now string
}

// Options configure Check. Zero values are the defaults.
type Options struct {
	// Keychain gives the credentials of each registry (Keychain makes one
	// from a Secret). The default is anonymous.
	Keychain authn.Keychain
	// Timeout bounds the check of one reference, from the connection to
	// the answer, the token exchange included. The default is 20 seconds.
	Timeout time.Duration
	// Insecure are registries (host or host:port) reached over plain
	// HTTP, as the executor's --insecure-registry. Go-containerregistry
	// uses plain HTTP for localhost and private addresses anyway.
	Insecure []string
	// MaxConcurrent bounds how many references are checked at once. The
	// default is 4.
	MaxConcurrent int
	// Transport is the HTTP transport. The default is the manager's guard
	// of calls to tenant-named registries (imageindex.NewTransport), one
	// per registry over Go's default transport with a 20-second response
	// header timeout: requests go only to the base's registry and the
	// token service it names, no redirect elsewhere, no private address
	// but the registry's own, bounded answers.
	Transport http.RoundTripper
}

// defaultBase is what the guarded transports of checks without a
// Transport of their own are made from; connections are reused from one
// check to the next.
var defaultBase = sync.OnceValue(func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 20 * time.Second
	return t
})

// Check asks the registry of each base what its reference resolves to now
// (one HEAD request each, and the registry's authentication exchange) and
// returns the bases whose digest moved, in the order given. A base given
// by digest, or without a recorded Digest, is not checked; a reference
// named several times is asked once. A base that cannot be checked (its
// registry unreachable or slow, credentials refused, the tag gone) is an
// error naming its reference, joined with the others' (errors.Join); the
// other bases are checked all the same, and Moved lists those that moved.
func Check(ctx context.Context, bases []Base, o Options) ([]Moved, error) {
	if o.Keychain == nil {
		o.Keychain = authn.NewMultiKeychain() // anonymous
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	var refs []string
	for _, b := range bases {
		if b.Digest != "" && !strings.Contains(b.Ref, "@") && !slices.Contains(refs, b.Ref) {
			refs = append(refs, b.Ref)
		}
	}
	now := make([]string, len(refs))
	errs := make([]error, len(refs))
	var g errgroup.Group
	g.SetLimit(o.MaxConcurrent)
	for i, ref := range refs {
		g.Go(func() error {
			now[i], errs[i] = head(ctx, ref, o)
			return nil
		})
	}
	g.Wait()
	digests := map[string]string{}
	for i, ref := range refs {
		if errs[i] == nil {
			digests[ref] = now[i]
		}
	}
	var moved []Moved
	for _, b := range bases {
		if d, ok := digests[b.Ref]; ok && d != b.Digest {
			moved = append(moved, Moved{Ref: b.Ref, Built: b.Digest, Now: d})
		}
	}
	return moved, errors.Join(errs...)
}

// head is the digest ref resolves to now, from a HEAD request.
func head(ctx context.Context, ref string, o Options) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("checking base image %s: %w", ref, err)
	}
	if slices.Contains(o.Insecure, r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return "", fmt.Errorf("checking base image %s: %w", ref, err)
		}
	}
	hctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	auth, err := o.Keychain.Resolve(r.Context())
	if err != nil {
		return "", fmt.Errorf("checking base image %s: finding its registry's credentials: %w", ref, err)
	}
	tr := o.Transport
	if tr == nil {
		tr = imageindex.NewTransport(r.Context().Registry, defaultBase(), o.Timeout)
	}
	desc, err := remote.Head(r, remote.WithContext(hctx), remote.WithAuth(auth), remote.WithTransport(tr))
	if err != nil {
		if ctx.Err() == nil && hctx.Err() != nil {
			return "", fmt.Errorf("checking base image %s: no answer within %s", ref, o.Timeout)
		}
		return "", fmt.Errorf("checking base image %s: %s: %w", ref, explain(err, auth != authn.Anonymous), err)
	}
	return desc.Digest.String(), nil
}

// explain says in words what a registry's refusal means.
func explain(err error, withAuth bool) string {
	var te *transport.Error
	var ne net.Error
	switch {
	case errors.As(err, &ne):
		return "the registry is unreachable"
	case !errors.As(err, &te):
		return "the registry's answer is not usable"
	}
	switch code := te.StatusCode; {
	case code == http.StatusUnauthorized && withAuth:
		return "the registry refused the credentials"
	case code == http.StatusUnauthorized:
		return "the registry requires credentials (a pull secret)"
	case code == http.StatusForbidden:
		return "the registry refused access"
	case code == http.StatusNotFound:
		return "the registry has no such tag or repository now"
	case code == http.StatusTooManyRequests:
		return "the registry limits the rate of requests"
	case code >= 500:
		return "the registry failed"
	}
	return "unexpected answer"
}
