package build_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/test/testenv"
)

// TestBuild_runHome: a RUN step whose environment has no HOME gets the
// home directory of its user's /etc/passwd entry, "/" for a uid without
// one, as runc sets it for BuildKit's steps (libcontainer's setupUser); an
// image ENV HOME wins. There is no BuildKit test of this: the rule is
// runc's. The image config never gets HOME.
func TestBuild_runHome(t *testing.T) {
	const dockerfile = `FROM {{BASE}}
RUN echo "$HOME" > /home-root
RUN ["/bin/sh", "-c", "echo \"$HOME\" > /home-root-exec"]
USER app
RUN echo "$HOME" > /tmp/home-app
USER 4242
RUN echo "$HOME" > /tmp/home-4242
USER 4242:4242
RUN ["/bin/sh", "-c", "echo \"$HOME\" > /tmp/home-4242-4242"]
USER root
ENV HOME=/custom
RUN echo "$HOME" > /home-env
`
	f := newFixture(t, nil)
	img, _ := mustBuild(t, f, dockerfile, false)
	for p, want := range map[string]string{
		"/home-root":          "/root\n",
		"/home-root-exec":     "/root\n",
		"/tmp/home-app":       "/home/app\n",
		"/tmp/home-4242":      "/\n",
		"/tmp/home-4242-4242": "/\n",
		"/home-env":           "/custom\n",
	} {
		got, ok := fileContent(t, img, p)
		if !ok {
			t.Errorf("%s missing", p)
			continue
		}
		if got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var homes []string
	for _, kv := range cf.Config.Env {
		if strings.HasPrefix(kv, "HOME=") {
			homes = append(homes, kv)
		}
	}
	if diff := cmp.Diff([]string{"HOME=/custom"}, homes); diff != "" {
		t.Errorf("config HOME (-want +got):\n%s", diff)
	}
}

// tarOf is a tar archive of one regular file.
func tarOf(t *testing.T, name, content string) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(content)), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestBuild_addArchiveWildcard is BuildKit's testDockerfileAddArchiveWildcard
// (frontend/dockerfile/dockerfile_add_test.go): a wildcard matching two
// archives and a destination without a trailing slash extracts both into
// that directory; BuildKit has no "must end with a /" rule.
func TestBuild_addArchiveWildcard(t *testing.T) {
	f := newFixture(t, map[string]string{
		"t.tar": tarOf(t, "foo", "content0"),
		"b.tar": tarOf(t, "bar", "content1"),
	})
	img, _ := mustBuild(t, f, "FROM scratch\nADD *.tar /dest\n", false)
	for p, want := range map[string]string{"/dest/foo": "content0", "/dest/bar": "content1"} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", p, got, ok, want)
		}
	}
}

// TestBuild_copyChmod is BuildKit's testCopyChmod
// (frontend/dockerfile/dockerfile_copy_test.go): --chmod sets the mode of
// what is copied and of the destination's parents the copy creates (/parent
// 0777, then /parent/sub 0770 with /parent left as it was). The build arg
// is the ARG's default here (the test passes it as build-arg:mode).
func TestBuild_copyChmod(t *testing.T) {
	const dockerfile = `FROM {{BASE}} AS base

RUN mkdir -m 0777 /out
COPY --chmod=0644 foo /
COPY --chmod=777 bar /baz
COPY --chmod=0 foo /foobis
COPY --chmod=777 foo /parent/foo
COPY --chmod=770 foo /parent/sub/foo

ARG mode=755
COPY --chmod=${mode} foo /footer

RUN stat -c "%04a" /foo  > /out/fooperm
RUN stat -c "%04a" /baz  > /out/barperm
RUN stat -c "%04a" /foobis  > /out/foobisperm
RUN stat -c "%04a" /parent  > /out/parentperm
RUN stat -c "%04a" /parent/sub  > /out/subparentperm
RUN stat -c "%04a" /footer  > /out/footerperm
FROM scratch
COPY --from=base /out /
`
	f := newFixture(t, map[string]string{"foo": "foo-contents", "bar": "bar-contents"})
	if err := os.Chmod(filepath.Join(f.ctxDir, "foo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(f.ctxDir, "bar"), 0o700); err != nil {
		t.Fatal(err)
	}
	img, _ := mustBuild(t, f, dockerfile, false)
	for p, want := range map[string]string{
		"/fooperm":       "0644\n",
		"/barperm":       "0777\n",
		"/foobisperm":    "0000\n",
		"/parentperm":    "0777\n",
		"/subparentperm": "0770\n",
		"/footerperm":    "0755\n",
	} {
		if got, ok := fileContent(t, img, p); !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", p, got, ok, want)
		}
	}
}

