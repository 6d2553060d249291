#!/usr/bin/env bash
# Builds the benchmark's peers once and caches them under ${SLIPWAY_CACHE}/bench/bin:
# kaniko v1.23.2's executor, BuildKit v0.34.2's buildkitd and buildctl, each from its module
# as the Go module proxy serves it (kaniko cannot be `go install`ed).
# Prints nothing when everything is cached. Usage: hack/bench/peers.sh [kaniko] [buildkit]
set -euo pipefail

cache=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/bench
KANIKO_VERSION=${KANIKO_VERSION:-v1.23.2}
BUILDKIT_VERSION=${BUILDKIT_VERSION:-v0.34.2}
bin=${cache}/bin
mkdir -p "${bin}" "${cache}/src"

# modsrc MODULE@VERSION NAME: a writable copy of the module's source, once.
modsrc() {
	local dst=${cache}/src/$2
	if [[ ! -f "${dst}/.complete" ]]; then
		local dir
		dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -d "${dir}" ]] || { echo "peers.sh: go mod download $1 gave no directory" >&2; exit 1; }
		rm -rf "${dst}"
		cp -r "${dir}" "${dst}"
		chmod -R u+w "${dst}"
		touch "${dst}/.complete"
	fi
	echo "${dst}"
}

# lock NAME: one build of a peer at a time (two `make bench` at once wait for each other).
lock() {
	exec {lockfd}>"${bin}/.lock-$1"
	flock "${lockfd}"
}

build_kaniko() {
	local out=${bin}/kaniko-executor-${KANIKO_VERSION}
	[[ -x "${out}" ]] && return 0
	lock kaniko
	[[ -x "${out}" ]] && return 0
	echo "peers.sh: building kaniko ${KANIKO_VERSION} (a few minutes, once)" >&2
	local src
	src=$(modsrc "github.com/GoogleContainerTools/kaniko@${KANIKO_VERSION}" "kaniko-${KANIKO_VERSION}")
	(cd "${src}" && rm -rf vendor &&
		CGO_ENABLED=0 nice -n 19 go build -mod=mod -trimpath -o "${out}.tmp" ./cmd/executor)
	mv "${out}.tmp" "${out}"
}

build_buildkit() {
	local c
	for c in buildkitd buildctl ""; do
		[[ -z "${c}" ]] && return 0
		[[ -x "${bin}/${c}-${BUILDKIT_VERSION}" ]] || break
	done
	lock buildkit
	echo "peers.sh: building BuildKit ${BUILDKIT_VERSION} (a few minutes, once)" >&2
	local src
	src=$(modsrc "github.com/moby/buildkit@${BUILDKIT_VERSION}" "buildkit-${BUILDKIT_VERSION}")
	local c
	for c in buildkitd buildctl; do
		[[ -x "${bin}/${c}-${BUILDKIT_VERSION}" ]] && continue
		(cd "${src}" && CGO_ENABLED=0 nice -n 19 go build -mod=mod -trimpath -o "${bin}/${c}-${BUILDKIT_VERSION}.tmp" "./cmd/${c}")
		mv "${bin}/${c}-${BUILDKIT_VERSION}.tmp" "${bin}/${c}-${BUILDKIT_VERSION}"
	done
}

what=("$@")
((${#what[@]})) || what=(kaniko buildkit)
for w in "${what[@]}"; do
	case "${w}" in
	kaniko) build_kaniko ;;
	buildkit) build_buildkit ;;
	*) echo "peers.sh: unknown peer ${w}" >&2; exit 2 ;;
	esac
done
