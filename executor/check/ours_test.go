package check

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// images resolves the names the cases use: busybox (no USER, no
// HEALTHCHECK, CMD sh), distroless-ish nonroot (USER 65532), healthy (a
// HEALTHCHECK), nohealth (HEALTHCHECK NONE), rootuser (USER root),
// onbuild (ONBUILD USER 1000, HEALTHCHECK), nocmd (no CMD).
func images(ref string, _ ocispec.Platform) (*dockerspec.DockerOCIImage, error) {
	img := testImage()
	switch strings.TrimSuffix(ref, ":latest") {
	case "nonroot":
		img.Config.User = "65532"
	case "rootuser":
		img.Config.User = "root"
	case "healthy":
		img.Config.Healthcheck = &dockerspec.HealthcheckConfig{Test: []string{"CMD", "true"}}
	case "nohealth":
		img.Config.Healthcheck = &dockerspec.HealthcheckConfig{Test: []string{"NONE"}}
	case "onbuild":
		img.Config.OnBuild = []string{"USER 1000", "HEALTHCHECK CMD [\"true\"]"}
	case "nocmd":
		img.Config.Cmd = nil
	}
	return img, nil
}

func ours(f Finding) bool { return f.Rule == RuleRootUser.Name || f.Rule == RuleNoHealthcheck.Name }

type ourCase struct {
	name       string
	dockerfile string
	target     string
	noImages   bool
	want       []string
}

func runOurs(t *testing.T, cases []ourCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Target: tc.target, BaseImage: images}
			if tc.noImages {
				o.BaseImage = nil
			}
			rep, err := Run([]byte(tc.dockerfile), o)
			if err != nil {
				t.Fatal(err)
			}
			got := formatFindings(rep.Findings, ours)
			if diff := cmp.Diff(sortedFindings(tc.want), sortedFindings(got)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			for _, x := range rep.Findings {
				if ours(x) && x.URL != docsURL+strings.ToLower(x.Rule) {
					t.Errorf("%s: URL %q, want the README's anchor", x.Rule, x.URL)
				}
			}
		})
	}
}

const (
	noUser   = "The final stage runs as root: no USER sets another user, in it or its base"
	noHealth = "The final stage has no HEALTHCHECK, in it or its base"
	disabled = "The final stage's health check is disabled (HEALTHCHECK NONE)"
)

func rootAs(user string) string { return RuleRootUser.Format(user) }

