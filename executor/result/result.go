// Package result defines the JSON document the executor writes to its
// termination message path when it ends, and that the controller reads to
// compute an ImageBuild's status. It is the only channel between the two:
// the controller never parses logs.
//
// The encoded document must fit in the kubelet's termination message limit
// (4 KiB); Encode trims the least important fields until it does.
package result

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// MaxSize is the kubelet's limit for a termination message.
const MaxSize = 4096

// Reason is a machine-readable cause of a failed build.
type Reason string

// Reasons of failure. A controller retries none of them except
// PushFailed and Internal, which may be transient, and, when the build
// asks for it, a SourceFetchFailed whose Failure.Transient is set.
const (
	// ReasonInvalidArguments: the command line is wrong.
	ReasonInvalidArguments Reason = "InvalidArguments"
	// ReasonSourceFetchFailed: the build context could not be fetched.
	ReasonSourceFetchFailed Reason = "SourceFetchFailed"
	// ReasonDockerfileInvalid: the Dockerfile could not be parsed or is inconsistent.
	ReasonDockerfileInvalid Reason = "DockerfileInvalid"
	// ReasonBaseImagePullFailed: a FROM image or COPY --from image could not be pulled.
	ReasonBaseImagePullFailed Reason = "BaseImagePullFailed"
	// ReasonCopyFailed: a COPY or ADD source was missing or could not be copied.
	ReasonCopyFailed Reason = "CopyFailed"
	// ReasonRunFailed: a RUN step exited non-zero.
	ReasonRunFailed Reason = "RunFailed"
	// ReasonPushFailed: an output could not be pushed or written.
	ReasonPushFailed Reason = "PushFailed"
	// ReasonPlatformUnsupported: a RUN step of a stage of another platform
	// than the node's cannot run there (no binfmt_misc handler for that
	// platform, or one without the F flag); found before any step runs.
	// Another node (of that architecture, or with the handler) can build
	// it: Failure.Platform names the platform.
	ReasonPlatformUnsupported Reason = "PlatformUnsupported"
	// ReasonCheckFailed: a build check's finding fails the build before
	// anything runs: a rule --check-fail-on names, or any rule under the
	// Dockerfile's check=error=true; or --check found such a finding.
	ReasonCheckFailed Reason = "CheckFailed"
	// ReasonInternal: anything else.
	ReasonInternal Reason = "Internal"
)

// Result is what a finished executor reports.
type Result struct {
	// Success is true when every output was written.
	Success bool `json:"success"`

	// Digest is the digest (sha256:...) of what was pushed, or written,
	// under the destinations: the image manifest, or for a build of
	// several platforms the image index (a Docker manifest list without
	// OCI media types).
	Digest string `json:"digest,omitempty"`
	// References are the pushed references, each with its digest
	// (repo@sha256:...).
	References []string `json:"references,omitempty"`
	// Platforms are the platforms built, each with its image's digest,
	// when the build was given any (--custom-platform), in that order:
	// one for a single platform, then Digest is that image's.
	Platforms []Platform `json:"platforms,omitempty"`

	// Attestations are the attestation manifests of the pushed index,
	// one per image in the order of its images, when the build attached
	// any (--provenance, --sbom); at most MaxAttestations, fewer when the
	// document would not fit in MaxSize otherwise (Encode), those left
	// out counted in AttestationsOmitted. Digest is then the index's.
	Attestations        []Attestation `json:"attestations,omitempty"`
	AttestationsOmitted int           `json:"attestationsOmitted,omitempty"`
	// Signatures are what --sign-key signed and where cosign finds it:
	// Digest's signature first, then each image's of an index.
	Signatures []Signature `json:"signatures,omitempty"`

	// Commit is the resolved git commit of the build context, if it came from git.
	Commit string `json:"commit,omitempty"`

	// Bases are the images the build read (FROM, COPY --from and RUN
	// --mount from= images, not stages), in build order, at most
	// MaxBases; BasesOmitted counts those left out (past MaxBases, or
	// trimmed by Encode). The controller checks them for a moved tag.
	Bases        []Base `json:"bases,omitempty"`
	BasesOmitted int    `json:"basesOmitted,omitempty"`

	// Stages summarises each stage that was built, in build order.
	Stages []Stage `json:"stages,omitempty"`
	// CacheHits and CacheMisses count the layer cache lookups of the whole build.
	CacheHits   int `json:"cacheHits"`
	CacheMisses int `json:"cacheMisses"`
	// CacheMounts counts the RUN --mount=type=cache directories restored
	// from the cache repository before the steps that mounted them and
	// saved to it after the build (issue 17); nil when none was.
	CacheMounts *CacheMounts `json:"cacheMounts,omitempty"`
	// State says what the build found in and left in --state-dir, the
	// directory (a volume of the ImageBuild's in a cluster) that keeps
	// unpacked trees and cache mounts between builds (issue 17); nil
	// without one.
	State *State `json:"state,omitempty"`

	// Millis is how long the executor ran, from its start to this result,
	// in milliseconds: the build's duration as people read it (the pod's
	// timestamps count whole seconds).
	Millis int64 `json:"millis,omitempty"`
	// Durations of the phases, in milliseconds.
	FetchMillis int64 `json:"fetchMillis,omitempty"`
	BuildMillis int64 `json:"buildMillis,omitempty"`
	PushMillis  int64 `json:"pushMillis,omitempty"`

	// Failure describes why the build failed; nil on success.
	Failure *Failure `json:"failure,omitempty"`

	// Warnings are the build checks' findings (executor/check), by line:
	// at most MaxWarnings, fewer when the document would not fit in
	// MaxSize otherwise (Encode). WarningsDropped counts those left out.
	Warnings        []Warning `json:"warnings,omitempty"`
	WarningsDropped int       `json:"warningsDropped,omitempty"`
}

