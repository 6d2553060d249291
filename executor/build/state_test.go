package build_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	sysunix "golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/imagetest"
)

// stateBuild runs one build as a fresh executor with the state directory
// dir (executor --state-dir): opened, the work directory on it, kept and
// closed after the build. withCache gives it the registry cache too.
func stateBuild(t *testing.T, f *fixture, dir, dockerfile string, withCache bool) (v1.Image, *result.State, error) {
	t.Helper()
	var logBuf strings.Builder
	logw := &syncBuilder{b: &logBuf}
	st := build.OpenState(dir, logw)
	defer st.Close()
	work := t.TempDir()
	if wd := st.WorkDir(); wd != "" {
		var err error
		// The image's new layers are files of the work directory: it is
		// removed when the next build opens the directory (or at the end).
		if work, err = os.MkdirTemp(wd, "build-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(work) })
	}
	cm := &build.CacheMounts{Scope: "s", MaxSize: 1 << 30}
	img, _, err := f.build(t, dockerfile, withCache, func(o *build.Options) {
		o.WorkDir, o.State, o.Log = work, st, logw
		if withCache {
			cm.Store, cm.Repo = o.Cache.(*cache.Cache), f.cacheTo.Name()
		}
		o.CacheMounts = cm
	})
	cm.Wait(t.Context())
	if err == nil {
		st.Keep()
	}
	f.log = logBuf.String()
	t.Logf("build log:\n%s", f.log)
	return img, st.Report(), err
}

// TestState_trees: a stage whose layers begin with those of a tree the
// state directory keeps starts from it (no layer unpacked again), and its
// image is the one a build without the state makes.
func TestState_trees(t *testing.T) {
	f := newFixture(t, nil)
	dir := filepath.Join(t.TempDir(), "state")
	first := `FROM {{BASE}}
RUN echo a > /a && mkdir -p /d && echo x > /d/x
`
	_, rep, err := stateBuild(t, f, dir, first, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Found || rep.TreesUsed != 0 || rep.Bytes == 0 {
		t.Errorf("first build's state report %+v, want nothing found and a tree kept", rep)
	}
	second := first + `RUN cat /a /d/x > /out && rm /d/x
`
	img, rep, err := stateBuild(t, f, dir, second, true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Found || rep.TreesUsed != 1 {
		t.Errorf("second build's state report %+v, want the tree used", rep)
	}
	if !strings.Contains(f.log, "started from the state directory's tree of 2 layers") {
		t.Errorf("the log does not say the stage started from the kept tree")
	}
	want, _, err := f.build(t, second, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := out(t, img); got != "a\nx\n" {
		t.Errorf("/out = %q", got)
	}
	compareImages(t, want, img)
}

// compareImages fails unless the two images have the same file trees.
func compareImages(t *testing.T, want, got v1.Image) {
	t.Helper()
	wt, err := imagetest.Flatten(want)
	if err != nil {
		t.Fatal(err)
	}
	gt, err := imagetest.Flatten(got)
	if err != nil {
		t.Fatal(err)
	}
	if d := imagetest.DiffTrees(wt, gt, func(p string) bool { return p == "/out" }); len(d) > 0 {
		t.Errorf("file trees (-without state +with):\n%s", strings.Join(d, "\n"))
	}
}

// TestState_mountsWithoutCache: without a registry cache, cache mounts are
// kept in the state directory alone.
func TestState_mountsWithoutCache(t *testing.T) {
	f := newFixture(t, nil)
	dir := filepath.Join(t.TempDir(), "state")
	df := `FROM {{BASE}}
ARG N
RUN --mount=type=cache,target=/c sh -c 'echo $N; cat /c/stamp > /out 2>/dev/null || echo none > /out; echo $N > /c/stamp'
`
	for n, want := range []string{"none\n", "1\n", "2\n"} {
		img, rep, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N="+string(rune('1'+n)), 1), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := out(t, img); got != want {
			t.Errorf("build %d read %q from its cache mount, want %q", n+1, got, want)
		}
		if (n > 0) != (rep.MountsUsed == 1) {
			t.Errorf("build %d: state report %+v", n+1, rep)
		}
	}
}

// TestState_mountsWithCache: with the registry cache, the state
// directory's copy of a saved mount is used when it is the saved one; one
// another build saved since is downloaded instead.
func TestState_mountsWithCache(t *testing.T) {
	f := newFixture(t, nil)
	dir := filepath.Join(t.TempDir(), "state")
	df := `FROM {{BASE}}
ARG N
RUN --mount=type=cache,target=/c sh -c 'echo $N; cat /c/stamp > /out 2>/dev/null || echo none > /out; echo $N > /c/stamp'
`
	arg := func(n string) string { return strings.Replace(df, "ARG N", "ARG N="+n, 1) }
	if _, _, err := stateBuild(t, f, dir, arg("1"), true); err != nil {
		t.Fatal(err)
	}
	img, rep, err := stateBuild(t, f, dir, arg("2"), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := out(t, img); got != "1\n" || rep.MountsUsed != 1 {
		t.Errorf("second build read %q, state %+v; want the first's stamp from the state directory", got, rep)
	}
	// Another builder (no state directory) saves a newer version.
	mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo elsewhere > /c/stamp'
`, "s")
	img, rep, err = stateBuild(t, f, dir, arg("4"), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := out(t, img); got != "elsewhere\n" || rep.MountsUsed != 0 {
		t.Errorf("after another build saved the mount: read %q, state %+v; want the newer saved mount, not the state's copy", got, rep)
	}
}

// TestState_notUsable: a directory another build holds, or that holds
// something else than a state directory, is not used (and not touched);
// one of another version is emptied.
func TestState_notUsable(t *testing.T) {
	f := newFixture(t, nil)
	df := `FROM {{BASE}}
RUN echo hi > /hi
`
	t.Run("busy", func(t *testing.T) {
		dir := t.TempDir()
		held := build.OpenState(dir, os.Stderr)
		defer held.Close()
		_, rep, err := stateBuild(t, f, dir, df, true)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rep.Reset, "another build uses it") {
			t.Errorf("state report %+v", rep)
		}
	})
	t.Run("foreign", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, rep, err := stateBuild(t, f, dir, df, true)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rep.Reset, `it holds "precious" and no state of this executor's`) {
			t.Errorf("state report %+v", rep)
		}
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != "lock,precious" {
			t.Errorf("the foreign directory now holds %v", names)
		}
	})
	t.Run("other version", func(t *testing.T) {
		dir := t.TempDir()
		if _, _, err := stateBuild(t, f, dir, df, true); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "version"), []byte("slipway-state 0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, rep, err := stateBuild(t, f, dir, df+"RUN true\n", true)
		if err != nil {
			t.Fatal(err)
		}
		if rep.TreesUsed != 0 || !strings.Contains(rep.Reset, "another version") {
			t.Errorf("state report %+v", rep)
		}
	})
}

// TestState_lockIsExclusive: the lock is an flock another process sees.
func TestState_lockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	st := build.OpenState(dir, os.Stderr)
	defer st.Close()
	f, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := sysunix.Flock(int(f.Fd()), sysunix.LOCK_EX|sysunix.LOCK_NB); err == nil {
		t.Error("the state directory's lock could be taken while a build holds it")
	}
}

