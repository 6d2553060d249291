package rootfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// baseLayer is the image the snapshot tests start from.
func baseLayer(t testing.TB) []byte {
	return layerTar(t,
		dirE("bin", 0o755),
		fileE("bin/busybox", "bb", 0o755),
		linkE("bin/ls", "bin/busybox"),
		symlinkE("bin/sh", "busybox"),
		dirE("etc", 0o755),
		fileE("etc/passwd", "root\n", 0o644),
		fileE("etc/motd", "hi\n", 0o644),
		dirE("etc/apt", 0o755),
		fileE("etc/apt/sources", "deb\n", 0o644),
		dirE("var", 0o755),
		dirE("var/lib", 0o755),
		fileE("var/lib/state", "s", 0o600),
		dirE("tmp", 0o1777),
		dirE("home", 0o755),
		fileE("home/f", "f", 0o644),
	)
}

// changes are the build steps of the snapshot tests.
var changes = []struct {
	name string
	do   func(t *testing.T, root string)
	// want is the layer's listing, when it is worth pinning.
	want []string
}{
	{
		name: "add a file in a new directory",
		do:   func(t *testing.T, root string) { writeFile(t, filepath.Join(root, "opt/app/run"), "#!", 0o755) },
		want: []string{"opt/", "opt/app/", "opt/app/run"},
	},
	{
		name: "change content",
		do:   func(t *testing.T, root string) { writeFile(t, filepath.Join(root, "etc/motd"), "hello\n", 0o644) },
		want: []string{"etc/", "etc/motd"},
	},
	{
		name: "setuid and sticky",
		do: func(t *testing.T, root string) {
			must(t, os.Chmod(filepath.Join(root, "etc/passwd"), 0o4711))
			must(t, os.Mkdir(filepath.Join(root, "var/spool"), 0o755))
			must(t, os.Chmod(filepath.Join(root, "var/spool"), 0o3777))
		},
		want: []string{"etc/", "etc/passwd", "var/", "var/spool/"},
	},
	{
		name: "ownership",
		do:   func(t *testing.T, root string) { must(t, os.Lchown(filepath.Join(root, "home/f"), 1000, 1000)) },
		want: []string{"home/", "home/f"},
	},
	{
		name: "delete a file and a tree",
		do: func(t *testing.T, root string) {
			must(t, os.Remove(filepath.Join(root, "etc/motd")))
			must(t, os.RemoveAll(filepath.Join(root, "var")))
		},
		want: []string{".wh.var", "etc/", "etc/.wh.motd"},
	},
	{
		name: "replace a directory",
		do: func(t *testing.T, root string) {
			must(t, os.RemoveAll(filepath.Join(root, "etc/apt")))
			writeFile(t, filepath.Join(root, "etc/apt/other"), "o", 0o644)
		},
		want: []string{"etc/", "etc/apt/", "etc/apt/.wh..wh..opq", "etc/apt/other"},
	},
	{
		name: "file becomes directory, directory becomes symlink",
		do: func(t *testing.T, root string) {
			must(t, os.Remove(filepath.Join(root, "home/f")))
			writeFile(t, filepath.Join(root, "home/f/inner"), "i", 0o644)
			must(t, os.RemoveAll(filepath.Join(root, "var/lib")))
			must(t, os.Symlink("/tmp", filepath.Join(root, "var/lib")))
		},
		want: []string{"home/", "home/f/", "home/f/inner", "var/", "var/lib -> /tmp"},
	},
	{
		name: "hard links",
		do: func(t *testing.T, root string) {
			writeFile(t, filepath.Join(root, "usr/b"), "shared", 0o644)
			must(t, os.Link(filepath.Join(root, "usr/b"), filepath.Join(root, "usr/a")))
			must(t, os.Link(filepath.Join(root, "etc/passwd"), filepath.Join(root, "usr/pw")))
		},
		want: []string{"etc/", "etc/passwd", "usr/", "usr/a", "usr/b link usr/a", "usr/pw link etc/passwd"},
	},
	{
		name: "retarget a symlink and add an empty directory",
		do: func(t *testing.T, root string) {
			must(t, os.Remove(filepath.Join(root, "bin/sh")))
			must(t, os.Symlink("/bin/busybox", filepath.Join(root, "bin/sh")))
			must(t, os.MkdirAll(filepath.Join(root, "srv/empty"), 0o700))
		},
		want: []string{"bin/", "bin/sh -> /bin/busybox", "srv/", "srv/empty/"},
	},
	{
		name: "special files and a capability",
		do: func(t *testing.T, root string) {
			must(t, unix.Mkfifo(filepath.Join(root, "tmp/fifo"), 0o600))
			if err := unix.Mknod(filepath.Join(root, "tmp/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Logf("no device node: %v", err)
			}
			cap := []byte("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
			if err := unix.Setxattr(filepath.Join(root, "bin/busybox"), "security.capability", cap, 0); err != nil {
				t.Logf("no capability: %v", err)
			}
		},
	},
	{
		name: "delete the whole base",
		do: func(t *testing.T, root string) {
			for _, d := range []string{"bin", "etc", "var", "tmp", "home"} {
				must(t, os.RemoveAll(filepath.Join(root, d)))
			}
		},
		want: []string{".wh.bin", ".wh.etc", ".wh.home", ".wh.tmp", ".wh.var"},
	},
}

// TestSnapshotter_Snapshot_roundTrip checks that base + snapshot, extracted
// into a fresh root, gives back the modified tree.
func TestSnapshotter_Snapshot_roundTrip(t *testing.T) {
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			rootA, rootB := t.TempDir(), t.TempDir()
			base := baseLayer(t)
			mustExtract(t, rootA, base)
			s, err := NewSnapshotter(rootA)
			must(t, err)
			tc.do(t, rootA)
			var layer bytes.Buffer
			changed, err := s.Snapshot(&layer)
			if err != nil || !changed {
				t.Fatalf("Snapshot() = %v, %v; want true, nil", changed, err)
			}
			if tc.want != nil {
				if diff := cmp.Diff(tc.want, listing(t, layer.Bytes())); diff != "" {
					t.Errorf("layer (-want +got):\n%s", diff)
				}
			}
			mustExtract(t, rootB, base)
			mustExtract(t, rootB, layer.Bytes())
			if diff := cmp.Diff(dump(t, rootA), dump(t, rootB)); diff != "" {
				t.Errorf("tree rebuilt from the layers (-want +got):\n%s", diff)
			}
			// The snapshot became the baseline.
			var again bytes.Buffer
			changed, err = s.Snapshot(&again)
			if err != nil || changed || again.Len() != 0 {
				t.Errorf("second Snapshot() = %v, %v, %d bytes; want false, nil, 0", changed, err, again.Len())
			}
		})
	}
}

