package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Context is a build context on disk with its ignore rules.
type Context struct {
	// Dir is the context's root directory.
	Dir string
	// IgnoreFile is the ignore file that was loaded, "" when there is none.
	IgnoreFile string
	// Patterns are the ignore file's patterns as parsed by Docker's parser
	// (comments dropped, paths cleaned, leading "/" removed).
	Patterns []string

	mu      sync.Mutex // patternmatcher is not safe for concurrent use
	matcher *patternmatcher.PatternMatcher
}

// Open opens the build context at dir for the Dockerfile at dockerfilePath
// (relative to dir, or absolute when the operator gave an absolute
// --dockerfile).
//
// The ignore file is chosen as Docker (BuildKit's dockerui) does: a file
// named "<Dockerfile name>.dockerignore" beside the Dockerfile takes
// precedence, else ".dockerignore" at the context root; neither is fine.
// Both are read with ReadFile, so inside the context (for an absolute
// Dockerfile, its ignore file is the operator's too), and a symlink that
// leads nowhere inside the context is an error, not a missing ignore file:
// BuildKit would silently build without it, and send what it meant to
// exclude. Patterns are parsed with Docker's parser
// (patternmatcher/ignorefile, which buildkit's
// frontend/dockerfile/dockerignore.ReadAll now aliases); no error quotes
// the file's content.
func Open(dir, dockerfilePath string) (*Context, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening context %s: %w", dir, err)
	}
	if err := isDir(abs); err != nil {
		return nil, fmt.Errorf("opening context %s: %w", dir, err)
	}
	c := &Context{Dir: abs}

	type candidate struct{ root, name string }
	var candidates []candidate
	switch {
	case dockerfilePath == "":
	case filepath.IsAbs(dockerfilePath):
		candidates = append(candidates, candidate{"/", dockerfilePath + ".dockerignore"})
	default:
		candidates = append(candidates, candidate{abs, dockerfilePath + ".dockerignore"})
	}
	candidates = append(candidates, candidate{abs, ".dockerignore"})

	for _, cand := range candidates {
		dt, err := ReadFile(cand.root, cand.name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening ignore file: %w", err)
		}
		patterns, err := ignorefile.ReadAll(bytes.NewReader(dt))
		if err != nil {
			return nil, fmt.Errorf("reading ignore file %s: %w", cand.name, err)
		}
		m, err := patternmatcher.New(patterns)
		if err != nil {
			// Its errors name a syntax rule, never the pattern.
			return nil, fmt.Errorf("parsing ignore file %s: %w", cand.name, err)
		}
		c.IgnoreFile, c.Patterns, c.matcher = filepath.Join(cand.root, cand.name), patterns, m
		break
	}
	return c, nil
}

// MaxFileSize bounds the Dockerfile and the ignore file: BuildKit's limit
// for the files its frontend reads from the context (dockerui.ReadFile:
// containerd's default gRPC message size, 16 MiB).
const MaxFileSize = 16 << 20

// ReadFile reads the file name (a path relative to root; an absolute one
// is taken from root too) as BuildKit reads a Dockerfile from the context:
// symlinks are resolved as if root were "/" (openat2 RESOLVE_IN_ROOT, with
// no magic links, through pathrs-lite), so no path leaves root whatever
// the repository links where; anything but a regular file (a FIFO, a
// device, a directory) is refused before it is opened for reading; a file
// larger than MaxFileSize is refused before it is read.
//
// Errors name name, never a file's content nor where a symlink led outside
// root. A name that does not exist gives an error that is
// fs.ErrNotExist; one that exists only as a symlink (or through one) that
// leads to nothing inside root gives one that is not, so that a caller
// that tolerates a missing file does not tolerate that.
func ReadFile(root, name string) ([]byte, error) {
	return readFileLimit(root, name, MaxFileSize)
}

func readFileLimit(root, name string, limit int64) ([]byte, error) {
	handle, err := pathrs.OpenInRoot(root, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if via := symlinkedTo(root, name); via != "" {
				return nil, fmt.Errorf("reading %s: it leads through a symlink to %s, which does not exist in the build context: symlinks are resolved inside the context, never out of it", name, via)
			}
		}
		return nil, fmt.Errorf("reading %s: %w", name, bareErrno(err))
	}
	defer handle.Close()
	fi, err := handle.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, bareErrno(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("reading %s: not a regular file (%s)", name, fileType(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("reading %s: its size, %d bytes, exceeds the maximum allowed size of %d bytes", name, fi.Size(), limit)
	}
	f, err := pathrs.Reopen(handle, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, bareErrno(err))
	}
	defer f.Close()
	// The size may grow meanwhile, or lie (procfs): read one byte more.
	dt, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, bareErrno(err))
	}
	if int64(len(dt)) > limit {
		return nil, fmt.Errorf("reading %s: it exceeds the maximum allowed size of %d bytes", name, limit)
	}
	return dt, nil
}

