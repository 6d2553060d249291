package build_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/gitserver"
)

// epochContextTime is the modification time of the context's a.txt in
// these tests: later than every epoch they set, so a COPY of it shows
// whether the build clamped file times to an epoch.
var epochContextTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// buildEpoch builds dockerfile from scratch with a context holding a.txt,
// with o's SOURCE_DATE_EPOCH inputs (BuildArgs, ContextTime,
// SourceDateEpoch, HTTPClient, GitAuth).
func buildEpoch(t *testing.T, dockerfile string, o build.Options) (v1.Image, string, error) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(p, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, epochContextTime, epochContextTime); err != nil {
		t.Fatal(err)
	}
	bc, err := source.Open(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	o.Dockerfile, o.DockerfilePath, o.Context = []byte(dockerfile), "Dockerfile", bc
	o.Isolation, o.WorkDir, o.Log = build.Chroot, t.TempDir(), &syncBuilder{b: &log}
	img, _, err := build.Build(t.Context(), o)
	return img, log.String(), err
}

// epochOf is what an image says of its epoch: its creation time, the
// mtime of a.txt (copied to /a.txt) and its label "epoch" (what ARG
// SOURCE_DATE_EPOCH reads in the stage).
func epochOf(t *testing.T, img v1.Image) (created time.Time, mtime int64, label string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.Created.Time, flatten(t, img)["a.txt"].ModTime, cf.Config.Labels["epoch"]
}

func unix(n int64) *time.Time {
	t := time.Unix(n, 0).UTC()
	return &t
}

// The SOURCE_DATE_EPOCH build arg, else the Dockerfile's global ARG
// default, dates the build as BuildKit's frontend does (dockerfile2llb
// toDispatchState / epoch.go resolveSourceDateEpochValue; BuildKit's
// testSourceDateEpochDockerfileDefault, ...DefaultOverride,
// ...ContextLocalUnset, ...ContextGit): the image's creation time, file
// times clamped to it, and the number itself for ARG SOURCE_DATE_EPOCH in
// a stage. A value that gives no time (empty, "context" with a local
// context) leaves the build undated, or dated by the caller's default
// (executor --reproducible).
func TestBuild_sourceDateEpoch(t *testing.T) {
	const stage = "FROM scratch\nARG SOURCE_DATE_EPOCH\nLABEL epoch=$SOURCE_DATE_EPOCH\nCOPY a.txt /\n"
	for _, tc := range []struct {
		name       string
		dockerfile string
		args       map[string]string
		ctxTime    *time.Time
		def        *time.Time
		want       *time.Time // nil: undated
		wantLabel  string
	}{
		{name: "build arg", dockerfile: stage, args: map[string]string{"SOURCE_DATE_EPOCH": "1700000001"}, want: unix(1700000001), wantLabel: "1700000001"},
		{name: "global ARG default", dockerfile: "ARG SOURCE_DATE_EPOCH=1445412480\n" + stage, want: unix(1445412480), wantLabel: "1445412480"},
		{name: "global ARG default from another ARG", dockerfile: "ARG T=1445412480\nARG SOURCE_DATE_EPOCH=$T\n" + stage, want: unix(1445412480), wantLabel: "1445412480"},
		{name: "build arg wins over the default", dockerfile: "ARG SOURCE_DATE_EPOCH=1700000001\n" + stage, args: map[string]string{"SOURCE_DATE_EPOCH": "1700000002"}, want: unix(1700000002), wantLabel: "1700000002"},
		{name: "empty build arg unsets the default", dockerfile: "ARG SOURCE_DATE_EPOCH=1700000001\n" + stage, args: map[string]string{"SOURCE_DATE_EPOCH": ""}},
		{name: "empty default", dockerfile: "ARG SOURCE_DATE_EPOCH=\n" + stage},
		{name: "context, git", dockerfile: stage, args: map[string]string{"SOURCE_DATE_EPOCH": "context"}, ctxTime: unix(1700000101), want: unix(1700000101), wantLabel: "1700000101"},
		{name: "context default, git", dockerfile: "ARG SOURCE_DATE_EPOCH=context\n" + stage, ctxTime: unix(1700000101), want: unix(1700000101), wantLabel: "1700000101"},
		{name: "context, local", dockerfile: stage, args: map[string]string{"SOURCE_DATE_EPOCH": "context"}},
		{name: "context, local, reproducible", dockerfile: stage, args: map[string]string{"SOURCE_DATE_EPOCH": "context"}, def: unix(0), want: unix(0)},
		{name: "negative seconds", dockerfile: stage, args: map[string]string{"SOURCE_DATE_EPOCH": "-1"}, want: unix(-1), wantLabel: "-1"},
		{name: "reproducible alone", dockerfile: stage, def: unix(0), want: unix(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 {
				t.Skip("chroot builds need root")
			}
			callerArgs := maps.Clone(tc.args)
			img, log, err := buildEpoch(t, tc.dockerfile, build.Options{BuildArgs: tc.args, ContextTime: tc.ctxTime, SourceDateEpoch: tc.def})
			if err != nil {
				t.Fatalf("Build: %v\n%s", err, log)
			}
			created, mtime, label := epochOf(t, img)
			if tc.want == nil {
				if mtime != epochContextTime.Unix() {
					t.Errorf("a.txt modified %d, want its own time %d (no epoch)", mtime, epochContextTime.Unix())
				}
				if created.Year() < 2025 {
					t.Errorf("created %v, want the build's time (no epoch)", created)
				}
			} else {
				if !created.Equal(*tc.want) {
					t.Errorf("created %v, want %v", created, *tc.want)
				}
				if mtime != tc.want.Unix() {
					t.Errorf("a.txt modified %d, want it clamped to %d", mtime, tc.want.Unix())
				}
			}
			if label != tc.wantLabel {
				t.Errorf("ARG SOURCE_DATE_EPOCH in the stage is %q, want %q", label, tc.wantLabel)
			}
			if !maps.Equal(callerArgs, tc.args) {
				t.Errorf("the caller's build args became %q, want them as they were, %q", tc.args, callerArgs)
			}
		})
	}
}

