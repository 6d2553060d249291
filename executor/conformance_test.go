package main

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/crypto/ssh"
	"golang.org/x/tools/txtar"

	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// The conformance suite is BuildKit's own Dockerfile frontend tests
// (moby/buildkit frontend/dockerfile/*_test.go), ported case by case into
// testdata/buildkit/AREA/NAME.txtar and built by the executor as a user's
// build would be: through its flags, into a registry.
//
// A case is a txtar archive. Its comment starts with the line
//
//	buildkit: FILE_test.go testFunctionName[/subcase]
//
// naming the BuildKit test it is taken from, then says what it proves and,
// where the case had to differ from BuildKit's test, how and why. Its
// files are the build context (Dockerfile and all), except slipway.json:
// the expectations (conformanceCase), asserting what BuildKit's test
// asserts. "FROM busybox" resolves to the test registry's busybox through
// --registry-mirror, so the Dockerfiles are BuildKit's, unchanged.
//
// Two kinds of archive file serve a case rather than being its context:
// files under _http/ are served by an HTTP server on 127.0.0.1 (_http/a/b
// at {{HTTP}}/a/b, Last-Modified 2020-01-02T03:04:05Z unless
// slipway.json's "httpLastModified" says otherwise), and _git.sh, when
// present, is run by sh in an empty directory before the build, where the
// bare repositories it makes (x.git) are served with Git's smart HTTP at
// {{GIT}}/x.git. {{HTTP}} and {{GIT}} are replaced in the Dockerfile and
// build args: the one change a case makes to BuildKit's Dockerfile, where
// BuildKit's test formats its own server's address in.
//
// The git server runs while _git.sh does, its URL in $GIT (for a submodule
// the script adds from it); a line NAME=VALUE the script appends to the
// file $VARS (a commit hash it computed, say) makes {{NAME}} stand for
// VALUE wherever {{GIT}} does, and in slipway.json too. slipway.json's
// "http" serves exact text (no final newline) and "httpBase64" exact bytes
// (a gzip archive BuildKit's test builds) as _http/ files do, and
// "contextURL" makes the build context a URL ({{GIT}}/x.git?ref=...)
// instead of the archive's files, for BuildKit's tests of remote contexts.
//
// A case with "echoServer" has a TCP server on 127.0.0.1 while it runs, as
// BuildKit's network tests start echoserver.NewTestServer: it writes the
// response to every connection and closes it, and {{ECHO_PORT}}, its port,
// is replaced where {{REGISTRY}} is. A RUN step has the executor's network
// unless it is --network=none, so the server is reachable from it.
//
// A case of several platforms (BuildKit's "platform" attribute with a
// comma, --custom-platform here) names them in "platforms": the build must
// push an index of exactly those, in order, and the image checks (files,
// config, layers, history, created) hold for every platform's image;
// "platformFiles" adds files of one platform's image, "platformsDiffer"
// paths whose content differs between the platforms' images. "sameAs"
// (of the build or of a prebuild) names an earlier prebuild whose pushed
// digest the build's must equal, as BuildKit's cache tests compare the
// descriptors of two builds, and "sameFilesAs" one whose files (by path)
// the build's image must have, as they compare files; "ociLayout" writes the build to an OCI layout
// too (--oci-layout-path) and checks its index.json as BuildKit's OCI
// exporter tests read it.
const conformanceDir = "testdata/buildkit"

// conformanceMinimum is how many cases the suite must hold (issue 11).
const conformanceMinimum = 150

