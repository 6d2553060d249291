package build_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBuild_runHome: a RUN step whose environment has no HOME gets the
// home directory of its user's /etc/passwd entry, "/" for a uid without
// one, as runc sets it for BuildKit's steps (libcontainer's setupUser); an
// image ENV HOME wins. There is no BuildKit test of this: the rule is
// runc's. The image config never gets HOME.
func TestBuild_runHome(t *testing.T) {
	const dockerfile = `FROM {{BASE}}
RUN echo "$HOME" > /home-root
RUN ["/bin/sh", "-c", "echo \"$HOME\" > /home-root-exec"]
USER app
RUN echo "$HOME" > /tmp/home-app
USER 4242
RUN echo "$HOME" > /tmp/home-4242
USER 4242:4242
RUN ["/bin/sh", "-c", "echo \"$HOME\" > /tmp/home-4242-4242"]
USER root
ENV HOME=/custom
RUN echo "$HOME" > /home-env
`
	f := newFixture(t, nil)
	img, _ := mustBuild(t, f, dockerfile, false)
	for p, want := range map[string]string{
		"/home-root":          "/root\n",
		"/home-root-exec":     "/root\n",
		"/tmp/home-app":       "/home/app\n",
		"/tmp/home-4242":      "/\n",
		"/tmp/home-4242-4242": "/\n",
		"/home-env":           "/custom\n",
	} {
		got, ok := fileContent(t, img, p)
		if !ok {
			t.Errorf("%s missing", p)
			continue
		}
		if got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var homes []string
	for _, kv := range cf.Config.Env {
		if strings.HasPrefix(kv, "HOME=") {
			homes = append(homes, kv)
		}
	}
	if diff := cmp.Diff([]string{"HOME=/custom"}, homes); diff != "" {
		t.Errorf("config HOME (-want +got):\n%s", diff)
	}
}

// tarOf is a tar archive of one regular file.
func tarOf(t *testing.T, name, content string) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(content)), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestBuild_addArchiveWildcard is BuildKit's testDockerfileAddArchiveWildcard
// (frontend/dockerfile/dockerfile_add_test.go): a wildcard matching two
// archives and a destination without a trailing slash extracts both into
// that directory; BuildKit has no "must end with a /" rule.
func TestBuild_addArchiveWildcard(t *testing.T) {
	f := newFixture(t, map[string]string{
		"t.tar": tarOf(t, "foo", "content0"),
		"b.tar": tarOf(t, "bar", "content1"),
	})
	img, _ := mustBuild(t, f, "FROM scratch\nADD *.tar /dest\n", false)
	for p, want := range map[string]string{"/dest/foo": "content0", "/dest/bar": "content1"} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", p, got, ok, want)
		}
	}
}

// TestBuild_copyChmod is BuildKit's testCopyChmod
// (frontend/dockerfile/dockerfile_copy_test.go): --chmod sets the mode of
// what is copied and of the destination's parents the copy creates (/parent
// 0777, then /parent/sub 0770 with /parent left as it was). The build arg
// is the ARG's default here (the test passes it as build-arg:mode).
func TestBuild_copyChmod(t *testing.T) {
	const dockerfile = `FROM {{BASE}} AS base

RUN mkdir -m 0777 /out
COPY --chmod=0644 foo /
COPY --chmod=777 bar /baz
COPY --chmod=0 foo /foobis
COPY --chmod=777 foo /parent/foo
COPY --chmod=770 foo /parent/sub/foo

ARG mode=755
COPY --chmod=${mode} foo /footer

RUN stat -c "%04a" /foo  > /out/fooperm
RUN stat -c "%04a" /baz  > /out/barperm
RUN stat -c "%04a" /foobis  > /out/foobisperm
RUN stat -c "%04a" /parent  > /out/parentperm
RUN stat -c "%04a" /parent/sub  > /out/subparentperm
RUN stat -c "%04a" /footer  > /out/footerperm
FROM scratch
COPY --from=base /out /
`
	f := newFixture(t, map[string]string{"foo": "foo-contents", "bar": "bar-contents"})
	if err := os.Chmod(filepath.Join(f.ctxDir, "foo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(f.ctxDir, "bar"), 0o700); err != nil {
		t.Fatal(err)
	}
	img, _ := mustBuild(t, f, dockerfile, false)
	for p, want := range map[string]string{
		"/fooperm":       "0644\n",
		"/barperm":       "0777\n",
		"/foobisperm":    "0000\n",
		"/parentperm":    "0777\n",
		"/subparentperm": "0770\n",
		"/footerperm":    "0755\n",
	} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", p, got, ok, want)
		}
	}
}