// A value that is neither seconds, "context" nor a stage's name fails the
// build with BuildKit's words (resolveSourceDateEpochState,
// testSourceDateEpochDockerfileDefaultInvalid): at the global ARG's line
// when the Dockerfile gave it, as an invalid argument when --build-arg did.
func TestBuild_sourceDateEpochInvalid(t *testing.T) {
	for _, tc := range []struct {
		name       string
		dockerfile string
		args       map[string]string
		reason     result.Reason
		line       int
	}{
		{name: "default", dockerfile: "# syntax\nARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\nCOPY a.txt /\n", reason: result.ReasonDockerfileInvalid, line: 2},
		{name: "build arg", dockerfile: "FROM scratch\nCOPY a.txt /\n", args: map[string]string{"SOURCE_DATE_EPOCH": "not-a-timestamp"}, reason: result.ReasonInvalidArguments},
		{name: "build arg over a valid default", dockerfile: "ARG SOURCE_DATE_EPOCH=1\nFROM scratch\n", args: map[string]string{"SOURCE_DATE_EPOCH": "not-a-timestamp"}, reason: result.ReasonInvalidArguments},
		{name: "hexadecimal", dockerfile: "ARG SOURCE_DATE_EPOCH=0x10\nFROM scratch\n", reason: result.ReasonDockerfileInvalid, line: 1},
		{name: "a name no stage has", dockerfile: "ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS source\n", reason: result.ReasonDockerfileInvalid, line: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := buildEpoch(t, tc.dockerfile, build.Options{BuildArgs: tc.args})
			var be *build.Error
			if !errors.As(err, &be) {
				t.Fatalf("Build: %v, want a *build.Error", err)
			}
			if be.Reason != tc.reason || be.Line != tc.line || !strings.Contains(err.Error(), "invalid SOURCE_DATE_EPOCH: ") {
				t.Errorf("Build: %v (reason %s, line %d), want reason %s at line %d with \"invalid SOURCE_DATE_EPOCH: \"", err, be.Reason, be.Line, tc.reason, tc.line)
			}
		})
	}
}

// A SOURCE_DATE_EPOCH that names a stage needs it source-only: FROM
// scratch, ARGs, and one ADD of one http(s) URL or git repository
// (BuildKit's sourceDateEpochStageSource, sourceDateEpochAddSource;
// testSourceDateEpochStageInvalid). Anything else fails at the stage's
// FROM line, before anything is built.
func TestBuild_sourceDateEpochStageInvalid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stage string
		want  string
	}{
		{name: "COPY", stage: "FROM scratch AS src\nCOPY a.txt /a.txt\n", want: "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported COPY instruction"},
		{name: "RUN", stage: "FROM scratch AS src\nARG X=1\nRUN true\n", want: "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported RUN instruction"},
		{name: "not scratch", stage: "FROM busybox AS src\nADD http://127.0.0.1:1/a.tar /\n", want: "SOURCE_DATE_EPOCH stage must use FROM scratch"},
		{name: "no ADD", stage: "FROM scratch AS src\nARG X=1\n", want: "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD"},
		{name: "two ADDs", stage: "FROM scratch AS src\nADD http://127.0.0.1:1/a.tar /\nADD http://127.0.0.1:1/b.tar /\n", want: "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD"},
		{name: "two sources", stage: "FROM scratch AS src\nADD http://127.0.0.1:1/a.tar http://127.0.0.1:1/b.tar /\n", want: "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source"},
		{name: "heredoc", stage: "FROM scratch AS src\nADD <<EOF /a\nx\nEOF\n", want: "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source"},
		{name: "local source", stage: "FROM scratch AS src\nADD a.txt /\n", want: "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD"},
		{name: "bad checksum", stage: "FROM scratch AS src\nADD --checksum=md5:x http://127.0.0.1:1/a.tar /\n", want: "ADD --checksum=md5:x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dockerfile := "\nARG SOURCE_DATE_EPOCH=src\n" + tc.stage + "FROM scratch\nCOPY a.txt /\n"
			_, _, err := buildEpoch(t, dockerfile, build.Options{})
			var be *build.Error
			if !errors.As(err, &be) {
				t.Fatalf("Build: %v, want a *build.Error", err)
			}
			if be.Reason != result.ReasonDockerfileInvalid || be.Line != 3 || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v (reason %s, line %d), want a DockerfileInvalid error at line 3 containing %q", err, be.Reason, be.Line, tc.want)
			}
		})
	}
}

