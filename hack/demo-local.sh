#!/usr/bin/env bash
# The executor alone, on this machine (no cluster): a real build of examples/hello.
# `make demo` (hack/demo.sh) is the same build inside the local Kubernetes cluster.
#
# It installs the Debian packages it needs, starts a local registry on
# 127.0.0.1:${SLIPWAY_REGISTRY_PORT:-25000} (hack/registry.sh), pushes the busybox base image
# made from Debian's busybox-static, builds examples/hello with the executor (chroot
# isolation, layer cache in the same registry), prints the pushed digest and the result
# file, then runs the built image's CMD in a chroot and prints what it says. A second run
# is served from the cache.
#
# `hack/demo-local.sh stop` stops the registry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${1:-}" == stop ]]; then
	exec hack/registry.sh stop
fi

step() { printf '\n==> %s\n' "$*"; }

step "Installing what the demo needs (Debian packages, once)"
hack/deps.sh

step "Building the executor"
CGO_ENABLED=0 go build -trimpath -o bin/executor ./executor

step "Starting the local registry"
hack/registry.sh start
eval "$(hack/registry.sh env)"
echo "registry: ${SLIPWAY_REGISTRY}"

step "Pushing the busybox base image"
base=$(go run ./hack/baseimage --registry "${SLIPWAY_REGISTRY}")
echo "base: ${base}"

out=${SLIPWAY_STATE:-${PWD}/_output}/demo
mkdir -p "${out}"
dest="${SLIPWAY_REGISTRY}/examples/hello:latest"

step "Building examples/hello and pushing it to ${dest}"
bin/executor \
	--context=dir://"${PWD}/examples/hello" \
	--destination="${dest}" \
	--build-arg BASE="${base}" \
	--insecure-registry="${SLIPWAY_REGISTRY}" \
	--cache=true \
	--digest-file="${out}/digest" \
	--result-file="${out}/result.json"

step "Result"
echo "digest: $(cat "${out}/digest")"
cat "${out}/result.json"
echo

step "Running the image (its CMD, in a chroot)"
go run ./hack/runimage --insecure "${dest}@$(cat "${out}/digest")"