// TestBuild_exportedHistory is BuildKit's testExportedHistory
// (frontend/dockerfile/dockerfile_history_test.go): every RUN, COPY and ADD
// has a layer, a RUN that changes nothing ("RUN ls") included, while
// metadata instructions and WORKDIR / have none; history is scoped to the
// stage. (BuildKit's test also checks EXPOSE's text, sorted; its
// dispatchExpose writes the ports in the order given, as this executor does,
// so only the entry's empty_layer is checked here.)
func TestBuild_exportedHistory(t *testing.T) {
	const dockerfile = `
FROM {{BASE}} AS base
ENV foo=bar
COPY foo /foo2
FROM {{BASE}}
LABEL lbl=val
COPY --from=base foo2 foo3
WORKDIR /
RUN echo bar > foo4
RUN ["ls"]
EXPOSE 2375 5000 1234/udp
`
	base, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	baseCfg, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, withCache := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", withCache), func(t *testing.T) {
			f := newFixture(t, map[string]string{"foo": "contents0"})
			builds := 1
			if withCache {
				builds = 2 // cold, then every step from the cache
			}
			for i := range builds {
				img, _ := mustBuild(t, f, dockerfile, withCache)
				cf, err := img.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				if cf.RootFS.Type != "layers" {
					t.Errorf("build %d: rootfs type %q", i+1, cf.RootFS.Type)
				}
				if got, want := len(cf.RootFS.DiffIDs), len(baseCfg.RootFS.DiffIDs)+3; got != want {
					t.Errorf("build %d: %d diff IDs, want %d", i+1, got, want)
				}
				if got, want := len(cf.History), len(baseCfg.History)+6; got != want {
					t.Fatalf("build %d: %d history entries, want %d", i+1, got, want)
				}
				type entry struct {
					CreatedBy string
					Empty     bool
				}
				want := []entry{
					{"lbl=val", true},
					{"COPY foo2 foo3", false},
					{"WORKDIR /", true},
					{"echo bar > foo4", false},
					{"RUN ls", false},
					{"EXPOSE ", true},
				}
				for j, w := range want {
					h := cf.History[len(baseCfg.History)+j]
					if !strings.Contains(h.CreatedBy, w.CreatedBy) || h.EmptyLayer != w.Empty {
						t.Errorf("build %d: history %d = %q empty_layer %v, want one containing %q, empty_layer %v", i+1, j, h.CreatedBy, h.EmptyLayer, w.CreatedBy, w.Empty)
					}
					if h.Created.IsZero() {
						t.Errorf("build %d: history %d (%q) has no time", i+1, j, h.CreatedBy)
					}
				}
				// RUN ls made the empty tar, gzipped as BuildKit's is.
				ls, err := img.Layers()
				if err != nil {
					t.Fatal(err)
				}
				last := ls[len(ls)-1]
				d, _ := last.Digest()
				id, _ := last.DiffID()
				if d.String() != "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1" ||
					id.String() != "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef" {
					t.Errorf("build %d: RUN ls layer %s (diff ID %s), want BuildKit's empty layer", i+1, d, id)
				}
				if err := validate.Image(img); err != nil {
					t.Errorf("build %d: validate.Image: %v", i+1, err)
				}
			}
		})
	}
}

// TestBuild_emptyLayerFromOlderCacheEntry: a cache entry stored without a
// layer, as executors stored a step that changed nothing before steps got
// BuildKit's empty layer, is a hit that gives the step the empty layer, so
// the image is the one a build without the cache makes.
func TestBuild_emptyLayerFromOlderCacheEntry(t *testing.T) {
	// The first RUN's layer holds the mount points runc makes (the base
	// has none: TestBuild_runMountPoints); the second changes nothing.
	const dockerfile = "FROM {{BASE}}\nRUN true\nRUN true\nRUN echo x > /x\n"
	f := newFixture(t, nil)
	epoch := time.Unix(0, 0).UTC()
	f.epoch = &epoch
	cold, _ := mustBuild(t, f, dockerfile, true)
	// Find the entry of the second RUN true (its layer is the empty one)
	// and store it again without a layer.
	tags, err := remote.List(f.cacheTo)
	if err != nil {
		t.Fatal(err)
	}
	emptyKey := ""
	for _, tag := range tags {
		img, err := remote.Image(f.cacheTo.Tag(tag))
		if err != nil {
			continue // an index, not an entry
		}
		ls, err := img.Layers()
		if err != nil || len(ls) != 1 {
			continue
		}
		if d, _ := ls[0].Digest(); d.String() == "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1" {
			emptyKey = tag
		}
	}
	if emptyKey == "" {
		t.Fatalf("no cache entry with the empty layer among %v", tags)
	}
	c := cache.New(cache.Options{Repo: f.cacheTo, Remote: func(bool) []remote.Option { return nil }})
	c.Store(emptyKey, nil, epoch, v1.Platform{})
	if _, err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	warm, rep := mustBuild(t, f, dockerfile, true)
	if diff := cmp.Diff(counts{3, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(digest(t, cold), digest(t, warm)); diff != "" {
		t.Errorf("image digest, cold (-) and from the older entry (+):\n%s", diff)
	}
}
