package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/sign"
	"github.com/slipway-dev/slipway/executor/source"
)

// Supply chain: provenance and SBOM attestations, attached as BuildKit
// attaches them, and cosign signatures (issue 16).
//
// With an attestation (--provenance, on by default, or --sbom), what is
// pushed under the destinations is an OCI image index holding each
// platform's image and, after them, one attestation manifest per image
// (executor/attest, BuildKit's exporter/containerimage layout), also for
// one platform, as buildx does by default: the result's digest, the
// digest file and the references name the index. The images then have
// OCI media types, as BuildKit's DefaultOCITypes gives them when a build
// has attestations. --tar-path writes the image alone (a docker-archive
// holds no index: BuildKit's docker exporter drops attestations too).
// Where a destination's registry has the OCI 1.1 referrers API, each
// attestation manifest is also pushed in BuildKit's OCI artifact form with
// the image as its subject. --sign-key signs what was pushed, in cosign's
// layout (executor/sign).

// supplyChain are the flags of attestations and signing.
type supplyChain struct {
	// provenance is --provenance; mode what it parses to (check).
	provenance string
	mode       attest.Mode
	// sbom is --sbom; sbomFormat --sbom-format, normalised by check to
	// spdx-json or cyclonedx-json.
	sbom       bool
	sbomFormat string
	// builderID and builderDeps are --builder-id and --builder-dependency.
	builderID   string
	builderDeps []string
	// signKey and signKeyPasswordFile are --sign-key and
	// --sign-key-password-file.
	signKey, signKeyPasswordFile string

	// provenanceSet and ociSet say whether --provenance and
	// --oci-media-types were given (parseFlags).
	provenanceSet, ociSet bool
	// note is what check decided that the log should say when the build
	// starts; "" for nothing.
	note string

	// attested is what attach made, for the outputs, the referrers and
	// signing; nil when the build attached nothing.
	attested *attested
	// workDir is the build's work directory, where the SBOM's tree is
	// unpacked.
	workDir string
	// sboms is the build's SBOM machinery (sbom_wiring.go).
	sboms sbomState
}

// flags binds the supply chain's flags to fs.
func (sc *supplyChain) flags(fs *pflag.FlagSet) {
	fs.StringVar(&sc.provenance, "provenance", "min", "SLSA provenance attached to each image, as BuildKit's modes: none, min or max (false is none, true min, as buildx's --provenance). With any attestation the pushed artifact is an OCI image index of the images and their attestation manifests, as buildx makes it.")
	fs.BoolVar(&sc.sbom, "sbom", false, "Attach an SBOM of each image's file system (an in-toto statement in the same attestation manifest as the provenance, as BuildKit).")
	fs.StringVar(&sc.sbomFormat, "sbom-format", "spdx", "Format of the SBOM: spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX JSON).")
	fs.StringVar(&sc.builderID, "builder-id", "", "The builder's id in the provenance (runDetails.builder.id): the executor image's reference with its digest.")
	fs.StringArrayVar(&sc.builderDeps, "builder-dependency", nil, "Image (ref@sha256:...) that took part in the build besides the executor, such as the controller's, recorded as a builder dependency in the provenance (repeatable).")
	fs.StringVar(&sc.signKey, "sign-key", "", "Sign what is pushed, and its attestations, with this cosign private key (cosign's encrypted format), in cosign's layout (sha256-<digest>.sig and .att tags). Read before the first RUN step; give it in --credentials-dir's signing/cosign.key in a pod.")
	fs.StringVar(&sc.signKeyPasswordFile, "sign-key-password-file", "", "File holding the password of --sign-key (default: the environment variable COSIGN_PASSWORD, removed from the environment once read).")
}

// attaches reports whether the build attaches attestations.
func (sc *supplyChain) attaches() bool {
	return sc.mode == attest.ModeMin || sc.mode == attest.ModeMax || sc.sbom
}

