package rootfs

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// epoch is the fixed time of the test layers' entries.
var epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// entry is one tar entry of a test layer.
type entry struct {
	hdr  tar.Header
	body string
}

func dirE(name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch}}
}

func fileE(name, body string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: epoch}, body: body}
}

func symlinkE(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

func linkE(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: epoch}}
}

func whE(dir, name string) entry {
	return fileE(strings.TrimPrefix(dir+"/"+whiteoutPrefix+name, "/"), "", 0)
}

func opqE(dir string) entry { return fileE(dir+"/"+whiteoutOpaque, "", 0) }

// with changes the header of e.
func (e entry) with(fn func(h *tar.Header)) entry {
	fn(&e.hdr)
	return e
}

func layerTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing header %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatalf("writing %s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustExtract(t testing.TB, root string, layer []byte, opts ...Option) {
	t.Helper()
	if err := Extract(root, bytes.NewReader(layer), opts...); err != nil {
		t.Fatalf("Extract: %v", err)
	}
}

// node is what the tests compare of a tree entry.
type node struct {
	Type     string
	Mode     uint32 // permission, setuid, setgid and sticky bits
	UID, GID uint32
	Content  string
	Link     string
	Mtime    int64 // seconds
	Rdev     uint64
	Nlink    uint64
	Xattrs   map[string]string
}

// dump records every entry under root but root itself, skipping the paths
// for which skip returns true.
func dump(t testing.TB, root string, skip ...string) map[string]node {
	t.Helper()
	out := make(map[string]node)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := node{
			Mode:  st.Mode & 0o7777,
			UID:   st.Uid,
			GID:   st.Gid,
			Mtime: st.Mtim.Sec,
			Nlink: uint64(st.Nlink),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type, n.Nlink = "dir", 0
		case unix.S_IFREG:
			n.Type = "file"
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.Content = string(b)
		case unix.S_IFLNK:
			n.Type, n.Mode = "symlink", 0
			n.Link, _ = os.Readlink(p)
		case unix.S_IFIFO:
			n.Type = "fifo"
		case unix.S_IFCHR:
			n.Type, n.Rdev = "char", st.Rdev
		case unix.S_IFBLK:
			n.Type, n.Rdev = "block", st.Rdev
		default:
			n.Type = "other"
		}
		sz, _ := unix.Llistxattr(p, nil)
		if sz > 0 {
			names := make([]byte, sz)
			sz, _ = unix.Llistxattr(p, names)
			for _, a := range strings.Split(strings.TrimRight(string(names[:sz]), "\x00"), "\x00") {
				if a == "security.selinux" {
					continue
				}
				v := make([]byte, 4096)
				vs, err := unix.Lgetxattr(p, a, v)
				if err != nil {
					return err
				}
				if n.Xattrs == nil {
					n.Xattrs = map[string]string{}
				}
				n.Xattrs[a] = string(v[:vs])
			}
		}
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatalf("dumping %s: %v", root, err)
	}
	return out
}

// listing is the names and types of a layer's entries, in order.
func listing(t testing.TB, layer []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("reading layer: %v", err)
		}
		s := h.Name
		switch h.Typeflag {
		case tar.TypeSymlink:
			s += " -> " + h.Linkname
		case tar.TypeLink:
			s += " link " + h.Linkname
		}
		out = append(out, s)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, p, body string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(body), mode))
	must(t, os.Chmod(p, mode))
}
