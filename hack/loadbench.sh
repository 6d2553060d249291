#!/usr/bin/env bash
# `make bench-load`: issue 13's load benchmark. Applies BENCH_LOAD_N (500) small ImageBuilds at
# once to the local cluster, through the Helm-installed manager at --max-concurrent-builds=8,
# and reports (hack/loadbench/main.go): succeeded / failed / lost, duplicate executor pods
# (more than one per generation and attempt), queue order, apply→Running and apply→Succeeded
# p50/p95/max, the manager's peak RSS and its API requests per build (both from its metrics
# endpoint on the host network, sampled every second). It fails when a target is missed:
# a build lost or failed, a duplicate pod, RSS at or above 200 MB, more than
# BENCH_LOAD_MAX_REQUESTS (30) requests per build. Not part of `make test`.
#
#  1. hack/cluster.sh up; hack/demo.sh install (Debian packages, registry, git server, images,
#     chart), then helm upgrade --reuse-values --set maxConcurrentBuilds=8;
#  2. pushes a one-line-RUN Dockerfile to the demo's git server (loadbench.git);
#  3. runs the harness; its figures are also in <state>/loadbench/result.json;
#  4. whatever happened: hack/demo.sh down, unless BENCH_LOAD_KEEP=1.
#
#   BENCH_LOAD_N=500             ImageBuilds
#   BENCH_LOAD_CONCURRENCY=8     the manager's --max-concurrent-builds
#   BENCH_LOAD_DEADLINE=30m      how long the builds may take in all
#   BENCH_LOAD_MAX_REQUESTS=30   the bound on the manager's API requests per build
#   BENCH_LOAD_KEEP=1            leave the cluster up
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${BENCH_LOAD_N:-500}
CONCURRENCY=${BENCH_LOAD_CONCURRENCY:-8}
DEADLINE=${BENCH_LOAD_DEADLINE:-30m}
MAX_REQUESTS=${BENCH_LOAD_MAX_REQUESTS:-30}
GIT_PORT=${SLIPWAY_GIT_PORT:-25001}
METRICS_PORT=${SLIPWAY_MANAGER_METRICS_PORT:-25080}
state=${SLIPWAY_STATE:-${PWD}/_output}
mkdir -p "${state}/loadbench"
state=$(cd "${state}" && pwd)
out=${state}/loadbench

# shellcheck disable=SC2317 # cleanup runs from the EXIT trap
cleanup() {
	local rc=$?
	if [[ "${BENCH_LOAD_KEEP:-}" == 1 ]]; then
		echo "loadbench.sh: BENCH_LOAD_KEEP=1: the cluster stays up (hack/demo.sh down stops it)" >&2
	else
		echo "loadbench.sh: taking the cluster down" >&2
		hack/demo.sh down || rc=1
	fi
	exit "${rc}"
}
trap cleanup EXIT

# The benchmark runs on the local cluster, never on whatever the current kubeconfig names.
hack/cluster.sh up
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG
# Without a kubectl on PATH, the one built beside the cluster's binaries (hack/cluster/build.sh).
if ! command -v kubectl >/dev/null 2>&1; then
	PATH=$(hack/cluster/build.sh --dir):${PATH}
	export PATH
fi
hack/demo.sh install
# shellcheck disable=SC1091
source "${state}/demo/env"

echo "loadbench.sh: the manager at --max-concurrent-builds=${CONCURRENCY}" >&2
helm=$(hack/tools/helm/build.sh)
"${helm}" upgrade slipway charts/slipway --namespace "${SLIPWAY_MANAGER_NAMESPACE}" --reuse-values \
	--set maxConcurrentBuilds="${CONCURRENCY}" >"${out}/helm.log"
kubectl -n "${SLIPWAY_MANAGER_NAMESPACE}" rollout status deployment/"${SLIPWAY_MANAGER_DEPLOYMENT}" --timeout=180s
args=$(kubectl -n "${SLIPWAY_MANAGER_NAMESPACE}" get deployment "${SLIPWAY_MANAGER_DEPLOYMENT}" -o jsonpath='{.spec.template.spec.containers[0].args}')
[[ "${args}" == *"--max-concurrent-builds=${CONCURRENCY}\""* ]] ||
	{ echo "loadbench.sh: the manager's args lack --max-concurrent-builds=${CONCURRENCY}: ${args}" >&2; exit 1; }
# The new manager answers on its metrics port before the harness takes its first sample.
for ((i = 0; i < 60; i++)); do
	curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:${METRICS_PORT}/metrics" && break
	sleep 1
done

# The Dockerfile: busybox and one RUN that uses the build's own N, so no RUN is cached away.
bare=${state}/demo/git/loadbench.git
if [[ ! -d "${bare}" ]]; then
	git init -q --bare -b main "${bare}"
	git -C "${bare}" config http.receivepack true
fi
work=$(mktemp -d)
cat >"${work}/Dockerfile" <<-'EOF'
	ARG BASE
	FROM ${BASE}
	ARG N
	RUN echo "load benchmark build ${N}" > /build.txt
EOF
(
	cd "${work}"
	git init -q -b main
	git add Dockerfile
	GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z' \
		git -c user.name=Slipway -c user.email=demo@slipway.dev commit -q -m loadbench
	git push -q --force "http://127.0.0.1:${GIT_PORT}/loadbench.git" main
)
rm -rf "${work}"

registry_port=${SLIPWAY_REGISTRY##*:}
go build -o "${out}/loadbench" ./hack/loadbench
"${out}/loadbench" -n "${N}" -deadline "${DEADLINE}" -max-requests-per-build "${MAX_REQUESTS}" \
	-repo "${SLIPWAY_GIT_URL}/loadbench.git" \
	-base "${SLIPWAY_POD_HOST}:${registry_port}/library/busybox:latest" \
	-output "${SLIPWAY_POD_HOST}:${registry_port}/loadbench/img" \
	-metrics "http://127.0.0.1:${METRICS_PORT}/metrics" \
	-result "${out}/result.json"
