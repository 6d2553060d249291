#!/usr/bin/env bash
# Builds rancher's local-path-provisioner, the dynamic provisioner of the local cluster
# (hack/cluster.sh: StorageClass local-path, the default), from the version pinned in
# hack/tools/localpath/go.mod into ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/bin/local-path-provisioner,
# unless the binary there was built from the same go.sum (a stamp beside it records its hash,
# so a fresh clone reuses the cache), and prints its path. Cold, on 2 cores: about 3 minutes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GO=${GO:-go}
bin=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/bin
lpp=${bin}/local-path-provisioner
stamp=${lpp}.go.sum.sha256
want=$(sha256sum "${here}/go.sum" | cut -d' ' -f1)

if [[ ! -x "${lpp}" || "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
	echo "hack/tools/localpath/build.sh: building local-path-provisioner into ${lpp} (a few minutes the first time)" >&2
	mkdir -p "${bin}"
	# Build beside the target, then rename: a concurrent reader never sees half a binary.
	tmp=$(mktemp "${bin}/.local-path-provisioner.XXXXXX")
	trap 'rm -f "${tmp}"' EXIT
	(cd "${here}" && CGO_ENABLED=0 nice -n 19 "${GO}" build -mod=readonly -trimpath -o "${tmp}" github.com/rancher/local-path-provisioner)
	mv -f "${tmp}" "${lpp}"
	echo "${want}" >"${stamp}"
fi
echo "${lpp}"
