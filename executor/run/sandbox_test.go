package run

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests play a hostile RUN step: each tries one way out of the chroot runner's
// sandbox and asserts that it fails.

// dockerCapMask is CapEff of a root process in a default docker run, as Docker users know
// it: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const dockerCapMask = 0x00000000a80425fb

var attackBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// attack returns the path of testdata/attack, built static (it runs in a root with no
// libc).
func attack(t *testing.T) string {
	t.Helper()
	attackBin.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		attackBin.dir, attackBin.err = os.MkdirTemp("", "slipway-attack-")
		if attackBin.err != nil {
			return
		}
		attackBin.path = filepath.Join(attackBin.dir, "attack")
		cmd := exec.Command(gobin, "build", "-o", attackBin.path, "./testdata/attack")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			attackBin.err = errors.New(string(out) + err.Error())
		}
	})
	if attackBin.err != nil {
		t.Fatalf("building testdata/attack: %v", attackBin.err)
	}
	return attackBin.path
}

// withAttack copies the attack program into root as name, with mode (permission bits
// as chmod(2) takes them, setuid included).
func withAttack(t *testing.T, root string, name string, mode uint32) {
	t.Helper()
	data, err := os.ReadFile(attack(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// hostSecret makes a directory outside any root, holding a file "secret", and returns
// the directory.
func hostSecret(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "host-only")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// eachSandbox runs f as subtests for the runner in a user namespace (the default, where
// the host allows it) and without one; chroot makes the runner, with more options.
func eachSandbox(t *testing.T, f func(t *testing.T, chroot func(...ChrootOption) Runner)) {
	for _, sb := range []struct {
		name string
		opts []ChrootOption
	}{
		{"default", nil},
		{"without userns", []ChrootOption{WithoutUserNamespace()}},
	} {
		t.Run(sb.name, func(t *testing.T) {
			f(t, func(more ...ChrootOption) Runner {
				return Chroot(append(append([]ChrootOption(nil), sb.opts...), more...)...)
			})
		})
	}
}

func TestChroot_hostRootThroughProc(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		for _, via := range []string{"/proc/1/root", "/proc/1/cwd", "/proc/self/root", "/proc/$$/root", "/proc/1/root/.."} {
			t.Run(via, func(t *testing.T) {
				host := hostSecret(t)
				script := `cat ` + via + host + `/secret; echo pwned > ` + via + host + `/pwned; true`
				stdout, stderr, err := runSh(t, chroot(), root, script)
				if err != nil {
					t.Fatalf("Run: %v (stderr %q)", err, stderr)
				}
				if strings.Contains(stdout, "host secret") {
					t.Errorf("the step read a host file through %s", via)
				}
				if _, err := os.Stat(filepath.Join(host, "pwned")); err == nil {
					t.Errorf("the step wrote a host file through %s", via)
				}
			})
		}
	})
}

func TestChroot_chrootEscape(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		withAttack(t, root, "bin/attack", 0o755)
		host := hostSecret(t)
		t.Run("chroot into /proc/1/root", func(t *testing.T) {
			// Runs cat from whatever root /proc/1/root is: the host's, before.
			stdout, _, _ := runSh(t, chroot(), root, "chroot /proc/1/root cat "+host+"/secret")
			if strings.Contains(stdout, "host secret") {
				t.Errorf("the step ran a program in the host's root: %q", stdout)
			}
		})
		t.Run("chroot and climb", func(t *testing.T) {
			stdout, stderr, err := runSh(t, chroot(), root, "attack chroot-escape "+host+"/secret")
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if strings.Contains(stdout, "host secret") {
				t.Errorf("the step climbed out of its root: %q", stdout)
			}
			if !strings.HasPrefix(stdout, "read: ") {
				t.Errorf("output %q; want the attempt to get as far as reading (and fail)", stdout)
			}
		})
	})
}

// procStatus returns the fields of /proc/self/status as the command sees them.
func procStatus(t *testing.T, r Runner, root string, uid uint32) map[string]string {
	t.Helper()
	stdout, stderr, err := runSh(t, r, root, "cat /proc/self/status", func(s *Spec) { s.UID, s.GID = uid, uid })
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
}

