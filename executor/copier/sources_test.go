package copier

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/patternmatcher"
	"golang.org/x/sys/unix"
)

// sourcesTree is the context the Sources tests read.
var sourcesTree = tree{
	"a.txt":            "f:644:A",
	"b.txt":            "f:755:B",
	"suid":             "f:4755:S",
	"dir":              "d:750",
	"dir/x":            "f:600:X",
	"dir/sub":          "d:755",
	"dir/sub/y":        "f:644:Y",
	"dir/link":         "l:x",
	"dir/hl":           "h:a.txt",
	"link-to-a":        "l:a.txt",
	"link-to-dir":      "l:/dir",
	"dangling":         "l:nowhere",
	"escape":           "l:../../../etc",
	"ign":              "d:755",
	"ign/keep":         "f:644:K",
	"ign/drop":         "f:644:D",
	"ign/deep":         "d:755",
	"ign/deep/keep.md": "f:644:M",
	"ign/deep/x.log":   "f:644:L",
	"secret":           "f:644:S",
	"debug.log":        "f:644:LOG",
	"hl1":              "f:644:H",
	"hl2":              "h:hl1",
	"onlyignored":      "d:755",
	"onlyignored/z":    "f:644:Z",
}

// dockerignore is the .dockerignore the Sources tests apply, with
// exceptions.
var dockerignore = []string{"secret", "*.log", "**/*.log", "ign", "!ign/keep", "!ign/deep/*.md", "onlyignored"}

func ignoreFunc(t testing.TB, patterns []string) func(string) (bool, error) {
	t.Helper()
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return pm.MatchesOrParentMatches
}