type conformanceCase struct {
	name    string // AREA/NAME
	comment string
	context map[string][]byte
	http    map[string][]byte // path → content
	gitSh   []byte
	spec    []byte // slipway.json, decoded again with placeholders replaced

	// Dockerfile is the Dockerfile's path in the context; default "Dockerfile".
	Dockerfile string            `json:"dockerfile,omitempty"`
	BuildArgs  map[string]string `json:"buildArgs,omitempty"`
	Target     string            `json:"target,omitempty"`
	// Secrets are the build's secrets by id (RUN --mount=type=secret).
	Secrets map[string]string `json:"secrets,omitempty"`
	// Flags are more executor flags (--label=..., --reproducible, ...).
	Flags []string `json:"flags,omitempty"`
	// HTTP and HTTPBase64 are served as _http/ files are (path → content),
	// HTTP's as exact text, HTTPBase64's decoded: bytes txtar cannot hold.
	HTTP       map[string]string `json:"http,omitempty"`
	HTTPBase64 map[string]string `json:"httpBase64,omitempty"`
	// HTTPLastModified is the Last-Modified time (RFC 3339) of served
	// files by path ("/a/b"); "" serves the file without one, as BuildKit's
	// test servers do unless told.
	HTTPLastModified map[string]string `json:"httpLastModified,omitempty"`
	// ContextURL, when set, is the build context (--context) instead of
	// the archive's files: a git URL ({{GIT}}/x.git#ref).
	ContextURL string `json:"contextURL,omitempty"`
	// SSHKey gives the build an agent holding a new ed25519 key as the id
	// "default" (--ssh), as BuildKit's tests give theirs a new key.
	SSHKey bool `json:"sshKey,omitempty"`
	// EchoServer, when set, is a TCP server on 127.0.0.1 for the build,
	// at port {{ECHO_PORT}}.
	EchoServer *conformanceEchoServer `json:"echoServer,omitempty"`
	// Prebuilds are builds of the same context run first, in order, each
	// pushed to {{REGISTRY}}/IMAGE (":latest" when IMAGE has no tag), for BuildKit tests whose build
	// is FROM an image an earlier build of theirs pushed. {{REGISTRY}} is
	// replaced in Dockerfiles and build args by a repository prefix of the
	// case's own (HOST:PORT/prebuilt/AREA-NAME), so cases do not meet.
	Prebuilds []conformancePrebuild `json:"prebuilds,omitempty"`

	// ContextModes sets the mode (octal) of context files and directories;
	// others are 0644 files and 0755 directories. Context, ContextSymlinks and
	// ContextDirs add symlinks and (empty) directories, which txtar cannot
	// hold.
	// Context adds files whose exact bytes matter where txtar would end
	// them with a newline.
	Context         map[string]string `json:"context,omitempty"`
	ContextModes    map[string]string `json:"contextModes,omitempty"`
	ContextSymlinks map[string]string `json:"contextSymlinks,omitempty"`
	ContextDirs     []string          `json:"contextDirs,omitempty"`

	// Files are paths of the image's flattened file system that must be so.
	Files map[string]conformanceFile `json:"files,omitempty"`
	// Config holds fields of the image config's "config" object by their
	// JSON names ("Env", "Cmd", "User", ...) that must be exactly so; null:
	// absent.
	Config map[string]json.RawMessage `json:"config,omitempty"`
	// Layers is the image's number of layers, the base image's included;
	// nil: not checked.
	Layers *int `json:"layers,omitempty"`
	// History are the last len(History) entries of the image's history,
	// in order.
	History []conformanceHistory `json:"history,omitempty"`
	// Created is the image's creation time in seconds since the Unix
	// epoch; nil: not checked.
	Created *int64 `json:"created,omitempty"`
	// Failure is the expected failure; nil: the build succeeds.
	Failure *conformanceFailure `json:"failure,omitempty"`

	// Platforms are the platforms (os/arch[/variant]) of the index the build
	// pushes, in order; the image checks above hold for each platform's
	// image. Empty: the build pushes one image, checked as it is.
	Platforms []string `json:"platforms,omitempty"`
	// PlatformFiles are more Files, of one platform's image (by platform).
	PlatformFiles map[string]map[string]conformanceFile `json:"platformFiles,omitempty"`
	// PlatformsDiffer are paths whose content differs between the images of
	// every two platforms.
	PlatformsDiffer []string `json:"platformsDiffer,omitempty"`
	// SameAs names a prebuild (its image) whose pushed digest the build's
	// must be.
	SameAs string `json:"sameAs,omitempty"`
	// SameFilesAs names a prebuild and paths whose content in the build's
	// image must be what it is in the image the prebuild pushed.
	SameFilesAs *conformanceSameFiles `json:"sameFilesAs,omitempty"`
	// Wait is how many seconds the build starts after the prebuilds, as
	// BuildKit's reproducibility tests sleep between two builds so that a
	// time the build failed to fix would differ.
	Wait int `json:"wait,omitempty"`
	// OCILayout, when set, writes the build to an OCI layout as well
	// (--oci-layout-path), checked as BuildKit's OCI exporter tests read it.
	OCILayout *conformanceLayout `json:"ociLayout,omitempty"`

	// Unsupported, when set, says why this case cannot run here (what
	// BuildKit's test needs that a daemonless builder does
	// not have); the case is ported but skipped, and listed by make
	// conformance.
	Unsupported string `json:"unsupported,omitempty"`
}

