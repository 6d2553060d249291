// Package attest makes the supply-chain attestations of a build: an in-toto
// Statement with a SLSA Provenance v1 predicate for each image (as
// BuildKit's solver/llbsolver/provenance makes it), the statement of an
// SBOM, and the attestation manifests that carry them in the pushed image
// index, in BuildKit's layout (exporter/containerimage), so that
// `docker buildx imagetools inspect --format '{{json .Provenance}}'` reads
// them, and as OCI 1.1 referrers.
//
// Nothing here logs or talks to a registry; the executor decides what to
// attach and where to push it.
package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	intoto "github.com/in-toto/in-toto-golang/in_toto"
	slsa "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/common"
	slsa1 "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/v1"
	"github.com/moby/buildkit/util/purl"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	packageurl "github.com/package-url/packageurl-go"
)

// Mode is how much the provenance records: BuildKit's provenance "mode"
// attribute (solver/llbsolver/provenance.go, NewProvenanceCreator).
type Mode string

const (
	// ModeNone attaches no provenance.
	ModeNone Mode = "none"
	// ModeMin records the build's request without its build arguments,
	// labels, secret and ssh ids (BuildKit's scrubMinRequest), its
	// dependencies and its times. It is buildx's default.
	ModeMin Mode = "min"
	// ModeMax records also the build arguments and labels (those whose
	// name looks like a secret's excepted, see Build.BuildArgs), the ids
	// of the secrets and ssh agents, and the Dockerfile itself.
	ModeMax Mode = "max"
)

// ParseMode parses an executor --provenance value: none, min or max
// (BuildKit's modes, "full" being max as BuildKit takes it), also written
// mode=min or mode=max as BuildKit's attest:provenance attribute; true is
// min and false none, as buildx's --provenance shorthand.
func ParseMode(s string) (Mode, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	v = strings.TrimPrefix(v, "mode=")
	switch v {
	case "none", "false", "0":
		return ModeNone, nil
	case "min", "true", "1", "":
		return ModeMin, nil
	case "max", "full":
		return ModeMax, nil
	}
	return "", fmt.Errorf("%q: want none, min or max (or false, true)", s)
}

// The provenance's types, by BuildKit's names (solver/llbsolver/provenance/types).
const (
	// BuildType is the buildType of BuildKit's SLSA v1 provenance
	// (BuildKitBuildType1): the build's parameters are those of
	// BuildKit's Dockerfile frontend, which the executor's are.
	BuildType = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
	// PredicateSLSAProvenance is the predicate type of SLSA provenance v1.
	PredicateSLSAProvenance = slsa1.PredicateSLSAProvenance
	// FrontendDockerfile is the frontend BuildKit records for a Dockerfile
	// build (dockerfile.v0).
	FrontendDockerfile = "dockerfile.v0"
)

