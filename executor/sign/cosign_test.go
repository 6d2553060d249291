package sign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/test/testenv"
)

// These tests have the real cosign CLIs (testenv.Cosigns: v2 and v3, each
// built from its Go module) verify what this package pushes to Debian's
// docker-registry, with keys made by the real `cosign generate-key-pair`.
// Every verification runs with each version. The registry is plain HTTP on
// 127.0.0.1 and there is no Rekor: cosign runs with --allow-http-registry and
// --insecure-ignore-tlog=true.

// cosignKey is a key pair made by cosign generate-key-pair.
type cosignKey struct {
	signer  Signer
	pubPath string // cosign.pub, for --key
	keyPath string // cosign.key, for cosign sign --key
	pass    string
}

func newCosignKey(t *testing.T, password string) cosignKey {
	t.Helper()
	priv, pub := testenv.CosignKeyPair(t, password)
	s, err := LoadKey(priv, []byte(password))
	if err != nil {
		t.Fatalf("LoadKey of cosign generate-key-pair's key: %v", err)
	}
	dir := t.TempDir()
	k := cosignKey{signer: s, pubPath: filepath.Join(dir, "cosign.pub"), keyPath: filepath.Join(dir, "cosign.key"), pass: password}
	if err := os.WriteFile(k.pubPath, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// cosignRun is what one run of cosign did.
type cosignRun struct {
	cli         testenv.CosignCLI
	out, errOut string
	err         error
}

// runCosign runs cli with args against reg (its credentials in
// DOCKER_CONFIG) and extra environment env.
func runCosign(t *testing.T, cli testenv.CosignCLI, reg *testenv.Registry, env []string, args ...string) cosignRun {
	t.Helper()
	cmd := testenv.CosignCommand(t, cli.Path, reg.DockerConfig(t), args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s did not finish in 2 minutes", cli, strings.Join(args, " "))
	}
	return cosignRun{cli: cli, out: out.String(), errOut: errb.String(), err: err}
}

// verifyFlags are what cosign needs for a plain-HTTP registry without a
// transparency log.
var verifyFlags = []string{"--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry"}

// cosignVerify runs `cosign verify --key pubPath ref` with each cosign.
func cosignVerify(t *testing.T, reg *testenv.Registry, pubPath, ref string) []cosignRun {
	t.Helper()
	var runs []cosignRun
	for _, cli := range testenv.Cosigns(t) {
		args := append([]string{"verify", "--key", pubPath}, verifyFlags...)
		runs = append(runs, runCosign(t, cli, reg, nil, append(args, ref)...))
	}
	return runs
}

// cosignVerifyAttestation runs `cosign verify-attestation --key pubPath
// --type typ ref` with each cosign.
func cosignVerifyAttestation(t *testing.T, reg *testenv.Registry, pubPath, typ, ref string) []cosignRun {
	t.Helper()
	var runs []cosignRun
	for _, cli := range testenv.Cosigns(t) {
		args := append([]string{"verify-attestation", "--key", pubPath, "--type", typ}, verifyFlags...)
		runs = append(runs, runCosign(t, cli, reg, nil, append(args, ref)...))
	}
	return runs
}

// verified fails the test unless every run passed, and returns the
// standard output of each.
func verified(t *testing.T, what string, runs []cosignRun) []string {
	t.Helper()
	var outs []string
	for _, r := range runs {
		if r.err != nil {
			t.Errorf("%s: %s refused: %v\n%s", what, r.cli, r.err, r.errOut)
		}
		outs = append(outs, r.out)
	}
	return outs
}

// refused fails the test unless every run failed saying want, and logs why
// cosign refused.
func refused(t *testing.T, what, want string, runs []cosignRun) {
	t.Helper()
	for _, r := range runs {
		if r.err == nil {
			t.Errorf("%s: %s verified it", what, r.cli)
			continue
		}
		if !strings.Contains(r.errOut, want) {
			t.Errorf("%s: %s refused without saying %q:\n%s", what, r.cli, want, r.errOut)
			continue
		}
		lines := strings.Split(strings.TrimSpace(r.errOut), "\n")
		t.Logf("%s: %s refused: %s", what, r.cli, lines[len(lines)-1])
	}
}

// busybox pushes the test busybox image to reg and returns its reference
// by tag and by digest.
func busybox(t *testing.T, reg *testenv.Registry) (name.Tag, name.Digest) {
	t.Helper()
	tag, err := name.NewTag(testenv.PushBusybox(t, reg), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(tag, remote.WithAuth(reg.Auth()))
	if err != nil {
		t.Fatal(err)
	}
	return tag, tag.Context().Digest(desc.Digest.String())
}

// slsaProvenance is a minimal valid in-toto v1 statement with a SLSA
// Provenance v1 predicate about img: buildDefinition (buildType,
// externalParameters) and runDetails.builder.id are what the spec requires.
func slsaProvenance(img name.Digest) []byte {
	h, _ := v1.NewHash(img.DigestStr())
	b, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": img.Repository.Name(), "digest": map[string]string{"sha256": h.Hex}}},
		"predicateType": "https://slsa.dev/provenance/v1",
		"predicate": map[string]any{
			"buildDefinition": map[string]any{
				"buildType":          "https://slipway.dev/build/v1",
				"externalParameters": map[string]any{"dockerfile": "Dockerfile"},
				"resolvedDependencies": []any{map[string]any{
					"uri":    "git+https://example.com/app.git",
					"digest": map[string]string{"gitCommit": "0123456789abcdef0123456789abcdef01234567"},
				}},
			},
			"runDetails": map[string]any{
				"builder":  map[string]any{"id": "https://slipway.dev/executor"},
				"metadata": map[string]any{"startedOn": "2026-12-01T10:00:00Z", "finishedOn": "2026-12-01T10:01:00Z"},
			},
		},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// spdxDocument is a minimal in-toto statement with an SPDX 2.3 predicate.
func spdxDocument(img name.Digest) []byte {
	h, _ := v1.NewHash(img.DigestStr())
	b, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v0.1",
		"subject":       []any{map[string]any{"name": img.Repository.Name(), "digest": map[string]string{"sha256": h.Hex}}},
		"predicateType": "https://spdx.dev/Document",
		"predicate": map[string]any{
			"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
			"name": "busybox", "documentNamespace": "https://slipway.dev/spdx/test",
			"creationInfo": map[string]any{"created": "2026-12-01T10:00:00Z", "creators": []string{"Tool: slipway"}},
			"packages":     []any{map[string]any{"SPDXID": "SPDXRef-busybox", "name": "busybox", "versionInfo": "1.37.0", "downloadLocation": "NOASSERTION"}},
		},
	})
	if err != nil {
		panic(err)
	}
	return b
}

func TestPushSignature_cosignVerifies(t *testing.T) {
	reg := testenv.StartRegistry(t)
	k := newCosignKey(t, "p4ss-w0rd")
	tag, img := busybox(t, reg)

	sigDigest, err := PushSignature(context.Background(), img, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{img.String(), tag.String()} {
		for _, out := range verified(t, "cosign verify "+ref, cosignVerify(t, reg, k.pubPath, ref)) {
			// cosign prints the verified payloads: ours, for this digest.
			if !strings.Contains(out, img.DigestStr()) || !strings.Contains(out, "cosign container image signature") {
				t.Errorf("cosign verify %s printed %q, want the payload for %s", ref, out, img.DigestStr())
			}
		}
	}
	sigTag, _ := SignatureTag(img)
	desc, err := remote.Head(sigTag)
	if err != nil || desc.Digest != sigDigest {
		t.Errorf("%s is %v (%v), PushSignature returned %s", sigTag, desc, err, sigDigest)
	}
}

func TestPushAttestations_cosignVerifies(t *testing.T) {
	reg := testenv.StartRegistry(t)
	k := newCosignKey(t, "p4ss-w0rd")
	_, img := busybox(t, reg)

	if _, err := PushAttestations(context.Background(), img, [][]byte{slsaProvenance(img), spdxDocument(img)}, k.signer); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"slsaprovenance1", "https://slsa.dev/provenance/v1", "spdxjson"} {
		for _, out := range verified(t, "cosign verify-attestation --type "+typ, cosignVerifyAttestation(t, reg, k.pubPath, typ, img.String())) {
			// It prints the verified envelopes, whose payloads are our
			// statements.
			if !strings.Contains(out, `"payloadType":"application/vnd.in-toto+json"`) {
				t.Errorf("cosign verify-attestation --type %s printed %q", typ, out)
			}
		}
	}
	// cosign's --type slsaprovenance is SLSA v0.2 (https://slsa.dev/provenance/v0.2):
	// a v1 statement is not of that type, and cosign says so.
	refused(t, "--type slsaprovenance (SLSA v0.2) of a v1 statement", "found: https://slsa.dev/provenance/v1",
		cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance", img.String()))
}

// emptyOCIImage is an empty image with cosign's OCI media types.
func emptyOCIImage() v1.Image {
	return mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
}

func TestPushSignature_tamperedFails(t *testing.T) {
	reg := testenv.StartRegistry(t)
	k := newCosignKey(t, "p4ss-w0rd")
	ctx := context.Background()
	tag, img := busybox(t, reg)
	if _, err := PushSignature(ctx, img, k.signer); err != nil {
		t.Fatal(err)
	}
	if _, err := PushAttestations(ctx, img, [][]byte{slsaProvenance(img)}, k.signer); err != nil {
		t.Fatal(err)
	}
	verified(t, "before tampering", cosignVerify(t, reg, k.pubPath, tag.String()))

	t.Run("tag moved to another image", func(t *testing.T) {
		other, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		// library/busybox:latest now names another image.
		if err := remote.Write(tag, other); err != nil {
			t.Fatal(err)
		}
		refused(t, "another image under the tag", "no signatures found", cosignVerify(t, reg, k.pubPath, tag.String()))

		// The attacker copies the signed image's .sig to the other image's
		// .sig tag: the payload names another digest.
		od, _ := other.Digest()
		sigTag, _ := SignatureTag(img)
		sigImg, err := remote.Image(sigTag)
		if err != nil {
			t.Fatal(err)
		}
		otherSigTag, _ := SignatureTag(tag.Context().Digest(od.String()))
		if err := remote.Write(otherSigTag, sigImg); err != nil {
			t.Fatal(err)
		}
		refused(t, "another image's signature copied over", "no matching signatures", cosignVerify(t, reg, k.pubPath, tag.String()))
	})

	t.Run("signature payload changed", func(t *testing.T) {
		// The attacker rewrites the .sig layer: the payload gains an
		// annotation, the signature annotation stays.
		sigTag, _ := SignatureTag(img)
		sigImg, err := remote.Image(sigTag)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := sigImg.Manifest()
		payload := layerBytes(t, sigImg, m.Layers[0].Digest)
		forged := bytes.Replace(payload, []byte(`"optional":null`), []byte(`"optional":{"approved":"yes"}`), 1)
		if bytes.Equal(forged, payload) {
			t.Fatalf("payload %s has no optional field to change", payload)
		}
		tampered, err := mutate.Append(emptyOCIImage(),
			mutate.Addendum{Layer: static.NewLayer(forged, SimpleSigningMediaType), Annotations: m.Layers[0].Annotations})
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(sigTag, tampered); err != nil {
			t.Fatal(err)
		}
		refused(t, "changed payload", "no matching signatures", cosignVerify(t, reg, k.pubPath, img.String()))
	})

	t.Run("attestation statement changed", func(t *testing.T) {
		attTag, _ := AttestationTag(img)
		attImg, err := remote.Image(attTag)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := attImg.Manifest()
		var env map[string]any
		if err := json.Unmarshal(layerBytes(t, attImg, m.Layers[0].Digest), &env); err != nil {
			t.Fatal(err)
		}
		st, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
		changed := bytes.Replace(st, []byte("0123456789abcdef"), []byte("fedcba9876543210"), 1)
		if bytes.Equal(changed, st) {
			t.Fatal("the statement has no commit to change")
		}
		env["payload"] = base64.StdEncoding.EncodeToString(changed)
		forged, _ := json.Marshal(env)
		tampered, err := mutate.Append(emptyOCIImage(),
			mutate.Addendum{Layer: static.NewLayer(forged, DSSEMediaType), Annotations: m.Layers[0].Annotations})
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(attTag, tampered); err != nil {
			t.Fatal(err)
		}
		refused(t, "changed statement", "no matching attestations", cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String()))
	})
}

func TestPushSignature_wrongKeyFails(t *testing.T) {
	reg := testenv.StartRegistry(t)
	signer, other := newCosignKey(t, "one"), newCosignKey(t, "two")
	_, img := busybox(t, reg)
	if _, err := PushSignature(context.Background(), img, signer.signer); err != nil {
		t.Fatal(err)
	}
	if _, err := PushAttestations(context.Background(), img, [][]byte{slsaProvenance(img)}, signer.signer); err != nil {
		t.Fatal(err)
	}
	refused(t, "verify with another key", "no matching signatures", cosignVerify(t, reg, other.pubPath, img.String()))
	refused(t, "verify-attestation with another key", "no matching attestations", cosignVerifyAttestation(t, reg, other.pubPath, "slsaprovenance1", img.String()))
}

// cosignSign signs ref with the real cosign v2's `cosign sign`, which
// writes the .sig layout (v3 writes a Sigstore bundle by default).
func cosignSign(t *testing.T, reg *testenv.Registry, k cosignKey, ref string) {
	t.Helper()
	r := runCosign(t, testenv.Cosigns(t)[0], reg, []string{"COSIGN_PASSWORD=" + k.pass},
		"sign", "--key", k.keyPath, "--tlog-upload=false", "--allow-http-registry", "--yes", ref)
	if r.err != nil {
		t.Fatalf("%s sign: %v\n%s", r.cli, r.err, r.errOut)
	}
}

// TestPushSignature_twoKeys: signatures by two keys, ours and one by the
// real `cosign sign`, in either order, all verify: each push appends.
func TestPushSignature_twoKeys(t *testing.T) {
	reg := testenv.StartRegistry(t)
	a, b, c := newCosignKey(t, "a"), newCosignKey(t, "b"), newCosignKey(t, "c")
	ctx := context.Background()
	_, img := busybox(t, reg)

	if _, err := PushSignature(ctx, img, a.signer); err != nil {
		t.Fatal(err)
	}
	// cosign sign after us appends to our .sig image.
	cosignSign(t, reg, b, img.String())
	// We append after cosign's.
	if _, err := PushSignature(ctx, img, c.signer); err != nil {
		t.Fatal(err)
	}
	for i, k := range []cosignKey{a, b, c} {
		verified(t, fmt.Sprintf("cosign verify with key %d", i), cosignVerify(t, reg, k.pubPath, img.String()))
	}
	sigTag, _ := SignatureTag(img)
	sigImg, err := remote.Image(sigTag)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := sigImg.Manifest(); len(m.Layers) != 3 {
		t.Errorf("%d signature layers, want 3", len(m.Layers))
	}

	// Attestations by two keys, both verify.
	for _, k := range []cosignKey{a, c} {
		if _, err := PushAttestations(ctx, img, [][]byte{slsaProvenance(img)}, k.signer); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range []cosignKey{a, c} {
		verified(t, fmt.Sprintf("cosign verify-attestation with key %d", i), cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String()))
	}
}

func TestPushSignature_basicAuth(t *testing.T) {
	const password = "registry-s3cret"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth("builder", password))
	k := newCosignKey(t, "p4ss-w0rd")
	_, img := busybox(t, reg)
	ctx := context.Background()

	// Without credentials the registry refuses, and the error says so.
	if _, err := PushSignature(ctx, img, k.signer); err == nil {
		t.Fatal("PushSignature without credentials succeeded")
	} else if !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Errorf("error without credentials %q does not say unauthorized", err)
	}
	// Wrong credentials: refused, and neither they nor the key are in the
	// error.
	wrong := remote.WithAuth(&authn.Basic{Username: "builder", Password: "wr0ng-registry-pass"})
	if _, err := PushAttestations(ctx, img, [][]byte{slsaProvenance(img)}, k.signer, wrong); err == nil {
		t.Fatal("PushAttestations with wrong credentials succeeded")
	} else {
		pem, _ := k.signer.PublicKeyPEM()
		assertNoSecret(t, "error", err.Error(), []string{"wr0ng-registry-pass", password, k.pass, string(pem)})
	}

	if _, err := PushSignature(ctx, img, k.signer, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatal(err)
	}
	if _, err := PushAttestations(ctx, img, [][]byte{slsaProvenance(img)}, k.signer, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatal(err)
	}
	verified(t, "cosign verify", cosignVerify(t, reg, k.pubPath, img.String()))
	verified(t, "cosign verify-attestation", cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String()))
}

