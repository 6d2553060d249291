package rootfs

import (
	"archive/tar"
	"bytes"
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
