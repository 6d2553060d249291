package build_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
)

// TestBuild_copyParents is BuildKit's testCopyParents
// (frontend/dockerfile/dockerfile_parents_test.go): COPY --parents from the
// context keeps each file's path, to / and with a wildcard to the working
// directory. The history says --parents, and the step is cached.
func TestBuild_copyParents(t *testing.T) {
	f := newFixture(t, map[string]string{"foo1/foo2/bar": "testing", "foo1/foo2/baz": "testing2"})
	const df = `
FROM scratch
COPY --parents foo1/foo2/bar /

WORKDIR /test
COPY --parents foo1/foo2/ba* .
`
	img, rep := mustBuild(t, f, df, true)
	for p, want := range map[string]string{
		"foo1/foo2/bar":      "testing",
		"test/foo1/foo2/bar": "testing",
		"test/foo1/foo2/baz": "testing2",
	} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("/%s = %q (present %v), want %q", p, got, ok, want)
		}
	}
	if _, ok := flatten(t, img)["foo1/foo2/baz"]; ok {
		t.Errorf("/foo1/foo2/baz was copied by COPY --parents foo1/foo2/bar")
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cf.History[len(cf.History)-1].CreatedBy, "COPY --parents foo1/foo2/ba* . # buildkit"; got != want {
		t.Errorf("history %q, want %q", got, want)
	}
	if diff := cmp.Diff(counts{0, 3}, cacheCounts(rep)); diff != "" {
		t.Errorf("first build (-want +got):\n%s", diff)
	}
	_, rep = mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{3, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("second build (-want +got):\n%s", diff)
	}
	// The same files under another pivot land elsewhere: another key.
	img, rep = mustBuild(t, f, strings.Replace(df, "foo1/foo2/bar /", "foo1/./foo2/bar /", 1), true)
	if diff := cmp.Diff(counts{0, 3}, cacheCounts(rep)); diff != "" {
		t.Errorf("another pivot (-want +got):\n%s", diff)
	}
	if got, ok := fileContent(t, img, "foo2/bar"); !ok || got != "testing" {
		t.Errorf("/foo2/bar = %q (present %v) after COPY --parents foo1/./foo2/bar /", got, ok)
	}
}

// relativeParentsBase is the base stage of BuildKit's
// testCopyRelativeParents.
const relativeParentsBase = `
FROM {{BASE}} AS base
WORKDIR /test
RUN <<eot
	set -ex
	mkdir -p a/b/c/d/e
	mkdir -p a/b2/c/d/e
	mkdir -p a/b/c2/d/e
	mkdir -p a/b/c2/d/e2
	touch a/b/c/d/foo
	touch a/b/c/d/e/bay
	touch a/b2/c/d/e/bar
	touch a/b/c2/d/e/baz
	touch a/b/c2/d/e2/baz
eot
`

