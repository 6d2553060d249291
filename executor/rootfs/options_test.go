package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

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
		{name: "devices skipped", entries: []entry{fifo}, opts: []Option{WithDevices(DevicesSkipped)}, want: map[string]string{"d": "dir"}},
		{name: "devices required", entries: []entry{fifo}, opts: []Option{WithDevices(DevicesRequired)}, want: map[string]string{"d": "dir", "d/fifo": "fifo"}},
		{name: "unknown type fails", entries: []entry{unknown}, wantErr: "unsupported entry type"},
		{name: "unknown type skipped", entries: []entry{unknown}, opts: []Option{WithUnknownTypesSkipped()}, want: map[string]string{}},
		{name: "xattr refused fails", entries: []entry{userOnLink}, wantErr: "setting extended attribute user.a"},
		{name: "xattr best effort", entries: []entry{userOnLink}, opts: []Option{WithXattrs(XattrsBestEffort)}, want: map[string]string{"l": "symlink:x"}, skipped: 1},
		{name: "xattrs ignored", entries: []entry{userOnLink, userOnFile}, opts: []Option{WithXattrs(XattrsIgnored)}, want: map[string]string{"l": "symlink:x", "f": "file:f"}},
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
