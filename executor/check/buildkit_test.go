package check

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
)

// The cases of BuildKit's frontend/dockerfile/dockerfile_check_test.go
// (v0.34.2), each named after the test it comes from. BuildKit runs each
// twice: as a build ("warntype=progress": the stages the target needs)
// and as `docker build --check` ("warntype=unmarshal": every stage);
// wantLint is the second where it differs (its UnmarshalWarnings). The
// expected findings are BuildKit's, by rule, line and message; the cases
// assert BuildKit's rules only (RootUser and NoHealthcheck, ours, have
// their own tests). A BuildKit test's build error is asserted where the
// checks find it (a Dockerfile the parser refuses, a FROM line that does
// not expand), not where only the build does (a COPY of an ignored file).

// testImage is the config of the base images the cases name (busybox,
// alpine): a PATH, a CMD, a layer, this machine's platform.
func testImage() *dockerspec.DockerOCIImage {
	img := &dockerspec.DockerOCIImage{}
	img.OS, img.Architecture = "linux", runtime.GOARCH
	img.RootFS.Type = "layers"
	img.RootFS.DiffIDs = []digest.Digest{digest.Digest("sha256:" + strings.Repeat("0", 64))}
	img.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img.Config.Cmd = []string{"sh"}
	return img
}

// resolveTestImages resolves every image to testImage.
func resolveTestImages(string, ocispec.Platform) (*dockerspec.DockerOCIImage, error) {
	return testImage(), nil
}

type bkCase struct {
	name       string
	dockerfile string
	ignore     []string
	buildArgs  map[string]string
	// want are the findings of a build; wantLint those of a check of
	// every stage when they differ (nil: the same).
	want, wantLint []string
	wantErr        string
}

// f formats a finding as the cases expect it.
func f(rule string, line int, msg string) string { return fmt.Sprintf("%s:%d: %s", rule, line, msg) }

func formatFindings(fs []Finding, filter func(Finding) bool) []string {
	var out []string
	for _, x := range fs {
		if filter == nil || filter(x) {
			out = append(out, f(x.Rule, x.Line, x.Message))
		}
	}
	return out
}

// sortedFindings sorts formatted findings by line, then message.
func sortedFindings(fs []string) []string {
	out := slices.Clone(fs)
	slices.SortStableFunc(out, func(a, b string) int {
		la, lb := lineOf(a), lineOf(b)
		if la != lb {
			return la - lb
		}
		_, ma, _ := strings.Cut(a, ": ")
		_, mb, _ := strings.Cut(b, ": ")
		return strings.Compare(ma, mb)
	})
	if out == nil {
		out = []string{}
	}
	return out
}

func lineOf(s string) int {
	_, rest, _ := strings.Cut(s, ":")
	n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ':')])
	return n
}

func buildkitRule(f Finding) bool {
	r := Lookup(f.Rule)
	return r != nil && !r.Ours
}

