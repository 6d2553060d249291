package source

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzTar turns a script into a tar stream, one entry a line:
//
//	f NAME[>CONTENT]  a regular file
//	d NAME            a directory
//	l NAME>TARGET     a symlink
//	h NAME>TARGET     a hard link
//	p NAME            a FIFO (skipped in a build context)
//
// "OUT" stands for the directory outside the destination (absolute,
// without its leading slash).
func fuzzTar(script, out string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	fix := func(s string) string { return strings.ReplaceAll(s, "OUT", strings.TrimPrefix(out, "/")) }
	for _, line := range strings.Split(script, "\n") {
		if len(line) < 3 || line[1] != ' ' {
			continue
		}
		name, arg, _ := strings.Cut(line[2:], ">")
		name, arg = fix(name), fix(arg)
		h := &tar.Header{Name: name, Mode: 0o755}
		body := ""
		switch line[0] {
		case 'f':
			h.Typeflag, h.Mode, body = tar.TypeReg, 0o644, arg
			h.Size = int64(len(body))
		case 'd':
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case 'l':
			if strings.HasPrefix(arg, strings.TrimPrefix(out, "/")) {
				arg = "/" + arg
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, arg
		case 'h':
			h.Typeflag, h.Linkname = tar.TypeLink, arg
		case 'p':
			h.Typeflag = tar.TypeFifo
		default:
			continue
		}
		if tw.WriteHeader(h) != nil {
			continue
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzExtractTar extracts fuzzed context tars (tar:// contexts) with
// rootfs.Extract and the options of extractTar, beside a directory with a
// canary: it may refuse a tar but never writes, links, chmods or removes
// anything outside its destination.
func FuzzExtractTar(f *testing.F) {
	for _, s := range []string{
		"d app\nf app/Dockerfile>FROM scratch",
		"f ./Dockerfile>x",
		"f a/../../x>pwned",
		"f /etc/x>pwned",
		"l l>/\nf l/OUT/canary>pwned",
		"l l>../outside\nf l/canary>pwned",
		"l l>OUT\nd l",
		"l l>OUT/canary\nf l>replaced",
		"l l>OUT\nh h>l/canary",
		"h h>../outside/canary",
		"l l>OUT/canary\nh h>l",
		"d d\nf d/x>x\nl d>../outside\nf d/canary>pwned",
		"l d>OUT\nd d/sub",
		"p fifo\nf fifo>x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		dest := filepath.Join(base, "dest")
		if err := os.MkdirAll(filepath.Join(outside, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, "canary"), []byte("canary"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		before := listTree(t, base, "dest")
		extractTar(context.Background(), bytes.NewReader(fuzzTar(script, outside)), dest)
		if diff := cmp.Diff(before, listTree(t, base, "dest")); diff != "" {
			t.Fatalf("outside the destination (-want +got):\n%s", diff)
		}
	})
}

// listTree records every entry under dir but skip (a top-level name):
// type, mode, size, content and link target.
func listTree(t *testing.T, dir, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == skip {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		s := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += " " + string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			s += " -> " + l
		}
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzContextExcluded opens a context with a fuzzed .dockerignore and
// fuzzed file paths: Open parses the patterns or fails without quoting
// them, Excluded never panics, and Walk reports exactly the files Excluded
// says are not excluded (patternmatcher's MatchesOrParentMatches, as
// BuildKit applies it), pruning directories as it may.
func FuzzContextExcluded(f *testing.F) {
	for _, s := range [][2]string{
		{"**/*.log\n!keep.log\nnode_modules\n/build\ndocs/*\n!docs/README.md\n.git\n",
			"a.log\ndeep/er/x.log\nkeep.log\nnode_modules/x/y.js\nsrc/node_modules/z\nbuild/out\ndocs/a.md\ndocs/README.md\nmain.go\n.git/HEAD"},
		{".dockerignore\na/y\nvendor\n!vendor/keep\n", "a/x\na/y\nvendor/keep/k\nvendor/drop/d\ntop"},
		{"*\n!src\nsrc/*.tmp\n!src/keep.tmp", "src/a.go\nsrc/b.tmp\nsrc/keep.tmp\nREADME"},
		{"[a-\n", "a"},
		{"\\\n!\n!!x\n**\n!**/ok", "x\nd/ok\nd/no"},
		{"a/**/b\n!a/c/b\n# comment\n  spaced  \n./dot/\n../up", "a/b\na/x/b\na/c/b\ndot/f\nup/f"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ignore, paths string) {
		dir := t.TempDir()
		created := map[string]bool{}
		for _, p := range strings.Split(paths, "\n") {
			p = cleanRel(p)
			if p == "" || p == "." || len(p) > 200 || strings.Count(p, "/") > 8 ||
				p == ".dockerignore" || p == "Dockerfile.dockerignore" || strings.ContainsAny(p, "\x00\\") {
				continue
			}
			full := filepath.Join(dir, filepath.FromSlash(p))
			if os.MkdirAll(filepath.Dir(full), 0o755) != nil || os.WriteFile(full, nil, 0o644) != nil {
				continue
			}
			created[p] = true
		}
		// A file created as the parent of another is a directory now.
		for p := range created {
			if fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(p))); err != nil || !fi.Mode().IsRegular() {
				delete(created, p)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(ignore), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dir, "Dockerfile")
		if err != nil {
			for _, line := range strings.Split(ignore, "\n") {
				if line = strings.TrimSpace(line); len(line) >= 16 && strings.Contains(err.Error(), line) {
					t.Fatalf("Open() = %v: it quotes the ignore file", err)
				}
			}
			return
		}
		reported := map[string]bool{}
		walkErr := c.Walk("", func(rel string, d fs.DirEntry) error {
			if !d.IsDir() {
				reported[rel] = true
			}
			return nil
		})
		if walkErr != nil {
			return // a pattern the matcher cannot apply; Excluded fails the same way
		}
		for p := range created {
			ex, err := c.Excluded(p)
			if err != nil {
				continue
			}
			if reported[p] == ex {
				t.Errorf("%s: Excluded = %v but Walk reported it = %v (patterns %q)", p, ex, reported[p], c.Patterns)
			}
			// The ways a user may write it are the same path.
			for _, alt := range []string{"/" + p, "./" + p, p + "/", "x/../" + p} {
				if ex2, err := c.Excluded(alt); err == nil && ex2 != ex {
					t.Errorf("Excluded(%q) = %v, Excluded(%q) = %v", p, ex, alt, ex2)
				}
			}
		}
	})
}
