package controllers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/imageindex"
	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/sign"
	"github.com/slipway-dev/slipway/test/testenv"
)

// These tests play the executor pod's part as the other envtest tests do (the pod's result
// in its termination message), and push what an executor run with --provenance (and --sbom)
// pushes, made with the executor's own attest package, to Debian's docker-registry. The real
// cosign CLIs (testenv.Cosigns: v2 and v3, built from their Go modules) then verify what the
// manager signed, with the public key alone: cosign runs with --allow-http-registry and
// --insecure-ignore-tlog=true (a plain-HTTP registry, no Rekor), as executor/sign's tests.
//
// SLSA provenance v1 is cosign's --type slsaprovenance1: its --type slsaprovenance means
// SLSA v0.2 and does not match the v1 statements the executor writes (executor/sign's
// TestPushAttestations_cosignVerifies shows both).

// attested is what one executor run with attestations pushed: its index, the image in it and
// the attestation manifest about the image.
type attested struct{ index, image, attestation string }

// pushAttested pushes, as an executor run with --provenance=min (--sbom with sbom) does, an
// OCI image of platform and the index of it and its attestation manifest (executor/attest:
// BuildKit's layout), the index by digest and under each of tags.
func pushAttested(t *testing.T, reg *testenv.Registry, repo, platform string, sbom bool, tags ...string) attested {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	osName, arch, variant := splitPlatform(platform)
	cf.OS, cf.Architecture, cf.Variant = osName, arch, variant
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	p := ocispec.Platform{OS: osName, Architecture: arch, Variant: variant}
	subject := attest.Subject{Names: []string{repo + ":v1"}, Platform: &p, Digests: []digest.Digest{digest.Digest(d.String())}}
	now := time.Now()
	prov, err := attest.Provenance(attest.Build{Mode: attest.ModeMin, BuilderID: "slipway/executor:test",
		Git:            &attest.GitSource{URL: "https://git.example.com/org/app.git", Commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904"},
		DockerfilePath: "Dockerfile", Dockerfile: []byte("FROM scratch\n"), Platform: platform,
		InvocationID: "test", StartedOn: now, FinishedOn: now}, subject)
	if err != nil {
		t.Fatalf("making the provenance: %v", err)
	}
	statements := []attest.Statement{{PredicateType: attest.PredicateSLSAProvenance, JSON: prov}}
	if sbom {
		doc := []byte(`{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"test","packages":[]}`)
		st, err := attest.SBOM(doc, attest.PredicateSPDX, subject)
		if err != nil {
			t.Fatal(err)
		}
		statements = append(statements, attest.Statement{PredicateType: attest.PredicateSPDX, JSON: st})
	}
	att, err := attest.Manifest(statements)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := attest.Index([]attest.PlatformImage{{Platform: v1.Platform{OS: osName, Architecture: arch, Variant: variant}, Image: img, Attestation: att}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ad, err := att.Digest()
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range append([]name.Reference{r.Digest(id.String())}, tagRefs(r, tags)...) {
		if err := remote.WriteIndex(ref, idx, remote.WithAuth(reg.Auth())); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
	}
	return attested{index: id.String(), image: d.String(), attestation: ad.String()}
}

func tagRefs(r name.Repository, tags []string) []name.Reference {
	var out []name.Reference
	for _, t := range tags {
		out = append(out, r.Tag(t))
	}
	return out
}

// attestedResult is the result of an executor run that pushed a under the references refs
// (for a platform's pod: by digest, with its platform).
func attestedResult(a attested, platform string, sbom bool, refs ...string) string {
	predicates := []string{attest.PredicateSLSAProvenance}
	if sbom {
		predicates = append(predicates, attest.PredicateSPDX)
	}
	res := result.Result{Success: true, Digest: a.index, References: refs,
		Attestations: []result.Attestation{{Platform: platform, Image: a.image, Manifest: a.attestation, PredicateTypes: predicates}},
		Commit:       "4b825dc642cb6eb9a060e54bf8d69288fbee4904", CacheHits: 1, CacheMisses: 1}
	if strings.Contains(refs[0], "@sha256:") && !strings.Contains(refs[0], ":v1@") { // by digest: a platform's pod
		res.Platforms = []result.Platform{{Platform: platform, Digest: a.image}}
	}
	return encodeResult(res)
}

// cosignKey is a key pair of the real cosign generate-key-pair, as a Secret's data and the
// public key's file.
type cosignKey struct {
	priv, pub []byte
	password  string
	pubPath   string
}

func newCosignKey(t *testing.T, password string) cosignKey {
	t.Helper()
	priv, pub := testenv.CosignKeyPair(t, password)
	path := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(path, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	return cosignKey{priv: priv, pub: pub, password: password, pubPath: path}
}

// keySecret creates Secret name in ns with data.
func keySecret(t *testing.T, c client.Client, ns, name string, data map[string][]byte) {
	t.Helper()
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}); err != nil {
		t.Fatal(err)
	}
}

func (k cosignKey) data() map[string][]byte {
	return map[string][]byte{"cosign.key": k.priv, "cosign.password": []byte(k.password)}
}

// secrets are the strings that must show nowhere: the password, and every 24-byte piece of
// the key file's body.
func (k cosignKey) secrets() []string {
	out := []string{k.password}
	body := strings.Join(slices.DeleteFunc(strings.Split(string(k.priv), "\n"), func(l string) bool {
		return strings.HasPrefix(l, "-----") || l == ""
	}), "")
	for i := 0; i+24 <= len(body); i += 24 {
		out = append(out, body[i:i+24])
	}
	return out
}

// cosignRun runs the real cosign cli against reg with args and returns its standard output,
// its error output and its error.
func cosignRun(t *testing.T, cli testenv.CosignCLI, reg *testenv.Registry, args ...string) (string, string, error) {
	t.Helper()
	cmd := testenv.CosignCommand(t, cli.Path, reg.DockerConfig(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}()
	err := cmd.Run()
	return out.String(), errb.String(), err
}

var cosignFlags = []string{"--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry"}

// cosignVerifies fails the test unless `cosign verify --key` of each pinned cosign (v2, v3)
// accepts ref.
func cosignVerifies(t *testing.T, reg *testenv.Registry, pubPath, ref string) {
	t.Helper()
	for _, cli := range testenv.Cosigns(t) {
		_, errOut, err := cosignRun(t, cli, reg, append(append([]string{"verify", "--key", pubPath}, cosignFlags...), ref)...)
		if err != nil {
			t.Errorf("%s verify --key %s: %v\n%s", cli, ref, err, errOut)
		}
	}
}

// cosignVerifiesAttestation fails the test unless `cosign verify-attestation --key --type
// typ` of each pinned cosign accepts ref, and returns the statements the newest printed
// (their payloads decoded).
func cosignVerifiesAttestation(t *testing.T, reg *testenv.Registry, pubPath, typ, ref string) []map[string]any {
	t.Helper()
	var statements []map[string]any
	for _, cli := range testenv.Cosigns(t) {
		out, errOut, err := cosignRun(t, cli, reg, append(append([]string{"verify-attestation", "--key", pubPath, "--type", typ}, cosignFlags...), ref)...)
		if err != nil {
			t.Errorf("%s verify-attestation --type %s %s: %v\n%s", cli, typ, ref, err, errOut)
			continue
		}
		statements = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var env struct{ Payload string }
			if json.Unmarshal([]byte(line), &env) != nil {
				continue
			}
			b, _ := base64.StdEncoding.DecodeString(env.Payload)
			var st map[string]any
			if json.Unmarshal(b, &st) == nil {
				statements = append(statements, st)
			}
		}
	}
	return statements
}

// subjectDigests are the sha256 digests a statement names.
func subjectDigests(st map[string]any) []string {
	var out []string
	subs, _ := st["subject"].([]any)
	for _, s := range subs {
		m, _ := s.(map[string]any)
		d, _ := m["digest"].(map[string]any)
		if h, ok := d["sha256"].(string); ok && !slices.Contains(out, "sha256:"+h) {
			out = append(out, "sha256:"+h)
		}
	}
	return out
}

// noSecretAnywhere fails the test when any of secrets shows in the ImageBuild, the events of
// ns, or the managers' log.
func noSecretAnywhere(t *testing.T, c client.Client, ns string, key client.ObjectKey, secrets ...string) {
	t.Helper()
	noCredentials(t, c, ns, key, secrets...)
	log := managerLog.String()
	if len(log) == 0 {
		t.Error("the managers logged nothing: the log search would prove nothing")
	}
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the manager's log shows a secret (%q)", s)
		}
	}
}

