package controllers

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/baseimage"
	"github.com/slipway-dev/slipway/controllers/imageindex"
	"github.com/slipway-dev/slipway/controllers/imagesign"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/sign"
)

// Signing (spec.signing, issue 16).
//
// ImageBuilds are SIGNED BY THE MANAGER, never in the executor pod. The pod runs the
// repository's RUN steps, so a signing key there would be one sandbox escape away from
// theft, and whoever had it could sign any image as the build. The manager already reads the
// namespace's push Secret and pushes the multi-platform index; so it reads the key too, and
// once the build's image (or, with spec.platforms, the index) is pushed, it signs the digest
// the tags name (executor/sign.PushSignature: cosign's sha256-<hex>.sig) and every in-toto
// statement of the attestation manifests of the pushed index (sign.PushAttestations:
// sha256-<hex>.att of each image, and of the index), in the background (publisher) with the
// push Secret's credentials. Only then has the build succeeded; a signing failure fails it
// (SigningFailed, retried as PushFailed is), and no message ever holds key material.
//
// The key is a Secret of the ImageBuild's own namespace (spec.signing.secretRef: keys
// cosign.key and cosign.password), else the manager's default (--default-signing-secret, a
// Secret of the MANAGER's namespace). The default key is read there and never copied into
// any other namespace: whoever can read Secrets in a build namespace could otherwise sign
// anything with it. It signs the builds of every namespace without its own key, which is
// what an administrator who sets it asks for.
//
// A missing or unusable key fails the build before any pod starts (SigningKeyInvalid, not
// retried), and again when it is found unusable at signing time: a multi-platform build then
// pushes no index; a single pod's image is under its tags already, unsigned, and the failure
// says so.

// The keys of a signing Secret.
const (
	cosignKeyKey      = "cosign.key"
	cosignPasswordKey = "cosign.password"
)

// signingKeyError is a signing key that cannot be used: the build fails with
// SigningKeyInvalid (or reason, when set). Its message names the Secret and what is wrong,
// never a value.
type signingKeyError struct{ msg, reason string }

// failureReason is the build's failure reason for e.
func (e *signingKeyError) failureReason() string {
	if e.reason != "" {
		return e.reason
	}
	return v1alpha1.ReasonSigningKeyInvalid
}

func (e *signingKeyError) Error() string { return e.msg }

// signs reports whether ib's builds are signed: it names a key, or the manager has a default.
func (r *ImageBuildReconciler) signs(ib *v1alpha1.ImageBuild) bool {
	return ib.Spec.Signing != nil || r.Options.DefaultSigningSecret.Name != ""
}

// signingSecret is where ib's key is, and how messages name it: spec.signing.secretRef in
// ib's namespace, else the manager's default Secret in the manager's namespace.
func (r *ImageBuildReconciler) signingSecret(ib *v1alpha1.ImageBuild) (types.NamespacedName, string) {
	if s := ib.Spec.Signing; s != nil {
		return types.NamespacedName{Namespace: ib.Namespace, Name: s.SecretRef.Name},
			fmt.Sprintf("Secret %q (spec.signing.secretRef)", s.SecretRef.Name)
	}
	d := r.Options.DefaultSigningSecret
	return d, fmt.Sprintf("the manager's default signing key, Secret %s (--default-signing-secret)", d)
}

// signingKey loads ib's signing key; a *signingKeyError when it cannot be used, another error
// when the Secret could not be read for a reason that may pass.
func (r *ImageBuildReconciler) signingKey(ctx context.Context, ib *v1alpha1.ImageBuild) (sign.Signer, error) {
	key, what := r.signingSecret(ib)
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, key, s); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return sign.Signer{}, &signingKeyError{msg: fmt.Sprintf("%s not found: create it with the keys %s and %s (cosign generate-key-pair), then rebuild",
				what, cosignKeyKey, cosignPasswordKey)}
		case apierrors.IsForbidden(err):
			return sign.Signer{}, &signingKeyError{msg: fmt.Sprintf("%s: the manager may not read it", what)}
		}
		return sign.Signer{}, fmt.Errorf("getting the signing key Secret %s: %w", key, err)
	}
	return r.keys.load(s, what)
}

