#!/usr/bin/env bash
# Makes sure the binaries of a one-machine cluster are in the cache and prints its directory:
# etcd and kube-apiserver (through hack/envtest.sh, which builds and caches them), and kubelet,
# kube-controller-manager and kube-scheduler, built here the same way from hack/tools/kubernetes
# into the same cache, ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/k8s/<version>/; and kubectl, the
# machine's copied there, or built with the others when the machine has none (Debian 12 has no
# kubectl package).
#
#   dir=$(hack/cluster/build.sh)
#   hack/cluster/build.sh --dir    # prints the directory only; builds nothing
#
# A cached binary is reused as it is. Cold, on 2 cores: kube-apiserver about 15 minutes, the
# three others about 7 more (they share most packages); progress goes to stderr. Builds run at
# the caller's priority; NICE='nice -n 19' lowers it (on a machine busy with CPU-bound work in
# the same session, a nice 19 build gets about 1% of a CPU and hardly advances).
set -euo pipefail

K8S_VERSION=v1.37.2 # the version of hack/envtest.sh and hack/tools/kubernetes/go.mod

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools="${root}/hack/tools"
cache="${SLIPWAY_CACHE:-${HOME}/.cache/slipway}"
dir="${cache}/k8s/${K8S_VERSION}"
GO=${GO:-go}
NICE=${NICE-}

log() { echo "cluster/build.sh: $*" >&2; }

if [[ "${1:-}" == --dir ]]; then
	echo "${dir}"
	exit 0
fi
mkdir -p "${dir}"

# etcd and kube-apiserver: envtest.sh owns them (and prints an export line we do not need).
need=0
for b in etcd kube-apiserver; do
	[[ -x "${dir}/${b}" ]] || need=1
done
if ((need)); then
	log "etcd or kube-apiserver missing: hack/envtest.sh builds them"
	${NICE} "${root}/hack/envtest.sh" >/dev/null
fi

minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor}"
	ldflags+=" -X ${p}.gitTreeState=clean"
done

# The machine's kubectl when it has one (copied, then renamed); else it is built below.
if [[ ! -x "${dir}/kubectl" ]] && command -v kubectl >/dev/null 2>&1; then
	cp "$(command -v kubectl)" "${dir}/.kubectl.tmp"
	mv -f "${dir}/.kubectl.tmp" "${dir}/kubectl"
fi
# One `go build` for all missing binaries, so shared packages compile once. Each goes to a
# temporary name first and is renamed when complete: a half-written binary is never trusted.
missing=()
for b in kubelet kube-controller-manager kube-scheduler kubectl; do
	[[ -x "${dir}/${b}" ]] || missing+=("${b}")
done
if ((${#missing[@]} > 0)); then
	log "building ${missing[*]} into ${dir}; the first time takes minutes"
	start=${SECONDS}
	tmp=$(mktemp -d "${dir}/.build.XXXXXX")
	trap 'rm -rf "${tmp}"' EXIT
	pkgs=()
	for b in "${missing[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/${b}")
	done
	(cd "${tools}/kubernetes" && CGO_ENABLED=0 GOFLAGS=-mod=mod ${NICE} "${GO}" build -trimpath \
		-ldflags "${ldflags}" -o "${tmp}/" "${pkgs[@]}") >&2
	for b in "${missing[@]}"; do
		mv -f "${tmp}/${b}" "${dir}/${b}"
	done
	log "built ${missing[*]} in $((SECONDS - start)) s"
fi

echo "${dir}"
