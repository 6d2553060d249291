#!/usr/bin/env bash
# Runs the conformance suite ported from BuildKit's Dockerfile frontend tests
# (executor/testdata/buildkit, see executor/conformance_test.go) and prints the score:
#
#   hack/conformance.sh        (make conformance)
#
# passing / ported, then every case that failed and every case marked unsupported with its
# reason. It exits non-zero when a case fails. make test runs the same suite through go test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}

log=$(mktemp -t conformance.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
$GO test ./executor -run '^TestConformance_buildkit$' -count=1 -v -timeout 30m >"$log" 2>&1 || status=$?

# Subtest result lines: "    --- PASS: TestConformance_buildkit/AREA/NAME (0.12s)";
# a skip's reason is the next line holding "unsupported: ".
awk -v status="$status" '
	/^    --- (PASS|FAIL|SKIP): TestConformance_buildkit\// {
		split($0, f, " "); res = f[2]; name = f[3]; sub(/^TestConformance_buildkit\//, "", name)
		ported++
		if (res == "PASS:") passed++
		if (res == "FAIL:") failed[++nf] = name
		if (res == "SKIP:") { skipped[++ns] = name; want = ns }
		next
	}
	want && /unsupported: / { sub(/.*unsupported: /, ""); reason[want] = $0; want = 0 }
	END {
		printf "BuildKit conformance: %d passing / %d ported (%d failing, %d unsupported here)\n", passed, ported, nf, ns
		if (nf) { print "\nFailing:"; for (i = 1; i <= nf; i++) print "  " failed[i] }
		if (ns) { print "\nUnsupported here:"; for (i = 1; i <= ns; i++) printf "  %s: %s\n", skipped[i], reason[i] }
		if (ported == 0 && status != 0) print "\nThe suite did not run; see the go test output above."
	}' "$log"
if [ "$status" != 0 ]; then
	echo
	grep -E -- '^\s*(--- FAIL|FAIL|panic|\s+conformance_test.go)' "$log" | head -200 || true
fi
exit "$status"
