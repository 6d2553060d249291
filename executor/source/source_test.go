package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func writeTar(t *testing.T, p string, gz bool, hdrs ...*tar.Header) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	tw.Close()
	b := buf.Bytes()
	if gz {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(b)
		zw.Close()
		b = z.Bytes()
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFetch(t *testing.T) {
	base := t.TempDir()
	ctxDir := filepath.Join(base, "ctx")
	os.MkdirAll(filepath.Join(ctxDir, "sub/deeper"), 0o755)
	os.Symlink("/sub", filepath.Join(ctxDir, "abslink"))
	writeTar(t, filepath.Join(base, "plain.tar"), false,
		&tar.Header{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "app/Dockerfile", Typeflag: tar.TypeReg, Mode: 0o644})
	writeTar(t, filepath.Join(base, "ctx.tgz"), true,
		&tar.Header{Name: "./Dockerfile", Typeflag: tar.TypeReg, Mode: 0o644})
	writeTar(t, filepath.Join(base, "dotdot.tar"), false,
		&tar.Header{Name: "a/../../x", Typeflag: tar.TypeReg, Mode: 0o644})
	writeTar(t, filepath.Join(base, "abs.tar"), false,
		&tar.Header{Name: "/etc/x", Typeflag: tar.TypeReg, Mode: 0o644})
	writeTar(t, filepath.Join(base, "linkescape.tar"), false,
		&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"},
		&tar.Header{Name: "l/tmp/pwned", Typeflag: tar.TypeReg, Mode: 0o644})
	writeTar(t, filepath.Join(base, "hardescape.tar"), false,
		&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../outside"})

	tests := []struct {
		name     string
		url      string
		subPath  string
		wantDir  string // relative to base; "WORK" is replaced by the work dir
		wantFile string // a file expected inside the result
		wantErr  string
	}{
		{name: "dir scheme", url: "dir://" + ctxDir, wantDir: "ctx"},
		{name: "bare path", url: ctxDir, wantDir: "ctx"},
		{name: "sub path", url: ctxDir, subPath: "sub/deeper", wantDir: "ctx/sub/deeper"},
		{name: "sub path through absolute symlink stays inside", url: ctxDir, subPath: "abslink", wantDir: "ctx/sub"},
		{name: "sub path escaping", url: ctxDir, subPath: "../", wantErr: "leaves the context"},
		{name: "missing dir", url: filepath.Join(base, "nope"), wantErr: "no such file"},
		{name: "plain tar", url: "tar://" + filepath.Join(base, "plain.tar"), subPath: "app", wantDir: "WORK/app", wantFile: "Dockerfile"},
		{name: "gzip tar", url: "tar://" + filepath.Join(base, "ctx.tgz"), wantDir: "WORK", wantFile: "Dockerfile"},
		{name: "tar with dotdot", url: "tar://" + filepath.Join(base, "dotdot.tar"), wantErr: "leaves the destination"},
		{name: "tar with absolute name", url: "tar://" + filepath.Join(base, "abs.tar"), wantErr: "absolute path"},
		{name: "tar symlink escape", url: "tar://" + filepath.Join(base, "linkescape.tar"), wantErr: "l/tmp/pwned"},
		{name: "tar hardlink escape", url: "tar://" + filepath.Join(base, "hardescape.tar"), wantErr: "leaves the destination"},
		{name: "git", url: "git://example.invalid/repo.git", wantErr: "fetching git context https://example.invalid/repo.git at HEAD"},
		{name: "https git", url: "https://example.invalid/repo.git#v1", wantErr: "fetching git context https://example.invalid/repo.git at v1"},
		{name: "ssh", url: "ssh://git@example.invalid/repo", wantErr: "fetching git context ssh://***@example.invalid/repo at HEAD"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "work")
			got, err := Fetch(t.Context(), tc.url, tc.subPath, work)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Fetch(%q) error = %v, want one containing %q", tc.url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fetch(%q): %v", tc.url, err)
			}
			want := filepath.Join(base, tc.wantDir)
			if strings.HasPrefix(tc.wantDir, "WORK") {
				want = filepath.Join(work, strings.TrimPrefix(tc.wantDir, "WORK"))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Fetch(%q) dir mismatch (-want +got):\n%s", tc.url, diff)
			}
			if tc.wantFile != "" {
				if _, err := os.Stat(filepath.Join(got, tc.wantFile)); err != nil {
					t.Errorf("expected %s in context: %v", tc.wantFile, err)
				}
			}
		})
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Errorf("extraction wrote outside the work dir")
	}
}