// keyCache keeps the signers of the signing Secrets read, by the Secret's identity and
// version: decrypting a cosign key costs 64 MiB of memory and a fraction of a second
// (scrypt, N=2^16, r=8), which every build would pay twice otherwise. The manager reads the
// encrypted key and its password anyway, so keeping the decrypted key in its memory shows
// nothing more to anyone. Loads are serialised, so that only one scrypt runs at a time.
type keyCache struct {
	mu   sync.Mutex
	keys map[keyVersion]sign.Signer
}

// keyVersion is one version of one Secret: a changed Secret is loaded again, and a Secret
// deleted and made again under the same name is another.
type keyVersion struct {
	key             types.NamespacedName
	uid             types.UID
	resourceVersion string
}

// maxCachedKeys bounds keyCache.
const maxCachedKeys = 64

// load returns the signer of Secret s, named what in messages.
func (c *keyCache) load(s *corev1.Secret, what string) (sign.Signer, error) {
	id := keyVersion{key: client.ObjectKeyFromObject(s), uid: s.UID, resourceVersion: s.ResourceVersion}
	c.mu.Lock()
	defer c.mu.Unlock()
	if signer, ok := c.keys[id]; ok {
		return signer, nil
	}
	pem, hasKey := s.Data[cosignKeyKey]
	password, hasPassword := s.Data[cosignPasswordKey]
	switch {
	case !hasKey || len(pem) == 0:
		return sign.Signer{}, &signingKeyError{msg: fmt.Sprintf("%s has no key %s (cosign's encrypted private key)", what, cosignKeyKey)}
	case !hasPassword:
		return sign.Signer{}, &signingKeyError{msg: fmt.Sprintf("%s has no key %s (the password of %s; it may be empty)", what, cosignPasswordKey, cosignKeyKey)}
	}
	signer, err := sign.LoadKey(pem, password)
	if err != nil {
		// Fixed messages: nothing of the error (nor of the key or password) goes on.
		var problem string
		switch {
		case errors.Is(err, sign.ErrWrongPassword):
			problem = fmt.Sprintf("%s does not decrypt %s", cosignPasswordKey, cosignKeyKey)
		case errors.Is(err, sign.ErrNotCosignKey):
			problem = fmt.Sprintf("%s is not a private key in cosign's encrypted format (a PEM block %q, as cosign generate-key-pair and cosign import-key-pair write)",
				cosignKeyKey, sign.SigstorePrivateKeyPEMType)
		case errors.Is(err, sign.ErrUnsupportedKey):
			problem = fmt.Sprintf("%s is of a key type cosign does not sign with (ECDSA P-256/P-384/P-521, RSA of 2048 bits or more, Ed25519)", cosignKeyKey)
		default:
			problem = fmt.Sprintf("%s could not be loaded", cosignKeyKey)
		}
		return sign.Signer{}, &signingKeyError{msg: what + ": " + problem}
	}
	if c.keys == nil {
		c.keys = map[keyVersion]sign.Signer{}
	}
	for k := range c.keys {
		if k.key == id.key || len(c.keys) >= maxCachedKeys {
			delete(c.keys, k) // an older version of the Secret, or room
		}
	}
	c.keys[id] = signer
	return signer, nil
}

// checkSigningKey is the check before a build's pods start: nil when ib is not signed or its
// key can be used, else the error of signingKey. A signed build of runPolicy Parallel (the
// CRD refuses it with spec.signing; the manager's default key may apply to one) is refused
// with SigningUnsupported: the manager signs an ImageBuild's latest build, and the earlier
// builds that Parallel keeps running would push unsigned images.
func (r *ImageBuildReconciler) checkSigningKey(ctx context.Context, ib *v1alpha1.ImageBuild) error {
	if !r.signs(ib) {
		return nil
	}
	if runPolicy(ib) == v1alpha1.RunPolicyParallel {
		_, what := r.signingSecret(ib)
		return &signingKeyError{reason: v1alpha1.ReasonSigningUnsupported, msg: fmt.Sprintf(
			"runPolicy Parallel cannot be signed (%s signs this ImageBuild's builds): the manager signs the latest build only, "+
				"and overlapping builds would push unsigned images; use Serial or SerialLatestOnly", what)}
	}
	_, err := r.signingKey(ctx, ib)
	return err
}

