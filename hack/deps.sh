#!/usr/bin/env bash
# Installs the Debian packages that the tests, the demo and the benchmarks use, when missing.
# A machine that has them all does nothing (no apt-get update, no network).
#
#   hack/deps.sh            # the default set below
#   hack/deps.sh pkg...     # these packages instead
#
# Needs root (or sudo) only when something is missing.
set -euo pipefail

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

sudo=()
if ((EUID != 0)); then
	sudo=(sudo)
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
