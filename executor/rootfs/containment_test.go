package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// callerOptions are the option sets Extract's callers pass, for the
// containment tests to run under each: a layer (executor/build), a tar://
// build context (source's extractTar) and an ADD archive (copier's
// untarOptions, with --chown). They are copied from those callers, whose
// own tests (source's TestFetch and FuzzExtractTar, copier's TestCopy_add
// and TestCopy_errorsQuoteNoSecret) run the real ones.
var callerOptions = []struct {
	name string
	opts []Option
}{
	{"layer", nil},
	{"context", []Option{WithBeneath(), WithoutWhiteouts(), WithoutOwnership(), WithXattrs(Ignored),
		WithDevices(Ignored), WithUnknownTypesSkipped(), WithoutRootEntry()}},
	{"ADD", []Option{WithoutWhiteouts(), WithDevices(Required), WithXattrs(BestEffort),
		WithUnknownTypesSkipped(), WithoutRootEntry(), WithoutHardLinkMetadata(), WithOwner(1000, 1000)}},
}

// TestExtract_containment feeds crafted layers that try to write, link,
// chmod or delete outside the root, and checks that nothing outside changed:
// the canary file, its directory, and the absence of any new file there.
// Each runs with the options of each caller: source's former ExtractTar
// (os.Root) and copier's former untar (securejoin) tests are among them.
// Under the context's WithBeneath, every case that leads out is refused,
// but those marked contextOK, where nothing is resolved through a symlink.
func TestExtract_containment(t *testing.T) {
	// Each case gets: base/outside/canary (the target), base/root (the root).
	// OUT stands for the absolute path of base/outside in the entries.
	tests := []struct {
		name    string
		entries []entry
		wantErr bool   // refused (true) or contained (false)
		inside  string // where the "contained" file must be, if any
		// contextOK: not refused under WithBeneath either.
		contextOK bool
	}{
		{name: "dot-dot file", entries: []entry{fileE("../outside/canary", "pwned", 0o644)}, wantErr: true},
		{name: "dot-dot inside the name", entries: []entry{fileE("a/../../outside/new", "pwned", 0o644)}, wantErr: true},
		{name: "dot-dot directory", entries: []entry{dirE("../outside", 0o777)}, wantErr: true},
		{name: "absolute name", entries: []entry{fileE("/OUT/canary", "contained", 0o644)}, inside: "OUT/canary"},
		{name: "relative symlink parent", entries: []entry{
			symlinkE("up", "../outside"), fileE("up/canary", "contained", 0o644), fileE("up/new", "contained", 0o644),
		}, inside: "outside/canary"},
		{name: "deep relative symlink parent", entries: []entry{
			dirE("a", 0o755), symlinkE("a/up", "../../../../../../.."), fileE("a/up/OUT/canary", "contained", 0o644),
		}, inside: "OUT/canary"},
		{name: "absolute symlink parent", entries: []entry{
			symlinkE("abs", "OUT"), fileE("abs/canary", "contained", 0o644),
		}, inside: "OUT/canary"}, // made inside, as Docker does
		{name: "absolute symlink parent with the target made inside", entries: []entry{
			dirE("OUT", 0o755), symlinkE("abs", "OUT"), fileE("abs/canary", "contained", 0o644),
		}},
		{name: "chained symlinks", entries: []entry{
			symlinkE("a", "b"), symlinkE("b", "/.."), dirE("c", 0o755), fileE("a/c/new", "contained", 0o644),
		}, inside: "c/new"},
		{name: "symlink to the canary then a file of the same name", entries: []entry{
			symlinkE("l", "OUT/canary"), fileE("l", "replaces the link", 0o644),
		}, contextOK: true},
		{name: "symlink to the outside directory then a directory of the same name", entries: []entry{
			symlinkE("l", "OUT"), dirE("l", 0o777).with(func(h *tar.Header) { h.Uid = 1234 }),
		}, contextOK: true},
		{name: "hard link to a symlink pointing out, with a mode", entries: []entry{
			symlinkE("l", "OUT/canary"), linkE("h", "l").with(func(h *tar.Header) { h.Mode, h.Uid = 0o4777, 1234 }),
		}, contextOK: true},
		{name: "hard link with dot-dot", entries: []entry{linkE("h", "../outside/canary")}, wantErr: true},
		{name: "hard link with an absolute target", entries: []entry{linkE("h", "OUT/canary")}, wantErr: true},
		{name: "hard link through a symlinked directory", entries: []entry{
			symlinkE("d", "OUT"), linkE("h", "d/canary"),
		}, wantErr: true},
		{name: "hard link through a relative symlinked directory", entries: []entry{
			symlinkE("d", "../outside"), linkE("h", "d/canary"),
		}, wantErr: true},
		{name: "whiteout with dot-dot", entries: []entry{fileE("../outside/.wh.canary", "", 0)}, wantErr: true},
		{name: "whiteout through a symlink", entries: []entry{
			symlinkE("d", "OUT"), whE("d", "canary"), symlinkE("r", "../outside"), whE("r", "canary"),
		}},
		{name: "whiteout of a symlink pointing out", entries: []entry{
			symlinkE("l", "OUT"), whE("", "l"),
		}, contextOK: true},
		{name: "opaque through a symlink", entries: []entry{
			symlinkE("d", "../outside"), opqE("d"), symlinkE("e", "OUT"), opqE("e"),
		}},
		{name: "device node through a symlink", entries: []entry{
			symlinkE("d", "../outside"),
			{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "d/fifo", Mode: 0o666, ModTime: epoch}},
		}},
		{name: "xattr on a symlink pointing out", entries: []entry{
			symlinkE("l", "OUT/canary").with(func(h *tar.Header) {
				h.PAXRecords = map[string]string{"SCHILY.xattr.trusted.x": "pwned"}
			}),
		}, contextOK: true},
		{name: "file through a symlink made earlier in the same layer over a directory", entries: []entry{
			dirE("d", 0o755), fileE("d/x", "x", 0o644), symlinkE("d", "../outside"), fileE("d/canary", "contained", 0o644),
		}, inside: "outside/canary"},
	}
	for _, tc := range tests {
		for _, caller := range callerOptions {
			t.Run(tc.name+"/"+caller.name, func(t *testing.T) {
				wantErr, inside := tc.wantErr, tc.inside
				if caller.name == "context" {
					wantErr, inside = !tc.contextOK, ""
				}
				testContainment(t, tc.entries, caller.opts, wantErr, inside)
			})
		}
	}
}

