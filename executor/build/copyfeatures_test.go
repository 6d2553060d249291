package build_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// TestBuild_chmodNonOctal is BuildKit's testChmodNonOctal
// (frontend/dockerfile/dockerfile_copy_test.go): COPY --chmod with a
// symbolic mode gives each file and directory what chmod(1) (busybox's,
// here) gives the same entry; for a directory source, its contents. Also
// ADD with a symbolic mode, the step cached by the mode, and the two
// errors: a value that looks numeric gets BuildKit's octal message
// (testCopyInvalidChmod), a symbolic one that does not parse is named.
func TestBuild_chmodNonOctal(t *testing.T) {
	tcases := []struct {
		src, dst, mode string
		isDir          bool
	}{
		{src: "file", dst: "f1", mode: "go-w"},
		{src: "file", dst: "f2", mode: "u=rw,g=r,o=r"},
		{src: "file", dst: "f3", mode: "a+X"},
		{src: "dir", dst: "d1", mode: "go-w", isDir: true},
		{src: "dir", dst: "d2", mode: "u+rw,g+r,o-x,o+w", isDir: true},
		{src: "dir", dst: "d3", mode: "a+X", isDir: true},
	}
	var expected, copies, verify strings.Builder
	for _, tc := range tcases {
		if tc.isDir {
			// COPY copies a directory's contents: nest the input once.
			fmt.Fprintf(&expected, "RUN mkdir -p /input/dirs/%[1]s && cp -a /input/%[2]s /input/dirs/%[1]s/%[1]s\n", tc.dst, tc.src)
			fmt.Fprintf(&expected, "RUN cp -a /input/dirs/%[1]s/. /expected/ && chmod %[2]s /expected/%[1]s\n", tc.dst, tc.mode)
			fmt.Fprintf(&copies, "COPY --from=base --chmod=%s /input/dirs/%s /\n", tc.mode, tc.dst)
		} else {
			fmt.Fprintf(&expected, "RUN cp -a /input/%[1]s /expected/%[2]s && chmod %[3]s /expected/%[2]s\n", tc.src, tc.dst, tc.mode)
			fmt.Fprintf(&copies, "COPY --from=base --chmod=%s /input/%s /%s\n", tc.mode, tc.src, tc.dst)
		}
		fmt.Fprintf(&verify, "RUN [ \"$(stat -c %%A /actual/%[1]s)\" = \"$(stat -c %%A /expected/%[1]s)\" ] || { stat -c '%%n %%A' /actual/%[1]s /expected/%[1]s; exit 1; }\n", tc.dst)
	}
	df := fmt.Sprintf(`FROM {{BASE}} AS base
RUN set -ex; mkdir /input; touch /input/file; chmod 666 /input/file; mkdir /input/dir; chmod 124 /input/dir; mkdir /expected
%s
FROM scratch AS result
%s
FROM base
COPY --from=result / /actual/
%s`, expected.String(), copies.String(), verify.String())
	f := newFixture(t, map[string]string{"ctx.txt": "c\n"})
	mustBuild(t, f, df, false)

	const addDF = "FROM {{BASE}}\nADD --chmod=u+x,g-r,o= ctx.txt /a/\n"
	if err := os.Chmod(filepath.Join(f.ctxDir, "ctx.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, rep := mustBuild(t, f, addDF, true)
	tree := flatten(t, img)
	if e := tree["a/ctx.txt"]; e.Mode&0o7777 != 0o700 {
		t.Errorf("ADD --chmod=u+x,g-r,o= of a 0644 file gave %04o, want 0700", e.Mode&0o7777)
	}
	if e := tree["a"]; e.Mode&0o7777 != 0o755 {
		t.Errorf("the directory ADD made is %04o, want 0755 as without --chmod", e.Mode&0o7777)
	}
	if diff := cmp.Diff(counts{0, 1}, cacheCounts(rep)); diff != "" {
		t.Errorf("first ADD (-want +got):\n%s", diff)
	}
	_, rep = mustBuild(t, f, addDF, true)
	if diff := cmp.Diff(counts{1, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("same ADD again (-want +got):\n%s", diff)
	}
	img, rep = mustBuild(t, f, strings.Replace(addDF, "o=", "o=r", 1), true)
	if diff := cmp.Diff(counts{0, 1}, cacheCounts(rep)); diff != "" {
		t.Errorf("ADD with another mode (-want +got):\n%s", diff)
	}
	if e := flatten(t, img)["a/ctx.txt"]; e.Mode&0o7777 != 0o704 {
		t.Errorf("ADD --chmod=u+x,g-r,o=r of a 0644 file gave %04o, want 0704", e.Mode&0o7777)
	}

	for _, tc := range []struct{ chmod, want string }{
		{"64a", "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"},
		{"10000", "invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777"},
		{"u+z", "invalid chmod parameter: 'u+z'"},
	} {
		_, _, err := f.build(t, "FROM {{BASE}}\nCOPY --chmod="+tc.chmod+" ctx.txt /\n", false)
		var be *build.Error
		if !errors.As(err, &be) || be.Line != 2 || be.Reason != result.ReasonDockerfileInvalid || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("COPY --chmod=%s: %v, want DockerfileInvalid on line 2 containing %q", tc.chmod, err, tc.want)
		}
	}
}

// TestBuild_addUnpack is the --unpack part of BuildKit's
// testDockerfileAddArchive (frontend/dockerfile/dockerfile_add_test.go):
// ADD --unpack=false copies a local archive as it is, ADD of a URL does not
// extract it (to a directory, or to a new name), ADD --unpack=true of a URL
// does, into the destination. The flag is in the step's key.
func TestBuild_addUnpack(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte(tarOf(t, "foo", "content0"))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"t-tar-gz"`)
		w.Write(gz.Bytes())
	}))
	t.Cleanup(srv.Close)
	f := newFixture(t, map[string]string{"t.tar.gz": gz.String()})

	for _, tc := range []struct {
		name, df string
		files    map[string]string // path → content, "" for absent
	}{
		{"unpack=false", "FROM scratch\nADD --unpack=false t.tar.gz /\n", map[string]string{"t.tar.gz": gz.String(), "foo": ""}},
		{"local archive", "FROM scratch\nADD t.tar.gz /\n", map[string]string{"foo": "content0", "t.tar.gz": ""}},
		{"URL", "FROM scratch\nADD " + srv.URL + "/t.tar.gz /\n", map[string]string{"t.tar.gz": gz.String(), "foo": ""}},
		{"URL with unpack=true", "FROM scratch\nADD --unpack=true " + srv.URL + "/t.tar.gz /dest/\n", map[string]string{"dest/foo": "content0", "dest/t.tar.gz": ""}},
		{"URL to a new name", "FROM scratch\nADD " + srv.URL + "/t.tar.gz /newname.tar.gz\n", map[string]string{"newname.tar.gz": gz.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := mustBuild(t, f, tc.df, true)
			for p, want := range tc.files {
				got, ok := fileContent(t, img, p)
				switch {
				case want == "" && ok:
					t.Errorf("/%s is in the image", p)
				case want != "" && got != want:
					t.Errorf("/%s = %q (present %v), want %q", p, got, ok, want)
				}
			}
		})
	}
	// Cached by the flag: the same ADD without it is another step.
	_, rep := mustBuild(t, f, "FROM scratch\nADD --unpack=false t.tar.gz /\n", true)
	if diff := cmp.Diff(counts{1, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("ADD --unpack=false again (-want +got):\n%s", diff)
	}
	_, rep = mustBuild(t, f, "FROM scratch\nADD --unpack=true t.tar.gz /\n", true)
	if diff := cmp.Diff(counts{0, 1}, cacheCounts(rep)); diff != "" {
		t.Errorf("ADD --unpack=true, a step not built before (-want +got):\n%s", diff)
	}
}

// TestBuild_addChecksumRules checks BuildKit's --checksum rules
// (dispatchCopy; testAddChecksum's NonHTTPSource case): one source only,
// git repositories included, and only an http(s) URL or a git repository.
func TestBuild_addChecksumRules(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	const sum = "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"
	for _, tc := range []struct{ df, want string }{
		{"ADD --checksum=" + sum + " a.txt /a\n", "checksum requires HTTP(S) or Git sources"},
		{"ADD --checksum=" + sum + " http://127.0.0.1:1/a http://127.0.0.1:1/b /d/\n", "checksum can't be specified for multiple sources"},
		{"ADD --checksum=0123abcd https://127.0.0.1:1/a.git https://127.0.0.1:1/b.git /d/\n", "checksum can't be specified for multiple sources"},
	} {
		_, _, err := f.build(t, "FROM {{BASE}}\n"+tc.df, false)
		var be *build.Error
		if !errors.As(err, &be) || be.Line != 2 || be.Reason != result.ReasonDockerfileInvalid || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want DockerfileInvalid on line 2 containing %q", strings.TrimSpace(tc.df), err, tc.want)
		}
	}
}

// TestBuild_copyLink checks that COPY --link and ADD --link, which this
// executor builds as without the flag, give the files the same steps give
// without it, a named --chown resolved in the image (BuildKit's merge fails
// it), and a destination through a symlink of the base followed.
func TestBuild_copyLink(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n", "dir/b.txt": "b\n", "t.tar": tarOf(t, "inner", "x\n")})
	const df = `FROM {{BASE}}
RUN mkdir /real && ln -s /real /lnk
COPY --link a.txt /lnk/
COPY --link --chown=app:app dir /d/
ADD --link t.tar /x/
`
	linked, _ := mustBuild(t, f, df, false)
	plain, _ := mustBuild(t, f, strings.ReplaceAll(df, "--link ", ""), false)
	got, want := flatten(t, linked), flatten(t, plain)
	for _, tree := range []map[string]fileEntry{got, want} {
		for p, e := range tree {
			// Directories the steps made, and the symlink RUN made, have the build's times:
			// the two builds may run a second apart (as on a busy machine).
			if e.Type == '5' || e.Type == '2' {
				e.ModTime = 0
				tree[p] = e
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files with --link (-without +with):\n%s", diff)
	}
	if e := got["real/a.txt"]; e.Type != '0' {
		t.Errorf("/real/a.txt is missing: COPY --link to /lnk/ did not follow the base's symlink")
	}
	if e := got["d/b.txt"]; e.UID != 1000 || e.GID != 1000 {
		t.Errorf("/d/b.txt owned by %d:%d, want app's 1000:1000", e.UID, e.GID)
	}
}
