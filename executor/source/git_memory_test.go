package source

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/test/gitserver"
)

// TestFetchGit_memory fetches a repository with 64 MB of incompressible
// blobs and checks that the Go heap stays under half of that: objects go to
// disk and large blobs are streamed.
func TestFetchGit_memory(t *testing.T) {
	if testing.Short() {
		t.Skip("makes a 64 MB repository")
	}
	const files, size = 8, 8 << 20
	root := t.TempDir()
	w := gitserver.NewWorkRepo(t)
	buf := make([]byte, size)
	for i := range files {
		rand.Read(buf)
		if err := os.WriteFile(filepath.Join(w, "blob"+string(rune('a'+i))), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	buf = nil
	gitserver.Commit(t, w, "big")
	gitserver.Publish(t, w, root, "org/big.git", false)
	srv := gitserver.StartHTTP(t, root)

	runtime.GC()
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	base := t.TempDir()
	_, err := FetchGit(t.Context(), GitSource{URL: srv.URL + "/org/big.git"}, filepath.Join(base, "ctx"), filepath.Join(base, "ctx.git"))
	close(done)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(base, "ctx", "blobh"))
	if err != nil || fi.Size() != size {
		t.Fatalf("blobh: %v, size %d", err, fi.Size())
	}
	t.Logf("peak heap in use: %d MiB for %d MiB of blobs", peak.Load()>>20, files*size>>20)
	if limit := uint64(files * size / 2); peak.Load() > limit {
		t.Errorf("peak heap %d MiB, want under %d MiB", peak.Load()>>20, limit>>20)
	}
}
