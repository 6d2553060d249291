#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, on loopback, without Docker or downloads:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet built from their Go
# modules (hack/cluster/build.sh, cached), Debian's containerd, runc and CNI plugins. Everything
# it starts, writes and mounts lives under ${SLIPWAY_STATE:-$PWD/_output}/cluster; it needs root.
#
#   hack/cluster.sh up          # build or reuse the binaries, start everything, wait for the node
#   hack/cluster.sh down        # stop it all, leave no process, mount, iptables chain or bridge
#   hack/cluster.sh status      # what runs; exit 0 when the apiserver answers and the node is Ready
#   hack/cluster.sh kubeconfig  # prints the path of the admin kubeconfig:
#                               #   export KUBECONFIG=$(hack/cluster.sh kubeconfig)
#
# For fault tests (test/e2e), on a cluster that is up:
#   hack/cluster.sh stop NAME [KILL]
#                                   # stops component NAME by its PID (SIGTERM, SIGKILL after 20 s;
#                                   # with KILL, SIGKILL at once, as a crash would end it)
#   hack/cluster.sh start NAME      # starts NAME again with the command line it last ran with,
#                                   # and waits until it is ready (see ready_check)
#   hack/cluster.sh restart NAME    # stop, then start
#   hack/cluster.sh kill-container ID [SIGNAL]
#                                   # sends SIGNAL (KILL) to a container's main process through
#                                   # containerd (ID: a pod's containerID without containerd://)
#
# Storage: rancher's local-path-provisioner (built from its Go module by
# hack/tools/localpath/build.sh, cached) runs beside the control plane with the admin kubeconfig,
# and the StorageClass local-path, the cluster's default, makes a hostPath volume per claim under
# <state>/cluster/local-path when the claim's first pod is scheduled (WaitForFirstConsumer), and
# removes it when the claim is deleted (reclaimPolicy Delete). Its helper pods (namespace
# local-path-storage) make and remove those directories with sh from the busybox image of
# test/testenv, imported into containerd as localhost/slipway/busybox:1. It cannot grow a volume
# (no allowVolumeExpansion).
#
# The node is called `localhost` (the kubelet serves on 127.0.0.1 with a certificate for it, so
# `kubectl logs` and `exec` work). There is no kube-proxy and no DNS: the `kubernetes` Service
# has no endpoints (--endpoint-reconciler-type=none, the apiserver is on loopback), so an
# in-cluster client needs hostNetwork and KUBERNETES_SERVICE_HOST=127.0.0.1
# KUBERNETES_SERVICE_PORT=<apiserver port>. Pods on the CNI bridge cannot reach servers on the
# host's 127.0.0.1 (a registry there): use hostNetwork for those. containerd pulls from the
# local registry (hack/registry.sh, SLIPWAY_REGISTRY_PORT) over plain HTTP.
#
# Ports and networks (environment). The default ports avoid the common ones and lie below the
# kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default), so no outgoing
# connection can be holding one when a server binds it:
#   SLIPWAY_CLUSTER_APISERVER_PORT      26443
#   SLIPWAY_CLUSTER_ETCD_PORT           32379   (client)
#   SLIPWAY_CLUSTER_ETCD_PEER_PORT      32380
#   SLIPWAY_CLUSTER_KUBELET_PORT        30250
#   SLIPWAY_CLUSTER_KUBELET_HEALTHZ_PORT 30248
#   SLIPWAY_REGISTRY_PORT               25000   (the plain-HTTP registry containerd may pull from)
#   SLIPWAY_CLUSTER_POD_SUBNET          10.217.0.0/24  (CNI bridge)
#   SLIPWAY_CLUSTER_SERVICE_SUBNET      10.218.0.0/24
#   SLIPWAY_CLUSTER_BRIDGE              slipway0
#   SLIPWAY_CLUSTER_POD_SECURITY        privileged     (Pod Security admission's cluster default
#                                                       level; namespaces may label stricter)
# The controller-manager and the scheduler serve no port; containerd's streaming server takes
# a random loopback port. Logs: <state>/cluster/logs/, PID files: <state>/cluster/run/.
#
# binfmt_misc: the node is this machine, so QEMU handlers that the chart's binfmt DaemonSet
# registers while the cluster runs (entries slipway-qemu-*, hack/demo.sh install with
# SLIPWAY_BINFMT=1) are in this machine's kernel. down unregisters those that were not there
# before up, and no other entry.
#
# A component that dies while `up` runs is reported (its exit status or the signal that killed
# it, the end of its log, the kernel's lines naming it: OOM kill, segfault), the report kept in
# logs/NAME.died, and started again once; a second death ends `up` with the same report.
# SLIPWAY_CLUSTER_FAULT=NAME:kill:N (for test/cluster) kills NAME with SIGKILL right after each
# of its first N starts.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${SLIPWAY_STATE:-${PWD}/_output}
mkdir -p "${state}"
state=$(cd "${state}" && pwd)
dir=${state}/cluster

APISERVER_PORT=${SLIPWAY_CLUSTER_APISERVER_PORT:-26443}
ETCD_PORT=${SLIPWAY_CLUSTER_ETCD_PORT:-32379}
ETCD_PEER_PORT=${SLIPWAY_CLUSTER_ETCD_PEER_PORT:-32380}
KUBELET_PORT=${SLIPWAY_CLUSTER_KUBELET_PORT:-30250}
KUBELET_HEALTHZ_PORT=${SLIPWAY_CLUSTER_KUBELET_HEALTHZ_PORT:-30248}
REGISTRY_PORT=${SLIPWAY_REGISTRY_PORT:-25000}
POD_SUBNET=${SLIPWAY_CLUSTER_POD_SUBNET:-10.217.0.0/24}
SERVICE_SUBNET=${SLIPWAY_CLUSTER_SERVICE_SUBNET:-10.218.0.0/24}
BRIDGE=${SLIPWAY_CLUSTER_BRIDGE:-slipway0}
POD_SECURITY=${SLIPWAY_CLUSTER_POD_SECURITY:-privileged}
NODE=localhost
PAUSE_IMAGE=localhost/slipway/pause:1
CNI_BIN=${SLIPWAY_CLUSTER_CNI_BIN:-/usr/lib/cni}

pki=${dir}/pki
logs=${dir}/logs
run=${dir}/run
sock=${dir}/containerd/containerd.sock
kubeconfig=${dir}/kubeconfig
kubelet_config=${dir}/config/kubelet.yaml
podlogs=${dir}/pod-logs
# The processes hack/cluster.sh starts, in the order they start; down stops them in reverse.
components=(etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet local-path-provisioner)

log() { echo "cluster.sh: $*" >&2; }
# trace: a progress line with the seconds since the command began, with SLIPWAY_CLUSTER_VERBOSE=1.
trace() {
	if [[ "${SLIPWAY_CLUSTER_VERBOSE:-}" == 1 ]]; then
		log "[${SECONDS} s] $*"
	fi
}
die() {
	log "$*"
	exit 1
}

# --- processes, by PID file only --------------------------------------------------------------

