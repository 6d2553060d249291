package build_test

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/imagetest"
)

// extractDir writes the directory dir of the image's file system (whiteouts
// applied) under a new temporary directory, owners and modes kept, and
// returns where.
func extractDir(t *testing.T, img v1.Image, dir string) string {
	t.Helper()
	out := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	prefix := strings.Trim(dir, "/") + "/"
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if !strings.HasPrefix(name+"/", prefix) || name+"/" == prefix {
			continue
		}
		p := filepath.Join(out, filepath.FromSlash(strings.TrimPrefix(name, prefix)))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			continue
		}
		if err := os.Chmod(p, h.FileInfo().Mode()); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// hostGit runs the host's git in dir (any owner trusted) and returns its
// trimmed output, failing the test when it fails.
func hostGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := hostGitErr(dir, args...)
	if err != nil {
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return out
}

func hostGitErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "safe.directory=*"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir))
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// tagRepo is BuildKit's testAddGit repository: commits v0.0.1, v0.0.2 and
// v0.0.3, each writing foo = "foo of TAG\n" and tagged with a lightweight
// tag, plus an annotated tag "release" on v0.0.2, published on a new smart
// HTTP server (with opts). It returns the repository's URL and the
// commits by tag.
func tagRepo(t *testing.T, opts ...gitserver.HTTPOption) (string, map[string]string) {
	t.Helper()
	work := gitserver.NewWorkRepo(t)
	commits := map[string]string{}
	for _, tag := range []string{"v0.0.1", "v0.0.2", "v0.0.3"} {
		gitserver.WriteFiles(t, work, map[string]string{"foo": "foo of " + tag + "\n", "bin/run.sh": "#!/bin/sh\n"})
		if err := os.Chmod(filepath.Join(work, "bin/run.sh"), 0o755); err != nil {
			t.Fatal(err)
		}
		commits[tag] = gitserver.Commit(t, work, tag)
		gitserver.Git(t, work, "tag", tag)
		if tag == "v0.0.2" {
			gitserver.Git(t, work, "tag", "-a", "-m", "the release", "release")
		}
	}
	root := t.TempDir()
	gitserver.Publish(t, work, root, "org/app.git", true)
	srv := gitserver.StartHTTP(t, root, opts...)
	return srv.URL + "/org/app.git", commits
}

