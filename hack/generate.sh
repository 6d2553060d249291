#!/usr/bin/env bash
# Runs controller-gen (the version pinned in hack/tools/go.mod) on the API and the controllers.
#
#   hack/generate.sh generate    deepcopy code (api/**/zz_generated.deepcopy.go)
#   hack/generate.sh manifests   CRDs (config/crd/bases) and RBAC (config/rbac/role.yaml)
#   hack/generate.sh             both
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"
GO=${GO:-go}
bin="${root}/bin"
cg="${bin}/controller-gen"

# Build controller-gen when missing or older than the tools module that pins it.
if [[ ! -x "${cg}" || "${root}/hack/tools/go.mod" -nt "${cg}" ]]; then
	echo "generate.sh: building controller-gen" >&2
	(cd hack/tools && "${GO}" build -trimpath -o "${cg}" sigs.k8s.io/controller-tools/cmd/controller-gen)
fi

generate() {
	"${cg}" object:headerFile=hack/boilerplate.go.txt paths=./api/...
}

manifests() {
	"${cg}" \
		crd paths=./api/... output:crd:artifacts:config=config/crd/bases \
		rbac:roleName=manager-role paths=./controllers/... output:rbac:artifacts:config=config/rbac
}

case "${1:-all}" in
generate) generate ;;
manifests) manifests ;;
all) generate && manifests ;;
*)
	echo "usage: $0 [generate|manifests]" >&2
	exit 2
	;;
esac
