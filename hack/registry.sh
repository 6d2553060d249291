#!/usr/bin/env bash
# A local registry for the demo and the benchmarks: Debian's docker-registry serving plain
# HTTP on 127.0.0.1, with its storage, config, log and PID file under
# ${SLIPWAY_STATE:-$PWD/_output}/registry.
#
#   hack/registry.sh start    # starts it unless it already runs; prints nothing on success
#   hack/registry.sh stop     # stops it by the PID in its PID file
#   hack/registry.sh status   # exit 0 when it runs
#   hack/registry.sh env      # prints `export SLIPWAY_REGISTRY=127.0.0.1:PORT`, for eval
#
# SLIPWAY_REGISTRY_PORT (default 25000) chooses the port. Tests do not use this script:
# test/testenv starts a registry per test.
set -euo pipefail

port=${SLIPWAY_REGISTRY_PORT:-25000}
state=${SLIPWAY_STATE:-${PWD}/_output}
dir=${state}/registry
pidfile=${dir}/registry.pid
host=127.0.0.1:${port}
bin=/usr/bin/docker-registry

# running prints the PID when the PID file names a live docker-registry.
running() {
	[[ -f "${pidfile}" ]] || return 1
	local pid
	pid=$(<"${pidfile}")
	[[ "${pid}" =~ ^[0-9]+$ ]] || return 1
	kill -0 "${pid}" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q docker-registry || return 1
	echo "${pid}"
}

answers() {
	curl -s -o /dev/null --max-time 1 "http://${host}/v2/"
}

start() {
	if running >/dev/null; then
		return 0
	fi
	if [[ ! -x "${bin}" ]]; then
		echo "registry.sh: ${bin} is missing: install Debian's docker-registry (hack/deps.sh)" >&2
		exit 1
	fi
	mkdir -p "${dir}/storage"
	cat >"${dir}/config.yml" <<-YAML
		version: 0.1
		log:
		  level: warn
		  accesslog:
		    disabled: true
		storage:
		  filesystem:
		    rootdirectory: ${dir}/storage
		  delete:
		    enabled: true
		http:
		  addr: ${host}
	YAML
	# setsid: the registry outlives this script and the terminal; env -i: it reads REGISTRY_*
	# variables over its config, so it gets none of ours.
	env -i PATH="${PATH}" setsid "${bin}" serve "${dir}/config.yml" >>"${dir}/registry.log" 2>&1 </dev/null &
	local pid=$!
	echo "${pid}" >"${pidfile}"
	for _ in $(seq 100); do
		if answers; then
			return 0
		fi
		if ! kill -0 "${pid}" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	echo "registry.sh: docker-registry did not answer on ${host}; the end of ${dir}/registry.log:" >&2
	tail -n 20 "${dir}/registry.log" >&2 || true
	kill "${pid}" 2>/dev/null || true
	rm -f "${pidfile}"
	exit 1
}

stop() {
	local pid
	if ! pid=$(running); then
		rm -f "${pidfile}"
		return 0
	fi
	kill "${pid}"
	for _ in $(seq 50); do
		kill -0 "${pid}" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "${pid}" 2>/dev/null; then
		kill -KILL "${pid}" 2>/dev/null || true
	fi
	rm -f "${pidfile}"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) running >/dev/null ;;
env) echo "export SLIPWAY_REGISTRY=${host}" ;;
*)
	echo "usage: $0 start|stop|status|env" >&2
	exit 2
	;;
esac
