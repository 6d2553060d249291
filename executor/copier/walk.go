package copier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/patternmatcher"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/source"
)

// The walker is the one place that decides what a step reads: wildcard
// expansion, .dockerignore and --exclude (with "!" exceptions), symlink and
// hardlink rules. Copy copies what it lists; Sources digests it (the walk
// itself hashes the regular files it finds when Sources will follow).
// Neither looks at the source tree any other way, so the two cannot
// disagree.

// walker enumerates the entries a Request reads, in copy order.
type walker struct {
	req Request
	// seen maps the inode of every multiply-linked regular file already
	// listed to its SrcRoot-relative path.
	seen map[inode]string
	// digest makes the walk hash the regular files it finds below a
	// directory source, for Sources.
	digest bool
	// exclude matches Request.Exclude; nil for none.
	exclude *patternmatcher.PatternMatcher
}

type inode struct{ dev, ino uint64 }

// match is one source path after wildcard expansion.
type match struct {
	url  string // ADD URL, else empty
	rel  string // SrcRoot-relative path as written (cleaned)
	abs  string // resolved path on disk (symlinks followed inside SrcRoot)
	name string // base name as written, used inside a directory destination
	fi   fs.FileInfo
	// items are the entries read for this match, parents before children:
	// the match itself when it is not a directory, else what is below it.
	items []item
	// include, for COPY --parents, selects what below a directory match is
	// copied (its pattern, after the pivot); nil copies everything.
	include *patternmatcher.PatternMatcher
	// required, for COPY --parents without wildcards (requires), is the
	// path below a directory match that must be among what it copies.
	required string
	requires bool
	// src is the source as written, for errors.
	src string
}

// item is one source entry Copy reads.
type item struct {
	abs string // path on disk
	rel string // SrcRoot-relative slash path
	sub string // slash path below the match's destination; "" for a non-directory match
	fi  fs.FileInfo
	ino inode
	// link is a symlink's target.
	link string
	// linked is the rel of an earlier regular file of this step with the
	// same inode: Copy makes this entry a hard link to that one's copy.
	linked string
	// xattrs are the extended attributes Copy carries over.
	xattrs map[string][]byte
	// digest is a regular file's content digest when the walk read it
	// (see walker.digest); "" otherwise.
	digest string
}

func newWalker(r Request) *walker {
	return &walker{req: r, seen: map[inode]string{}}
}

func (w *walker) instr() string {
	if w.req.Add {
		return "ADD"
	}
	return "COPY"
}

// plan expands every source and lists the entries each match reads. Its
// errors are the ones Copy returns before it writes anything: no sources,
// a URL for COPY, a source not found (or ignored entirely), a wildcard
// under a directory that is not there, an unreadable or unsupported entry.
// A wildcard that matches nothing is no error, even when no source matches
// anything: BuildKit's dispatchCopy sets AllowEmptyWildcard on every local
// source, and its file op then copies nothing for it (moby/buildkit
// testEmptyWildcard).
func (w *walker) plan(ctx context.Context) ([]match, error) {
	r := w.req
	if len(r.Sources) == 0 {
		return nil, fmt.Errorf("%s: no source files were specified", w.instr())
	}
	if len(r.Exclude) > 0 {
		pm, err := patternmatcher.New(r.Exclude)
		if err != nil {
			return nil, fmt.Errorf("%s: parsing --exclude: %w", w.instr(), err)
		}
		w.exclude = pm
	}
	var matches []match
	for _, src := range r.Sources {
		if isURL(src) {
			if !r.Add {
				return nil, fmt.Errorf("copying %s: source can't be a URL for COPY", source.RedactURL(src))
			}
			matches = append(matches, match{url: src})
			continue
		}
		var m []match
		var err error
		if r.Parents {
			m, err = w.expandParents(src)
		} else {
			m, err = w.expand(src)
		}
		if err != nil {
			return nil, err
		}
		matches = append(matches, m...)
	}
	for i := range matches {
		m := &matches[i]
		if m.url != "" {
			continue
		}
		rel := w.srcRel(m.abs)
		if m.fi.IsDir() {
			// The directory itself is not copied, only what is below it.
			if err := w.walkDir(ctx, m.abs, rel, "", m.include, &m.items); err != nil {
				return nil, err
			}
			if m.requires && !slices.ContainsFunc(m.items, func(it item) bool {
				return it.sub == m.required || strings.HasPrefix(it.sub, m.required+"/")
			}) {
				return nil, fmt.Errorf("%s %s: %q: not found", w.instr(), m.src, "/"+path.Join(rel, m.required))
			}
			continue
		}
		it, err := w.item(m.abs, rel, "", m.fi)
		if err != nil {
			return nil, err
		}
		it.xattrs = readXattrs(m.abs)
		m.items = []item{it}
	}
	return matches, nil
}