// A signed single-platform build: the executor pod gets the attestation flags and no key; it
// pushes an index of its image and attestation manifest (provenance and SBOM); the manager
// then signs the index under the tag and the attestations, with the ImageBuild's key and the
// push Secret's credentials, and the build succeeds with the signature's and attestations'
// digests in its status. The real cosign verifies the signature and the provenance and SBOM
// attestations of the tag, and of the image by digest. The key, its password and the
// registry's password show nowhere: status, events, log.
func TestImageBuildReconciler_Reconcile_signed(t *testing.T) {
	const user, password = "pusher", "sign-Passw0rd-77"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	repo := reg.Ref("team/signed")
	key := newCosignKey(t, "cosign-key-Passw0rd-31")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	pushSecret(t, c, ns, "push", reg, user, password)
	keySecret(t, c, ns, "cosign", key.data())
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1", PushSecretRef: &corev1.LocalObjectReference{Name: "push"}}
		ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
		ib.Spec.SBOM = true
	})
	pod := waitPod(t, c, ns, "app-1-1")
	args := pod.Spec.Containers[0].Args
	for _, want := range []string{"--provenance=min", "--sbom=true", "--sbom-format=spdx", "--builder-id=slipway/executor:test"} {
		if !slices.Contains(args, want) {
			t.Errorf("executor args %v lack %s", args, want)
		}
	}
	b, _ := json.Marshal(pod.Spec)
	if bytes.Contains(b, []byte("cosign")) || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--sign-key") }) {
		t.Errorf("the executor pod is given the signing key: %s", b)
	}

	a := pushAttested(t, reg, repo, "linux/amd64", true, "v1")
	k.finish(ns, "app-1-1", 0, "Completed", attestedResult(a, "linux/amd64", true, repo+":v1@"+a.index))
	ib := waitStatus(t, c, ibKey, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))

	img := ib.Status.Image
	if img == nil || img.Digest != a.index || !sha256Digest.MatchString(img.Signature) || !img.SBOM {
		t.Fatalf("status.image = %+v, want the index %s signed, with an SBOM", img, a.index)
	}
	r, _ := name.NewRepository(repo)
	sigTag, _ := sign.SignatureTag(r.Digest(a.index))
	if desc, err := remote.Head(sigTag, remote.WithAuth(reg.Auth())); err != nil || desc.Digest.String() != img.Signature {
		t.Errorf("%s: %v, %v; status.image.signature %s", sigTag, desc, err, img.Signature)
	}
	if len(img.Attestations) != 2 {
		t.Fatalf("status.image.attestations = %+v, want the image's and the index's", img.Attestations)
	}
	wantTypes := []string{attest.PredicateSLSAProvenance, attest.PredicateSPDX}
	for i, want := range []struct{ subject, platform, manifest string }{{a.image, "linux/amd64", a.attestation}, {a.index, "", ""}} {
		got := img.Attestations[i]
		attTag, _ := sign.AttestationTag(r.Digest(want.subject))
		desc, err := remote.Head(attTag, remote.WithAuth(reg.Auth()))
		if got.Subject != want.subject || got.Platform != want.platform || got.Manifest != want.manifest ||
			!slices.Equal(got.PredicateTypes, wantTypes) || err != nil || desc.Digest.String() != got.Signed {
			t.Errorf("status.image.attestations[%d] = %+v; %s is %v (%v)", i, got, attTag, desc, err)
		}
	}
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.Contains(msg, "signed") || !strings.Contains(msg, img.Signature) {
		t.Errorf("Ready message %q does not say the image was signed", msg)
	}
	if ib.Status.CompletionTime == nil || ib.Status.Failure != nil || ib.Status.History[0].Result != v1alpha1.BuildResultSucceeded {
		t.Errorf("status: %s, history %+v", describe(ib), ib.Status.History)
	}

	// What the standard tools verify, with the public key alone.
	cosignVerifies(t, reg, key.pubPath, repo+":v1")
	for _, ref := range []string{repo + ":v1", repo + "@" + a.image} {
		sts := cosignVerifiesAttestation(t, reg, key.pubPath, "slsaprovenance1", ref)
		if len(sts) != 1 || sts[0]["predicateType"] != attest.PredicateSLSAProvenance {
			t.Errorf("%s: cosign verified %d provenance statements: %v", ref, len(sts), sts)
			continue
		}
		// Exactly the image and the index: the statement was signed about nothing else.
		if got := subjectDigests(sts[0]); !slices.Equal(got, []string{a.image, a.index}) {
			t.Errorf("%s: the signed statement's subjects are %v, want the image and the index", ref, got)
		}
		cosignVerifiesAttestation(t, reg, key.pubPath, "spdxjson", ref)
	}

	waitEvent(t, c, ns, "Succeeded")
	noSecretAnywhere(t, c, ns, ibKey, append(key.secrets(), password, base64.StdEncoding.EncodeToString([]byte(user+":"+password)))...)
}