# pid_of NAME prints the PID in NAME's PID file when that process lives and is ours: every
# command this script starts names the cluster directory on its command line, so a recycled
# PID is never taken for one of ours.
pid_of() {
	local f=${run}/$1.pid pid
	[[ -f "${f}" ]] || return 1
	pid=$(<"${f}")
	[[ "${pid}" =~ ^[0-9]+$ ]] || return 1
	kill -0 "${pid}" 2>/dev/null || return 1
	{ tr '\0' ' ' <"/proc/${pid}/cmdline"; } 2>/dev/null | grep -qF -- "${dir}/" || return 1
	echo "${pid}"
}

# What up started, by name: the command line (for the one retry of alive), whether it was
# retried, and how often SLIPWAY_CLUSTER_FAULT killed it.
declare -A started=() retried=() faulted=()

# start NAME CMD...: starts CMD in its own session, outliving this script, logging to
# logs/NAME.log (truncated, unless keep_log is set), with its PID in run/NAME.pid and its command
# line in run/NAME.args. This script is its parent (setsid execs CMD in the same process, as it
# is no process group leader), so alive can `wait` for its exit status.
start() {
	local name=$1
	shift
	started[${name}]=$(printf '%q ' "$@")
	# The command line, NUL-separated, for `hack/cluster.sh start NAME` after a stop.
	printf '%s\0' "$@" >"${run}/${name}.args"
	if [[ -z "${keep_log:-}" ]]; then
		: >"${logs}/${name}.log"
	fi
	setsid "$@" >>"${logs}/${name}.log" 2>&1 </dev/null &
	local pid=$! i
	echo "${pid}" >"${run}/${name}.pid"
	# Until the child has exec'd, its command line is this script's, and pid_of would not
	# know it.
	for ((i = 0; i < 100; i++)); do
		pid_of "${name}" >/dev/null && break
		kill -0 "${pid}" 2>/dev/null || break
		sleep 0.05
	done
	inject_fault "${name}" "${pid}"
}

# check_fault: dies unless SLIPWAY_CLUSTER_FAULT is empty or NAME:kill:N with NAME one of
# ours. For tests: inject_fault then kills NAME with SIGKILL right after each of its first N
# starts in this run of up (1: alive reports it and starts it again; 2: up gives up).
check_fault() {
	local f=${SLIPWAY_CLUSTER_FAULT:-} c
	[[ -n "${f}" ]] || return 0
	if [[ "${f}" =~ ^([a-z-]+):kill:([0-9]+)$ ]]; then
		for c in "${components[@]}"; do
			[[ "${c}" == "${BASH_REMATCH[1]}" ]] && return 0
		done
	fi
	die "SLIPWAY_CLUSTER_FAULT=${f}: want NAME:kill:N, NAME one of ${components[*]}"
}