// tarArchive is a tar archive of files named by their content, each with
// its modification time, and a directory newer than all of them (which
// does not count: only regular files do).
func tarArchive(t *testing.T, compress bool, files map[string]time.Time) []byte {
	t.Helper()
	var b bytes.Buffer
	w := &b
	var zw *gzip.Writer
	tw := tar.NewWriter(w)
	if compress {
		zw = gzip.NewWriter(w)
		tw = tar.NewWriter(zw)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(1800000000, 0)}); err != nil {
		t.Fatal(err)
	}
	for name, mt := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(name)), ModTime: mt}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// A source-only stage's ADD URL dates the build (BuildKit's
// resolveSourceDateEpochFromState, testSourceDateEpochStageHTTPArchive,
// testSourceDateEpochStageOverride): its Last-Modified time, else the
// newest regular file of the archive it serves (gzip or not), else
// nothing. The stage's ARGs expand the URL, a build arg winning. The
// stage is not built unless the target needs it, and --checksum is
// verified.
func TestBuild_sourceDateEpochStageHTTP(t *testing.T) {
	archive := tarArchive(t, false, map[string]time.Time{"a": time.Unix(1700000401, 0), "b": time.Unix(1700000402, 0)})
	gz := tarArchive(t, true, map[string]time.Time{"a": time.Unix(1700000403, 0)})
	sum := sha256.Sum256(archive)
	var requests []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests = append(requests, r.Method+" "+r.URL.Path)
		switch r.URL.Path {
		case "/last-modified.tar":
			http.ServeContent(w, r, "", time.Unix(1700000201, 0), bytes.NewReader(archive))
		case "/src.tar":
			w.Write(archive)
		case "/src.tar.gz":
			w.Write(gz)
		case "/plain.txt":
			w.Write([]byte("not an archive"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	const final = "FROM scratch\nARG SOURCE_DATE_EPOCH\nLABEL epoch=$SOURCE_DATE_EPOCH\nCOPY a.txt /\n"
	for _, tc := range []struct {
		name  string
		stage string
		args  map[string]string
		want  *time.Time
		reqs  int
	}{
		{name: "Last-Modified", stage: "ADD {{URL}}/last-modified.tar /\n", want: unix(1700000201), reqs: 1},
		{name: "archive", stage: "ADD {{URL}}/src.tar /\n", want: unix(1700000402), reqs: 1},
		{name: "gzip archive", stage: "ADD {{URL}}/src.tar.gz /\n", want: unix(1700000403), reqs: 1},
		{name: "not an archive", stage: "ADD {{URL}}/plain.txt /\n", reqs: 1},
		{name: "stage ARG", stage: "ARG NAME=last-modified.tar\nADD {{URL}}/${NAME} /\n", want: unix(1700000201), reqs: 1},
		{name: "build arg over the stage ARG", stage: "ARG NAME=last-modified.tar\nADD {{URL}}/${NAME} /\n", args: map[string]string{"NAME": "src.tar"}, want: unix(1700000402), reqs: 1},
		{name: "checksum", stage: "ADD --checksum=sha256:" + hex.EncodeToString(sum[:]) + " {{URL}}/last-modified.tar /\n", want: unix(1700000201), reqs: 1},
		{name: "build arg over the stage", stage: "ADD {{URL}}/src.tar /\n", args: map[string]string{"SOURCE_DATE_EPOCH": "1700000502"}, want: unix(1700000502)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 {
				t.Skip("chroot builds need root")
			}
			requests = nil
			dockerfile := "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\n" + strings.ReplaceAll(tc.stage, "{{URL}}", srv.URL) + final
			img, log, err := buildEpoch(t, dockerfile, build.Options{BuildArgs: tc.args})
			if err != nil {
				t.Fatalf("Build: %v\n%s", err, log)
			}
			created, mtime, label := epochOf(t, img)
			if tc.want == nil {
				if mtime != epochContextTime.Unix() || label != "" {
					t.Errorf("a.txt modified %d, label %q: want no epoch\n%s", mtime, label, log)
				}
			} else if want := strconv.FormatInt(tc.want.Unix(), 10); !created.Equal(*tc.want) || mtime != tc.want.Unix() || label != want {
				t.Errorf("created %v, a.txt modified %d, ARG SOURCE_DATE_EPOCH %q; want all %s\n%s", created, mtime, label, want, log)
			}
			if len(requests) != tc.reqs {
				t.Errorf("the server had requests %q, want %d (the stage is not built)", requests, tc.reqs)
			}
		})
	}
}

// A source stage's URL that cannot be read fails the build at the stage,
// and the message shows no credentials of the URL.
func TestBuild_sourceDateEpochStageHTTPErrors(t *testing.T) {
	archive := tarArchive(t, false, map[string]time.Time{"a": time.Unix(1700000401, 0)})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/src.tar" {
			w.Write(archive)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	withCreds := strings.Replace(srv.URL, "http://", "http://user:s3cret-pw@", 1)
	for _, tc := range []struct {
		name, add, want string
	}{
		{name: "not found", add: "ADD " + withCreds + "/missing.tar /", want: "invalid response status 404"},
		{name: "checksum mismatch", add: "ADD --checksum=sha256:" + strings.Repeat("0", 64) + " " + withCreds + "/src.tar /", want: "does not match --checksum"},
		{name: "unreachable", add: "ADD http://user:s3cret-pw@127.0.0.1:1/src.tar /", want: "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dockerfile := "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\n" + tc.add + "\nFROM scratch\nCOPY a.txt /\n"
			_, _, err := buildEpoch(t, dockerfile, build.Options{})
			var be *build.Error
			if !errors.As(err, &be) {
				t.Fatalf("Build: %v, want a *build.Error", err)
			}
			if be.Reason != result.ReasonSourceFetchFailed || be.Line != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v (reason %s, line %d), want SourceFetchFailed at line 2 containing %q", err, be.Reason, be.Line, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") || strings.Contains(be.Instruction, "s3cret-pw") {
				t.Errorf("the error shows the URL's password: %v", err)
			}
		})
	}
}

