package main

import (
	"testing"
	"time"
)

// The SOURCE_DATE_EPOCH environment variable is the build arg when
// --build-arg does not set it, as docker buildx passes it; the build then
// resolves it as BuildKit does. --reproducible is the Unix epoch, which a
// SOURCE_DATE_EPOCH that gives a time replaces in the build.
func TestSourceDateEpoch(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000001")
	args := map[string]string{}
	if got := sourceDateEpoch(false, args); got != nil {
		t.Errorf("without --reproducible: %v, want none", got)
	}
	if args["SOURCE_DATE_EPOCH"] != "1700000001" {
		t.Errorf("build args %q, want SOURCE_DATE_EPOCH from the environment", args)
	}

	args = map[string]string{"SOURCE_DATE_EPOCH": "context"}
	got := sourceDateEpoch(true, args)
	if args["SOURCE_DATE_EPOCH"] != "context" {
		t.Errorf("build args %q, want --build-arg's SOURCE_DATE_EPOCH to win over the environment", args)
	}
	if got == nil || !got.Equal(time.Unix(0, 0)) {
		t.Errorf("--reproducible: %v, want the Unix epoch", got)
	}

	t.Setenv("SOURCE_DATE_EPOCH", "")
	args = map[string]string{}
	sourceDateEpoch(false, args)
	if _, ok := args["SOURCE_DATE_EPOCH"]; ok {
		t.Errorf("build args %q: an empty environment variable sets nothing", args)
	}
}
