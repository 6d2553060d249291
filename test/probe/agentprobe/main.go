// Command agentprobe is a hostile RUN step's ssh agent client, for tests: it connects to the
// agent at $SSH_AUTH_SOCK (or its second argument), lists the keys, has each sign its first
// argument, tries to change the agent (add a key, remove them all, lock it), lists the keys
// again, and writes what happened as JSON (probe.AgentReport) on standard output. It exits 0
// whatever the agent answered; only a failed connection fails it.
//
// It is built static by probe.BuildAgentProbe and copied into the image under test.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// report mirrors probe.AgentReport (this program imports nothing of the tests).
type report struct {
	Keys       []string `json:"keys"`       // authorized_keys lines
	Signatures [][]byte `json:"signatures"` // ssh wire format, one per key, in order
	SignErrors []string `json:"signErrors,omitempty"`
	Add        string   `json:"add"` // "refused: ..." or "allowed"
	RemoveAll  string   `json:"removeAll"`
	Lock       string   `json:"lock"`
	KeysAfter  int      `json:"keysAfter"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agentprobe CHALLENGE [SOCKET]")
		os.Exit(2)
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if len(os.Args) > 2 {
		sock = os.Args[2]
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentprobe: %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	a := agent.NewClient(conn)
	var r report
	keys, err := a.List()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentprobe: listing: %v\n", err)
		os.Exit(1)
	}
	for _, k := range keys {
		r.Keys = append(r.Keys, string(ssh.MarshalAuthorizedKey(k)))
		sig, err := a.Sign(k, []byte(os.Args[1]))
		if err != nil {
			r.SignErrors = append(r.SignErrors, err.Error())
			continue
		}
		r.Signatures = append(r.Signatures, ssh.Marshal(sig))
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	r.Add = outcome(a.Add(agent.AddedKey{PrivateKey: priv}))
	r.RemoveAll = outcome(a.RemoveAll())
	r.Lock = outcome(a.Lock([]byte("passphrase")))
	r.KeysAfter = -1
	if after, err := a.List(); err == nil {
		r.KeysAfter = len(after)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		os.Exit(1)
	}
}

func outcome(err error) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	return "allowed"
}
