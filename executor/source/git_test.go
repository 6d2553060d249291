package source

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/slipway-dev/slipway/test/gitserver"
)

// fixture is a repository published under a server root, with the SHAs a
// test asks for.
type fixture struct {
	root                     string // server root with org/app.git (SHA wants allowed) and org/strict.git (not)
	first, second, tip       string // commits on main, oldest first; tip is main's head
	feature, pull            string // tip of branch feature; refs/pull/42/head (on no branch)
	withSubmodule            string // tip of branch with-submodule
	libCommit, deepCommit    string // commits pinned by the submodules
	annotatedTag, lightTag   string // names of the tags at first and second
	annotatedTagObjectPrefix string
}

// makeFixture makes org/app.git: main with many commits, a sub-directory
// context with its own .dockerignore, branch feature, a lightweight and an
// annotated tag, refs/pull/42/head, and branch with-submodule whose
// submodule lib (relative URL ../lib.git) has a submodule deep in turn.
func makeFixture(t *testing.T) fixture {
	t.Helper()
	f := fixture{root: t.TempDir(), annotatedTag: "v1", lightTag: "v2-light"}

	deep := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, deep, map[string]string{"deep.txt": "deep\n"})
	f.deepCommit = gitserver.Commit(t, deep, "deep")
	deepBare := gitserver.Publish(t, deep, f.root, "org/deep.git", false)

	lib := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, lib, map[string]string{"lib.txt": "lib\n"})
	gitserver.Commit(t, lib, "lib")
	gitserver.Git(t, lib, "-c", "protocol.file.allow=always", "submodule", "add", "-q", deepBare, "deep")
	gitserver.Git(t, lib, "config", "-f", ".gitmodules", "submodule.deep.url", "../deep.git")
	f.libCommit = gitserver.Commit(t, lib, "add deep")
	// A later commit, so the pinned one is not the branch tip.
	gitserver.WriteFiles(t, lib, map[string]string{"lib.txt": "lib later\n"})
	gitserver.Commit(t, lib, "later")
	libBare := gitserver.Publish(t, lib, f.root, "org/lib.git", true)

	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{
		"Dockerfile": "FROM scratch\nCOPY a.txt /\n",
		"a.txt":      "first\n",
	})
	f.first = gitserver.Commit(t, w, "first")
	gitserver.Git(t, w, "tag", "-a", "-m", "release v1", f.annotatedTag)
	gitserver.WriteFiles(t, w, map[string]string{
		"a.txt":              "second\n",
		"app/Dockerfile":     "FROM scratch\nCOPY . /app/\n",
		"app/.dockerignore":  "ignored.txt\n",
		"app/keep.txt":       "keep\n",
		"app/ignored.txt":    "ignored\n",
		"app/nested/deep.md": "nested\n",
	})
	f.second = gitserver.Commit(t, w, "second")
	gitserver.Git(t, w, "tag", f.lightTag)
	for i := range 30 {
		gitserver.WriteFiles(t, w, map[string]string{"count.txt": strings.Repeat("x", i) + "\n"})
		f.tip = gitserver.Commit(t, w, "more")
	}
	gitserver.Git(t, w, "checkout", "-q", "-b", "feature", f.second)
	gitserver.WriteFiles(t, w, map[string]string{"feature.txt": "feature\n"})
	f.feature = gitserver.Commit(t, w, "feature")
	gitserver.Git(t, w, "checkout", "-q", "--detach", f.second)
	gitserver.WriteFiles(t, w, map[string]string{"pull.txt": "pull\n"})
	f.pull = gitserver.Commit(t, w, "pull request")
	gitserver.Git(t, w, "update-ref", "refs/pull/42/head", f.pull)
	gitserver.Git(t, w, "checkout", "-q", "-b", "with-submodule", f.tip)
	gitserver.Git(t, w, "-c", "protocol.file.allow=always", "submodule", "add", "-q", libBare, "lib")
	gitserver.Git(t, w, "-C", "lib", "checkout", "-q", f.libCommit)
	gitserver.Git(t, w, "config", "-f", ".gitmodules", "submodule.lib.url", "../lib.git")
	f.withSubmodule = gitserver.Commit(t, w, "add lib")
	gitserver.Git(t, w, "checkout", "-q", "main")

	gitserver.Publish(t, w, f.root, "org/app.git", true)
	gitserver.Publish(t, w, f.root, "org/strict.git", false)
	return f
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// commitsIn counts the commits stored in gitDir.
func commitsIn(t *testing.T, gitDir string) int {
	t.Helper()
	st := filesystem.NewStorage(osfs.New(gitDir), cache.NewObjectLRUDefault())
	repo, err := git.Open(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	iter, err := repo.CommitObjects()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	iter.ForEach(func(*object.Commit) error { n++; return nil })
	return n
}

func TestFetchGit_http(t *testing.T) {
	f := makeFixture(t)
	srv := gitserver.StartHTTP(t, f.root)
	app, strict := srv.URL+"/org/app.git", srv.URL+"/org/strict.git"

	tests := []struct {
		name        string
		url, ref    string
		branch      string
		wantCommit  string
		wantFile    string // path=content of a file in the checkout
		wantCommits int    // commits fetched; 1 is a shallow fetch
	}{
		{name: "default HEAD", url: app, wantCommit: f.tip, wantFile: "a.txt=second\n", wantCommits: 1},
		{name: "branch", url: app, ref: "feature", wantCommit: f.feature, wantFile: "feature.txt=feature\n", wantCommits: 1},
		{name: "full branch ref", url: app, ref: "refs/heads/feature", wantCommit: f.feature, wantCommits: 1},
		{name: "--git branch", url: app, branch: "feature", wantCommit: f.feature, wantCommits: 1},
		{name: "annotated tag", url: app, ref: "v1", wantCommit: f.first, wantFile: "a.txt=first\n", wantCommits: 1},
		{name: "full tag ref", url: app, ref: "refs/tags/v1", wantCommit: f.first, wantCommits: 1},
		{name: "lightweight tag", url: app, ref: "v2-light", wantCommit: f.second, wantFile: "a.txt=second\n", wantCommits: 1},
		{name: "pull request ref", url: app, ref: "refs/pull/42/head", wantCommit: f.pull, wantFile: "pull.txt=pull\n", wantCommits: 1},
		{name: "full SHA at a tip", url: strict, ref: f.feature, wantCommit: f.feature, wantCommits: 1},
		{name: "full SHA served by SHA", url: app, ref: f.second, wantCommit: f.second, wantFile: "a.txt=second\n", wantCommits: 1},
		{name: "full SHA not served by SHA", url: strict, ref: f.second, wantCommit: f.second, wantFile: "a.txt=second\n"},
		{name: "abbreviated SHA", url: app, ref: f.first[:10], wantCommit: f.first, wantFile: "a.txt=first\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dest, gitDir := filepath.Join(base, "ctx"), filepath.Join(base, "ctx.git")
			src := GitSource{URL: tc.url, Ref: tc.ref, Options: GitOptions{Branch: tc.branch}}
			got, err := FetchGit(t.Context(), src, dest, gitDir)
			if err != nil {
				t.Fatalf("FetchGit: %v", err)
			}
			if got != tc.wantCommit {
				t.Errorf("commit = %s, want %s", got, tc.wantCommit)
			}
			if tc.wantFile != "" {
				p, want, _ := strings.Cut(tc.wantFile, "=")
				if diff := cmp.Diff(want, readFile(t, filepath.Join(dest, p))); diff != "" {
					t.Errorf("%s (-want +got):\n%s", p, diff)
				}
			}
			if _, err := os.Lstat(filepath.Join(dest, ".git")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf(".git in the context: %v", err)
			}
			if tc.wantCommits > 0 {
				if n := commitsIn(t, gitDir); n != tc.wantCommits {
					t.Errorf("%d commits fetched, want %d", n, tc.wantCommits)
				}
			}
		})
	}
}

