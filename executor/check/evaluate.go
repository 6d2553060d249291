package check

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/patternmatcher"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
)

// defaultPath is the PATH a stage has when its image sets none (BuildKit:
// "make sure that PATH is always set", system.DefaultPathEnv).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// nonEnvArgs are build arguments that never reach the environment, nor
// count as undefined (dockerfile2llb's nonEnvArgs).
var nonEnvArgs = map[string]bool{"BUILDKIT_SBOM_SCAN_CONTEXT": true, "BUILDKIT_SBOM_SCAN_STAGE": true}

// evaluate runs every rule once over dt with the linter configuration
// cfg, and returns the findings in the order BuildKit's frontend would
// report them. With strip, the `# check=` directives of instructions'
// comments are ignored (for Options.FailOn's run).
func evaluate(dt []byte, o Options, cfg *linter.Config, strip bool) ([]Finding, error) {
	var found []Finding
	c := *cfg
	c.Warn = func(rule, _, url, msg string, loc []parser.Range) {
		if url == "" && rule == linter.RuleInvalidBaseImagePlatform.Name {
			url = invalidBaseImagePlatformURL
		}
		found = append(found, Finding{Rule: rule, Line: firstLine(loc), Message: msg, URL: url})
	}
	e := &evaluator{o: o, lint: linter.New(&c)}
	if o.IgnorePatterns != nil {
		m, err := patternmatcher.New(o.IgnorePatterns)
		if err != nil {
			return nil, fmt.Errorf("parsing the .dockerignore patterns: %w", err)
		}
		e.ignore = m
	}
	err := e.run(dt, strip)
	return found, err
}

// looksSecret is SecretsUsedInArgOrEnv's test of a key.
func looksSecret(key string) bool {
	return secretKey.MatchString(key) && !allowedKey.MatchString(key)
}

// noteSecret records the value of a key that looks secret, which no
// finding may show: BuildKit's messages quote words after expansion (a
// WORKDIR's path, a COPY source, an EXPOSE port, a FROM image; RootUser
// the USER), and such a word may hold it. Values are noted where they are
// defined, so before any word that expands them.
func (e *evaluator) noteSecret(key, value string) {
	if value == "" || !looksSecret(key) {
		return
	}
	if e.secrets == nil {
		e.secrets = map[string]bool{}
	}
	e.secrets[value] = true
}

// mask replaces every noted secret value in an expanded word a message
// quotes with "***", the longest first (so that a value holding another
// goes whole). Only such words: the messages' own text stays as it is.
func (e *evaluator) mask(msg string) string {
	values := slices.SortedFunc(maps.Keys(e.secrets), func(a, b string) int { return len(b) - len(a) })
	for _, v := range values {
		msg = strings.ReplaceAll(msg, v, "***")
	}
	return msg
}

// evaluator holds one run of the rules: what BuildKit's dispatchContext
// holds of it.
type evaluator struct {
	o          Options
	lint       *linter.Linter
	ignore     *patternmatcher.PatternMatcher
	shlex      *shell.Lex
	globalArgs *dockerfile.Env
	stages     []*stageState
	// secrets are the values of ARGs, ENVs and build arguments whose keys
	// look secret (looksSecret): masked in every message.
	secrets map[string]bool
}

// stageState is what BuildKit's dispatchState holds that a rule reads.
type stageState struct {
	st       instructions.Stage
	base     *stageState // the stage this one is built FROM, if any
	baseName string      // the expanded FROM name
	platform *ocispec.Platform

	dispatched bool
	// known is set when the base image's config is known (always for
	// scratch and for stages), unset when it could not be resolved: the
	// rules that read it then say nothing.
	known      bool
	env        *dockerfile.Env
	buildArgs  []instructions.KeyValuePairOptional
	workdirSet bool
	onbuild    []string // this stage's ONBUILD expressions

	// The image config, as far as the rules need it.
	shell             []string
	entrypoint, cmd   []string
	user              string
	userAt            *site // the USER that set user; nil: the base image's
	health            *dockerspec.HealthcheckConfig
	healthAt          *site
	cmdT, entrypointT tracker
	healthT           tracker
	fromLoc           []parser.Range
	fromComments      []string
}