inject_fault() { # name pid
	local f=${SLIPWAY_CLUSTER_FAULT:-}
	[[ "${f}" == "$1:kill:"* ]] || return 0
	faulted[$1]=$((${faulted[$1]:-0} + 1))
	if ((faulted[$1] <= ${f##*:})); then
		log "SLIPWAY_CLUSTER_FAULT=${f}: killing $1 (pid $2) with SIGKILL"
		kill -KILL "$2" 2>/dev/null || true
	fi
}

# stop SECONDS NAME...: SIGTERM to all of them at once, then SIGKILL to those still there after
# SECONDS.
stop() {
	local wait=$1 name pid i pids=() names=()
	shift
	for name in "$@"; do
		if pid=$(pid_of "${name}"); then
			kill -TERM "${pid}" 2>/dev/null || true
			pids+=("${pid}")
			names+=("${name}")
		fi
	done
	for ((i = 0; i < wait * 10; i++)); do
		pid=""
		for pid in "${pids[@]}"; do
			kill -0 "${pid}" 2>/dev/null && break
			pid=""
		done
		[[ -z "${pid}" ]] && break
		sleep 0.1
	done
	for i in "${!pids[@]}"; do
		if kill -0 "${pids[i]}" 2>/dev/null; then
			log "${names[i]} (${pids[i]}) ignored SIGTERM for ${wait} s: SIGKILL"
			kill -KILL "${pids[i]}" 2>/dev/null || true
		fi
	done
	for ((i = 0; i < 50; i++)); do
		pid=""
		for pid in "${pids[@]}"; do
			kill -0 "${pid}" 2>/dev/null && break
			pid=""
		done
		[[ -z "${pid}" ]] && break
		sleep 0.1
	done
	for name in "$@"; do
		rm -f "${run}/${name}.pid"
	done
}

# death_report NAME PID: why NAME (PID) is gone, for a person: its exit status or the signal
# that killed it (from `wait`: this script started it), the end of its log and the kernel's
# lines naming it (the OOM killer, a segfault). Runs in this shell, not in $(...): a subshell
# could not wait for the child.
death_report() {
	local name=$1 pid=$2 rc=0 stat="" err=${run}/wait.err kern comm
	[[ -r "/proc/${pid}/stat" ]] && stat=$(<"/proc/${pid}/stat")
	stat=${stat##*) }
	if [[ -n "${stat}" && "${stat:0:1}" != Z ]]; then
		# Alive, but no longer the command we started (the PID was reused), or not ours.
		echo "  ${name}: pid ${pid} of ${run}/${name}.pid runs something else now; exit status unknown"
	else
		wait "${pid}" 2>"${err}" || rc=$?
		if [[ -s "${err}" ]]; then
			echo "  ${name} (pid ${pid}) exited; its exit status is unknown: not started by this run of cluster.sh"
		elif ((rc > 128)); then
			echo "  ${name} (pid ${pid}) was killed by SIG$(kill -l "$((rc - 128))" 2>/dev/null || echo "$((rc - 128))") (wait status ${rc})"
		else
			echo "  ${name} (pid ${pid}) exited with status ${rc}"
		fi
		rm -f "${err}"
	fi
	if [[ -s "${logs}/${name}.log" ]]; then
		echo "  the last 20 lines of ${logs}/${name}.log:"
		tail -n 20 "${logs}/${name}.log" | sed 's/^/    /'
	else
		echo "  ${logs}/${name}.log is empty"
	fi
	# The kernel names a process by its first 15 characters and its PID: "Killed process 123
	# (containerd)", "oom-kill:...,task=containerd,pid=123", "containerd[123]: segfault at".
	comm=${name:0:15}
	if kern=$(dmesg 2>&1); then
		kern=$(grep -F -- "${comm}" <<<"${kern}" | grep -E "(^|[^0-9])${pid}([^0-9]|\$)" | tail -n 10) || true
		if [[ -n "${kern}" ]]; then
			echo "  the kernel's lines naming ${comm} (pid ${pid}):"
			awk '{print "    " $0}' <<<"${kern}"
		else
			echo "  no kernel line (dmesg) names ${comm} (pid ${pid}): no OOM kill, no segfault"
		fi
	else
		echo "  the kernel's log is not readable here (dmesg: ${kern##*$'\n'}); an OOM kill or a segfault would show there"
	fi
}

# alive NAME: true when NAME runs. When it has died, records why (death_report, to stderr
# and logs/NAME.died); the first time, starts it again with the same command line and returns
# false (a wait_for goes on waiting); the second time, gives up.
alive() {
	local name=$1 pid=""
	pid_of "${name}" >/dev/null && return 0
	[[ -f "${run}/${name}.pid" ]] && pid=$(<"${run}/${name}.pid")
	if [[ ! "${pid}" =~ ^[0-9]+$ ]]; then
		die "${name} is not running and has no PID file (${run}/${name}.pid)"
	fi
	if [[ -z "${retried[${name}]:-}" && -n "${started[${name}]:-}" ]]; then
		retried[${name}]=1
		death_report "${name}" "${pid}" >"${logs}/${name}.died"
		log "${name} died while the cluster was starting:"
		cat "${logs}/${name}.died" >&2
		mv -f "${logs}/${name}.log" "${logs}/${name}.1.log"
		log "starting ${name} again, once (the log of the first run is ${logs}/${name}.1.log)"
		eval "start ${name} ${started[${name}]}"
		return 1
	fi
	if [[ -n "${retried[${name}]:-}" ]]; then
		death_report "${name}" "${pid}" >"${logs}/${name}.died.2"
		log "${name} died again while the cluster was starting, after one retry; giving up:"
		cat "${logs}/${name}.died.2" >&2
		log "(why ${name} died the first time is above and in ${logs}/${name}.died)"
		cat "${logs}/${name}.died.2" >>"${logs}/${name}.died"
		rm -f "${logs}/${name}.died.2"
	else
		death_report "${name}" "${pid}" >"${logs}/${name}.died"
		log "${name} died while the cluster was starting:"
		cat "${logs}/${name}.died" >&2
	fi
	exit 1
}

# --- clients ---------------------------------------------------------------------------------

bin=""
lpp="" # the local-path-provisioner binary (hack/tools/localpath/build.sh), set by up
# The kubectl the script runs: KUBECTL, else the machine's, else the one hack/cluster/build.sh
# put beside the cluster's binaries (built there when the machine has none; up sets it again
# once it has built them).
kubectl_bin=${KUBECTL:-}
if [[ -z "${kubectl_bin}" ]]; then
	kubectl_bin=$(command -v kubectl 2>/dev/null) || kubectl_bin=$("${root}/hack/cluster/build.sh" --dir)/kubectl
fi
kubectl() {
	command "${kubectl_bin}" --kubeconfig "${kubeconfig}" "$@"
}
ctr_() {
	command ctr --address "${sock}" "$@"
}

apiserver_ready() {
	curl -sf --max-time 2 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" --key "${pki}/admin.key" \
		"https://127.0.0.1:${APISERVER_PORT}/readyz" >/dev/null 2>&1
}

node_ready() {
	[[ "$(kubectl get node "${NODE}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
		2>/dev/null)" == True ]]
}

# --- iptables chains, bridges, cgroups: what existed before `up` ---------------------------------

# chains prints "<binary> <table> <chain>" for every user-defined chain.
chains() {
	local ipt t
	for ipt in iptables ip6tables; do
		command -v "${ipt}" >/dev/null 2>&1 || continue
		for t in filter nat mangle raw; do
			"${ipt}" -w 5 -t "${t}" -S 2>/dev/null | awk -v i="${ipt}" -v t="${t}" '$1 == "-N" {print i, t, $2}'
		done
	done
}

# our_chains prints the KUBE-* and CNI-* chains that did not exist before `up`.
our_chains() {
	local before=${run}/chains.before
	[[ -f "${before}" ]] || before=/dev/null
	chains | grep -E ' (KUBE|CNI)-' | grep -vxF -f "${before}" || true
}

remove_chains() {
	local list ipt t c n target ref
	list=$(our_chains)
	[[ -n "${list}" ]] || return 0
	# 1. Rules anywhere that jump to one of them; 2. flush them; 3. delete them.
	while read -r ipt t; do
		local doomed
		doomed=$(awk -v i="${ipt}" -v t="${t}" '$1 == i && $2 == t {print $3}' <<<"${list}")
		for ref in $("${ipt}" -w 5 -t "${t}" -S | awk '$1 == "-N" || $1 == "-P" {print $2}'); do
			grep -qxF "${ref}" <<<"${doomed}" && continue
			# Rule numbers of jumps from ${ref}, highest first so the others keep their number.
			"${ipt}" -w 5 -t "${t}" -L "${ref}" -n --line-numbers 2>/dev/null | awk 'NR > 2 {print $1, $2}' |
				sort -rn | while read -r n target; do
				if grep -qxF "${target}" <<<"${doomed}"; then
					"${ipt}" -w 5 -t "${t}" -D "${ref}" "${n}" || true
				fi
			done
		done
		for c in ${doomed}; do
			"${ipt}" -w 5 -t "${t}" -F "${c}" 2>/dev/null || true
		done
		for c in ${doomed}; do
			"${ipt}" -w 5 -t "${t}" -X "${c}" 2>/dev/null || true
		done
	done < <(awk '{print $1, $2}' <<<"${list}" | sort -u)
}

cgroup_roots() {
	local d
	for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
		[[ -d "${d}" ]] && echo "${d}"
	done
	return 0
}

# Directories outside ours that the kubelet and containerd create when missing (the kubelet's
# links to container logs, containerd's shim sockets); down removes them when empty and new.
host_dirs=(/var/log/containers /run/containerd/s /run/containerd /run/netns)

# --- mounts ----------------------------------------------------------------------------------

# mounts_under prints the mount points at or under the cluster directory, the last mounted
# first (mountinfo is in mount order), with mountinfo's octal escapes decoded.
mounts_under() {
	awk '{print $5}' /proc/self/mountinfo | while read -r m; do
		m=$(printf '%b' "${m}")
		if [[ "${m}" == "${dir}" || "${m}" == "${dir}/"* ]]; then
			echo "${m}"
		fi
	done | tac
}

# The network namespaces containerd made for the pods (in /run/netns, outside our directory),
# recorded while containerd ran so that down can remove them if containerd could not.
netns_file=${run}/netns

# netns_on_bridge prints the network namespaces (/run/netns/NAME) at the other end of the veths
# on our bridge: those of our pods, whether or not containerd still knows them.
netns_on_bridge() {
	local links ids id
	links=$(ip -o link show master "${BRIDGE}" 2>/dev/null) || return 0
	grep -oE 'link-netns [^ ]+' <<<"${links}" | awk '{print "/run/netns/" $2}' || true
	ids=$(grep -oE 'link-netnsid [0-9]+' <<<"${links}" | awk '{print $2}') || true
	for id in ${ids}; do
		ip netns list 2>/dev/null | awk -v id="${id}" '$2 == "(id:" && $3 == id ")" {print "/run/netns/" $1}'
	done
}

record_netns() {
	netns_on_bridge >>"${netns_file}"
	local ids id
	pid_of containerd >/dev/null || return 0
	ids=$(ctr_ -n k8s.io containers ls -q 2>/dev/null) || return 0
	for id in ${ids}; do
		ctr_ -n k8s.io containers info "${id}" 2>/dev/null |
			grep -oE '"path": *"/(var/)?run/netns/[^"]+"' | sed -E 's/.*"(\/[^"]+)"$/\1/' || true
	done | sort -u >>"${netns_file}"
}

# shim_tree prints the PIDs of the containerd shims of our containerd (a containerd-shim*
# command naming its socket) and of all their descendants (the containers' processes).
shim_tree() {
	local f p shims=()
	while IFS= read -r f; do
		p=${f#/proc/}
		p=${p%/cmdline}
		if [[ "$({ tr '\0' '\n' <"${f}"; } 2>/dev/null | head -n1)" == *containerd-shim* ]]; then
			shims+=("${p}")
		fi
	done < <(grep -lsaF -- "${sock}" /proc/[0-9]*/cmdline)
	((${#shims[@]} > 0)) || return 0
	# /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
	cat /proc/[0-9]*/stat 2>/dev/null | sed -E 's/^([0-9]+) \(.*\) [A-Za-z] ([0-9]+) .*/\1 \2/' |
		awk -v shims="${shims[*]}" '
		BEGIN { n = split(shims, s, " "); for (i = 1; i <= n; i++) ours[s[i]] = 1 }
		{ parent[$1] = $2 }
		END {
			do {
				changed = 0
				for (p in parent) if (!(p in ours) && (parent[p] in ours)) { ours[p] = 1; changed = 1 }
			} while (changed)
			for (p in ours) print p
		}'
}

# --- up ----------------------------------------------------------------------------------------

# check_port PORT WHAT VARIABLE: dies, naming the socket that holds PORT, when a TCP socket on
# the host has it as its local port and would make bind fail: a listener or a connection, but not
# one in TIME-WAIT, which a listener (Go's set SO_REUSEADDR) binds over, as after a down.
check_port() {
	local held
	held=$(ss -Htanp exclude time-wait "sport = :$1" 2>/dev/null | head -3)
	if [[ -n "${held}" ]]; then
		die "port $1 ($2) is in use; choose another with $3. Held by:"$'\n'"${held}"
	fi
}

write_kubeconfig() { # path user cert-name
	cat >"$1" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: slipway
		  cluster:
		    server: https://127.0.0.1:${APISERVER_PORT}
		    certificate-authority-data: $(base64 -w0 <"${pki}/ca.crt")
		users:
		- name: $2
		  user:
		    client-certificate-data: $(base64 -w0 <"${pki}/$3.crt")
		    client-key-data: $(base64 -w0 <"${pki}/$3.key")
		contexts:
		- name: $2@slipway
		  context:
		    cluster: slipway
		    user: $2
		current-context: $2@slipway
	EOF
	chmod 600 "$1"
}

wait_for() { # seconds description command...
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		if "$@"; then
			return 0
		fi
		sleep 0.2
	done
	die "timed out after ${secs} s waiting for ${what}"
}

# check_prerequisites: dies unless this runs as root, with the tools, the CNI plugins and a
# state directory short enough for containerd's socket.
check_prerequisites() {
	local c
	((EUID == 0)) || die "up needs root (containerd, runc, kubelet)"
	for c in containerd ctr runc containerd-shim-runc-v2 iptables ip ss curl; do
		command -v "${c}" >/dev/null 2>&1 || die "${c} is missing: hack/deps.sh installs the Debian packages"
	done
	[[ -x "${CNI_BIN}/bridge" && -x "${CNI_BIN}/host-local" && -x "${CNI_BIN}/loopback" ]] ||
		die "no CNI plugins in ${CNI_BIN}: install Debian's containernetworking-plugins (hack/deps.sh)"
	# A unix socket path has at most 107 bytes; containerd's ttrpc socket adds ".ttrpc".
	((${#sock} + 6 <= 107)) || die "the state directory ${state} is too long for containerd's socket path"
}

# already_up: true when the whole cluster runs and is ready; dies when only part of it runs;
# false when nothing does.
already_up() {
	local c running=()
	for c in "${components[@]}"; do
		pid_of "${c}" >/dev/null && running+=("${c}")
	done
	if ((${#running[@]} == ${#components[@]})) && apiserver_ready && node_ready; then
		log "already up; export KUBECONFIG=${kubeconfig}"
		return 0
	fi
	if ((${#running[@]} > 0)); then
		die "partly running (${running[*]}): run hack/cluster.sh down first"
	fi
	return 1
}

# check_free: dies when a port the cluster binds is taken, or when a network interface has
# the bridge's name and is not ours.
check_free() {
	check_port "${APISERVER_PORT}" apiserver SLIPWAY_CLUSTER_APISERVER_PORT
	check_port "${ETCD_PORT}" etcd SLIPWAY_CLUSTER_ETCD_PORT
	check_port "${ETCD_PEER_PORT}" "etcd peer" SLIPWAY_CLUSTER_ETCD_PEER_PORT
	check_port "${KUBELET_PORT}" kubelet SLIPWAY_CLUSTER_KUBELET_PORT
	check_port "${KUBELET_HEALTHZ_PORT}" "kubelet healthz" SLIPWAY_CLUSTER_KUBELET_HEALTHZ_PORT
	if ip link show "${BRIDGE}" >/dev/null 2>&1 && [[ ! -f "${run}/bridge.before" ]]; then
		die "a network interface ${BRIDGE} exists already; choose another with SLIPWAY_CLUSTER_BRIDGE"
	fi
}

# make_dirs: the tree of the cluster directory.
make_dirs() {
	mkdir -p "${pki}" "${logs}" "${run}" "${podlogs}" "${dir}/etcd" "${dir}/kubelet" \
		"${dir}/containerd/certs.d/127.0.0.1:${REGISTRY_PORT}" "${dir}/cni/net.d" "${dir}/cni/ipam" "${dir}/config"
	chmod 700 "${dir}/etcd"
}

# record_host_state: what exists before us (iptables chains, cgroups, host directories,
# binfmt_misc entries of the chart's DaemonSet), so that down removes only what this cluster made.
record_host_state() {
	local c
	[[ -f "${run}/chains.before" ]] || chains >"${run}/chains.before"
	[[ -f "${run}/binfmt.before" ]] || binfmt_entries >"${run}/binfmt.before"
	[[ -f "${run}/cgroups.before" ]] || cgroup_roots >"${run}/cgroups.before"
	if [[ ! -f "${run}/dirs.before" ]]; then
		for c in "${host_dirs[@]}"; do
			[[ -d "${c}" ]] && echo "${c}"
		done >"${run}/dirs.before"
	fi
	touch "${run}/bridge.before"
	: >"${netns_file}"
}

# make_pki: the cluster's certificates and keys (hack/cluster/certs), and the kubeconfigs of
# admin, the controller-manager, the scheduler and the kubelet.
make_pki() {
	# The service IP: the first address of the service subnet (a /24 or larger ending in .0).
	local svc_base=${SERVICE_SUBNET%/*}
	local service_ip=${svc_base%.*}.$((${svc_base##*.} + 1))

	trace "certificates"
	(cd "${root}" && go run ./hack/cluster/certs -dir "${pki}" -node "${NODE}" -service-ip "${service_ip}")
	write_kubeconfig "${kubeconfig}" admin admin
	write_kubeconfig "${dir}/config/controller-manager.kubeconfig" controller-manager controller-manager
	write_kubeconfig "${dir}/config/scheduler.kubeconfig" scheduler scheduler
	write_kubeconfig "${dir}/config/kubelet.kubeconfig" kubelet kubelet-client
}

# The local-path-provisioner's helper image (hack/cluster/busybox) and where its volumes go.
BUSYBOX_IMAGE=localhost/slipway/busybox:1
local_path=${dir}/local-path

# make_busybox_image: the helper pods' image, test/testenv's busybox as a tarball for ctr.
make_busybox_image() {
	trace "busybox image"
	(cd "${root}" && go run ./hack/cluster/busybox -o "${dir}/config/busybox.tar" -ref "${BUSYBOX_IMAGE}")
}

# start_local_path: the StorageClass local-path (the default), the namespace of the helper pods
# (Pod Security privileged: they mount the node's directory), the ConfigMap with their setup and
# teardown scripts, then the provisioner, out of the cluster with the admin kubeconfig (a
# throwaway cluster: no RBAC of its own), its configuration and helper pod from files.
start_local_path() {
	trace "local-path-provisioner"
	mkdir -p "${local_path}"
	cat >"${dir}/config/local-path.json" <<-EOF
		{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["${local_path}"]}]}
	EOF
	cat >"${dir}/config/local-path-helper.yaml" <<-EOF
		apiVersion: v1
		kind: Pod
		metadata:
		  name: helper-pod
		spec:
		  containers:
		  - name: helper-pod
		    image: ${BUSYBOX_IMAGE}
		    imagePullPolicy: Never
	EOF
	kubectl apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: Namespace
		metadata:
		  name: local-path-storage
		  labels:
		    pod-security.kubernetes.io/enforce: privileged
		---
		apiVersion: v1
		kind: ConfigMap
		metadata:
		  name: local-path-config
		  namespace: local-path-storage
		data:
		  setup: |-
		    #!/bin/sh
		    set -eu
		    mkdir -m 0777 -p "\$VOL_DIR"
		  teardown: |-
		    #!/bin/sh
		    set -eu
		    rm -rf "\$VOL_DIR"
		---
		apiVersion: storage.k8s.io/v1
		kind: StorageClass
		metadata:
		  name: local-path
		  annotations:
		    storageclass.kubernetes.io/is-default-class: "true"
		provisioner: rancher.io/local-path
		volumeBindingMode: WaitForFirstConsumer
		reclaimPolicy: Delete
	EOF
	start local-path-provisioner "${lpp}" start --kubeconfig "${kubeconfig}" \
		--namespace local-path-storage --configmap-name local-path-config \
		--config "${dir}/config/local-path.json" --helper-pod-file "${dir}/config/local-path-helper.yaml" \
		--helper-image "${BUSYBOX_IMAGE}" --service-account-name default \
		--provisioner-name rancher.io/local-path
	# Its helper pods run as the namespace's default ServiceAccount.
	wait_for 30 "the local-path-provisioner and its ServiceAccount" eval \
		'alive local-path-provisioner; kubectl -n local-path-storage get serviceaccount default >/dev/null 2>&1'
}

# make_pause_image: the pause image, a static Go binary that writes its own image.
make_pause_image() {
	trace "pause image"
	(cd "${root}" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "${dir}/config/pause" ./hack/cluster/pause)
	"${dir}/config/pause" -image "${dir}/config/pause.tar" -ref "${PAUSE_IMAGE}"
}

# start_etcd: etcd on plain HTTP on loopback, no fsync (a throwaway cluster), fresh each time.
start_etcd() {
	rm -rf "${dir}/etcd" && mkdir -m 700 "${dir}/etcd"
	trace "starting etcd"
	start etcd "${bin}/etcd" --name default --data-dir "${dir}/etcd" \
		--listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
		--listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
		--initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
		--initial-cluster "default=http://127.0.0.1:${ETCD_PEER_PORT}" \
		--unsafe-no-fsync --log-level warn
}

# start_containerd: containerd, with everything under our directory: its configuration, the
# local registry's (plain HTTP) and the CNI bridge network's.
start_containerd() {
	rm -rf "${dir}/containerd/state"
	cat >"${dir}/containerd/certs.d/127.0.0.1:${REGISTRY_PORT}/hosts.toml" <<-EOF
		server = "http://127.0.0.1:${REGISTRY_PORT}"
		[host."http://127.0.0.1:${REGISTRY_PORT}"]
		  capabilities = ["pull", "resolve", "push"]
	EOF
	cat >"${dir}/containerd/config.toml" <<-EOF
		version = 2
		root = "${dir}/containerd/root"
		state = "${dir}/containerd/state"
		disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
		[grpc]
		  address = "${sock}"
		[ttrpc]
		  address = "${sock}.ttrpc"
		[debug]
		  level = "info"
		[plugins."io.containerd.internal.v1.opt"]
		  path = "${dir}/containerd/opt"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "${PAUSE_IMAGE}"
		  restrict_oom_score_adj = true
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
		  enable_selinux = false
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		        Root = "${dir}/containerd/runc"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "${CNI_BIN}"
		    conf_dir = "${dir}/cni/net.d"
		    max_conf_num = 1
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    config_path = "${dir}/containerd/certs.d"
	EOF
	cat >"${dir}/cni/net.d/10-slipway.conflist" <<-EOF
		{
		  "cniVersion": "0.4.0",
		  "name": "slipway",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "${BRIDGE}",
		      "isGateway": true,
		      "ipMasq": true,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "ranges": [[{"subnet": "${POD_SUBNET}"}]],
		        "routes": [{"dst": "0.0.0.0/0"}],
		        "dataDir": "${dir}/cni/ipam"
		      }
		    },
		    {"type": "portmap", "capabilities": {"portMappings": true}}
		  ]
		}
	EOF
	trace "starting containerd"
	start containerd containerd --config "${dir}/containerd/config.toml"
}

# start_apiserver: the apiserver, with Pod Security admission at ${POD_SECURITY} by default.
start_apiserver() {
	local admission=${dir}/config/admission.yaml
	cat >"${admission}" <<-EOF
		apiVersion: apiserver.config.k8s.io/v1
		kind: AdmissionConfiguration
		plugins:
		- name: PodSecurity
		  configuration:
		    apiVersion: pod-security.admission.config.k8s.io/v1
		    kind: PodSecurityConfiguration
		    defaults:
		      enforce: "${POD_SECURITY}"
		      enforce-version: latest
		      audit: "${POD_SECURITY}"
		      audit-version: latest
		      warn: "${POD_SECURITY}"
		      warn-version: latest
		    exemptions:
		      usernames: []
		      runtimeClasses: []
		      namespaces: []
	EOF
	trace "starting the apiserver"
	start kube-apiserver "${bin}/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${APISERVER_PORT}" \
		--tls-cert-file "${pki}/apiserver.crt" --tls-private-key-file "${pki}/apiserver.key" \
		--client-ca-file "${pki}/ca.crt" \
		--kubelet-client-certificate "${pki}/apiserver-kubelet-client.crt" \
		--kubelet-client-key "${pki}/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "${pki}/ca.crt" \
		--kubelet-preferred-address-types Hostname,InternalIP \
		--service-cluster-ip-range "${SERVICE_SUBNET}" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "${pki}/sa.pub" \
		--service-account-signing-key-file "${pki}/sa.key" \
		--authorization-mode Node,RBAC \
		--enable-admission-plugins NodeRestriction \
		--admission-control-config-file "${admission}" \
		--allow-privileged=true \
		--endpoint-reconciler-type none \
		--profiling=false \
		--cert-dir "${dir}/config/apiserver-certs"
}

# prepare_containerd: waits for containerd, deletes what a previous cluster left in it, and
# imports the pause image.
prepare_containerd() {
	trace "waiting for containerd"
	wait_for 30 containerd eval 'alive containerd; ctr_ version >/dev/null 2>&1'
	# Containers of a cluster that did not go down cleanly (containerd had died): no kubelet
	# runs yet, so none is wanted. containerd's CRI plugin loaded them at start: delete them,
	# then restart it.
	local ns id stale=0
	for ns in $(ctr_ namespaces ls -q 2>/dev/null); do
		for id in $(ctr_ -n "${ns}" containers ls -q 2>/dev/null); do
			ctr_ -n "${ns}" tasks delete -f "${id}" >/dev/null 2>&1 || true
			ctr_ -n "${ns}" containers delete "${id}" >/dev/null 2>&1 || true
			stale=1
		done
	done
	if ((stale)); then
		log "deleted the containers a previous cluster left in containerd; restarting containerd"
		stop 20 containerd
		start containerd containerd --config "${dir}/containerd/config.toml"
		wait_for 30 containerd eval 'alive containerd; ctr_ version >/dev/null 2>&1'
	fi
	ctr_ -n k8s.io images import "${dir}/config/pause.tar" >/dev/null
	ctr_ -n k8s.io images import "${dir}/config/busybox.tar" >/dev/null
}

# write_kubelet_config: the kubelet's configuration: node `localhost`, serving on 127.0.0.1
# with its certificate.
write_kubelet_config() {
	cat >"${kubelet_config}" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: 127.0.0.1
		port: ${KUBELET_PORT}
		readOnlyPort: 0
		healthzBindAddress: 127.0.0.1
		healthzPort: ${KUBELET_HEALTHZ_PORT}
		tlsCertFile: ${pki}/kubelet.crt
		tlsPrivateKeyFile: ${pki}/kubelet.key
		authentication:
		  anonymous:
		    enabled: false
		  webhook:
		    enabled: true
		  x509:
		    clientCAFile: ${pki}/ca.crt
		authorization:
		  mode: Webhook
		containerRuntimeEndpoint: unix://${sock}
		cgroupDriver: cgroupfs
		failCgroupV1: false
		failSwapOn: false
		imagePullCredentialsVerificationPolicy: NeverVerify
		podLogsDir: ${podlogs}
		clusterDomain: cluster.local
		serializeImagePulls: false
		rotateCertificates: false
		serverTLSBootstrap: false
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		evictionHard:
		  memory.available: 100Mi
		  nodefs.available: 1%
		  nodefs.inodesFree: 1%
		  imagefs.available: 1%
		  imagefs.inodesFree: 1%
		nodeStatusReportFrequency: 10s
		resolvConf: /etc/resolv.conf
	EOF
}

# start_node: the controller-manager, the scheduler and the kubelet.
start_node() {
	trace "starting the controller-manager, the scheduler, the kubelet"
	start kube-controller-manager "${bin}/kube-controller-manager" \
		--kubeconfig "${dir}/config/controller-manager.kubeconfig" \
		--secure-port 0 --leader-elect=false \
		--service-account-private-key-file "${pki}/sa.key" --root-ca-file "${pki}/ca.crt" \
		--use-service-account-credentials=true \
		--cluster-signing-cert-file "${pki}/ca.crt" --cluster-signing-key-file "${pki}/ca.key" \
		--service-cluster-ip-range "${SERVICE_SUBNET}" \
		--profiling=false
	start kube-scheduler "${bin}/kube-scheduler" \
		--kubeconfig "${dir}/config/scheduler.kubeconfig" \
		--secure-port 0 --leader-elect=false --profiling=false
	start kubelet "${bin}/kubelet" \
		--config "${kubelet_config}" --kubeconfig "${dir}/config/kubelet.kubeconfig" \
		--hostname-override "${NODE}" --root-dir "${dir}/kubelet" --cert-dir "${dir}/config/kubelet-certs" \
		--v 1
}

# wait_for_node: the node Ready, and the default ServiceAccount that pods need.
wait_for_node() {
	trace "waiting for the node"
	wait_for 60 "node ${NODE} Ready" eval 'alive kubelet; alive containerd; node_ready'
	# Pods need their namespace's default ServiceAccount (the controller-manager makes it).
	trace "waiting for the default ServiceAccount"
	wait_for 30 "the default ServiceAccount" eval \
		'alive kube-controller-manager; alive kube-scheduler; kubectl -n default get serviceaccount default >/dev/null 2>&1'
}

# up: brings the cluster up, step by step; returns at once when it is up already.
up() {
	local t0=${SECONDS}
	check_prerequisites
	if already_up; then
		return 0
	fi
	check_free
	check_fault

	bin=$("${root}/hack/cluster/build.sh")
	lpp=$("${root}/hack/tools/localpath/build.sh")
	command -v "${kubectl_bin}" >/dev/null 2>&1 || kubectl_bin=${bin}/kubectl
	command -v "${kubectl_bin}" >/dev/null 2>&1 || die "no kubectl: not on PATH, not in ${bin} (KUBECTL=${KUBECTL:-})"
	# On failure what started keeps running, for a look at it; down stops it.
	trap 'if (($? != 0)); then log "up failed: logs in ${logs}/; hack/cluster.sh down stops what started"; fi' EXIT
	local tb=${SECONDS}
	make_dirs
	rm -f "${logs}"/*.died "${logs}"/*.1.log
	record_host_state
	make_pki
	make_pause_image
	make_busybox_image
	start_etcd
	start_containerd
	start_apiserver
	prepare_containerd
	write_kubelet_config

	trace "waiting for the apiserver"
	wait_for 60 "the apiserver on 127.0.0.1:${APISERVER_PORT}" eval 'alive etcd; alive kube-apiserver; apiserver_ready'

	start_node
	wait_for_node
	start_local_path

	log "up in $((SECONDS - t0)) s ($((SECONDS - tb)) s after the binaries); export KUBECONFIG=${kubeconfig}"
}

# --- down --------------------------------------------------------------------------------------

# delete_pods: deletes the pods through the kubelet, so that containerd tears their networks
# down (CNI DEL) and removes their network namespaces. No controller may make new ones
# meanwhile.
delete_pods() {
	local i
	trace "stopping the controller-manager and the scheduler"
	stop 10 local-path-provisioner kube-controller-manager kube-scheduler
	if pid_of kubelet >/dev/null && pid_of containerd >/dev/null && apiserver_ready; then
		record_netns
		if [[ -n "$(kubectl get pods -A -o name 2>/dev/null)" ]]; then
			trace "deleting the pods"
			kubectl delete pods --all -A --grace-period=2 --timeout=45s >/dev/null 2>&1 ||
				log "pods were not all deleted in time; their containers are killed below"
		fi
		# The kubelet stops the sandboxes after the API objects are gone.
		trace "waiting for containerd's tasks to end"
		for ((i = 0; i < 150; i++)); do
			[[ -z "$(ctr_ -n k8s.io tasks ls -q 2>/dev/null)" ]] && break
			sleep 0.2
		done
	fi
}

# clear_containerd: what is left in containerd: kills and deletes tasks, deletes containers.
clear_containerd() {
	if pid_of containerd >/dev/null; then
		record_netns
		local ns id
		for ns in $(ctr_ namespaces ls -q 2>/dev/null); do
			for id in $(ctr_ -n "${ns}" tasks ls -q 2>/dev/null); do
				ctr_ -n "${ns}" tasks kill -s SIGKILL "${id}" >/dev/null 2>&1 || true
			done
			for id in $(ctr_ -n "${ns}" tasks ls -q 2>/dev/null); do
				ctr_ -n "${ns}" tasks delete -f "${id}" >/dev/null 2>&1 || true
			done
			for id in $(ctr_ -n "${ns}" containers ls -q 2>/dev/null); do
				ctr_ -n "${ns}" containers delete "${id}" >/dev/null 2>&1 || true
			done
		done
	fi
}

# kill_leftover_shims: shims that outlived their containerd, and their containers: by PID,
# found from our socket.
kill_leftover_shims() {
	local p pids
	pids=$(shim_tree)
	if [[ -n "${pids}" ]]; then
		log "killing leftover shims and container processes: ${pids//$'\n'/ }"
		# A shim killed leaves its socket, /run/containerd/s/<sha256 of address/namespace/id>.
		local sockets=() args ns id
		for p in ${pids}; do
			args=$({ tr '\0' '\n' <"/proc/${p}/cmdline"; } 2>/dev/null) || continue
			[[ "$(head -n1 <<<"${args}")" == *containerd-shim* ]] || continue
			ns=$(grep -A1 -x -- -namespace <<<"${args}" | tail -n1)
			id=$(grep -A1 -x -- -id <<<"${args}" | tail -n1)
			sockets+=("/run/containerd/s/$(printf '%s' "${sock}/${ns}/${id}" | sha256sum | cut -d' ' -f1)")
		done
		# shellcheck disable=SC2086
		kill -KILL ${pids} 2>/dev/null || true
		sleep 0.5
		rm -f "${sockets[@]}"
	fi
}

# unmount_all: the mounts under our directory (the kubelet's bind mount of its root, volumes,
# containerd's rootfs and shm), then the pods' network namespaces containerd did not remove.
unmount_all() {
	local m
	for _ in 1 2 3; do
		while read -r m; do
			if [[ -n "${m}" ]]; then
				umount "${m}" 2>/dev/null || true
			fi
		done < <(mounts_under)
		[[ -z "$(mounts_under)" ]] && break
	done
	netns_on_bridge >>"${netns_file}"
	if [[ -f "${netns_file}" ]]; then
		while read -r m; do
			[[ -n "${m}" && -e "${m}" ]] || continue
			umount "${m}" 2>/dev/null || true
			rm -f "${m}" 2>/dev/null || true
		done < <(sort -u "${netns_file}")
	fi
}

# binfmt_entries: the binfmt_misc entries named as the chart's binfmt DaemonSet names its own
# (slipway-qemu-*), one per line; nothing when binfmt_misc is not mounted.
binfmt_entries() {
	local e
	for e in /proc/sys/fs/binfmt_misc/slipway-qemu-*; do
		[[ -f "${e}" ]] && echo "${e##*/}"
	done
	return 0
}

# new_binfmt_entries: those of binfmt_entries that were not there before up.
new_binfmt_entries() {
	local e
	while read -r e; do
		[[ -n "${e}" ]] || continue
		[[ -f "${run}/binfmt.before" ]] && grep -qxF "${e}" "${run}/binfmt.before" && continue
		echo "${e}"
	done < <(binfmt_entries)
}

# remove_binfmt_entries: unregisters the QEMU handlers the DaemonSet registered on this node
# (this machine) while the cluster ran.
remove_binfmt_entries() {
	local e
	while read -r e; do
		[[ -n "${e}" ]] || continue
		echo -1 >"/proc/sys/fs/binfmt_misc/${e}" 2>/dev/null || true
	done < <(new_binfmt_entries)
}

# remove_host_changes: the iptables chains the kubelet and the CNI plugins made, the bridge,
# the cgroups, the kubelet's links to our pod logs, the host directories made for us.
remove_host_changes() {
	local c cg
	remove_chains
	remove_binfmt_entries
	if [[ -f "${run}/bridge.before" ]] && ip link show "${BRIDGE}" >/dev/null 2>&1; then
		ip link delete "${BRIDGE}" 2>/dev/null || true
	fi
	while read -r cg; do
		[[ -n "${cg}" ]] || continue
		if [[ -f "${run}/cgroups.before" ]] && grep -qxF "${cg}" "${run}/cgroups.before"; then
			continue
		fi
		find "${cg}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done < <(cgroup_roots)
	# The kubelet's symbolic links to our pod logs.
	if [[ -d /var/log/containers ]]; then
		find /var/log/containers -maxdepth 1 -type l -lname "${podlogs}/*" -delete 2>/dev/null || true
	fi
	if [[ -f "${run}/dirs.before" ]]; then
		for c in "${host_dirs[@]}"; do
			grep -qxF "${c}" "${run}/dirs.before" || rmdir "${c}" 2>/dev/null || true
		done
	fi
}

# check_nothing_left: dies, naming each, when a process, mount, iptables chain, network
# interface, network namespace or cgroup of ours is still there.
check_nothing_left() {
	local c p m cg left=()
	for c in "${components[@]}"; do
		if p=$(pid_of "${c}"); then
			left+=("process ${c} (${p})")
		fi
	done
	for p in $(shim_tree); do
		left+=("process ${p}: $({ tr '\0' ' ' <"/proc/${p}/cmdline"; } 2>/dev/null | cut -c1-120)")
	done
	while read -r m; do
		[[ -n "${m}" ]] && left+=("mount ${m}")
	done < <(mounts_under)
	while read -r m; do
		[[ -n "${m}" ]] && left+=("iptables chain ${m}")
	done < <(our_chains)
	while read -r m; do
		[[ -n "${m}" ]] && left+=("binfmt_misc entry ${m}")
	done < <(new_binfmt_entries)
	if [[ -f "${run}/bridge.before" ]] && ip link show "${BRIDGE}" >/dev/null 2>&1; then
		left+=("network interface ${BRIDGE}: $(ip -o link show master "${BRIDGE}" 2>/dev/null | wc -l) interfaces on it")
	fi
	if [[ -f "${netns_file}" ]]; then
		while read -r m; do
			[[ -n "${m}" && -e "${m}" ]] && left+=("network namespace ${m}")
		done < <(sort -u "${netns_file}")
	fi
	while read -r cg; do
		[[ -n "${cg}" ]] || continue
		[[ -f "${run}/cgroups.before" ]] && grep -qxF "${cg}" "${run}/cgroups.before" && continue
		left+=("cgroup ${cg}")
	done < <(cgroup_roots)

	if ((${#left[@]} > 0)); then
		log "down left these behind:"
		printf '  %s\n' "${left[@]}" >&2
		exit 1
	fi
}

# remove_runtime_state: the runtime state; the PKI (the cluster's identity), containerd's
# image store (pulled images) and the logs stay. Only once nothing is mounted under ${dir}:
# never through a mount.
remove_runtime_state() {
	rm -rf --one-file-system "${dir}/etcd" "${dir}/kubelet" "${dir}/containerd/state" "${dir}/containerd/runc" \
		"${dir}/cni/ipam" "${podlogs}" "${local_path}"
	rm -f "${run}"/*.pid "${run}"/*.args "${run}/chains.before" "${run}/cgroups.before" "${run}/bridge.before" \
		"${run}/dirs.before" "${run}/binfmt.before" "${netns_file}"
}

# down: stops it all, in order, and removes what up made; dies naming what it could not remove.
down() {
	((EUID == 0)) || die "down needs root"
	local t0=${SECONDS}
	mkdir -p "${run}"

	# 1. Pods, through the kubelet; then the kubelet.
	delete_pods
	trace "stopping the kubelet"
	stop 20 kubelet

	# 2. What is left in containerd; then containerd, and the shims that outlived it.
	trace "containerd: tasks and containers"
	clear_containerd
	trace "stopping containerd"
	stop 20 containerd

	kill_leftover_shims

	# 3. The control plane.
	trace "stopping the apiserver, then etcd"
	stop 10 kube-apiserver # before etcd: without etcd it does not finish its shutdown
	stop 10 etcd

	# 4. Mounts, then network namespaces.
	trace "unmounting"
	unmount_all

	# 5. What the kubelet, containerd, the CNI plugins and the binfmt DaemonSet made on the host.
	trace "iptables chains, bridge, cgroups, binfmt_misc entries"
	remove_host_changes

	# 6. Verify, and only then remove the runtime state.
	trace "verifying"
	check_nothing_left
	remove_runtime_state
	log "down in $((SECONDS - t0)) s; no process, mount, iptables chain, bridge, cgroup or binfmt_misc entry left"
}

# --- faults: stop, start and restart one component; signal a container ----------------------

# component NAME: dies unless NAME is one of ours.
component() {
	local c
	for c in "${components[@]}"; do
		[[ "${c}" == "$1" ]] && return 0
	done
	die "unknown component '$1': one of ${components[*]}"
}

# ready_check NAME: true when NAME answers as it does once it has started: etcd's /health, the
# apiserver's /readyz, containerd's API, the kubelet's /healthz with the node Ready. The
# controller-manager and the scheduler serve no port: running is all that is checked.
ready_check() {
	case "$1" in
	etcd) curl -sf --max-time 2 "http://127.0.0.1:${ETCD_PORT}/health" >/dev/null 2>&1 ;;
	kube-apiserver) apiserver_ready ;;
	containerd) ctr_ version >/dev/null 2>&1 ;;
	kubelet)
		curl -sf --max-time 2 "http://127.0.0.1:${KUBELET_HEALTHZ_PORT}/healthz" >/dev/null 2>&1 &&
			{ ! apiserver_ready || node_ready; }
		;;
	*) true ;;
	esac
}

# stop_component NAME [KILL]: stops the running component NAME by its PID: SIGTERM, then SIGKILL
# after 20 s; with KILL, SIGKILL at once. Its command line stays in run/NAME.args for
# start_component.
stop_component() {
	local name=$1 how=${2:-TERM} pid i
	((EUID == 0)) || die "stop needs root"
	component "${name}"
	[[ "${how}" == TERM || "${how}" == KILL ]] || die "stop ${name} ${how}: want TERM (the default) or KILL"
	pid=$(pid_of "${name}") || die "${name} is not running"
	[[ -s "${run}/${name}.args" ]] || die "${name} has no recorded command line (${run}/${name}.args): it was not started by this version of cluster.sh; run down and up"
	if [[ "${how}" == KILL ]]; then
		log "killing ${name} (pid ${pid}) with SIGKILL"
		kill -KILL "${pid}" 2>/dev/null || true
		# Gone, or a zombie its parent has not reaped yet (not ours when another run of
		# cluster.sh started it).
		for ((i = 0; i < 100; i++)); do
			pid_of "${name}" >/dev/null || break
			sleep 0.1
		done
		pid_of "${name}" >/dev/null && die "${name} (pid ${pid}) is still there 10 s after SIGKILL"
		rm -f "${run}/${name}.pid"
	else
		log "stopping ${name} (pid ${pid})"
		stop 20 "${name}"
	fi
	echo "--- hack/cluster.sh stop: stopped (SIG${how}) at $(date -u +%FT%T.%3NZ) ---" >>"${logs}/${name}.log"
}

# start_component NAME: starts the stopped component NAME again with the command line it last
# ran with (run/NAME.args), appending to its log, and waits up to 90 s until it is ready
# (ready_check). A death meanwhile is reported and retried once, as in up (alive).
start_component() {
	local name=$1 args=()
	((EUID == 0)) || die "start needs root"
	component "${name}"
	pid_of "${name}" >/dev/null && die "${name} is running already (pid $(pid_of "${name}"))"
	[[ -s "${run}/${name}.args" ]] || die "${name} has no recorded command line (${run}/${name}.args): run hack/cluster.sh up"
	mapfile -d '' -t args <"${run}/${name}.args"
	echo "--- hack/cluster.sh start: started again at $(date -u +%FT%T.%3NZ) ---" >>"${logs}/${name}.log"
	keep_log=1 start "${name}" "${args[@]}"
	wait_for 90 "${name} to be ready again" eval "alive ${name}; ready_check ${name}"
	log "${name} is running again (pid $(pid_of "${name}"))"
}

# kill_container ID [SIGNAL]: sends SIGNAL (KILL by default) to the main process of the
# container ID of our containerd's k8s.io namespace, as the kernel or a crash would end it.
kill_container() {
	local id=${1:-} sig=${2:-KILL}
	((EUID == 0)) || die "kill-container needs root"
	[[ "${id}" =~ ^[0-9a-f]{64}$ ]] || die "kill-container: want a container ID (64 hex digits), not '${id}'"
	sig=${sig#SIG}
	[[ "${sig}" =~ ^[A-Z0-9]+$ ]] || die "kill-container: want a signal name (KILL, TERM, ...), not '${2:-}'"
	pid_of containerd >/dev/null || die "containerd is not running"
	ctr_ -n k8s.io tasks kill -s "SIG${sig}" "${id}" || die "kill-container: containerd could not signal ${id}"
	log "sent SIG${sig} to container ${id}"
}

# --- status ------------------------------------------------------------------------------------

status() {
	local c p ok=0
	for c in "${components[@]}"; do
		if p=$(pid_of "${c}"); then
			printf '%-24s running (pid %s)\n' "${c}" "${p}"
		else
			printf '%-24s stopped\n' "${c}"
			ok=1
		fi
	done
	if apiserver_ready; then
		echo "apiserver                https://127.0.0.1:${APISERVER_PORT} ready"
		if node_ready; then
			echo "node ${NODE}           Ready"
		else
			echo "node ${NODE}           not Ready"
			ok=1
		fi
	else
		echo "apiserver                not answering on 127.0.0.1:${APISERVER_PORT}"
		ok=1
	fi
	echo "kubeconfig               ${kubeconfig}"
	return "${ok}"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
kubeconfig)
	[[ -f "${kubeconfig}" ]] || die "no kubeconfig at ${kubeconfig}: run hack/cluster.sh up"
	echo "${kubeconfig}"
	;;
stop) stop_component "${2:-}" "${3:-TERM}" ;;
start) start_component "${2:-}" ;;
restart)
	stop_component "${2:-}"
	start_component "${2:-}"
	;;
kill-container) kill_container "${@:2}" ;;
*)
	echo "usage: $0 up|down|status|kubeconfig|stop NAME [KILL]|start NAME|restart NAME|kill-container ID [SIGNAL]" >&2
	exit 2
	;;
esac