func capMask(t *testing.T, status map[string]string, field string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(status[field], 16, 64)
	if err != nil {
		t.Fatalf("parsing %s %q: %v", field, status[field], err)
	}
	return n
}

func TestChroot_capabilities(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		if got := defaultCapMask(); got != dockerCapMask {
			t.Errorf("defaultCapMask() = %#x, want Docker's %#x", got, dockerCapMask)
		}
		root := newRoot(t)
		want := uint64(dockerCapMask)
		if !inUserNamespace(t, chroot(), root) {
			// The host's network namespace, with no user namespace: see Chroot.
			want &^= 1<<unix.CAP_NET_RAW | 1<<unix.CAP_NET_BIND_SERVICE
		}
		for _, tc := range []struct {
			name               string
			uid                uint32
			eff, prm, bnd, inh uint64
			amb                uint64
		}{
			// As docker run shows them, for root and for --user 1000.
			{"root", 0, want, want, want, 0, 0},
			{"user", 1000, 0, 0, want, 0, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st := procStatus(t, chroot(), root, tc.uid)
				for _, f := range []struct {
					field string
					want  uint64
				}{
					{"CapEff", tc.eff}, {"CapPrm", tc.prm}, {"CapBnd", tc.bnd}, {"CapInh", tc.inh}, {"CapAmb", tc.amb},
				} {
					if got := capMask(t, st, f.field); got != f.want {
						t.Errorf("%s = %#x, want %#x", f.field, got, f.want)
					}
				}
			})
		}
	})
}

func TestChroot_seccomp(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		withAttack(t, root, "bin/attack", 0o755)
		if st := procStatus(t, chroot(), root, 0); st["Seccomp"] != "2" {
			t.Errorf("Seccomp = %q, want 2 (filter)", st["Seccomp"])
		}
		stdout, stderr, err := runSh(t, chroot(), root, "attack syscalls")
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok {
				got[k] = v
			}
		}
		eperm := unix.EPERM.Error()
		for name, want := range map[string]string{
			"keyctl":       eperm, // not in the profile at all
			"unshare":      eperm, // needs CAP_SYS_ADMIN in the profile
			"mount":        eperm,
			"personality":  eperm, // only five personalities are allowed
			"socket-vsock": eperm, // AF_VSOCK is refused
			"clone-newuts": eperm, // clone with namespace flags is refused
			"clone3":       unix.ENOSYS.Error(),
			"fork":         "ok", // but a plain clone is allowed
			// TIOCSTI and TIOCLINUX are refused, whatever the high bits (the kernel
			// takes the request as an unsigned int); other ioctls are not.
			"ioctl-tcgets":           "ok",
			"ioctl-tiocsti":          eperm,
			"ioctl-tiocsti-highbits": eperm,
		} {
			if got[name] != want {
				t.Errorf("%s: %q, want %q", name, got[name], want)
			}
		}
	})
}

func TestChroot_noNewPrivs(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		withAttack(t, root, "bin/whoami-suid", 0o4755)
		for _, tc := range []struct {
			name     string
			opts     []ChrootOption
			nnp      string
			setuidTo string
		}{
			// BuildKit's default: setuid works (sudo in a RUN under a non-root USER).
			{"default", nil, "0", "uid 1000 euid 0\n"},
			{"WithNoNewPrivileges", []ChrootOption{WithNoNewPrivileges()}, "1", "uid 1000 euid 1000\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := chroot(tc.opts...)
				if st := procStatus(t, r, root, 1000); st["NoNewPrivs"] != tc.nnp {
					t.Errorf("NoNewPrivs = %q, want %s", st["NoNewPrivs"], tc.nnp)
				}
				stdout, stderr, err := runSh(t, r, root, "whoami-suid whoami", func(s *Spec) { s.UID, s.GID = 1000, 1000 })
				if err != nil {
					t.Fatalf("Run: %v (stderr %q)", err, stderr)
				}
				if stdout != tc.setuidTo {
					t.Errorf("setuid program: %q, want %q", stdout, tc.setuidTo)
				}
			})
		}
	})
}

