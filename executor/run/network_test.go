package run

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests check Spec.Network NetworkNone (RUN --network=none), as BuildKit's
// testRunNoNetwork and testRunGlobalNetwork (frontend/dockerfile/
// dockerfile_runnetwork_test.go) do: a step without a network sees only lo, and cannot
// reach a server the test runs on the host's 127.0.0.1, which a step with the default
// network reaches.

// fooServer listens on the host's 127.0.0.1 and answers "foo" to every connection, as
// BuildKit's echoserver.NewTestServer("foo"); it returns its port and a count of the
// connections it accepted.
func fooServer(t *testing.T) (port string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int64{}
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
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return port, accepted
}

// noNetwork edits a Spec to have no network.
func noNetwork(s *Spec) { s.Network = NetworkNone }

// netReport is the script whose output netChecks reads: the interfaces of the step's
// network namespace (/proc/net/dev is the namespace's), the flags of lo, and what
// connecting to the test's server gives. bb is how the script names busybox.
func netReport(bb, port string) string {
	return fmt.Sprintf(`echo "ifaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
echo "lo: $(%[1]s ip -o link show lo | cut -d'<' -f2 | cut -d'>' -f1)"
echo "nc: $(%[1]s nc -w 5 127.0.0.1 %[2]s </dev/null 2>&1)"
`, bb, port)
}

// checkNoNetwork checks netReport's output for a step with no network.
func checkNoNetwork(t *testing.T, out string) {
	t.Helper()
	got := parseReport(out)
	if got["ifaces"] = strings.TrimSpace(got["ifaces"]); got["ifaces"] != "lo" {
		t.Errorf("the step's interfaces: %q, want lo alone", got["ifaces"])
	}
	if flags := strings.Split(got["lo"], ","); !contains(flags, "UP") {
		t.Errorf("lo's flags: %q, want it UP", got["lo"])
	}
	// Refused, not unreachable: lo is up, and nothing listens in the step's namespace.
	if !strings.Contains(got["nc"], "refused") {
		t.Errorf("connecting to the host's 127.0.0.1 server: %q, want the connection refused", got["nc"])
	}
}

// checkDefaultNetwork checks netReport's output for a step with the default network.
func checkDefaultNetwork(t *testing.T, out string) {
	t.Helper()
	if got := parseReport(out)["nc"]; got != "foo" {
		t.Errorf("connecting to the host's 127.0.0.1 server: %q, want foo", got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestChroot_networkNone(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		port, accepted := fooServer(t)
		script := netReport("busybox", port) + "echo \"sys: $(ls /sys/class/net | tr '\\n' ' ')\"\n"

		stdout, stderr, err := runSh(t, chroot(), root, script, noNetwork)
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		t.Logf("no network:\n%s", stdout)
		checkNoNetwork(t, stdout)
		// The step's sysfs is mounted in its namespace, and shows its interfaces.
		if got := strings.TrimSpace(parseReport(stdout)["sys"]); got != "lo" {
			t.Errorf("/sys/class/net: %q, want lo alone", got)
		}
		if n := accepted.Load(); n != 0 {
			t.Errorf("the server accepted %d connections from the step with no network", n)
		}

		stdout, stderr, err = runSh(t, chroot(), root, script)
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		checkDefaultNetwork(t, stdout)
		if n := accepted.Load(); n != 1 {
			t.Errorf("the server accepted %d connections, want 1 (the step with the default network)", n)
		}
	})
}

// TestChroot_networkNone_capabilities: a root step with a network namespace of its own
// keeps Docker's whole default set, NET_RAW and NET_BIND_SERVICE included even without a
// user namespace, and they work in its namespace (owned by its user namespace where it
// has one, as in a container): it may bind port 81 and open raw and packet sockets. Its
// packet socket sees its own loopback's frames but none of the host's: a datagram the
// test sends to the host's 127.0.0.1 while the step sniffs is not seen.
func TestChroot_networkNone_capabilities(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		withAttack(t, root, "bin/attack", 0o755)
		st := func() map[string]string {
			stdout, stderr, err := runSh(t, chroot(), root, "cat /proc/self/status", noNetwork)
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			m := map[string]string{}
			for _, line := range strings.Split(stdout, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					m[k] = strings.TrimSpace(v)
				}
			}
			return m
		}()
		for _, f := range []string{"CapEff", "CapPrm", "CapBnd"} {
			if got := capMask(t, st, f); got != dockerCapMask {
				t.Errorf("%s = %#x, want Docker's %#x", f, got, uint64(dockerCapMask))
			}
		}

		stdout, stderr, err := runSh(t, chroot(), root, "attack net", noNetwork)
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		for name, got := range parseReport(stdout) {
			if got != "ok" {
				t.Errorf("%s: %q, want ok", name, got)
			}
		}

		marker := strconv.FormatInt(time.Now().UnixNano(), 36)
		conn, err := net.Dial("udp", "127.0.0.1:9")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
					conn.Write([]byte("outside-" + marker))
				}
			}
		}()
		stdout, stderr, err = runSh(t, chroot(), root, "attack sniff "+marker, noNetwork)
		close(stop)
		<-done
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		got := parseReport(stdout)
		t.Logf("sniffing: %v", got)
		if got["inside"] != "true" {
			t.Errorf("the step's packet socket did not see its own datagrams (%q): the test proves nothing", stdout)
		}
		if got["outside"] != "false" {
			t.Errorf("the step's packet socket saw the host's loopback traffic (%q)", stdout)
		}
	})
}

