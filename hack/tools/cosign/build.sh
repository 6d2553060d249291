#!/usr/bin/env bash
# Builds the cosign CLI of one major version from the version pinned in
# hack/tools/cosign/<major>/go.mod into ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/bin/cosign-<version>,
# unless the binary there was built from the same go.sum (a stamp beside it records its hash, so
# a fresh clone reuses the cache), and prints its path. Used by test/testenv.Cosign: the tests of
# executor/sign verify with the real CLI, v2 and v3.
#
#   hack/tools/cosign/build.sh [v2|v3]     # default v3
#
# Building takes several minutes the first time (v3 about 8 on 2 busy cores); it runs at the
# caller's priority, and NICE='nice -n 19' lowers it (as hack/cluster/build.sh: beside CPU-bound
# work a nice 19 build hardly advances).
#
# To move a major version to another release (it must build with the Go of this machine):
#   cd hack/tools/cosign/v3 && go get -tool github.com/sigstore/cosign/v3/cmd/cosign@VERSION && go mod tidy
set -euo pipefail

major=${1:-v3}
case "${major}" in
v2 | v3) ;;
*)
	echo "usage: $0 [v2|v3]" >&2
	exit 2
	;;
esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/${major}
GO=${GO:-go}
NICE=${NICE-}
module=github.com/sigstore/cosign/${major}
version=$(cd "${here}" && "${GO}" list -m -f '{{.Version}}' "${module}")
bin=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/bin
cosign=${bin}/cosign-${version}
stamp=${cosign}.go.sum.sha256
want=$(sha256sum "${here}/go.sum" | cut -d' ' -f1)

if [[ ! -x "${cosign}" || "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
	echo "hack/tools/cosign/build.sh: building cosign ${version} into ${cosign} (several minutes the first time)" >&2
	mkdir -p "${bin}"
	# Build beside the target, then rename: a concurrent reader never sees half a binary.
	tmp=$(mktemp "${bin}/.cosign.XXXXXX")
	trap 'rm -f "${tmp}"' EXIT
	# The flags of cosign's own release build (its Makefile's LDFLAGS), so that
	# `cosign version` names the version.
	# shellcheck disable=SC2086 # NICE is a command prefix: split it.
	(cd "${here}" && CGO_ENABLED=0 ${NICE} "${GO}" build -mod=readonly -trimpath \
		-ldflags "-buildid= -X sigs.k8s.io/release-utils/version.gitVersion=${version}" \
		-o "${tmp}" "${module}/cmd/cosign")
	mv -f "${tmp}" "${cosign}"
	echo "${want}" >"${stamp}"
fi
echo "${cosign}"
