package check

import (
	"bytes"
	"errors"
	"testing"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
)

// FuzzRun checks fuzzed Dockerfiles (the checks read an untrusted file):
// Run never panics; it fails with a *dockerfile.Error, or reports
// findings of known rules, each at a line of the file, with the rule's
// URL; a config of the base image is asked for by name only.
func FuzzRun(f *testing.F) {
	for _, c := range buildkitCases {
		f.Add([]byte(c.dockerfile), "")
	}
	f.Add([]byte("FROM busybox AS app\nONBUILD USER root\nFROM app\nHEALTHCHECK NONE\nCMD sh\n"), "app")
	f.Add([]byte("# check=skip=all;error=true\nFROM onbuild\nEXPOSE 1:2:3/UDP\nWORKDIR $X\n"), "")
	f.Fuzz(func(t *testing.T, dt []byte, target string) {
		rep, err := Run(dt, Options{
			Target:         target,
			BuildArgs:      map[string]string{"B": "busybox", "API_TOKEN": "x"},
			IgnorePatterns: []string{"*.md", "secret"},
			FailOn:         []string{"RootUser", "UndefinedVar"},
			BaseImage: func(ref string, p ocispec.Platform) (*dockerspec.DockerOCIImage, error) {
				if ref == "" {
					t.Fatalf("asked for the config of an empty name")
				}
				return images(ref, p)
			},
		})
		if err != nil {
			var de *dockerfile.Error
			if !errors.As(err, &de) {
				t.Fatalf("Run() = %v (%T), want a *dockerfile.Error", err, err)
			}
		}
		if rep == nil {
			return
		}
		lines := bytes.Count(dt, []byte("\n")) + 1
		for _, x := range rep.Findings {
			r := Lookup(x.Rule)
			if r == nil || x.URL != r.URL {
				t.Errorf("finding %+v: unknown rule or not its URL", x)
			}
			if x.Line < 1 || x.Line > lines {
				t.Errorf("finding %+v: line not in the file's %d", x, lines)
			}
		}
	})
}
