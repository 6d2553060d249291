package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/options"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"
)

// cosign's media types and annotations (cosign's pkg/types and
// pkg/oci/static).
const (
	// SimpleSigningMediaType is the media type of a signature layer: the
	// simple-signing payload that was signed.
	SimpleSigningMediaType types.MediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// DSSEMediaType is the media type of an attestation layer: a DSSE
	// envelope.
	DSSEMediaType types.MediaType = "application/vnd.dsse.envelope.v1+json"
	// InTotoPayloadType is the DSSE payloadType of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// SignatureAnnotation holds a layer's base64 signature (empty on
	// attestation layers, whose signature is in the envelope).
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// PredicateTypeAnnotation holds an attestation layer's predicate type.
	PredicateTypeAnnotation = "predicateType"
)

// maxLayers is cosign's limit on the layers of a .sig or .att image (its
// pkg/oci/mutate maxLayers); cosign refuses to read more.
const maxLayers = 1000

// writeAttempts bounds the read-append-write rounds when another writer
// replaces the tag between our read and our write.
const writeAttempts = 3

// SignatureTag returns the tag under which cosign keeps the signatures of
// img: sha256-<hex>.sig in img's repository.
func SignatureTag(img name.Digest) (name.Tag, error) { return suffixTag(img, "sig") }

// AttestationTag returns the tag under which cosign keeps the attestations
// of img: sha256-<hex>.att in img's repository.
func AttestationTag(img name.Digest) (name.Tag, error) { return suffixTag(img, "att") }

// suffixTag follows cosign's pkg/oci/remote normalize: <algorithm>-<hex>.<suffix>.
func suffixTag(img name.Digest, suffix string) (name.Tag, error) {
	h, err := v1.NewHash(img.DigestStr())
	if err != nil {
		return name.Tag{}, fmt.Errorf("digest of %s: %w", img, err)
	}
	return img.Repository.Tag(h.Algorithm + "-" + h.Hex + "." + suffix), nil
}

// PushSignature signs img as `cosign sign --key` does and stores the
// signature where `cosign verify --key` looks for it: cosign's simple-signing
// payload for img (its digest, and its repository as the docker-reference,
// cosign's default identity) is signed, and becomes a layer of media type
// SimpleSigningMediaType, with the base64 signature in its
// SignatureAnnotation, of the OCI image under SignatureTag(img). Signatures
// already there are kept: the layer is appended (cosign's
// AttachSignatureToEntity), and nothing is added when a layer there already
// holds a signature of the same payload by the same key (cosign's
// DupeDetector). No transparency log is written.
//
// It returns the digest of the .sig manifest that holds the signature. img
// itself is not read. opts are passed to every registry call (auth,
// transport); ctx bounds them.
func PushSignature(ctx context.Context, img name.Digest, s Signer, opts ...remote.Option) (v1.Hash, error) {
	tag, err := SignatureTag(img)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("signing %s: %w", img, err)
	}
	// cosign's signDigest: the payload of payload.Cosign{Image: digest}.
	payload, err := sigpayload.Cosign{Image: img}.MarshalJSON()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("signing %s: payload: %w", img, err)
	}
	sig, err := s.signMessage(payload, options.WithContext(ctx))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("signing %s: %w", img, err)
	}
	add := addition{
		layer:       static.NewLayer(payload, SimpleSigningMediaType),
		annotations: map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	}
	// cosign's DupeDetector: a layer of the same payload and media type
	// whose signature verifies with this key is this signature again.
	duplicate := func(d v1.Descriptor) bool {
		if d.MediaType != SimpleSigningMediaType {
			return false
		}
		old, err := base64.StdEncoding.DecodeString(d.Annotations[SignatureAnnotation])
		if err != nil || len(old) == 0 {
			return false
		}
		return s.k.sv.VerifySignature(bytes.NewReader(old), bytes.NewReader(payload), options.WithContext(ctx)) == nil
	}
	h, err := appendToTag(ctx, tag, []addition{add}, duplicate, opts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pushing the signature of %s: %w", img, err)
	}
	return h, nil
}

