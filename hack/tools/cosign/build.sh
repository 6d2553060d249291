#!/usr/bin/env bash
# Builds the cosign CLI from the version pinned in hack/tools/cosign/go.mod into
# ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/bin/cosign-<version>, unless the binary there was built
# from the same go.sum (a stamp beside it records its hash, so a fresh clone reuses the cache),
# and prints its path. Used by test/testenv.Cosign: the tests of executor/sign verify with the
# real CLI. Building takes a few minutes the first time.
#
# To move to another version (its module must build with the Go of this machine):
#   cd hack/tools/cosign && rm go.mod go.sum && go mod init github.com/slipway-dev/slipway/hack/tools/cosign \
#     && go mod edit -go=1.26.0 && go get -tool github.com/sigstore/cosign/v2/cmd/cosign@VERSION && go mod tidy
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GO=${GO:-go}
NICE=${NICE-}
module=github.com/sigstore/cosign/v2
version=$(cd "${here}" && "${GO}" list -m -f '{{.Version}}' "${module}")
bin=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/bin
cosign=${bin}/cosign-${version}
stamp=${cosign}.go.sum.sha256
want=$(sha256sum "${here}/go.sum" | cut -d' ' -f1)

if [[ ! -x "${cosign}" || "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
	echo "hack/tools/cosign/build.sh: building cosign ${version} into ${cosign} (a few minutes the first time)" >&2
	mkdir -p "${bin}"
	# Build beside the target, then rename: a concurrent reader never sees half a binary.
	tmp=$(mktemp "${bin}/.cosign.XXXXXX")
	trap 'rm -f "${tmp}"' EXIT
	# The flags of cosign's own release build (its Makefile's LDFLAGS), so that
	# `cosign version` names the version.
	(cd "${here}" && CGO_ENABLED=0 ${NICE} "${GO}" build -mod=readonly -trimpath \
		-ldflags "-buildid= -X sigs.k8s.io/release-utils/version.gitVersion=${version}" \
		-o "${tmp}" "${module}/cmd/cosign")
	mv -f "${tmp}" "${cosign}"
	echo "${want}" >"${stamp}"
fi
echo "${cosign}"
