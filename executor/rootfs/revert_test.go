package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// indexOf extracts layer into root (indexing it) and returns its index.
func indexOf(t testing.TB, root string, layer []byte) []byte {
	t.Helper()
	ix := NewIndex()
	mustExtract(t, root, layer, WithIndex(ix))
	b, err := ix.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// revertCase extracts lower then upper into one tree, reverts upper, and
// compares the tree with lower extracted alone (directories' modification
// times aside: extraction itself leaves some to the clock). It returns the
// lower layers Revert read.
func revertCase(t *testing.T, lower, upper [][]byte) []int {
	t.Helper()
	got, want := t.TempDir(), t.TempDir()
	var lowerIx, upperIx [][]byte
	for _, l := range lower {
		lowerIx = append(lowerIx, indexOf(t, got, l))
		mustExtract(t, want, l)
	}
	for _, l := range upper {
		upperIx = append(upperIx, indexOf(t, got, l))
	}
	var opened []int
	err := Revert(got, lowerIx, upperIx, func(i int) (io.ReadCloser, error) {
		opened = append(opened, i)
		return io.NopCloser(bytes.NewReader(lower[i])), nil
	})
	if err != nil {
		t.Fatalf("Revert: %v", err)
	}
	compareTrees(t, dump(t, want), dump(t, got))
	return opened
}

func compareTrees(t *testing.T, want, got map[string]node) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if w.Type == "dir" {
			w.Mtime, g.Mtime = 0, 0
		}
		if !ok {
			t.Errorf("%s: missing after the revert, want %+v", p, w)
		} else if fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: %+v after the revert, want %+v", p, g, w)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %+v left by the revert", p, g)
		}
	}
}

func TestRevert(t *testing.T) {
	base := layerTar(t,
		dirE("etc", 0o755), fileE("etc/passwd", "root\n", 0o644), fileE("etc/conf", "v1\n", 0o600),
		dirE("usr", 0o755), dirE("usr/lib", 0o755), fileE("usr/lib/a.so", "A", 0o755), fileE("usr/lib/b.so", "B", 0o755),
		symlinkE("lib", "usr/lib"), fileE("bin", "busybox", 0o755), linkE("sh", "bin"),
		dirE("var", 0o755), dirE("var/cache", 0o700), fileE("var/cache/x", "x", 0o644))
	second := layerTar(t, dirE("etc", 0o755), fileE("etc/conf", "v2\n", 0o600), whE("usr/lib", "b.so"),
		dirE("opt", 0o755), fileE("opt/tool", "t", 0o755))
	tests := []struct {
		name   string
		upper  [][]byte
		opened []int // the lower layers read
	}{
		{"added files and directories", [][]byte{layerTar(t, dirE("app", 0o755), fileE("app/main", "m", 0o755), dirE("etc", 0o755), fileE("etc/new", "n", 0o644))}, nil},
		{"a lower file changed", [][]byte{layerTar(t, dirE("etc", 0o755), fileE("etc/conf", "v3\n", 0o600))}, []int{1}},
		{"a lower file removed", [][]byte{layerTar(t, whE("usr/lib", "a.so"))}, []int{0}},
		{"a lower directory removed", [][]byte{layerTar(t, whE("", "var"))}, []int{0}},
		{"a lower directory made opaque", [][]byte{layerTar(t, dirE("usr/lib", 0o755), opqE("usr/lib"), fileE("usr/lib/c.so", "C", 0o755))}, []int{0}},
		{"a directory replaced by a file", [][]byte{layerTar(t, fileE("var", "now a file", 0o644))}, []int{0}},
		{"a directory's mode changed", [][]byte{layerTar(t, dirE("var/cache", 0o777))}, nil},
		{"a symlink retargeted", [][]byte{layerTar(t, symlinkE("lib", "usr/lib64"))}, nil},
		{"a hard link to a lower file", [][]byte{layerTar(t, linkE("bin2", "bin"))}, nil},
		{"a hard-linked lower file rewritten", [][]byte{layerTar(t, fileE("bin", "busybox2", 0o755), linkE("sh", "bin"))}, []int{0}},
		{"a file over what the second layer removed", [][]byte{layerTar(t, dirE("usr/lib", 0o755), fileE("usr/lib/b.so", "B2", 0o755))}, nil},
		{"two upper layers", [][]byte{
			layerTar(t, dirE("app", 0o755), fileE("app/x", "1", 0o644), whE("etc", "passwd")),
			layerTar(t, whE("", "app"), dirE("opt", 0o700), fileE("opt/tool", "t2", 0o755)),
		}, []int{0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opened := revertCase(t, [][]byte{base, second}, tc.upper)
			slices.Sort(opened)
			if !slices.Equal(opened, tc.opened) {
				t.Errorf("lower layers read: %v, want %v", opened, tc.opened)
			}
		})
	}
}