// TestState_treeReverted: a change a few steps from the end, with a RUN
// after it. The kept tree holds the old steps' layers on top of the ones
// the new build keeps: it is taken back to those (only what the old steps
// touched is undone), and the image is the one a build without the state
// makes.
func TestState_treeReverted(t *testing.T) {
	f := newFixture(t, map[string]string{"src/app.sh": "echo one\n"})
	dir := filepath.Join(t.TempDir(), "state")
	df := `FROM {{BASE}}
RUN mkdir -p /opt/lib && echo lib > /opt/lib/l && echo conf > /etc/app.conf && rm /etc/group
COPY src /src
RUN sh /src/app.sh > /out && echo changed >> /etc/app.conf && rm /opt/lib/l && mkdir /opt/new && chmod 700 /opt
`
	if _, _, err := stateBuild(t, f, dir, df, true); err != nil {
		t.Fatal(err)
	}
	writeContext(t, f.ctxDir, map[string]string{"src/app.sh": "echo two\n"})
	img, rep, err := stateBuild(t, f, dir, df, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TreesUsed != 1 || !strings.Contains(f.log, "Took the state directory's tree of 4 layers back to its first 2") {
		t.Errorf("state report %+v; the log does not say the tree was taken back", rep)
	}
	if got := out(t, img); got != "two\n" {
		t.Errorf("/out = %q", got)
	}
	want, _, err := f.build(t, df, false)
	if err != nil {
		t.Fatal(err)
	}
	compareImages(t, want, img)
	// And again: the tree kept by the second build is reverted in turn.
	writeContext(t, f.ctxDir, map[string]string{"src/app.sh": "echo three\n"})
	img, rep, err = stateBuild(t, f, dir, df, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TreesUsed != 1 || out(t, img) != "three\n" {
		t.Errorf("third build: state report %+v, /out %q", rep, out(t, img))
	}
	want, _, err = f.build(t, df, false)
	if err != nil {
		t.Fatal(err)
	}
	compareImages(t, want, img)
}

// TestState_plantedSymlinks: in a pod, RUN steps can reach the state
// directory. A symlink planted in place of a kept cache mount, or of one
// of the directory's own directories, is never followed: the build reads
// nothing from where it points.
func TestState_plantedSymlinks(t *testing.T) {
	f := newFixture(t, nil)
	df := `FROM {{BASE}}
ARG N
RUN --mount=type=cache,target=/c sh -c 'echo $N; cat /c/stamp > /out 2>/dev/null || echo none > /out; echo $N > /c/stamp'
`
	elsewhere := t.TempDir()
	if err := os.WriteFile(filepath.Join(elsewhere, "stamp"), []byte("planted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("a kept mount", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		if _, _, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N=1", 1), false); err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(filepath.Join(dir, "mounts"))
		if err != nil {
			t.Fatal(err)
		}
		planted := 0
		for _, e := range entries {
			if e.IsDir() {
				p := filepath.Join(dir, "mounts", e.Name())
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(elsewhere, p); err != nil {
					t.Fatal(err)
				}
				planted++
			}
		}
		if planted != 1 {
			t.Fatalf("%d kept mounts, want 1", planted)
		}
		img, rep, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N=2", 1), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := out(t, img); got != "none\n" || rep.MountsUsed != 0 {
			t.Errorf("the step read %q (state %+v), want an empty cache mount", got, rep)
		}
	})
	t.Run("its own directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		if _, _, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N=1", 1), false); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, "mounts")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(elsewhere, filepath.Join(dir, "mounts")); err != nil {
			t.Fatal(err)
		}
		img, rep, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N=2", 1), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := out(t, img); got != "none\n" || !strings.Contains(rep.Reset, "its mounts is not a directory") {
			t.Errorf("the step read %q (state %+v), want an unused state directory", got, rep)
		}
	})
}

