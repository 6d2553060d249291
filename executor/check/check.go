// Package check evaluates build checks on a Dockerfile: BuildKit's rules
// (`docker build --check`, the rules of
// github.com/moby/buildkit/frontend/dockerfile/linter), detected where and
// as BuildKit's frontend detects them (dockerfile2llb's convert.go,
// validations.go and convert_expose.go, and the instructions package's
// parser), plus two rules of ours, RootUser and NoHealthcheck.
//
// The checks read the Dockerfile, the build arguments, the context's
// .dockerignore patterns and the config of each base image (the caller
// resolves it: BaseImage), never a file of the context or an image's
// layers. They run no step. Findings quote the Dockerfile (a stage name, a
// variable's name, a path) but never the value of an ARG or ENV whose key
// looks secret: SecretsUsedInArgOrEnv names the key only, as BuildKit does.
//
// Which rules run, and whether a finding fails the build, is BuildKit's
// `# check=skip=...;error=true` directive (or the build argument
// BUILDKIT_DOCKERFILE_CHECK, which replaces it), and Options.FailOn, the
// builder's own policy: a rule named there is evaluated even where the
// Dockerfile skips it, and its findings fail the build.
package check

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
)

// CheckArg is the build argument that sets the checks' configuration in
// place of the Dockerfile's `# check=` directive (BuildKit's dockerui
// keyDockerfileLintArg, "build-arg:BUILDKIT_DOCKERFILE_CHECK").
const CheckArg = "BUILDKIT_DOCKERFILE_CHECK"

// All, in Options.FailOn, names every rule that is not experimental.
const All = "all"

// Finding is one rule's finding.
type Finding struct {
	// Rule is the rule's name, e.g. "JSONArgsRecommended".
	Rule string
	// Line is the 1-based Dockerfile line the finding is about.
	Line int
	// Message says what was found, in one line (the rule's Format).
	Message string
	// URL documents the rule.
	URL string
	// Error is set when the finding fails the build: the Dockerfile's
	// check=error=true (or BUILDKIT_DOCKERFILE_CHECK's), or the rule is in
	// Options.FailOn.
	Error bool
}

// String is the finding as BuildKit shows it (linter.LintFormatShort):
// "Rule: message (line N)".
func (f Finding) String() string {
	return linter.LintFormatShort(f.Rule, f.Message, f.Line)
}

// Options are the inputs of the checks besides the Dockerfile.
type Options struct {
	// BuildArgs are the --build-arg values. BUILDKIT_DOCKERFILE_CHECK among
	// them replaces the Dockerfile's `# check=` directive.
	BuildArgs map[string]string
	// Target is the stage built (empty: the last); its image is the one
	// RootUser and NoHealthcheck are about.
	Target string
	// Stages are the indexes of the stages whose instructions are
	// evaluated (with the stages they are built FROM): those the build
	// runs, as BuildKit's build evaluates only the stages its target
	// needs. Nil evaluates every stage, as `docker build --check` without
	// a target does. Rules of the FROM lines and of the Dockerfile as a
	// whole (casing, stage names, the base names' defaults) are evaluated
	// for every stage in any case, as BuildKit does.
	Stages []int
	// IgnorePatterns are the context's .dockerignore patterns, for
	// CopyIgnoredFile; nil when there is none.
	IgnorePatterns []string
	// BaseImage returns the config of the image a stage is built FROM
	// (the expanded FROM name; never a stage's or scratch). Nil, or an
	// error, leaves the base unknown: the rules that need it (UndefinedVar,
	// JSONArgsRecommended, InvalidBaseImagePlatform, RootUser,
	// NoHealthcheck) are not evaluated for that stage.
	// It is asked for the platform the stage is built for (its FROM
	// --platform, else the target platform).
	BaseImage func(ref string, platform ocispec.Platform) (*dockerspec.DockerOCIImage, error)
	// Platform and BuildPlatform are the target and build platforms (nil:
	// this machine's), as in dockerfile.Options.
	Platform, BuildPlatform *ocispec.Platform
	// FailOn are rules whose findings fail the build, or All.
	FailOn []string
	// Skip are rules not evaluated, or All, added to those the
	// Dockerfile's directive (or BUILDKIT_DOCKERFILE_CHECK) skips, as a
	// skip in a comment above an instruction adds to them. FailOn wins
	// over it.
	Skip []string
}

// Report is what the checks found.
type Report struct {
	// Findings are sorted by line, then in the order they were found.
	Findings []Finding
	// ErrorDirective is set when the Dockerfile's check=error=true (or
	// BUILDKIT_DOCKERFILE_CHECK's) makes every finding an error.
	ErrorDirective bool
	// FailOn is Options.FailOn.
	FailOn []string
}

