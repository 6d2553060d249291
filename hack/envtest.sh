#!/usr/bin/env bash
# Prints `export KUBEBUILDER_ASSETS=<dir>` for controller-runtime's envtest, after making sure
# <dir> holds etcd, kube-apiserver (and kubectl when the machine has one).
#
#   eval "$(hack/envtest.sh)"
#
# The binaries are built from their Go modules (hack/tools/etcd, hack/tools/kubernetes), since
# setup-envtest cannot download here, and cached under
# ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/k8s/<version>/; a cached binary is reused as it is.
# A cold build takes about 15-20 minutes on 2 cores; progress goes to stderr, only the export
# line goes to stdout.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="${root}/hack/tools"
cache="${SLIPWAY_CACHE:-${HOME}/.cache/slipway}"
dir="${cache}/k8s/${K8S_VERSION}"
GO=${GO:-go}

log() { echo "envtest.sh: $*" >&2; }

# build <name> <module dir> <package> [ldflags]: builds into a temporary name and renames it,
# so an interrupted build never leaves a half-written binary that a later run would trust.
build() {
	local name=$1 mod=$2 pkg=$3 ldflags=${4:-}
	if [[ -x "${dir}/${name}" ]]; then
		return
	fi
	log "building ${name} (${pkg}) into ${dir}; the first time takes minutes"
	local start=${SECONDS}
	(cd "${mod}" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" "${GO}" build -trimpath -ldflags "${ldflags}" \
		-o "${dir}/.${name}.tmp" "${pkg}") >&2
	mv -f "${dir}/.${name}.tmp" "${dir}/${name}"
	log "built ${name} in $((SECONDS - start)) s"
}

mkdir -p "${dir}"

# Several sessions may share the machine and the cache: one builds, the others wait for it.
exec 9>"${dir}/.lock"
if ! flock -n 9; then
	log "waiting for another hack/envtest.sh that is building into ${dir}"
	flock 9
fi

build etcd "${tools}/etcd" go.etcd.io/etcd/server/v3 \
	"-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"

minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor}"
	ldflags+=" -X ${p}.gitTreeState=clean"
done
build kube-apiserver "${tools}/kubernetes" k8s.io/kubernetes/cmd/kube-apiserver "${ldflags}"

if [[ ! -x "${dir}/kubectl" ]] && command -v kubectl >/dev/null 2>&1; then
	cp "$(command -v kubectl)" "${dir}/kubectl"
fi

echo "export KUBEBUILDER_ASSETS=${dir}"