// Build is what the provenance of one image says about its build. Every
// string in it comes from the build's inputs; none may hold a secret:
// Provenance drops the build arguments and labels that may (see BuildArgs,
// Redact), strips the user information of URLs, and records secrets and ssh
// agents by id only.
type Build struct {
	Mode Mode
	// BuilderID is runDetails.builder.id: the URI of the builder, the
	// executor image's reference with its digest when the controller
	// runs it (--builder-id). BuildKit leaves it empty unless asked.
	BuilderID string
	// BuilderDependencies are image references with a digest
	// (ref@sha256:...) of what else made the build, the manager's image
	// under the controller (--builder-dependency): runDetails.builder's
	// builderDependencies.
	BuilderDependencies []string
	// BuilderPlatform is the platform the executor ran on (BuildKit's
	// internalParameters.builderPlatform).
	BuilderPlatform string

	// Git is the build context when it came from git; nil for a local
	// directory or tarball, which BuildKit records as "locals" and which
	// leaves the dependencies incomplete.
	Git *GitSource
	// DockerfilePath is the Dockerfile's path as given (--dockerfile),
	// Dockerfile its content.
	DockerfilePath string
	Dockerfile     []byte
	// Target is the target stage (--target), "" for the last.
	Target string
	// Platform is the image's platform when the build named it
	// (--custom-platform); "" when built for the executor's own.
	Platform string
	// BuildArgs and Labels are --build-arg and --label. ModeMin records
	// neither, as BuildKit; ModeMax records them as BuildKit does
	// (build-arg:NAME, label:NAME), but for those whose name looks like a
	// secret's (BuildKit's SecretsUsedInArgOrEnv rule, LooksSecret) and
	// those whose value holds one of Redact: their values are the user's
	// to give, and the provenance is public.
	BuildArgs, Labels map[string]string
	// LooksSecret tells whether a build argument's name looks like a
	// secret's; nil treats none so (the executor gives check's rule).
	LooksSecret func(name string) bool
	// SecretIDs and SSHIDs are the ids of the build's secrets and ssh
	// agents, recorded by ModeMax (ids only, as BuildKit).
	SecretIDs, SSHIDs []string
	// Redact are values that no field of the provenance may hold: every
	// secret's and credential's. A build argument or label holding one is
	// left out; any other field holding one fails Provenance.
	Redact [][]byte

	// Materials are the images the build read (every FROM, COPY --from
	// and RUN --mount from= image), each with the digest its reference
	// resolved to.
	Materials []Material
	// Incomplete is set when the build read something Materials do not
	// name (an ADD of a URL or of a git repository): the provenance then
	// says its dependencies are incomplete.
	Incomplete bool

	// InvocationID identifies the run; StartedOn and FinishedOn are when
	// it started and when the image was built.
	InvocationID          string
	StartedOn, FinishedOn time.Time
	// Reproducible is --reproducible (BuildKit's "reproducible" attribute,
	// recorded as buildkit_reproducible).
	Reproducible bool
}

// GitSource is a git build context.
type GitSource struct {
	// URL is the repository's URL; its user information is never
	// recorded (StripUserInfo).
	URL string
	// Ref and SubDir are the "#ref:subdir" of the context, SubDir with
	// --context-sub-path joined.
	Ref, SubDir string
	// Commit is the commit checked out: sha1, or sha256 when 64 digits.
	Commit string
}

// Material is an image the build read.
type Material struct {
	// Ref is the reference as the Dockerfile named it, normalised
	// (docker.io/library/busybox:latest).
	Ref string
	// Digest is what Ref resolved to (an index's digest when it names one,
	// as BuildKit records it).
	Digest string
	// Platform is the platform it was read for.
	Platform *ocispec.Platform
}

// Subject is what a statement is about: an image's digest, under names.
type Subject struct {
	// Names are the image's references (the destinations), each recorded
	// as a package URL with the platform, as BuildKit names subjects
	// (exporter/containerimage/writer.go); none gives one subject without
	// a name.
	Names []string
	// Platform qualifies the names; nil leaves it out.
	Platform *ocispec.Platform
	// Digests are the digests the statement is about: the image's, and,
	// for a statement signed apart from the index (cosign's .att), the
	// index's too.
	Digests []digest.Digest
}

// The predicate, in BuildKit's shape (ProvenancePredicateSLSA1): SLSA v1
// with BuildKit's external and internal parameters and metadata.
type predicate struct {
	BuildDefinition buildDefinition `json:"buildDefinition"`
	RunDetails      runDetails      `json:"runDetails"`
}

type buildDefinition struct {
	slsa1.ProvenanceBuildDefinition
	ExternalParameters externalParameters `json:"externalParameters"`
	InternalParameters internalParameters `json:"internalParameters"`
}

type externalParameters struct {
	ConfigSource configSource `json:"configSource"`
	Request      request      `json:"request"`
	// Dockerfile is the Dockerfile's path and digest, which BuildKit
	// records only in max mode (its content, in buildkit_metadata.source):
	// the issue asks for it in every mode, and it reveals nothing.
	Dockerfile *fileDigest `json:"dockerfile,omitempty"`
}

type fileDigest struct {
	Path   string         `json:"path"`
	Digest slsa.DigestSet `json:"digest"`
}

type configSource struct {
	URI    string         `json:"uri,omitempty"`
	Digest slsa.DigestSet `json:"digest,omitempty"`
	Path   string         `json:"path,omitempty"`
}

type request struct {
	Frontend string            `json:"frontend,omitempty"`
	Args     map[string]string `json:"args,omitempty"`
	Secrets  []idRef           `json:"secrets,omitempty"`
	SSH      []idRef           `json:"ssh,omitempty"`
	Locals   []localRef        `json:"locals,omitempty"`
}

