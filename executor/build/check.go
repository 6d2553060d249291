package build

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// Checks are the build checks of a build (executor/check): BuildKit's
// Dockerfile rules and ours, evaluated once the base images' configs are
// known and before the first step, as BuildKit evaluates them while it
// plans the build.
type Checks struct {
	// FailOn are the rules whose findings fail the build (reason
	// CheckFailed) before anything runs, or check.All; the Dockerfile's
	// `# check=skip=...` does not waive them. Its check=error=true fails
	// the build on any finding too.
	FailOn []string
	// Skip are rules not evaluated (check.Options.Skip), or check.All.
	Skip []string
	// Found receives the findings once, before the first step (and also
	// when they then fail the build, or the Dockerfile does not parse).
	Found func(*check.Report)
}

// runChecks evaluates the checks on the stages the build runs, with the
// configs of their base images (pulled once, for the checks and the
// build), for each platform (their findings merged: mergeReports), logs
// the findings as warnings, hands them to Found, and fails the build when
// one of them is an error. An error the checks meet in the Dockerfile is
// left to the build, which reports it where it meets it; only a check
// configuration that does not parse fails here, as it fails BuildKit's
// build.
func (set *buildSet) runChecks(ctx context.Context) error {
	if set.o.Checks == nil {
		return nil
	}
	set.prefetchImages(ctx)
	var merged *check.Report
	for _, b := range set.builders {
		opts, _ := b.checkOptions(ctx, b.plan.Order)
		rep, err := check.Run(b.opts.Dockerfile, opts)
		if rep == nil {
			return fail(result.ReasonDockerfileInvalid, err)
		}
		merged = mergeReports(merged, rep)
	}
	set.builders[0].reportChecks(merged)
	return fail(result.ReasonCheckFailed, merged.Err())
}

// mergeReports adds the findings of b (the checks of another platform)
// that a does not have to a, sorted by line as Run sorts them.
func mergeReports(a, b *check.Report) *check.Report {
	if a == nil {
		return b
	}
	for _, f := range b.Findings {
		if !slices.Contains(a.Findings, f) {
			a.Findings = append(a.Findings, f)
		}
	}
	slices.SortStableFunc(a.Findings, func(x, y check.Finding) int { return x.Line - y.Line })
	return a
}

// checkOptions are the checks' options for the given stages (nil: every
// stage) of the builder's platform; pullErr returns the first error
// resolving a base image, as the build would fail on it
// (BaseImagePullFailed, at the first FROM naming it when the plan is
// known).
func (b *builder) checkOptions(ctx context.Context, stages []int) (opts check.Options, pullErr func() error) {
	var mu sync.Mutex
	var first error
	opts = check.Options{
		BuildArgs:     b.opts.BuildArgs,
		Target:        b.opts.Target,
		Stages:        stages,
		FailOn:        b.opts.Checks.FailOn,
		Skip:          b.opts.Checks.Skip,
		Platform:      &b.platform,
		BuildPlatform: &b.opts.BuildPlatform,
		BaseImage: func(ref string, p ocispec.Platform) (*dockerspec.DockerOCIImage, error) {
			src, err := b.image(ctx, ref, p)
			if err != nil {
				mu.Lock()
				if first == nil {
					e := &Error{Reason: result.ReasonBaseImagePullFailed, Err: err}
					for _, st := range b.planStages() {
						if st.BaseStage < 0 && st.Base == ref {
							e.Line, e.Instruction = st.Line, result.Redact(st.Source)
							break
						}
					}
					first = e
				}
				mu.Unlock()
				return nil, err
			}
			cfg := cloneImage(src.cfg)
			return &cfg, nil
		},
	}
	if b.opts.Context != nil {
		opts.IgnorePatterns = b.opts.Context.Patterns
	}
	return opts, func() error {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
}

// planStages are the plan's stages, none when the Dockerfile did not
// plan (Check).
func (b *builder) planStages() []*dockerfile.Stage {
	if b.plan == nil {
		return nil
	}
	return b.plan.Stages
}

// reportChecks logs the findings, as BuildKit's progress shows them
// ("WARN: Rule: message (line N)", and the rule's URL), those that fail
// the build as "ERROR:", and hands them to Found.
func (b *builder) reportChecks(rep *check.Report) {
	logFindings(b.log, rep)
	if b.opts.Checks.Found != nil {
		b.opts.Checks.Found(rep)
	}
}

func logFindings(w io.Writer, rep *check.Report) {
	for _, f := range rep.Findings {
		level := "WARN"
		if f.Error {
			level = "ERROR"
		}
		fmt.Fprintf(w, "%s: %s %s\n", level, result.Excerpt(f.String(), 300), result.Excerpt(f.URL, 200))
	}
}

// checksBeforeError reports the findings of a Dockerfile that does not
// parse, those the checks make before the error (BuildKit's
// testWarningsBeforeError), without base images.
func checksBeforeError(o Options) {
	if o.Checks == nil {
		return
	}
	opts := check.Options{BuildArgs: o.BuildArgs, Target: o.Target, FailOn: o.Checks.FailOn, Skip: o.Checks.Skip}
	if o.Context != nil {
		opts.IgnorePatterns = o.Context.Patterns
	}
	rep, _ := check.Run(o.Dockerfile, opts)
	if rep == nil {
		return
	}
	logFindings(o.Log, rep)
	if o.Checks.Found != nil {
		o.Checks.Found(rep)
	}
}

// Check evaluates the build checks without building (the executor's
// --check, BuildKit's `docker build --check`): every stage, or those the
// target needs when o.Target is set, with their base images' configs. It
// logs the findings and returns them, with an error when one fails the
// build (CheckFailed), when the Dockerfile cannot be built here
// (DockerfileInvalid: it does not parse, or the checks met an error in
// it), or when a base image could not be pulled (BaseImagePullFailed).
// Nothing runs, and no layer is pulled.
func Check(ctx context.Context, o Options) (*check.Report, error) {
	o = o.withDefaults()
	if o.Checks == nil {
		o.Checks = &Checks{}
	}
	targets := o.Platforms
	if len(targets) == 0 {
		targets = []ocispec.Platform{o.BuildPlatform}
	}
	sh := &shared{log: NewSyncWriter(o.Log), images: map[imageKey]*imageSource{}}
	var merged *check.Report
	var firstErr error
	for i := range targets {
		plan, planErr := dockerfile.Parse(o.Dockerfile, dockerfile.Options{BuildArgs: o.BuildArgs, Target: o.Target, Platform: &targets[i], BuildPlatform: &o.BuildPlatform})
		var stages []int
		if plan != nil && o.Target != "" {
			stages = plan.Order
		}
		b := &builder{opts: o, plan: plan, log: sh.log, sh: sh, platform: targets[i]}
		opts, pullErr := b.checkOptions(ctx, stages)
		rep, err := check.Run(o.Dockerfile, opts)
		if rep == nil {
			return nil, fail(result.ReasonDockerfileInvalid, err)
		}
		merged = mergeReports(merged, rep)
		switch {
		case firstErr != nil:
		case planErr != nil:
			firstErr = fail(result.ReasonDockerfileInvalid, planErr)
		case err != nil:
			firstErr = fail(result.ReasonDockerfileInvalid, err)
		case pullErr() != nil:
			firstErr = pullErr()
		}
	}
	b := &builder{opts: o, log: sh.log, sh: sh}
	b.reportChecks(merged)
	if firstErr != nil {
		return merged, firstErr
	}
	return merged, fail(result.ReasonCheckFailed, merged.Err())
}
