package publish

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// SupportsReferrers asks repo's registry whether it has the OCI 1.1
// referrers API: GET /v2/<repo>/referrers/<subject>, which such a registry
// answers with an OCI image index (empty when nothing refers to subject),
// and one without answers 404 (the distribution spec's test), or 400/405.
// With the API, a manifest pushed with a subject is listed by the
// registry itself; without it, nothing is written here (no referrers tag
// of the fallback scheme, as BuildKit writes none).
func SupportsReferrers(ctx context.Context, repo name.Repository, subject v1.Hash, o RegistryOptions) (bool, error) {
	auth, err := authn.Resolve(ctx, o.keychain(), repo)
	if err != nil {
		return false, fmt.Errorf("resolving credentials for %s: %w", repo, err)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, o.transport(repo.Registry, true), []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return false, fmt.Errorf("asking %s for its referrers API: %w", repo.RegistryStr(), err)
	}
	u := url.URL{Scheme: repo.Registry.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/referrers/%s", repo.RepositoryStr(), subject)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return false, fmt.Errorf("asking %s for its referrers API: %w", repo.RegistryStr(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusOK:
		return strings.HasPrefix(resp.Header.Get("Content-Type"), string(types.OCIImageIndex)), nil
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusMethodNotAllowed:
		return false, nil
	}
	return false, fmt.Errorf("asking %s for its referrers API: HTTP %d", repo.RegistryStr(), resp.StatusCode)
}

// KeychainSecrets are the secret values of a keychain LoadKeychain read
// from a Docker config file: every password, auth, identity token and
// registry token in it, so that the executor can make sure that none
// reaches what it publishes (executor/attest's Redact). Other keychains
// (DefaultKeychain's fallback, credential helpers) give none.
func KeychainSecrets(kc authn.Keychain) [][]byte {
	mk, ok := kc.(memoryKeychain)
	if !ok || mk.cf == nil {
		return nil
	}
	var out [][]byte
	for _, a := range mk.cf.AuthConfigs {
		for _, v := range []string{a.Password, a.Auth, a.IdentityToken, a.RegistryToken} {
			if v != "" {
				out = append(out, []byte(v))
			}
		}
	}
	return out
}

// PushReferrer pushes img, a manifest with a subject, to ref by digest,
// for a registry SupportsReferrers says has the referrers API: the
// registry lists it. It never writes a referrers tag of the fallback
// scheme (go-containerregistry would, with a shared client made without
// saying otherwise), so a registry that turns out to lack the API fails
// the push instead.
func PushReferrer(ctx context.Context, ref name.Digest, img v1.Image, o RegistryOptions) error {
	o.clients = nil
	opts := append(o.Remote(ctx, ref, true), remote.WithReferrersTagFallback(false))
	return withRetries(ctx, o.Retries, func() error { return remote.Write(ref, img, opts...) })
}