func TestSnapshotter_Snapshot_unchanged(t *testing.T) {
	root := t.TempDir()
	mustExtract(t, root, baseLayer(t))
	s, err := NewSnapshotter(root)
	must(t, err)
	// Reading does not count as a change.
	if _, err := os.ReadFile(filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	changed, err := s.Snapshot(&w)
	if err != nil || changed || w.Len() != 0 {
		t.Errorf("Snapshot() = %v, %v, %d bytes; want false, nil, 0", changed, err, w.Len())
	}
}

// TestSnapshotter_Snapshot_deterministic builds the same tree twice in two
// roots, at different inodes, and wants byte-identical layers.
func TestSnapshotter_Snapshot_deterministic(t *testing.T) {
	for _, opts := range [][]SnapshotOption{nil, {ModTime(time.Unix(0, 0))}} {
		var layers [][]byte
		for range 2 {
			root := t.TempDir()
			mustExtract(t, root, baseLayer(t))
			s, err := NewSnapshotter(root)
			must(t, err)
			for i, tc := range changes[:9] {
				if i == 5 || i == 6 {
					continue // they conflict with the other steps
				}
				tc.do(t, root)
			}
			// Fix the times that would otherwise differ between the runs.
			filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
				must(t, err)
				ts := []unix.Timespec{unix.NsecToTimespec(epoch.UnixNano()), unix.NsecToTimespec(epoch.UnixNano())}
				return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
			})
			var w bytes.Buffer
			if _, err := s.Snapshot(&w, opts...); err != nil {
				t.Fatal(err)
			}
			layers = append(layers, w.Bytes())
		}
		if !bytes.Equal(layers[0], layers[1]) {
			t.Errorf("options %v: layers differ:\n%s", opts, cmp.Diff(listing(t, layers[0]), listing(t, layers[1])))
		}
	}
}