// check checks the supply chain's flags of o and settles what they imply:
// OCI media types when the build attaches attestations (BuildKit's
// DefaultOCITypes), unless --oci-media-types=false was given, which with
// the default provenance leaves the provenance out (noted), and with an
// attestation asked for is refused, as BuildKit refuses it.
func (sc *supplyChain) check(o *options) error {
	mode, err := attest.ParseMode(sc.provenance)
	if err != nil {
		return fmt.Errorf("--provenance=%s", err)
	}
	sc.mode = mode
	switch strings.ToLower(sc.sbomFormat) {
	case "spdx", "spdx-json":
		sc.sbomFormat = "spdx-json"
	case "cyclonedx", "cyclonedx-json":
		sc.sbomFormat = "cyclonedx-json"
	default:
		return fmt.Errorf("--sbom-format=%s: want spdx or cyclonedx", sc.sbomFormat)
	}
	for _, d := range sc.builderDeps {
		if _, dg, ok := strings.Cut(d, "@"); !ok || digest.Digest(dg).Validate() != nil {
			return fmt.Errorf("--builder-dependency=%s: want an image reference with its digest (ref@sha256:...)", d)
		}
	}
	if o.checkOnly {
		sc.mode, sc.sbom = attest.ModeNone, false
		return nil
	}
	if sc.attaches() && !o.ociMediaTypes && o.compression != "zstd" {
		switch {
		case !sc.ociSet:
			o.ociMediaTypes = true
		case sc.provenanceSet && sc.mode != attest.ModeNone || sc.sbom:
			// BuildKit: "cannot export attestations with oci-mediatypes=false".
			return errors.New("--oci-media-types=false makes Docker manifests, to which attestations cannot be attached (as BuildKit refuses them): leave it out, or pass --provenance=none and --sbom=false")
		default:
			sc.mode = attest.ModeNone
			sc.note = "Attaching no provenance: --oci-media-types=false makes Docker manifests, to which BuildKit attaches no attestation (leave it out for provenance, or pass --provenance=none to say so)"
		}
	}
	if sc.signKey != "" && o.noPush {
		return errors.New("--sign-key signs what is pushed, and with --no-push nothing is")
	}
	if sc.signKeyPasswordFile != "" && sc.signKey == "" {
		return errors.New("--sign-key-password-file is the password of --sign-key, which is not given")
	}
	return nil
}

// excludes are the paths an in-place build must not clear or snapshot: the
// directories of the signing key and its password file, as the Docker
// config's.
func (sc *supplyChain) excludes() []string {
	var out []string
	for _, p := range []string{sc.signKey, sc.signKeyPasswordFile} {
		if p != "" {
			if abs, err := filepath.Abs(p); err == nil {
				out = append(out, filepath.Dir(abs))
			}
		}
	}
	return out
}

// Layout of the signing key in the credentials directory.
const (
	credSigning         = "signing"
	credSigningKey      = "cosign.key"
	credSigningPassword = "cosign.password"
	// envCosignPassword is where cosign reads a key's password, and so the
	// executor without --sign-key-password-file.
	envCosignPassword = "COSIGN_PASSWORD"
)

// loadSigner reads and decrypts the signing key, before anything of the
// repository runs: --sign-key, else the credentials directory's
// signing/cosign.key; its password from --sign-key-password-file, else the
// credentials directory's signing/cosign.password, else COSIGN_PASSWORD,
// which leaves the environment (whether a key is given or not: a RUN
// step's environment never has it anyway). Files outside the credentials
// directory are added to readable (see credentials.go). Nil when no key is
// given. Errors name the flag or file, never a byte of the key or password.
func loadSigner(o *options, readable *[]string) (*sign.Signer, error) {
	envPassword, envSet := os.LookupEnv(envCosignPassword)
	os.Unsetenv(envCosignPassword)
	keyPath, pwPath := o.sc.signKey, o.sc.signKeyPasswordFile
	if dir := o.credentialsDir; dir != "" {
		if p := filepath.Join(dir, credSigning, credSigningKey); keyPath == "" && fileExists(p) {
			keyPath = p
		}
		if p := filepath.Join(dir, credSigning, credSigningPassword); pwPath == "" && fileExists(p) {
			pwPath = p
		}
	}
	if keyPath == "" {
		return nil, nil
	}
	for _, p := range []string{keyPath, pwPath} {
		if p != "" && !inDir(o.credentialsDir, p) {
			*readable = append(*readable, p)
		}
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading the signing key: %w", err)
	}
	defer clear(key)
	var password []byte
	switch {
	case pwPath != "":
		if password, err = os.ReadFile(pwPath); err != nil {
			return nil, fmt.Errorf("reading the signing key's password: %w", err)
		}
		// A Secret's file often ends with a newline, which no password has.
		password = []byte(strings.TrimRight(string(password), "\r\n"))
	case envSet:
		password = []byte(envPassword)
	}
	defer clear(password)
	s, err := sign.LoadKey(key, password)
	// Decrypting took 64 MiB (cosign's scrypt, N=2^16, r=8), garbage now:
	// given back at once rather than kept beside the build's memory.
	debug.FreeOSMemory()
	if err != nil {
		hint := ""
		if errors.Is(err, sign.ErrWrongPassword) && pwPath == "" && !envSet {
			hint = " (give its password with --sign-key-password-file, " + envCosignPassword + " or the credentials directory's " + credSigning + "/" + credSigningPassword + ")"
		}
		return nil, fmt.Errorf("signing key %s: %w%s", keyPath, err, hint)
	}
	return &s, nil
}

