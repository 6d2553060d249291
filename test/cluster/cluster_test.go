// Package cluster tests hack/cluster.sh itself: what `up` does when a component dies while the
// cluster starts. The tests bring the local cluster up and take it down, so they run only with
// SLIPWAY_CLUSTER_TEST=1, as root, when the local cluster is not running (hack/e2e.sh runs them
// before its own `up`); the first `up` on a machine builds the Kubernetes binaries (minutes).
package cluster

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clusterSh runs hack/cluster.sh from the repository's root (its default state directory is
// ./_output there) with the extra environment, and returns its combined output and error.
func clusterSh(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "hack", "cluster.sh"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err = cmd.Run()
	return out.String(), err
}

// needDownCluster skips unless the test may bring the local cluster up and take it down, and
// takes it down when the test ends (failing the test if down leaves anything behind).
func needDownCluster(t *testing.T) {
	t.Helper()
	if os.Getenv("SLIPWAY_CLUSTER_TEST") != "1" {
		t.Skip("SLIPWAY_CLUSTER_TEST=1 runs it (root; it brings the local cluster up and down)")
	}
	if os.Geteuid() != 0 {
		t.Skip("hack/cluster.sh needs root")
	}
	out, _ := clusterSh(t, nil, "status")
	if strings.Contains(out, "running (pid") {
		t.Skipf("the local cluster runs; this test would take it down:\n%s", out)
	}
	t.Cleanup(func() {
		if out, err := clusterSh(t, nil, "down"); err != nil {
			t.Errorf("hack/cluster.sh down: %v\n%s", err, out)
		}
		if out, err := clusterSh(t, nil, "status"); err == nil || strings.Contains(out, "running (pid") {
			t.Errorf("the cluster still runs after down:\n%s", out)
		}
	})
}

func wantAll(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the output lacks %q:\n%s", w, out)
		}
	}
}

// kernelSaid: the report always says what the kernel's log holds about the component, or why it
// cannot be read.
var kernelSaid = []string{"kernel line (dmesg) names", "the kernel's lines naming", "the kernel's log is not readable"}

func saysKernel(out string) bool {
	for _, k := range kernelSaid {
		if strings.Contains(out, k) {
			return true
		}
	}
	return false
}

// containerd killed right after its first start (the "cluster.sh: containerd exited"):
// up says how it died, starts it again once, and the cluster comes up.
func TestClusterUp_retriesComponentDeath(t *testing.T) {
	needDownCluster(t)
	out, err := clusterSh(t, []string{"SLIPWAY_CLUSTER_FAULT=containerd:kill:1"}, "up")
	if err != nil {
		t.Fatalf("hack/cluster.sh up with containerd killed once: %v\n%s", err, out)
	}
	wantAll(t, out,
		"containerd died while the cluster was starting:",
		"was killed by SIGKILL (wait status 137)",
		"/cluster/logs/containerd.log", // the end of its log, or that it is empty
		"starting containerd again, once",
		"cluster.sh: up in ")
	if !saysKernel(out) {
		t.Errorf("the report says nothing of the kernel's log:\n%s", out)
	}
	if strings.Contains(out, "giving up") {
		t.Errorf("up gave up after one death:\n%s", out)
	}
	if st, err := clusterSh(t, nil, "status"); err != nil {
		t.Errorf("hack/cluster.sh status after the retry: %v\n%s", err, st)
	}
	// The report is recorded beside the logs.
	root, _ := filepath.Abs("../..")
	state := os.Getenv("SLIPWAY_STATE")
	if state == "" {
		state = filepath.Join(root, "_output")
	}
	died, err := os.ReadFile(filepath.Join(state, "cluster", "logs", "containerd.died"))
	if err != nil {
		t.Fatal(err)
	}
	wantAll(t, string(died), "was killed by SIGKILL")
}

// The scheduler killed after its start and after its retry: up gives up, saying how it died
// the second time.
func TestClusterUp_givesUpAfterSecondDeath(t *testing.T) {
	needDownCluster(t)
	out, err := clusterSh(t, []string{"SLIPWAY_CLUSTER_FAULT=kube-scheduler:kill:2"}, "up")
	if err == nil {
		t.Fatalf("hack/cluster.sh up succeeded with kube-scheduler killed twice:\n%s", out)
	}
	wantAll(t, out,
		"kube-scheduler died while the cluster was starting:",
		"starting kube-scheduler again, once",
		"kube-scheduler died again while the cluster was starting, after one retry; giving up:",
		"up failed: logs in")
	_, second, _ := strings.Cut(out, "giving up:")
	wantAll(t, second, "was killed by SIGKILL (wait status 137)", "/cluster/logs/kube-scheduler.log")
	if !saysKernel(second) {
		t.Errorf("the second report says nothing of the kernel's log:\n%s", second)
	}
	if strings.Contains(out, "cluster.sh: up in ") {
		t.Errorf("up claims success:\n%s", out)
	}
}

// A fault that names no component is refused before anything starts.
func TestClusterUp_badFault(t *testing.T) {
	needDownCluster(t)
	out, err := clusterSh(t, []string{"SLIPWAY_CLUSTER_FAULT=kube-proxy:kill:1"}, "up")
	if err == nil {
		t.Fatalf("up accepted SLIPWAY_CLUSTER_FAULT=kube-proxy:kill:1:\n%s", out)
	}
	wantAll(t, out, "SLIPWAY_CLUSTER_FAULT=kube-proxy:kill:1: want NAME:kill:N")
}