// A signing key that cannot be used fails the build before any pod exists, with reason
// SigningKeyInvalid, Stalled and not retried, and a message that names the Secret and what is
// wrong: missing, without cosign.key or cosign.password, a wrong password, not a cosign key.
// Neither the password (right or wrong) nor any piece of the key shows in the status, the
// events or the log.
func TestImageBuildReconciler_Reconcile_signingKeyInvalid(t *testing.T) {
	key := newCosignKey(t, "the-right-Passw0rd")
	const wrong = "a-wrong-Guess-4242"
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	keySecret(t, c, ns, "wrong-password", map[string][]byte{"cosign.key": key.priv, "cosign.password": []byte(wrong)})
	keySecret(t, c, ns, "no-password", map[string][]byte{"cosign.key": key.priv})
	keySecret(t, c, ns, "no-key", map[string][]byte{"cosign.password": []byte(key.password)})
	plain := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPlainEd25519KeyThatIsNotCosignFormat0000\n-----END PRIVATE KEY-----\n"
	keySecret(t, c, ns, "plain", map[string][]byte{"cosign.key": []byte(plain), "cosign.password": []byte(key.password)})
	startManager(t, ns, Options{})

	for _, tc := range []struct{ name, secret, want string }{
		{"missing", "absent", `Secret "absent" (spec.signing.secretRef) not found`},
		{"wrongpw", "wrong-password", `Secret "wrong-password" (spec.signing.secretRef): cosign.password does not decrypt cosign.key`},
		{"nopw", "no-password", `Secret "no-password" (spec.signing.secretRef) has no key cosign.password`},
		{"nokey", "no-key", `Secret "no-key" (spec.signing.secretRef) has no key cosign.key`},
		{"plain", "plain", `Secret "plain" (spec.signing.secretRef): cosign.key is not a private key in cosign's encrypted format`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ibKey := newImageBuild(t, c, ns, tc.name, func(ib *v1alpha1.ImageBuild) {
				ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: tc.secret}}
			})
			ib := waitStatus(t, c, ibKey, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonSigningKeyInvalid))
			if f := ib.Status.Failure; ib.Status.Phase != v1alpha1.PhaseFailed || f == nil || !strings.Contains(f.Message, tc.want) {
				t.Errorf("status %s, failure %+v; want it to say %q", describe(ib), f, tc.want)
			}
			time.Sleep(300 * time.Millisecond)
			for _, p := range podNames(t, c, ns) {
				if strings.HasPrefix(p, tc.name+"-") {
					t.Errorf("pod %s was created for a build whose key cannot be used", p)
				}
			}
			if ib = waitStatus(t, c, ibKey, "still failed", phaseIs(v1alpha1.PhaseFailed)); ib.Status.Retries != 0 || ib.Status.NextRetryTime != nil {
				t.Errorf("retried: %s", describe(ib))
			}
			noSecretAnywhere(t, c, ns, ibKey, append(key.secrets(), wrong, "PlainEd25519KeyThatIsNotCosign")...)
		})
	}
}