// secretValues are the values no attestation may hold: every build
// secret, the git credentials and tokens, and the registry credentials.
func (c *credentials) secretValues() [][]byte {
	var out [][]byte
	for _, v := range c.secrets {
		out = append(out, v)
	}
	g := c.git
	for _, v := range []string{g.Password} {
		if v != "" {
			out = append(out, []byte(v))
		}
	}
	if len(g.SSHKey) > 0 {
		out = append(out, g.SSHKey)
	}
	for _, m := range []map[string]string{g.HostTokens, g.HostHeaders} {
		for _, v := range m {
			out = append(out, []byte(v))
		}
	}
	return append(out, publish.KeychainSecrets(c.keychain)...)
}

// attested is what a build with attestations made: the index of its
// images and their attestation manifests (what is published), with what
// signing and the referrers need.
type attested struct {
	index  v1.ImageIndex
	digest v1.Hash
	images []attestedImage
}

// attestedImage is one image of an attested index.
type attestedImage struct {
	platform v1.Platform
	image    v1.Image
	digest   v1.Hash
	desc     v1.Descriptor
	// statements are those of its attestation manifest; signed are the
	// same about the index too (for cosign's .att, see attach).
	statements, signed []attest.Statement
}

// images are the images of art with their platforms: the index's, or the
// image alone with the platform of its config.
func platformImages(art publish.Artifact) ([]attestedImage, error) {
	if idx, ok := art.(v1.ImageIndex); ok {
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		out := make([]attestedImage, 0, len(im.Manifests))
		for _, d := range im.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			ai := attestedImage{image: img, digest: d.Digest, desc: d}
			if d.Platform != nil {
				ai.platform = *d.Platform
			}
			out = append(out, ai)
		}
		return out, nil
	}
	img, ok := art.(v1.Image)
	if !ok {
		return nil, fmt.Errorf("cannot attach attestations to a %T", art)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	ai := attestedImage{image: img}
	if p := cfg.Platform(); p != nil {
		ai.platform = *p
	}
	if ai.digest, err = img.Digest(); err != nil {
		return nil, err
	}
	if ai.desc.Size, err = img.Size(); err != nil {
		return nil, err
	}
	if ai.desc.MediaType, err = img.MediaType(); err != nil {
		return nil, err
	}
	ai.desc.Digest = ai.digest
	return []attestedImage{ai}, nil
}