var buildkitCases = []bkCase{
	// testRuleCheckOption
	{name: "testRuleCheckOption/skip=all", dockerfile: "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n"},
	{name: "testRuleCheckOption/skip=all;error=true", dockerfile: "#check=skip=all;error=true\nFROM scratch as base\ncopy Dockerfile .\n"},
	{name: "testRuleCheckOption/skip two", dockerfile: "#check=skip=ConsistentInstructionCasing,FromAsCasing\nFROM scratch as base\ncopy Dockerfile .\n"},
	{name: "testRuleCheckOption/skip two;error=true", dockerfile: "#check=skip=ConsistentInstructionCasing,FromAsCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n"},
	{
		name:       "testRuleCheckOption/skip one",
		dockerfile: "#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n",
		want:       []string{f("FromAsCasing", 2, "'as' and 'FROM' keywords' casing do not match")},
	},
	{
		name:       "testRuleCheckOption/skip one;error=true",
		dockerfile: "#check=skip=ConsistentInstructionCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n",
		want:       []string{f("FromAsCasing", 2, "'as' and 'FROM' keywords' casing do not match")},
		wantErr:    "lint violation found for rules: FromAsCasing",
	},
	{
		name:       "testRuleCheckOption/build arg replaces the directive",
		dockerfile: "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n",
		buildArgs:  map[string]string{CheckArg: "skip=ConsistentInstructionCasing;error=true"},
		want:       []string{f("FromAsCasing", 2, "'as' and 'FROM' keywords' casing do not match")},
		wantErr:    "lint violation found for rules: FromAsCasing",
	},
	{
		name:       "testRuleCheckOption/build arg skip=all",
		dockerfile: "#check=error=true\nFROM scratch as base\ncopy Dockerfile .\n",
		buildArgs:  map[string]string{CheckArg: "skip=all"},
	},

	// testStageName
	{
		name:       "testStageName/1",
		dockerfile: "\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n# warning: 'as' should match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\nFROM scratch AS base3\n",
		want: []string{
			f("StageNameCasing", 4, "Stage name 'BadStageName' should be lowercase"),
			f("FromAsCasing", 8, "'as' and 'FROM' keywords' casing do not match"),
		},
	},
	{
		name:       "testStageName/2",
		dockerfile: "\n# warning: 'AS' should match 'from' cmd casing.\n#\nfrom scratch AS base\n\nfrom scratch as base2\n",
		want:       []string{f("FromAsCasing", 4, "'AS' and 'from' keywords' casing do not match")},
	},

	// testNoEmptyContinuation
	{
		name:       "testNoEmptyContinuation",
		dockerfile: "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n",
		want:       []string{f("NoEmptyContinuation", 6, "Empty continuation line")},
	},

	// testConsistentInstructionCasing
	{
		name:       "testConsistentInstructionCasing/1",
		dockerfile: "\n# warning: 'FROM' should be either lowercased or uppercased\n#\nFrom scratch as base\nFROM scratch AS base2\n",
		want:       []string{f("ConsistentInstructionCasing", 4, "Command 'From' should match the case of the command majority (uppercase)")},
	},
	{
		name:       "testConsistentInstructionCasing/2",
		dockerfile: "\nFROM scratch\n# warning: 'copy' should match command majority's casing (uppercase)\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n",
		want:       []string{f("ConsistentInstructionCasing", 4, "Command 'copy' should match the case of the command majority (uppercase)")},
	},
	{
		name:       "testConsistentInstructionCasing/3",
		dockerfile: "\n# warning: 'frOM' should be either lowercased or uppercased\n#\nfrOM scratch as base\nfrom scratch as base2\n",
		want:       []string{f("ConsistentInstructionCasing", 4, "Command 'frOM' should match the case of the command majority (lowercase)")},
	},
	{
		name:       "testConsistentInstructionCasing/4",
		dockerfile: "\nfrom scratch\n# warning: 'COPY' should match command majority's casing (lowercase)\nCOPY Dockerfile /foo\ncopy Dockerfile /bar\n",
		want:       []string{f("ConsistentInstructionCasing", 4, "Command 'COPY' should match the case of the command majority (lowercase)")},
	},
	{
		name:       "testConsistentInstructionCasing/5",
		dockerfile: "\n# warning: 'from' should match command majority's casing (uppercase)\n#\nfrom scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\nCOPY Dockerfile /baz\n",
		want:       []string{f("ConsistentInstructionCasing", 4, "Command 'from' should match the case of the command majority (uppercase)")},
	},
	{
		name:       "testConsistentInstructionCasing/6",
		dockerfile: "\n# warning: 'FROM' should match command majority's casing (lowercase)\n#\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n",
		want:       []string{f("ConsistentInstructionCasing", 4, "Command 'FROM' should match the case of the command majority (lowercase)")},
	},
	{name: "testConsistentInstructionCasing/7", dockerfile: "\nfrom scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\n"},
	{name: "testConsistentInstructionCasing/8", dockerfile: "\nFROM scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\n"},
	{name: "testConsistentInstructionCasing/9", dockerfile: "\nFROM alpine\nRUN <<'EOT'\nenv\nEOT\n"},

	// testDuplicateStageName
	{
		name:       "testDuplicateStageName/1",
		dockerfile: "\nFROM scratch AS b\nFROM scratch AS b\n",
		want:       []string{f("DuplicateStageName", 3, `Duplicate stage name "b", stage names should be unique`)},
	},
	{name: "testDuplicateStageName/2", dockerfile: "\nFROM scratch AS b1\nFROM scratch AS b2\n"},

	// testReservedStageName
	{
		name:       "testReservedStageName/1",
		dockerfile: "\nFROM scratch AS scratch\nFROM scratch AS context\n",
		want: []string{
			f("ReservedStageName", 2, `Stage name should not use the same name as reserved stage "scratch"`),
			f("ReservedStageName", 3, `Stage name should not use the same name as reserved stage "context"`),
		},
	},
	{name: "testReservedStageName/2", dockerfile: "\nFROM scratch\nFROM scratch AS a\n"},

	// testJSONArgsRecommended
	{
		name:       "testJSONArgsRecommended/CMD",
		dockerfile: "\nFROM scratch\nCMD mycommand\n",
		want:       []string{f("JSONArgsRecommended", 3, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals")},
	},
	{
		name:       "testJSONArgsRecommended/ENTRYPOINT",
		dockerfile: "\nFROM scratch\nENTRYPOINT mycommand\n",
		want:       []string{f("JSONArgsRecommended", 3, "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals")},
	},
	{name: "testJSONArgsRecommended/SHELL CMD", dockerfile: "\nFROM scratch\nSHELL [\"/usr/bin/customshell\"]\nCMD mycommand\n"},
	{name: "testJSONArgsRecommended/SHELL ENTRYPOINT", dockerfile: "\nFROM scratch\nSHELL [\"/usr/bin/customshell\"]\nENTRYPOINT mycommand\n"},
	{name: "testJSONArgsRecommended/base SHELL CMD", dockerfile: "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nCMD mycommand\n"},
	{name: "testJSONArgsRecommended/base SHELL ENTRYPOINT", dockerfile: "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nENTRYPOINT mycommand\n"},

	// testMaintainerDeprecated
	{
		name:       "testMaintainerDeprecated/1",
		dockerfile: "\nFROM scratch\nMAINTAINER me@example.org\n",
		want:       []string{f("MaintainerDeprecated", 3, "Maintainer instruction is deprecated in favor of using label")},
	},
	{name: "testMaintainerDeprecated/LABEL", dockerfile: "\nFROM scratch\nLABEL org.opencontainers.image.authors=\"me@example.org\"\n"},
	{name: "testMaintainerDeprecated/skip CMD", dockerfile: "\nFROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n"},
	{name: "testMaintainerDeprecated/skip ENTRYPOINT", dockerfile: "\nFROM scratch\n# check=skip=JSONArgsRecommended\nENTRYPOINT mycommand\n"},
	{name: "testMaintainerDeprecated/skip MAINTAINER", dockerfile: "\nFROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER me@example.org\n"},

	// testWarningsBeforeError
	{
		name:       "testWarningsBeforeError",
		dockerfile: "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n",
		want: []string{
			f("StageNameCasing", 2, "Stage name 'BadStageName' should be lowercase"),
			f("MaintainerDeprecated", 3, "Maintainer instruction is deprecated in favor of using label"),
		},
		wantErr: "Dockerfile line 4: unknown instruction: BADCMD",
	},

	// testUndeclaredArg
	{name: "testUndeclaredArg/1", dockerfile: "\nARG base=scratch\nFROM $base\nCOPY Dockerfile .\n"},
	{name: "testUndeclaredArg/2", dockerfile: "\nARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n"},
	{name: "testUndeclaredArg/3", dockerfile: "\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n"},
	{name: "testUndeclaredArg/4", dockerfile: "\nARG DEBUG\nFROM scratch${DEBUG}\nCOPY Dockerfile .\n"},
	{name: "testUndeclaredArg/5", dockerfile: "\nARG DEBUG\nFROM scra${DEBUG:-tch}\nCOPY Dockerfile .\n"},
	{name: "testUndeclaredArg/6", dockerfile: "\nARG DEBUG=\"\"\nFROM scratch${DEBUG-@bogus}\nCOPY Dockerfile .\n"},
	{
		name:       "testUndeclaredArg/7",
		dockerfile: "\nFROM --platform=$BULIDPLATFORM scratch\nCOPY Dockerfile .\n",
		want:       []string{f("UndefinedArgInFrom", 2, "FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)")},
		wantErr:    "Dockerfile line 2: empty platform value from expression $BULIDPLATFORM (did you mean BUILDPLATFORM?)",
	},
	{
		name:       "testUndeclaredArg/8",
		dockerfile: "\nARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\nCOPY Dockerfile .\n\t",
		want:       []string{f("UndefinedArgInFrom", 4, "FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?)")},
		wantErr:    "failed to parse platform linux/${MYARCH}",
	},
	{
		name:       "testUndeclaredArg/9",
		dockerfile: "\nARG tag=latest\nFROM busybox:${tag}${version} AS b\nCOPY Dockerfile .\n",
		want:       []string{f("UndefinedArgInFrom", 3, "FROM argument 'version' is not declared")},
	},

	// testWorkdirRelativePath
	{
		name:       "testWorkdirRelativePath/1",
		dockerfile: "\nFROM scratch\nWORKDIR app/\n",
		want:       []string{f("WorkdirRelativePath", 3, `Relative workdir "app/" can have unexpected results if the base image changes`)},
	},
	{name: "testWorkdirRelativePath/2", dockerfile: "\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n"},
	{name: "testWorkdirRelativePath/3", dockerfile: "\nFROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n"},

	// testUnmatchedVars
	{name: "testUnmatchedVars/1", dockerfile: "\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n"},
	{name: "testUnmatchedVars/2", dockerfile: "\nFROM alpine AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n"},
	{name: "testUnmatchedVars/3", dockerfile: "\nFROM alpine\nRUN echo $PATH\n"},
	{
		name:       "testUnmatchedVars/4",
		dockerfile: "\nFROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n",
		want:       []string{f("UndefinedVar", 3, "Usage of undefined variable '$foo'")},
	},
	{
		name:       "testUnmatchedVars/5",
		dockerfile: "\nFROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n\t",
		want:       []string{f("UndefinedVar", 6, "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)")},
	},
	{
		name:       "testUnmatchedVars/6",
		dockerfile: "\nFROM alpine\nENV PATH=$PAHT:/tmp/bin\n\t\t",
		want:       []string{f("UndefinedVar", 3, "Usage of undefined variable '$PAHT' (did you mean $PATH?)")},
	},

	// testMultipleInstructionsDisallowed
	{
		name:       "testMultipleInstructionsDisallowed/1",
		dockerfile: "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n",
		want: []string{
			f("MultipleInstructionsDisallowed", 3, "Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be used"),
			f("MultipleInstructionsDisallowed", 5, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
			f("MultipleInstructionsDisallowed", 7, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used"),
		},
	},
	{
		name:       "testMultipleInstructionsDisallowed/2",
		dockerfile: "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nCOPY <<EOF /a.txt\nHello, World!\nEOF\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n",
		want: []string{
			f("MultipleInstructionsDisallowed", 3, "Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be used"),
			f("MultipleInstructionsDisallowed", 4, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
			f("MultipleInstructionsDisallowed", 5, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used"),
		},
	},
	{name: "testMultipleInstructionsDisallowed/3", dockerfile: "\nFROM scratch AS a\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\n\nFROM a AS b\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n"},

	// testLegacyKeyValueFormat
	{
		name:       "testLegacyKeyValueFormat/1",
		dockerfile: "\nFROM scratch\nENV testkey value\nLABEL key value\n",
		want: []string{
			f("LegacyKeyValueFormat", 3, `"ENV key=value" should be used instead of legacy "ENV key value" format`),
			f("LegacyKeyValueFormat", 4, `"LABEL key=value" should be used instead of legacy "LABEL key value" format`),
		},
	},
	{name: "testLegacyKeyValueFormat/2", dockerfile: "\nFROM scratch\nENV testkey=value\nLABEL key=value\n"},
	{
		name:       "testLegacyKeyValueFormat/unreachable stage",
		dockerfile: "\nFROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n",
		want:       []string{},
		// BuildKit's UnmarshalWarnings name lines 3 and 4, which are not
		// the instructions' (ENV is on line 5, LABEL on 6): the test's
		// own slip. The lines are the instructions'.
		wantLint: []string{
			f("LegacyKeyValueFormat", 5, `"ENV key=value" should be used instead of legacy "ENV key value" format`),
			f("LegacyKeyValueFormat", 6, `"LABEL key=value" should be used instead of legacy "LABEL key value" format`),
		},
	},
	{name: "testLegacyKeyValueFormat/skip", dockerfile: "\nFROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n# check=skip=LegacyKeyValueFormat\nLABEL key value\n"},

	// testRedundantTargetPlatform
	{
		name:       "testRedundantTargetPlatform/1",
		dockerfile: "\nFROM --platform=$TARGETPLATFORM scratch\n",
		want:       []string{f("RedundantTargetPlatform", 2, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior")},
	},
	{
		name:       "testRedundantTargetPlatform/2",
		dockerfile: "\nFROM --platform=${TARGETPLATFORM} scratch\n",
		want:       []string{f("RedundantTargetPlatform", 2, "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior")},
	},
	{name: "testRedundantTargetPlatform/skip", dockerfile: "\n# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n"},

	// testSecretsUsedInArgOrEnv
	{
		name:       "testSecretsUsedInArgOrEnv",
		dockerfile: "# check=skip=InvalidDefinitionDescription\n\nFROM scratch\nARG SECRET_PASSPHRASE\nENV SUPER_Secret=foo\nENV password=bar secret=baz\nARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\nENV git_key=\nENV PUBLIC_KEY=\nARG public_token\nARG SECRET_PASSPHRASE_FILE\nENV password_file=bar secret_File=baz\nARG AUTH_MODULE_VERSION\n# check=skip=SecretsUsedInArgOrEnv // allow secret in environment\nENV password=bar\n# check=skip=SecretsUsedInArgOrEnv // allow secret in arg\nARG password\n# check=skip=all // is local to only this instruction\nENV alternate_password=bar\n# check=skip=all // is local to only this instruction\nARG alternate_password\n",
		want: []string{
			f("SecretsUsedInArgOrEnv", 4, `Do not use ARG or ENV instructions for sensitive data (ARG "SECRET_PASSPHRASE")`),
			f("SecretsUsedInArgOrEnv", 5, `Do not use ARG or ENV instructions for sensitive data (ENV "SUPER_Secret")`),
			f("SecretsUsedInArgOrEnv", 6, `Do not use ARG or ENV instructions for sensitive data (ENV "password")`),
			f("SecretsUsedInArgOrEnv", 6, `Do not use ARG or ENV instructions for sensitive data (ENV "secret")`),
			f("SecretsUsedInArgOrEnv", 7, `Do not use ARG or ENV instructions for sensitive data (ARG "super_duper_secret_token")`),
			f("SecretsUsedInArgOrEnv", 7, `Do not use ARG or ENV instructions for sensitive data (ARG "auth")`),
			f("SecretsUsedInArgOrEnv", 8, `Do not use ARG or ENV instructions for sensitive data (ENV "apikey")`),
			f("SecretsUsedInArgOrEnv", 9, `Do not use ARG or ENV instructions for sensitive data (ENV "git_key")`),
		},
	},

	// testAllTargetUnmarshal
	{
		name:       "testAllTargetUnmarshal",
		dockerfile: "\nFROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n",
		want:       []string{f("UndefinedVar", 6, "Usage of undefined variable '$bar'")},
		wantLint: []string{
			f("UndefinedVar", 3, "Usage of undefined variable '$foo'"),
			f("UndefinedVar", 6, "Usage of undefined variable '$bar'"),
		},
	},

	// testInvalidDefaultArgInFrom
	{
		name:       "testInvalidDefaultArgInFrom/1",
		dockerfile: "\nARG VERSION\nFROM busybox:$VERSION\n",
		buildArgs:  map[string]string{"VERSION": "latest"},
		want:       []string{f("InvalidDefaultArgInFrom", 3, "Default value for ARG busybox:$VERSION results in empty or invalid base image name")},
	},
	{
		name:       "testInvalidDefaultArgInFrom/2",
		dockerfile: "\nARG IMAGE\nFROM $IMAGE\n",
		buildArgs:  map[string]string{"IMAGE": "busybox:latest"},
		want:       []string{f("InvalidDefaultArgInFrom", 3, "Default value for ARG $IMAGE results in empty or invalid base image name")},
	},
	{
		name:       "testInvalidDefaultArgInFrom/3",
		dockerfile: "\nARG SFX=\"box:\"\nFROM busy${SFX}\n",
		buildArgs:  map[string]string{"SFX": "box:latest"},
		want:       []string{f("InvalidDefaultArgInFrom", 3, "Default value for ARG busy${SFX} results in empty or invalid base image name")},
	},
	{name: "testInvalidDefaultArgInFrom/4", dockerfile: "\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n", buildArgs: map[string]string{"VERSION": "latest"}},
	{name: "testInvalidDefaultArgInFrom/5", dockerfile: "\nARG BUSYBOX_VARIANT=\"\"\nFROM busybox:stable${BUSYBOX_VARIANT}\n", buildArgs: map[string]string{"BUSYBOX_VARIANT": "-musl"}},
	{name: "testInvalidDefaultArgInFrom/6", dockerfile: "\n\tARG BUSYBOX_VARIANT\n\tFROM busybox:stable${BUSYBOX_VARIANT}\n\t", buildArgs: map[string]string{"BUSYBOX_VARIANT": "-musl"}},

	// testFromPlatformFlagConstDisallowed
	{
		name:       "testFromPlatformFlagConstDisallowed/1",
		dockerfile: "\nFROM --platform=linux/amd64 scratch\n",
		want:       []string{f("FromPlatformFlagConstDisallowed", 2, `FROM --platform flag should not use constant value "linux/amd64"`)},
	},
	{name: "testFromPlatformFlagConstDisallowed/2", dockerfile: "\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n"},
	{name: "testFromPlatformFlagConstDisallowed/3", dockerfile: "\nFROM --platform=linux/amd64 scratch AS linux\n"},

	// testCopyIgnoredFiles
	{
		name:       "testCopyIgnoredFiles/1",
		dockerfile: "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n",
		ignore:     []string{"Dockerfile"},
		want: []string{
			f("CopyIgnoredFile", 3, `Attempting to Copy file "Dockerfile" that is excluded by .dockerignore`),
			f("CopyIgnoredFile", 4, `Attempting to Add file "Dockerfile" that is excluded by .dockerignore`),
		},
	},
	{name: "testCopyIgnoredFiles/skip", dockerfile: "# check=skip=CopyIgnoredFile\n\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n", ignore: []string{"Dockerfile"}},
	{name: "testCopyIgnoredFiles/from a stage", dockerfile: "\nFROM scratch AS base\nCOPY Dockerfile /foobar\nADD Dockerfile /windy\n\nFROM base\nCOPY --from=base /foobar /Dockerfile\n", ignore: []string{"foobar"}},
	{name: "testCopyIgnoredFiles/exceptions", dockerfile: "\nFROM scratch\nCOPY ./Dockerfile .\n", ignore: []string{"**", "!Dockerfile"}},
	{name: "testCopyIgnoredFiles/directory", dockerfile: "\nFROM scratch\nCOPY . .\n\t", ignore: []string{"**", "!Dockerfile"}},

	// testCopyIgnoredFileContextRoot
	{name: "testCopyIgnoredFileContextRoot/dotfiles", dockerfile: "\nFROM scratch\nCOPY . .\n", ignore: []string{".*"}},
	{
		name:       "testCopyIgnoredFileContextRoot/wildcard",
		dockerfile: "\nFROM scratch\nCOPY . .\n",
		ignore:     []string{"*"},
		want:       []string{f("CopyIgnoredFile", 3, `Attempting to Copy file "." that is excluded by .dockerignore`)},
	},

	// testExposeProtoCasing
	{
		name:       "testExposeProtoCasing",
		dockerfile: "\nFROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n",
		want: []string{
			f("ExposeProtoCasing", 3, "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase"),
			f("ExposeProtoCasing", 3, "Defined protocol '8080/TCP' in EXPOSE instruction should be lowercase"),
		},
	},

	// testExposeInvalidFormat
	{
		name:       "testExposeInvalidFormat",
		dockerfile: "\nFROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n",
		want: []string{
			f("ExposeInvalidFormat", 3, "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"),
			f("ExposeInvalidFormat", 3, "EXPOSE instruction should not define an IP address or host-port mapping, found '[::1]:8080:8080'"),
			f("ExposeInvalidFormat", 3, "EXPOSE instruction should not define an IP address or host-port mapping, found '5000:5000'"),
		},
	},

	// testDefinitionDescription (an experimental rule)
	{name: "testDefinitionDescription/1", dockerfile: "# check=skip=all;experimental=InvalidDefinitionDescription\n# foo this is the foo\nARG foo=bar\n\n# base this is the base image\nFROM scratch AS base\n\n# version this is the version number\nARG version=latest\n\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n\n# comment for something other than ARG or FROM\nCOPY Dockerfile .\n"},
	{
		name:       "testDefinitionDescription/2",
		dockerfile: "# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n",
		want: []string{
			f("InvalidDefinitionDescription", 3, "Comment for ARG should follow the format: `# foo <description>`"),
			f("InvalidDefinitionDescription", 5, "Comment for FROM should follow the format: `# base <description>`"),
			f("InvalidDefinitionDescription", 7, "Comment for ARG should follow the format: `# version <description>`"),
			f("InvalidDefinitionDescription", 9, "Comment for ARG should follow the format: `# <arg_key> <description>`"),
		},
	},
}

// TestRun_buildkitCheckTests runs BuildKit's check tests, each as a build
// (the stages the target needs, as dockerfile.Parse plans them) and as a
// check of every stage.
func TestRun_buildkitCheckTests(t *testing.T) {
	for _, tc := range buildkitCases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{BuildArgs: tc.buildArgs, IgnorePatterns: tc.ignore, BaseImage: resolveTestImages, Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}
			wantLint := tc.wantLint
			if wantLint == nil {
				wantLint = tc.want
			}
			run := func(mode string, o Options, want []string) {
				rep, err := Run([]byte(tc.dockerfile), o)
				switch {
				case tc.wantErr == "" && err != nil:
					t.Fatalf("%s: %v", mode, err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					if err == nil {
						err = rep.Err()
					}
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("%s: error %v, want one containing %q", mode, err, tc.wantErr)
					}
				}
				// Sorted by line, then message, as BuildKit's
				// checkLinterWarnings compares them.
				got := sortedFindings(formatFindings(rep.Findings, buildkitRule))
				if diff := cmp.Diff(sortedFindings(want), got); diff != "" {
					t.Errorf("%s: findings (-want +got):\n%s", mode, diff)
				}
				for _, x := range rep.Findings {
					if r := Lookup(x.Rule); r == nil || x.URL == "" || x.URL != r.URL {
						t.Errorf("%s: finding %+v: want the rule's URL", mode, x)
					}
				}
			}
			run("check of every stage", o, wantLint)
			plan, err := dockerfile.Parse([]byte(tc.dockerfile), dockerfile.Options{BuildArgs: tc.buildArgs, Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}})
			if err != nil {
				// The build refuses it before its checks (a duplicate
				// stage name, a platform that does not expand): the
				// check of every stage covers it.
				return
			}
			o.Stages = plan.Order
			run("build", o, tc.want)
		})
	}
}

// TestRun_invalidBaseImagePlatform follows BuildKit's
// testBaseImagePlatformMismatch: a base image whose config names another
// platform than the build's.
func TestRun_invalidBaseImagePlatform(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	img := testImage()
	img.Architecture = other
	df := "\nFROM registry.example/app:latest\nENV foo=bar\n\t"
	rep, err := Run([]byte(df), Options{BaseImage: func(string, ocispec.Platform) (*dockerspec.DockerOCIImage, error) { return img, nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{f("InvalidBaseImagePlatform", 2, fmt.Sprintf("Base image registry.example/app:latest was pulled with platform %q, expected %q for current build", "linux/"+other, "linux/"+runtime.GOARCH))}
	if diff := cmp.Diff(want, sortedFindings(formatFindings(rep.Findings, buildkitRule))); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
	// Its own platform: nothing. An image without layers is scratch, which
	// BuildKit does not check.
	for _, mod := range []func(*dockerspec.DockerOCIImage){
		func(i *dockerspec.DockerOCIImage) {
			i.Platform = ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
		},
		func(i *dockerspec.DockerOCIImage) { i.RootFS.DiffIDs = nil },
	} {
		img := testImage()
		img.Architecture = other
		mod(img)
		rep, err := Run([]byte(df), Options{BaseImage: func(string, ocispec.Platform) (*dockerspec.DockerOCIImage, error) { return img, nil }})
		if err != nil {
			t.Fatal(err)
		}
		if got := formatFindings(rep.Findings, buildkitRule); len(got) != 0 {
			t.Errorf("findings %q, want none", got)
		}
	}
}
