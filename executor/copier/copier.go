// Package copier performs Dockerfile COPY and ADD steps with BuildKit's
// semantics (dockerfile2llb's dispatchCopy, the file op's docopy and
// tonistiigi/fsutil's copy), writing into a stage's root filesystem as if
// it were chrooted there.
package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	mode "github.com/tonistiigi/dchapes-mode"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/source"
)

// Owner is a numeric owner for --chown.
type Owner struct {
	UID, GID int
}

// Request describes one COPY or ADD instruction, after ARG/ENV expansion.
type Request struct {
	// SrcRoot is where sources are read: the build context directory,
	// another stage's root filesystem or an extracted image.
	SrcRoot string
	// Ignore reports whether a SrcRoot-relative slash path is excluded
	// (the build context's .dockerignore). Nil: nothing is ignored.
	Ignore func(rel string) (bool, error)
	// IgnoreDescend reports whether an ignored directory may hold entries
	// that an exception takes back, so it must still be searched. Nil: every
	// ignored directory is searched (correct, slower).
	IgnoreDescend func(rel string) bool
	// Exclude are the patterns of COPY/ADD --exclude (moby/patternmatcher's
	// syntax, "!" exceptions included), applied after Ignore as BuildKit's
	// file op applies them: to each entry's path below the source that
	// holds it, after wildcard expansion, never to a source itself. So
	// "*.txt" leaves out dir/a.txt of the source dir, and a wildcard whose
	// every match is a directory of excluded files copies nothing but makes
	// the destination. An excluded directory is copied only as the parent
	// of entries an exception takes back. Excluded files are never read.
	Exclude []string
	// Sources as written: relative to SrcRoot (a leading "/" also means
	// SrcRoot, and ".." cannot climb above it), possibly with wildcards
	// (*, ?, [...]); for ADD also http(s):// URLs.
	Sources []string
	// Parents is COPY --parents (BuildKit's dispatchCopy and fsutil's
	// include patterns): each local source is cut at its first "/./" into
	// a directory (SrcRoot when there is no "/./") and a pattern below it,
	// and what the pattern selects is copied into Dest with its path below
	// that directory, parent directories included ("a/./b/c" to /d/ makes
	// /d/b/c, "a/b/c" makes /d/a/b/c). Wildcards may be on both sides,
	// "**" too; a source without any must find its path.
	Parents bool
	// Dest as written; relative paths are resolved against WorkDir. A
	// trailing "/" (or a final "." component) makes it a directory.
	Dest string
	// WorkDir is the stage's absolute working directory.
	WorkDir string
	// DestRoot is the stage's root filesystem.
	DestRoot string
	// Chown overrides the owner of everything written, including the
	// destination directories the step creates. Nil: Docker's default, see
	// KeepOwner.
	Chown *Owner
	// KeepOwner keeps the sources' owners when Chown is nil, as BuildKit does
	// for COPY --from (another stage or an image). False: everything is
	// owned by 0:0, as for the build context.
	KeepOwner bool
	// Chmod overrides the permission bits of everything copied (files and
	// directories, not symlinks), as BuildKit applies --chmod.
	Chmod *fs.FileMode
	// ModeSet is a symbolic --chmod ("u+x,g-w", "a=rX"), parsed by the
	// library BuildKit uses (tonistiigi/dchapes-mode, with umask 0). It
	// changes each copied entry's own mode, as fsutil's copyFileInfo applies
	// it to the source's mode (so "X" makes directories, and files already
	// executable by someone, executable), never a symlink's. The
	// destination directories a copy creates are 0755, as without --chmod
	// (fsutil gets no octal mode then). It wins over Chmod.
	ModeSet *mode.Set
	// Add enables ADD: local archives are extracted and URLs downloaded.
	Add bool
	// Unpack is ADD --unpack (BuildKit's dispatchCopy, AttemptUnpack). Nil
	// is ADD's default: local archives are extracted, downloads are not;
	// true also extracts a download that is an archive (into Dest, a
	// directory then, as a local archive); false extracts nothing.
	Unpack *bool
	// TempDir holds a download while it is found out whether it is an
	// archive (--unpack=true), outside DestRoot. Empty: os.TempDir().
	TempDir string
	// HTTPClient downloads ADD URLs. Nil: http.DefaultClient.
	HTTPClient *http.Client
	// RecordSources makes Copy fill Result.Sources (hashing what it
	// copies); they cost memory and time for large trees, and Sources
	// gives the same list before the copy.
	RecordSources bool
	// Checksum is ADD --checksum: the digest the one URL source's content
	// must have. Sources keys the URL by it without asking the server, and
	// Copy fails, keeping nothing, when the download does not match it.
	Checksum digest.Digest
}

