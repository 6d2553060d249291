package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-dev/slipway/executor/binfmt"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// Emulator says how this machine runs the executables of a platform: the
// RUN steps of a stage of that platform.
type Emulator interface {
	// Native reports whether this machine runs executables of p itself.
	Native(p ocispec.Platform) bool
	// Handler describes what runs executables of p here, for the log (a
	// binfmt_misc handler: its name and interpreter), or returns an error
	// saying why nothing can, and how to fix that.
	Handler(p ocispec.Platform) (string, error)
}

// KernelEmulator is the kernel's binfmt_misc table (package binfmt), the
// default Emulator: a RUN step of a foreign platform execs its command as
// any other step does, and the kernel runs it through the handler
// registered for the platform's executables. Where binfmt_misc is mounted
// at dir (binfmt.DefaultDir on a node) the handler is found by the
// kernel's matching rule (binfmt.Find), and named; in a pod, whose /proc
// has no binfmt_misc mounted, by executing a probe of the platform in
// workDir (binfmt.Probe), which must allow exec.
func KernelEmulator(dir, workDir string) Emulator { return kernelEmulator{dir: dir, workDir: workDir} }

type kernelEmulator struct{ dir, workDir string }

func (kernelEmulator) Native(p ocispec.Platform) bool { return binfmt.Native(ggcrPlatform(p)) }

func (e kernelEmulator) Handler(p ocispec.Platform) (string, error) {
	gp := ggcrPlatform(p)
	if binfmt.Mounted(e.dir) {
		h, err := binfmt.Find(e.dir, gp)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("the kernel's binfmt_misc handler %s (%s, flags %s)", h.Name, h.Interpreter, h.Flags), nil
	}
	if err := binfmt.Probe(e.workDir, gp); err != nil {
		return "", err
	}
	return "a binfmt_misc handler of the kernel's (an executable of it ran here; binfmt_misc is not mounted to name the handler)", nil
}

// ggcrPlatform is p as go-containerregistry's type.
func ggcrPlatform(p ocispec.Platform) v1.Platform {
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: slices.Clone(p.OSFeatures)}
}

// imageKey names an image a build reads: its reference as written, and
// the platform it is resolved for.
type imageKey struct {
	ref, platform string
}

// buildSet is one attempt at a build: a builder per target platform,
// their shared state, and the stages they share.
type buildSet struct {
	o        Options
	sh       *shared
	builders []*builder
	// start is when the attempt started; every platform's time counts
	// from it, as their stages are built together.
	start time.Time
}

// newBuildSet makes the builders of one attempt at the build of plans (one
// per target platform): every stage not yet built, the cache mounts
// (caches) kept across attempts.
func newBuildSet(o Options, plans []*dockerfile.Plan, caches *cacheStore) (*buildSet, error) {
	sh := &shared{log: NewSyncWriter(o.Log), images: map[imageKey]*imageSource{}, usedArg: map[string]bool{}}
	set := &buildSet{o: o, sh: sh, start: time.Now()}
	layers := filepath.Join(o.WorkDir, "layers")
	if err := os.MkdirAll(layers, 0o700); err != nil {
		return nil, fail(result.ReasonInternal, fmt.Errorf("creating the work directory: %w", err))
	}
	keyed := o.Cache != NoCache()
	for i, plan := range plans {
		b := &builder{
			opts:     o,
			plan:     plan,
			log:      sh.log,
			stages:   make([]*stageResult, len(plan.Stages)),
			layers:   layers,
			caches:   caches,
			keyed:    keyed,
			keys:     keyed || len(plans) > 1,
			platform: plan.TargetPlatform,
			index:    i,
			explicit: len(o.Platforms) > 0,
			sh:       sh,
		}
		for j := range b.stages {
			b.stages[j] = &stageResult{done: make(chan struct{})}
		}
		for _, k := range plan.MetaArgNames {
			sh.usedArg[k] = true
		}
		set.builders = append(set.builders, b)
	}
	return set, nil
}

