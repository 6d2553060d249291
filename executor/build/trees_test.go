package build_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/build"
)

// treeFiles is the regular files and symbolic links of the tree at root,
// by path: a file's content digest, a link's target.
func treeFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			out[rel] = hex.EncodeToString(s[:])
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// imageFiles is treeFiles of the image's flattened file system.
func imageFiles(t *testing.T, f map[string]fileEntry) map[string]string {
	out := map[string]string{}
	for p, e := range f {
		switch e.Type {
		case '0':
			out[p] = e.SHA256
		case '2':
			out[p] = "-> " + e.Link
		}
	}
	return out
}

// Report.Trees (for the image's SBOM, issue 16): under chroot isolation a
// build whose final stage ran its last step leaves the stage's root, which
// holds the image's files, file for file (a step's writes and deletions,
// its RUN mounts gone); a rebuild whose steps all come from the cache, and
// a stage whose COPY ran on a partial tree, leave none.
func TestBuildAll_trees(t *testing.T) {
	f := newFixture(t, map[string]string{"Dockerfile": "", "a.txt": "alpha\n", "b.txt": "bravo\n"})
	whole := "FROM {{BASE}}\nCOPY a.txt /app/a.txt\nRUN --mount=type=cache,target=/var/cache/x --mount=type=bind,source=b.txt,target=/mnt/b.txt cat /mnt/b.txt > /app/b.txt && rm /bin/true && ln -s /app/a.txt /app/link\nCMD [\"/bin/sh\"]\n"
	img, rep := mustBuild(t, f, whole, true)
	if len(rep.Trees) != 1 || rep.Trees[0] == "" {
		t.Fatalf("Trees = %q, want the final stage's root", rep.Trees)
	}
	if diff := cmp.Diff(imageFiles(t, flatten(t, img)), treeFiles(t, rep.Trees[0])); diff != "" {
		t.Errorf("the tree is not the image's files (-image +tree):\n%s", diff)
	}

	_, warm := mustBuild(t, f, whole, true)
	if len(warm.Trees) != 1 || warm.Trees[0] != "" {
		t.Errorf("a rebuild from the cache: Trees = %q, want none", warm.Trees)
	}

	_, partial := mustBuild(t, f, "FROM {{BASE}}\nCOPY a.txt /app/a.txt\n", false)
	if len(partial.Trees) != 1 || partial.Trees[0] != "" {
		t.Errorf("a COPY on the base's layers: Trees = %q, want none", partial.Trees)
	}
}

// The build's hooks for the image's SBOM (issue 16): StepRuns is called for
// each step that runs (none in a rebuild from the cache), ImageReady once
// per image with the image's digest and the tree Report.Trees gives.
func TestBuildAll_hooks(t *testing.T) {
	f := newFixture(t, map[string]string{"Dockerfile": "", "a.txt": "alpha\n"})
	dockerfile := "FROM {{BASE}}\nCOPY a.txt /app/a.txt\nRUN echo x > /x\nENV A=b\n"
	type ready struct {
		i      int
		digest v1.Hash
		tree   string
	}
	for _, tc := range []struct {
		name string
		runs int
	}{{"cold", 2}, {"warm", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			runs := 0
			var got []ready
			img, rep, err := f.build(t, dockerfile, true, func(o *build.Options) {
				o.StepRuns = func() { mu.Lock(); runs++; mu.Unlock() }
				o.ImageReady = func(i int, d v1.Hash, tree string) { mu.Lock(); got = append(got, ready{i, d, tree}); mu.Unlock() }
			})
			if err != nil {
				t.Fatal(err)
			}
			if runs != tc.runs {
				t.Errorf("StepRuns called %d times, want %d", runs, tc.runs)
			}
			want := []ready{{0, digest(t, img), rep.Trees[0]}}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(ready{})); diff != "" {
				t.Errorf("ImageReady calls (-want +got):\n%s", diff)
			}
		})
	}
}
