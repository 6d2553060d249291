#!/usr/bin/env bash
# Installs the Debian packages that the tests, the demo and the benchmarks use, when missing.
# A machine that has them all does nothing (no apt-get update, no network).
#
#   hack/deps.sh            # the default set below
#   hack/deps.sh pkg...     # these packages instead
#   hack/deps.sh --foreign pkg:arch...
#                           # Debian packages of another architecture (busybox-static:arm64), not
#                           # installed but downloaded and unpacked, once, into
#                           # ${SLIPWAY_CACHE:-~/.cache/slipway}/debs/PKG_ARCH/root (the .deb
#                           # beside it); test/testenv builds the arm64 and armhf base images
#                           # from them. Adds the architecture to dpkg (dpkg --add-architecture)
#                           # and runs apt-get update when apt knows no such package yet.
#
# Needs root (or sudo) only when something is missing.
set -euo pipefail

sudo=()
if ((EUID != 0)); then
	sudo=(sudo)
fi

# foreign PKG:ARCH...: see above. A package already unpacked is not looked at again.
foreign() {
	local cache=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/debs spec pkg arch dest tmp
	local sandbox=()
	# As root, apt would try to download as _apt into a directory only root can write, fail and
	# say so before downloading as root anyway.
	((EUID != 0)) || sandbox=(-o APT::Sandbox::User=root)
	mkdir -p "${cache}"
	for spec in "$@"; do
		pkg=${spec%%:*} arch=${spec#*:}
		if [[ "${spec}" != *:* || -z "${pkg}" || -z "${arch}" || "${pkg}${arch}" == */* ]]; then
			echo "deps.sh: --foreign needs PKG:ARCH, got ${spec}" >&2
			exit 2
		fi
		dest=${cache}/${pkg}_${arch}
		[[ ! -e "${dest}/done" ]] || continue
		if ! dpkg --print-foreign-architectures | grep -qx "${arch}" && [[ "$(dpkg --print-architecture)" != "${arch}" ]]; then
			echo "deps.sh: adding the ${arch} architecture to dpkg" >&2
			"${sudo[@]}" dpkg --add-architecture "${arch}"
		fi
		if ! apt-cache show "${pkg}:${arch}" >/dev/null 2>&1; then
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
		fi
		echo "deps.sh: downloading ${pkg}:${arch} into ${dest}" >&2
		rm -rf "${dest}"
		tmp=$(mktemp -d "${cache}/.${pkg}_${arch}.XXXXXX")
		# apt-get download writes into the current directory, as the calling user.
		if ! (cd "${tmp}" && apt-get download -qq "${sandbox[@]}" "${pkg}:${arch}" >&2); then
			rm -rf "${tmp}"
			echo "deps.sh: apt-get download ${pkg}:${arch} failed" >&2
			exit 1
		fi
		mkdir -p "${tmp}/root"
		dpkg-deb -x "${tmp}"/*.deb "${tmp}/root"
		dpkg-deb -f "${tmp}"/*.deb Package Version Architecture >"${tmp}/done"
		mv "${tmp}" "${dest}"
	done
}
if [[ "${1:-}" == --foreign ]]; then
	shift
	(($# > 0)) || { echo "deps.sh: --foreign needs PKG:ARCH arguments" >&2; exit 2; }
	foreign "$@"
	exit 0
fi

packages=(
	docker-registry # the CNCF distribution registry: test/testenv, hack/registry.sh
	busybox-static  # the busybox base image: test/testenv, hack/baseimage
	buildah         # the peer of the benchmarks
	podman          # loads --tar-path tarballs in the tests, as users would
	runc            # RUN steps and the peers' containers
	git             # git:// build contexts and the git test server
	openssh-server  # the SSH git test server
	debootstrap     # the larger Debian base image
	uidmap          # newuidmap/newgidmap for user namespaces
	ca-certificates # TLS to registries
	containerd                  # the node of hack/cluster.sh
	containernetworking-plugins # its CNI bridge (/usr/lib/cni)
	iptables                    # the kubelet's and CNI's chains
	iproute2                    # ip and ss: hack/cluster.sh, hack/demo.sh (the bridge, port checks)
	curl                        # readiness checks of hack/cluster.sh, hack/registry.sh, hack/demo.sh
	shellcheck                  # make verify lints every shell script (hack/verify.sh)
	qemu-user-static            # RUN steps of foreign platforms (executor/binfmt, testenv.RequireEmulation, the binfmt image)
)
if (($# > 0)); then
	packages=("$@")
fi

installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for p in "${packages[@]}"; do
	installed "${p}" || missing+=("${p}")
done
if ((${#missing[@]} == 0)); then
	exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

for p in "${missing[@]}"; do
	if ! installed "${p}"; then
		echo "deps.sh: ${p} is still not installed" >&2
		exit 1
	fi
done
