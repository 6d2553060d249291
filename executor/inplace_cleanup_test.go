package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/test/imagetest"
)

// TestExecute_inplaceStepLeavesNothingBehind: in a pod, a RUN step that
// leaves a daemon running and points a registry's name elsewhere in
// /etc/hosts (the kubelet's file, which no snapshot keeps) affects neither
// the next step nor the executor: the daemon is killed when its step ends,
// and /etc/hosts is as before the first step.
func TestExecute_inplaceStepLeavesNothingBehind(t *testing.T) {
	env := newCorpusEnv(t)
	root := makeExecutorRoot(t)
	const hosts = "127.0.0.1\tlocalhost\n"
	if err := os.WriteFile(filepath.Join(root, "etc", "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM " + env.base + "\n" +
		`RUN sh -c 'sleep 1017 >/dev/null 2>&1 & echo "10.0.0.66 ` + env.reg.Host() + `" >> /etc/hosts'` + "\n" +
		`RUN sh -c 'for p in /proc/[0-9]*; do tr "\0" " " < $p/cmdline; echo; done > /procs; cp /etc/hosts /hosts-seen'` + "\n"
	if err := os.Mkdir(filepath.Join(root, "workspace"), 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "workspace", "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := env.reg.Ref("inplace/leftovers:latest")
	out, err := inExecutorRoot(t, root, nil, "--context=dir:///workspace", "--destination="+ref,
		"--insecure-registry="+env.reg.Host(), "--result-file=/slipway/result.json")
	if err != nil {
		t.Fatalf("in-place build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if err := imagetest.Extract(pullImage(t, ref), dir); err != nil {
		t.Fatal(err)
	}
	procs, _ := os.ReadFile(filepath.Join(dir, "procs"))
	if strings.Contains(string(procs), "sleep 1017") || !strings.Contains(string(procs), "/slipway/executor") {
		t.Errorf("the second step saw these processes (want the executor and no sleep 1017):\n%s", procs)
	}
	if seen, _ := os.ReadFile(filepath.Join(dir, "hosts-seen")); string(seen) != hosts {
		t.Errorf("the second step saw /etc/hosts = %q, want %q", seen, hosts)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc", "hosts")); string(got) != hosts {
		t.Errorf("after the build /etc/hosts = %q, want %q", got, hosts)
	}
}
