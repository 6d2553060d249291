package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRoot_containment opens directories of a root, lets "the step" replace
// them with symlinks pointing out of the root, and checks that the Dirs
// still act on the directories they opened and nothing outside changes.
func TestRoot_containment(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	root := filepath.Join(base, "root")
	writeFile(t, filepath.Join(outside, "b/keep"), "victim", 0o644)
	writeFile(t, filepath.Join(outside, "s"), "victim", 0o644)
	must(t, os.MkdirAll(filepath.Join(outside, "x"), 0o755))
	writeFile(t, filepath.Join(root, "a/s"), "set aside", 0o644)
	writeFile(t, filepath.Join(root, "excluded/keep"), "kept", 0o644)
	before := dump(t, outside)

	r, err := OpenRoot(root, WithExcludedPaths("excluded"))
	must(t, err)
	defer r.Close()
	a, err := r.OpenDir("/a")
	must(t, err)
	defer a.Close()
	must(t, a.Rename("s", "s.stash"))
	b, err := a.Mkdir("b", 0o755|fs.ModeSticky, -1, -1)
	must(t, err)
	x, err := a.Mkdir("x", 0o755, -1, -1)
	must(t, err)
	must(t, a.WriteFile("s", []byte("secret"), 0o400, -1, -1))
	if fi, err := a.Lstat("b"); err != nil || fi.Mode() != fs.ModeDir|fs.ModeSticky|0o755 {
		t.Errorf("Lstat(b) = %v, %v; want a sticky directory 0755", fi, err)
	}

	// The step: a moves away, a symlink to the outside takes its place.
	must(t, os.Rename(filepath.Join(root, "a"), filepath.Join(root, "a.old")))
	must(t, os.Symlink(outside, filepath.Join(root, "a")))

	must(t, a.RemoveAll("b"))
	must(t, a.RemoveAll("s"))
	must(t, a.Rename("s.stash", "s"))
	if removed, err := a.RemoveDir("x", x); err != nil || !removed {
		t.Errorf("RemoveDir(x) = %v, %v; want it removed", removed, err)
	}
	if removed, err := a.RemoveDir("x", b); err != nil || removed {
		t.Errorf("RemoveDir(x) of another directory = %v, %v; want nothing done", removed, err)
	}
	b.Close()
	x.Close()
	if diff := cmp.Diff(before, dump(t, outside)); diff != "" {
		t.Errorf("outside the root (-want +got):\n%s", diff)
	}
	got := summarize(dump(t, filepath.Join(root, "a.old")))
	if diff := cmp.Diff(map[string]string{"s": "file:set aside"}, got); diff != "" {
		t.Errorf("a.old (-want +got):\n%s", diff)
	}

	// Through the symlink, OpenDir stays in the root.
	d, err := r.OpenDir("a")
	if err == nil {
		t.Errorf("OpenDir(a) through a symlink to %s opened %s, want it missing in the root", outside, d.Rel())
		d.Close()
	}
	for _, name := range []string{"", ".", "..", "a/b"} {
		root, err := r.OpenDir("")
		must(t, err)
		if err := root.RemoveAll(name); err == nil {
			t.Errorf("RemoveAll(%q) succeeded", name)
		}
		root.Close()
	}
	top, err := r.OpenDir("/")
	must(t, err)
	defer top.Close()
	if err := top.RemoveAll("excluded"); err == nil {
		t.Errorf("RemoveAll(excluded) succeeded")
	}
	if _, err := os.Stat(filepath.Join(root, "excluded/keep")); err != nil {
		t.Errorf("the excluded path: %v", err)
	}
	// Mkdir and WriteFile do not follow a symlink of the name.
	if _, err := top.Mkdir("a", 0o755, -1, -1); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Mkdir over a symlink = %v, want it to exist", err)
	}
	if err := top.WriteFile("a", nil, 0o644, -1, -1); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteFile over a symlink = %v, want it to exist", err)
	}
}
