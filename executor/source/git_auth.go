package source

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"
)

// GitAuth are the credentials of git fetches, and where each may be sent.
// They never appear in an error: every error message is scrubbed of them.
//
// Untrusted input decides which URLs are fetched (a Dockerfile's ADD, a
// repository's .gitmodules), so credentials are scoped: Username, Password
// and SSHKey go only to Origin, the scheme, host and port of the URL they
// were given for (the git context's); a URL elsewhere, even another port or
// scheme of the same host, is fetched anonymously unless HostTokens or
// HostHeaders name its host, as BuildKit's GIT_AUTH_TOKEN.<host> and
// GIT_AUTH_HEADER.<host> secrets do. go-git drops credentials on a redirect
// that leaves the origin.
type GitAuth struct {
	// Origin is where Username, Password and SSHKey may be sent, as
	// GitOrigin returns it ("https://git.example.com:443"). Empty: nowhere.
	Origin string
	// Username and Password are HTTP basic-auth credentials; Password may
	// be a token.
	Username, Password string
	// SSHKey is a PEM private key (unencrypted) for ssh:// and scp-like URLs.
	SSHKey []byte
	// KnownHosts is the content of known_hosts files (public keys, held in
	// memory so that no file of it need stay where a RUN step could change
	// it). When it is empty, the host key is checked against SSH_KNOWN_HOSTS,
	// ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts, as OpenSSH does,
	// unless NoDefaultKnownHosts.
	KnownHosts []byte
	// NoDefaultKnownHosts: with KnownHosts empty, no host key is known,
	// rather than OpenSSH's files, which a RUN step could have written by the
	// time a fetch reads them (set once DefaultKnownHosts were read into
	// KnownHosts).
	NoDefaultKnownHosts bool
	// HostTokens are tokens for other hosts, by host as a URL names it
	// (host or host:port): sent as basic auth (user x-access-token, as
	// BuildKit does) to https URLs of exactly that host, never over plain
	// HTTP. HostHeaders are whole Authorization header values, likewise.
	HostTokens, HostHeaders map[string]string
}

// Build secrets whose ids name a host's git credentials, as BuildKit reads
// them: GIT_AUTH_TOKEN.<host> and GIT_AUTH_HEADER.<host>.
const (
	SecretGitAuthToken  = "GIT_AUTH_TOKEN."
	SecretGitAuthHeader = "GIT_AUTH_HEADER."
)

// WithHostSecrets returns a with the per-host git credentials found among
// build secrets (ids GIT_AUTH_TOKEN.<host> and GIT_AUTH_HEADER.<host>).
func (a GitAuth) WithHostSecrets(secrets map[string][]byte) GitAuth {
	for id, v := range secrets {
		val := strings.TrimRight(string(v), "\r\n")
		if host, ok := strings.CutPrefix(id, SecretGitAuthToken); ok && host != "" {
			a.HostTokens = withEntry(a.HostTokens, strings.ToLower(host), val)
		}
		if host, ok := strings.CutPrefix(id, SecretGitAuthHeader); ok && host != "" {
			a.HostHeaders = withEntry(a.HostHeaders, strings.ToLower(host), val)
		}
	}
	return a
}

func withEntry(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	maps.Copy(out, m)
	out[k] = v
	return out
}

