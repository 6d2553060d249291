package main

import (
	"context"
	"fmt"
	"io"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/result"
)

// buildChecks are the build's checks (--check-fail-on, --check-skip):
// their findings become the result's warnings.
func buildChecks(o *options, res *result.Result) *build.Checks {
	return &build.Checks{
		FailOn: o.failOn,
		Skip:   o.skip,
		Found: func(rep *check.Report) {
			for _, f := range rep.Findings {
				res.AddWarnings(result.Warning{Rule: f.Rule, Line: f.Line, Message: f.Message, URL: f.URL})
			}
		},
	}
}

// checkOnly is --check (BuildKit's `docker build --check`): the checks
// are evaluated and printed, nothing is built or pushed. The result
// succeeds unless a finding is an error (the Dockerfile's check=error=true,
// --check-fail-on), the Dockerfile cannot be built, or a base image cannot
// be pulled.
// The findings reach res through bo.Checks (buildChecks).
func checkOnly(ctx context.Context, bo build.Options, res *result.Result, logw io.Writer) result.Result {
	rep, err := build.Check(ctx, bo)
	if rep != nil {
		fmt.Fprintln(logw, checkSummary(rep))
	}
	if err != nil {
		return failedResult(*res, nil, err)
	}
	res.Success = true
	return *res
}

// checkSummary is the line that ends --check's output, as buildx ends
// `docker build --check`'s.
func checkSummary(rep *check.Report) string {
	n, errs := len(rep.Findings), len(rep.Errors())
	switch {
	case n == 0:
		return "Check complete, no warnings found."
	case errs == 0:
		return fmt.Sprintf("Check complete, %d %s found.", n, plural(n, "warning"))
	}
	return fmt.Sprintf("Check complete, %d %s found, %d of them %s.", n, plural(n, "warning"), errs, plural(errs, "error"))
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}
