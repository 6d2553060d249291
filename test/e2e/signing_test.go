package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/testenv"
)

// signingFiles: one RUN, so that the image is the build's own.
var signingFiles = map[string]string{
	"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN echo signed > /signed\n",
}

// TestSigning: an ImageBuild with spec.signing, its Secret holding a key the real `cosign
// generate-key-pair` made, on the local cluster. The executor pod builds and pushes the image
// with its provenance attestation (the default, min) and never sees the key: no volume, no
// argument, no environment variable of the pod names the Secret. The manager then signs the
// index under the tag and the provenance statement; the real cosign CLIs (v2 and v3, built from
// their Go modules) verify, with the public key alone, the tag's signature and its SLSA
// provenance, and the image's provenance by digest. The key's password shows nowhere in the
// ImageBuild or the events. A second ImageBuild whose key Secret has the wrong password fails
// at once with SigningKeyInvalid, without a pod.
func TestSigning(t *testing.T) {
	e := newEnv(t, nil, signingFiles)
	const password = "e2e-cosign-Passw0rd"
	priv, pub := testenv.CosignKeyPair(t, password)
	pubPath := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(pubPath, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "cosign", Namespace: e.ns},
			Data: map[string][]byte{"cosign.key": priv, "cosign.password": []byte(password)}},
		{ObjectMeta: metav1.ObjectMeta{Name: "cosign-wrong", Namespace: e.ns},
			Data: map[string][]byte{"cosign.key": priv, "cosign.password": []byte("not-" + password)}},
	} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	ib := e.imageBuild("signed", "e2e/signed")
	ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
	e.create(ib)
	got := e.waitSucceeded("signed")
	b, _ := json.MarshalIndent(got.Status.Image, "", "  ")
	t.Logf("status.image:\n%s", b)

	img := got.Status.Image
	if !strings.HasPrefix(img.Signature, "sha256:") {
		t.Errorf("status.image.signature = %q, want the .sig manifest's digest", img.Signature)
	}
	var imageDigest string
	for _, a := range img.Attestations {
		if a.Subject != img.Digest && a.Manifest != "" {
			imageDigest = a.Subject
		}
		if !strings.HasPrefix(a.Signed, "sha256:") || !slices.Contains(a.PredicateTypes, "https://slsa.dev/provenance/v1") {
			t.Errorf("attestation %+v: want a signed SLSA provenance", a)
		}
	}
	if imageDigest == "" || len(img.Attestations) != 2 {
		t.Fatalf("status.image.attestations = %+v, want the image's and the index's", img.Attestations)
	}

	// The tag names what the status says was signed.
	tag, err := name.ParseReference(e.reg.Ref("e2e/signed:latest"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := remote.Head(tag, remote.WithAuth(e.reg.Auth())); err != nil || d.Digest.String() != img.Digest {
		t.Fatalf("%s: %v %v, want %s", tag, d, err, img.Digest)
	}

	// The executor pod never had the key.
	var pod corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: got.Status.PodName}, &pod); err != nil {
		t.Logf("pod %s: %v (not checked)", got.Status.PodName, err)
	} else {
		spec, _ := json.Marshal(pod.Spec)
		if bytes.Contains(spec, []byte(`"cosign"`)) || bytes.Contains(spec, []byte("sign-key")) {
			t.Errorf("the executor pod is given the signing key: %s", spec)
		}
	}

	// The standard tools verify it with the public key alone.
	dockerConfig := e.reg.DockerConfig(t)
	flags := []string{"--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry"}
	for _, cli := range testenv.Cosigns(t) {
		for _, args := range [][]string{
			append(append([]string{"verify", "--key", pubPath}, flags...), tag.String()),
			append(append([]string{"verify-attestation", "--key", pubPath, "--type", "slsaprovenance1"}, flags...), tag.String()),
			append(append([]string{"verify-attestation", "--key", pubPath, "--type", "slsaprovenance1"}, flags...),
				e.reg.Ref("e2e/signed@"+imageDigest)),
		} {
			cmd := testenv.CosignCommand(t, cli.Path, dockerConfig, args...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s %s: %v\n%s", cli, strings.Join(args, " "), err, out)
			}
		}
	}

	// A wrong password: refused before any pod, and neither password shows.
	bad := e.imageBuild("wrong-key", "e2e/wrong-key")
	bad.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign-wrong"}}
	e.create(bad)
	failed := e.waitFailed("wrong-key")
	if failed.Status.Failure.Reason != v1alpha1.ReasonSigningKeyInvalid || failed.Status.PodName != "" {
		t.Errorf("failure %+v, pod %q; want SigningKeyInvalid without a pod", failed.Status.Failure, failed.Status.PodName)
	}
	e.checkNothingPushed("e2e/wrong-key")

	var evs corev1.EventList
	if err := k8s.List(ctx, &evs, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]any{"the signed ImageBuild": got, "the refused ImageBuild": failed, "the events": evs.Items} {
		b, _ := json.Marshal(v)
		for _, s := range []string{password, base64.StdEncoding.EncodeToString([]byte(password))} {
			if strings.Contains(string(b), s) {
				t.Errorf("%s show the key's password", what)
			}
		}
	}
}
