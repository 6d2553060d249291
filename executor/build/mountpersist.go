package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// Cache mounts that outlive the build (issue 17). BuildKit keeps a
// RUN --mount=type=cache directory as long as its daemon lives; a build
// pod is a fresh daemon every time, so its caches would always start
// empty. With a MountStore (the registry cache's saved mounts), the
// directory of each cache mount a step used is saved at the end of a
// successful build, and the next build restores it before the first step
// that mounts it: in the background, as soon as the cache lookups tell
// which steps will run, and only when one that mounts it will (a build the
// cache serves whole downloads no mount).
//
// What a saved mount is keyed by (persistKey): the cache's own key in the
// build (the mount's id, and the uid, gid and mode of the directory it
// makes), the cache repository, the build's target platforms and a scope
// (the controller's namespace), so that tenants sharing a cache repository
// never share a mount, and builds for other platforms keep their own. A
// cache that starts from a tree (from=) is not kept: its content is its
// tree's, which is known only within one build.
//
// What a saved mount can do to a build: it is untrusted, as every cache
// entry is (see package cache). It is extracted by the one extractor,
// contained in the store's directory (never outside it, whatever its
// symlinks and names), without device nodes or FIFOs, bounded by
// MaxSize per layer and checked against it whole; its bytes are checked
// against their digests. A saved mount that is corrupt, refused or too
// large gives the step an empty cache and a warning, never a failed build.
// Its content is what a step of an earlier build (of the same scope) left
// in the cache, so a step must trust it as much as that earlier build's
// Dockerfile: as in BuildKit, a cache mount is never in an image nor in a
// cache key.
//
// Saving uploads only what changed: a restored mount's state is recorded
// when it is restored (rootfs.Snapshotter), and its save is one more layer
// holding the changes (whiteouts for what was removed) on top of the
// layers it was restored from, which the repository has already. When the
// layers would be more than cache.MaxMountLayers, or hold more than twice
// the directory's bytes (files rewritten over and over), the save writes
// the whole directory as one layer again (compaction). A mount larger than
// MaxSize is not saved (a warning). Two builds that save one mount at the
// same time leave one complete version: the manifest, written last, names
// only layers already uploaded.

// MountStore keeps cache mounts between builds; *cache.Cache is one.
type MountStore interface {
	Mount(ctx context.Context, key string) (cache.MountEntry, error)
	StoreMount(ctx context.Context, key string, layers []v1.Layer, size int64) (v1.Hash, error)
}

var _ MountStore = (*cache.Cache)(nil)

// CacheMounts configures cache mounts kept between builds.
type CacheMounts struct {
	// Store keeps them in the cache repository, Options.State in the
	// state directory (a copy of the saved mount, used instead of
	// downloading it when it is the same); with neither, a cache mount
	// lives for the build.
	Store MountStore
	// Repo and Scope are in every saved mount's key: the cache repository
	// and what the builds that share a mount have in common (the
	// controller passes the ImageBuild's namespace).
	Repo, Scope string
	// MaxSize bounds a mount, in bytes: a larger one is not saved, and a
	// saved one that is larger is not restored. Zero or less: no bound.
	MaxSize int64

	mu    sync.Mutex
	wg    sync.WaitGroup
	stats result.CacheMounts
}

// Wait waits for the saves that BuildAll started, or until ctx ends, and
// returns what the build did with saved mounts; nil when it did nothing.
func (cm *CacheMounts) Wait(ctx context.Context) *result.CacheMounts {
	if cm == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		cm.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if cm.stats == (result.CacheMounts{}) {
		return nil
	}
	s := cm.stats
	return &s
}

func (cm *CacheMounts) add(f func(s *result.CacheMounts)) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	f(&cm.stats)
}

// persisted is a cache of the build that is kept between builds.
type persisted struct {
	key string // the saved mount's key (persistKey)
	id  string // the mount's id, for the log
	// sel is the directory the steps mount in the cache ("cache", for a
	// cache with uid, gid or mode), which a restored one must hold; ""
	// for the cache itself.
	sel   string
	used  bool // a step mounted it
	start sync.Once
	// restore is the restore under way or done; nil when none was started.
	restore *restoring
}

// restoring is a saved mount being restored into the store, as the
// instance name.
type restoring struct {
	name string
	done chan struct{} // closed when it ended
	// Set before done is closed: ok when the instance holds the saved
	// mount; snap records its state then; layers are the saved mount's
	// and tarBytes their uncompressed size (for the next save).
	ok       bool
	snap     *rootfs.Snapshotter
	layers   []v1.Layer
	tarBytes int64
}

