package source

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/test/gitserver"
)

// smallRepo publishes org/app.git under a new root and returns the root
// and main's commit.
func smallRepo(t *testing.T) (root, commit string) {
	t.Helper()
	root = t.TempDir()
	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{"Dockerfile": "FROM scratch\n"})
	commit = gitserver.Commit(t, w, "one")
	gitserver.Publish(t, w, root, "org/app.git", false)
	return root, commit
}

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func writeSecret(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const secretPassword = "s3cr3t-Passw0rd"

func TestFetchWithInfo_basicAuth(t *testing.T) {
	root, commit := smallRepo(t)
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("alice", secretPassword))
	repo := srv.URL + "/org/app.git"
	secretDir := writeSecret(t, map[string][]byte{"username": []byte("alice\n"), "password": []byte(secretPassword + "\n")})

	tests := []struct {
		name    string
		url     string
		env     map[string]string
		wantErr string
	}{
		{name: "environment", url: repo, env: map[string]string{"GIT_USERNAME": "alice", "GIT_PASSWORD": secretPassword}},
		{name: "token", url: repo, env: map[string]string{"GIT_USERNAME": "alice", "GIT_TOKEN": secretPassword}},
		{name: "basic-auth secret", url: repo, env: map[string]string{"GIT_SECRET_DIR": secretDir}},
		{name: "in the URL", url: strings.Replace(repo, "http://", "http://alice:"+secretPassword+"@", 1)},
		{name: "none", url: repo, wantErr: "at HEAD: the server requires credentials"},
		{name: "wrong password", url: repo, env: map[string]string{"GIT_USERNAME": "alice", "GIT_PASSWORD": secretPassword + "x"}, wantErr: "at HEAD: the server refused the credentials"},
		{name: "wrong password in the URL", url: strings.Replace(repo, "http://", "http://alice:"+secretPassword+"x@", 1), wantErr: "at HEAD: the server refused the credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FetchWithInfo(t.Context(), tc.url, "", filepath.Join(t.TempDir(), "context"), FetchOptions{Getenv: envOf(tc.env)})
			if tc.wantErr != "" {
				if err == nil {
					t.Fatal("FetchWithInfo succeeded")
				}
				want := "fetching git context " + repo + " " + tc.wantErr
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("error = %q, want it to start with %q", err, want)
				}
				if strings.Contains(err.Error(), secretPassword) || strings.Contains(err.Error(), "alice") {
					t.Errorf("error %q shows a credential", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FetchWithInfo: %v", err)
			}
			if got.Commit != commit {
				t.Errorf("commit = %s, want %s", got.Commit, commit)
			}
		})
	}
}

func TestFetchWithInfo_ssh(t *testing.T) {
	root, commit := smallRepo(t)
	srv := gitserver.StartSSH(t)
	repo := srv.URL(filepath.Join(root, "org/app.git"))
	good := writeSecret(t, map[string][]byte{"ssh-privatekey": srv.ClientKey, "known_hosts": srv.KnownHosts})
	changed := writeSecret(t, map[string][]byte{"ssh-privatekey": srv.ClientKey, "known_hosts": srv.OtherKnownHosts})
	unknown := writeSecret(t, map[string][]byte{"ssh-privatekey": srv.ClientKey, "known_hosts": []byte("example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")})
	otherKey := writeSecret(t, map[string][]byte{"ssh-privatekey": []byte(testOtherKey), "known_hosts": srv.KnownHosts})

	tests := []struct {
		name    string
		url     string
		git     string
		secret  string
		wantErr string
	}{
		{name: "key and known_hosts", url: repo + "#main", secret: good},
		{name: "changed host key", url: repo + "#main", secret: changed, wantErr: "at main: the SSH host key does not match known_hosts"},
		{name: "unknown host key", url: repo + "#main", secret: unknown, wantErr: "at main: the SSH host key is not in known_hosts"},
		{name: "unknown host key, insecure", url: repo + "#main", git: "insecure-ignore-host-key=true", secret: unknown},
		{name: "refused key", url: repo + "#main", secret: otherKey, wantErr: "at main: the server refused the SSH key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FetchWithInfo(t.Context(), tc.url, "", filepath.Join(t.TempDir(), "context"),
				FetchOptions{Git: tc.git, Getenv: envOf(map[string]string{"GIT_SECRET_DIR": tc.secret})})
			if tc.wantErr != "" {
				if err == nil {
					t.Fatal("FetchWithInfo succeeded")
				}
				want := "fetching git context " + RedactURL(repo) + " " + tc.wantErr
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("error = %q, want it to start with %q", err, want)
				}
				if strings.Contains(err.Error(), "PRIVATE KEY") {
					t.Errorf("error %q shows the key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FetchWithInfo: %v\nsshd log:\n%s", err, srv.Log())
			}
			if got.Commit != commit {
				t.Errorf("commit = %s, want %s", got.Commit, commit)
			}
		})
	}
}

