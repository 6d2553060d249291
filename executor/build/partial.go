package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// copyOnPartialTree runs a COPY or ADD that missed the cache while the
// stage's root is not materialised (every step before it came from the
// cache), without unpacking the whole tree: a COPY reads nothing of the
// lower file system but its destination's parents, the destination itself
// and what is below it (merged into or refused), and /etc/passwd and
// /etc/group for --chown. Those are extracted into a scratch root from the
// layers' indexes, which the cache keeps next to its entries (a layer
// without one is read through, and indexed for the next build), and the
// copy's layer is snapshotted there, entry for entry what it would be on
// the full tree.
//
// It reports done=false, having changed nothing, when the destination's
// path crosses a symlink (its target could be anywhere), so the caller
// materialises the whole tree instead.
func (sb *stageBuilder) copyOnPartialTree(ctx context.Context, sp *step) (v1.Layer, bool, error) {
	destRel := strings.TrimPrefix(sp.copyDest, "/")
	keep := func(rel string) bool {
		return rel == "etc" || rel == "etc/passwd" || rel == "etc/group" ||
			rootfs.IsUnder(destRel, rel) || rootfs.IsUnder(rel, destRel)
	}
	scratch, err := os.MkdirTemp(sb.b.opts.WorkDir, "partial-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(scratch)
	if err := os.Chmod(scratch, 0o755); err != nil {
		return nil, false, err
	}
	opts := sb.b.rootfsOptions()
	fromIndex, err := sb.fillPartialTree(ctx, scratch, keep, opts)
	if err != nil {
		return nil, false, err
	}
	fmt.Fprintf(sb.b.log, "%s copying onto a partial tree: %d of %d layers below read through their indexes\n",
		sb.prefix, fromIndex, len(sb.layers))
	// A symlink on the way to the destination could lead anywhere in the
	// tree: only the full tree answers then.
	cur := scratch
	for _, part := range strings.Split(destRel, "/") {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			break // missing: the copy creates it
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil, false, nil
		}
	}
	snap, err := rootfs.NewSnapshotter(scratch, opts...)
	if err != nil {
		return nil, false, fmt.Errorf("recording the partial tree: %w", err)
	}
	paths, err := sp.action(ctx, sb, scratch)
	if err != nil {
		return nil, false, err
	}
	l, err := sb.snapshot(snap, paths)
	if err != nil {
		return nil, false, err
	}
	return l, true, nil
}

// fillPartialTree extracts what keep accepts of every layer of the stage
// into scratch, from the layers' indexes where it can, and returns how many
// indexes it used. An index that cannot be read is a miss, as a corrupt
// cache entry is: scratch is emptied and filled again with that layer read
// in full (and indexed anew, replacing the bad index).
func (sb *stageBuilder) fillPartialTree(ctx context.Context, scratch string, keep func(string) bool, opts []rootfs.Option) (int, error) {
	for {
		indexes := sb.b.fetchIndexes(ctx, sb.layers)
		fromIndex := 0
		var bad error
		for i, l := range sb.layers {
			if indexes[i] == nil {
				if err := sb.b.extractFiltered(ctx, scratch, l, keep, opts); err != nil {
					return 0, err
				}
				continue
			}
			if bad = extractIndexFiltered(scratch, l, indexes[i], keep, opts); bad != nil {
				d, _ := l.Digest()
				sb.b.sh.indexes.Store(d, []byte(nil)) // fetchIndexes gives nil now
				sb.b.sh.indexed.Delete(d)
				break
			}
			fromIndex++
		}
		if bad == nil {
			return fromIndex, nil
		}
		fmt.Fprintf(sb.b.log, "WARNING: %v; reading that layer instead\n", bad)
		if err := os.RemoveAll(scratch); err != nil {
			return 0, err
		}
		if err := os.Mkdir(scratch, 0o755); err != nil {
			return 0, err
		}
	}
}

// fetchIndexes returns the indexes of layers: those this build made or read
// already, the others fetched from the cache at once. An index that is
// missing or unreadable is nil (its layer is read instead).
func (b *builder) fetchIndexes(ctx context.Context, layers []v1.Layer) [][]byte {
	out := make([][]byte, len(layers))
	c := b.opts.Cache
	var g errgroup.Group
	g.SetLimit(8)
	for i, l := range layers {
		g.Go(func() error {
			d, err := l.Digest()
			if err != nil {
				return nil
			}
			if data, ok := b.sh.indexes.Load(d); ok {
				out[i] = data.([]byte) // nil: the cache's could not be read
				return nil
			}
			data, err := c.Index(ctx, d)
			switch {
			case err == nil:
				out[i] = data
				b.sh.indexed.Store(d, true)
				b.sh.indexes.Store(d, data)
			case !errors.Is(err, cache.ErrMiss):
				fmt.Fprintf(b.log, "WARNING: reading layer %s instead of its index: %v\n", d, err)
			}
			return nil
		})
	}
	g.Wait()
	return out
}

// extractIndexFiltered extracts the entries of l's index (gzip-compressed)
// that keep accepts into root.
func extractIndexFiltered(root string, l v1.Layer, index []byte, keep func(string) bool, opts []rootfs.Option) error {
	d, _ := l.Digest()
	zr, err := gzip.NewReader(bytes.NewReader(index))
	if err != nil {
		return fmt.Errorf("reading the index of layer %s: %w", d, err)
	}
	if err := filterInto(root, zr, keep, nil, opts); err != nil {
		return fmt.Errorf("extracting the index of layer %s: %w", d, err)
	}
	return nil
}

// extractFiltered extracts the entries of l that keep accepts into root,
// streaming l through the filter, and indexes l on the way.
func (b *builder) extractFiltered(ctx context.Context, root string, l v1.Layer, keep func(string) bool, opts []rootfs.Option) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, _ := l.Digest()
	rc, err := layer.Uncompressed(l)
	if err != nil {
		return fmt.Errorf("fetching layer %s: %w", d, err)
	}
	ix := b.newIndex(d)
	err = filterInto(root, rc, keep, ix, opts)
	// Closing reads what was left of a cached layer and checks it
	// (cache.ErrRefused).
	if cerr := rc.Close(); err == nil || errors.Is(cerr, cache.ErrRefused) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("extracting layer %s: %w", d, err)
	}
	b.storeIndex(d, ix, false)
	return nil
}

// filterInto extracts the entries of the layer tar r that keep accepts into
// root, recording all of them in ix when it is not nil.
func filterInto(root string, r io.Reader, keep func(string) bool, ix *rootfs.Index, opts []rootfs.Option) error {
	pr, pw := io.Pipe()
	filtered := make(chan error, 1)
	go func() {
		err := rootfs.Filter(r, pw, keep, ix)
		pw.CloseWithError(err)
		filtered <- err
	}()
	err := rootfs.Extract(root, pr, opts...)
	if err == nil {
		// What Extract left (the trailer's end) lets Filter finish.
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(err)
	ferr := <-filtered
	if err != nil {
		return err
	}
	return ferr
}
