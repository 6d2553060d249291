package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// coveredNames are what an executor pod covers: its own /proc, /dev and /sys.
var coveredNames = []string{"proc", "dev", "sys"}

// presence is what c says of coveredNames.
func presence(c *Covered) map[string]bool {
	out := map[string]bool{}
	for _, n := range coveredNames {
		out[n] = c.Has(n)
	}
	return out
}

// coveredRoot returns a root holding its own proc, dev and sys (with content, as a
// pod's mounts have), which the options exclude, and the options with c.
func coveredRoot(t *testing.T, c *Covered) (string, []Option) {
	t.Helper()
	root := t.TempDir()
	for _, n := range coveredNames {
		writeFile(t, filepath.Join(root, n, "system-owned"), "pod\n", 0o644)
	}
	return root, []Option{WithExcludedPaths(coveredNames...), WithCovered(c)}
}

func TestCovered_extract(t *testing.T) {
	base := layerTar(t, dirE("bin", 0o755), fileE("bin/sh", "sh", 0o755))
	for _, tc := range []struct {
		name   string
		layers [][]byte
		want   map[string]bool
	}{
		{"none", [][]byte{base}, map[string]bool{"proc": false, "dev": false, "sys": false}},
		{
			"directories and an entry below one",
			[][]byte{layerTar(t, dirE("proc", 0o555), dirE("dev", 0o755), fileE("dev/console", "", 0o600))},
			map[string]bool{"proc": true, "dev": true, "sys": false},
		},
		{
			"only an entry below, its directory implied",
			[][]byte{layerTar(t, fileE("sys/x", "", 0o644))},
			map[string]bool{"proc": false, "dev": false, "sys": true},
		},
		{
			"whiteout in a later layer",
			[][]byte{layerTar(t, dirE("proc", 0o555), dirE("sys", 0o555)), layerTar(t, whE("", "proc"))},
			map[string]bool{"proc": false, "dev": false, "sys": true},
		},
		{
			"whiteout hides lower layers only",
			[][]byte{layerTar(t, dirE("proc", 0o555), whE("", "proc"))},
			map[string]bool{"proc": true, "dev": false, "sys": false},
		},
		{
			"a whiteout below a name deletes the entry, not the name",
			[][]byte{layerTar(t, dirE("dev", 0o755), fileE("dev/x", "", 0o644)), layerTar(t, whE("dev", "x"))},
			map[string]bool{"proc": false, "dev": true, "sys": false},
		},
		{
			"opaque root keeps its own layer's",
			[][]byte{layerTar(t, dirE("proc", 0o555), dirE("dev", 0o755)), layerTar(t, dirE("sys", 0o555), opqE(""))},
			map[string]bool{"proc": false, "dev": false, "sys": true},
		},
		{
			"opaque root, then an entry",
			[][]byte{layerTar(t, dirE("proc", 0o555), dirE("dev", 0o755)), layerTar(t, opqE(""), dirE("dev", 0o755))},
			map[string]bool{"proc": false, "dev": true, "sys": false},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCovered(coveredNames...)
			root, opts := coveredRoot(t, c)
			before := dump(t, root)
			for _, l := range tc.layers {
				mustExtract(t, root, l, opts...)
			}
			if diff := cmp.Diff(tc.want, presence(c)); diff != "" {
				t.Errorf("presence (-want +got):\n%s", diff)
			}
			// The pod's own stay as they were.
			after := dump(t, root)
			for _, n := range coveredNames {
				p := n + "/system-owned"
				if diff := cmp.Diff(before[p], after[p]); diff != "" {
					t.Errorf("%s changed (-before +after):\n%s", p, diff)
				}
			}
		})
	}
	t.Run("an archive that is no layer", func(t *testing.T) {
		c := NewCovered(coveredNames...)
		root, opts := coveredRoot(t, c)
		mustExtract(t, root, layerTar(t, dirE("proc", 0o555)), append(opts, WithoutWhiteouts())...)
		if c.Has("proc") {
			t.Error("an ADD archive's proc/ counted as the image's")
		}
	})
	t.Run("clear", func(t *testing.T) {
		c := NewCovered(coveredNames...)
		root, opts := coveredRoot(t, c)
		mustExtract(t, root, layerTar(t, dirE("proc", 0o555), dirE("dev", 0o755), dirE("sys", 0o555)), opts...)
		if err := Clear(root, opts...); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]bool{"proc": false, "dev": false, "sys": false}, presence(c)); diff != "" {
			t.Errorf("presence after Clear (-want +got):\n%s", diff)
		}
	})
}

// headers are a layer's tar headers, by name.
func headers(t *testing.T, layer []byte) map[string]tar.Header {
	t.Helper()
	out := map[string]tar.Header{}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = *h
	}
}

