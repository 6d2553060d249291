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
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
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
	// Sources as written: relative to SrcRoot (a leading "/" also means
	// SrcRoot, and ".." cannot climb above it), possibly with wildcards
	// (*, ?, [...]); for ADD also http(s):// URLs.
	Sources []string
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
	// Add enables ADD: local archives are extracted and URLs downloaded.
	Add bool
	// HTTPClient downloads ADD URLs. Nil: http.DefaultClient.
	HTTPClient *http.Client
}

// SourceFile is one source entry the step read, for cache keys.
type SourceFile struct {
	// Path is SrcRoot-relative (slash-separated), or the URL.
	Path string
	// Mode is the entry's type and permission bits.
	Mode fs.FileMode
	// Link is a symlink's target.
	Link string `json:",omitempty"`
	// Digest is "sha256:<hex>" of a regular file's content.
	Digest string `json:",omitempty"`
}

// Result is what a step did.
type Result struct {
	// Changed are the DestRoot-relative slash paths the step created or
	// changed, each once, parents before children.
	Changed []string
	// Sources are the entries read, in the order they were copied.
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
//   - more than one source file (several sources, or a wildcard matching
//     several) needs a destination ending in "/" or an existing directory,
//     otherwise the legacy builder's error is returned (BuildKit accepts
//     that case and overwrites, moby/buildkit#1853);
//   - missing destination directories are created 0755, owned by --chown
//     (moby/buildkit#640) or root;
//   - a source that is not there is an error; a wildcard that matches
//     nothing is skipped, and only a step that matches nothing at all fails
//     ("no source files were specified", the legacy builder's rule; BuildKit
//     itself allows an empty wildcard match);
//   - sources cannot leave SrcRoot ("../x" is clamped to "/x");
//   - a source path itself is followed if it is a symlink (BuildKit's
//     FollowSymlinks) and keeps the name as written; symlinks inside copied
//     directories are copied as symlinks;
//   - permission bits including setuid/setgid/sticky, mtimes and xattrs are
//     kept unless --chmod; owners as described for Chown and KeepOwner;
//   - hardlinks among the files of one step are kept as hardlinks (fsutil
//     does the same);
//   - a directory cannot replace a non-directory ("cannot copy to
//     non-directory") nor a file a directory inside a copied tree ("cannot
//     replace to directory ... with file"); symlinks already in DestRoot are
//     followed only on the destination path itself, resolved inside
//     DestRoot;
//   - ignored files are never read; a source that is entirely ignored is
//     not found;
//   - ADD extracts local tar archives (plain, gzip, bzip2, zstd) into the
//     destination directory keeping the archive's owners unless --chown,
//     and downloads http(s) URLs (never extracted) to the name in the URL's
//     path, mode 0600 unless --chmod, mtime from Last-Modified.
func Copy(ctx context.Context, r Request) (Result, error) {
	c := &copier{req: r, inodes: map[inode]string{}, changed: map[string]bool{}}
	if err := c.run(ctx); err != nil {
		return Result{}, err
	}
	return Result{Changed: c.changedList, Sources: c.sources}, nil
}

type inode struct{ dev, ino uint64 }

type copier struct {
	req         Request
	inodes      map[inode]string
	changed     map[string]bool
	changedList []string
	sources     []SourceFile
}

// match is one source path after wildcard expansion.
type match struct {
	url  string // ADD URL, else empty
	rel  string // SrcRoot-relative path as written (cleaned)
	abs  string // resolved path on disk (symlinks followed inside SrcRoot)
	name string // base name as written, used inside a directory destination
	fi   fs.FileInfo
}

func (c *copier) instr() string {
	if c.req.Add {
		return "ADD"
	}
	return "COPY"
}

func (c *copier) run(ctx context.Context) error {
	r := c.req
	if len(r.Sources) == 0 {
		return fmt.Errorf("%s: no source files were specified", c.instr())
	}
	if r.DestRoot == "" {
		return errors.New("copying: no destination root")
	}

	var matches []match
	for _, src := range r.Sources {
		if isURL(src) {
			if !r.Add {
				return fmt.Errorf("copying %s: source can't be a URL for COPY", src)
			}
			matches = append(matches, match{url: src})
			continue
		}
		m, err := c.expand(src)
		if err != nil {
			return err
		}
		matches = append(matches, m...)
	}
	if len(matches) == 0 {
		return fmt.Errorf("%s %s: no source files were specified", c.instr(), strings.Join(r.Sources, " "))
	}

	destPath, destIsDir := c.destPath()
	destAbs, err := securejoin.SecureJoin(r.DestRoot, destPath)
	if err != nil {
		return fmt.Errorf("resolving destination %s: %w", r.Dest, err)
	}
	if len(matches) > 1 && !destIsDir {
		if fi, err := os.Stat(destAbs); err == nil && fi.IsDir() {
			destIsDir = true
		} else {
			return fmt.Errorf("When using %s with more than one source file, the destination must be a directory and end with a /", c.instr())
		}
	}

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
			if r.Add && m.fi.Mode().IsRegular() {
				done, err = c.tryUnpack(ctx, m, destAbs)
			}
			if !done && err == nil {
				err = c.copyFileSource(ctx, m, destAbs, destIsDir)
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

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func containsWildcards(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '*', '?', '[':
			return true
		}
	}
	return false
}

// expand resolves one local source into its matches.
func (c *copier) expand(src string) ([]match, error) {
	clean := path.Clean("/" + filepath.ToSlash(src)) // clamps ".." at SrcRoot, as Docker does
	if !containsWildcards(clean) {
		m, ok, err := c.resolve(strings.TrimPrefix(clean, "/"))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s %s: %q: not found", c.instr(), src, clean)
		}
		return []match{m}, nil
	}

	parts := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	i := 0
	for i < len(parts) && !containsWildcards(parts[i]) {
		i++
	}
	bases := []string{path.Join(parts[:i]...)}
	for _, pat := range parts[i:] {
		var next []string
		for _, b := range bases {
			dir, err := securejoin.SecureJoin(c.req.SrcRoot, b)
			if err != nil {
				return nil, fmt.Errorf("resolving %s: %w", b, err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
					continue
				}
				return nil, fmt.Errorf("reading %s: %w", b, err)
			}
			for _, e := range entries {
				ok, err := path.Match(pat, e.Name())
				if err != nil {
					return nil, fmt.Errorf("%s %s: bad pattern: %w", c.instr(), src, err)
				}
				if ok {
					next = append(next, path.Join(b, e.Name()))
				}
			}
		}
		bases = next
	}
	var out []match
	for _, rel := range bases {
		m, ok, err := c.resolve(rel)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// resolve looks up a SrcRoot-relative path, following it if it is a
// symlink; ok is false when it does not exist or is ignored entirely.
func (c *copier) resolve(rel string) (match, bool, error) {
	abs, err := securejoin.SecureJoin(c.req.SrcRoot, rel)
	if err != nil {
		return match{}, false, fmt.Errorf("resolving %s: %w", rel, err)
	}
	fi, err := os.Lstat(abs)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return match{}, false, nil
	}
	if err != nil {
		return match{}, false, fmt.Errorf("reading %s: %w", rel, err)
	}
	realRel, err := filepath.Rel(c.req.SrcRoot, abs)
	if err != nil {
		return match{}, false, err
	}
	realRel = filepath.ToSlash(realRel)
	if c.req.Ignore != nil && realRel != "." {
		for _, p := range []string{rel, realRel} {
			ignored, err := c.req.Ignore(p)
			if err != nil {
				return match{}, false, err
			}
			if ignored && !(fi.IsDir() && c.hasIncluded(abs, realRel)) {
				return match{}, false, nil
			}
		}
	}
	name := path.Base("/" + rel)
	return match{rel: rel, abs: abs, name: name, fi: fi}, true, nil
}

func (c *copier) ignored(rel string) (bool, error) {
	if c.req.Ignore == nil || rel == "." || rel == "" {
		return false, nil
	}
	return c.req.Ignore(rel)
}

func (c *copier) descend(rel string) bool {
	if c.req.IgnoreDescend == nil {
		return true
	}
	return c.req.IgnoreDescend(rel)
}

// hasIncluded reports whether the ignored directory abs holds any entry
// that is not ignored.
func (c *copier) hasIncluded(abs, rel string) bool {
	if !c.descend(rel) {
		return false
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return false
	}
	for _, e := range entries {
		r := path.Join(rel, e.Name())
		ig, err := c.ignored(r)
		if err != nil {
			return false
		}
		if !ig {
			return true
		}
		if e.IsDir() && c.hasIncluded(filepath.Join(abs, e.Name()), r) {
			return true
		}
	}
	return false
}

// srcRel is the SrcRoot-relative slash path of an absolute source path.
func (c *copier) srcRel(abs string) string {
	rel, err := filepath.Rel(c.req.SrcRoot, abs)
	if err != nil {
		return abs
	}
	return filepath.ToSlash(rel)
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
	rel := c.destRel(abs)
	if rel == "." || c.changed[rel] {
		return
	}
	c.changed[rel] = true
	c.changedList = append(c.changedList, rel)
}

// mkdirAll creates the missing directories of abs (inside DestRoot, where
// abs was resolved), 0755, owned by --chown or root, like fsutil's MkdirAll.
func (c *copier) mkdirAll(abs string) error {
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
	if err := c.mkdirAll(filepath.Dir(abs)); err != nil {
		return err
	}
	if err := os.Mkdir(abs, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", c.destRel(abs), err)
	}
	uid, gid := 0, 0
	if o := c.req.Chown; o != nil {
		uid, gid = o.UID, o.GID
	}
	if err := os.Lchown(abs, uid, gid); err != nil {
		return fmt.Errorf("setting owner of %s: %w", c.destRel(abs), err)
	}
	if err := os.Chmod(abs, 0o755); err != nil {
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
	if err := c.mkdirAll(destAbs); err != nil {
		return err
	}
	// The top directory keeps its own metadata (fsutil's copyDirContents).
	return c.copyChildren(ctx, m.abs, c.srcRel(m.abs), destAbs, false)
}

// copyChildren copies the entries of srcDir into dstDir. ignoredParent is
// true when srcDir itself is ignored and is only searched for exceptions.
func (c *copier) copyChildren(ctx context.Context, srcDir, srcRel, dstDir string, ignoredParent bool) error {
	entries, err := os.ReadDir(srcDir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", srcRel, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		src := filepath.Join(srcDir, e.Name())
		rel := path.Join(srcRel, e.Name())
		fi, err := os.Lstat(src)
		if err != nil {
			return fmt.Errorf("reading %s: %w", rel, err)
		}
		ig, err := c.ignored(rel)
		if err != nil {
			return err
		}
		if ig {
			// An ignored directory appears only as the parent of entries an
			// exception takes back, as the context Docker sends would hold it.
			if fi.IsDir() && c.hasIncluded(src, rel) {
				if err := c.copyEntry(ctx, src, rel, fi, filepath.Join(dstDir, e.Name())); err != nil {
					return err
				}
			}
			continue
		}
		if err := c.copyEntry(ctx, src, rel, fi, filepath.Join(dstDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// copyFileSource copies a non-directory source.
func (c *copier) copyFileSource(ctx context.Context, m match, destAbs string, destIsDir bool) error {
	target := destAbs
	if destIsDir {
		if err := c.mkdirAll(destAbs); err != nil {
			return err
		}
		target = filepath.Join(destAbs, m.name)
	} else if fi, err := os.Stat(destAbs); err == nil && fi.IsDir() {
		target = filepath.Join(destAbs, m.name)
	} else {
		if err := c.mkdirAll(filepath.Dir(destAbs)); err != nil {
			return err
		}
	}
	return c.copyEntry(ctx, m.abs, c.srcRel(m.abs), m.fi, target)
}

// copyEntry copies one entry (recursively for directories) to target, whose
// parent exists and was reached without following symlinks below the
// resolved destination.
func (c *copier) copyEntry(ctx context.Context, src, rel string, fi fs.FileInfo, target string) error {
	existing, err := os.Lstat(target)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading /%s: %w", c.destRel(target), err)
	}
	sf := SourceFile{Path: rel, Mode: fi.Mode()}

	switch {
	case fi.IsDir():
		if existing != nil && !existing.IsDir() {
			return fmt.Errorf("copying %s: cannot copy to non-directory: /%s", rel, c.destRel(target))
		}
		if existing == nil {
			if err := os.Mkdir(target, 0o700); err != nil {
				return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
			}
		}
		c.sources = append(c.sources, sf)
		c.markChanged(target)
		ig, err := c.ignored(rel)
		if err != nil {
			return err
		}
		if err := c.copyChildren(ctx, src, rel, target, ig); err != nil {
			return err
		}
		// Metadata after the contents, so the mtime sticks.
		return c.copyMetadata(src, fi, target)

	case fi.Mode().IsRegular():
		if existing != nil && existing.IsDir() {
			return fmt.Errorf("copying %s: cannot replace to directory /%s with file", rel, c.destRel(target))
		}
		if existing != nil {
			if err := os.Remove(target); err != nil {
				return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
			}
		}
		st := fi.Sys().(*syscall.Stat_t)
		key := inode{uint64(st.Dev), st.Ino}
		if first, ok := c.inodes[key]; ok && st.Nlink > 1 {
			if err := os.Link(first, target); err != nil {
				return fmt.Errorf("linking /%s: %w", c.destRel(target), err)
			}
			sum, err := fileDigest(src)
			if err != nil {
				return err
			}
			sf.Digest = sum
			c.sources = append(c.sources, sf)
			c.markChanged(target)
			return nil
		}
		sum, err := copyFileContent(src, target)
		if err != nil {
			return fmt.Errorf("copying %s to /%s: %w", rel, c.destRel(target), err)
		}
		sf.Digest = sum
		if st.Nlink > 1 {
			c.inodes[key] = target
		}

	case fi.Mode()&fs.ModeSymlink != 0:
		if existing != nil && existing.IsDir() {
			return fmt.Errorf("copying %s: cannot replace to directory /%s with file", rel, c.destRel(target))
		}
		link, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("reading link %s: %w", rel, err)
		}
		sf.Link = link
		if existing != nil {
			if err := os.Remove(target); err != nil {
				return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
			}
		}
		if err := os.Symlink(link, target); err != nil {
			return fmt.Errorf("creating symlink /%s: %w", c.destRel(target), err)
		}

	case fi.Mode()&(fs.ModeDevice|fs.ModeNamedPipe) != 0:
		if existing != nil && existing.IsDir() {
			return fmt.Errorf("copying %s: cannot replace to directory /%s with file", rel, c.destRel(target))
		}
		if existing != nil {
			if err := os.Remove(target); err != nil {
				return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
			}
		}
		st := fi.Sys().(*syscall.Stat_t)
		if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
		}

	default:
		// Sockets cannot be copied; fsutil refuses them too.
		return fmt.Errorf("copying %s: unsupported file type %s", rel, fi.Mode().Type())
	}
	c.sources = append(c.sources, sf)
	c.markChanged(target)
	return c.copyMetadata(src, fi, target)
}

// copyMetadata sets owner, mode, xattrs and times of target from the
// source, with --chown and --chmod applied (fsutil's copyFileInfo).
func (c *copier) copyMetadata(src string, fi fs.FileInfo, target string) error {
	st := fi.Sys().(*syscall.Stat_t)
	uid, gid := 0, 0
	switch {
	case c.req.Chown != nil:
		uid, gid = c.req.Chown.UID, c.req.Chown.GID
	case c.req.KeepOwner:
		uid, gid = int(st.Uid), int(st.Gid)
	}
	if err := os.Lchown(target, uid, gid); err != nil {
		return fmt.Errorf("setting owner of /%s: %w", c.destRel(target), err)
	}
	isLink := fi.Mode()&fs.ModeSymlink != 0
	if !isLink {
		mode := fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		if c.req.Chmod != nil {
			mode = *c.req.Chmod
		}
		if err := os.Chmod(target, mode); err != nil {
			return fmt.Errorf("setting mode of /%s: %w", c.destRel(target), err)
		}
	}
	copyXattrs(src, target) // best effort, as BuildKit (it logs and goes on)
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of /%s: %w", c.destRel(target), err)
	}
	return nil
}

func copyXattrs(src, dst string) {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size <= 0 {
		return
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vs, err := unix.Lgetxattr(src, name, nil)
		if err != nil || vs < 0 {
			continue
		}
		val := make([]byte, vs)
		vs, err = unix.Lgetxattr(src, name, val)
		if err != nil {
			continue
		}
		_ = unix.Lsetxattr(dst, name, val[:vs], 0)
	}
}

// copyFileContent copies src to the new file dst and returns the content
// digest.
func copyFileContent(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

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
// --chmod, mtime from Last-Modified, never extracted.
func (c *copier) download(ctx context.Context, rawURL, destAbs string, destIsDir bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", rawURL, err)
	}
	name := "__unnamed__"
	if base := path.Base(u.Path); base != "." && base != "/" && base != "" {
		name = base
	}
	target := destAbs
	if destIsDir {
		if err := c.mkdirAll(destAbs); err != nil {
			return err
		}
		target = filepath.Join(destAbs, name)
	} else if fi, err := os.Stat(destAbs); err == nil && fi.IsDir() {
		target = filepath.Join(destAbs, name)
	} else if err := c.mkdirAll(filepath.Dir(destAbs)); err != nil {
		return err
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", rawURL, err)
	}
	client := c.req.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return fmt.Errorf("downloading %s: invalid response status %s", rawURL, resp.Status)
	}

	if fi, err := os.Lstat(target); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("downloading %s: cannot replace to directory /%s with file", rawURL, c.destRel(target))
		}
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("replacing /%s: %w", c.destRel(target), err)
		}
	}
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("creating /%s: %w", c.destRel(target), err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), resp.Body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading %s: %w", rawURL, err)
	}
	uid, gid := 0, 0
	if o := c.req.Chown; o != nil {
		uid, gid = o.UID, o.GID
	}
	if err := os.Lchown(target, uid, gid); err != nil {
		return fmt.Errorf("setting owner of /%s: %w", c.destRel(target), err)
	}
	mode := fs.FileMode(0o600)
	if c.req.Chmod != nil {
		mode = *c.req.Chmod
	}
	if err := os.Chmod(target, mode); err != nil {
		return fmt.Errorf("setting mode of /%s: %w", c.destRel(target), err)
	}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			if err := os.Chtimes(target, t, t); err != nil {
				return fmt.Errorf("setting times of /%s: %w", c.destRel(target), err)
			}
		}
	}
	c.sources = append(c.sources, SourceFile{Path: rawURL, Mode: mode, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil))})
	c.markChanged(target)
	return nil
}
