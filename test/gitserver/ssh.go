package gitserver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSHDBinary is Debian's OpenSSH server.
const SSHDBinary = "/usr/sbin/sshd"

// SSHServer is an sshd process on 127.0.0.1 that accepts one client key for
// the user running the test, so git clients reach repositories by their
// absolute paths (ssh://USER@127.0.0.1:PORT/abs/path/repo.git).
type SSHServer struct {
	// Host is 127.0.0.1:PORT.
	Host string
	// User is the login user (the user running the test).
	User string
	// ClientKey is the authorized client's private key, in OpenSSH PEM form,
	// as a kubernetes.io/ssh-auth secret holds it under "ssh-privatekey".
	ClientKey []byte
	// KnownHosts is a known_hosts line for the server's host key.
	KnownHosts []byte
	// OtherKnownHosts is a known_hosts line naming the same host with
	// another key, to test a changed host key.
	OtherKnownHosts []byte

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartSSH starts Debian's sshd on 127.0.0.1 at a free port with a new host
// key and a new authorized client key, and stops it (by its PID) when the
// test ends. It needs root (sshd switches to the login user).
func StartSSH(t testing.TB) *SSHServer {
	t.Helper()
	if _, err := os.Stat(SSHDBinary); err != nil {
		t.Fatalf("%s: %v: install Debian's openssh-server", SSHDBinary, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// sshd refuses keys in group- or world-writable places.
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keygen := func(name string) {
		t.Helper()
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", filepath.Join(dir, name)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	keygen("host_key")
	keygen("other_host_key")
	keygen("client_key")
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), read("client_key.pub"), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}

	var lastErr error
	for range 3 {
		s, err := startSSHD(dir, u.Username)
		if err == nil {
			t.Cleanup(s.stop)
			s.ClientKey = read("client_key")
			s.KnownHosts = knownHostsLine(s.Host, read("host_key.pub"))
			s.OtherKnownHosts = knownHostsLine(s.Host, read("other_host_key.pub"))
			return s
		}
		lastErr = err
	}
	t.Fatalf("starting sshd: %v", lastErr)
	return nil
}

func knownHostsLine(host string, pub []byte) []byte {
	h, port, _ := net.SplitHostPort(host)
	f := strings.Fields(string(pub))
	return fmt.Appendf(nil, "[%s]:%s %s %s\n", h, port, f[0], f[1])
}

func startSSHD(dir, login string) (*SSHServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	config := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers %s
LogLevel VERBOSE
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), login)
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(SSHDBinary, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &SSHServer{Host: "127.0.0.1:" + strconv.Itoa(port), User: login, dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("sshd exited: %s", bytes.TrimSpace(log))
		default:
		}
		c, err := net.DialTimeout("tcp", s.Host, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("sshd did not listen on %s", s.Host)
}

// stop kills sshd and the sessions it started (its process group), by PID.
func (s *SSHServer) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// URL is the ssh:// URL of the repository at the absolute path repo.
func (s *SSHServer) URL(repo string) string {
	return "ssh://" + s.User + "@" + s.Host + filepath.ToSlash(repo)
}

// Log is sshd's log so far, for failure messages.
func (s *SSHServer) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "sshd.log"))
	return string(b)
}
