package build_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// excludeContext is the context of BuildKit's testExcludedFilesOnCopy
// (frontend/dockerfile/exclude_patterns_test.go).
var excludeContext = map[string]string{
	"dir1/file-101.png":  "2",
	"dir1/file-102.txt":  "3",
	"dir1/file-103.jpeg": "4",
	"dir2/file-201.pdf":  "6",
	"dir2/file-202.jpeg": "7",
	"dir2/file-203.png":  "8",
	"dir3/file-301.mp3":  "9",
	"dir3/file-302.mpeg": "10",
	"dir4/file-401.txt":  "11",
}

// excludeStages are the stages of testExcludedFilesOnCopy; ADDSRC and COPY
// SRC stand for where the sources come from.
const excludeStages = `
# ignore all the image files
FROM scratch AS builder1
COPY SRC--exclude=*/*.png --exclude=*/*.jpeg . /1

# ignore all document files
FROM scratch AS builder2
COPY SRC--exclude=*/*.pdf --exclude=*/*.txt . /2

# ignore all mp3 files
FROM scratch AS builder3
ADDSRC --exclude=*.mp3 dir3/ /3/

# Ignore everything, keeping only .mpeg files, using src as a wildcard.
FROM scratch AS builder4
COPY SRC--exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/

# Ignore everything, keeping only txt files.
FROM scratch AS builder5
ADDSRC --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5

# Exclude all files.
FROM scratch AS builder6
ADDSRC --exclude=* dir* /6

FROM scratch
COPY --from=builder1 / /builder1
COPY --from=builder2 / /builder2
COPY --from=builder3 / /builder3
COPY --from=builder4 / /builder4
COPY --from=builder5 / /builder5
COPY --from=builder6 / /builder6
`

// TestBuild_excludedFilesOnCopy is BuildKit's testExcludedFilesOnCopy:
// COPY and ADD --exclude patterns apply to the paths below each source
// (after wildcard expansion), never to the source itself, so a wildcard
// whose every file is excluded still makes its destination. BuildKit runs
// it once on the context and once with COPY --from a stage holding the
// same tree (a git checkout there; a stage that copied the context here).
func TestBuild_excludedFilesOnCopy(t *testing.T) {
	f := newFixture(t, excludeContext)
	for _, l := range [][2]string{{"file-401.txt", "dir4/file-402.txt"}, {"file-404.txt", "dir4/file-403.txt"}} {
		if err := os.Symlink(l[0], filepath.Join(f.ctxDir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	// Present files and their content (a symlink's: its target); every
	// other path BuildKit's test names is absent.
	want := map[string]string{
		"builder1/1/dir1/file-102.txt":  "3",
		"builder1/1/dir2/file-201.pdf":  "6",
		"builder1/1/dir3/file-301.mp3":  "9",
		"builder1/1/dir3/file-302.mpeg": "10",
		"builder1/1/dir4/file-401.txt":  "11",
		"builder1/1/dir4/file-402.txt":  "-> file-401.txt",
		"builder1/1/dir4/file-403.txt":  "-> file-404.txt",

		"builder2/2/dir1/file-101.png":  "2",
		"builder2/2/dir1/file-103.jpeg": "4",
		"builder2/2/dir2/file-202.jpeg": "7",
		"builder2/2/dir2/file-203.png":  "8",
		"builder2/2/dir3/file-301.mp3":  "9",
		"builder2/2/dir3/file-302.mpeg": "10",

		"builder3/3/file-302.mpeg": "10",

		"builder4/4/file-302.mpeg": "10",

		"builder5/5/file-102.txt": "3",
		"builder5/5/file-401.txt": "11",
		"builder5/5/file-402.txt": "-> file-401.txt",
		"builder5/5/file-403.txt": "-> file-404.txt",
	}
	for _, tc := range []struct{ name, dockerfile string }{
		{"context", strings.NewReplacer("COPY SRC", "COPY ", "ADDSRC", "ADD").Replace(excludeStages)},
		// ADD has no --from: BuildKit's test copies with COPY here.
		{"from a stage", "FROM scratch AS base\nCOPY . /\n" +
			strings.NewReplacer("COPY SRC", "COPY --from=base ", "ADDSRC", "COPY --from=base").Replace(excludeStages)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := mustBuild(t, f, tc.dockerfile, false)
			got := map[string]string{}
			var dirs []string
			for p, e := range flatten(t, img) {
				switch {
				case e.Type == '5':
					if strings.Count(p, "/") == 1 {
						dirs = append(dirs, p)
					}
					continue
				case e.Link != "":
					got[p] = "-> " + e.Link
				default:
					c, _ := fileContent(t, img, p)
					got[p] = c
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
			// builder6's destination is made, and empty.
			if !slices.Contains(dirs, "builder6/6") {
				t.Errorf("builder6/6 is missing; top directories: %v", dirs)
			}
		})
	}
}
