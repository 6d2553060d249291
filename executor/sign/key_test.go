package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/signature"
)

// encryptKey writes priv as cosign's `generate-key-pair` and
// `import-key-pair` do (its marshalKeyPair): PKCS #8, encrypted with
// go-securesystemslib's scrypt + secretbox, in a PEM block of pemType.
// The tests of the real CLI's keys are in cosign_test.go.
func encryptKey(t *testing.T, priv crypto.PrivateKey, password, pemType string) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := encrypted.Encrypt(der, []byte(password))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: enc})
}

func mustECDSA(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLoadKey_keyTypes(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		priv      crypto.Signer
		pemType   string
		algorithm string
	}{
		{"ecdsa-p256 sigstore", mustECDSA(t, elliptic.P256()), SigstorePrivateKeyPEMType, "ecdsa-p256"},
		{"ecdsa-p256 cosign (older cosign)", mustECDSA(t, elliptic.P256()), CosignPrivateKeyPEMType, "ecdsa-p256"},
		{"ecdsa-p384", mustECDSA(t, elliptic.P384()), SigstorePrivateKeyPEMType, "ecdsa-p384"},
		{"ecdsa-p521", mustECDSA(t, elliptic.P521()), SigstorePrivateKeyPEMType, "ecdsa-p521"},
		{"rsa-2048", rsaKey, SigstorePrivateKeyPEMType, "rsa-2048"},
		{"ed25519", edKey, SigstorePrivateKeyPEMType, "ed25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := LoadKey(encryptKey(t, tc.priv, "pass word", tc.pemType), []byte("pass word"))
			if err != nil {
				t.Fatalf("LoadKey: %v", err)
			}
			if !strings.HasPrefix(s.String(), tc.algorithm+" key sha256:") {
				t.Errorf("String() = %q, want the %s type and fingerprint", s.String(), tc.algorithm)
			}
			pub, ok := s.PublicKey().(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !pub.Equal(tc.priv.Public()) {
				t.Errorf("PublicKey() is not the key's public key")
			}
			// What it signs verifies with the public key as cosign verify
			// --key loads it: signature.LoadVerifier with SHA-256.
			msg := []byte("payload")
			sig, err := s.signMessage(msg)
			if err != nil {
				t.Fatal(err)
			}
			v, err := signature.LoadVerifier(tc.priv.Public(), crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
		})
	}
}

func TestLoadKey_emptyPassword(t *testing.T) {
	// cosign generate-key-pair accepts an empty password.
	if _, err := LoadKey(encryptKey(t, mustECDSA(t, elliptic.P256()), "", SigstorePrivateKeyPEMType), nil); err != nil {
		t.Fatalf("LoadKey with an empty password: %v", err)
	}
}

// secretPieces returns substrings of a key file and its password that no
// error or printed value may contain: the password, and every 12-character
// piece of the PEM body.
func secretPieces(pemBytes []byte, password string) []string {
	pieces := []string{password}
	block, _ := pem.Decode(pemBytes)
	if block != nil {
		body := base64.StdEncoding.EncodeToString(block.Bytes)
		for i := 0; i+12 <= len(body); i += 6 {
			pieces = append(pieces, body[i:i+12])
		}
		raw := string(block.Bytes)
		for i := 0; i+12 <= len(raw); i += 6 {
			pieces = append(pieces, raw[i:i+12])
		}
	}
	return pieces
}

func assertNoSecret(t *testing.T, what, got string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(got, s) {
			t.Errorf("%s %q contains secret material %q", what, got, s)
		}
	}
}

