package build_test

import (
	"errors"
	"strings"
	"testing"

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
