package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/testenv"
)

// stepLine matches the log line of a build step ("[2/4] RUN ...", "[3/4]
// CACHED ...").
var stepLine = regexp.MustCompile(`(?m)^\[[^\]]*\d+/\d+\] `)

func warningsOf(res result.Result) []string {
	var out []string
	for _, w := range res.Warnings {
		out = append(out, w.Rule+":"+strconv.Itoa(w.Line))
	}
	return out
}

// A build's findings are logged as warnings before its first step, in
// BuildKit's form with the rule's URL, and are the result's warnings
// (rule, line, message, URL); they fail nothing.
func TestExecute_checkFindings(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	df := "ARG BASE=busybox\nFROM $BASE\nMAINTAINER me@example.org\nRUN true\nCMD echo hi\n"
	b := runExecutor(t, "--context=dir://"+writeDockerfile(t, df), "--destination="+reg.Ref("app/checked:latest"),
		"--insecure-registry="+reg.Host(), "--build-arg=BASE="+base)
	if b.exit != 0 || !b.res.Success {
		t.Fatalf("exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	want := []string{"RootUser:2", "NoHealthcheck:2", "MaintainerDeprecated:3", "JSONArgsRecommended:5"}
	if diff := cmp.Diff(want, warningsOf(b.res)); diff != "" {
		t.Errorf("result warnings (-want +got):\n%s", diff)
	}
	for _, w := range b.res.Warnings {
		if w.Message == "" || !strings.HasPrefix(w.URL, "https://") {
			t.Errorf("warning %+v: want a message and a URL", w)
		}
	}
	line := "WARN: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 3) https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n"
	at, first := strings.Index(b.log, line), stepLine.FindStringIndex(b.log)
	if at < 0 || first == nil || at > first[0] {
		t.Errorf("want %q before the first step; log:\n%s", line, b.log)
	}
	if !strings.Contains(b.log, "WARN: RootUser: The final stage runs as root: no USER sets another user, in it or its base (line 2) https://github.com/slipway-dev/slipway#rootuser\n") {
		t.Errorf("RootUser is not logged; log:\n%s", b.log)
	}

	// At --verbosity=warn the findings are logged, the steps are not.
	b = runExecutor(t, "--context=dir://"+writeDockerfile(t, df), "--no-push", "--insecure-registry="+reg.Host(),
		"--build-arg=BASE="+base, "--verbosity=warn")
	if b.exit != 0 || !strings.Contains(b.log, line) || stepLine.MatchString(b.log) {
		t.Errorf("--verbosity=warn: exit %d; want the findings and no step; log:\n%s", b.exit, b.log)
	}
}

// --check-fail-on: a finding of a rule it names fails the build before
// anything runs, with the reason CheckFailed at the finding's line:
// no step runs, nothing is pushed, nothing is cached; the Dockerfile's
// skip directives do not waive it. The Dockerfile's check=error=true does
// the same for any finding. The findings are still the result's warnings.
func TestExecute_checkFailOnStopsTheBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	for _, tc := range []struct {
		name, dockerfile string
		flags            []string
		wantLine         int
		wantMsg          string
	}{
		{
			name:       "--check-fail-on=RootUser, skipped by the Dockerfile",
			dockerfile: "# check=skip=all\nARG BASE=busybox\nFROM $BASE\nRUN touch /ran\n# check=skip=RootUser\nUSER root\nHEALTHCHECK CMD [\"true\"]\nCMD [\"sh\"]\n",
			flags:      []string{"--check-fail-on=NoHealthcheck,RootUser"},
			wantLine:   6,
			wantMsg:    "lint violation found for rules: RootUser (line 6) (failing the build: --check-fail-on)",
		},
		{
			name:       "--check-fail-on=all",
			dockerfile: "ARG BASE=busybox\nFROM $BASE\nRUN touch /ran\nUSER 1000\nCMD [\"sh\"]\n",
			flags:      []string{"--check-fail-on=all"},
			wantLine:   2,
			wantMsg:    "lint violation found for rules: NoHealthcheck (line 2) (failing the build: --check-fail-on)",
		},
		{
			name:       "check=error=true",
			dockerfile: "# check=error=true\nARG BASE=busybox\nFROM $BASE as base\nRUN touch /ran\nUSER 1000\nHEALTHCHECK CMD [\"true\"]\n",
			wantLine:   3,
			wantMsg:    "lint violation found for rules: FromAsCasing (line 3) (failing the build: the check=error=true directive)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := reg.Ref("app/refused:latest")
			cacheRepo := reg.Ref("app/refused-cache")
			args := append([]string{"--context=dir://" + writeDockerfile(t, tc.dockerfile), "--destination=" + dest,
				"--insecure-registry=" + reg.Host(), "--build-arg=BASE=" + base, "--cache=true", "--cache-repo=" + cacheRepo}, tc.flags...)
			b := runExecutor(t, args...)
			if b.exit == 0 || b.res.Success || b.res.Failure == nil || b.res.Failure.Reason != result.ReasonCheckFailed {
				t.Fatalf("exit %d, %s; want a failure CheckFailed; log:\n%s", b.exit, b.resRaw, b.log)
			}
			if f := b.res.Failure; f.Line != tc.wantLine || f.Message != tc.wantMsg {
				t.Errorf("failure line %d %q, want line %d %q", f.Line, f.Message, tc.wantLine, tc.wantMsg)
			}
			if len(b.res.Warnings) == 0 {
				t.Errorf("no warnings in the result")
			}
			if stepLine.MatchString(b.log) || strings.Contains(b.log, "Built image") {
				t.Errorf("a step ran; log:\n%s", b.log)
			}
			if !strings.Contains(b.log, "ERROR: ") {
				t.Errorf("the failing finding is not logged as an error; log:\n%s", b.log)
			}
			assertNotPushed(t, dest)
			repo, err := name.NewRepository(cacheRepo, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if tags, err := remote.List(repo); err == nil && len(tags) > 0 {
				t.Errorf("the cache holds %v", tags)
			}
		})
	}
}

// --check: the findings are printed and written, nothing is built or
// pushed (no --destination needed); the exit status is 0 unless a finding
// is an error.
func TestExecute_checkOnly(t *testing.T) {
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	const warned = "ARG BASE=busybox\nFROM $BASE\nENV greeting hello\nRUN touch /ran\nCMD [\"sh\"]\n"
	const clean = "ARG BASE=busybox\nFROM $BASE\nUSER 65534:65534\nHEALTHCHECK CMD [\"true\"]\nCMD [\"sh\"]\n"
	for _, tc := range []struct {
		name, dockerfile string
		flags            []string
		exit             int
		warnings         []string
		summary          string
		reason           result.Reason
	}{
		{name: "clean", dockerfile: clean, summary: "Check complete, no warnings found."},
		{name: "warnings", dockerfile: warned, warnings: []string{"RootUser:2", "NoHealthcheck:2", "LegacyKeyValueFormat:3"}, summary: "Check complete, 3 warnings found."},
		{name: "--check-fail-on", dockerfile: warned, flags: []string{"--check-fail-on=LegacyKeyValueFormat"}, exit: 1,
			warnings: []string{"RootUser:2", "NoHealthcheck:2", "LegacyKeyValueFormat:3"}, summary: "Check complete, 3 warnings found, 1 of them error.", reason: result.ReasonCheckFailed},
		{name: "check=error=true", dockerfile: "# check=error=true\n" + warned, exit: 1,
			warnings: []string{"RootUser:3", "NoHealthcheck:3", "LegacyKeyValueFormat:4"}, summary: "Check complete, 3 warnings found, 3 of them errors.", reason: result.ReasonCheckFailed},
		{name: "check=skip=all", dockerfile: "# check=skip=all;error=true\n" + warned, summary: "Check complete, no warnings found."},
		{name: "--check-skip", dockerfile: warned, flags: []string{"--check-skip=RootUser,NoHealthcheck"},
			warnings: []string{"LegacyKeyValueFormat:3"}, summary: "Check complete, 1 warning found."},
		{name: "a Dockerfile that does not parse", dockerfile: "FROM scratch AS Bad\nNOPE\n", exit: 1,
			warnings: []string{"StageNameCasing:1"}, summary: "Check complete, 1 warning found.", reason: result.ReasonDockerfileInvalid},
		{name: "a base image that cannot be pulled", dockerfile: "FROM " + reg.Ref("library/missing:latest") + "\nUSER 1000\n", exit: 1,
			summary: "Check complete, no warnings found.", reason: result.ReasonBaseImagePullFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--check", "--context=dir://" + writeDockerfile(t, tc.dockerfile),
				"--insecure-registry=" + reg.Host(), "--build-arg=BASE=" + base}, tc.flags...)
			b := runExecutor(t, args...)
			if b.exit != tc.exit || b.res.Success != (tc.exit == 0) {
				t.Fatalf("exit %d, success %v; want %d; log:\n%s", b.exit, b.res.Success, tc.exit, b.log)
			}
			if tc.reason != "" && (b.res.Failure == nil || b.res.Failure.Reason != tc.reason) {
				t.Errorf("failure %+v, want reason %s", b.res.Failure, tc.reason)
			}
			if diff := cmp.Diff(tc.warnings, warningsOf(b.res)); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if !strings.Contains(b.log, tc.summary+"\n") {
				t.Errorf("want %q in the log:\n%s", tc.summary, b.log)
			}
			if stepLine.MatchString(b.log) || strings.Contains(b.log, "Built image") || b.res.Digest != "" || len(b.res.References) > 0 {
				t.Errorf("something was built; log:\n%s", b.log)
			}
		})
	}
	// An unknown rule is a bad argument.
	for _, flag := range []string{"--check-fail-on", "--check-skip"} {
		b := runExecutor(t, "--check", flag+"=RootUser,NoSuchRule", "--context=dir://"+writeDockerfile(t, clean))
		if b.exit != 1 || b.res.Failure == nil || b.res.Failure.Reason != result.ReasonInvalidArguments ||
			!strings.Contains(b.res.Failure.Message, flag+`: unknown build check rule "NoSuchRule"`) {
			t.Errorf("exit %d, %s; want InvalidArguments naming %s and the rule", b.exit, b.resRaw, flag)
		}
	}
}

