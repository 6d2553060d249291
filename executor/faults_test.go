package main

import (
	"errors"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/faultproxy"
	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// faultDockerfile pulls the base, extracts it (RUN) and adds a file, so
// that a build reads the base's layer, writes two layers and a config.
const faultDockerfile = "ARG BASE\nFROM $BASE\nRUN echo built > /built\nCOPY a.txt /a.txt\n"

// faultEnv is a registry holding busybox, and a fault proxy in front of it
// through which the builds pull and push.
type faultEnv struct {
	reg   *testenv.Registry
	p     *faultproxy.Proxy
	base  string // busybox through the proxy
	layer string // the path of busybox's layer blob, through the proxy
}

func newFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	testenv.PushBusybox(t, reg)
	img, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	p := faultproxy.Start(t, reg.Host())
	return &faultEnv{reg: reg, p: p, base: p.Ref("library/busybox:latest"), layer: "/v2/library/busybox/blobs/" + d.String()}
}

// build builds faultDockerfile through the proxy to repo:latest there,
// with args added.
func (e *faultEnv) build(t *testing.T, repo string, args ...string) buildResult {
	t.Helper()
	return e.buildFile(t, faultDockerfile, repo, args...)
}

// buildFile is build with another Dockerfile.
func (e *faultEnv) buildFile(t *testing.T, dockerfile, repo string, args ...string) buildResult {
	t.Helper()
	return runExecutor(t, append([]string{"--context=dir://" + writeDockerfile(t, dockerfile),
		"--destination=" + e.p.Ref(repo+":latest"), "--build-arg=BASE=" + e.base,
		"--insecure-registry=" + e.p.Host(), "--insecure-registry=" + e.reg.Host()}, args...)...)
}

// checkBuilt asserts that b succeeded and that repo:latest, read from the
// registry itself, is the image faultDockerfile makes.
func (e *faultEnv) checkBuilt(t *testing.T, b buildResult, repo string) {
	t.Helper()
	if b.exit != 0 || !b.res.Success {
		t.Fatalf("build failed: exit %d, %s; log:\n%s\nrequests:\n%s", b.exit, b.resRaw, b.log, e.p.Log())
	}
	img := pullImage(t, e.reg.Ref(repo+":latest"))
	tree, err := imagetest.Flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/built", "/a.txt", "/bin/busybox"} {
		if _, ok := tree[p]; !ok {
			t.Errorf("the pushed image has no %s", p)
		}
	}
}

// pathRe matches exactly the path p.
func pathRe(p string) *regexp.Regexp { return regexp.MustCompile("^" + regexp.QuoteMeta(p) + "$") }

// Pulls and pushes retry what another attempt may fix: a 503 or a 429 (with
// Retry-After) on the base layer's GET, a 503 on a blob upload's PUT, and
// an upload whose connection drops in the middle of its PATCH. The build
// succeeds, and the faulted request was tried a bounded number of times.
func TestExecute_faultsRetried(t *testing.T) {
	e := newFaultEnv(t)
	uploads := regexp.MustCompile(`^/v2/app/[a-z0-9-]+/blobs/uploads/.+`)
	for _, tc := range []struct {
		name   string
		method string
		path   *regexp.Regexp
		// blobs is how many of these requests a build without faults makes:
		// one GET of the base layer; a PATCH and a PUT for each of the two
		// new layers and the config (the base layer is mounted).
		blobs int
		rule  faultproxy.Rule
	}{
		{"503 on the base layer", http.MethodGet, pathRe(e.layer), 1,
			faultproxy.Rule{Fault: faultproxy.Status, Status: http.StatusServiceUnavailable}},
		{"429 on the base layer", http.MethodGet, pathRe(e.layer), 1,
			faultproxy.Rule{Fault: faultproxy.Status, Status: http.StatusTooManyRequests, RetryAfter: "1"}},
		{"503 on a blob upload", http.MethodPut, uploads, 3,
			faultproxy.Rule{Fault: faultproxy.Status, Status: http.StatusServiceUnavailable}},
		{"connection dropped mid-upload", http.MethodPatch, uploads, 3,
			faultproxy.Rule{Fault: faultproxy.DropUpload}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "app/" + strings.ReplaceAll(tc.name, " ", "-")
			const faulted = 2
			rule := tc.rule
			rule.Method, rule.Path, rule.Nth, rule.Times = tc.method, tc.path, 1, faulted
			e.p.SetRules(rule)
			before := e.p.Count(tc.method, tc.path)
			start := time.Now()
			b := e.build(t, repo)
			e.checkBuilt(t, b, repo)
			tries := e.p.Count(tc.method, tc.path) - before
			// The two faulted requests are tried again once each: one more
			// request for each than a build without faults makes.
			if tries != faulted+tc.blobs {
				t.Errorf("%d %s requests, want %d (%d faulted, %d that succeeded); requests:\n%s",
					tries, tc.method, faulted+tc.blobs, faulted, tc.blobs, e.p.Log())
			}
			t.Logf("built in %s through %d faults", time.Since(start).Round(time.Millisecond), faulted)
		})
	}
}

