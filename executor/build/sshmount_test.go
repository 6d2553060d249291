package build_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/run"
	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/probe"
)

// testKey is an ssh key of a test, with every form its secret takes.
type testKey struct {
	pub     ssh.PublicKey
	pem     []byte // the private key file
	secrets [][]byte
}

// newTestKey makes an ed25519 key, or an RSA one (as BuildKit's tests do).
func newTestKey(t *testing.T, rsaKey bool) testKey {
	t.Helper()
	var k testKey
	var priv any
	if rsaKey {
		r, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv = r
		k.pem = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(r)})
		k.secrets = [][]byte{r.D.Bytes(), r.Primes[0].Bytes(), r.Primes[1].Bytes()}
	} else {
		_, e, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv = e
		b, err := ssh.MarshalPrivateKey(e, "")
		if err != nil {
			t.Fatal(err)
		}
		k.pem = pem.EncodeToMemory(b)
		k.secrets = [][]byte{e.Seed()}
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	k.pub = signer.PublicKey()
	// Every line of the file's base64 body: a copy of the file anywhere
	// holds them.
	for _, line := range strings.Split(string(k.pem), "\n") {
		if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			k.secrets = append(k.secrets, []byte(line))
		}
	}
	return k
}

// keyring is an agent holding keys, as the executor makes from --ssh files.
func keyring(t *testing.T, keys ...testKey) agent.Agent {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		priv, err := ssh.ParseRawPrivateKey(k.pem)
		if err != nil {
			t.Fatal(err)
		}
		if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
			t.Fatal(err)
		}
	}
	return kr
}

// sshBuild builds dockerfile as fixture.build does, with agents as the
// build's ssh agents, and returns the log too.
func sshBuild(t *testing.T, f *fixture, dockerfile string, agents map[string]agent.Agent, withCache bool, opts ...func(*build.Options)) (v1.Image, *build.Report, string, error) {
	t.Helper()
	opts = append([]func(*build.Options){func(o *build.Options) { o.SSH = agents }}, opts...)
	img, rep, err := f.build(t, dockerfile, withCache, opts...)
	return img, rep, f.log, err
}

// sshFixture is a fixture whose context holds agentprobe.
func sshFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, nil)
	b, err := os.ReadFile(probe.BuildAgentProbe(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.ctxDir, "agentprobe"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// assertNoKey fails when a layer of img (its uncompressed tar) or the log
// holds a secret of one of keys.
func assertNoKey(t *testing.T, img v1.Image, log string, keys ...testKey) {
	t.Helper()
	blobs, err := imagetest.Blobs(img)
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, []byte(log))
	for _, k := range keys {
		for _, s := range k.secrets {
			for i, b := range blobs {
				if bytes.Contains(b, s) {
					t.Errorf("blob %d of %d (layers, config, log) holds the private key", i, len(blobs))
				}
			}
		}
	}
}

// TestBuild_sshSocketParams is BuildKit's testSSHSocketParams
// (frontend/dockerfile/dockerfile_ssh_test.go): the socket has the
// mount's uid, gid and mode, and is a socket (c1e1: S_IFSOCK|0741); with
// the chroot runner's user namespace (an idmapped root) and without.
// A step of that user then has the agent sign.
func TestBuild_sshSocketParams(t *testing.T) {
	f := sshFixture(t)
	k := newTestKey(t, true)
	const df = `
FROM {{BASE}}
RUN --mount=type=ssh,mode=741,uid=100,gid=102 [ "$(stat -c "%u %g %f" $SSH_AUTH_SOCK)" = "100 102 c1e1" ]
COPY agentprobe /agentprobe
RUN mkdir -m 777 /o
USER 100:102
RUN --mount=type=ssh,mode=741,uid=100,gid=102 /agentprobe challenge > /o/agent
`
	for _, tc := range []struct {
		name   string
		runner run.Runner
	}{
		{"user namespace where the host allows one", run.Chroot()},
		{"without a user namespace", run.Chroot(run.WithoutUserNamespace())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, _, _, err := sshBuild(t, f, df, map[string]agent.Agent{"default": keyring(t, k)}, false, func(o *build.Options) { o.Runner = tc.runner })
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			out, _ := fileContent(t, img, "o/agent")
			probe.CheckAgent(t, []byte(out), "challenge", k.pub)
		})
	}
}