// GitOrigin returns the scheme, host and port of a git URL, the port made
// explicit ("https://h:443", "ssh://h:22"; an scp-like user@h:path is
// ssh://h:22): what credentials are scoped to. It is "" for a URL without a
// host, which no credential matches.
func GitOrigin(u string) string {
	ep, err := transport.NewEndpoint(u)
	if err != nil || ep.Host == "" {
		return ""
	}
	scheme := strings.ToLower(ep.Protocol)
	if scheme == "git+ssh" || scheme == "ssh+git" {
		scheme = "ssh"
	}
	port := ep.Port
	if port == 0 {
		port = map[string]int{"http": 80, "https": 443, "ssh": 22, "git": 9418}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(strings.Trim(ep.Host, "[]")), strconv.Itoa(port))
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
		kh, err := read("known_hosts")
		if err != nil {
			return a, err
		}
		if kh != "" {
			a.KnownHosts = append(append(a.KnownHosts, kh...), '\n')
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

// method returns the go-git auth method for u: the credentials scoped to
// u's origin or host (see GitAuth), nil for anonymous HTTP.
func (a GitAuth) method(u string, insecureHostKey bool) (transport.AuthMethod, error) {
	origin := GitOrigin(u)
	own := origin != "" && origin == a.Origin
	if !isSSH(u) {
		if own && (a.Username != "" || a.Password != "") {
			return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
		}
		return a.hostAuth(u), nil
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
		hostport := ep.Host
		if ep.Port != 0 && ep.Port != 22 {
			hostport = net.JoinHostPort(ep.Host, fmt.Sprint(ep.Port))
		}
		if helper, err = a.knownHosts(hostport); err != nil {
			return nil, fmt.Errorf("reading known_hosts: %w", err)
		}
	}
	if len(a.SSHKey) == 0 || !own {
		return &gitssh.PublicKeysCallback{User: user, Callback: noKeys, HostKeyCallbackHelper: helper}, nil
	}
	signer, err := ssh.ParsePrivateKey(a.SSHKey)
	if err != nil {
		// The parser's message never quotes the key.
		return nil, fmt.Errorf("parsing the SSH private key: %w", err)
	}
	return &gitssh.PublicKeys{User: user, Signer: signer, HostKeyCallbackHelper: helper}, nil
}

// hostAuth returns the per-host credentials of an https URL, nil if it
// has none.
func (a GitAuth) hostAuth(u string) transport.AuthMethod {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" {
		return nil
	}
	host := strings.ToLower(pu.Host)
	if h, ok := a.HostHeaders[host]; ok {
		return headerAuth(h)
	}
	if tok, ok := a.HostTokens[host]; ok {
		return &githttp.BasicAuth{Username: "x-access-token", Password: tok}
	}
	return nil
}

// headerAuth sends a whole Authorization header value (GIT_AUTH_HEADER).
type headerAuth string

func (h headerAuth) SetAuth(r *http.Request) { r.Header.Set("Authorization", string(h)) }
func (headerAuth) Name() string              { return "http-authorization-header" }
func (headerAuth) String() string            { return "http-authorization-header: ***" }

// DefaultKnownHosts reads the known_hosts files OpenSSH reads
// (SSH_KNOWN_HOSTS, ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts), those
// that exist; getenv is os.Getenv in the executor.
func DefaultKnownHosts(getenv func(string) string) []byte {
	var files []string
	if v := getenv("SSH_KNOWN_HOSTS"); v != "" {
		files = filepath.SplitList(v)
	} else {
		if home := getenv("HOME"); home != "" {
			files = append(files, filepath.Join(home, ".ssh", "known_hosts"))
		}
		files = append(files, "/etc/ssh/ssh_known_hosts")
	}
	var out []byte
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(append(out, b...), '\n')
		}
	}
	return out
}

// knownHosts checks host keys of hostport against KnownHosts (read through
// a memory file, so no copy of it is on a file system); when it is empty,
// against OpenSSH's files, or none with NoDefaultKnownHosts.
func (a GitAuth) knownHosts(hostport string) (gitssh.HostKeyCallbackHelper, error) {
	var helper gitssh.HostKeyCallbackHelper
	var files []string // none: OpenSSH's
	if len(a.KnownHosts) > 0 || a.NoDefaultKnownHosts {
		fd, err := unix.MemfdCreate("known_hosts", unix.MFD_CLOEXEC)
		if err != nil {
			return helper, err
		}
		f := os.NewFile(uintptr(fd), "known_hosts")
		defer f.Close()
		if _, err := f.Write(a.KnownHosts); err != nil {
			return helper, err
		}
		files = append(files, fmt.Sprintf("/proc/self/fd/%d", fd))
	}
	// The files are read here, while f is open.
	db, err := gitssh.NewKnownHostsDb(files...)
	if err != nil {
		return helper, err
	}
	helper.HostKeyCallback = db.HostKeyCallback()
	helper.HostKeyAlgorithms = db.HostKeyAlgorithms(hostport)
	return helper, nil
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
