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
$GO test ./executor -run '^TestConformance_buildkit$' -count=1 -json -timeout 30m >"$log" 2>&1 || status=$?

# go test -json: one event per line. A case's result is its "pass", "fail" or "skip" action; a
# skipped case's reason is its output line holding "unsupported: ".
awk -v status="$status" '
	function field(name,    m) {
		if (!match($0, "\"" name "\":\"([^\"\\\\]|\\\\.)*\"")) return ""
		m = substr($0, RSTART + length(name) + 4, RLENGTH - length(name) - 5)
		return m
	}
	/"Test":"TestConformance_buildkit\// {
		name = field("Test"); sub(/^TestConformance_buildkit\//, "", name)
		action = field("Action")
		if (action == "output") {
			out = field("Output")
			if (out ~ /unsupported: /) { sub(/.*unsupported: /, "", out); sub(/\\n$/, "", out); gsub(/\\"/, "\"", out); reason[name] = out }
			else if (out ~ /conformance_test.go:[0-9]+: / && length(detail[name]) < 600) { sub(/\\n$/, "", out); gsub(/\\t/, " ", out); gsub(/\\"/, "\"", out); detail[name] = detail[name] "\n      " out }
			next
		}
		if (action == "pass") { ported++; passed++ }
		if (action == "fail") { ported++; failed[++nf] = name }
		if (action == "skip") { ported++; skipped[++ns] = name }
	}
	END {
		printf "BuildKit conformance: %d passing / %d ported (%d failing, %d unsupported here)\n", passed, ported, nf, ns
		if (nf) { print "\nFailing:"; for (i = 1; i <= nf; i++) printf "  %s%s\n", failed[i], detail[failed[i]] }
		if (ns) { print "\nUnsupported here:"; for (i = 1; i <= ns; i++) printf "  %s: %s\n", skipped[i], reason[skipped[i]] }
		if (ported == 0 && status != 0) print "\nThe suite did not run."
	}' "$log"
if [ "$status" != 0 ] && ! grep -q '"Test":"TestConformance_buildkit/' "$log"; then
	tail -50 "$log"
fi
exit "$status"
