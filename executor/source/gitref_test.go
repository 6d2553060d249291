package source

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/test/gitserver"
)

// TestParseGitURL_query covers BuildKit's git reference query string
// (dfgitutil.ParseGitRef, as dockerui.DetectGitContext parses a build
// context), the forms of BuildKit's testGitQueryString.
func TestParseGitURL_query(t *testing.T) {
	yes, no := true, false
	const sha = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		in   string
		want GitSource
	}{
		{in: "https://h/r.git?ref=base", want: GitSource{URL: "https://h/r.git", Ref: "base"}},
		{in: "https://h/r.git?branch=base", want: GitSource{URL: "https://h/r.git", Ref: "refs/heads/base"}},
		{in: "https://h/r.git?tag=v0.0.2", want: GitSource{URL: "https://h/r.git", Ref: "refs/tags/v0.0.2"}},
		{in: "https://h/r.git?tag=v0.0.2#refs/tags/v0.0.2", want: GitSource{URL: "https://h/r.git", Ref: "refs/tags/v0.0.2"}},
		{in: "https://h/r.git?subdir=sub&ref=feature", want: GitSource{URL: "https://h/r.git", Ref: "feature", SubDir: "sub"}},
		{in: "https://h/r.git?ref=" + sha + "&commit=" + sha, want: GitSource{URL: "https://h/r.git", Ref: sha, Checksum: sha}},
		{in: "https://h/r.git?tag=v1&checksum=0123abcd", want: GitSource{URL: "https://h/r.git", Ref: "refs/tags/v1", Checksum: "0123abcd"}},
		{in: "https://h/r.git?keep-git-dir=true", want: GitSource{URL: "https://h/r.git", KeepGitDir: &yes}},
		{in: "https://h/r.git?keep-git-dir&submodules", want: GitSource{URL: "https://h/r.git", KeepGitDir: &yes, Submodules: &yes}},
		{in: "https://h/r.git?submodules=false", want: GitSource{URL: "https://h/r.git", Submodules: &no}},
		{in: "git://h/r.git?ref=main", want: GitSource{URL: "https://h/r.git", Ref: "main"}},
		{in: "ssh://git@h:2222/r.git?ref=main", want: GitSource{URL: "ssh://git@h:2222/r.git", Ref: "main"}},
		{in: "git@h:org/r.git?ref=main&subdir=app", want: GitSource{URL: "git@h:org/r.git", Ref: "main", SubDir: "app"}},
		{in: "https://bob:tok@h/r.git?ref=main", want: GitSource{URL: "https://h/r.git", Ref: "main", Auth: GitAuth{Username: "bob", Password: "tok"}}},
	}
	for _, tc := range tests {
		tc.want.BuildKitRefs = true
		got, err := ParseGitURL(tc.in, "")
		if err != nil {
			t.Errorf("ParseGitURL(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseGitURL(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestParseGitURL_queryErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		// BuildKit's words (dfgitutil's loadQuery).
		{"https://h/r.git?tag=v0.0.2#refs/heads/master", `ref conflicts: "refs/heads/master" vs "refs/tags/v0.0.2"`},
		{"https://h/r.git?ref=a#b", `ref conflicts: "b" vs "a"`},
		{"https://h/r.git?subdir=a#:b", `subdir conflicts: "b" vs "a"`},
		{"https://h/r.git?tag=a&branch=b", "branch conflicts with tag"},
		{"https://h/r.git?ref=", `query "ref" has no value`},
		{"https://h/r.git?ref=a&ref=b", `query "ref" has multiple values`},
		{"https://h/r.git?depth=1", `unexpected query "depth"`},
		{"https://h/r.git?keep-git-dir=maybe", `invalid keep-git-dir value: "maybe"`},
		// Ours.
		{"https://h/r.git?commit=xyz", "invalid checksum xyz for Git URL, expected hex commit hash"},
		{"https://h/r.git?mtime=commit", "mtime and fetch-by-commit are not supported"},
		{"https://h/repo?ref=main", "a URL with a query string must be a BuildKit git reference"},
	}
	for _, tc := range tests {
		_, err := ParseGitURL(tc.in, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseGitURL(%q) error = %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

// A query never carries the URL's credentials into an error, and the
// credentials stay scoped to the repository's origin.
func TestParseGitURL_queryCredentials(t *testing.T) {
	for _, in := range []string{
		"https://alice:" + secretPassword + "@h/r.git?ref=",
		"https://alice:" + secretPassword + "@h/repo?ref=main",
		"https://alice:" + secretPassword + "@h/r.git?tag=a#refs/heads/b",
		"https://alice:" + secretPassword + "@h/r.git?commit=zz",
	} {
		_, err := ParseGitURL(in, "")
		if err == nil {
			t.Errorf("ParseGitURL(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), secretPassword) || strings.Contains(err.Error(), "alice") {
			t.Errorf("ParseGitURL error %q shows a credential", err)
		}
	}
	// ?ref=… cannot move the credentials to another origin.
	for in, want := range map[string]string{
		"https://alice:pw@h:8443/r.git?ref=main&subdir=x": "https://h:8443",
		"git://h/r.git?ref=evil.example":                  "https://h:443",
		"https://h/r.git?ref=@evil.example/x.git":         "https://h:443",
	} {
		if got := ContextOrigin(in, ""); got != want {
			t.Errorf("ContextOrigin(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFetchWithInfo_buildKitRefs fetches the query forms from a server,
// as BuildKit's testGitQueryString does: refs resolve as BuildKit's git
// source does (a commit only by its full SHA, a branch before a tag,
// branch= is refs/heads/), commit= checks the commit, keep-git-dir keeps
// .git, submodules are checked out unless submodules=false.
func TestFetchWithInfo_buildKitRefs(t *testing.T) {
	f := makeFixture(t)
	srv := gitserver.StartHTTP(t, f.root)
	repo := srv.URL + "/org/app.git"
	tests := []struct {
		name, url   string
		wantCommit  string
		wantErr     string
		wantFile    map[string]string // path: content; "" for must not exist
		wantGitHEAD bool
	}{
		{name: "ref branch", url: repo + "?ref=feature", wantCommit: f.feature},
		{name: "branch", url: repo + "?branch=feature", wantCommit: f.feature},
		{name: "tag annotated", url: repo + "?tag=" + f.annotatedTag, wantCommit: f.first},
		{name: "tag lightweight", url: repo + "?tag=" + f.lightTag, wantCommit: f.second},
		{name: "ref full SHA", url: repo + "?ref=" + f.second, wantCommit: f.second},
		{name: "ref short SHA", url: repo + "?ref=" + f.second[:8], wantErr: "repository does not contain ref " + f.second[:8]},
		{name: "tag as branch", url: repo + "?branch=" + f.lightTag, wantErr: "repository does not contain ref refs/heads/" + f.lightTag},
		{name: "invalid branch", url: repo + "?branch=invalid", wantErr: "repository does not contain ref refs/heads/invalid"},
		{name: "commit short", url: repo + "?commit=" + f.tip[:8], wantCommit: f.tip},
		{name: "tag with commit", url: repo + "?tag=" + f.lightTag + "&commit=" + f.second, wantCommit: f.second},
		{name: "tag with wrong commit", url: repo + "?tag=" + f.lightTag + "&commit=" + f.tip, wantErr: "expected checksum to match " + f.tip + ", got " + f.second},
		{name: "subdir", url: repo + "?ref=" + f.lightTag + "&subdir=app", wantCommit: f.second, wantFile: map[string]string{"keep.txt": "keep\n"}},
		{name: "keep-git-dir", url: repo + "?ref=feature&keep-git-dir=true", wantCommit: f.feature, wantGitHEAD: true},
		{name: "keep-git-dir false", url: repo + "?keep-git-dir=false", wantCommit: f.tip, wantFile: map[string]string{".git": ""}},
		{name: "keep-git-dir with subdir", url: repo + "?keep-git-dir&subdir=app&ref=" + f.lightTag, wantCommit: f.second, wantFile: map[string]string{".git": "", "../.git": ""}},
		{name: "submodules by default", url: repo + "?ref=with-submodule", wantCommit: f.withSubmodule, wantFile: map[string]string{"lib/lib.txt": "lib\n"}},
		{name: "submodules false", url: repo + "?ref=with-submodule&submodules=false", wantCommit: f.withSubmodule, wantFile: map[string]string{"lib/lib.txt": ""}},
		// A plain URL keeps this executor's forms: an abbreviated SHA.
		{name: "plain fragment short SHA", url: repo + "#" + f.second[:8], wantCommit: f.second},
		{name: "plain submodules by default", url: repo + "#with-submodule", wantCommit: f.withSubmodule, wantFile: map[string]string{"lib/deep/deep.txt": "deep\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "context")
			got, err := FetchWithInfo(t.Context(), tc.url, "", work, FetchOptions{Getenv: envOf(nil)})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FetchWithInfo: %v", err)
			}
			if got.Commit != tc.wantCommit {
				t.Errorf("commit = %s, want %s", got.Commit, tc.wantCommit)
			}
			for p, want := range tc.wantFile {
				b, err := os.ReadFile(filepath.Join(got.Dir, p))
				if want == "" {
					if _, err := os.Lstat(filepath.Join(got.Dir, p)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s exists (%v), want none", p, err)
					}
					continue
				}
				if err != nil || string(b) != want {
					t.Errorf("%s = %q (%v), want %q", p, b, err, want)
				}
			}
			head, err := os.ReadFile(filepath.Join(got.Dir, ".git", "HEAD"))
			switch {
			case tc.wantGitHEAD && (err != nil || string(head) != tc.wantCommit+"\n"):
				t.Errorf(".git/HEAD = %q (%v), want %s", head, err, tc.wantCommit)
			case !tc.wantGitHEAD && err == nil:
				t.Errorf(".git/HEAD exists without keep-git-dir")
			}
		})
	}
}

// The kept .git of a context fetched with credentials in its URL names
// the origin without them, and no file of it holds them.
func TestFetchWithInfo_keepGitDirNoCredentials(t *testing.T) {
	root, commit := smallRepo(t)
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("alice", secretPassword))
	repo := srv.URL + "/org/app.git"
	withCreds := strings.Replace(repo, "http://", "http://alice:"+secretPassword+"@", 1)
	got, err := FetchWithInfo(t.Context(), withCreds+"?keep-git-dir=true", "", filepath.Join(t.TempDir(), "context"), FetchOptions{Getenv: envOf(nil)})
	if err != nil {
		t.Fatalf("FetchWithInfo: %v", err)
	}
	if got.Commit != commit {
		t.Errorf("commit = %s, want %s", got.Commit, commit)
	}
	cfg := readFile(t, filepath.Join(got.Dir, ".git", "config"))
	if !strings.Contains(cfg, "url = "+repo+"\n") {
		t.Errorf(".git/config does not name the origin %s:\n%s", repo, cfg)
	}
	err = filepath.Walk(filepath.Join(got.Dir, ".git"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		if b := readFile(t, p); strings.Contains(b, secretPassword) {
			t.Errorf("%s holds the password", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// An unknown ref's error shows neither user nor password.
	_, err = FetchWithInfo(t.Context(), withCreds+"?branch=nope", "", filepath.Join(t.TempDir(), "context"), FetchOptions{Getenv: envOf(nil)})
	if err == nil || !strings.Contains(err.Error(), "repository does not contain ref refs/heads/nope") {
		t.Fatalf("error = %v, want repository does not contain ref", err)
	}
	if strings.Contains(err.Error(), secretPassword) || strings.Contains(err.Error(), "alice") {
		t.Errorf("error %q shows a credential", err)
	}
}

func TestParseGitOptions_submodulesDefault(t *testing.T) {
	for in, want := range map[string]bool{"": true, "branch=x": true, "recurse-submodules=false": false, "recurse-submodules=true": true} {
		o, err := ParseGitOptions(in)
		if err != nil {
			t.Fatal(err)
		}
		if o.RecurseSubmodules != want {
			t.Errorf("ParseGitOptions(%q).RecurseSubmodules = %v, want %v", in, o.RecurseSubmodules, want)
		}
	}
}