func TestChroot_deviceNodes(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		// As a base layer could have them: the kernel log and a copy of /dev/null, outside
		// /dev.
		for name, dev := range map[string]uint64{"kmsg": unix.Mkdev(1, 11), "null2": unix.Mkdev(1, 3)} {
			if err := unix.Mknod(filepath.Join(root, name), unix.S_IFCHR|0o666, int(dev)); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct{ name, script string }{
			{"planted kmsg", "head -c 1 /kmsg"},
			{"planted null", "echo x > /null2"},
			// CAP_MKNOD is Docker's: the node may be made (outside a user namespace), but
			// must not open.
			{"made in /tmp", "mknod /tmp/n c 1 3 && echo x > /tmp/n"},
			{"made in /dev", "mknod /dev/n c 1 3 && echo x > /dev/n"},
			{"made in /dev/shm", "mknod /dev/shm/n c 1 3 && echo x > /dev/shm/n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := runSh(t, chroot(), root, tc.script)
				if err == nil {
					t.Errorf("the step opened a device node: %s", tc.script)
				}
			})
		}
		t.Run("the standard ones work", func(t *testing.T) {
			if _, stderr, err := runSh(t, chroot(), root, "echo x > /dev/null && head -c 1 /dev/zero >/dev/null && head -c 1 /dev/urandom > /dev/null"); err != nil {
				t.Errorf("Run: %v (stderr %q)", err, stderr)
			}
		})
	})
}

func TestChroot_procSysReadOnly(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		// domainname belongs to the step's own UTS namespace, so a write that got through
		// would harm nothing; kernel.core_pattern, which is the host's, goes the same way.
		_, _, err := runSh(t, chroot(), root, "echo slipway > /proc/sys/kernel/domainname")
		if err == nil {
			t.Error("the step wrote to /proc/sys")
		}
		stdout, _, _ := runSh(t, chroot(), root, "cat /proc/keys | wc -c")
		if stdout != "0\n" {
			t.Errorf("/proc/keys: %q bytes, want it masked", stdout)
		}
	})
}

func TestChroot_cleanupSymlinkSwap(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		// The root has no /etc: Run makes /etc, /etc/hosts and /etc/resolv.conf, and removes
		// them after the step. The step moves that /etc away and puts a symlink to a host
		// directory in its place, whose empty files look just like the mount points.
		root := newRoot(t)
		victim := filepath.Join(t.TempDir(), "victim")
		if err := os.Mkdir(victim, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"hosts", "resolv.conf"} {
			if err := os.WriteFile(filepath.Join(victim, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
		if err := os.Chtimes(victim, old, old); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := runSh(t, chroot(), root, "mv /etc /etc.old && ln -s "+victim+" /etc"); err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		for _, f := range []string{"hosts", "resolv.conf"} {
			if _, err := os.Stat(filepath.Join(victim, f)); err != nil {
				t.Errorf("the cleanup removed the host's %s: %v", f, err)
			}
		}
		if fi, err := os.Stat(victim); err != nil || !fi.ModTime().Equal(old) {
			t.Errorf("the cleanup touched the host directory: %v, %v", fi.ModTime(), err)
		}
		// What the step did stays; the mount points made in the /etc it moved are gone.
		if l, err := os.Readlink(filepath.Join(root, "etc")); err != nil || l != victim {
			t.Errorf("/etc in the root: %q, %v; want the step's symlink", l, err)
		}
		ents, err := os.ReadDir(filepath.Join(root, "etc.old"))
		if err != nil || len(ents) != 0 {
			t.Errorf("/etc.old in the root: %v, %v; want it empty", ents, err)
		}
	})
}

func TestChroot_normalRun(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		// What a package manager does: chown, a setuid program, writes in /tmp, id.
		root := newRoot(t, "etc/passwd", "var/lib/pkg/")
		if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/bin/false\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		withAttack(t, root, "bin/attack", 0o755)
		withAttack(t, root, "bin/whoami-suid", 0o4755)
		script := `set -e
	touch /var/lib/pkg/f && chown 42:65534 /var/lib/pkg/f && chmod 4755 /var/lib/pkg/f
	stat -c '%u:%g %a' /var/lib/pkg/f
	mkdir /tmp/work && echo data > /tmp/work/out && cat /tmp/work/out
	id -u
	`
		stdout, stderr, err := runSh(t, chroot(), root, script)
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		if want := "42:65534 4755\ndata\n0\n"; stdout != want {
			t.Errorf("stdout %q, want %q", stdout, want)
		}
		// On disk, as in the image: the IDs the step set, whatever the user namespace.
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, "var/lib/pkg/f"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 42 || st.Gid != 65534 || st.Mode&0o7777 != 0o4755 {
			t.Errorf("on disk: %d:%d %o, want 42:65534 4755", st.Uid, st.Gid, st.Mode&0o7777)
		}
		if err := unix.Stat(filepath.Join(root, "tmp/work/out"), &st); err != nil || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("on disk, a file root made: %d:%d, %v; want 0:0", st.Uid, st.Gid, err)
		}
		stdout, stderr, err = runSh(t, chroot(), root, "whoami-suid whoami; id -u", func(s *Spec) { s.UID, s.GID = 1000, 1000 })
		if err != nil {
			t.Fatalf("Run as 1000: %v (stderr %q)", err, stderr)
		}
		if want := "uid 1000 euid 0\n1000\n"; stdout != want {
			t.Errorf("as 1000: %q, want %q", stdout, want)
		}
	})
}

