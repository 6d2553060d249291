package build_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
