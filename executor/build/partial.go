package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// copyOnPartialTree runs a COPY or ADD that missed the cache while the
// stage's root is not materialised (every step before it came from the
// cache), without unpacking the whole tree: a COPY reads nothing of the
// lower file system but its destination's parents, the destination itself
// and what is below it (merged into or refused), and /etc/passwd and
// /etc/group for --chown. Those are extracted from the layers into a
// scratch root — the layers are still read through, but almost nothing is
// written — and the copy's layer is snapshotted there, entry for entry what
// it would be on the full tree.
//
// It reports done=false, having changed nothing, when the destination's
// path crosses a symlink (its target could be anywhere), so the caller
// materialises the whole tree instead.
func (g *stage) copyOnPartialTree(ctx context.Context, sp *step) (v1.Layer, bool, error) {
	destRel := strings.TrimPrefix(sp.copyDest, "/")
	keep := func(rel string) bool {
		return rel == "etc" || rel == "etc/passwd" || rel == "etc/group" ||
			isUnder(destRel, rel) || isUnder(rel, destRel)
	}
	scratch, err := os.MkdirTemp(g.b.opts.WorkDir, "partial-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(scratch)
	if err := os.Chmod(scratch, 0o755); err != nil {
		return nil, false, err
	}
	opts := g.b.rootfsOptions()
	for _, l := range g.layers {
		if err := extractFiltered(ctx, scratch, l, keep, opts); err != nil {
			return nil, false, err
		}
	}
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
	paths, err := sp.action(ctx, g, scratch)
	if err != nil {
		return nil, false, err
	}
	l, err := g.snapshot(snap, paths)
	if err != nil {
		return nil, false, err
	}
	return l, true, nil
}

// isUnder reports whether p is anc or below it (slash paths relative to the
// root, "" being the root).
func isUnder(p, anc string) bool {
	return anc == "" || p == anc || strings.HasPrefix(p, anc+"/")
}

// extractFiltered extracts the entries of l that keep accepts into root,
// streaming l through the filter.
func extractFiltered(ctx context.Context, root string, l v1.Layer, keep func(string) bool, opts []rootfs.Option) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, _ := l.Digest()
	rc, err := layer.Uncompressed(l)
	if err != nil {
		return fmt.Errorf("fetching layer %s: %w", d, err)
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(rootfs.Filter(rc, pw, keep))
	}()
	err = rootfs.Extract(root, pr, opts...)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("extracting layer %s: %w", d, err)
	}
	return nil
}