// Warning is one finding of the build checks.
type Warning struct {
	// Rule is the rule's name, e.g. "JSONArgsRecommended" or "RootUser".
	Rule string `json:"rule"`
	// Line is the 1-based Dockerfile line the finding is about.
	Line int `json:"line,omitempty"`
	// Message says what was found, in one line of at most
	// MaxWarningMessage bytes (Excerpt); it shows no secret value.
	Message string `json:"message"`
	// URL documents the rule.
	URL string `json:"url,omitempty"`
}

// MaxWarnings bounds Result.Warnings.
const MaxWarnings = 100

// MaxWarningMessage bounds Warning.Message, in bytes.
const MaxWarningMessage = 200

// AddWarnings appends ws to r's warnings, keeping at most MaxWarnings
// and counting the others in WarningsDropped. Messages are made one
// sanitised line (Excerpt).
func (r *Result) AddWarnings(ws ...Warning) {
	for _, w := range ws {
		if len(r.Warnings) >= MaxWarnings {
			r.WarningsDropped++
			continue
		}
		w.Message = Excerpt(w.Message, MaxWarningMessage)
		w.URL = Excerpt(w.URL, MaxWarningMessage)
		r.Warnings = append(r.Warnings, w)
	}
}

// MaxBases bounds Result.Bases.
const MaxBases = 16

// Base is an image a build read, and what its reference resolved to.
type Base struct {
	// Ref is the reference the Dockerfile named, after ARG expansion,
	// normalised: registry, repository and tag or digest, in full
	// ("docker.io/library/debian:bookworm"), whichever registry mirror
	// served it.
	Ref string `json:"ref"`
	// Digest is what Ref resolved to: the digest the registry gives for
	// the tag (an index's when the tag names an index, else the
	// manifest's), which a HEAD request for Ref answers as long as the tag
	// has not moved.
	Digest string `json:"digest"`
	// Manifest is the digest of the manifest of the build's platform, when
	// Digest is an index's.
	Manifest string `json:"manifest,omitempty"`
}

// MaxAttestations bounds Result.Attestations, and Result.Signatures.
const MaxAttestations = 16

// Attestation is the attestation manifest about one image: in BuildKit's
// layout, an entry of the index of platform unknown/unknown whose
// annotation vnd.docker.reference.digest names the image.
type Attestation struct {
	// Platform is the image's platform (os/arch[/variant]).
	Platform string `json:"platform,omitempty"`
	// Image is the digest of the image's manifest.
	Image string `json:"image"`
	// Manifest is the digest of the attestation manifest in the index.
	Manifest string `json:"manifest"`
	// PredicateTypes are the in-toto predicate types of its statements,
	// in order (https://slsa.dev/provenance/v1, https://spdx.dev/Document,
	// https://cyclonedx.org/bom).
	PredicateTypes []string `json:"predicateTypes,omitempty"`
	// Referrer is the digest of the same statements as an OCI 1.1
	// referrer of the image (BuildKit's OCI artifact form, with the image
	// as subject), pushed to the destinations whose registry has the
	// referrers API; empty when none has.
	Referrer string `json:"referrer,omitempty"`
}

// Signature is what --sign-key signed of one digest, in cosign's layout:
// the signature under the tag sha256-<hex>.sig and the signed statements
// (cosign's attestations) under sha256-<hex>.att of the first
// destination's repository (the others hold their own, of the same
// content).
type Signature struct {
	// Digest is the digest signed: the index's or an image's.
	Digest string `json:"digest"`
	// Signature is the digest of the .sig manifest.
	Signature string `json:"signature,omitempty"`
	// Attestations is the digest of the .att manifest, when statements
	// were attached to Digest.
	Attestations string `json:"attestations,omitempty"`
}

