package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/imagetest"
)

// Cache mounts kept between builds (issue 17), through the executor's
// flags and result file: the chroot isolation of the command line and the
// in-place isolation of a pod.

// cacheMountDockerfile's step reads what the last build left in its cache
// mount into /out, then leaves its own stamp there; N makes each build's
// step miss the layer cache.
const cacheMountDockerfile = `ARG BASE
FROM $BASE
ARG N
RUN --mount=type=cache,target=/root/.cache,id=deps sh -c 'echo build $N; cat /root/.cache/stamp > /out 2>/dev/null || echo none > /out; echo "from build $N" > /root/.cache/stamp'
`

// outOf is /out of the image at ref.
func outOf(t *testing.T, ref string) string {
	t.Helper()
	_, data, err := imagetest.FlattenContents(pullImage(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	return string(data["/out"])
}

func TestExecute_cacheMounts(t *testing.T) {
	env := newCorpusEnv(t)
	ctxDir := writeDockerfile(t, cacheMountDockerfile)
	build := func(n int, extra ...string) buildResult {
		t.Helper()
		ref := env.reg.Ref(fmt.Sprintf("app:%d", n))
		b := runExecutor(t, append([]string{"--context=dir://" + ctxDir, "--destination=" + ref,
			"--insecure-registry=" + env.reg.Host(), "--cache=true", "--cache-repo=" + env.reg.Ref("app/cache"),
			"--build-arg=BASE=" + env.base, fmt.Sprintf("--build-arg=N=%d", n)}, extra...)...)
		if b.exit != 0 || !b.res.Success {
			t.Fatalf("build %d failed: exit %d, %s; log:\n%s", n, b.exit, b.resRaw, b.log)
		}
		return b
	}

	b := build(1, "--cache-mount-scope=namespace/team-a")
	if got := outOf(t, env.reg.Ref("app:1")); got != "none\n" {
		t.Errorf("the first build's cache mount held %q", got)
	}
	if want := (&result.CacheMounts{Saved: 1, SavedBytes: int64(len("from build 1\n"))}); b.res.CacheMounts == nil ||
		b.res.CacheMounts.Saved != want.Saved || b.res.CacheMounts.SavedBytes != want.SavedBytes || b.res.CacheMounts.Restored != 0 {
		t.Errorf("first build: result cacheMounts %s, want saved 1 of %d bytes", b.resRaw, want.SavedBytes)
	}
	if !strings.Contains(b.log, "Cache mount id=deps: saved 13 B (1 layer,") {
		t.Errorf("the log does not say the mount was saved:\n%s", b.log)
	}

	b = build(2, "--cache-mount-scope=namespace/team-a")
	if got := outOf(t, env.reg.Ref("app:2")); got != "from build 1\n" {
		t.Errorf("the second build's step read %q from its cache mount, want the first build's stamp", got)
	}
	if cm := b.res.CacheMounts; cm == nil || cm.Restored != 1 || cm.RestoredBytes != 13 || cm.Saved != 1 {
		t.Errorf("second build: result %s, want one mount restored (13 bytes) and saved", b.resRaw)
	}

	// Another scope: another tenant's mount is never seen.
	build(3, "--cache-mount-scope=namespace/team-b")
	if got := outOf(t, env.reg.Ref("app:3")); got != "none\n" {
		t.Errorf("a build of another scope read %q from its cache mount", got)
	}

	// --cache-mounts=false: nothing restored, nothing saved.
	b = build(4, "--cache-mount-scope=namespace/team-c", "--cache-mounts=false")
	if b.res.CacheMounts != nil || strings.Contains(b.log, "Cache mount") {
		t.Errorf("--cache-mounts=false: result %s; log:\n%s", b.resRaw, b.log)
	}
	b = build(5, "--cache-mount-scope=namespace/team-c")
	if got := outOf(t, env.reg.Ref("app:5")); got != "none\n" {
		t.Errorf("after a build with --cache-mounts=false the mount held %q", got)
	}
	repo, err := name.NewRepository(env.reg.Ref("app/cache"))
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(repo)
	if err != nil {
		t.Fatal(err)
	}
	mounts := 0
	for _, tag := range tags {
		if strings.HasSuffix(tag, ".mount") {
			mounts++
		}
	}
	if mounts != 3 {
		t.Errorf("saved mounts in the cache repository: %d, want 3 (team-a, team-b, team-c's last build)", mounts)
	}
}

func TestExecute_cacheMountMaxSizeFlag(t *testing.T) {
	ctxDir := writeDockerfile(t, cacheMountDockerfile)
	b := runExecutor(t, "--context=dir://"+ctxDir, "--no-push", "--cache-mount-max-size=lots")
	if b.exit == 0 || b.res.Failure == nil || !strings.Contains(b.res.Failure.Message, "--cache-mount-max-size=lots: want a size such as 2GiB, or 0 for no limit") {
		t.Errorf("exit %d, result %s", b.exit, b.resRaw)
	}
}

// TestExecute_cacheMountsInPlace: in place, as in a pod, a second build (a
// new executor in a root cleared by the first) finds the first one's
// cache mount.
func TestExecute_cacheMountsInPlace(t *testing.T) {
	env := newCorpusEnv(t)
	ctxDir := writeDockerfile(t, cacheMountDockerfile)
	root := makeExecutorRoot(t)
	for n := 1; n <= 2; n++ {
		ref := env.reg.Ref(fmt.Sprintf("inplace-mounts:%d", n))
		out, err := runInPlace(t, root, ctxDir, []string{"--isolation=inplace", "--context=dir:///workspace",
			"--destination=" + ref, "--insecure-registry=" + env.reg.Host(), "--cache=true",
			"--cache-repo=" + env.reg.Ref("inplace-mounts/cache"), "--cache-mount-scope=namespace/x",
			"--build-arg=BASE=" + env.base, fmt.Sprintf("--build-arg=N=%d", n), "--result-file=/slipway/result.json"})
		raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
		if err != nil {
			t.Fatalf("in-place build %d: %v; result %s; output:\n%s", n, err, raw, out)
		}
		res, err := result.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		want := map[int]string{1: "none\n", 2: "from build 1\n"}[n]
		if got := outOf(t, ref); got != want {
			t.Errorf("in-place build %d read %q from its cache mount, want %q; output:\n%s", n, got, want, out)
		}
		if res.CacheMounts == nil || res.CacheMounts.Saved != 1 || (n == 2) != (res.CacheMounts.Restored == 1) {
			t.Errorf("in-place build %d: result %s", n, raw)
		}
	}
}

// TestExecute_stateDir: with --state-dir, a second run starts its stage
// from the first one's tree, taken back to the layers the two share, and
// its cache mount from the directory's copy; the result file says so.
func TestExecute_stateDir(t *testing.T) {
	env := newCorpusEnv(t)
	ctxDir := writeDockerfile(t, cacheMountDockerfile+"COPY a.txt /a.txt\nRUN cat /a.txt >> /out\n")
	state := filepath.Join(t.TempDir(), "state")
	for n := 1; n <= 2; n++ {
		if err := os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte(fmt.Sprintf("a%d\n", n)), 0o644); err != nil {
			t.Fatal(err)
		}
		ref := env.reg.Ref(fmt.Sprintf("state:%d", n))
		b := runExecutor(t, "--context=dir://"+ctxDir, "--destination="+ref, "--insecure-registry="+env.reg.Host(),
			"--cache=true", "--cache-repo="+env.reg.Ref("state/cache"), "--state-dir="+state,
			"--build-arg=BASE="+env.base, "--build-arg=N=1")
		if b.exit != 0 || !b.res.Success {
			t.Fatalf("build %d failed: %s; log:\n%s", n, b.resRaw, b.log)
		}
		st := b.res.State
		switch {
		case st == nil:
			t.Fatalf("build %d: no state in the result %s", n, b.resRaw)
		case n == 1 && (st.Found || st.TreesUsed != 0 || st.Bytes == 0):
			t.Errorf("first build: state %+v", st)
		case n == 2 && (!st.Found || st.TreesUsed != 1):
			t.Errorf("second build: state %+v; log:\n%s", st, b.log)
		}
		if want := fmt.Sprintf("none\na%d\n", n); outOf(t, ref) != want {
			t.Errorf("build %d: /out = %q, want %q", n, outOf(t, ref), want)
		}
	}
}
