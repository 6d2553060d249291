// Package imageindex assembles the image index of a multi-platform build (spec.platforms):
// each platform's executor pod pushes its image by digest, with no tag, and Assemble reads
// each pushed manifest's descriptor and configuration back from the registry, checks that it
// is an image of the platform it was built for, and pushes one index naming them all under
// the build's tags. Nothing but manifests and configurations is read, and nothing but the
// index is written (its manifests are in the repository already).
//
// A platform's pod that attached attestations (provenance, SBOM) pushed an index of its own:
// its image and the attestation manifest about it, in BuildKit's layout (the attestation
// manifest's descriptor has platform unknown/unknown and the annotations
// vnd.docker.reference.type=attestation-manifest and vnd.docker.reference.digest=<image>).
// Assemble then flattens: the build's index names every platform's image, then every
// platform's attestation manifest, each descriptor with the annotations the platform's index
// gave it, as BuildKit lays out the index of a multi-platform build with attestations
// (exporter/containerimage: images first, then their attestation manifests).
//
// The index is a Docker manifest list when every manifest is a Docker one (the executor's
// default without attestations, as kaniko's; docker buildx pushes the same for Docker
// manifests), else an OCI image index. Registry credentials come from the ImageBuild's push
// Secret (the caller reads it from the ImageBuild's own namespace) and go to the output
// repository's registry, and to the token service it names (over https), only.
//
// The registry is the tenant's to name: every call goes through the guard of transport.go
// (hosts, addresses, sizes, time), manifests are read up to MaxManifest and configurations
// of at most MaxConfig bytes (their descriptors' sizes checked before they are read), and no
// error's text holds anything the registry sent (RegistryError).
package imageindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	specs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/result"
)

// Manifest is one platform's pushed image.
type Manifest struct {
	// Platform is the platform it was built for, os/arch[/variant] (spec.platforms).
	Platform string
	// Digest is its manifest's digest, as the executor reported it (sha256:...). With Index
	// it may be empty: the image is then the one the platform's index holds.
	Digest string
	// Index, when set, is the digest of the index the platform's pod pushed: its image (which
	// must be Digest's, when Digest is set) and the attestation manifests about it, nothing
	// else. Both go into the build's index.
	Index string
}

// Attestation annotations and platform of BuildKit's layout (exporter/containerimage,
// util/attestation).
const (
	AnnotationReferenceType   = "vnd.docker.reference.type"
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	ReferenceTypeAttestation  = "attestation-manifest"
)

// IsAttestation reports whether d is the descriptor of an attestation manifest in an index
// of BuildKit's layout.
func IsAttestation(d v1.Descriptor) bool {
	return d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation
}

// maxPlatformAttestations bounds the attestation manifests about one platform's image: one,
// as BuildKit writes.
const maxPlatformAttestations = 1

// Request is an index to assemble and push.
type Request struct {
	// Repository is the output repository, [registry/]path (the output image without its
	// tag); the manifests were pushed there by digest.
	Repository string
	// Tags are the tags the index is pushed under, the output image's first.
	Tags []string
	// Manifests are the platforms' images, in the index's order.
	Manifests []Manifest
	// Keychain gives the registry's credentials; anonymous when nil.
	Keychain authn.Keychain
	// Insecure reaches the registry over plain HTTP (output.insecure).
	Insecure bool
	// Transport gives the TLS configuration and proxy of the calls (Go's default transport's
	// when nil); they go through NewTransport's guard, which replaces its dialer.
	Transport *http.Transport
	// RequestTimeout bounds each request to the registry; RequestTimeout when zero.
	RequestTimeout time.Duration
}

// Result is the pushed index.
type Result struct {
	// Digest of the index (sha256:...).
	Digest string
	// MediaType of the index: a Docker manifest list or an OCI image index.
	MediaType types.MediaType
	// References are repository:tag@digest for each tag.
	References []string
}

