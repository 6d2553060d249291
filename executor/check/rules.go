package check

import (
	"fmt"

	"github.com/moby/buildkit/frontend/dockerfile/linter"
)

// docsURL is where our rules are documented: the README's "Build checks"
// section, a heading per rule.
const docsURL = "https://github.com/slipway-dev/slipway#"

// Our rules. They are linter rules like BuildKit's, so the `# check=`
// directive skips them and makes them errors the same way.
var (
	// RuleRootUser: the image's process runs as root.
	RuleRootUser = linter.LinterRule[func(user string) string]{
		Name:        "RootUser",
		Description: "The image should run its process as a user other than root",
		URL:         docsURL + "rootuser",
		Format: func(user string) string {
			if user == "" {
				return "The final stage runs as root: no USER sets another user, in it or its base"
			}
			return fmt.Sprintf("The final stage runs as root: its user is %q", user)
		},
	}
	// RuleNoHealthcheck: the image says nothing of how to tell that it is
	// healthy.
	RuleNoHealthcheck = linter.LinterRule[func(disabled bool) string]{
		Name:        "NoHealthcheck",
		Description: "The image should have a HEALTHCHECK that tells whether its process works",
		URL:         docsURL + "nohealthcheck",
		Format: func(disabled bool) string {
			if disabled {
				return "The final stage's health check is disabled (HEALTHCHECK NONE)"
			}
			return "The final stage has no HEALTHCHECK, in it or its base"
		},
	}
)

// invalidBaseImagePlatformURL documents InvalidBaseImagePlatform, which
// BuildKit gives no URL.
const invalidBaseImagePlatformURL = docsURL + "invalidbaseimageplatform"

// Rule describes a rule for listings and for --check-fail-on.
type Rule struct {
	Name, Description, URL string
	// Experimental rules run only when the directive's experimental=
	// (or Options.FailOn) names them.
	Experimental bool
	// Ours is set for the rules Slipway adds to BuildKit's.
	Ours bool
}

func describe[F any](r *linter.LinterRule[F], ours bool) Rule {
	return Rule{Name: r.Name, Description: r.Description, URL: r.URL, Experimental: r.Experimental, Ours: ours}
}

// Rules are every rule the checks evaluate: BuildKit's ruleset
// (frontend/dockerfile/linter/ruleset.go), then ours.
func Rules() []Rule {
	ibp := describe(&linter.RuleInvalidBaseImagePlatform, false)
	if ibp.URL == "" {
		ibp.URL = invalidBaseImagePlatformURL
	}
	return []Rule{
		describe(&linter.RuleStageNameCasing, false),
		describe(&linter.RuleFromAsCasing, false),
		describe(&linter.RuleNoEmptyContinuation, false),
		describe(&linter.RuleConsistentInstructionCasing, false),
		describe(&linter.RuleDuplicateStageName, false),
		describe(&linter.RuleReservedStageName, false),
		describe(&linter.RuleJSONArgsRecommended, false),
		describe(&linter.RuleMaintainerDeprecated, false),
		describe(&linter.RuleUndefinedArgInFrom, false),
		describe(&linter.RuleWorkdirRelativePath, false),
		describe(&linter.RuleUndefinedVar, false),
		describe(&linter.RuleMultipleInstructionsDisallowed, false),
		describe(&linter.RuleLegacyKeyValueFormat, false),
		ibp,
		describe(&linter.RuleRedundantTargetPlatform, false),
		describe(&linter.RuleSecretsUsedInArgOrEnv, false),
		describe(&linter.RuleInvalidDefaultArgInFrom, false),
		describe(&linter.RuleFromPlatformFlagConstDisallowed, false),
		describe(&linter.RuleCopyIgnoredFile, false),
		describe(&linter.RuleInvalidDefinitionDescription, false),
		describe(&linter.RuleExposeProtoCasing, false),
		describe(&linter.RuleExposeInvalidFormat, false),
		describe(&RuleRootUser, true),
		describe(&RuleNoHealthcheck, true),
	}
}

// RuleNames are the names of Rules, in order.
func RuleNames() []string {
	var out []string
	for _, r := range Rules() {
		out = append(out, r.Name)
	}
	return out
}

// Lookup returns the rule named name (case-sensitively, as the directive
// names rules), nil when there is none.
func Lookup(name string) *Rule {
	for _, r := range Rules() {
		if r.Name == name {
			return &r
		}
	}
	return nil
}