// PushAttestations signs each in-toto statement as `cosign attest --key`
// does and stores them where `cosign verify-attestation --key` looks for
// them: each statement is put in a DSSE envelope (payloadType
// InTotoPayloadType, signed over DSSE's PAE), which becomes a layer of media
// type DSSEMediaType, annotated with the statement's predicateType (and an
// empty SignatureAnnotation, as cosign writes), of the OCI image under
// AttestationTag(img). Attestations already there are kept: the layers are
// appended, as cosign attest does without --replace. No transparency log is
// written.
//
// Each statement must be an in-toto Statement (v0.1 or v1) with a
// predicateType and a subject whose sha256 digest is img's: cosign
// verify-attestation rejects any other, so it is refused here, before
// anything is pushed. It returns the digest of the .att manifest.
func PushAttestations(ctx context.Context, img name.Digest, statements [][]byte, s Signer, opts ...remote.Option) (v1.Hash, error) {
	if len(statements) == 0 {
		return v1.Hash{}, fmt.Errorf("attesting %s: no statements", img)
	}
	tag, err := AttestationTag(img)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("attesting %s: %w", img, err)
	}
	h, err := v1.NewHash(img.DigestStr())
	if err != nil {
		return v1.Hash{}, fmt.Errorf("attesting %s: %w", img, err)
	}
	if s.k == nil {
		return v1.Hash{}, fmt.Errorf("attesting %s: %w", img, errNoKey)
	}
	wrapped := dsse.WrapSigner(s.k.sv, InTotoPayloadType)
	adds := make([]addition, 0, len(statements))
	for i, st := range statements {
		predicateType, err := checkStatement(st, h)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("attesting %s: statement %d: %w", img, i+1, err)
		}
		env, err := wrapped.SignMessage(bytes.NewReader(st), options.WithContext(ctx))
		if err != nil {
			return v1.Hash{}, fmt.Errorf("attesting %s: statement %d: signing: %w", img, i+1, err)
		}
		adds = append(adds, addition{
			layer: static.NewLayer(env, DSSEMediaType),
			// cosign's static.NewAttestation: the signature annotation is
			// present and empty.
			annotations: map[string]string{PredicateTypeAnnotation: predicateType, SignatureAnnotation: ""},
		})
	}
	// cosign's DupeDetector never matches an attestation layer (its
	// signature annotation is empty): attestations are always appended.
	out, err := appendToTag(ctx, tag, adds, func(v1.Descriptor) bool { return false }, opts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pushing the attestations of %s: %w", img, err)
	}
	return out, nil
}

// in-toto statement types cosign reads (its in_toto.Statement accepts both).
var statementTypes = map[string]bool{
	"https://in-toto.io/Statement/v0.1": true,
	"https://in-toto.io/Statement/v1":   true,
}