// InvalidError is an index that cannot be made from what the platforms pushed: a digest
// that is none, a manifest that is not an image's, an image of another platform. Running the
// same build again would not help.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Assemble reads each manifest's descriptor and configuration from req.Repository, builds
// the index (platforms from the images' configurations, which must name the platform each
// was built for), and pushes it under every tag. Errors say what was being done and name
// references, never credentials; an *InvalidError is the pushed images' fault.
func Assemble(ctx context.Context, req Request) (Result, error) {
	if len(req.Manifests) == 0 || len(req.Tags) == 0 {
		return Result{}, invalid("an index needs at least one manifest and one tag")
	}
	var nopts []name.Option
	if req.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	repo, err := name.NewRepository(req.Repository, nopts...)
	if err != nil {
		return Result{}, invalid("output repository %q: %v", req.Repository, err)
	}
	kc := req.Keychain
	if kc == nil {
		kc = authn.NewMultiKeychain()
	}
	auth, err := kc.Resolve(repo)
	if err != nil {
		return Result{}, fmt.Errorf("finding the credentials of %s: %w", repo.RegistryStr(), err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth),
		remote.WithTransport(NewTransport(repo.Registry, req.Transport, req.RequestTimeout))}

	descs := make([]v1.Descriptor, 0, len(req.Manifests))
	var atts []v1.Descriptor
	for _, m := range req.Manifests {
		var idx *platformIndex
		if m.Index != "" {
			if idx, err = readPlatformIndex(repo, m, auth != authn.Anonymous, ropts); err != nil {
				return Result{}, err
			}
			m.Digest = idx.image.Digest.String()
		}
		d, err := describe(repo, m, auth != authn.Anonymous, ropts)
		if err != nil {
			return Result{}, err
		}
		if idx != nil {
			// The registry's media type, size and digest, the platform the configuration
			// names (describe checked them), and the annotations of the platform's index.
			d.Annotations = idx.image.Annotations
			atts = append(atts, idx.attestations...)
		}
		descs = append(descs, d)
	}
	descs = append(descs, atts...)
	docker := true
	for _, d := range descs {
		docker = docker && d.MediaType == types.DockerManifestSchema2
	}
	mt := types.OCIImageIndex
	if docker {
		mt = types.DockerManifestList
	}
	raw, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: mt, Manifests: descs})
	if err != nil {
		return Result{}, fmt.Errorf("encoding the index: %w", err)
	}
	digest, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return Result{}, fmt.Errorf("hashing the index: %w", err)
	}
	idx := rawIndex{raw: raw, mediaType: mt}
	res := Result{Digest: digest.String(), MediaType: mt}
	for _, t := range req.Tags {
		tag := repo.Tag(t)
		if err := remote.Put(tag, idx, ropts...); err != nil {
			return Result{}, NewRegistryError(fmt.Sprintf("pushing the index to %s", tag), err, auth != authn.Anonymous)
		}
		res.References = append(res.References, tag.String()+"@"+res.Digest)
	}
	return res, nil
}

// describe is the index's descriptor of m: the registry's descriptor of repo@digest (an image
// manifest), with the platform its configuration names, which must be m.Platform's.
func describe(repo name.Repository, m Manifest, withAuth bool, ropts []remote.Option) (v1.Descriptor, error) {
	want, err := platforms.Parse(m.Platform)
	if err != nil {
		return v1.Descriptor{}, invalid("platform %q: %v", m.Platform, err)
	}
	want = platforms.Normalize(want)
	h, err := v1.NewHash(m.Digest)
	if err != nil || h.Algorithm != "sha256" {
		return v1.Descriptor{}, invalid("%s: the executor reported %q, which is no sha256 digest", m.Platform, result.Excerpt(m.Digest, 80))
	}
	ref := repo.Digest(h.String())
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return v1.Descriptor{}, NewRegistryError(fmt.Sprintf("reading the manifest of %s (%s)", m.Platform, ref), err, withAuth)
	}
	if desc.MediaType != types.DockerManifestSchema2 && desc.MediaType != types.OCIManifestSchema1 {
		return v1.Descriptor{}, invalid("%s: %s is a %s, not an image manifest", m.Platform, ref, result.Excerpt(string(desc.MediaType), 100))
	}
	mf, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return v1.Descriptor{}, invalid("%s: %s is not a valid image manifest", m.Platform, ref)
	}
	// ggcr reads a configuration of the size its descriptor declares (all of it, into memory;
	// with no bound for a size of -1): check it first.
	if size := mf.Config.Size; size <= 0 || size > MaxConfig {
		return v1.Descriptor{}, invalid("%s: the configuration of %s is %d bytes, want 1 to %d (%s)", m.Platform, ref, size, MaxConfig, mib(MaxConfig))
	}
	img, err := desc.Image()
	if err != nil {
		return v1.Descriptor{}, invalid("%s: %s is not a valid image manifest", m.Platform, ref)
	}
	cfg, err := img.ConfigFile()
	switch {
	case err != nil && IsRegistryFailure(err):
		return v1.Descriptor{}, NewRegistryError(fmt.Sprintf("reading the configuration of %s (%s)", m.Platform, ref), err, withAuth)
	case err != nil:
		return v1.Descriptor{}, invalid("%s: the configuration of %s is not a valid image configuration, or not the one its manifest names", m.Platform, ref)
	}
	got := platforms.Normalize(specs.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
	if got.OS != want.OS || got.Architecture != want.Architecture || got.Variant != want.Variant {
		return v1.Descriptor{}, invalid("%s: the image %s is for %s, not %s", m.Platform, ref,
			result.Excerpt(platforms.Format(got), 64), platforms.Format(want))
	}
	return v1.Descriptor{
		MediaType: desc.MediaType,
		Size:      desc.Size,
		Digest:    desc.Digest,
		Platform: &v1.Platform{
			OS:           cfg.OS,
			Architecture: cfg.Architecture,
			Variant:      cfg.Variant,
			OSVersion:    cfg.OSVersion,
		},
	}, nil
}

