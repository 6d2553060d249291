package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/executor/result"
)

func TestUserPaths(t *testing.T) {
	const wd = "/slipway/slipway-build-2784134205"
	tests := []struct {
		name, msg, want string
	}{
		{"a path in the context is relative to it",
			"stat " + wd + "/context/nope: no such file or directory", "stat nope: no such file or directory"},
		{"the context itself",
			"opening context " + wd + "/context: permission denied", "opening context .: permission denied"},
		{"the context, quoted",
			`walking "` + wd + `/context"`, `walking "."`},
		{"the git objects beside the context",
			"reading " + wd + "/context.git/HEAD: x", "reading <work dir>/context.git/HEAD: x"},
		{"another path in the work directory",
			"mkdir " + wd + "/stages/0: no space left on device", "mkdir <work dir>/stages/0: no space left on device"},
		{"the work directory itself",
			"creating " + wd + ": denied", "creating <work dir>: denied"},
		{"a sibling work directory is not this one",
			"stat " + wd + "1/context/x", "stat " + wd + "1/context/x"},
		{"an image path stays", `COPY nope: "/nope": not found`, `COPY nope: "/nope": not found`},
		{"every occurrence",
			wd + "/context/a and " + wd + "/context/b", "a and b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := userPaths(tc.msg, wd); got != tc.want {
				t.Errorf("userPaths(%q) = %q, want %q", tc.msg, got, tc.want)
			}
		})
	}
	if got := userPaths("stat /x/context/a", ""); got != "stat /x/context/a" {
		t.Errorf("without a work directory: %q", got)
	}
}

// writeContextTar writes a tar archive of files (name: content) and returns
// its path, for a tar:// context: the executor extracts it into its work
// directory, so its paths are the executor's own.
func writeContextTar(t *testing.T, files map[string]string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "context.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// A failure names paths as the user knows them: a missing COPY source or
// context sub-path by its name in the context, never by where the executor
// put the context (its work directory), and the Dockerfile line once.
func TestExecute_failureNamesUserPaths(t *testing.T) {
	tarPath := writeContextTar(t, map[string]string{
		"Dockerfile":     "FROM scratch\nCOPY a.txt /a\nCOPY nope /x\n",
		"sub/Dockerfile": "FROM scratch\nCOPY nope /x\n",
		"a.txt":          "a\n",
	})
	tests := []struct {
		name   string
		args   []string
		reason result.Reason
		line   int
		want   string
	}{
		{"missing COPY source", nil, result.ReasonCopyFailed, 3, `"/nope": not found`},
		{"missing context sub-path", []string{"--context-sub-path=nope"}, result.ReasonSourceFetchFailed, 0, `context sub-path "nope": no such file or directory`},
		{"context sub-path that is a file", []string{"--context-sub-path=a.txt"}, result.ReasonSourceFetchFailed, 0, `context sub-path "a.txt": not a directory`},
		{"missing COPY source in a sub-path", []string{"--context-sub-path=sub"}, result.ReasonCopyFailed, 2, `"/nope": not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// runExecutor's work directory is a test's temporary ".../work".
			args := append([]string{"--context=tar://" + tarPath, "--no-push"}, tc.args...)
			b := runExecutor(t, args...)
			f := b.res.Failure
			if b.exit == 0 || f == nil {
				t.Fatalf("the build succeeded (exit %d); log:\n%s", b.exit, b.log)
			}
			t.Logf("message: %s", f.Message)
			if f.Reason != tc.reason || f.Line != tc.line || !strings.Contains(f.Message, tc.want) {
				t.Errorf("failure %s at line %d: %q; want %s at line %d containing %q", f.Reason, f.Line, f.Message, tc.reason, tc.line, tc.want)
			}
			if strings.Contains(f.Message, "Dockerfile line") {
				t.Errorf("message %q names the Dockerfile line; the result's line field does, and the status names it once", f.Message)
			}
			for _, s := range []string{b.resRaw, f.Message} {
				if strings.Contains(s, "/work/") || strings.Contains(s, "/work:") || strings.Contains(s, "/context/") {
					t.Errorf("the result names the executor's work directory: %s", s)
				}
			}
			if want := "error: " + result.Located(tc.line, f.Message); !strings.Contains(b.log, want) {
				t.Errorf("the log does not end with %q:\n%s", want, b.log)
			}
		})
	}
}