type idRef struct {
	ID string `json:"id"`
}

type localRef struct {
	Name string `json:"name"`
}

type internalParameters struct {
	BuilderPlatform string `json:"builderPlatform"`
}

type runDetails struct {
	slsa1.ProvenanceRunDetails
	Metadata *metadata `json:"metadata,omitempty"`
}

type metadata struct {
	slsa1.BuildMetadata
	BuildKitMetadata buildkitMetadata `json:"buildkit_metadata"`
	Completeness     completeness     `json:"buildkit_completeness"`
	Reproducible     bool             `json:"buildkit_reproducible,omitempty"`
}

type buildkitMetadata struct {
	Source *sourceInfo `json:"source,omitempty"`
}

type sourceInfo struct {
	Infos []sourceFile `json:"infos,omitempty"`
}

type sourceFile struct {
	Filename string `json:"filename,omitempty"`
	Language string `json:"language,omitempty"`
	Data     []byte `json:"data,omitempty"`
}

type completeness struct {
	Request              bool `json:"request"`
	ResolvedDependencies bool `json:"resolvedDependencies"`
}

// Provenance returns the in-toto Statement (v1) of b's SLSA v1 provenance
// about s, as JSON.
//
// It follows BuildKit's NewPredicate and NewProvenanceCreator: the
// configSource is the git context (its URL and ref, the commit as its
// digest, the Dockerfile's path); the request is the Dockerfile frontend's
// (target, and in max mode build-arg: and label: arguments, secret and ssh
// ids); a local context is recorded as BuildKit's locals "context" and
// "dockerfile", and leaves the dependencies incomplete; resolved
// dependencies are the images as package URLs with their platform and
// digest (BuildKit's slsaMaterials), then the git context. Unlike BuildKit
// it records the target platform (BuildKit's FilterArgs drops "platform" as
// host-specific; here it is the image's own, asked for), the Dockerfile's
// digest, and never a build argument whose name looks like a secret's (see
// Build.BuildArgs). URLs lose their user information entirely where
// BuildKit masks it as xxxxx:xxxxx.
func Provenance(b Build, s Subject) ([]byte, error) {
	if b.Mode != ModeMin && b.Mode != ModeMax {
		return nil, fmt.Errorf("provenance mode %q: want min or max", b.Mode)
	}
	subjects, err := subjects(s)
	if err != nil {
		return nil, err
	}
	redact := newRedactor(b.Redact)

	req := request{Frontend: FrontendDockerfile, Args: map[string]string{}}
	complete := true // BuildKit: the request is complete when there is a frontend
	if b.Target != "" {
		req.Args["target"] = b.Target
	}
	if b.Platform != "" {
		req.Args["platform"] = b.Platform
	}
	for _, kv := range []struct {
		prefix string
		m      map[string]string
	}{{"build-arg:", b.BuildArgs}, {"label:", b.Labels}} {
		for k, v := range kv.m {
			switch {
			case b.Mode == ModeMin:
				// scrubMinRequest: min mode drops them, and says so.
				complete = false
			case kv.prefix == "build-arg:" && b.LooksSecret != nil && b.LooksSecret(k):
				complete = false
			case redact.holds(k) || redact.holds(v):
				complete = false
			default:
				req.Args[kv.prefix+k] = v
			}
		}
	}
	if b.Mode == ModeMax {
		for _, id := range sortedUnique(b.SecretIDs) {
			req.Secrets = append(req.Secrets, idRef{ID: id})
		}
		for _, id := range sortedUnique(b.SSHIDs) {
			req.SSH = append(req.SSH, idRef{ID: id})
		}
	}
	if len(req.Args) == 0 {
		req.Args = nil
	}

	ext := externalParameters{Request: req}
	ext.ConfigSource.Path = b.DockerfilePath
	if b.Dockerfile != nil {
		ext.Dockerfile = &fileDigest{Path: b.DockerfilePath, Digest: slsa.DigestSet{"sha256": digest.FromBytes(b.Dockerfile).Encoded()}}
	}
	deps, err := materials(b.Materials)
	if err != nil {
		return nil, err
	}
	resolvedComplete := !b.Incomplete
	if g := b.Git; g != nil {
		repo := StripUserInfo(g.URL)
		frag := g.Ref
		if g.SubDir != "" {
			frag += ":" + g.SubDir
		}
		ext.ConfigSource.URI = withFragment(repo, frag)
		ext.ConfigSource.Digest = commitDigest(g.Commit)
		deps = append(deps, slsa1.ResourceDescriptor{URI: withFragment(repo, g.Ref), Digest: commitDigest(g.Commit)})
	} else {
		// BuildKit's locals: a context it cannot name by digest.
		ext.Request.Locals = []localRef{{Name: "context"}, {Name: "dockerfile"}}
		resolvedComplete = false
	}

	p := predicate{
		BuildDefinition: buildDefinition{
			ProvenanceBuildDefinition: slsa1.ProvenanceBuildDefinition{
				BuildType:            BuildType,
				ResolvedDependencies: deps,
			},
			ExternalParameters: ext,
			InternalParameters: internalParameters{BuilderPlatform: b.BuilderPlatform},
		},
	}
	p.RunDetails.Builder = slsa1.Builder{ID: b.BuilderID}
	for _, d := range b.BuilderDependencies {
		rd, err := imageDescriptor(d)
		if err != nil {
			return nil, fmt.Errorf("builder dependency: %w", err)
		}
		p.RunDetails.Builder.BuilderDependencies = append(p.RunDetails.Builder.BuilderDependencies, rd)
	}
	md := &metadata{
		Completeness: completeness{Request: complete, ResolvedDependencies: resolvedComplete},
		Reproducible: b.Reproducible,
	}
	md.InvocationID = b.InvocationID
	if !b.StartedOn.IsZero() {
		t := b.StartedOn.UTC()
		md.StartedOn = &t
	}
	if !b.FinishedOn.IsZero() {
		t := b.FinishedOn.UTC()
		md.FinishedOn = &t
	}
	if b.Mode == ModeMax && b.Dockerfile != nil && !redact.holds(string(b.Dockerfile)) {
		// BuildKit's max mode records the Dockerfile
		// (buildkit_metadata.source.infos), base64-encoded: one that
		// holds a secret's value is left out, which the check of the
		// whole statement below would not see.
		md.BuildKitMetadata.Source = &sourceInfo{Infos: []sourceFile{{Filename: b.DockerfilePath, Language: "Dockerfile", Data: b.Dockerfile}}}
	}
	p.RunDetails.Metadata = md

	out, err := json.Marshal(intoto.Statement{
		StatementHeader: intoto.StatementHeader{Type: intoto.StatementInTotoV1, PredicateType: PredicateSLSAProvenance, Subject: subjects},
		Predicate:       p,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the provenance: %w", err)
	}
	// The last guard: the fields not dropped above come from the
	// Dockerfile, the context's URL and the images; none may hold a
	// secret of the build.
	if redact.holds(string(out)) {
		return nil, errors.New("the provenance would hold a secret or credential value of the build (in the Dockerfile, a URL or a reference): not attaching it")
	}
	return out, nil
}

// subjects are s's in-toto subjects: a package URL of each name with the
// platform, as BuildKit's default subjects, each with every digest of s.
func subjects(s Subject) ([]intoto.Subject, error) {
	if len(s.Digests) == 0 {
		return nil, errors.New("a statement needs the digest of its subject")
	}
	ds := slsa.DigestSet{}
	var out []intoto.Subject
	for _, d := range s.Digests {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("subject digest %q: %w", d, err)
		}
		if _, dup := ds[d.Algorithm().String()]; dup {
			// A digest set holds one digest per algorithm: one subject
			// per digest.
			continue
		}
		ds[d.Algorithm().String()] = d.Encoded()
	}
	names := s.Names
	if len(names) == 0 {
		names = []string{""}
	}
	for _, n := range names {
		pn := ""
		if n != "" {
			var err error
			if pn, err = purl.RefToPURL(packageurl.TypeDocker, n, s.Platform); err != nil {
				return nil, fmt.Errorf("subject %s: %w", n, err)
			}
		}
		for _, d := range s.Digests {
			out = append(out, intoto.Subject{Name: pn, Digest: slsa.DigestSet{d.Algorithm().String(): d.Encoded()}})
		}
	}
	return out, nil
}