// platformIndex is what a platform's pod pushed as an index: the descriptors of its image and
// of the attestation manifests about it.
type platformIndex struct {
	image        v1.Descriptor
	attestations []v1.Descriptor
}

// readPlatformIndex reads m.Index from repo: an image index that holds one image manifest
// (m.Digest's, when set) and at most maxPlatformAttestations attestation manifests about it
// (OCI image manifests, platform unknown/unknown, BuildKit's annotations), nothing else.
// Anything else is an *InvalidError: the executor image is the spec's to choose, and what it
// pushed goes under the build's tags.
func readPlatformIndex(repo name.Repository, m Manifest, withAuth bool, ropts []remote.Option) (*platformIndex, error) {
	h, err := v1.NewHash(m.Index)
	if err != nil || h.Algorithm != "sha256" {
		return nil, invalid("%s: the executor reported the index %q, which is no sha256 digest", m.Platform, result.Excerpt(m.Index, 80))
	}
	ref := repo.Digest(h.String())
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, NewRegistryError(fmt.Sprintf("reading the index of %s (%s)", m.Platform, ref), err, withAuth)
	}
	if desc.MediaType != types.OCIImageIndex && desc.MediaType != types.DockerManifestList {
		return nil, invalid("%s: %s is a %s, not an image index", m.Platform, ref, result.Excerpt(string(desc.MediaType), 100))
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, invalid("%s: %s is not a valid image index", m.Platform, ref)
	}
	out := &platformIndex{}
	images := 0
	for _, d := range im.Manifests {
		if IsAttestation(d) {
			out.attestations = append(out.attestations, d)
			continue
		}
		images++
		out.image = d
	}
	if images != 1 {
		return nil, invalid("%s: the index %s holds %d images, want its platform's alone (and its attestations)", m.Platform, ref, images)
	}
	// The image's manifest is read (describe), the attestation manifests' are by the
	// signing: none may be larger than the manager reads.
	for _, d := range append([]v1.Descriptor{out.image}, out.attestations...) {
		if d.Size <= 0 || d.Size > MaxManifest {
			return nil, invalid("%s: the index %s names a manifest (%s) of %d bytes, want 1 to %d (%s)", m.Platform, ref, d.Digest, d.Size, MaxManifest, mib(MaxManifest))
		}
	}
	if m.Digest != "" && out.image.Digest.String() != m.Digest {
		return nil, invalid("%s: the index %s holds the image %s, not %s, which the executor reported", m.Platform, ref,
			out.image.Digest, result.Excerpt(m.Digest, 80))
	}
	if len(out.attestations) > maxPlatformAttestations {
		return nil, invalid("%s: the index %s holds %d attestation manifests, more than %d", m.Platform, ref,
			len(out.attestations), maxPlatformAttestations)
	}
	for _, a := range out.attestations {
		if a.MediaType != types.OCIManifestSchema1 {
			return nil, invalid("%s: the attestation manifest %s in %s is a %s, not an OCI image manifest", m.Platform, a.Digest, ref,
				result.Excerpt(string(a.MediaType), 100))
		}
		if a.Annotations[AnnotationReferenceDigest] != out.image.Digest.String() {
			return nil, invalid("%s: the attestation manifest %s in %s is about %q, not the index's image %s", m.Platform, a.Digest, ref,
				result.Excerpt(a.Annotations[AnnotationReferenceDigest], 80), out.image.Digest)
		}
	}
	return out, nil
}