// An attacker's Dockerfile tries to have the checks print the secrets a
// build is given: a build argument and ARG/ENV values under secret-looking
// keys, quoted by rules that show expanded words (WORKDIR, COPY source,
// EXPOSE port), and a --secret. Neither the log nor the result file shows
// any of them; the findings are there, with "***".
func TestExecute_checkShowsNoSecret(t *testing.T) {
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	t.Setenv("S18_SECRET", "env-s3cr3t-mounted")
	dir := writeDockerfile(t, `ARG BASE=busybox
FROM $BASE
ARG GITHUB_TOKEN
WORKDIR $GITHUB_TOKEN
ARG DB_PASSWORD=db-s3cr3t-default
COPY $DB_PASSWORD /x
ENV AWS_SECRET_ACCESS_KEY=aws-s3cr3t-env
EXPOSE ${AWS_SECRET_ACCESS_KEY}:80
ENV API_KEY legacy-s3cr3t-value
RUN --mount=type=secret,id=tok cat /run/secrets/tok
COPY $UNDEFINED$S18_SECRET /y
`)
	if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, mode := range [][]string{{"--check"}, {"--no-push"}} {
		args := append(mode, "--context=dir://"+dir, "--insecure-registry="+reg.Host(), "--build-arg=BASE="+base,
			"--build-arg=GITHUB_TOKEN=gh-s3cr3t-buildarg", "--secret=id=tok,env=S18_SECRET", "--verbosity=debug")
		b := runExecutor(t, args...)
		var rules []string
		for _, w := range b.res.Warnings {
			rules = append(rules, w.Rule)
		}
		for _, r := range []string{"WorkdirRelativePath", "CopyIgnoredFile", "ExposeInvalidFormat", "SecretsUsedInArgOrEnv", "UndefinedVar"} {
			if !slices.Contains(rules, r) {
				t.Errorf("%v: no %s finding (the test must exercise it): %v", mode, r, rules)
			}
		}
		// With --check nothing else runs: the whole log and result are
		// the checks'. A build goes on to fail on its COPY, whose error
		// is the build's (it names the source it did not find): there,
		// the checks' lines and the result's warnings.
		checkLines, checkResult := b.log, b.resRaw
		if mode[0] != "--check" {
			checkLines = ""
			for _, l := range strings.SplitAfter(b.log, "\n") {
				if strings.HasPrefix(l, "WARN: ") || strings.HasPrefix(l, "ERROR: ") {
					checkLines += l
				}
			}
			raw, err := json.Marshal(b.res.Warnings)
			if err != nil {
				t.Fatal(err)
			}
			checkResult = string(raw)
		}
		if strings.Contains(checkLines, "s3cr3t") || strings.Contains(checkResult, "s3cr3t") {
			t.Errorf("%v: a secret shows; result %s\nlog:\n%s", mode, checkResult, checkLines)
		}
		if !strings.Contains(checkResult, `Relative workdir \"***\"`) || !strings.Contains(checkLines, `Relative workdir "***"`) {
			t.Errorf("%v: want the WORKDIR's value masked in the log and result: %s", mode, checkResult)
		}
	}
}

