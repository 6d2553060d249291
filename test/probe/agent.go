package probe

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// AgentReport is what agentprobe (test/probe/agentprobe) writes: what a RUN step could do
// with the ssh agent its mount gave it.
type AgentReport struct {
	Keys       []string `json:"keys"`
	Signatures [][]byte `json:"signatures"`
	SignErrors []string `json:"signErrors,omitempty"`
	Add        string   `json:"add"`
	RemoveAll  string   `json:"removeAll"`
	Lock       string   `json:"lock"`
	KeysAfter  int      `json:"keysAfter"`
}

var agentProbe struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// BuildAgentProbe builds agentprobe, static, once per test binary, and returns its path.
func BuildAgentProbe(t testing.TB) string {
	t.Helper()
	agentProbe.once.Do(func() {
		dir, err := os.MkdirTemp("", "agentprobe-")
		if err != nil {
			agentProbe.err = err
			return
		}
		agentProbe.path = filepath.Join(dir, "agentprobe")
		_, self, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", agentProbe.path, ".")
		cmd.Dir = filepath.Join(filepath.Dir(self), "agentprobe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		agentProbe.out, agentProbe.err = cmd.CombinedOutput()
	})
	if agentProbe.err != nil {
		t.Fatalf("building agentprobe: %v\n%s", agentProbe.err, agentProbe.out)
	}
	return agentProbe.path
}

// CheckAgent asserts, from agentprobe's output out, that the step's agent held exactly the
// keys of want (in order), that each signed challenge with its own key, and that the step
// could neither add a key, nor remove them, nor lock the agent.
func CheckAgent(t testing.TB, out []byte, challenge string, want ...ssh.PublicKey) {
	t.Helper()
	var r AgentReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("agentprobe's output %q: %v", out, err)
	}
	if len(r.Keys) != len(want) {
		t.Fatalf("the agent listed %d keys, want %d: %v", len(r.Keys), len(want), r.Keys)
	}
	if len(r.SignErrors) > 0 || len(r.Signatures) != len(want) {
		t.Fatalf("signing: %d signatures, errors %v; want %d", len(r.Signatures), r.SignErrors, len(want))
	}
	for i, w := range want {
		got, _, _, _, err := ssh.ParseAuthorizedKey([]byte(r.Keys[i]))
		if err != nil {
			t.Fatalf("key %d %q: %v", i, r.Keys[i], err)
		}
		if !bytes.Equal(got.Marshal(), w.Marshal()) {
			t.Errorf("key %d is %s, want %s", i, ssh.FingerprintSHA256(got), ssh.FingerprintSHA256(w))
		}
		sig := new(ssh.Signature)
		if err := ssh.Unmarshal(r.Signatures[i], sig); err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
		if err := w.Verify([]byte(challenge), sig); err != nil {
			t.Errorf("the signature of key %d does not verify: %v", i, err)
		}
	}
	for what, got := range map[string]string{"adding a key": r.Add, "removing the keys": r.RemoveAll, "locking the agent": r.Lock} {
		if !strings.HasPrefix(got, "refused") {
			t.Errorf("%s: %s; want it refused", what, got)
		}
	}
	if r.KeysAfter != len(want) {
		t.Errorf("the agent listed %d keys after the attempts to change it, want %d", r.KeysAfter, len(want))
	}
}