// A signing push that the registry refuses fails the build with SigningFailed, which is
// retried as a failed push is: a new attempt, a new pod. Here the push Secret's credentials
// are wrong (the executor pushed with right ones); neither password nor the key shows.
func TestImageBuildReconciler_Reconcile_signingFailed(t *testing.T) {
	const user, password, wrong = "pusher", "right-Passw0rd-5", "wrong-Passw0rd-6"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth(user, password))
	repo := reg.Ref("team/refused")
	key := newCosignKey(t, "")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	pushSecret(t, c, ns, "push", reg, user, wrong)
	keySecret(t, c, ns, "cosign", key.data())
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1", PushSecretRef: &corev1.LocalObjectReference{Name: "push"}}
		ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
		ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](1)}
	})
	a := pushAttested(t, reg, repo, "linux/amd64", false, "v1")
	k.finish(ns, "app-1-1", 0, "Completed", attestedResult(a, "linux/amd64", false, repo+":v1@"+a.index))
	waitPod(t, c, ns, "app-1-2") // the retry
	ib := waitStatus(t, c, ibKey, "retried", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.Attempt == 2 })
	f := ib.Status.Failure
	if f == nil || f.Reason != v1alpha1.ReasonSigningFailed || !strings.Contains(f.Message, "pushed under its tags but is not signed") ||
		!strings.Contains(f.Message, "refused the credentials") || ib.Status.Retries != 1 {
		t.Errorf("after the failed signing: %s, failure %+v", describe(ib), f)
	}
	k.finish(ns, "app-1-2", 0, "Completed", attestedResult(a, "linux/amd64", false, repo+":v1@"+a.index))
	ib = waitStatus(t, c, ibKey, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonSigningFailed))
	r, _ := name.NewRepository(repo)
	sigTag, _ := sign.SignatureTag(r.Digest(a.index))
	if _, err := remote.Head(sigTag, remote.WithAuth(reg.Auth())); err == nil {
		t.Errorf("%s exists", sigTag)
	}
	noSecretAnywhere(t, c, ns, ibKey, append(key.secrets()[1:], password, wrong,
		base64.StdEncoding.EncodeToString([]byte(user+":"+wrong)))...)
}