// tagsOf lists repo's tags in the registry itself; none when the
// repository does not exist.
func tagsOf(t *testing.T, reg *testenv.Registry, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(reg.Ref(repo), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("listing the tags of %s: %v", repo, err)
	}
	return tags
}

// A base layer whose bytes do not match its digest, or that ends early,
// fails the build (every attempt gets the fault), with a message that names
// the pull and that cause (not the bad archive the extraction met first);
// nothing is pushed, and no step's result is cached.
func TestExecute_corruptBaseLayer(t *testing.T) {
	e := newFaultEnv(t)
	for _, tc := range []struct {
		name  string
		fault faultproxy.Fault
		cause string // what the message says went wrong, not the bad archive it led to
	}{
		{"corrupt", faultproxy.Corrupt, "the download does not match the layer's digest"},
		{"truncated", faultproxy.Truncate, "the download ended early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "app/base-" + tc.name
			e.p.SetRules(faultproxy.Rule{Method: http.MethodGet, Path: pathRe(e.layer), Fault: tc.fault})
			b := e.build(t, repo, "--cache=true", "--cache-repo="+e.p.Ref(repo+"-cache"))
			if b.exit == 0 || b.res.Success || b.res.Failure == nil {
				t.Fatalf("exit %d, %s: want a failure; log:\n%s", b.exit, b.resRaw, b.log)
			}
			msg := b.res.Failure.Message
			if !strings.Contains(msg, "library/busybox") || !regexp.MustCompile(`pull|extract|read`).MatchString(msg) {
				t.Errorf("message %q names neither the base image nor its pull", msg)
			}
			if !strings.Contains(msg, tc.cause) {
				t.Errorf("message %q does not say %q", msg, tc.cause)
			}
			t.Logf("reason %s: %s", b.res.Failure.Reason, msg)
			assertNotPushed(t, e.reg.Ref(repo+":latest"))
			if tags := tagsOf(t, e.reg, repo+"-cache"); len(tags) != 0 {
				t.Errorf("the cache holds %v after a build from a %s base", tags, tc.name)
			}
			if e.p.Count(http.MethodPut, regexp.MustCompile(`^/v2/`+regexp.QuoteMeta(repo)+`/manifests/`)) != 0 {
				t.Errorf("a manifest was pushed; requests:\n%s", e.p.Log())
			}
		})
	}
}

// A cache registry that fails is a miss, never a failed build: with the
// cache behind a second proxy, every request to it answering 500, reset,
// stalling, or serving corrupt blobs, a warm build succeeds and pushes the
// right image.
func TestExecute_failingCacheIsAMiss(t *testing.T) {
	e := newFaultEnv(t)
	cp := faultproxy.Start(t, e.reg.Host())
	cacheArgs := []string{"--cache=true", "--cache-repo=" + cp.Ref("app/cache"), "--insecure-registry=" + cp.Host()}
	// The last step differs in each build (BUST), so a build whose first
	// two steps hit reads their layers from the cache to run it.
	dockerfile := faultDockerfile + "ARG BUST\nRUN echo \"$BUST\" > /bust\n"
	// Fill the cache through a healthy proxy.
	e.checkBuilt(t, e.buildFile(t, dockerfile, "app/cache-cold", append(cacheArgs, "--build-arg=BUST=cold")...), "app/cache-cold")
	if tags := tagsOf(t, e.reg, "app/cache"); len(tags) == 0 {
		t.Fatal("the cold build cached nothing")
	}
	for _, tc := range []struct {
		name string
		rule faultproxy.Rule
	}{
		{"500", faultproxy.Rule{Fault: faultproxy.Status, Status: http.StatusInternalServerError}},
		{"reset", faultproxy.Rule{Fault: faultproxy.Reset}},
		// Each request stalls for a second and is then reset: go-
		// containerregistry retries it and the cache is a miss.
		{"stall", faultproxy.Rule{Fault: faultproxy.Stall, StallFor: time.Second}},
		// A cache that never answers: see TestExecute_stallingCacheTimesOut.
		{"corrupt blobs", faultproxy.Rule{Method: http.MethodGet, Path: regexp.MustCompile(`/blobs/sha256:`), Fault: faultproxy.Corrupt}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp.SetRules(tc.rule)
			repo := "app/cache-" + strings.ReplaceAll(tc.name, " ", "-")
			seen, dseen := len(cp.Requests()), len(e.p.Requests())
			start := time.Now()
			b := e.buildFile(t, dockerfile, repo, append(cacheArgs, "--build-arg=BUST="+tc.name)...)
			e.checkBuilt(t, b, repo)
			faulted := 0
			for _, r := range cp.Requests()[seen:] {
				if r.Fault != 0 {
					faulted++
				}
			}
			if faulted == 0 {
				t.Errorf("no request to the cache got the fault; log:\n%s\ncache requests:\n%s", b.log, cp.Log())
			}
			t.Logf("built in %s with %d cache hits; %d faulted cache requests; log:\n%s\ncache requests:\n%v\nother requests:\n%v",
				time.Since(start).Round(time.Millisecond), b.res.CacheHits, faulted, b.log, cp.Requests()[seen:], e.p.Requests()[dseen:])
		})
	}
}

