package dockerfile

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// planSummary is the part of a Plan the table tests compare.
type planSummary struct {
	Target int
	Order  []int
	Stages []stageSummary
}

type stageSummary struct {
	Name      string
	Base      string
	BaseStage int
	Platform  string
	Line      int
	Commands  int
}

func summarize(p *Plan) planSummary {
	s := planSummary{Target: p.Target, Order: p.Order}
	for _, st := range p.Stages {
		plat := ""
		if st.Platform != nil {
			plat = FormatPlatform(*st.Platform)
		}
		s.Stages = append(s.Stages, stageSummary{
			Name: st.Name, Base: st.Base, BaseStage: st.BaseStage, Platform: plat,
			Line: st.Line, Commands: len(st.Commands),
		})
	}
	return s
}

func TestParse_stages(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		opts       Options
		want       planSummary
	}{
		{
			name:       "single stage",
			dockerfile: "FROM busybox\nRUN true\nCMD [\"sh\"]\n",
			want: planSummary{Target: 0, Order: []int{0}, Stages: []stageSummary{
				{Base: "busybox", BaseStage: -1, Line: 1, Commands: 2},
			}},
		},
		{
			name: "last stage is the target and skips stages it does not need",
			dockerfile: `FROM busybox AS a
RUN a
FROM busybox AS unused
RUN b
FROM scratch
COPY --from=a /x /x
`,
			want: planSummary{Target: 2, Order: []int{0, 2}, Stages: []stageSummary{
				{Name: "a", Base: "busybox", BaseStage: -1, Line: 1, Commands: 1},
				{Name: "unused", Base: "busybox", BaseStage: -1, Line: 3, Commands: 1},
				{Base: "scratch", BaseStage: -1, Line: 5, Commands: 1},
			}},
		},
		{
			// BuildKit's testOnBuildInheritedStageWithFrom: a stage FROM
			// one with ONBUILD COPY --from=src needs src, which nothing else
			// names; the stage holding the trigger does not.
			name: "ONBUILD COPY --from of the base stage",
			dockerfile: `FROM busybox AS src
FROM busybox AS unused
FROM busybox AS base
ONBUILD COPY --from=src /in /out
FROM base AS mid
FROM scratch
COPY --from=mid /out /
`,
			want: planSummary{Target: 4, Order: []int{2, 0, 3, 4}, Stages: []stageSummary{
				{Name: "src", Base: "busybox", BaseStage: -1, Line: 1},
				{Name: "unused", Base: "busybox", BaseStage: -1, Line: 2},
				{Name: "base", Base: "busybox", BaseStage: -1, Line: 3, Commands: 1},
				{Name: "mid", Base: "base", BaseStage: 2, Line: 5},
				{Base: "scratch", BaseStage: -1, Line: 6, Commands: 1},
			}},
		},
		{
			name: "stage as base and COPY --from by name, index and image",
			dockerfile: `FROM busybox AS base
FROM busybox AS Tools
FROM alpine AS other
FROM base AS final
COPY --from=tools /t /t
COPY --from=2 /o /o
COPY --from=example.com/img:1 /i /i
`,
			want: planSummary{Target: 3, Order: []int{0, 1, 2, 3}, Stages: []stageSummary{
				{Name: "base", Base: "busybox", BaseStage: -1, Line: 1},
				{Name: "tools", Base: "busybox", BaseStage: -1, Line: 2},
				{Name: "other", Base: "alpine", BaseStage: -1, Line: 3},
				{Name: "final", Base: "base", BaseStage: 0, Line: 4, Commands: 3},
			}},
		},
		{
			name: "dependencies come before their users, in Dockerfile order among equals",
			dockerfile: `FROM busybox AS a
FROM busybox AS b
FROM a AS c
COPY --from=b /b /b
FROM busybox AS d
COPY --from=c /c /c
COPY --from=a /a /a
`,
			want: planSummary{Target: 3, Order: []int{0, 1, 2, 3}, Stages: []stageSummary{
				{Name: "a", Base: "busybox", BaseStage: -1, Line: 1},
				{Name: "b", Base: "busybox", BaseStage: -1, Line: 2},
				{Name: "c", Base: "a", BaseStage: 0, Line: 3, Commands: 1},
				{Name: "d", Base: "busybox", BaseStage: -1, Line: 5, Commands: 2},
			}},
		},
		{
			name: "target picks an earlier stage and only what it needs",
			dockerfile: `FROM busybox AS a
FROM busybox AS b
FROM a AS c
FROM c AS d
`,
			opts: Options{Target: "c"},
			want: planSummary{Target: 2, Order: []int{0, 2}, Stages: []stageSummary{
				{Name: "a", Base: "busybox", BaseStage: -1, Line: 1},
				{Name: "b", Base: "busybox", BaseStage: -1, Line: 2},
				{Name: "c", Base: "a", BaseStage: 0, Line: 3},
				{Name: "d", Base: "c", BaseStage: 2, Line: 4},
			}},
		},
		{
			name:       "target is matched case-insensitively",
			dockerfile: "FROM busybox AS Build\nFROM busybox\n",
			opts:       Options{Target: "BUILD"},
			want: planSummary{Target: 0, Order: []int{0}, Stages: []stageSummary{
				{Name: "build", Base: "busybox", BaseStage: -1, Line: 1},
				{Base: "busybox", BaseStage: -1, Line: 2},
			}},
		},
		{
			name:       "a base named like a later stage is an image",
			dockerfile: "FROM later AS first\nFROM busybox AS later\n",
			want: planSummary{Target: 1, Order: []int{1}, Stages: []stageSummary{
				{Name: "first", Base: "later", BaseStage: -1, Line: 1},
				{Name: "later", Base: "busybox", BaseStage: -1, Line: 2},
			}},
		},
		{
			name:       "line continuation and comments keep FROM lines",
			dockerfile: "# a comment\n\nFROM busybox AS a\nRUN echo \\\n  hi\nFROM a\n",
			want: planSummary{Target: 1, Order: []int{0, 1}, Stages: []stageSummary{
				{Name: "a", Base: "busybox", BaseStage: -1, Line: 3, Commands: 1},
				{Base: "a", BaseStage: 0, Line: 6},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.dockerfile), tc.opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, summarize(p)); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParse_args(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		opts       Options
		wantBases  []string
		wantMeta   []string
	}{
		{
			name:       "default",
			dockerfile: "ARG TAG=1.36\nFROM busybox:$TAG\n",
			wantBases:  []string{"busybox:1.36"},
			wantMeta:   []string{"TAG"},
		},
		{
			name:       "build arg overrides the default",
			dockerfile: "ARG TAG=1.36\nFROM busybox:${TAG}\n",
			opts:       Options{BuildArgs: map[string]string{"TAG": "1.37"}},
			wantBases:  []string{"busybox:1.37"},
			wantMeta:   []string{"TAG"},
		},
		{
			name:       "declared without default and not set",
			dockerfile: "ARG TAG\nFROM busybox:${TAG:-latest}\n",
			wantBases:  []string{"busybox:latest"},
			wantMeta:   []string{"TAG"},
		},
		{
			name:       "declared without default and set",
			dockerfile: "ARG TAG\nFROM busybox:${TAG:-latest}\n",
			opts:       Options{BuildArgs: map[string]string{"TAG": "musl"}},
			wantBases:  []string{"busybox:musl"},
			wantMeta:   []string{"TAG"},
		},
		{
			name:       "an undeclared build arg does not reach FROM",
			dockerfile: "FROM busybox:${TAG:-latest}\n",
			opts:       Options{BuildArgs: map[string]string{"TAG": "musl"}},
			wantBases:  []string{"busybox:latest"},
		},
		{
			name:       "defaults see earlier meta args",
			dockerfile: "ARG REG=example.com\nARG IMG=${REG}/busybox\nFROM $IMG\nFROM ${IMG}:2\n",
			opts:       Options{BuildArgs: map[string]string{"REG": "registry.local:5000"}},
			wantBases:  []string{"registry.local:5000/busybox", "registry.local:5000/busybox:2"},
			wantMeta:   []string{"REG", "IMG"},
		},
		{
			name:       "several names in one ARG",
			dockerfile: "ARG A=x B=y\nFROM $A$B\n",
			wantBases:  []string{"xy"},
			wantMeta:   []string{"A", "B"},
		},
		{
			name:       "predefined platform args",
			dockerfile: "FROM img:$TARGETOS-$TARGETARCH-${TARGETVARIANT:-none}\nFROM $BUILDPLATFORM\nFROM ${TARGETPLATFORM}\n",
			opts:       Options{BuildPlatform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}},
			wantBases:  []string{"img:linux-arm64-none", "linux/arm64", "linux/arm64"},
		},
		{
			name:       "predefined platform args with a variant",
			dockerfile: "FROM img:$TARGETARCH$TARGETVARIANT\nFROM $TARGETPLATFORM\n",
			opts:       Options{Platform: &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
			wantBases:  []string{"img:armv7", "linux/arm/v7"},
		},
		{
			name:       "predefined platform args default to this machine",
			dockerfile: "FROM img:$TARGETOS-$TARGETARCH\n",
			wantBases:  []string{"img:" + runtime.GOOS + "-" + runtime.GOARCH},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.dockerfile), tc.opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var bases []string
			for _, s := range p.Stages {
				bases = append(bases, s.Base)
			}
			if diff := cmp.Diff(tc.wantBases, bases); diff != "" {
				t.Errorf("bases (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantMeta, p.MetaArgNames); diff != "" {
				t.Errorf("MetaArgNames (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParse_globalArgs(t *testing.T) {
	p, err := Parse([]byte("ARG A=1\nARG B\nARG C\nFROM busybox\n"), Options{
		BuildPlatform: &ocispec.Platform{OS: "linux", Architecture: "amd64"},
		BuildArgs:     map[string]string{"C": "3", "UNDECLARED": "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"A": "1", "C": "3",
		"BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64", "BUILDVARIANT": "", "BUILDOSVERSION": "",
		"TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "amd64", "TARGETVARIANT": "", "TARGETOSVERSION": "",
		"TARGETSTAGE": "default",
	}
	got := map[string]string{}
	for _, k := range p.GlobalArgs.Keys() {
		got[k] = p.GlobalArgs.MustGet(k)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GlobalArgs (-want +got):\n%s", diff)
	}
}

func TestParse_platform(t *testing.T) {
	amd64 := &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	tests := []struct {
		name       string
		dockerfile string
		opts       Options
		want       string // Platform of the first stage, normalised
		wantErr    string
	}{
		{name: "native", dockerfile: "FROM --platform=linux/amd64 busybox\n", opts: Options{BuildPlatform: amd64}, want: "linux/amd64"},
		{name: "BUILDPLATFORM", dockerfile: "FROM --platform=$BUILDPLATFORM busybox\n", opts: Options{BuildPlatform: arm64, Platform: amd64}, want: "linux/arm64"},
		{name: "TARGETPLATFORM", dockerfile: "FROM --platform=${TARGETPLATFORM} busybox\n", opts: Options{BuildPlatform: amd64, Platform: arm64}, want: "linux/arm64"},
		{name: "TARGETPLATFORM by default", dockerfile: "FROM --platform=${TARGETPLATFORM} busybox\n", want: FormatPlatform(NativePlatform())},
		// platforms.Parse normalises (BuildKit's buildDispatchStates).
		{name: "x86_64 alias", dockerfile: "FROM --platform=linux/x86_64 busybox\n", want: "linux/amd64"},
		{name: "aarch64 alias", dockerfile: "FROM --platform=linux/aarch64 busybox\n", want: "linux/arm64"},
		{name: "arm64/v8 is arm64", dockerfile: "FROM --platform=linux/arm64/v8 busybox\n", want: "linux/arm64"},
		{name: "arm is arm/v7", dockerfile: "FROM --platform=linux/arm busybox\n", want: "linux/arm/v7"},
		{name: "armhf", dockerfile: "FROM --platform=linux/armhf busybox\n", want: "linux/arm/v7"},
		{name: "from a meta arg", dockerfile: "ARG P=linux/s390x\nFROM --platform=$P busybox\n", want: "linux/s390x"},
		{name: "other architecture", dockerfile: "FROM --platform=linux/arm64 busybox\n", opts: Options{BuildPlatform: amd64}, want: "linux/arm64"},
		{name: "empty after expansion", dockerfile: "FROM --platform=$NOPE busybox\n", wantErr: "empty platform value from expression $NOPE"},
		{name: "not a platform", dockerfile: "FROM --platform=linux/amd64/v2/x busybox\n", wantErr: "failed to parse platform linux/amd64/v2/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.dockerfile), tc.opts)
			if tc.wantErr != "" {
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("Parse error = %v, want a *dockerfile.Error", err)
				}
				wantLine := strings.Count(tc.dockerfile[:strings.Index(tc.dockerfile, "FROM")], "\n") + 1
				if de.Line != wantLine {
					t.Errorf("Line = %d, want %d (%v)", de.Line, wantLine, err)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q does not say %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := FormatPlatform(*p.Stages[0].Platform); got != tc.want {
				t.Errorf("Platform = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPlan_StagePlatform: the platform of each stage by BuildKit's rules
// (see StagePlatform), for a build on amd64 for arm64.
func TestPlan_StagePlatform(t *testing.T) {
	df := `FROM --platform=$BUILDPLATFORM busybox AS builder
FROM builder AS derived
FROM --platform=linux/s390x builder AS ignored-platform
FROM --platform=$BUILDPLATFORM scratch AS scratch-build
FROM scratch AS plain-scratch
FROM busybox AS target-image
FROM --platform=linux/ppc64le busybox AS explicit
FROM explicit
`
	p, err := Parse([]byte(df), Options{
		BuildPlatform: &ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Platform:      &ocispec.Platform{OS: "linux", Architecture: "arm64"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range p.Stages {
		got = append(got, FormatPlatform(p.StagePlatform(i)))
	}
	want := []string{
		"linux/amd64",   // --platform=$BUILDPLATFORM
		"linux/amd64",   // its base stage's
		"linux/amd64",   // its base stage's: a stage's --platform is ignored (moby/buildkit#4929)
		"linux/arm64",   // scratch is the target platform (resolveReachableStages)
		"linux/arm64",   // scratch
		"linux/arm64",   // an image: the target platform
		"linux/ppc64le", // an image: its --platform
		"linux/ppc64le", // its base stage's
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stage platforms (-want +got):\n%s", diff)
	}
}

// TestParse_platformArgs: the automatic platform args with BuildKit's
// values (dockerfile2llb's defaultArgs: BUILDPLATFORM by
// platforms.Format, TARGETPLATFORM by platforms.FormatAll), and build
// args replacing them (testPlatformArgsExplicit sets TARGETOS to
// freebsd by a build arg: only the arg changes).
func TestParse_platformArgs(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want map[string]string
	}{
		{
			name: "arm/v7 on amd64",
			opts: Options{BuildPlatform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}, Platform: &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
			want: map[string]string{
				"BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64", "BUILDVARIANT": "", "BUILDOSVERSION": "",
				"TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7", "TARGETOSVERSION": "",
			},
		},
		{
			name: "testPlatformArgsExplicit: darwin/ppc64le, TARGETOS by a build arg",
			opts: Options{
				BuildPlatform: &ocispec.Platform{OS: "linux", Architecture: "amd64"},
				Platform:      &ocispec.Platform{OS: "darwin", Architecture: "ppc64le"},
				BuildArgs:     map[string]string{"TARGETOS": "freebsd"},
			},
			want: map[string]string{
				"BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64", "BUILDVARIANT": "", "BUILDOSVERSION": "",
				"TARGETPLATFORM": "darwin/ppc64le", "TARGETOS": "freebsd", "TARGETARCH": "ppc64le", "TARGETVARIANT": "", "TARGETOSVERSION": "",
			},
		},
		{
			name: "implicit target: the build platform",
			opts: Options{BuildPlatform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}},
			want: map[string]string{
				"BUILDPLATFORM": "linux/arm64", "BUILDOS": "linux", "BUILDARCH": "arm64", "BUILDVARIANT": "", "BUILDOSVERSION": "",
				"TARGETPLATFORM": "linux/arm64", "TARGETOS": "linux", "TARGETARCH": "arm64", "TARGETVARIANT": "", "TARGETOSVERSION": "",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte("FROM scratch\n"), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k := range tc.want {
				got[k] = p.GlobalArgs.MustGet(k)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("platform args (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParse_platformArgsImplicit is BuildKit's testPlatformArgsImplicit:
// FROM names a stage through ${TARGETOS}.
func TestParse_platformArgsImplicit(t *testing.T) {
	df := "FROM scratch AS build-" + runtime.GOOS + "\nCOPY foo bar\nFROM build-${TARGETOS}\nCOPY foo2 bar2\n"
	p, err := Parse([]byte(df), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Stages[1].BaseStage != 0 {
		t.Errorf("stage 1 is built FROM %q (stage %d), want stage 0", p.Stages[1].Base, p.Stages[1].BaseStage)
	}
}

func TestParse_errors(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		opts       Options
		wantLine   int
		wantMsg    string // a substring of the error
	}{
		{name: "empty", dockerfile: "", wantMsg: "empty"},
		{name: "only white space", dockerfile: " \n\t\n", wantMsg: "empty"},
		{name: "only comments", dockerfile: "# nothing\n# here\n", wantLine: 2, wantMsg: "no instructions"},
		{name: "only a meta ARG", dockerfile: "ARG A=1\n", wantMsg: "no FROM"},
		{name: "unknown target", dockerfile: "FROM busybox AS a\n", opts: Options{Target: "b"}, wantMsg: `"b" could not be found`},
		{name: "duplicate stage names", dockerfile: "FROM busybox AS a\nRUN x\nFROM busybox AS A\n", wantLine: 3, wantMsg: "duplicate"},
		{name: "unknown instruction", dockerfile: "FROM busybox\nRUN true\nFROB x\n", wantLine: 3, wantMsg: "frob"},
		{name: "instruction before FROM", dockerfile: "# c\nRUN true\nFROM busybox\n", wantLine: 2},
		{name: "FROM without an image", dockerfile: "FROM busybox\nFROM\n", wantLine: 2},
		{name: "COPY with one argument", dockerfile: "FROM busybox\n\nCOPY onlyone\n", wantLine: 3},
		{name: "bad flag", dockerfile: "FROM busybox\nCOPY --nope=1 a b\n", wantLine: 2},
		{name: "blank base after expansion", dockerfile: "ARG B\nFROM $B\n", wantLine: 2, wantMsg: "blank"},
		{name: "COPY --from a later stage by name", dockerfile: "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n", opts: Options{Target: "a"}, wantLine: 2},
		{name: "COPY --from its own stage", dockerfile: "FROM busybox AS a\nRUN true\nCOPY --from=a /x /x\n", wantLine: 3},
		{name: "COPY --from a later index", dockerfile: "FROM busybox\nFROM busybox\nCOPY --from=1 /x /x\n", wantLine: 3},
		{name: "COPY --from with a variable", dockerfile: "FROM busybox\nARG S=a\nCOPY --from=$S /x /x\n", wantLine: 3, wantMsg: "variable expansion"},
		{name: "error on a continued line keeps the start line", dockerfile: "FROM busybox\nRUN true\nCOPY \\\n  --nope=1 \\\n  a b\n", wantLine: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.dockerfile), tc.opts)
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", summarize(p))
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Parse error %v (%T), want a *dockerfile.Error", err, err)
			}
			if de.Line != tc.wantLine {
				t.Errorf("Line = %d, want %d (%v)", de.Line, tc.wantLine, err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.wantMsg)) {
				t.Errorf("error %q does not contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestParse_escapeDirective(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		wantEscape rune
		wantRun    []string
	}{
		{
			name:       "default backslash",
			dockerfile: "FROM busybox\nRUN echo a \\\n  b\n",
			wantEscape: '\\',
			wantRun:    []string{"echo a   b"},
		},
		{
			name:       "backtick",
			dockerfile: "# escape=`\nFROM busybox\nRUN echo C:\\dir `\n  b\n",
			wantEscape: '`',
			wantRun:    []string{"echo C:\\dir   b"},
		},
		{
			name:       "not a directive after an instruction",
			dockerfile: "FROM busybox\n# escape=`\nRUN echo a \\\n  b\n",
			wantEscape: '\\',
			wantRun:    []string{"echo a   b"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.dockerfile), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Escape != tc.wantEscape {
				t.Errorf("Escape = %q, want %q", p.Escape, tc.wantEscape)
			}
			run, ok := p.Stages[0].Commands[0].(*instructions.RunCommand)
			if !ok {
				t.Fatalf("first command is %T, want RUN", p.Stages[0].Commands[0])
			}
			if diff := cmp.Diff(tc.wantRun, run.CmdLine); diff != "" {
				t.Errorf("RUN command line (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParse_escapeDirectiveExpansion(t *testing.T) {
	// With ` as the escape token, \ is an ordinary character in FROM words.
	p, err := Parse([]byte("# escape=`\nARG D=C:\\x\nFROM img:`$D-$D\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Stages[0].Base, "img:$D-C:\\x"; got != want {
		t.Errorf("Base = %q, want %q", got, want)
	}
}

func TestParseTriggers(t *testing.T) {
	tests := []struct {
		name     string
		triggers []string
		want     []string // instruction names
		wantErr  bool
	}{
		{name: "none"},
		{name: "several", triggers: []string{"RUN echo hi", "ENV A=b", "COPY . /app"}, want: []string{"RUN", "ENV", "COPY"}},
		{name: "unknown instruction", triggers: []string{"RUN true", "FROB x"}, wantErr: true},
		{name: "two expressions in one", triggers: []string{"RUN a\nRUN b"}, wantErr: true},
		{name: "empty", triggers: []string{""}, wantErr: true},
		{name: "bad arguments", triggers: []string{"COPY onlyone"}, wantErr: true},
	}
	const line = 7
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmds, err := ParseTriggers(tc.triggers, line)
			if tc.wantErr {
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("ParseTriggers error = %v, want a *dockerfile.Error", err)
				}
				if de.Line != line {
					t.Errorf("Line = %d, want %d", de.Line, line)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range cmds {
				names = append(names, c.Name())
				if loc := c.Location(); len(loc) == 0 || loc[0].Start.Line != line {
					t.Errorf("%s: Location = %v, want line %d", c.Name(), loc, line)
				}
			}
			if diff := cmp.Diff(tc.want, names); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
}

func TestError_Error(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{name: "with line", err: &Error{Line: 3, Err: base}, want: "Dockerfile line 3: boom"},
		{name: "without line", err: &Error{Err: base}, want: "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if !errors.Is(tc.err, base) {
				t.Error("errors.Is(err, base) = false")
			}
		})
	}
}