func TestChroot_userNamespace(t *testing.T) {
	root := newRoot(t)
	iso, err := ChrootIsolation(context.Background(), filepath.Dir(root))
	if err != nil {
		t.Fatalf("ChrootIsolation: %v", err)
	}
	t.Logf("chroot isolation: %v", iso)
	stdout, stderr, err := runSh(t, Chroot(), root, "cat /proc/self/uid_map /proc/self/gid_map")
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	mapped := strings.Fields(stdout)
	if !iso.UserNamespace {
		// Not this kernel or filesystem: say so, and check the fallback is the host's.
		if len(mapped) != 6 || mapped[1] != "0" {
			t.Errorf("without a user namespace, uid_map and gid_map: %q", stdout)
		}
		t.Skipf("no user namespace here: %v", iso)
	}
	want := []string{"0", strconv.Itoa(int(defaultUserNamespace.HostID)), strconv.Itoa(int(defaultUserNamespace.Size))}
	if len(mapped) != 6 || strings.Join(mapped[:3], " ") != strings.Join(want, " ") || strings.Join(mapped[3:], " ") != strings.Join(want, " ") {
		t.Errorf("uid_map and gid_map: %q, want %q twice", stdout, want)
	}
	if iso.String() != "user namespace on (0→2147418112:65536)" {
		t.Errorf("Isolation.String() = %q", iso.String())
	}
	t.Run("WithoutUserNamespace", func(t *testing.T) {
		stdout, _, err := runSh(t, Chroot(WithoutUserNamespace()), root, "cat /proc/self/uid_map")
		if err != nil || strings.Join(strings.Fields(stdout), " ") != "0 0 4294967295" {
			t.Errorf("uid_map: %q, %v; want the host's", stdout, err)
		}
	})
	t.Run("ID outside the range", func(t *testing.T) {
		_, _, err := runSh(t, Chroot(), root, "true", func(s *Spec) { s.UID = 70000 })
		if err == nil || !strings.Contains(err.Error(), "70000") {
			t.Errorf("Run as 70000: %v, want an error naming the ID", err)
		}
	})
}

// attackReport runs attack with args in root and returns its report, by attempt.
func attackReport(t *testing.T, r Runner, root string, args ...string) map[string]string {
	t.Helper()
	stdout, stderr, err := runSh(t, r, root, "attack "+strings.Join(args, " "))
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	return parseReport(stdout)
}

// parseReport reads the attack program's "name: result" lines.
func parseReport(out string) map[string]string {
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ": "); ok {
			got[k] = v
		}
	}
	return got
}