// attach makes the provenance (and SBOM) of each image of art and returns
// the index of the images with their attestation manifests, and its
// digest, recorded in res (Digest, Attestations). art is returned as it
// is when the build attaches nothing.
//
// The statements in the index are about their image (BuildKit's
// subjects: each destination as a package URL with the platform, and the
// image's digest). Those that --sign-key signs (cosign's .att) are about
// the index too, which the index's own cannot be (it holds them): cosign
// verify-attestation checks that a statement names the digest it
// verifies, the index's for a tag.
func attach(ctx context.Context, o *options, creds *credentials, in *buildInputs, rep *build.Report, art publish.Artifact, started time.Time, destinations []name.Reference, res *result.Result, logw io.Writer) (publish.Artifact, v1.Hash, error) {
	d, err := art.Digest()
	if err != nil || !o.sc.attaches() {
		return art, d, err
	}
	imgs, err := platformImages(art)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("attaching attestations: %w", err)
	}
	finished := time.Now()
	invocation := make([]byte, 16)
	_, _ = rand.Read(invocation)
	var names []string
	for _, ref := range destinations {
		names = append(names, ref.Context().Name()+tagOf(ref))
	}
	base := attest.Build{
		Mode:                o.sc.mode,
		BuilderID:           o.sc.builderID,
		BuilderDependencies: o.sc.builderDeps,
		BuilderPlatform:     dockerfile.FormatPlatform(dockerfile.NativePlatform()),
		Git:                 gitSource(o, in),
		DockerfilePath:      o.dockerfile,
		Dockerfile:          in.dockerfile,
		Target:              o.target,
		BuildArgs:           in.buildArgs,
		Labels:              in.labels,
		LooksSecret:         check.LooksSecret,
		SecretIDs:           slices.Collect(mapsKeys(creds.secrets)),
		SSHIDs:              slices.Collect(mapsKeys(creds.ssh)),
		Redact:              creds.secretValues(),
		Incomplete:          readsUnrecorded(in.dockerfile),
		InvocationID:        hex.EncodeToString(invocation),
		StartedOn:           started,
		FinishedOn:          finished,
		Reproducible:        o.reproducible,
	}
	// The SBOM of each image, made once: the statements about the image
	// and those about the index too (signing) hold the same document.
	var docs [][]byte
	if o.sc.sbom {
		docs = make([][]byte, len(imgs))
		for i := range imgs {
			if docs[i], err = sbomDocument(ctx, o, imgs[i], treeFor(rep, i), sbomName(destinations, imgs[i].digest)); err != nil {
				p := imgs[i].platform
				return nil, v1.Hash{}, fmt.Errorf("the SBOM of %s: %w", dockerfile.FormatPlatform(ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}), err)
			}
		}
	}
	// The statements of each image, made again about the index once its
	// digest is known.
	makeStatements := func(i int, digests ...digest.Digest) ([]attest.Statement, error) {
		ai := imgs[i]
		p := ocispec.Platform{OS: ai.platform.OS, Architecture: ai.platform.Architecture, Variant: ai.platform.Variant}
		sub := attest.Subject{Names: names, Platform: &p, Digests: digests}
		var out []attest.Statement
		if o.sc.mode != attest.ModeNone {
			b := base
			if len(o.platforms) > 0 {
				b.Platform = dockerfile.FormatPlatform(p)
			}
			if rep != nil && i < len(rep.Materials) {
				for _, m := range rep.Materials[i] {
					mp, err := dockerfile.ParsePlatform(m.Platform)
					if err != nil {
						return nil, err
					}
					b.Materials = append(b.Materials, attest.Material{Ref: m.Ref, Digest: m.Digest, Platform: &mp})
				}
			}
			st, err := attest.Provenance(b, sub)
			if err != nil {
				return nil, fmt.Errorf("the provenance of %s: %w", dockerfile.FormatPlatform(p), err)
			}
			out = append(out, attest.Statement{PredicateType: attest.PredicateSLSAProvenance, JSON: st})
		}
		if o.sc.sbom {
			st, err := sbomStatement(o, docs[i], sub)
			if err != nil {
				return nil, fmt.Errorf("the SBOM of %s: %w", dockerfile.FormatPlatform(p), err)
			}
			out = append(out, st)
		}
		return out, nil
	}
	pis := make([]attest.PlatformImage, len(imgs))
	for i := range imgs {
		if imgs[i].statements, err = makeStatements(i, digest.Digest(imgs[i].digest.String())); err != nil {
			return nil, v1.Hash{}, err
		}
		att, err := attest.Manifest(imgs[i].statements)
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("attaching attestations: %w", err)
		}
		pis[i] = attest.PlatformImage{Platform: imgs[i].platform, Image: imgs[i].image, Attestation: att}
		ad, err := att.Digest()
		if err != nil {
			return nil, v1.Hash{}, err
		}
		if len(res.Attestations) < result.MaxAttestations {
			a := result.Attestation{Platform: dockerfile.FormatPlatform(ocispec.Platform{OS: imgs[i].platform.OS, Architecture: imgs[i].platform.Architecture, Variant: imgs[i].platform.Variant}), Image: imgs[i].digest.String(), Manifest: ad.String()}
			for _, s := range imgs[i].statements {
				a.PredicateTypes = append(a.PredicateTypes, s.PredicateType)
			}
			res.Attestations = append(res.Attestations, a)
		} else {
			res.AttestationsOmitted++
		}
	}
	idx, err := attest.Index(pis)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("attaching attestations: %w", err)
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		return nil, v1.Hash{}, err
	}
	if creds.signer != nil {
		for i := range imgs {
			if imgs[i].signed, err = makeStatements(i, digest.Digest(imgs[i].digest.String()), digest.Digest(idxDigest.String())); err != nil {
				return nil, v1.Hash{}, err
			}
		}
	}
	res.Digest = idxDigest.String()
	var what []string
	if o.sc.mode != attest.ModeNone {
		what = append(what, "provenance ("+string(o.sc.mode)+")")
	}
	if o.sc.sbom {
		what = append(what, "SBOM ("+o.sc.sbomFormat+")")
	}
	fmt.Fprintf(logw, "Attached %s to each image: image index %s\n", strings.Join(what, " and "), idxDigest)
	o.sc.attested = &attested{index: idx, digest: idxDigest, images: imgs}
	return idx, idxDigest, nil
}

