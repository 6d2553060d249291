package check

// The rules' detection, ported from BuildKit's dockerfile2llb
// (validations.go, convert.go, convert_expose.go): the same conditions,
// reported through the same linter rules.

import (
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"

	"github.com/slipway-dev/slipway/executor/dockerfile"
)

// reservedStageNames are names a stage should not take (validations.go).
var reservedStageNames = map[string]bool{"context": true, "scratch": true}

// validateStageNames: ReservedStageName and DuplicateStageName.
func validateStageNames(stages []instructions.Stage, lint *linter.Linter) {
	seen := map[string]bool{}
	for _, st := range stages {
		if st.Name == "" {
			continue
		}
		if reservedStageNames[st.Name] {
			lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
		}
		if seen[st.Name] {
			lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
		}
		seen[st.Name] = true
	}
}

func isSelfConsistentCasing(s string) bool {
	return s == strings.ToLower(s) || s == strings.ToUpper(s)
}

// validateCommandCasing: ConsistentInstructionCasing. The majority
// casing is counted over the instructions written in one case; every
// instruction not in it is reported, mixed-case ones included.
func validateCommandCasing(stages []instructions.Stage, lint *linter.Linter) {
	var lower, upper int
	count := func(name string) {
		if isSelfConsistentCasing(name) {
			if strings.ToLower(name) == name {
				lower++
			} else {
				upper++
			}
		}
	}
	for _, st := range stages {
		count(st.OrigCmd)
		for _, cmd := range st.Commands {
			count(cmd.Name())
		}
	}
	majorityLower := lower > upper
	for _, st := range stages {
		validateCaseMatch(st.OrigCmd, majorityLower, st.Location, lint)
		for _, cmd := range st.Commands {
			validateCaseMatch(cmd.Name(), majorityLower, cmd.Location(), lint)
		}
	}
}

func validateCaseMatch(name string, majorityLower bool, loc []parser.Range, lint *linter.Linter) {
	var correct string
	if majorityLower && strings.ToLower(name) != name {
		correct = "lowercase"
	} else if !majorityLower && strings.ToUpper(name) != name {
		correct = "uppercase"
	}
	if correct != "" {
		lint.Run(&linter.RuleConsistentInstructionCasing, loc, linter.RuleConsistentInstructionCasing.Format(name, correct))
	}
}

// reportUnusedFromArgs: UndefinedArgInFrom, a variable of a FROM line
// that no global ARG declares (nor the platform arguments predefine).
func reportUnusedFromArgs(keys map[string]bool, unmatched map[string]struct{}, loc []parser.Range, lint *linter.Linter) {
	options := slices.Sorted(maps.Keys(keys))
	for _, arg := range sortedKeys(unmatched) {
		if keys[arg] {
			continue
		}
		match, _ := suggest.Search(arg, options, true)
		lint.Run(&linter.RuleUndefinedArgInFrom, loc, linter.RuleUndefinedArgInFrom.Format(arg, match))
	}
}

// unusedFromArgsCheckKeys are the names a FROM line may use: the global
// ARGs' (with or without a value) and the predefined ones.
func unusedFromArgsCheckKeys(env *dockerfile.Env, args map[string]bool) map[string]bool {
	keys := maps.Clone(args)
	if keys == nil {
		keys = map[string]bool{}
	}
	for _, k := range env.Keys() {
		keys[k] = true
	}
	return keys
}

// reportRedundantTargetPlatform: RedundantTargetPlatform, --platform set
// to $TARGETPLATFORM alone.
func reportRedundantTargetPlatform(platformVar string, m shell.ProcessWordResult, loc []parser.Range, env *dockerfile.Env, lint *linter.Linter) {
	if len(m.Matched) != 1 || len(m.Unmatched) != 0 {
		return
	}
	const targetPlatform = "TARGETPLATFORM"
	if _, ok := m.Matched[targetPlatform]; !ok {
		return
	}
	if v, _ := env.Get(targetPlatform); m.Result == v {
		lint.Run(&linter.RuleRedundantTargetPlatform, loc, linter.RuleRedundantTargetPlatform.Format(platformVar))
	}
}

// reportConstPlatformDisallowed: FromPlatformFlagConstDisallowed, a
// --platform without variables, unless the stage's name names its OS or
// architecture (a stage meant for that platform).
func reportConstPlatformDisallowed(stageName string, m shell.ProcessWordResult, loc []parser.Range, lint *linter.Linter) {
	if len(m.Matched) > 0 || len(m.Unmatched) > 0 {
		return
	}
	p, err := platforms.Parse(m.Result)
	if err != nil {
		return // the build fails on it
	}
	if strings.Contains(stageName, p.OS) || strings.Contains(stageName, p.Architecture) {
		return
	}
	lint.Run(&linter.RuleFromPlatformFlagConstDisallowed, loc, linter.RuleFromPlatformFlagConstDisallowed.Format(m.Result))
}