// ttyChildEnv selects the child role of TestChroot_ttyInjection.
const ttyChildEnv = "_SLIPWAY_TEST_TTY_CHILD"

// TestChroot_ttyInjection: a step must not type into the terminal of whoever started the
// executor (TIOCSTI, as in bubblewrap's CVE-2017-5226). The test re-runs itself as a
// session leader whose controlling terminal is a pty, as a user's shell would start the
// executor; that child runs the attack in each sandbox, its output once to a pipe and
// once to the terminal itself, then reads its terminal for two seconds, as the shell
// would after the build. The parent, at the pty's other end, checks what was typed.
func TestChroot_ttyInjection(t *testing.T) {
	if os.Getenv(ttyChildEnv) == "1" {
		ttyInjectionChild(t)
		return
	}
	root := newRoot(t) // skips unless root
	_ = root
	attack(t) // build it here, not under the child's timer

	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	ptm := os.NewFile(uintptr(master), "ptmx")
	defer ptm.Close()
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(master, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChroot_ttyInjection$", "-test.v")
	cmd.Env = append(os.Environ(), ttyChildEnv+"=1", "SLIPWAY_ATTACK_BIN="+attackBin.path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		pts.Close()
		t.Fatal(err)
	}
	pts.Close()
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			out.Write(buf[:n])
			if err != nil { // EIO once the child and all it started are gone
				return
			}
		}
	}()
	waitErr := cmd.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("the pty stayed open after the child exited")
	}
	got := out.String()
	t.Logf("the child's terminal:\n%s", got)
	if waitErr != nil {
		t.Errorf("child: %v", waitErr)
	}
	// Typed input is echoed: it shows whether or not anything read it.
	if strings.Contains(got, "echo PWNED") {
		t.Error("a step typed into the terminal of the executor's caller")
	}
	if !strings.Contains(got, "terminal read: ") {
		t.Error("the child did not get as far as reading its terminal")
	}
}

// ttyInjectionChild is the child role of TestChroot_ttyInjection: its stdin, stdout and
// stderr are its controlling terminal.
func ttyInjectionChild(t *testing.T) {
	attackBin.once.Do(func() { attackBin.path = os.Getenv("SLIPWAY_ATTACK_BIN") })
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		withAttack(t, root, "bin/attack", 0o755)
		for _, toTTY := range []bool{false, true} {
			var stdout strings.Builder
			s := Spec{Root: root, Args: []string{"attack", "tty"}, Env: []string{"PATH=/bin"}, Stdout: &stdout, Stderr: os.Stderr}
			if toTTY {
				s.Stdout = os.Stdout
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := chroot().Run(ctx, s)
			cancel()
			if err != nil {
				t.Errorf("Run (output to the terminal %v): %v", toTTY, err)
			}
			fmt.Print(stdout.String())
			// No controlling terminal: /dev/tty opens nothing.
			if got := parseReport(stdout.String())["open-tty"]; !toTTY && got != unix.ENXIO.Error() {
				t.Errorf("open /dev/tty: %q, want %q", got, unix.ENXIO.Error())
			}
		}
	})
	// As the caller's shell would, once the executor is done.
	if err := unix.SetNonblock(0, true); err != nil {
		t.Fatal(err)
	}
	var read []byte
	buf := make([]byte, 256)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		n, err := unix.Read(0, buf)
		if n > 0 {
			read = append(read, buf[:n]...)
		}
		if err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Printf("terminal read: %q\n", read)
	if len(read) > 0 {
		t.Errorf("the terminal had input nobody typed: %q", read)
	}
}

// inUserNamespace reports whether the steps r runs get a user namespace of their own.
func inUserNamespace(t *testing.T, r Runner, root string) bool {
	t.Helper()
	stdout, stderr, err := runSh(t, r, root, "cat /proc/self/uid_map")
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	return strings.Join(strings.Fields(stdout), " ") != "0 0 4294967295"
}

