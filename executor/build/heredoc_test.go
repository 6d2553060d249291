package build_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
)

// TestBuild_runShebangHeredoc is BuildKit's testRunShebangHeredoc
// (frontend/dockerfile/dockerfile_heredoc_test.go): a RUN heredoc whose
// first line is #! (after <<- strips the tabs) runs as a script with that
// interpreter. As in BuildKit, the script is /dev/pipes/EOF, run through
// the shell, and stays out of the layer.
func TestBuild_runShebangHeredoc(t *testing.T) {
	f := newFixture(t, map[string]string{})
	df := `
FROM {{BASE}} AS build

WORKDIR /dest

RUN <<EOF
#!/bin/awk -f
BEGIN {
	print "hello" >> "./out1"
	print "world" >> "./out1"
}
EOF

RUN <<-EOF
	#!/bin/awk -f
	BEGIN {
		print "hello" >> "./out2"
		print "world" >> "./out2"
	}
EOF

FROM scratch
COPY --from=build /dest /
`
	img, _ := mustBuild(t, f, df, false)
	for name, want := range map[string]string{"out1": "hello\nworld\n", "out2": "hello\nworld\n"} {
		if got, ok := fileContent(t, img, name); !ok || got != want {
			t.Errorf("/%s = %q (found %v), want %q", name, got, ok, want)
		}
	}

	// The build stage itself: BuildKit's history text, and no script left.
	img, _ = mustBuild(t, f, strings.SplitN(df, "\nFROM scratch", 2)[0], false)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	h := cf.History[len(cf.History)-1]
	if want := "RUN /bin/sh -c /dev/pipes/EOF # buildkit"; h.CreatedBy != want {
		t.Errorf("created_by %q, want %q", h.CreatedBy, want)
	}
	for p := range flatten(t, img) {
		if strings.HasPrefix(p, "dev/pipes") {
			t.Errorf("%s is in the image; the script should leave nothing", p)
		}
	}
	if got := strings.Join(lastLayerFiles(t, img), " "); !strings.Contains(got, "dest/out2") || strings.Contains(got, "dev") {
		t.Errorf("the last RUN's layer holds %s, want dest/out2 and nothing of /dev", got)
	}
}

// TestBuild_runShebangHeredocFails checks that a script heredoc's
// interpreter line is obeyed (#!/bin/sh -e stops at the failing command)
// and that its failure fails the step on its line.
func TestBuild_runShebangHeredocFails(t *testing.T) {
	f := newFixture(t, map[string]string{})
	df := "FROM {{BASE}}\nRUN <<EOF\n#!/bin/sh -e\necho before\nfalse\necho after\nEOF\n"
	_, _, err := f.build(t, df, false)
	var be *build.Error
	if !errors.As(err, &be) || be.Line != 2 || be.Reason != result.ReasonRunFailed || be.ExitCode != 1 {
		t.Fatalf("Build error %v, want a failed RUN on line 2 with exit code 1", err)
	}
	if want := `process "/bin/sh -c /dev/pipes/EOF" did not complete successfully: exit code: 1`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
}