// walkDir lists the entries below dir (SrcRoot-relative rel, sub below
// its source), skipping ignored and excluded ones and, with include (COPY
// --parents), those its pattern does not select. An ignored directory is
// listed only as the parent of entries an exception takes back, as the
// context Docker sends would hold it. An excluded directory, or one include
// does not select, is listed only as the parent of entries below it that
// are copied (an exception of --exclude takes them back, or include selects
// them), as fsutil's copier creates such parents when it reaches those
// entries (its createParentDirs); an excluded one is not searched when
// --exclude has no exceptions.
func (w *walker) walkDir(ctx context.Context, dir, rel, sub string, include *patternmatcher.PatternMatcher, out *[]item) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", rel, err)
	}
	abss := make([]string, len(entries))
	rels := make([]string, len(entries))
	subs := make([]string, len(entries))
	ignored := make([]bool, len(entries))
	excluded := make([]bool, len(entries))
	included := make([]bool, len(entries))
	skipped := make([]bool, len(entries))
	for i, e := range entries {
		abss[i], rels[i], subs[i] = joinName(dir, e.Name()), joinName(rel, e.Name()), joinName(sub, e.Name())
		if ignored[i], err = w.ignored(rels[i]); err != nil {
			return err
		}
		if excluded[i], err = w.excluded(subs[i]); err != nil {
			return err
		}
		if included[i], err = w.included(include, subs[i]); err != nil {
			return err
		}
		skipped[i] = ignored[i] || excluded[i] || !included[i]
	}
	stats := w.statAll(dir, entries, abss, skipped)
	for i := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		abs, r := abss[i], rels[i]
		fi, err := stats[i].fi, stats[i].err
		if err != nil {
			return fmt.Errorf("reading %s: %w", r, err)
		}
		if ignored[i] && !(fi.IsDir() && w.hasIncluded(abs, r)) {
			continue
		}
		pending := excluded[i] || !included[i]
		if pending && (!fi.IsDir() || excluded[i] && !w.exclude.Exclusions()) {
			continue
		}
		it, err := w.item(abs, r, subs[i], fi)
		if err != nil {
			return err
		}
		it.xattrs, it.digest = stats[i].xattrs, stats[i].digest
		if !pending {
			*out = append(*out, it)
			if fi.IsDir() {
				if err := w.walkDir(ctx, abs, r, it.sub, include, out); err != nil {
					return err
				}
			}
			continue
		}
		var below []item
		if err := w.walkDir(ctx, abs, r, it.sub, include, &below); err != nil {
			return err
		}
		if len(below) > 0 {
			*out = append(*out, it)
			*out = append(*out, below...)
		}
	}
	return nil
}

