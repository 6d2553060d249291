#!/usr/bin/env bash
# Runs every fuzz target of the executor for a given time each (default 10s):
#
#   hack/fuzz.sh [FUZZTIME]
#
# make test runs it briefly, make fuzz for FUZZTIME (default 5m). A failing input is written to
# the package's testdata/fuzz/<target>/ and fails the run; commit it with the fix, so the seed
# corpus keeps it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${1:-10s}
targets=(
	./executor/rootfs:FuzzExtract                # layers, ADD archives, contexts: nothing outside the root changes
	./executor/source:FuzzExtractTar             # tar:// contexts (rootfs.Extract, source's options): nothing outside changes
	./executor/source:FuzzContextExcluded        # .dockerignore: parses or fails cleanly, walk and match agree
	./executor/dockerfile:FuzzParse              # the planner: errors name a line, plans end with the target
	./executor/check:FuzzRun                     # the build checks: never panic, findings of known rules at lines of the file
	./executor/build:FuzzAnswerAgent             # the ssh agent of RUN --mount=type=ssh: only lists and signs, never panics
)
for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t#*:}
	echo "fuzz.sh: ${name} (${pkg}) for ${fuzztime}" >&2
	go test -run='^$' -fuzz="^${name}\$" -fuzztime="${fuzztime}" "${pkg}"
done