// TestSnapshot_defaultMounts: a RUN's snapshot in a root whose /proc, /dev and /sys are
// the system's (in-place builds) writes the ones the image lacks as runc leaves them in a
// BuildKit build: empty directories, 0755, owned by root.
func TestSnapshot_defaultMounts(t *testing.T) {
	base := layerTar(t, dirE("bin", 0o755), fileE("bin/sh", "sh", 0o755), dirE("etc", 0o755))
	t.Run("missing", func(t *testing.T) {
		c := NewCovered(coveredNames...)
		root, opts := coveredRoot(t, c)
		mustExtract(t, root, base, opts...)
		s, err := NewSnapshotter(root, opts...)
		must(t, err)
		var buf bytes.Buffer
		ix := NewIndex()
		changed, err := s.Snapshot(&buf, DefaultMounts(coveredNames...), ModTime(epoch), IndexTo(ix))
		if err != nil || !changed {
			t.Fatalf("Snapshot: changed %v, %v; want a layer", changed, err)
		}
		if diff := cmp.Diff([]string{"dev/", "proc/", "sys/"}, listing(t, buf.Bytes())); diff != "" {
			t.Errorf("layer (-want +got):\n%s", diff)
		}
		for name, h := range headers(t, buf.Bytes()) {
			if h.Typeflag != tar.TypeDir || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
				t.Errorf("%s: type %c mode %o owner %d:%d mtime %v; want a directory, 755, 0:0, %v", name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime, epoch)
			}
		}
		ixb, err := ix.Bytes()
		must(t, err)
		zr, err := gzip.NewReader(bytes.NewReader(ixb))
		must(t, err)
		ixTar, err := io.ReadAll(zr)
		must(t, err)
		if diff := cmp.Diff([]string{"dev/", "proc/", "sys/"}, listing(t, ixTar)); diff != "" {
			t.Errorf("index (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]bool{"proc": true, "dev": true, "sys": true}, presence(c)); diff != "" {
			t.Errorf("presence after the snapshot (-want +got):\n%s", diff)
		}
		// The next step's image has them: nothing more.
		buf.Reset()
		if changed, err := s.Snapshot(&buf, DefaultMounts(coveredNames...)); err != nil || changed {
			t.Errorf("second Snapshot: changed %v, %v; want nothing", changed, err)
		}
	})
	t.Run("with the step's changes, without a clamp", func(t *testing.T) {
		c := NewCovered(coveredNames...)
		root, opts := coveredRoot(t, c)
		mustExtract(t, root, layerTar(t, dirE("bin", 0o755), fileE("bin/sh", "sh", 0o755), dirE("etc", 0o755), dirE("sys", 0o555)), opts...)
		s, err := NewSnapshotter(root, opts...)
		must(t, err)
		writeFile(t, filepath.Join(root, "etc/motd"), "hi\n", 0o644)
		start := time.Now().Truncate(time.Second)
		var buf bytes.Buffer
		if _, err := s.Snapshot(&buf, DefaultMounts(coveredNames...)); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"dev/", "etc/", "etc/motd", "proc/"}, listing(t, buf.Bytes())); diff != "" {
			t.Errorf("layer (-want +got):\n%s", diff)
		}
		if h := headers(t, buf.Bytes())["proc/"]; h.ModTime.Before(start) || h.ModTime.After(time.Now()) {
			t.Errorf("proc/ mtime %v, want the snapshot's time", h.ModTime)
		}
	})
	t.Run("present", func(t *testing.T) {
		c := NewCovered(coveredNames...)
		root, opts := coveredRoot(t, c)
		mustExtract(t, root, base, opts...)
		mustExtract(t, root, layerTar(t, dirE("proc", 0o555), dirE("dev", 0o755), dirE("sys", 0o555)), opts...)
		s, err := NewSnapshotter(root, opts...)
		must(t, err)
		var buf bytes.Buffer
		if changed, err := s.Snapshot(&buf, DefaultMounts(coveredNames...)); err != nil || changed {
			t.Errorf("Snapshot: changed %v, %v; want nothing", changed, err)
		}
	})
	t.Run("the tree's own", func(t *testing.T) {
		// Not excluded (a chroot's root, where the runner makes them): the tree shows them
		// as it has them, and nothing is added.
		c := NewCovered(coveredNames...)
		root := t.TempDir()
		opts := []Option{WithCovered(c)}
		mustExtract(t, root, base, opts...)
		s, err := NewSnapshotter(root, opts...)
		must(t, err)
		must(t, os.Mkdir(filepath.Join(root, "proc"), 0o700))
		var buf bytes.Buffer
		if _, err := s.Snapshot(&buf, DefaultMounts(coveredNames...)); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"proc/"}, listing(t, buf.Bytes())); diff != "" {
			t.Errorf("layer (-want +got):\n%s", diff)
		}
		if h := headers(t, buf.Bytes())["proc/"]; h.Mode != 0o700 {
			t.Errorf("proc/ mode %o, want the tree's 700", h.Mode)
		}
	})
	t.Run("without covered", func(t *testing.T) {
		root := t.TempDir()
		opts := []Option{WithExcludedPaths(coveredNames...)}
		mustExtract(t, root, base, opts...)
		s, err := NewSnapshotter(root, opts...)
		must(t, err)
		var buf bytes.Buffer
		if changed, err := s.Snapshot(&buf, DefaultMounts(coveredNames...)); err != nil || changed {
			t.Errorf("Snapshot: changed %v, %v; want nothing", changed, err)
		}
	})
}
