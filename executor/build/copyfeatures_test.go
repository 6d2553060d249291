package build_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
)

// TestBuild_emptyWildcard is BuildKit's testEmptyWildcard
// (frontend/dockerfile/dockerfile_copy_test.go): a wildcard that matches
// nothing beside a source that is there copies that source. Beyond that
// test, BuildKit's rule (AllowEmptyWildcard on every local source of
// dispatchCopy) also lets a step whose every wildcard matches nothing
// succeed, from the context or from a stage: it makes no destination and
// has BuildKit's empty layer, and is cached like any step. A wildcard in a
// directory that is not there still fails (fsutil's ResolveWildcards walks
// that directory).
func TestBuild_emptyWildcard(t *testing.T) {
	f := newFixture(t, map[string]string{"foo": "contents0"})
	img, _ := mustBuild(t, f, "FROM scratch\nCOPY foo nomatch* /\n", false)
	if got, ok := fileContent(t, img, "foo"); !ok || got != "contents0" {
		t.Errorf("/foo = %q (present %v), want contents0", got, ok)
	}

	const df = "FROM {{BASE}} AS src\nFROM {{BASE}}\nCOPY nomatch* /dst/\nCOPY --from=src /nomatch* /etc/nomatch* /dst2/\n"
	img, rep := mustBuild(t, f, df, true)
	tree := flatten(t, img)
	for _, p := range []string{"dst", "dst2"} {
		if _, ok := tree[p]; ok {
			t.Errorf("/%s was made by a COPY that matched nothing", p)
		}
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls[len(ls)-2:] {
		if files := layerFiles(t, l); len(files) != 0 {
			t.Errorf("a COPY that matched nothing has a layer holding %v, want the empty layer", files)
		}
	}
	if diff := cmp.Diff(counts{0, 2}, cacheCounts(rep)); diff != "" {
		t.Errorf("first build (-want +got):\n%s", diff)
	}
	_, rep = mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{2, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("second build (-want +got):\n%s", diff)
	}

	_, _, err = f.build(t, "FROM {{BASE}}\n\nCOPY nodir/*.txt /dst/\n", false)
	var be *build.Error
	if !errors.As(err, &be) || be.Line != 3 || be.Reason != result.ReasonCopyFailed || !strings.Contains(err.Error(), `"/nodir": not found`) {
		t.Errorf("COPY of a wildcard in a missing directory: %v, want CopyFailed on line 3 naming /nodir", err)
	}
}
