package build

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
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

// TestServeAgent_onlyListsAndSigns: the agent a step reaches lists its
// keys and signs (RSA with SHA-2 too, as OpenSSH asks), and refuses to add
// or remove keys, to lock, and extensions; the keyring is unchanged after.
func TestServeAgent_onlyListsAndSigns(t *testing.T) {
	kr := agent.NewKeyring()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, k := range []any{rsaKey, edKey} {
		if err := kr.Add(agent.AddedKey{PrivateKey: k, Comment: "test key"}); err != nil {
			t.Fatal(err)
		}
	}
	_, sock := serveInTemp(t, kr)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := agent.NewClient(c)
	keys, err := a.List()
	if err != nil || len(keys) != 2 {
		t.Fatalf("List: %v, %v", keys, err)
	}
	for _, k := range keys {
		if k.Comment != "test key" {
			t.Errorf("key %s: comment %q", k.Format, k.Comment)
		}
		pub, err := ssh.ParsePublicKey(k.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		flags := []agent.SignatureFlags{0}
		if k.Format == ssh.KeyAlgoRSA {
			flags = append(flags, agent.SignatureFlagRsaSha256, agent.SignatureFlagRsaSha512)
		}
		for _, f := range flags {
			sig, err := a.SignWithFlags(k, []byte("data"), f)
			if err != nil {
				t.Fatalf("signing with %s, flags %d: %v", k.Format, f, err)
			}
			if err := pub.Verify([]byte("data"), sig); err != nil {
				t.Errorf("%s signature (%s): %v", k.Format, sig.Format, err)
			}
		}
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	if _, err := a.Sign(otherSigner.PublicKey(), []byte("data")); err == nil {
		t.Error("the agent signed with a key it does not hold")
	}
	refusals := []struct {
		name string
		err  error
	}{
		{"Add", a.Add(agent.AddedKey{PrivateKey: other})},
		{"Remove", a.Remove(keys[0])},
		{"RemoveAll", a.RemoveAll()},
		{"Lock", a.Lock([]byte("x"))},
	}
	for _, r := range refusals {
		if r.err == nil {
			t.Errorf("%s was allowed", r.name)
		}
	}
	if _, err := a.Extension("session-bind@openssh.com", nil); err == nil {
		t.Error("an extension was allowed")
	}
	if keys, err := a.List(); err != nil || len(keys) != 2 {
		t.Errorf("the agent lists %d keys (%v) after the attempts, want 2", len(keys), err)
	}
	if keys, err := kr.List(); err != nil || len(keys) != 2 {
		t.Errorf("the keyring holds %d keys (%v) after the attempts, want 2", len(keys), err)
	}
}

// TestServeAgent_badFrames: a frame of no bytes or past the bound ends the
// connection; a malformed request gets a failure and the connection goes on.
func TestServeAgent_badFrames(t *testing.T) {
	kr := agent.NewKeyring()
	for _, tc := range []struct {
		name  string
		frame []byte
		want  []byte // the reply; nil: the connection is closed
	}{
		{"empty", []byte{0, 0, 0, 0}, nil},
		{"too large", binary.BigEndian.AppendUint32(nil, maxAgentMessage+1), nil},
		{"truncated sign request", []byte{0, 0, 0, 3, agentSignRequest, 0, 9}, []byte{0, 0, 0, 1, agentFailure}},
		{"identities with trailing bytes", []byte{0, 0, 0, 2, agentRequestIdentities, 1}, []byte{0, 0, 0, 1, agentFailure}},
		{"unknown type", []byte{0, 0, 0, 1, 200}, []byte{0, 0, 0, 1, agentFailure}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- serveAgent(kr, server); server.Close() }()
			defer client.Close()
			client.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := client.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if err := <-done; err == nil || errors.Is(err, io.EOF) {
					t.Errorf("serveAgent returned %v, want an error about the frame", err)
				}
				return
			}
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(client, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("reply %x, want %x", got, tc.want)
			}
		})
	}
}

// FuzzAnswerAgent: no request makes the agent panic, or answer with
// anything but a failure, the keys' list or a signature.
func FuzzAnswerAgent(f *testing.F) {
	kr := agent.NewKeyring()
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if err := kr.Add(agent.AddedKey{PrivateKey: edKey}); err != nil {
		f.Fatal(err)
	}
	keys, _ := kr.List()
	sign := appendSSHString([]byte{agentSignRequest}, keys[0].Blob)
	sign = binary.BigEndian.AppendUint32(appendSSHString(sign, []byte("data")), 0)
	for _, seed := range [][]byte{{agentRequestIdentities}, sign, {17}, {agentSignRequest, 0, 0, 0, 200}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		switch reply := answerAgent(kr, req); reply[0] {
		case agentFailure, agentIdentitiesAnswer, agentSignResponse:
		default:
			t.Errorf("reply of type %d", reply[0])
		}
	})
}
