#!/usr/bin/env bash
# Regenerates the go.mod/go.sum of the tool modules under hack/tools from the pinned versions.
# Only needed when a version below changes; hack/envtest.sh and hack/generate.sh use the
# committed files as they are.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.23.0}
GO_DIRECTIVE=${GO_DIRECTIVE:-1.26.0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

new_module() { # dir module-path
	rm -f "$1/go.mod" "$1/go.sum"
	(cd "$1" && go mod init "$2" >/dev/null 2>&1 && go mod edit -go="${GO_DIRECTIVE}")
}

# controller-gen (hack/generate.sh).
new_module "${here}" github.com/slipway-dev/slipway/hack/tools
(cd "${here}" && go get -tool "sigs.k8s.io/controller-tools/cmd/controller-gen@${CONTROLLER_TOOLS_VERSION}")

# etcd (hack/envtest.sh).
new_module "${here}/etcd" github.com/slipway-dev/slipway/hack/tools/etcd
(cd "${here}/etcd" && go get -tool "go.etcd.io/etcd/server/v3@${ETCD_VERSION}")

# kube-apiserver (hack/envtest.sh), kubelet, kube-controller-manager, kube-scheduler
# (hack/cluster.sh). k8s.io/kubernetes replaces its staging modules with local
# paths; a module that depends on it must replace each of them with the published version.
new_module "${here}/kubernetes" github.com/slipway-dev/slipway/hack/tools/kubernetes
kmod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
staging="v0.${K8S_VERSION#v1.}"
(
	cd "${here}/kubernetes"
	go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}"
	grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "${kmod}" | awk '{print $1}' | grep -v '^k8s.io/sample-' |
		while read -r m; do go mod edit -replace="${m}=${m}@${staging}"; done
	go get -tool k8s.io/kubernetes/cmd/kube-apiserver
	# The rest of a node (hack/cluster.sh), and kubectl for machines without one: same module,
	# same versions.
	go get -tool k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
	go mod tidy
)

# helm (hack/tools/helm/build.sh: make chart, test/chart). Its own module, so that its
# dependencies never move controller-gen's.
HELM_VERSION=${HELM_VERSION:-v3.22.0}
new_module "${here}/helm" github.com/slipway-dev/slipway/hack/tools/helm
(cd "${here}/helm" && go get -tool "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" && go mod tidy)

# local-path-provisioner (hack/tools/localpath/build.sh: the local cluster's dynamic provisioner,
# hack/cluster.sh). Its own module: it brings its own (older) client-go.
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-v0.0.30}
new_module "${here}/localpath" github.com/slipway-dev/slipway/hack/tools/localpath
(cd "${here}/localpath" && go get -tool "github.com/rancher/local-path-provisioner@${LOCAL_PATH_VERSION}" && go mod tidy)