// A cache registry that accepts connections and never answers is a miss
// after --cache-timeout, and is not waited on again: the build succeeds
// with the right image, and takes at most a few timeouts longer than the
// same build without a cache (lookups run at once and time out together;
// later calls, the writes Flush waits for among them, fail at once).
func TestExecute_stallingCacheTimesOut(t *testing.T) {
	e := newFaultEnv(t)
	cp := faultproxy.Start(t, e.reg.Host(), faultproxy.Rule{Fault: faultproxy.Stall})
	const timeout = 2 * time.Second
	start := time.Now()
	e.checkBuilt(t, e.build(t, "app/stall-baseline"), "app/stall-baseline")
	baseline := time.Since(start)

	start = time.Now()
	b := e.build(t, "app/stall", "--cache=true", "--cache-repo="+cp.Ref("app/cache"), "--insecure-registry="+cp.Host(),
		"--cache-timeout="+timeout.String(), "--cache-retries=1")
	took := time.Since(start)
	e.checkBuilt(t, b, "app/stall")
	if bound := baseline + 3*timeout; took > bound {
		t.Errorf("the build took %s with a cache that never answers, want under %s (%s without a cache + 3 x --cache-timeout); log:\n%s",
			took.Round(time.Millisecond), bound.Round(time.Millisecond), baseline.Round(time.Millisecond), b.log)
	}
	if !strings.Contains(b.log, "did not answer within "+timeout.String()) {
		t.Errorf("no warning names the cache's timeout; log:\n%s", b.log)
	}
	stalled := 0
	for _, r := range cp.Requests() {
		if r.Fault == faultproxy.Stall {
			stalled++
		}
	}
	if stalled == 0 {
		t.Errorf("no request to the cache stalled; requests:\n%s", cp.Log())
	}
	t.Logf("built in %s (%s without a cache); %d cache requests stalled; log:\n%s",
		took.Round(time.Millisecond), baseline.Round(time.Millisecond), stalled, b.log)
}

// A push whose manifest PUT fails leaves no tag at all (the blobs may be
// there, but no tag points at an image missing any), the failure is
// PushFailed and names the push, and --push-retry=N makes 1+N attempts.
func TestExecute_manifestPushFails(t *testing.T) {
	e := newFaultEnv(t)
	for _, retries := range []int{0, 1} {
		repo := "app/manifest-fails-" + string(rune('0'+retries))
		t.Run(repo, func(t *testing.T) {
			manifests := regexp.MustCompile(`^/v2/` + regexp.QuoteMeta(repo) + `/manifests/`)
			e.p.SetRules(faultproxy.Rule{Method: http.MethodPut, Path: manifests, Fault: faultproxy.Status, Status: http.StatusInternalServerError})
			b := e.build(t, repo, "--push-retry="+string(rune('0'+retries)))
			if b.exit == 0 || b.res.Success || b.res.Failure == nil {
				t.Fatalf("exit %d, %s: want a failure; log:\n%s", b.exit, b.resRaw, b.log)
			}
			if b.res.Failure.Reason != result.ReasonPushFailed {
				t.Errorf("reason %s, want %s", b.res.Failure.Reason, result.ReasonPushFailed)
			}
			dest := e.p.Ref(repo + ":latest")
			if msg := b.res.Failure.Message; !strings.Contains(msg, dest) || !regexp.MustCompile(`push|tagging`).MatchString(msg) {
				t.Errorf("message %q does not name the push of %s", msg, dest)
			}
			if tags := tagsOf(t, e.reg, repo); len(tags) != 0 {
				t.Errorf("tags %v after a failed push", tags)
			}
			puts := e.p.Count(http.MethodPut, manifests)
			t.Logf("--push-retry=%d: %d manifest PUTs; %s", retries, puts, b.res.Failure.Message)
			// Each attempt is go-containerregistry's three tries of a 5xx
			// (publish.Remote's backoff has 3 steps).
			if want := 3 * (1 + retries); puts != want {
				t.Errorf("--push-retry=%d: %d manifest PUTs, want %d; requests:\n%s", retries, puts, want, e.p.Log())
			}
		})
	}
}
