#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls `make test`, which calls this).
#
# On a fresh machine it first installs the Debian packages the tests use (hack/deps.sh) and
# builds etcd and kube-apiserver from their Go modules for envtest (hack/envtest.sh; about
# 15-20 minutes the first time, cached under ${SLIPWAY_CACHE:-~/.cache/slipway} afterwards).
# Every server a test needs (registry, git, API server) is started by the test itself on
# 127.0.0.1 and stopped by it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=${SECONDS}
hack/deps.sh
eval "$(hack/envtest.sh)"
export KUBEBUILDER_ASSETS
echo "test.sh: set-up took $((SECONDS - start)) s" >&2

# gofmt, go vet, generated files and the chart's copies up to date, shellcheck (hack/verify.sh).
make verify
# The conformance suite runs once, through hack/conformance.sh, which prints its score.
go test -count=1 -timeout 60m -skip '^TestConformance_buildkit$' "$@" ./...
hack/conformance.sh

# Each fuzz target for a bounded time (go test above ran their seed corpora); make fuzz runs
# them longer. They try crafted layers, tar contexts, .dockerignore files and Dockerfiles.
hack/fuzz.sh "${SLIPWAY_FUZZTIME:-10s}"

# End-to-end: the local cluster, the chart and test/e2e (hack/e2e.sh takes the cluster down
# whatever happens). SLIPWAY_SKIP_E2E=1 leaves it out.
if [[ "${SLIPWAY_SKIP_E2E:-}" != 1 ]]; then
	hack/e2e.sh
fi