// testContainment extracts entries into base/root beside base/outside with
// a canary, OUT standing for base/outside in names and symlink targets.
func testContainment(t *testing.T, entries []entry, opts []Option, wantErr bool, inside string) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	root := filepath.Join(base, "root")
	writeFile(t, filepath.Join(outside, "canary"), "canary", 0o644)
	must(t, os.Mkdir(root, 0o755))
	before := dump(t, base, "root")
	fix := func(s string) string { return strings.ReplaceAll(s, "OUT", strings.TrimPrefix(outside, "/")) }
	var fixed []entry
	for _, e := range entries {
		e.hdr.Name = fix(e.hdr.Name)
		if e.hdr.Typeflag == tar.TypeSymlink && strings.HasPrefix(e.hdr.Linkname, "OUT") {
			e.hdr.Linkname = "/" + fix(e.hdr.Linkname)
		} else {
			e.hdr.Linkname = fix(e.hdr.Linkname)
		}
		fixed = append(fixed, e)
	}
	err := Extract(root, bytes.NewReader(layerTar(t, fixed...)), opts...)
	if wantErr && err == nil {
		t.Errorf("Extract() succeeded, want it to refuse the layer")
	}
	if !wantErr && err != nil {
		t.Errorf("Extract() = %v, want the layer contained", err)
	}
	var ee *EntryError
	if err != nil && (!strings.Contains(err.Error(), "extracting layer entry") || !errors.As(err, &ee) || ee.Index == 0) {
		t.Errorf("Extract() = %v, want an *EntryError naming the entry", err)
	}
	if inside != "" {
		b, err := os.ReadFile(filepath.Join(root, fix(inside)))
		if err != nil || string(b) != "contained" {
			t.Errorf("reading %s in the root: %q, %v; want the contained file", fix(inside), b, err)
		}
	}
	if diff := cmp.Diff(before, dump(t, base, "root")); diff != "" {
		t.Errorf("outside the root (-want +got):\n%s", diff)
	}
}

