package rootfs

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzLayers turns a script into layers, one entry a line, layers
// separated by "---" lines:
//
//	f NAME[>CONTENT]   a regular file (mode 0644)
//	d NAME             a directory (mode 0755)
//	l NAME>TARGET      a symlink
//	h NAME>TARGET      a hard link
//	p NAME             a FIFO
//	x NAME             a file with an extended attribute
//
// "OUT" in names and targets stands for the directory outside the root
// (absolute, without its leading slash), so that seeds can aim at it.
// Unknown lines are skipped; names are taken as they are (whiteouts are
// files named .wh.*).
func fuzzLayers(t testing.TB, script, out string) [][]byte {
	var layers [][]byte
	var cur []entry
	flush := func() {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range cur {
			h := e.hdr
			if tw.WriteHeader(&h) != nil {
				continue // a name the tar format cannot hold
			}
			tw.Write([]byte(e.body))
		}
		tw.Close()
		layers = append(layers, buf.Bytes())
		cur = nil
	}
	fix := func(s string) string { return strings.ReplaceAll(s, "OUT", strings.TrimPrefix(out, "/")) }
	for _, line := range strings.Split(script, "\n") {
		if line == "---" {
			flush()
			continue
		}
		if len(line) < 3 || line[1] != ' ' {
			continue
		}
		name, arg, _ := strings.Cut(line[2:], ">")
		name, arg = fix(name), fix(arg)
		switch line[0] {
		case 'f':
			cur = append(cur, fileE(name, arg, 0o644))
		case 'd':
			cur = append(cur, dirE(name, 0o755))
		case 'l':
			if strings.HasPrefix(arg, strings.TrimPrefix(out, "/")) {
				arg = "/" + arg
			}
			cur = append(cur, symlinkE(name, arg))
		case 'h':
			cur = append(cur, linkE(name, arg))
		case 'p':
			cur = append(cur, entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644, ModTime: epoch}})
		case 'x':
			cur = append(cur, fileE(name, "", 0o644).with(func(h *tar.Header) {
				h.PAXRecords = map[string]string{"SCHILY.xattr.user.fuzz": arg}
			}))
		}
	}
	flush()
	return layers
}

// fuzzSeeds are scripts taken from the containment and extraction tests.
var fuzzSeeds = []string{
	"f ../outside/canary>pwned",
	"f a/../../outside/new>pwned",
	"d ../outside",
	"f /OUT/canary>contained",
	"l up>../outside\nf up/canary>contained\nf up/new>contained",
	"d a\nl a/up>../../../../../../..\nf a/up/OUT/canary>contained",
	"l abs>OUT\nf abs/canary>contained",
	"l a>b\nl b>/..\nd c\nf a/c/new>contained",
	"l l>OUT/canary\nf l>replaces the link",
	"l l>OUT\nd l",
	"l l>OUT/canary\nh h>l",
	"h h>../outside/canary",
	"l d>OUT\nh h>d/canary",
	"f ../outside/.wh.canary",
	"l d>OUT\nf d/.wh.canary\nl r>../outside\nf r/.wh.canary",
	"l l>OUT\nf .wh.l",
	"l d>../outside\nf d/.wh..wh..opq\nl e>OUT\nf e/.wh..wh..opq",
	"l d>../outside\np d/fifo",
	"d d\nf d/x>x\nl d>../outside\nf d/canary>contained",
	"f .wh...",
	"f .wh..",
	"l up>..\nf up/.wh...",
	"d a\nf a/.wh...",
	"f excluded/secret>pwned\n---\nf .wh.excluded\n---\nl k>/excluded\nf k/new>pwned\n---\nf .wh..wh..opq",
	"d a\nf a/b>1\n---\nf a/.wh.b\nd a/c\n---\nd a\nf a/.wh..wh..opq\nf a/d>2",
	"x x>value\nh y>x\n---\nf .wh.x",
}

// FuzzExtract extracts fuzzed layers into a root beside a directory with a
// canary, through Filter into a second root, and as an ADD archive and a
// build context (callerOptions) into two more, and checks that nothing
// outside the roots changed and that the excluded path is intact: whatever
// a layer holds, Extract may fail but never reaches out of its root.
func FuzzExtract(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		root := filepath.Join(base, "root")
		froot := filepath.Join(base, "froot")
		others := map[string]string{} // caller name: its root
		for _, c := range callerOptions[1:] {
			others[c.name] = filepath.Join(base, c.name)
			must(t, os.Mkdir(others[c.name], 0o755))
		}
		writeFile(t, filepath.Join(outside, "canary"), "canary", 0o644)
		must(t, os.MkdirAll(filepath.Join(outside, "sub"), 0o755))
		for _, r := range []string{root, froot} {
			writeFile(t, filepath.Join(r, "excluded/secret"), "secret", 0o600)
		}
		skip := []string{"root", "froot"}
		for _, c := range callerOptions[1:] {
			skip = append(skip, c.name)
		}
		before := dump(t, base, skip...)
		excl := map[string]map[string]node{}
		for _, r := range []string{root, froot} {
			excl[r] = dump(t, filepath.Join(r, "excluded"))
		}
		opts := []Option{WithExcludedPaths("excluded"), WithMaxSize(1 << 20)}
		keep := func(rel string) bool { return !strings.HasPrefix(rel, "b") }
		for _, l := range fuzzLayers(t, script, outside) {
			Extract(root, bytes.NewReader(l), opts...)
			var filtered bytes.Buffer
			if Filter(bytes.NewReader(l), &filtered, keep, NewIndex()) == nil {
				Extract(froot, &filtered, opts...)
			}
			for _, c := range callerOptions[1:] {
				Extract(others[c.name], bytes.NewReader(l), append(c.opts, WithMaxSize(1<<20))...)
			}
		}
		if diff := cmp.Diff(before, dump(t, base, skip...)); diff != "" {
			t.Fatalf("outside the roots (-want +got):\n%s", diff)
		}
		for _, r := range []string{root, froot} {
			if diff := cmp.Diff(excl[r], dump(t, filepath.Join(r, "excluded"))); diff != "" {
				t.Fatalf("the excluded path in %s (-want +got):\n%s", r, diff)
			}
		}
	})
}
