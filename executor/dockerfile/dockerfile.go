// Package dockerfile turns a Dockerfile into a build plan: its stages, the
// global (meta) build arguments, which stages the target needs and in which
// order. Parsing is buildkit's (the parser and instruction packages that
// `docker build` itself uses); this package adds the stage graph and the
// rules of ARG scoping that Docker applies before anything runs.
//
// Word expansion of instructions (ARG and ENV values in COPY sources, WORKDIR,
// USER, ...) depends on the base image's environment, so it happens when a
// stage is built; Plan only expands what Docker expands before the build: the
// FROM lines.
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Scratch is the name of the empty base image.
const Scratch = "scratch"

// Error is a Dockerfile error with the line it refers to.
type Error struct {
	// Line is the 1-based line of the instruction, 0 when unknown.
	Line int
	// Instruction is the instruction's source text, when known.
	Instruction string
	Err         error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("Dockerfile line %d: %v", e.Line, e.Err)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// WithLine attaches the location of cmd to err, unless err already has one.
func WithLine(err error, cmd instructions.Command) error {
	if err == nil {
		return nil
	}
	var de *Error
	if errors.As(err, &de) {
		return err
	}
	e := &Error{Err: err}
	if cmd != nil {
		e.Line = firstLine(cmd.Location())
		if s, ok := cmd.(fmt.Stringer); ok {
			e.Instruction = s.String()
		}
	}
	return e
}

func firstLine(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// locationError converts buildkit's location errors into *Error.
func locationError(err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		return &Error{Line: le.Locations[0][0].Start.Line, Err: errors.Unwrap(le)}
	}
	var ue *instructions.UnknownInstructionError
	if errors.As(err, &ue) {
		return &Error{Line: ue.Line, Err: err}
	}
	return &Error{Err: err}
}

// Options are the inputs of a build that shape its plan.
type Options struct {
	// BuildArgs are the --build-arg values. Only arguments declared with ARG
	// (and the predefined proxy arguments) are used.
	BuildArgs map[string]string
	// Target is the stage to build; empty means the last one.
	Target string
	// Platform is the platform built for (TARGETPLATFORM), normalised as
	// ParsePlatform does; nil is BuildPlatform, implicitly (BuildKit's
	// implicitTarget).
	Platform *ocispec.Platform
	// BuildPlatform is the platform the build runs on (BUILDPLATFORM); nil
	// is this machine's (NativePlatform).
	BuildPlatform *ocispec.Platform
}

// platforms returns the build and target platforms of o, with their
// defaults.
func (o Options) platforms() (build, target ocispec.Platform) {
	build = NativePlatform()
	if o.BuildPlatform != nil {
		build = *o.BuildPlatform
	}
	target = build
	if o.Platform != nil {
		target = *o.Platform
	}
	return build, target
}

// Stage is one FROM section of a Dockerfile.
type Stage struct {
	// Index is the stage's position in the Dockerfile, from 0.
	Index int
	// Name is the stage's name (FROM ... AS name), lower-cased; may be empty.
	Name string
	// Base is the expanded FROM argument: an image reference, "scratch",
	// or the name of an earlier stage (then BaseStage is set).
	Base string
	// BaseStage is the index of the stage this one builds on, or -1.
	BaseStage int
	// Platform is the expanded and parsed --platform value of FROM, nil
	// without one. The platform the stage is built for is Plan.StagePlatform.
	Platform *ocispec.Platform
	// Commands are the stage's instructions after FROM.
	Commands []instructions.Command
	// Line is the line of the FROM instruction.
	Line int
	// Source is the FROM instruction as written.
	Source string
}

// DisplayName is the stage's name, or its index when it has none.
func (s *Stage) DisplayName() string {
	if s.Name != "" {
		return s.Name
	}
	return strconv.Itoa(s.Index)
}

// Plan is a parsed Dockerfile and the order in which its stages are built.
type Plan struct {
	Stages []*Stage
	// Target is the index of the stage whose image is the build's result.
	Target int
	// Order lists the stages the target needs, each after the stages it
	// depends on; stages the target does not need are not in it.
	Order []int
	// GlobalArgs are the meta arguments (ARG before the first FROM, the
	// platform arguments Docker predefines, overridden by build args), in the
	// form FROM lines and stage-level `ARG NAME` see them.
	GlobalArgs *Env
	// Escape is the escape token (`# escape=` directive).
	Escape rune
	// Lex is the word expander configured with the escape token.
	Lex *shell.Lex
	// MetaArgNames are the names the ARGs before the first FROM declare.
	MetaArgNames []string
	// MetaArgLines are the lines of those ARGs, by name (the last one
	// declaring it), for errors about their values.
	MetaArgLines map[string]int
	// Warnings are non-fatal findings (empty continuation lines, unused
	// build args), for the log.
	Warnings []string
	// TargetPlatform and BuildPlatform are the platforms the plan is for
	// (Options.Platform and Options.BuildPlatform, with their defaults).
	TargetPlatform, BuildPlatform ocispec.Platform
}

// Parse reads a Dockerfile and plans its build.
func Parse(dt []byte, opts Options) (*Plan, error) {
	if len(bytes.TrimSpace(dt)) == 0 {
		return nil, &Error{Err: errors.New("the Dockerfile is empty")}
	}
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return nil, locationError(err)
	}
	var warnings []string
	for _, w := range res.Warnings {
		warnings = append(warnings, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, locationError(err)
	}
	if len(stages) == 0 {
		// BuildKit's words (dockerfile2llb), and what they mean here.
		return nil, &Error{Err: errors.New("dockerfile contains no stages to build: the Dockerfile has no FROM instruction")}
	}
	p := &Plan{Escape: res.EscapeToken, Lex: shell.NewLex(res.EscapeToken), Warnings: warnings}
	p.BuildPlatform, p.TargetPlatform = opts.platforms()

	targetName := opts.Target
	if targetName == "" {
		targetName = stages[len(stages)-1].Name
	}
	p.GlobalArgs = defaultArgs(opts, targetName)
	p.MetaArgLines = map[string]int{}
	for _, cmd := range metaArgs {
		for _, kv := range cmd.Args {
			p.MetaArgNames = append(p.MetaArgNames, kv.Key)
			p.MetaArgLines[kv.Key] = firstLine(cmd.Location())
			if v, ok := opts.BuildArgs[kv.Key]; ok {
				p.GlobalArgs.Set(kv.Key, v)
				continue
			}
			if kv.Value == nil {
				// Declared without a default: visible to FROM only when
				// set as a build arg, which the branch above handled.
				continue
			}
			v, _, err := p.Lex.ProcessWord(*kv.Value, p.GlobalArgs)
			if err != nil {
				return nil, WithLine(fmt.Errorf("expanding ARG %s: %w", kv.Key, err), &cmd)
			}
			p.GlobalArgs.Set(kv.Key, v)
		}
	}

	byName := map[string]int{}
	for i, st := range stages {
		s := &Stage{
			Index:     i,
			Name:      strings.ToLower(st.Name),
			BaseStage: -1,
			Commands:  st.Commands,
			Line:      firstLine(st.Location),
			Source:    st.SourceCode,
		}
		base, _, err := p.Lex.ProcessWord(st.BaseName, p.GlobalArgs)
		if err != nil {
			return nil, &Error{Line: s.Line, Instruction: s.Source, Err: fmt.Errorf("expanding the base name %q: %w", st.BaseName, err)}
		}
		if base == "" {
			return nil, &Error{Line: s.Line, Instruction: s.Source, Err: fmt.Errorf("base name (%s) should not be blank", st.BaseName)}
		}
		s.Base = base
		if idx, ok := byName[strings.ToLower(base)]; ok {
			s.BaseStage = idx
		}
		if st.Platform != "" {
			// BuildKit's buildDispatchStates: the value expanded with
			// the global args, then platforms.Parse (which normalises it).
			plat, _, err := p.Lex.ProcessWord(st.Platform, p.GlobalArgs)
			if err != nil {
				return nil, &Error{Line: s.Line, Instruction: s.Source, Err: fmt.Errorf("failed to process arguments for platform %s: %w", st.Platform, err)}
			}
			if plat == "" {
				return nil, &Error{Line: s.Line, Instruction: s.Source, Err: fmt.Errorf("empty platform value from expression %s", st.Platform)}
			}
			pp, err := ParsePlatform(plat)
			if err != nil {
				return nil, &Error{Line: s.Line, Instruction: s.Source, Err: fmt.Errorf("failed to parse platform %s: %w", st.Platform, err)}
			}
			s.Platform = &pp
		}
		if s.Name != "" {
			if _, dup := byName[s.Name]; dup {
				return nil, &Error{Line: s.Line, Instruction: s.Source, Err: fmt.Errorf("duplicate stage name %q", st.Name)}
			}
			byName[s.Name] = i
		}
		p.Stages = append(p.Stages, s)
	}

	p.Target = len(p.Stages) - 1
	if opts.Target != "" {
		idx, ok := byName[strings.ToLower(opts.Target)]
		if !ok {
			// A near miss is suggested, as BuildKit does (suggest.WrapError
			// over the stage names).
			var names []string
			for _, st := range p.Stages {
				if st.Name != "" {
					names = append(names, st.Name)
				}
			}
			return nil, &Error{Err: suggest.WrapError(fmt.Errorf("target stage %q could not be found", opts.Target), opts.Target, names, true)}
		}
		p.Target = idx
	}

	deps := make([][]int, len(p.Stages))
	for _, s := range p.Stages {
		cmds := s.Commands
		if s.BaseStage >= 0 {
			deps[s.Index] = append(deps[s.Index], s.BaseStage)
			// The base stage's ONBUILD triggers run first in this stage, and
			// what they read is this stage's to wait for too (BuildKit's
			// "initialize onbuild triggers in case they create new
			// dependencies", initOnBuildTriggers).
			triggers, err := p.stageTriggers(p.Stages[s.BaseStage], s.Line)
			if err != nil {
				return nil, err
			}
			cmds = append(triggers, cmds...)
		}
		for _, cmd := range cmds {
			for _, from := range readsFrom(cmd) {
				idx, isStage, err := p.resolveFrom(from, s.Index, byName)
				if err != nil {
					return nil, WithLine(err, cmd)
				}
				if isStage {
					deps[s.Index] = append(deps[s.Index], idx)
				}
			}
		}
	}
	p.Order = order(p.Target, deps)
	return p, nil
}

// readsFrom returns the stages or images cmd reads: COPY --from and
// RUN --mount=from.
func readsFrom(cmd instructions.Command) []string {
	var froms []string
	switch c := cmd.(type) {
	case *instructions.CopyCommand:
		froms = append(froms, c.From)
	case *instructions.RunCommand:
		for _, m := range instructions.GetMounts(c) {
			froms = append(froms, m.From)
		}
	}
	return slices.DeleteFunc(froms, func(f string) bool { return f == "" })
}

// stageTriggers parses the ONBUILD instructions of stage st as the stage
// built FROM it (at line) will run them.
func (p *Plan) stageTriggers(st *Stage, line int) ([]instructions.Command, error) {
	var exprs []string
	for _, cmd := range st.Commands {
		if ob, ok := cmd.(*instructions.OnbuildCommand); ok {
			exprs = append(exprs, ob.Expression)
		}
	}
	if len(exprs) == 0 {
		return nil, nil
	}
	return ParseTriggers(exprs, line)
}

// resolveFrom resolves the --from of a COPY in stage cur: an earlier stage
// by name or index, or else an image reference.
func (p *Plan) resolveFrom(from string, cur int, byName map[string]int) (idx int, isStage bool, err error) {
	if res, _, err := p.Lex.ProcessWord(from, EnvFromSlice(nil)); err != nil || res != from {
		return 0, false, errors.New("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")
	}
	if n, err := strconv.Atoi(from); err == nil {
		if n < 0 || n >= cur {
			return 0, false, fmt.Errorf("invalid from flag value %d: refers to current or future build stage", n)
		}
		return n, true, nil
	}
	if i, ok := byName[strings.ToLower(from)]; ok {
		if i >= cur {
			return 0, false, fmt.Errorf("cannot copy from stage %q, it needs to be defined before the current stage", from)
		}
		return i, true, nil
	}
	return 0, false, nil
}

// StageForFrom returns the stage a COPY --from value in stage cur refers to,
// or nil when it names an image.
func (p *Plan) StageForFrom(from string, cur int) *Stage {
	for _, s := range p.Stages[:cur] {
		if s.Name != "" && strings.EqualFold(s.Name, from) {
			return s
		}
	}
	if n, err := strconv.Atoi(from); err == nil && n >= 0 && n < cur {
		return p.Stages[n]
	}
	return nil
}

// order returns target's dependencies in build order (depth first, each
// stage after what it needs, in Dockerfile order among equals), then target.
func order(target int, deps [][]int) []int {
	seen := make([]bool, len(deps))
	var out []int
	var visit func(int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		for _, d := range deps[i] {
			visit(d)
		}
		out = append(out, i)
	}
	visit(target)
	return out
}

// ParseTriggers parses ONBUILD trigger expressions from a base image's
// config, as if they were written in the Dockerfile at line.
func ParseTriggers(triggers []string, line int) ([]instructions.Command, error) {
	var cmds []instructions.Command
	for _, t := range triggers {
		res, err := parser.Parse(strings.NewReader(t))
		if err != nil {
			return nil, &Error{Line: line, Err: fmt.Errorf("parsing ONBUILD trigger %q: %w", t, err)}
		}
		if len(res.AST.Children) != 1 {
			return nil, &Error{Line: line, Err: fmt.Errorf("ONBUILD trigger %q should be a single expression", t)}
		}
		node := res.AST.Children[0]
		node.StartLine, node.EndLine = line, line
		cmd, err := instructions.ParseCommand(node)
		if err != nil {
			return nil, &Error{Line: line, Err: fmt.Errorf("parsing ONBUILD trigger %q: %w", t, err)}
		}
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

// ProxyArgs are the build arguments Docker predefines: they reach RUN
// without an ARG instruction, and are left out of the image's history.
var ProxyArgs = []string{
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
	"FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
}

// DefaultArgs are the build arguments Docker predefines for FROM lines
// (the build and target platforms, TARGETSTAGE) for the target stage
// named target, overridden by opts.BuildArgs.
func DefaultArgs(opts Options, target string) *Env { return defaultArgs(opts, target) }

// defaultArgs are BuildKit's (dockerfile2llb's defaultArgs): BUILDPLATFORM
// is platforms.Format of the build platform, TARGETPLATFORM
// platforms.FormatAll of the target (with its OS version, when it has one).
func defaultArgs(opts Options, target string) *Env {
	bp, tp := opts.platforms()
	if target == "" {
		target = "default"
	}
	e := &Env{}
	for _, kv := range [][2]string{
		{"BUILDPLATFORM", platforms.Format(bp)}, {"BUILDOS", bp.OS}, {"BUILDOSVERSION", bp.OSVersion}, {"BUILDARCH", bp.Architecture}, {"BUILDVARIANT", bp.Variant},
		{"TARGETPLATFORM", platforms.FormatAll(tp)}, {"TARGETOS", tp.OS}, {"TARGETOSVERSION", tp.OSVersion}, {"TARGETARCH", tp.Architecture}, {"TARGETVARIANT", tp.Variant},
		{"TARGETSTAGE", target},
	} {
		v := kv[1]
		if ov, ok := opts.BuildArgs[kv[0]]; ok {
			v = ov
		}
		e.Set(kv[0], v)
	}
	return e
}