// persistKey is the key a cache of the build (cacheKey) is saved under.
func (s *cacheStore) persistKey(cacheKey string) string {
	h := sha256.New()
	for _, part := range []string{"slipway cache mount v1", s.persist.Repo, s.platforms, s.persist.Scope, cacheKey} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// persistent reports whether the build keeps cache mounts.
func (s *cacheStore) persistent() bool { return s.persist != nil }

// planPersist makes rm's cache one that is kept between builds, when the
// build keeps any and the cache starts empty (no from=).
func (s *cacheStore) planPersist(rm *runMount, id string) {
	if !s.persistent() || rm.dir != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.persisted[rm.cacheKey] == nil {
		p := &persisted{key: s.persistKey(rm.cacheKey), id: id}
		if rm.mkdir {
			p.sel = rm.sel
		}
		s.persisted[rm.cacheKey] = p
	}
	rm.persist = true
}

// restoreMounts starts restoring, in the background, the saved mounts of
// the caches that a step which will run mounts: a step the cache serves
// (with every step before it in its stage) does not run.
func (set *buildSet) restoreMounts(ctx context.Context) {
	s := set.builders[0].caches
	if !s.persistent() {
		return
	}
	for _, st := range set.distinct() {
		missed := false
		for _, sp := range st.sb.steps {
			if sp.action == nil {
				continue
			}
			if !sp.hit || !set.builders[0].keyed {
				missed = true
			}
			if !missed {
				continue
			}
			for _, rm := range sp.mounts {
				if rm.typ == instructions.MountTypeCache && rm.persist {
					s.startRestore(ctx, rm.cacheKey)
				}
			}
		}
	}
}

// startRestore restores the saved mount of cacheKey, once.
func (s *cacheStore) startRestore(ctx context.Context, cacheKey string) {
	s.mu.Lock()
	p := s.persisted[cacheKey]
	s.mu.Unlock()
	p.start.Do(func() {
		s.mu.Lock()
		s.next++
		r := &restoring{name: fmt.Sprintf("%s-%d", p.key[:16], s.next), done: make(chan struct{})}
		p.restore = r
		if s.restoreCtx == nil {
			// Restores outlive a failed attempt (the next one takes them),
			// not the build (endRestores).
			s.restoreCtx, s.stopRestores = context.WithCancel(context.WithoutCancel(ctx))
		}
		ctx := s.restoreCtx
		s.restores.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.restores.Done()
			defer close(r.done)
			s.restore(ctx, p, r)
		}()
	})
}

// endRestores stops the restores no step waited for (a build that failed
// before the steps that mount them) and waits for every restore to end, so
// that none writes into the work directory after the build.
func (s *cacheStore) endRestores() {
	s.mu.Lock()
	stop := s.stopRestores
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.restores.Wait()
}

// restore restores p's saved mount as the instance r.name: the state
// directory's copy of it, else the cache repository's.
func (s *cacheStore) restore(ctx context.Context, p *persisted, r *restoring) {
	start := time.Now()
	dir := filepath.Join(s.dir, r.name)
	var e cache.MountEntry
	var err error
	if s.persist.Store != nil {
		e, err = s.persist.Store.Mount(ctx, p.key)
	}
	manifest := ""
	if err == nil && s.persist.Store != nil {
		manifest = e.Manifest.String()
	}
	fail := func(err error) {
		_ = os.RemoveAll(dir)
		fmt.Fprintf(s.log, "WARNING: cache mount %s: the saved one is not used, it starts empty: %s\n", p.label(), result.Sanitize(strings.ReplaceAll(err.Error(), s.dir, "<cache mounts>")))
		s.persist.add(func(st *result.CacheMounts) { st.Skipped++ })
	}
	if err == nil || errors.Is(err, cache.ErrMiss) {
		if err := os.MkdirAll(s.dir, 0o700); err == nil {
			if ok, tarBytes := s.state.takeMount(p.key, manifest, dir); ok {
				// The state directory's copy is what an earlier build
				// left: checked as a download is.
				if err := s.restored(p, r, dir, e.Layers, tarBytes, start, "the state directory"); err != nil {
					fail(fmt.Errorf("the state directory's copy: %w", err))
				}
				return
			}
		}
	}
	if s.persist.Store == nil || errors.Is(err, cache.ErrMiss) {
		fmt.Fprintf(s.log, "Cache mount %s: none saved yet, it starts empty\n", p.label())
		return
	}
	if err != nil {
		fail(err)
		return
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		fail(err)
		return
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		fail(err)
		return
	}
	var tarBytes int64
	for i, l := range e.Layers {
		n, err := s.extractSaved(ctx, dir, l)
		if err != nil {
			fail(err)
			return
		}
		tarBytes += n
		// Each layer leaves the directory as one save left it, which
		// held it to MaxSize: one past it is refused before the next
		// layer is read, so that a crafted saved mount writes at most
		// twice the bound, not MaxMountLayers times.
		if i < len(e.Layers)-1 {
			if _, err := s.restoredSize(dir); err != nil {
				fail(fmt.Errorf("after its layer %d of %d: %w", i+1, len(e.Layers), err))
				return
			}
		}
	}
	if err := s.restored(p, r, dir, e.Layers, tarBytes, start, fmt.Sprintf("%s, saved %s", layersWord(len(e.Layers)), e.Saved.Format(time.RFC3339))); err != nil {
		fail(err)
	}
}