// pushAccess is how the manager reaches ib's output registry: the credentials of the push
// Secret of ib's own namespace (a *missingReferenceError when it is missing or unreadable),
// and, with output.insecure, a transport that does not verify certificates (nil for Go's
// default). imageindex and imagesign send every call through their guard
// (imageindex.NewTransport), which keeps this transport's TLS configuration and proxy.
func (r *ImageBuildReconciler) pushAccess(ctx context.Context, ib *v1alpha1.ImageBuild) (authn.Keychain, *http.Transport, error) {
	out := ib.Spec.Output
	var kc authn.Keychain
	if ref := out.PushSecretRef; ref != nil {
		s, err := r.getSecret(ctx, ib.Namespace, ref.Name, "spec.output.pushSecretRef")
		if err != nil {
			return nil, nil, err
		}
		if kc, err = baseimage.Keychain(s.Data); err != nil {
			return nil, nil, missingReference("Secret %q (spec.output.pushSecretRef): %v", ref.Name, err)
		}
	}
	var rt *http.Transport
	if out.Insecure {
		// As the executor's --skip-tls-verify for the output registry.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // spec.output.insecure asks for it
		rt = t
	}
	return kc, rt, nil
}

// signRequest is what signing digest of ib's build needs: its key and the registry access of
// its push Secret. Errors are signingKey's and pushAccess's.
func (r *ImageBuildReconciler) signRequest(ctx context.Context, ib *v1alpha1.ImageBuild, digest string) (*imagesign.Request, error) {
	signer, err := r.signingKey(ctx, ib)
	if err != nil {
		return nil, err
	}
	kc, rt, err := r.pushAccess(ctx, ib)
	if err != nil {
		return nil, err
	}
	return &imagesign.Request{Repository: outputRepository(ib.Spec.Output.Image), Digest: digest, Signer: signer,
		Keychain: kc, Insecure: ib.Spec.Output.Insecure, Transport: rt}, nil
}

// signPushed is, for a build of one pod whose executor succeeded (computeStatus made it
// Succeeded), the signing of what it pushed, when the build is signed. The first call starts
// the job (publisher); until it has ended the build is Running, Ready=False and
// Reconciling=True with reason Signing; then it has succeeded, with status.image's signature
// and signed attestations, or failed: SigningKeyInvalid (not retried), AttestationInvalid
// (not retried) or SigningFailed (retried, planRetry). An error is one that may pass (the
// API server's; a missing push Secret, with Ready=False/SecretNotFound).
func (r *ImageBuildReconciler) signPushed(ctx context.Context, ib *v1alpha1.ImageBuild, now time.Time) error {
	if !r.signs(ib) || ib.Status.Phase != v1alpha1.PhaseSucceeded {
		return nil
	}
	st := &ib.Status
	gen := ib.Generation
	if st.Image == nil || !sha256Digest.MatchString(st.Image.Digest) {
		fail(st, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonSigningFailed, Pod: st.PodName,
			Message: "The executor reported no image digest, so nothing can be signed"}, result.Result{}, now)
		return nil
	}
	if r.Publisher == nil {
		return errors.New("no publisher: the reconciler was not set up with SetupWithManager")
	}
	digest := st.Image.Digest
	key, id := client.ObjectKeyFromObject(ib), buildID(ib)
	job, ok := r.Publisher.job(key, id)
	if !ok {
		req, err := r.signRequest(ctx, ib, digest)
		if keyErr, isKey := errors.AsType[*signingKeyError](err); isKey {
			fail(st, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonSigningKeyInvalid, Pod: st.PodName,
				Message: fmt.Sprintf("The image %s was pushed under its tags but is not signed: %s", digest, keyErr.msg)}, result.Result{}, now)
			return nil
		}
		if err != nil {
			signing(ib, digest)
			if missing, isMissing := errors.AsType[*missingReferenceError](err); isMissing {
				setCondition(st, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, missing.Message)
				setCondition(st, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonSecretNotFound, missing.Message)
			}
			return err
		}
		r.Publisher.start(key, id, publishRequest{sign: req})
		job.id = id
	}
	if !job.done {
		signing(ib, digest)
		return nil
	}
	if job.err != nil {
		f := publishFailure(job.err)
		f.Pod = st.PodName
		f.Message = fmt.Sprintf("The image %s was pushed under its tags but is not signed: %s", digest, f.Message)
		fail(st, gen, f, result.Result{}, now)
		return nil
	}
	signed(ib, job)
	return nil
}