func TestLoadKey_errors(t *testing.T) {
	const password = "correct-horse-battery-staple"
	good := encryptKey(t, mustECDSA(t, elliptic.P256()), password, SigstorePrivateKeyPEMType)

	// A body that is not secretbox JSON.
	notJSON := pem.EncodeToMemory(&pem.Block{Type: SigstorePrivateKeyPEMType, Bytes: []byte("Zsecret-body-bytes-not-json")})
	// An unencrypted PKCS #8 key, which cosign refuses too.
	plainDER, err := x509.MarshalPKCS8PrivateKey(mustECDSA(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	plain := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: plainDER})
	// scrypt parameters other than cosign's (a costly N): refused before
	// deriving anything.
	var costly []byte
	{
		block, _ := pem.Decode(good)
		b := bytes.Replace(block.Bytes, []byte(`"N":65536`), []byte(`"N":1073741824`), 1)
		costly = pem.EncodeToMemory(&pem.Block{Type: SigstorePrivateKeyPEMType, Bytes: b})
	}
	// An X25519 key: PKCS #8, encrypted as cosign does, but no signing key.
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519 := encryptKey(t, x, password, SigstorePrivateKeyPEMType)
	// A P-224 key and an RSA-1024 key, which sigstore's ValidatePubKey (and
	// so cosign import-key-pair) refuses.
	p224 := encryptKey(t, mustECDSA(t, elliptic.P224()), password, SigstorePrivateKeyPEMType)
	rsa1024Key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024 := encryptKey(t, rsa1024Key, password, SigstorePrivateKeyPEMType)

	for _, tc := range []struct {
		name     string
		pem      []byte
		password string
		want     error
		wantText string
	}{
		{"wrong password", good, "Tr0ub4dor&3", ErrWrongPassword, "wrong password"},
		{"right password with a trailing newline", good, password + "\n", ErrWrongPassword, "wrong password"},
		{"empty password for an encrypted key", good, "", ErrWrongPassword, "wrong password"},
		{"not PEM", []byte("hunter2 is not a key"), password, ErrNotCosignKey, "no PEM block"},
		{"empty", nil, password, ErrNotCosignKey, "no PEM block"},
		{"unencrypted PKCS #8", plain, password, ErrNotCosignKey, `"PRIVATE KEY"`},
		{"body not JSON", notJSON, password, ErrNotCosignKey, "not cosign's scrypt + secretbox"},
		{"costly scrypt parameters", costly, password, ErrNotCosignKey, "scrypt parameters"},
		{"X25519", x25519, password, ErrUnsupportedKey, "*ecdh.PrivateKey"},
		{"P-224", p224, password, ErrUnsupportedKey, "ecdsa-p224"},
		{"RSA-1024", rsa1024, password, ErrUnsupportedKey, "rsa-1024"},
		{"too large", append(bytes.Repeat([]byte("A"), 70<<10), good...), password, ErrNotCosignKey, "larger than any cosign key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := LoadKey(tc.pem, []byte(tc.password))
			if err == nil {
				t.Fatalf("LoadKey succeeded (%v), want %v", s, tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q, want it to wrap %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not say %q", err, tc.wantText)
			}
			secrets := append(secretPieces(tc.pem, tc.password), secretPieces(good, password)...)
			secrets = append(secrets, "hunter2", "secret-body")
			assertNoSecret(t, "error", err.Error(), secrets)
			assertNoSecret(t, "error", fmt.Sprintf("%+v", err), secrets)
		})
	}
}

// TestSigner_Format prints a Signer in every way a log line or an error
// could, and looks for the private key in any encoding.
func TestSigner_Format(t *testing.T) {
	ecKey := mustECDSA(t, elliptic.P256())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, priv := range []crypto.Signer{ecKey, rsaKey, edKey} {
		const password = "s3cr3t-pa55"
		pemBytes := encryptKey(t, priv, password, SigstorePrivateKeyPEMType)
		s, err := LoadKey(pemBytes, []byte(password))
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		// The private scalar or exponent in decimal, hex and bytes, and the
		// DER in base64 and hex.
		var private [][]byte
		switch k := priv.(type) {
		case *ecdsa.PrivateKey:
			d, err := k.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			private = append(private, d, []byte(k.D.String()), []byte(k.D.Text(16)))
		case *rsa.PrivateKey:
			private = append(private, k.D.Bytes(), []byte(k.D.String()), []byte(k.D.Text(16)), []byte(k.Primes[0].String()))
		case ed25519.PrivateKey:
			private = append(private, k.Seed(), []byte(fmt.Sprint([]byte(k.Seed()))))
		}
		private = append(private, []byte(base64.StdEncoding.EncodeToString(der)[20:60]), []byte(hex.EncodeToString(der)[30:90]))
		var secrets []string
		for _, p := range private {
			secrets = append(secrets, string(p), hex.EncodeToString(p), fmt.Sprint(p), fmt.Sprintf("%x", p))
		}
		secrets = append(secrets, secretPieces(pemBytes, password)...)

		type holder struct {
			name   string
			signer Signer // unexported: fmt cannot call its methods
		}
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("Signed", "key", s, "holder", holder{"h", s})
		outputs := map[string]string{"slog": logged.String(), "String": s.String(), "GoString": s.GoString()}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			outputs[verb] = fmt.Sprintf(verb, s)
			outputs[verb+" pointer"] = fmt.Sprintf(verb, &s)
			outputs[verb+" slice"] = fmt.Sprintf(verb, []Signer{s})
			outputs[verb+" map"] = fmt.Sprintf(verb, map[string]Signer{"k": s})
			outputs[verb+" unexported field"] = fmt.Sprintf(verb, holder{"h", s})
			outputs[verb+" unexported field pointer"] = fmt.Sprintf(verb, &holder{"h", s})
		}
		for what, out := range outputs {
			assertNoSecret(t, what, out, secrets)
		}
		if got := fmt.Sprintf("%v", s); !strings.Contains(got, s.Fingerprint()) {
			t.Errorf("%%v = %q, want it to name the public key's fingerprint %s", got, s.Fingerprint())
		}
	}
}

func TestSigner_zero(t *testing.T) {
	var s Signer
	if got := fmt.Sprint(s); got != "no signing key" {
		t.Errorf("zero Signer prints %q", got)
	}
	if _, err := s.signMessage([]byte("x")); err == nil {
		t.Error("a zero Signer signed")
	}
	if _, err := s.PublicKeyPEM(); err == nil {
		t.Error("a zero Signer has a public key")
	}
}