// buildAll plans every stage each platform's target needs (in order: a
// stage's plan needs its base's), sharing the stages that are the same in
// several platforms, looks every cache key up at once, makes sure every
// RUN step that will run can run here (checkEmulation), then executes
// the stages: concurrently where the isolation allows, each waiting for
// the stages it needs.
func (set *buildSet) buildAll(ctx context.Context) error {
	set.prefetchImages(ctx)
	for _, b := range set.builders {
		for _, i := range b.plan.Order {
			if err := b.planStage(ctx, i); err != nil {
				return set.located(b, i, err)
			}
			set.share(b, i)
		}
	}
	set.countConsumers()
	set.decorate()
	set.lookupAll(ctx)
	if err := set.checkEmulation(); err != nil {
		return err
	}
	set.restoreMounts(ctx)
	if set.o.Isolation == InPlace {
		// One root file system: one stage at a time, each platform's in
		// turn; a stage shared with a platform before is built already.
		for _, b := range set.builders {
			for _, i := range b.plan.Order {
				if b.stages[i].sb.b != b {
					continue
				}
				if err := b.execStage(ctx, i); err != nil {
					return err
				}
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	distinct := set.distinct()
	var wg sync.WaitGroup
	errs := make([]error, len(distinct))
	for n, s := range distinct {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.sb.b.execStage(ctx, s.sb.st.Index); err != nil {
				errs[n] = err
				cancel(err)
			}
		}()
	}
	wg.Wait()
	// Report the first failure in build order; later ones are usually the
	// cancellation it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) && !isStageFailed(err) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// located names the platform in a planning error of builder b's stage i
// when the build has several platforms (whose plans may differ).
func (set *buildSet) located(b *builder, i int, err error) error {
	if len(set.builders) < 2 {
		return err
	}
	var be *Error
	if errors.As(err, &be) && be.Platform == "" {
		be.Platform = dockerfile.FormatPlatform(b.plan.StagePlatform(i))
	}
	return err
}

// distinct are the stages the build runs, each once, in build order (each
// platform's order in turn).
func (set *buildSet) distinct() []*stageResult {
	var out []*stageResult
	seen := map[*stageResult]bool{}
	for _, b := range set.builders {
		for _, i := range b.plan.Order {
			if s := b.stages[i]; !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// share makes builder b's stage i the stage an earlier platform's builder
// planned, when sameStage says the two are the same: it is then built
// once, by that builder, for both.
func (set *buildSet) share(b *builder, i int) {
	mine := b.stages[i].sb
	for _, other := range set.builders[:b.index] {
		if i >= len(other.stages) {
			continue
		}
		theirs := other.stages[i]
		if theirs.sb != nil && sameStage(mine, theirs.sb) {
			b.stages[i] = theirs
			return
		}
	}
}

// sameStage reports whether two platforms' plans of a stage build the same
// thing: the same stage of the Dockerfile, for the same platform, from the
// same base, with steps of the same cache keys and the same resulting
// config (metadata instructions are in its history). The keys hold every
// input of a step that changes files (the command and the environment and
// args it sees, the content it copies, the stage or image it copies from
// and the platform, see fsStep), chained from the base's, so equal keys
// are equal layers. BuildKit shares such stages between the platforms of a
// build the same way: their LLB vertices are the same, and solved once.
// A stage with a step that has no key (an ADD of a URL without
// validators) is never shared.
func sameStage(a, b *stageBuilder) bool {
	if a.st.Index != b.st.Index || a.key == "" || a.key != b.key ||
		!dockerfile.SamePlatform(a.platform, b.platform) || len(a.steps) != len(b.steps) {
		return false
	}
	for i := range a.steps {
		if (a.steps[i].action == nil) != (b.steps[i].action == nil) {
			return false
		}
		if a.steps[i].action != nil && (a.steps[i].key == "" || a.steps[i].key != b.steps[i].key) {
			return false
		}
	}
	ca, err := json.Marshal(a.cfg)
	if err != nil {
		return false
	}
	cb, err := json.Marshal(b.cfg)
	return err == nil && bytes.Equal(ca, cb)
}

// countConsumers records, for every stage, how many later stages use it as
// a base or COPY --from source (a stage shared by several platforms counts
// once); a stage root with one FROM consumer is handed over instead of
// copied.
func (set *buildSet) countConsumers() {
	seen := map[*stageResult]bool{}
	for _, b := range set.builders {
		for _, i := range b.plan.Order {
			s := b.stages[i]
			if seen[s] {
				continue
			}
			seen[s] = true
			st := b.plan.Stages[i]
			if st.BaseStage >= 0 {
				b.stages[st.BaseStage].consumers++
			}
			for _, cmd := range st.Commands {
				if from := copyFrom(cmd); from != "" {
					if src := b.plan.StageForFrom(from, i); src != nil {
						b.stages[src.Index].consumers++
						b.stages[src.Index].copySources = true
					}
				}
			}
		}
	}
}

// decorate decides whether the log names each step's platform: when the
// build has several platforms, or a stage of another platform than the
// build platform.
func (set *buildSet) decorate() {
	on := len(set.builders) > 1
	for _, s := range set.distinct() {
		if !dockerfile.SamePlatform(s.sb.platform, set.o.BuildPlatform) {
			on = true
		}
	}
	for _, b := range set.builders {
		b.decorate = on
	}
}

// prefetchImages resolves every FROM and COPY --from image of the needed
// stages of every platform at once (manifests and configs only).
func (set *buildSet) prefetchImages(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range set.builders {
		for _, i := range b.plan.Order {
			st := b.plan.Stages[i]
			type want struct {
				ref string
				p   ocispec.Platform
			}
			var wants []want
			if st.BaseStage < 0 && !strings.EqualFold(st.Base, dockerfile.Scratch) {
				wants = append(wants, want{st.Base, b.plan.StagePlatform(i)})
			}
			for _, cmd := range st.Commands {
				if from := copyFrom(cmd); from != "" && b.plan.StageForFrom(from, i) == nil {
					wants = append(wants, want{from, b.platform})
				}
			}
			for _, w := range wants {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b.image(ctx, w.ref, w.p) // errors are reported where the image is used
				}()
			}
		}
	}
	wg.Wait()
}

// lookupAll asks the cache for every planned step at once. Any failure is
// a miss, reported once.
func (set *buildSet) lookupAll(ctx context.Context) {
	if set.o.Cache == NoCache() {
		return
	}
	c := set.o.Cache
	var steps []*step
	for _, s := range set.distinct() {
		for _, sp := range s.sb.steps {
			if sp.action != nil && sp.key != "" {
				steps = append(steps, sp)
			}
		}
	}
	var once sync.Once
	var g errgroup.Group
	g.SetLimit(16)
	for _, sp := range steps {
		g.Go(func() error {
			e, err := c.Lookup(ctx, sp.key)
			switch {
			case err == nil:
				sp.hit, sp.cached, sp.created = true, e.Layer, e.Created
			case errors.Is(err, cache.ErrMiss):
			default:
				once.Do(func() {
					fmt.Fprintf(set.sh.log, "WARNING: the layer cache could not be read, building without it: %v\n", err)
				})
			}
			return nil
		})
	}
	g.Wait()
}

// checkEmulation makes sure, before any step runs or any layer is pulled,
// that every RUN step the build will run can run on this machine: a step
// of a stage whose platform this machine does not run natively needs a
// binfmt_misc handler for it (Options.Emulator). A step the cache serves
// (with every step before it in its stage) does not run, and needs none.
// The first step that cannot run fails the build, reason
// PlatformUnsupported, at its line; the error says which platform and how
// to make it run (register an emulator on the node) or need no emulation
// (a FROM --platform=$BUILDPLATFORM stage that cross-compiles). The
// handler each foreign platform runs through is logged.
func (set *buildSet) checkEmulation() error {
	type answer struct {
		how string
		err error
	}
	answers := map[string]answer{}
	for _, s := range set.distinct() {
		sb := s.sb
		p := sb.platform
		if set.o.Emulator.Native(p) {
			continue
		}
		missed := false
		for _, sp := range sb.steps {
			if sp.action == nil {
				continue
			}
			if !sp.hit {
				missed = true
			}
			if _, isRun := sp.cmd.(*instructions.RunCommand); !isRun || !missed {
				continue
			}
			ps := dockerfile.FormatPlatform(p)
			a, ok := answers[ps]
			if !ok {
				a.how, a.err = set.o.Emulator.Handler(p)
				answers[ps] = a
				if a.err == nil {
					fmt.Fprintf(set.sh.log, "RUN steps for %s run through %s\n", ps, a.how)
				}
			}
			if a.err != nil {
				err := fmt.Errorf("RUN in stage %s for %s: %w; or build it without emulation: on a %s node, or cross-compiled in a stage FROM --platform=$BUILDPLATFORM", sb.st.DisplayName(), ps, a.err, ps)
				e := withLine(fail(result.ReasonPlatformUnsupported, err), sp.cmd).(*Error)
				e.Platform = ps
				return e
			}
			break
		}
	}
	return nil
}

// report is the build's report: every stage once, in the order built, the
// cache's hits and misses, the images read, and each platform's build
// (with its image's digest, when imgs has it).
func (set *buildSet) report(imgs []PlatformImage) *Report {
	rep := &Report{}
	for _, s := range set.distinct() {
		if s.sb == nil {
			continue
		}
		rep.Stages = append(rep.Stages, s.report)
		// A hit after a miss in its stage is not used (the step runs on the
		// rebuilt tree), so count what each stage used.
		rep.CacheHits += s.sb.hits
		rep.CacheMisses += s.sb.keyed - s.sb.hits
	}
	rep.Bases, rep.BasesOmitted = set.bases()
	rep.Materials = set.materials()
	for n, b := range set.builders {
		pr := result.Platform{Platform: dockerfile.FormatPlatform(b.platform)}
		var last time.Time
		for _, i := range b.plan.Order {
			s := b.stages[i]
			if s.sb == nil {
				continue
			}
			pr.Stages = append(pr.Stages, s.report)
			pr.CacheHits += s.sb.hits
			pr.CacheMisses += s.sb.keyed - s.sb.hits
			if s.finished.After(last) {
				last = s.finished
			}
		}
		if !last.IsZero() {
			pr.Millis = result.Millis(last.Sub(set.start))
		}
		if n < len(imgs) {
			if d, err := imgs[n].Image.Digest(); err == nil {
				pr.Digest = d.String()
			}
		}
		rep.Platforms = append(rep.Platforms, pr)
		// The target's root, while it is whole (storeResult) and no
		// consumer took it (takeRoot).
		target := b.stages[b.plan.Target]
		target.rootMu.Lock()
		rep.Trees = append(rep.Trees, target.root)
		target.rootMu.Unlock()
	}
	return rep
}

// warnUnusedArgs warns of the build args no ARG of any platform's stages
// declared.
func (set *buildSet) warnUnusedArgs() {
	var unused []string
	for k := range set.o.BuildArgs {
		if !set.sh.usedArg[k] && !isPredefinedArg(k) {
			unused = append(unused, k)
		}
	}
	slices.Sort(unused)
	if len(unused) > 0 {
		fmt.Fprintf(set.sh.log, "WARNING: One or more build-args %v were not consumed\n", unused)
	}
}

// setPlatform gives the final image's config its platform, as BuildKit's
// finalizeResultImage does: for a platform that was asked for, its OS and
// architecture, and its variant (and OS version) when it has one or when
// the OS or architecture changed, whatever the target stage was built
// from (a stage FROM --platform=$BUILDPLATFORM too: "you are not supposed
// to return the stage with binaries for this different architecture",
// moby/buildkit#6518); without one (implicit), the base's. Either way
// normalised (platforms.Normalize).
func (b *builder) setPlatform(cfg *dockerspec.DockerOCIImage) {
	if b.explicit {
		tp := b.platform
		sameOSArch := tp.OS == cfg.OS && tp.Architecture == cfg.Architecture
		cfg.OS, cfg.Architecture = tp.OS, tp.Architecture
		if tp.Variant != "" || !sameOSArch {
			cfg.Variant = tp.Variant
		}
		if tp.OSVersion != "" || !sameOSArch {
			cfg.OSVersion = tp.OSVersion
		}
		if tp.OSFeatures != nil {
			cfg.OSFeatures = slices.Clone(tp.OSFeatures)
		}
	}
	cfg.Platform = platforms.Normalize(cfg.Platform)
}

// platformPrefix is what a step's log prefix starts with when the log
// names platforms (BuildKit's prefixCommand with prefixPlatform): the
// stage's platform, and "->ARCH" (or "->OS/ARCH") when the TARGET* args
// the step sees name another one: a cross-compiling step
// (formatTargetPlatform, platformFromEnv).
func platformPrefix(p ocispec.Platform, env shell.EnvGetter) string {
	s := platforms.FormatAll(p)
	t := platformFromEnv(env)
	if t == nil {
		return s
	}
	if t.OS == "" {
		t.OS = p.OS
	}
	if t.Architecture == "" {
		t.Architecture = p.Architecture
	}
	tn := platforms.Normalize(*t)
	switch {
	case tn.OS == p.OS && tn.Architecture != p.Architecture:
		arch := tn.Architecture
		if tn.Variant != "" {
			arch += "/" + tn.Variant
		}
		return s + "->" + arch
	case tn.OS != p.OS:
		return s + "->" + platforms.FormatAll(tn)
	}
	return s
}

// platformFromEnv is the platform the TARGET* variables of env name, nil
// when it has none (BuildKit's platformFromEnv).
func platformFromEnv(env shell.EnvGetter) *ocispec.Platform {
	var p ocispec.Platform
	set := false
	for _, k := range env.Keys() {
		v, _ := env.Get(k)
		switch k {
		case "TARGETPLATFORM":
			if pp, err := platforms.Parse(v); err == nil {
				return &pp
			}
		case "TARGETOS":
			p.OS, set = v, true
		case "TARGETARCH":
			p.Architecture, set = v, true
		case "TARGETVARIANT":
			p.Variant, set = v, true
		}
	}
	if !set {
		return nil
	}
	return &p
}
