package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestExtract_entryTypes(t *testing.T) {
	root := t.TempDir()
	cap := "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	var skipped []string
	mustExtract(t, root, layerTar(t,
		dirE("etc", 0o755),
		fileE("etc/passwd", "root:x:0:0\n", 0o644).with(func(h *tar.Header) { h.Uid, h.Gid = 1000, 1001 }),
		fileE("bin/su", "su", 0o4755).with(func(h *tar.Header) { h.Uid = 1000 }),
		fileE("bin/wall", "wall", 0o2755).with(func(h *tar.Header) { h.Gid = 5 }),
		dirE("tmp", 0o1777),
		dirE("empty", 0o700).with(func(h *tar.Header) { h.Uid, h.Gid = 7, 8 }),
		symlinkE("bin/sh", "busybox").with(func(h *tar.Header) { h.Uid, h.Gid = 3, 4 }),
		fileE("bin/busybox", "bb", 0o755),
		linkE("bin/ls", "bin/busybox"),
		entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o600, ModTime: epoch}},
		entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: epoch}},
		fileE("bin/ping", "ping", 0o755).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": cap, "SCHILY.xattr.user.note": "hi"}
		}),
	), WithSkipped(func(rel string, err error) { skipped = append(skipped, rel) }))

	m := epoch.Unix()
	now := time.Now().Unix()
	got := dump(t, root)
	for _, p := range []string{"bin", "run", "dev"} { // implicit parents: made now
		if n := got[p]; n.Mtime < now-60 {
			t.Errorf("%s: mtime %d, want about now", p, n.Mtime)
		}
		got[p] = node{Type: "dir", Mode: got[p].Mode}
	}
	want := map[string]node{
		"etc":         {Type: "dir", Mode: 0o755, Mtime: m},
		"etc/passwd":  {Type: "file", Mode: 0o644, UID: 1000, GID: 1001, Content: "root:x:0:0\n", Mtime: m, Nlink: 1},
		"bin":         {Type: "dir", Mode: 0o755},
		"bin/su":      {Type: "file", Mode: 0o4755, UID: 1000, Content: "su", Mtime: m, Nlink: 1},
		"bin/wall":    {Type: "file", Mode: 0o2755, GID: 5, Content: "wall", Mtime: m, Nlink: 1},
		"tmp":         {Type: "dir", Mode: 0o1777, Mtime: m},
		"empty":       {Type: "dir", Mode: 0o700, UID: 7, GID: 8, Mtime: m},
		"bin/sh":      {Type: "symlink", Link: "busybox", UID: 3, GID: 4, Mtime: m, Nlink: 1},
		"bin/busybox": {Type: "file", Mode: 0o644, Content: "bb", Mtime: m, Nlink: 2},
		"bin/ls":      {Type: "file", Mode: 0o644, Content: "bb", Mtime: m, Nlink: 2},
		"run":         {Type: "dir", Mode: 0o755},
		"run/fifo":    {Type: "fifo", Mode: 0o600, Mtime: m, Nlink: 1},
		"dev":         {Type: "dir", Mode: 0o755},
		"dev/null":    {Type: "char", Mode: 0o666, Rdev: unix.Mkdev(1, 3), Mtime: m, Nlink: 1},
		"bin/ping": {Type: "file", Mode: 0o755, Content: "ping", Mtime: m, Nlink: 1,
			Xattrs: map[string]string{"security.capability": cap, "user.note": "hi"}},
	}
	if len(skipped) > 0 {
		// Without CAP_MKNOD or user xattrs the skipped entries are reported.
		t.Logf("skipped: %v", skipped)
		for _, s := range skipped {
			delete(want, s)
			delete(got, s)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

func TestExtract_layering(t *testing.T) {
	lower := layerTar(t,
		dirE("a", 0o755),
		fileE("a/keep", "k", 0o644),
		fileE("a/gone", "g", 0o644),
		dirE("a/sub", 0o755),
		fileE("a/sub/deep", "d", 0o644),
		dirE("d", 0o750),
		fileE("d/x", "x", 0o644),
		fileE("f", "f", 0o644),
		symlinkE("s", "a"),
		dirE("o", 0o755),
		fileE("o/lower", "l", 0o644),
		dirE("o/sub", 0o755),
		fileE("o/sub/lower", "l", 0o644),
	)
	tests := []struct {
		name  string
		upper []entry
		want  map[string]string // path -> type:content
	}{
		{
			name:  "whiteout a file",
			upper: []entry{whE("a", "gone")},
			want:  map[string]string{"a/gone": ""},
		},
		{
			name:  "whiteout a directory",
			upper: []entry{whE("a", "sub")},
			want:  map[string]string{"a/sub": "", "a/sub/deep": ""},
		},
		{
			name:  "whiteout of nothing",
			upper: []entry{whE("a", "never"), whE("nodir", "x")},
			want:  map[string]string{},
		},
		{
			name:  "whiteout hides lower layers only",
			upper: []entry{fileE("a/new", "n", 0o644), whE("a", "new")},
			want:  map[string]string{"a/new": "file:n"},
		},
		{
			name:  "opaque first",
			upper: []entry{dirE("o", 0o755), opqE("o"), fileE("o/upper", "u", 0o644)},
			want:  map[string]string{"o/lower": "", "o/sub": "", "o/sub/lower": "", "o/upper": "file:u"},
		},
		{
			name:  "opaque last keeps this layer's entries",
			upper: []entry{dirE("o", 0o755), fileE("o/upper", "u", 0o644), dirE("o/sub", 0o755), fileE("o/sub/new", "n", 0o644), opqE("o")},
			want:  map[string]string{"o/lower": "", "o/sub/lower": "", "o/upper": "file:u", "o/sub/new": "file:n"},
		},
		{
			name:  "opaque last with an implicit parent",
			upper: []entry{fileE("o/sub/new", "n", 0o644), opqE("o")},
			want:  map[string]string{"o/lower": "", "o/sub/lower": "", "o/sub/new": "file:n"},
		},
		{
			name:  "file replaces directory",
			upper: []entry{fileE("a", "now a file", 0o644)},
			want:  map[string]string{"a": "file:now a file", "a/keep": "", "a/gone": "", "a/sub": "", "a/sub/deep": ""},
		},
		{
			name:  "directory replaces file",
			upper: []entry{dirE("f", 0o755), fileE("f/in", "i", 0o644)},
			want:  map[string]string{"f": "dir", "f/in": "file:i"},
		},
		{
			name:  "directory replaces symlink, not its target",
			upper: []entry{dirE("s", 0o700)},
			want:  map[string]string{"s": "dir"},
		},
		{
			name:  "file through a symlinked parent lands in the target",
			upper: []entry{fileE("s/via", "v", 0o644)},
			want:  map[string]string{"a/via": "file:v"},
		},
		{
			name:  "file replaces file",
			upper: []entry{fileE("f", "new", 0o600)},
			want:  map[string]string{"f": "file:new"},
		},
		{
			name:  "directory merges",
			upper: []entry{dirE("d", 0o700), fileE("d/y", "y", 0o644)},
			want:  map[string]string{"d": "dir", "d/y": "file:y"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mustExtract(t, root, lower)
			before := summarize(dump(t, root))
			mustExtract(t, root, layerTar(t, tc.upper...))
			want := before
			for p, v := range tc.want {
				if v == "" {
					delete(want, p)
				} else {
					want[p] = v
				}
			}
			if diff := cmp.Diff(want, summarize(dump(t, root))); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
		})
	}
}

func summarize(d map[string]node) map[string]string {
	out := make(map[string]string, len(d))
	for p, n := range d {
		switch n.Type {
		case "file":
			out[p] = "file:" + n.Content
		case "symlink":
			out[p] = "symlink:" + n.Link
		default:
			out[p] = n.Type
		}
	}
	return out
}

func TestExtract_directoryMerge(t *testing.T) {
	root := t.TempDir()
	mustExtract(t, root, layerTar(t, dirE("d", 0o755), fileE("d/x", "x", 0o644)))
	later := epoch.Add(time.Hour)
	mustExtract(t, root, layerTar(t,
		dirE("d", 0o700).with(func(h *tar.Header) { h.Uid, h.ModTime = 42, later }),
		fileE("d/y", "y", 0o644),
	))
	got := dump(t, root)
	want := node{Type: "dir", Mode: 0o700, UID: 42, Mtime: later.Unix()}
	if diff := cmp.Diff(want, got["d"]); diff != "" {
		t.Errorf("d (-want +got):\n%s", diff)
	}
	if _, ok := got["d/x"]; !ok {
		t.Errorf("d/x was lost in the merge")
	}
}

func TestExtract_withoutOwnership(t *testing.T) {
	root := t.TempDir()
	mustExtract(t, root, layerTar(t,
		fileE("f", "f", 0o4755).with(func(h *tar.Header) { h.Uid, h.Gid = 1000, 1000 }),
	), WithoutOwnership())
	got := dump(t, root)["f"]
	if got.UID != uint32(os.Getuid()) || got.Mode != 0o4755 {
		t.Errorf("f: uid %d mode %o, want uid %d mode 4755", got.UID, got.Mode, os.Getuid())
	}
}

func TestExtract_exclude(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "kaniko/secret"), "token", 0o600)
	writeFile(t, filepath.Join(root, "etc/hosts"), "mounted", 0o644)
	writeFile(t, filepath.Join(root, "keep/x"), "x", 0o644)
	before := dump(t, root)
	opts := []Option{WithExcludedPaths("/kaniko"), WithExclude(func(rel string) bool { return rel == "etc/hosts" })}
	layers := [][]entry{
		{fileE("kaniko/secret", "pwned", 0o644), fileE("etc/hosts", "pwned", 0o644)},
		{whE("", "kaniko"), whE("etc", "hosts")},
		{symlinkE("k", "/kaniko"), fileE("k/secret", "pwned", 0o644), fileE("k/new", "pwned", 0o644)},
		{opqE("etc"), opqE("kaniko")},
		{fileE("etc", "file replacing a directory that holds an excluded path", 0o644)},
	}
	for i, l := range layers {
		err := Extract(root, bytes.NewReader(layerTar(t, l...)), opts...)
		if i == len(layers)-1 {
			if err == nil {
				t.Errorf("replacing etc: got no error")
			}
		} else if err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
	}
	got := dump(t, root)
	for _, p := range []string{"kaniko", "kaniko/secret", "etc/hosts"} {
		if diff := cmp.Diff(before[p], got[p]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p, diff)
		}
	}
	if _, ok := got["kaniko/new"]; ok {
		t.Errorf("kaniko/new was written")
	}
}