type conformancePrebuild struct {
	Dockerfile string            `json:"dockerfile"`
	Image      string            `json:"image"`
	BuildArgs  map[string]string `json:"buildArgs,omitempty"`
	Target     string            `json:"target,omitempty"`
	// Flags are more executor flags for this build.
	Flags []string `json:"flags,omitempty"`
	// SameAs names an earlier prebuild whose pushed digest this one's must
	// be.
	SameAs string `json:"sameAs,omitempty"`
}

type conformanceSameFiles struct {
	Image string   `json:"image"`
	Paths []string `json:"paths"`
}

// conformanceLayout is what the OCI layout's index.json must hold.
type conformanceLayout struct {
	// Manifests is how many descriptors index.json holds.
	Manifests int `json:"manifests"`
	// IndexManifests, when set, is how many descriptors the image index
	// that index.json's first descriptor names holds.
	IndexManifests *int `json:"indexManifests,omitempty"`
}

type conformanceEchoServer struct {
	// Response is written to each connection, which is then closed.
	Response string `json:"response"`
	// Connections is how many connections the server must have accepted
	// when the build ends; nil: not checked.
	Connections *int `json:"connections,omitempty"`
}

type conformanceFile struct {
	Absent bool   `json:"absent,omitempty"`
	Type   string `json:"type,omitempty"` // file, dir, symlink
	// Mode is octal with setuid/setgid/sticky bits: "0644", "4755".
	Mode    string  `json:"mode,omitempty"`
	Owner   string  `json:"owner,omitempty"` // "uid:gid"
	Content *string `json:"content,omitempty"`
	// SHA256 is the hex sha256 of the content, for bytes JSON text cannot
	// spell.
	SHA256 string `json:"sha256,omitempty"`
	// Contains are substrings the file's content must hold, and Lacks
	// substrings it must not.
	Contains []string `json:"contains,omitempty"`
	Lacks    []string `json:"lacks,omitempty"`
	Link     *string  `json:"link,omitempty"`
	// Entries, for a directory, are the names directly in it, all of them.
	Entries *[]string `json:"entries,omitempty"`
	// MTime is the modification time in seconds since the Unix epoch, in
	// the layer that wrote the path last (what BuildKit's tests read in the
	// buildkit/rewritten-timestamp annotation of a layer).
	MTime *int64 `json:"mtime,omitempty"`
}

type conformanceHistory struct {
	// CreatedBy must be contained in the entry's created_by.
	CreatedBy  string `json:"createdBy,omitempty"`
	EmptyLayer *bool  `json:"emptyLayer,omitempty"`
	Comment    string `json:"comment,omitempty"`
	// Created is the entry's time in seconds since the Unix epoch.
	Created *int64 `json:"created,omitempty"`
}

type conformanceFailure struct {
	// Contains are substrings of the failure's message.
	Contains []string `json:"contains"`
	// Line is the Dockerfile line the failure names; 0: not checked.
	Line int `json:"line,omitempty"`
}