// site is where an instruction is: its location and the comments above it
// (which may hold `# check=` directives).
type site struct {
	loc      []parser.Range
	comments []string
}

// tracker is BuildKit's instructionTracker (validations.go).
type tracker struct {
	loc   []parser.Range
	isSet bool
}

func firstLine(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// located gives err the line of loc, unless it has one.
func located(err error, loc []parser.Range) error {
	if err == nil {
		return nil
	}
	var de *dockerfile.Error
	if errors.As(err, &de) {
		return err
	}
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		return &dockerfile.Error{Line: le.Locations[0][0].Start.Line, Err: errors.Unwrap(le)}
	}
	return &dockerfile.Error{Line: firstLine(loc), Err: err}
}

// run is BuildKit's toDispatchState, as far as the rules go: parse (with
// the parser's own rules), the rules of the whole Dockerfile, those of
// every FROM line, then the stages' instructions.
func (e *evaluator) run(dt []byte, strip bool) error {
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return located(err, nil)
	}
	if strip {
		stripDirectives(res.AST)
	}
	for _, w := range res.Warnings {
		// The parser warns of empty continuation lines only; BuildKit
		// reports them as NoEmptyContinuation.
		if w.URL == linter.RuleNoEmptyContinuation.URL && w.Location != nil {
			e.lint.Run(&linter.RuleNoEmptyContinuation, []parser.Range{*w.Location}, linter.RuleNoEmptyContinuation.Format())
		}
	}
	// MaintainerDeprecated, StageNameCasing, FromAsCasing and
	// InvalidDefinitionDescription are the instruction parser's.
	stages, metaArgs, err := instructions.Parse(res.AST, e.lint)
	if err != nil {
		return located(err, nil)
	}
	if len(stages) == 0 {
		return &dockerfile.Error{Err: errors.New("dockerfile contains no stages to build")}
	}
	validateStageNames(stages, e.lint)
	validateCommandCasing(stages, e.lint)

	target := e.o.Target
	if target == "" {
		target = stages[len(stages)-1].Name
	}
	defaults := dockerfile.DefaultArgs(dockerfile.Options{BuildArgs: e.o.BuildArgs, Platform: e.o.Platform, BuildPlatform: e.o.BuildPlatform}, target)
	for k, v := range e.o.BuildArgs {
		e.noteSecret(k, v)
	}
	e.shlex = shell.NewLex(res.EscapeToken)
	validateBaseImagesWithDefaultArgs(stages, e.shlex, defaults, metaArgs, e.lint)
	var allArgs map[string]bool
	e.globalArgs, allArgs, err = buildMetaArgs(defaults, e.shlex, metaArgs, e.o.BuildArgs)
	if err != nil {
		return err
	}
	for _, k := range e.globalArgs.Keys() {
		e.noteSecret(k, e.globalArgs.MustGet(k))
	}
	if err := e.fromLines(stages, allArgs); err != nil {
		return err
	}

	selected := make([]bool, len(e.stages))
	for i := range selected {
		selected[i] = e.o.Stages == nil
	}
	for _, i := range e.o.Stages {
		if i >= 0 && i < len(selected) {
			selected[i] = true
		}
	}
	for i, s := range e.stages {
		if selected[i] {
			if err := e.dispatchStage(s); err != nil {
				return err
			}
		}
	}
	e.finalStageRules(target)
	return nil
}

// stripDirectives drops the `# check=` directives from the comments of
// every instruction.
func stripDirectives(ast *parser.Node) {
	for _, n := range ast.Children {
		n.PrevComment = slices.DeleteFunc(slices.Clone(n.PrevComment), func(c string) bool {
			p := parser.DirectiveParser{}
			p.SetComment("")
			d, _ := p.ParseLine([]byte(c))
			return d != nil && d.Name == "check"
		})
	}
}