// item reads what Copy needs of one entry besides its content and its
// extended attributes (which the caller reads: see lstatAll).
func (w *walker) item(abs, rel, sub string, fi fs.FileInfo) (item, error) {
	st := fi.Sys().(*syscall.Stat_t)
	it := item{abs: abs, rel: rel, sub: sub, fi: fi, ino: inode{uint64(st.Dev), st.Ino}}
	switch mode := fi.Mode(); {
	case mode.IsDir():
	case mode.IsRegular():
		if st.Nlink > 1 {
			if first, ok := w.seen[it.ino]; !ok {
				w.seen[it.ino] = rel
			} else if first != rel {
				it.linked = first
			}
		}
	case mode&fs.ModeSymlink != 0:
		link, err := os.Readlink(abs)
		if err != nil {
			return item{}, fmt.Errorf("reading link %s: %w", rel, err)
		}
		it.link = link
	case mode&(fs.ModeDevice|fs.ModeNamedPipe) != 0:
	default:
		// Sockets cannot be copied; fsutil refuses them too.
		return item{}, fmt.Errorf("copying %s: unsupported file type %s", rel, mode.Type())
	}
	return it, nil
}

// entryStat is what statAll read of one directory entry.
type entryStat struct {
	fi     fs.FileInfo
	xattrs map[string][]byte
	digest string
	err    error
}

// joinName is path.Join(dir, name) (or filepath.Join) for a clean dir, ""
// or "." included, and a directory entry's name, without the cleaning that
// a walk of tens of thousands of entries would pay for each.
func joinName(dir, name string) string {
	switch {
	case dir == "" || dir == ".":
		return name
	case strings.HasSuffix(dir, "/"):
		return dir + name
	}
	return dir + "/" + name
}

