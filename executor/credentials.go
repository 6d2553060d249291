package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/executor/sign"
	"github.com/slipway-dev/slipway/executor/source"
)

// The build's credentials, and what a RUN step can reach of them.
//
// In a pod (in-place isolation) every RUN step of the Dockerfile runs in
// the executor's own container: the same file system, PID and network
// namespaces, as root with the pod's capabilities. The Dockerfile comes
// from the repository, so a step is untrusted code beside the push
// secret, the git credentials and every build secret. What keeps them
// from it:
//
//   - the executor reads them once, before anything else, into memory
//     (loadCredentials);
//   - the staged credentials directory (--credentials-dir) is emptied
//     before the first step: the controller fills it from the ImageBuild's
//     Secrets in an init container (--stage-credentials), which alone
//     mounts the Secret volumes, so no copy is left on any file system the
//     build container can see;
//   - the executor makes itself non-dumpable (PR_SET_DUMPABLE 0): without
//     CAP_SYS_PTRACE, which executor pods never have, no other process can
//     read its memory, environment, open files or working directory
//     through /proc/PID or ptrace;
//   - git credential variables leave the environment once read, and a RUN
//     step's environment is built from the image and the Dockerfile only;
//   - ssh keys (--ssh, the directory's ssh/) are parsed into in-memory
//     keyrings and their files' bytes cleared: a step with RUN
//     --mount=type=ssh reaches an agent that lists them and signs with
//     them (executor/build/sshmount.go), never the keys.
//
// What this does not cover: credentials given another way (DOCKER_CONFIG,
// GIT_SECRET_DIR, --secret src=FILE outside the credentials directory)
// stay files a step can read, and credentials in the --context URL stay
// in the executor's command line, which /proc shows to every process; in
// place, the executor warns about each (the controller passes neither). A
// step shares the executor's network, so it can reach what the pod can.

// Layout of the credentials directory.
const (
	credDocker  = "docker"  // config.json: registry credentials
	credGit     = "git"     // username, password, ssh-privatekey, known_hosts
	credSecrets = "secrets" // one file per build secret, named by its id
	credSSH     = "ssh"     // per ssh agent id: a private key file, or a directory of them
	// signing/cosign.key and signing/cosign.password: the signing key
	// (credSigning, supplychain.go)
)

// credentials are the build's secrets, in memory.
type credentials struct {
	keychain authn.Keychain
	git      source.GitAuth
	secrets  map[string][]byte
	// ssh are the agents of RUN --mount=type=ssh, by id: keyrings of the
	// private keys, which only the executor's memory holds.
	ssh map[string]agent.Agent
	// readable are files holding credentials that stay where a RUN step
	// can read them (outside the credentials directory).
	readable []string
	// signer signs what is pushed (--sign-key, the credentials
	// directory's signing/); nil for none. See supplychain.go.
	signer *sign.Signer
}

// stageCredentials copies the credential files under src (the Secret
// volumes' mount: kubelet's "..data" entries are skipped, the visible
// names, which are symlinks into it, followed) into dst with mode 0400,
// keeping the layout above.
func stageCredentials(src, dst string) error {
	return stageDir(src, dst, 0)
}

func stageDir(src, dst string, depth int) error {
	if depth > 3 {
		return fmt.Errorf("staging credentials: %s is nested too deep", src)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("staging credentials: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		p, target := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("staging credentials: %w", err)
		}
		switch {
		case fi.IsDir():
			if err := os.MkdirAll(target, 0o700); err != nil {
				return fmt.Errorf("staging credentials: %w", err)
			}
			if err := stageDir(p, target, depth+1); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err == nil {
				err = os.WriteFile(target, b, 0o400)
			}
			if err != nil {
				return fmt.Errorf("staging credentials: %w", err)
			}
		}
	}
	return nil
}