// fromLines applies the rules of every stage's FROM line, and links each
// stage to the stage it is built FROM (BuildKit's buildDispatchStates).
func (e *evaluator) fromLines(stages []instructions.Stage, allArgs map[string]bool) error {
	byName := map[string]*stageState{}
	for _, st := range stages {
		lint := e.lint.WithMergedConfigFromComments(st.Comments)
		argKeys := unusedFromArgsCheckKeys(e.globalArgs, allArgs)

		nameMatch, err := e.shlex.ProcessWordWithMatches(st.BaseName, e.globalArgs)
		reportUnusedFromArgs(argKeys, nameMatch.Unmatched, st.Location, lint)
		if err != nil {
			return located(err, st.Location)
		}
		if nameMatch.Result == "" {
			return located(fmt.Errorf("base name (%s) should not be blank", st.BaseName), st.Location)
		}
		s := &stageState{st: st, baseName: nameMatch.Result, fromLoc: st.Location, fromComments: st.Comments}
		if v := st.Platform; v != "" {
			platMatch, err := e.shlex.ProcessWordWithMatches(v, e.globalArgs)
			reportUnusedFromArgs(argKeys, platMatch.Unmatched, st.Location, lint)
			reportRedundantTargetPlatform(st.Platform, platMatch, st.Location, e.globalArgs, lint)
			reportConstPlatformDisallowed(st.Name, platMatch, st.Location, lint)
			if err != nil {
				return located(fmt.Errorf("failed to process arguments for platform %s: %w", platMatch.Result, err), st.Location)
			}
			if platMatch.Result == "" {
				return located(wrapSuggestAny(fmt.Errorf("empty platform value from expression %s", v), platMatch.Unmatched, e.globalArgs.Keys()), st.Location)
			}
			p, err := platforms.Parse(platMatch.Result)
			if err != nil {
				return located(fmt.Errorf("failed to parse platform %s: %w", v, wrapSuggestAny(err, platMatch.Unmatched, e.globalArgs.Keys())), st.Location)
			}
			s.platform = &p
		}
		// A FROM names an earlier stage by its name, case-insensitively,
		// as the build plans it (dockerfile.Parse).
		if b, ok := byName[strings.ToLower(s.baseName)]; ok {
			s.base = b
		}
		if st.Name != "" {
			byName[strings.ToLower(st.Name)] = s
		}
		e.stages = append(e.stages, s)
	}
	return nil
}

// dispatchStage applies the rules of a stage's instructions, after those
// of the stage it is built FROM, with the state it starts from: its base
// stage's, or its base image's config (BuildKit's init and dispatchStages).
func (e *evaluator) dispatchStage(s *stageState) error {
	if s.dispatched {
		return nil
	}
	s.dispatched = true
	var triggers []string
	switch {
	case s.base != nil:
		b := s.base
		if err := e.dispatchStage(b); err != nil {
			return err
		}
		s.known, s.env, s.buildArgs, s.workdirSet = b.known, b.env.Clone(), slices.Clone(b.buildArgs), b.workdirSet
		s.shell, s.entrypoint, s.cmd = b.shell, b.entrypoint, b.cmd
		s.user, s.userAt, s.health, s.healthAt = b.user, b.userAt, b.health, b.healthAt
		// The base stage's ONBUILD triggers run first in this one.
		triggers = b.onbuild
	case strings.EqualFold(s.baseName, dockerfile.Scratch):
		s.known, s.env = true, &dockerfile.Env{}
	default:
		s.env = &dockerfile.Env{}
		var img *dockerspec.DockerOCIImage
		if e.o.BaseImage != nil {
			img, _ = e.o.BaseImage(s.baseName, e.stagePlatform(s))
		}
		if img != nil {
			s.known = true
			for _, kv := range img.Config.Env {
				k, v, _ := strings.Cut(kv, "=")
				s.env.Set(k, v)
				e.noteSecret(k, v)
			}
			s.shell, s.entrypoint, s.cmd = img.Config.Shell, img.Config.Entrypoint, img.Config.Cmd
			s.user, s.health = img.Config.User, img.Config.Healthcheck
			triggers = img.Config.OnBuild
			e.validateBaseImagePlatform(s, img)
		}
	}
	if _, ok := s.env.Get("PATH"); !ok {
		s.env.Set("PATH", defaultPath)
	}
	cmds, err := dockerfile.ParseTriggers(triggers, firstLine(s.fromLoc))
	if err != nil {
		return err
	}
	for _, cmd := range append(cmds, s.st.Commands...) {
		if err := e.dispatch(s, cmd); err != nil {
			return located(err, cmd.Location())
		}
	}
	return nil
}

