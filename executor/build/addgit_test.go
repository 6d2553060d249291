package build_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/test/gitserver"
)

// TestBuild_addGit checks ADD of a git repository, as BuildKit does it: the
// tree at the ref (or its sub-directory) without .git goes into the
// destination, owned by root or --chown; the step is keyed by the commit,
// so it is served from the cache until the branch moves; a --checksum
// that is not the commit fails the step.
func TestBuild_addGit(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	root := t.TempDir()
	work := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, work, map[string]string{"README": "v1\n", "cmd/tool/main.sh": "echo tool\n"})
	first := gitserver.Commit(t, work, "v1")
	gitserver.Publish(t, work, root, "org/tool.git", true)
	srv := gitserver.StartHTTP(t, root)
	repo := srv.URL + "/org/tool.git"

	df := "FROM {{BASE}}\nADD --chown=7:8 " + repo + "#main /src\nADD " + repo + "#main:cmd /cmd/\nRUN ls -A /src > /ls\n"
	img, rep := mustBuild(t, f, df, true)
	tree := flatten(t, img)
	if got, _ := fileContent(t, img, "ls"); got != "README\ncmd\n" {
		t.Errorf("/src holds %q, want README and cmd (no .git)", got)
	}
	if e := tree["src/README"]; e.UID != 7 || e.GID != 8 {
		t.Errorf("src/README owned by %d:%d, want 7:8", e.UID, e.GID)
	}
	if got, _ := fileContent(t, img, "cmd/tool/main.sh"); got != "echo tool\n" {
		t.Errorf("/cmd/tool/main.sh = %q, want the repository's cmd directory", got)
	}
	if diff := cmp.Diff(counts{0, 3}, cacheCounts(rep)); diff != "" {
		t.Errorf("first build (-want +got):\n%s", diff)
	}

	_, rep = mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{3, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("same commit (-want +got):\n%s", diff)
	}

	gitserver.WriteFiles(t, work, map[string]string{"README": "v2\n"})
	gitserver.Commit(t, work, "v2")
	gitserver.Publish(t, work, root, "org/tool.git", true)
	img, rep = mustBuild(t, f, df, true)
	if got, _ := fileContent(t, img, "src/README"); got != "v2\n" {
		t.Errorf("after the branch moved, src/README = %q", got)
	}
	if diff := cmp.Diff(counts{0, 3}, cacheCounts(rep)); diff != "" {
		t.Errorf("after the branch moved (-want +got):\n%s", diff)
	}

	// Pinned to the first commit by a --checksum that the branch no longer has.
	_, _, err := f.build(t, "FROM {{BASE}}\nADD --checksum="+first[:12]+" "+repo+"#main /src\n", false)
	var be *build.Error
	if !errors.As(err, &be) || be.Line != 2 || !strings.Contains(err.Error(), "expected checksum to match "+first[:12]) {
		t.Errorf("ADD with a stale --checksum: %v, want a mismatch on line 2", err)
	}
	img, _ = mustBuild(t, f, "FROM {{BASE}}\nADD --checksum="+first[:12]+" "+repo+"#"+first+" /src\n", false)
	if got, _ := fileContent(t, img, "src/README"); got != "v1\n" {
		t.Errorf("ADD at the pinned commit: src/README = %q, want v1", got)
	}

	// Credentials in the URL are used, and stay out of the image's history.
	withCreds := strings.Replace(repo, "http://", "http://builder:s3cr3t-t0ken@", 1)
	img, _ = mustBuild(t, f, "FROM {{BASE}}\nADD "+withCreds+"#main /src\n", false)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range cf.History {
		if strings.Contains(h.CreatedBy, "s3cr3t") {
			t.Errorf("history %q carries the URL's password", h.CreatedBy)
		}
	}

	for _, tc := range []struct{ df, want string }{
		{"COPY " + repo + " /src\n", "source can't be a git ref for COPY"},
		{"ADD " + repo + " a.txt /src/\n", "together with other sources"},
	} {
		_, _, err := f.build(t, "FROM {{BASE}}\n"+tc.df, false)
		if !errors.As(err, &be) || be.Line != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error on line 2 containing %q", strings.TrimSpace(tc.df), err, tc.want)
		}
	}
}
