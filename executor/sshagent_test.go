package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/probe"
)

// sshKey is a test's ssh key: its public key, its private key file and the
// secrets an attacker would look for (the file's base64 lines, the seed).
type sshKey struct {
	pub  ssh.PublicKey
	file []byte
	seed []byte
	// lines are the private key file's base64 lines but the first (the
	// format's header and the public key).
	lines []string
}

func newSSHKey(t *testing.T) sshKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	k := sshKey{pub: sshPub, file: pem.EncodeToMemory(block), seed: priv.Seed()}
	body := strings.Split(strings.TrimSpace(string(k.file)), "\n")
	k.lines = body[2 : len(body)-1]
	if len(k.lines) < 3 {
		t.Fatalf("the key file has %d base64 lines", len(k.lines))
	}
	return k
}

// assertImageHoldsNoKey fails when a layer of img (uncompressed), its
// config or one of texts holds the key's seed or a line of its file.
func assertImageHoldsNoKey(t *testing.T, img v1.Image, k sshKey, texts ...string) {
	t.Helper()
	blobs, err := imagetest.Blobs(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range texts {
		blobs = append(blobs, []byte(s))
	}
	for i, b := range blobs {
		if bytes.Contains(b, k.seed) {
			t.Errorf("blob %d (layers, config, log, result) holds the private key's seed", i)
		}
		for _, l := range k.lines {
			if bytes.Contains(b, []byte(l)) {
				t.Errorf("blob %d (layers, config, log, result) holds a line of the private key file", i)
			}
		}
	}
}

// sshProbeContext writes the hostile context: the probe script, agentprobe
// and a Dockerfile whose one RUN step mounts the ssh agent and the build
// secret control, has the agent sign challenge (agentprobe's report in
// /agent.json), then looks everywhere for canaries; the next step writes
// to /after what it finds of the agent.
func sshProbeContext(t *testing.T, dir, base, challenge string, canaries ...string) {
	t.Helper()
	b, err := os.ReadFile(probe.BuildAgentProbe(t))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"agentprobe": b,
		"probe.sh":   []byte(probe.Script),
		"Dockerfile": []byte("FROM " + base + "\n" +
			"COPY probe.sh /probe.sh\n" +
			"COPY agentprobe /agentprobe\n" +
			"RUN --mount=type=ssh --mount=type=secret,id=control sh -c '/agentprobe " + challenge + " > /agent.json && sh /probe.sh \"" + probe.Args(canaries...) + "\"'\n" +
			// The next step, without the mount, has no socket.
			"RUN sh -c 'ls -A /run/buildkit; echo \"$SSH_AUTH_SOCK\"' > /after 2>&1; true\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSSHProbe asserts what the step of sshProbeContext left in img: the
// agent held key and signed; the probe found the control secret (so it
// looked) at its mount and nothing else, and reached no other process.
func checkSSHProbe(t *testing.T, img v1.Image, challenge string, k sshKey, control string) {
	t.Helper()
	dir := t.TempDir()
	if err := imagetest.Extract(img, dir); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatalf("the step did not write /%s: %v", p, err)
		}
		return string(b)
	}
	probe.CheckAgent(t, []byte(read("agent.json")), challenge, k.pub)
	// No /run/buildkit, no SSH_AUTH_SOCK.
	if got, want := read("after"), "ls: /run/buildkit: No such file or directory\n\n"; got != want {
		t.Errorf("the step after the one with the ssh mount saw:\n%s\nwant:\n%s", got, want)
	}
	if got, want := read("found"), "/run/secrets/control: "+control+"\n"; got != want {
		t.Errorf("the step with the ssh mount found:\n%s\nwant only:\n%s", got, want)
	}
	if got := read("reached"); got != "" {
		t.Errorf("the step reached into other processes:\n%s", got)
	}
	t.Logf("the probe read %d files and /proc entries", strings.Count(read("scanned"), "\n"))
}

const sshControl = "control-c4nary-58e1"

// TestExecute_chrootSSHStepReadsNoKey: on a host, a step with the ssh
// mount has the agent sign with the --ssh key, and finds no line of the
// key file anywhere it looks (files, environments, command lines, /proc);
// the image, the log and the result hold none of the key.
func TestExecute_chrootSSHStepReadsNoKey(t *testing.T) {
	env := newCorpusEnv(t)
	k := newSSHKey(t)
	keys := t.TempDir()
	keyFile := filepath.Join(keys, "id_ed25519")
	if err := os.WriteFile(keyFile, k.file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "control"), []byte(sshControl), 0o600); err != nil {
		t.Fatal(err)
	}
	ctxDir := t.TempDir()
	const challenge = "chroot-challenge-1c"
	sshProbeContext(t, ctxDir, env.base, challenge, append(k.lines, sshControl)...)
	ref := env.reg.Ref("probe/ssh-chroot:latest")
	b := runExecutor(t, "--context=dir://"+ctxDir, "--destination="+ref, "--insecure-registry="+env.reg.Host(),
		"--ssh="+keyFile, "--secret=id=control,src="+filepath.Join(keys, "control"))
	if b.exit != 0 {
		t.Fatalf("exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
	}
	img := pullImage(t, ref)
	checkSSHProbe(t, img, challenge, k, sshControl)
	assertImageHoldsNoKey(t, img, k, b.log, b.resRaw)
}

// TestExecute_inplaceSSHStepReadsNoKey: in an executor pod's layout (see
// TestExecute_inplaceStepReadsNoCredential), the key comes from a Secret
// staged by --stage-credentials as ssh/default; the step that mounts the
// agent has it sign, and finds no line of the key file anywhere (the
// credentials directory is emptied before the step, the executor is not
// dumpable); the image, the log and the result hold none of the key.
func TestExecute_inplaceSSHStepReadsNoKey(t *testing.T) {
	env := newCorpusEnv(t)
	root := makeExecutorRoot(t)
	k := newSSHKey(t)

	// The Secret volumes as kubelet mounts them in the init container.
	secretMount := filepath.Join(root, "var/run/secrets/slipway")
	data := filepath.Join(secretMount, "..2026_12_07_00_00_00.000000001")
	for p, content := range map[string][]byte{"ssh/default": k.file, "secrets/control": []byte(sshControl)} {
		if err := os.MkdirAll(filepath.Join(data, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, p), content, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(secretMount, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"ssh", "secrets"} {
		if err := os.Symlink("..data/"+d, filepath.Join(secretMount, d)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := inExecutorRoot(t, root, nil, "--stage-credentials=/var/run/secrets/slipway", "--credentials-dir=/slipway/credentials"); err != nil {
		t.Fatalf("staging the credentials: %v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(root, "var")); err != nil {
		t.Fatal(err)
	}

	const challenge = "inplace-challenge-7a"
	sshProbeContext(t, filepath.Join(root, "workspace"), env.base, challenge, append(k.lines, sshControl)...)
	ref := env.reg.Ref("probe/ssh-inplace:latest")
	out, err := inExecutorRoot(t, root, nil,
		"--context=dir:///workspace",
		"--credentials-dir=/slipway/credentials",
		"--destination="+ref,
		"--insecure-registry="+env.reg.Host(),
		"--result-file=/slipway/result.json",
		"--verbosity=debug",
	)
	raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
	if err != nil {
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	if entries, err := os.ReadDir(filepath.Join(root, "slipway", "credentials")); err != nil || len(entries) != 0 {
		t.Errorf("the credentials directory after the build: %v, %v; want it empty", entries, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "run", "buildkit")); err == nil {
		t.Error("/run/buildkit is left in the executor's root")
	}
	img := pullImage(t, ref)
	checkSSHProbe(t, img, challenge, k, sshControl)
	assertImageHoldsNoKey(t, img, k, string(out), string(raw))
}

// TestReadSSH checks how --ssh and the credentials directory's ssh/ give
// keys: ids, files and directories; and the refusals, which name the file
// and never quote it.
func TestReadSSH(t *testing.T) {
	a, b := newSSHKey(t), newSSHKey(t)
	dir := t.TempDir()
	write := func(p string, data []byte) string {
		t.Helper()
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return full
	}
	fa, fb := write("keys/a", a.file), write("keys/b", b.file)
	creds := filepath.Join(dir, "creds")
	write("creds/ssh/default", a.file)
	write("creds/ssh/deploy/1", a.file)
	write("creds/ssh/deploy/2", b.file)
	notAKey := write("keys/not-a-key", []byte("ssh-c4nary-0a4f is not a key\n"))
	encrypted, err := ssh.MarshalPrivateKeyWithPassphrase(ed25519.NewKeyFromSeed(make([]byte, 32)), "", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	enc := write("keys/encrypted", pem.EncodeToMemory(encrypted))
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	keysOf := func(t *testing.T, ag agent.Agent) []string {
		t.Helper()
		ks, err := ag.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range ks {
			out = append(out, ssh.FingerprintSHA256(k))
		}
		return out
	}
	fp := func(ks ...sshKey) []string {
		var out []string
		for _, k := range ks {
			out = append(out, ssh.FingerprintSHA256(k.pub))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		flags []string
		dir   string
		want  map[string][]string
	}{
		{"a key file is the default", []string{fa}, "", map[string][]string{"default": fp(a)}},
		{"ids, several files", []string{"one=" + fa + "," + fb, "two=" + fb}, "", map[string][]string{"one": fp(a, b), "two": fp(b)}},
		{"staged: a file and a directory", nil, creds, map[string][]string{"default": fp(a), "deploy": fp(a, b)}},
		{"flags and staged", []string{"x=" + fb}, creds, map[string][]string{"x": fp(b), "default": fp(a), "deploy": fp(a, b)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readSSH(tc.flags, tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("ids %v, want %v", got, tc.want)
			}
			for id, want := range tc.want {
				ag, ok := got[id]
				if !ok {
					t.Errorf("no agent %s", id)
					continue
				}
				if g := keysOf(t, ag); strings.Join(g, " ") != strings.Join(want, " ") {
					t.Errorf("agent %s holds %v, want %v", id, g, want)
				}
			}
		})
	}
	for _, tc := range []struct {
		name  string
		flags []string
		dir   string
		want  string
	}{
		{"not a key", []string{notAKey}, "", notAKey + " is not a private key"},
		{"passphrase", []string{"e=" + enc}, "", enc + " is protected by a passphrase"},
		{"a socket", []string{sock}, "", "is a socket"},
		{"missing file, buildctl's agent forwarding", []string{"default"}, "", "forwarding an ssh agent is not supported"},
		{"no file", []string{"x="}, "", "want ID=KEYFILE"},
		{"an id twice", []string{"x=" + fa, "x=" + fb}, "", "ssh key x is given twice"},
		{"flag and staged", []string{"default=" + fa}, creds, "ssh key default is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readSSH(tc.flags, tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readSSH: %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "c4nary") {
				t.Errorf("the error quotes the file: %v", err)
			}
		})
	}
}

// TestLoadCredentials_sshKeyFileOutsideTheDirectory: a key file given with
// --ssh outside --credentials-dir stays where an in-place step can read it,
// so it is listed for seal's warning (TestCredentials_sealWarnsInPlace);
// one staged in the directory is not, since the directory is emptied.
func TestLoadCredentials_sshKeyFileOutsideTheDirectory(t *testing.T) {
	k := newSSHKey(t)
	dir, creds := t.TempDir(), t.TempDir()
	outside := filepath.Join(dir, "id_ed25519")
	inside := filepath.Join(creds, "ssh", "staged")
	for _, p := range []string{outside, inside} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, k.file, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := loadCredentials(&options{ssh: []string{"deploy=" + outside, "other=" + inside}, credentialsDir: creds})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.readable, outside) || slices.Contains(c.readable, inside) {
		t.Errorf("readable = %v, want %s and not %s", c.readable, outside, inside)
	}
	for _, id := range []string{"deploy", "other", "staged"} {
		if _, ok := c.ssh[id]; !ok {
			t.Errorf("no ssh agent %s", id)
		}
	}
}
