package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// ErrNotRevertible is what Revert's error wraps when the tree cannot be
// taken back to its lower layers exactly (a path of the upper layers under
// a symlink, an index that cannot be read): the caller unpacks the lower
// layers instead.
var ErrNotRevertible = errors.New("the tree cannot be reverted")

// Revert takes root, the tree that extracting lower then upper layers
// made (with Extract, or Snapshot recording the changes as those layers),
// back to the tree of the lower layers alone, touching only what the upper
// layers touched. lowerIx and upperIx are the layers' indexes (Index.Bytes),
// in order; open returns lower layer i's uncompressed tar, and is called
// only for the lower layers that hold the content of a regular file or
// hard link that the upper layers changed or removed.
//
// It undoes each path the upper layers name: a path the lower layers do not
// have is removed (with what is under it); a directory they have that is a
// directory still gets their metadata back; any other path they have gets
// their entry back, and so does everything they have under a directory the
// upper layers removed, replaced or made opaque. The lower layers' final
// entries are applied as extracting them in order would (the index tells
// which layer's entry is the last one), each path once.
//
// Containment is Extract's; a path of the upper layers that lies under a
// symlink of the tree is not followed: Revert fails (ErrNotRevertible)
// rather than guess. On failure the tree is not a faithful tree, and must
// be thrown away.
func Revert(root string, lowerIx, upperIx [][]byte, open func(i int) (io.ReadCloser, error), opts ...Option) error {
	o := newOptions(opts)
	// What the upper layers touch: paths they name, and the directories
	// whose lower content they remove (whiteouts, opaque markers).
	touched := map[string]bool{}
	cleared := map[string]bool{} // lower content under these must come back
	for _, ix := range upperIx {
		err := eachIndexEntry(ix, func(h *tar.Header) error {
			rel := cleanRel(h.Name)
			dir, base := path.Split(rel)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == whiteoutOpaque:
				touched[dir], cleared[dir] = true, true
			case strings.HasPrefix(base, whiteoutPrefix):
				target, aufs, err := whiteoutTarget(base)
				if err != nil {
					return err
				}
				if !aufs {
					p := path.Join(dir, target)
					touched[p], cleared[p] = true, true
				}
			case rel != "":
				touched[rel] = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: reading an upper layer's index: %v", ErrNotRevertible, err)
		}
	}
	// The lower layers' tree: each path's final entry and the layer it
	// comes from.
	type lowerEntry struct {
		h     *tar.Header
		layer int
	}
	lower := map[string]lowerEntry{}
	removeUnder := func(dir string, self bool) {
		for p := range lower {
			if IsUnder(p, dir) && (self || p != dir) {
				delete(lower, p)
			}
		}
	}
	for i, ix := range lowerIx {
		written := map[string]bool{}
		var opaques []string
		err := eachIndexEntry(ix, func(h *tar.Header) error {
			rel := cleanRel(h.Name)
			dir, base := path.Split(rel)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == whiteoutOpaque:
				opaques = append(opaques, dir)
			case strings.HasPrefix(base, whiteoutPrefix):
				target, aufs, err := whiteoutTarget(base)
				if err != nil {
					return err
				}
				if p := path.Join(dir, target); !aufs && !written[p] {
					removeUnder(p, true)
				}
			case rel != "":
				if e, ok := lower[rel]; ok && e.h.Typeflag == tar.TypeDir && h.Typeflag != tar.TypeDir {
					// Another type replaces the directory and what was
					// under it.
					removeUnder(rel, false)
				}
				hc := *h
				lower[rel] = lowerEntry{&hc, i}
				written[rel] = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: reading a lower layer's index: %v", ErrNotRevertible, err)
		}
		for _, d := range opaques {
			for p, e := range lower {
				if p != d && IsUnder(p, d) && e.layer < i {
					delete(lower, p)
				}
			}
		}
	}

	t, err := openTree(root, o)
	if err != nil {
		return err
	}
	defer t.close()
	// Undo, parents before children: a path removed takes what is under
	// it along, and what the lower layers have there comes back below.
	paths := make([]string, 0, len(touched))
	for p := range touched {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	restore := map[string]bool{}
	removed := map[string]bool{}
	underRemoved := func(p string) bool {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if removed[d] {
				return true
			}
		}
		return false
	}
	for _, p := range paths {
		if underRemoved(p) {
			if _, ok := lower[p]; ok {
				restore[p] = true
			}
			continue
		}
		st, err := statNoSymlinks(t, p)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotRevertible, p, err)
		}
		le, inLower := lower[p]
		keepDir := st != nil && st.isDir() && inLower && le.h.Typeflag == tar.TypeDir
		if inLower {
			restore[p] = true
		}
		if st != nil && !keepDir {
			if err := removePath(t, p); err != nil {
				return err
			}
			removed[p] = true
			if inLower && le.h.Typeflag == tar.TypeDir {
				cleared[p] = true
			}
		}
	}
	for c := range cleared {
		for p := range lower {
			if IsUnder(p, c) && p != c || p == c && touched[c] {
				restore[p] = true
			}
		}
	}
	// The lower layers' entries back, each from the layer that has its
	// final entry, in layer order; entries without content from the
	// index alone.
	for i := range lowerIx {
		var want []string
		needsLayer := false
		for p := range restore {
			if e := lower[p]; e.layer == i {
				want = append(want, p)
				if e.h.Typeflag == tar.TypeReg || e.h.Typeflag == tar.TypeLink || e.h.Typeflag == tar.TypeRegA {
					needsLayer = true
				}
			}
		}
		if len(want) == 0 {
			continue
		}
		keep := map[string]bool{}
		for _, p := range want {
			keep[p] = true
		}
		var src io.Reader
		var rc io.ReadCloser
		if needsLayer {
			if rc, err = open(i); err != nil {
				return fmt.Errorf("reading lower layer %d: %w", i, err)
			}
			src = rc
		} else {
			zr, err := gzip.NewReader(bytes.NewReader(lowerIx[i]))
			if err != nil {
				return fmt.Errorf("%w: %v", ErrNotRevertible, err)
			}
			src = zr
		}
		err = extractOnly(root, src, keep, opts)
		if rc != nil {
			if cerr := rc.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("restoring lower layer %d's entries: %w", i, err)
		}
	}
	return nil
}