// TestChroot_hostNetwork: a step shares the host's network namespace, so it must not
// sniff its traffic (a packet socket sees every frame, loopback included: credentials
// sent to 127.0.0.1) or take its privileged ports.
func TestChroot_hostNetwork(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		withAttack(t, root, "bin/attack", 0o755)
		got := attackReport(t, chroot(), root, "net")
		eperm := unix.EPERM.Error()
		for name, want := range map[string]string{
			"socket-packet": eperm,
			"socket-raw":    eperm,
		} {
			if got[name] != want {
				t.Errorf("%s: %q, want %q", name, got[name], want)
			}
		}
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
		if err == nil && strings.TrimSpace(string(b)) != "0" {
			if got["bind-81"] != unix.EACCES.Error() {
				t.Errorf("bind-81: %q, want %q", got["bind-81"], unix.EACCES.Error())
			}
		} else {
			t.Logf("every port is unprivileged here (%v): bind-81: %s", err, got["bind-81"])
		}
	})
}

// TestChroot_procSelfExe: a command path that leads through /proc/self/exe names, when
// the init stage execs it, the host's executor binary (CVE-2019-5736's way in). The image
// ships a regular file at /proc/self/exe so that the lookup in the root passes.
func TestChroot_procSelfExe(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t, "proc/self/")
		if err := os.WriteFile(filepath.Join(root, "proc/self/exe"), []byte("#!/bin/sh\necho image\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/proc/self/exe", filepath.Join(root, "bin/evil")); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"evil", "/bin/evil", "/proc/self/exe", "/proc/1/../self/exe"} {
			t.Run(name, func(t *testing.T) {
				var stdout, stderr strings.Builder
				// The host binary is this test binary: made to list its tests, it says so.
				err := chroot().Run(context.Background(), Spec{
					Root: root, Args: []string{name, "-test.list=."}, Env: []string{"PATH=/bin"},
					Stdout: &stdout, Stderr: &stderr,
				})
				if strings.Contains(stdout.String(), "TestChroot") {
					t.Fatalf("the step ran the host's binary: %q", stdout.String())
				}
				t.Logf("Run: %v", err)
				if err == nil || !strings.Contains(err.Error(), name) {
					t.Errorf("Run: %v (stdout %q); want an error naming %s", err, stdout.String(), name)
				}
			})
		}
	})
}

// TestChroot_sysFallbackReadOnly: where sysfs cannot be mounted (forced here) the step
// gets a recursive bind of the host's /sys, which must be read-only all the way down: a
// writable cgroup mount beneath it would let a root step make cgroups on the host, or
// move processes between them.
func TestChroot_sysFallbackReadOnly(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		root := newRoot(t)
		r := chroot(withSysBind())
		stdout, stderr, err := runSh(t, r, root, "cat /proc/self/mountinfo")
		if err != nil {
			t.Fatalf("Run: %v (stderr %q)", err, stderr)
		}
		subs := 0
		for _, line := range strings.Split(stdout, "\n") {
			f := strings.Fields(line)
			if len(f) < 6 || (f[4] != "/sys" && !strings.HasPrefix(f[4], "/sys/")) {
				continue
			}
			if f[4] != "/sys" {
				subs++
			}
			if opts := strings.Split(f[5], ","); opts[0] != "ro" {
				t.Errorf("%s is mounted %s, want ro", f[4], f[5])
			}
		}
		t.Logf("%d mounts under /sys", subs)
		// Make a cgroup on the host, if a cgroup hierarchy is mounted.
		var mounts []string
		if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) > 8 && strings.HasPrefix(f[4], "/sys/") && strings.HasPrefix(f[len(f)-3], "cgroup") {
					mounts = append(mounts, f[4])
				}
			}
		}
		for _, m := range mounts {
			dir := filepath.Join(m, "slipway-attack-"+strconv.Itoa(os.Getpid()))
			_, _, err := runSh(t, r, root, "mkdir "+dir)
			if err == nil {
				t.Errorf("the step made a cgroup on the host: %s", dir)
			}
			os.Remove(dir)
		}
	})
}

// withSysBind makes the runner bind the host's /sys, as where sysfs cannot be mounted.
func withSysBind() ChrootOption {
	return func(r *chrootRunner) { r.sysBind = true }
}
