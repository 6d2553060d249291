package source

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// GitAuth are the credentials of a git fetch. They never appear in an
// error: every error message is scrubbed of them.
type GitAuth struct {
	// Username and Password are HTTP basic-auth credentials; Password may
	// be a token.
	Username, Password string
	// SSHKey is a PEM private key (unencrypted) for ssh:// and scp-like URLs.
	SSHKey []byte
	// KnownHostsFiles are known_hosts files that the SSH host key is
	// checked against. None means SSH_KNOWN_HOSTS, ~/.ssh/known_hosts and
	// /etc/ssh/ssh_known_hosts, as OpenSSH does.
	KnownHostsFiles []string
}

// Environment variables and secret files that GitAuthFromEnv reads.
const (
	// EnvGitUsername, EnvGitPassword and EnvGitToken are kaniko's.
	EnvGitUsername = "GIT_USERNAME"
	EnvGitPassword = "GIT_PASSWORD"
	EnvGitToken    = "GIT_TOKEN"
	// EnvGitSecretDir names the mount of a kubernetes.io/basic-auth secret
	// (files "username" and "password") or a kubernetes.io/ssh-auth secret
	// (file "ssh-privatekey", with an optional "known_hosts" key added), or
	// a directory with both. Several directories may be listed, separated
	// by ':'.
	EnvGitSecretDir = "GIT_SECRET_DIR"
)

// GitAuthFromEnv reads credentials as kaniko does from GIT_USERNAME,
// GIT_PASSWORD and GIT_TOKEN (a token is sent as the password, with
// GIT_USERNAME or else "x-access-token" as the user, which GitHub, Gitea and
// Bitbucket accept; GitLab wants GIT_USERNAME=oauth2), then from the
// secret directories in GIT_SECRET_DIR, whose files take precedence.
// getenv is os.Getenv in the executor.
func GitAuthFromEnv(getenv func(string) string) (GitAuth, error) {
	a := GitAuth{Username: getenv(EnvGitUsername), Password: getenv(EnvGitPassword)}
	if tok := getenv(EnvGitToken); tok != "" {
		a.Password = tok
		if a.Username == "" {
			a.Username = "x-access-token"
		}
	}
	dirs := getenv(EnvGitSecretDir)
	if dirs == "" {
		return a, nil
	}
	for _, dir := range filepath.SplitList(dirs) {
		read := func(name string) (string, error) {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if errors.Is(err, os.ErrNotExist) {
				return "", nil
			}
			if err != nil {
				return "", fmt.Errorf("reading git secret file %s: %w", name, errors.Unwrap(err))
			}
			return string(b), nil
		}
		user, err := read("username")
		if err != nil {
			return a, err
		}
		pass, err := read("password")
		if err != nil {
			return a, err
		}
		if user != "" || pass != "" {
			a.Username, a.Password = strings.TrimRight(user, "\r\n"), strings.TrimRight(pass, "\r\n")
		}
		key, err := read("ssh-privatekey")
		if err != nil {
			return a, err
		}
		if key != "" {
			a.SSHKey = []byte(key)
		}
		kh := filepath.Join(dir, "known_hosts")
		if _, err := os.Stat(kh); err == nil {
			a.KnownHostsFiles = append(a.KnownHostsFiles, kh)
		}
	}
	return a, nil
}

// isSSH tells whether u is fetched over SSH: ssh:// or scp-like
// user@host:path.
func isSSH(u string) bool {
	if strings.HasPrefix(u, "ssh://") || strings.HasPrefix(u, "git+ssh://") {
		return true
	}
	if strings.Contains(u, "://") {
		return false
	}
	ep, err := transport.NewEndpoint(u)
	return err == nil && ep.Protocol == "ssh"
}

// method returns the go-git auth method for u, nil for anonymous HTTP.
// sendSecrets false (a submodule on another host) keeps HTTP credentials
// and the SSH key to their own host.
func (a GitAuth) method(u string, insecureHostKey, sendSecrets bool) (transport.AuthMethod, error) {
	if !isSSH(u) {
		if !sendSecrets || (a.Username == "" && a.Password == "") {
			return nil, nil
		}
		return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
	}
	ep, err := transport.NewEndpoint(u)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", RedactURL(u), err)
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	var helper gitssh.HostKeyCallbackHelper
	if insecureHostKey {
		helper.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	} else {
		db, err := gitssh.NewKnownHostsDb(a.KnownHostsFiles...)
		if err != nil {
			return nil, fmt.Errorf("reading known_hosts: %w", err)
		}
		helper.HostKeyCallback = db.HostKeyCallback()
		hostport := ep.Host
		if ep.Port != 0 && ep.Port != 22 {
			hostport = net.JoinHostPort(ep.Host, fmt.Sprint(ep.Port))
		}
		helper.HostKeyAlgorithms = db.HostKeyAlgorithms(hostport)
	}
	if len(a.SSHKey) == 0 || !sendSecrets {
		return &gitssh.PublicKeysCallback{User: user, Callback: noKeys, HostKeyCallbackHelper: helper}, nil
	}
	signer, err := ssh.ParsePrivateKey(a.SSHKey)
	if err != nil {
		// The parser's message never quotes the key.
		return nil, fmt.Errorf("parsing the SSH private key: %w", err)
	}
	return &gitssh.PublicKeys{User: user, Signer: signer, HostKeyCallbackHelper: helper}, nil
}

func noKeys() ([]ssh.Signer, error) { return nil, nil }

// scrub replaces the secrets of a in msg (and their URL-escaped forms) by
// "***".
func (a GitAuth) scrub(msg string) string {
	for _, s := range []string{a.Password, a.Username} {
		if len(s) < 4 || s == "x-access-token" {
			continue
		}
		msg = strings.ReplaceAll(msg, s, "***")
		msg = strings.ReplaceAll(msg, url.QueryEscape(s), "***")
		msg = strings.ReplaceAll(msg, url.PathEscape(s), "***")
	}
	return msg
}

func isHostKeyChanged(err error) bool {
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return len(ke.Want) > 0
	}
	return strings.Contains(err.Error(), "key mismatch")
}

func isHostKeyUnknown(err error) bool {
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return len(ke.Want) == 0
	}
	return strings.Contains(err.Error(), "key is unknown")
}