func TestSnapshotter_Snapshot_exclude(t *testing.T) {
	root := t.TempDir()
	mustExtract(t, root, baseLayer(t))
	writeFile(t, filepath.Join(root, "kaniko/old"), "o", 0o644)
	s, err := NewSnapshotter(root, WithExcludedPaths("kaniko", "proc"), WithExclude(func(rel string) bool { return rel == "etc/hosts" }))
	must(t, err)
	writeFile(t, filepath.Join(root, "kaniko/new"), "secret", 0o600)
	must(t, os.Remove(filepath.Join(root, "kaniko/old")))
	writeFile(t, filepath.Join(root, "proc/1/status"), "x", 0o644)
	writeFile(t, filepath.Join(root, "etc/hosts"), "127.0.0.1", 0o644)
	writeFile(t, filepath.Join(root, "etc/new"), "n", 0o644)
	var w bytes.Buffer
	changed, err := s.Snapshot(&w)
	must(t, err)
	if diff := cmp.Diff([]string{"etc/", "etc/new"}, listing(t, w.Bytes())); !changed || diff != "" {
		t.Errorf("Snapshot() changed=%v, layer (-want +got):\n%s", changed, diff)
	}
}

func TestSnapshotter_Snapshot_paths(t *testing.T) {
	root := t.TempDir()
	mustExtract(t, root, baseLayer(t))
	must(t, os.Symlink("etc", filepath.Join(root, "conf")))
	s, err := NewSnapshotter(root)
	must(t, err)
	writeFile(t, filepath.Join(root, "etc/apt/new"), "n", 0o644)
	must(t, os.Remove(filepath.Join(root, "etc/apt/sources")))
	writeFile(t, filepath.Join(root, "home/later"), "l", 0o644)

	var w bytes.Buffer
	_, err = s.Snapshot(&w, Paths("/conf/apt", "missing/dir"))
	must(t, err)
	want := []string{"etc/", "etc/apt/", "etc/apt/.wh.sources", "etc/apt/new"}
	if diff := cmp.Diff(want, listing(t, w.Bytes())); diff != "" {
		t.Errorf("Paths(conf/apt) layer (-want +got):\n%s", diff)
	}
	w.Reset()
	_, err = s.Snapshot(&w)
	must(t, err)
	if diff := cmp.Diff([]string{"home/", "home/later"}, listing(t, w.Bytes())); diff != "" {
		t.Errorf("full layer after Paths (-want +got):\n%s", diff)
	}
}

func TestSnapshotter_Snapshot_modTime(t *testing.T) {
	root := t.TempDir()
	mustExtract(t, root, baseLayer(t))
	s, err := NewSnapshotter(root)
	must(t, err)
	writeFile(t, filepath.Join(root, "etc/new"), "n", 0o644)
	must(t, os.Remove(filepath.Join(root, "etc/motd")))
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(root, "etc/new"), old, old))
	clamp := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	var w bytes.Buffer
	_, err = s.Snapshot(&w, ModTime(clamp))
	must(t, err)
	root2 := t.TempDir()
	mustExtract(t, root2, w.Bytes())
	got := map[string]time.Time{}
	for p, n := range dump(t, root2) {
		got[p] = time.Unix(n.Mtime, 0).UTC()
	}
	want := map[string]time.Time{"etc": clamp, "etc/new": old, "etc/.wh.motd": clamp}
	delete(got, "etc/.wh.motd") // a whiteout of nothing leaves nothing
	delete(want, "etc/.wh.motd")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mtimes (-want +got):\n%s", diff)
	}
}