// failsOn reports whether FailOn names rule, or All does.
func (r *Report) failsOn(rule string) bool {
	return failsOn(r.FailOn, rule)
}

func failsOn(policy []string, rule string) bool {
	if slices.Contains(policy, rule) {
		return true
	}
	ru := Lookup(rule)
	return slices.Contains(policy, All) && ru != nil && !ru.Experimental
}

// Errors are the findings that fail the build.
func (r *Report) Errors() []Finding {
	if r == nil {
		return nil
	}
	var out []Finding
	for _, f := range r.Findings {
		if f.Error {
			out = append(out, f)
		}
	}
	return out
}

// Err is nil when no finding fails the build, else a *dockerfile.Error
// naming the rules that do, in BuildKit's words ("lint violation found
// for rules: ..."), and why they fail it, at the line of the first such
// finding.
func (r *Report) Err() error {
	errs := r.Errors()
	if len(errs) == 0 {
		return nil
	}
	var rules []string
	var byPolicy, byDirective bool
	for _, f := range errs {
		s := fmt.Sprintf("%s (line %d)", f.Rule, f.Line)
		if !slices.Contains(rules, s) {
			rules = append(rules, s)
		}
		if r.failsOn(f.Rule) {
			byPolicy = true
		} else {
			byDirective = true
		}
	}
	var why []string
	if byPolicy {
		why = append(why, "--check-fail-on")
	}
	if byDirective {
		why = append(why, "the check=error=true directive")
	}
	msg := "lint violation found for rules: " + strings.Join(rules, ", ")
	if len(why) > 0 {
		msg += " (failing the build: " + strings.Join(why, " and ") + ")"
	}
	return &dockerfile.Error{Line: errs[0].Line, Err: errors.New(msg)}
}

// ParseRules parses a --check-fail-on or --check-skip value: rule names
// separated by commas (as BuildKit names them, case-sensitively), or
// "all".
func ParseRules(s string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if name != All && Lookup(name) == nil {
			return nil, fmt.Errorf("unknown build check rule %q (want one of %s, or %s)", name, strings.Join(RuleNames(), ", "), All)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Run evaluates the checks on the Dockerfile dt. The findings it returns
// are those found before an error that stops the checks (a Dockerfile the
// build would refuse too), which it returns with them; a configuration
// that cannot be parsed (the `# check=` directive, BUILDKIT_DOCKERFILE_CHECK)
// is an error with no findings, as it fails BuildKit's build.
func Run(dt []byte, o Options) (*Report, error) {
	cfg, err := lintConfig(dt, o.BuildArgs)
	if err != nil {
		return nil, err
	}
	for _, name := range o.Skip {
		if name == All {
			cfg.SkipAll = true
		} else {
			cfg.SkipRules = append(cfg.SkipRules, name)
		}
	}
	rep := &Report{ErrorDirective: cfg.ReturnAsError, FailOn: o.FailOn}
	fails := rep.failsOn

	found, runErr := evaluate(dt, o, cfg, false)
	for _, f := range found {
		if fails(f.Rule) {
			continue // the policy's run below reports it
		}
		f.Error = cfg.ReturnAsError
		rep.Findings = append(rep.Findings, f)
	}
	if len(o.FailOn) > 0 {
		// The builder's policy: the rules it fails on are evaluated with
		// nothing skipped, whatever the Dockerfile's directives say.
		policy := &linter.Config{}
		for _, name := range o.FailOn {
			if r := Lookup(name); r != nil && r.Experimental {
				policy.ExperimentalRules = append(policy.ExperimentalRules, name)
			}
		}
		strict, _ := evaluate(dt, o, policy, true)
		for _, f := range strict {
			if fails(f.Rule) {
				f.Error = true
				rep.Findings = append(rep.Findings, f)
			}
		}
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool { return rep.Findings[i].Line < rep.Findings[j].Line })
	return rep, runErr
}

// lintConfig is the checks' configuration: BUILDKIT_DOCKERFILE_CHECK when
// it is a build argument, else the Dockerfile's `# check=` directive, as
// BuildKit's newRuleLinter and dockerui read them (the build argument
// replaces the directive; it does not merge with it).
func lintConfig(dt []byte, buildArgs map[string]string) (*linter.Config, error) {
	if v, ok := buildArgs[CheckArg]; ok {
		cfg, err := linter.ParseLintOptions(v)
		if err != nil {
			return nil, &dockerfile.Error{Err: fmt.Errorf("parsing the build argument %s: %w", CheckArg, err)}
		}
		return cfg, nil
	}
	v, _, loc, _ := parser.ParseDirective("check", dt)
	cfg, err := linter.ParseLintOptions(v)
	if err != nil {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		return nil, &dockerfile.Error{Line: line, Err: fmt.Errorf("failed to parse check options: %w", err)}
	}
	return cfg, nil
}