// TestLoadKey_cosignKeys loads keys the real cosign v2 and v3 wrote.
func TestLoadKey_cosignKeys(t *testing.T) {
	const password = "Un1que-Passphrase-7781"
	for _, cli := range testenv.Cosigns(t) {
		t.Run(cli.Version, func(t *testing.T) {
			priv, pub := testenv.CosignKeyPairWith(t, cli.Path, password)
			if block, _ := pemDecode(priv); block != SigstorePrivateKeyPEMType {
				t.Errorf("cosign generate-key-pair wrote a %q block, want %q", block, SigstorePrivateKeyPEMType)
			}
			s, err := LoadKey(priv, []byte(password))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := s.PublicKeyPEM(); err != nil || !bytes.Equal(got, pub) {
				t.Errorf("PublicKeyPEM() =\n%s(%v), want cosign.pub:\n%s", got, err, pub)
			}

			_, err = LoadKey(priv, []byte("Un1que-Passphrase-7782"))
			if err == nil {
				t.Fatal("LoadKey with the wrong password succeeded")
			}
			if !strings.Contains(err.Error(), "wrong password") {
				t.Errorf("error %q does not say the password is wrong", err)
			}
			assertNoSecret(t, "error", err.Error(), append(secretPieces(priv, password), "Un1que-Passphrase"))

			// An empty password, which cosign allows.
			priv, _ = testenv.CosignKeyPairWith(t, cli.Path, "")
			if _, err := LoadKey(priv, nil); err != nil {
				t.Errorf("LoadKey of a key with an empty password: %v", err)
			}
		})
	}
}