// loadCredentials reads every credential of the build into memory: the
// registry credentials (the credentials directory's docker/config.json,
// else the Docker config file kaniko reads), git credentials (the
// credentials directory's git/, then GIT_USERNAME, GIT_PASSWORD, GIT_TOKEN
// and GIT_SECRET_DIR), scoped to the git context's origin, and the build
// secrets (--secret, then the credentials directory's secrets/) and the
// ssh keys (--ssh, then the credentials directory's ssh/). It removes the
// git variables from the environment. Errors name a file or flag, never a
// value.
func loadCredentials(o *options) (*credentials, error) {
	c := &credentials{}
	dir := o.credentialsDir

	dockerConfig := ""
	if dir != "" {
		if p := filepath.Join(dir, credDocker, "config.json"); fileExists(p) {
			dockerConfig = p
		}
	}
	kc, path, err := publish.LoadKeychain(dockerConfig)
	if err != nil {
		return nil, err
	}
	c.keychain = kc
	if path != "" && !inDir(dir, path) {
		c.readable = append(c.readable, path)
	}

	getenv := os.Getenv
	if dir != "" && fileExists(filepath.Join(dir, credGit)) {
		getenv = func(k string) string {
			if k == source.EnvGitSecretDir {
				return strings.Join(slices.DeleteFunc([]string{os.Getenv(k), filepath.Join(dir, credGit)}, func(s string) bool { return s == "" }), string(filepath.ListSeparator))
			}
			return os.Getenv(k)
		}
	}
	if d := os.Getenv(source.EnvGitSecretDir); d != "" {
		c.readable = append(c.readable, filepath.SplitList(d)...)
	}
	git, err := source.GitAuthFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{source.EnvGitUsername, source.EnvGitPassword, source.EnvGitToken} {
		os.Unsetenv(k)
	}

	c.secrets, err = readSecrets(o.secrets)
	if err != nil {
		return nil, err
	}
	for _, f := range o.secrets {
		if src := secretSource(f); src != "" && !inDir(dir, src) {
			c.readable = append(c.readable, src)
		}
	}
	if dir != "" {
		entries, err := os.ReadDir(filepath.Join(dir, credSecrets))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading the staged build secrets: %w", errors.Unwrap(err))
		}
		for _, e := range entries {
			if _, dup := c.secrets[e.Name()]; dup {
				return nil, fmt.Errorf("build secret %s is given twice (--secret and %s)", e.Name(), dir)
			}
			b, err := os.ReadFile(filepath.Join(dir, credSecrets, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("reading build secret %s: %w", e.Name(), errors.Unwrap(err))
			}
			c.secrets[e.Name()] = b
		}
	}

	c.ssh, err = readSSH(o.ssh, dir)
	if err != nil {
		return nil, err
	}
	if c.signer, err = loadSigner(o, &c.readable); err != nil {
		return nil, err
	}
	for _, f := range o.ssh {
		for _, p := range sshFlagPaths(f) {
			if !inDir(dir, p) {
				c.readable = append(c.readable, p)
			}
		}
	}

	if len(git.KnownHosts) == 0 {
		// Now, before a step could write them.
		git.KnownHosts, git.NoDefaultKnownHosts = source.DefaultKnownHosts(os.Getenv), true
	}
	git.Origin = source.ContextOrigin(o.context, os.Getenv("GIT_PULL_METHOD"))
	c.git = git.WithHostSecrets(c.secrets)
	return c, nil
}

// seal makes the credentials unreachable by RUN steps (see the top of this
// file): it empties the credentials directory and makes the process
// non-dumpable. In place, it warns about each credential file left
// readable.
func (c *credentials) seal(o *options, logw io.Writer) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the executor non-dumpable: %w", err)
	}
	// In place, the CA certificates are read now, once: a step could
	// otherwise put its own in their place before the first TLS connection,
	// and be trusted with the credentials sent over it. (A chroot step
	// cannot name them, and a build that makes no TLS connection need not
	// pay for reading them.)
	if o.isolation == string(build.InPlace) {
		if _, err := x509.SystemCertPool(); err != nil {
			fmt.Fprintf(logw, "WARNING: reading the system's CA certificates: %v\n", err)
		}
	}
	if dir := o.credentialsDir; dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("emptying the credentials directory: %w", err)
		}
		for _, e := range entries {
			// The directory itself is a mount point (an emptyDir in a pod).
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("emptying the credentials directory: %w", err)
			}
		}
	}
	if o.isolation == string(build.InPlace) {
		for _, p := range c.readable {
			fmt.Fprintf(logw, "WARNING: %s holds credentials that RUN steps can read; give them through --credentials-dir instead (README: Security)\n", p)
		}
		// A process's command line stays readable by others, dumpable or not.
		if carriesCredentials(o.context) {
			fmt.Fprintln(logw, "WARNING: the --context URL carries credentials, which RUN steps can read in /proc/1/cmdline; give them with GIT_PASSWORD, GIT_TOKEN or --credentials-dir instead (README: Security)")
		}
	}
	return nil
}

// carriesCredentials reports whether a --context URL holds credentials: a
// password, or the user name of an http(s) URL (often a token); an ssh user
// name is none. Of a URL that does not parse, any "@" after "://" and
// before a "/" may end a password.
func carriesCredentials(contextURL string) bool {
	u, err := url.Parse(contextURL)
	if err != nil {
		_, rest, ok := strings.Cut(contextURL, "://")
		at := strings.LastIndexByte(rest, '@')
		return ok && at >= 0 && !strings.Contains(rest[:at], "/")
	}
	if u.User == nil {
		return false
	}
	_, password := u.User.Password()
	return password || u.Scheme == "http" || u.Scheme == "https"
}

