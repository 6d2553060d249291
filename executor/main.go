// Command executor builds a Dockerfile into an image and pushes it. It
// speaks kaniko's command line, so a pipeline written for kaniko can switch
// to it; flags of our own are added, never renamed.
//
//	executor --context=dir:///workspace --dockerfile=Dockerfile \
//	    --destination=registry.example.com/app:v1 --cache=true
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/executor/source"
)

// imageMarker exists only in the executor's own image; with it, the
// executor knows it may take over the container's root filesystem.
const imageMarker = "/slipway/.executor-image"

// terminationLog is where Kubernetes reads a container's termination message.
const terminationLog = "/dev/termination-log"

type options struct {
	context, contextSubPath, dockerfile string
	destinations, buildArgs, labels     []string
	secrets                             []string
	ssh                                 []string
	target                              string
	hostname                            string
	noPush                              bool
	tarPath, ociLayoutPath              string
	digestFile, nameWithDigestFile      string
	nameTagWithDigestFile               string
	reg                                 publish.RegistryOptions
	reproducible                        bool
	verbosity                           string
	compression                         string
	compressionLevel                    int
	ociMediaTypes                       bool
	git                                 string

	credentialsDir   string
	stageCredentials string

	cache           bool
	cacheRepo       string
	cacheTTL        time.Duration
	cacheLimits     publish.CacheLimits
	isolation       string
	resultFile      string
	workDir         string
	ignorePaths     []string
	customPlatforms []string
	// platforms are --custom-platform's, parsed and normalised, without
	// duplicates; pushByDigest is --push-by-digest.
	platforms    []ocispec.Platform
	pushByDigest bool
	maxLayerSize string
	// Cache mounts kept between builds (issue 17).
	cacheMounts        bool
	cacheMountMaxSize  string
	cacheMountMaxBytes int64
	cacheMountScope    string
	// stateDir keeps trees and cache mounts between runs (issue 17).
	stateDir      string
	maxLayerBytes int64

	// checkOnly is --check; failOn and skip are --check-fail-on and
	// --check-skip, parsed.
	checkOnly              bool
	checkFailOn, checkSkip string
	failOn, skip           []string

	// sc are the attestation and signing flags (supplychain.go).
	sc supplyChain
}

func main() {
	// When re-executed as the chroot helper, this runs the step and exits.
	run.Init()
	if os.Getenv("GOGC") == "" {
		// A build's heap is mostly short-lived buffers and per-file
		// records: collecting twice as often keeps the peak about 15%
		// lower (manyfiles: 50 → 42 MB) at no measurable cost in time.
		debug.SetGCPercent(50)
	}
	os.Exit(profiled(func() int { return execute(os.Args[1:], os.Stderr) }))
}

// profiled runs f, writing a CPU profile to $SLIPWAY_CPUPROFILE when set
// (for performance work; see hack/bench).
func profiled(f func() int) int {
	path := os.Getenv("SLIPWAY_CPUPROFILE")
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warning: SLIPWAY_CPUPROFILE: %v\n", err)
		return f()
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		fmt.Fprintf(os.Stderr, "warning: SLIPWAY_CPUPROFILE: %v\n", err)
		return f()
	}
	defer pprof.StopCPUProfile()
	return f()
}

