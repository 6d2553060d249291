package source

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/test/gitserver"
)

// FetchWithInfo reports the committer time of the commit it checked out
// (what SOURCE_DATE_EPOCH=context takes, as BuildKit's
// testSourceDateEpochContextGit), not the author time nor the time of the
// checkout; an annotated tag is peeled to its commit first.
func TestFetchWithInfo_commitTime(t *testing.T) {
	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{"Dockerfile": "FROM scratch\n"})
	t.Setenv("GIT_AUTHOR_DATE", "2001-02-03T04:05:06Z")
	t.Setenv("GIT_COMMITTER_DATE", "2023-11-14T22:15:01+02:00")
	commit := gitserver.Commit(t, w, "first")
	t.Setenv("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
	gitserver.Git(t, w, "tag", "-a", "-m", "release", "v1")
	root := t.TempDir()
	gitserver.Publish(t, w, root, "app.git", false)
	srv := gitserver.StartHTTP(t, root)

	for _, url := range []string{srv.URL + "/app.git", srv.URL + "/app.git#v1"} {
		got, err := FetchWithInfo(t.Context(), url, "", filepath.Join(t.TempDir(), "context"), FetchOptions{Getenv: func(string) string { return "" }})
		if err != nil {
			t.Fatal(err)
		}
		want := time.Date(2023, 11, 14, 20, 15, 1, 0, time.UTC)
		if got.Commit != commit || !got.CommitTime.Equal(want) || got.CommitTime.Location() != time.UTC {
			t.Errorf("%s: commit %s at %v, want %s at %v (UTC)", url, got.Commit, got.CommitTime, commit, want)
		}
	}

	// A directory context has no commit, and no time.
	got, err := FetchWithInfo(t.Context(), "dir://"+w, "", "", FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.CommitTime.IsZero() {
		t.Errorf("directory context: commit time %v, want none", got.CommitTime)
	}
}
