package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/ssh"

	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/testenv"
)

// provStatement is what the tests read of a provenance statement.
type provStatement struct {
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
					Locals   []struct{ Name string }
				} `json:"request"`
			} `json:"externalParameters"`
			ResolvedDependencies []struct {
				URI    string            `json:"uri"`
				Digest map[string]string `json:"digest"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
		RunDetails struct {
			Builder struct {
				ID string `json:"id"`
			} `json:"builder"`
			Metadata struct {
				InvocationID string `json:"invocationId"`
				StartedOn    string `json:"startedOn"`
				FinishedOn   string `json:"finishedOn"`
				Completeness struct {
					Request              bool `json:"request"`
					ResolvedDependencies bool `json:"resolvedDependencies"`
				} `json:"buildkit_completeness"`
				Reproducible bool `json:"buildkit_reproducible"`
			} `json:"metadata"`
		} `json:"runDetails"`
	} `json:"predicate"`
}

// pushedIndex is an index read back from a registry: its manifest, and
// per image digest its attestation manifest's descriptor and statements.
type pushedIndex struct {
	digest     v1.Hash
	manifest   *v1.IndexManifest
	raw        []byte // the index and every attestation blob, for searching
	images     []v1.Descriptor
	att        map[v1.Hash]v1.Descriptor
	statements map[v1.Hash][][]byte
	predicates map[v1.Hash][]string
}

// readPushed reads idx as `docker buildx imagetools inspect` does: the
// images are the entries of a known platform, the attestation manifests
// those of unknown/unknown annotated attestation-manifest, each naming its
// image by vnd.docker.reference.digest, with its statements as layers.
func readPushed(t *testing.T, idx v1.ImageIndex) pushedIndex {
	t.Helper()
	p := pushedIndex{att: map[v1.Hash]v1.Descriptor{}, statements: map[v1.Hash][][]byte{}, predicates: map[v1.Hash][]string{}}
	var err error
	if p.digest, err = idx.Digest(); err != nil {
		t.Fatal(err)
	}
	if p.manifest, err = idx.IndexManifest(); err != nil {
		t.Fatal(err)
	}
	p.raw, _ = idx.RawManifest()
	for _, d := range p.manifest.Manifests {
		if d.Platform == nil || d.Platform.OS != "unknown" {
			p.images = append(p.images, d)
			continue
		}
		if d.Annotations[attest.AnnotationReferenceType] != attest.ReferenceTypeAttestation {
			t.Errorf("an unknown/unknown entry without the attestation annotation: %+v", d)
			continue
		}
		img, err := v1.NewHash(d.Annotations[attest.AnnotationReferenceDigest])
		if err != nil {
			t.Fatalf("attestation manifest %s names no image: %v", d.Digest, err)
		}
		p.att[img] = d
		a, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := a.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := a.RawConfigFile()
		p.raw = append(append(p.raw, '\n'), cfg...)
		for _, l := range m.Layers {
			if l.MediaType != attest.MediaTypeInToto {
				t.Errorf("attestation layer of media type %s", l.MediaType)
			}
			layer, err := a.LayerByDigest(l.Digest)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := layer.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			p.statements[img] = append(p.statements[img], b)
			p.predicates[img] = append(p.predicates[img], l.Annotations[attest.AnnotationPredicateType])
			p.raw = append(append(p.raw, '\n'), b...)
		}
	}
	return p
}

func remoteIndex(t *testing.T, ref string, opts ...remote.Option) v1.ImageIndex {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, opts...)
	if err != nil {
		t.Fatalf("reading the index %s: %v", ref, err)
	}
	return idx
}

func provenanceOf(t *testing.T, b []byte) provStatement {
	t.Helper()
	var s provStatement
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return s
}

// sshKeyFile writes an unencrypted OpenSSH private key and returns its
// path and a line of its PEM body (what a leak would show).
func sshKeyFile(t *testing.T) (string, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(blk)
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, strings.Split(string(b), "\n")[1]
}

// A build from a git context that needs credentials, with every kind of
// credential and secret a build has, attaches a provenance that holds
// none of them, in min and in max mode: the git password and user of the
// context URL (BuildKit's testGitProvenanceAttestation plants user:pass
// too), the registry password of DOCKER_CONFIG, the --secret file's
// content, the --ssh key, a secret-named build arg and another build arg
// holding the secret's value. Nowhere: not in the index, not in any
// attestation blob, not in the result, not in the log.
//
// The provenance itself is BuildKit's (testGitProvenanceAttestation,
// testProvenanceAttestation): an in-toto v1 statement of SLSA provenance
// v1 about the image (subject: the destination as a package URL with the
// platform, and the image's digest), the Dockerfile frontend, the context
// URL and commit as configSource, the base image and the git source as
// resolved dependencies, complete; min without build args, max with the
// others. The pushed index is the image and its attestation manifest, and
// the result names both.
func TestExecute_provenanceHoldsNoCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	const (
		canaryRegistry = "registry-pw-c4nary-7d21"
		canaryGitPW    = "git-pw-c4nary-3f09"
		canaryGitUser  = "git-user-c4nary-b8"
		canarySecret   = "secret-file-c4nary-55ae"
		canaryToken    = "token-arg-c4nary-0c1d"
	)
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth("builder", canaryRegistry))
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	base := testenv.PushBusybox(t, reg)
	sshKey, canarySSH := sshKeyFile(t)
	secretFile := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(secretFile, []byte(canarySecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	canaries := map[string]string{"registry password": canaryRegistry, "git password": canaryGitPW, "git user": canaryGitUser,
		"secret": canarySecret, "secret-named build arg": canaryToken, "ssh key": canarySSH}

	dockerfile := "ARG BASE\nFROM $BASE\nARG API_TOKEN\nARG INNOCENT\nRUN --mount=type=secret,id=s test -s /run/secrets/s\nCOPY a.txt /a.txt\n"
	repos := t.TempDir()
	work := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, work, map[string]string{"src/app.Dockerfile": dockerfile, "src/a.txt": "a\n"})
	commit := gitserver.Commit(t, work, "app")
	gitserver.Publish(t, work, repos, "org/app.git", false)
	srv := gitserver.StartHTTP(t, repos, gitserver.WithBasicAuth(canaryGitUser, canaryGitPW))
	contextURL := strings.Replace(srv.URL, "http://", "http://"+canaryGitUser+":"+canaryGitPW+"@", 1) + "/org/app.git#main:src"

	for _, mode := range []string{"min", "max"} {
		t.Run(mode, func(t *testing.T) {
			dest := reg.Ref("app/prov:" + mode)
			digestFile := filepath.Join(t.TempDir(), "digest")
			b := runExecutor(t, "--context="+contextURL, "--dockerfile=app.Dockerfile", "--destination="+dest,
				"--insecure-registry="+reg.Host(), "--provenance="+mode, "--builder-id=https://example.invalid/executor@sha256:"+strings.Repeat("e", 64),
				"--build-arg=BASE="+base, "--build-arg=API_TOKEN="+canaryToken, "--build-arg=INNOCENT=x"+canarySecret+"y", "--build-arg=FOO=bar",
				"--secret=id=s,src="+secretFile, "--ssh=default="+sshKey, "--digest-file="+digestFile)
			if b.exit != 0 || !b.res.Success {
				t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
			}
			idx := remoteIndex(t, dest, remote.WithAuth(reg.Auth()))
			p := readPushed(t, idx)
			if p.manifest.MediaType != types.OCIImageIndex || len(p.images) != 1 || len(p.att) != 1 {
				t.Fatalf("pushed %s with %d images and %d attestations; want an OCI index of the image and its attestation", p.manifest.MediaType, len(p.images), len(p.att))
			}
			img := p.images[0]
			if img.MediaType != types.OCIManifestSchema1 {
				t.Errorf("image media type %s; want OCI (BuildKit's DefaultOCITypes with attestations)", img.MediaType)
			}
			if b.res.Digest != p.digest.String() || len(b.res.References) != 1 || !strings.HasSuffix(b.res.References[0], "@"+p.digest.String()) {
				t.Errorf("result digest %s, references %v; want the index %s", b.res.Digest, b.res.References, p.digest)
			}
			if got, _ := os.ReadFile(digestFile); string(got) != p.digest.String() {
				t.Errorf("digest file %q; want the index's %s", got, p.digest)
			}
			want := result.Attestation{Image: img.Digest.String(), Manifest: p.att[img.Digest].Digest.String(), PredicateTypes: []string{attest.PredicateSLSAProvenance}}
			if len(b.res.Attestations) != 1 || b.res.Attestations[0].Image != want.Image || b.res.Attestations[0].Manifest != want.Manifest || strings.Join(b.res.Attestations[0].PredicateTypes, ",") != attest.PredicateSLSAProvenance {
				t.Errorf("result attestations %+v; want %+v", b.res.Attestations, want)
			}
			if len(p.statements[img.Digest]) != 1 || p.predicates[img.Digest][0] != attest.PredicateSLSAProvenance {
				t.Fatalf("attestation of the image: %d statements %v", len(p.statements[img.Digest]), p.predicates[img.Digest])
			}
			s := provenanceOf(t, p.statements[img.Digest][0])
			if s.Type != "https://in-toto.io/Statement/v1" || s.PredicateType != "https://slsa.dev/provenance/v1" {
				t.Errorf("statement %s %s", s.Type, s.PredicateType)
			}
			if len(s.Subject) != 1 || s.Subject[0].Digest["sha256"] != img.Digest.Hex || !strings.HasPrefix(s.Subject[0].Name, "pkg:docker/") || !strings.Contains(s.Subject[0].Name, "app/prov@"+mode) {
				t.Errorf("subject %+v; want the destination and the image %s", s.Subject, img.Digest)
			}
			bd := s.Predicate.BuildDefinition
			cs := bd.ExternalParameters.ConfigSource
			if cs.URI != srv.URL+"/org/app.git#main:src" || cs.Digest["sha1"] != commit || cs.Path != "app.Dockerfile" {
				t.Errorf("configSource %+v; want %s/org/app.git#main:src at %s, app.Dockerfile", cs, srv.URL, commit)
			}
			var deps []string
			for _, d := range bd.ResolvedDependencies {
				deps = append(deps, d.URI)
			}
			baseRef, _ := name.ParseReference(base)
			baseDigest := remoteDigest(t, base, reg)
			if len(deps) != 2 || !strings.HasPrefix(deps[0], "pkg:docker/"+baseRef.Context().RegistryStr()) || !strings.Contains(deps[0], "busybox@latest?platform=linux%2F") ||
				bd.ResolvedDependencies[0].Digest["sha256"] != baseDigest.Hex || deps[1] != srv.URL+"/org/app.git#main" || bd.ResolvedDependencies[1].Digest["sha1"] != commit {
				t.Errorf("resolvedDependencies %+v; want the base %s at %s, then the git source", bd.ResolvedDependencies, base, baseDigest)
			}
			md := s.Predicate.RunDetails.Metadata
			if md.InvocationID == "" || md.StartedOn == "" || md.FinishedOn == "" || !md.Completeness.ResolvedDependencies {
				t.Errorf("metadata %+v", md)
			}
			if s.Predicate.RunDetails.Builder.ID != "https://example.invalid/executor@sha256:"+strings.Repeat("e", 64) {
				t.Errorf("builder id %q", s.Predicate.RunDetails.Builder.ID)
			}
			args := bd.ExternalParameters.Request.Args
			if mode == "min" && (len(args) != 0 || md.Completeness.Request) {
				t.Errorf("min: args %v, completeness.request %v; want none, false", args, md.Completeness.Request)
			}
			if mode == "max" && (args["build-arg:FOO"] != "bar" || args["build-arg:BASE"] != base) {
				t.Errorf("max: args %v; want FOO and BASE", args)
			}

			raw, _ := os.ReadFile(digestFile)
			everything := string(p.raw) + b.resRaw + b.log + string(raw)
			for what, c := range canaries {
				if strings.Contains(everything, c) {
					t.Errorf("the %s is in the index, its attestations, the result or the log", what)
				}
				if strings.Contains(string(p.raw), base64.StdEncoding.EncodeToString([]byte(c))) {
					t.Errorf("the %s is in the attestations in base64", what)
				}
			}
		})
	}
}

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// remoteDigest is what ref resolves to in reg.
func remoteDigest(t *testing.T, ref string, reg *testenv.Registry) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r, remote.WithAuth(reg.Auth()))
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest
}

// The default is min provenance, as buildx's; none pushes the plain image
// as before; --oci-media-types=false leaves the default provenance out
// (said in the log) and refuses an asked-for one, as BuildKit refuses
// attestations on Docker manifests; --tar-path holds the image without its
// attestations (BuildKit's docker exporter drops them) while the OCI
// layout holds the index; --push-by-digest pushes the index under no tag.
func TestExecute_provenanceOutputs(t *testing.T) {
	env := newCorpusEnv(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n")
	common := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + env.reg.Host(), "--build-arg=BASE=" + env.base}

	t.Run("default min", func(t *testing.T) {
		dest := env.reg.Ref("app/default:v1")
		tarPath := filepath.Join(t.TempDir(), "image.tar")
		layoutPath := filepath.Join(t.TempDir(), "layout")
		// --sbom=false keeps runExecutor from passing --provenance=none.
		b := runExecutor(t, append(common, "--destination="+dest, "--sbom=false", "--tar-path="+tarPath, "--oci-layout-path="+layoutPath)...)
		if b.exit != 0 {
			t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
		}
		p := readPushed(t, remoteIndex(t, dest))
		if len(p.images) != 1 || len(p.att) != 1 {
			t.Fatalf("%d images, %d attestations", len(p.images), len(p.att))
		}
		s := provenanceOf(t, p.statements[p.images[0].Digest][0])
		locals := s.Predicate.BuildDefinition.ExternalParameters.Request.Locals
		if len(locals) != 2 || s.Predicate.RunDetails.Metadata.Completeness.ResolvedDependencies || s.Predicate.BuildDefinition.ExternalParameters.ConfigSource.URI != "" {
			t.Errorf("a local context: locals %v, complete %v, uri %q; want BuildKit's context and dockerfile locals, incomplete",
				locals, s.Predicate.RunDetails.Metadata.Completeness.ResolvedDependencies, s.Predicate.BuildDefinition.ExternalParameters.ConfigSource.URI)
		}
		img, err := tarball.ImageFromPath(tarPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		// A docker-archive keeps the config, not the manifest.
		pushedImg, err := remoteIndex(t, dest).Image(p.images[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := pushedImg.ConfigName()
		if got, _ := img.ConfigName(); got != want {
			t.Errorf("the tarball holds the config %s; want the image's %s", got, want)
		}
		if !strings.Contains(b.log, "The tarball holds the image without its attestations") {
			t.Errorf("the log does not say the tarball has no attestations:\n%s", b.log)
		}
		lp, err := layout.FromPath(layoutPath)
		if err != nil {
			t.Fatal(err)
		}
		lidx, err := lp.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		lim, _ := lidx.IndexManifest()
		if len(lim.Manifests) != 1 || lim.Manifests[0].Digest != p.digest {
			t.Errorf("the OCI layout names %+v; want the index %s", lim.Manifests, p.digest)
		}
	})

	t.Run("none", func(t *testing.T) {
		dest := env.reg.Ref("app/none:v1")
		b := runExecutor(t, append(common, "--destination="+dest, "--provenance=none")...)
		if b.exit != 0 || len(b.res.Attestations) != 0 {
			t.Fatalf("build: exit %d, attestations %v\n%s", b.exit, b.res.Attestations, b.log)
		}
		img := pullImage(t, dest)
		if mt, _ := img.MediaType(); mt != types.DockerManifestSchema2 {
			t.Errorf("media type %s; want the Docker manifest of before", mt)
		}
		if d, _ := img.Digest(); d.String() != b.res.Digest {
			t.Errorf("pushed %s, result %s", d, b.res.Digest)
		}
	})

	t.Run("docker media types", func(t *testing.T) {
		dest := env.reg.Ref("app/docker:v1")
		b := runExecutor(t, append(common, "--destination="+dest, "--sbom=false", "--oci-media-types=false")...)
		if b.exit != 0 || len(b.res.Attestations) != 0 || !strings.Contains(b.log, "Attaching no provenance: --oci-media-types=false") {
			t.Fatalf("build: exit %d, attestations %v; want none, said in the log\n%s", b.exit, b.res.Attestations, b.log)
		}
		b = runExecutor(t, append(common, "--destination="+dest, "--provenance=min", "--oci-media-types=false")...)
		if b.exit == 0 || b.res.Failure == nil || b.res.Failure.Reason != result.ReasonInvalidArguments || !strings.Contains(b.res.Failure.Message, "--oci-media-types=false") {
			t.Errorf("--provenance=min --oci-media-types=false: %s; want InvalidArguments", b.resRaw)
		}
	})

	t.Run("no push", func(t *testing.T) {
		layoutPath := filepath.Join(t.TempDir(), "layout")
		b := runExecutor(t, append(common, "--no-push", "--provenance=min", "--oci-layout-path="+layoutPath)...)
		if b.exit != 0 {
			t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
		}
		lp, err := layout.FromPath(layoutPath)
		if err != nil {
			t.Fatal(err)
		}
		top, err := lp.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		tim, _ := top.IndexManifest()
		idx, err := top.ImageIndex(tim.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		p := readPushed(t, idx)
		if p.digest.String() != b.res.Digest || len(p.att) != 1 {
			t.Fatalf("layout index %s with %d attestations; result %s", p.digest, len(p.att), b.res.Digest)
		}
		s := provenanceOf(t, p.statements[p.images[0].Digest][0])
		if len(s.Subject) != 1 || s.Subject[0].Name != "" || s.Subject[0].Digest["sha256"] != p.images[0].Digest.Hex {
			t.Errorf("subject %+v; want the image without a name (no destination)", s.Subject)
		}
	})

	t.Run("push by digest", func(t *testing.T) {
		dest := env.reg.Ref("app/bydigest:v1")
		b := runExecutor(t, append(common, "--destination="+dest, "--provenance=min", "--push-by-digest")...)
		if b.exit != 0 {
			t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
		}
		repo := env.reg.Ref("app/bydigest")
		p := readPushed(t, remoteIndex(t, repo+"@"+b.res.Digest))
		if len(p.att) != 1 {
			t.Errorf("the index pushed by digest has %d attestations", len(p.att))
		}
		assertNotPushed(t, dest)
	})
}

// Two platforms (BuildKit's testMultiPlatformProvenance): four manifests,
// each image's attestation manifest naming it, its provenance naming its
// platform and the base image read for that platform.
func TestExecute_provenanceMultiPlatform(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	base := testenv.PushMultiPlatformBusybox(t, reg)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n")
	dest := reg.Ref("app/multi:v1")
	b := runExecutor(t, "--context=dir://"+ctxDir, "--insecure-registry="+reg.Host(), "--build-arg=BASE="+base,
		"--destination="+dest, "--custom-platform=linux/amd64,linux/arm64", "--provenance=max")
	if b.exit != 0 {
		t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
	}
	p := readPushed(t, remoteIndex(t, dest))
	if len(p.manifest.Manifests) != 4 || len(p.images) != 2 || len(p.att) != 2 {
		t.Fatalf("%d manifests (%d images, %d attestations); want 2 and 2", len(p.manifest.Manifests), len(p.images), len(p.att))
	}
	for i, img := range p.images {
		plat := img.Platform.OS + "/" + img.Platform.Architecture
		if _, ok := p.att[img.Digest]; !ok {
			t.Errorf("no attestation manifest names %s (%s)", img.Digest, plat)
			continue
		}
		s := provenanceOf(t, p.statements[img.Digest][0])
		if s.Subject[0].Digest["sha256"] != img.Digest.Hex || !strings.Contains(s.Subject[0].Name, url.QueryEscape(plat)) {
			t.Errorf("%s: subject %+v", plat, s.Subject)
		}
		if got := s.Predicate.BuildDefinition.ExternalParameters.Request.Args["platform"]; got != plat {
			t.Errorf("%s: platform arg %q", plat, got)
		}
		deps := s.Predicate.BuildDefinition.ResolvedDependencies
		if len(deps) != 1 || !strings.Contains(deps[0].URI, "platform="+url.QueryEscape(plat)) {
			t.Errorf("%s: dependencies %+v; want the base for %s", plat, deps, plat)
		}
		if a := b.res.Attestations[i]; a.Platform != plat || a.Image != img.Digest.String() || a.Manifest != p.att[img.Digest].Digest.String() {
			t.Errorf("result attestation %d: %+v", i, a)
		}
	}
}

// Where the registry has the OCI referrers API (ggcr's registry with it),
// each attestation manifest is also a referrer of its image, in BuildKit's
// artifact form; Debian's docker-registry has none: no referrer, no
// fallback tag, no error.
func TestExecute_provenanceReferrers(t *testing.T) {
	env := newCorpusEnv(t)
	ctxDir := writeDockerfile(t, "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n")
	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(true), registry.Logger(nilLogger())))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)

	withAPI := u.Host + "/app/ref:v1"
	without := env.reg.Ref("app/noref:v1")
	b := runExecutor(t, "--context=dir://"+ctxDir, "--insecure-registry="+env.reg.Host(), "--insecure-registry="+u.Host,
		"--build-arg=BASE="+env.base, "--destination="+withAPI, "--destination="+without, "--provenance=min")
	if b.exit != 0 {
		t.Fatalf("build failed: %s\n%s", b.resRaw, b.log)
	}
	p := readPushed(t, remoteIndex(t, withAPI))
	img := p.images[0].Digest
	imgRef, _ := name.ParseReference(u.Host+"/app/ref@"+img.String(), name.Insecure)
	refs, err := remote.Referrers(imgRef.(name.Digest))
	if err != nil {
		t.Fatal(err)
	}
	rim, _ := refs.IndexManifest()
	if len(rim.Manifests) != 1 {
		t.Fatalf("referrers of the image: %+v; want its attestation manifest", rim.Manifests)
	}
	rd := rim.Manifests[0].Digest
	if len(b.res.Attestations) != 1 || b.res.Attestations[0].Referrer != rd.String() {
		t.Errorf("result attestations %+v; want the referrer %s", b.res.Attestations, rd)
	}
	ri, err := remote.Image(imgRef.Context().Digest(rd.String()))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := ri.Manifest()
	if m.Subject == nil || m.Subject.Digest != img || len(m.Layers) != 1 || m.Layers[0].Annotations[attest.AnnotationPredicateType] != attest.PredicateSLSAProvenance {
		t.Errorf("referrer manifest %+v", m)
	}
	if l, _ := ri.LayerByDigest(m.Layers[0].Digest); l != nil {
		rc, _ := l.Compressed()
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != string(p.statements[img][0]) {
			t.Errorf("the referrer's statement differs from the index's")
		}
	}

	// The registry without the API.
	if !strings.Contains(b.log, "has no OCI referrers API") {
		t.Errorf("the log does not say %s has no referrers API:\n%s", env.reg.Host(), b.log)
	}
	repo, _ := name.NewRepository(env.reg.Ref("app/noref"), name.Insecure)
	tags, err := remote.List(repo, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tags, ",") != "v1" {
		t.Errorf("tags of %s: %v; want v1 alone (no referrers fallback tag)", repo, tags)
	}
}

// An ADD of a URL or git repository, or of a source a variable names, is
// a dependency the provenance does not name: it says its dependencies are
// incomplete then (BuildKit records them; see readsUnrecorded).
func TestReadsUnrecorded(t *testing.T) {
	for df, want := range map[string]bool{
		"FROM a\nCOPY x /x\nADD y.tar /y\n":                         false,
		"FROM a\nADD https://example.invalid/x /x\n":                true,
		"FROM a\nADD --checksum=sha256:00 https://e.invalid/x /x\n": true,
		"FROM a\nADD git@github.com:org/repo.git /src\n":            true,
		"FROM a\nARG SRC\nADD $SRC /x\n":                            true,
		"FROM a\nadd [\"http://e.invalid/x\", \"/x\"]\n":            true,
		"FROM a\nCOPY https://not.read/ /x\n":                       false,
	} {
		if got := readsUnrecorded([]byte(df)); got != want {
			t.Errorf("readsUnrecorded(%q) = %v, want %v", df, got, want)
		}
	}
}
