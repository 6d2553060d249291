package copier

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/rootfs"
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
	if err := rootfs.Extract(destAbs, r, c.untarOptions(ctx, destAbs)...); err != nil {
		return fmt.Errorf("extracting %s: %w", name, c.untarErr(err, destAbs))
	}
	return nil
}

// untarOptions make rootfs.Extract extract like Docker's
// chrootarchive.Untar, which BuildKit's unpack calls: destAbs acts as the
// root (names and symlinks met on the way resolve inside it), names that
// climb out are refused, an existing entry is replaced unless both are
// directories, owners come from the archive unless --chown (which also owns
// the directories made on the way), a hard link leaves its inode's metadata
// as it is (Docker's untar applies the link header's: a difference kept
// from the extractor this replaced), ".wh." names are files, device nodes
// are made or fail, extended attributes are set where they can be, entries
// of unknown types are skipped, and an entry naming the archive's root
// leaves destAbs as it is. What is written is marked changed.
func (c *copier) untarOptions(ctx context.Context, destAbs string) []rootfs.Option {
	opts := []rootfs.Option{
		rootfs.WithContext(ctx),
		rootfs.WithoutWhiteouts(),
		rootfs.WithDevices(rootfs.Required),
		rootfs.WithXattrs(rootfs.BestEffort),
		rootfs.WithUnknownTypesSkipped(),
		rootfs.WithoutRootEntry(),
		rootfs.WithoutHardLinkMetadata(),
		rootfs.WithWritten(func(rel string) { c.markChanged(filepath.Join(destAbs, filepath.FromSlash(rel))) }),
	}
	if o := c.req.Chown; o != nil {
		opts = append(opts, rootfs.WithOwner(o.UID, o.GID))
	}
	return opts
}

// untarErr is rootfs.Extract's error as an ADD reports it: an entry is named
// by its position in the archive (1 for the first), never by its name or
// its hard link's target, the archive's content, which no message quotes;
// the paths it was written to in the image are named.
func (c *copier) untarErr(err error, destAbs string) error {
	var ee *rootfs.EntryError
	if !errors.As(err, &ee) {
		return err
	}
	if ee.Name == "" {
		return fmt.Errorf("tar entry %d: %w", ee.Index, ee.Err) // reading the archive
	}
	at := "/" + c.destRel(filepath.Join(destAbs, filepath.FromSlash(ee.Path)))
	var link *rootfs.LinkTargetError
	switch {
	case errors.As(ee.Err, &link):
		var errno unix.Errno
		if errors.As(link.Err, &errno) {
			return fmt.Errorf("tar entry %d, the hardlink %s: linking to its target: %w", ee.Index, at, errno)
		}
		return fmt.Errorf("tar entry %d, the hardlink %s: its target is invalid or outside of the destination", ee.Index, at)
	case errors.Is(ee.Err, rootfs.ErrOutside):
		return fmt.Errorf("tar entry %d is outside of the destination", ee.Index)
	case ee.Path == "":
		return fmt.Errorf("tar entry %d: %w", ee.Index, bareErr(ee.Err))
	}
	return fmt.Errorf("tar entry %d, %s: %w", ee.Index, at, bareErr(ee.Err))
}

// bareErr is err's errno, or the end of a truncated archive, when it has
// one: rootfs's errors quote the names they met, which come from the
// archive.
func bareErr(err error) error {
	var errno unix.Errno
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, io.ErrUnexpectedEOF):
		return io.ErrUnexpectedEOF
	}
	return errors.New("the entry cannot be extracted")
}
