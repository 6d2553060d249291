// Package build executes a Dockerfile plan into an image, Docker-exactly:
// stage by stage, each instruction applied to the stage's image config and,
// for RUN, COPY, ADD and WORKDIR, to its root filesystem, whose changes become
// layers. Building never pushes: the result is a v1.Image for
// executor/publish.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/ssh/agent"

	"github.com/slipway-dev/slipway/executor/binfmt"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/executor/source"
)

// Isolation is how stages get a root filesystem and how RUN steps run.
type Isolation string

const (
	// Chroot gives every stage its own root directory under WorkDir and
	// runs RUN steps chrooted in fresh mount and PID namespaces. Independent
	// stages are built at the same time.
	Chroot Isolation = "chroot"
	// InPlace uses the executor's own container root filesystem as the
	// stage's root (kaniko's model); stages are built one after another.
	InPlace Isolation = "inplace"
)

// Options are the inputs of a build.
type Options struct {
	// Dockerfile is the Dockerfile's content; DockerfilePath its name for
	// messages.
	Dockerfile     []byte
	DockerfilePath string
	// Context is the build context, with its .dockerignore.
	Context *source.Context
	// BuildArgs are --build-arg values; Labels --label values.
	BuildArgs map[string]string
	Labels    map[string]string
	// Target is the stage to build; empty means the last.
	Target string
	// Isolation selects Chroot or InPlace.
	Isolation Isolation
	// Runner runs RUN steps; defaults to run.Chroot() or run.InPlace().
	Runner run.Runner
	// WorkDir holds stage roots (chroot), layer files and downloads. It must
	// exist; in place it must be excluded from snapshots (see Exclude).
	WorkDir string
	// Exclude lists absolute paths that in-place builds never touch or
	// snapshot (the executor's own directory, mounts, the context).
	Exclude []string
	// Remote returns the registry options used to pull ref.
	Remote func(ref name.Reference) []remote.Option
	// PullReferences parses an image reference for pulling into the
	// references to try in order (registry mirrors first, insecure
	// registries marked); defaults to name.ParseReference alone.
	PullReferences func(s string) ([]name.Reference, error)
	// Layers says how new layers are compressed and typed.
	Layers layer.Options
	// MaxLayerSize bounds what the files of one layer read by the build
	// (base image, cache hit, COPY --from or RUN --mount=from image) may
	// expand to, in bytes: past it the build fails (executor
	// --max-layer-size). Zero or less is no limit.
	MaxLayerSize int64
	// SourceDateEpoch, when set, makes the build reproducible: it is the
	// image's creation time, and file times newer than it are clamped to it.
	// The SOURCE_DATE_EPOCH build arg, else the Dockerfile's global ARG of
	// that name, replaces it when its value gives a time (see
	// resolveSourceDateEpoch).
	SourceDateEpoch *time.Time
	// ContextTime is the build context's own time, which
	// SOURCE_DATE_EPOCH=context stands for: a git context's commit time.
	// Nil (a local context) gives such a build no time from it.
	ContextTime *time.Time
	// Hostname is the host name of RUN steps (executor --hostname, BuildKit's
	// "hostname" option); the build arg BUILDKIT_SANDBOX_HOSTNAME, when not
	// empty, replaces it (BuildKit's dockerui config). Empty: the runner's
	// default. It is in every RUN step's cache key when set.
	Hostname string
	// HTTPClient fetches ADD URLs; defaults to http.DefaultClient.
	HTTPClient *http.Client
	// Log receives the step lines and RUN output; nil discards them.
	Log io.Writer
	// Now is the clock (for the creation time without SourceDateEpoch).
	Now func() time.Time
	// CacheMounts, with a Store and a Cache, keeps RUN --mount=type=cache
	// directories between builds (see mountpersist.go): whoever made it
	// calls its Wait once BuildAll returned, before removing WorkDir.
	CacheMounts *CacheMounts
	// State, when usable, is a directory kept between builds (executor
	// --state-dir): stages start from the unpacked trees it keeps (chroot
	// isolation), cache mounts from its copies (see state.go). Whoever
	// opened it calls its Keep once the build's trees are no longer used,
	// then Close. WorkDir must be on its file system (State.WorkDir) for
	// trees to move in and out.
	State *State
	// Cache is the layer cache; nil is NoCache(). Build returns while the
	// cache may still be writing what it was given, so that publishing the
	// image overlaps those writes: whoever made the cache calls its Flush
	// once before exiting, whether the build failed or not.
	Cache Cache
	// Secrets are what RUN --mount=type=secret can read, by id (executor
	// --secret). They never enter a cache key, a layer or the log.
	Secrets map[string][]byte
	// SSH are the ssh agents that RUN --mount=type=ssh reaches, by id
	// (executor --ssh). A step's socket only lists their keys and signs
	// with them; no key enters a cache key, a layer or the log.
	SSH map[string]agent.Agent
	// GitAuth are the credentials of ADD from a git repository, scoped by
	// their Origin (see source.GitAuth): the git context's go to its exact
	// scheme, host and port only. The zero value fetches anonymously (but
	// for credentials in the ADD URL itself, which go to that URL).
	GitAuth source.GitAuth
	// Checks, when set, are evaluated before the first step (see Checks);
	// nil evaluates none.
	Checks *Checks
	// Platforms are the platforms to build for (TARGETPLATFORM of each),
	// normalised (dockerfile.ParsePlatform), without duplicates: Build
	// takes at most one, BuildAll any number. None builds for
	// BuildPlatform implicitly, as BuildKit does without --platform: the
	// image's config then keeps its base image's platform, where an
	// explicit platform sets it (finalImage).
	Platforms []ocispec.Platform
	// BuildPlatform is the platform this executor runs on (BUILDPLATFORM);
	// the zero value is this machine's (dockerfile.NativePlatform).
	BuildPlatform ocispec.Platform
	// StepRuns, when set, is called when a step is about to run rather
	// than come from the cache (for each such step, from its stage's
	// goroutine; it must not block): the image will be a new one. The
	// executor starts its SBOM generator then (issue 16).
	StepRuns func()
	// ImageReady, when set, is called for each platform's image as soon
	// as its digest is known, before BuildAll waits for the cache to take
	// its new layers (Cache.Mountable): i is the platform's index (as in
	// Report.Platforms), tree the directory holding the image's whole
	// file system, or "" (as Report.Trees). It must not block. The
	// executor makes the image's SBOM meanwhile (issue 16).
	ImageReady func(i int, digest v1.Hash, tree string)
	// Emulator says how RUN steps of a stage of another platform than
	// BuildPlatform run: natively, through a binfmt_misc handler of the
	// kernel's, or not at all (the build then fails before it starts,
	// reason PlatformUnsupported). The default asks the kernel
	// (KernelEmulator at binfmt.DefaultDir, probing in WorkDir).
	Emulator Emulator
}

