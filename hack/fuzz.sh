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
# Go 1.26's fuzz coordinator can end a run that found nothing with "context deadline exceeded"
# when its deadline races the workers' cancellation (golang/go#75804, fixed after 1.26): such a
# run wrote no failing input, and is run once more. A run that wrote one fails at once.
for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t#*:}
	for attempt in 1 2; do
		echo "fuzz.sh: ${name} (${pkg}) for ${fuzztime}" >&2
		out=$(mktemp)
		if go test -run='^$' -fuzz="^${name}\$" -fuzztime="${fuzztime}" "${pkg}" 2>&1 | tee "${out}"; then
			rm -f "${out}"
			break
		fi
		if ((attempt == 1)) && grep -q 'context deadline exceeded' "${out}" && ! grep -q 'Failing input written to' "${out}"; then
			echo "fuzz.sh: ${name} ended at its deadline with no failing input (golang/go#75804): running it again" >&2
			rm -f "${out}"
			continue
		fi
		rm -f "${out}"
		exit 1
	done
done