// TestState_treeRevertedWithWarmCache: a state directory given to an
// ImageBuild whose cache is warm already (the layers' indexes are in the
// cache, so its builds do not make them again) still keeps trees that can
// be taken back.
func TestState_treeRevertedWithWarmCache(t *testing.T) {
	f := newFixture(t, map[string]string{"src/app.sh": "echo one\n"})
	dir := filepath.Join(t.TempDir(), "state")
	df := `FROM {{BASE}}
RUN echo conf > /etc/app.conf
COPY src /src
RUN sh /src/app.sh > /out
`
	if _, _, err := f.build(t, df, true); err != nil {
		t.Fatal(err)
	}
	writeContext(t, f.ctxDir, map[string]string{"src/app.sh": "echo two\n"})
	if _, _, err := stateBuild(t, f, dir, df, true); err != nil {
		t.Fatal(err)
	}
	writeContext(t, f.ctxDir, map[string]string{"src/app.sh": "echo three\n"})
	img, rep, err := stateBuild(t, f, dir, df, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TreesUsed != 1 || !strings.Contains(f.log, "Took the state directory's tree of 4 layers back to its first 2") {
		t.Errorf("state report %+v; the log does not say the tree was taken back", rep)
	}
	if got := out(t, img); got != "three\n" {
		t.Errorf("/out = %q", got)
	}
}