// TestBuild_addGitKeepGitDir is the --keep-git-dir part of BuildKit's
// testAddGit (frontend/dockerfile/dockerfile_addgit_test.go): ADD
// --keep-git-dir=true --chown --checksum of a tag keeps a .git in which
// git status is clean, owned as the files are; without the flag there is
// none; a commit as the ref keeps one too. Beyond that test, what BuildKit's
// checkout leaves in it: HEAD detached at the commit, shallow, the
// annotated tag's ref (so git describe names it), origin the URL; with a
// sub-directory no .git (testGitQueryString's ?keep-git-dir forms), and
// --keep-git-dir=false against ?keep-git-dir=true is BuildKit's error. The
// flag is in the step's key.
func TestBuild_addGitKeepGitDir(t *testing.T) {
	repo, commits := tagRepo(t)
	f := newFixture(t, nil)
	df := `FROM {{BASE}}
ADD ` + repo + `#v0.0.1 /x
ARG REPO="` + repo + `"
ARG TAG="v0.0.2"
ADD --keep-git-dir=true --chown=4242:8484 --checksum=` + commits["v0.0.2"] + ` ${REPO}#${TAG} /buildkit-chowned
ADD --checksum=` + commits["v0.0.3"] + ` ${REPO}#v0.0.3 /nogitdir
ADD --keep-git-dir=true --checksum=` + commits["v0.0.3"] + ` ${REPO}#` + commits["v0.0.3"] + ` /commitdir
ADD --keep-git-dir ${REPO}#release /annotated
ADD ${REPO}?ref=refs/heads/main&keep-git-dir=true /branch
ADD --keep-git-dir ${REPO}#main:bin /sub
`
	img, rep := mustBuild(t, f, df, true)
	tree := flatten(t, img)
	if _, ok := tree["x/.git"]; ok {
		t.Errorf("/x has a .git without --keep-git-dir")
	}
	if _, ok := tree["nogitdir/.git"]; ok {
		t.Errorf("/nogitdir has a .git without --keep-git-dir")
	}
	if _, ok := tree["sub/.git"]; ok {
		t.Errorf("/sub (a sub-directory of the repository) has a .git")
	}
	for p, e := range tree {
		if strings.HasPrefix(p, "buildkit-chowned/") && (e.UID != 4242 || e.GID != 8484) {
			t.Errorf("/%s is owned by %d:%d, want 4242:8484 as everything ADD --chown copied", p, e.UID, e.GID)
		}
	}

	for _, tc := range []struct {
		dir, commit, content string
		refs                 []string // what git show-ref lists
		describe             string   // git describe --tags --exact-match, "" when it fails
	}{
		{dir: "buildkit-chowned", commit: commits["v0.0.2"], content: "foo of v0.0.2\n"},
		{dir: "commitdir", commit: commits["v0.0.3"], content: "foo of v0.0.3\n"},
		{dir: "annotated", commit: commits["v0.0.2"], content: "foo of v0.0.2\n", refs: []string{"refs/tags/release"}, describe: "release"},
		{dir: "branch", commit: commits["v0.0.3"], content: "foo of v0.0.3\n", refs: []string{"refs/heads/main"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			d := extractDir(t, img, tc.dir)
			if b, err := os.ReadFile(filepath.Join(d, "foo")); err != nil || string(b) != tc.content {
				t.Errorf("foo = %q, %v; want %q", b, err, tc.content)
			}
			if st := hostGit(t, d, "status", "--porcelain", "--untracked-files=all"); st != "" {
				t.Errorf("git status is not clean:\n%s", st)
			}
			if got := hostGit(t, d, "rev-parse", "HEAD"); got != tc.commit {
				t.Errorf("HEAD is %s, want %s", got, tc.commit)
			}
			if _, err := hostGitErr(d, "symbolic-ref", "-q", "HEAD"); err == nil {
				t.Errorf("HEAD is a branch; BuildKit's checkout of FETCH_HEAD leaves it detached")
			}
			if got := hostGit(t, d, "rev-parse", "--is-shallow-repository"); got != "true" {
				t.Errorf("is-shallow-repository = %s, want true (a depth-1 fetch)", got)
			}
			if got := hostGit(t, d, "rev-list", "--count", "HEAD"); got != "1" {
				t.Errorf("rev-list --count HEAD = %s, want 1", got)
			}
			if got := hostGit(t, d, "config", "--get", "remote.origin.url"); got != repo {
				t.Errorf("origin is %q, want %q", got, repo)
			}
			if out, err := hostGitErr(d, "fsck", "--no-dangling"); err != nil {
				t.Errorf("git fsck: %v\n%s", err, out)
			}
			var refs []string
			if out, _ := hostGitErr(d, "show-ref"); out != "" {
				for _, l := range strings.Split(out, "\n") {
					_, name, _ := strings.Cut(l, " ")
					refs = append(refs, name)
				}
			}
			if diff := cmp.Diff(tc.refs, refs); diff != "" {
				t.Errorf("refs (-want +got):\n%s", diff)
			}
			got, err := hostGitErr(d, "describe", "--tags", "--exact-match")
			switch {
			case tc.describe == "" && err == nil:
				t.Errorf("git describe = %q, want no tag", got)
			case tc.describe != "" && got != tc.describe:
				t.Errorf("git describe = %q (%v), want %q", got, err, tc.describe)
			}
		})
	}
	if diff := cmp.Diff(counts{0, 7}, cacheCounts(rep)); diff != "" {
		t.Errorf("first build (-want +got):\n%s", diff)
	}
	_, rep = mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{7, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("same build (-want +got):\n%s", diff)
	}
	// The flag changes the result: the same ADD with and without it are
	// different steps.
	img, rep = mustBuild(t, f, strings.Replace(df, "ADD --keep-git-dir=true --chown", "ADD --chown", 1), true)
	if diff := cmp.Diff(counts{1, 6}, cacheCounts(rep)); diff != "" {
		t.Errorf("without --keep-git-dir on line 5 (-want +got):\n%s", diff)
	}
	if _, ok := flatten(t, img)["buildkit-chowned/.git"]; ok {
		t.Errorf("/buildkit-chowned has a .git without --keep-git-dir")
	}

	_, _, err := f.build(t, "FROM {{BASE}}\nADD --keep-git-dir=false "+repo+"?keep-git-dir=true /x\n", false)
	var be *build.Error
	if !errors.As(err, &be) || be.Line != 2 || be.Reason != result.ReasonDockerfileInvalid || !strings.Contains(err.Error(), "inconsistent keep-git-dir configuration") {
		t.Errorf("conflicting keep-git-dir: %v, want BuildKit's error on line 2", err)
	}
}

