package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// tarEntry is one entry of a test layer.
type tarEntry struct {
	hdr  tar.Header
	body string
}

var unpackEpoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func tDir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: unpackEpoch}}
}

func tFile(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: unpackEpoch}, body: body}
}

func tSymlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: unpackEpoch}}
}

func tHardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: unpackEpoch}}
}

// tWhiteout deletes dir/name as the layers below left it; tOpaque empties
// dir of what they put there.
func tWhiteout(dir, name string) tarEntry {
	return tFile(strings.TrimPrefix(dir+"/.wh."+name, "/"), "")
}

func tOpaque(dir string) tarEntry { return tFile(dir+"/.wh..wh..opq", "") }

func tarOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// slowRegistry is an in-memory registry that delays the downloads of the
// blobs in slow, so that the layers after them are ready first.
type slowRegistry struct {
	host string
	mu   sync.Mutex
	slow map[string]time.Duration
}

func newSlowRegistry(t *testing.T) *slowRegistry {
	t.Helper()
	sr := &slowRegistry{slow: map[string]time.Duration{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			sr.mu.Lock()
			d := sr.slow[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]
			sr.mu.Unlock()
			time.Sleep(d)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	sr.host = strings.TrimPrefix(srv.URL, "http://")
	return sr
}

// pushLayers pushes an image of the tars (gzip layers) and returns its
// layers as a build pulls them (read from the registry when read).
func (sr *slowRegistry) pushLayers(t *testing.T, tars ...[]byte) []v1.Layer {
	t.Helper()
	img := empty.Image
	for _, data := range tars {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	ref, err := name.ParseReference(sr.host + "/layers/test:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// treeNode is what the tests compare of an entry of an unpacked tree.
type treeNode struct {
	Mode     fs.FileMode
	UID, GID uint32
	Nlink    uint64
	Link     string
	SHA256   string
	ModTime  int64 // of files and symlinks (a directory's changes when a later layer deletes in it)
}

func treeOf(t *testing.T, root string) map[string]treeNode {
	t.Helper()
	out := map[string]treeNode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := treeNode{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			n.SHA256 = hex.EncodeToString(sum[:])
			n.Nlink = uint64(st.Nlink)
			n.ModTime = fi.ModTime().UnixNano()
		case fi.Mode()&fs.ModeSymlink != 0:
			n.Link, _ = os.Readlink(p)
			n.ModTime = fi.ModTime().UnixNano()
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Layers opened (fetched and decompressed) ahead of the one applied make
// the same tree as layers read and applied one after the other: whiteouts of what
// an earlier layer made, opaque directories, a file that becomes a
// directory and a directory that becomes a file, hard links to a deleted
// name, symlinks, with the second layer's download the slowest so that
// the ones after it are ready before it (the order of application must not
// follow).
func TestExtractLayers_aheadSameAsSerial(t *testing.T) {
	big := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(big)
	tars := [][]byte{
		tarOf(t, tDir("a"), tDir("a/sub"), tDir("b"), tFile("a/f1", "one"), tFile("a/sub/x", "x"),
			tFile("b/keep", "k"), tFile("b/old", "o"), tSymlink("a/l", "f1"), tHardlink("a/h", "a/f1"),
			tFile("c", "c was a file"), tFile("d", "d")),
		tarOf(t, tWhiteout("a", "f1"), tFile("a/f2", "two"), tOpaque("b"), tFile("b/new", "n"),
			tDir("c"), tFile("c/inner", "c is a directory")),
		tarOf(t, tWhiteout("", "d"), tWhiteout("a/sub", "x"), tFile("a/sub/y", "y"),
			tDir("e"), tDir("e/deep"), tFile("e/deep/file", "deep")),
		tarOf(t, tWhiteout("", "e"), tWhiteout("a", "f2"), tSymlink("a/f2", "sub/y"), tFile("big", string(big))),
		tarOf(t, tWhiteout("", "c"), tFile("e", "e is a file now"), tWhiteout("", "big")),
		tarOf(t, tOpaque("a"), tFile("a/only", "the last layer's"), tFile("b/new", "n again")),
	}
	for _, withCache := range []bool{false, true} {
		name := "no cache"
		if withCache {
			name = "with a cache"
		}
		t.Run(name, func(t *testing.T) {
			sr := newSlowRegistry(t)
			layers := sr.pushLayers(t, tars...)
			second, _ := layers[1].Digest()
			sr.slow[second.String()] = 300 * time.Millisecond

			// Serial: each layer read and applied in turn.
			want := t.TempDir()
			for _, l := range layers {
				rc, err := layer.Uncompressed(l)
				if err != nil {
					t.Fatal(err)
				}
				if err := rootfs.Extract(want, rc); err != nil {
					t.Fatal(err)
				}
				rc.Close()
			}

			var logBuf bytes.Buffer
			b := &builder{opts: Options{Cache: NoCache()}, layers: t.TempDir(), log: NewSyncWriter(&logBuf)}
			if withCache {
				b.opts.Cache = newTwinCacheFor(t, sr.host)
			}
			got := t.TempDir()
			if err := b.extractLayers(context.Background(), got, layers, nil); err != nil {
				t.Fatalf("extractLayers: %v", err)
			}
			if diff := cmp.Diff(treeOf(t, want), treeOf(t, got)); diff != "" {
				t.Errorf("the tree unpacked ahead differs from the serial one (-serial +ahead):\n%s", diff)
			}
			if _, err := b.opts.Cache.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if left, _ := os.ReadDir(b.layers); len(left) != 0 {
				t.Errorf("the layer directory holds %d files after the extraction, want none", len(left))
			}
			if logBuf.Len() > 0 {
				t.Errorf("log: %s", logBuf.String())
			}
		})
	}
}

// A layer that fails while opened ahead fails the extraction, with the
// layers before it applied and nothing left in the layer directory.
func TestExtractLayers_aheadFails(t *testing.T) {
	sr := newSlowRegistry(t)
	tars := [][]byte{
		tarOf(t, tFile("one", "1")),
		tarOf(t, tFile("two", "2")),
		tarOf(t, tFile("three", "3")),
	}
	layers := sr.pushLayers(t, tars...)
	// The third layer's blob is gone from the registry.
	third, _ := layers[2].Digest()
	req, _ := http.NewRequest(http.MethodDelete, "http://"+sr.host+"/v2/layers/test/blobs/"+third.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b := &builder{opts: Options{Cache: NoCache()}, layers: t.TempDir(), log: NewSyncWriter(io.Discard)}
	root := t.TempDir()
	err = b.extractLayers(context.Background(), root, layers, nil)
	if err == nil || !strings.Contains(err.Error(), third.String()) {
		t.Fatalf("extractLayers = %v, want an error naming the third layer", err)
	}
	for _, f := range []string{"one", "two"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("%s: %v (the layers before the failing one are applied)", f, err)
		}
	}
	if left, _ := os.ReadDir(b.layers); len(left) != 0 {
		t.Errorf("the layer directory holds %d files after the failure, want none", len(left))
	}
}

// newTwinCacheFor is a layer cache in the registry at host, with twins.
func newTwinCacheFor(t *testing.T, host string) Cache {
	t.Helper()
	repo, err := name.NewRepository(host + "/cache")
	if err != nil {
		t.Fatal(err)
	}
	return cache.New(cache.Options{Repo: repo})
}

// An extraction does not index again a layer whose index the cache holds
// (it would keep the one there), and indexes, and stores the index of, one
// whose index it does not.
func TestExtractLayers_indexesOnlyMissing(t *testing.T) {
	sr := newSlowRegistry(t)
	layers := sr.pushLayers(t, tarOf(t, tFile("one", "1")), tarOf(t, tFile("two", "2")))
	c := newTwinCacheFor(t, sr.host)
	first, _ := layers[0].Digest()
	second, _ := layers[1].Digest()
	c.StoreIndex(first, []byte("an index stored before"), true)
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := &builder{opts: Options{Cache: c}, layers: t.TempDir(), log: NewSyncWriter(io.Discard), keyed: true, sh: &shared{}}
	if err := b.extractLayers(context.Background(), t.TempDir(), layers, nil); err != nil {
		t.Fatalf("extractLayers: %v", err)
	}
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.sh.indexes.Load(first); ok {
		t.Errorf("the first layer was indexed again though the cache holds its index")
	}
	if _, ok := b.sh.indexed.Load(first); !ok {
		t.Errorf("the first layer is not marked indexed")
	}
	if _, ok := b.sh.indexes.Load(second); !ok {
		t.Errorf("the second layer, whose index the cache lacked, was not indexed")
	}
	if data, err := c.Index(context.Background(), second); err != nil || len(data) == 0 {
		t.Errorf("the cache's index of the second layer: %d bytes, %v; want the one the extraction made", len(data), err)
	}
}