// TestBuild_copyHeredoc is BuildKit's testCopyHeredoc
// (frontend/dockerfile/dockerfile_heredoc_test.go): COPY of heredocs, one
// to a file name, two into a directory (named by their words), with
// --chmod and --chown. The test image has no adduser: the user is added to
// /etc/passwd and /etc/group by hand.
func TestBuild_copyHeredoc(t *testing.T) {
	f := newFixture(t, map[string]string{})
	df := `
FROM {{BASE}} AS build

RUN echo 'user:x:1001:1001::/home/user:/bin/sh' >> /etc/passwd && echo 'user:x:1001:' >> /etc/group
WORKDIR /dest

COPY <<EOF single
single file
EOF

COPY <<EOF <<EOF2 double/
first file
EOF
second file
EOF2

RUN mkdir -p /permfiles
COPY --chmod=777 <<EOF /permfiles/all
dummy content
EOF
COPY --chmod=0644 <<EOF /permfiles/rw
dummy content
EOF
COPY --chown=user:user <<EOF /permfiles/owned
dummy content
EOF
RUN stat -c "%04a" /permfiles/all >> perms && \
	stat -c "%04a" /permfiles/rw >> perms && \
	stat -c "%U:%G" /permfiles/owned >> perms

FROM scratch
COPY --from=build /dest /
`
	img, _ := mustBuild(t, f, df, false)
	for name, want := range map[string]string{
		"single":      "single file\n",
		"double/EOF":  "first file\n",
		"double/EOF2": "second file\n",
		"perms":       "0777\n0644\nuser:user\n",
	} {
		if got, ok := fileContent(t, img, name); !ok || got != want {
			t.Errorf("/%s = %q (found %v), want %q", name, got, ok, want)
		}
	}
}

// TestBuild_copyHeredocWithPaths checks COPY and ADD of heredocs together
// with paths, which BuildKit's dispatchCopy allows: every path is copied
// first, in order, then every heredoc (so a heredoc wins over a file of the
// same name, whatever the order written), each by the one-source rules, with
// --chmod on both; ADD still extracts an archive among the paths, never a
// heredoc. The history names the paths, then the heredocs. The step is
// keyed on both the files and the heredocs' text.
func TestBuild_copyHeredocWithPaths(t *testing.T) {
	f := newFixture(t, map[string]string{"file.txt": "from the context\n", "EOF": "context file named EOF\n", "a.tar": tarOf(t, "inner", "extracted\n")})
	df := `FROM {{BASE}}
COPY <<EOF file.txt /dest/
heredoc text
EOF
COPY --chmod=u+x <<EOF EOF /over/
the heredoc's EOF
EOF
COPY file.txt <<EOF /name
the heredoc is copied last
EOF
ADD <<EOF a.tar /add/
not an archive
EOF
`
	img, rep := mustBuild(t, f, df, true)
	tree := flatten(t, img)
	for name, want := range map[string]string{
		"dest/file.txt": "from the context\n",
		"dest/EOF":      "heredoc text\n",
		"over/EOF":      "the heredoc's EOF\n",
		"name":          "the heredoc is copied last\n",
		"add/inner":     "extracted\n",
		"add/EOF":       "not an archive\n",
	} {
		if got, ok := fileContent(t, img, name); !ok || got != want {
			t.Errorf("/%s = %q (found %v), want %q", name, got, ok, want)
		}
	}
	if m := tree["over/EOF"].Mode & 0o7777; m != 0o744 {
		t.Errorf("/over/EOF has mode %04o, want 0744 (0644 with u+x)", m)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cf.History[len(cf.History)-4].CreatedBy, "COPY file.txt <<EOF /dest/ # buildkit"; got != want {
		t.Errorf("history %q, want %q", got, want)
	}
	if diff := cmp.Diff(counts{0, 4}, cacheCounts(rep)); diff != "" {
		t.Errorf("first build (-want +got):\n%s", diff)
	}

	_, rep = mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{4, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("same build (-want +got):\n%s", diff)
	}
	// Another heredoc text misses that step (and what follows).
	_, rep = mustBuild(t, f, strings.Replace(df, "heredoc text", "other text", 1), true)
	if diff := cmp.Diff(counts{0, 4}, cacheCounts(rep)); diff != "" {
		t.Errorf("heredoc changed (-want +got):\n%s", diff)
	}
	// Another file content misses the steps that read it.
	writeContext(t, f.ctxDir, map[string]string{"file.txt": "changed\n"})
	img, rep = mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{0, 4}, cacheCounts(rep)); diff != "" {
		t.Errorf("file changed (-want +got):\n%s", diff)
	}
	if got, _ := fileContent(t, img, "dest/file.txt"); got != "changed\n" {
		t.Errorf("/dest/file.txt = %q after the change", got)
	}
}
