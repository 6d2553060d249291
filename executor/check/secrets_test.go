package check

import (
	"runtime"
	"strings"
	"testing"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A Dockerfile that tries to have a finding show a secret: every rule
// that quotes an expanded word (WorkdirRelativePath the WORKDIR,
// CopyIgnoredFile the source, ExposeInvalidFormat the port,
// InvalidBaseImagePlatform the FROM image) is given one made of the value
// of a secret-looking key, from every place a value comes from: a build
// argument, a global ARG's default, a stage ARG's default, an ENV, the
// base image's environment. The findings are there, and show "***" where
// the value was; SecretsUsedInArgOrEnv and LegacyKeyValueFormat name keys
// and instructions only.
func TestRun_findingsShowNoSecretValue(t *testing.T) {
	df := `ARG REGISTRY_TOKEN=img-s3cr3t-meta
FROM ${REGISTRY_TOKEN} AS first
ARG GITHUB_TOKEN
WORKDIR $GITHUB_TOKEN
ARG DB_PASSWORD=db-s3cr3t-default
COPY $DB_PASSWORD /x
ENV AWS_SECRET_ACCESS_KEY=aws-s3cr3t-env
EXPOSE ${AWS_SECRET_ACCESS_KEY}:80
ENV API_KEY legacy-s3cr3t-value
COPY $UNDEFINED$DB_PASSWORD /y

FROM busybox
WORKDIR $NPM_TOKEN
`
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	resolve := func(ref string, _ ocispec.Platform) (*dockerspec.DockerOCIImage, error) {
		img := testImage()
		if ref == "img-s3cr3t-meta" {
			img.Architecture = other
		}
		img.Config.Env = append(img.Config.Env, "NPM_TOKEN=npm-s3cr3t-image")
		return img, nil
	}
	rep, err := Run([]byte(df), Options{
		BuildArgs:      map[string]string{"GITHUB_TOKEN": "gh-s3cr3t-buildarg"},
		IgnorePatterns: []string{"*"},
		BaseImage:      resolve,
	})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, x := range rep.Findings {
		count[x.Rule]++
		if strings.Contains(x.Message, "s3cr3t") || strings.Contains(x.URL, "s3cr3t") {
			t.Errorf("finding %s (line %d) shows a secret: %q", x.Rule, x.Line, x.Message)
		}
	}
	for rule, n := range map[string]int{
		"WorkdirRelativePath":      2,
		"CopyIgnoredFile":          2,
		"ExposeInvalidFormat":      1,
		"InvalidBaseImagePlatform": 1,
		"SecretsUsedInArgOrEnv":    4, // GITHUB_TOKEN, DB_PASSWORD, AWS_SECRET_ACCESS_KEY, API_KEY
		"LegacyKeyValueFormat":     1,
		"UndefinedVar":             1,
	} {
		if count[rule] != n {
			t.Errorf("%d %s findings, want %d (the test must exercise it); findings: %v", count[rule], rule, n, rep.Findings)
		}
	}
	var workdir []string
	for _, x := range rep.Findings {
		if x.Rule == "WorkdirRelativePath" {
			workdir = append(workdir, x.Message)
		}
	}
	if len(workdir) > 0 && workdir[0] != `Relative workdir "***" can have unexpected results if the base image changes` {
		t.Errorf("WorkdirRelativePath says %q, want the value masked", workdir[0])
	}
}