// statAll lstats the entries of dir (at paths) and reads their extended
// attributes, several at once: a context directory can hold thousands of
// entries, and the walk is bound by these system calls. When the walker
// digests, a regular file that is not skipped (ignored or excluded) is
// opened once, relative to dir, for its status, attributes and content:
// one lookup of its name instead of three of its whole path (lstat,
// llistxattr, open).
func (w *walker) statAll(dir string, entries []fs.DirEntry, paths []string, skipped []bool) []entryStat {
	dirfd := -1
	if w.digest {
		if fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			dirfd = fd
			defer unix.Close(fd)
		}
	}
	out := make([]entryStat, len(paths))
	stat := func(i int, buf []byte) {
		if dirfd >= 0 && !skipped[i] && entries[i].Type().IsRegular() {
			if es, ok := statDigest(dirfd, entries[i].Name(), buf); ok {
				out[i] = es
				return
			}
		}
		fi, err := os.Lstat(paths[i])
		out[i] = entryStat{fi: fi, err: err}
		if err == nil {
			out[i].xattrs = readXattrs(paths[i])
		}
	}
	if len(paths) < 16 {
		var buf []byte
		if dirfd >= 0 {
			buf = make([]byte, digestBufSize)
		}
		for i := range paths {
			stat(i, buf)
		}
		return out
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(2*runtime.GOMAXPROCS(0), len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			if dirfd >= 0 {
				buf = make([]byte, digestBufSize)
			}
			for i := range next {
				stat(i, buf)
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// statDigest reads the status, extended attributes and content digest of
// the regular file name in the directory dirfd through one descriptor. It
// reports false when name is not (or no longer) a regular file or cannot
// be read: the caller then lstats it, and the digest pass reads it (and
// reports what went wrong).
func statDigest(dirfd int, name string, buf []byte) (entryStat, bool) {
	// O_NONBLOCK: should name have become a FIFO since the directory was
	// read, the open must not wait for a writer.
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return entryStat{}, false
	}
	defer unix.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return entryStat{}, false
	}
	digest, err := digestFD(fd, st.Size, buf)
	if err != nil {
		return entryStat{}, false
	}
	return entryStat{fi: &regularInfo{name: name, st: st}, xattrs: readXattrsFD(fd), digest: digest}, true
}

// regularInfo is the fs.FileInfo of a regular file, from its fstat: what
// os.Lstat would say of it.
type regularInfo struct {
	name string
	st   syscall.Stat_t
}

func (fi *regularInfo) Name() string       { return fi.name }
func (fi *regularInfo) Size() int64        { return fi.st.Size }
func (fi *regularInfo) IsDir() bool        { return false }
func (fi *regularInfo) Sys() any           { return &fi.st }
func (fi *regularInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *regularInfo) Mode() fs.FileMode {
	m := fs.FileMode(fi.st.Mode & 0o777)
	if fi.st.Mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if fi.st.Mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if fi.st.Mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// readXattrs returns the extended attributes of p (not following a
// symlink), nil when there are none or they cannot be read: Copy carries
// them over best effort, as BuildKit does.
func readXattrs(p string) map[string][]byte {
	return xattrsWith(
		func(dest []byte) (int, error) { return unix.Llistxattr(p, dest) },
		func(name string, dest []byte) (int, error) { return unix.Lgetxattr(p, name, dest) })
}

// readXattrsFD is readXattrs of the open file fd.
func readXattrsFD(fd int) map[string][]byte {
	return xattrsWith(
		func(dest []byte) (int, error) { return unix.Flistxattr(fd, dest) },
		func(name string, dest []byte) (int, error) { return unix.Fgetxattr(fd, name, dest) })
}

func xattrsWith(list func(dest []byte) (int, error), get func(name string, dest []byte) (int, error)) map[string][]byte {
	size, err := list(nil)
	if err != nil || size <= 0 {
		return nil
	}
	buf := make([]byte, size)
	size, err = list(buf)
	if err != nil {
		return nil
	}
	var out map[string][]byte
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vs, err := get(name, nil)
		if err != nil || vs < 0 {
			continue
		}
		val := make([]byte, vs)
		vs, err = get(name, val)
		if err != nil {
			continue
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = val[:vs]
	}
	return out
}

// sourceFile describes it for Result.Sources and cache keys; digest is the
// content digest of a regular file.
func (w *walker) sourceFile(it item, digest string) SourceFile {
	sf := SourceFile{Path: it.rel, Mode: it.fi.Mode(), Link: it.link, HardLink: it.linked, Digest: digest}
	st := it.fi.Sys().(*syscall.Stat_t)
	if w.req.KeepOwner && w.req.Chown == nil {
		sf.UID, sf.GID = int(st.Uid), int(st.Gid)
	}
	if it.fi.Mode()&fs.ModeDevice != 0 {
		sf.Rdev = uint64(st.Rdev)
	}
	for name, val := range it.xattrs {
		if name == "security.selinux" {
			// A label of the machine that checked the context out, not of
			// the content: keep it out so keys match across nodes.
			continue
		}
		if sf.Xattrs == nil {
			sf.Xattrs = map[string][]byte{}
		}
		sf.Xattrs[name] = val
	}
	return sf
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
func (w *walker) expand(src string) ([]match, error) {
	clean := path.Clean("/" + filepath.ToSlash(src)) // clamps ".." at SrcRoot, as Docker does
	if !containsWildcards(clean) {
		m, ok, err := w.resolve(strings.TrimPrefix(clean, "/"))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s %s: %q: not found", w.instr(), src, clean)
		}
		return []match{m}, nil
	}

	parts := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	i := 0
	for i < len(parts) && !containsWildcards(parts[i]) {
		i++
	}
	bases := []string{path.Join(parts[:i]...)}
	if bases[0] != "" {
		// The directory the wildcard is in must be there: fsutil's
		// ResolveWildcards walks it, and fails when it is missing (an
		// empty match is only that of the pattern).
		if _, ok, err := w.resolve(bases[0]); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("%s %s: %q: not found", w.instr(), src, "/"+bases[0])
		}
	}
	for _, pat := range parts[i:] {
		var next []string
		for _, b := range bases {
			dir, err := securejoin.SecureJoin(w.req.SrcRoot, b)
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
					return nil, fmt.Errorf("%s %s: bad pattern: %w", w.instr(), src, err)
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
		m, ok, err := w.resolve(rel)
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
func (w *walker) resolve(rel string) (match, bool, error) {
	abs, err := securejoin.SecureJoin(w.req.SrcRoot, rel)
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
	realRel := w.srcRel(abs)
	if w.req.Ignore != nil && realRel != "." {
		for _, p := range []string{rel, realRel} {
			ignored, err := w.req.Ignore(p)
			if err != nil {
				return match{}, false, err
			}
			if ignored && !(fi.IsDir() && w.hasIncluded(abs, realRel)) {
				return match{}, false, nil
			}
		}
	}
	name := path.Base("/" + rel)
	return match{rel: rel, abs: abs, name: name, fi: fi}, true, nil
}

func (w *walker) ignored(rel string) (bool, error) {
	if w.req.Ignore == nil || rel == "." || rel == "" {
		return false, nil
	}
	return w.req.Ignore(rel)
}

// excluded reports whether --exclude leaves out the entry at sub, a slash
// path below its source. The source itself (sub "") is never excluded:
// BuildKit's file op matches the patterns against the path below each
// source after wildcard expansion (fsutil copy's copier.copy matches
// srcComponents, empty for the source), so "--exclude=*.txt dir" leaves
// out dir/a.txt, and "--exclude=* dir*" copies no file but still makes the
// destination.
func (w *walker) excluded(sub string) (bool, error) {
	if w.exclude == nil || sub == "" {
		return false, nil
	}
	ex, err := w.exclude.MatchesOrParentMatches(sub)
	if err != nil {
		return false, fmt.Errorf("%s: matching --exclude: %w", w.instr(), err)
	}
	return ex, nil
}

// included reports whether include, COPY --parents' pattern, selects the
// entry at sub, a slash path below its source, or a directory above it (so
// what is below a selected directory is copied with it), as fsutil's copier
// matches its include patterns. A nil include selects everything.
func (w *walker) included(include *patternmatcher.PatternMatcher, sub string) (bool, error) {
	if include == nil {
		return true, nil
	}
	in, err := include.MatchesOrParentMatches(sub)
	if err != nil {
		return false, fmt.Errorf("%s --parents: matching %s: %w", w.instr(), sub, err)
	}
	return in, nil
}

// expandParents resolves one local source of COPY --parents as BuildKit's
// dispatchCopy does: the source is cut at its first "/./"; what is before
// it (the source root when there is none) is expanded as a source,
// wildcards and all, and each directory it names is copied with only what
// the rest selects below it (a pattern, wildcards and "**" included),
// keeping those entries' paths below it, and their parent directories. A
// source without wildcards on either side must find its path ("not
// found"); one with wildcards may select nothing, which still makes the
// destination directory.
func (w *walker) expandParents(src string) ([]match, error) {
	parent, pattern, ok := strings.Cut(filepath.ToSlash(src), "/./")
	if !ok {
		parent, pattern = "/", src
	}
	pattern = strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(pattern)), "/")
	include, err := patternmatcher.New([]string{pattern})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", w.instr(), src, err)
	}
	requires := !containsWildcards(parent) && !containsWildcards(pattern)
	if requires {
		rel := strings.TrimPrefix(path.Clean("/"+parent), "/")
		if _, ok, err := w.resolve(rel); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("%s %s: %q: not found", w.instr(), src, path.Join("/", rel, pattern))
		}
	}
	matches, err := w.expand(parent)
	if err != nil {
		return nil, err
	}
	for i := range matches {
		matches[i].include, matches[i].required, matches[i].requires, matches[i].src = include, pattern, requires, src
	}
	return matches, nil
}

func (w *walker) descend(rel string) bool {
	if w.req.IgnoreDescend == nil {
		return true
	}
	return w.req.IgnoreDescend(rel)
}

// hasIncluded reports whether the ignored directory abs holds any entry
// that is not ignored.
func (w *walker) hasIncluded(abs, rel string) bool {
	if !w.descend(rel) {
		return false
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return false
	}
	for _, e := range entries {
		r := path.Join(rel, e.Name())
		ig, err := w.ignored(r)
		if err != nil {
			return false
		}
		if !ig {
			return true
		}
		if e.IsDir() && w.hasIncluded(filepath.Join(abs, e.Name()), r) {
			return true
		}
	}
	return false
}

// srcRel is the SrcRoot-relative slash path of an absolute source path.
func (w *walker) srcRel(abs string) string {
	rel, err := filepath.Rel(w.req.SrcRoot, abs)
	if err != nil {
		return abs
	}
	return filepath.ToSlash(rel)
}