func loadConformance(t *testing.T) []*conformanceCase {
	t.Helper()
	var cases []*conformanceCase
	err := filepath.WalkDir(conformanceDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasSuffix(p, ".txtar") {
			return fmt.Errorf("%s: the suite holds only .txtar cases", p)
		}
		a, err := txtar.ParseFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(conformanceDir, p)
		c := &conformanceCase{name: strings.TrimSuffix(filepath.ToSlash(rel), ".txtar"), comment: string(a.Comment), context: map[string][]byte{}}
		if first, _, _ := strings.Cut(c.comment, "\n"); !strings.HasPrefix(first, "buildkit: ") || len(strings.Fields(first)) < 3 {
			return fmt.Errorf("%s: the comment's first line must be \"buildkit: FILE_test.go testName\", not %q", p, first)
		}
		var spec []byte
		for _, f := range a.Files {
			switch {
			case f.Name == "slipway.json":
				spec = f.Data
			case f.Name == "_git.sh":
				c.gitSh = f.Data
			case strings.HasPrefix(f.Name, "_http/"):
				if c.http == nil {
					c.http = map[string][]byte{}
				}
				c.http[strings.TrimPrefix(f.Name, "_http")] = f.Data
			default:
				c.context[f.Name] = f.Data
			}
		}
		if spec == nil {
			return fmt.Errorf("%s: no slipway.json", p)
		}
		c.spec = spec
		dec := json.NewDecoder(bytes.NewReader(spec))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			return fmt.Errorf("%s: slipway.json: %w", p, err)
		}
		if c.Dockerfile == "" {
			c.Dockerfile = "Dockerfile"
		}
		if err := c.addHTTP(); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if c.ContextURL != "" && len(c.context)+len(c.Context)+len(c.ContextDirs)+len(c.ContextSymlinks) > 0 {
			return fmt.Errorf("%s: a case with a contextURL has no context files", p)
		}
		for name, v := range c.HTTPLastModified {
			if _, err := time.Parse(time.RFC3339, v); v != "" && err != nil {
				return fmt.Errorf("%s: httpLastModified[%s]: %v", p, name, err)
			}
		}
		if c.Unsupported == "" && c.Failure == nil && len(c.Files) == 0 && len(c.Config) == 0 && c.Layers == nil && len(c.History) == 0 && c.Created == nil && (c.EchoServer == nil || c.EchoServer.Connections == nil) &&
			len(c.Platforms) == 0 && c.SameAs == "" && c.OCILayout == nil && c.SameFilesAs == nil {
			return fmt.Errorf("%s: the case asserts nothing", p)
		}
		cases = append(cases, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	return cases
}

// writeContext writes the case's build context into a new directory.
func (c *conformanceCase) writeContext(t *testing.T, expand func(string) string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "context")
	mode := func(name string, def fs.FileMode) fs.FileMode {
		if m, ok := c.ContextModes[name]; ok {
			v, err := strconv.ParseUint(m, 8, 32)
			if err != nil {
				t.Fatalf("contextModes[%s] = %q: %v", name, m, err)
			}
			return fs.FileMode(v)
		}
		return def
	}
	mkdir := func(name string) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mkdir(".")
	for name, data := range c.context {
		mkdir(path.Dir(name))
		if strings.Contains(strings.ToLower(path.Base(name)), "dockerfile") {
			data = []byte(expand(string(data)))
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range c.Context {
		mkdir(path.Dir(name))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range c.ContextDirs {
		mkdir(name)
	}
	for name, target := range c.ContextSymlinks {
		mkdir(path.Dir(name))
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Modes last, deepest first, so a directory made unwritable is so
	// after its files are written.
	names := slices.Sorted(maps.Keys(c.ContextModes))
	slices.Reverse(names)
	for _, name := range names {
		def := fs.FileMode(0o644)
		if fi, err := os.Lstat(filepath.Join(dir, name)); err == nil && fi.IsDir() {
			def = 0o755
		} else if err != nil {
			t.Fatalf("contextModes names %s, which the context lacks", name)
		}
		if err := os.Chmod(filepath.Join(dir, name), mode(name, def)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestConformance_buildkit(t *testing.T) {
	cases := loadConformance(t)
	if len(cases) < conformanceMinimum {
		t.Errorf("the suite holds %d cases ported from BuildKit, want at least %d", len(cases), conformanceMinimum)
	}
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	testenv.PushBusybox(t, reg)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.Unsupported != "" {
				t.Skip("unsupported: " + c.Unsupported)
			}
			t.Parallel()
			c.run(t, reg)
		})
	}
}

func (c *conformanceCase) run(t *testing.T, reg *testenv.Registry) {
	prefix := reg.Host() + "/prebuilt/" + caseRepo(c.name)
	echoPort, checkEcho := c.serveEcho(t)
	gitURL, vars := c.serveGit(t)
	pairs := append([]string{"{{HTTP}}", c.serveHTTP(t), "{{GIT}}", gitURL, "{{REGISTRY}}", prefix, "{{ECHO_PORT}}", echoPort}, vars...)
	expand := strings.NewReplacer(pairs...).Replace
	c = c.expanded(t, pairs)
	ctxDir := c.writeContext(t, expand)
	common := []string{
		"--context=dir://" + ctxDir,
		"--insecure-registry=" + reg.Host(),
		"--registry-mirror=" + reg.Host(),
		"--skip-default-registry-fallback",
	}
	if c.ContextURL != "" {
		common[0] = "--context=" + c.ContextURL
	}
	pushed := map[string]string{} // prebuild image → the digest it pushed
	for _, p := range c.Prebuilds {
		dest := prefix + "/" + p.Image
		if !strings.Contains(p.Image, ":") {
			dest += ":latest"
		}
		args := append(slices.Clone(common), "--dockerfile="+p.Dockerfile, "--destination="+dest)
		args = append(args, buildArgFlags(p.BuildArgs, expand)...)
		if p.Target != "" {
			args = append(args, "--target="+p.Target)
		}
		args = append(args, p.Flags...)
		b := runExecutor(t, args...)
		if b.exit != 0 {
			t.Fatalf("prebuild of %s failed: %s\n%s", p.Image, b.resRaw, b.log)
		}
		checkSameAs(t, "prebuild of "+p.Image, p.SameAs, b.res.Digest, pushed)
		pushed[p.Image] = b.res.Digest
	}
	time.Sleep(time.Duration(c.Wait) * time.Second)
	ref := reg.Ref("conformance/" + caseRepo(c.name) + ":latest")
	args := append(common, "--dockerfile="+c.Dockerfile, "--destination="+ref)
	args = append(args, buildArgFlags(c.BuildArgs, expand)...)
	if c.Target != "" {
		args = append(args, "--target="+c.Target)
	}
	if c.SSHKey {
		args = append(args, "--ssh=default="+newConformanceSSHKey(t))
	}
	if len(c.Secrets) > 0 {
		creds := filepath.Join(t.TempDir(), "credentials")
		if err := os.MkdirAll(filepath.Join(creds, "secrets"), 0o700); err != nil {
			t.Fatal(err)
		}
		for id, v := range c.Secrets {
			if err := os.WriteFile(filepath.Join(creds, "secrets", id), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		args = append(args, "--credentials-dir="+creds)
	}
	args = append(args, c.Flags...)
	var layoutDir string
	if c.OCILayout != nil {
		layoutDir = filepath.Join(t.TempDir(), "layout")
		args = append(args, "--oci-layout-path="+layoutDir)
	}
	b := runExecutor(t, args...)
	defer func() {
		if t.Failed() {
			t.Logf("%s\nexecutor log:\n%s", c.comment, b.log)
		}
	}()
	checkEcho(t)
	if c.Failure != nil {
		if b.exit == 0 || b.res.Success || b.res.Failure == nil {
			t.Fatalf("build succeeded, want a failure containing %q", c.Failure.Contains)
		}
		for _, s := range c.Failure.Contains {
			if !strings.Contains(b.res.Failure.Message, s) {
				t.Errorf("failure %q does not contain %q", b.res.Failure.Message, s)
			}
		}
		if c.Failure.Line != 0 && b.res.Failure.Line != c.Failure.Line {
			t.Errorf("failure at line %d, want %d (%s)", b.res.Failure.Line, c.Failure.Line, b.res.Failure.Message)
		}
		assertNotPushed(t, ref)
		return
	}
	if b.exit != 0 || !b.res.Success {
		t.Fatalf("build failed: exit %d, result %s", b.exit, b.resRaw)
	}
	checkSameAs(t, "the build", c.SameAs, b.res.Digest, pushed)
	if c.SameFilesAs != nil {
		c.SameFilesAs.check(t, ref, prefix, pushed)
	}
	if c.OCILayout != nil {
		c.OCILayout.check(t, layoutDir)
	}
	if len(c.Platforms) == 0 {
		c.check(t, pullImage(t, ref))
		return
	}
	c.checkPlatforms(t, ref)
}

// checkSameAs checks that what reproduced pushed digest, the digest that
// the prebuild sameAs pushed, when sameAs is set.
func checkSameAs(t *testing.T, what, sameAs, digest string, pushed map[string]string) {
	t.Helper()
	if sameAs == "" {
		return
	}
	want, ok := pushed[sameAs]
	if !ok {
		t.Fatalf("%s: sameAs names %s, which no earlier prebuild pushed", what, sameAs)
	}
	if digest != want {
		t.Errorf("%s pushed %s, want %s, the digest the prebuild of %s pushed", what, digest, want, sameAs)
	}
}

// check compares the files of the image ref names with those of the image
// the prebuild s.Image pushed (under prefix, by the digest it pushed).
func (s *conformanceSameFiles) check(t *testing.T, ref, prefix string, pushed map[string]string) {
	t.Helper()
	digest, ok := pushed[s.Image]
	if !ok {
		t.Fatalf("sameFilesAs names %s, which no prebuild pushed", s.Image)
	}
	repo, _, _ := strings.Cut(s.Image, ":")
	_, want, err := imagetest.FlattenContents(pullImage(t, prefix+"/"+repo+"@"+digest))
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := imagetest.FlattenContents(pullImage(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Paths {
		w, ok := want[p]
		if !ok {
			t.Errorf("%s: not in the image the prebuild of %s pushed", p, s.Image)
		} else if g := got[p]; !bytes.Equal(g, w) {
			t.Errorf("%s is %q, want %q as in the image the prebuild of %s pushed", p, g, w, s.Image)
		}
	}
}

// checkPlatforms checks the index ref names: its platforms, in order, and
// each platform's image.
func (c *conformanceCase) checkPlatforms(t *testing.T, ref string) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("pulling the index %s: %v", ref, err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatalf("validating the index %s: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	imgs := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			// Not an image of a platform: BuildKit's tests solve without
			// attestations (a Solve adds none unless asked), so their
			// indexes hold the platforms' images alone.
			continue
		}
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		p := d.Platform.String()
		got = append(got, p)
		if imgs[p], err = idx.Image(d.Digest); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(c.Platforms, got); diff != "" {
		t.Fatalf("the index's platforms (-want +got):\n%s", diff)
	}
	for p := range c.PlatformFiles {
		if imgs[p] == nil {
			t.Fatalf("platformFiles names %s, not a platform of the build", p)
		}
	}
	contents := map[string]map[string][]byte{}
	for _, p := range c.Platforms {
		t.Run(p, func(t *testing.T) {
			c.check(t, imgs[p])
			tree, files, err := imagetest.FlattenContents(imgs[p])
			if err != nil {
				t.Fatal(err)
			}
			contents[p] = files
			for _, f := range slices.Sorted(maps.Keys(c.PlatformFiles[p])) {
				checkConformanceFile(t, f, c.PlatformFiles[p][f], tree, files)
			}
		})
	}
	for _, f := range c.PlatformsDiffer {
		for i, p := range c.Platforms {
			for _, q := range c.Platforms[i+1:] {
				if bytes.Equal(contents[p][f], contents[q][f]) {
					t.Errorf("%s is %q in the images of both %s and %s, want it to differ", f, contents[p][f], p, q)
				}
			}
		}
	}
}

// check reads the OCI layout at dir as BuildKit's OCI exporter tests read
// the exporter's tarball: index.json, and the index its first descriptor
// names.
func (l *conformanceLayout) check(t *testing.T, dir string) {
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(top.Manifests) != l.Manifests {
		t.Fatalf("index.json holds %d descriptors, want %d: %s", len(top.Manifests), l.Manifests, data)
	}
	if l.IndexManifests == nil {
		return
	}
	d := top.Manifests[0].Digest
	data, err = os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm, d.Hex))
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("blob %s: %v", d, err)
	}
	if len(idx.Manifests) != *l.IndexManifests {
		t.Errorf("the index %s holds %d descriptors, want %d: %s", d, len(idx.Manifests), *l.IndexManifests, data)
	}
}

// caseRepo is a repository name for case name: AREA/NAME lower-cased.
func caseRepo(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "/", "-"))
}

func buildArgFlags(args map[string]string, expand func(string) string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(args)) {
		out = append(out, "--build-arg="+k+"="+expand(args[k]))
	}
	return out
}

// newConformanceSSHKey writes a new ed25519 private key in OpenSSH's format to a file
// outside any context and returns its path.
func newConformanceSSHKey(t *testing.T) string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "conformance")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveEcho starts the case's echo server and returns its port and a
// check that it accepted the connections the case wants; "" and a no-op
// when the case has none.
func (c *conformanceCase) serveEcho(t *testing.T) (string, func(*testing.T)) {
	if c.EchoServer == nil {
		return "", func(*testing.T) {}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	response := []byte(c.EchoServer.Response)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				conn.Write(response)
				conn.Close()
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	want := c.EchoServer.Connections
	return port, func(t *testing.T) {
		if want == nil {
			return
		}
		// A client whose connection the kernel took may not be accepted yet.
		for deadline := time.Now().Add(2 * time.Second); accepted.Load() < int64(*want) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if got := accepted.Load(); got != int64(*want) {
			t.Errorf("the echo server accepted %d connections, want %d", got, *want)
		}
	}
}

// serveHTTP serves the case's _http/ files and returns the server's URL,
// or "" when it has none.
func (c *conformanceCase) serveHTTP(t *testing.T) string {
	if len(c.http) == 0 {
		return ""
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := c.http[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		modTime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
		if v, ok := c.HTTPLastModified[r.URL.Path]; ok {
			// "": the zero time, with which ServeContent sends none.
			modTime, _ = time.Parse(time.RFC3339, v)
		}
		http.ServeContent(w, r, path.Base(r.URL.Path), modTime, bytes.NewReader(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// serveGit serves the repositories the case's _git.sh makes, running it
// with the server's URL in $GIT; it returns that URL, or "" when the case
// has no _git.sh, and the placeholders the script set in $VARS as
// strings.NewReplacer pairs ("{{NAME}}", "VALUE", ...).
func (c *conformanceCase) serveGit(t *testing.T) (string, []string) {
	if c.gitSh == nil {
		return "", nil
	}
	root := t.TempDir()
	srv := gitserver.StartHTTP(t, root)
	varsFile := filepath.Join(t.TempDir(), "vars")
	cmd := exec.Command("sh", "-euc", string(c.gitSh))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "HOME="+root, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=conformance", "GIT_AUTHOR_EMAIL=conformance@example.com",
		"GIT_COMMITTER_NAME=conformance", "GIT_COMMITTER_EMAIL=conformance@example.com",
		"GIT="+srv.URL, "VARS="+varsFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("_git.sh: %v\n%s", err, out)
	}
	var pairs []string
	if data, err := os.ReadFile(varsFile); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			name, value, ok := strings.Cut(line, "=")
			if !ok || name == "" || name == "HTTP" || name == "GIT" {
				t.Fatalf("_git.sh: $VARS line %q, want NAME=VALUE", line)
			}
			pairs = append(pairs, "{{"+name+"}}", value)
		}
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return srv.URL, pairs
}

// addHTTP adds slipway.json's http and httpBase64 files to those the
// archive's _http/ holds.
func (c *conformanceCase) addHTTP() error {
	add := func(p string, data []byte) error {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("http path %q does not start with /", p)
		}
		if _, dup := c.http[p]; dup {
			return fmt.Errorf("http path %s is served twice", p)
		}
		if c.http == nil {
			c.http = map[string][]byte{}
		}
		c.http[p] = data
		return nil
	}
	for p, v := range c.HTTP {
		if err := add(p, []byte(v)); err != nil {
			return err
		}
	}
	for p, v := range c.HTTPBase64 {
		data, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return fmt.Errorf("httpBase64[%s]: %w", p, err)
		}
		if err := add(p, data); err != nil {
			return err
		}
	}
	return nil
}

// expanded is the case with its slipway.json decoded again, the
// placeholders of pairs (strings.NewReplacer's) replaced in it, so its
// expectations can name a value known only when the case runs (a commit).
func (c *conformanceCase) expanded(t *testing.T, pairs []string) *conformanceCase {
	quoted := slices.Clone(pairs)
	for i := 1; i < len(quoted); i += 2 {
		b, err := json.Marshal(quoted[i])
		if err != nil {
			t.Fatal(err)
		}
		quoted[i] = string(b[1 : len(b)-1])
	}
	n := &conformanceCase{name: c.name, comment: c.comment, context: c.context, http: c.http, gitSh: c.gitSh, spec: c.spec}
	if err := json.Unmarshal([]byte(strings.NewReplacer(quoted...).Replace(string(c.spec))), n); err != nil {
		t.Fatalf("slipway.json: %v", err)
	}
	if n.Dockerfile == "" {
		n.Dockerfile = "Dockerfile"
	}
	return n
}

func (c *conformanceCase) check(t *testing.T, img v1.Image) {
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Config) > 0 {
		gotJSON, err := json.Marshal(cfg.Config)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(gotJSON, &got); err != nil {
			t.Fatal(err)
		}
		for _, field := range slices.Sorted(maps.Keys(c.Config)) {
			if diff := cmp.Diff(normJSON(t, c.Config[field]), normJSON(t, got[field])); diff != "" {
				t.Errorf("config %s (-want +got):\n%s", field, diff)
			}
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if c.Layers != nil && len(layers) != *c.Layers {
		t.Errorf("%d layers, want %d", len(layers), *c.Layers)
	}
	if c.Created != nil && (cfg.Created.IsZero() || cfg.Created.Unix() != *c.Created) {
		t.Errorf("created %s, want %s", cfg.Created.UTC().Format(time.RFC3339), time.Unix(*c.Created, 0).UTC().Format(time.RFC3339))
	}
	if n := len(c.History); n > 0 {
		h := cfg.History
		if len(h) < n {
			t.Errorf("%d history entries, want at least %d", len(h), n)
		} else {
			for i, w := range c.History {
				g := h[len(h)-n+i]
				if !strings.Contains(g.CreatedBy, w.CreatedBy) || (w.EmptyLayer != nil && g.EmptyLayer != *w.EmptyLayer) || !strings.Contains(g.Comment, w.Comment) ||
					(w.Created != nil && (g.Created.IsZero() || g.Created.Unix() != *w.Created)) {
					t.Errorf("history entry %d of the last %d: created_by %q, empty_layer %v, comment %q, created %s; want %+v", i, n, g.CreatedBy, g.EmptyLayer, g.Comment, g.Created.UTC().Format(time.RFC3339), w)
				}
			}
		}
	}
	if len(c.Files) == 0 {
		return
	}
	tree, contents, err := imagetest.FlattenContents(img)
	if err != nil {
		t.Fatal(err)
	}
	var mtimes map[string]time.Time
	for _, p := range slices.Sorted(maps.Keys(c.Files)) {
		checkConformanceFile(t, p, c.Files[p], tree, contents)
		w := c.Files[p].MTime
		if w == nil {
			continue
		}
		if mtimes == nil {
			if mtimes, err = layerModTimes(layers); err != nil {
				t.Fatal(err)
			}
		}
		if got, ok := mtimes[p]; ok && got.Unix() != *w {
			t.Errorf("%s: modified %s, want %s", p, got.UTC().Format(time.RFC3339), time.Unix(*w, 0).UTC().Format(time.RFC3339))
		}
	}
}

// layerModTimes is the modification time of every path in the layer that
// wrote it last.
func layerModTimes(layers []v1.Layer) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return nil, fmt.Errorf("layer %d: %w", i, err)
			}
			out[path.Clean("/"+hdr.Name)] = hdr.ModTime
		}
		rc.Close()
	}
	return out, nil
}