// symlinkedTo returns where name leads inside root (as a path from root,
// "/"-rooted) when a symlink on the way changed it, else "". It is for
// messages only: the file is opened by descriptor, not by this path.
func symlinkedTo(root, name string) string {
	resolved, err := securejoin.SecureJoin(root, name)
	if err != nil {
		return ""
	}
	lexical := filepath.Join(root, filepath.Clean("/"+name))
	if resolved == lexical {
		return ""
	}
	rel, err := filepath.Rel(root, resolved)
	if err != nil {
		return ""
	}
	return "/" + filepath.ToSlash(rel)
}

// bareErrno reduces a resolution error to its errno, so that a message
// never quotes a path pathrs met on the way (which may be a host path), and
// errors.Is still tells what happened.
func bareErrno(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "type " + m.Type().String()
}

// cleanRel turns a context-relative path as a user may write it ("./a",
// "/a/b/", "a//b") into the slash form the matcher expects; "." for the root.
func cleanRel(rel string) string {
	rel = path.Clean("/" + filepath.ToSlash(rel))
	return strings.TrimPrefix(rel, "/")
}

// Excluded reports whether the context-relative path rel is excluded by the
// ignore file: it matches a pattern, or lies under a directory that does, and
// no later "!" exception takes it back (patternmatcher's
// MatchesOrParentMatches, as BuildKit uses). The root itself is never
// excluded.
func (c *Context) Excluded(rel string) (bool, error) {
	if c == nil || c.matcher == nil {
		return false, nil
	}
	rel = cleanRel(rel)
	if rel == "" {
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ok, err := c.matcher.MatchesOrParentMatches(rel)
	if err != nil {
		return false, fmt.Errorf("matching %s against %s: %w", rel, c.IgnoreFile, err)
	}
	return ok, nil
}

// MayContainIncluded reports whether an excluded directory rel may still
// hold entries that an exception ("!pattern") takes back, so a walk must
// descend into it. It is conservative: true whenever the ignore file has
// exceptions.
func (c *Context) MayContainIncluded(rel string) bool {
	if c == nil || c.matcher == nil {
		return true
	}
	return c.matcher.Exclusions()
}

// Walk walks the context below the context-relative directory rel (""
// or "." for the whole context) in lexical order, calling fn with
// context-relative slash paths for every entry that is not excluded.
// An excluded directory is walked only when exceptions may take entries
// inside it back; it is then reported (before its first included entry)
// only if it contains an included entry, the way Docker sends such a
// directory as the parent of what it includes. Symlinks are not followed.
func (c *Context) Walk(rel string, fn func(rel string, d fs.DirEntry) error) error {
	start := cleanRel(rel)
	base := filepath.Join(c.Dir, filepath.FromSlash(start))
	fi, err := os.Lstat(base)
	if err != nil {
		return fmt.Errorf("walking %s: %w", rel, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("walking %s: not a directory", rel)
	}
	_, err = c.walkDir(start, base, fn, nil)
	return err
}

// walkDir walks dir (context-relative rel); pending are excluded ancestors
// not yet reported, emitted before the first included entry. It returns
// whether anything was reported.
func (c *Context) walkDir(rel, dir string, fn func(string, fs.DirEntry) error, pending []pendingDir) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", dir, err)
	}
	reported := false
	for _, e := range entries {
		r := path.Join(rel, e.Name())
		excluded, err := c.Excluded(r)
		if err != nil {
			return reported, err
		}
		if excluded {
			if e.IsDir() && c.MayContainIncluded(r) {
				got, err := c.walkDir(r, filepath.Join(dir, e.Name()), fn, append(pending, pendingDir{r, e}))
				if err != nil {
					return reported, err
				}
				if got {
					reported = true
					pending = nil
				}
			}
			continue
		}
		for _, p := range pending {
			if err := fn(p.rel, p.d); err != nil {
				return true, err
			}
		}
		pending = nil
		reported = true
		if err := fn(r, e); err != nil {
			return true, err
		}
		if e.IsDir() {
			if _, err := c.walkDir(r, filepath.Join(dir, e.Name()), fn, nil); err != nil {
				return true, err
			}
		}
	}
	return reported, nil
}

type pendingDir struct {
	rel string
	d   fs.DirEntry
}