// materials are BuildKit's slsaMaterials of images: pkg:docker URLs with
// the platform, and the resolved digest.
func materials(ms []Material) ([]slsa1.ResourceDescriptor, error) {
	var out []slsa1.ResourceDescriptor
	seen := map[string]bool{}
	for _, m := range ms {
		uri, err := purl.RefToPURL(packageurl.TypeDocker, m.Ref, m.Platform)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", m.Ref, err)
		}
		rd := slsa1.ResourceDescriptor{URI: uri}
		if m.Digest != "" {
			d, err := digest.Parse(m.Digest)
			if err != nil {
				return nil, fmt.Errorf("image %s: digest %q: %w", m.Ref, m.Digest, err)
			}
			rd.Digest = slsa.DigestSet{d.Algorithm().String(): d.Encoded()}
		}
		key := uri + " " + m.Digest
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, rd)
	}
	return out, nil
}

// imageDescriptor is an image reference with its digest (ref@sha256:...)
// as a resource descriptor: its package URL and digest.
func imageDescriptor(ref string) (slsa1.ResourceDescriptor, error) {
	name, dg, ok := strings.Cut(ref, "@")
	if !ok {
		return slsa1.ResourceDescriptor{}, fmt.Errorf("%q: want an image reference with its digest (ref@sha256:...)", ref)
	}
	d, err := digest.Parse(dg)
	if err != nil {
		return slsa1.ResourceDescriptor{}, fmt.Errorf("%q: %w", ref, err)
	}
	uri, err := purl.RefToPURL(packageurl.TypeDocker, name, nil)
	if err != nil {
		return slsa1.ResourceDescriptor{}, fmt.Errorf("%q: %w", ref, err)
	}
	return slsa1.ResourceDescriptor{URI: uri, Digest: slsa.DigestSet{d.Algorithm().String(): d.Encoded()}}, nil
}