// Report summarises a finished build for the result file.
type Report struct {
	Stages []result.Stage
	// CacheHits and CacheMisses count the cache lookups.
	CacheHits, CacheMisses int
	// Bases are the images the build read, and what each resolved to (at
	// most result.MaxBases; BasesOmitted counts the others).
	Bases        []result.Base
	BasesOmitted int
	// Platforms are the builds of each platform (BuildAll's images, in
	// their order), each with its image's digest, its stages (those
	// shared with another platform too) and their cache hits and misses.
	// Stages, CacheHits and CacheMisses above count each stage once.
	Platforms []result.Platform
	// Materials are, per platform (in the order of Platforms), every
	// image its build read, for its provenance (see buildSet.materials).
	Materials [][]Material
	// Trees are, per platform (in the order of Platforms), the directory
	// that holds the whole file system of its image when the build left
	// one on disk, else "": the final stage's root under chroot isolation
	// when every one of its layers was applied to it (its steps ran, or
	// it was made whole for a step that did; cache hits alone leave it
	// partial or absent). It is there until the work directory is
	// removed; nothing of the build writes to it after BuildAll returns.
	// Its SBOM is made from it (issue 16).
	Trees []string
}

// Error is a build failure with the machine-readable reason, the Dockerfile
// line and, for RUN, the exit code.
type Error struct {
	Reason result.Reason
	Line   int
	// Instruction is the failing instruction as written, with the user
	// info of its URLs redacted (result.Redact).
	Instruction string
	ExitCode    int
	// Platform is the platform of the stage that failed, in a build that
	// names platforms in its log (several, or a foreign one); else empty.
	Platform string
	Err      error
}

// maxErrorText bounds the text of the cause in Error: a parser error may
// quote a word of the Dockerfile, which may be a whole line.
const maxErrorText = 1024