// The manager's default key (--default-signing-secret: a Secret of the manager's namespace)
// signs the builds of two other namespaces whose ImageBuilds name no key; cosign verifies
// both. Afterwards no Secret outside the manager's namespace holds the key or its password,
// and no executor pod mounts anything. An ImageBuild of runPolicy Parallel, whose overlapping
// builds the manager would not sign, is refused (SigningUnsupported).
func TestImageBuildReconciler_Reconcile_defaultSigningKey(t *testing.T) {
	reg := testenv.StartRegistry(t)
	key := newCosignKey(t, "default-Key-Passw0rd")
	c := startEnv(t)
	managerNS := newNamespace(t, c, nil)
	keySecret(t, c, managerNS, "slipway-signing", key.data())
	nss := []string{newNamespace(t, c, nil), newNamespace(t, c, nil)}
	startManagerIn(t, nss, Options{DefaultSigningSecret: ktypes.NamespacedName{Namespace: managerNS, Name: "slipway-signing"}}, nil, nil)
	k := kubelet{t, c}

	for i, ns := range nss {
		repo := reg.Ref(fmt.Sprintf("team%d/app", i))
		ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1"} })
		pod := waitPod(t, c, ns, "app-1-1")
		if len(pod.Spec.Volumes) != 0 || len(pod.Spec.InitContainers) != 0 {
			t.Errorf("the executor pod in %s has volumes %v", ns, pod.Spec.Volumes)
		}
		a := pushAttested(t, reg, repo, "linux/amd64", false, "v1")
		k.finish(ns, "app-1-1", 0, "Completed", attestedResult(a, "linux/amd64", false, repo+":v1@"+a.index))
		ib := waitStatus(t, c, ibKey, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))
		if ib.Status.Image == nil || ib.Status.Image.Signature == "" {
			t.Errorf("%s: status.image = %+v, want it signed", ns, ib.Status.Image)
		}
		cosignVerifies(t, reg, key.pubPath, repo+":v1")
		cosignVerifiesAttestation(t, reg, key.pubPath, "slsaprovenance1", repo+":v1")
		noSecretAnywhere(t, c, ns, ibKey, key.secrets()...)
	}

	// runPolicy Parallel would leave overlapping builds unsigned: refused before any pod.
	parallel := newImageBuild(t, c, nss[0], "parallel", func(ib *v1alpha1.ImageBuild) { ib.Spec.RunPolicy = v1alpha1.RunPolicyParallel })
	ib := waitStatus(t, c, parallel, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonSigningUnsupported))
	if f := ib.Status.Failure; f == nil || !strings.Contains(f.Message, "the manager's default signing key") || ib.Status.PodName != "" {
		t.Errorf("a Parallel build under the default key: %s, failure %+v", describe(ib), f)
	}

	var secrets corev1.SecretList
	if err := c.List(context.Background(), &secrets); err != nil {
		t.Fatal(err)
	}
	pieces := key.secrets()
	for _, s := range secrets.Items {
		if s.Namespace == managerNS && s.Name == "slipway-signing" {
			continue
		}
		b, _ := json.Marshal(s)
		for _, p := range pieces {
			if strings.Contains(string(b), p) || strings.Contains(string(b), base64.StdEncoding.EncodeToString([]byte(p))) {
				t.Errorf("Secret %s/%s holds the default signing key or its password", s.Namespace, s.Name)
				break
			}
		}
	}
}

