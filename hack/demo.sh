#!/usr/bin/env bash
# The README's main command (`make demo`): a real in-cluster build of examples/hello.
#
#   hack/demo.sh           # everything below, then the build, its progress, and the image run
#   hack/demo.sh install   # only the set-up: cluster, registry, git server, images, chart
#                          # (hack/e2e.sh uses it); writes <state>/demo/env for `source`
#   hack/demo.sh down      # stops the git server, the registry and the local cluster
#
# On a fresh Debian 12 machine with Go and root it:
#  1. installs the Debian packages it needs (hack/deps.sh);
#  2. uses the cluster of the current kubeconfig when one answers, else brings the local
#     cluster up (hack/cluster.sh; the first time it builds the Kubernetes binaries from their
#     Go modules, 20-25 minutes on 2 cores, and says which are ready every 30 s);
#  3. starts the local registry (hack/registry.sh, 127.0.0.1:${SLIPWAY_REGISTRY_PORT:-25000})
#     and pushes the busybox base image to it;
#  4. starts a git server (hack/gitserve: `git http-backend`, 127.0.0.1:${SLIPWAY_GIT_PORT:-25001})
#     and pushes examples/hello to it;
#  5. builds the executor and manager images with the executor (hack/images.sh) and pushes them;
#  6. installs the chart (charts/slipway, helm from hack/tools/helm) in slipway-system;
#  7. applies an ImageBuild of examples/hello, shows its progress until it is Ready, prints
#     `kubectl get imagebuilds`, runs the built image as a pod and prints what it says.
# It prints how long each step took. A second run reuses everything and is served from the
# layer cache.
#
# The local cluster has no kube-proxy and no DNS, and its apiserver is on loopback: the manager
# runs with hostNetwork and KUBERNETES_SERVICE_HOST=127.0.0.1 (the chart's hostNetwork and
# extraEnv values). Executor pods are ordinary pods on the CNI bridge, which cannot reach the host's
# 127.0.0.1: they reach the git server and the registry at the bridge's own address on the host
# (slipway0, 10.217.0.1 by default; hack/gitserve listens there and forwards the registry port).
# The kubelet pulls from 127.0.0.1, so the built image runs as 127.0.0.1:PORT/...@DIGEST (the
# same registry, the same digest).
#
# Environment: SLIPWAY_REGISTRY_PORT (25000), SLIPWAY_GIT_PORT (25001),
# SLIPWAY_MANAGER_METRICS_PORT (25080), SLIPWAY_MANAGER_PROBE_PORT (25081) and
# SLIPWAY_MANAGER_WEBHOOK_PORT (25082, the git webhook receiver) (the manager is on the host network), SLIPWAY_CLUSTER_APISERVER_PORT (26443), SLIPWAY_CLUSTER_BRIDGE (slipway0),
# SLIPWAY_DEMO_HOST (the address pods reach the host at; default the bridge's),
# SLIPWAY_DEMO_TIMEOUT (600 s for the build), SLIPWAY_STATE (<repo>/_output),
# SLIPWAY_BINFMT=1 (also install the chart's privileged binfmt DaemonSet, which registers QEMU
# for SLIPWAY_BINFMT_PLATFORMS, default arm64,arm, in the node's kernel: for ImageBuilds with
# spec.emulation; on the local cluster the node is this machine, and hack/cluster.sh down
# unregisters them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=${PWD}

REGISTRY_PORT=${SLIPWAY_REGISTRY_PORT:-25000}
GIT_PORT=${SLIPWAY_GIT_PORT:-25001}
METRICS_PORT=${SLIPWAY_MANAGER_METRICS_PORT:-25080}
PROBE_PORT=${SLIPWAY_MANAGER_PROBE_PORT:-25081}
WEBHOOK_PORT=${SLIPWAY_MANAGER_WEBHOOK_PORT:-25082}
APISERVER_PORT=${SLIPWAY_CLUSTER_APISERVER_PORT:-26443}
BRIDGE=${SLIPWAY_CLUSTER_BRIDGE:-slipway0}
TIMEOUT=${SLIPWAY_DEMO_TIMEOUT:-600}
NAMESPACE=slipway-system
RELEASE=slipway
DEPLOYMENT=${RELEASE}-controller-manager
REGISTRY=127.0.0.1:${REGISTRY_PORT}
export SLIPWAY_REGISTRY_PORT=${REGISTRY_PORT}
state=${SLIPWAY_STATE:-${root}/_output}
mkdir -p "${state}"
state=$(cd "${state}" && pwd)
out=${state}/demo
mkdir -p "${out}"