// Error is one line: the Dockerfile line, an excerpt of the instruction
// and the cause, sanitised as result.Sanitize does (no URL user info, no
// control characters).
func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "Dockerfile line %d", e.Line)
		if e.Instruction != "" {
			fmt.Fprintf(&b, " (%s)", result.Excerpt(e.Instruction, 120))
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Cause())
	return b.String()
}

// Cause is Error without the location: what went wrong, sanitised and
// bounded as in Error. The result's failure message is the cause, since
// the line and the instruction are fields of their own (result.Failure),
// and whoever shows the failure names the line once (result.Located).
func (e *Error) Cause() string {
	var de *dockerfile.Error
	cause := e.Err.Error()
	if errors.As(e.Err, &de) {
		cause = de.Err.Error()
	}
	return result.Truncate(result.Sanitize(cause), maxErrorText)
}

func (e *Error) Unwrap() error { return e.Err }

// fail wraps err with a reason and the location of cmd's line.
func fail(reason result.Reason, err error) error {
	if err == nil {
		return nil
	}
	var be *Error
	if errors.As(err, &be) {
		return err
	}
	e := &Error{Reason: reason, Err: err}
	var de *dockerfile.Error
	if errors.As(err, &de) {
		e.Line, e.Instruction = de.Line, result.Redact(de.Instruction)
	}
	var xe *run.ExitError
	if errors.As(err, &xe) {
		e.ExitCode = xe.Code
	}
	return e
}

// Build parses the Dockerfile, builds the stages the target needs and
// returns the target's image, for the one platform of o.Platforms (or the
// build platform when it names none). The image's base and cached layers
// are read lazily with ctx, so ctx must stay alive until the image is
// published. BuildAll builds for several platforms.
func Build(ctx context.Context, o Options) (v1.Image, *Report, error) {
	if len(o.Platforms) > 1 {
		return nil, nil, &Error{Reason: result.ReasonInternal, Err: fmt.Errorf("Build builds one platform, not %d: use BuildAll", len(o.Platforms))}
	}
	imgs, rep, err := BuildAll(ctx, o)
	if err != nil {
		return nil, rep, err
	}
	return imgs[0].Image, rep, nil
}

// PlatformImage is the image built for one platform.
type PlatformImage struct {
	// Platform is the platform built for (an element of Options.Platforms,
	// or the build platform when it names none).
	Platform ocispec.Platform
	Image    v1.Image
}