// stagePlatform is the platform of a stage FROM an image: its --platform,
// else the target platform (BuildKit's resolveBaseImage).
func (e *evaluator) stagePlatform(s *stageState) ocispec.Platform {
	if s.platform != nil {
		return *s.platform
	}
	switch {
	case e.o.Platform != nil:
		return *e.o.Platform
	case e.o.BuildPlatform != nil:
		return *e.o.BuildPlatform
	}
	return dockerfile.NativePlatform()
}

// validateBaseImagePlatform is BuildKit's InvalidBaseImagePlatform: the
// image's platform is not the one the stage is built for. An image without
// layers is scratch to BuildKit, and not checked.
func (e *evaluator) validateBaseImagePlatform(s *stageState, img *dockerspec.DockerOCIImage) {
	if len(img.RootFS.DiffIDs) == 0 {
		return
	}
	expected := e.stagePlatform(s)
	actual := img.Platform
	if expected.OS != actual.OS || expected.Architecture != actual.Architecture {
		lint := e.lint.WithMergedConfigFromComments(s.fromComments)
		msg := linter.RuleInvalidBaseImagePlatform.Format(e.mask(s.baseName), platforms.FormatAll(platforms.Normalize(expected)), platforms.FormatAll(platforms.Normalize(actual)))
		lint.Run(&linter.RuleInvalidBaseImagePlatform, s.fromLoc, msg)
	}
}

// dispatch applies the rules of one instruction (BuildKit's dispatch and
// its dispatchX functions), and what it does to the state they read.
func (e *evaluator) dispatch(s *stageState, cmd instructions.Command) error {
	lint := e.lint.WithMergedConfigFromComments(cmd.Comments())
	_, isArg := cmd.(*instructions.ArgCommand)
	if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok && !isArg {
		err := ex.Expand(func(word string) (string, error) {
			w, unmatched, err := e.shlex.ProcessWord(word, s.env)
			s.reportUnmatchedVariables(cmd, unmatched, lint)
			return w, err
		})
		if err != nil {
			return err
		}
	}
	if ex, ok := cmd.(instructions.SupportsSingleWordExpansionRaw); ok {
		lex := shell.NewLex('\\')
		lex.SkipProcessQuotes = true
		err := ex.ExpandRaw(func(word string) (string, error) {
			w, unmatched, err := lex.ProcessWord(word, s.env)
			s.reportUnmatchedVariables(cmd, unmatched, lint)
			return w, err
		})
		if err != nil {
			return err
		}
	}
	here := &site{loc: cmd.Location(), comments: cmd.Comments()}
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			if kv.NoDelim {
				lint.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
			}
			validateNoSecretKey("ENV", kv.Key, c.Location(), lint)
			s.env.Set(kv.Key, kv.Value)
			e.noteSecret(kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		for _, kv := range c.Labels {
			if kv.NoDelim {
				lint.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
			}
		}
	case *instructions.CmdCommand:
		validateUsedOnce(c, &s.cmdT, lint)
		if c.PrependShell && len(s.shell) == 0 && s.known {
			lint.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
		}
		s.cmd = c.CmdLine
	case *instructions.EntrypointCommand:
		validateUsedOnce(c, &s.entrypointT, lint)
		if c.PrependShell && len(s.shell) == 0 && s.known {
			lint.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
		}
		s.entrypoint = c.CmdLine
		if !s.cmdT.isSet {
			s.cmd = nil
		}
	case *instructions.HealthCheckCommand:
		validateUsedOnce(c, &s.healthT, lint)
		s.health, s.healthAt = c.Health, here
	case *instructions.WorkdirCommand:
		// Only the first WORKDIR of the stage's chain in the Dockerfile
		// counts: an absolute one there makes later relative ones safe.
		if !s.workdirSet && !path.IsAbs(c.Path) {
			lint.Run(&linter.RuleWorkdirRelativePath, c.Location(), linter.RuleWorkdirRelativePath.Format(e.mask(c.Path)))
		}
		s.workdirSet = true
	case *instructions.UserCommand:
		s.user, s.userAt = c.User, here
	case *instructions.ShellCommand:
		s.shell = c.Shell
	case *instructions.OnbuildCommand:
		s.onbuild = append(s.onbuild, c.Expression)
	case *instructions.ArgCommand:
		return e.dispatchArg(s, c, lint)
	case *instructions.ExposeCommand:
		return e.dispatchExpose(s, c, lint)
	case *instructions.CopyCommand:
		if c.From == "" {
			for _, src := range c.SourcePaths {
				e.validateCopySourcePath(src, "Copy", c.Location(), lint)
			}
		}
	case *instructions.AddCommand:
		for _, src := range c.SourcePaths {
			if !isGitSource(src) && !isHTTPSource(src) {
				e.validateCopySourcePath(src, "Add", c.Location(), lint)
			}
		}
	}
	return nil
}