// secretSource is the file a --secret value reads, "" if none.
func secretSource(flag string) string {
	src := ""
	for _, field := range strings.Split(flag, ",") {
		k, v, _ := strings.Cut(field, "=")
		switch strings.ToLower(k) {
		case "src", "source":
			src = v
		case "type":
			if v == "env" {
				return ""
			}
		}
	}
	return src
}

// inDir tells whether p is dir or under it; false when dir is "".
func inDir(dir, p string) bool {
	if dir == "" {
		return false
	}
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// maxSSHKeyFile bounds a private key file, as BuildKit's sshprovider does.
const maxSSHKeyFile = 100 << 10

// readSSH reads the ssh agents' private keys into keyrings, by id: the
// --ssh flags (ID=KEYFILE[,KEYFILE...], or KEYFILE[,KEYFILE...] for the id
// "default", as buildctl build --ssh takes key files), then the
// credentials directory's ssh/ID entries (a key file, or a directory of
// key files). Each file holds one unencrypted private key, PEM or OpenSSH,
// as BuildKit's sshprovider reads it; the file's bytes are cleared once
// parsed. Unlike buildctl, an agent socket cannot be forwarded. Errors
// name the id and the file, never a key.
func readSSH(flags []string, dir string) (map[string]agent.Agent, error) {
	out := map[string]agent.Agent{}
	add := func(id, what string, files []string) error {
		if _, dup := out[id]; dup {
			return fmt.Errorf("ssh key %s is given twice (%s)", id, what)
		}
		kr := agent.NewKeyring()
		for _, f := range files {
			if err := addSSHKey(kr, f); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		out[id] = kr
		return nil
	}
	for _, f := range flags {
		id, paths := parseSSHFlag(f)
		if id == "" || len(paths) == 0 || slices.Contains(paths, "") {
			return nil, fmt.Errorf("--ssh %q: want ID=KEYFILE[,KEYFILE...] or KEYFILE[,KEYFILE...]", f)
		}
		if err := add(id, "--ssh "+id, paths); err != nil {
			if !strings.Contains(f, "=") && errors.Is(err, fs.ErrNotExist) {
				// buildctl's --ssh ID forwards $SSH_AUTH_SOCK.
				err = fmt.Errorf("%w (--ssh takes key files, ID=KEYFILE or KEYFILE; forwarding an ssh agent is not supported)", err)
			}
			return nil, err
		}
	}
	if dir == "" {
		return out, nil
	}
	entries, err := os.ReadDir(filepath.Join(dir, credSSH))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading the staged ssh keys: %w", errors.Unwrap(err))
	}
	for _, e := range entries {
		p := filepath.Join(dir, credSSH, e.Name())
		files := []string{p}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			sub, err := os.ReadDir(p)
			if err != nil {
				return nil, fmt.Errorf("reading ssh key %s: %w", e.Name(), errors.Unwrap(err))
			}
			files = files[:0]
			for _, s := range sub {
				if !strings.HasPrefix(s.Name(), ".") {
					files = append(files, filepath.Join(p, s.Name()))
				}
			}
		}
		if err := add(e.Name(), "ssh key "+e.Name()+" in "+dir, files); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseSSHFlag splits an --ssh value into its id and key files.
func parseSSHFlag(f string) (id string, paths []string) {
	id, list, ok := strings.Cut(f, "=")
	if !ok {
		id, list = build.SSHDefaultID, f
	}
	if list == "" {
		return id, nil
	}
	return id, strings.Split(list, ",")
}

// sshFlagPaths are the files an --ssh value reads.
func sshFlagPaths(f string) []string {
	_, paths := parseSSHFlag(f)
	return paths
}

// addSSHKey adds the private key of the file p to kr.
func addSSHKey(kr agent.Agent, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, errors.Unwrap(err))
	}
	switch {
	case fi.Mode()&fs.ModeSocket != 0:
		return fmt.Errorf("%s is a socket: this executor serves ssh keys from key files, it does not forward an agent", p)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", p)
	case fi.Size() > maxSSHKeyFile:
		return fmt.Errorf("%s is larger than %d KiB: not a private key", p, maxSSHKeyFile>>10)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, errors.Unwrap(err))
	}
	defer clear(b)
	key, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		// The parser's errors quote nothing of the file, but say no more
		// than needed.
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return fmt.Errorf("%s is protected by a passphrase: give an unencrypted private key", p)
		}
		return fmt.Errorf("%s is not a private key in PEM or OpenSSH format", p)
	}
	if err := kr.Add(agent.AddedKey{PrivateKey: key}); err != nil {
		return fmt.Errorf("%s: a private key of a kind the ssh agent cannot serve", p)
	}
	return nil
}