// examples/hello, the demo's image, follows the practices the checks look
// for: `--check` finds nothing, and it builds into an image that runs as
// nobody with a health check (hack/demo.sh runs it as a pod).
func TestExecute_exampleFollowsThePractices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	ctxDir, err := filepath.Abs("../examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + reg.Host(), "--build-arg=BASE=" + base}
	b := runExecutor(t, append([]string{"--check"}, common...)...)
	if b.exit != 0 || len(b.res.Warnings) != 0 || !strings.Contains(b.log, "Check complete, no warnings found.") {
		t.Errorf("--check: exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	dest := reg.Ref("examples/hello:latest")
	b = runExecutor(t, append([]string{"--destination=" + dest, "--check-fail-on=all"}, common...)...)
	if b.exit != 0 || len(b.res.Warnings) != 0 {
		t.Fatalf("build: exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	ref, err := name.ParseReference(dest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65534:65534" || cfg.Config.Healthcheck == nil || len(cfg.Config.Healthcheck.Test) == 0 || cfg.Config.Healthcheck.Test[0] != "CMD" {
		t.Errorf("user %q, healthcheck %+v; want nobody and a health check", cfg.Config.User, cfg.Config.Healthcheck)
	}
}

// The checks read the base image's manifest and config, never a layer
// (--check pulls none), and a build's checks use the pulls the build does:
// the base image's manifest is fetched once.
func TestExecute_checkPullsNoLayer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the executor's chroot isolation needs root")
	}
	reg := testenv.StartRegistry(t)
	base := testenv.PushBusybox(t, reg)
	t.Setenv("DOCKER_CONFIG", reg.DockerConfig(t))
	ref, err := name.ParseReference(base, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := writeDockerfile(t, "ARG BASE=busybox\nFROM $BASE\nRUN true\nCMD sh\n")
	common := []string{"--context=dir://" + ctxDir, "--insecure-registry=" + reg.Host(), "--build-arg=BASE=" + base, "--verbosity=trace"}

	b := runExecutor(t, append([]string{"--check"}, common...)...)
	if b.exit != 0 || len(b.res.Warnings) == 0 {
		t.Fatalf("--check: exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.log, "/blobs/"+d.String()) {
			t.Errorf("--check read the layer %s; log:\n%s", d, b.log)
		}
	}
	manifestGets := regexp.MustCompile(`registry: GET \S+/v2/library/busybox/manifests/\S+ -> `)
	if n := len(manifestGets.FindAllString(b.log, -1)); n != 1 {
		t.Errorf("--check: %d GETs of the base's manifest, want 1; log:\n%s", n, b.log)
	}

	b = runExecutor(t, append([]string{"--no-push"}, common...)...)
	if b.exit != 0 || len(b.res.Warnings) == 0 {
		t.Fatalf("build: exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	if n := len(manifestGets.FindAllString(b.log, -1)); n != 1 {
		t.Errorf("build: %d GETs of the base's manifest, want 1 (the checks use the build's); log:\n%s", n, b.log)
	}
}

// A build whose Dockerfile does not parse reports the findings the checks
// made before the error (BuildKit's testWarningsBeforeError) in the log and
// the result; a check directive that does not parse fails the build, as in
// BuildKit, before anything runs.
func TestExecute_checksOfABrokenDockerfile(t *testing.T) {
	for _, tc := range []struct {
		name, dockerfile string
		line             int
		msg              string
		warnings         []string
	}{
		{"unknown instruction", "FROM scratch AS Bad\nMAINTAINER me\nNOPE\n", 3, "unknown instruction: NOPE", []string{"StageNameCasing:1", "MaintainerDeprecated:2"}},
		{"bad directive", "# check=skip=all;nope=1\nFROM scratch\nCOPY a.txt /\n", 1, `failed to parse check options: invalid check option "nope"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := runExecutor(t, "--no-push", "--context=dir://"+writeDockerfile(t, tc.dockerfile))
			f := b.res.Failure
			if b.exit != 1 || f == nil || f.Reason != result.ReasonDockerfileInvalid || f.Line != tc.line || !strings.Contains(f.Message, tc.msg) {
				t.Fatalf("exit %d, %s; want DockerfileInvalid at line %d: %q; log:\n%s", b.exit, b.resRaw, tc.line, tc.msg, b.log)
			}
			if diff := cmp.Diff(tc.warnings, warningsOf(b.res)); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			for _, w := range tc.warnings {
				rule, _, _ := strings.Cut(w, ":")
				if !strings.Contains(b.log, "WARN: "+rule+": ") {
					t.Errorf("%s is not in the log:\n%s", rule, b.log)
				}
			}
			if stepLine.MatchString(b.log) {
				t.Errorf("a step ran; log:\n%s", b.log)
			}
		})
	}
}