func TestSources_matchesCopy(t *testing.T) {
	u1000 := &Owner{UID: 1000, GID: 1000}
	chmod := fs.FileMode(0o640)
	tests := []struct {
		name    string
		req     Request
		extra   func(t *testing.T, root string) // adds what the tree builder cannot
		wantErr string
	}{
		{name: "one file", req: Request{Sources: []string{"a.txt"}, Dest: "/new"}},
		{name: "several files", req: Request{Sources: []string{"b.txt", "a.txt", "suid"}, Dest: "/d/"}},
		{name: "directory", req: Request{Sources: []string{"dir"}, Dest: "/out/"}},
		{name: "whole context with ignore exceptions", req: Request{Sources: []string{"."}, Dest: "/all/"}},
		{name: "ignored directory searched for exceptions", req: Request{Sources: []string{"ign"}, Dest: "/i/"}},
		{name: "wildcard", req: Request{Sources: []string{"*.txt"}, Dest: "/w/"}},
		{name: "wildcard in a directory", req: Request{Sources: []string{"dir/*"}, Dest: "/w/"}},
		{name: "wildcard skips ignored", req: Request{Sources: []string{"*"}, Dest: "/w/"}},
		{name: "wildcard matching nothing beside a match", req: Request{Sources: []string{"a.txt", "*.nope"}, Dest: "/w/"}},
		{name: "top-level symlink followed", req: Request{Sources: []string{"link-to-a"}, Dest: "/t/"}},
		{name: "top-level symlink to a directory", req: Request{Sources: []string{"link-to-dir"}, Dest: "/t/"}},
		{name: "hardlinks in one step", req: Request{Sources: []string{"hl1", "hl2", "dir"}, Dest: "/h/"}},
		{name: "same file twice", req: Request{Sources: []string{"a.txt", "dir/../a.txt"}, Dest: "/h/"}},
		{name: "keep owner", req: Request{Sources: []string{"dir", "suid"}, Dest: "/k/", KeepOwner: true}},
		{name: "chown wins over keep owner", req: Request{Sources: []string{"dir"}, Dest: "/k/", KeepOwner: true, Chown: u1000}},
		{name: "chmod does not change what is read", req: Request{Sources: []string{"dir"}, Dest: "/m/", Chmod: &chmod}},
		{name: "ADD of a local archive", req: Request{Sources: []string{"arch.tar"}, Dest: "/x/", Add: true},
			extra: func(t *testing.T, root string) {
				if err := os.WriteFile(filepath.Join(root, "arch.tar"), tarball(t, false, &tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}), 0o644); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "fifo", req: Request{Sources: []string{"fifo"}, Dest: "/p"},
			extra: func(t *testing.T, root string) {
				if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o640); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "socket refused", req: Request{Sources: []string{"sockdir"}, Dest: "/s/"},
			extra: func(t *testing.T, root string) {
				os.Mkdir(filepath.Join(root, "sockdir"), 0o755)
				l, err := net.Listen("unix", filepath.Join(root, "sockdir", "sock"))
				if err != nil {
					t.Skipf("cannot make a socket: %v", err)
				}
				t.Cleanup(func() { l.Close() })
			},
			wantErr: "unsupported file type"},
		{name: "missing source", req: Request{Sources: []string{"missing"}, Dest: "/w/"}, wantErr: "not found"},
		{name: "missing beside a match", req: Request{Sources: []string{"a.txt", "missing"}, Dest: "/w/"}, wantErr: "not found"},
		{name: "ignored source", req: Request{Sources: []string{"secret"}, Dest: "/w/"}, wantErr: "not found"},
		{name: "entirely ignored directory", req: Request{Sources: []string{"onlyignored"}, Dest: "/w/"}, wantErr: "not found"},
		{name: "dangling symlink", req: Request{Sources: []string{"dangling"}, Dest: "/w/"}, wantErr: "not found"},
		{name: "symlink escaping", req: Request{Sources: []string{"escape"}, Dest: "/w/"}, wantErr: "not found"},
		{name: "wildcard matching nothing", req: Request{Sources: []string{"*.nope"}, Dest: "/w/"}},
		{name: "wildcard in a missing directory", req: Request{Sources: []string{"nodir/*.txt"}, Dest: "/w/"}, wantErr: `"/nodir": not found`},
		{name: "wildcard in an ignored directory", req: Request{Sources: []string{"onlyignored/*"}, Dest: "/w/"}, wantErr: `"/onlyignored": not found`},
		{name: "no sources", req: Request{Dest: "/w/"}, wantErr: "no source files were specified"},
		{name: "url for COPY", req: Request{Sources: []string{"https://user:pw@127.0.0.1/x"}, Dest: "/w/"}, wantErr: "source can't be a URL for COPY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srcRoot, destRoot := t.TempDir(), t.TempDir()
			build(t, srcRoot, sourcesTree)
			// A file read in several pieces, with the setgid and sticky
			// bits and an extended attribute (where the file system keeps
			// them): what the digesting walk reads through one descriptor.
			big := filepath.Join(srcRoot, "dir", "big")
			if err := os.WriteFile(big, bytes.Repeat([]byte("0123456789abcdef"), 6000), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(big, 0o755|os.ModeSetgid|os.ModeSticky); err != nil {
				t.Fatal(err)
			}
			unix.Setxattr(big, "user.slipway.test", []byte("v"), 0)
			if tc.extra != nil {
				tc.extra(t, srcRoot)
			}
			r := tc.req
			r.SrcRoot, r.DestRoot, r.WorkDir = srcRoot, destRoot, "/"
			r.Ignore = ignoreFunc(t, dockerignore)
			r.RecordSources = true

			got, err := Sources(t.Context(), r)
			res, copyErr := Copy(t.Context(), r)
			if err == nil {
				// One walk for both gives what the two walks give.
				w, werr := Walk(t.Context(), r)
				if werr != nil {
					t.Fatalf("Walk(): %v", werr)
				}
				wgot, werr := w.Sources(t.Context())
				if diff := cmp.Diff(got, wgot); werr != nil || diff != "" {
					t.Errorf("Walked.Sources() = %v (-Sources +Walked.Sources):\n%s", werr, diff)
				}
				r2 := r
				r2.DestRoot = t.TempDir()
				wres, werr := w.Copy(t.Context(), r2)
				if copyErr == nil && (werr != nil || !cmp.Equal(res, wres)) {
					t.Errorf("Walked.Copy() = %v, %v; want Copy's %v", wres, werr, res)
				}
				// The walk that digests as it goes gives the same again.
				ws, wsgot, werr := WalkSources(t.Context(), r)
				if diff := cmp.Diff(got, wsgot); werr != nil || diff != "" {
					t.Errorf("WalkSources() = %v (-Sources +WalkSources):\n%s", werr, diff)
				}
				if werr == nil {
					r3 := r
					r3.DestRoot = t.TempDir()
					wres, werr := ws.Copy(t.Context(), r3)
					if copyErr == nil && (werr != nil || !cmp.Equal(res, wres)) {
						t.Errorf("Copy() of WalkSources' walk = %v, %v; want Copy's %v", wres, werr, res)
					}
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Sources() error = %v, want one containing %q", err, tc.wantErr)
				}
				if copyErr == nil || copyErr.Error() != err.Error() {
					t.Fatalf("Sources() error = %q, Copy() error = %v: want the same", err, copyErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sources(): %v", err)
			}
			if copyErr != nil {
				t.Fatalf("Copy(): %v", copyErr)
			}
			if diff := cmp.Diff(res.Sources, got); diff != "" {
				t.Errorf("Sources() differs from Copy's Result.Sources (-copy +sources):\n%s", diff)
			}
			if !slices.IsSortedFunc(got, func(a, b SourceFile) int { return strings.Compare(a.Path, b.Path) }) {
				t.Errorf("Sources() not sorted by path: %v", got)
			}
			if strings.Contains(strings.ReplaceAll(fmt.Sprint(got), "debug.log", ""), ".log") {
				t.Errorf("Sources() read an ignored file: %v", got)
			}
		})
	}
}

func TestSources(t *testing.T) {
	const (
		sumA = "sha256:559aead08264d5795d3909718cdd05abd49572e84fe55590eef31a88a08fdffd" // sha256("A")
		sumX = "sha256:4b68ab3847feda7d6c62c1fbcbeebfa35eab7351ed5e78f4ddadea5df64b8015" // sha256("X")
	)
	tests := []struct {
		name string
		req  Request
		want []SourceFile
	}{
		{name: "file keeps setuid, not owner", req: Request{Sources: []string{"suid"}},
			want: []SourceFile{{Path: "suid", Mode: fs.ModeSetuid | 0o755, Digest: digestOf("S")}}},
		{name: "top-level symlink recorded where it leads", req: Request{Sources: []string{"link-to-a"}},
			want: []SourceFile{{Path: "a.txt", Mode: 0o644, Digest: sumA}}},
		{name: "directory contents with link targets and owners", req: Request{Sources: []string{"dir"}, KeepOwner: true},
			want: []SourceFile{
				{Path: "dir/hl", Mode: 0o644, UID: 1000, GID: 1000, Digest: sumA},
				{Path: "dir/link", Mode: fs.ModeSymlink | 0o777, UID: 1000, GID: 1000, Link: "x"},
				{Path: "dir/sub", Mode: fs.ModeDir | 0o755, UID: 1000, GID: 1000},
				{Path: "dir/sub/y", Mode: 0o644, UID: 1000, GID: 1000, Digest: digestOf("Y")},
				{Path: "dir/x", Mode: 0o600, UID: 1000, GID: 1000, Digest: sumX},
			}},
		{name: "hard link to an earlier file of the step", req: Request{Sources: []string{"a.txt", "dir/hl"}},
			want: []SourceFile{
				{Path: "a.txt", Mode: 0o644, Digest: sumA},
				{Path: "dir/hl", Mode: 0o644, HardLink: "a.txt", Digest: sumA},
			}},
		{name: "ignored directory only as parent of exceptions", req: Request{Sources: []string{"ign"}},
			want: []SourceFile{
				{Path: "ign/deep", Mode: fs.ModeDir | 0o755},
				{Path: "ign/deep/keep.md", Mode: 0o644, Digest: digestOf("M")},
				{Path: "ign/keep", Mode: 0o644, Digest: digestOf("K")},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			build(t, root, sourcesTree)
			r := tc.req
			r.SrcRoot, r.Ignore = root, ignoreFunc(t, dockerignore)
			got, err := Sources(t.Context(), r)
			if err != nil {
				t.Fatalf("Sources(): %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Sources() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSources_url(t *testing.T) {
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			gets.Add(1)
		}
		h := w.Header()
		switch r.URL.Path {
		case "/etag":
			h.Set("ETag", `"v1"`)
			h.Set("Last-Modified", "Mon, 06 May 2019 07:08:09 GMT")
		case "/weak":
			h.Set("ETag", `W/"v1"`)
			h.Set("Last-Modified", "Mon, 06 May 2019 07:08:09 GMT")
			h.Set("Content-Length", "42")
		case "/weak-only":
			h.Set("ETag", `W/"v1"`)
		case "/modified":
			h.Set("Last-Modified", "Mon, 06 May 2019 07:08:09 GMT")
			h.Set("Content-Length", "42")
		case "/modified-no-length":
			h.Set("Last-Modified", "Mon, 06 May 2019 07:08:09 GMT")
		case "/refused":
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	tests := []struct {
		name string
		path string
		want string
	}{
		{name: "strong etag", path: "/etag", want: `url:"v1"`},
		{name: "weak etag falls back to last-modified", path: "/weak", want: "url:Mon, 06 May 2019 07:08:09 GMT+42"},
		{name: "weak etag alone", path: "/weak-only", want: ""},
		{name: "last-modified and length", path: "/modified", want: "url:Mon, 06 May 2019 07:08:09 GMT+42"},
		{name: "last-modified without length", path: "/modified-no-length", want: ""},
		{name: "no validators", path: "/none", want: ""},
		{name: "HEAD refused", path: "/refused", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := srv.URL + tc.path
			got, err := Sources(t.Context(), Request{Sources: []string{u}, Add: true, SrcRoot: t.TempDir(), HTTPClient: srv.Client()})
			if err != nil {
				t.Fatalf("Sources(): %v", err)
			}
			want := []SourceFile{{Path: u, Mode: 0o600, Digest: tc.want}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Sources() mismatch (-want +got):\n%s", diff)
			}
		})
	}
	if n := gets.Load(); n != 0 {
		t.Errorf("Sources() sent %d GET requests, want none", n)
	}
}

func TestSources_url_unreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/x"
	srv.Close()
	_, err := Sources(t.Context(), Request{Sources: []string{u}, Add: true})
	if err == nil {
		t.Fatal("Sources() of an unreachable URL succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Sources() error leaks the URL's password: %v", err)
	}
}

func TestSources_writesNothing(t *testing.T) {
	srcRoot, destRoot := t.TempDir(), t.TempDir()
	build(t, srcRoot, sourcesTree)
	if _, err := Sources(t.Context(), Request{SrcRoot: srcRoot, DestRoot: destRoot, Sources: []string{"."}, Dest: "/out/"}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(destRoot)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("Sources() wrote into DestRoot: %v", entries)
	}
}

func TestKeyOf(t *testing.T) {
	base := []SourceFile{
		{Path: "a", Mode: 0o644, Digest: digestOf("A")},
		{Path: "d", Mode: fs.ModeDir | 0o755},
		{Path: "l", Mode: fs.ModeSymlink | 0o777, Link: "a"},
	}
	with := func(i int, f func(*SourceFile)) []SourceFile {
		out := slices.Clone(base)
		f(&out[i])
		return out
	}
	tests := []struct {
		name  string
		other []SourceFile
		same  bool
	}{
		{name: "same list", other: slices.Clone(base), same: true},
		{name: "order does not matter", other: []SourceFile{base[2], base[0], base[1]}, same: true},
		{name: "empty xattrs equal nil", other: with(0, func(f *SourceFile) { f.Xattrs = map[string][]byte{} }), same: true},
		{name: "content", other: with(0, func(f *SourceFile) { f.Digest = digestOf("B") })},
		{name: "permission", other: with(0, func(f *SourceFile) { f.Mode = 0o755 })},
		{name: "setuid", other: with(0, func(f *SourceFile) { f.Mode |= fs.ModeSetuid })},
		{name: "type", other: with(1, func(f *SourceFile) { f.Mode = 0o755 })},
		{name: "path", other: with(0, func(f *SourceFile) { f.Path = "b" })},
		{name: "uid", other: with(0, func(f *SourceFile) { f.UID = 1 })},
		{name: "gid", other: with(0, func(f *SourceFile) { f.GID = 1 })},
		{name: "symlink target", other: with(2, func(f *SourceFile) { f.Link = "d" })},
		{name: "hard link", other: with(2, func(f *SourceFile) { f.HardLink = "a" })},
		{name: "device number", other: with(1, func(f *SourceFile) { f.Rdev = 1 })},
		{name: "xattr", other: with(0, func(f *SourceFile) { f.Xattrs = map[string][]byte{"security.capability": {1}} })},
		{name: "field boundary", other: with(2, func(f *SourceFile) { f.Path, f.Link = "la", "" })},
		{name: "an entry read twice", other: append(slices.Clone(base), base[0])},
		{name: "missing entry", other: base[:2]},
	}
	key := KeyOf(base)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := KeyOf(tc.other)
			if (got == key) != tc.same {
				t.Errorf("KeyOf() equal = %v, want %v (%s vs %s)", got == key, tc.same, got, key)
			}
		})
	}

	// An ADD URL's user info is not keyed (a key must not be a hash of a password); the
	// rest of the URL is.
	url := []SourceFile{{Path: "https://example.com/x", Mode: 0o600, Digest: `url:"v1"`}}
	key = KeyOf(url)
	for _, tc := range []struct {
		name, path string
		same       bool
	}{
		{name: "password", path: "https://user:s3cr3t@example.com/x", same: true},
		{name: "token as user", path: "https://s3cr3t@example.com/x", same: true},
		{name: "other path", path: "https://user:s3cr3t@example.com/y"},
		{name: "other host", path: "https://example.org/x"},
	} {
		t.Run("URL "+tc.name, func(t *testing.T) {
			got := KeyOf([]SourceFile{{Path: tc.path, Mode: 0o600, Digest: `url:"v1"`}})
			if (got == key) != tc.same {
				t.Errorf("KeyOf() equal = %v, want %v (%s vs %s)", got == key, tc.same, got, key)
			}
		})
	}
}

// TestKeyOf_stable pins the encoding: keys are shared through the
// registry by every machine and every version of the executor, so a change
// here must come with a new keyVersion.
func TestKeyOf_stable(t *testing.T) {
	tests := []struct {
		name  string
		files []SourceFile
		want  string
	}{
		{name: "empty", files: nil, want: "23c64bb35e0a3d95e58c3b34878360fac0d970fe9f8e0009817c5355244254e5"},
		{name: "one of each", files: []SourceFile{
			{Path: "bin/ping", Mode: fs.ModeSetuid | 0o755, UID: 0, GID: 0, Xattrs: map[string][]byte{"security.capability": {1, 0, 0, 2}}, Digest: digestOf("ping")},
			{Path: "etc", Mode: fs.ModeDir | 0o755},
			{Path: "etc/l", Mode: fs.ModeSymlink | 0o777, Link: "../bin/ping"},
			{Path: "https://example.com/x", Mode: 0o600, Digest: `url:"v1"`},
		}, want: "0d2801faee6fe139b966f5fc21840ba125e7a52fc40435864ce7c589df085821"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := KeyOf(tc.files); got != tc.want {
				t.Errorf("KeyOf() = %s, want %s", got, tc.want)
			}
		})
	}
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// BenchmarkSources enumerates and digests 20,000 small files in 100
// directories, with a .dockerignore.
func BenchmarkSources(b *testing.B) {
	root := b.TempDir()
	for d := range 100 {
		dir := filepath.Join(root, fmt.Sprintf("pkg%03d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 200 {
			body := fmt.Sprintf("package pkg%03d // file %d\n%s", d, f, strings.Repeat("x", 200+f))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.go", f)), []byte(body), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	r := Request{SrcRoot: root, Sources: []string{"."}, Ignore: ignoreFunc(b, []string{"*.log", "!keep.log"})}
	b.ResetTimer()
	for b.Loop() {
		files, err := Sources(b.Context(), r)
		if err != nil {
			b.Fatal(err)
		}
		if len(files) != 20100 {
			b.Fatalf("Sources() listed %d entries, want 20100", len(files))
		}
	}
	b.ReportMetric(20100*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// TestDigestFile checks that a file is hashed whole whatever size the walk
// saw: the same, smaller (it grew since), larger (it shrank since), or
// larger than the read buffer.
func TestDigestFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 100, 32 << 10, 100000} {
		data := bytes.Repeat([]byte("x"), n)
		p := filepath.Join(dir, fmt.Sprint(n))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
		for _, seen := range []int64{int64(n), int64(n) / 2, int64(n) + 7} {
			got, err := digestFile(p, seen, make([]byte, 32<<10))
			if err != nil || got != want {
				t.Errorf("%d bytes seen as %d: %s, %v; want %s", n, seen, got, err, want)
			}
		}
	}
}

// The walk that digests reads only what the step reads: files that
// .dockerignore excludes stay unread. Seen through access times, on a
// tmpfs mounted with strictatime so that every read updates them.
func TestWalkSources_ignoredUnread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_STRICTATIME, "mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	files := map[string]bool{"kept.txt": true, "secret.key": false, "sub/kept.txt": true, "sub/cache.bin": false}
	for name := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("content of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
	}
	r := Request{SrcRoot: dir, Sources: []string{"."}, Dest: "/app/", WorkDir: "/",
		Ignore: ignoreFunc(t, []string{"*.key", "sub/*.bin"})}
	_, got, err := WalkSources(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range got {
		paths = append(paths, f.Path)
	}
	if diff := cmp.Diff([]string{"kept.txt", "sub", "sub/kept.txt"}, paths); diff != "" {
		t.Errorf("WalkSources() paths (-want +got):\n%s", diff)
	}
	for name, read := range files {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		if wasRead := time.Unix(st.Atim.Unix()).After(past); wasRead != read {
			t.Errorf("%s: read = %v, want %v", name, wasRead, read)
		}
	}
}

// TestUnixMode pins how keys spell modes: a type letter and four octal
// digits, special bits included.
func TestUnixMode(t *testing.T) {
	for _, tc := range []struct {
		mode fs.FileMode
		want string
	}{
		{0o644, "-0644"},
		{fs.ModeSetuid | fs.ModeSetgid | 0o755, "-6755"},
		{fs.ModeDir | fs.ModeSticky | 0o777, "d1777"},
		{fs.ModeSymlink | 0o777, "l0777"},
		{fs.ModeDevice | fs.ModeCharDevice | 0o620, "c0620"},
		{fs.ModeDevice | 0o660, "b0660"},
		{fs.ModeNamedPipe | 0o600, "p0600"},
		{fs.ModeSocket | 0o755, "s0755"},
		{fs.ModeIrregular, "?0000"},
	} {
		if got := unixMode(tc.mode); got != tc.want {
			t.Errorf("unixMode(%v) = %q, want %q", tc.mode, got, tc.want)
		}
	}
}

// TestCopy_exclude checks --exclude as BuildKit's file op applies it
// (fsutil copy's copier.copy): below each source, after wildcard
// expansion, after .dockerignore, never to a source itself; Sources lists
// exactly what Copy copies, so what is excluded stays out of cache keys.
func TestCopy_exclude(t *testing.T) {
	tests := []struct {
		name    string
		sources []string
		exclude []string
		want    []string // Result.Sources paths
		wantErr string
	}{
		{name: "relative to the source directory", sources: []string{"dir"}, exclude: []string{"x"},
			want: []string{"dir/hl", "dir/link", "dir/sub", "dir/sub/y"}},
		{name: "the source's own name matches nothing below it", sources: []string{"dir"}, exclude: []string{"dir", "dir/*"},
			want: []string{"dir/hl", "dir/link", "dir/sub", "dir/sub/y", "dir/x"}},
		{name: "a file source is never excluded", sources: []string{"a.txt"}, exclude: []string{"*"},
			want: []string{"a.txt"}},
		{name: "an excluded directory with what is in it", sources: []string{"dir"}, exclude: []string{"sub"},
			want: []string{"dir/hl", "dir/link", "dir/x"}},
		{name: "an exception takes an entry back, with its parent", sources: []string{"dir"}, exclude: []string{"*", "!sub/y"},
			want: []string{"dir/sub", "dir/sub/y"}},
		{name: "wildcard whose every file is excluded", sources: []string{"di*"}, exclude: []string{"*"},
			want: nil},
		{name: "after .dockerignore", sources: []string{"ign"}, exclude: []string{"keep"},
			want: []string{"ign/deep", "ign/deep/keep.md"}},
		{name: "an ignored directory kept for an exception stays when that is excluded", sources: []string{"ign"}, exclude: []string{"keep", "deep/*.md"},
			want: []string{"ign/deep"}},
		{name: "the whole context", sources: []string{"."}, exclude: []string{"*.txt", "dir/sub", "ign", "hl*", "link*", "suid", "dangling", "escape"},
			want: []string{"dir", "dir/hl", "dir/link", "dir/x"}},
		{name: "a pattern that does not parse", sources: []string{"dir"}, exclude: []string{"[z-a"}, wantErr: "--exclude"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srcRoot, destRoot := t.TempDir(), t.TempDir()
			build(t, srcRoot, sourcesTree)
			r := Request{SrcRoot: srcRoot, DestRoot: destRoot, WorkDir: "/", Dest: "/out/", Sources: tc.sources,
				Ignore: ignoreFunc(t, dockerignore), Exclude: tc.exclude, RecordSources: true}
			got, err := Sources(t.Context(), r)
			res, copyErr := Copy(t.Context(), r)
			if tc.wantErr != "" {
				if err == nil || copyErr == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Sources() error %v, Copy() error %v; want errors containing %q", err, copyErr, tc.wantErr)
				}
				return
			}
			if err != nil || copyErr != nil {
				t.Fatalf("Sources() error %v, Copy() error %v", err, copyErr)
			}
			var paths []string
			for _, f := range got {
				paths = append(paths, f.Path)
			}
			if diff := cmp.Diff(tc.want, paths); diff != "" {
				t.Errorf("Sources() paths (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(res.Sources, got); diff != "" {
				t.Errorf("Sources() differs from Copy's Result.Sources (-copy +sources):\n%s", diff)
			}
			if fi, err := os.Stat(filepath.Join(destRoot, "out")); err != nil || !fi.IsDir() {
				t.Errorf("the destination /out/ was not made: %v", err)
			}
		})
	}
}
