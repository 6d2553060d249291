package build

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/slipway-dev/slipway/executor/rootfs"
)

// serveInTemp serves kr as an ssh mount at /run/agent.sock of a fresh root.
func serveInTemp(t *testing.T, kr agent.Agent) (*sshServer, string) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := rootfs.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := r.OpenDir("run")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := serveSSH(root, &runMount{agent: kr, mode: 0o600}, d, "agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s, filepath.Join(root, "run", "agent.sock")
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestSSHServer_connectionsClosed follows BuildKit's
// testSSHFileDescriptorsClosed: a step that connects three times, one
// after the other, leaves no connection open behind it (BuildKit checks
// that its upstream agent saw one socket at a time); here, also, stopping
// the server closes what a step's process kept open and every descriptor
// of the server, the socket's included.
func TestSSHServer_connectionsClosed(t *testing.T) {
	kr := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	// The runtime's poller opens its descriptors on first use.
	warm, err := net.Listen("unix", filepath.Join(t.TempDir(), "warm"))
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	before := openFDs(t)
	s, sock := serveInTemp(t, kr)
	for i := range 3 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		if keys, err := agent.NewClient(c).List(); err != nil || len(keys) != 1 {
			t.Fatalf("connection %d: %d keys, %v", i, len(keys), err)
		}
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for s.open() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := s.open(); n != 0 {
			t.Fatalf("after connection %d was closed, the server holds %d", i, n)
		}
	}
	// A connection the step's process never closed.
	kept, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	if _, err := agent.NewClient(kept).List(); err != nil {
		t.Fatal(err)
	}
	s.stop()
	kept.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := kept.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("reading a connection kept open after stop: %v, want EOF", err)
	}
	kept.Close()
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("the socket still accepts connections after stop")
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before serving, %d after stop", before, after)
	}
}

// TestSignOnly: the agent a step reaches lists and signs, and refuses to
// change the keys, to lock, and extensions.
func TestSignOnly(t *testing.T) {
	kr := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	_, sock := serveInTemp(t, kr)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := agent.NewClient(c)
	keys, err := a.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List: %v, %v", keys, err)
	}
	sig, err := a.SignWithFlags(keys[0], []byte("data"), 0)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.ParsePublicKey(keys[0].Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Verify([]byte("data"), sig); err != nil {
		t.Errorf("signature: %v", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for name, err := range map[string]error{
		"Add":       a.Add(agent.AddedKey{PrivateKey: other}),
		"Remove":    a.Remove(pub),
		"RemoveAll": a.RemoveAll(),
		"Lock":      a.Lock([]byte("x")),
		"Unlock":    a.Unlock([]byte("x")),
	} {
		if err == nil {
			t.Errorf("%s was allowed", name)
		}
	}
	if _, err := a.Extension("session-bind@openssh.com", nil); err == nil {
		t.Error("an extension was allowed")
	}
	if keys, err := kr.List(); err != nil || len(keys) != 1 {
		t.Errorf("the keyring holds %d keys (%v) after the attempts, want 1", len(keys), err)
	}
}
