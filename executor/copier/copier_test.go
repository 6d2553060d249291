package copier

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	mode "github.com/tonistiigi/dchapes-mode"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

var mtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// entry describes a file to create: "f:<mode>:<content>", "d:<mode>",
// "l:<target>", "h:<other path>" (hardlink); uid:gid 1000:1000 for files
// made by the tree builder unless noted.
type tree map[string]string

func build(t *testing.T, root string, tr tree) {
	t.Helper()
	// Directories first (sorted by path length via repeated passes is enough here).
	paths := make([]string, 0, len(tr))
	for p := range tr {
		paths = append(paths, p)
	}
	for _, p := range sortedByDepth(paths) {
		spec := tr[p]
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		kind, rest, _ := strings.Cut(spec, ":")
		switch kind {
		case "d":
			var m uint32
			fmt.Sscanf(rest, "%o", &m)
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chmod(full, fs.FileMode(m))
		case "f":
			ms, content, _ := strings.Cut(rest, ":")
			var m uint32
			fmt.Sscanf(ms, "%o", &m)
			if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			mode := fs.FileMode(m & 0o777)
			if m&0o4000 != 0 {
				mode |= fs.ModeSetuid
			}
			if err := os.Chmod(full, mode); err != nil {
				t.Fatal(err)
			}
		case "l":
			if err := os.Symlink(rest, full); err != nil {
				t.Fatal(err)
			}
		case "h":
			if err := os.Link(filepath.Join(root, rest), full); err != nil {
				t.Fatal(err)
			}
		}
		if fi, err := os.Lstat(full); err == nil {
			os.Lchown(full, 1000, 1000)
			if kind == "f" || kind == "d" {
				os.Chmod(full, fi.Mode()) // chown clears setuid
			}
		}
		if kind != "l" {
			os.Chtimes(full, mtime, mtime)
		}
	}
}