// commitDigest is BuildKit's digestSetForCommit: sha256 for a 64-digit
// commit (a SHA-256 repository), else sha1.
func commitDigest(commit string) slsa.DigestSet {
	if commit == "" {
		return nil
	}
	if len(commit) == 64 {
		return slsa.DigestSet{"sha256": commit}
	}
	return slsa.DigestSet{"sha1": commit}
}

func withFragment(u, frag string) string {
	if frag == "" {
		return u
	}
	return u + "#" + frag
}

// scpLike matches git's scp-like address, [user@]host:path.
var scpLike = regexp.MustCompile(`^([^@/:]+@)?([^/:]+):(.*)$`)

// StripUserInfo is a repository URL without its user information: user
// name and password (or token) of a URL, and the user of an scp-like
// address (git@host:path is host:path). A value that does not parse is
// cut to its scheme, so that no credential can pass.
func StripUserInfo(u string) string {
	if !strings.Contains(u, "://") {
		if m := scpLike.FindStringSubmatch(u); m != nil {
			return m[2] + ":" + m[3]
		}
		return u
	}
	pu, err := url.Parse(u)
	if err != nil {
		scheme, _, _ := strings.Cut(u, "://")
		return scheme + "://"
	}
	pu.User = nil
	return pu.String()
}

// redactor finds the values of a build's secrets in text.
type redactor [][]byte

// minRedact is the shortest value searched for: shorter ones would match
// by chance (a digest's hex holds every 3-character string of hex), and
// are no secret worth the name.
const minRedact = 6

func newRedactor(values [][]byte) redactor {
	var out redactor
	for _, v := range values {
		v = bytes.TrimSpace(v)
		if len(v) >= minRedact {
			out = append(out, v)
		}
	}
	return out
}

// holds tells whether s holds one of r's values, as it is or as JSON
// escapes it.
func (r redactor) holds(s string) bool {
	for _, v := range r {
		if strings.Contains(s, string(v)) {
			return true
		}
		if enc, err := json.Marshal(string(v)); err == nil {
			if inner := enc[1 : len(enc)-1]; !bytes.Equal(inner, v) && strings.Contains(s, string(inner)) {
				return true
			}
		}
	}
	return false
}

func sortedUnique(ss []string) []string {
	m := map[string]bool{}
	for _, s := range ss {
		if s != "" {
			m[s] = true
		}
	}
	return slices.Sorted(maps.Keys(m))
}