func TestExtract_directoryTimesAfterContents(t *testing.T) {
	root := t.TempDir()
	var entries []entry
	entries = append(entries, dirE("d", 0o755))
	for i := range 50 {
		entries = append(entries, fileE("d/f"+strings.Repeat("x", i), "x", 0o644))
	}
	entries = append(entries, dirE("d/sub", 0o755), fileE("d/sub/f", "f", 0o644), whE("d", "f"))
	mustExtract(t, root, layerTar(t, entries...))
	got := dump(t, root)
	for _, p := range []string{"d", "d/sub"} {
		if got[p].Mtime != epoch.Unix() {
			t.Errorf("%s: mtime %v, want %v", p, time.Unix(got[p].Mtime, 0).UTC(), epoch)
		}
	}
}

func TestExtract_errors(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"hardlink to a missing file", []entry{linkE("l", "missing")}, `"l"`},
		{"parent is a file", []entry{fileE("f", "f", 0o644), fileE("f/x", "x", 0o644)}, `"f/x"`},
		{"unsupported type", []entry{{hdr: tar.Header{Typeflag: 'Z', Name: "z", ModTime: epoch}}}, `"z"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Extract(t.TempDir(), bytes.NewReader(layerTar(t, tc.entries...)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Extract() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func BenchmarkExtract(b *testing.B) {
	var entries []entry
	body := strings.Repeat("x", 4096)
	for d := range 100 {
		entries = append(entries, dirE(fmt.Sprintf("usr/d%03d", d), 0o755))
		for i := range 200 {
			entries = append(entries, fileE(fmt.Sprintf("usr/d%03d/f%03d", d, i), body, 0o644))
		}
	}
	layer := layerTar(b, entries...)
	b.SetBytes(int64(len(layer)))
	for b.Loop() {
		b.StopTimer()
		root := b.TempDir()
		b.StartTimer()
		mustExtract(b, root, layer)
	}
}

// TestExtract_withoutWhiteouts checks that ".wh." names are files, which
// delete nothing, under WithoutWhiteouts (ADD archives, build contexts).
func TestExtract_withoutWhiteouts(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "lower"), "l", 0o644)
	writeFile(t, filepath.Join(root, "o/lower"), "l", 0o644)
	mustExtract(t, root, layerTar(t, whE("", "lower"), opqE("o"), fileE(".wh..", "dots", 0o644)), WithoutWhiteouts())
	want := map[string]string{"lower": "file:l", "o": "dir", "o/lower": "file:l",
		".wh.lower": "file:", "o/.wh..wh..opq": "file:", ".wh..": "file:dots"}
	if diff := cmp.Diff(want, summarize(dump(t, root))); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

// TestExtract_withOwner checks that WithOwner owns every entry and the
// directories made on the way, whatever the headers say (ADD --chown),
// and that WithoutRootEntry leaves the root's mode, owner and times.
func TestExtract_withOwner(t *testing.T) {
	root := t.TempDir()
	must(t, os.Chmod(root, 0o755))
	before := dump(t, filepath.Dir(root))[filepath.Base(root)]
	mustExtract(t, root, layerTar(t,
		dirE(".", 0o700).with(func(h *tar.Header) { h.Uid = 5 }),
		fileE("made/on/the/way", "f", 0o4755).with(func(h *tar.Header) { h.Uid, h.Gid = 7, 8 }),
		symlinkE("l", "made"),
		linkE("h", "made/on/the/way").with(func(h *tar.Header) { h.Mode = 0o4755 }),
	), WithOwner(1000, 1001), WithoutRootEntry())
	got := dump(t, root)
	for _, p := range []string{"made", "made/on", "made/on/the", "made/on/the/way", "l", "h"} {
		if n := got[p]; n.UID != 1000 || n.GID != 1001 {
			t.Errorf("%s: owner %d:%d, want 1000:1001", p, n.UID, n.GID)
		}
	}
	if m := got["made/on/the/way"].Mode; m != 0o4755 {
		t.Errorf("made/on/the/way: mode %o, want 4755 (set after the owner)", m)
	}
	if diff := cmp.Diff(before, dump(t, filepath.Dir(root))[filepath.Base(root)]); diff != "" {
		t.Errorf("the root (-want +got):\n%s", diff)
	}
}

// TestExtract_withoutHardLinkMetadata checks that a hard link's header
// changes its inode by default (as Docker) and not with the option.
func TestExtract_withoutHardLinkMetadata(t *testing.T) {
	layer := layerTar(t,
		fileE("f", "f", 0o4755).with(func(h *tar.Header) { h.Uid, h.Gid = 7, 8 }),
		linkE("h", "f").with(func(h *tar.Header) { h.Mode, h.Uid, h.Gid = 0o600, 9, 9 }))
	for _, tc := range []struct {
		name string
		opts []Option
		want node
	}{
		{"default", nil, node{Type: "file", Mode: 0o600, UID: 9, GID: 9, Content: "f", Mtime: epoch.Unix(), Nlink: 2}},
		{"without", []Option{WithoutHardLinkMetadata()}, node{Type: "file", Mode: 0o4755, UID: 7, GID: 8, Content: "f", Mtime: epoch.Unix(), Nlink: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mustExtract(t, root, layer, tc.opts...)
			if diff := cmp.Diff(tc.want, dump(t, root)["f"]); diff != "" {
				t.Errorf("f (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExtract_typesAndXattrs checks WithDevices, WithUnknownTypesSkipped
// and WithXattrs: what is skipped, what fails.
func TestExtract_typesAndXattrs(t *testing.T) {
	fifo := entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "d/fifo", Mode: 0o600, ModTime: epoch}}
	unknown := entry{hdr: tar.Header{Typeflag: 'Z', Name: "z", ModTime: epoch}}
	// user.* attributes are not allowed on symlinks (EPERM).
	userOnLink := symlinkE("l", "x").with(func(h *tar.Header) { h.PAXRecords = map[string]string{"SCHILY.xattr.user.a": "v"} })
	userOnFile := fileE("f", "f", 0o644).with(func(h *tar.Header) { h.PAXRecords = map[string]string{"SCHILY.xattr.user.a": "v"} })
	for _, tc := range []struct {
		name    string
		entries []entry
		opts    []Option
		wantErr string
		want    map[string]string
		skipped int
	}{
		{name: "devices skipped", entries: []entry{fifo}, opts: []Option{WithDevices(Ignored)}, want: map[string]string{"d": "dir"}},
		{name: "devices required", entries: []entry{fifo}, opts: []Option{WithDevices(Required)}, want: map[string]string{"d": "dir", "d/fifo": "fifo"}},
		{name: "unknown type fails", entries: []entry{unknown}, wantErr: "unsupported entry type"},
		{name: "unknown type skipped", entries: []entry{unknown}, opts: []Option{WithUnknownTypesSkipped()}, want: map[string]string{}},
		{name: "xattr refused fails", entries: []entry{userOnLink}, wantErr: "setting extended attribute user.a"},
		{name: "xattr best effort", entries: []entry{userOnLink}, opts: []Option{WithXattrs(BestEffort)}, want: map[string]string{"l": "symlink:x"}, skipped: 1},
		{name: "xattrs ignored", entries: []entry{userOnLink, userOnFile}, opts: []Option{WithXattrs(Ignored)}, want: map[string]string{"l": "symlink:x", "f": "file:f"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			var skipped int
			opts := append(tc.opts, WithSkipped(func(string, error) { skipped++ }))
			err := Extract(root, bytes.NewReader(layerTar(t, tc.entries...)), opts...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Extract() = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, summarize(dump(t, root))); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
			if skipped != tc.skipped {
				t.Errorf("%d skipped, want %d", skipped, tc.skipped)
			}
			if tc.name == "xattrs ignored" {
				if _, err := unix.Lgetxattr(filepath.Join(root, "f"), "user.a", make([]byte, 8)); err == nil {
					t.Errorf("f has user.a")
				}
			}
		})
	}
}

// TestExtract_beneath checks the names WithBeneath refuses and the
// sentinel errors they wrap, including ".." that would stay inside.
func TestExtract_beneath(t *testing.T) {
	for _, tc := range []struct {
		entries []entry
		want    error
	}{
		{[]entry{fileE("/abs", "x", 0o644)}, ErrAbsolute},
		{[]entry{fileE("a/../b", "x", 0o644)}, ErrOutside},
		{[]entry{fileE("b", "x", 0o644), linkE("h", "a/../b")}, ErrOutside},
		{[]entry{fileE("b", "x", 0o644), linkE("h", "/b")}, ErrAbsolute},
		{[]entry{dirE("d", 0o755), symlinkE("l", "/d"), fileE("l/x", "x", 0o644)}, unix.EXDEV},
	} {
		err := Extract(t.TempDir(), bytes.NewReader(layerTar(t, tc.entries...)), WithBeneath())
		if !errors.Is(err, tc.want) {
			t.Errorf("Extract(%s) = %v, want %v", tc.entries[len(tc.entries)-1].hdr.Name, err, tc.want)
		}
	}
	// A relative symlink that stays beneath the root is followed.
	root := t.TempDir()
	mustExtract(t, root, layerTar(t, dirE("d", 0o755), symlinkE("l", "d"), fileE("l/x", "x", 0o644)), WithBeneath())
	if got := summarize(dump(t, root))["d/x"]; got != "file:x" {
		t.Errorf("d/x = %q, want the file written through l", got)
	}
}

// TestExtract_entryErrorAndWritten checks what an *EntryError holds, that
// WithWritten reports resolved paths, parents before children, and that
// WithContext stops the extraction.
func TestExtract_entryErrorAndWritten(t *testing.T) {
	root := t.TempDir()
	var written []string
	err := Extract(root, bytes.NewReader(layerTar(t,
		dirE("d", 0o755), symlinkE("l", "/d"), fileE("l/new/f", "f", 0o644), linkE("l/h", "missing"),
	)), WithWritten(func(rel string) { written = append(written, rel) }))
	var ee *EntryError
	if !errors.As(err, &ee) || ee.Index != 4 || ee.Name != "l/h" || ee.Path != "d/h" {
		t.Fatalf("Extract() = %#v, want an *EntryError for entry 4, l/h, at d/h", err)
	}
	var le *LinkTargetError
	if !errors.As(err, &le) || le.Target != "missing" || !errors.Is(err, unix.ENOENT) {
		t.Errorf("Extract() = %v, want a *LinkTargetError for missing", err)
	}
	if diff := cmp.Diff([]string{"d", "l", "d/new", "d/new/f"}, written); diff != "" {
		t.Errorf("written (-want +got):\n%s", diff)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	root = t.TempDir()
	err = Extract(root, bytes.NewReader(layerTar(t, fileE("f", "f", 0o644))), WithContext(ctx))
	if !errors.Is(err, context.Canceled) || len(dump(t, root)) != 0 {
		t.Errorf("Extract() = %v with %d entries written, want context.Canceled and none", err, len(dump(t, root)))
	}
}