// TestExtract_whiteoutNames feeds whiteouts whose name is no file of their
// directory (".wh." of "", "." or ".."), at the top and below it, and checks
// that each is refused with an error naming the entry, and that nothing was
// deleted: not the canary outside the root, not the root's own files, not an
// excluded path. The legitimate names starting the same way still work.
func TestExtract_whiteoutNames(t *testing.T) {
	for _, name := range []string{
		".wh.",           // whiteout of ""
		".wh..",          // whiteout of "."
		".wh...",         // whiteout of ".."
		"a/.wh.",         //
		"a/.wh..",        //
		"a/.wh...",       // a/.. is the root
		"a/b/.wh...",     //
		"./.wh...",       //
		"/.wh...",        //
		"a/../.wh...",    // cleaned to .wh...
		"l/.wh...",       // l is a symlink to a, made by the layer
		"up/.wh...",      // up is a symlink to .., made by the layer
		".wh...wh..opq",  // not the opaque marker: the whiteout of "..wh..opq", allowed below
		".wh..wh..opq/x", // below a directory of that name: a file
	} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			root := filepath.Join(base, "root")
			writeFile(t, filepath.Join(outside, "canary"), "canary", 0o644)
			writeFile(t, filepath.Join(root, "a/b/lower"), "lower", 0o644)
			writeFile(t, filepath.Join(root, "top"), "top", 0o644)
			writeFile(t, filepath.Join(root, "excluded/secret"), "secret", 0o600)
			writeFile(t, filepath.Join(root, "..wh..opq"), "odd but legal", 0o644)
			before := dump(t, base)
			entries := []entry{symlinkE("l", "a"), symlinkE("up", ".."), fileE(name, "", 0)}
			err := Extract(root, bytes.NewReader(layerTar(t, entries...)), WithExcludedPaths("excluded"))
			got := dump(t, base)
			delete(got, "root/l")
			delete(got, "root/up")
			switch name {
			case ".wh...wh..opq":
				if err != nil {
					t.Fatalf("Extract() = %v, want the whiteout of ..wh..opq applied", err)
				}
				delete(before, "root/..wh..opq")
			case ".wh..wh..opq/x":
				if err != nil {
					t.Fatalf("Extract() = %v, want a file", err)
				}
				delete(got, "root/.wh..wh..opq")
				delete(got, "root/.wh..wh..opq/x")
			default:
				if err == nil || !strings.Contains(err.Error(), "extracting layer entry") || !strings.Contains(err.Error(), "whiteout") {
					t.Errorf("Extract() = %v, want the whiteout refused with an error naming the entry", err)
				}
			}
			// Directory times may change (the symlinks were added); the
			// files and the directories themselves must all be there.
			for p, n := range before {
				g, ok := got[p]
				if !ok {
					t.Errorf("%s was deleted", p)
					continue
				}
				if n.Type != "dir" {
					if diff := cmp.Diff(n, g); diff != "" {
						t.Errorf("%s (-want +got):\n%s", p, diff)
					}
				}
			}
		})
	}
	// The names that start like these and are legitimate.
	t.Run("legitimate", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, filepath.Join(root, ".hidden"), "h", 0o644)
		writeFile(t, filepath.Join(root, "d/..x"), "x", 0o644)
		writeFile(t, filepath.Join(root, "o/lower"), "l", 0o644)
		mustExtract(t, root, layerTar(t,
			fileE(".wh..hidden", "", 0), fileE("d/.wh...x", "", 0), opqE("o"),
			fileE(".wh..wh.plnk", "", 0), fileE(".wh..wh.aufs", "", 0),
		))
		got := summarize(dump(t, root))
		want := map[string]string{"d": "dir", "o": "dir"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tree (-want +got):\n%s", diff)
		}
	})
}

// A layer that makes a directory, then replaces an ancestor of it with a
// symlink to an excluded path, must not date that path: directory times are
// set once the layer is written, and the directory is no longer where it
// was then.
func TestExtract_directoryTimesNotThroughLaterSymlink(t *testing.T) {
	root := t.TempDir()
	protected := filepath.Join(root, "slipway", "b")
	must(t, os.MkdirAll(protected, 0o755))
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	must(t, os.Chtimes(protected, old, old))
	layer := layerTar(t, dirE("a", 0o755), dirE("a/b", 0o755), symlinkE("a", "/slipway"))
	mustExtract(t, root, layer, WithExcludedPaths("slipway"))
	fi, err := os.Stat(protected)
	must(t, err)
	if !fi.ModTime().Equal(old) {
		t.Errorf("the excluded slipway/b was dated %v by the layer, want %v", fi.ModTime(), old)
	}
}