// signing sets the status of a build whose image is being signed: phase Running, Ready=False
// and Reconciling=True with reason Signing; no completion time yet.
func signing(ib *v1alpha1.ImageBuild, digest string) {
	st := &ib.Status
	st.Phase = v1alpha1.PhaseRunning
	st.CompletionTime = nil
	st.Failure = nil
	msg := fmt.Sprintf("Signing %s and its attestations in %s", digest, outputRepository(ib.Spec.Output.Image))
	setCondition(st, ib.Generation, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSigning, msg)
	setCondition(st, ib.Generation, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonSigning, msg)
}

// signed completes the success of a build whose job signed it: status.image's signature,
// attestations (the signed ones, each with its .att digest) and sbom, the completion time,
// and the Ready message says it was signed.
func signed(ib *v1alpha1.ImageBuild, job publishJob) {
	st := &ib.Status
	s := job.res.signed
	st.Phase = v1alpha1.PhaseSucceeded
	st.Failure = nil
	st.CompletionTime = &metav1.Time{Time: job.end}
	st.Image.Signature = s.Signature
	st.Image.Attestations = nil
	for _, a := range s.Attestations {
		st.Image.Attestations = append(st.Image.Attestations, v1alpha1.AttestationStatus{Subject: a.Subject, Platform: a.Platform,
			Manifest: a.Manifest, PredicateTypes: a.PredicateTypes, Signed: a.Signed})
	}
	st.Image.SBOM = s.SBOM
	ready := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
	msg := "Built and pushed the image"
	if ready != nil && ready.Reason == v1alpha1.ReasonSucceeded {
		msg = ready.Message
	}
	msg = strings.Replace(msg, "Built and pushed", "Built, pushed and signed", 1)
	msg += fmt.Sprintf("; signature %s", s.Signature)
	setCondition(st, ib.Generation, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, msg)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionReconciling)
	apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
}

// maxPublishMessage bounds the message of a job's failure (status.failure.message, the
// conditions' and the event's).
const maxPublishMessage = 1000

// publishFailure is the failure of a job that failed: its reason by the step that failed and
// why (IndexInvalid or PushFailed for the index; AttestationInvalid or SigningFailed for the
// signing), its message the error's, sanitised and shortened. The error's text holds nothing
// a registry sent (imageindex.RegistryError).
func publishFailure(err error) v1alpha1.Failure {
	step := "index"
	if pe, ok := errors.AsType[*publishError](err); ok {
		step = pe.step
	}
	msg := result.Excerpt(err.Error(), maxPublishMessage)
	switch {
	case step == "sign" && isInvalid[*imagesign.InvalidError](err):
		return v1alpha1.Failure{Reason: v1alpha1.ReasonAttestationInvalid, Message: "Signing the attestations: " + msg}
	case step == "sign":
		return v1alpha1.Failure{Reason: v1alpha1.ReasonSigningFailed, Message: "Signing: " + msg}
	case isInvalid[*imageindex.InvalidError](err):
		return v1alpha1.Failure{Reason: v1alpha1.ReasonIndexInvalid, Message: "Pushing the image index: " + msg}
	}
	return v1alpha1.Failure{Reason: string(result.ReasonPushFailed), Message: "Pushing the image index: " + msg}
}

func isInvalid[T error](err error) bool {
	_, ok := errors.AsType[T](err)
	return ok
}

// attestationsOf are the attestations an executor reported (result.Attestations), as
// status.image.attestations, and whether one of them is an SBOM.
func attestationsOf(res result.Result) ([]v1alpha1.AttestationStatus, bool) {
	var out []v1alpha1.AttestationStatus
	sbom := false
	for _, a := range res.Attestations {
		if !sha256Digest.MatchString(a.Image) || !sha256Digest.MatchString(a.Manifest) {
			continue // the result is the executor image's to write
		}
		as := v1alpha1.AttestationStatus{Subject: a.Image, Platform: result.Excerpt(a.Platform, 32), Manifest: a.Manifest}
		for _, p := range a.PredicateTypes {
			if len(as.PredicateTypes) < 16 {
				as.PredicateTypes = append(as.PredicateTypes, result.Excerpt(p, 256))
			}
			sbom = sbom || imagesign.IsSBOM(p)
		}
		out = append(out, as)
	}
	return out, sbom
}