// TestBuild_sshMount checks RUN --mount=type=ssh as BuildKit plans it: the
// id, the default target /run/buildkit/ssh_agent.N, SSH_AUTH_SOCK, uid and
// mode. A step talks to the agent with agentprobe: it lists exactly the
// keys of its id and gets signatures that verify, and cannot add, remove
// or lock keys. The layer holds only what the step wrote (no socket, no
// /run/buildkit), and no layer nor the log holds a private key.
func TestBuild_sshMount(t *testing.T) {
	f := sshFixture(t)
	def, other := newTestKey(t, false), newTestKey(t, true)
	agents := map[string]agent.Agent{"default": keyring(t, def), "other": keyring(t, other)}
	const challenge = "sign-me-4d1f"
	tests := []struct {
		name    string
		steps   string            // after FROM, COPY of agentprobe and mkdir -m 777 /o
		files   map[string]string // what the last RUN wrote under /o, but agentprobe's output
		agent   map[string]testKey
		wantErr string // in /o/err, for a step that cannot reach the agent
	}{
		{
			name:  "default id and target",
			steps: `RUN --mount=type=ssh sh -c 'echo $SSH_AUTH_SOCK > /o/sock; /agentprobe ` + challenge + ` > /o/agent'`,
			files: map[string]string{"sock": "/run/buildkit/ssh_agent.0\n"},
			agent: map[string]testKey{"agent": def},
		},
		{
			name: "two agents: SSH_AUTH_SOCK is the first, the second is at its index",
			steps: `RUN --mount=type=ssh,id=other --mount=type=ssh sh -c 'echo $SSH_AUTH_SOCK > /o/sock; /agentprobe ` + challenge + ` > /o/agent; ` +
				`/agentprobe ` + challenge + ` /run/buildkit/ssh_agent.1 > /o/agent1'`,
			files: map[string]string{"sock": "/run/buildkit/ssh_agent.0\n"},
			agent: map[string]testKey{"agent": other, "agent1": def},
		},
		{
			name:  "relative target under the working directory; SSH_AUTH_SOCK as written",
			steps: "WORKDIR /w\n" + `RUN --mount=type=ssh,target=s/agent.sock sh -c 'echo $SSH_AUTH_SOCK > /o/sock; /agentprobe ` + challenge + ` /w/s/agent.sock > /o/agent'`,
			files: map[string]string{"sock": "s/agent.sock\n"},
			agent: map[string]testKey{"agent": def},
		},
		{
			name:  "the Dockerfile's SSH_AUTH_SOCK is kept",
			steps: "ENV SSH_AUTH_SOCK=/elsewhere\n" + `RUN --mount=type=ssh sh -c 'echo $SSH_AUTH_SOCK > /o/sock; /agentprobe ` + challenge + ` /run/buildkit/ssh_agent.0 > /o/agent'`,
			files: map[string]string{"sock": "/elsewhere\n"},
			agent: map[string]testKey{"agent": def},
		},
		{
			name:  "an optional id not given: no socket, SSH_AUTH_SOCK still set",
			steps: `RUN --mount=type=ssh,id=nope sh -c 'echo $SSH_AUTH_SOCK > /o/sock; if [ -e /run/buildkit/ssh_agent.0 ]; then echo there; else echo absent; fi > /o/there'`,
			files: map[string]string{"sock": "/run/buildkit/ssh_agent.0\n", "there": "absent\n"},
		},
		{
			name:  "a non-root user reaches a socket it owns",
			steps: "USER 1000:1000\n" + `RUN --mount=type=ssh,uid=1000,gid=1000 sh -c 'stat -c "%u %g %a" $SSH_AUTH_SOCK > /o/stat; /agentprobe ` + challenge + ` > /o/agent'`,
			files: map[string]string{"stat": "1000 1000 600\n"},
			agent: map[string]testKey{"agent": def},
		},
		{
			name:    "a non-root user cannot use root's socket (0600 by default)",
			steps:   "USER 1000:1000\n" + `RUN --mount=type=ssh sh -c '/agentprobe ` + challenge + ` 2> /o/err; echo $? > /o/rc'`,
			files:   map[string]string{"rc": "1\n"},
			wantErr: "permission denied",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			df := "FROM {{BASE}}\nCOPY agentprobe /agentprobe\nRUN mkdir -m 777 /o\n" + tc.steps + "\n"
			img, _, log, err := sshBuild(t, f, df, agents, false)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			var wantLayer []string
			for p, want := range tc.files {
				wantLayer = append(wantLayer, "o/"+p)
				if got, _ := fileContent(t, img, "o/"+p); got != want {
					t.Errorf("/o/%s = %q, want %q", p, got, want)
				}
			}
			for p, k := range tc.agent {
				wantLayer = append(wantLayer, "o/"+p)
				out, _ := fileContent(t, img, "o/"+p)
				probe.CheckAgent(t, []byte(out), challenge, k.pub)
			}
			if tc.wantErr != "" {
				wantLayer = append(wantLayer, "o/err")
				if got, _ := fileContent(t, img, "o/err"); !strings.Contains(got, tc.wantErr) {
					t.Errorf("the step's error %q, want %q", got, tc.wantErr)
				}
			}
			tree := flatten(t, img)
			for _, p := range []string{"run/buildkit", "w/s"} {
				if _, ok := tree[p]; ok {
					t.Errorf("%s is in the image; the mount should leave nothing", p)
				}
			}
			got := slices.DeleteFunc(lastLayerFiles(t, img), func(p string) bool { return p == "o" })
			slices.Sort(got)
			slices.Sort(wantLayer)
			if diff := cmp.Diff(wantLayer, got); diff != "" {
				t.Errorf("the RUN's layer (-want +got):\n%s", diff)
			}
			assertNoKey(t, img, log, def, other)
		})
	}
}