// A signed multi-platform build whose pods attach provenance: each pod pushes its own index
// (image and attestation manifest) by digest; the manager's index names both images, then
// both attestation manifests with the annotations the pods' indexes gave them, is pushed under
// the tag, and signed with its attestations. cosign verifies the tag's signature, its
// provenance (one statement per platform, each about its image and the index) and each
// image's.
func TestImageBuildReconciler_Reconcile_platformIndexSigned(t *testing.T) {
	reg := testenv.StartRegistry(t)
	repo := reg.Ref("team/multi")
	key := newCosignKey(t, "multi-Passw0rd")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	keySecret(t, c, ns, "cosign", key.data())
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1"}
		ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
	})
	amd := pushAttested(t, reg, repo, "linux/amd64", false)
	arm := pushAttested(t, reg, repo, "linux/arm64", false)
	for _, p := range []struct {
		pod, platform string
		a             attested
	}{{"app-1-1-linux-amd64", "linux/amd64", amd}, {"app-1-1-linux-arm64", "linux/arm64", arm}} {
		if args := waitPod(t, c, ns, p.pod).Spec.Containers[0].Args; !slices.Contains(args, "--provenance=min") {
			t.Errorf("%s args %v lack --provenance=min", p.pod, args)
		}
		k.finish(ns, p.pod, 0, "Completed", attestedResult(p.a, p.platform, false, repo+"@"+p.a.index))
	}
	ib := waitStatus(t, c, ibKey, "Ready", conditionIs("Ready", metav1.ConditionTrue, v1alpha1.ReasonSucceeded))
	for i, a := range []attested{amd, arm} {
		if ps := ib.Status.Platforms[i]; ps.Digest != a.image || ps.Index != a.index {
			t.Errorf("status.platforms[%d] = %+v, want image %s in index %s", i, ps, a.image, a.index)
		}
	}

	tag, _ := name.NewTag(repo + ":v1")
	idx, err := remote.Index(tag)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	mt, _ := idx.MediaType()
	if d.String() != ib.Status.Image.Digest || mt != types.OCIImageIndex {
		t.Errorf("%s is %s (%s), status.image.digest %s", tag, d, mt, ib.Status.Image.Digest)
	}
	im, _ := idx.IndexManifest()
	var got []string
	for _, m := range im.Manifests {
		got = append(got, fmt.Sprintf("%s %s %s=%s", m.Platform, m.Digest, imageindex.AnnotationReferenceType, m.Annotations[imageindex.AnnotationReferenceType]+
			"/"+m.Annotations[imageindex.AnnotationReferenceDigest]))
	}
	want := []string{
		"linux/amd64 " + amd.image + " vnd.docker.reference.type=/", "linux/arm64 " + arm.image + " vnd.docker.reference.type=/",
		"unknown/unknown " + amd.attestation + " vnd.docker.reference.type=attestation-manifest/" + amd.image,
		"unknown/unknown " + arm.attestation + " vnd.docker.reference.type=attestation-manifest/" + arm.image,
	}
	if !slices.Equal(want, got) {
		t.Errorf("the index's manifests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ib.Status.Image.Signature == "" || len(ib.Status.Image.Attestations) != 3 || ib.Status.Image.Attestations[2].Subject != d.String() {
		t.Errorf("status.image = %+v, want signed, with the attestations of both images and of the index", ib.Status.Image)
	}

	cosignVerifies(t, reg, key.pubPath, repo+":v1")
	sts := cosignVerifiesAttestation(t, reg, key.pubPath, "slsaprovenance1", repo+":v1")
	var about [][]string
	for _, st := range sts {
		about = append(about, subjectDigests(st))
	}
	slices.SortFunc(about, func(x, y []string) int { return strings.Compare(strings.Join(x, ","), strings.Join(y, ",")) })
	wantAbout := [][]string{{amd.image, d.String()}, {arm.image, d.String()}}
	slices.SortFunc(wantAbout, func(x, y []string) int { return strings.Compare(strings.Join(x, ","), strings.Join(y, ",")) })
	if fmt.Sprint(about) != fmt.Sprint(wantAbout) {
		t.Errorf("the tag's provenance statements are about %v, want %v", about, wantAbout)
	}
	for _, a := range []attested{amd, arm} {
		cosignVerifiesAttestation(t, reg, key.pubPath, "slsaprovenance1", repo+"@"+a.image)
	}
	noSecretAnywhere(t, c, ns, ibKey, key.secrets()...)
}

