package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// node is a Node with labels that reports userns (nil: nothing) for its default runtime handler.
func node(name string, labels map[string]string, userns *bool) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	n.Status.RuntimeHandlers = []corev1.NodeRuntimeHandler{{Name: "runc"}}
	if userns != nil {
		n.Status.RuntimeHandlers = append(n.Status.RuntimeHandlers, corev1.NodeRuntimeHandler{
			Features: &corev1.NodeRuntimeHandlerFeatures{UserNamespaces: userns}})
	}
	return n
}

func TestNodesSupportUserNamespaces(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	pool := map[string]string{"pool": "builds"}
	tests := []struct {
		name     string
		nodes    []corev1.Node
		selector map[string]string
		want     bool
		why      string
	}{
		{name: "every node supports", nodes: []corev1.Node{node("a", nil, yes), node("b", nil, yes)}, want: true},
		{name: "one node says no", nodes: []corev1.Node{node("a", nil, yes), node("b", nil, no)},
			why: "node b does not report user namespace support"},
		{name: "one node reports nothing (older kubelet)", nodes: []corev1.Node{node("a", nil, yes), node("old", nil, nil)},
			why: "node old does not report user namespace support"},
		{name: "only the selected nodes count", nodes: []corev1.Node{node("a", pool, yes), node("b", nil, no)}, selector: pool, want: true},
		{name: "no node", why: "no node to run executor pods on reports user namespace support"},
		{name: "no selected node", nodes: []corev1.Node{node("b", nil, yes)}, selector: pool,
			why: "no node to run executor pods on reports user namespace support"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, why := nodesSupportUserNamespaces(tc.nodes, tc.selector)
			if got != tc.want || why != tc.why {
				t.Errorf("got %v, %q; want %v, %q", got, why, tc.want, tc.why)
			}
		})
	}
}

// TestImageBuildReconciler_Reconcile_hostUsersAuto: with --host-users=auto, executor pods get
// their own user namespace once every node reports support, and the host's while one does not.
func TestImageBuildReconciler_Reconcile_hostUsersAuto(t *testing.T) {
	c := startEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{HostUsersMode: HostUsersAuto})
	for _, n := range []corev1.Node{node("userns-a", nil, ptr.To(true)), node("userns-b", nil, nil)} {
		status := n.Status
		if err := c.Create(ctx, &n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Delete(context.Background(), &n) })
		n.Status = status
		if err := c.Status().Update(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	newImageBuild(t, c, ns, "host")
	if pod := waitPod(t, c, ns, "host-1-1"); pod.Spec.HostUsers != nil {
		t.Errorf("hostUsers = %v while node userns-b reports no support, want unset", *pod.Spec.HostUsers)
	}

	var b corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: "userns-b"}, &b); err != nil {
		t.Fatal(err)
	}
	b.Status.RuntimeHandlers = []corev1.NodeRuntimeHandler{{Features: &corev1.NodeRuntimeHandlerFeatures{UserNamespaces: ptr.To(true)}}}
	if err := c.Status().Update(ctx, &b); err != nil {
		t.Fatal(err)
	}
	newImageBuild(t, c, ns, "own")
	if pod := waitPod(t, c, ns, "own-1-1"); pod.Spec.HostUsers == nil || *pod.Spec.HostUsers {
		t.Errorf("hostUsers = %v with every node reporting support, want false", pod.Spec.HostUsers)
	}
}