// checkStatement checks what cosign verify-attestation needs of a statement
// (its IntotoSubjectClaimVerifier and the predicate type filter) and returns
// its predicateType.
func checkStatement(st []byte, img v1.Hash) (string, error) {
	var s struct {
		Type          string `json:"_type"`
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(st, &s); err != nil {
		return "", fmt.Errorf("not an in-toto statement: %w", err)
	}
	if !statementTypes[s.Type] {
		return "", fmt.Errorf("not an in-toto statement: _type %q, want https://in-toto.io/Statement/v1 (or v0.1)", s.Type)
	}
	if s.PredicateType == "" {
		return "", errors.New("in-toto statement without a predicateType")
	}
	for _, sub := range s.Subject {
		if img.Algorithm+":"+sub.Digest[img.Algorithm] == img.String() {
			return s.PredicateType, nil
		}
	}
	return "", fmt.Errorf("in-toto statement (predicateType %s) has no subject with the image's digest %s", s.PredicateType, img)
}

// addition is one layer to append, with its descriptor annotations.
type addition struct {
	layer       v1.Layer
	annotations map[string]string
}

// testHookAfterWrite, when set by a test, runs after each write of a tag and
// before its check, with the attempt number (from 1).
var testHookAfterWrite func(attempt int)

// appendToTag appends adds to the image under tag (an empty OCI image if the
// tag does not exist, as cosign's empty.Signatures), leaving out those for
// which the image already has a layer of the same digest and annotations, or
// one that duplicate accepts; writes it back; and returns the digest of the
// manifest under the tag that holds them all.
//
// A read-append-write is not atomic: a writer that replaces the tag between
// our read and our write loses its layers (cosign has the same race), and one
// that replaces it after our write loses ours. The second is detected: after
// writing, the tag is read again, and if its manifest lacks a layer of ours
// the round is repeated on what is there now, writeAttempts times at most.
func appendToTag(ctx context.Context, tag name.Tag, adds []addition, duplicate func(v1.Descriptor) bool, opts []remote.Option) (v1.Hash, error) {
	ropts := append([]remote.Option{remote.WithContext(ctx)}, opts...)
	for attempt := 1; ; attempt++ {
		base, exists, err := readTag(tag, ropts)
		if err != nil {
			return v1.Hash{}, err
		}
		m, err := base.Manifest()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("reading %s: %w", tag, err)
		}
		var added []addition
		var addenda []mutate.Addendum
		for _, a := range adds {
			if holds(m.Layers, a) || anyDescriptor(m.Layers, duplicate, a) {
				continue
			}
			added = append(added, a)
			addenda = append(addenda, mutate.Addendum{Layer: a.layer, Annotations: a.annotations})
		}
		if len(addenda) == 0 && exists {
			// Every layer is there already: nothing to write.
			return base.Digest()
		}
		if n := len(m.Layers) + len(addenda); n > maxLayers {
			return v1.Hash{}, fmt.Errorf("%s would have %d layers, more than cosign's limit of %d", tag, n, maxLayers)
		}
		img, err := mutate.Append(base, addenda...)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("appending to %s: %w", tag, err)
		}
		written, err := img.Digest()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("appending to %s: %w", tag, err)
		}
		if err := remote.Write(tag, img, ropts...); err != nil {
			return v1.Hash{}, fmt.Errorf("writing %s: %w", tag, err)
		}
		if testHookAfterWrite != nil {
			testHookAfterWrite(attempt)
		}
		now, err := remote.Get(tag, ropts...)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("reading %s back: %w", tag, err)
		}
		if now.Digest == written {
			return written, nil
		}
		if nm, err := v1.ParseManifest(bytes.NewReader(now.Manifest)); err == nil && holdsAll(nm.Layers, added) {
			// Another writer appended to ours: ours are still there.
			return now.Digest, nil
		}
		if attempt == writeAttempts {
			return v1.Hash{}, fmt.Errorf("%s was replaced by another writer after each of %d writes, without the new layers", tag, writeAttempts)
		}
	}
}

// readTag returns the image under tag, or an empty OCI image (OCI manifest
// and config media types, cosign's default) and false if there is none.
func readTag(tag name.Tag, ropts []remote.Option) (v1.Image, bool, error) {
	img, err := remote.Image(tag, ropts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
		return base, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", tag, err)
	}
	return img, true, nil
}

// holds tells whether layers has one of a's digest and media type with a's
// annotations.
func holds(layers []v1.Descriptor, a addition) bool {
	digest, err := a.layer.Digest()
	if err != nil {
		return false
	}
	mt, err := a.layer.MediaType()
	if err != nil {
		return false
	}
	for _, l := range layers {
		if l.Digest != digest || l.MediaType != mt || len(l.Annotations) != len(a.annotations) {
			continue
		}
		same := true
		for k, v := range a.annotations {
			if got, ok := l.Annotations[k]; !ok || got != v {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

func holdsAll(layers []v1.Descriptor, adds []addition) bool {
	for _, a := range adds {
		if !holds(layers, a) {
			return false
		}
	}
	return true
}

// anyDescriptor tells whether a layer of layers with a's digest is accepted by
// duplicate.
func anyDescriptor(layers []v1.Descriptor, duplicate func(v1.Descriptor) bool, a addition) bool {
	digest, err := a.layer.Digest()
	if err != nil {
		return false
	}
	for _, l := range layers {
		if l.Digest == digest && duplicate(l) {
			return true
		}
	}
	return false
}