// BuildAll builds the target for each platform of o.Platforms (the build
// platform when it names none) and returns their images in that order.
// The builds are planned together, and a stage whose platform and inputs
// are the same in several of them (a FROM --platform=$BUILDPLATFORM stage
// that reads no TARGET* argument, say) is built once for all (see
// sameStage). As in BuildKit, each platform's build is the Dockerfile
// converted with that target platform: its TARGET* args, the platform of
// its stages (dockerfile.Plan.StagePlatform), its base images resolved for
// it. The report has one result.Platform per image, in the same order.
func BuildAll(ctx context.Context, o Options) ([]PlatformImage, *Report, error) {
	o = o.withDefaults()
	targets := o.Platforms
	if len(targets) == 0 {
		targets = []ocispec.Platform{o.BuildPlatform}
	}
	plans := make([]*dockerfile.Plan, len(targets))
	for i := range targets {
		plan, err := dockerfile.Parse(o.Dockerfile, dockerfile.Options{BuildArgs: o.BuildArgs, Target: o.Target, Platform: &targets[i], BuildPlatform: &o.BuildPlatform})
		if err != nil {
			checksBeforeError(o)
			return nil, nil, fail(result.ReasonDockerfileInvalid, err)
		}
		plans[i] = plan
	}
	if o.Checks == nil {
		// With checks, they report the parser's warnings (empty
		// continuation lines: NoEmptyContinuation).
		for _, w := range plans[0].Warnings {
			// The parser's warnings quote Dockerfile lines.
			fmt.Fprintf(o.Log, "WARNING: %s\n", result.Excerpt(w, 300))
		}
	}
	if err := resolveSourceDateEpoch(ctx, &o, plans); err != nil {
		return nil, nil, err
	}
	if v := o.BuildArgs[sandboxHostnameArg]; v != "" {
		o.Hostname = v
	}
	if err := run.CheckHostname(o.Hostname); err != nil {
		return nil, nil, &Error{Reason: result.ReasonInvalidArguments, Err: fmt.Errorf("the RUN steps' hostname (--hostname, build arg %s): %w", sandboxHostnameArg, err)}
	}
	var set *buildSet
	var err error
	caches := newCacheStore(filepath.Join(o.WorkDir, "cache-mounts"))
	defer caches.endRestores()
	if o.CacheMounts != nil && (o.CacheMounts.Store != nil && o.Cache != NoCache() || o.State.usable()) {
		caches.persist, caches.state, caches.log = o.CacheMounts, o.State, o.Log
		var ps []string
		for _, p := range targets {
			ps = append(ps, dockerfile.FormatPlatform(p))
		}
		slices.Sort(ps)
		caches.platforms = strings.Join(ps, ",")
		if os.Geteuid() != 0 {
			caches.rootfsOpts = []rootfs.Option{rootfs.WithoutOwnership()}
		}
	}
	// A cached layer whose bytes are not what its entry says is refused
	// when read (cache.ErrRefused), and its key is a miss from then on: the
	// build starts again without it. Each attempt refuses a new key, so a
	// few attempts end it; more is a cache not worth trying further.
	for attempt := 0; ; attempt++ {
		if set, err = newBuildSet(o, plans, caches); err != nil {
			return nil, nil, err
		}
		if attempt == 0 {
			if err := set.runChecks(ctx); err != nil {
				return nil, nil, err
			}
		}
		err = set.buildAll(ctx)
		if attempt == maxCacheRefusals || !errors.Is(err, cache.ErrRefused) || ctx.Err() != nil {
			break
		}
		fmt.Fprintf(set.sh.log, "WARNING: a layer of the cache was refused, building again without it: %v\n", err)
		if err := os.RemoveAll(filepath.Join(o.WorkDir, "stages")); err != nil {
			return nil, nil, fail(result.ReasonInternal, fmt.Errorf("clearing the work directory: %w", err))
		}
	}
	if err != nil {
		return nil, nil, err
	}
	// The caches the steps used are saved while the image is published.
	caches.saveMounts(ctx)
	set.keepTrees(ctx)
	set.warnUnusedArgs()
	imgs := make([]PlatformImage, len(set.builders))
	for i, b := range set.builders {
		img, err := b.finalImage(ctx, b.stages[b.plan.Target])
		if err != nil {
			return nil, nil, fail(result.ReasonInternal, err)
		}
		imgs[i] = PlatformImage{Platform: b.platform, Image: img}
	}
	return imgs, set.report(imgs), nil
}

// withDefaults is o with the defaults of its unset fields.
func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.PullReferences == nil {
		o.PullReferences = func(s string) ([]name.Reference, error) {
			ref, err := name.ParseReference(s)
			return []name.Reference{ref}, err
		}
	}
	if o.Remote == nil {
		o.Remote = func(name.Reference) []remote.Option { return nil }
	}
	if o.Isolation == "" {
		o.Isolation = Chroot
	}
	if o.BuildPlatform.OS == "" {
		o.BuildPlatform = dockerfile.NativePlatform()
	}
	if o.Emulator == nil {
		o.Emulator = KernelEmulator(binfmt.DefaultDir, o.WorkDir)
	}
	if o.Cache == nil {
		o.Cache = NoCache()
	}
	if o.Runner == nil {
		if o.Isolation == InPlace {
			o.Runner = run.InPlace()
		} else {
			o.Runner = run.Chroot()
		}
	}
	return o
}

// sandboxHostnameArg is the build arg that names RUN steps' host
// (BuildKit's dockerui keyHostnameArg).
const sandboxHostnameArg = "BUILDKIT_SANDBOX_HOSTNAME"

// maxCacheRefusals is how many times a build starts again without a cached
// layer it refused (cache.ErrRefused).
const maxCacheRefusals = 3

// builder holds the state of the build for one target platform; the
// builders of a BuildAll share a buildSet's state (sh) and the stages
// that are the same in several of them.
type builder struct {
	opts   Options
	plan   *dockerfile.Plan
	log    *SyncWriter
	stages []*stageResult
	layers string // directory for layer files
	// caches holds RUN --mount=type=cache directories for the whole build.
	caches *cacheStore
	// keyed is set when the build has a cache (not NoCache): steps are
	// looked up, layers are indexed, and the report counts hits and misses
	// only then, since indexing layers is work only a cache uses.
	keyed bool
	// keys is set when steps get cache keys: with a cache, and when
	// several platforms are built (whose stages are shared by their keys,
	// see sameStage). Hashing the context's files is work only they use.
	keys bool

	// platform is the target platform; index is the builder's position in
	// its buildSet; explicit is set when the platform was asked for
	// (Options.Platforms), not the build platform by default.
	platform ocispec.Platform
	index    int
	explicit bool
	// decorate is set when the log names the platform of each step (the
	// build has several platforms, or a stage of a foreign one).
	decorate bool

	sh *shared
}