// restored makes dir, which holds p's saved mount (of layers, whose
// uncompressed size is tarBytes), the instance r restores; from says
// where it came from, for the log.
func (s *cacheStore) restored(p *persisted, r *restoring, dir string, layers []v1.Layer, tarBytes int64, start time.Time, from string) error {
	if p.sel != "" {
		// fillCache mounts this directory: a saved mount where it is
		// missing, a symlink or a file would fail the step.
		if fi, err := os.Lstat(filepath.Join(dir, p.sel)); err != nil || !fi.IsDir() {
			return fmt.Errorf("it has no directory %s, which the steps mount", p.sel)
		}
	}
	// The Snapshotter's walk records the state the save compares with,
	// and gives the size: one walk.
	snap, err := rootfs.NewSnapshotter(dir, s.rootfsOpts...)
	if err != nil {
		return err
	}
	size := snap.Size()
	if max := s.persist.MaxSize; max > 0 && size > max {
		return fmt.Errorf("it holds %s, more than the most a cache mount may hold (%s)", formatBytes(size), formatBytes(max))
	}
	r.ok, r.snap, r.layers, r.tarBytes = true, snap, layers, tarBytes
	took := time.Since(start)
	fmt.Fprintf(s.log, "Cache mount %s: restored %s (%s) in %.1fs\n", p.label(), formatBytes(size), from, took.Seconds())
	s.persist.add(func(st *result.CacheMounts) {
		st.Restored++
		st.RestoredBytes += size
		st.RestoreMillis = max(st.RestoreMillis, result.Millis(took))
	})
	return nil
}

// restoredSize is the size of the restored directory dir: an error when
// it is more than MaxSize.
func (s *cacheStore) restoredSize(dir string) (int64, error) {
	size, err := treeSize(dir)
	if err != nil {
		return 0, err
	}
	if max := s.persist.MaxSize; max > 0 && size > max {
		return 0, fmt.Errorf("it holds %s, more than the most a cache mount may hold (%s)", formatBytes(size), formatBytes(max))
	}
	return size, nil
}

// extractSaved applies one layer of a saved mount onto dir, and returns
// its uncompressed size.
func (s *cacheStore) extractSaved(ctx context.Context, dir string, l v1.Layer) (int64, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	cr := &countReader{r: rc}
	opts := append(slices.Clone(s.rootfsOpts), rootfs.WithMaxSize(s.persist.MaxSize), rootfs.WithDevices(rootfs.Ignored), rootfs.WithContext(ctx))
	if err := rootfs.Extract(dir, cr, opts...); err != nil {
		// A layer whose bytes are not its digest's may fail the tar
		// first: Close says so.
		if cerr := rc.Close(); errors.Is(cerr, cache.ErrRefused) {
			return 0, cerr
		}
		return 0, err
	}
	// The rest of the layer (the tar's end) and its check.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return 0, err
	}
	return cr.n, rc.Close()
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// label names a kept cache in the log: its id, as the Dockerfile says.
func (p *persisted) label() string {
	return "id=" + result.Excerpt(p.id, 100)
}