// execute runs the executor and returns its exit status: 0 only when every
// output was written.
func execute(args []string, logw io.Writer) int {
	start := time.Now()
	o, err := parseFlags(args)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(logw, "error: %v\n", err)
		fmt.Fprintln(logw, "Run 'executor --help' for the flags (kaniko's, plus --isolation and --result-file).")
		writeResult(o.resultFile, result.Result{Failure: &result.Failure{Reason: result.ReasonInvalidArguments, Message: err.Error()}}, logw)
		return 1
	}
	if o.stageCredentials != "" {
		if err := stageCredentials(o.stageCredentials, o.credentialsDir); err != nil {
			fmt.Fprintf(logw, "error: %v\n", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := buildAndPublish(ctx, o, logw)
	res.Millis = result.Millis(time.Since(start))
	if res.Failure != nil {
		where := ""
		if res.Failure.Platform != "" {
			where = "[" + res.Failure.Platform + "] "
		}
		fmt.Fprintf(logw, "error: %s%s\n", where, result.Located(res.Failure.Line, res.Failure.Message))
	}
	writeResult(o.resultFile, res, logw)
	if !res.Success {
		return 1
	}
	return 0
}

// parseFlags parses the command line: kaniko's flags and ours (flagSet),
// then checks their values (check).
func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := o.flagSet()
	// Where the result goes is known before any flag can fail, so that the
	// error of a bad flag reaches the result file too.
	o.resultFile = resultFileFlag(fs, args)
	if o.resultFile == "" {
		if _, err := os.Stat(terminationLog); err == nil {
			o.resultFile = terminationLog
		}
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: every input is a flag", fs.Args())
	}
	if o.stageCredentials != "" {
		if o.credentialsDir == "" {
			return o, errors.New("--stage-credentials needs --credentials-dir")
		}
		return o, nil
	}
	o.sc.provenanceSet, o.sc.ociSet = fs.Changed("provenance"), fs.Changed("oci-media-types")
	return o, o.check()
}

// flagSet binds every flag to o: kaniko's, with their names and defaults,
// then ours.
func (o *options) flagSet() *pflag.FlagSet {
	fs := pflag.NewFlagSet("executor", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVarP(&o.context, "context", "c", "/workspace/", "Build context: dir://PATH, tar://PATH (plain or gzip), or a bare path.")
	fs.StringVar(&o.contextSubPath, "context-sub-path", "", "Sub-directory of the context to build from.")
	fs.StringVarP(&o.dockerfile, "dockerfile", "f", "Dockerfile", "Path to the Dockerfile, relative to the context unless absolute.")
	fs.StringArrayVarP(&o.destinations, "destination", "d", nil, "Image reference to push to (repeatable).")
	fs.StringArrayVar(&o.buildArgs, "build-arg", nil, "Build argument K=V, or K to take it from the environment (repeatable).")
	fs.StringArrayVar(&o.labels, "label", nil, "Label K=V set on the image (repeatable).")
	fs.StringArrayVar(&o.secrets, "secret", nil, "Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR, as docker buildx takes it (repeatable).")
	fs.StringArrayVar(&o.ssh, "ssh", nil, "SSH keys for RUN --mount=type=ssh: ID=KEYFILE[,KEYFILE...], or KEYFILE[,...] for the id default, as buildctl --ssh takes key files; served by an agent that only signs (repeatable).")
	fs.StringVar(&o.target, "target", "", "Stage to build (default: the last).")
	fs.BoolVar(&o.noPush, "no-push", false, "Build without pushing.")
	fs.StringVar(&o.tarPath, "tar-path", "", "Write the image as a tarball that docker load and podman load accept.")
	fs.StringVar(&o.ociLayoutPath, "oci-layout-path", "", "Write the image as an OCI image layout directory.")
	fs.StringVar(&o.digestFile, "digest-file", "", "Write the image digest to this file.")
	fs.StringVar(&o.nameWithDigestFile, "image-name-with-digest-file", "", "Write each pushed reference with its digest to this file.")
	fs.StringVar(&o.nameTagWithDigestFile, "image-name-tag-with-digest-file", "", "Write each destination with its tag and digest to this file.")
	fs.BoolVar(&o.reg.Insecure, "insecure", false, "Push to registries over plain HTTP.")
	fs.BoolVar(&o.reg.InsecurePull, "insecure-pull", false, "Pull from registries over plain HTTP.")
	fs.StringArrayVar(&o.reg.InsecureRegistries, "insecure-registry", nil, "Registry reachable over plain HTTP (repeatable).")
	fs.BoolVar(&o.reg.SkipTLSVerify, "skip-tls-verify", false, "Do not verify TLS certificates when pushing.")
	fs.BoolVar(&o.reg.SkipTLSVerifyPull, "skip-tls-verify-pull", false, "Do not verify TLS certificates when pulling.")
	fs.StringArrayVar(&o.reg.SkipTLSVerifyRegistries, "skip-tls-verify-registry", nil, "Registry whose TLS certificate is not verified (repeatable).")
	fs.StringArrayVar(&o.reg.Mirrors, "registry-mirror", nil, "Registry (host[:port][/path]) tried before Docker Hub for pulls of Docker Hub images (repeatable, in order).")
	fs.BoolVar(&o.reg.SkipDefaultRegistryFallback, "skip-default-registry-fallback", false, "Fail a pull of a Docker Hub image that no --registry-mirror serves instead of going to Docker Hub.")
	fs.IntVar(&o.reg.Retries, "push-retry", 0, "How many times to retry a failed push.")
	fs.BoolVar(&o.reproducible, "reproducible", false, "Strip timestamps: the same inputs give the same digest.")
	fs.StringVarP(&o.verbosity, "verbosity", "v", "info", "Log level: panic, fatal, error, warn, info, debug, trace.")
	fs.StringVar(&o.compression, "compression", "gzip", "Layer compression: gzip or zstd.")
	fs.IntVar(&o.compressionLevel, "compression-level", 0, "Compression level (0: the algorithm's default).")
	fs.StringVar(&o.git, "git", "", "Git options for git:// contexts: branch=…,single-branch=…,recurse-submodules=…,insecure-skip-tls=….")
	fs.BoolVar(&o.cache, "cache", false, "Use the registry-backed layer cache.")
	fs.StringVar(&o.cacheRepo, "cache-repo", "", "Repository of the layer cache (default: the first destination's repository + /cache).")
	fs.String("cache-dir", "", "Accepted for kaniko compatibility; base images are pulled from the registry.")
	fs.DurationVar(&o.cacheTTL, "cache-ttl", 14*24*time.Hour, "How long cached layers are used.")
	fs.BoolVar(&o.cacheMounts, "cache-mounts", true, "With --cache: save each RUN --mount=type=cache directory a step used to the cache repository after the build, and restore it in the next build that runs a step mounting it.")
	fs.StringVar(&o.cacheMountMaxSize, "cache-mount-max-size", "2GiB", "The most a cache mount kept between builds may hold (e.g. 512MiB, 2GiB): a larger one is not saved (a warning), a larger saved one is not restored. 0: no limit.")
	fs.StringVar(&o.cacheMountScope, "cache-mount-scope", "", "Part of every saved cache mount's key, beside its id, the cache repository and the target platforms: builds with different scopes never share a cache mount (the controller passes the ImageBuild's namespace).")
	fs.StringVar(&o.stateDir, "state-dir", "", "Directory kept between runs (a volume in a cluster) holding what a later build can start from: cache mounts, and under chroot isolation the unpacked trees of stages. One build at a time uses it; one it cannot use is a warning, and the build runs without it.")
	fs.StringArrayVar(&o.ignorePaths, "ignore-path", nil, "Path never snapshotted or cleared in place (repeatable).")
	fs.StringArrayVar(&o.customPlatforms, "custom-platform", nil, "Platform to build for, os/arch[/variant] (repeatable, or comma-separated): several build an image index. A RUN step of a platform the node does not run needs a binfmt_misc handler (QEMU) for it. Default: this machine's.")
	fs.Int("image-fs-extract-retry", 0, "Accepted for kaniko compatibility.")
	// Ours.
	fs.BoolVar(&o.pushByDigest, "push-by-digest", false, "Push the image (or index) to each destination's repository by digest only, writing no tag (BuildKit's push-by-digest).")
	fs.BoolVar(&o.ociMediaTypes, "oci-media-types", false, "Use OCI media types instead of Docker v2 ones (zstd implies it).")
	fs.StringVar(&o.isolation, "isolation", "", "chroot (each stage in its own root and namespaces) or inplace (the container's root, kaniko-style). Default: inplace in the executor image, chroot elsewhere.")
	fs.StringVar(&o.resultFile, "result-file", "", "Write the JSON result here (default: "+terminationLog+" when it exists).")
	fs.DurationVar(&o.cacheLimits.Timeout, "cache-timeout", 10*time.Second, "How long a layer cache request may wait on the registry (for an answer, or for each read or upload part) before the cache is a miss and is not asked again in the build. 0: no timeout. Pulls and pushes of images have none.")
	fs.IntVar(&o.cacheLimits.Retries, "cache-retries", 1, "How many times a layer cache request that failed transiently (5xx, 429, reset) is tried again, from 250ms apart; pulls and pushes of images are tried three times.")
	fs.StringVar(&o.hostname, "hostname", "", "Host name of RUN steps (BuildKit's hostname option; the build arg BUILDKIT_SANDBOX_HOSTNAME wins). Needs --isolation=chroot.")
	fs.StringVar(&o.workDir, "work-dir", "", "Scratch directory for stage roots and layers (default: a new temporary directory).")
	fs.StringVar(&o.maxLayerSize, "max-layer-size", "16GiB", "The most one image layer may expand to when extracted (e.g. 512MiB, 16GiB, 1TiB); a layer past it fails the build. 0: no limit.")
	fs.StringVar(&o.credentialsDir, "credentials-dir", "", "Directory of credentials (docker/config.json, git/, secrets/ID, ssh/ID) read at start and emptied before the first RUN step.")
	fs.StringVar(&o.stageCredentials, "stage-credentials", "", "Copy the credential files under this directory into --credentials-dir and exit (the executor pod's init container).")
	o.sc.flags(fs)
	fs.BoolVar(&o.checkOnly, "check", false, "Evaluate the build checks (BuildKit's Dockerfile rules, RootUser, NoHealthcheck) and exit without building or pushing: exit status 1 when a finding is an error (check=error=true, --check-fail-on) or the Dockerfile cannot be checked.")
	fs.StringVar(&o.checkFailOn, "check-fail-on", "", "Build check rules (comma-separated, or all) whose findings fail the build before its first step (reason CheckFailed); the Dockerfile's check=skip cannot waive them.")
	fs.StringVar(&o.checkSkip, "check-skip", "", "Build check rules (comma-separated, or all) not evaluated, in addition to those the Dockerfile's check=skip names; --check-fail-on wins over it.")
	// kaniko flags that change nothing here: our snapshots are always by
	// stat, stages the target does not need are always skipped.
	for _, b := range []string{"cleanup", "force", "single-snapshot", "use-new-run", "skip-unused-stages", "cache-copy-layers", "cache-run-layers", "compressed-caching", "no-push-cache", "ignore-var-run", "log-timestamp", "skip-push-permission-check", "preserve-context", "materialize", "push-ignore-immutable-tag-errors"} {
		fs.Bool(b, false, "Accepted for kaniko compatibility.")
		fs.Lookup(b).Hidden = true
		fs.Lookup(b).NoOptDefVal = "true"
	}
	for _, s := range []string{"snapshot-mode", "log-format", "kaniko-dir", "registry-certificate", "registry-map", "credential-helpers", "annotation"} {
		fs.StringArray(s, nil, "Accepted for kaniko compatibility.")
		fs.Lookup(s).Hidden = true
	}
	return fs
}

// check checks the values of the flags of a build, and sets what they
// imply (the layer size limit in bytes, the default isolation).
func (o *options) check() error {
	if o.checkOnly {
		o.noPush = true // --check builds nothing, and pushes nothing
	}
	var err error
	if o.failOn, err = check.ParseRules(o.checkFailOn); err != nil {
		return fmt.Errorf("--check-fail-on: %w", err)
	}
	if o.skip, err = check.ParseRules(o.checkSkip); err != nil {
		return fmt.Errorf("--check-skip: %w", err)
	}
	if len(o.destinations) == 0 && !o.noPush {
		return errors.New("no --destination given: pass one or more, or --no-push")
	}
	switch o.verbosity {
	case "panic", "fatal", "error", "warn", "info", "debug", "trace":
	default:
		return fmt.Errorf("--verbosity=%s: want panic, fatal, error, warn, info, debug or trace", o.verbosity)
	}
	n, err := units.RAMInBytes(o.maxLayerSize)
	if err != nil || n < 0 {
		return fmt.Errorf("--max-layer-size=%s: want a size such as 16GiB, or 0 for no limit", o.maxLayerSize)
	}
	o.maxLayerBytes = n
	if n, err = units.RAMInBytes(o.cacheMountMaxSize); err != nil || n < 0 {
		return fmt.Errorf("--cache-mount-max-size=%s: want a size such as 2GiB, or 0 for no limit", o.cacheMountMaxSize)
	}
	o.cacheMountMaxBytes = n
	if o.compression != "gzip" && o.compression != "zstd" {
		return fmt.Errorf("--compression=%s: want gzip or zstd", o.compression)
	}
	switch o.isolation {
	case "":
		if inExecutorImage() {
			o.isolation = string(build.InPlace)
		} else {
			o.isolation = string(build.Chroot)
		}
	case string(build.Chroot):
	case string(build.InPlace):
		if !inExecutorImage() {
			return errors.New("--isolation=inplace takes over the root filesystem it runs in, so it only runs inside the executor image (" + imageMarker + " is missing here); use --isolation=chroot on a host")
		}
	default:
		return fmt.Errorf("--isolation=%s: want chroot or inplace", o.isolation)
	}
	if o.cacheLimits.Timeout < 0 {
		return fmt.Errorf("--cache-timeout=%s: want a duration of 0 or more", o.cacheLimits.Timeout)
	}
	if o.cacheLimits.Retries < 0 {
		return fmt.Errorf("--cache-retries=%d: want 0 or more", o.cacheLimits.Retries)
	}
	if o.platforms, err = parsePlatforms(o.customPlatforms); err != nil {
		return err
	}
	if len(o.platforms) > 1 && o.tarPath != "" {
		// BuildKit's docker exporter refuses too ("docker exporter does
		// not currently support exporting manifest lists").
		return fmt.Errorf("--tar-path writes a docker-archive tarball (docker load), which holds one image per tag, not an image index: a build for %d platforms cannot be written to it; use --oci-layout-path, which holds the index", len(o.platforms))
	}
	if o.pushByDigest && o.noPush {
		return errors.New("--push-by-digest pushes by digest instead of by tag; with --no-push nothing is pushed")
	}
	return o.sc.check(o)
}

// parsePlatforms parses --custom-platform values: each os/arch[/variant],
// or several separated by commas, normalised as BuildKit's dockerui
// parsePlatforms does (platforms.Parse, platforms.Normalize: arm64/v8 is
// arm64, arm is arm/v7, x86_64 is amd64), in order and without
// duplicates. Windows images are not built here: the executor makes Linux
// file systems.
func parsePlatforms(values []string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			p, err := dockerfile.ParsePlatform(s)
			if err != nil {
				return nil, fmt.Errorf("--custom-platform=%s: %w", s, err)
			}
			if p.OS == "windows" {
				return nil, fmt.Errorf("--custom-platform=%s: Windows images are not supported: this executor builds Linux file systems", s)
			}
			if !slices.ContainsFunc(out, func(q ocispec.Platform) bool { return dockerfile.SamePlatform(p, q) }) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// resultFileFlag is the --result-file of args ("" when absent), read
// before fs parses them: every flag of fs is taken with its arity (whether
// it takes a value) but any value, and an unknown flag is skipped, so that
// a flag that fails to parse, before --result-file or after it, does not
// hide it.
func resultFileFlag(fs *pflag.FlagSet, args []string) string {
	lenient := pflag.NewFlagSet("result-file", pflag.ContinueOnError)
	lenient.ParseErrorsAllowlist.UnknownFlags = true
	lenient.SetOutput(io.Discard)
	lenient.Usage = func() {}
	var file string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "result-file" {
			lenient.StringVar(&file, f.Name, "", "")
			return
		}
		lenient.VarP(anyValue{}, f.Name, f.Shorthand, "")
		lenient.Lookup(f.Name).NoOptDefVal = f.NoOptDefVal
	})
	_ = lenient.Parse(args)
	return file
}

// anyValue is a flag value that takes any string.
type anyValue struct{}

func (anyValue) String() string   { return "" }
func (anyValue) Set(string) error { return nil }
func (anyValue) Type() string     { return "string" }

// inExecutorImage reports whether this process runs from the executor's own
// image, inside a container.
func inExecutorImage() bool {
	_, err := os.Stat(imageMarker)
	return err == nil
}

// buildAndPublish does the work and describes it as a result. Each step
// returns an error that names the result's reason (failed); a refused push
// outranks any other failure (pushCheck). The deferred steps run after the
// result is made, in this order: the cache's last writes, removing the work
// directory, stopping the push check.
func buildAndPublish(ctx context.Context, o *options, logw io.Writer) (out result.Result) {
	// The build, the registry trace and this function write to logw from
	// several goroutines.
	logw = build.NewSyncWriter(logw)
	if o.verbosity == "trace" {
		o.reg.Trace = logw
	}
	started := time.Now()
	if o.sc.note != "" {
		fmt.Fprintln(logw, o.sc.note)
	}
	var res result.Result
	creds, destinations, err := prepareRegistry(o, logw)
	if err != nil {
		return failedResult(res, nil, err)
	}
	ctx, push := startPushCheck(ctx, o, destinations)
	defer push.stop()

	var state *build.State
	if o.stateDir != "" {
		state = build.OpenState(o.stateDir, logw)
		defer state.Close()
		res.State = state.Report()
	}
	workDir, removeWorkDir, err := makeWorkDir(o, state)
	if err != nil {
		return failedResult(res, push, err)
	}
	defer removeWorkDir()
	o.sc.workDir = workDir
	defer func() {
		if out.Failure != nil {
			out.Failure.Message = userPaths(out.Failure.Message, workDir)
		}
	}()
	in, err := readInputs(ctx, o, creds, workDir, &res, logw)
	if err != nil {
		return failedResult(res, push, err)
	}
	bo := buildOptions(ctx, o, creds, in, workDir, logw)
	if bo.Isolation == build.InPlace {
		bo.Exclude = append(bo.Exclude, o.sc.excludes()...)
	}
	bo.Checks = buildChecks(o, &res)
	if o.checkOnly {
		return checkOnly(ctx, bo, &res, logw)
	}
	cacheRepo, err := useCache(ctx, o, destinations, &bo)
	if err != nil {
		return failedResult(res, push, err)
	}
	// The cache's last writes go on while the image is pushed; one that
	// fails fails no build, and is a warning.
	defer flushCache(ctx, bo.Cache, cacheRepo, bo.Log)
	useState(o, state, &bo)
	// So do the saves of cache mounts, which need the work directory.
	defer bo.CacheMounts.Wait(ctx)
	// The SBOMs' cache, and the build's hooks that start their generator
	// and begin each image's (issue 16); what is left ends with the build.
	o.sc.startBuild(ctx, &bo, destinations, o.verbosity, logw)
	defer o.sc.endBuild()

	img, digest, rep, err := buildImage(ctx, bo, o.ociMediaTypes, &res, logw)
	if err != nil {
		return failedResult(res, push, err)
	}
	// With an SBOM to make, the images go up while it is made; the index
	// and its attestations after (issue 16).
	pre := prePush(ctx, o, push, img, destinations)
	if img, digest, err = attach(ctx, o, creds, in, rep, img, started, destinations, &res, logw); err != nil {
		pre.stop()
		return failedResult(res, push, failed(result.ReasonInternal, err))
	}
	if err := pre.wait(); err != nil {
		return failedResult(res, push, failed(result.ReasonPushFailed, err))
	}
	if err := push.wait(); err != nil {
		return failedResult(res, push, failed(result.ReasonPushFailed, err))
	}
	pushStart := time.Now()
	if err := writeOutputs(ctx, o, img, digest, destinations, &res, logw); err != nil {
		return failedResult(res, push, failed(result.ReasonPushFailed, err))
	}
	if err := publishSupplyChain(ctx, o, creds, img, destinations, &res, logw); err != nil {
		return failedResult(res, push, failed(result.ReasonPushFailed, err))
	}
	res.PushMillis = result.Millis(time.Since(pushStart))
	res.CacheMounts = bo.CacheMounts.Wait(ctx)
	if state != nil {
		// The trees are no longer used (the SBOM is made).
		state.Keep()
		res.State = state.Report()
	}
	res.Success = true
	return res
}

// userPaths names the paths of msg that are in the executor's work
// directory as the user knows them, since the work directory is the
// executor's own (a temporary directory, or /slipway/... in place): a path
// in a context fetched there (workDir/context, a git or tar context) by its
// path in the context, the context itself as ".", and any other path there
// (the git objects, the stages' file systems, the cache mounts) from
// "<work dir>". A local context (dir://) is the user's own path, and stays.
func userPaths(msg, workDir string) string {
	if workDir == "" {
		return msg
	}
	workDir = filepath.Clean(workDir)
	contextDir := filepath.Join(workDir, "context")
	// A path ends at a byte that cannot continue its last name.
	end := `([^A-Za-z0-9._+@~-]|$)`
	msg = regexp.MustCompile(regexp.QuoteMeta(contextDir+"/")).ReplaceAllLiteralString(msg, "")
	msg = regexp.MustCompile(regexp.QuoteMeta(contextDir)+end).ReplaceAllString(msg, ".$1")
	if workDir == "/" {
		return msg
	}
	return regexp.MustCompile(regexp.QuoteMeta(workDir)+end).ReplaceAllString(msg, "<work dir>$1")
}

// stepError is an error of one of buildAndPublish's steps, with the reason
// the result gives for it.
type stepError struct {
	reason result.Reason
	err    error
}

// failed says that err fails the build for reason (unless err holds a
// *build.Error, whose reason and line the result takes).
func failed(reason result.Reason, err error) error {
	return &stepError{reason: reason, err: err}
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// failedResult is res failed with err, or with the push check's refusal
// when the destinations refused the push (whatever else failed meanwhile:
// as if it had been checked first).
func failedResult(res result.Result, push *pushCheck, err error) result.Result {
	if refused := push.wait(); refused != nil {
		err = failed(result.ReasonPushFailed, refused)
	}
	reason := result.ReasonInternal
	var se *stepError
	if errors.As(err, &se) {
		reason = se.reason
	}
	res.Success = false
	// No URL user info, no control characters, whatever the error
	// quotes (see result.Redact for what a message may show).
	msg := err.Error()
	var be *build.Error
	if errors.As(err, &be) {
		// The message is the cause; the line and the instruction are
		// fields of their own (result.Failure.Message).
		msg = strings.Replace(msg, be.Error(), be.Cause(), 1)
	}
	f := &result.Failure{Reason: reason, Message: result.Sanitize(msg)}
	if be != nil {
		f.Reason, f.Line, f.Instruction, f.ExitCode = be.Reason, be.Line, result.Excerpt(be.Instruction, result.MaxInstruction), be.ExitCode
		f.Platform = be.Platform
	}
	// A git server that could not be reached may be there later; the
	// controller retries such a failure when the ImageBuild asks it to.
	f.Transient = f.Reason == result.ReasonSourceFetchFailed && source.Unreachable(err)
	res.Failure = f
	return res
}

// prepareRegistry seals the credentials (before anything of the repository
// runs: see credentials.go), gives them to the registry options, and parses
// the destinations.
func prepareRegistry(o *options, logw io.Writer) (*credentials, []name.Reference, error) {
	creds, err := loadCredentials(o)
	if err == nil {
		err = creds.seal(o, logw)
	}
	if err != nil {
		return nil, nil, failed(result.ReasonInvalidArguments, err)
	}
	o.reg.Keychain = creds.keychain
	o.reg.Share()

	destinations := make([]name.Reference, 0, len(o.destinations))
	for _, d := range o.destinations {
		ref, err := publish.ParseReference(d, o.reg, true)
		if err != nil {
			return nil, nil, failed(result.ReasonInvalidArguments, fmt.Errorf("--destination: %w", err))
		}
		destinations = append(destinations, ref)
	}
	return creds, destinations, nil
}

// pushCheck checks that the destinations take a push while the build
// starts (fetching the context, the base image and the cache) rather than
// before it. A refusal stops the build (it cancels the build's context),
// and is what the result reports whatever else failed meanwhile, as when
// it was checked first. A nil *pushCheck checks nothing (--no-push).
type pushCheck struct {
	cancel  context.CancelCauseFunc
	done    chan struct{}
	refused error
}

// startPushCheck starts the check unless o says not to push, and returns
// the context the build runs in.
func startPushCheck(ctx context.Context, o *options, destinations []name.Reference) (context.Context, *pushCheck) {
	if o.noPush {
		return ctx, nil
	}
	c := &pushCheck{done: make(chan struct{})}
	ctx, c.cancel = context.WithCancelCause(ctx)
	go func() {
		defer close(c.done)
		if c.refused = publish.CheckPush(ctx, destinations, o.reg); c.refused != nil {
			c.cancel(c.refused)
		}
	}()
	return ctx, c
}

// wait returns the destinations' refusal once the check is done, nil when
// they take the push.
func (c *pushCheck) wait() error {
	if c == nil {
		return nil
	}
	<-c.done
	return c.refused
}

// stop cancels the build's context, ending the check if it still runs.
func (c *pushCheck) stop() {
	if c != nil {
		c.cancel(nil)
	}
}

// makeWorkDir returns the build's work directory: --work-dir, or a
// temporary one (under /slipway with in-place isolation, whose root is
// cleared) that remove deletes.
func makeWorkDir(o *options, state *build.State) (dir string, remove func(), err error) {
	if o.workDir != "" {
		if err := os.MkdirAll(o.workDir, 0o700); err != nil {
			return "", nil, failed(result.ReasonInternal, fmt.Errorf("creating the work directory: %w", err))
		}
		return o.workDir, func() {}, nil
	}
	base := ""
	if o.isolation == string(build.InPlace) {
		base = "/slipway"
	} else if sd := state.WorkDir(); sd != "" {
		// On the state directory's file system, so that stage trees
		// move in and out of it.
		base = sd
	}
	d, err := os.MkdirTemp(base, "slipway-build-")
	if err != nil {
		return "", nil, failed(result.ReasonInternal, fmt.Errorf("creating the work directory: %w", err))
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// buildInputs is what the build reads besides the registry: the context,
// the Dockerfile, and the arguments.
type buildInputs struct {
	fetched    source.Fetched
	context    *source.Context
	dockerfile []byte
	buildArgs  map[string]string
	labels     map[string]string
}

// readInputs fetches the context (recording its commit and how long it
// took in res), reads the Dockerfile in it, and parses --build-arg and
// --label.
func readInputs(ctx context.Context, o *options, creds *credentials, workDir string, res *result.Result, logw io.Writer) (*buildInputs, error) {
	fetchStart := time.Now()
	fetched, err := source.FetchWithInfo(ctx, o.context, o.contextSubPath, filepath.Join(workDir, "context"), source.FetchOptions{Git: o.git, Auth: &creds.git})
	if err != nil {
		return nil, failed(result.ReasonSourceFetchFailed, err)
	}
	if res.Commit = fetched.Commit; res.Commit != "" {
		fmt.Fprintf(logw, "Fetched git context at commit %s\n", res.Commit)
	}
	res.FetchMillis = result.Millis(time.Since(fetchStart))
	in := &buildInputs{fetched: fetched}
	if in.dockerfile, err = readDockerfile(fetched.Dir, o.dockerfile); err != nil {
		return nil, failed(result.ReasonDockerfileInvalid, err)
	}
	if in.context, err = source.Open(fetched.Dir, o.dockerfile); err != nil {
		return nil, failed(result.ReasonSourceFetchFailed, err)
	}
	if in.buildArgs, err = parseBuildArgs(o.buildArgs); err != nil {
		return nil, failed(result.ReasonInvalidArguments, err)
	}
	if in.labels, err = parseKV("--label", o.labels); err != nil {
		return nil, failed(result.ReasonInvalidArguments, err)
	}
	return in, nil
}

// readDockerfile reads the Dockerfile (and its ignore file) inside the
// context: the repository may link it anywhere, but what is read is in the
// context (source.ReadFile), so no file of the executor's reaches a
// message. An absolute --dockerfile is the operator's choice, read as
// given; the controller passes a relative one (its API refuses others). A
// relative one is never looked up outside the context, unlike kaniko,
// which tries the working directory first.
func readDockerfile(contextDir, dockerfile string) ([]byte, error) {
	dockerfileRoot := contextDir
	if filepath.IsAbs(dockerfile) {
		dockerfileRoot = "/"
	}
	dt, err := source.ReadFile(dockerfileRoot, dockerfile)
	if errors.Is(err, fs.ErrNotExist) && filepath.Base(dockerfile) == "Dockerfile" {
		// A missing Dockerfile may be spelt dockerfile, as BuildKit
		// (dockerui's build definition, moby/moby#10858) and Docker accept.
		if lower, lerr := source.ReadFile(dockerfileRoot, filepath.Join(filepath.Dir(dockerfile), "dockerfile")); lerr == nil {
			dt, err = lower, nil
		}
	}
	return dt, err
}

// buildOptions are the build's options, without its cache (useCache), and
// with the isolation o names: in-place excludes the executor's own paths;
// chroot runs each RUN in a chroot sandbox.
func buildOptions(ctx context.Context, o *options, creds *credentials, in *buildInputs, workDir string, logw io.Writer) build.Options {
	var contextTime *time.Time
	if !in.fetched.CommitTime.IsZero() {
		contextTime = &in.fetched.CommitTime
	}
	bo := build.Options{
		Dockerfile:     in.dockerfile,
		DockerfilePath: o.dockerfile,
		Context:        in.context,
		BuildArgs:      in.buildArgs,
		Labels:         in.labels,
		Target:         o.target,
		Isolation:      build.Isolation(o.isolation),
		WorkDir:        workDir,
		PullReferences: func(s string) ([]name.Reference, error) { return publish.PullReferences(s, o.reg) },
		Remote: func(ref name.Reference) []remote.Option {
			return o.reg.Remote(ctx, ref, false)
		},
		MaxLayerSize:    o.maxLayerBytes,
		Layers:          layer.Options{Compression: layer.Compression(o.compression), Level: o.compressionLevel, OCI: o.ociMediaTypes},
		SourceDateEpoch: sourceDateEpoch(o.reproducible, in.buildArgs),
		ContextTime:     contextTime,
		Hostname:        o.hostname,
		Log:             levelFilter(o.verbosity, logw),
		Secrets:         creds.secrets,
		SSH:             creds.ssh,
		GitAuth:         creds.git,
		Platforms:       o.platforms,
	}
	if o.isolation == string(build.InPlace) {
		bo.Exclude = inPlaceExcludes(workDir, in.fetched.Dir, o.ignorePaths)
		return bo
	}
	// no_new_privs as in an executor pod (allowPrivilegeEscalation:
	// false), so that both isolations build the same image.
	chrootOpts := []run.ChrootOption{run.WithNoNewPrivileges()}
	bo.Runner = &announcedRunner{Runner: run.Chroot(chrootOpts...), announce: func(ctx context.Context) {
		iso, err := run.ChrootIsolation(ctx, workDir, chrootOpts...)
		if err != nil {
			fmt.Fprintf(logw, "WARNING: finding out how RUN steps are confined: %v\n", err)
			return
		}
		fmt.Fprintf(logw, "Isolation: chroot, pivot_root, Docker's default capabilities and seccomp profile, no_new_privs, %s\n", iso)
	}}
	return bo
}

// useCache sets bo's cache: the registry's with --cache, else none. It
// returns the cache's repository (empty without one).
func useCache(ctx context.Context, o *options, destinations []name.Reference, bo *build.Options) (name.Repository, error) {
	bo.Cache = build.NoCache()
	if !o.cache {
		return name.Repository{}, nil
	}
	c, err := newCache(ctx, o, destinations)
	if err != nil {
		return name.Repository{}, failed(result.ReasonInvalidArguments, err)
	}
	bo.Cache = c
	if o.cacheMounts {
		bo.CacheMounts = &build.CacheMounts{Store: c, Repo: c.Repo().Name(), Scope: o.cacheMountScope, MaxSize: o.cacheMountMaxBytes}
	}
	return c.Repo(), nil
}

// useState gives the build the state directory, when there is one: its
// trees and, with --cache-mounts, its copies of cache mounts (kept there
// alone without --cache).
func useState(o *options, state *build.State, bo *build.Options) {
	if state == nil {
		return
	}
	bo.State = state
	if o.cacheMounts && bo.CacheMounts == nil {
		bo.CacheMounts = &build.CacheMounts{Scope: o.cacheMountScope, MaxSize: o.cacheMountMaxBytes}
	}
	if bo.Isolation == build.InPlace {
		bo.Exclude = append(bo.Exclude, o.stateDir)
	}
}

// flushCache waits for the cache's last writes and logs what they did; a
// failed write fails no build, and is a warning.
func flushCache(ctx context.Context, c build.Cache, repo name.Repository, log io.Writer) {
	if f, err := c.Flush(ctx); err != nil {
		fmt.Fprintf(log, "WARNING: writing the layer cache: %v\n", err)
	} else if f.Stored > 0 {
		fmt.Fprintf(log, "Wrote %d layer cache entries to %s\n", f.Stored, repo)
	}
}

// buildImage builds the image, recording in res how long it took, its
// stages and cache use (also when it fails) and its digest. A build for
// several platforms gives an image index of their images (publish.Index);
// res lists each platform's (res.Platforms) when --custom-platform named
// any.
func buildImage(ctx context.Context, bo build.Options, oci bool, res *result.Result, logw io.Writer) (publish.Artifact, v1.Hash, *build.Report, error) {
	buildStart := time.Now()
	imgs, rep, err := build.BuildAll(ctx, bo)
	res.BuildMillis = result.Millis(time.Since(buildStart))
	if rep != nil {
		res.Stages = rep.Stages
		res.CacheHits, res.CacheMisses = rep.CacheHits, rep.CacheMisses
		res.Bases, res.BasesOmitted = rep.Bases, rep.BasesOmitted
		if len(bo.Platforms) > 0 {
			res.Platforms = rep.Platforms
		}
	}
	if err != nil {
		return nil, v1.Hash{}, rep, failed(result.ReasonInternal, err)
	}
	var art publish.Artifact = imgs[0].Image
	if len(imgs) > 1 {
		pis := make([]publish.PlatformImage, len(imgs))
		for i, pi := range imgs {
			pis[i] = publish.PlatformImage{Platform: v1.Platform{OS: pi.Platform.OS, Architecture: pi.Platform.Architecture, Variant: pi.Platform.Variant, OSVersion: pi.Platform.OSVersion, OSFeatures: pi.Platform.OSFeatures}, Image: pi.Image}
		}
		if art, err = publish.Index(pis); err != nil {
			return nil, v1.Hash{}, rep, failed(result.ReasonInternal, err)
		}
	}
	digest, err := art.Digest()
	if err != nil {
		return nil, v1.Hash{}, rep, failed(result.ReasonInternal, err)
	}
	res.Digest = digest.String()
	if len(imgs) > 1 {
		for _, p := range res.Platforms {
			fmt.Fprintf(logw, "Built image %s for %s\n", p.Digest, p.Platform)
		}
		fmt.Fprintf(logw, "Built image index %s in %.1fs\n", digest, time.Since(buildStart).Seconds())
	} else {
		fmt.Fprintf(logw, "Built image %s in %.1fs\n", digest, time.Since(buildStart).Seconds())
	}
	return art, digest, rep, nil
}

// writeOutputs pushes and writes every output the flags ask for: img is
// an image, or the index of a build of several platforms (which a
// tarball cannot hold: check refuses --tar-path then).
func writeOutputs(ctx context.Context, o *options, img publish.Artifact, digest v1.Hash, destinations []name.Reference, res *result.Result, logw io.Writer) error {
	if o.tarPath != "" {
		single, ok := tarballImage(o, img, logw)
		if !ok {
			return errors.New("--tar-path: a docker-archive tarball holds no image index")
		}
		if err := publish.WriteTarball(o.tarPath, single, destinations); err != nil {
			return err
		}
		fmt.Fprintf(logw, "Wrote tarball %s\n", o.tarPath)
	}
	if o.ociLayoutPath != "" {
		if err := publish.WriteOCILayout(o.ociLayoutPath, img, destinations); err != nil {
			return err
		}
		fmt.Fprintf(logw, "Wrote OCI layout %s\n", o.ociLayoutPath)
	}
	refs := publish.NamesWithDigest(destinations, digest)
	if !o.noPush {
		pushFn := publish.Push
		if o.pushByDigest {
			pushFn = publish.PushByDigest
		}
		pushed, err := pushFn(ctx, img, destinations, o.reg)
		if err != nil {
			return err
		}
		refs = pushed
		for _, r := range pushed {
			fmt.Fprintf(logw, "Pushed %s\n", r)
		}
		res.References = pushed
	}
	if o.digestFile != "" {
		if err := publish.WriteDigestFile(o.digestFile, digest); err != nil {
			return err
		}
	}
	if o.nameWithDigestFile != "" {
		if err := publish.WriteImageNameWithDigestFile(o.nameWithDigestFile, refs); err != nil {
			return err
		}
	}
	if o.nameTagWithDigestFile != "" {
		var lines []string
		for _, d := range destinations {
			lines = append(lines, d.Name()+"@"+digest.String())
		}
		if err := publish.WriteImageNameWithDigestFile(o.nameTagWithDigestFile, lines); err != nil {
			return err
		}
	}
	return nil
}

// newCache opens the layer cache: --cache-repo, or as kaniko does, the
// first destination's repository with /cache appended. Its registry calls
// have clients of their own, bounded by --cache-timeout and
// --cache-retries (publish.CacheLimits); those of the base image and the
// destinations are not.
func newCache(ctx context.Context, o *options, destinations []name.Reference) (*cache.Cache, error) {
	repoName := o.cacheRepo
	if repoName == "" {
		if len(destinations) == 0 {
			return nil, errors.New("--cache=true needs --cache-repo when there is no --destination")
		}
		repoName = destinations[0].Context().Name() + "/cache"
	}
	ref, err := publish.ParseReference(repoName, o.reg, true)
	if err != nil {
		return nil, fmt.Errorf("--cache-repo: %w", err)
	}
	reg := o.reg.ForCache(o.cacheLimits)
	return cache.New(cache.Options{
		Repo: ref.Context(),
		TTL:  o.cacheTTL,
		Remote: func(pull bool) []remote.Option {
			return reg.Remote(ctx, ref, !pull)
		},
	}), nil
}

// levelFilter returns where the build's log goes at a kaniko log level:
// everything at info and above, only warnings at warn, nothing at error
// and below (errors are reported by execute itself).
func levelFilter(level string, w io.Writer) io.Writer {
	switch level {
	case "panic", "fatal", "error":
		return io.Discard
	case "warn":
		return &warnOnly{w: w}
	}
	return w
}

// announcedRunner says, before the first RUN step, how steps are
// confined: a build whose steps all come from the cache runs none, and
// does not pay for finding out.
type announcedRunner struct {
	run.Runner
	once     sync.Once
	announce func(context.Context)
}

func (r *announcedRunner) Run(ctx context.Context, s run.Spec) error {
	r.once.Do(func() { r.announce(ctx) })
	return r.Runner.Run(ctx, s)
}

// warnOnly passes on the lines that are warnings (and the build checks'
// findings, WARN: and ERROR:). The build writes whole lines.
type warnOnly struct{ w io.Writer }

func (f *warnOnly) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if strings.HasPrefix(line, "WARN") || strings.HasPrefix(line, "ERROR") {
			if _, err := io.WriteString(f.w, line); err != nil {
				return 0, err
			}
		}
	}
	return len(p), nil
}

// inPlaceExcludes are the paths an in-place build must never clear or
// snapshot: the executor's own directory and work directory, the context,
// the kernel's file systems and everything mounted into the container.
func inPlaceExcludes(workDir, contextDir string, extra []string) []string {
	ex := []string{"/proc", "/sys", "/dev", "/slipway", "/kaniko", workDir, contextDir,
		"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/var/run/secrets", "/run/secrets"}
	if exe, err := os.Executable(); err == nil {
		ex = append(ex, filepath.Dir(exe))
	}
	if dc := os.Getenv("DOCKER_CONFIG"); dc != "" {
		ex = append(ex, dc)
	}
	if mps, err := rootfs.MountPoints("/"); err == nil {
		for _, m := range mps {
			ex = append(ex, "/"+m)
		}
	}
	return append(ex, extra...)
}

// readSecrets reads --secret values: "id=ID,src=FILE" (also source=),
// "id=ID,env=VAR", or "env=VAR" alone (the id is then VAR), with an
// optional type=file or type=env, as docker buildx takes them. Errors name
// the flag, never a secret's value.
func readSecrets(flags []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, f := range flags {
		var id, src, env, typ string
		for _, field := range strings.Split(f, ",") {
			k, v, ok := strings.Cut(field, "=")
			if !ok {
				return nil, fmt.Errorf("--secret %q: want KEY=VALUE fields (id, src, env, type)", f)
			}
			switch strings.ToLower(k) {
			case "id":
				id = v
			case "src", "source":
				src = v
			case "env":
				env = v
			case "type":
				typ = v
			default:
				return nil, fmt.Errorf("--secret %q: unknown field %q (want id, src, env or type)", f, k)
			}
		}
		if typ != "" && typ != "file" && typ != "env" {
			return nil, fmt.Errorf("--secret %q: type %q (want file or env)", f, typ)
		}
		if typ == "env" && env == "" {
			env, src = src, ""
		}
		if id == "" {
			id = env
		}
		switch {
		case id == "":
			return nil, fmt.Errorf("--secret %q: no id", f)
		case (src == "") == (env == ""):
			return nil, fmt.Errorf("--secret %q: want one of src=FILE or env=VAR", f)
		case src != "":
			data, err := os.ReadFile(src)
			if err != nil {
				return nil, fmt.Errorf("--secret id=%s: %w", id, err)
			}
			out[id] = data
		default:
			v, ok := os.LookupEnv(env)
			if !ok {
				return nil, fmt.Errorf("--secret id=%s: environment variable %s is not set", id, env)
			}
			out[id] = []byte(v)
		}
	}
	return out, nil
}

func parseBuildArgs(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if k == "" {
			return nil, fmt.Errorf("--build-arg %q: want KEY=VALUE or KEY", a)
		}
		if !ok {
			// kaniko and docker take a bare name from the environment, and
			// leave it out when the environment does not have it.
			ev, set := os.LookupEnv(k)
			if !set {
				continue
			}
			v = ev
		}
		out[k] = v
	}
	return out, nil
}

func parseKV(flag string, kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

// sourceDateEpoch applies the SOURCE_DATE_EPOCH environment variable as
// the build arg of that name when no --build-arg sets it, as docker buildx
// does, and returns the epoch of --reproducible (the Unix epoch), nil
// without it. The build resolves the build arg (or the Dockerfile's global
// ARG default) itself, as BuildKit's frontend does; a value that gives a
// time wins over --reproducible's (build.Options.SourceDateEpoch).
func sourceDateEpoch(reproducible bool, buildArgs map[string]string) *time.Time {
	if _, ok := buildArgs["SOURCE_DATE_EPOCH"]; !ok {
		if v, ok := os.LookupEnv("SOURCE_DATE_EPOCH"); ok && v != "" {
			buildArgs["SOURCE_DATE_EPOCH"] = v
		}
	}
	if reproducible {
		t := time.Unix(0, 0).UTC()
		return &t
	}
	return nil
}

func writeResult(path string, r result.Result, logw io.Writer) {
	if path == "" {
		return
	}
	if err := os.WriteFile(path, result.Encode(r), 0o644); err != nil {
		fmt.Fprintf(logw, "warning: writing the result to %s: %v\n", path, err)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
