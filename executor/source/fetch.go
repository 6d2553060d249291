// Package source turns kaniko's --context forms into a local directory and
// applies the build context's ignore file the way Docker does.
package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Fetch makes the build context named by contextURL available as a local
// directory and returns it, with subPath (kaniko's --context-sub-path)
// applied.
//
// The forms are kaniko's:
//   - "dir://PATH" or a bare PATH: the directory is used in place;
//   - "tar://PATH": a tar archive, plain or compressed (gzip, bzip2, zstd,
//     detected by magic bytes, not by name), extracted into workDir. No entry
//     may land outside workDir: absolute names, ".." and paths through
//     symlinks that leave workDir are refused;
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

func isDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", p)
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
	if err := ExtractTar(ctx, r, dest); err != nil {
		return fmt.Errorf("extracting %s: %w", p, err)
	}
	return nil
}

// ExtractTar extracts the tar stream r into dest, which must exist.
// Every path is opened through an os.Root on dest, so no entry can be
// written outside it: absolute names and ".." are refused up front, and a
// path that would pass through a symlink pointing outside dest fails.
// Symlinks themselves are created as they are (their targets are data).
// Modes and modification times are kept; ownership is not (the build
// context is owned by root when copied, as in Docker).
func ExtractTar(ctx context.Context, r io.Reader, dest string) error {
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()

	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("creating parent of %s: %w", hdr.Name, err)
			}
		}
		// FileInfo maps the Unix setuid, setgid and sticky bits too.
		mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
				if err := root.Remove(name); err != nil {
					return fmt.Errorf("replacing %s: %w", hdr.Name, err)
				}
			}
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("creating %s: %w", hdr.Name, err)
			}
			if err := root.Chmod(name, mode); err != nil {
				return fmt.Errorf("setting mode of %s: %w", hdr.Name, err)
			}
			dirs = append(dirs, dirTime{name, hdr.ModTime})
		case tar.TypeReg, tar.TypeRegA:
			if err := removeExisting(root, name); err != nil {
				return fmt.Errorf("replacing %s: %w", hdr.Name, err)
			}
			out, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("creating %s: %w", hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", hdr.Name, err)
			}
			if err := root.Chmod(name, mode); err != nil {
				return fmt.Errorf("setting mode of %s: %w", hdr.Name, err)
			}
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return fmt.Errorf("setting times of %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := removeExisting(root, name); err != nil {
				return fmt.Errorf("replacing %s: %w", hdr.Name, err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("creating symlink %s: %w", hdr.Name, err)
			}
		case tar.TypeLink:
			target, err := entryName(hdr.Linkname)
			if err != nil {
				return fmt.Errorf("hardlink %s: %w", hdr.Name, err)
			}
			if err := removeExisting(root, name); err != nil {
				return fmt.Errorf("replacing %s: %w", hdr.Name, err)
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("creating hardlink %s: %w", hdr.Name, err)
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			// Devices, FIFOs and the like have no place in a build context.
			continue
		}
	}
	// Directory times last, since creating entries inside changes them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime); err != nil {
			return fmt.Errorf("setting times of %s: %w", dirs[i].name, err)
		}
	}
	return nil
}

// entryName cleans a tar entry name, refusing absolute names and any ".."
// component (even one that would stay inside after cleaning).
func entryName(n string) (string, error) {
	if n == "" {
		return "", errors.New("tar entry with an empty name")
	}
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("tar entry %q has an absolute path", n)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("tar entry %q leaves the destination", n)
		}
	}
	return path.Clean(n), nil
}

func removeExisting(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return root.RemoveAll(name)
	}
	return root.Remove(name)
}