// pemDecode returns the type of the first PEM block of b.
func pemDecode(b []byte) (string, []byte) {
	block, _ := pem.Decode(b)
	if block == nil {
		return "", nil
	}
	return block.Type, block.Bytes
}

// pushRandomTo pushes a random image to repo of reg and returns its digest.
func pushRandomTo(t *testing.T, reg *testenv.Registry, repo string) name.Digest {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(reg.Ref(repo+":latest"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatal(err)
	}
	h, _ := img.Digest()
	return tag.Context().Digest(h.String())
}

// TestLoadKey_cosignImportedKeyTypes: keys of every type cosign takes,
// turned into cosign's format by the real `cosign import-key-pair`, load,
// and what they sign passes `cosign verify --key` and `cosign
// verify-attestation --key` (v2 and v3). For P-384, P-521 and Ed25519 keys
// it also shows why FromPrivateKey does not sign as `cosign sign` v2 does:
// cosign's own signature (ECDSA over SHA-384/SHA-512, Ed25519ph) fails its
// own `cosign verify --key`.
func TestLoadKey_cosignImportedKeyTypes(t *testing.T) {
	reg := testenv.StartRegistry(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name              string
		priv              crypto.Signer
		cosignSignFailsIt bool // cosign v2.6.5's sign, then verify --key, with this key type
	}{
		{"ecdsa-p256", mustECDSA(t, elliptic.P256()), false},
		{"ecdsa-p384", mustECDSA(t, elliptic.P384()), true},
		{"ecdsa-p521", mustECDSA(t, elliptic.P521()), true},
		{"rsa-3072", rsaKey, false},
		{"ed25519", edKey, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const password = "imp0rted"
			dir := t.TempDir()
			der, err := x509.MarshalPKCS8PrivateKey(tc.priv)
			if err != nil {
				t.Fatal(err)
			}
			in := filepath.Join(dir, "in.pem")
			if err := os.WriteFile(in, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}
			prefix := filepath.Join(dir, "imported")
			v3 := testenv.Cosigns(t)[len(testenv.Cosigns(t))-1]
			if r := runCosign(t, v3, reg, []string{"COSIGN_PASSWORD=" + password}, "import-key-pair", "--key", in, "--output-key-prefix", prefix); r.err != nil {
				t.Fatalf("%s import-key-pair: %v\n%s", r.cli, r.err, r.errOut)
			}
			priv, err := os.ReadFile(prefix + ".key")
			if err != nil {
				t.Fatal(err)
			}
			s, err := LoadKey(priv, []byte(password))
			if err != nil {
				t.Fatalf("LoadKey: %v", err)
			}
			k := cosignKey{signer: s, pubPath: prefix + ".pub", keyPath: prefix + ".key", pass: password}

			img := pushRandomTo(t, reg, "imported/"+tc.name)
			if _, err := PushSignature(context.Background(), img, s); err != nil {
				t.Fatal(err)
			}
			if _, err := PushAttestations(context.Background(), img, [][]byte{slsaProvenance(img)}, s); err != nil {
				t.Fatal(err)
			}
			verified(t, "cosign verify", cosignVerify(t, reg, k.pubPath, img.String()))
			verified(t, "cosign verify-attestation", cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String()))

			// cosign v2's own signature of another image with the same key.
			own := pushRandomTo(t, reg, "imported/"+tc.name+"-cosign")
			cosignSign(t, reg, k, own.String())
			for _, r := range cosignVerify(t, reg, k.pubPath, own.String()) {
				switch {
				case tc.cosignSignFailsIt && r.err == nil:
					t.Errorf("%s verify --key now accepts cosign sign's own %s signature: revisit FromPrivateKey's choice of hash and Ed25519 mode", r.cli, tc.name)
				case !tc.cosignSignFailsIt && r.err != nil:
					t.Errorf("%s verify of cosign sign's own signature: %v\n%s", r.cli, r.err, r.errOut)
				}
			}
		})
	}
}