func TestFetchGit_unknownRevision(t *testing.T) {
	f := makeFixture(t)
	srv := gitserver.StartHTTP(t, f.root)
	for _, ref := range []string{"no-such-branch", "refs/pull/7/head", "deadbeef", strings.Repeat("ab", 20)} {
		t.Run(ref, func(t *testing.T) {
			base := t.TempDir()
			_, err := FetchGit(t.Context(), GitSource{URL: srv.URL + "/org/strict.git", Ref: ref}, filepath.Join(base, "ctx"), filepath.Join(base, "ctx.git"))
			if err == nil {
				t.Fatal("FetchGit succeeded")
			}
			want := "fetching git context " + srv.URL + "/org/strict.git at " + ref + ": repository does not contain ref " + ref + " (unknown revision"
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error = %q, want it to start with %q", err, want)
			}
		})
	}
}

func TestFetchWithInfo_subDirectory(t *testing.T) {
	f := makeFixture(t)
	srv := gitserver.StartHTTP(t, f.root)
	work := filepath.Join(t.TempDir(), "context")
	got, err := FetchWithInfo(t.Context(), srv.URL+"/org/app.git#v2-light:app", "nested", work, FetchOptions{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	want := Fetched{Dir: filepath.Join(work, "app", "nested"), Commit: f.second}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Fetched{}, "CommitTime")); diff != "" {
		t.Errorf("FetchWithInfo (-want +got):\n%s", diff)
	}

	// The sub-directory's own .dockerignore applies.
	got, err = FetchWithInfo(t.Context(), "git://"+srv.Host()+"/org/app.git#refs/heads/main:app", "", filepath.Join(t.TempDir(), "context"),
		FetchOptions{Getenv: func(k string) string {
			if k == "GIT_PULL_METHOD" {
				return "http"
			}
			return ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Commit != f.tip {
		t.Errorf("commit = %s, want %s", got.Commit, f.tip)
	}
	c, err := Open(got.Dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ignored.txt"}, c.Patterns); diff != "" {
		t.Errorf("ignore patterns (-want +got):\n%s", diff)
	}
}

func TestFetchGit_submodules(t *testing.T) {
	f := makeFixture(t)
	srv := gitserver.StartHTTP(t, f.root)
	base := t.TempDir()
	dest := filepath.Join(base, "ctx")
	src := GitSource{URL: srv.URL + "/org/strict.git", Ref: "with-submodule", Options: GitOptions{RecurseSubmodules: true}}
	got, err := FetchGit(t.Context(), src, dest, filepath.Join(base, "ctx.git"))
	if err != nil {
		t.Fatalf("FetchGit: %v", err)
	}
	if got != f.withSubmodule {
		t.Errorf("commit = %s, want %s", got, f.withSubmodule)
	}
	// lib is pinned to a commit before its branch tip.
	if diff := cmp.Diff("lib\n", readFile(t, filepath.Join(dest, "lib/lib.txt"))); diff != "" {
		t.Errorf("lib/lib.txt (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff("deep\n", readFile(t, filepath.Join(dest, "lib/deep/deep.txt"))); diff != "" {
		t.Errorf("lib/deep/deep.txt (-want +got):\n%s", diff)
	}
	for _, p := range []string{".git", "lib/.git", "lib/deep/.git"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s in the context: %v", p, err)
		}
	}

	// Without recurse-submodules the directory stays empty.
	dest2 := filepath.Join(base, "ctx2")
	src.Options.RecurseSubmodules = false
	if _, err := FetchGit(t.Context(), src, dest2, filepath.Join(base, "ctx2.git")); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dest2, "lib")); len(entries) != 0 {
		t.Errorf("lib has %d entries without recurse-submodules", len(entries))
	}
}