// The API server refuses what signing and attestations cannot be.
func TestImageBuild_validationSigning(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	signing := &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
	for _, tc := range []struct {
		name   string
		mutate func(*v1alpha1.ImageBuild)
		want   string
	}{
		{"signing with runPolicy Parallel", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Signing, ib.Spec.RunPolicy = signing, v1alpha1.RunPolicyParallel
		}, "runPolicy Parallel is not supported with signing"},
		{"a key Secret without a name", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Signing = &v1alpha1.Signing{}
		}, "signing.secretRef.name must name a Secret"},
		{"an SBOM format without an SBOM", func(ib *v1alpha1.ImageBuild) { ib.Spec.SBOMFormat = v1alpha1.SBOMFormatCycloneDX }, "sbomFormat applies to an SBOM"},
		{"an unknown provenance mode", func(ib *v1alpha1.ImageBuild) { ib.Spec.Provenance = "full" }, "spec.provenance"},
		{"an unknown SBOM format", func(ib *v1alpha1.ImageBuild) { ib.Spec.SBOM, ib.Spec.SBOMFormat = true, "syft" }, "spec.sbomFormat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ib := &v1alpha1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: v1alpha1.ImageBuildSpec{
				Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
				Output: v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
			}}
			tc.mutate(ib)
			err := c.Create(context.Background(), ib)
			if err == nil {
				_ = c.Delete(context.Background(), ib)
				t.Fatal("the API server accepted the ImageBuild")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %s", err, tc.want)
			}
		})
	}
	ok := &v1alpha1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Name: "good", Namespace: ns}, Spec: v1alpha1.ImageBuildSpec{
		Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
		Output: v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
		SBOM:   true, SBOMFormat: v1alpha1.SBOMFormatCycloneDX, Provenance: v1alpha1.ProvenanceMax, Signing: signing,
		RunPolicy: v1alpha1.RunPolicySerialLatestOnly,
	}}
	if err := c.Create(context.Background(), ok); err != nil {
		t.Fatalf("creating a valid signed ImageBuild: %v", err)
	}
	def := &v1alpha1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Name: "defaulted", Namespace: ns}, Spec: v1alpha1.ImageBuildSpec{
		Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
		Output: v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
	}}
	if err := c.Create(context.Background(), def); err != nil {
		t.Fatal(err)
	}
	if def.Spec.Provenance != v1alpha1.ProvenanceMin {
		t.Errorf("spec.provenance defaulted to %q, want min", def.Spec.Provenance)
	}
}