// hostBusybox returns the host's busybox, for InPlace tests.
func hostBusybox(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skipf("no busybox on the host (apt-get install busybox-static): %v", err)
	}
	return bb
}

// inPlaceSh runs script with the host's shell, in place, as runSh does.
func inPlaceSh(t *testing.T, r Runner, script string, edit ...func(*Spec)) (string, string, error) {
	t.Helper()
	sh := hostSh(t)
	return runSh(t, r, "/", script, append([]func(*Spec){func(s *Spec) {
		s.Args[0] = sh
		s.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		s.Dir = "/"
	}}, edit...)...)
}

func TestInPlace_networkNone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bb := hostBusybox(t)
	for _, tc := range []struct {
		name string
		ways []netnsWay
	}{
		// As root on the host the executor may make a network namespace alone.
		{"network namespace", nil},
		// Where it may not (a pod without CAP_SYS_ADMIN), it makes a user namespace too.
		{"user namespace", []netnsWay{netnsInUserNS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &inPlace{netnsWays: tc.ways}
			port, accepted := fooServer(t)
			dir, err := os.MkdirTemp("", "slipway-netns-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			script := netReport(bb, port) + `echo "userns: $(readlink /proc/self/ns/user)"
id -u > ` + dir + `/by-step
`
			stdout, stderr, err := inPlaceSh(t, r, script, noNetwork, func(s *Spec) { s.UID, s.GID = 1234, 1234 })
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			t.Logf("no network:\n%s", stdout)
			checkNoNetwork(t, stdout)
			if n := accepted.Load(); n != 0 {
				t.Errorf("the server accepted %d connections from the step with no network", n)
			}
			ours, err := os.Readlink("/proc/self/ns/user")
			if err != nil {
				t.Fatal(err)
			}
			if got := parseReport(stdout)["userns"]; (got != ours) != (tc.ways != nil) {
				t.Errorf("the step's user namespace is %s, the executor's %s; want another one only when the way makes one", got, ours)
			}
			// The user namespace maps every ID to itself: the step is who it was asked
			// to be, and its files are owned by it on the disk.
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(dir, "by-step"), &st); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "by-step")); strings.TrimSpace(string(b)) != "1234" || st.Uid != 1234 {
				t.Errorf("the step ran as %q and made a file owned by %d, want 1234 for both", b, st.Uid)
			}

			// Root keeps the executor's bounding set (a new user namespace gives every
			// capability unless the stage drops them).
			stdout, stderr, err = inPlaceSh(t, r, "grep -E '^Cap(Eff|Bnd):' /proc/self/status", noNetwork)
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			want, err := boundingSet()
			if err != nil {
				t.Fatal(err)
			}
			status := parseReport(strings.ReplaceAll(stdout, ":\t", ": "))
			for _, f := range []string{"CapEff", "CapBnd"} {
				if got := capMask(t, status, f); got != want {
					t.Errorf("root step's %s = %#x, want the executor's bounding set %#x", f, got, want)
				}
			}

			stdout, stderr, err = inPlaceSh(t, r, netReport(bb, port))
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			checkDefaultNetwork(t, stdout)
			if n := accepted.Load(); n != 1 {
				t.Errorf("the server accepted %d connections, want 1 (the step with the default network)", n)
			}
		})
	}
}

// inPlaceChildEnv selects the child roles of the tests below; the child reads the
// server's port from inPlacePortEnv.
const (
	inPlaceChildEnv = "_SLIPWAY_TEST_NETNS_CHILD"
	inPlacePortEnv  = "_SLIPWAY_TEST_NETNS_PORT"
)

// runChild runs the test binary's test name as a child with sys, in role, and returns its
// output.
func runChild(t *testing.T, name, role, port string, sys *syscall.SysProcAttr) (string, error) {
	t.Helper()
	// A copy anyone may run: an unprivileged child may not enter go test's directories.
	dir, err := os.MkdirTemp("", "slipway-netns-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "run.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), inPlaceChildEnv+"="+role, inPlacePortEnv+"="+port)
	cmd.SysProcAttr = sys
	out, err := cmd.CombinedOutput()
	t.Logf("child (%s):\n%s", role, out)
	return string(out), err
}

// TestInPlace_networkNone_unprivileged: an unprivileged executor (here user 65534, with no
// capability), which may not make a network namespace alone, makes a user namespace
// mapping its own IDs and a network namespace in it.
func TestInPlace_networkNone_unprivileged(t *testing.T) {
	if os.Getenv(inPlaceChildEnv) == "unprivileged" {
		inPlaceUnprivilegedChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to start the child as another user")
	}
	hostBusybox(t)
	port, accepted := fooServer(t)
	_, err := runChild(t, "TestInPlace_networkNone_unprivileged", "unprivileged", port, &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
	})
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the server accepted %d connections, want 1 (the child's step with the default network)", n)
	}
}

func inPlaceUnprivilegedChild(t *testing.T) {
	bb := hostBusybox(t)
	port := os.Getenv(inPlacePortEnv)
	asMe := func(s *Spec) { s.UID, s.GID = uint32(os.Geteuid()), uint32(os.Getegid()) }
	script := netReport(bb, port) + `echo "uidmap: $(cat /proc/self/uid_map | tr -s ' ')"
echo "id: $(id -u)"
`
	stdout, stderr, err := inPlaceSh(t, InPlace(), script, noNetwork, asMe)
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	t.Logf("no network:\n%s", stdout)
	checkNoNetwork(t, stdout)
	got := parseReport(stdout)
	if got["id"] != strconv.Itoa(os.Geteuid()) {
		t.Errorf("the step ran as %q, want %d", got["id"], os.Geteuid())
	}
	if want := fmt.Sprintf(" %d %d 1", os.Geteuid(), os.Geteuid()); got["uidmap"] != want {
		t.Errorf("the step's uid_map %q, want %q", got["uidmap"], want)
	}
	stdout, stderr, err = inPlaceSh(t, InPlace(), netReport(bb, port), asMe)
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	checkDefaultNetwork(t, stdout)
}

// TestInPlace_networkNone_refused: where the kernel refuses every network namespace (the
// child runs in a user namespace whose user.max_net_namespaces is 0, as a host may set
// it; a seccomp profile refusing unshare and clone's namespace flags has the same
// effect), a step with no network fails with an error that says so, and nothing of it
// runs: never with the executor's network.
func TestInPlace_networkNone_refused(t *testing.T) {
	if os.Getenv(inPlaceChildEnv) == "refused" {
		inPlaceRefusedChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to map the child's user namespace")
	}
	hostSh(t)
	port, accepted := fooServer(t)
	all := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
	_, err := runChild(t, "TestInPlace_networkNone_refused", "refused", port, &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: all, GidMappings: all, GidMappingsEnableSetgroups: true,
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
	})
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the server accepted %d connections from the step with no network", n)
	}
}

func inPlaceRefusedChild(t *testing.T) {
	if err := os.WriteFile("/proc/sys/user/max_net_namespaces", []byte("0\n"), 0); err != nil {
		t.Fatalf("forbidding network namespaces in the child's user namespace: %v", err)
	}
	bb := hostBusybox(t)
	marker := filepath.Join(t.TempDir(), "ran")
	_, stderr, err := inPlaceSh(t, InPlace(), "touch "+marker+"\n"+netReport(bb, os.Getenv(inPlacePortEnv)), noNetwork)
	t.Logf("Run: %v", err)
	if err == nil {
		t.Fatalf("Run succeeded, want an error (stderr %q)", stderr)
	}
	for _, want := range []string{"RUN --network=none", "network namespace", unix.ENOSPC.Error()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run: %v; want an error saying %q", err, want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the step ran")
	}
}

// TestChroot_networkNone_refused: where the kernel refuses network namespaces (the child
// runs in a user namespace whose user.max_net_namespaces is 0), a step with no network
// fails with an error that says so, and does not run. That refusal must not be taken for
// a refusal of the user namespace, which would run every later step of the filesystem
// without one: the first step on a fresh filesystem (a tmpfs) is the step with no network,
// and the steps after it still get a user namespace where the host allows them one.
func TestChroot_networkNone_refused(t *testing.T) {
	if os.Getenv(inPlaceChildEnv) == "chroot-refused" {
		chrootRefusedChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to map the child's user namespace")
	}
	newRoot(t) // busybox, or fail here
	port, accepted := fooServer(t)
	all := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
	_, err := runChild(t, "TestChroot_networkNone_refused", "chroot-refused", port, &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: all, GidMappings: all, GidMappingsEnableSetgroups: true,
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
	})
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the server accepted %d connections from the step with no network", n)
	}
}

func chrootRefusedChild(t *testing.T) {
	if err := os.WriteFile("/proc/sys/user/max_net_namespaces", []byte("0\n"), 0); err != nil {
		t.Fatalf("forbidding network namespaces in the child's user namespace: %v", err)
	}
	// Two fresh filesystems, each of which the runner has to find out about.
	var fs [2]string
	for i := range fs {
		fs[i] = t.TempDir()
		if err := unix.Mount("tmpfs", fs[i], "tmpfs", 0, "mode=755"); err != nil {
			t.Fatalf("mounting a tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(fs[i], unix.MNT_DETACH) })
	}
	iso, err := ChrootIsolation(context.Background(), fs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("isolation on a fresh filesystem: %s", iso)
	root := newRootIn(t, fs[1])
	marker := "/tmp/ran"
	_, stderr, err := runSh(t, Chroot(), root, "touch "+marker+"; busybox nc -w 2 127.0.0.1 "+os.Getenv(inPlacePortEnv), noNetwork)
	t.Logf("Run: %v", err)
	if err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("Run: %v (stderr %q); want an error about the network namespace", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(root, marker)); err == nil {
		t.Error("the step ran")
	}
	if got := inUserNamespace(t, Chroot(), root); got != iso.UserNamespace {
		t.Errorf("a later step in a user namespace: %v, want %v as on the other fresh filesystem", got, iso.UserNamespace)
	}
	if !iso.UserNamespace {
		t.Log("steps get no user namespace here at all: this proves less than it could")
	}
}

// TestInPlace_networkNone_seccomp: under Docker's default seccomp profile (as this
// package compiles it; containerd's RuntimeDefault has the same rules) without
// CAP_SYS_ADMIN, which refuses unshare and clone's namespace flags, an in-place step with
// no network fails with an error that says so, and does not run; a step with the default
// network still runs.
func TestInPlace_networkNone_seccomp(t *testing.T) {
	if os.Getenv(inPlaceChildEnv) == "seccomp" {
		inPlaceSeccompChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	hostBusybox(t)
	port, accepted := fooServer(t)
	if _, err := runChild(t, "TestInPlace_networkNone_seccomp", "seccomp", port, nil); err != nil {
		t.Fatalf("child: %v", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the server accepted %d connections, want 1 (the child's step with the default network)", n)
	}
}

func inPlaceSeccompChild(t *testing.T) {
	bb := hostBusybox(t)
	port := os.Getenv(inPlacePortEnv)
	filter, err := defaultFilter()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		t.Fatalf("setting no_new_privs: %v", e)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		t.Fatalf("installing the seccomp filter on every thread: %v", e)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	_, stderr, err := inPlaceSh(t, InPlace(), "touch "+marker+"\n"+netReport(bb, port), noNetwork)
	t.Logf("Run: %v", err)
	if err == nil {
		t.Fatalf("Run succeeded, want an error (stderr %q)", stderr)
	}
	for _, want := range []string{"RUN --network=none", "network namespace", unix.EPERM.Error()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run: %v; want an error saying %q", err, want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the step ran")
	}
	stdout, stderr, err := inPlaceSh(t, InPlace(), netReport(bb, port))
	if err != nil {
		t.Fatalf("Run with the default network: %v (stderr %q)", err, stderr)
	}
	checkDefaultNetwork(t, stdout)
}
