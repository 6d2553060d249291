package build_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
)

// fooServer listens on the host's 127.0.0.1 and answers "foo" to every connection, as
// BuildKit's echoserver.NewTestServer("foo"); it returns its port and a count of the
// connections it accepted.
func fooServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Write([]byte("foo\n"))
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, &accepted
}

// interfaces reads the interface names of a /proc/net/dev.
func interfaces(dev string) []string {
	var names []string
	for _, line := range strings.Split(dev, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	sort.Strings(names)
	return names
}

// TestBuild_runNetwork ports BuildKit's RUN --network tests
// (frontend/dockerfile/dockerfile_runnetwork_test.go) to this executor, whose default
// network is its own (BuildKit's "host"): a server the test runs on 127.0.0.1 is reached
// by default and with --network=host, and not with --network=none, whose step sees only
// lo.
func TestBuild_runNetwork(t *testing.T) {
	f := newFixture(t, nil)
	port, accepted := fooServer(t)
	hostDev, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		dockerfile string
		wantConns  int64
	}{
		{
			// BuildKit's testRunGlobalNetwork (-w 2 for -z: busybox's nc here has no -z).
			name: "testRunGlobalNetwork",
			dockerfile: `FROM {{BASE}}
RUN nc 127.0.0.1 {{PORT}} | grep foo
RUN --network=none ! nc -w 2 127.0.0.1 {{PORT}}
`,
			wantConns: 1,
		},
		{
			// BuildKit's testRunHostNetwork: host is the executor's network.
			name: "testRunHostNetwork",
			dockerfile: `FROM {{BASE}}
RUN --network=host nc 127.0.0.1 {{PORT}} | grep foo
`,
			wantConns: 1,
		},
		{
			// BuildKit's testRunDefaultNetwork.
			name: "testRunDefaultNetwork",
			dockerfile: `FROM {{BASE}}
RUN --network=default nc 127.0.0.1 {{PORT}} | grep foo
`,
			wantConns: 1,
		},
		{
			// BuildKit's testRunNoNetwork, with the interfaces the steps see
			// recorded: lo alone (up: connecting to a port nothing listens on is
			// refused, not unreachable), and the executor's own by default.
			name: "testRunNoNetwork",
			dockerfile: `FROM {{BASE}}
RUN --network=none cat /proc/net/dev > /none && ls /sys/class/net > /sys-none && ip link show lo | grep -q UP && nc -w 2 127.0.0.1 {{PORT}} 2>&1 | grep refused
RUN cat /proc/net/dev > /default
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := accepted.Load()
			img, _ := mustBuild(t, f, strings.ReplaceAll(tc.dockerfile, "{{PORT}}", port), false)
			if got := accepted.Load() - before; got != tc.wantConns {
				t.Errorf("the server accepted %d connections, want %d", got, tc.wantConns)
			}
			if tc.name != "testRunNoNetwork" {
				return
			}
			none, _ := fileContent(t, img, "none")
			if diff := cmp.Diff([]string{"lo"}, interfaces(none)); diff != "" {
				t.Errorf("interfaces of the --network=none step (-want +got):\n%s", diff)
			}
			if got, _ := fileContent(t, img, "sys-none"); got != "lo\n" {
				t.Errorf("/sys/class/net of the --network=none step: %q, want lo alone", got)
			}
			def, _ := fileContent(t, img, "default")
			if diff := cmp.Diff(interfaces(string(hostDev)), interfaces(def)); diff != "" {
				t.Errorf("interfaces of the default step, against the executor's (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBuild_runNetworkCacheKey: the network is in a RUN's cache key only when it is not
// the default, so the keys of steps without --network stay those older executors made:
// default and host (the same network here) hit what a plain RUN stored, none does not,
// and none hits what none stored.
func TestBuild_runNetworkCacheKey(t *testing.T) {
	f := newFixture(t, nil)
	const run = "FROM {{BASE}}\nRUN %s echo hello > /out\n"
	mustBuild(t, f, strings.ReplaceAll(run, "%s", ""), true)
	for _, tc := range []struct {
		flag string
		want counts
	}{
		{"--network=default", counts{1, 0}},
		{"--network=host", counts{1, 0}},
		{"--network=none", counts{0, 1}},
		{"--network=none", counts{1, 0}},
		{"", counts{1, 0}},
	} {
		_, rep := mustBuild(t, f, strings.ReplaceAll(run, "%s", tc.flag), true)
		if diff := cmp.Diff(tc.want, cacheCounts(rep)); diff != "" {
			t.Errorf("RUN %s: cache counts (-want +got):\n%s", tc.flag, diff)
		}
	}
}

// networkChildEnv selects the child role of TestBuild_runNetworkNoneRefused.
const networkChildEnv = "_SLIPWAY_TEST_NETWORK_CHILD"

// TestBuild_runNetworkNoneRefused: where the kernel refuses the step a network namespace
// (the build runs in a user namespace whose user.max_net_namespaces is 0), a RUN
// --network=none fails the build with an error naming the step and its line, and the
// step does not run with the executor's network instead.
func TestBuild_runNetworkNoneRefused(t *testing.T) {
	if os.Getenv(networkChildEnv) != "" {
		networkRefusedChild(t, os.Getenv(networkChildEnv))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to map the child's user namespace")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("finding busybox (apt-get install busybox-static): %v", err)
	}
	port, accepted := fooServer(t)
	// The test binary and a context holding busybox, where the child may read them.
	dir, err := os.MkdirTemp("", "slipway-network-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for src, dst := range map[string]string{os.Args[0]: "build.test", bb: "ctx/busybox"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, dst)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeContext(t, filepath.Join(dir, "ctx"), map[string]string{"Dockerfile": "FROM scratch\n" +
		"COPY busybox /bin/busybox\n" +
		"RUN [\"/bin/busybox\", \"true\"]\n" +
		"RUN --network=none [\"/bin/busybox\", \"nc\", \"127.0.0.1\", \"" + port + "\"]\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "build.test"), "-test.run=^TestBuild_runNetworkNoneRefused$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), networkChildEnv+"="+filepath.Join(dir, "ctx"))
	all := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: all, GidMappings: all, GidMappingsEnableSetgroups: true,
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Errorf("child: %v", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the server accepted %d connections from the step with no network", n)
	}
}

// networkRefusedChild builds the context in ctxDir with network namespaces forbidden.
func networkRefusedChild(t *testing.T, ctxDir string) {
	if err := os.WriteFile("/proc/sys/user/max_net_namespaces", []byte("0\n"), 0); err != nil {
		t.Fatalf("forbidding network namespaces in the child's user namespace: %v", err)
	}
	bc, err := source.Open(ctxDir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(ctxDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	_, _, err = build.Build(t.Context(), build.Options{
		Dockerfile: df, DockerfilePath: "Dockerfile", Context: bc,
		Isolation: build.Chroot, WorkDir: t.TempDir(), Log: &log,
	})
	t.Logf("build log:\n%s", log.String())
	t.Logf("Build: %v", err)
	be, ok := err.(*build.Error)
	if !ok {
		t.Fatalf("Build: %v, want a *build.Error", err)
	}
	if be.Reason != result.ReasonRunFailed || be.Line != 4 || !strings.Contains(be.Instruction, "RUN --network=none") {
		t.Errorf("Build: reason %s, line %d, instruction %q; want RunFailed, line 4, the RUN --network=none step", be.Reason, be.Line, be.Instruction)
	}
	for _, want := range []string{"network namespace", "no network"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Build: %v; want an error saying %q", err, want)
		}
	}
}