// TestRevert_symlinkedPath: a path of the upper layers under a symlink of
// the tree is not followed; the revert fails rather than guess.
func TestRevert_symlinkedPath(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	lower := layerTar(t, symlinkE("escape", outside), dirE("d", 0o755))
	lowerIx := indexOf(t, root, lower)
	// An index naming a path under the symlink alone (no snapshot writes
	// one: a crafted state directory could).
	upperIx := indexOf(t, t.TempDir(), layerTar(t, fileE("escape/planted", "x", 0o644)))
	if err := os.WriteFile(filepath.Join(outside, "planted"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Revert(root, [][]byte{lowerIx}, [][]byte{upperIx}, func(int) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(lower)), nil
	})
	if !errors.Is(err, ErrNotRevertible) {
		t.Errorf("Revert = %v, want ErrNotRevertible", err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "planted")); err != nil || string(b) != "host" {
		t.Errorf("the revert touched the symlink's target outside the root: %q, %v", b, err)
	}
}

// TestRevert_snapshots: random changes to a tree, recorded by the
// Snapshotter as layers (as RUN steps are), are reverted to the tree the
// lower layers make.
func TestRevert_snapshots(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 17))
			lower := [][]byte{randomLayer(t, r, false), randomLayer(t, r, true)}
			got := t.TempDir()
			var lowerIx [][]byte
			for _, l := range lower {
				lowerIx = append(lowerIx, indexOf(t, got, l))
			}
			snap, err := NewSnapshotter(got)
			if err != nil {
				t.Fatal(err)
			}
			var upperIx [][]byte
			for range 1 + r.IntN(3) {
				mutate(t, r, got)
				ix := NewIndex()
				var buf bytes.Buffer
				if _, err := snap.Snapshot(&buf, IndexTo(ix)); err != nil {
					t.Fatal(err)
				}
				b, err := ix.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				upperIx = append(upperIx, b)
			}
			want := t.TempDir()
			for _, l := range lower {
				mustExtract(t, want, l)
			}
			err = Revert(got, lowerIx, upperIx, func(i int) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(lower[i])), nil
			})
			if err != nil {
				t.Fatalf("Revert: %v", err)
			}
			compareTrees(t, dump(t, want), dump(t, got))
		})
	}
}

var randomNames = []string{"a", "b", "c", "d/e", "d/f", "d/g/h", "d/g/i", "j/k"}

// randomLayer is a layer of random entries among randomNames (with their
// parents); whiteouts too when withWhiteouts.
func randomLayer(t *testing.T, r *rand.Rand, withWhiteouts bool) []byte {
	var es []entry
	seen := map[string]bool{}
	for _, n := range randomNames {
		if r.IntN(3) == 0 {
			continue
		}
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			if !seen[d] {
				seen[d] = true
				es = append(es, dirE(d, 0o755))
			}
		}
		switch {
		case withWhiteouts && r.IntN(4) == 0:
			es = append(es, whE(filepath.Dir(n), filepath.Base(n)))
		case r.IntN(5) == 0:
			es = append(es, symlinkE(n, "target-"+n))
		default:
			es = append(es, fileE(n, fmt.Sprintf("%s-%d", n, r.IntN(100)), 0o644))
		}
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.hdr.Name < b.hdr.Name {
			return -1
		}
		return 1
	})
	return layerTar(t, es...)
}

// mutate changes the tree at root at random, as a RUN step would.
func mutate(t *testing.T, r *rand.Rand, root string) {
	for range 1 + r.IntN(5) {
		n := filepath.Join(root, randomNames[r.IntN(len(randomNames))])
		var err error
		switch r.IntN(7) {
		case 0:
			err = os.RemoveAll(n)
		case 1:
			os.MkdirAll(filepath.Dir(n), 0o755)
			os.RemoveAll(n)
			err = os.WriteFile(n, []byte(fmt.Sprint(r.Int())), 0o600)
		case 2:
			os.RemoveAll(n)
			err = os.MkdirAll(filepath.Join(n, "sub"), 0o750)
		case 3:
			err = os.Chmod(filepath.Dir(n), 0o711)
		case 4:
			os.RemoveAll(n)
			os.MkdirAll(filepath.Dir(n), 0o755)
			err = os.Symlink("elsewhere", n)
		case 5:
			os.RemoveAll(n + "-link")
			err = os.Link(n, n+"-link")
		case 6:
			if f, ferr := os.OpenFile(n, os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
				_, err = f.WriteString("more")
				f.Close()
			}
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			t.Logf("mutation of %s: %v", n, err)
		}
	}
}