t0=${SECONDS}
step_start=${SECONDS}
step_name=''
timings=()
# step NAME: closes the previous step's timing and announces the next.
step() {
	end_step
	step_name=$*
	step_start=${SECONDS}
	printf '\n==> [%4d s] %s\n' "$((SECONDS - t0))" "$*"
}
end_step() {
	if [[ -n "${step_name}" ]]; then
		timings+=("$(printf '%5d s  %s' "$((SECONDS - step_start))" "${step_name}")")
	fi
	step_name=''
}
print_timings() {
	end_step
	printf '\n==> Timings\n'
	printf '%s\n' "${timings[@]}"
	printf '%5d s  total\n' "$((SECONDS - t0))"
}
die() {
	echo "demo.sh: $*" >&2
	exit 1
}

# --- git server --------------------------------------------------------------------------------

gitserve_pid() {
	local f=${out}/gitserve.pid pid
	[[ -f "${f}" ]] || return 1
	pid=$(<"${f}")
	[[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "${out}/" || return 1
	echo "${pid}"
}

stop_gitserve() {
	local pid i
	pid=$(gitserve_pid) || return 0
	kill -TERM "${pid}" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "${pid}" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "${out}/gitserve.pid"
}

# start_gitserve HOST: serves ${out}/git on 127.0.0.1 and HOST, and forwards HOST's registry
# port to the registry. Restarted every time: HOST may have changed with a new cluster.
start_gitserve() {
	local host=$1 i
	stop_gitserve
	mkdir -p "${out}/git"
	CGO_ENABLED=0 go build -trimpath -o "${out}/gitserve" ./hack/gitserve
	local args=(--root "${out}/git" --listen "127.0.0.1:${GIT_PORT}")
	if [[ "${host}" != 127.0.0.1 ]]; then
		args+=(--listen "${host}:${GIT_PORT}" --forward "${host}:${REGISTRY_PORT}=${REGISTRY}")
	fi
	setsid "${out}/gitserve" "${args[@]}" >"${out}/gitserve.log" 2>&1 </dev/null &
	echo $! >"${out}/gitserve.pid"
	for ((i = 0; i < 50; i++)); do
		if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${GIT_PORT}/"; then
			return 0
		fi
		sleep 0.1
	done
	cat "${out}/gitserve.log" >&2
	die "the git server did not start"
}

# --- cluster -------------------------------------------------------------------------------------

# progress: every 30 s while the cluster comes up, which Kubernetes binaries are ready.
progress() {
	local start=${SECONDS} have b
	while sleep 30; do
		have=()
		for b in "${SLIPWAY_CACHE:-${HOME}/.cache/slipway}"/k8s/*/*; do
			[[ -x "${b}" ]] && have+=("$(basename "${b}")")
		done
		echo "demo.sh: [$((SECONDS - start)) s] still bringing the cluster up; binaries ready: ${have[*]:-none yet} (of etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)" >&2
	done
}

ensure_cluster() {
	if [[ -n "${KUBECONFIG:-}" || -f "${HOME}/.kube/config" ]] && command -v kubectl >/dev/null 2>&1 &&
		kubectl --request-timeout=5s get --raw=/readyz >/dev/null 2>&1; then
		echo "using the cluster of the current kubeconfig: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
		return 0
	fi
	if ! hack/cluster.sh status >/dev/null 2>&1; then
		progress &
		local ticker=$!
		if ! hack/cluster.sh up; then
			kill "${ticker}" 2>/dev/null || true
			die "the local cluster did not come up (hack/cluster.sh said why above)"
		fi
		kill "${ticker}" 2>/dev/null || true
		wait "${ticker}" 2>/dev/null || true
	fi
	KUBECONFIG=$(hack/cluster.sh kubeconfig)
	export KUBECONFIG
	echo "local cluster: KUBECONFIG=${KUBECONFIG}"
	# Debian 12 has no kubectl: without one, the one built beside the cluster's binaries.
	if ! command -v kubectl >/dev/null 2>&1; then
		PATH=$(hack/cluster/build.sh --dir):${PATH}
		export PATH
		echo "kubectl: $(command -v kubectl) (hack/cluster/build.sh built it; the machine has none)"
	fi
}

# pod_host: the address pods reach this host at: SLIPWAY_DEMO_HOST, else the CNI bridge's. The
# bridge exists once a pod has been on it: run one when it does not.
pod_host() {
	if [[ -n "${SLIPWAY_DEMO_HOST:-}" ]]; then
		echo "${SLIPWAY_DEMO_HOST}"
		return 0
	fi
	local addr
	addr=$(ip -4 -o addr show dev "${BRIDGE}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
	if [[ -z "${addr}" ]]; then
		echo "demo.sh: starting a pod so that the CNI bridge ${BRIDGE} exists" >&2
		kubectl delete pod slipway-network --ignore-not-found --wait=true >/dev/null
		kubectl run slipway-network --image="${REGISTRY}/library/busybox:latest" --restart=Never \
			--command -- true >/dev/null
		kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/slipway-network --timeout=120s >/dev/null ||
			die "the pod slipway-network did not run: $(kubectl describe pod slipway-network)"
		kubectl delete pod slipway-network --wait=false >/dev/null
		addr=$(ip -4 -o addr show dev "${BRIDGE}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
	fi
	[[ -n "${addr}" ]] || die "no address on ${BRIDGE}: set SLIPWAY_DEMO_HOST to an address of this host that pods reach"
	echo "${addr}"
}

# --- the set-up ----------------------------------------------------------------------------------

install() {
	step "Installing what the demo needs (Debian packages, once)"
	hack/deps.sh

	step "Cluster"
	ensure_cluster

	step "Local registry and the busybox base image"
	hack/registry.sh start
	base=$(go run ./hack/baseimage --registry "${REGISTRY}")
	echo "registry: ${REGISTRY}; base: ${base}"

	step "Git server, and examples/hello pushed to it"
	host=$(pod_host)
	start_gitserve "${host}"
	echo "git server: http://127.0.0.1:${GIT_PORT}/ (pods: http://${host}:${GIT_PORT}/); registry for pods: ${host}:${REGISTRY_PORT}"
	local bare=${out}/git/hello.git work
	if [[ ! -d "${bare}" ]]; then
		git init -q --bare -b main "${bare}"
		git -C "${bare}" config http.receivepack true
	fi
	work=$(mktemp -d)
	cp -r examples/hello/. "${work}/"
	(
		cd "${work}"
		git init -q -b main
		git add -A
		# A fixed author and date: the same files give the same commit, every run.
		GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z' \
			git -c user.name=Slipway -c user.email=demo@slipway.dev commit -q -m 'examples/hello'
		git push -q --force "http://127.0.0.1:${GIT_PORT}/hello.git" main
		echo "pushed examples/hello: commit $(git rev-parse HEAD)"
	)
	rm -rf "${work}"

	step "Executor and manager images, built by the executor (hack/images.sh)"
	local images
	images=$(hack/images.sh --registry "${REGISTRY}")
	echo "${images}"
	executor_image=$(awk '$1 == "executor" {print $2}' <<<"${images}")
	manager_image=$(awk '$1 == "manager" {print $2}' <<<"${images}")
	# binfmt (issue 15): the DaemonSet's image always, the DaemonSet only with SLIPWAY_BINFMT=1.
	local binfmt_image binfmt_values
	binfmt_image=$(awk '$1 == "binfmt" {print $2}' <<<"${images}")
	binfmt_values=(--set binfmt.image.repository="${binfmt_image%@*}" --set binfmt.image.digest="${binfmt_image#*@}")
	if [[ "${SLIPWAY_BINFMT:-}" == 1 ]]; then
		binfmt_values+=(--set binfmt.enabled=true --set "binfmt.platforms={${SLIPWAY_BINFMT_PLATFORMS:-arm64,arm}}")
	else
		binfmt_values+=(--set binfmt.enabled=false)
	fi

	step "Installing the chart (charts/slipway) in ${NAMESPACE}"
	local helm local_apiserver=''
	helm=$(hack/tools/helm/build.sh)
	if [[ "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')" == https://127.0.0.1:* ]]; then
		local_apiserver=1
	fi
	# The local cluster's apiserver is on loopback and has no kube-proxy: the manager joins the
	# host's network and is told where the apiserver is; two manager pods cannot run at once
	# there (same ports), so an upgrade replaces the pod instead of rolling.
	local network_values=()
	if [[ -n "${local_apiserver}" ]]; then
		network_values=(--set hostNetwork=true --set strategy.type=Recreate
			--set "extraEnv[0].name=KUBERNETES_SERVICE_HOST" --set "extraEnv[0].value=127.0.0.1"
			--set "extraEnv[1].name=KUBERNETES_SERVICE_PORT" --set-string "extraEnv[1].value=${APISERVER_PORT}")
		# A manager already installed holds its own ports; otherwise they must be free.
		if ! kubectl -n "${NAMESPACE}" get deployment "${DEPLOYMENT}" >/dev/null 2>&1; then
			local port held
			for port in "${METRICS_PORT}" "${PROBE_PORT}" "${WEBHOOK_PORT}"; do
				# TIME-WAIT left by the last manager does not stop it binding (check_port).
				held=$(ss -Htanp exclude time-wait "sport = :${port}" 2>/dev/null | head -3)
				[[ -z "${held}" ]] || die "port ${port} (the manager's, on the host network) is in use;" \
					"choose others with SLIPWAY_MANAGER_METRICS_PORT, SLIPWAY_MANAGER_PROBE_PORT and SLIPWAY_MANAGER_WEBHOOK_PORT. Held by:"$'\n'"${held}"
			done
		fi
	fi
	"${helm}" upgrade --install "${RELEASE}" charts/slipway --namespace "${NAMESPACE}" --create-namespace \
		--set image.repository="${manager_image%@*}" --set image.digest="${manager_image#*@}" \
		--set executor.image.repository="${executor_image%@*}" --set executor.image.digest="${executor_image#*@}" \
		--set metrics.port="${METRICS_PORT}" --set probes.port="${PROBE_PORT}" --set webhooks.port="${WEBHOOK_PORT}" \
		--set buildRetryBackoff=2s "${network_values[@]}" "${binfmt_values[@]}" >"${out}/helm.log"
	echo "helm: release ${RELEASE} installed (notes in ${out}/helm.log)"
	if [[ -n "${local_apiserver}" ]]; then
		echo "manager: hostNetwork, KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=${APISERVER_PORT}"
	fi
	if ! kubectl -n "${NAMESPACE}" rollout status deployment/"${DEPLOYMENT}" --timeout=180s; then
		kubectl -n "${NAMESPACE}" describe pods >&2 || true
		kubectl -n "${NAMESPACE}" logs deployment/"${DEPLOYMENT}" --tail=50 >&2 || true
		die "the manager did not become ready"
	fi
	if [[ "${SLIPWAY_BINFMT:-}" == 1 ]] && ! kubectl -n "${NAMESPACE}" rollout status daemonset/"${RELEASE}-binfmt" --timeout=120s; then
		kubectl -n "${NAMESPACE}" describe pods -l app.kubernetes.io/component=binfmt >&2 || true
		kubectl -n "${NAMESPACE}" logs daemonset/"${RELEASE}-binfmt" -c register >&2 || true
		die "the binfmt DaemonSet did not become ready"
	fi

	cat >"${out}/env" <<-EOF
		export KUBECONFIG=${KUBECONFIG:-}
		export SLIPWAY_REGISTRY=${REGISTRY}
		export SLIPWAY_POD_HOST=${host}
		export SLIPWAY_GIT_URL=http://${host}:${GIT_PORT}
		export SLIPWAY_EXECUTOR_IMAGE=${executor_image}
		export SLIPWAY_MANAGER_IMAGE=${manager_image}
		export SLIPWAY_BINFMT_IMAGE=${binfmt_image}
		export SLIPWAY_BINFMT=${SLIPWAY_BINFMT:-0}
		export SLIPWAY_MANAGER_NAMESPACE=${NAMESPACE}
		export SLIPWAY_MANAGER_DEPLOYMENT=${DEPLOYMENT}
		export SLIPWAY_MANAGER_WEBHOOK_URL=http://127.0.0.1:${WEBHOOK_PORT}
	EOF
}

# --- the build -----------------------------------------------------------------------------------

failure_details() {
	echo "--- kubectl describe imagebuild hello" >&2
	kubectl describe imagebuild hello >&2 || true
	echo "--- executor pods" >&2
	kubectl logs -l build.slipway.dev/imagebuild=hello --tail=40 --prefix >&2 || true
	echo "--- manager" >&2
	kubectl -n "${NAMESPACE}" logs deployment/"${DEPLOYMENT}" --tail=40 >&2 || true
}

build() {
	step "Building examples/hello in the cluster: ImageBuild hello"
	kubectl delete imagebuild hello --ignore-not-found --wait=true >/dev/null
	kubectl apply -f - <<-EOF
		apiVersion: build.slipway.dev/v1alpha1
		kind: ImageBuild
		metadata:
		  name: hello
		spec:
		  source:
		    git:
		      url: http://${host}:${GIT_PORT}/hello.git
		      revision: main
		  buildArgs:
		  - name: BASE
		    value: ${host}:${REGISTRY_PORT}/library/busybox:latest
		  output:
		    image: ${host}:${REGISTRY_PORT}/examples/hello:latest
		    insecure: true
		  timeout: 10m
	EOF
	echo "(kubectl get imagebuild hello -w, until it is Ready or ${TIMEOUT} s have passed)"
	kubectl get imagebuild hello -w &
	local watcher=$! phase='' deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS < deadline)); do
		phase=$(kubectl get imagebuild hello -o jsonpath='{.status.phase}' 2>/dev/null || true)
		[[ "${phase}" == Succeeded || "${phase}" == Failed ]] && break
		sleep 1
	done
	sleep 1
	kill "${watcher}" 2>/dev/null || true
	wait "${watcher}" 2>/dev/null || true
	if [[ "${phase}" != Succeeded ]]; then
		failure_details
		die "the build ended in phase '${phase:-none}'"
	fi
	kubectl wait --for=condition=Ready imagebuild/hello --timeout=30s >/dev/null

	step "kubectl get imagebuilds"
	kubectl get imagebuilds -o wide
	echo
	kubectl get imagebuild hello -o jsonpath='commit {.status.source.commit}{"\n"}digest {.status.image.digest}{"\n"}cache  {.status.cache.hits} hits, {.status.cache.misses} misses{"\n"}'

	step "Running the built image as a pod"
	local digest image
	digest=$(kubectl get imagebuild hello -o jsonpath='{.status.image.digest}')
	image=${REGISTRY}/examples/hello@${digest}
	kubectl delete pod hello-run --ignore-not-found --wait=true >/dev/null
	kubectl run hello-run --image="${image}" --restart=Never >/dev/null
	echo "pod hello-run: ${image}"
	if ! kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/hello-run --timeout=120s >/dev/null; then
		kubectl describe pod hello-run >&2 || true
		die "the pod hello-run did not succeed"
	fi
	echo "--- kubectl logs hello-run"
	kubectl logs hello-run
	kubectl delete pod hello-run --wait=false >/dev/null
}

case "${1:-}" in
down)
	stop_gitserve
	hack/registry.sh stop || true
	hack/cluster.sh down
	;;
install)
	install
	print_timings
	;;
'')
	install
	build
	print_timings
	printf '\nNext: kubectl get imagebuilds; kubectl describe imagebuild hello; hack/demo.sh down stops it all.\n'
	printf 'export KUBECONFIG=%s\n' "${KUBECONFIG:-}"
	;;
*)
	echo "usage: $0 [install|down]" >&2
	exit 2
	;;
esac