// SourceFile is one source entry a step reads: what of it affects the
// copied result, for cache keys. Modification times are left out on
// purpose (keys never include timestamps), as are owners when the step
// does not keep them.
type SourceFile struct {
	// Path is SrcRoot-relative (slash-separated), or the URL. A top-level
	// source that is a symlink is recorded at the path it resolves to.
	Path string
	// Mode is the entry's type and permission bits, setuid, setgid and
	// sticky included. A URL is recorded as 0600, the mode Copy gives it.
	Mode fs.FileMode
	// UID and GID are the entry's owner, recorded only when the step keeps
	// owners (Request.KeepOwner without Chown); zero otherwise.
	UID int `json:"Uid,omitempty"`
	GID int `json:"Gid,omitempty"`
	// Link is a symlink's target.
	Link string `json:",omitempty"`
	// HardLink is the Path of an earlier regular file of the same step
	// sharing this one's inode: Copy writes this entry as a hard link to it.
	HardLink string `json:",omitempty"`
	// Rdev is a device node's device number.
	Rdev uint64 `json:",omitempty"`
	// Xattrs are the extended attributes Copy carries over (file
	// capabilities among them), except security.selinux.
	Xattrs map[string][]byte `json:",omitempty"`
	// Digest is "sha256:<hex>" of a regular file's content. For an ADD URL,
	// Copy records the digest of what it downloaded and Sources the
	// server's validators ("url:..." or "", see Sources).
	Digest string `json:",omitempty"`
}

// Result is what a step did.
type Result struct {
	// Changed are the DestRoot-relative slash paths the step created or
	// changed, each once, parents before children. What is inside a
	// directory the step created is not listed: the directory stands for
	// it (a copy of many files into a new directory lists one path).
	Changed []string
	// Sources, with Request.RecordSources, are the entries read, sorted by
	// Path (stable: an entry read
	// twice, through two sources, appears twice). For local sources this
	// is exactly what Sources returns for the same request.
	Sources []SourceFile
}

// Copy performs the step.
//
// Docker behaviour implemented (BuildKit is the reference):
//   - a directory source copies its contents, not itself; an existing
//     destination directory is merged into, keeping its own metadata, while
//     directories below it take the source's metadata;
//   - with one source file, a destination without a trailing "/" is the
//     file's new name, unless it is an existing directory (then the file
//     goes inside it);
//   - more than one source (several, or a wildcard matching several) is
//     copied one after the other by those rules, the destination looked at
//     anew for each: without a trailing "/" a file goes to the name (a
//     later file replacing an earlier one there, moby/buildkit#1853), or
//     into it once it is a directory (made by a directory source or an
//     ADD archive before it). The legacy builder's "must end with a /"
//     error is not BuildKit's;
//   - missing destination directories are created with an octal --chmod's
//     permission bits (moby/buildkit testCopyChmod) or 0755, owned by
//     --chown (moby/buildkit#640) or root; an ADD archive's destination is
//     0755 whatever --chmod;
//   - a source that is not there is an error, and so is a wildcard in a
//     directory that is not there; a wildcard that matches nothing copies
//     nothing, and a step whose wildcards all match nothing changes nothing
//     and makes no destination (BuildKit's AllowEmptyWildcard; the legacy
//     builder's "no source files were specified" is not BuildKit's);
//   - sources cannot leave SrcRoot ("../x" is clamped to "/x");
//   - a source path itself is followed if it is a symlink (BuildKit's
//     FollowSymlinks) and keeps the name as written; symlinks inside copied
//     directories are copied as symlinks;
//   - permission bits including setuid/setgid/sticky, mtimes and xattrs are
//     kept unless --chmod (an octal one sets them, a symbolic one changes
//     each entry's own, see ModeSet); owners as described for Chown and
//     KeepOwner;
//   - hardlinks among the files of one step are kept as hardlinks (fsutil
//     does the same);
//   - a directory cannot replace a non-directory ("cannot copy to
//     non-directory") nor a file a directory inside a copied tree ("cannot
//     replace to directory ... with file"); symlinks already in DestRoot are
//     followed only on the destination path itself, resolved inside
//     DestRoot;
//   - ignored files are never read; a source that is entirely ignored is
//     not found;
//   - --exclude (Request.Exclude) leaves out entries below each source,
//     matched relative to that source, never a source itself (fsutil's
//     copier.copy); excluded files are never read;
//   - ADD extracts local tar archives (plain, gzip, bzip2, zstd) into the
//     destination directory keeping the archive's owners unless --chown,
//     and downloads http(s) URLs (never extracted) to the name in the URL's
//     path, mode 0600 unless --chmod, mtime from Last-Modified.
func Copy(ctx context.Context, r Request) (Result, error) {
	w := newWalker(r)
	matches, err := w.plan(ctx)
	if err != nil {
		return Result{}, err
	}
	return copyMatches(ctx, w, matches)
}