// TestBuild_sshMountErrors: a required id the build was not given fails
// the step, naming the id, with its line (BuildKit: "no SSH key %q
// forwarded from the client"); source= is refused as by dispatchSSH.
func TestBuild_sshMountErrors(t *testing.T) {
	f := newFixture(t, nil)
	agents := map[string]agent.Agent{"default": keyring(t, newTestKey(t, false))}
	for _, tc := range []struct{ name, run, want string }{
		{"required default missing", "RUN --mount=type=ssh,required true", "ssh,id=default: the ssh key is required"},
		{"required id missing", "RUN --mount=type=ssh,id=deploy,required=true true", "ssh,id=deploy: the ssh key is required"},
		{"source", "RUN --mount=type=ssh,source=/x true", "ssh does not support source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := agents
			if strings.HasPrefix(tc.name, "required default") {
				a = nil
			}
			_, _, _, err := sshBuild(t, f, "FROM {{BASE}}\n"+tc.run+"\n", a, false)
			var be *build.Error
			if !errors.As(err, &be) || be.Line != 2 || be.Reason != result.ReasonDockerfileInvalid || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error %v, want a DockerfileInvalid one on line 2 containing %q", err, tc.want)
			}
		})
	}
}

// TestBuild_sshMountCacheKey: the key is not in the step's cache key (a
// build with another key hits, as in BuildKit, whose ExecOp holds the id
// only), the id is.
func TestBuild_sshMountCacheKey(t *testing.T) {
	f := newFixture(t, nil)
	const df = "FROM {{BASE}}\nRUN --mount=type=ssh,id=ID sh -c 'test -S $SSH_AUTH_SOCK && echo ok > /out'\n"
	one, two := newTestKey(t, false), newTestKey(t, false)
	run := func(id string, k testKey) counts {
		t.Helper()
		img, rep, log, err := sshBuild(t, f, strings.Replace(df, "ID", id, 1), map[string]agent.Agent{id: keyring(t, k)}, true)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		if got, _ := fileContent(t, img, "out"); got != "ok\n" {
			t.Errorf("/out = %q, want ok", got)
		}
		assertNoKey(t, img, log, one, two)
		return cacheCounts(rep)
	}
	run("a", one)
	if diff := cmp.Diff(counts{1, 0}, run("a", two)); diff != "" {
		t.Errorf("the same id with another key (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(counts{0, 1}, run("b", two)); diff != "" {
		t.Errorf("another id (-want +got):\n%s", diff)
	}
}
