package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// runExecutor runs the executor in-process with args plus a result file,
// chroot isolation and a work directory, and returns what it did. Unless
// args name --provenance or --sbom, it attaches no attestation
// (--provenance=none), so that what is pushed is the plain image the
// tests of everything else look at; the supply chain's tests say what
// they want.
func runExecutor(t *testing.T, args ...string) buildResult {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--provenance") || strings.HasPrefix(a, "--sbom")
	}) {
		args = append([]string{"--provenance=none"}, args...)
	}
	resultFile := filepath.Join(t.TempDir(), "result.json")
	args = append(args, "--result-file="+resultFile, "--isolation=chroot",
		"--work-dir="+filepath.Join(t.TempDir(), "work"))
	var log bytes.Buffer
	exit := execute(args, &log)
	raw, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatalf("reading the result file: %v; log:\n%s", err, log.String())
	}
	res, err := result.Decode(raw)
	if err != nil {
		t.Fatalf("decoding the result file %q: %v", raw, err)
	}
	return buildResult{exit: exit, res: res, resRaw: string(raw), log: log.String()}
}

func writeDockerfile(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The push permission is checked while the build starts. A refusal stops
// the build (a RUN that would take a minute does not finish), pushes
// nothing, and is what the result reports, even when the Dockerfile fails
// too, as when the check came first.
func TestExecute_pushRefusedStopsTheBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	open := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, open)
	locked := testenv.StartRegistry(t, testenv.WithBasicAuth("builder", "s3cret-pw"))
	// Credentials for neither registry: the open one needs none.
	t.Setenv("DOCKER_CONFIG", open.DockerConfig(t))

	for _, tc := range []struct {
		name, dockerfile string
	}{
		{"long RUN", "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN sleep 60 && echo done > /done\n"},
		{"bad Dockerfile", "ARG BASE\nFROM $BASE\nRUN --mount=type=nope true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := locked.Ref("app/refused:latest")
			b := runExecutor(t, "--context=dir://"+writeDockerfile(t, tc.dockerfile),
				"--destination="+dest, "--insecure-registry="+open.Host(), "--insecure-registry="+locked.Host(),
				"--cache=true", "--cache-repo="+open.Ref("app/cache"), "--build-arg=BASE="+base)
			exit, res, log := b.exit, b.res, b.log
			if exit == 0 || res.Success {
				t.Fatalf("exit %d, success %v; want a failure; log:\n%s", exit, res.Success, log)
			}
			if res.Failure == nil || res.Failure.Reason != result.ReasonPushFailed {
				t.Fatalf("failure %+v; want reason %s; log:\n%s", res.Failure, result.ReasonPushFailed, log)
			}
			if !strings.Contains(res.Failure.Message, "checking push permission for "+dest) {
				t.Errorf("message %q does not name the check and %s", res.Failure.Message, dest)
			}
			if strings.Contains(log, "Built image") || res.Digest != "" {
				t.Errorf("the build went on to the end after the refusal; log:\n%s", log)
			}
			if strings.Contains(res.Failure.Message, "s3cret-pw") || strings.Contains(log, "s3cret-pw") {
				t.Errorf("the password leaked")
			}
		})
	}
}

// runBuild builds ctxDir with the cache in app/cache, pushes to repo (of
// reg) and returns the result and the log at --verbosity=trace.
func runBuild(t *testing.T, ctxDir string, reg *testenv.Registry, base, repo string) (result.Result, string) {
	t.Helper()
	b := runExecutor(t, "--context=dir://"+ctxDir, "--destination="+reg.Ref(repo),
		"--insecure-registry="+reg.Host(), "--cache=true", "--cache-repo="+reg.Ref("app/cache"),
		"--build-arg=BASE="+base, "--verbosity=trace")
	if b.exit != 0 || !b.res.Success {
		t.Fatalf("build to %s failed: exit %d, %s; log:\n%s", repo, b.exit, b.resRaw, b.log)
	}
	return b.res, b.log
}

// --verbosity=trace logs every registry request: method, host, path,
// status and duration, never a query. A cold build mounts its new layers
// from the cache repository instead of uploading them twice. A build
// shares one client per registry and direction, so a warm build of many
// cached steps pings the registry a few times, not once per step. A build
// from the cache to a new repository mounts every layer there.
func TestExecute_traceAndSharedClients(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	var df strings.Builder
	df.WriteString("ARG BASE\nFROM $BASE\n")
	// Layers large enough (cache.MountWorthwhile) that the push waits to
	// mount them rather than upload them again.
	const steps = 8
	for i := range steps {
		fmt.Fprintf(&df, "RUN head -c %d /dev/urandom > /r%d\n", cache.MountWorthwhile+4096, i)
	}
	ctxDir := writeDockerfile(t, df.String())
	build := func(tag string) (result.Result, string) {
		return runBuild(t, ctxDir, reg, base, "app/traced:"+tag)
	}
	_, coldLog := build("cold")
	// Every new layer reaches the destination by a mount from the cache
	// repository (POST -> 201), not by a second upload, as the base's
	// layer does from its own: only the config is uploaded there.
	mounts := regexp.MustCompile(`registry: POST \S+/v2/app/traced/blobs/uploads/ -> 201 `).FindAllString(coldLog, -1)
	uploads := regexp.MustCompile(`registry: PUT \S+/v2/app/traced/blobs/uploads/\S+ -> 201 `).FindAllString(coldLog, -1)
	if len(mounts) != steps+1 || len(uploads) != 1 {
		t.Errorf("cold build: %d layers mounted and %d blobs uploaded to the destination, want %d and 1 (the config); log:\n%s",
			len(mounts), len(uploads), steps+1, coldLog)
	}
	res, log := build("warm")
	if res.CacheHits != steps {
		t.Fatalf("warm build: %d cache hits, want %d; log:\n%s", res.CacheHits, steps, log)
	}

	line := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} registry: (GET|HEAD|POST|PUT|PATCH|DELETE) ` +
		regexp.QuoteMeta(reg.Host()) + `(/v2/\S*) -> (\d{3}|error) in \d+\.\dms$`)
	var requests, pings, lookups int
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, " registry: ") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("trace line %q is not METHOD HOST/PATH -> STATUS in DURATION", l)
			continue
		}
		requests++
		switch {
		case m[2] == "/v2/":
			pings++
		case m[1] == "GET" && strings.HasPrefix(m[2], "/v2/app/cache/manifests/"):
			lookups++
		}
	}
	if lookups != steps {
		t.Errorf("the trace shows %d cache manifest reads, want %d; log:\n%s", lookups, steps, log)
	}
	// One client each: pulls of the base and of the cache repository, the
	// push permission check, the push; each pings https first, then http.
	if pings > 2*4 {
		t.Errorf("%d pings of the registry in a warm build of %d cached steps, want at most 8 (one per client); log:\n%s",
			pings, steps, log)
	}
	t.Logf("warm build: %d registry requests, %d pings", requests, pings)

	// From the cache to a repository that has none of it: every layer is
	// mounted, none is downloaded.
	_, log = runBuild(t, ctxDir, reg, base, "app/other:latest")
	mounts = regexp.MustCompile(`registry: POST \S+/v2/app/other/blobs/uploads/ -> 201 `).FindAllString(log, -1)
	downloads := regexp.MustCompile(`registry: GET \S+/blobs/sha256:`).FindAllString(log, -1)
	if len(mounts) != steps+1 || len(downloads) != 1 {
		t.Errorf("warm build to a new repository: %d layers mounted, %d blobs downloaded; want %d and 1 (the base's config); log:\n%s",
			len(mounts), len(downloads), steps+1, log)
	}
}