// Walked is a request whose sources were walked once, so that Sources and
// then Copy of the same sources read that walk instead of walking the tree
// again. The source tree must not change in between (a build context).
type Walked struct {
	w       *walker
	matches []match
}

// Walk walks r's sources as Sources and Copy would, failing as they would.
func Walk(ctx context.Context, r Request) (*Walked, error) {
	w := newWalker(r)
	matches, err := w.plan(ctx)
	if err != nil {
		return nil, err
	}
	return &Walked{w: w, matches: matches}, nil
}

// WalkSources is Walk followed by Sources of the walk, reading each
// regular file below a directory source once for both.
func WalkSources(ctx context.Context, r Request) (*Walked, []SourceFile, error) {
	w := newWalker(r)
	w.digest = true
	matches, err := w.plan(ctx)
	if err != nil {
		return nil, nil, err
	}
	p := &Walked{w: w, matches: matches}
	files, err := p.Sources(ctx)
	if err != nil {
		return nil, nil, err
	}
	return p, files, nil
}

// Sources is Sources of the walked request.
func (p *Walked) Sources(ctx context.Context) ([]SourceFile, error) {
	return sourcesOf(ctx, p.w, p.matches)
}

// Copy is Copy of r, which must name the walked sources, in the same tree
// (SrcRoot, Sources, Ignore, IgnoreDescend and Add as walked); what is
// copied where and how (DestRoot, Dest, WorkDir, Chown, Chmod, ModeSet) may be set
// now.
func (p *Walked) Copy(ctx context.Context, r Request) (Result, error) {
	return copyMatches(ctx, &walker{req: r, seen: p.w.seen}, p.matches)
}

func copyMatches(ctx context.Context, w *walker, matches []match) (Result, error) {
	c := &copier{walker: w, fresh: map[string]bool{}, inodes: map[inode]linkedFile{}, changed: map[string]bool{}}
	if err := c.run(ctx, matches); err != nil {
		return Result{}, err
	}
	sortSources(c.sources)
	return Result{Changed: c.changedList, Sources: c.sources}, nil
}

type copier struct {
	*walker
	// fresh holds the directories this copy created: nothing else is in
	// them. Written only while nothing is copied concurrently.
	fresh map[string]bool
	// mu guards the fields below while files are copied concurrently.
	mu sync.Mutex
	// inodes maps a multiply-linked source file's inode to its first copy.
	inodes      map[inode]linkedFile
	changed     map[string]bool
	changedList []string
	sources     []SourceFile
}

// linkedFile is the first copy of a multiply-linked source file.
type linkedFile struct{ target, digest string }

