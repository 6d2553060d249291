package publish

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// CheckPush verifies, before anything is built, that every destination
// repository accepts a push with the credentials o resolves: it starts a
// blob upload in each and cancels it, as kaniko does. Each repository is
// checked once. Errors name the reference, never the credentials.
func CheckPush(ctx context.Context, refs []name.Reference, o RegistryOptions) error {
	seen := map[string]bool{}
	var g errgroup.Group
	for _, ref := range refs {
		repo := ref.Context().String()
		if seen[repo] {
			continue
		}
		seen[repo] = true
		g.Go(func() error {
			t := ctxTransport{ctx: ctx, inner: transport.NewRetry(o.transport(ref.Context().Registry, true),
				transport.WithRetryBackoff(remote.Backoff{Duration: retryDelay, Factor: 3, Jitter: 0.1, Steps: 3}))}
			if err := remote.CheckPushPermission(ref, o.keychain(), t); err != nil {
				return fmt.Errorf("checking push permission for %s: %w", ref, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// ctxTransport gives every request ctx, for calls of go-containerregistry
// that take no context.
type ctxTransport struct {
	ctx   context.Context
	inner http.RoundTripper
}

func (t ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.inner.RoundTrip(req.WithContext(t.ctx))
}

// Artifact is what a build publishes: an image (v1.Image), or an image
// index of the images of several platforms (v1.ImageIndex, see Index).
type Artifact interface {
	MediaType() (types.MediaType, error)
	RawManifest() ([]byte, error)
	Digest() (v1.Hash, error)
}

// Push pushes img (an image, or an index with its images) to every
// destination in refs and returns, in the order of refs, each
// destination's repository with its digest (repo@sha256:...). An index's
// images go up first, by digest, then the index.
//
// It works in two phases so that nothing half-pushed is ever tagged. First
// the image is pushed by digest to every distinct repository at once, its
// blobs uploaded in parallel (o.Jobs per repository) and its manifest
// last. Only when every repository holds the whole image are the tags
// written, which costs one manifest PUT each. When every destination is
// in one repository, the first phase is left out: a tag's manifest goes
// up only after all the blobs, which is all it guarded. A destination
// given by digest must name img's digest.
//
// Each step is tried 1+o.Retries times with exponential backoff; errors
// that another attempt cannot fix (401, 403, 404 and other client errors,
// a cancelled ctx) are returned at once.
//
// Layers that can be read only once (stream.Layer) cannot be pushed to
// more than one repository.
func Push(ctx context.Context, img Artifact, refs []name.Reference, o RegistryOptions) ([]string, error) {
	return push(ctx, img, refs, o, true)
}

// PushByDigest pushes img (an image or an index) to the repository of
// every destination in refs by digest only, as BuildKit's image exporter
// does with push-by-digest=true: no tag is written (whoever assembles the
// platforms' images into an index tags that), and the tag of a
// destination only names its repository. It returns repo@digest for each
// destination, in the order of refs.
func PushByDigest(ctx context.Context, img Artifact, refs []name.Reference, o RegistryOptions) ([]string, error) {
	return push(ctx, img, refs, o, false)
}

func push(ctx context.Context, img Artifact, refs []name.Reference, o RegistryOptions, tag bool) ([]string, error) {
	if len(refs) == 0 {
		return nil, errors.New("pushing: no destination")
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("computing image digest: %w", err)
	}

	type repoPush struct {
		repo   name.Repository
		first  name.Reference // whose options the repository is pushed with
		pusher *remote.Pusher
	}
	repos := map[string]*repoPush{}
	var order []*repoPush
	out := make([]string, len(refs))
	var tags []name.Reference
	for i, ref := range refs {
		out[i] = ref.Context().Digest(digest.String()).String()
		if d, ok := ref.(name.Digest); ok && d.DigestStr() != digest.String() {
			return nil, fmt.Errorf("pushing %s: the image digest is %s", ref, digest)
		}
		key := ref.Context().String()
		if _, ok := repos[key]; !ok {
			rp := &repoPush{repo: ref.Context(), first: ref}
			repos[key] = rp
			order = append(order, rp)
		}
		if _, ok := ref.(name.Tag); ok && tag {
			tags = append(tags, ref)
		}
	}

	// With a single repository, the PUT of a tag's manifest comes only
	// after every blob, as the PUT by digest would: the image is pushed
	// once, under its first tag, and the push by digest is left out.
	byTagOnly := len(order) == 1 && len(tags) > 0

	g, gctx := errgroup.WithContext(ctx)
	for _, rp := range order {
		p, err := remote.NewPusher(o.Remote(gctx, rp.first, true)...)
		if err != nil {
			return nil, fmt.Errorf("pushing %s: %w", rp.first, err)
		}
		rp.pusher = p
		if byTagOnly {
			break
		}
		byDigest := rp.repo.Digest(digest.String())
		g.Go(func() error {
			err := withRetries(gctx, o.Retries, func() error {
				return rp.pusher.Push(gctx, byDigest, img)
			})
			if err != nil {
				return fmt.Errorf("pushing %s: %w", byDigest, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	g, gctx = errgroup.WithContext(ctx)
	for _, tag := range tags {
		rp := repos[tag.Context().String()]
		g.Go(func() error {
			err := withRetries(gctx, o.Retries, func() error {
				return rp.pusher.Push(gctx, tag, img)
			})
			if err != nil {
				return fmt.Errorf("tagging %s: %w", tag, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// withRetries calls f until it succeeds, up to 1+retries times, waiting
// retryDelay, then twice as long each time, between attempts.
func withRetries(ctx context.Context, retries int, f func() error) error {
	delay := retryDelay
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || attempt >= retries || !retryable(ctx, err) {
			return err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return err
		}
		delay *= 2
	}
}

// retryable reports whether another attempt might succeed where err failed.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode >= 400 && te.StatusCode < 500 {
		return te.StatusCode == http.StatusRequestTimeout || te.StatusCode == http.StatusTooManyRequests
	}
	return true
}