// CacheMounts sums up what the build did with cache mounts kept between
// builds in the cache repository (issue 17). Sizes are of the mounts'
// files as on disk (the sum of regular files' sizes); UploadedBytes is what
// the saves sent, compressed (a save uploads only what changed since the
// restore). Per-mount lines are in the executor's log.
type CacheMounts struct {
	// Restored mounts, how big they were and how long restoring them took
	// (the longest, as they are restored at the same time while earlier
	// steps run).
	Restored      int   `json:"restored,omitempty"`
	RestoredBytes int64 `json:"restoredBytes,omitempty"`
	RestoreMillis int64 `json:"restoreMillis,omitempty"`
	// Saved mounts, their size, what their saves uploaded and how long
	// saving them took (all of them, at the end of the build).
	Saved         int   `json:"saved,omitempty"`
	SavedBytes    int64 `json:"savedBytes,omitempty"`
	UploadedBytes int64 `json:"uploadedBytes,omitempty"`
	SaveMillis    int64 `json:"saveMillis,omitempty"`
	// Skipped counts mounts neither restored nor saved as they would have
	// been: a saved one that could not be read, was refused (its bytes not
	// what its manifest says) or too large (the step got an empty mount),
	// or one over --cache-mount-max-size or whose save failed (not saved).
	// Each has a warning in the log. A mount never saved before is not
	// skipped: it starts empty.
	Skipped int `json:"skipped,omitempty"`
}

// State is what a build did with --state-dir (issue 17).
type State struct {
	// Found is set when the directory held state from an earlier build.
	Found bool `json:"found,omitempty"`
	// Reset says why what it held was not used (unreadable, another
	// version, busy, full): the build ran as without it. Empty when it
	// was used, or empty to begin with.
	Reset string `json:"reset,omitempty"`
	// TreesUsed counts the stages that started from an unpacked tree
	// kept there, instead of unpacking their layers; MountsUsed the cache
	// mounts taken from there instead of the cache repository.
	TreesUsed  int `json:"treesUsed,omitempty"`
	MountsUsed int `json:"mountsUsed,omitempty"`
	// Bytes is how much it holds after the build (its regular files).
	Bytes int64 `json:"bytes,omitempty"`
}

// Platform summarises the build of one platform.
type Platform struct {
	// Platform is os/arch[/variant], normalised (linux/arm64,
	// linux/arm/v7).
	Platform string `json:"platform"`
	// Digest is the digest of the platform's image manifest.
	Digest string `json:"digest,omitempty"`
	// Stages are the stages its image needed, in build order, those
	// built once for several platforms included.
	Stages []Stage `json:"stages,omitempty"`
	// CacheHits and CacheMisses count the layer cache lookups of those
	// stages.
	CacheHits   int `json:"cacheHits"`
	CacheMisses int `json:"cacheMisses"`
	// Millis is how long its stages took, from the start of the build to
	// the last of them (the platforms are built at the same time).
	Millis int64 `json:"millis,omitempty"`
}

// Stage summarises one built stage.
type Stage struct {
	// Name is the stage's name, or its index when it has none.
	Name string `json:"name"`
	// Platform is the platform the stage was built for, in a build of
	// several platforms or of another platform than the node's; else
	// empty.
	Platform string `json:"platform,omitempty"`
	// Instructions is the number of instructions in the stage (FROM excluded).
	Instructions int `json:"instructions"`
	// CacheHits is the number of instructions served from the cache.
	CacheHits int `json:"cacheHits"`
	// Millis is how long the stage took.
	Millis int64 `json:"millis"`
}

// Failure says why and where a build failed. Its texts follow the rule of
// Redact and Excerpt (see redact.go); Encode applies them again.
type Failure struct {
	Reason Reason `json:"reason"`
	// Message says what failed; it quotes no file's content but an
	// excerpt of the failing Dockerfile instruction, and no URL user info.
	// It does not say where: Line and Instruction do, and whoever shows
	// the failure names the line once (Located).
	Message string `json:"message"`
	// Line is the 1-based Dockerfile line of the failing instruction, 0 if none.
	Line int `json:"line,omitempty"`
	// Instruction is the failing instruction as written, as an Excerpt
	// of at most MaxInstruction bytes.
	Instruction string `json:"instruction,omitempty"`
	// ExitCode is the exit status of a failed RUN.
	ExitCode int `json:"exitCode,omitempty"`
	// Platform is the platform of the failing stage, in a build of
	// several platforms or of another platform than the node's.
	Platform string `json:"platform,omitempty"`
	// Transient is true when the cause may pass without a change to
	// the build: the git server could not be reached (connection
	// refused, reset or timed out) or failed on its side (HTTP 5xx).
	// The source fetch sets it (source.Unreachable).
	Transient bool `json:"transient,omitempty"`
}