func (c *copier) run(ctx context.Context, matches []match) error {
	r := c.req
	if len(r.Sources) > 0 && r.DestRoot == "" {
		return errors.New("copying: no destination root")
	}

	destPath, destIsDir := c.destPath()
	destAbs, err := securejoin.SecureJoin(r.DestRoot, destPath)
	if err != nil {
		return fmt.Errorf("resolving destination %s: %w", r.Dest, err)
	}
	// Several sources (or wildcard matches) need no trailing "/": BuildKit
	// copies each in turn by the one-source rules below (its file op's
	// docopy calls fsutil's copy.Copy per match, whose prepareTargetDir
	// looks at the destination each time).

	for _, m := range matches {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		switch {
		case m.url != "":
			err = c.download(ctx, m.url, destAbs, destIsDir)
		case m.fi.IsDir():
			err = c.copyDirSource(ctx, m, destAbs)
		default:
			var done bool
			if r.Add && (r.Unpack == nil || *r.Unpack) && m.fi.Mode().IsRegular() {
				done, err = c.tryUnpack(ctx, m, destAbs)
			}
			if !done && err == nil {
				err = c.copyFileSource(m, destAbs, destIsDir)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// destPath returns the absolute destination path (inside DestRoot) and
// whether it was written as a directory: trailing "/", ".", or a final "."
// component (BuildKit's pathRelativeToWorkingDir keeps the slash for those).
func (c *copier) destPath() (string, bool) {
	d := filepath.ToSlash(c.req.Dest)
	isDir := d == "" || d == "." || strings.HasSuffix(d, "/") || strings.HasSuffix(d, "/.")
	if !path.IsAbs(d) {
		wd := filepath.ToSlash(c.req.WorkDir)
		if wd == "" {
			wd = "/"
		}
		d = path.Join(wd, d)
	}
	return path.Clean("/" + d), isDir
}

// destRel is the DestRoot-relative slash path of an absolute destination path.
func (c *copier) destRel(abs string) string {
	rel, err := filepath.Rel(c.req.DestRoot, abs)
	if err != nil {
		return abs
	}
	return filepath.ToSlash(rel)
}

func (c *copier) markChanged(abs string) {
	if c.fresh[filepath.Dir(abs)] {
		return // its new parent stands for it
	}
	rel := c.destRel(abs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if rel == "." || c.changed[rel] {
		return
	}
	c.changed[rel] = true
	c.changedList = append(c.changedList, rel)
}

// destDirMode is the mode of the destination directories a copy creates:
// an octal --chmod's permission bits, else 0755. BuildKit's file op passes the
// octal --chmod to fsutil's copy.Copy, which creates the destination's
// missing parents (and the destination directory itself, for a directory
// source or a trailing "/") with it (moby/buildkit testCopyChmod).
func (c *copier) destDirMode() fs.FileMode {
	if c.req.Chmod != nil && c.req.ModeSet == nil {
		return c.req.Chmod.Perm()
	}
	return 0o755
}

// mkdirAll creates the missing directories of abs (inside DestRoot, where
// abs was resolved) with mode perm, owned by --chown or root, like
// fsutil's MkdirAll; directories that exist are left as they are.
func (c *copier) mkdirAll(abs string, perm fs.FileMode) error {
	fi, err := os.Stat(abs)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("creating %s: cannot copy to non-directory: %s", c.destRel(abs), c.destRel(abs))
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("creating %s: %w", c.destRel(abs), err)
	}
	if abs == c.req.DestRoot {
		return fmt.Errorf("destination root %s does not exist", abs)
	}
	if err := c.mkdirAll(filepath.Dir(abs), perm); err != nil {
		return err
	}
	if err := os.Mkdir(abs, 0o700); err == nil {
		c.fresh[abs] = true
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", c.destRel(abs), err)
	}
	uid, gid := 0, 0
	if o := c.req.Chown; o != nil {
		uid, gid = o.UID, o.GID
	}
	if err := os.Lchown(abs, uid, gid); err != nil {
		return fmt.Errorf("setting owner of %s: %w", c.destRel(abs), err)
	}
	if err := os.Chmod(abs, perm); err != nil {
		return fmt.Errorf("setting mode of %s: %w", c.destRel(abs), err)
	}
	c.markChanged(abs)
	return nil
}

// copyDirSource copies the contents of a directory source into destAbs.
func (c *copier) copyDirSource(ctx context.Context, m match, destAbs string) error {
	if fi, err := os.Lstat(destAbs); err == nil && !fi.IsDir() {
		return fmt.Errorf("%s %s: cannot copy to non-directory: /%s", c.instr(), m.rel, c.destRel(destAbs))
	}
	if err := c.mkdirAll(destAbs, c.destDirMode()); err != nil {
		return err
	}
	// The top directory keeps its own metadata (fsutil's copyDirContents).
	// The walker lists parents before children, so every target's parent
	// exists when it is reached; directory metadata is set last, deepest
	// first, so modes that forbid writing and mtimes stick.
	// Items are referred to by index: a context holds tens of thousands.
	target := func(i int) string { return filepath.Join(destAbs, filepath.FromSlash(m.items[i].sub)) }
	var dirs, files []int
	for i, it := range m.items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if it.fi.Mode().IsRegular() && it.fi.Sys().(*syscall.Stat_t).Nlink == 1 {
			// Plain files are copied below, several at once: the copy is
			// bound by system calls, which run concurrently.
			files = append(files, i)
			continue
		}
		if err := c.copyItem(it, target(i)); err != nil {
			return err
		}
		if it.fi.IsDir() {
			dirs = append(dirs, i)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2 * runtime.GOMAXPROCS(0))
	for _, i := range files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			return c.copyItem(m.items[i], target(i))
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, i := range slices.Backward(dirs) {
		if err := c.copyMetadata(m.items[i], target(i)); err != nil {
			return err
		}
	}
	return nil
}

// copyFileSource copies a non-directory source.
func (c *copier) copyFileSource(m match, destAbs string, destIsDir bool) error {
	target := destAbs
	if destIsDir {
		if err := c.mkdirAll(destAbs, c.destDirMode()); err != nil {
			return err
		}
		target = filepath.Join(destAbs, m.name)
	} else if fi, err := os.Stat(destAbs); err == nil && fi.IsDir() {
		target = filepath.Join(destAbs, m.name)
	} else {
		if err := c.mkdirAll(filepath.Dir(destAbs), c.destDirMode()); err != nil {
			return err
		}
	}
	return c.copyItem(m.items[0], target)
}

// record adds it to the step's sources.
func (c *copier) record(it item, digest string) {
	if !c.req.RecordSources {
		return
	}
	sf := c.sourceFile(it, digest)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources = append(c.sources, sf)
}

// copyItem copies one entry to target, whose parent exists and was reached
// without following symlinks below the resolved destination. A directory
// is created (or merged into) but its metadata is left to the caller.
func (c *copier) copyItem(it item, target string) error {
	if c.fresh[filepath.Dir(target)] {
		// A directory this copy created holds nothing but what it copied,
		// most often not target yet: create it without looking first, and
		// look only when it is there (copied twice, through two sources).
		// Nothing was created when that fails.
		if err := c.copyItemAt(it, target, false); !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return c.copyItemAt(it, target, true)
}

// copyItemAt is copyItem; when look is false, target is taken to be
// missing.
func (c *copier) copyItemAt(it item, target string, look bool) error {
	var existing fs.FileInfo
	if look {
		var err error
		existing, err = os.Lstat(target)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("reading /%s: %w", c.destRel(target), err)
		}
	}
	rel, fi := it.rel, it.fi
	if existing != nil && existing.IsDir() && !fi.IsDir() {
		return fmt.Errorf("copying %s: cannot replace to directory /%s with file", rel, c.destRel(target))
	}
	if fi.IsDir() {
		if existing != nil && !existing.IsDir() {
			return fmt.Errorf("copying %s: cannot copy to non-directory: /%s", rel, c.destRel(target))
		}
		if existing == nil {
			if err := os.Mkdir(target, 0o700); err != nil {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
			c.fresh[target] = true
		}
		c.record(it, "")
		c.markChanged(target)
		return nil
	}
	if existing != nil {
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
		}
	}

	var digest string
	switch {
	case fi.Mode().IsRegular():
		if first, ok := c.inodes[it.ino]; ok && it.linked != "" && first.target != target {
			if err := os.Link(first.target, target); err != nil {
				return fmt.Errorf("linking /%s: %w", c.destRel(target), err)
			}
			c.record(it, first.digest)
			c.markChanged(target)
			return nil
		}
		m := c.metadata(it)
		sum, err := copyFileContent(it.abs, target, c.req.RecordSources || fi.Sys().(*syscall.Stat_t).Nlink > 1,
			func(fd int) error { return c.setMetadataFd(m, fd, target) })
		if err != nil {
			return fmt.Errorf("copying %s to /%s: %w", rel, c.destRel(target), err)
		}
		if fi.Sys().(*syscall.Stat_t).Nlink > 1 {
			if _, ok := c.inodes[it.ino]; !ok {
				c.inodes[it.ino] = linkedFile{target: target, digest: sum}
			}
		}
		c.record(it, sum)
		c.markChanged(target)
		return nil

	case fi.Mode()&fs.ModeSymlink != 0:
		if err := os.Symlink(it.link, target); err != nil {
			return fmt.Errorf("creating symlink /%s: %w", c.destRel(target), err)
		}

	default: // device or named pipe; the walker refuses anything else
		st := fi.Sys().(*syscall.Stat_t)
		if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
		}
	}
	c.record(it, digest)
	c.markChanged(target)
	return c.copyMetadata(it, target)
}

// meta is the metadata a copied entry gets.
type meta struct {
	uid, gid int
	mode     fs.FileMode // permissions with setuid, setgid and sticky
	setMode  bool        // false for symlinks
	xattrs   map[string][]byte
	times    [2]unix.Timespec // access, modification
}

// metadata is what it's copy gets from the source, with --chown and
// --chmod applied (fsutil's copyFileInfo).
func (c *copier) metadata(it item) meta {
	fi := it.fi
	st := fi.Sys().(*syscall.Stat_t)
	m := meta{xattrs: it.xattrs, times: [2]unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}}
	switch {
	case c.req.Chown != nil:
		m.uid, m.gid = c.req.Chown.UID, c.req.Chown.GID
	case c.req.KeepOwner:
		m.uid, m.gid = int(st.Uid), int(st.Gid)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		m.setMode = true
		m.mode = fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		switch {
		case c.req.ModeSet != nil:
			m.mode = chmodSymbolic(c.req.ModeSet, fi.Mode())
		case c.req.Chmod != nil:
			m.mode = *c.req.Chmod
		}
	}
	return m
}

// copyMetadata sets owner, mode, xattrs and times of target from the
// source. The owner goes first: changing it clears setuid and setgid.
func (c *copier) copyMetadata(it item, target string) error {
	m := c.metadata(it)
	if err := os.Lchown(target, m.uid, m.gid); err != nil {
		return fmt.Errorf("setting owner of /%s: %w", c.destRel(target), err)
	}
	if m.setMode {
		if err := os.Chmod(target, m.mode); err != nil {
			return fmt.Errorf("setting mode of /%s: %w", c.destRel(target), err)
		}
	}
	for name, val := range m.xattrs {
		_ = unix.Lsetxattr(target, name, val, 0) // best effort, as BuildKit (it logs and goes on)
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, m.times[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of /%s: %w", c.destRel(target), err)
	}
	return nil
}

// setMetadataFd is copyMetadata for a regular file open as fd: no path
// is resolved again.
func (c *copier) setMetadataFd(m meta, fd int, target string) error {
	if err := unix.Fchown(fd, m.uid, m.gid); err != nil {
		return fmt.Errorf("setting owner of /%s: %w", c.destRel(target), err)
	}
	if err := unix.Fchmod(fd, uint32(m.mode.Perm())|unixModeBits(m.mode)); err != nil {
		return fmt.Errorf("setting mode of /%s: %w", c.destRel(target), err)
	}
	for name, val := range m.xattrs {
		_ = unix.Fsetxattr(fd, name, val, 0) // best effort, as in copyMetadata
	}
	// futimens(2): utimensat with a NULL path.
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&m.times)), 0, 0, 0); errno != 0 {
		return fmt.Errorf("setting times of /%s: %w", c.destRel(target), errno)
	}
	return nil
}

