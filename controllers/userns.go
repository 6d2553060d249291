package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// User namespaces for executor pods.
//
// With hostUsers: false, the executor's root (and so every RUN step's) is an unprivileged user
// on the node. A node runs such a pod only if its kubelet, container runtime and kernel support
// it (idmapped mounts); where one does not, the pod never starts. So the manager decides, with
// --host-users=auto (the default), from what each node reports in
// status.runtimeHandlers[""].features.userNamespaces (Kubernetes 1.32 and later): a pod gets
// its own user namespace when every node it may be scheduled on reports support; otherwise it
// runs in the host's, and the manager logs which node lacked support. --host-users=false and
// =true force either.

// HostUsersMode is --host-users.
type HostUsersMode string

const (
	HostUsersAuto  HostUsersMode = "auto"
	HostUsersTrue  HostUsersMode = "true"
	HostUsersFalse HostUsersMode = "false"
)

// ParseHostUsersMode parses --host-users: auto, true or false.
func ParseHostUsersMode(s string) (HostUsersMode, error) {
	switch m := HostUsersMode(s); m {
	case HostUsersAuto, HostUsersTrue, HostUsersFalse:
		return m, nil
	}
	return "", fmt.Errorf("--host-users=%s: want auto, true or false", s)
}

// nodesSupportUserNamespaces reports whether every node matching selector (all nodes when it
// is empty) reports user namespace support for the default runtime handler, and when not,
// why, naming a node. No node at all is no support.
func nodesSupportUserNamespaces(nodes []corev1.Node, selector map[string]string) (bool, string) {
	sel := labels.SelectorFromSet(selector)
	n := 0
	for i := range nodes {
		node := &nodes[i]
		if !sel.Matches(labels.Set(node.Labels)) {
			continue
		}
		n++
		if !reportsUserNamespaces(node) {
			return false, fmt.Sprintf("node %s does not report user namespace support", node.Name)
		}
	}
	if n == 0 {
		return false, "no node to run executor pods on reports user namespace support"
	}
	return true, ""
}

func reportsUserNamespaces(node *corev1.Node) bool {
	for _, h := range node.Status.RuntimeHandlers {
		if h.Name == "" && h.Features != nil && h.Features.UserNamespaces != nil {
			return *h.Features.UserNamespaces
		}
	}
	return false
}

// hostUsers says whether executor pods placed by nodeSelector run in the host's user namespace,
// and why, under mode.
func (r *ImageBuildReconciler) hostUsers(ctx context.Context, nodeSelector map[string]string) (bool, string, error) {
	switch r.Options.HostUsersMode {
	case HostUsersTrue:
		return true, "--host-users=true", nil
	case HostUsersFalse:
		return false, "--host-users=false", nil
	case "":
		return r.Options.HostUsers, "", nil
	}
	var nodes corev1.NodeList
	// Read when a pod is made, rather than cached: nodes are large and builds infrequent.
	if err := r.APIReader.List(ctx, &nodes, client.MatchingLabels(nodeSelector)); err != nil {
		return true, "", fmt.Errorf("listing nodes for user namespace support: %w", err)
	}
	ok, why := nodesSupportUserNamespaces(nodes.Items, nodeSelector)
	return !ok, why, nil
}