func sortedByDepth(ps []string) []string {
	out := append([]string(nil), ps...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// describe returns "<type> <mode> <uid>:<gid> <content or target>" for p.
func describe(root, p string) string {
	full := filepath.Join(root, p)
	fi, err := os.Lstat(full)
	if err != nil {
		return "missing"
	}
	st := fi.Sys().(*syscall.Stat_t)
	owner := fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	switch {
	case fi.IsDir():
		return fmt.Sprintf("d %o %s", fi.Mode().Perm()|fi.Mode()&fs.ModeSetuid, owner)
	case fi.Mode()&fs.ModeSymlink != 0:
		l, _ := os.Readlink(full)
		return fmt.Sprintf("l %s %s", owner, l)
	default:
		b, _ := os.ReadFile(full)
		perm := uint32(fi.Mode().Perm())
		if fi.Mode()&fs.ModeSetuid != 0 {
			perm |= 0o4000
		}
		return fmt.Sprintf("f %o %s %s", perm, owner, b)
	}
}

func TestCopy(t *testing.T) {
	ctx := t.Context()
	src := tree{
		"a.txt":         "f:644:A",
		"b.txt":         "f:755:B",
		"suid":          "f:4755:S",
		"dir":           "d:750",
		"dir/x":         "f:600:X",
		"dir/sub":       "d:755",
		"dir/sub/y":     "f:644:Y",
		"dir/link":      "l:x",
		"link-to-a":     "l:a.txt",
		"link-to-dir":   "l:/dir",
		"escape":        "l:../../../etc",
		"ign/keep":      "f:644:K",
		"ign/drop":      "f:644:D",
		"secret":        "f:644:S",
		"hl1":           "f:644:H",
		"hl2":           "h:hl1",
		"onlyignored":   "d:755",
		"onlyignored/z": "f:644:Z",
	}
	ignore := func(rel string) (bool, error) {
		switch {
		case rel == "secret", rel == "onlyignored", strings.HasPrefix(rel, "onlyignored/"):
			return true, nil
		case rel == "ign/keep":
			return false, nil
		case rel == "ign" || strings.HasPrefix(rel, "ign/"):
			return true, nil
		}
		return false, nil
	}
	u1000 := &Owner{UID: 1000, GID: 1000}
	chmod := fs.FileMode(0o640)

	tests := []struct {
		name    string
		dest    tree // existing destination content
		req     Request
		want    map[string]string
		wantErr string
	}{
		{name: "file to new name", req: Request{Sources: []string{"a.txt"}, Dest: "/new"},
			want: map[string]string{"new": "f 644 0:0 A"}},
		{name: "file into dir with slash", req: Request{Sources: []string{"a.txt"}, Dest: "/d/e/"},
			want: map[string]string{"d": "d 755 0:0", "d/e": "d 755 0:0", "d/e/a.txt": "f 644 0:0 A"}},
		{name: "file into existing dir without slash", dest: tree{"opt": "d:700"}, req: Request{Sources: []string{"a.txt"}, Dest: "/opt"},
			want: map[string]string{"opt/a.txt": "f 644 0:0 A", "opt": "d 700 1000:1000"}},
		{name: "relative dest against workdir", req: Request{Sources: []string{"a.txt"}, Dest: "rel/", WorkDir: "/app"},
			want: map[string]string{"app/rel/a.txt": "f 644 0:0 A"}},
		{name: "dot dest is a dir", req: Request{Sources: []string{"a.txt", "b.txt"}, Dest: ".", WorkDir: "/w"},
			want: map[string]string{"w/a.txt": "f 644 0:0 A", "w/b.txt": "f 755 0:0 B"}},
		{name: "dir copies contents not itself", req: Request{Sources: []string{"dir"}, Dest: "/out"},
			want: map[string]string{"out": "d 755 0:0", "out/x": "f 600 0:0 X", "out/sub/y": "f 644 0:0 Y", "out/link": "l 0:0 x", "out/dir": "missing"}},
		{name: "dir merges into existing dir keeping its metadata", dest: tree{"out": "d:700", "out/old": "f:644:O", "out/sub": "d:700"},
			req:  Request{Sources: []string{"dir/"}, Dest: "/out"},
			want: map[string]string{"out": "d 700 1000:1000", "out/old": "f 644 1000:1000 O", "out/x": "f 600 0:0 X", "out/sub": "d 755 0:0"}},
		// BuildKit has no "must end with a /" rule: each source is copied in
		// turn by the one-source rule (fsutil's copy.Copy and
		// prepareTargetDir), so a later file replaces an earlier one made
		// at the name (moby/buildkit#1853).
		{name: "multiple sources without slash: each in turn to the name", req: Request{Sources: []string{"a.txt", "b.txt"}, Dest: "/name"},
			want: map[string]string{"name": "f 755 0:0 B"}},
		{name: "multiple sources into existing dir without slash", dest: tree{"ex": "d:755"}, req: Request{Sources: []string{"a.txt", "b.txt"}, Dest: "/ex"},
			want: map[string]string{"ex/a.txt": "f 644 0:0 A", "ex/b.txt": "f 755 0:0 B"}},
		{name: "wildcard with many matches without slash: each in turn to the name", req: Request{Sources: []string{"*.txt"}, Dest: "/name"},
			want: map[string]string{"name": "f 755 0:0 B"}},
		{name: "directory then file without slash: the file goes into the directory made", req: Request{Sources: []string{"dir", "a.txt"}, Dest: "/d"},
			want: map[string]string{"d": "d 755 0:0", "d/x": "f 600 0:0 X", "d/a.txt": "f 644 0:0 A"}},
		{name: "wildcard with one match to file name", req: Request{Sources: []string{"a.*"}, Dest: "/only"},
			want: map[string]string{"only": "f 644 0:0 A"}},
		{name: "wildcard into dir", req: Request{Sources: []string{"?.txt"}, Dest: "/w/"},
			want: map[string]string{"w/a.txt": "f 644 0:0 A", "w/b.txt": "f 755 0:0 B"}},
		// BuildKit's AllowEmptyWildcard (testEmptyWildcard): no error,
		// nothing copied, no destination made.
		{name: "wildcard matching nothing alone copies nothing", req: Request{Sources: []string{"*.nope", "dir/*.nope"}, Dest: "/w/"},
			want: map[string]string{"w": "missing"}},
		{name: "wildcard in a missing directory fails", req: Request{Sources: []string{"nodir/*.txt"}, Dest: "/w/"},
			wantErr: `"/nodir": not found`},
		{name: "wildcard in a file matches nothing", req: Request{Sources: []string{"a.txt/*"}, Dest: "/w/"},
			want: map[string]string{"w": "missing"}},
		{name: "wildcard matching nothing beside a match is skipped", req: Request{Sources: []string{"a.txt", "*.nope"}, Dest: "/w/"},
			want: map[string]string{"w/a.txt": "f 644 0:0 A"}},
		{name: "missing source", req: Request{Sources: []string{"missing"}, Dest: "/w/"},
			wantErr: `"/missing": not found`},
		{name: "dotdot clamped to root", req: Request{Sources: []string{"../../a.txt"}, Dest: "/c"},
			want: map[string]string{"c": "f 644 0:0 A"}},
		{name: "top-level symlink followed, keeps its name", req: Request{Sources: []string{"link-to-a"}, Dest: "/t/"},
			want: map[string]string{"t/link-to-a": "f 644 0:0 A"}},
		{name: "top-level symlink to dir copies contents", req: Request{Sources: []string{"link-to-dir"}, Dest: "/t"},
			want: map[string]string{"t/x": "f 600 0:0 X"}},
		{name: "symlink escaping srcroot resolved inside", req: Request{Sources: []string{"escape"}, Dest: "/t"},
			wantErr: "not found"},
		{name: "setuid kept", req: Request{Sources: []string{"suid"}, Dest: "/s"},
			want: map[string]string{"s": "f 4755 0:0 S"}},
		{name: "chown applies to files and created dirs", req: Request{Sources: []string{"dir"}, Dest: "/c/d/", Chown: u1000},
			want: map[string]string{"c": "d 755 1000:1000", "c/d": "d 755 1000:1000", "c/d/x": "f 600 1000:1000 X", "c/d/link": "l 1000:1000 x"}},
		{name: "keep owner for stage sources", req: Request{Sources: []string{"a.txt"}, Dest: "/k", KeepOwner: true},
			want: map[string]string{"k": "f 644 1000:1000 A"}},
		{name: "chmod", req: Request{Sources: []string{"dir"}, Dest: "/m", Chmod: &chmod},
			want: map[string]string{"m": "d 640 0:0", "m/x": "f 640 0:0 X", "m/sub": "d 640 0:0", "m/link": "l 0:0 x"}},
		// fsutil's copy.Copy makes the missing parents with --chmod's mode
		// (moby/buildkit testCopyChmod); existing ones are left alone.
		{name: "chmod makes missing parents with its mode", dest: tree{"keep": "d:700"}, req: Request{Sources: []string{"a.txt"}, Dest: "/keep/p/q/f", Chmod: &chmod},
			want: map[string]string{"keep": "d 700 1000:1000", "keep/p": "d 640 0:0", "keep/p/q": "d 640 0:0", "keep/p/q/f": "f 640 0:0 A"}},
		// A symbolic --chmod changes each entry's own mode (fsutil's
		// copyFileInfo applies the set to the source's mode); directories
		// the copy creates are 0755, as without --chmod.
		{name: "symbolic chmod on a tree", req: Request{Sources: []string{"dir"}, Dest: "/m/n/", ModeSet: modeSet(t, "a=rX")},
			want: map[string]string{"m": "d 755 0:0", "m/n": "d 755 0:0", "m/n/x": "f 444 0:0 X", "m/n/sub": "d 555 0:0", "m/n/sub/y": "f 444 0:0 Y", "m/n/link": "l 0:0 x"}},
		{name: "symbolic chmod on files", req: Request{Sources: []string{"a.txt", "b.txt", "suid"}, Dest: "/s/", ModeSet: modeSet(t, "u+x,go-w,u-s")},
			want: map[string]string{"s/a.txt": "f 744 0:0 A", "s/b.txt": "f 755 0:0 B", "s/suid": "f 755 0:0 S"}},
		{name: "symbolic chmod X on a file executable by none", req: Request{Sources: []string{"a.txt"}, Dest: "/x", ModeSet: modeSet(t, "g+X,o=u")},
			want: map[string]string{"x": "f 646 0:0 A"}},
		// X looks at the mode the entry had, as BSD's and GNU's chmod
		// do (busybox's looks at the mode "a=" just cleared).
		{name: "symbolic chmod X after = on a file executable by someone", req: Request{Sources: []string{"b.txt"}, Dest: "/x", ModeSet: modeSet(t, "a=rX")},
			want: map[string]string{"x": "f 555 0:0 B"}},
		{name: "ignored file not found", req: Request{Sources: []string{"secret"}, Dest: "/i"},
			wantErr: "not found"},
		{name: "ignored dir with exception keeps the exception only", req: Request{Sources: []string{"."}, Dest: "/all/"},
			want: map[string]string{"all/ign/keep": "f 644 0:0 K", "all/ign/drop": "missing", "all/secret": "missing", "all/onlyignored": "missing", "all/a.txt": "f 644 0:0 A"}},
		{name: "wildcard skips ignored", req: Request{Sources: []string{"s*"}, Dest: "/w/"},
			want: map[string]string{"w/suid": "f 4755 0:0 S", "w/secret": "missing"}},
		{name: "file over existing dir inside a tree", dest: tree{"o/x": "d:755"}, req: Request{Sources: []string{"dir"}, Dest: "/o"},
			wantErr: "cannot replace to directory /o/x with file"},
		{name: "dir over existing file", dest: tree{"o": "f:644:F"}, req: Request{Sources: []string{"dir"}, Dest: "/o"},
			wantErr: "cannot copy to non-directory"},
		{name: "file over existing file replaces", dest: tree{"o": "f:600:OLD"}, req: Request{Sources: []string{"a.txt"}, Dest: "/o"},
			want: map[string]string{"o": "f 644 0:0 A"}},
		{name: "dest symlink resolved inside dest root", dest: tree{"real": "d:755", "lnk": "l:/real"}, req: Request{Sources: []string{"a.txt"}, Dest: "/lnk/"},
			want: map[string]string{"real/a.txt": "f 644 0:0 A", "lnk": "l 1000:1000 /real"}},
		{name: "dest symlink escaping is clamped", dest: tree{"up": "l:../../../../.."}, req: Request{Sources: []string{"a.txt"}, Dest: "/up/esc"},
			want: map[string]string{"esc": "f 644 0:0 A"}},
		{name: "url needs ADD", req: Request{Sources: []string{"http://127.0.0.1/x"}, Dest: "/u"},
			wantErr: "source can't be a URL for COPY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srcRoot := t.TempDir()
			build(t, srcRoot, src)
			destRoot := t.TempDir()
			build(t, destRoot, tc.dest)
			r := tc.req
			r.SrcRoot, r.DestRoot, r.Ignore = srcRoot, destRoot, ignore
			if r.WorkDir == "" {
				r.WorkDir = "/"
			}
			_, err := Copy(ctx, r)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Copy() error = %v, want one containing %q", err, tc.wantErr)
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
		})
	}
}

func ptr[T any](v T) *T { return &v }

// modeSet parses a symbolic mode as copy.go does.
func modeSet(t *testing.T, s string) *mode.Set {
	t.Helper()
	set, err := mode.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return &set
}

func TestCopy_metadata(t *testing.T) {
	srcRoot, destRoot := t.TempDir(), t.TempDir()
	build(t, srcRoot, tree{"d": "d:755", "d/f": "f:644:F", "d/g": "h:d/f"})
	res, err := Copy(t.Context(), Request{SrcRoot: srcRoot, DestRoot: destRoot, WorkDir: "/", Sources: []string{"d"}, Dest: "/o/", RecordSources: true})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(destRoot, "o/f"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(mtime) {
		t.Errorf("mtime = %v, want %v", fi.ModTime(), mtime)
	}
	fg, _ := os.Stat(filepath.Join(destRoot, "o/g"))
	if !os.SameFile(fi, fg) {
		t.Errorf("hardlinked sources were not copied as hardlinks")
	}
	// o is new: it stands for what is in it.
	if diff := cmp.Diff([]string{"o"}, res.Changed); diff != "" {
		t.Errorf("Changed mismatch (-want +got):\n%s", diff)
	}
	// Copied again into the o that exists now, each entry is listed.
	res2, err := Copy(t.Context(), Request{SrcRoot: srcRoot, DestRoot: destRoot, WorkDir: "/", Sources: []string{"d"}, Dest: "/o/"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"o/f", "o/g"}, res2.Changed); diff != "" {
		t.Errorf("Changed of the second copy (-want +got):\n%s", diff)
	}
	if res2.Sources != nil {
		t.Errorf("Sources recorded without RecordSources: %v", res2.Sources)
	}
	want := "sha256:f67ab10ad4e4c53121b6a5fe4da9c10ddee905b978d3788d2723d7bfacbe28a9" // sha256("F")
	for _, s := range res.Sources {
		if s.Digest != "" && s.Digest != want {
			t.Errorf("digest of %s = %s, want %s", s.Path, s.Digest, want)
		}
	}
}

func tarball(t *testing.T, gz bool, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := h.Linkname
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
			body = h.Name
		}
		if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
			body = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	if !gz {
		return buf.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(buf.Bytes())
	zw.Close()
	return z.Bytes()
}

func TestCopy_add(t *testing.T) {
	lm := time.Date(2019, 5, 6, 7, 8, 9, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", lm.Format(http.TimeFormat))
		if r.URL.Path == "/plain.txt" {
			w.Write([]byte("plain text"))
			return
		}
		w.Write(tarball(t, true, &tar.Header{Name: "inner", Typeflag: tar.TypeReg, Mode: 0o644}))
	}))
	defer srv.Close()

	files := map[string][]byte{
		"plain.tar": tarball(t, false,
			&tar.Header{Name: "p/", Typeflag: tar.TypeDir, Mode: 0o755},
			&tar.Header{Name: "p/file", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 7, Gid: 8},
			&tar.Header{Name: "p/sym", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
			&tar.Header{Name: "p/hard", Typeflag: tar.TypeLink, Linkname: "p/file"}),
		"comp.tgz":  tarball(t, true, &tar.Header{Name: "z", Typeflag: tar.TypeReg, Mode: 0o600}),
		"evil.tar":  tarball(t, false, &tar.Header{Name: "../../evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"notar.gz":  gzBytes("just text"),
		"comp.txz":  xzBytes(t, tarball(t, false, &tar.Header{Name: "xzd/", Typeflag: tar.TypeDir, Mode: 0o750}, &tar.Header{Name: "xzd/x", Typeflag: tar.TypeReg, Mode: 0o640})),
		"evil2.tar": tarball(t, false, &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, &tar.Header{Name: "l/etc/x", Typeflag: tar.TypeReg, Mode: 0o644}),
	}
	u1000 := &Owner{UID: 1000, GID: 1000}
	tests := []struct {
		name    string
		req     Request
		want    map[string]string
		wantErr string
		// lastModified is a download that must have the server's
		// Last-Modified as its mtime.
		lastModified string
	}{
		{name: "plain tar extracted keeping owners", req: Request{Sources: []string{"plain.tar"}, Dest: "/x"},
			want: map[string]string{"x/p/file": "f 4755 7:8 p/file", "x/p/sym": "l 0:0 /etc/passwd", "x/plain.tar": "missing"}},
		{name: "gzip tar extracted with chown", req: Request{Sources: []string{"comp.tgz"}, Dest: "/x/", Chown: u1000},
			want: map[string]string{"x/z": "f 600 1000:1000 z", "x": "d 755 1000:1000"}},
		{name: "xz tar extracted", req: Request{Sources: []string{"comp.txz"}, Dest: "/x/"},
			want: map[string]string{"x/xzd": "d 750 0:0", "x/xzd/x": "f 640 0:0 xzd/x", "x/comp.txz": "missing"}},
		{name: "tar with dotdot refused", req: Request{Sources: []string{"evil.tar"}, Dest: "/x/"},
			wantErr: "outside of the destination"},
		{name: "symlink in tar cannot lead out", req: Request{Sources: []string{"evil2.tar"}, Dest: "/x/"},
			want: map[string]string{"x/etc/x": "f 644 0:0 l/etc/x"}},
		{name: "compressed non-tar copied as is", req: Request{Sources: []string{"notar.gz"}, Dest: "/x/"},
			want: map[string]string{"x/notar.gz": "f 644 0:0 " + string(gzBytes("just text"))}},
		{name: "COPY never extracts", req: Request{Sources: []string{"comp.tgz"}, Dest: "/x/c.tgz", Add: false},
			want: map[string]string{"x/c.tgz": "f 644 0:0 " + string(files["comp.tgz"])}},
		{name: "url into dir named from path, 0600, not extracted", req: Request{Sources: []string{srv.URL + "/dl/arch.tgz"}, Dest: "/u/"},
			want:         map[string]string{"u/arch.tgz": "f 600 0:0 " + string(tarball(t, true, &tar.Header{Name: "inner", Typeflag: tar.TypeReg, Mode: 0o644}))},
			lastModified: "u/arch.tgz"},
		{name: "url to file name", req: Request{Sources: []string{srv.URL + "/dl/arch.tgz"}, Dest: "/u/named", Chown: u1000},
			want: map[string]string{"u/named": "f 600 1000:1000 " + string(tarball(t, true, &tar.Header{Name: "inner", Typeflag: tar.TypeReg, Mode: 0o644}))}},
		{name: "url error status", req: Request{Sources: []string{srv.URL + "/missing"}, Dest: "/u/"},
			wantErr: "404"},
		// BuildKit's HTTP source writes 0600; a symbolic --chmod changes that.
		{name: "url with a symbolic chmod", req: Request{Sources: []string{srv.URL + "/dl/arch.tgz"}, Dest: "/u/s", ModeSet: modeSet(t, "g+r,o=g")},
			want: map[string]string{"u/s": "f 644 0:0 " + string(tarball(t, true, &tar.Header{Name: "inner", Typeflag: tar.TypeReg, Mode: 0o644}))}},
		// ADD --unpack (BuildKit's AttemptUnpack): false copies a local
		// archive as it is; true extracts a download that is an archive,
		// into the destination as a directory, and places one that is not
		// as without it.
		{name: "unpack=false copies a local archive as is", req: Request{Sources: []string{"comp.tgz"}, Dest: "/x/", Unpack: ptr(false)},
			want: map[string]string{"x/comp.tgz": "f 644 0:0 " + string(files["comp.tgz"]), "x/z": "missing"}},
		{name: "url with unpack=true extracted", req: Request{Sources: []string{srv.URL + "/dl/arch.tgz"}, Dest: "/u", Unpack: ptr(true), Chown: u1000},
			want: map[string]string{"u": "d 755 1000:1000", "u/inner": "f 644 1000:1000 inner", "u/arch.tgz": "missing"}},
		{name: "url with unpack=true not an archive", req: Request{Sources: []string{srv.URL + "/plain.txt"}, Dest: "/u/", Unpack: ptr(true)},
			want: map[string]string{"u/plain.txt": "f 600 0:0 plain text"}, lastModified: "u/plain.txt"},
		{name: "url with unpack=true and a checksum it does not match", req: Request{Sources: []string{srv.URL + "/dl/arch.tgz"}, Dest: "/u/", Unpack: ptr(true), Checksum: digest.FromString("other")},
			wantErr: "does not match --checksum"},
		// An archive's entries keep their modes: BuildKit's unpack ignores --chmod.
		{name: "archive extracted whatever the symbolic chmod", req: Request{Sources: []string{"comp.txz"}, Dest: "/x/", ModeSet: modeSet(t, "a=rwx")},
			want: map[string]string{"x": "d 755 0:0", "x/xzd": "d 750 0:0", "x/xzd/x": "f 640 0:0 xzd/x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srcRoot, destRoot := t.TempDir(), t.TempDir()
			for n, b := range files {
				if err := os.WriteFile(filepath.Join(srcRoot, n), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := tc.req
			if !strings.HasPrefix(tc.name, "COPY") {
				r.Add = true
			}
			r.SrcRoot, r.DestRoot, r.WorkDir, r.TempDir = srcRoot, destRoot, "/", t.TempDir()
			_, err := Copy(context.Background(), r)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Copy() error = %v, want one containing %q", err, tc.wantErr)
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
			if strings.HasPrefix(tc.name, "url with unpack=true") {
				if left, _ := filepath.Glob(filepath.Join(r.TempDir, "*")); len(left) != 0 {
					t.Errorf("the download was left in the temporary directory: %v", left)
				}
			}
			if tc.lastModified != "" {
				fi, err := os.Stat(filepath.Join(destRoot, tc.lastModified))
				if err != nil {
					t.Errorf("%s: %v", tc.lastModified, err)
				} else if !fi.ModTime().Equal(lm) {
					t.Errorf("%s: mtime = %v, want Last-Modified %v", tc.lastModified, fi.ModTime(), lm)
				}
			}
		})
	}
}

func xzBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	zw, err := xz.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

func gzBytes(s string) []byte {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(s))
	zw.Close()
	return z.Bytes()
}

// TestCopy_fileMetadataOnFd checks what a plain file copied into a
// directory the copy creates gets (its metadata is set on the open file):
// the nanoseconds of its mtime, a user xattr, setuid kept through --chown,
// and a second copy of the same file replacing the first.
func TestCopy_fileMetadataOnFd(t *testing.T) {
	srcRoot, destRoot := t.TempDir(), t.TempDir()
	build(t, srcRoot, tree{"d": "d:755", "d/suid": "f:4750:S"})
	p := filepath.Join(srcRoot, "d/suid")
	ns := time.Date(2023, 4, 5, 6, 7, 8, 123456789, time.UTC)
	if err := os.Chtimes(p, ns, ns); err != nil {
		t.Fatal(err)
	}
	xattr := unix.Setxattr(p, "user.slipway.test", []byte("v"), 0) == nil
	chown := Owner{UID: 7, GID: 8}
	_, err := Copy(t.Context(), Request{SrcRoot: srcRoot, DestRoot: destRoot, WorkDir: "/",
		Sources: []string{"d", "d/suid"}, Dest: "/new/", Chown: &chown})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(destRoot, "new/suid"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&fs.ModeSetuid == 0 || fi.Mode().Perm() != 0o750 || st.Uid != 7 || st.Gid != 8 {
		t.Errorf("new/suid: mode %v, owner %d:%d; want setuid 0750, 7:8", fi.Mode(), st.Uid, st.Gid)
	}
	if !fi.ModTime().Equal(ns) {
		t.Errorf("new/suid mtime %v, want %v", fi.ModTime(), ns)
	}
	if xattr {
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(destRoot, "new/suid"), "user.slipway.test", buf)
		if err != nil || string(buf[:n]) != "v" {
			t.Errorf("user.slipway.test = %q, %v; want v", buf[:max(n, 0)], err)
		}
	}
}

// TestCopy_addChecksum checks ADD --checksum: Sources keys the URL by the
// checksum without a request, a matching download is kept, and one that
// does not match fails naming the checksum and leaves no file behind.
func TestCopy_addChecksum(t *testing.T) {
	body := []byte("release 1.2.3\n")
	var heads int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			mu.Lock()
			heads++
			mu.Unlock()
		}
		w.Header().Set("ETag", `"v1"`)
		w.Write(body)
	}))
	defer srv.Close()
	good := digest.FromBytes(body)
	bad := digest.FromString("something else")

	r := Request{Sources: []string{srv.URL + "/rel.txt"}, Dest: "/opt/", WorkDir: "/", Add: true, Checksum: good}
	files, err := Sources(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Digest != good.String() || heads != 0 {
		t.Errorf("Sources = %+v after %d HEAD requests; want the URL keyed by %s without one", files, heads, good)
	}

	r.SrcRoot, r.DestRoot = t.TempDir(), t.TempDir()
	if _, err := Copy(t.Context(), r); err != nil {
		t.Fatalf("Copy with the right checksum: %v", err)
	}
	if got := describe(r.DestRoot, "opt/rel.txt"); got != "f 600 0:0 "+string(body) {
		t.Errorf("opt/rel.txt: %s", got)
	}

	r.DestRoot = t.TempDir()
	r.Checksum = bad
	_, err = Copy(t.Context(), r)
	if err == nil || !strings.Contains(err.Error(), "does not match --checksum="+bad.String()) {
		t.Errorf("Copy with a wrong checksum: %v, want a mismatch naming it", err)
	}
	if got := describe(r.DestRoot, "opt/rel.txt"); got != "missing" {
		t.Errorf("opt/rel.txt after a mismatch: %s, want missing", got)
	}
}

// An ADD URL's user info, the user name included, reaches no error, nor
// does a refused archive entry's name (the archive's content).
func TestCopy_errorsQuoteNoSecret(t *testing.T) {
	const secret = "s3cr3t"
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	files := map[string][]byte{
		"evil.tar": tarball(t, false, &tar.Header{Name: "../" + secret, Typeflag: tar.TypeReg, Mode: 0o644}),
		"hard.tar": tarball(t, false, &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../" + secret}),
	}
	for _, tc := range []struct {
		name    string
		sources []string
		wantErr string
	}{
		{"404", []string{"http://user:" + secret + "@" + host + "/missing"}, "downloading http://***@" + host + "/missing: invalid response status 404 Not Found"},
		{"token as user name", []string{"http://" + secret + "@" + host + "/missing"}, "downloading http://***@" + host + "/missing: invalid response status 404"},
		{"connection refused", []string{"http://user:" + secret + "@127.0.0.1:1/x"}, "downloading http://***@127.0.0.1:1/x: dial tcp 127.0.0.1:1: connect: connection refused"},
		{"unparsable", []string{"http://user:" + secret + "@[::1/x"}, "downloading http://…: not a valid URL"},
		{"bad port", []string{"http://user:" + secret + "/x@host/x"}, "downloading http://…: not a valid URL"},
		{"tar entry", []string{"evil.tar"}, "extracting evil.tar: tar entry 1 is outside of the destination"},
		{"tar hardlink", []string{"hard.tar"}, "extracting hard.tar: tar entry 1, the hardlink /x/h: its target is invalid or outside of the destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			for n, data := range files {
				if err := os.WriteFile(filepath.Join(src, n), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Copy(context.Background(), Request{SrcRoot: src, DestRoot: t.TempDir(), Sources: tc.sources, Dest: "/x/", Add: true})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v; want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
}