// TestBuild_copyRelativeParents is BuildKit's testCopyRelativeParents
// (frontend/dockerfile/dockerfile_parents_test.go): COPY --from --parents
// with the "/./" pivot, at the start, middle and end of the source, twice,
// with wildcards before and after it, and two sources. BuildKit builds each
// stage as a target; here each is the last stage.
func TestBuild_copyRelativeParents(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct{ name, stage string }{
		{"middle", `
FROM {{BASE}} AS middle
COPY --from=base --parents /test/a/b/./c/d /out/
RUN <<eot
	set -ex
	[ -d /out/c/d/e ]
	[ -f /out/c/d/foo ]
	[ ! -d /out/a ]
	[ ! -d /out/e ]
eot
`},
		{"end", `
FROM {{BASE}} AS end
COPY --from=base --parents /test/a/b/c/d/. /out/
RUN <<eot
	set -ex
	[ -d /out/test/a/b/c/d/e ]
	[ -f /out/test/a/b/c/d/foo ]
eot
`},
		{"start", `
FROM {{BASE}} AS start
COPY --from=base --parents ./test/a/b/c/d /out/
RUN <<eot
	set -ex
	[ -d /out/test/a/b/c/d/e ]
	[ -f /out/test/a/b/c/d/foo ]
eot
`},
		{"double", `
FROM {{BASE}} AS double
COPY --from=base --parents /test/a/./b/./c /out/
RUN <<eot
	set -ex
	[ -d /out/b/c/d/e ]
	[ -f /out/b/c/d/foo ]
eot
`},
		{"wildcard", `
FROM {{BASE}} AS wildcard
COPY --from=base --parents /test/a/./*/c /out/
RUN <<eot
	set -ex
	[ -d /out/b/c/d/e ]
	[ -f /out/b2/c/d/e/bar ]
eot
`},
		{"doublewildcard", `
FROM {{BASE}} AS doublewildcard
COPY --from=base --parents /test/a/b*/./c/**/e /out/
RUN <<eot
	set -ex
	[ -d /out/c/d/e ]
	[ -f /out/c/d/e/bay ] # via b
	[ -f /out/c/d/e/bar ] # via b2
eot
`},
		{"doubleinputs", `
FROM {{BASE}} AS doubleinputs
COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/
RUN <<eot
	set -ex
	[ -f /out/d/e/baz ]
	[ ! -f /out/d/e/bay ]
	[ -f /out/d/e2/baz ]
	[ -f /out/c/d/e/bar ] # via b2
eot
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustBuild(t, f, relativeParentsBase+tc.stage, false)
		})
	}
}

// TestBuild_copyParentsMissingDirectory is BuildKit's
// testCopyParentsMissingDirectory
// (frontend/dockerfile/dockerfile_parents_test.go): a source without
// wildcards must be there; one with wildcards may select nothing and still
// makes the destination.
func TestBuild_copyParentsMissingDirectory(t *testing.T) {
	const base = `
FROM {{BASE}} AS base
WORKDIR /test
RUN <<eot
	set -ex
	mkdir -p a/b/c/d/e
	touch a/b/c/d/foo
	touch a/b/c/d/e/bay
eot
`
	f := newFixture(t, nil)
	for _, tc := range []struct{ name, stage, wantErr string }{
		{"normal", `
FROM {{BASE}} AS normal
COPY --from=base --parents /test/a/b/c/d /out/
RUN <<eot
	set -ex
	[ -d /out/test/a/b/c/d/e ]
	[ -f /out/test/a/b/c/d/e/bay ]
	[ ! -d /out/e ]
	[ ! -d /out/a ]
eot
`, ""},
		{"withpivot", `
FROM {{BASE}} AS withpivot
COPY --from=base --parents /test/a/b/./c/d /out/
RUN <<eot
	set -ex
	[ -d /out/c/d/e ]
	[ -f /out/c/d/foo ]
	[ ! -d /out/a ]
	[ ! -d /out/e ]
eot
`, ""},
		{"nonexistentfile", `
FROM {{BASE}} AS nonexistentfile
COPY --from=base --parents /test/nonexistent-file /out/
`, `"/test/nonexistent-file": not found`},
		{"wildcard-nonexistent", `
FROM {{BASE}} AS wildcard-nonexistent
COPY --from=base --parents /test/a/b2*/c /out/
RUN <<eot
	set -ex
	[ -d /out ]
	[ ! -d /out/a ]
eot
`, ""},
		{"wildcard-afterpivot", `
FROM {{BASE}} AS wildcard-afterpivot
COPY --from=base --parents /test/a/b/./c2* /out/
RUN <<eot
	set -ex
	[ -d /out ]
	[ ! -d /out/a ]
	[ ! -d /out/c* ]
eot
`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.build(t, base+tc.stage, false)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				return
			}
			var be *build.Error
			if !errors.As(err, &be) || be.Reason != result.ReasonCopyFailed || be.Line != 12 || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Build error %v, want CopyFailed on line 12 containing %q", err, tc.wantErr)
			}
		})
	}
}
