// Package source turns kaniko's --context forms into a local directory and
// applies the build context's ignore file the way Docker does.
package source

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/slipway-dev/slipway/executor/rootfs"
)

// Fetch makes the build context named by contextURL available as a local
// directory and returns it, with subPath (kaniko's --context-sub-path)
// applied.
//
// The forms are kaniko's:
//   - "dir://PATH" or a bare PATH: the directory is used in place;
//   - "tar://PATH": a tar archive, plain or compressed (gzip, bzip2, zstd,
//     xz, detected by magic bytes, not by name), extracted into workDir by
//     rootfs.Extract (see extractTar). No entry may land outside workDir:
//     absolute names, ".." and paths through symlinks that leave workDir
//     are refused;
//   - "git://…", "ssh://…", "git@…" and "http(s)://…" are git contexts,
//     checked out into workDir by FetchWithInfo (which also reports the
//     commit and takes the --git options).
//
// subPath must be relative and stay inside the context; symlinks in it are
// resolved inside the context.
func Fetch(ctx context.Context, contextURL, subPath, workDir string) (dir string, err error) {
	var root string
	switch {
	case contextURL == "":
		return "", errors.New("fetching context: no context given")
	case isGit(contextURL):
		f, err := FetchWithInfo(ctx, contextURL, subPath, workDir, FetchOptions{})
		return f.Dir, err
	case strings.HasPrefix(contextURL, "tar://"):
		p := strings.TrimPrefix(contextURL, "tar://")
		if workDir == "" {
			return "", fmt.Errorf("fetching context %s: no work directory to extract into", contextURL)
		}
		if err := extractTarFile(ctx, p, workDir); err != nil {
			return "", fmt.Errorf("fetching context %s: %w", contextURL, err)
		}
		root = workDir
	case strings.HasPrefix(contextURL, "dir://"):
		root = strings.TrimPrefix(contextURL, "dir://")
	case strings.Contains(contextURL, "://"):
		return "", fmt.Errorf("fetching context %s: unsupported context scheme", contextURL)
	default:
		root = contextURL
	}

	root, err = filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("fetching context %s: %w", contextURL, err)
	}
	if err := isDir(root); err != nil {
		return "", fmt.Errorf("fetching context %s: %w", contextURL, err)
	}
	if subPath == "" {
		return root, nil
	}
	dir, err = joinSubPath(root, subPath)
	if err != nil {
		return "", fmt.Errorf("fetching context %s: %w", contextURL, err)
	}
	return dir, nil
}

func isGit(u string) bool {
	switch {
	case strings.HasPrefix(u, "git://"), strings.HasPrefix(u, "ssh://"), strings.HasPrefix(u, "git@"):
		return true
	case strings.HasPrefix(u, "http://"), strings.HasPrefix(u, "https://"):
		// kaniko treats any http(s) context as git; a plain URL to a tarball
		// is not a kaniko form either, so both get the git error for now.
		return true
	}
	return false
}

// isDir reports why p is not a directory. The error does not name p: its
// callers name the path as the user gave it (the context's URL, the
// sub-path), since p may be in the executor's work directory.
func isDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return bareErrno(err)
	}
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	return nil
}

// joinSubPath applies --context-sub-path: it must not climb out of root
// lexically, and symlinks in it are resolved as if root were "/".
func joinSubPath(root, subPath string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(subPath))
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("context sub-path %q leaves the context", subPath)
	}
	dir, err := securejoin.SecureJoin(root, clean)
	if err != nil {
		return "", fmt.Errorf("resolving context sub-path %q: %w", subPath, err)
	}
	if err := isDir(dir); err != nil {
		return "", fmt.Errorf("context sub-path %q: %w", subPath, err)
	}
	return dir, nil
}

// Decompress returns a reader of r's content, decompressed when it starts
// with the magic bytes of gzip, bzip2, zstd or xz, and the name of the
// compression ("" for none). The returned closer releases the decompressor.
func Decompress(r io.Reader) (io.Reader, string, func(), error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", nil, err
		}
		return zr, "gzip", func() { zr.Close() }, nil
	case bytes.HasPrefix(head, []byte("BZh")):
		return bzip2.NewReader(br), "bzip2", func() {}, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, "", nil, err
		}
		return zr, "zstd", zr.Close, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X'}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, "", nil, err
		}
		return xr, "xz", func() {}, nil
	}
	return br, "", func() {}, nil
}

func extractTarFile(ctx context.Context, p, dest string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	r, _, closeFn, err := Decompress(f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	defer closeFn()
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	if err := extractTar(ctx, r, dest); err != nil {
		return fmt.Errorf("extracting %s: %w", p, err)
	}
	return nil
}

// extractTar extracts the tar stream of a tar:// context into dest, which
// must exist, with rootfs.Extract. A build context is no layer, and its tar
// is held to what os.Root allows: absolute names, names and hard link
// targets with a ".." component, and paths through symlinks that leave dest
// (absolute ones included) are refused (rootfs.WithBeneath). Symlinks
// themselves are created as they are (their targets are data). Modes and
// times are kept; owners are not (the build context is owned by root, as in
// Docker), nor are extended attributes; ".wh." names are files; device
// nodes, FIFOs and types unknown to tar have no place in a build context and
// are skipped; an entry naming dest itself leaves it as it is.
func extractTar(ctx context.Context, r io.Reader, dest string) error {
	err := rootfs.Extract(dest, r,
		rootfs.WithContext(ctx),
		rootfs.WithBeneath(),
		rootfs.WithoutWhiteouts(),
		rootfs.WithoutOwnership(),
		rootfs.WithXattrs(rootfs.Ignored),
		rootfs.WithDevices(rootfs.Ignored),
		rootfs.WithUnknownTypesSkipped(),
		rootfs.WithoutRootEntry(),
	)
	var ee *rootfs.EntryError
	if !errors.As(err, &ee) {
		return err
	}
	if ee.Name == "" {
		return ee.Err // the tar stream itself is broken
	}
	var link *rootfs.LinkTargetError
	name := ee.Name
	if errors.As(ee.Err, &link) {
		name = link.Target
	}
	switch {
	case errors.Is(ee.Err, rootfs.ErrAbsolute):
		return fmt.Errorf("tar entry %q has an absolute path", name)
	case errors.Is(ee.Err, rootfs.ErrOutside) && link != nil:
		return fmt.Errorf("hardlink %s: tar entry %q leaves the destination", ee.Name, name)
	case errors.Is(ee.Err, rootfs.ErrOutside):
		return fmt.Errorf("tar entry %q leaves the destination", name)
	}
	return fmt.Errorf("tar entry %q: %w", ee.Name, ee.Err)
}
