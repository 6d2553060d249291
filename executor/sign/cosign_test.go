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

// These tests have the real cosign CLI (testenv.Cosign: built from its Go
// module) verify what this package pushes to Debian's docker-registry, with
// keys made by the real `cosign generate-key-pair`. The registry is plain
// HTTP on 127.0.0.1 and there is no Rekor: cosign runs with
// --allow-http-registry and --insecure-ignore-tlog=true.

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

// cosign runs the real cosign with args against reg and returns its
// standard output, its error output and its error.
func cosign(t *testing.T, reg *testenv.Registry, env []string, args ...string) (string, string, error) {
	t.Helper()
	cmd := testenv.CosignCommand(t, reg.DockerConfig(t), args...)
	cmd.Env = append(cmd.Env, env...)
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

// verifyFlags are what cosign needs for a plain-HTTP registry without a
// transparency log.
var verifyFlags = []string{"--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry"}

func cosignVerify(t *testing.T, reg *testenv.Registry, pubPath, ref string) (string, string, error) {
	t.Helper()
	args := append([]string{"verify", "--key", pubPath}, verifyFlags...)
	return cosign(t, reg, nil, append(args, ref)...)
}

// refused logs why cosign refused, for the test log.
func refused(t *testing.T, what, errOut string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	t.Logf("%s: cosign refused: %s", what, lines[len(lines)-1])
}

func cosignVerifyAttestation(t *testing.T, reg *testenv.Registry, pubPath, typ, ref string) (string, string, error) {
	t.Helper()
	args := append([]string{"verify-attestation", "--key", pubPath, "--type", typ}, verifyFlags...)
	return cosign(t, reg, nil, append(args, ref)...)
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
		out, errOut, err := cosignVerify(t, reg, k.pubPath, ref)
		if err != nil {
			t.Fatalf("cosign verify %s: %v\n%s", ref, err, errOut)
		}
		// cosign prints the verified payloads: ours, for this digest.
		if !strings.Contains(out, img.DigestStr()) || !strings.Contains(out, "cosign container image signature") {
			t.Errorf("cosign verify %s printed %q, want the payload for %s", ref, out, img.DigestStr())
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
		out, errOut, err := cosignVerifyAttestation(t, reg, k.pubPath, typ, img.String())
		if err != nil {
			t.Errorf("cosign verify-attestation --type %s: %v\n%s", typ, err, errOut)
			continue
		}
		// It prints the verified envelopes (of every predicate type), each
		// line one envelope whose payload is one of our statements.
		if !strings.Contains(out, `"payloadType":"application/vnd.in-toto+json"`) {
			t.Errorf("cosign verify-attestation --type %s printed %q", typ, out)
		}
	}
	// cosign's --type slsaprovenance is SLSA v0.2 (https://slsa.dev/provenance/v0.2):
	// a v1 statement is not of that type, and cosign says so.
	_, errOut, err := cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance", img.String())
	if err == nil || !strings.Contains(errOut, "https://slsa.dev/provenance/v1") {
		t.Errorf("cosign verify-attestation --type slsaprovenance (v0.2) of a v1 statement: %v\n%s", err, errOut)
	}
	refused(t, "--type slsaprovenance (v0.2)", errOut)
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
	if _, errOut, err := cosignVerify(t, reg, k.pubPath, tag.String()); err != nil {
		t.Fatalf("before tampering: %v\n%s", err, errOut)
	}

	t.Run("tag moved to another image", func(t *testing.T) {
		other, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		// library/busybox:latest now names another image.
		moved := tag
		if err := remote.Write(moved, other); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := cosignVerify(t, reg, k.pubPath, moved.String())
		if err == nil || !strings.Contains(errOut, "no signatures found") {
			t.Errorf("cosign verify of an unsigned image under the tag: %v\n%s", err, errOut)
		}
		refused(t, "another image under the tag", errOut)
		// The attacker copies the signed image's .sig to the other image's
		// .sig tag: the payload names another digest.
		od, _ := other.Digest()
		sigTag, _ := SignatureTag(img)
		sigImg, err := remote.Image(sigTag)
		if err != nil {
			t.Fatal(err)
		}
		otherSigTag, _ := SignatureTag(moved.Context().Digest(od.String()))
		if err := remote.Write(otherSigTag, sigImg); err != nil {
			t.Fatal(err)
		}
		_, errOut, err = cosignVerify(t, reg, k.pubPath, moved.String())
		if err == nil || !strings.Contains(errOut, "no matching signatures") {
			t.Errorf("cosign verify with another image's signature copied over: %v\n%s", err, errOut)
		}
		refused(t, "another image's signature copied over", errOut)
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
		tampered, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(emptyOCI(), types.OCIConfigJSON), types.OCIManifestSchema1),
			mutate.Addendum{Layer: static.NewLayer(forged, SimpleSigningMediaType), Annotations: m.Layers[0].Annotations})
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(sigTag, tampered); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := cosignVerify(t, reg, k.pubPath, img.String())
		if err == nil || !strings.Contains(errOut, "no matching signatures") {
			t.Errorf("cosign verify of a changed payload: %v\n%s", err, errOut)
		}
		refused(t, "changed payload", errOut)
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
		env["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(st, []byte("0123456789abcdef"), []byte("fedcba9876543210"), 1))
		forged, _ := json.Marshal(env)
		tampered, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(emptyOCI(), types.OCIConfigJSON), types.OCIManifestSchema1),
			mutate.Addendum{Layer: static.NewLayer(forged, DSSEMediaType), Annotations: m.Layers[0].Annotations})
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(attTag, tampered); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String())
		if err == nil || !strings.Contains(errOut, "no matching attestations") {
			t.Errorf("cosign verify-attestation of a changed statement: %v\n%s", err, errOut)
		}
		refused(t, "changed statement", errOut)
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
	_, errOut, err := cosignVerify(t, reg, other.pubPath, img.String())
	if err == nil || !strings.Contains(errOut, "no matching signatures") {
		t.Errorf("cosign verify with another key: %v\n%s", err, errOut)
	}
	refused(t, "verify with another key", errOut)
	_, errOut, err = cosignVerifyAttestation(t, reg, other.pubPath, "slsaprovenance1", img.String())
	if err == nil || !strings.Contains(errOut, "no matching attestations") {
		t.Errorf("cosign verify-attestation with another key: %v\n%s", err, errOut)
	}
	refused(t, "verify-attestation with another key", errOut)
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
	if _, errOut, err := cosign(t, reg, []string{"COSIGN_PASSWORD=" + b.pass},
		"sign", "--key", b.keyPath, "--tlog-upload=false", "--allow-http-registry", "--yes", img.String()); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, errOut)
	}
	// We append after cosign's.
	if _, err := PushSignature(ctx, img, c.signer); err != nil {
		t.Fatal(err)
	}
	for i, k := range []cosignKey{a, b, c} {
		if _, errOut, err := cosignVerify(t, reg, k.pubPath, img.String()); err != nil {
			t.Errorf("cosign verify with key %d: %v\n%s", i, err, errOut)
		}
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
		if _, errOut, err := cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String()); err != nil {
			t.Errorf("cosign verify-attestation with key %d: %v\n%s", i, err, errOut)
		}
	}
}

