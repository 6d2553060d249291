package check

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/dockerfile"
)

// errorsOf lists the findings that fail the build, as the cases format
// them.
func errorsOf(rep *Report) []string {
	return formatFindings(rep.Errors(), nil)
}

// The directive's error=true makes every finding an error, and the
// report's error names the rules and the first one's line
// (testRuleCheckOption); without it no finding is an error.
func TestRun_errorDirective(t *testing.T) {
	df := "# check=error=true\nFROM scratch as base\nMAINTAINER me\n"
	rep, err := Run([]byte(df), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		f("FromAsCasing", 2, "'as' and 'FROM' keywords' casing do not match"),
		f("MaintainerDeprecated", 3, "Maintainer instruction is deprecated in favor of using label"),
	}
	if diff := cmp.Diff(want, errorsOf(rep)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	var de *dockerfile.Error
	if err := rep.Err(); !errors.As(err, &de) || de.Line != 2 ||
		de.Err.Error() != "lint violation found for rules: FromAsCasing (line 2), MaintainerDeprecated (line 3) (failing the build: the check=error=true directive)" {
		t.Errorf("Err() = %v (line %d)", err, de.Line)
	}

	rep, err = Run([]byte(strings.TrimPrefix(df, "# check=error=true\n")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 2 || len(rep.Errors()) != 0 || rep.Err() != nil {
		t.Errorf("without error=true: findings %v, errors %v; want 2 findings, no error", rep.Findings, rep.Errors())
	}
}

// A directive or BUILDKIT_DOCKERFILE_CHECK that does not parse fails, as
// it fails BuildKit's build (newRuleLinter), naming its line.
func TestRun_badDirective(t *testing.T) {
	for _, tc := range []struct {
		name, dockerfile string
		buildArgs        map[string]string
		want             string
		line             int
	}{
		{"unknown option", "# check=skip=all;nope=1\nFROM scratch\n", nil, `failed to parse check options: invalid check option "nope"`, 1},
		{"not a bool", "# syntax=docker/dockerfile:1\n# check=error=maybe\nFROM scratch\n", nil, `failed to parse check options: failed to parse check option "error=maybe"`, 2},
		{"build arg", "FROM scratch\n", map[string]string{CheckArg: "skip"}, `parsing the build argument BUILDKIT_DOCKERFILE_CHECK: invalid check option "skip"`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run([]byte(tc.dockerfile), Options{BuildArgs: tc.buildArgs})
			var de *dockerfile.Error
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) || de.Line != tc.line || rep != nil {
				t.Fatalf("Run = %v, %v; want an error containing %q at line %d", rep, err, tc.want, tc.line)
			}
		})
	}
}

// --check-fail-on: the findings of the rules it names are errors, and
// the Dockerfile cannot waive them: its skip=all, its skip of the rule
// and a skip above the instruction are ignored for those rules (and only
// those). "all" names every rule but the experimental ones.
func TestRun_failOn(t *testing.T) {
	df := "# check=skip=all\nFROM busybox as base\n# check=skip=RootUser\nUSER root\n# check=skip=MaintainerDeprecated\nMAINTAINER me\nCMD [\"sh\"]\n"
	rep, err := Run([]byte(df), Options{BaseImage: images, FailOn: []string{"RootUser", "MaintainerDeprecated"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		f("RootUser", 4, rootAs("root")),
		f("MaintainerDeprecated", 6, "Maintainer instruction is deprecated in favor of using label"),
	}
	if diff := cmp.Diff(want, formatFindings(rep.Findings, nil)); diff != "" {
		t.Errorf("findings (-want +got): only the policy's rules, skipped by the Dockerfile\n%s", diff)
	}
	if diff := cmp.Diff(want, errorsOf(rep)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "lint violation found for rules: RootUser (line 4), MaintainerDeprecated (line 6) (failing the build: --check-fail-on)") {
		t.Errorf("Err() = %v", err)
	}

	// Without a directive, the other findings stay warnings.
	df = "FROM busybox as base\nUSER root\nCMD [\"sh\"]\n"
	rep, err = Run([]byte(df), Options{BaseImage: images, FailOn: []string{"RootUser"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{f("RootUser", 2, rootAs("root"))}, errorsOf(rep)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if got := formatFindings(rep.Findings, nil); len(got) != 3 {
		t.Errorf("findings %q, want FromAsCasing, RootUser and NoHealthcheck", got)
	}

	rep, err = Run([]byte("# check=skip=all\n"+df), Options{BaseImage: images, FailOn: []string{All}})
	if err != nil {
		t.Fatal(err)
	}
	if got := errorsOf(rep); len(got) != 3 || len(rep.Findings) != 3 {
		t.Errorf("fail on all: errors %q, want all three findings", got)
	}
}

func TestParseRules(t *testing.T) {
	got, err := ParseRules("RootUser, NoHealthcheck,,SecretsUsedInArgOrEnv,RootUser")
	if err != nil || !slices.Equal(got, []string{"RootUser", "NoHealthcheck", "SecretsUsedInArgOrEnv"}) {
		t.Errorf("ParseRules = %q, %v", got, err)
	}
	if got, err := ParseRules("all"); err != nil || !slices.Equal(got, []string{All}) {
		t.Errorf("ParseRules(all) = %q, %v", got, err)
	}
	if _, err := ParseRules("RootUser,rootuser"); err == nil || !strings.Contains(err.Error(), `unknown build check rule "rootuser"`) {
		t.Errorf("ParseRules(rootuser) = %v, want an unknown rule (names are case-sensitive)", err)
	}
}

// Rules lists every rule of the BuildKit module the executor is built
// with (its ruleset.go), so that an upgrade that adds one is noticed.
func TestRules_coverBuildKitsRuleset(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/moby/buildkit").Output()
	if err != nil {
		t.Skipf("finding the buildkit module: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "frontend/dockerfile/linter/ruleset.go"))
	if err != nil {
		t.Skipf("reading BuildKit's ruleset: %v", err)
	}
	var theirs []string
	for _, m := range regexp.MustCompile(`Name:\s+"(\w+)"`).FindAllStringSubmatch(string(src), -1) {
		theirs = append(theirs, m[1])
	}
	var listed []string
	for _, r := range Rules() {
		if !r.Ours {
			listed = append(listed, r.Name)
		}
		if r.URL == "" || r.Description == "" {
			t.Errorf("rule %s has no URL or description", r.Name)
		}
	}
	slices.Sort(theirs)
	slices.Sort(listed)
	if diff := cmp.Diff(theirs, listed); diff != "" {
		t.Errorf("BuildKit's rules (-theirs +listed):\n%s", diff)
	}
}

// Options.Skip adds to the directive's skips; FailOn wins over it.
func TestRun_skip(t *testing.T) {
	df := "# check=skip=FromAsCasing\nFROM busybox as base\nMAINTAINER me\nCMD [\"sh\"]\n"
	for _, tc := range []struct {
		name         string
		skip, failOn []string
		want         []string
	}{
		{name: "none", want: []string{"RootUser:2", "NoHealthcheck:2", "MaintainerDeprecated:3"}},
		{name: "ours", skip: []string{"RootUser", "NoHealthcheck"}, want: []string{"MaintainerDeprecated:3"}},
		{name: "all", skip: []string{All}, want: nil},
		{name: "fail-on wins", skip: []string{All}, failOn: []string{"RootUser"}, want: []string{"RootUser:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run([]byte(df), Options{BaseImage: images, Skip: tc.skip, FailOn: tc.failOn})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range rep.Findings {
				got = append(got, x.Rule+":"+strconv.Itoa(x.Line))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}