// chmodSymbolic is the permission bits, setuid, setgid and sticky
// included, that the symbolic mode set gives an entry of mode m.
func chmodSymbolic(set *mode.Set, m fs.FileMode) fs.FileMode {
	return set.Apply(m) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// unixModeBits are the setuid, setgid and sticky bits of mode as chmod(2)
// takes them.
func unixModeBits(mode fs.FileMode) uint32 {
	var b uint32
	if mode&fs.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if mode&fs.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if mode&fs.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// copyFileContent copies src to the new file dst, calls setMeta with the
// open file, and returns the content digest when withDigest is set.
func copyFileContent(src, dst string, withDigest bool, setMeta func(fd int) error) (string, error) {
	// Raw system calls: os.File's poller registration and finalizer cost
	// more than copying a small file, and a context can hold tens of
	// thousands.
	in, err := unix.Open(src, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer unix.Close(in)
	out, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: dst, Err: err}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var h hash.Hash
	if withDigest {
		h = sha256.New()
	}
	for err == nil {
		var n int
		n, err = unix.Read(in, buf)
		if err == unix.EINTR {
			err = nil
			continue
		}
		if err != nil {
			err = &os.PathError{Op: "read", Path: src, Err: err}
			break
		}
		if n == 0 {
			break
		}
		if h != nil {
			h.Write(buf[:n])
		}
		for b := buf[:n]; len(b) > 0 && err == nil; {
			var w int
			w, err = unix.Write(out, b)
			if err == unix.EINTR {
				err = nil
				continue
			}
			if err != nil {
				err = &os.PathError{Op: "write", Path: dst, Err: err}
				break
			}
			b = b[w:]
		}
	}
	if err == nil {
		err = setMeta(out)
	}
	if cerr := unix.Close(out); err == nil && cerr != nil {
		err = &os.PathError{Op: "close", Path: dst, Err: cerr}
	}
	if err != nil || h == nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// copyBufs are the buffers of concurrent file copies.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// download performs ADD <url>: the file is named from the URL's path
// (BuildKit uses "__unnamed__" when the path has no name), mode 0600 unless
// --chmod, mtime from Last-Modified, extracted only with --unpack=true
// when it is an archive.
func (c *copier) download(ctx context.Context, rawURL, destAbs string, destIsDir bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("downloading %s: not a valid URL", source.RedactURL(rawURL))
	}
	name := "__unnamed__"
	if base := path.Base(u.Path); base != "." && base != "/" && base != "" {
		name = base
	}
	if c.req.Unpack != nil && *c.req.Unpack {
		return c.downloadUnpack(ctx, rawURL, name, destAbs, destIsDir)
	}
	return c.downloadTo(ctx, rawURL, name, destAbs, destIsDir, nil)
}

// downloadUnpack is ADD --unpack=true <url>: the download goes to a
// temporary file, outside DestRoot; an archive is extracted into destAbs
// (a directory then), anything else placed as download places it.
func (c *copier) downloadUnpack(ctx context.Context, rawURL, name, destAbs string, destIsDir bool) error {
	tmp, err := os.CreateTemp(c.req.TempDir, "download-")
	if err != nil {
		return fmt.Errorf("downloading %s: %w", source.RedactURL(rawURL), err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	sum, lastModified, err := c.fetch(ctx, rawURL, tmp)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		return err
	}
	archive, err := isArchive(tmp.Name())
	if err != nil {
		return fmt.Errorf("reading the download of %s: %w", source.RedactURL(rawURL), err)
	}
	if !archive {
		return c.downloadTo(ctx, rawURL, name, destAbs, destIsDir, &downloaded{r: tmp, sum: sum, lastModified: lastModified})
	}
	if err := c.unpack(ctx, tmp.Name(), source.RedactURL(rawURL), destAbs); err != nil {
		return err
	}
	c.mu.Lock()
	c.sources = append(c.sources, SourceFile{Path: rawURL, Mode: urlMode, Digest: sum})
	c.mu.Unlock()
	return nil
}

// downloaded is a download already fetched: its content, digest and
// Last-Modified.
type downloaded struct {
	r            io.Reader
	sum          string
	lastModified string
}

// fetch GETs rawURL into w, verifying --checksum, and returns the content's
// digest and the Last-Modified header.
func (c *copier) fetch(ctx context.Context, rawURL string, w io.Writer) (sum, lastModified string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", "", fmt.Errorf("downloading %s: %w", source.RedactURL(rawURL), withoutURL(err))
	}
	client := c.req.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("downloading %s: %w", source.RedactURL(rawURL), withoutURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		// The status code, not the server's own reason phrase.
		return "", "", fmt.Errorf("downloading %s: invalid response status %d %s", source.RedactURL(rawURL), resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	h := sha256.New()
	var verifier digest.Verifier
	mw := io.MultiWriter(w, h)
	if c.req.Checksum != "" {
		verifier = c.req.Checksum.Verifier()
		mw = io.MultiWriter(w, h, verifier)
	}
	if _, err := io.Copy(mw, resp.Body); err != nil {
		return "", "", fmt.Errorf("downloading %s: %w", source.RedactURL(rawURL), err)
	}
	if verifier != nil && !verifier.Verified() {
		return "", "", fmt.Errorf("downloading %s: the content does not match --checksum=%s", source.RedactURL(rawURL), c.req.Checksum)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), resp.Header.Get("Last-Modified"), nil
}

// downloadTo places the download of rawURL (fetched now, or already when
// got is set) at destAbs by the one-source rules, named name inside a
// directory.
func (c *copier) downloadTo(ctx context.Context, rawURL, name, destAbs string, destIsDir bool, got *downloaded) error {
	target := destAbs
	if destIsDir {
		if err := c.mkdirAll(destAbs, c.destDirMode()); err != nil {
			return err
		}
		target = filepath.Join(destAbs, name)
	} else if fi, err := os.Stat(destAbs); err == nil && fi.IsDir() {
		target = filepath.Join(destAbs, name)
	} else if err := c.mkdirAll(filepath.Dir(destAbs), c.destDirMode()); err != nil {
		return err
	}
	if fi, err := os.Lstat(target); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("downloading %s: cannot replace to directory /%s with file", source.RedactURL(rawURL), c.destRel(target))
		}
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
		}
	}
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
	}
	var sum, lastModified string
	if got != nil {
		sum, lastModified = got.sum, got.lastModified
		if _, err = io.Copy(out, got.r); err != nil {
			err = fmt.Errorf("downloading %s: %w", source.RedactURL(rawURL), err)
		}
	} else {
		sum, lastModified, err = c.fetch(ctx, rawURL, out)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("downloading %s: %w", source.RedactURL(rawURL), cerr)
	}
	if err != nil {
		os.Remove(target)
		return err
	}
	uid, gid := 0, 0
	if o := c.req.Chown; o != nil {
		uid, gid = o.UID, o.GID
	}
	if err := os.Lchown(target, uid, gid); err != nil {
		return fmt.Errorf("setting owner of /%s: %w", c.destRel(target), err)
	}
	mode := fs.FileMode(0o600)
	switch {
	case c.req.ModeSet != nil:
		// BuildKit's HTTP source writes the file 0600; the copy then
		// applies the set to that.
		mode = chmodSymbolic(c.req.ModeSet, mode)
	case c.req.Chmod != nil:
		mode = *c.req.Chmod
	}
	if err := os.Chmod(target, mode); err != nil {
		return fmt.Errorf("setting mode of /%s: %w", c.destRel(target), err)
	}
	if lastModified != "" {
		if t, err := http.ParseTime(lastModified); err == nil {
			if err := os.Chtimes(target, t, t); err != nil {
				return fmt.Errorf("setting times of /%s: %w", c.destRel(target), err)
			}
		}
	}
	c.mu.Lock()
	c.sources = append(c.sources, SourceFile{Path: rawURL, Mode: urlMode, Digest: sum})
	c.mu.Unlock()
	c.markChanged(target)
	return nil
}
