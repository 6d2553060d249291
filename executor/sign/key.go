// Package sign signs images and their attestations in cosign's format, so that
// `cosign verify --key` and `cosign verify-attestation --key` accept them:
// a private key in cosign's encrypted key format (LoadKey), a simple-signing
// payload stored under the image's `sha256-<hex>.sig` tag (PushSignature), and
// in-toto statements in DSSE envelopes under its `sha256-<hex>.att` tag
// (PushAttestations). It follows cosign v2's pkg/cosign/keys.go
// (LoadPrivateKey), cmd/cosign/cli/sign (signDigest) and cmd/cosign/cli/attest
// (AttestCommand.Exec), and uses the libraries cosign itself uses for the
// formats (sigstore's pkg/signature, go-securesystemslib's encrypted), not
// cosign's own packages.
//
// Nothing here logs, and no error or printed value holds key material, a
// password or the bytes of a key file.
package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// The PEM block types of cosign's encrypted private keys (cosign's
// SigstorePrivateKeyPemType, written by `cosign generate-key-pair` since
// v2, and CosignPrivateKeyPemType, written by older versions).
const (
	SigstorePrivateKeyPEMType = "ENCRYPTED SIGSTORE PRIVATE KEY"
	CosignPrivateKeyPEMType   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// Errors of LoadKey, for errors.Is. None of their messages holds key bytes
// or the password.
var (
	// ErrNotCosignKey: the bytes are not a cosign encrypted private key.
	ErrNotCosignKey = errors.New("not a cosign private key")
	// ErrWrongPassword: the key did not decrypt with the password given.
	ErrWrongPassword = errors.New("wrong password for the signing key")
	// ErrUnsupportedKey: the key decrypted, but is of a type cosign does
	// not sign with.
	ErrUnsupportedKey = errors.New("unsupported signing key type")
)

// Signer signs with one private key. Make one with LoadKey or
// FromPrivateKey; the zero Signer cannot sign.
//
// Printed with any fmt verb (%v, %+v, %#v, %s, %x ...), with String or as a
// slog value, a Signer shows only its key type and the SHA-256 fingerprint
// of its public key. It keeps the private key behind a pointer, so a struct
// that holds a Signer in an unexported field prints an address, not the key.
type Signer struct {
	k *key
}

type key struct {
	sv          signature.SignerVerifier
	pub         crypto.PublicKey
	algorithm   string // "ecdsa-p256", "rsa-3072", "ed25519"
	fingerprint string // "sha256:<hex>" of the PKIX DER of the public key
}

// maxKeyFileSize bounds what LoadKey reads: cosign's keys are under 1 KiB
// (an RSA-4096 key about 4 KiB).
const maxKeyFileSize = 64 << 10

// LoadKey decrypts a private key in cosign's encrypted format: a PEM block of
// type "ENCRYPTED SIGSTORE PRIVATE KEY" (or the older "ENCRYPTED COSIGN
// PRIVATE KEY") whose body is go-securesystemslib's scrypt + NaCl secretbox
// JSON around a PKCS #8 private key, as `cosign generate-key-pair` and
// `cosign import-key-pair` write it. The password may be empty (cosign allows
// that). The key signs as FromPrivateKey says.
//
// Errors wrap ErrNotCosignKey, ErrWrongPassword or ErrUnsupportedKey, and
// never hold bytes of pemBytes or the password.
func LoadKey(pemBytes, password []byte) (Signer, error) {
	if len(pemBytes) > maxKeyFileSize {
		return Signer{}, fmt.Errorf("reading signing key: %w: %d bytes, larger than any cosign key", ErrNotCosignKey, len(pemBytes))
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Signer{}, fmt.Errorf("reading signing key: %w: no PEM block (want %q, as `cosign generate-key-pair` writes)", ErrNotCosignKey, SigstorePrivateKeyPEMType)
	}
	if block.Type != SigstorePrivateKeyPEMType && block.Type != CosignPrivateKeyPEMType {
		return Signer{}, fmt.Errorf("reading signing key: %w: a PEM block of type %s, want %q (`cosign import-key-pair` converts other private keys)",
			ErrNotCosignKey, pemTypeForError(block.Type), SigstorePrivateKeyPEMType)
	}
	der, err := encrypted.Decrypt(block.Bytes, password)
	if err != nil {
		return Signer{}, decryptError(err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		// The error of crypto/x509 names the ASN.1 problem, not the bytes;
		// still, say only what it is.
		return Signer{}, fmt.Errorf("reading signing key: %w: the decrypted key is not a PKCS #8 private key", ErrUnsupportedKey)
	}
	return FromPrivateKey(priv)
}

// FromPrivateKey returns a Signer for an ECDSA (P-256, P-384, P-521), RSA
// (2048, 3072, 4096 bits) or Ed25519 private key: the keys sigstore's
// cryptoutils.ValidatePubKey accepts, as cosign import-key-pair does. It is
// for keys already in memory (and tests); keys from a file or Secret go
// through LoadKey.
//
// It signs as `cosign verify --key` verifies (cosign's VerifierForKeyRef:
// signature.LoadVerifier with SHA-256): ECDSA over SHA-256 whatever the
// curve, RSA PKCS #1 v1.5 with SHA-256, and pure Ed25519. For the P-256 key
// of `cosign generate-key-pair` that is also what `cosign sign` does. For
// other keys cosign v2 signs differently (LoadPrivateKey: SHA-384 for P-384,
// SHA-512 for P-521, Ed25519ph), and its own `cosign verify --key` then
// rejects the signature (TestLoadKey_cosignImportedKeyTypes shows both); we
// sign so that it verifies.
func FromPrivateKey(priv crypto.PrivateKey) (Signer, error) {
	var algorithm string
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve == nil {
			return Signer{}, fmt.Errorf("reading signing key: %w: ECDSA key without a curve", ErrUnsupportedKey)
		}
		algorithm = "ecdsa-" + curveName(k)
	case *rsa.PrivateKey:
		algorithm = fmt.Sprintf("rsa-%d", k.N.BitLen())
	case ed25519.PrivateKey:
		algorithm = "ed25519"
	default:
		return Signer{}, fmt.Errorf("reading signing key: %w: %s (cosign signs with ECDSA, RSA or Ed25519 keys)", ErrUnsupportedKey, keyTypeName(priv))
	}
	if err := cryptoutils.ValidatePubKey(priv.(crypto.Signer).Public()); err != nil {
		// Its message names the curve or size, nothing of the key.
		return Signer{}, fmt.Errorf("reading signing key: %w: %s: %v", ErrUnsupportedKey, algorithm, err)
	}
	sv, err := signature.LoadSignerVerifierWithOpts(priv, options.WithHash(crypto.SHA256))
	if err != nil {
		return Signer{}, fmt.Errorf("reading signing key: %w: %s: %v", ErrUnsupportedKey, algorithm, err)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return Signer{}, fmt.Errorf("reading signing key: public key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Signer{}, fmt.Errorf("reading signing key: %w: %s: marshalling its public key: %v", ErrUnsupportedKey, algorithm, err)
	}
	sum := sha256.Sum256(der)
	return Signer{k: &key{
		sv:          sv,
		pub:         pub,
		algorithm:   algorithm,
		fingerprint: "sha256:" + hex.EncodeToString(sum[:]),
	}}, nil
}

// PublicKey returns the public key.
func (s Signer) PublicKey() crypto.PublicKey {
	if s.k == nil {
		return nil
	}
	return s.k.pub
}

// PublicKeyPEM returns the public key as cosign writes it (cosign.pub): a
// "PUBLIC KEY" PEM block of its PKIX DER.
func (s Signer) PublicKeyPEM() ([]byte, error) {
	if s.k == nil {
		return nil, errNoKey
	}
	return cryptoutils.MarshalPublicKeyToPEM(s.k.pub)
}

// Fingerprint returns "sha256:<hex>" of the PKIX DER of the public key, by
// which logs and results name the key.
func (s Signer) Fingerprint() string {
	if s.k == nil {
		return ""
	}
	return s.k.fingerprint
}

// String returns the key type and the fingerprint of the public key, say
// "ecdsa-p256 key sha256:3f1a...".
func (s Signer) String() string {
	if s.k == nil {
		return "no signing key"
	}
	return s.k.algorithm + " key " + s.k.fingerprint
}

// GoString, for %#v: the same as String.
func (s Signer) GoString() string { return "sign.Signer(" + s.String() + ")" }

// Format makes every fmt verb print String, so that no verb reaches the
// private key by reflection.
func (s Signer) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	fmt.Fprint(f, s.String())
}

// LogValue makes log/slog print String.
func (s Signer) LogValue() slog.Value { return slog.StringValue(s.String()) }

var errNoKey = errors.New("no signing key (a zero sign.Signer)")

// signMessage signs msg as cosign signs a payload.
func (s Signer) signMessage(msg []byte, opts ...signature.SignOption) ([]byte, error) {
	if s.k == nil {
		return nil, errNoKey
	}
	return s.k.sv.SignMessage(bytes.NewReader(msg), opts...)
}

// decryptError maps go-securesystemslib's errors to ours without its
// text, which can quote parts of the key file (a JSON syntax error quotes a
// character of it).
func decryptError(err error) error {
	switch err.Error() {
	case "encrypted: decryption failed":
		// secretbox.Open failed: the key derived from this password does not
		// open the box (or the box was altered).
		return fmt.Errorf("decrypting signing key: %w (or the key file was altered)", ErrWrongPassword)
	case "unsupported scrypt parameters":
		return fmt.Errorf("decrypting signing key: %w: scrypt parameters other than cosign's", ErrNotCosignKey)
	}
	return fmt.Errorf("decrypting signing key: %w: its encrypted body is not cosign's scrypt + secretbox JSON", ErrNotCosignKey)
}

// pemTypeForError quotes a PEM type from the file, cut short: it is a label,
// not key material, but it comes from the file.
func pemTypeForError(t string) string {
	const max = 40
	if len(t) > max {
		t = t[:max] + "..."
	}
	return fmt.Sprintf("%q", t)
}

func curveName(k *ecdsa.PrivateKey) string {
	switch k.Curve.Params().BitSize {
	case 256:
		return "p256"
	case 384:
		return "p384"
	case 521:
		return "p521"
	}
	return fmt.Sprintf("p%d", k.Curve.Params().BitSize)
}

// keyTypeName names the Go type of a parsed private key without printing
// the key (%T prints the type only).
func keyTypeName(priv crypto.PrivateKey) string {
	return fmt.Sprintf("%T key", priv)
}