// dispatchArg is BuildKit's dispatchArg: SecretsUsedInArgOrEnv, and the
// argument's value in the environment the next instructions expand with.
func (e *evaluator) dispatchArg(s *stageState, c *instructions.ArgCommand, lint *linter.Linter) error {
	for _, arg := range c.Args {
		validateNoSecretKey("ARG", arg.Key, c.Location(), lint)
		v, hasValue := e.o.BuildArgs[arg.Key]
		hasDefault := arg.Value != nil
		if !hasDefault && !hasValue {
			if g, ok := e.globalArgs.Get(arg.Key); ok {
				arg.Value = &g
			}
		}
		if hasValue {
			arg.Value = &v
		} else if hasDefault {
			w, unmatched, err := e.shlex.ProcessWord(*arg.Value, s.env)
			s.reportUnmatchedVariables(c, unmatched, lint)
			if err != nil {
				return err
			}
			arg.Value = &w
		}
		if arg.Value != nil && !nonEnvArgs[arg.Key] {
			s.env.Set(arg.Key, *arg.Value)
			e.noteSecret(arg.Key, *arg.Value)
		}
		s.buildArgs = append(s.buildArgs, arg)
	}
	return nil
}

// dispatchExpose expands EXPOSE's ports and applies ExposeProtoCasing and
// ExposeInvalidFormat to each (BuildKit's dispatchExpose and parsePort).
func (e *evaluator) dispatchExpose(s *stageState, c *instructions.ExposeCommand, lint *linter.Linter) error {
	var ports []string
	for _, p := range c.Ports {
		ps, err := e.shlex.ProcessWords(p, s.env)
		if err != nil {
			return err
		}
		ports = append(ports, ps...)
	}
	for _, p := range ports {
		ip, hostPort, containerPort := splitParts(p)
		proto, err := splitProto(containerPort)
		if err != nil {
			return fmt.Errorf("invalid port: %q: %w", p, err)
		}
		if proto != strings.ToLower(proto) {
			lint.Run(&linter.RuleExposeProtoCasing, c.Location(), linter.RuleExposeProtoCasing.Format(e.mask(p)))
		}
		if ip != "" || hostPort != "" {
			lint.Run(&linter.RuleExposeInvalidFormat, c.Location(), linter.RuleExposeInvalidFormat.Format(e.mask(p)))
		}
	}
	return nil
}