// TestBuild_addGitKeepGitDirHoldsNoCredentials plays an attacker who reads
// the image: a repository that needs credentials is added with
// --keep-git-dir, once with the build's git credentials (scoped to its
// origin) and once with credentials in the URL. No layer, and no history or
// config text, holds the user name, the password, or their basic-auth
// encoding; .git/config names origin with BuildKit's mask, "xxxxx", for the
// URL's credentials, and nothing for the build's.
func TestBuild_addGitKeepGitDirHoldsNoCredentials(t *testing.T) {
	const user, password = "git-builder-7f3a", "s3cr3t-t0ken-91c2"
	spy := &gitserver.Spy{}
	repo, commits := tagRepo(t, gitserver.WithBasicAuth(user, password), gitserver.WithSpy(spy))
	f := newFixture(t, nil)
	withCreds := strings.Replace(repo, "http://", "http://"+user+":"+password+"@", 1)

	for _, tc := range []struct {
		name, url string
		auth      source.GitAuth
		origin    string
	}{
		{name: "build credentials", url: repo, auth: source.GitAuth{Origin: source.GitOrigin(repo), Username: user, Password: password}, origin: repo},
		{name: "credentials in the URL", url: withCreds, origin: strings.Replace(repo, "http://", "http://xxxxx:xxxxx@", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(spy.Credentialed())
			img := buildWithGitAuth(t, f, "FROM {{BASE}}\nADD --keep-git-dir=true "+tc.url+"#v0.0.2 /src\n", tc.auth)
			if len(spy.Credentialed()) == before {
				t.Fatalf("the server got no credentials: the test proves nothing")
			}
			d := extractDir(t, img, "src")
			if got := hostGit(t, d, "rev-parse", "HEAD"); got != commits["v0.0.2"] {
				t.Errorf("HEAD is %s, want %s", got, commits["v0.0.2"])
			}
			if got := hostGit(t, d, "config", "--get", "remote.origin.url"); got != tc.origin {
				t.Errorf("origin is %q, want %q", got, tc.origin)
			}
			secrets := []string{user, password, base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}
			blobs, err := imagetest.Blobs(img)
			if err != nil {
				t.Fatal(err)
			}
			for i, b := range blobs {
				for _, s := range secrets {
					if bytes.Contains(b, []byte(s)) {
						t.Errorf("blob %d of %d (the layers, then the config) holds %q", i, len(blobs), s)
					}
				}
			}
		})
	}
}

// buildWithGitAuth builds dockerfile without the cache, with auth as the
// build's git credentials, and fails the test if the build fails.
func buildWithGitAuth(t *testing.T, f *fixture, dockerfile string, auth source.GitAuth) v1.Image {
	t.Helper()
	bc, err := source.Open(f.ctxDir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var logBuf strings.Builder
	img, _, err := build.Build(t.Context(), build.Options{
		Dockerfile:     []byte(strings.ReplaceAll(dockerfile, "{{BASE}}", f.base)),
		DockerfilePath: "Dockerfile",
		Context:        bc,
		Isolation:      build.Chroot,
		WorkDir:        t.TempDir(),
		Log:            &syncBuilder{b: &logBuf},
		GitAuth:        auth,
	})
	t.Logf("build log:\n%s", logBuf.String())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return img
}
