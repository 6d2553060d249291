package build_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// A Dockerfile whose late COPY steps change: when they miss, the build runs
// them on a partial tree (their destinations and /etc/passwd) instead of
// unpacking the stage; --chown by name, a WORKDIR owned by that user and a
// destination merged into an existing directory all depend on the lower
// tree.
const partialDockerfile = `FROM {{BASE}}
RUN mkdir -p /data /etc/app && head -c 3000000 /dev/zero > /data/big && echo "web:x:1234:1234::/home/web:/bin/sh" >> /etc/passwd && echo "web:x:1234:" >> /etc/group && echo old > /etc/app/keep.conf && chmod 0750 /etc/app
WORKDIR /srv/app
RUN chown web /srv/app
COPY --chown=web app.sh ./
COPY conf/ /etc/app/
`

// TestBuild_partialTreeCopy checks that a COPY that misses after cache hits
// gives exactly the image a full build gives: same digest with a fixed
// epoch, built once through the partial tree and once from scratch.
func TestBuild_partialTreeCopy(t *testing.T) {
	files := map[string]string{"app.sh": "echo v1\n", "conf/a.conf": "a=1\n"}
	f := newFixture(t, files)
	epoch := time.Unix(1700000000, 0).UTC()
	f.epoch = &epoch
	mustBuild(t, f, partialDockerfile, true)

	writeContext(t, f.ctxDir, map[string]string{"app.sh": "echo v2\n", "conf/a.conf": "a=2\n"})
	f.reg.resetCounts()
	changed, rep := mustBuild(t, f, partialDockerfile, true)
	if diff := cmp.Diff(counts{3, 2}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	// The cold build indexed every layer: the copies read the indexes, not
	// a byte of the layers below them.
	lower := layerDigests(t, changed)
	lower = lower[:len(lower)-2]
	for _, d := range lower {
		if n := f.reg.gets(d); n != 0 {
			t.Errorf("layer %s below the copies downloaded %d times, want 0 (read through its index)", d, n)
		}
	}
	if err := validate.Image(changed); err != nil {
		t.Errorf("validate.Image: %v", err)
	}

	// The same inputs built without the cache: every step runs on the
	// full tree.
	full, _ := mustBuild(t, f, partialDockerfile, false)
	if c, w := digest(t, changed), digest(t, full); c != w {
		t.Errorf("partial-tree build %s, full build %s", c, w)
		if diff := cmp.Diff(flatten(t, full), flatten(t, changed)); diff != "" {
			t.Errorf("file trees (-full +partial):\n%s", diff)
		}
	}
	for p, want := range map[string]string{
		"srv/app/app.sh":    "echo v2\n",
		"etc/app/a.conf":    "a=2\n",
		"etc/app/keep.conf": "old\n",
	} {
		if got, ok := fileContent(t, changed, p); !ok || got != want {
			t.Errorf("%s = %q (found %v), want %q", p, got, ok, want)
		}
	}
	tree := flatten(t, changed)
	if e := tree["srv/app/app.sh"]; e.UID != 1234 {
		t.Errorf("srv/app/app.sh owned by %d, want 1234 (--chown=web)", e.UID)
	}
	if e := tree["etc/app"]; e.Mode&0o7777 != 0o750 {
		t.Errorf("etc/app mode %o, want 750 kept from the lower tree", e.Mode&0o7777)
	}
}

// TestBuild_partialTreeCopy_symlinkedDest checks that a destination behind
// a symlink is still copied right (the build falls back to the full tree).
func TestBuild_partialTreeCopy_symlinkedDest(t *testing.T) {
	files := map[string]string{"x.txt": "one\n"}
	f := newFixture(t, files)
	const df = `FROM {{BASE}}
RUN mkdir -p /real && ln -s /real /link
COPY x.txt /link/
`
	mustBuild(t, f, df, true)
	writeContext(t, f.ctxDir, map[string]string{"x.txt": "two\n"})
	img, _ := mustBuild(t, f, df, true)
	if got, ok := fileContent(t, img, "real/x.txt"); !ok || strings.TrimSpace(got) != "two" {
		t.Errorf("real/x.txt = %q (found %v), want two", got, ok)
	}
}

// TestBuild_partialTreeCopy_corruptIndex checks that layer indexes that
// cannot be read are a miss: the copy reads the layers instead, the image
// is the one a full build gives, and the indexes are written again.
func TestBuild_partialTreeCopy_corruptIndex(t *testing.T) {
	files := map[string]string{"app.sh": "echo v1\n", "conf/a.conf": "a=1\n"}
	f := newFixture(t, files)
	epoch := time.Unix(1700000000, 0).UTC()
	f.epoch = &epoch
	cold, _ := mustBuild(t, f, partialDockerfile, true)

	// Every index of the cold image's layers now holds bytes that are not
	// a gzip stream, under the right tag and label.
	for _, d := range layerDigests(t, cold) {
		img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("not an index"), types.DockerLayer))
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.Config(img, v1.Config{Labels: map[string]string{"dev.slipway.cache.key": "index:" + d.String()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(f.cacheTo.Tag("sha256-"+d.Hex+".index"), img); err != nil {
			t.Fatal(err)
		}
	}

	writeContext(t, f.ctxDir, map[string]string{"app.sh": "echo v2\n", "conf/a.conf": "a=2\n"})
	changed, rep := mustBuild(t, f, partialDockerfile, true)
	if diff := cmp.Diff(counts{3, 2}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	full, _ := mustBuild(t, f, partialDockerfile, false)
	if c, w := digest(t, changed), digest(t, full); c != w {
		t.Errorf("build past corrupt indexes %s, full build %s", c, w)
	}

	// That build wrote the indexes again: the next change reads none of
	// the layers below the copies.
	writeContext(t, f.ctxDir, map[string]string{"app.sh": "echo v3\n", "conf/a.conf": "a=3\n"})
	f.reg.resetCounts()
	healed, _ := mustBuild(t, f, partialDockerfile, true)
	lower := layerDigests(t, healed)
	for _, d := range lower[:len(lower)-2] {
		if n := f.reg.gets(d); n != 0 {
			t.Errorf("layer %s downloaded %d times after its index was rewritten, want 0", d, n)
		}
	}
}