func TestOpen_ignoreFileChoice(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		dockerfile string
		want       []string
	}{
		{name: "none", files: map[string]string{}, dockerfile: "Dockerfile"},
		{name: "root dockerignore", files: map[string]string{".dockerignore": "a\n# c\n/b/\n./c\n"}, dockerfile: "Dockerfile", want: []string{"a", "b", "c"}},
		{name: "dockerfile-specific wins", files: map[string]string{".dockerignore": "a", "build/app.Dockerfile.dockerignore": "z"}, dockerfile: "build/app.Dockerfile", want: []string{"z"}},
		{name: "dockerfile-specific for absent file falls back", files: map[string]string{".dockerignore": "a"}, dockerfile: "build/app.Dockerfile", want: []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, c := range tc.files {
				os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
				os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
			}
			c, err := Open(dir, tc.dockerfile)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Patterns); diff != "" {
				t.Errorf("Open() patterns mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestContext_Excluded(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("**/*.log\n!keep.log\nnode_modules\n/build\ndocs/*\n!docs/README.md\n.git\n"), 0o644)
	c, err := Open(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rel  string
		want bool
	}{
		{".", false},
		{"a.log", true},
		{"deep/er/x.log", true},
		{"keep.log", false},
		{"node_modules", true},
		{"node_modules/x/y.js", true},
		{"src/node_modules", false},
		{"build/out", true},
		{"/build", true},
		{"./build", true},
		{"docs/a.md", true},
		{"docs/README.md", false},
		{"docs", false},
		{"main.go", false},
		{".git/HEAD", true},
	}
	for _, tc := range tests {
		t.Run(tc.rel, func(t *testing.T) {
			got, err := c.Excluded(tc.rel)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Excluded(%q) = %v, want %v", tc.rel, got, tc.want)
			}
		})
	}
}

func TestContext_Walk(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a/x", "a/y", "vendor/keep/k", "vendor/drop/d", "top"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), nil, 0o644)
	}
	os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(".dockerignore\na/y\nvendor\n!vendor/keep\n"), 0o644)
	c, err := Open(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = c.Walk("", func(rel string, d fs.DirEntry) error {
		got = append(got, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "a/x", "top", "vendor", "vendor/keep", "vendor/keep/k"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Walk() mismatch (-want +got):\n%s", diff)
	}
}

// TestFetch_tarContext checks what a tar:// context's entries become, as
// extractTar asks rootfs.Extract for them: modes (setuid included) and
// mtimes kept, owners and extended attributes not, ".wh." names are files,
// FIFOs and device nodes skipped, the "./" entry leaves the work directory
// as Fetch made it.
func TestFetch_tarContext(t *testing.T) {
	base := t.TempDir()
	mt := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	writeTar(t, filepath.Join(base, "ctx.tar"), false,
		&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: mt},
		&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: mt, Uid: 7},
		&tar.Header{Name: "d/suid", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: mt, Uid: 7, Gid: 8,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": "v"}},
		&tar.Header{Name: ".wh.gone", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
		&tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o644, ModTime: mt},
		&tar.Header{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt},
		&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d/suid", ModTime: mt})
	work := filepath.Join(t.TempDir(), "work")
	dir, err := Fetch(t.Context(), "tar://"+filepath.Join(base, "ctx.tar"), "", work)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range []string{".", "d", "d/suid", ".wh.gone", "fifo", "null", "l"} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			got[p] = "missing"
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		if p != "." && fi.Mode()&fs.ModeSymlink == 0 {
			s += " " + fi.ModTime().UTC().Format(time.RFC3339)
		}
		got[p] = s
	}
	me := fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	want := map[string]string{
		".":        "drwxr-xr-x " + me,
		"d":        "drwxr-x--- " + me + " 2021-03-04T05:06:07Z",
		"d/suid":   "urwxr-xr-x " + me + " 2021-03-04T05:06:07Z",
		".wh.gone": "-rw-r--r-- " + me + " 2021-03-04T05:06:07Z",
		"fifo":     "missing",
		"null":     "missing",
		"l":        "Lrwxrwxrwx " + me,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("extracted context (-want +got):\n%s", diff)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d/suid"), "user.x", make([]byte, 8)); err == nil {
		t.Errorf("d/suid has the archive's user.x (%d bytes); a context keeps no extended attributes", n)
	}
}