func TestRun_rootUser(t *testing.T) {
	const hc = "HEALTHCHECK CMD [\"true\"]\n"
	runOurs(t, []ourCase{
		{name: "no USER in the image or the Dockerfile", dockerfile: "FROM busybox\n" + hc + "CMD [\"sh\"]\n", want: []string{f("RootUser", 1, noUser)}},
		{name: "no USER, CMD of the base image", dockerfile: "# the base has a CMD\nFROM busybox\n" + hc, want: []string{f("RootUser", 2, noUser)}},
		{name: "USER by uid and gid", dockerfile: "FROM busybox\nUSER 65534:65534\n" + hc},
		{name: "USER by name", dockerfile: "FROM busybox\nUSER nobody\n" + hc},
		{name: "USER root after another", dockerfile: "FROM busybox\nUSER nobody\nRUN true\nUSER root\n" + hc, want: []string{f("RootUser", 4, rootAs("root"))}},
		{name: "USER 0 with a group", dockerfile: "FROM busybox\nUSER 0:65534\n" + hc, want: []string{f("RootUser", 2, rootAs("0:65534"))}},
		{name: "USER root with a group", dockerfile: "FROM busybox\nUSER root:root\n" + hc, want: []string{f("RootUser", 2, rootAs("root:root"))}},
		{name: "USER from an ARG", dockerfile: "FROM busybox\nARG UID=1000\nUSER ${UID}\n" + hc},
		{name: "USER from an ARG that is 0", dockerfile: "FROM busybox\nARG UID=0\nUSER $UID\n" + hc, want: []string{f("RootUser", 3, rootAs("0"))}},
		{name: "the base image's non-root user", dockerfile: "FROM nonroot\n" + hc},
		{name: "the base image's root user", dockerfile: "\nFROM rootuser\n" + hc, want: []string{f("RootUser", 2, rootAs("root"))}},
		{name: "the base image's ONBUILD USER", dockerfile: "FROM onbuild\n"},
		{name: "a base stage's USER", dockerfile: "FROM busybox AS base\nUSER 1000\n\nFROM base\n" + hc},
		{name: "a base stage's USER root", dockerfile: "FROM busybox AS base\nUSER root\n\nFROM base\n" + hc, want: []string{f("RootUser", 2, rootAs("root"))}},
		{
			name:       "another stage's USER does not count",
			dockerfile: "FROM busybox AS build\nUSER 1000\nRUN true\n\nFROM busybox\n" + hc,
			want:       []string{f("RootUser", 5, noUser)},
		},
		{name: "the target, not the last stage", dockerfile: "FROM busybox AS app\n" + hc + "\nFROM busybox\nUSER 1000\n" + hc, target: "app", want: []string{f("RootUser", 1, noUser)}},
		{name: "no command to run: not meant to run", dockerfile: "FROM scratch\nCOPY a /a\n"},
		{name: "no command in the base either", dockerfile: "FROM nocmd\nRUN true\n"},
		{name: "ENTRYPOINT makes it meant to run", dockerfile: "FROM nocmd\n" + hc + "ENTRYPOINT [\"/app\"]\n", want: []string{f("RootUser", 1, noUser)}},
		{name: "the base image unknown: not evaluated", dockerfile: "FROM busybox\nCMD [\"sh\"]\n", noImages: true},
		{name: "skipped by the directive", dockerfile: "# check=skip=RootUser\nFROM busybox\n" + hc},
		{name: "skipped at the USER", dockerfile: "FROM busybox\n# check=skip=RootUser\nUSER root\n" + hc},
		{name: "skipped at the FROM", dockerfile: "# check=skip=RootUser\n\n# check=skip=RootUser\nFROM busybox\n" + hc},
	})
}

func TestRun_noHealthcheck(t *testing.T) {
	const user = "USER 1000\n"
	runOurs(t, []ourCase{
		{name: "no HEALTHCHECK", dockerfile: "FROM busybox\n" + user + "CMD [\"sh\"]\n", want: []string{f("NoHealthcheck", 1, noHealth)}},
		{name: "a HEALTHCHECK", dockerfile: "FROM busybox\n" + user + "HEALTHCHECK --interval=30s CMD [\"true\"]\n"},
		{name: "HEALTHCHECK NONE", dockerfile: "FROM healthy\n" + user + "HEALTHCHECK NONE\n", want: []string{f("NoHealthcheck", 3, disabled)}},
		{name: "the base image's HEALTHCHECK", dockerfile: "FROM healthy\n" + user},
		{name: "the base image's HEALTHCHECK NONE", dockerfile: "\n\nFROM nohealth\n" + user, want: []string{f("NoHealthcheck", 3, disabled)}},
		{name: "the base image's ONBUILD HEALTHCHECK", dockerfile: "FROM onbuild\n"},
		{name: "a base stage's HEALTHCHECK", dockerfile: "FROM busybox AS base\nHEALTHCHECK CMD [\"true\"]\n\nFROM base\n" + user},
		{name: "another stage's HEALTHCHECK does not count", dockerfile: "FROM busybox AS a\nHEALTHCHECK CMD [\"true\"]\n\nFROM busybox\n" + user, want: []string{f("NoHealthcheck", 4, noHealth)}},
		{name: "no command to run", dockerfile: "FROM nocmd\n" + user},
		{name: "both rules", dockerfile: "FROM busybox\nCMD [\"sh\"]\n", want: []string{f("RootUser", 1, noUser), f("NoHealthcheck", 1, noHealth)}},
		{name: "skipped", dockerfile: "# check=skip=NoHealthcheck\nFROM busybox\n" + user},
	})
}