// An unsigned build's status.image.attestations are what the executor reported: each image's
// attestation manifest with its predicate types, sbom when one is an SBOM; an entry whose
// digests are none (the result is the executor image's to write) is left out.
func TestComputeStatus_attestations(t *testing.T) {
	img, att := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	res := result.Result{Success: true, Digest: testDigest, References: []string{"registry.example.com/org/app:v1@" + testDigest},
		Attestations: []result.Attestation{
			{Platform: "linux/amd64", Image: img, Manifest: att, PredicateTypes: []string{attest.PredicateSLSAProvenance, attest.PredicateCycloneDX}},
			{Platform: "linux/arm64", Image: "sha256:nope", Manifest: att},
		}}
	ib := makeImageBuild("app", "ns").Status(v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhaseRunning, PodName: "app-1-1", Attempt: 1}).Obj()
	now := time.Now()
	pod := makePod("app-1-1").Terminated(now.Add(-time.Minute), now, 0, "Completed", encodeResult(res)).Obj()
	st := computeStatus(ib, pod, now)
	want := []v1alpha1.AttestationStatus{{Subject: img, Platform: "linux/amd64", Manifest: att,
		PredicateTypes: []string{attest.PredicateSLSAProvenance, attest.PredicateCycloneDX}}}
	if st.Image == nil || !slices.EqualFunc(want, st.Image.Attestations, func(a, b v1alpha1.AttestationStatus) bool {
		return a.Subject == b.Subject && a.Platform == b.Platform && a.Manifest == b.Manifest && slices.Equal(a.PredicateTypes, b.PredicateTypes) && b.Signed == ""
	}) || !st.Image.SBOM || st.Image.Signature != "" {
		t.Errorf("status.image = %+v, want %+v with an SBOM, unsigned", st.Image, want)
	}
}

// A platform's pod that attached attestations reports its index as the digest and its image
// as its one platform's (or its attestation's); one without reports the image alone.
func TestPlatformDigests(t *testing.T) {
	img, idx := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("3", 64)
	now := time.Now()
	for _, tc := range []struct {
		name       string
		res        result.Result
		image, ind string
	}{
		{"platforms", result.Result{Digest: idx, Platforms: []result.Platform{{Platform: "linux/arm64", Digest: img}}}, img, idx},
		{"attestations", result.Result{Digest: idx, Attestations: []result.Attestation{{Image: img, Manifest: testDigest}}}, img, idx},
		{"no attestations", result.Result{Digest: img, Platforms: []result.Platform{{Platform: "linux/arm64", Digest: img}}}, img, ""},
		{"an image digest that is none", result.Result{Digest: idx, Platforms: []result.Platform{{Platform: "linux/arm64", Digest: "sha256:x"}}}, idx, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.res.Success = true
			pod := makePod("p").Terminated(now, now, 0, "Completed", encodeResult(tc.res)).Obj()
			if image, index := platformDigests(pod, tc.res.Digest); image != tc.image || index != tc.ind {
				t.Errorf("platformDigests = %s, %s; want %s, %s", image, index, tc.image, tc.ind)
			}
		})
	}
}

// A key that stopped decrypting between the pods' start and the index (its Secret changed)
// fails a multi-platform build with SigningKeyInvalid before the index is pushed: no tag names
// an unsigned index.
func TestImageBuildReconciler_Reconcile_platformKeyChanged(t *testing.T) {
	reg := testenv.StartRegistry(t)
	repo := reg.Ref("team/changed")
	key := newCosignKey(t, "first-Passw0rd")
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	keySecret(t, c, ns, "cosign", key.data())
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Platforms = []string{"linux/amd64", "linux/arm64"}
		ib.Spec.Emulation = true
		ib.Spec.NodeSelector = map[string]string{"slipway-test/pool": ns}
		ib.Spec.Output = v1alpha1.Output{Image: repo + ":v1"}
		ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
	})
	waitPod(t, c, ns, "app-1-1-linux-amd64")
	var s corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "cosign"}, &s); err != nil {
		t.Fatal(err)
	}
	s.Data["cosign.password"] = []byte("changed-Passw0rd")
	if err := c.Update(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		a := pushAttested(t, reg, repo, p, false)
		k.finish(ns, "app-1-1-"+platformSuffix(p), 0, "Completed", attestedResult(a, p, false, repo+"@"+a.index))
	}
	ib := waitStatus(t, c, ibKey, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, v1alpha1.ReasonSigningKeyInvalid))
	if f := ib.Status.Failure; f == nil || !strings.Contains(f.Message, "The image index was not pushed") ||
		!strings.Contains(f.Message, "cosign.password does not decrypt cosign.key") {
		t.Errorf("failure %+v", f)
	}
	tag, _ := name.NewTag(repo + ":v1")
	if _, err := remote.Head(tag); err == nil {
		t.Errorf("%s was pushed although it could not be signed", tag)
	}
	noSecretAnywhere(t, c, ns, ibKey, append(key.secrets(), "changed-Passw0rd")...)
}