// validateUsedOnce: MultipleInstructionsDisallowed, reported at the
// earlier instruction, the one that has no effect. Per stage: a stage
// built FROM another starts with none seen.
func validateUsedOnce(c instructions.Command, t *tracker, lint *linter.Linter) {
	if t.isSet {
		lint.Run(&linter.RuleMultipleInstructionsDisallowed, t.loc, linter.RuleMultipleInstructionsDisallowed.Format(c.Name()))
	}
	t.loc, t.isSet = c.Location(), true
}

// secretKey and allowedKey are BuildKit's getSecretsRegex: a key with a
// secret-sounding word (the whole key, or a word of it between "_"), and
// the words that make it harmless.
var (
	secretKey  = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	allowedKey = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

// validateNoSecretKey: SecretsUsedInArgOrEnv. The finding names the
// instruction and the key, never the value.
func validateNoSecretKey(instruction, key string, loc []parser.Range, lint *linter.Linter) {
	if secretKey.MatchString(key) && !allowedKey.MatchString(key) {
		lint.Run(&linter.RuleSecretsUsedInArgOrEnv, loc, linter.RuleSecretsUsedInArgOrEnv.Format(instruction, key))
	}
}

// validateBaseImagesWithDefaultArgs: InvalidDefaultArgInFrom, a FROM
// whose name, expanded with the global ARGs' defaults alone (no build
// arguments), is no valid image reference.
func validateBaseImagesWithDefaultArgs(stages []instructions.Stage, shlex *shell.Lex, defaults *dockerfile.Env, metaArgs []instructions.ArgCommand, lint *linter.Linter) {
	args, _, err := buildMetaArgs(defaults, shlex, metaArgs, nil)
	if err != nil {
		return // the build fails on it
	}
	for _, st := range stages {
		m, err := shlex.ProcessWordWithMatches(st.BaseName, args)
		if err != nil {
			return
		}
		if _, err := reference.ParseNormalizedNamed(m.Result); err != nil {
			lint.Run(&linter.RuleInvalidDefaultArgInFrom, st.Location, linter.RuleInvalidDefaultArgInFrom.Format(st.BaseName))
		}
	}
}

// buildMetaArgs is BuildKit's: the global ARGs' values (a build argument,
// else the default expanded), over a copy of args; and every global ARG's
// name, with a value or not.
func buildMetaArgs(args *dockerfile.Env, shlex *shell.Lex, metaArgs []instructions.ArgCommand, buildArgs map[string]string) (*dockerfile.Env, map[string]bool, error) {
	args = args.Clone()
	all := map[string]bool{}
	for _, cmd := range metaArgs {
		for _, kv := range cmd.Args {
			var value *string
			if v, ok := buildArgs[kv.Key]; ok {
				value = &v
			} else if kv.Value != nil {
				m, err := shlex.ProcessWordWithMatches(*kv.Value, args)
				if err != nil {
					return nil, nil, located(err, cmd.Location())
				}
				value = &m.Result
			}
			if value != nil {
				args.Set(kv.Key, *value)
			}
			all[kv.Key] = true
		}
	}
	return args, all, nil
}

// wrapSuggestAny adds "did you mean" to err for the first of keys close to
// one of options.
func wrapSuggestAny(err error, keys map[string]struct{}, options []string) error {
	for _, k := range sortedKeys(keys) {
		var ok bool
		if ok, err = suggest.WrapErrorMaybe(err, k, options, true); ok {
			break
		}
	}
	return err
}

// splitParts splits an EXPOSE port as [ip:]hostPort:containerPort
// (portSpecs.splitParts).
func splitParts(raw string) (ip, hostPort, containerPort string) {
	parts := strings.Split(raw, ":")
	switch len(parts) {
	case 1:
		return "", "", parts[0]
	case 2:
		return "", parts[0], parts[1]
	case 3:
		return parts[0], parts[1], parts[2]
	default:
		n := len(parts)
		return strings.Join(parts[:n-2], ":"), parts[n-2], parts[n-1]
	}
}

// splitProto is the protocol of containerPort[/proto], as written: tcp
// when there is none (portSpecs.splitProtoPort).
func splitProto(raw string) (string, error) {
	port, proto, _ := strings.Cut(raw, "/")
	if port == "" {
		return "", errors.New("no port specified")
	}
	switch strings.ToLower(proto) {
	case "":
		return "tcp", nil
	case "tcp", "udp", "sctp":
		return proto, nil
	}
	return "", errors.New("invalid proto: " + proto)
}

func sortedKeys(m map[string]struct{}) []string {
	return slices.Sorted(maps.Keys(m))
}
