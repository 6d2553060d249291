// Package imagesign signs what a build pushed, in the manager, in cosign's layout
// (executor/sign): the digest the build's tags name gets a signature under its
// sha256-<hex>.sig tag, and the in-toto statements of the attestation manifests of the pushed
// index (BuildKit's layout: vnd.docker.reference.type=attestation-manifest, one layer of media
// type application/vnd.in-toto+json per statement) are signed under sha256-<hex>.att of the
// image each is about, and of the index, so that `cosign verify --key` and `cosign
// verify-attestation --key` of the tags, and of each image by digest, accept them.
//
// Why the manager signs, and not the executor pod: the pod runs the repository's RUN steps,
// so a signing key there is one sandbox escape away from theft, and whoever has it can sign
// anything as the build. The manager already reads the namespace's push Secret and pushes the
// multi-platform index; it reads the key, signs, and keeps nothing but the signer in memory.
//
// What is signed is what the executor pod pushed: its image and statements are not trusted
// beyond that. The statements' subjects are restricted to the image each attestation
// manifest is about (and the index, for the tags' verification): a statement that names any
// other digest has that subject dropped before it is signed, so that a signed statement can
// never be replayed as an attestation of another image. Sizes are bounded (MaxStatement,
// MaxStatements, imageindex.MaxManifest), each checked on its descriptor before anything is
// read and again while reading, and a layout that is not BuildKit's is an *InvalidError.
//
// The registry is the tenant's to name: every call goes through imageindex.NewTransport's
// guard (hosts, addresses, sizes, time), as the index push's do.
//
// Nothing here logs, and no error holds key material, credentials, or anything the registry
// sent (imageindex.RegistryError).
package imagesign

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/controllers/imageindex"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/sign"
)

// Limits on what is read of the pushed index: the manager holds the statements in memory
// while it signs them (each about three times over: the statement, its DSSE envelope in
// base64, the layer), so their sizes bound its memory.
const (
	// MaxStatement bounds one statement (an SBOM of a large image is a few MiB).
	MaxStatement = 16 << 20
	// MaxStatements bounds the statements of one build, all images together.
	MaxStatements = 32 << 20
	// maxIndexEntries bounds the manifests of the pushed index (8 platforms and their
	// attestation manifests, with room).
	maxIndexEntries = 64
	// maxLayers bounds the statements of one attestation manifest.
	maxLayers = 16
)

// Timeout is how long one Run may take: the caller's deadline for one try, started once the
// try may talk to the registry (controllers' publisher).
const Timeout = 2 * time.Minute

// MediaTypeInToto is the media type of a statement layer of an attestation manifest.
const MediaTypeInToto = "application/vnd.in-toto+json"

// Predicate types of SBOM statements (SPDX, CycloneDX).
var sbomPredicates = []string{"https://spdx.dev/Document", "https://cyclonedx.org/bom"}

// Request is what to sign.
type Request struct {
	// Repository is the output repository, [registry/]path, where the build pushed and where
	// the .sig and .att tags go.
	Repository string
	// Digest is what the build's tags name: an image manifest, or an index of images and
	// the attestation manifests about them.
	Digest string
	// Signer is the key.
	Signer sign.Signer
	// Keychain gives the registry's credentials; anonymous when nil.
	Keychain authn.Keychain
	// Insecure reaches the registry over plain HTTP (output.insecure).
	Insecure bool
	// Transport gives the TLS configuration and proxy of the calls (Go's default transport's
	// when nil); they go through imageindex.NewTransport's guard, which replaces its dialer.
	Transport *http.Transport
	// RequestTimeout bounds each request to the registry; imageindex.RequestTimeout when zero.
	RequestTimeout time.Duration
}

// Result is what was signed.
type Result struct {
	// Signature is the digest of the .sig manifest of Digest.
	Signature string
	// Attestations are, for each image of the index with an attestation manifest, in the
	// index's order, its statements as signed under its .att tag; then, when Digest is an
	// index with attestations, every statement as signed under the index's .att tag.
	Attestations []Attestation
	// SBOM is true when a statement is an SBOM (SPDX or CycloneDX).
	SBOM bool
}

// Attestation is the signed statements about one subject.
type Attestation struct {
	// Subject is the digest the statements are about (an image's, or the index's).
	Subject string
	// Platform is the image's platform (os/arch[/variant]); empty for the index.
	Platform string
	// Manifest is the attestation manifest of the index that held them; empty for the index.
	Manifest string
	// PredicateTypes of the statements, in order.
	PredicateTypes []string
	// Signed is the digest of the .att manifest.
	Signed string
}