// rawIndex is an encoded index, a remote.Taggable with its media type.
type rawIndex struct {
	raw       []byte
	mediaType types.MediaType
}

func (r rawIndex) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawIndex) MediaType() (types.MediaType, error) { return r.mediaType, nil }

// Explain says in words what a registry's refusal or failure means: withAuth when
// credentials were sent. It says nothing the registry sent.
func Explain(err error, withAuth bool) string {
	var te *transport.Error
	var ne net.Error
	if refused, ok := errors.AsType[*RefusedError](err); ok {
		return refused.Error()
	}
	if large, ok := errors.AsType[*TooLargeError](err); ok {
		return large.Error()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "no answer in time"
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	case errors.As(err, &ne):
		return "the registry is unreachable"
	case !errors.As(err, &te):
		return "the registry's answer is not usable"
	}
	switch code := te.StatusCode; {
	case code == http.StatusUnauthorized && withAuth:
		return "the registry refused the credentials"
	case code == http.StatusUnauthorized:
		return "the registry requires credentials (spec.output.pushSecretRef)"
	case code == http.StatusForbidden:
		return "the registry refused access"
	case code == http.StatusNotFound:
		return "the registry has no such manifest"
	case code == http.StatusTooManyRequests:
		return "the registry limits the rate of requests"
	case code >= 500:
		return "the registry failed"
	}
	return "unexpected answer"
}

// maxErrorText bounds the text of a RegistryError.
const maxErrorText = 768

// RegistryError is a registry call that failed, told in the manager's words: what was being
// done, what the failure means (Explain), and the HTTP status with the host that answered it.
// Nothing the registry sent is in its text: ggcr's transport.Error holds up to 64 KiB of the
// answer's body, and a redirect's URL is the registry's to choose, and the text goes into the
// ImageBuild's status and events. Unwrap gives the cause (errors.As, Retryable).
type RegistryError struct {
	// Doing is what was being done, gerund first ("reading the manifest of ...").
	Doing string
	// Meaning is Explain's.
	Meaning string
	// Status is the HTTP status of the answer, 0 when there was none.
	Status int
	// Host answered with Status (the registry's, or its token service's).
	Host string
	err  error
}

func (e *RegistryError) Error() string {
	s := e.Doing + ": " + e.Meaning
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.Status)
		if e.Host != "" {
			s += " from " + e.Host
		}
		s += ")"
	}
	return result.Truncate(s, maxErrorText)
}

func (e *RegistryError) Unwrap() error { return e.err }

// NewRegistryError is err, a failed registry call while doing, as a *RegistryError: withAuth
// when credentials were sent.
func NewRegistryError(doing string, err error, withAuth bool) error {
	e := &RegistryError{Doing: doing, Meaning: Explain(err, withAuth), err: err}
	if te, ok := errors.AsType[*transport.Error](err); ok {
		e.Status = te.StatusCode
		if te.Request != nil && te.Request.URL != nil {
			e.Host = result.Excerpt(te.Request.URL.Hostname(), 100)
		}
	}
	return e
}

// IsRegistryFailure reports whether err is the registry's failure or refusal, or the
// network's, rather than what was read being wrong.
func IsRegistryFailure(err error) bool {
	var ne net.Error
	_, refused := errors.AsType[*RefusedError](err)
	_, large := errors.AsType[*TooLargeError](err)
	_, te := errors.AsType[*transport.Error](err)
	return refused || large || te || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Retryable reports whether a failed Assemble may succeed when tried again within seconds:
// not an *InvalidError, nor a refusal of the credentials or of access, nor the guard's
// refusal (*RefusedError, *TooLargeError). A manifest the registry does not have (yet) is
// retried: some registries' storage lags behind a push.
func Retryable(err error) bool {
	if _, ok := errors.AsType[*InvalidError](err); ok {
		return false
	}
	if _, ok := errors.AsType[*RefusedError](err); ok {
		return false
	}
	if _, ok := errors.AsType[*TooLargeError](err); ok {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return false
		}
	}
	return true
}

// Timeout is how long one Assemble may take, the reads and every push: the caller's deadline
// for one try, started once the try may talk to the registry (controllers' publisher).
const Timeout = 2 * time.Minute
