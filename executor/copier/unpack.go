package copier

import (
	"archive/tar"
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
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/source"
)

// isArchive reports whether the file at p is a tar archive, plain or
// compressed, the way BuildKit's isArchivePath decides: decompress by magic
// bytes, then read one tar header.
func isArchive(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	r, _, closeFn, err := source.Decompress(f)
	if err != nil {
		return false, nil
	}
	defer closeFn()
	_, err = tar.NewReader(r).Next()
	return err == nil, nil
}

// tryUnpack extracts m into destAbs if it is a tar archive (ADD). The
// destination is always a directory then, whatever its trailing slash.
func (c *copier) tryUnpack(ctx context.Context, m match, destAbs string) (bool, error) {
	ok, err := isArchive(m.abs)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", m.rel, err)
	}
	if !ok {
		return false, nil
	}
	var sum string
	if c.req.RecordSources {
		if sum, err = fileDigest(m.abs); err != nil {
			return true, err
		}
	}
	if err := c.unpack(ctx, m.abs, m.rel, destAbs); err != nil {
		return true, err
	}
	c.record(m.items[0], sum)
	return true, nil
}

// unpack extracts the archive at p (named name in errors) into the
// directory destAbs, which it creates 0755 whatever --chmod, as BuildKit's
// unpack does.
func (c *copier) unpack(ctx context.Context, p, name, destAbs string) error {
	if err := c.mkdirAll(destAbs, 0o755); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	defer f.Close()
	r, _, closeFn, err := source.Decompress(f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	defer closeFn()
	if err := c.untar(ctx, r, destAbs); err != nil {
		return fmt.Errorf("extracting %s: %w", name, err)
	}
	return nil
}

// untar extracts like Docker's chrootarchive.Untar: dest acts as the root
// (symlinks met on the way are resolved inside it), names that climb out
// of dest are refused, an existing entry is replaced unless both are
// directories, owners come from the archive unless --chown.
//
// Its errors name an entry that is refused by its position in the archive
// (1 for the first), not by its name: the archive's content, which no
// message quotes. Paths created in the image are named.
func (c *copier) untar(ctx context.Context, r io.Reader, dest string) error {
	type dirTime struct {
		path         string
		atime, mtime time.Time
	}
	var dirs []dirTime
	tr := tar.NewReader(r)
	for entry := 1; ; entry++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("tar entry %d: %w", entry, err)
		}
		name, err := archiveName(hdr.Name)
		if err != nil {
			return fmt.Errorf("tar entry %d %w", entry, err)
		}
		if name == "" {
			continue
		}
		parent, err := securejoin.SecureJoin(dest, path.Dir(name))
		if err != nil {
			return fmt.Errorf("tar entry %d: resolving its parent directory: %w", entry, bareErrno(err))
		}
		if err := c.mkdirAll(parent, 0o755); err != nil {
			return err
		}
		target := filepath.Join(parent, path.Base(name))

		if fi, err := os.Lstat(target); err == nil {
			if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
				if err := os.RemoveAll(target); err != nil {
					return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
				}
			}
		}

		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
			dirs = append(dirs, dirTime{target, hdr.AccessTime, hdr.ModTime})
		case tar.TypeReg, tar.TypeRegA:
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing /%s: %w", c.destRel(target), err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
		case tar.TypeLink:
			ln, err := archiveName(hdr.Linkname)
			if err != nil || ln == "" {
				return fmt.Errorf("tar entry %d, the hardlink /%s: its target is invalid or outside of the destination", entry, c.destRel(target))
			}
			old, err := securejoin.SecureJoin(dest, ln)
			if err != nil {
				return fmt.Errorf("tar entry %d, the hardlink /%s: resolving its target: %w", entry, c.destRel(target), bareErrno(err))
			}
			if err := os.Link(old, target); err != nil {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			mode := uint32(hdr.Mode & 0o7777)
			switch hdr.Typeflag {
			case tar.TypeChar:
				mode |= unix.S_IFCHR
			case tar.TypeBlock:
				mode |= unix.S_IFBLK
			default:
				mode |= unix.S_IFIFO
			}
			if err := unix.Mknod(target, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			continue
		}
		c.markChanged(target)

		if hdr.Typeflag == tar.TypeLink {
			continue // shares the inode's metadata
		}
		uid, gid := hdr.Uid, hdr.Gid
		if o := c.req.Chown; o != nil {
			uid, gid = o.UID, o.GID
		}
		if err := os.Lchown(target, uid, gid); err != nil {
			return fmt.Errorf("setting owner of /%s: %w", c.destRel(target), err)
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(target, hdr.FileInfo().Mode()); err != nil {
				return fmt.Errorf("setting mode of /%s: %w", c.destRel(target), err)
			}
		}
		for k, v := range hdr.PAXRecords {
			if xk, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				_ = unix.Lsetxattr(target, xk, []byte(v), 0) // best effort, as Docker's BestEffortXattrs
			}
		}
		if hdr.Typeflag != tar.TypeDir {
			if err := lutimes(target, hdr.AccessTime, hdr.ModTime); err != nil {
				return fmt.Errorf("setting times of /%s: %w", c.destRel(target), err)
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := lutimes(dirs[i].path, dirs[i].atime, dirs[i].mtime); err != nil {
			return fmt.Errorf("setting times of /%s: %w", c.destRel(dirs[i].path), err)
		}
	}
	return nil
}

// archiveName cleans a tar entry name relative to the extraction root:
// a leading "/" is dropped (Docker joins it under the destination) and a
// name that climbs out is refused (Docker's breakout error).
func archiveName(n string) (string, error) {
	p := path.Clean(strings.TrimLeft(n, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", errors.New("is outside of the destination")
	}
	if p == "." {
		return "", nil
	}
	return p, nil
}

// bareErrno is err's errno when it has one: securejoin's errors quote the
// path they met, which comes from the archive.
func bareErrno(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return errors.New("the path cannot be resolved")
}

func lutimes(p string, atime, mtime time.Time) error {
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