// InvalidError is a pushed index whose attestations cannot be signed as they are: signing
// again would meet the same.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Job signs one request. A job that failed may be run again (Run): what it pushed already (the
// signature, the attestations of a subject) is not pushed twice, so that a retry does not
// append the same statements to a .att tag again.
type Job struct {
	Request
	sig  string
	atts map[string]string // subject → .att digest, of the subjects done
}

// NewJob returns the job of req.
func NewJob(req Request) *Job { return &Job{Request: req, atts: map[string]string{}} }

// Run reads req.Digest, signs it, and signs the statements of its attestation manifests; see
// the package's documentation. Errors say what was being done and name references, never
// credentials or key material; an *InvalidError is the pushed index's fault.
func (j *Job) Run(ctx context.Context) (Result, error) {
	var nopts []name.Option
	if j.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	repo, err := name.NewRepository(j.Repository, nopts...)
	if err != nil {
		return Result{}, invalid("output repository %q: %v", j.Repository, err)
	}
	h, err := v1.NewHash(j.Digest)
	if err != nil || h.Algorithm != "sha256" {
		return Result{}, invalid("the build reported %q, which is no sha256 digest", result.Excerpt(j.Digest, 80))
	}
	kc := j.Keychain
	if kc == nil {
		kc = authn.NewMultiKeychain()
	}
	auth, err := kc.Resolve(repo)
	if err != nil {
		return Result{}, fmt.Errorf("finding the credentials of %s: %w", repo.RegistryStr(), err)
	}
	withAuth := auth != authn.Anonymous
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth),
		remote.WithTransport(imageindex.NewTransport(repo.Registry, j.Transport, j.RequestTimeout))}
	ref := repo.Digest(h.String())

	subjects, err := readAttestations(repo, ref, withAuth, ropts)
	if err != nil {
		return Result{}, err
	}

	if j.sig == "" {
		sig, err := sign.PushSignature(ctx, ref, j.Signer, ropts...)
		if err != nil {
			return Result{}, signError(fmt.Sprintf("pushing the signature of %s", ref), err, withAuth)
		}
		j.sig = sig.String()
	}
	res := Result{Signature: j.sig}

	var all [][]byte
	var allTypes []string
	for _, s := range subjects {
		stmts := make([][]byte, 0, len(s.statements))
		for _, st := range s.statements {
			stmts = append(stmts, st.json)
			res.SBOM = res.SBOM || IsSBOM(st.predicateType)
		}
		a := Attestation{Subject: s.image.String(), Platform: s.platform, Manifest: s.manifest.String(), PredicateTypes: s.types()}
		signed, err := j.attest(ctx, repo.Digest(s.image.String()), stmts, withAuth, ropts)
		if err != nil {
			return Result{}, err
		}
		a.Signed = signed
		res.Attestations = append(res.Attestations, a)
		all = append(all, stmts...)
		allTypes = append(allTypes, a.PredicateTypes...)
	}
	if len(all) > 0 { // h is an index: attestation manifests live in one
		signed, err := j.attest(ctx, ref, all, withAuth, ropts)
		if err != nil {
			return Result{}, err
		}
		res.Attestations = append(res.Attestations, Attestation{Subject: h.String(), PredicateTypes: dedupe(allTypes), Signed: signed})
	}
	return res, nil
}

// attest signs stmts under ref's .att tag, unless this job did already.
func (j *Job) attest(ctx context.Context, ref name.Digest, stmts [][]byte, withAuth bool, ropts []remote.Option) (string, error) {
	if d, ok := j.atts[ref.DigestStr()]; ok {
		return d, nil
	}
	att, err := sign.PushAttestations(ctx, ref, stmts, j.Signer, ropts...)
	if err != nil {
		return "", signError(fmt.Sprintf("pushing the signed attestations of %s", ref), err, withAuth)
	}
	j.atts[ref.DigestStr()] = att.String()
	return att.String(), nil
}

// subject is an image of the index with the statements of its attestation manifest.
type subject struct {
	image      v1.Hash
	platform   string
	manifest   v1.Hash
	statements []statement
}

func (s subject) types() []string {
	var out []string
	for _, st := range s.statements {
		out = append(out, st.predicateType)
	}
	return out
}