// shared is the state of a build that its platforms' builders share.
type shared struct {
	log *SyncWriter

	mu      sync.Mutex
	images  map[imageKey]*imageSource // FROM and COPY --from images and their extracted trees
	usedArg map[string]bool           // build args some ARG declared

	// lastInPlace is the stage whose tree the container's root holds now
	// (in-place isolation only).
	lastInPlace *stageResult
	// covered records which of defaultMountPoints the image in the
	// container's root has (in-place isolation only): the pod's own are
	// there, excluded.
	covered *rootfs.Covered

	// indexed holds the digests of the layers whose index this build has
	// stored, is storing or has read (see rootfs.Index); indexes holds
	// those indexes (gzip-compressed), by digest.
	indexed, indexes sync.Map
}

// errDependency marks the failure of a stage whose dependency failed.
var errDependency = errors.New("a stage it needs failed")

func isStageFailed(err error) bool { return errors.Is(err, errDependency) }

// waitStage blocks until stage i is built (it must be in the plan's order).
func (b *builder) waitStage(ctx context.Context, i int) (*stageResult, error) {
	s := b.stages[i]
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if s.err != nil {
		return nil, fmt.Errorf("stage %s: %w", b.plan.Stages[i].DisplayName(), errDependency)
	}
	return s, nil
}

func isPredefinedArg(k string) bool {
	for _, p := range dockerfile.ProxyArgs {
		if p == k {
			return true
		}
	}
	switch k {
	case "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT", "BUILDOSVERSION",
		"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "TARGETOSVERSION", "TARGETSTAGE",
		"SOURCE_DATE_EPOCH", sandboxHostnameArg, check.CheckArg:
		return true
	}
	return false
}

// SyncWriter serialises writes from concurrent goroutines (the stages of a
// build, the registry trace): each Write reaches the writer it wraps whole,
// never interleaved with another.
type SyncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewSyncWriter returns w with its writes serialised.
func NewSyncWriter(w io.Writer) *SyncWriter { return &SyncWriter{w: w} }

func (s *SyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// finalImage is the target stage's image with the --label values and the
// creation time (SOURCE_DATE_EPOCH when reproducible). Its layers are as
// the cache says a push should see them (Cache.Mountable).
func (b *builder) finalImage(ctx context.Context, target *stageResult) (v1.Image, error) {
	cfg := cloneImage(target.cfg)
	if len(b.opts.Labels) > 0 && cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	for k, v := range b.opts.Labels {
		cfg.Config.Labels[k] = v
	}
	// The image is as old as its newest step, so a rebuild served from the
	// cache is the same image (BuildKit does the same); a reproducible
	// build is as old as SOURCE_DATE_EPOCH.
	var created time.Time
	for _, h := range cfg.History {
		if h.Created != nil && h.Created.After(created) {
			created = *h.Created
		}
	}
	if created.IsZero() {
		created = b.opts.Now().UTC().Truncate(time.Second)
	}
	if b.opts.SourceDateEpoch != nil {
		created = b.opts.SourceDateEpoch.UTC()
	}
	cfg.Created = &created
	b.setPlatform(&cfg)
	oci := b.opts.Layers.OCI
	for _, l := range target.layers {
		if mt, err := l.MediaType(); err == nil && mt == types.OCILayerZStd {
			oci = true // zstd layers exist only in OCI manifests
		}
	}
	if b.opts.ImageReady != nil {
		// The same image as below (Mountable changes how a layer is
		// pushed, not what it is), before the wait.
		img, err := newImage(cloneImage(cfg), target.layers, oci)
		if err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		target.rootMu.Lock()
		tree := target.root
		target.rootMu.Unlock()
		b.opts.ImageReady(b.index, d, tree)
	}
	layers := make([]v1.Layer, len(target.layers))
	for i, l := range target.layers {
		layers[i] = b.opts.Cache.Mountable(ctx, l)
	}
	return newImage(cfg, layers, oci)
}