// readsUnrecorded tells whether a Dockerfile may read what the provenance
// does not name: an ADD of a URL or a git repository (BuildKit records
// their digests as materials; this executor does not yet), or of a source
// named by a variable, which may be one. The provenance then says its
// dependencies are incomplete. A Dockerfile that does not parse says so
// too (it builds nothing anyway).
func readsUnrecorded(dockerfileBytes []byte) bool {
	res, err := parser.Parse(bytes.NewReader(dockerfileBytes))
	if err != nil {
		return true
	}
	for _, n := range res.AST.Children {
		if !strings.EqualFold(n.Value, "add") {
			continue
		}
		var words []string
		for w := n.Next; w != nil; w = w.Next {
			words = append(words, w.Value)
		}
		if len(words) > 0 {
			words = words[:len(words)-1] // the destination
		}
		for _, w := range words {
			if strings.Contains(w, "://") || strings.HasPrefix(w, "git@") || strings.Contains(w, "$") {
				return true
			}
		}
	}
	return false
}

// tagOf is ":tag" of a tag reference, "" for a digest.
func tagOf(ref name.Reference) string {
	if t, ok := ref.(name.Tag); ok {
		return ":" + t.TagStr()
	}
	return ""
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// gitSource is the build's git context for its provenance; nil for
// another context.
func gitSource(o *options, in *buildInputs) *attest.GitSource {
	if in.fetched.Commit == "" {
		return nil
	}
	src, err := source.ParseGitURL(o.context, os.Getenv("GIT_PULL_METHOD"))
	if err != nil {
		return nil
	}
	sub := src.SubDir
	if o.contextSubPath != "" {
		sub = filepath.Join(sub, o.contextSubPath)
	}
	return &attest.GitSource{URL: src.URL, Ref: src.Ref, SubDir: sub, Commit: in.fetched.Commit}
}

// tarballImage is the image a docker-archive tarball (--tar-path) holds of
// art: art itself, or the image of an attested index of one image, whose
// attestations it leaves out, as BuildKit's docker exporter does.
func tarballImage(o *options, art publish.Artifact, logw io.Writer) (v1.Image, bool) {
	if img, ok := art.(v1.Image); ok {
		return img, true
	}
	if a := o.sc.attested; a != nil && len(a.images) == 1 {
		fmt.Fprintln(logw, "The tarball holds the image without its attestations: a docker-archive holds no index (BuildKit's docker exporter leaves them out too)")
		return a.images[0].image, true
	}
	return nil, false
}

// publishSupplyChain pushes, after art was pushed to destinations, each
// attestation manifest as an OCI referrer of its image where the
// destination's registry has the referrers API, and signs art with the
// signing key. A registry without the API gets no referrer and no error; a
// referrer that fails to go up is a warning (the index holds the
// attestations). A signature that fails fails the build.
func publishSupplyChain(ctx context.Context, o *options, creds *credentials, art publish.Artifact, destinations []name.Reference, res *result.Result, logw io.Writer) error {
	if o.noPush {
		return nil
	}
	d, err := art.Digest()
	if err != nil {
		return err
	}
	var repos []name.Repository
	for _, ref := range destinations {
		if !slices.ContainsFunc(repos, func(r name.Repository) bool { return r.String() == ref.Context().String() }) {
			repos = append(repos, ref.Context())
		}
	}
	a := o.sc.attested
	if a != nil {
		pushReferrers(ctx, o, a, repos, res, logw)
	}
	if creds.signer == nil {
		return nil
	}
	return signAll(ctx, o, *creds.signer, d, a, repos, res, logw)
}

// pushReferrers pushes each attestation manifest of a in BuildKit's OCI
// artifact form, with its image as subject, to each repository whose
// registry has the referrers API.
func pushReferrers(ctx context.Context, o *options, a *attested, repos []name.Repository, res *result.Result, logw io.Writer) {
	refs := make([]v1.Image, len(a.images))
	for i, ai := range a.images {
		r, err := attest.Referrer(ai.statements, ai.desc)
		if err != nil {
			fmt.Fprintf(logw, "WARNING: making the attestation referrer of %s: %v\n", ai.digest, err)
			return
		}
		refs[i] = r
	}
	for _, repo := range repos {
		ok, err := publish.SupportsReferrers(ctx, repo, a.images[0].digest, o.reg)
		if err != nil {
			fmt.Fprintf(logw, "WARNING: %v: attestations are in the image index only\n", err)
			continue
		}
		if !ok {
			fmt.Fprintf(logw, "Registry of %s has no OCI referrers API: attestations are in the image index only\n", repo)
			continue
		}
		for i, r := range refs {
			rd, err := r.Digest()
			if err == nil {
				err = publish.PushReferrer(ctx, repo.Digest(rd.String()), r, o.reg)
			}
			if err != nil {
				fmt.Fprintf(logw, "WARNING: pushing the attestation referrer of %s to %s: %v\n", a.images[i].digest, repo, err)
				continue
			}
			if i < len(res.Attestations) {
				res.Attestations[i].Referrer = rd.String()
			}
			fmt.Fprintf(logw, "Pushed attestation referrer %s of %s to %s\n", rd, a.images[i].digest, repo)
		}
	}
}

// signAll signs d (the index's or the image's digest) in every repository,
// and with an index each of its images too (as cosign sign --recursive),
// and attaches the signed statements (cosign's .att): all of them to the
// index, each image's to it.
func signAll(ctx context.Context, o *options, s sign.Signer, d v1.Hash, a *attested, repos []name.Repository, res *result.Result, logw io.Writer) error {
	type target struct {
		digest     v1.Hash
		statements []attest.Statement
	}
	targets := []target{{digest: d}}
	if a != nil {
		for _, ai := range a.images {
			targets[0].statements = append(targets[0].statements, ai.signed...)
			targets = append(targets, target{digest: ai.digest, statements: ai.signed})
		}
	}
	for ri, repo := range repos {
		// Each target's signature and attestations are tags of their
		// own: they go up at once.
		sigs := make([]result.Signature, len(targets))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(4)
		for ti, t := range targets {
			ref := repo.Digest(t.digest.String())
			ropts := o.reg.Remote(gctx, ref, true)
			sigs[ti].Digest = t.digest.String()
			g.Go(func() error {
				sig, err := sign.PushSignature(gctx, ref, s, ropts...)
				if err != nil {
					return err
				}
				sigs[ti].Signature = sig.String()
				return nil
			})
			if len(t.statements) == 0 {
				continue
			}
			raw := make([][]byte, len(t.statements))
			for i, st := range t.statements {
				raw[i] = st.JSON
			}
			g.Go(func() error {
				att, err := sign.PushAttestations(gctx, ref, raw, s, ropts...)
				if err != nil {
					return err
				}
				sigs[ti].Attestations = att.String()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if ri == 0 {
			for ti, rs := range sigs {
				if ti < result.MaxAttestations {
					res.Signatures = append(res.Signatures, rs)
				}
			}
		}
		fmt.Fprintf(logw, "Signed %s in %s with %s\n", d, repo, s)
	}
	return nil
}

// prePush pushes, in the background, the images of art by digest to the
// destinations' repositories while their SBOMs are made (attach): the
// layers, most of a push, go up meanwhile, and the index with its
// attestation manifests goes up after, finding its images there (a HEAD
// each). It waits for the push check first, and pushes nothing it
// refused. Only a build that makes an SBOM pushes ahead: provenance alone
// takes no time worth overlapping. The images are untagged until the
// index is tagged; a build that fails in between leaves them so, as a
// failed push does.
func prePush(ctx context.Context, o *options, check *pushCheck, art publish.Artifact, destinations []name.Reference) *pending {
	p := &pending{done: make(chan struct{})}
	if o.noPush || !o.sc.sbom || len(destinations) == 0 {
		close(p.done)
		return p
	}
	ctx, p.cancel = context.WithCancel(ctx)
	go func() {
		defer close(p.done)
		defer p.cancel()
		if p.err = check.wait(); p.err != nil {
			return
		}
		imgs, err := platformImages(art)
		if err != nil {
			p.err = err
			return
		}
		for _, ai := range imgs {
			if _, err := publish.PushByDigest(ctx, ai.image, destinations, o.reg); err != nil {
				p.err = err
				return
			}
		}
	}()
	return p
}

// pending is work going on in the background.
type pending struct {
	done   chan struct{}
	cancel context.CancelFunc
	err    error
}

// wait waits for the work's end and returns its error.
func (p *pending) wait() error {
	<-p.done
	return p.err
}

// stop cancels the work and waits for its end.
func (p *pending) stop() {
	if p.cancel != nil {
		p.cancel()
	}
	<-p.done
}