// testOtherKey is an ed25519 key that no test server authorizes.
const testOtherKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAm0Ue9DqAXgOFki47+u0Z8H4zAvqgRTuNt1L+Oo4CV3AAAAJCGe7LLhnuy
ywAAAAtzc2gtZWQyNTUxOQAAACAm0Ue9DqAXgOFki47+u0Z8H4zAvqgRTuNt1L+Oo4CV3A
AAAEDvfE7oPNZ/eUbOuGcx2/tz7/QUhwkRFli9NehWi1MWrSbRR70OoBeA4WSLjv67Rnwf
jMC+qBFO423Uv46jgJXcAAAACm90aGVyQHRlc3QBAgM=
-----END OPENSSH PRIVATE KEY-----
`

func TestFetchWithInfo_unreachable(t *testing.T) {
	root, _ := smallRepo(t)
	srv := gitserver.StartHTTP(t, root)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/org/app.git"
	ln.Close()

	tests := []struct {
		name, url, want string
	}{
		{name: "closed port", url: closed + "#v1", want: "fetching git context " + closed + " at v1: the host is unreachable"},
		{name: "unknown repository", url: srv.URL + "/org/nope.git#main", want: "fetching git context " + srv.URL + "/org/nope.git at main: repository not found"},
		{name: "unresolvable host", url: "https://nowhere.invalid/org/app.git", want: "fetching git context https://nowhere.invalid/org/app.git at HEAD: the host name does not resolve"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FetchWithInfo(t.Context(), tc.url, "", filepath.Join(t.TempDir(), "context"), FetchOptions{Getenv: envOf(nil)})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error = %v, want one starting with %q", err, tc.want)
			}
		})
	}
}

func TestParseGitURL(t *testing.T) {
	tests := []struct {
		in, pull string
		want     GitSource
	}{
		{in: "git://github.com/org/repo.git#refs/heads/main", want: GitSource{URL: "https://github.com/org/repo.git", Ref: "refs/heads/main"}},
		{in: "git://h/org/repo.git", pull: "http", want: GitSource{URL: "http://h/org/repo.git"}},
		{in: "https://h/org/repo.git#v1:docker/app", want: GitSource{URL: "https://h/org/repo.git", Ref: "v1", SubDir: "docker/app"}},
		{in: "https://h/org/repo.git#:sub", want: GitSource{URL: "https://h/org/repo.git", SubDir: "sub"}},
		{in: "https://bob:tok@h/r.git#main", want: GitSource{URL: "https://h/r.git", Ref: "main", Auth: GitAuth{Username: "bob", Password: "tok"}}},
		{in: "ssh://git@h:2222/org/repo.git#refs/pull/42/head", want: GitSource{URL: "ssh://git@h:2222/org/repo.git", Ref: "refs/pull/42/head"}},
		{in: "git@github.com:org/repo.git#abc1234:sub", want: GitSource{URL: "git@github.com:org/repo.git", Ref: "abc1234", SubDir: "sub"}},
	}
	for _, tc := range tests {
		got, err := ParseGitURL(tc.in, tc.pull)
		if err != nil {
			t.Errorf("ParseGitURL(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseGitURL(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
	if _, err := ParseGitURL("git://h/r.git", "ftp"); err == nil {
		t.Error("ParseGitURL with GIT_PULL_METHOD=ftp succeeded")
	}
}

func TestParseGitOptions(t *testing.T) {
	got, err := ParseGitOptions("branch=dev, single-branch=true,recurse-submodules=true,insecure-skip-tls=false,insecure-ignore-host-key=1")
	if err != nil {
		t.Fatal(err)
	}
	want := GitOptions{Branch: "dev", SingleBranch: true, RecurseSubmodules: true, InsecureIgnoreHostKey: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseGitOptions (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"branch", "depth=1", "single-branch=maybe"} {
		if _, err := ParseGitOptions(bad); err == nil {
			t.Errorf("ParseGitOptions(%q) succeeded", bad)
		}
	}
}

// RedactURL is the one function that shows a URL in a message (the git
// context, ADD's URLs, git sources): the user information, user name
// included, never shows, however the URL is spelt.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://bob:tok@h/r.git":              "https://***@h/r.git",
		"https://tok@h/r.git":                  "https://***@h/r.git",
		"ssh://git:pw@h/r.git":                 "ssh://***@h/r.git",
		"ssh://git@h/r.git":                    "ssh://***@h/r.git",
		"git@h:org/r.git":                      "***@h:org/r.git",
		"tok@en@h:org/r@v.git":                 "***@h:org/r@v.git",
		"https://h/r.git":                      "https://h/r.git",
		"https://h/r.git?ref=main#x":           "https://h/r.git?ref=main#x",
		"h/r.git":                              "h/r.git",
		"https://bob:t%ok@h/r.git":             "https://…", // not a valid URL: where the user part ends is unknown
		"https://bob:pa/ss@h/r.git":            "https://…", // a "/" in the password: shown whole before issue 12
		"http://user:s3cret@[::1/x":            "http://…",
		"//tok@h/r.git":                        "//***@h/r.git",
		"https://a@b:c@h/r.git":                "https://***@h/r.git",
		"git+ssh://git:t0k3n@h:22/r.git":       "git+ssh://***@h:22/r.git",
		"https://%74ok:%70w@h/r.git":           "https://***@h/r.git",
		"https://user:pass@h/r.git#main:sub@x": "https://***@h/r.git#main:sub@x",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFetchGit_credentialsStayWithTheirOrigin is finding 3 of issue 10: a
// submodule on another port of the context's host received the context's
// credentials, because only host names were compared. Credentials now go
// to the context's exact scheme, host and port; the spy server (the same
// host, another port) must see no Authorization header at all.
func TestFetchGit_credentialsStayWithTheirOrigin(t *testing.T) {
	root := t.TempDir()
	var spy gitserver.Spy
	other := gitserver.StartHTTP(t, root, gitserver.WithSpy(&spy))
	lib := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, lib, map[string]string{"lib.txt": "lib\n"})
	gitserver.Commit(t, lib, "lib")
	libBare := gitserver.Publish(t, lib, root, "org/lib.git", true)

	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{"Dockerfile": "FROM scratch\n"})
	gitserver.Git(t, w, "-c", "protocol.file.allow=always", "submodule", "add", "-q", libBare, "lib")
	gitserver.Git(t, w, "config", "-f", ".gitmodules", "submodule.lib.url", other.URL+"/org/lib.git")
	gitserver.Commit(t, w, "with lib")
	gitserver.Publish(t, w, root, "org/app.git", true)
	own := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("alice", secretPassword))

	dest := filepath.Join(t.TempDir(), "context")
	_, err := FetchWithInfo(t.Context(), own.URL+"/org/app.git", "", dest, FetchOptions{
		Git:    "recurse-submodules=true",
		Getenv: envOf(map[string]string{"GIT_USERNAME": "alice", "GIT_PASSWORD": secretPassword}),
	})
	if err != nil {
		t.Fatalf("FetchWithInfo: %v", err)
	}
	if got := readFile(t, filepath.Join(dest, "lib/lib.txt")); got != "lib\n" {
		t.Errorf("lib/lib.txt = %q: the submodule was not checked out", got)
	}
	if spy.Requests() == 0 {
		t.Fatal("the submodule's server received no request")
	}
	if got := spy.Credentialed(); len(got) != 0 {
		t.Errorf("the submodule on another port received credentials: %q", got)
	}
}

// TestGitAuth_method checks where each credential may go: the context's
// to its exact origin, per-host tokens and headers to https URLs of their
// host only.
func TestGitAuth_method(t *testing.T) {
	a := GitAuth{
		Origin: GitOrigin("http://git.example.com/org/app.git"), Username: "alice", Password: secretPassword,
		SSHKey: []byte(testOtherKey), KnownHosts: []byte("git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"),
	}.WithHostSecrets(map[string][]byte{
		"GIT_AUTH_TOKEN.tokens.example.com:8443": []byte("tok\n"),
		"GIT_AUTH_HEADER.headers.example.com":    []byte("Bearer hdr"),
		"GIT_AUTH_TOKEN.":                        []byte("no host"),
	})
	tests := []struct {
		url  string
		want string // the method's Name and user, "" for none
	}{
		{url: "http://git.example.com/org/lib.git", want: "http-basic-auth alice"},
		{url: "http://git.example.com:80/org/lib.git", want: "http-basic-auth alice"},
		{url: "http://GIT.example.com/org/lib.git", want: "http-basic-auth alice"},
		{url: "http://git.example.com:8080/org/lib.git"},
		{url: "https://git.example.com/org/lib.git"},
		{url: "http://evil.example.com/org/lib.git"},
		{url: "https://tokens.example.com:8443/x.git", want: "http-basic-auth x-access-token"},
		{url: "https://tokens.example.com/x.git"},
		{url: "http://tokens.example.com:8443/x.git"},
		{url: "https://headers.example.com/x.git", want: "http-authorization-header"},
		{url: "ssh://git@git.example.com/org/lib.git", want: "ssh-public-key-callback git"},
	}
	for _, tc := range tests {
		m, err := a.method(tc.url, false)
		if err != nil {
			t.Errorf("method(%s): %v", tc.url, err)
			continue
		}
		got := ""
		switch m := m.(type) {
		case nil:
		case *githttp.BasicAuth:
			got = m.Name() + " " + m.Username
		case *gitssh.PublicKeysCallback:
			got = m.Name() + " " + m.User
		default:
			got = m.Name()
		}
		if got != tc.want {
			t.Errorf("method(%s) = %q, want %q", tc.url, got, tc.want)
		}
	}
	own := GitAuth{Origin: GitOrigin("git@git.example.com:org/app.git"), SSHKey: a.SSHKey, KnownHosts: a.KnownHosts}
	m, err := own.method("ssh://git@git.example.com:22/org/lib.git", false)
	if _, ok := m.(*gitssh.PublicKeys); !ok || err != nil {
		t.Errorf("the SSH key is not offered to its own origin: %T, %v", m, err)
	}
	if m, _ := own.method("ssh://git@git.example.com:2222/org/lib.git", false); m.Name() != gitssh.PublicKeysCallbackName {
		t.Errorf("the SSH key is offered to another port: %T", m)
	}
}

func TestGitOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://h.example/r.git":     "https://h.example:443",
		"http://u:p@H.example:8080/r": "http://h.example:8080",
		"git@h.example:org/r.git":     "ssh://h.example:22",
		"ssh://git@h.example:2222/r":  "ssh://h.example:2222",
		"git://h.example/r":           "git://h.example:9418",
		"http://[::1]:3000/r.git":     "http://[::1]:3000",
		"/local/path":                 "",
		"file:///srv/git/r.git":       "",
	} {
		if got := GitOrigin(in); got != want {
			t.Errorf("GitOrigin(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFetchWithInfo_knownHostsReadOnce: OpenSSH's known_hosts files are read
// when the executor starts (DefaultKnownHosts), not when a fetch needs them:
// by then a RUN step could have written its own server's key there (with
// /etc/hosts naming its server) and an ADD over ssh would trust it.
func TestFetchWithInfo_knownHostsReadOnce(t *testing.T) {
	root, commit := smallRepo(t)
	srv := gitserver.StartSSH(t)
	repo := srv.URL(filepath.Join(root, "org/app.git"))
	kh := filepath.Join(t.TempDir(), "known_hosts")
	t.Setenv("SSH_KNOWN_HOSTS", kh)
	load := func() GitAuth {
		a := GitAuth{Origin: GitOrigin(repo), SSHKey: srv.ClientKey}
		a.KnownHosts, a.NoDefaultKnownHosts = DefaultKnownHosts(os.Getenv), true
		return a
	}

	early := load() // no known_hosts file yet
	if err := os.WriteFile(kh, srv.KnownHosts, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := FetchWithInfo(t.Context(), repo+"#main", "", filepath.Join(t.TempDir(), "context"), FetchOptions{Auth: &early})
	if err == nil || !strings.Contains(err.Error(), "the SSH host key is not in known_hosts") {
		t.Errorf("a known_hosts file written after start was read: %v", err)
	}

	late := load()
	got, err := FetchWithInfo(t.Context(), repo+"#main", "", filepath.Join(t.TempDir(), "context"), FetchOptions{Auth: &late})
	if err != nil || got.Commit != commit {
		t.Errorf("with the file read at start: %v, %+v", err, got)
	}
}
