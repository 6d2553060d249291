package copier

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCopy_parents checks COPY --parents against BuildKit's
// testCopyRelativeParents and testCopyParentsMissingDirectory
// (frontend/dockerfile/dockerfile_parents_test.go, the trees their base
// stages make), and how it goes with --exclude, .dockerignore, owners and
// modes: entries keep their path below the source's pivot ("/./", else
// the source root), their parent directories are copied with the sources'
// metadata, and what the pattern does not select is not copied.
func TestCopy_parents(t *testing.T) {
	src := tree{
		"test":                 "d:750",
		"test/a":               "d:755",
		"test/a/b/c/d/e":       "d:755",
		"test/a/b2/c/d/e":      "d:755",
		"test/a/b/c2/d/e":      "d:755",
		"test/a/b/c2/d/e2":     "d:755",
		"test/a/b/c/d/foo":     "f:644:foo",
		"test/a/b/c/d/e/bay":   "f:600:bay",
		"test/a/b2/c/d/e/bar":  "f:644:bar",
		"test/a/b/c2/d/e/baz":  "f:644:baz",
		"test/a/b/c2/d/e2/baz": "f:644:baz2",
		"test/a/b/c/d/secret":  "f:644:S",
		"foo1/foo2/bar":        "f:644:testing",
		"foo1/foo2/baz":        "f:644:testing2",
	}
	ignore := func(rel string) (bool, error) { return strings.HasSuffix(rel, "/secret"), nil }
	u7 := &Owner{UID: 7, GID: 8}
	tests := []struct {
		name    string
		srcs    []string
		dest    string
		workdir string
		req     Request
		want    map[string]string
		wantErr string
	}{
		// testCopyParents.
		{name: "file keeps its path", srcs: []string{"foo1/foo2/bar"}, dest: "/",
			want: map[string]string{"foo1": "d 755 0:0", "foo1/foo2": "d 755 0:0", "foo1/foo2/bar": "f 644 0:0 testing", "foo1/foo2/baz": "missing"}},
		{name: "wildcard to the working directory", srcs: []string{"foo1/foo2/ba*"}, dest: ".", workdir: "/test",
			want: map[string]string{"test/foo1/foo2/bar": "f 644 0:0 testing", "test/foo1/foo2/baz": "f 644 0:0 testing2"}},
		// testCopyRelativeParents.
		{name: "middle pivot", srcs: []string{"/test/a/b/./c/d"}, dest: "/out/",
			want: map[string]string{"out/c/d/e": "d 755 0:0", "out/c/d/foo": "f 644 0:0 foo", "out/a": "missing", "out/e": "missing", "out/c/d/secret": "missing"}},
		{name: "pivot at the end", srcs: []string{"/test/a/b/c/d/."}, dest: "/out/",
			want: map[string]string{"out/test": "d 750 0:0", "out/test/a/b/c/d/e": "d 755 0:0", "out/test/a/b/c/d/foo": "f 644 0:0 foo"}},
		{name: "relative, no pivot", srcs: []string{"./test/a/b/c/d"}, dest: "/out/",
			want: map[string]string{"out/test/a/b/c/d/e": "d 755 0:0", "out/test/a/b/c/d/foo": "f 644 0:0 foo", "out/test/a/b2": "missing"}},
		{name: "two pivots: the first counts", srcs: []string{"/test/a/./b/./c"}, dest: "/out/",
			want: map[string]string{"out/b/c/d/e": "d 755 0:0", "out/b/c/d/foo": "f 644 0:0 foo", "out/b/c2": "missing"}},
		{name: "wildcard after the pivot", srcs: []string{"/test/a/./*/c"}, dest: "/out/",
			want: map[string]string{"out/b/c/d/e": "d 755 0:0", "out/b2/c/d/e/bar": "f 644 0:0 bar", "out/b/c2": "missing"}},
		{name: "wildcards on both sides", srcs: []string{"/test/a/b*/./c/**/e"}, dest: "/out/",
			want: map[string]string{"out/c/d/e": "d 755 0:0", "out/c/d/e/bay": "f 600 0:0 bay", "out/c/d/e/bar": "f 644 0:0 bar", "out/c/d/foo": "missing"}},
		{name: "two sources", srcs: []string{"/test/a/b/c*/./d/**/baz", "/test/a/b*/./c/**/bar"}, dest: "/out/",
			want: map[string]string{"out/d/e/baz": "f 644 0:0 baz", "out/d/e/bay": "missing", "out/d/e2/baz": "f 644 0:0 baz2", "out/c/d/e/bar": "f 644 0:0 bar", "out/d/foo": "missing"}},
		// testCopyParentsMissingDirectory.
		{name: "no pivot", srcs: []string{"/test/a/b/c/d"}, dest: "/out/",
			want: map[string]string{"out/test/a/b/c/d/e/bay": "f 600 0:0 bay", "out/e": "missing", "out/a": "missing"}},
		{name: "missing file", srcs: []string{"/test/nonexistent-file"}, dest: "/out/",
			wantErr: `"/test/nonexistent-file": not found`},
		{name: "missing file after the pivot", srcs: []string{"/test/./nonexistent-file"}, dest: "/out/",
			wantErr: `"/test/nonexistent-file": not found`},
		// Nothing after the pivot selects nothing; without wildcards that
		// is "not found", as BuildKit requires the path it names.
		{name: "nothing after the pivot", srcs: []string{"/test/./"}, dest: "/out/",
			wantErr: `"/test": not found`},
		{name: "missing pivot directory", srcs: []string{"/nodir/./x"}, dest: "/out/",
			wantErr: `"/nodir/x": not found`},
		{name: "wildcard selecting nothing still makes the destination", srcs: []string{"/test/a/b3*/c"}, dest: "/out/",
			want: map[string]string{"out": "d 755 0:0", "out/test": "missing"}},
		{name: "wildcard after the pivot selecting nothing", srcs: []string{"/test/a/b/./c3*"}, dest: "/out/",
			want: map[string]string{"out": "d 755 0:0", "out/c": "missing"}},
		{name: "wildcard pivot matching nothing makes nothing", srcs: []string{"/test/a/x*/./c"}, dest: "/out/",
			want: map[string]string{"out": "missing"}},
		// With the other options.
		{name: "exclude below the pivot", srcs: []string{"/test/a/b/./c"}, dest: "/out/", req: Request{Exclude: []string{"**/e"}},
			want: map[string]string{"out/c/d/foo": "f 644 0:0 foo", "out/c/d/e": "missing"}},
		{name: "exclude with an exception", srcs: []string{"/test/a/./b*"}, dest: "/out/", req: Request{Exclude: []string{"b*/c", "!b2/c/d/e"}},
			want: map[string]string{"out/b/c": "missing", "out/b/c2/d/e/baz": "f 644 0:0 baz", "out/b2/c/d/e/bar": "f 644 0:0 bar", "out/b2/c/d": "d 755 0:0"}},
		{name: "ignored file is not found", srcs: []string{"/test/a/b/./c/d/secret"}, dest: "/out/",
			wantErr: `"/test/a/b/c/d/secret": not found`},
		{name: "chown on files and the parents made", srcs: []string{"test/a/b2/c"}, dest: "/out/", req: Request{Chown: u7},
			want: map[string]string{"out": "d 755 7:8", "out/test": "d 750 7:8", "out/test/a/b2/c/d/e/bar": "f 644 7:8 bar"}},
		{name: "owners kept from a stage", srcs: []string{"test/a/b2/c"}, dest: "/out/", req: Request{KeepOwner: true},
			want: map[string]string{"out": "d 755 0:0", "out/test": "d 750 1000:1000", "out/test/a/b2/c/d/e/bar": "f 644 1000:1000 bar"}},
		{name: "symbolic chmod on the parents too", srcs: []string{"test/a/b2/c"}, dest: "/out/", req: Request{ModeSet: modeSet(t, "o-rwx")},
			want: map[string]string{"out": "d 755 0:0", "out/test": "d 750 0:0", "out/test/a": "d 750 0:0", "out/test/a/b2/c/d/e/bar": "f 640 0:0 bar"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srcRoot, destRoot := t.TempDir(), t.TempDir()
			build(t, srcRoot, src)
			r := tc.req
			r.Parents, r.Sources, r.Dest, r.WorkDir = true, tc.srcs, tc.dest, tc.workdir
			r.SrcRoot, r.DestRoot, r.Ignore = srcRoot, destRoot, ignore
			if r.WorkDir == "" {
				r.WorkDir = "/"
			}
			r.RecordSources = true
			files, serr := Sources(t.Context(), r)
			res, err := Copy(t.Context(), r)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Copy() error = %v, want one containing %q", err, tc.wantErr)
				}
				if serr == nil || serr.Error() != err.Error() {
					t.Errorf("Sources() error = %v, want Copy's", serr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Copy(): %v", err)
			}
			got := map[string]string{}
			for p := range tc.want {
				got[p] = describe(destRoot, p)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Copy() destination mismatch (-want +got):\n%s", diff)
			}
			// The key is made of exactly what the copy read.
			if serr != nil {
				t.Fatalf("Sources(): %v", serr)
			}
			if diff := cmp.Diff(res.Sources, files); diff != "" {
				t.Errorf("Sources() differs from what Copy read (-copy +sources):\n%s", diff)
			}
		})
	}
}
