package run

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChroot_hostname: a step with Spec.Hostname has that name in its UTS namespace
// (uname -n, and $HOSTNAME, which the shell takes from it) and in its /etc/hosts, on
// 127.0.0.1 after the host's entries, as BuildKit's sandbox hostname (executor/oci's
// hosts file); the host's name and /etc/hosts, and the root, are left as they were. A step
// without one has the host's name and the host's /etc/hosts.
func TestChroot_hostname(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		// With the mount points Run would otherwise make and leave: only the step's
		// own files may change the root.
		root := newRoot(t, "proc/", "dev/", "sys/")
		hostName, err := os.Hostname()
		if err != nil {
			t.Fatal(err)
		}
		hostHosts, err := os.ReadFile("/etc/hosts")
		if err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, root)
		const script = "uname -n; echo \"$HOSTNAME\"; cat /etc/hosts"
		stdout, stderr, err := runSh(t, chroot(), root, script, func(s *Spec) { s.Hostname = "foo.example" })
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		want := "foo.example\nfoo.example\n" + strings.TrimRight(string(hostHosts), "\n") + "\n127.0.0.1\tfoo.example\n"
		if stdout != want {
			t.Errorf("the step saw\n%s\nwant\n%s", stdout, want)
		}
		if got, _ := os.Hostname(); got != hostName {
			t.Errorf("the host's name became %q", got)
		}
		if got, _ := os.ReadFile("/etc/hosts"); string(got) != string(hostHosts) {
			t.Errorf("the host's /etc/hosts became %q", got)
		}
		if after := snapshot(t, root); len(after) != len(before) {
			t.Errorf("the root has %d entries after the step, %d before", len(after), len(before))
		}

		stdout, stderr, err = runSh(t, chroot(), root, script)
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		if want := hostName + "\n" + hostName + "\n" + string(hostHosts); stdout != want {
			t.Errorf("without a hostname the step saw\n%s\nwant\n%s", stdout, want)
		}
	})
}

// A hostname the kernel would refuse (more than 64 bytes), or with whitespace or control
// characters that would add lines to the step's /etc/hosts, is refused before anything
// runs, by both runners; the in-place runner refuses every hostname, since its steps share
// the pod's UTS namespace.
func TestRun_hostnameRefused(t *testing.T) {
	root := newRoot(t)
	for _, h := range []string{strings.Repeat("a", 65), "a b", "foo\n10.0.0.1\tregistry.example.com", "tab\t", "nul\x00"} {
		_, _, err := runSh(t, Chroot(), root, "touch /tmp/ran", func(s *Spec) { s.Hostname = h })
		if err == nil || !strings.Contains(err.Error(), "checking hostname") {
			t.Errorf("hostname %q: %v, want it refused", h, err)
		}
		if _, err := os.Stat(filepath.Join(root, "tmp", "ran")); err == nil {
			t.Fatalf("hostname %q: the command ran", h)
		}
	}

	marker := filepath.Join(t.TempDir(), "ran")
	err := InPlace().Run(context.Background(), Spec{Root: "/", Args: []string{"/bin/sh", "-c", "touch " + marker}, Hostname: "foo"})
	if err == nil || !strings.Contains(err.Error(), "--isolation=chroot") {
		t.Errorf("in place with a hostname: %v, want it refused, naming --isolation=chroot", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("in place with a hostname: the command ran")
	}
}