// takeRestored is called by acquire for the first instance of cacheKey:
// it waits for the cache's restore, if one was started, and returns the
// instance it restored (fresh false), or "" for a new empty one.
func (s *cacheStore) takeRestored(ctx context.Context, cacheKey string) (string, error) {
	s.mu.Lock()
	p := s.persisted[cacheKey]
	if p != nil {
		p.used = true
	}
	s.mu.Unlock()
	if p == nil || p.restore == nil {
		return "", nil
	}
	select {
	case <-p.restore.done:
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	if !p.restore.ok {
		return "", nil
	}
	return p.restore.name, nil
}

// saveMounts saves, in the background, every kept cache a step used (cm
// waits for them): the instance restored, if the steps kept it, else the
// one given back last.
func (s *cacheStore) saveMounts(ctx context.Context) {
	cm := s.persist
	if !s.persistent() {
		return
	}
	type job struct {
		p    *persisted
		inst string
		r    *restoring // the restore inst holds, or nil
	}
	var jobs []job
	s.mu.Lock()
	for k, p := range s.persisted {
		st := s.keys[k]
		if !p.used || st == nil || len(st.free) == 0 {
			continue
		}
		j := job{p: p, inst: st.free[len(st.free)-1]}
		if r := p.restore; r != nil && r.ok && slices.Contains(st.free, r.name) {
			j.inst, j.r = r.name, r
		}
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	slices.SortFunc(jobs, func(a, b job) int { return strings.Compare(a.p.key, b.p.key) })
	ctx = context.WithoutCancel(ctx)
	cm.wg.Add(1)
	go func() {
		defer cm.wg.Done()
		start := time.Now()
		var g errgroup.Group
		g.SetLimit(2)
		for _, j := range jobs {
			g.Go(func() error {
				s.save(ctx, j.p, filepath.Join(s.dir, j.inst), j.r)
				return nil
			})
		}
		g.Wait()
		cm.add(func(st *result.CacheMounts) { st.SaveMillis = result.Millis(time.Since(start)) })
	}()
}

// save saves the instance at dir as p's saved mount: the layers it was
// restored from (r) and what changed since, or the whole of it.
func (s *cacheStore) save(ctx context.Context, p *persisted, dir string, r *restoring) {
	cm := s.persist
	start := time.Now()
	warn := func(err error) {
		// The store is the executor's own: its path says nothing.
		msg := strings.ReplaceAll(err.Error(), s.dir, "<cache mounts>")
		fmt.Fprintf(s.log, "WARNING: cache mount %s: not saved: %s\n", p.label(), result.Sanitize(msg))
		cm.add(func(st *result.CacheMounts) { st.Skipped++ })
	}
	size, err := treeSize(dir)
	if err != nil {
		warn(err)
		return
	}
	if cm.MaxSize > 0 && size > cm.MaxSize {
		warn(fmt.Errorf("it holds %s, more than the most a cache mount may hold (%s, --cache-mount-max-size)", formatBytes(size), formatBytes(cm.MaxSize)))
		return
	}
	if cm.Store == nil {
		// Kept in the state directory alone.
		s.state.keepMount(p.key, "", 0, size, dir)
		fmt.Fprintf(s.log, "Cache mount %s: kept %s in the state directory\n", p.label(), formatBytes(size))
		return
	}
	var layers []v1.Layer
	var uploaded, tarBytes int64
	if r != nil && r.snap != nil {
		var n int64
		delta, err := layer.Write(s.dir, savedLayers, func(w io.Writer) (bool, error) {
			cw := &countWriter{w: w}
			changed, err := r.snap.Snapshot(cw)
			n = cw.n
			return changed, err
		})
		if err != nil {
			warn(err)
			return
		}
		switch {
		case delta == nil && len(r.layers) > 0:
			// Unchanged: written again only to date it anew (the cache's
			// TTL counts from a save); no layer is uploaded.
			layers, tarBytes = r.layers, r.tarBytes
		case delta != nil && len(r.layers) > 0 && len(r.layers) < cache.MaxMountLayers && r.tarBytes+n <= 2*size+1<<20:
			layers, tarBytes = append(slices.Clone(r.layers), delta), r.tarBytes+n
			uploaded, _ = delta.Size()
		}
	}
	if layers == nil {
		snap := rootfs.NewFullSnapshotter(dir, s.rootfsOpts...)
		whole, err := layer.Write(s.dir, savedLayers, func(w io.Writer) (bool, error) {
			cw := &countWriter{w: w}
			_, err := snap.Snapshot(cw)
			tarBytes = cw.n
			// An empty directory is a layer too: an empty tar.
			return true, err
		})
		if err != nil {
			warn(err)
			return
		}
		layers = []v1.Layer{whole}
		uploaded, _ = whole.Size()
	}
	manifest, err := cm.Store.StoreMount(ctx, p.key, layers, size)
	if err != nil {
		warn(err)
		return
	}
	s.state.keepMount(p.key, manifest.String(), tarBytes, size, dir)
	fmt.Fprintf(s.log, "Cache mount %s: saved %s (%s, %s uploaded) in %.1fs\n", p.label(), formatBytes(size), layersWord(len(layers)), formatBytes(uploaded), time.Since(start).Seconds())
	cm.add(func(st *result.CacheMounts) {
		st.Saved++
		st.SavedBytes += size
		st.UploadedBytes += uploaded
	})
}

// savedLayers is how saved mounts' layers are compressed: zstd, fast.
var savedLayers = layer.Options{Compression: layer.Zstd, Level: 1, OCI: true}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// treeSize is the bytes of the regular files under dir (the store's own
// directory: no symlink is followed).
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// layersWord is "1 layer", "2 layers".
func layersWord(n int) string {
	if n == 1 {
		return "1 layer"
	}
	return fmt.Sprintf("%d layers", n)
}

// formatBytes is n in the units people read (1.5 MiB).
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
