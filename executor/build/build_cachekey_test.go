package build_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBuild_cacheKey checks that a change of each input a step reads is a
// miss from that step on, and that the image has the new result.
func TestBuild_cacheKey(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		change     func(t *testing.T, f *fixture)
		buildArgs  [2]map[string]string
		want       counts // of the second build
		file       string // checked in the second image
		wantFile   string
	}{
		{
			name:       "file mode of a COPY source",
			dockerfile: "FROM {{BASE}}\nRUN true\nCOPY a.txt /a.txt\nRUN ls -l /a.txt | cut -c1-10 > /mode\n",
			change: func(t *testing.T, f *fixture) {
				if err := os.Chmod(filepath.Join(f.ctxDir, "a.txt"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			want:     counts{1, 2},
			file:     "mode",
			wantFile: "-rwxr-xr-x\n",
		},
		{
			name:       "a file the COPY does not read",
			dockerfile: "FROM {{BASE}}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b\n",
			change: func(t *testing.T, f *fixture) {
				writeContext(t, f.ctxDir, map[string]string{"dir/b.txt": "other\n"})
			},
			want:     counts{2, 0},
			file:     "b",
			wantFile: "alpha\n",
		},
		{
			name:       "a file excluded by .dockerignore",
			dockerfile: "FROM {{BASE}}\nCOPY . /ctx/\nRUN ls /ctx > /list\n",
			change: func(t *testing.T, f *fixture) {
				writeContext(t, f.ctxDir, map[string]string{"ignored.log": "changed\n"})
			},
			want:     counts{2, 0},
			file:     "list",
			wantFile: "a.txt\ndir\n",
		},
		{
			name:       "a file excluded by COPY --exclude, below the source",
			dockerfile: "FROM {{BASE}}\nCOPY --exclude=*.tmp dir /d/\nRUN ls /d > /list\n",
			change: func(t *testing.T, f *fixture) {
				writeContext(t, f.ctxDir, map[string]string{"dir/c.tmp": "changed\n"})
			},
			want:     counts{2, 0},
			file:     "list",
			wantFile: "b.txt\n",
		},
		{
			name:       "a file kept by COPY --exclude",
			dockerfile: "FROM {{BASE}}\nCOPY --exclude=*.tmp dir /d/\nRUN ls /d > /list\n",
			change: func(t *testing.T, f *fixture) {
				writeContext(t, f.ctxDir, map[string]string{"dir/c.txt": "new\n"})
			},
			want:     counts{0, 2},
			file:     "list",
			wantFile: "b.txt\nc.txt\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, map[string]string{
				"a.txt": "alpha\n", "dir/b.txt": "bravo\n", "dir/c.tmp": "x\n",
				"ignored.log": "x\n", ".dockerignore": "*.log\n.dockerignore\n",
			})
			mustBuild(t, f, tc.dockerfile, true)
			tc.change(t, f)
			img, rep := mustBuild(t, f, tc.dockerfile, true)
			if diff := cmp.Diff(tc.want, cacheCounts(rep)); diff != "" {
				t.Errorf("cache counts (-want +got):\n%s", diff)
			}
			if got, _ := fileContent(t, img, tc.file); got != tc.wantFile {
				t.Errorf("/%s = %q, want %q", tc.file, got, tc.wantFile)
			}
		})
	}
}

// TestBuild_cacheUncacheableInBaseStage: an ADD of a URL without
// validators is never served from the cache, so what is built on it must
// not be either: a stage FROM that stage, and a COPY --from it.
func TestBuild_cacheUncacheableInBaseStage(t *testing.T) {
	var mu sync.Mutex
	content := "v1\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		// No ETag, no Last-Modified: nothing to key the download on.
		w.Write([]byte(content))
	}))
	defer srv.Close()
	dockerfile := strings.ReplaceAll(`FROM {{BASE}} AS fetch
ADD {{URL}} /f
FROM fetch AS derived
RUN cat /f > /g
FROM {{BASE}}
COPY --from=fetch /f /copied
COPY --from=derived /g /g
`, "{{URL}}", srv.URL+"/file")

	f := newFixture(t, nil)
	mustBuild(t, f, dockerfile, true)
	mu.Lock()
	content = "v2\n"
	mu.Unlock()
	img, _ := mustBuild(t, f, dockerfile, true)
	for _, p := range []string{"copied", "g"} {
		if got, _ := fileContent(t, img, p); got != "v2\n" {
			t.Errorf("/%s = %q, want %q (the download of the second build)", p, got, "v2\n")
		}
	}
}
