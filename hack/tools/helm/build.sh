#!/usr/bin/env bash
# Builds helm from the version pinned in hack/tools/helm/go.mod into
# ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/bin/helm, unless the binary there was built from the
# same go.sum (a stamp beside it records its hash, so a fresh clone reuses the cache), and
# prints its path. Used by `make helm`/`make chart` and by test/chart.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GO=${GO:-go}
bin=${SLIPWAY_CACHE:-${HOME}/.cache/slipway}/bin
helm=${bin}/helm
stamp=${helm}.go.sum.sha256
want=$(sha256sum "${here}/go.sum" | cut -d' ' -f1)

if [[ ! -x "${helm}" || "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
	echo "hack/tools/helm/build.sh: building helm into ${helm} (a few minutes the first time)" >&2
	mkdir -p "${bin}"
	# Build beside the target, then rename: a concurrent reader never sees half a binary.
	tmp=$(mktemp "${bin}/.helm.XXXXXX")
	trap 'rm -f "${tmp}"' EXIT
	(cd "${here}" && CGO_ENABLED=0 nice -n 19 "${GO}" build -mod=readonly -trimpath -o "${tmp}" helm.sh/helm/v3/cmd/helm)
	mv -f "${tmp}" "${helm}"
	echo "${want}" >"${stamp}"
fi
echo "${helm}"
