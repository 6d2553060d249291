package rootfs

import (
	"archive/tar"
	"slices"
	"strings"
	"sync"
	"time"
)

// Covered records which of some top-level names of a root the image being
// built has, where the running system covers those names with mounts of its
// own. In an executor pod (in-place builds) /proc, /dev and /sys are the
// pod's: they are excluded from every Extract, Clear and Snapshot, so the
// tree cannot tell whether the image has them, and a layer cannot get them
// from it.
//
// Given to Extract, Clear and NewSnapshotter with WithCovered, it follows
// the image: Extract of a layer records a covered name as present when an
// entry of the layer is at or under it, and as absent when a whiteout of
// the layer deletes it (".wh.NAME" in the root, or the root's opaque
// marker, for what lower layers had); Clear records every name as absent.
// A Snapshot with DefaultMounts writes the missing ones into its layer (see
// there). Names are taken lexically: an entry that reaches a covered name
// through a symlink of the image is not seen. It is safe for concurrent
// use.
type Covered struct {
	mu  sync.Mutex
	has map[string]bool // name → the image has it
}

// NewCovered returns a Covered of the given top-level names (leading and
// trailing slashes are ignored; nested paths are not names and are
// ignored), all absent.
func NewCovered(names ...string) *Covered {
	c := &Covered{has: make(map[string]bool)}
	for _, n := range names {
		if n = cleanRel(n); n != "" && !strings.Contains(n, "/") {
			c.has[n] = false
		}
	}
	return c
}

// Has reports whether the image has the covered name; false for a name
// that is not covered.
func (c *Covered) Has(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.has[cleanRel(name)]
}

// covers reports whether name is one of c's names.
func (c *Covered) covers(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.has[name]
	return ok
}

func (c *Covered) set(name string, has bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.has[name]; ok {
		c.has[name] = has
	}
}

// clear records every name as absent, but those in keep.
func (c *Covered) clear(keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.has {
		if !keep[n] {
			c.has[n] = false
		}
	}
}

// WithCovered makes Extract (of layers: not with WithoutWhiteouts), Clear
// and Snapshot keep c up to date with the image, as Covered says. The
// default tracks nothing.
func WithCovered(c *Covered) Option {
	return func(o *options) { o.covered = c }
}

// DefaultMounts says that the step the snapshot is of ran with the default
// mounts of an OCI runtime at these top-level names (a RUN: /proc, /dev,
// /sys), whose mount points the runtime makes where the root lacks them.
// BuildKit's runc executor leaves them there (runc's mountToRootfs makes
// them, mode 0755, and BuildKit's executor.MountStubsCleaner removes only
// the stubs of /etc/hosts, /etc/resolv.conf and the step's own mounts), so
// the step's layer holds them as empty directories owned by root. A name
// the snapshotter's Covered covers, that the image lacks and that is
// excluded from the tree, is written so: a directory, mode 0755, owner 0:0,
// with the snapshot's time (clamped by ModTime), and is then recorded as
// present. Other names are the tree's to show, as it holds them (a runner
// that makes the mount points in the root, as Chroot does). The default is
// none.
func DefaultMounts(names ...string) SnapshotOption {
	return func(o *snapshotOptions) { o.defaultMounts = append(o.defaultMounts, names...) }
}

// missingMounts returns the items for the default mount points the image
// lacks (see DefaultMounts), sorted.
func (s *Snapshotter) missingMounts(so *snapshotOptions) []item {
	c := s.opts.covered
	if c == nil {
		return nil
	}
	var out []item
	for _, n := range so.defaultMounts {
		n = cleanRel(n)
		if !c.covers(n) || c.Has(n) || !s.opts.excludedSelf(n) || slices.ContainsFunc(out, func(it item) bool { return it.name == n }) {
			continue
		}
		out = append(out, item{key: n, name: n, kind: kindMountPoint})
	}
	slices.SortFunc(out, func(a, b item) int { return strings.Compare(a.key, b.key) })
	return out
}

// mountPointHeader is the tar header of a default mount point the runtime
// made (see DefaultMounts).
func mountPointHeader(name string, so *snapshotOptions) *tar.Header {
	mtime := time.Now().Truncate(time.Second)
	if so.clampSet && mtime.After(so.modTime) {
		mtime = so.modTime
	}
	return &tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}
}

// coverEntry records in the extraction's Covered what the layer's entry
// rel (dir/name) says of the covered names.
func (x *extractor) coverEntry(rel, dir, name string) {
	c := x.t.opts.covered
	if c == nil || x.t.opts.noWhiteouts || rel == "" {
		return
	}
	if !strings.HasPrefix(name, whiteoutPrefix) {
		top, _, _ := strings.Cut(rel, "/")
		if c.covers(top) {
			c.set(top, true)
			x.covSeen[top] = true
		}
		return
	}
	if dir != "" {
		return
	}
	target, aufs, err := whiteoutTarget(name)
	switch {
	case err != nil || aufs:
	case name == whiteoutOpaque:
		// Lower layers' names are gone; this layer's own stay.
		c.clear(x.covSeen)
	case !x.covSeen[target]:
		// A whiteout hides lower layers only.
		c.set(target, false)
	}
}
