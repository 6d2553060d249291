package attest

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// stmt is the statement as BuildKit's tests read it
// (dockerfile_provenance_test.go: stmtT with ProvenancePredicateSLSA1).
type stmt struct {
	Type          string `json:"_type"`
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate struct {
		BuildDefinition struct {
			BuildType          string `json:"buildType"`
			ExternalParameters struct {
				ConfigSource struct {
					URI    string            `json:"uri"`
					Digest map[string]string `json:"digest"`
					Path   string            `json:"path"`
				} `json:"configSource"`
				Request struct {
					Frontend string            `json:"frontend"`
					Args     map[string]string `json:"args"`
					Secrets  []struct{ ID string }
					SSH      []struct{ ID string }
					Locals   []struct{ Name string }
				} `json:"request"`
				Dockerfile *struct {
					Path   string            `json:"path"`
					Digest map[string]string `json:"digest"`
				} `json:"dockerfile"`
			} `json:"externalParameters"`
			InternalParameters struct {
				BuilderPlatform string `json:"builderPlatform"`
			} `json:"internalParameters"`
			ResolvedDependencies []struct {
				URI    string            `json:"uri"`
				Digest map[string]string `json:"digest"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
		RunDetails struct {
			Builder struct {
				ID                  string `json:"id"`
				BuilderDependencies []struct {
					URI    string            `json:"uri"`
					Digest map[string]string `json:"digest"`
				} `json:"builderDependencies"`
			} `json:"builder"`
			Metadata struct {
				InvocationID     string     `json:"invocationId"`
				StartedOn        *time.Time `json:"startedOn"`
				FinishedOn       *time.Time `json:"finishedOn"`
				BuildKitMetadata struct {
					Source *struct {
						Infos []struct {
							Filename string `json:"filename"`
							Data     []byte `json:"data"`
						} `json:"infos"`
					} `json:"source"`
				} `json:"buildkit_metadata"`
				Completeness struct {
					Request              bool `json:"request"`
					ResolvedDependencies bool `json:"resolvedDependencies"`
				} `json:"buildkit_completeness"`
				Reproducible bool `json:"buildkit_reproducible"`
			} `json:"metadata"`
		} `json:"runDetails"`
	} `json:"predicate"`
}

func decode(t *testing.T, b []byte) stmt {
	t.Helper()
	var s stmt
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return s
}

var (
	imgDigest = digest.FromString("image")
	idxDigest = digest.FromString("index")
	amd64     = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64     = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	dfContent = []byte("FROM busybox:latest\nRUN echo ok > /foo\n")
)

func gitBuild(mode Mode) Build {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	return Build{
		Mode:            mode,
		BuilderID:       "ghcr.io/slipway-dev/executor@sha256:" + strings.Repeat("a", 64),
		BuilderPlatform: "linux/amd64",
		Git:             &GitSource{URL: "https://user:pass@example.invalid/repo.git", Ref: "v1", SubDir: "src", Commit: strings.Repeat("1", 40)},
		DockerfilePath:  "myapp.Dockerfile",
		Dockerfile:      dfContent,
		Target:          "final",
		Platform:        "linux/arm64",
		BuildArgs:       map[string]string{"FOO": "bar", "GITHUB_TOKEN": "tok-value-123", "PUBLIC_KEY": "pk"},
		Labels:          map[string]string{"lbl": "abc"},
		LooksSecret:     func(k string) bool { return k == "GITHUB_TOKEN" },
		SecretIDs:       []string{"npmrc", "aws"},
		SSHIDs:          []string{"default"},
		Materials: []Material{
			{Ref: "docker.io/library/busybox:latest", Digest: digest.FromString("busybox").String(), Platform: arm64},
			{Ref: "docker.io/library/busybox:latest", Digest: digest.FromString("busybox").String(), Platform: arm64},
			{Ref: "docker.io/library/golang:1.22", Digest: digest.FromString("golang").String(), Platform: amd64},
		},
		InvocationID: "inv-1",
		StartedOn:    start,
		FinishedOn:   start.Add(time.Minute),
		Reproducible: true,
	}
}

// The statement and predicate types, the buildType and what a git
// context gives: testGitProvenanceAttestation (the configSource is the
// context URL with "#ref:subdir", its digest the commit, its path the
// Dockerfile's; the git source is the last dependency, "#ref" only; the
// base image a pkg:docker URL with the platform); the user information is
// gone, where BuildKit masks it.
func TestProvenance_git(t *testing.T) {
	raw, err := Provenance(gitBuild(ModeMin), Subject{Names: []string{"registry.example/app:v1"}, Platform: arm64, Digests: []digest.Digest{imgDigest}})
	if err != nil {
		t.Fatal(err)
	}
	s := decode(t, raw)
	if s.Type != "https://in-toto.io/Statement/v1" || s.PredicateType != "https://slsa.dev/provenance/v1" {
		t.Errorf("statement types %q %q", s.Type, s.PredicateType)
	}
	wantSubject := "pkg:docker/registry.example/app@v1?platform=linux%2Farm64"
	if len(s.Subject) != 1 || s.Subject[0].Name != wantSubject || s.Subject[0].Digest["sha256"] != imgDigest.Encoded() {
		t.Errorf("subject %+v; want %s with %s", s.Subject, wantSubject, imgDigest)
	}
	bd := s.Predicate.BuildDefinition
	if bd.BuildType != "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md" {
		t.Errorf("buildType %q", bd.BuildType)
	}
	cs := bd.ExternalParameters.ConfigSource
	if cs.URI != "https://example.invalid/repo.git#v1:src" || cs.Path != "myapp.Dockerfile" || cs.Digest["sha1"] != strings.Repeat("1", 40) {
		t.Errorf("configSource %+v", cs)
	}
	df := bd.ExternalParameters.Dockerfile
	if df == nil || df.Path != "myapp.Dockerfile" || df.Digest["sha256"] != digest.FromBytes(dfContent).Encoded() {
		t.Errorf("dockerfile %+v; want its path and sha256", df)
	}
	var uris []string
	for _, d := range bd.ResolvedDependencies {
		uris = append(uris, d.URI)
	}
	want := []string{
		"pkg:docker/busybox@latest?platform=linux%2Farm64",
		"pkg:docker/golang@1.22?platform=linux%2Famd64",
		"https://example.invalid/repo.git#v1",
	}
	if diff := cmp.Diff(want, uris); diff != "" {
		t.Errorf("resolvedDependencies (-want +got):\n%s", diff)
	}
	if got := bd.ResolvedDependencies[0].Digest["sha256"]; got != digest.FromString("busybox").Encoded() {
		t.Errorf("busybox digest %q", got)
	}
	if got := bd.ResolvedDependencies[2].Digest["sha1"]; got != strings.Repeat("1", 40) {
		t.Errorf("git commit digest %q", got)
	}
	if bd.InternalParameters.BuilderPlatform != "linux/amd64" {
		t.Errorf("builderPlatform %q", bd.InternalParameters.BuilderPlatform)
	}
	rd := s.Predicate.RunDetails
	if rd.Builder.ID != gitBuild(ModeMin).BuilderID {
		t.Errorf("builder id %q", rd.Builder.ID)
	}
	md := rd.Metadata
	if md.InvocationID != "inv-1" || md.StartedOn == nil || md.FinishedOn == nil || !md.StartedOn.Before(*md.FinishedOn) || !md.Reproducible {
		t.Errorf("metadata %+v", md)
	}
	if !md.Completeness.ResolvedDependencies {
		t.Errorf("a git context's dependencies are complete (BuildKit: testGitProvenanceAttestation)")
	}
	if len(bd.ExternalParameters.Request.Locals) != 0 {
		t.Errorf("locals %+v for a git context", bd.ExternalParameters.Request.Locals)
	}
	if strings.Contains(string(raw), "pass") || strings.Contains(string(raw), "user:") {
		t.Errorf("the git URL's user information is in the statement: %s", raw)
	}
}

// min and max as BuildKit's testProvenanceAttestation: min records no
// build-arg: or label: (and says the request is incomplete), no secret or
// ssh id and no Dockerfile; max records them, but never a build argument
// whose name looks like a secret's.
func TestProvenance_modes(t *testing.T) {
	sub := Subject{Digests: []digest.Digest{imgDigest}}
	raw, err := Provenance(gitBuild(ModeMin), sub)
	if err != nil {
		t.Fatal(err)
	}
	minS := decode(t, raw)
	req := minS.Predicate.BuildDefinition.ExternalParameters.Request
	if diff := cmp.Diff(map[string]string{"target": "final", "platform": "linux/arm64"}, req.Args); diff != "" {
		t.Errorf("min args (-want +got):\n%s", diff)
	}
	if req.Frontend != "dockerfile.v0" || len(req.Secrets) != 0 || len(req.SSH) != 0 {
		t.Errorf("min request %+v", req)
	}
	if minS.Predicate.RunDetails.Metadata.Completeness.Request {
		t.Errorf("min with build args: completeness.request is true; BuildKit's scrubMinRequest makes it false")
	}
	if minS.Predicate.RunDetails.Metadata.BuildKitMetadata.Source != nil {
		t.Errorf("min records the Dockerfile")
	}
	for _, v := range []string{"bar", "abc", "tok-value-123", "npmrc"} {
		if strings.Contains(string(raw), v) {
			t.Errorf("min statement holds %q", v)
		}
	}

	raw, err = Provenance(gitBuild(ModeMax), sub)
	if err != nil {
		t.Fatal(err)
	}
	maxS := decode(t, raw)
	req = maxS.Predicate.BuildDefinition.ExternalParameters.Request
	wantArgs := map[string]string{"target": "final", "platform": "linux/arm64", "build-arg:FOO": "bar", "build-arg:PUBLIC_KEY": "pk", "label:lbl": "abc"}
	if diff := cmp.Diff(wantArgs, req.Args); diff != "" {
		t.Errorf("max args (-want +got):\n%s", diff)
	}
	if len(req.Secrets) != 2 || req.Secrets[0].ID != "aws" || req.Secrets[1].ID != "npmrc" || len(req.SSH) != 1 || req.SSH[0].ID != "default" {
		t.Errorf("max secrets %+v ssh %+v", req.Secrets, req.SSH)
	}
	if maxS.Predicate.RunDetails.Metadata.Completeness.Request {
		t.Errorf("max with GITHUB_TOKEN left out: completeness.request is true")
	}
	src := maxS.Predicate.RunDetails.Metadata.BuildKitMetadata.Source
	if src == nil || len(src.Infos) != 1 || string(src.Infos[0].Data) != string(dfContent) || src.Infos[0].Filename != "myapp.Dockerfile" {
		t.Errorf("max source %+v; want the Dockerfile (BuildKit's buildkit_metadata.source)", src)
	}
	if strings.Contains(string(raw), "tok-value-123") || strings.Contains(string(raw), "GITHUB_TOKEN") {
		t.Errorf("max statement holds the secret-named build arg: %s", raw)
	}

	// Without build args or labels, min's request is complete.
	b := gitBuild(ModeMin)
	b.BuildArgs, b.Labels = nil, nil
	raw, err = Provenance(b, sub)
	if err != nil {
		t.Fatal(err)
	}
	if !decode(t, raw).Predicate.RunDetails.Metadata.Completeness.Request {
		t.Errorf("min without build args: completeness.request false")
	}
}

// A local context is BuildKit's locals "context" and "dockerfile", with no
// configSource URI and incomplete dependencies (testProvenanceAttestation).
func TestProvenance_localContext(t *testing.T) {
	b := gitBuild(ModeMin)
	b.Git = nil
	raw, err := Provenance(b, Subject{Digests: []digest.Digest{imgDigest}})
	if err != nil {
		t.Fatal(err)
	}
	s := decode(t, raw)
	ext := s.Predicate.BuildDefinition.ExternalParameters
	if ext.ConfigSource.URI != "" || ext.ConfigSource.Path != "myapp.Dockerfile" {
		t.Errorf("configSource %+v", ext.ConfigSource)
	}
	if len(ext.Request.Locals) != 2 || ext.Request.Locals[0].Name != "context" || ext.Request.Locals[1].Name != "dockerfile" {
		t.Errorf("locals %+v", ext.Request.Locals)
	}
	if s.Predicate.RunDetails.Metadata.Completeness.ResolvedDependencies {
		t.Errorf("a local context's dependencies are complete")
	}
	if n := len(s.Predicate.BuildDefinition.ResolvedDependencies); n != 2 {
		t.Errorf("%d dependencies, want the 2 images", n)
	}
}

// Subjects: a package URL per destination with the platform, each with
// every digest given (the image's and, for cosign's .att, the index's).
func TestProvenance_subjects(t *testing.T) {
	raw, err := Provenance(gitBuild(ModeMin), Subject{Names: []string{"r.example/a:v1", "r.example/b:v2"}, Platform: amd64, Digests: []digest.Digest{imgDigest, idxDigest}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range decode(t, raw).Subject {
		got = append(got, s.Name+" "+s.Digest["sha256"])
	}
	want := []string{
		"pkg:docker/r.example/a@v1?platform=linux%2Famd64 " + imgDigest.Encoded(),
		"pkg:docker/r.example/a@v1?platform=linux%2Famd64 " + idxDigest.Encoded(),
		"pkg:docker/r.example/b@v2?platform=linux%2Famd64 " + imgDigest.Encoded(),
		"pkg:docker/r.example/b@v2?platform=linux%2Famd64 " + idxDigest.Encoded(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("subjects (-want +got):\n%s", diff)
	}
	if _, err := Provenance(gitBuild(ModeMin), Subject{}); err == nil {
		t.Errorf("a statement without a digest was made")
	}
}

// Every credential and secret value of a build, planted where a careless
// provenance would record it, is nowhere in the statement, in either mode:
// a build arg holding a --secret value under an innocent name, a label
// holding the registry password, the git URL's password and user, a
// secret-named build arg. A Dockerfile holding a secret is not recorded in
// max mode (its base64 would hide it from a search); any other field
// holding one fails.
func TestProvenance_noSecret(t *testing.T) {
	secrets := map[string]string{
		"secret file":       "s3cret-file-c4nary",
		"registry password": "registry-pw-c4nary",
		"git password":      "git-pw-c4nary",
		"git user":          "git-user-c4nary",
		"token build arg":   "token-arg-c4nary",
	}
	for _, mode := range []Mode{ModeMin, ModeMax} {
		b := gitBuild(mode)
		b.Git.URL = "https://" + secrets["git user"] + ":" + secrets["git password"] + "@example.invalid/repo.git"
		b.BuildArgs = map[string]string{"INNOCENT": "x-" + secrets["secret file"] + "-y", "API_TOKEN": secrets["token build arg"], "FOO": "bar"}
		b.Labels = map[string]string{"note": secrets["registry password"]}
		b.LooksSecret = func(k string) bool { return k == "API_TOKEN" }
		b.Redact = [][]byte{[]byte(secrets["secret file"] + "\n"), []byte(secrets["registry password"]), []byte(secrets["git password"])}
		raw, err := Provenance(b, Subject{Names: []string{"r.example/a:v1"}, Digests: []digest.Digest{imgDigest}})
		if err != nil {
			t.Fatal(err)
		}
		for what, v := range secrets {
			if strings.Contains(string(raw), v) {
				t.Errorf("%s: the statement holds the %s", mode, what)
			}
			if strings.Contains(string(raw), base64.StdEncoding.EncodeToString([]byte(v))) {
				t.Errorf("%s: the statement holds the %s in base64", mode, what)
			}
		}
		if mode == ModeMax {
			if got := decode(t, raw).Predicate.BuildDefinition.ExternalParameters.Request.Args["build-arg:FOO"]; got != "bar" {
				t.Errorf("max dropped FOO too: %q", got)
			}
		}

		b.Dockerfile = []byte("FROM busybox\nRUN echo " + secrets["secret file"] + "\n")
		raw, err = Provenance(b, Subject{Digests: []digest.Digest{imgDigest}})
		if err != nil {
			t.Fatal(err)
		}
		if decode(t, raw).Predicate.RunDetails.Metadata.BuildKitMetadata.Source != nil {
			t.Errorf("%s: a Dockerfile holding a secret value was recorded", mode)
		}
		b.Target = "stage-" + secrets["registry password"]
		if _, err := Provenance(b, Subject{Digests: []digest.Digest{imgDigest}}); err == nil || strings.Contains(err.Error(), secrets["registry password"]) {
			t.Errorf("%s: a target holding a secret gave %v; want an error that does not quote it", mode, err)
		}
	}
}

func TestStripUserInfo(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@example.invalid/repo.git": "https://example.invalid/repo.git",
		"https://token@example.invalid/repo.git":     "https://example.invalid/repo.git",
		"ssh://git@example.invalid:2222/org/repo":    "ssh://example.invalid:2222/org/repo",
		"git@github.com:org/repo.git":                "github.com:org/repo.git",
		"https://example.invalid/repo.git":           "https://example.invalid/repo.git",
		"https://us%zzer:p@example.invalid/x":        "https://",
	} {
		if got := StripUserInfo(in); got != want {
			t.Errorf("StripUserInfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"none": ModeNone, "false": ModeNone, "min": ModeMin, "true": ModeMin, "max": ModeMax, "mode=max": ModeMax, "full": ModeMax, "MIN": ModeMin} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("maximal"); err == nil {
		t.Errorf("ParseMode(maximal) gave no error")
	}
}

func TestProvenance_builderDependencies(t *testing.T) {
	b := gitBuild(ModeMin)
	b.BuilderDependencies = []string{"ghcr.io/slipway-dev/manager:v1@sha256:" + strings.Repeat("b", 64)}
	raw, err := Provenance(b, Subject{Digests: []digest.Digest{imgDigest}})
	if err != nil {
		t.Fatal(err)
	}
	deps := decode(t, raw).Predicate.RunDetails.Builder.BuilderDependencies
	if len(deps) != 1 || deps[0].URI != "pkg:docker/ghcr.io/slipway-dev/manager@v1" || deps[0].Digest["sha256"] != strings.Repeat("b", 64) {
		t.Errorf("builderDependencies %+v", deps)
	}
	b.BuilderDependencies = []string{"ghcr.io/x/manager:v1"}
	if _, err := Provenance(b, Subject{Digests: []digest.Digest{imgDigest}}); err == nil {
		t.Errorf("a builder dependency without a digest was taken")
	}
}

// The SBOM statement: in-toto v1, the SBOM's predicate type, the document
// as its predicate, the subjects as the provenance's.
func TestSBOM_statement(t *testing.T) {
	doc := []byte(`{"spdxVersion":"SPDX-2.3","packages":[{"name":"busybox"}]}`)
	raw, err := SBOM(doc, PredicateSPDX, Subject{Names: []string{"r.example/a:v1"}, Platform: amd64, Digests: []digest.Digest{imgDigest}})
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		T         string `json:"_type"`
		P         string `json:"predicateType"`
		Subject   []struct{ Name string }
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if s.T != "https://in-toto.io/Statement/v1" || s.P != "https://spdx.dev/Document" || string(s.Predicate) != string(doc) || len(s.Subject) != 1 || s.Subject[0].Name != "pkg:docker/r.example/a@v1?platform=linux%2Famd64" {
		t.Errorf("statement %s", raw)
	}
	if _, err := SBOM([]byte("not json"), PredicateSPDX, Subject{Digests: []digest.Digest{imgDigest}}); err == nil {
		t.Errorf("a document that is not JSON was taken")
	}
	if _, err := SBOM(doc, "https://example.invalid/x", Subject{Digests: []digest.Digest{imgDigest}}); err == nil {
		t.Errorf("another predicate type was taken")
	}
}