type statement struct {
	predicateType string
	json          []byte // restricted to its subject (restrictSubjects)
}

// readAttestations reads ref: an image has no attestations; an index's attestation manifests
// are read, each with its statements, restricted to their image's and the index's digests.
func readAttestations(repo name.Repository, ref name.Digest, withAuth bool, ropts []remote.Option) ([]subject, error) {
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, imageindex.NewRegistryError(fmt.Sprintf("reading %s", ref), err, withAuth)
	}
	switch desc.MediaType {
	case types.OCIImageIndex, types.DockerManifestList:
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		return nil, nil
	default:
		return nil, invalid("%s is a %s, neither an image nor an image index", ref, result.Excerpt(string(desc.MediaType), 100))
	}
	index, err := v1.NewHash(ref.DigestStr())
	if err != nil {
		return nil, invalid("%s is no digest", ref)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, invalid("%s is not a valid image index", ref)
	}
	if len(im.Manifests) > maxIndexEntries {
		return nil, invalid("the index %s names %d manifests, more than %d", ref, len(im.Manifests), maxIndexEntries)
	}
	images := map[v1.Hash]string{}
	for _, d := range im.Manifests {
		if !imageindex.IsAttestation(d) {
			p := ""
			if d.Platform != nil {
				p = d.Platform.String()
			}
			images[d.Digest] = p
		}
	}
	var out []subject
	total := 0
	attested := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		if !imageindex.IsAttestation(d) {
			continue
		}
		img, err := v1.NewHash(d.Annotations[imageindex.AnnotationReferenceDigest])
		if err != nil {
			return nil, invalid("the attestation manifest %s of %s names no image digest (%s)", d.Digest, ref, imageindex.AnnotationReferenceDigest)
		}
		platform, ok := images[img]
		if !ok {
			return nil, invalid("the attestation manifest %s of %s is about %s, which the index does not hold", d.Digest, ref, img)
		}
		if attested[img] {
			// BuildKit writes one per image.
			return nil, invalid("the index %s holds two attestation manifests about %s", ref, img)
		}
		attested[img] = true
		s := subject{image: img, platform: platform, manifest: d.Digest}
		if s.statements, err = readStatements(repo, d, img, index, &total, withAuth, ropts); err != nil {
			return nil, err
		}
		if len(s.statements) > 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// readStatements reads the statement layers of the attestation manifest d about img,
// restricted to img and index (restrictSubjects), adding their sizes to *total.
func readStatements(repo name.Repository, d v1.Descriptor, img, index v1.Hash, total *int, withAuth bool,
	ropts []remote.Option) ([]statement, error) {
	ref := repo.Digest(d.Digest.String())
	if d.Size <= 0 || d.Size > imageindex.MaxManifest {
		return nil, invalid("the attestation manifest %s is %d bytes, want 1 to %d", ref, d.Size, imageindex.MaxManifest)
	}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, imageindex.NewRegistryError(fmt.Sprintf("reading the attestation manifest %s", ref), err, withAuth)
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		return nil, invalid("the attestation manifest %s is a %s, not an OCI image manifest", ref, result.Excerpt(string(desc.MediaType), 100))
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, invalid("the attestation manifest %s is not a valid image manifest", ref)
	}
	if len(m.Layers) > maxLayers {
		return nil, invalid("the attestation manifest %s has %d layers, more than %d", ref, len(m.Layers), maxLayers)
	}
	var out []statement
	for _, l := range m.Layers {
		if l.MediaType != MediaTypeInToto {
			continue
		}
		if l.Size < 0 || l.Size > MaxStatement {
			return nil, invalid("a statement of the attestation manifest %s is %d bytes, more than %d", ref, l.Size, MaxStatement)
		}
		if *total += int(l.Size); *total > MaxStatements {
			return nil, invalid("the statements of the pushed index are more than %d bytes", MaxStatements)
		}
		b, err := readBlob(repo.Digest(l.Digest.String()), l.Size, withAuth, ropts)
		if err != nil {
			return nil, err
		}
		st, pt, err := restrictSubjects(b, img, index)
		if err != nil {
			return nil, invalid("a statement (%s) of the attestation manifest %s: %v", l.Digest, ref, err) // restrictSubjects' own words
		}
		out = append(out, statement{predicateType: pt, json: st})
	}
	return out, nil
}