func TestClear(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "canary"), "c", 0o644)
	mustExtract(t, root, baseLayer(t))
	writeFile(t, filepath.Join(root, "kaniko/secret"), "s", 0o600)
	writeFile(t, filepath.Join(root, "etc/resolv.conf"), "mounted", 0o644)
	must(t, os.Symlink(outside, filepath.Join(root, "out")))
	must(t, os.Symlink(filepath.Join(outside, "canary"), filepath.Join(root, "etc/c")))
	must(t, Clear(root, WithExcludedPaths("kaniko", "etc/resolv.conf")))
	got := summarize(dump(t, root))
	want := map[string]string{"kaniko": "dir", "kaniko/secret": "file:s", "etc": "dir", "etc/resolv.conf": "file:mounted"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after Clear (-want +got):\n%s", diff)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "canary")); err != nil || string(b) != "c" {
		t.Errorf("canary: %q, %v", b, err)
	}
}

func TestMountPoints(t *testing.T) {
	mountinfo := []byte(`22 1 0:21 / / rw - overlay overlay rw
23 22 0:22 / /proc rw - proc proc rw
24 22 0:23 / /kaniko/my\040dir rw - tmpfs tmpfs rw
25 22 0:24 / /etc/hosts rw - ext4 /dev/sda rw
26 22 0:24 / /workspace/root/dev rw - ext4 /dev/sda rw
`)
	tests := []struct {
		root string
		want []string
	}{
		{"/", []string{"etc/hosts", "kaniko/my dir", "proc", "workspace/root/dev"}},
		{"/workspace/root", []string{"dev"}},
		{"/nowhere", nil},
	}
	for _, tc := range tests {
		t.Run(tc.root, func(t *testing.T) {
			got, err := mountPoints(tc.root, mountinfo, func(p string) (string, error) { return p, nil })
			must(t, err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mountPoints(%s) (-want +got):\n%s", tc.root, diff)
			}
		})
	}
	got, err := MountPoints("/")
	if err != nil || len(got) == 0 {
		t.Errorf("MountPoints(/) = %v, %v; want /proc at least", got, err)
	}
}

func BenchmarkSnapshotter_Snapshot(b *testing.B) {
	root := b.TempDir()
	for i := range 20000 {
		p := filepath.Join(root, fmt.Sprintf("d%02d/s%02d/f%05d", i%40, i%25, i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("small file"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	s, err := NewSnapshotter(root)
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range []int{1, 0} {
		name := "unchanged"
		if w == 1 {
			name = "unchanged/sequential"
			defer func(old func() int) { walkers = old }(walkers)
			walkers = func() int { return 1 }
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if changed, err := s.Snapshot(io.Discard); err != nil || changed {
					b.Fatal(changed, err)
				}
			}
		})
	}
	b.Run("all new", func(b *testing.B) {
		for b.Loop() {
			s.base = map[string]*state{}
			if changed, err := s.Snapshot(io.Discard); err != nil || !changed {
				b.Fatal(changed, err)
			}
		}
	})
}

// TestSnapshotter_Snapshot_whiteoutNames checks that a step cannot plant a
// whiteout of "." or "..": a file so named fails the snapshot, naming it,
// and a file that only starts like one is stored.
func TestSnapshotter_Snapshot_whiteoutNames(t *testing.T) {
	for _, name := range []string{".wh.", ".wh..", ".wh..."} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			s, err := NewSnapshotter(root)
			must(t, err)
			writeFile(t, filepath.Join(root, "tmp", name), "", 0o644)
			_, err = s.Snapshot(io.Discard)
			if err == nil || !strings.Contains(err.Error(), "tmp/"+name) {
				t.Errorf("Snapshot() = %v, want an error naming tmp/%s", err, name)
			}
		})
	}
	root := t.TempDir()
	s, err := NewSnapshotter(root)
	must(t, err)
	writeFile(t, filepath.Join(root, ".wh..hidden"), "", 0o644)
	if _, err := s.Snapshot(io.Discard); err != nil {
		t.Errorf("Snapshot() = %v, want .wh..hidden stored", err)
	}
}