// eachIndexEntry calls fn with each header of an index.
func eachIndexEntry(ix []byte, fn func(h *tar.Header) error) error {
	zr, err := gzip.NewReader(bytes.NewReader(ix))
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(h); err != nil {
			return err
		}
	}
}

// statNoSymlinks lstats rel in the tree without following a symlink on
// the way; nil when it does not exist.
func statNoSymlinks(t *tree, rel string) (*state, error) {
	dir, name := path.Split(rel)
	fd, err := t.open(strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	st, err := statAt(fd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	return st, err
}

// removePath removes rel (with what is under it) from the tree, its
// parents resolved without symlinks.
func removePath(t *tree, rel string) error {
	dir, name := path.Split(rel)
	fd, err := t.open(strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotRevertible, rel, err)
	}
	defer unix.Close(fd)
	_, err = remover{t: t}.removeAll(fd, name, rel)
	return err
}

// extractOnly extracts the entries of the tar r whose paths keep holds
// (whiteouts and opaque markers never: keep names final entries), with
// their content and hard links as they are.
func extractOnly(root string, r io.Reader, keep map[string]bool, opts []Option) error {
	pr, pw := io.Pipe()
	go func() {
		tr := tar.NewReader(r)
		tw := tar.NewWriter(pw)
		err := func() error {
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					return tw.Close()
				}
				if err != nil {
					return err
				}
				if !keep[cleanRel(h.Name)] {
					continue
				}
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				if h.Size > 0 {
					if _, err := io.Copy(tw, tr); err != nil {
						return err
					}
				}
			}
		}()
		if err == nil {
			// The rest of the layer, for the caller's checks at its end.
			_, err = io.Copy(io.Discard, r)
		}
		pw.CloseWithError(err)
	}()
	err := Extract(root, pr, opts...)
	pr.CloseWithError(io.ErrClosedPipe)
	return err
}
