package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

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
// (absolute, or relative to dir).
//
// The ignore file is chosen as Docker (BuildKit's dockerui) does: a file
// named "<Dockerfile name>.dockerignore" beside the Dockerfile takes
// precedence, else ".dockerignore" at the context root; neither is fine.
// Patterns are parsed with Docker's parser (patternmatcher/ignorefile, which
// buildkit's frontend/dockerfile/dockerignore.ReadAll now aliases).
func Open(dir, dockerfilePath string) (*Context, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening context %s: %w", dir, err)
	}
	if err := isDir(abs); err != nil {
		return nil, fmt.Errorf("opening context %s: %w", dir, err)
	}
	c := &Context{Dir: abs}

	var candidates []string
	if dockerfilePath != "" {
		df := dockerfilePath
		if !filepath.IsAbs(df) {
			df = filepath.Join(abs, df)
		}
		candidates = append(candidates, df+".dockerignore")
	}
	candidates = append(candidates, filepath.Join(abs, ".dockerignore"))

	for _, p := range candidates {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening ignore file %s: %w", p, err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading ignore file %s: %w", p, err)
		}
		m, err := patternmatcher.New(patterns)
		if err != nil {
			return nil, fmt.Errorf("parsing ignore file %s: %w", p, err)
		}
		c.IgnoreFile, c.Patterns, c.matcher = p, patterns, m
		break
	}
	return c, nil
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
