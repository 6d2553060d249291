package rootfs

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
)

// indexLayers are two layers covering every kind of entry an index must
// carry: directories, files (with and without the content an index keeps),
// symlinks, hard links, a fifo, extended attributes, ownership, a whiteout
// and an opaque directory.
func indexLayers(t *testing.T) [][]byte {
	lower := layerTar(t,
		dirE("etc", 0o755),
		fileE("etc/passwd", "root:x:0:0::/root:/bin/sh\nweb:x:1234:1234::/home/web:/bin/sh\n", 0o644),
		fileE("etc/group", "root:x:0:\nweb:x:1234:\n", 0o644),
		fileE("etc/os-release", "ID=test\n", 0o644),
		dirE("srv", 0o750).with(func(h *tar.Header) { h.Uid, h.Gid = 1234, 1234 }),
		fileE("srv/big", string(bytes.Repeat([]byte("x"), 100000)), 0o640),
		linkE("srv/big-link", "srv/big"),
		symlinkE("srv/cur", "big"),
		fileE("srv/attr", "a", 0o644).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{xattrPrefix + "user.note": "kept"}
		}),
		dirE("old", 0o755),
		fileE("old/a", "a", 0o644),
		dirE("opq", 0o755),
		fileE("opq/lower", "l", 0o644),
	)
	upper := layerTar(t,
		whE("", "old"),
		dirE("opq", 0o700),
		opqE("opq"),
		fileE("opq/upper", "u", 0o600),
		entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "srv/fifo", Mode: 0o600, ModTime: epoch}},
		fileE("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o600),
	)
	return [][]byte{lower, upper}
}

// gunzip decompresses an index.
func gunzip(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIndex checks that extracting layers' indexes gives the tree
// extracting the layers gives, every entry's metadata alike, with files
// empty but /etc/passwd and /etc/group; and that Extract and Filter record
// the same index.
func TestIndex(t *testing.T) {
	layers := indexLayers(t)
	full := t.TempDir()
	fromIndex := t.TempDir()
	for _, l := range layers {
		ix := NewIndex()
		mustExtract(t, full, l, WithIndex(ix))
		data, err := ix.Bytes()
		if err != nil {
			t.Fatalf("Index.Bytes: %v", err)
		}
		if len(data) >= len(l) {
			t.Errorf("index of %d bytes for a layer of %d", len(data), len(l))
		}
		index := gunzip(t, data)
		if diff := cmp.Diff(listing(t, l), listing(t, index)); diff != "" {
			t.Errorf("index entries (-layer +index):\n%s", diff)
		}
		mustExtract(t, fromIndex, index)

		// Filter records every entry, kept or not.
		fix := NewIndex()
		if err := Filter(bytes.NewReader(l), io.Discard, func(string) bool { return false }, fix); err != nil {
			t.Fatalf("Filter: %v", err)
		}
		fdata, err := fix.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gunzip(t, fdata), index) {
			t.Errorf("Filter's index differs from Extract's")
		}
	}

	want := dump(t, full)
	got := dump(t, fromIndex)
	for p, n := range want {
		if n.Type == "file" && p != "etc/passwd" && p != "etc/group" {
			n.Content = ""
			want[p] = n
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree from indexes (-from layers +from indexes):\n%s", diff)
	}
	if got["etc/passwd"].Content != "root:x:0:0::/root:/bin/sh\n" {
		t.Errorf("etc/passwd from indexes = %q, want the upper layer's", got["etc/passwd"].Content)
	}
}

// TestIndex_snapshot checks that Snapshot records in the index exactly the
// entries of the layer it writes.
func TestIndex_snapshot(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\n", 0o644)
	s, err := NewSnapshotter(root)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644)
	writeFile(t, filepath.Join(root, "app/data.bin"), "0123456789", 0o600)
	must(t, os.Symlink("data.bin", filepath.Join(root, "app/cur")))
	must(t, os.Remove(filepath.Join(root, "etc/group")))

	ix := NewIndex()
	var layer bytes.Buffer
	if _, err := s.Snapshot(&layer, IndexTo(ix)); err != nil {
		t.Fatal(err)
	}
	data, err := ix.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	index := gunzip(t, data)
	if diff := cmp.Diff(listing(t, layer.Bytes()), listing(t, index)); diff != "" {
		t.Errorf("index entries (-layer +index):\n%s", diff)
	}
	a, b := t.TempDir(), t.TempDir()
	mustExtract(t, a, layer.Bytes())
	mustExtract(t, b, index)
	if got := dump(t, b)["etc/passwd"].Content; got != "root:x:0:0::/root:/bin/sh\n" {
		t.Errorf("etc/passwd from the index = %q", got)
	}
	if got := dump(t, b)["app/data.bin"]; got.Content != "" || got.Mode != 0o600 {
		t.Errorf("app/data.bin from the index: %+v, want empty with mode 600", got)
	}
}

// TestIndex_largeAccountFile checks that an index refuses to stand for a
// layer whose /etc/passwd it cannot keep whole.
func TestIndex_largeAccountFile(t *testing.T) {
	l := layerTar(t, dirE("etc", 0o755), fileE("etc/passwd", string(bytes.Repeat([]byte("u:x:1:1::/:/bin/sh\n"), 60000)), 0o644))
	ix := NewIndex()
	mustExtract(t, t.TempDir(), l, WithIndex(ix))
	if _, err := ix.Bytes(); err == nil {
		t.Error("Index.Bytes succeeded for a 1.1 MB /etc/passwd")
	}
}
