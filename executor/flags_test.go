package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/executor/result"
)

// A flag that fails to parse still has its error written to --result-file,
// wherever --result-file stands: the controller reads the result from the
// termination message, and a pod that ends without one says nothing of why.
func TestExecute_badFlagWritesTheResultFile(t *testing.T) {
	tests := []struct {
		name string
		args func(file string) []string
		want string // in the message
	}{
		{"bad value before", func(f string) []string { return []string{"--cache=maybe", "--result-file=" + f} }, "--cache"},
		{"bad value after", func(f string) []string { return []string{"--result-file=" + f, "--push-retry=x"} }, "--push-retry"},
		{"unknown flag before, value apart", func(f string) []string {
			return []string{"--no-such-flag", "--result-file", f, "--no-push"}
		}, "no-such-flag"},
		{"flags with values and shorthands before", func(f string) []string {
			return []string{"-d", "registry.example.com/a", "--no-push", "--label", "a=b", "--cache-ttl=soon", "--result-file", f}
		}, "--cache-ttl"},
		{"bad value of a kaniko flag accepted for compatibility", func(f string) []string {
			return []string{"--image-fs-extract-retry=many", "--result-file=" + f}
		}, "image-fs-extract-retry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "result.json")
			var log bytes.Buffer
			if exit := execute(tc.args(file), &log); exit != 1 {
				t.Errorf("exit = %d, want 1; log:\n%s", exit, log.String())
			}
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("no result file: %v; log:\n%s", err, log.String())
			}
			res, err := result.Decode(raw)
			if err != nil {
				t.Fatalf("decoding %q: %v", raw, err)
			}
			if res.Success || res.Failure == nil || res.Failure.Reason != result.ReasonInvalidArguments ||
				!strings.Contains(res.Failure.Message, tc.want) {
				t.Errorf("result = %s, want an InvalidArguments failure naming %s", raw, tc.want)
			}
		})
	}
}

// The value of a flag is not taken for --result-file: "--label
// --result-file=F" labels the image with the text "--result-file=F".
func TestParseFlags_resultFileIsNotAnotherFlagsValue(t *testing.T) {
	o, err := parseFlags([]string{"--no-push", "--label", "--result-file=/x", "--isolation=chroot"})
	if err != nil {
		t.Fatal(err)
	}
	if o.resultFile == "/x" || len(o.labels) != 1 || o.labels[0] != "--result-file=/x" {
		t.Errorf("resultFile = %q, labels = %q; want the label and no result file /x", o.resultFile, o.labels)
	}
}

// kaniko's flags that change nothing here are still accepted, with or
// without a value as kaniko takes them.
func TestParseFlags_kanikoFlagsAccepted(t *testing.T) {
	_, err := parseFlags([]string{"--no-push", "--isolation=chroot", "--cache-dir=/cache", "--image-fs-extract-retry=2",
		"--cleanup", "--single-snapshot=true", "--snapshot-mode=redo", "--log-format", "text", "--annotation=a=b", "--annotation=c=d"})
	if err != nil {
		t.Fatal(err)
	}
}