// Located is msg as a person reads it: prefixed with "Dockerfile line N: "
// when line is set, unless msg already starts by naming that line (as the
// messages of executors before the location had fields of its own did),
// so that the line is named once.
func Located(line int, msg string) string {
	if line <= 0 {
		return msg
	}
	loc := fmt.Sprintf("Dockerfile line %d", line)
	if rest, ok := strings.CutPrefix(msg, loc); ok && (rest == "" || rest[0] == ':' || rest[0] == ' ') {
		return msg
	}
	return loc + ": " + msg
}

// MaxInstruction bounds Failure.Instruction, in bytes.
const MaxInstruction = 200

// Millis converts a duration to whole milliseconds.
func Millis(d time.Duration) int64 { return d.Milliseconds() }

// Encode marshals r so that it fits in MaxSize bytes, dropping the
// per-stage summaries (of the build and of each platform), then the last
// warnings (counted in WarningsDropped), then the attestations' details
// and the last attestations (trimAttestations),
// then the bases' platform manifests and the last bases (counted in
// BasesOmitted), and then shortening the failure message if needed. The failure's and
// the warnings' texts are sanitised (Sanitize, Excerpt) whoever made them.
func Encode(r Result) []byte {
	if r.Failure != nil {
		f := *r.Failure
		f.Message = Sanitize(f.Message)
		f.Instruction = Excerpt(f.Instruction, MaxInstruction)
		r.Failure = &f
	}
	if len(r.Warnings) > 0 {
		ws := r.Warnings
		r.Warnings = nil
		r.AddWarnings(ws...)
	}
	b, _ := json.Marshal(r)
	if len(b) <= MaxSize {
		return b
	}
	r.Stages = nil
	if len(r.Platforms) > 0 {
		ps := make([]Platform, len(r.Platforms))
		for i, p := range r.Platforms {
			p.Stages = nil
			ps[i] = p
		}
		r.Platforms = ps
	}
	b, _ = json.Marshal(r)
	for len(b) > MaxSize && len(r.Warnings) > 0 {
		r.Warnings = r.Warnings[:len(r.Warnings)-1]
		r.WarningsDropped++
		b, _ = json.Marshal(r)
	}
	if len(b) > MaxSize && (len(r.Attestations) > 0 || len(r.Signatures) > 0) {
		b = r.trimAttestations()
	}
	if len(b) > MaxSize && len(r.Bases) > 0 {
		b = r.trimBases()
	}
	if len(b) <= MaxSize || r.Failure == nil {
		return b
	}
	// JSON escapes may make the message longer encoded than it is, so
	// shorten it until the document fits.
	for len(b) > MaxSize && r.Failure.Message != "" {
		msg := r.Failure.Message
		enc, _ := json.Marshal(msg)
		// Keep the share of the message that fits, as if its escapes
		// were spread evenly; the loop corrects the guess.
		budget := max(len(enc)-(len(b)-MaxSize), 0)
		n := min(len(msg)*budget/len(enc), len(msg)-1)
		if msg = Truncate(msg, n); msg == "…" {
			msg = ""
		}
		r.Failure.Message = msg
		b, _ = json.Marshal(r)
	}
	return b
}

// trimAttestations drops the attestations' predicate types, then the
// images' signatures (Digest's is kept), then attestations from the last
// (counted in AttestationsOmitted), until r encodes within MaxSize or has
// no attestation left; it returns the encoding.
func (r *Result) trimAttestations() []byte {
	atts := make([]Attestation, len(r.Attestations))
	for i, a := range r.Attestations {
		a.PredicateTypes = nil
		atts[i] = a
	}
	r.Attestations = atts
	b, _ := json.Marshal(r)
	if len(b) > MaxSize && len(r.Signatures) > 1 {
		r.Signatures = r.Signatures[:1]
		b, _ = json.Marshal(r)
	}
	for len(b) > MaxSize && len(r.Attestations) > 0 {
		r.Attestations = r.Attestations[:len(r.Attestations)-1]
		r.AttestationsOmitted++
		b, _ = json.Marshal(r)
	}
	return b
}

// trimBases drops the bases' Manifest, then bases from the last, until r
// encodes within MaxSize or has no base left; it returns the encoding.
func (r *Result) trimBases() []byte {
	bases := make([]Base, len(r.Bases))
	for i, bs := range r.Bases {
		bases[i] = Base{Ref: bs.Ref, Digest: bs.Digest}
	}
	r.Bases = bases
	b, _ := json.Marshal(r)
	for len(b) > MaxSize && len(r.Bases) > 0 {
		r.Bases = r.Bases[:len(r.Bases)-1]
		r.BasesOmitted++
		b, _ = json.Marshal(r)
	}
	return b
}

// Decode parses a termination message.
func Decode(b []byte) (Result, error) {
	var r Result
	err := json.Unmarshal(b, &r)
	return r, err
}