// A source-only stage's git ADD dates the build with the committer time of
// the commit its ref names (BuildKit resolves the git source's commit
// object); --checksum must match that commit.
func TestBuild_sourceDateEpochStageGit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot builds need root")
	}
	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{"f": "1\n"})
	t.Setenv("GIT_COMMITTER_DATE", "@1700000701 +0000")
	first := gitserver.Commit(t, w, "first")
	gitserver.Git(t, w, "tag", "v1")
	gitserver.WriteFiles(t, w, map[string]string{"f": "2\n"})
	t.Setenv("GIT_COMMITTER_DATE", "@1700000702 +0000")
	gitserver.Commit(t, w, "second")
	root := t.TempDir()
	gitserver.Publish(t, w, root, "repo.git", false)
	srv := gitserver.StartHTTP(t, root)

	const final = "FROM scratch\nARG SOURCE_DATE_EPOCH\nLABEL epoch=$SOURCE_DATE_EPOCH\nCOPY a.txt /\n"
	for _, tc := range []struct {
		name, add string
		want      int64
		wantErr   string
	}{
		{name: "HEAD", add: "ADD " + srv.URL + "/repo.git /src", want: 1700000702},
		{name: "tag", add: "ADD " + srv.URL + "/repo.git#v1 /src", want: 1700000701},
		{name: "checksum", add: "ADD --checksum=" + first[:12] + " " + srv.URL + "/repo.git#v1 /src", want: 1700000701},
		{name: "checksum mismatch", add: "ADD --checksum=" + first[:12] + " " + srv.URL + "/repo.git /src", wantErr: "does not match --checksum=" + first[:12]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dockerfile := "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\n" + tc.add + "\n" + final
			img, log, err := buildEpoch(t, dockerfile, build.Options{})
			if tc.wantErr != "" {
				var be *build.Error
				if !errors.As(err, &be) || be.Reason != result.ReasonSourceFetchFailed || be.Line != 2 || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Build: %v, want a SourceFetchFailed error at line 2 containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v\n%s", err, log)
			}
			created, mtime, label := epochOf(t, img)
			if want := strconv.FormatInt(tc.want, 10); created.Unix() != tc.want || mtime != tc.want || label != want {
				t.Errorf("created %v, a.txt modified %d, ARG SOURCE_DATE_EPOCH %q; want all %s\n%s", created, mtime, label, want, log)
			}
		})
	}
}