func TestPushSignature_basicAuth(t *testing.T) {
	const password = "registry-s3cret"
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth("builder", password))
	k := newCosignKey(t, "p4ss-w0rd")
	_, img := busybox(t, reg)
	ctx := context.Background()

	// Without credentials the registry refuses, and the error says so
	// without the key.
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
	if _, errOut, err := cosignVerify(t, reg, k.pubPath, img.String()); err != nil {
		t.Errorf("cosign verify: %v\n%s", err, errOut)
	}
	if _, errOut, err := cosignVerifyAttestation(t, reg, k.pubPath, "slsaprovenance1", img.String()); err != nil {
		t.Errorf("cosign verify-attestation: %v\n%s", err, errOut)
	}
}

// TestLoadKey_cosignKeys loads keys the real cosign wrote.
func TestLoadKey_cosignKeys(t *testing.T) {
	const password = "Un1que-Passphrase-7781"
	priv, pub := testenv.CosignKeyPair(t, password)
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
	priv, _ = testenv.CosignKeyPair(t, "")
	if _, err := LoadKey(priv, nil); err != nil {
		t.Errorf("LoadKey of a key with an empty password: %v", err)
	}
}

func emptyOCI() v1.Image { return empty.Image }

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
// verify-attestation --key`. For Ed25519 and P-384 keys it also shows why
// FromPrivateKey does not sign as `cosign sign` does: cosign's own signature
// (Ed25519ph, ECDSA over SHA-384) fails its own `cosign verify --key`.
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
		cosignSignFailsIt bool // cosign v2.6.5's sign + verify --key of this key type
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
			if _, errOut, err := cosign(t, reg, []string{"COSIGN_PASSWORD=" + password}, "import-key-pair", "--key", in, "--output-key-prefix", prefix); err != nil {
				t.Fatalf("cosign import-key-pair: %v\n%s", err, errOut)
			}
			priv, err := os.ReadFile(prefix + ".key")
			if err != nil {
				t.Fatal(err)
			}
			s, err := LoadKey(priv, []byte(password))
			if err != nil {
				t.Fatalf("LoadKey: %v", err)
			}
			pubPath := prefix + ".pub"

			img := pushRandomTo(t, reg, "imported/"+tc.name)
			if _, err := PushSignature(context.Background(), img, s); err != nil {
				t.Fatal(err)
			}
			if _, err := PushAttestations(context.Background(), img, [][]byte{slsaProvenance(img)}, s); err != nil {
				t.Fatal(err)
			}
			if _, errOut, err := cosignVerify(t, reg, pubPath, img.String()); err != nil {
				t.Errorf("cosign verify: %v\n%s", err, errOut)
			}
			if _, errOut, err := cosignVerifyAttestation(t, reg, pubPath, "slsaprovenance1", img.String()); err != nil {
				t.Errorf("cosign verify-attestation: %v\n%s", err, errOut)
			}

			// cosign's own signature of another image with the same key.
			own := pushRandomTo(t, reg, "imported/"+tc.name+"-cosign")
			if _, errOut, err := cosign(t, reg, []string{"COSIGN_PASSWORD=" + password},
				"sign", "--key", prefix+".key", "--tlog-upload=false", "--allow-http-registry", "--yes", own.String()); err != nil {
				t.Fatalf("cosign sign: %v\n%s", err, errOut)
			}
			_, errOut, err := cosignVerify(t, reg, pubPath, own.String())
			switch {
			case tc.cosignSignFailsIt && err == nil:
				t.Errorf("cosign verify --key now accepts cosign sign's own %s signature: revisit FromPrivateKey's choice of hash and Ed25519 mode", tc.name)
			case !tc.cosignSignFailsIt && err != nil:
				t.Errorf("cosign verify of cosign sign's own signature: %v\n%s", err, errOut)
			}
		})
	}
}