func checkConformanceFile(t *testing.T, p string, w conformanceFile, tree map[string]imagetest.Entry, contents map[string][]byte) {
	t.Helper()
	e, ok := tree[p]
	if w.Absent {
		if ok {
			t.Errorf("%s: %s, want absent", p, e)
		}
		return
	}
	if !ok {
		t.Errorf("%s: missing", p)
		return
	}
	var problems []string
	if w.Type != "" && typeNames[w.Type] != e.Type {
		problems = append(problems, "type, want "+w.Type)
	}
	if w.Mode != "" {
		m, err := strconv.ParseInt(w.Mode, 8, 64)
		if err != nil {
			t.Fatalf("%s: mode %q: %v", p, w.Mode, err)
		}
		if m != e.Mode {
			problems = append(problems, fmt.Sprintf("mode, want %04o", m))
		}
	}
	if w.Owner != "" && w.Owner != fmt.Sprintf("%d:%d", e.UID, e.GID) {
		problems = append(problems, "owner, want "+w.Owner)
	}
	data := contents[p]
	if w.Content != nil && string(data) != *w.Content {
		problems = append(problems, fmt.Sprintf("content %q, want %q", data, *w.Content))
	}
	if sum := sha256.Sum256(data); w.SHA256 != "" && hex.EncodeToString(sum[:]) != w.SHA256 {
		problems = append(problems, fmt.Sprintf("content sha256 %x, want %s", sum, w.SHA256))
	}
	for _, s := range w.Contains {
		if !bytes.Contains(data, []byte(s)) {
			problems = append(problems, fmt.Sprintf("content %q, want it to contain %q", data, s))
		}
	}
	for _, s := range w.Lacks {
		if bytes.Contains(data, []byte(s)) {
			problems = append(problems, fmt.Sprintf("content %q, want it without %q", data, s))
		}
	}
	if w.Link != nil && *w.Link != e.Linkname {
		problems = append(problems, "link target, want "+*w.Link)
	}
	if w.Entries != nil {
		var names []string
		prefix := strings.TrimSuffix(p, "/") + "/"
		for q := range tree {
			if rest, ok := strings.CutPrefix(q, prefix); ok && rest != "" && !strings.Contains(rest, "/") {
				names = append(names, rest)
			}
		}
		sort.Strings(names)
		want := slices.Sorted(slices.Values(*w.Entries))
		if !slices.Equal(names, want) {
			problems = append(problems, fmt.Sprintf("entries %q, want %q", names, want))
		}
	}
	if len(problems) > 0 {
		t.Errorf("%s: %s: %s", p, e, strings.Join(problems, "; "))
	}
}