// reportUnmatchedVariables is BuildKit's UndefinedVar: a variable an
// instruction expands that is neither in the environment nor a declared
// ARG (with or without a value). It names the variable, and suggests a
// defined one close to it; it never shows a value. A stage whose base
// image is unknown reports none: its environment is unknown.
func (s *stageState) reportUnmatchedVariables(cmd instructions.Command, unmatched map[string]struct{}, lint *linter.Linter) {
	if len(unmatched) == 0 || !s.known {
		return
	}
	for _, a := range s.buildArgs {
		delete(unmatched, a.Key)
	}
	options := s.env.Keys()
	for _, name := range sortedKeys(unmatched) {
		if nonEnvArgs[name] {
			continue
		}
		match, _ := suggest.Search(name, options, true)
		lint.Run(&linter.RuleUndefinedVar, cmd.Location(), linter.RuleUndefinedVar.Format(name, match))
	}
}

// validateCopySourcePath is BuildKit's CopyIgnoredFile: a COPY (without
// --from) or ADD source that .dockerignore excludes. Not checked when the
// patterns have exceptions ("!..."), which BuildKit finds too hard to
// decide statically; the context root only when a pattern excludes every
// entry of it.
func (e *evaluator) validateCopySourcePath(src, cmd string, loc []parser.Range, lint *linter.Linter) {
	if e.ignore == nil || e.ignore.Exclusions() {
		return
	}
	src = path.Clean(src)
	if src == "." || src == "/" {
		if !copySourceRootIgnored(e.ignore) {
			return
		}
	}
	if ok, err := e.ignore.MatchesOrParentMatches(src); err == nil && ok {
		lint.Run(&linter.RuleCopyIgnoredFile, loc, linter.RuleCopyIgnoredFile.Format(cmd, e.mask(src)))
	}
}

func copySourceRootIgnored(m *patternmatcher.PatternMatcher) bool {
	for _, p := range m.Patterns() {
		if p.Exclusion() {
			continue
		}
		switch p.String() {
		case "*", "**", "**/*":
			return true
		}
	}
	return false
}

// isHTTPSource and isGitSource are BuildKit's (convert_copy.go): an ADD
// source that is a URL, or a git repository, is not in the context.
func isHTTPSource(src string) bool {
	return (strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")) && !isGitSource(src)
}

func isGitSource(src string) bool {
	ref, isGit, _ := dfgitutil.ParseGitRef(src)
	return ref != nil && isGit
}

// finalStageRules applies RootUser and NoHealthcheck to the target stage:
// the image the build produces, as its config will be, base image
// included. Both apply only to an image meant to run a process (it has an
// ENTRYPOINT or a CMD, its own or its base's), and only when the base
// image's config is known.
func (e *evaluator) finalStageRules(target string) {
	var s *stageState
	for _, st := range e.stages {
		if target == "" || strings.EqualFold(st.st.Name, target) {
			s = st
		}
	}
	if s == nil || !s.dispatched || !s.known || len(s.entrypoint) == 0 && len(s.cmd) == 0 {
		return
	}
	from := &site{loc: s.fromLoc, comments: s.fromComments}
	if isRoot(s.user) {
		at := s.userAt
		if at == nil {
			at = from
		}
		lint := e.lint.WithMergedConfigFromComments(at.comments)
		lint.Run(&RuleRootUser, at.loc, RuleRootUser.Format(e.mask(s.user)))
	}
	disabled := s.health != nil && len(s.health.Test) > 0 && s.health.Test[0] == "NONE"
	if s.health == nil || disabled {
		at := s.healthAt
		if at == nil {
			at = from
		}
		lint := e.lint.WithMergedConfigFromComments(at.comments)
		lint.Run(&RuleNoHealthcheck, at.loc, RuleNoHealthcheck.Format(disabled))
	}
}

// isRoot reports whether USER's value runs the process as root: empty
// (the default), "root" or the uid 0, with any group. A user name other
// than root is taken as not root: the checks read no /etc/passwd, where
// another name could have the uid 0.
func isRoot(user string) bool {
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" {
		return true
	}
	uid, err := strconv.ParseUint(name, 10, 32)
	return err == nil && uid == 0
}
