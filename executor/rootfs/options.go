// Package rootfs is the filesystem half of the executor: it applies image
// layers onto a root directory with OCI/Docker layer semantics, clears a root
// between stages, and snapshots what a build step changed into a new layer.
//
// Every path given to or produced by this package is relative to the root,
// slash-separated, without a leading slash ("usr/bin/env"); the root itself
// is "". All file operations resolve paths inside the root as a chroot would
// (openat2 with RESOLVE_IN_ROOT), so nothing is ever written, deleted or read
// outside it, whatever a layer or a build step put into the tree.
package rootfs

import (
	"context"
	"path"
	"strings"
)

// Option configures Extract, Clear and NewSnapshotter.
type Option func(*options)

type options struct {
	exclude     []func(rel string) bool
	noOwnership bool
	skipped     func(rel string, err error)
	index       *Index
	maxSize     int64
	covered     *Covered

	// Extract only, for archives that are not layers (see the options).
	noWhiteouts bool
	owner       *owner
	devices     Policy
	xattrs      Policy
	skipUnknown bool
	beneath     bool
	keepRoot    bool
	linkNoMeta  bool
	ctx         context.Context
	written     func(rel string)
}

type owner struct{ uid, gid int }

func newOptions(opts []Option) *options {
	o := &options{}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// WithExclude excludes the paths for which fn returns true, with everything
// under them: they are never written, deleted or snapshotted. fn receives a
// path relative to the root (see the package documentation) and needs to
// match only the top of an excluded subtree. Typical exclusions are the
// executor's own directory and mount points (see MountPoints). Repeated
// options add up. The default excludes nothing.
func WithExclude(fn func(rel string) bool) Option {
	return func(o *options) { o.exclude = append(o.exclude, fn) }
}

// WithExcludedPaths is WithExclude for a fixed list of paths (leading and
// trailing slashes are ignored).
func WithExcludedPaths(rels ...string) Option {
	set := make(map[string]bool, len(rels))
	for _, r := range rels {
		if c := cleanRel(r); c != "" {
			set[c] = true
		}
	}
	return WithExclude(func(rel string) bool { return set[rel] })
}

// WithoutOwnership makes Extract leave ownership to the extracting user
// instead of applying the uid and gid of each entry, for running as non-root.
// The default applies ownership.
func WithoutOwnership() Option {
	return func(o *options) { o.noOwnership = true }
}

// WithSkipped makes Extract call fn for each thing it could not apply but
// went on without, rather than failing: a device node that cannot be created
// (EPERM in an unprivileged pod) or an extended attribute the filesystem or
// the caller's privileges refuse. By default they are skipped silently.
func WithSkipped(fn func(rel string, err error)) Option {
	return func(o *options) { o.skipped = fn }
}

// WithMaxSize bounds what one layer may expand to: Extract fails, with an
// error naming the entry and satisfying errors.Is(err, ErrLayerTooLarge),
// before the content of the layer's regular files would add up to more than
// n bytes (counted as written: a sparse or zero-filled file counts its full
// size, files skipped as excluded do not count). Options after it override
// it. The default, as n <= 0, is no limit.
func WithMaxSize(n int64) Option {
	return func(o *options) { o.maxSize = n }
}

// WithIndex makes Extract record every entry of the layer it reads in ix
// (excluded ones too: the index is the layer's, not the tree's).
func WithIndex(ix *Index) Option {
	return func(o *options) { o.index = ix }
}

// WithoutWhiteouts makes Extract take ".wh." names as the ordinary files
// they are outside a layer (an ADD archive, a build context). The default
// applies them as whiteouts (see Extract).
func WithoutWhiteouts() Option {
	return func(o *options) { o.noWhiteouts = true }
}

// WithOwner makes Extract give every entry, and every directory it makes on
// the way to one, the owner uid:gid instead of the entry's own (ADD
// --chown). It wins over WithoutOwnership. The default applies each entry's
// uid and gid, and leaves the directories made on the way to the extracting
// user.
func WithOwner(uid, gid int) Option {
	return func(o *options) { o.owner = &owner{uid, gid} }
}

// A Policy says what Extract does with a kind of thing it may be unable to
// make: device nodes and FIFOs (WithDevices), extended attributes
// (WithXattrs).
type Policy int

const (
	// UnlessDenied makes them, skipping (and reporting to WithSkipped)
	// those the extracting user may not make: device nodes that mknod
	// refuses with EPERM (as in an unprivileged pod); extended attributes
	// of the security and trusted namespaces refused with EPERM, and any
	// the filesystem does not support (ENOTSUP). Any other failure fails.
	// The default of both.
	UnlessDenied Policy = iota
	// Required makes them and fails on any error.
	Required
	// BestEffort makes them, skipping (and reporting) any that fails, as
	// Docker's BestEffortXattrs.
	BestEffort
	// Ignored never makes them, and skips them silently.
	Ignored
)

// WithDevices sets what Extract does with device nodes and FIFOs. The
// default is UnlessDenied.
func WithDevices(p Policy) Option {
	return func(o *options) { o.devices = p }
}

// WithXattrs sets what Extract does with the extended attributes of the
// PAX records (SCHILY.xattr.*). The default is UnlessDenied.
func WithXattrs(p Policy) Option {
	return func(o *options) { o.xattrs = p }
}

// WithUnknownTypesSkipped makes Extract skip silently the entries of a type
// it does not make (not a file, directory, symlink, hard link, device node
// or FIFO: tar's contiguous files, volume labels, vendor types). By default
// they fail the extraction, as in Docker's untar.
func WithUnknownTypesSkipped() Option {
	return func(o *options) { o.skipUnknown = true }
}

// WithBeneath makes Extract contain an archive by refusal rather than by
// resolution, as os.Root does: an absolute name, a name or hard link target
// with a ".." component (even one that stays inside), an empty name, and a
// path whose resolution leaves the root (through an absolute symlink or one
// that climbs out with "..") fail the entry (openat2 RESOLVE_BENEATH). The
// default resolves every name inside the root as in a chroot (see Extract).
func WithBeneath() Option {
	return func(o *options) { o.beneath = true }
}

// WithoutRootEntry makes Extract skip entries naming the root itself ("./",
// "/"), so the root keeps its own mode, owner and times, as a directory an
// archive is extracted into does. The default gives the root their
// metadata, as for a layer.
func WithoutRootEntry() Option {
	return func(o *options) { o.keepRoot = true }
}

// WithoutHardLinkMetadata makes Extract leave the inode a hard link entry
// links to with the owner, mode, extended attributes and times it has. By
// default the hard link header's are applied to it, as Docker's untar does
// (moby/go-archive createTarFile), which BuildKit's ADD calls.
func WithoutHardLinkMetadata() Option {
	return func(o *options) { o.linkNoMeta = true }
}

// WithContext makes Extract stop with ctx's error, before the next entry,
// once ctx is done. The default never stops early.
func WithContext(ctx context.Context) Option {
	return func(o *options) { o.ctx = ctx }
}

// WithWritten makes Extract call fn with the root-relative path (symlinks
// resolved) of every entry it writes and every directory it makes on the
// way to one, parents before children; whiteouts and skipped entries are
// not reported. By default nothing is called.
func WithWritten(fn func(rel string)) Option {
	return func(o *options) { o.written = fn }
}

// excluded reports whether rel or one of its ancestors is excluded.
func (o *options) excluded(rel string) bool {
	if len(o.exclude) == 0 || rel == "" {
		return false
	}
	for p := rel; ; {
		for _, fn := range o.exclude {
			if fn(p) {
				return true
			}
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// excludedSelf reports whether rel itself is excluded, for walks that
// already checked the ancestors.
func (o *options) excludedSelf(rel string) bool {
	for _, fn := range o.exclude {
		if fn(rel) {
			return true
		}
	}
	return false
}

func (o *options) skip(rel string, err error) {
	if o.skipped != nil {
		o.skipped(rel, err)
	}
}

// cleanRel turns any path into a root-relative one as a chroot would see it:
// "/a/../b/" and "b" both give "b"; the root is "".
func cleanRel(p string) string {
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/")
}

// join joins a root-relative directory and a name.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// split splits a root-relative path into its directory and name.
func split(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}
