#!/usr/bin/env bash
# End-to-end tests (`make test-e2e`, and the last step of hack/test.sh): test/e2e on the local
# cluster, through the manager the Helm chart installs.
#
#  1. hack/deps.sh; test/cluster (SLIPWAY_CLUSTER_TEST=1: up with a component killed once, then
#     twice, and down; skipped when the cluster runs); hack/cluster.sh up (the first time it
#     builds the Kubernetes binaries: 20-25 minutes on 2 cores; afterwards about 15 s);
#  2. hack/demo.sh install: Debian packages, the local registry, the git server, the executor and
#     manager images built by the executor, the chart (manager on the host network), with the
#     chart's binfmt DaemonSet (SLIPWAY_BINFMT=1 unless set otherwise) for TestMultiPlatform's
#     emulated arm64 platform: while the cluster is up, this machine's kernel runs arm64 and arm
#     executables through QEMU (hack/cluster.sh down removes the handlers);
#  3. SLIPWAY_E2E=1 go test ./test/e2e (arguments are passed to go test, e.g. -run TestTimeout,
#     or -run TestFault for the cluster fault tests); each test starts its own registry and git
#     server requiring basic auth;
#  4. whatever happened: hack/demo.sh down (git server, registry, hack/cluster.sh down), unless
#     SLIPWAY_E2E_KEEP=1.
# On a failure the tests print the manager's log, the pods' logs and the events of their
# namespace. The full output is in <state>/e2e/go-test.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

state=${SLIPWAY_STATE:-${PWD}/_output}
mkdir -p "${state}/e2e"
state=$(cd "${state}" && pwd)
t0=${SECONDS}
timings=()
mark() { timings+=("$(printf '%5d s  %s' "$((SECONDS - $1))" "$2")"); }

# shellcheck disable=SC2317 # a false positive: cleanup runs from the EXIT trap below, which shellcheck does not follow
cleanup() {
	local rc=$? t=${SECONDS}
	if [[ "${SLIPWAY_E2E_KEEP:-}" == 1 ]]; then
		echo "e2e.sh: SLIPWAY_E2E_KEEP=1: the cluster stays up (hack/demo.sh down stops it)" >&2
	else
		echo "e2e.sh: taking the cluster down" >&2
		hack/demo.sh down || rc=1
		mark "${t}" "hack/demo.sh down"
	fi
	printf '\n==> e2e timings\n'
	printf '%s\n' "${timings[@]}"
	printf '%5d s  total (exit %d)\n' "$((SECONDS - t0))" "${rc}"
	exit "${rc}"
}
trap cleanup EXIT

t=${SECONDS}
# containerd, runc, the CNI plugins, git, docker-registry, ... (hack/deps.sh, once).
hack/deps.sh
# hack/cluster.sh itself: a component killed while the cluster starts is reported and started
# again once; killed twice, up gives up saying why (test/cluster; it skips when the cluster runs).
SLIPWAY_CLUSTER_TEST=1 go test -count=1 -v -timeout 40m ./test/cluster
mark "${t}" "go test ./test/cluster"
t=${SECONDS}
# The tests run on the local cluster, never on whatever the current kubeconfig names.
hack/cluster.sh up
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG
mark "${t}" "hack/cluster.sh up"

t=${SECONDS}
export SLIPWAY_BINFMT=${SLIPWAY_BINFMT:-1}
hack/demo.sh install
# shellcheck disable=SC1091
source "${state}/demo/env"
mark "${t}" "hack/demo.sh install"

t=${SECONDS}
echo "e2e.sh: go test ./test/e2e (log: ${state}/e2e/go-test.log)" >&2
set +e
# SLIPWAY_STATE: the fault tests (test/e2e/faults_test.go) stop and start the cluster's
# components with hack/cluster.sh, which must find this cluster's state.
SLIPWAY_STATE=${state} SLIPWAY_E2E=1 go test -count=1 -v -timeout 30m "$@" ./test/e2e 2>&1 | tee "${state}/e2e/go-test.log"
rc=${PIPESTATUS[0]}
set -e
mark "${t}" "go test ./test/e2e"
printf '\n==> e2e results\n'
grep -E '^(--- |ok|FAIL)' "${state}/e2e/go-test.log" || true
exit "${rc}"