// readBlob reads the blob ref of size bytes (at most MaxStatement, which the caller checked)
// into a buffer of that size, allocated once: a registry that sends more fails the read, one
// that sends other bytes fails the digest's check (ggcr's verifying reader).
func readBlob(ref name.Digest, size int64, withAuth bool, ropts []remote.Option) ([]byte, error) {
	if size < 0 || size > MaxStatement {
		return nil, invalid("the statement %s is %d bytes, more than %d", ref, size, MaxStatement)
	}
	doing := fmt.Sprintf("reading the statement %s", ref)
	l, err := remote.Layer(ref, ropts...)
	if err != nil {
		return nil, imageindex.NewRegistryError(doing, err, withAuth)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, imageindex.NewRegistryError(doing, err, withAuth)
	}
	defer rc.Close()
	b := make([]byte, size)
	if _, err := io.ReadFull(rc, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, invalid("the statement %s is shorter than its manifest says", ref)
		}
		return nil, imageindex.NewRegistryError(doing, err, withAuth)
	}
	// The end of the body, where ggcr checks the digest.
	var extra [1]byte
	switch n, err := rc.Read(extra[:]); {
	case n > 0:
		return nil, invalid("the statement %s is longer than its manifest says", ref)
	case errors.Is(err, io.EOF):
		return b, nil
	case err != nil && !imageindex.IsRegistryFailure(err):
		return nil, invalid("the statement %s is not what its digest names", ref)
	case err != nil:
		return nil, imageindex.NewRegistryError(doing, err, withAuth)
	}
	return nil, invalid("the statement %s is longer than its manifest says", ref)
}

// inTotoSubject is a subject of an in-toto statement (v0.1 and v1 agree on it).
type inTotoSubject struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// restrictSubjects returns the statement st with its subjects restricted to those whose
// sha256 digest is img's, each followed by the same name with index's digest (unless index is
// img), every other field as it was; and its predicate type. A statement that is not an
// in-toto statement, has no predicate type, or no subject naming img, is refused: the
// attestation manifest is about img.
func restrictSubjects(st []byte, img, index v1.Hash) ([]byte, string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(st, &fields); err != nil {
		return nil, "", errors.New("not a JSON object")
	}
	var typ, predicateType string
	if err := json.Unmarshal(fields["_type"], &typ); err != nil || !strings.HasPrefix(typ, "https://in-toto.io/Statement/") {
		return nil, "", errors.New("not an in-toto statement (_type)")
	}
	if err := json.Unmarshal(fields["predicateType"], &predicateType); err != nil || predicateType == "" {
		return nil, "", errors.New("no predicateType")
	}
	var subjects []inTotoSubject
	if err := json.Unmarshal(fields["subject"], &subjects); err != nil {
		return nil, "", errors.New("no subject list")
	}
	var kept []inTotoSubject
	for _, s := range subjects {
		if s.Digest["sha256"] != img.Hex {
			continue
		}
		kept = append(kept, inTotoSubject{Name: s.Name, Digest: map[string]string{"sha256": img.Hex}})
		if index != img {
			kept = append(kept, inTotoSubject{Name: s.Name, Digest: map[string]string{"sha256": index.Hex}})
		}
	}
	if len(kept) == 0 {
		return nil, "", fmt.Errorf("no subject names the image %s", img)
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return nil, "", err
	}
	fields["subject"] = b
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, "", err
	}
	return out, predicateType, nil
}

// IsSBOM reports whether predicateType is an SBOM's (SPDX, CycloneDX).
func IsSBOM(predicateType string) bool {
	for _, p := range sbomPredicates {
		if predicateType == p || strings.HasPrefix(predicateType, p+"/") {
			return true
		}
	}
	return false
}

func dedupe(ss []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// signError is err, a failed push of executor/sign while doing: the registry's failure or
// refusal as an imageindex.RegistryError (our words only), else sign's own error, which says
// what it checked (shortened).
func signError(doing string, err error, withAuth bool) error {
	if imageindex.IsRegistryFailure(err) {
		return imageindex.NewRegistryError(doing, err, withAuth)
	}
	return fmt.Errorf("%s: %s", doing, result.Excerpt(err.Error(), 300))
}

// Retryable reports whether a failed Run may succeed when run again within seconds: not an
// *InvalidError, nor a refusal of the credentials or of access.
func Retryable(err error) bool {
	if _, ok := errors.AsType[*InvalidError](err); ok {
		return false
	}
	if !imageindex.Retryable(err) {
		return false // the guard's refusals, and the registry's of the credentials
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
