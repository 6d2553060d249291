package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
)

// testSecret is the webhook secret of the test ImageBuilds; the log test looks for it.
const testSecret = "It's a secret to everybody 8c1e5d"

// bodyMarker is in every testdata payload; the log test looks for it.
const bodyMarker = "BODY-MARKER-7f3a"

const pinnedSHA = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"

func nn(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: "team-a", Name: name}
}

// targets are the ImageBuilds the tests' Lookup knows.
var targets = map[types.NamespacedName]*Target{
	nn("demo-github"):    {URL: "https://github.com/slipway-dev/demo", Revision: "main", Secret: []byte(testSecret)},
	nn("demo-default"):   {URL: "git@github.com:slipway-dev/demo.git", Revision: "", Secret: []byte(testSecret)},
	nn("demo-pinned"):    {URL: "https://github.com/slipway-dev/demo", Revision: pinnedSHA, Secret: []byte(testSecret)},
	nn("demo-gitlab"):    {URL: "git@gitlab.example.com:platform/demo.git", Revision: "refs/heads/main", Secret: []byte(testSecret)},
	nn("demo-release"):   {URL: "https://gitlab.example.com/platform/demo", Revision: "refs/tags/v1.0.0", Secret: []byte(testSecret)},
	nn("demo-gitea"):     {URL: "ssh://git@git.example.com:2222/platform/demo.git", Revision: "main", Secret: []byte(testSecret)},
	nn("demo-bitbucket"): {URL: "git@bitbucket.org:slipway-dev/demo.git", Revision: "main", Secret: []byte(testSecret)},
	nn("demo-generic"):   {URL: "https://git.example.com/platform/demo.git", Revision: "main", Secret: []byte(testSecret)},
	nn("no-secret"):      {URL: "https://github.com/slipway-dev/demo", Revision: "main", Secret: []byte{}},
	nn("nil-secret"):     {URL: "https://github.com/slipway-dev/demo", Revision: "main"},
}

// fixture is a Handler behind a real HTTP server, with a recording Trigger and a logger
// writing to a buffer.
type fixture struct {
	srv *httptest.Server

	mu    sync.Mutex
	calls []call
	logs  bytes.Buffer
}

type call struct {
	Key   types.NamespacedName
	Event Event
}

func lookupTargets(_ context.Context, key types.NamespacedName) (*Target, error) {
	if t, ok := targets[key]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("getting ImageBuild %s: %w", key, ErrNotFound)
}

func newFixture(t *testing.T, lookup LookupFunc, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{}
	if lookup == nil {
		lookup = lookupTargets
	}
	logger := funcr.New(func(prefix, args string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		fmt.Fprintln(&f.logs, prefix, args)
	}, funcr.Options{Verbosity: 1})
	trigger := func(key types.NamespacedName, ev Event) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, call{key, ev})
	}
	h := New(lookup, trigger, append([]Option{WithLogger(logger)}, opts...)...)
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) triggered() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fixture) logged() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.String()
}

// answer is what the server answered.
type answer struct {
	status int
	header http.Header
	raw    []byte
	body   response
}

func (f *fixture) post(t *testing.T, path string, hdr http.Header, body []byte) answer {
	t.Helper()
	return f.do(t, http.MethodPost, path, hdr, bytes.NewReader(body))
}

func (f *fixture) do(t *testing.T, method, path string, hdr http.Header, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, raw: raw}
	if method != http.MethodHead {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
		}
	}
	return a
}

func readPayload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit replaces old by new in a payload, failing if old is not there.
func edit(t *testing.T, b []byte, pairs ...string) []byte {
	t.Helper()
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("payload has no %q", pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return []byte(s)
}

func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// The headers each git server sends, as their documentation and sources show.

func githubHeaders(event, secret string, body []byte) http.Header {
	return http.Header{
		"Content-Type":        {"application/json"},
		"User-Agent":          {"GitHub-Hookshot/044aadd"},
		"X-Github-Event":      {event},
		"X-Github-Delivery":   {"72d3162e-cc78-11e3-81ab-4c9367dc0958"},
		"X-Github-Hook-Id":    {"109948940"},
		"X-Hub-Signature-256": {"sha256=" + hmacHex(secret, body)},
	}
}

func gitlabHeaders(event, token string) http.Header {
	return http.Header{
		"Content-Type":          {"application/json"},
		"User-Agent":            {"GitLab/17.11.0"},
		"X-Gitlab-Event":        {event},
		"X-Gitlab-Event-Uuid":   {"13792a34-cac6-4fda-95a8-c58e00a3954e"},
		"X-Gitlab-Webhook-Uuid": {"8a1a9d3b-2f6a-4d39-9a5a-2a0e45b1f0c6"},
		"X-Gitlab-Instance":     {"https://gitlab.example.com"},
		"X-Gitlab-Token":        {token},
	}
}

// giteaHeaders are what Gitea sends; Forgejo sends them too, and its own.
func giteaHeaders(event, secret string, body []byte, forgejo bool) http.Header {
	sig := hmacHex(secret, body)
	m1 := hmac.New(sha1.New, []byte(secret))
	m1.Write(body)
	id := "f6266f16-1bf3-46a5-9ea4-602e06ead473"
	h := http.Header{
		"Content-Type":        {"application/json"},
		"X-Gitea-Delivery":    {id},
		"X-Gitea-Event":       {event},
		"X-Gitea-Event-Type":  {event},
		"X-Gitea-Signature":   {sig},
		"X-Gogs-Delivery":     {id},
		"X-Gogs-Event":        {event},
		"X-Gogs-Signature":    {sig},
		"X-Hub-Signature":     {"sha1=" + hex.EncodeToString(m1.Sum(nil))},
		"X-Hub-Signature-256": {"sha256=" + sig},
		"X-Github-Delivery":   {id},
		"X-Github-Event":      {event},
	}
	if forgejo {
		h["X-Forgejo-Delivery"] = []string{id}
		h["X-Forgejo-Event"] = []string{event}
		h["X-Forgejo-Signature"] = []string{sig}
	}
	return h
}

func bitbucketHeaders(event, secret string, body []byte) http.Header {
	return http.Header{
		"Content-Type":     {"application/json"},
		"User-Agent":       {"Bitbucket-Webhooks/2.0"},
		"X-Event-Key":      {event},
		"X-Hook-Uuid":      {"{cb5a8a53-6a3b-4b5a-8a3e-0f0e6b3f0d2d}"},
		"X-Request-Uuid":   {"6e6e1d5b-3a3c-4b1f-9d0e-7f3b2f6d8c11"},
		"X-Attempt-Number": {"1"},
		"X-Hub-Signature":  {"sha256=" + hmacHex(secret, body)},
	}
}

func genericHeaders(secret string, body []byte) http.Header {
	return http.Header{
		"Content-Type":            {"application/json"},
		"X-Slipway-Delivery":      {"ci-run-4711"},
		"X-Slipway-Signature-256": {"sha256=" + hmacHex(secret, body)},
	}
}

func TestHandler_triggers(t *testing.T) {
	ghPush := readPayload(t, "github-push.json")
	ghForm := []byte(url.Values{"payload": {string(ghPush)}}.Encode())
	glPush := readPayload(t, "gitlab-push.json")
	glTag := readPayload(t, "gitlab-tag-push.json")
	gtPush := readPayload(t, "gitea-push.json")
	bbPush := readPayload(t, "bitbucket-push.json")
	genBody := []byte(`{"repository":"git@git.example.com:platform/demo","ref":"refs/heads/main"}`)
	formHeaders := githubHeaders("push", testSecret, ghForm)
	formHeaders.Set("Content-Type", "application/x-www-form-urlencoded")
	// Gitea and Forgejo sign the JSON, and send it as the form's payload field.
	gtForm := []byte(url.Values{"payload": {string(gtPush)}}.Encode())
	gtFormHeaders := giteaHeaders("push", testSecret, gtPush, false)
	gtFormHeaders.Set("Content-Type", "application/x-www-form-urlencoded")
	fjFormHeaders := giteaHeaders("push", testSecret, gtPush, true)
	fjFormHeaders.Set("Content-Type", "application/x-www-form-urlencoded")

	tests := []struct {
		name   string
		path   string
		header http.Header
		body   []byte
		want   call
	}{{
		name: "GitHub push", path: "/hooks/team-a/demo-github",
		header: githubHeaders("push", testSecret, ghPush), body: ghPush,
		want: call{nn("demo-github"), Event{GitHub, "refs/heads/main", "72d3162e-cc78-11e3-81ab-4c9367dc0958"}},
	}, {
		name: "GitHub push, provider in the path", path: "/hooks/team-a/demo-github/github",
		header: githubHeaders("push", testSecret, ghPush), body: ghPush,
		want: call{nn("demo-github"), Event{GitHub, "refs/heads/main", "72d3162e-cc78-11e3-81ab-4c9367dc0958"}},
	}, {
		name: "GitHub push as a form (content type application/x-www-form-urlencoded)", path: "/hooks/team-a/demo-github",
		header: formHeaders, body: ghForm,
		want: call{nn("demo-github"), Event{GitHub, "refs/heads/main", "72d3162e-cc78-11e3-81ab-4c9367dc0958"}},
	}, {
		name: "GitHub push of the default branch, revision empty", path: "/hooks/team-a/demo-default",
		header: githubHeaders("push", testSecret, ghPush), body: ghPush,
		want: call{nn("demo-default"), Event{GitHub, "refs/heads/main", "72d3162e-cc78-11e3-81ab-4c9367dc0958"}},
	}, {
		name: "GitLab push", path: "/hooks/team-a/demo-gitlab",
		header: gitlabHeaders("Push Hook", testSecret), body: glPush,
		want: call{nn("demo-gitlab"), Event{GitLab, "refs/heads/main", "13792a34-cac6-4fda-95a8-c58e00a3954e"}},
	}, {
		name: "GitLab push, provider in the path", path: "/hooks/team-a/demo-gitlab/gitlab",
		header: gitlabHeaders("Push Hook", testSecret), body: glPush,
		want: call{nn("demo-gitlab"), Event{GitLab, "refs/heads/main", "13792a34-cac6-4fda-95a8-c58e00a3954e"}},
	}, {
		name: "GitLab system hook push", path: "/hooks/team-a/demo-gitlab",
		header: gitlabHeaders("System Hook", testSecret), body: glPush,
		want: call{nn("demo-gitlab"), Event{GitLab, "refs/heads/main", "13792a34-cac6-4fda-95a8-c58e00a3954e"}},
	}, {
		name: "GitLab tag push of a tag revision", path: "/hooks/team-a/demo-release",
		header: gitlabHeaders("Tag Push Hook", testSecret), body: glTag,
		want: call{nn("demo-release"), Event{GitLab, "refs/tags/v1.0.0", "13792a34-cac6-4fda-95a8-c58e00a3954e"}},
	}, {
		name: "Gitea push", path: "/hooks/team-a/demo-gitea",
		header: giteaHeaders("push", testSecret, gtPush, false), body: gtPush,
		want: call{nn("demo-gitea"), Event{Gitea, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Gitea push, provider in the path", path: "/hooks/team-a/demo-gitea/gitea",
		header: giteaHeaders("push", testSecret, gtPush, false), body: gtPush,
		want: call{nn("demo-gitea"), Event{Gitea, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Gitea push to the github path (Gitea sends GitHub's headers too)", path: "/hooks/team-a/demo-gitea/github",
		header: giteaHeaders("push", testSecret, gtPush, false), body: gtPush,
		want: call{nn("demo-gitea"), Event{GitHub, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Gitea push as a form", path: "/hooks/team-a/demo-gitea",
		header: gtFormHeaders, body: gtForm,
		want: call{nn("demo-gitea"), Event{Gitea, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Forgejo push as a form", path: "/hooks/team-a/demo-gitea",
		header: fjFormHeaders, body: gtForm,
		want: call{nn("demo-gitea"), Event{Forgejo, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Forgejo push", path: "/hooks/team-a/demo-gitea",
		header: giteaHeaders("push", testSecret, gtPush, true), body: gtPush,
		want: call{nn("demo-gitea"), Event{Forgejo, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Forgejo push, provider in the path", path: "/hooks/team-a/demo-gitea/forgejo",
		header: giteaHeaders("push", testSecret, gtPush, true), body: gtPush,
		want: call{nn("demo-gitea"), Event{Forgejo, "refs/heads/main", "f6266f16-1bf3-46a5-9ea4-602e06ead473"}},
	}, {
		name: "Bitbucket push", path: "/hooks/team-a/demo-bitbucket",
		header: bitbucketHeaders("repo:push", testSecret, bbPush), body: bbPush,
		want: call{nn("demo-bitbucket"), Event{Bitbucket, "refs/heads/main", "6e6e1d5b-3a3c-4b1f-9d0e-7f3b2f6d8c11"}},
	}, {
		name: "Bitbucket push, provider in the path", path: "/hooks/team-a/demo-bitbucket/bitbucket",
		header: bitbucketHeaders("repo:push", testSecret, bbPush), body: bbPush,
		want: call{nn("demo-bitbucket"), Event{Bitbucket, "refs/heads/main", "6e6e1d5b-3a3c-4b1f-9d0e-7f3b2f6d8c11"}},
	}, {
		name: "Bitbucket push of two branches, the second the revision", path: "/hooks/team-a/demo-bitbucket",
		header: nil, // signed below
		body:   edit(t, bbPush, `"changes": [`, `"changes": [{"new": {"type": "branch", "name": "dev"}, "old": null, "created": true}, `),
		want:   call{nn("demo-bitbucket"), Event{Bitbucket, "refs/heads/main", "6e6e1d5b-3a3c-4b1f-9d0e-7f3b2f6d8c11"}},
	}, {
		name: "generic with repository and ref", path: "/hooks/team-a/demo-generic",
		header: genericHeaders(testSecret, genBody), body: genBody,
		want: call{nn("demo-generic"), Event{Generic, "refs/heads/main", "ci-run-4711"}},
	}, {
		name: "generic with a short ref", path: "/hooks/team-a/demo-generic/generic",
		header: genericHeaders(testSecret, []byte(`{"ref":"main"}`)), body: []byte(`{"ref":"main"}`),
		want: call{nn("demo-generic"), Event{Generic, "main", "ci-run-4711"}},
	}, {
		name: "generic with an empty body: check now", path: "/hooks/team-a/demo-generic",
		header: genericHeaders(testSecret, nil), body: nil,
		want: call{nn("demo-generic"), Event{Generic, "", "ci-run-4711"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			hdr := tc.header
			if hdr == nil {
				hdr = bitbucketHeaders("repo:push", testSecret, tc.body)
			}
			a := f.post(t, tc.path, hdr, tc.body)
			if a.status != http.StatusAccepted || a.body != (response{Result: resultTriggered}) {
				t.Fatalf("got %d %s, want 202 triggered", a.status, a.raw)
			}
			if diff := cmp.Diff([]call{tc.want}, f.triggered()); diff != "" {
				t.Errorf("Trigger calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandler_unauthorized(t *testing.T) {
	ghPush := readPayload(t, "github-push.json")
	glPush := readPayload(t, "gitlab-push.json")
	gtPush := readPayload(t, "gitea-push.json")
	bbPush := readPayload(t, "bitbucket-push.json")
	genBody := []byte(`{"ref":"main"}`)
	with := func(h http.Header, kv ...string) http.Header {
		h = h.Clone()
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				h.Del(kv[i])
			} else {
				h.Set(kv[i], kv[i+1])
			}
		}
		return h
	}
	good := githubHeaders("push", testSecret, ghPush)
	twoSigs := good.Clone()
	twoSigs.Add("X-Hub-Signature-256", "sha256="+hmacHex("other", ghPush))
	notJSON := []byte("{not json " + bodyMarker)
	gtForm := []byte(url.Values{"payload": {string(gtPush)}}.Encode())
	formSignedAsBody := with(giteaHeaders("push", testSecret, gtForm, false), "Content-Type", "application/x-www-form-urlencoded")
	formOtherPayload := []byte(url.Values{"payload": {string(gtPush)}, "x": {"1"}}.Encode())
	formNoPayload := []byte("x=1")

	tests := []struct {
		name   string
		path   string
		header http.Header
		body   []byte
	}{
		{"GitHub signature with another secret", "/hooks/team-a/demo-github", githubHeaders("push", "other secret", ghPush), ghPush},
		{"GitHub signature of another body", "/hooks/team-a/demo-github", githubHeaders("push", testSecret, glPush), ghPush},
		{"GitHub signature missing", "/hooks/team-a/demo-github", with(good, "X-Hub-Signature-256", ""), ghPush},
		{"GitHub signature without sha256=", "/hooks/team-a/demo-github", with(good, "X-Hub-Signature-256", hmacHex(testSecret, ghPush)), ghPush},
		{"GitHub signature not hex", "/hooks/team-a/demo-github", with(good, "X-Hub-Signature-256", "sha256=zz"+hmacHex(testSecret, ghPush)[2:]), ghPush},
		{"GitHub signature truncated", "/hooks/team-a/demo-github", with(good, "X-Hub-Signature-256", "sha256="+hmacHex(testSecret, ghPush)[:32]), ghPush},
		{"GitHub SHA-1 signature only", "/hooks/team-a/demo-github", with(giteaHeaders("push", testSecret, ghPush, false), "X-Hub-Signature-256", "", "X-Gitea-Event", "", "X-Gitea-Signature", ""), ghPush},
		{"GitHub two signatures, one good", "/hooks/team-a/demo-github", twoSigs, ghPush},
		{"bad signature on a body that is not JSON (verified before parsed)", "/hooks/team-a/demo-github", githubHeaders("push", "other secret", notJSON), notJSON},
		{"GitLab wrong token", "/hooks/team-a/demo-gitlab", gitlabHeaders("Push Hook", "wrong"), glPush},
		{"GitLab token a prefix of the secret", "/hooks/team-a/demo-gitlab", gitlabHeaders("Push Hook", testSecret[:10]), glPush},
		{"GitLab token missing", "/hooks/team-a/demo-gitlab", with(gitlabHeaders("Push Hook", testSecret), "X-Gitlab-Token", ""), glPush},
		{"GitLab token given as a signature", "/hooks/team-a/demo-gitlab", with(gitlabHeaders("Push Hook", ""), "X-Gitlab-Token", "", "X-Hub-Signature-256", "sha256="+hmacHex(testSecret, glPush)), glPush},
		{"Gitea signature with another secret", "/hooks/team-a/demo-gitea", giteaHeaders("push", "other", gtPush, false), gtPush},
		{"Gitea form signed as sent (Gitea signs the JSON)", "/hooks/team-a/demo-gitea", formSignedAsBody, gtForm},
		{"Gitea form signed as sent, another field", "/hooks/team-a/demo-gitea", with(giteaHeaders("push", testSecret, formOtherPayload, false), "Content-Type", "application/x-www-form-urlencoded"), formOtherPayload},
		{"Gitea form without payload", "/hooks/team-a/demo-gitea", with(giteaHeaders("push", testSecret, formNoPayload, false), "Content-Type", "application/x-www-form-urlencoded"), formNoPayload},
		{"Forgejo signature with another secret", "/hooks/team-a/demo-gitea", giteaHeaders("push", "other", gtPush, true), gtPush},
		{"Bitbucket signature with another secret", "/hooks/team-a/demo-bitbucket", bitbucketHeaders("repo:push", "other", bbPush), bbPush},
		{"Bitbucket SHA-1 signature", "/hooks/team-a/demo-bitbucket", with(bitbucketHeaders("repo:push", testSecret, bbPush), "X-Hub-Signature", "sha1="+hmacHex(testSecret, bbPush)), bbPush},
		{"generic signature with another secret", "/hooks/team-a/demo-generic", genericHeaders("other", genBody), genBody},
		{"generic signature missing", "/hooks/team-a/demo-generic/generic", with(genericHeaders(testSecret, genBody), "X-Slipway-Signature-256", ""), genBody},
		{"no provider's headers", "/hooks/team-a/demo-github", http.Header{"Content-Type": {"application/json"}}, ghPush},
		{"provider in the path is not the sender", "/hooks/team-a/demo-github/gitlab", good, ghPush},
		{"empty secret, signed with the empty key", "/hooks/team-a/no-secret", githubHeaders("push", "", ghPush), ghPush},
		{"nil secret, signed with the empty key", "/hooks/team-a/nil-secret", githubHeaders("push", "", ghPush), ghPush},
		{"empty secret, GitLab empty token", "/hooks/team-a/no-secret", with(gitlabHeaders("Push Hook", ""), "X-Gitlab-Token", ""), glPush},
		{"unknown ImageBuild, signed with a real secret", "/hooks/team-a/no-such-build", good, ghPush},
		{"unknown namespace", "/hooks/team-b/demo-github", good, ghPush},
		{"name that no ImageBuild can have", "/hooks/team-a/Demo_GitHub", good, ghPush},
	}
	var first answer
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			a := f.post(t, tc.path, tc.header, tc.body)
			if a.status != http.StatusUnauthorized {
				t.Fatalf("got %d %s, want 401", a.status, a.raw)
			}
			// Every 401 is the same, whatever failed: the endpoint tells nobody which
			// ImageBuilds exist or have a secret.
			if i == 0 {
				first = a
			} else {
				if !bytes.Equal(a.raw, first.raw) {
					t.Errorf("body %q, the first case's %q", a.raw, first.raw)
				}
				for _, h := range []string{"Content-Type", "Retry-After", "Allow", "Www-Authenticate"} {
					if a.header.Get(h) != first.header.Get(h) {
						t.Errorf("header %s %q, the first case's %q", h, a.header.Get(h), first.header.Get(h))
					}
				}
			}
			if calls := f.triggered(); len(calls) != 0 {
				t.Errorf("Trigger called: %v", calls)
			}
		})
	}
	if want := `{"result":"rejected","reason":"unauthorized"}` + "\n"; string(first.raw) != want {
		t.Errorf("401 body %q, want %q", first.raw, want)
	}
}

func TestHandler_ignored(t *testing.T) {
	ghPush := readPayload(t, "github-push.json")
	glPush := readPayload(t, "gitlab-push.json")
	bbPush := readPayload(t, "bitbucket-push.json")
	gh := func(body []byte) http.Header { return githubHeaders("push", testSecret, body) }
	gl := func(event string) http.Header { return gitlabHeaders(event, testSecret) }

	ghDev := edit(t, ghPush, `"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`)
	ghOther := edit(t, ghPush, "slipway-dev/demo", "slipway-dev/other")
	ghNoRef := edit(t, ghPush, `"ref": "refs/heads/main",`, ``)
	ghTag := edit(t, ghPush, `"ref": "refs/heads/main"`, `"ref": "refs/tags/main"`, `"base_ref": null`, `"base_ref": "refs/heads/main"`)
	ghDeleted := edit(t, ghPush, `"deleted": false`, `"deleted": true`, `"after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"`, `"after": "0000000000000000000000000000000000000000"`)
	glDeleted := edit(t, glPush, `"after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"`, `"after": "0000000000000000000000000000000000000000"`)
	glMR := []byte(`{"object_kind":"merge_request","event_type":"merge_request","project":{"git_http_url":"https://gitlab.example.com/platform/demo.git"}}`)
	bbDev := edit(t, bbPush, `"name": "main"`, `"name": "dev"`)
	bbTag := edit(t, bbPush, `"type": "branch",
          "name": "main"`, `"type": "tag",
          "name": "main"`)
	bbClosed := bitbucketDeletion(t, bbPush)
	bbFork := edit(t, bbPush, "slipway-dev/demo", "someone-else/demo")
	genOtherRef := []byte(`{"ref":"refs/heads/dev"}`)
	genOtherRepo := []byte(`{"repository":"https://git.example.com/platform/other.git","ref":"main"}`)

	tests := []struct {
		name   string
		path   string
		header http.Header
		body   []byte
		reason string
	}{
		{"GitHub push of another branch", "/hooks/team-a/demo-github", gh(ghDev), ghDev, "branch dev is not the revision main"},
		{"GitHub push of another repository", "/hooks/team-a/demo-github", gh(ghOther), ghOther, "repository github.com/slipway-dev/other is not the ImageBuild's source"},
		{"GitHub tag push, branch revision of the same name", "/hooks/team-a/demo-github", gh(ghTag), ghTag, "tag main is not the revision main"},
		{"GitHub branch deleted", "/hooks/team-a/demo-github", gh(ghDeleted), ghDeleted, "branch main was deleted"},
		{"GitHub push of another branch than the default", "/hooks/team-a/demo-default", gh(ghDev), ghDev, "branch dev is not the default branch main"},
		{"GitHub tag push, default branch revision", "/hooks/team-a/demo-default", gh(ghTag), ghTag, "tag main is not a branch, and the revision is the default branch"},
		{"GitHub push without a ref", "/hooks/team-a/demo-github", gh(ghNoRef), ghNoRef, "the payload names no ref"},
		{"GitHub push, revision a commit", "/hooks/team-a/demo-pinned", gh(ghPush), ghPush, "the revision is a commit, which no push moves"},
		{"GitHub ping", "/hooks/team-a/demo-github", githubHeaders("ping", testSecret, readPayload(t, "github-ping.json")), readPayload(t, "github-ping.json"), "ping"},
		{"GitHub issues event", "/hooks/team-a/demo-github", githubHeaders("issues", testSecret, []byte(`{"action":"opened"}`)), []byte(`{"action":"opened"}`), "event issues is not a push"},
		{"GitLab branch push, tag revision", "/hooks/team-a/demo-release", gl("Push Hook"), glPush, "branch main is not the revision refs/tags/v1.0.0"},
		{"GitLab tag push, branch revision", "/hooks/team-a/demo-gitlab", gl("Tag Push Hook"), readPayload(t, "gitlab-tag-push.json"), "tag v1.0.0 is not the revision refs/heads/main"},
		{"GitLab branch deleted", "/hooks/team-a/demo-gitlab", gl("Push Hook"), glDeleted, "branch main was deleted"},
		{"GitLab merge request", "/hooks/team-a/demo-gitlab", gl("Merge Request Hook"), glMR, "event Merge Request Hook is not a push"},
		{"Bitbucket push of another branch", "/hooks/team-a/demo-bitbucket", bitbucketHeaders("repo:push", testSecret, bbDev), bbDev, "branch dev is not the revision main"},
		{"Bitbucket tag push", "/hooks/team-a/demo-bitbucket", bitbucketHeaders("repo:push", testSecret, bbTag), bbTag, "tag main is not the revision main"},
		{"Bitbucket branch deleted", "/hooks/team-a/demo-bitbucket", bitbucketHeaders("repo:push", testSecret, bbClosed), bbClosed, "branch main was deleted"},
		{"Bitbucket push of a fork", "/hooks/team-a/demo-bitbucket", bitbucketHeaders("repo:push", testSecret, bbFork), bbFork, "repository bitbucket.org/someone-else/demo is not the ImageBuild's source"},
		{"Bitbucket pull request", "/hooks/team-a/demo-bitbucket", bitbucketHeaders("pullrequest:created", testSecret, []byte(`{}`)), []byte(`{}`), "event pullrequest:created is not a push"},
		{"generic push of another branch", "/hooks/team-a/demo-generic", genericHeaders(testSecret, genOtherRef), genOtherRef, "branch dev is not the revision main"},
		{"generic push of another repository", "/hooks/team-a/demo-generic", genericHeaders(testSecret, genOtherRepo), genOtherRepo, "repository git.example.com/platform/other is not the ImageBuild's source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			a := f.post(t, tc.path, tc.header, tc.body)
			want := response{Result: resultIgnored, Reason: tc.reason}
			if a.status != http.StatusOK || a.body != want {
				t.Errorf("got %d %s, want 200 %+v", a.status, a.raw, want)
			}
			if calls := f.triggered(); len(calls) != 0 {
				t.Errorf("Trigger called: %v", calls)
			}
		})
	}
}

// bitbucketDeletion turns a Bitbucket push into the deletion of its branch: new is null,
// closed is true.
func bitbucketDeletion(t *testing.T, push []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(push, &m); err != nil {
		t.Fatal(err)
	}
	change := m["push"].(map[string]any)["changes"].([]any)[0].(map[string]any)
	change["new"], change["closed"], change["commits"] = nil, true, []any{}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandler_badPayload(t *testing.T) {
	notJSON := []byte("{not json " + bodyMarker)
	form := []byte("nopayload=1")
	formHeaders := githubHeaders("push", testSecret, form)
	formHeaders.Set("Content-Type", "application/x-www-form-urlencoded")
	tests := []struct {
		name   string
		header http.Header
		body   []byte
		reason string
	}{
		{"signed body that is not JSON", githubHeaders("push", testSecret, notJSON), notJSON, "the payload is not valid JSON"},
		{"signed form without payload", formHeaders, form, "the form has no payload field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			a := f.post(t, "/hooks/team-a/demo-github", tc.header, tc.body)
			if want := (response{resultRejected, tc.reason}); a.status != http.StatusBadRequest || a.body != want {
				t.Errorf("got %d %s, want 400 %+v", a.status, a.raw, want)
			}
			if calls := f.triggered(); len(calls) != 0 {
				t.Errorf("Trigger called: %v", calls)
			}
		})
	}
}

func TestHandler_bodyLimit(t *testing.T) {
	const limit = 4096
	pad := func(n int) []byte { // a generic body of exactly n bytes
		b := []byte(`{"ref":"main"}`)
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...)
	}
	tests := []struct {
		name    string
		body    []byte
		chunked bool
		status  int
	}{
		{"at the limit", pad(limit), false, http.StatusAccepted},
		{"one byte over, with Content-Length", pad(limit + 1), false, http.StatusRequestEntityTooLarge},
		{"far over, with Content-Length", pad(10 * limit), false, http.StatusRequestEntityTooLarge},
		{"one byte over, chunked", pad(limit + 1), true, http.StatusRequestEntityTooLarge},
		{"far over, chunked", pad(10 * limit), true, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, WithMaxBodyBytes(limit))
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // no length known: sent chunked
			}
			a := f.do(t, http.MethodPost, "/hooks/team-a/demo-generic", genericHeaders(testSecret, tc.body), body)
			if a.status != tc.status {
				t.Fatalf("got %d %s, want %d", a.status, a.raw, tc.status)
			}
			wantCalls := 0
			if tc.status == http.StatusAccepted {
				wantCalls = 1
			} else if want := (response{resultRejected, "body larger than 4096 bytes"}); a.body != want {
				t.Errorf("body %+v, want %+v", a.body, want)
			}
			if calls := f.triggered(); len(calls) != wantCalls {
				t.Errorf("Trigger called %d times, want %d", len(calls), wantCalls)
			}
		})
	}
}

func TestHandler_methods(t *testing.T) {
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		t.Run(m, func(t *testing.T) {
			f := newFixture(t, nil)
			body := readPayload(t, "github-push.json")
			a := f.do(t, m, "/hooks/team-a/demo-github", githubHeaders("push", testSecret, body), bytes.NewReader(body))
			if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "POST" {
				t.Errorf("got %d Allow %q, want 405 Allow POST", a.status, a.header.Get("Allow"))
			}
			if calls := f.triggered(); len(calls) != 0 {
				t.Errorf("Trigger called: %v", calls)
			}
		})
	}
}

func TestHandler_paths(t *testing.T) {
	body := []byte(`{"ref":"main"}`)
	for _, p := range []string{"/", "/hooks", "/hooks/", "/hooks/team-a", "/hooks/team-a/", "/hooks//demo-generic",
		"/hooks/team-a/demo-generic/svn", "/hooks/team-a/demo-generic/generic/x", "/other/team-a/demo-generic"} {
		t.Run(p, func(t *testing.T) {
			f := newFixture(t, nil)
			a := f.post(t, p, genericHeaders(testSecret, body), body)
			if a.status != http.StatusNotFound {
				t.Errorf("got %d %s, want 404", a.status, a.raw)
			}
		})
	}
	t.Run("trailing slash", func(t *testing.T) {
		f := newFixture(t, nil)
		if a := f.post(t, "/hooks/team-a/demo-generic/", genericHeaders(testSecret, body), body); a.status != http.StatusAccepted {
			t.Errorf("got %d %s, want 202", a.status, a.raw)
		}
	})
	if got := Path(nn("demo")); got != "/hooks/team-a/demo" {
		t.Errorf("Path = %q", got)
	}
}

func TestHandler_rateLimit(t *testing.T) {
	f := newFixture(t, nil, WithRateLimit(rate.Every(time.Hour), 2))
	body := readPayload(t, "github-push.json")
	good := githubHeaders("push", testSecret, body)
	bad := githubHeaders("push", "guessed", body)

	// Unverified requests do not use the ImageBuild's tokens up.
	for i := 0; i < 5; i++ {
		if a := f.post(t, "/hooks/team-a/demo-github", bad, body); a.status != http.StatusUnauthorized {
			t.Fatalf("unverified request %d: %d %s", i, a.status, a.raw)
		}
	}
	for i := 0; i < 2; i++ {
		if a := f.post(t, "/hooks/team-a/demo-github", good, body); a.status != http.StatusAccepted {
			t.Fatalf("verified request %d: %d %s, want 202", i, a.status, a.raw)
		}
	}
	a := f.post(t, "/hooks/team-a/demo-github", good, body)
	if a.status != http.StatusTooManyRequests {
		t.Fatalf("third verified request: %d %s, want 429", a.status, a.raw)
	}
	secs, err := strconv.Atoi(a.header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 3600 {
		t.Errorf("Retry-After %q, want seconds until the next token (1..3600)", a.header.Get("Retry-After"))
	}
	// A rejected request takes no token: still 429, and the wait did not grow.
	a2 := f.post(t, "/hooks/team-a/demo-github", good, body)
	secs2, _ := strconv.Atoi(a2.header.Get("Retry-After"))
	if a2.status != http.StatusTooManyRequests || secs2 > secs {
		t.Errorf("fourth request: %d Retry-After %d, want 429 and at most %d", a2.status, secs2, secs)
	}
	// Another ImageBuild has its own bucket.
	if a := f.post(t, "/hooks/team-a/demo-default", good, body); a.status != http.StatusAccepted {
		t.Errorf("another ImageBuild: %d %s, want 202", a.status, a.raw)
	}
	if calls := f.triggered(); len(calls) != 3 {
		t.Errorf("Trigger called %d times, want 3", len(calls))
	}
}

func TestHandler_concurrencyBound(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	lookup := func(ctx context.Context, key types.NamespacedName) (*Target, error) {
		if key.Name == "slow" {
			close(entered)
			<-release
		}
		return lookupTargets(ctx, key)
	}
	f := newFixture(t, lookup, WithMaxConcurrent(1))
	body := []byte(`{"ref":"main"}`)
	done := make(chan answer)
	go func() {
		done <- f.post(t, "/hooks/team-a/slow", genericHeaders(testSecret, body), body)
	}()
	<-entered
	a := f.post(t, "/hooks/team-a/demo-generic", genericHeaders(testSecret, body), body)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Errorf("second request while one is handled: %d Retry-After %q, want 503 with Retry-After", a.status, a.header.Get("Retry-After"))
	}
	close(release)
	if a := <-done; a.status != http.StatusUnauthorized {
		t.Errorf("slow request for an unknown ImageBuild: %d, want 401", a.status)
	}
	// The slot is free again.
	if a := f.post(t, "/hooks/team-a/demo-generic", genericHeaders(testSecret, body), body); a.status != http.StatusAccepted {
		t.Errorf("after the first ended: %d %s, want 202", a.status, a.raw)
	}
}

func TestHandler_bodyTimeout(t *testing.T) {
	f := newFixture(t, nil, WithBodyTimeout(300*time.Millisecond))
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers, then a body that stops short of its length (a slowloris).
	fmt.Fprint(conn, "POST /hooks/team-a/demo-generic HTTP/1.1\r\nHost: slipway\r\n"+
		"X-Slipway-Signature-256: sha256=00\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"ref\":")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("got %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answered after %v", d)
	}
	if calls := f.triggered(); len(calls) != 0 {
		t.Errorf("Trigger called: %v", calls)
	}
}

func TestHandler_lookupError(t *testing.T) {
	lookup := func(context.Context, types.NamespacedName) (*Target, error) {
		return nil, errors.New("the cache is not synced")
	}
	f := newFixture(t, lookup)
	body := []byte(`{"ref":"main"}`)
	a := f.post(t, "/hooks/team-a/demo-generic", genericHeaders(testSecret, body), body)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Errorf("got %d %s, want 503 with Retry-After", a.status, a.raw)
	}
	if calls := f.triggered(); len(calls) != 0 {
		t.Errorf("Trigger called: %v", calls)
	}
}

// TestHandler_logsNoSecrets sends what an operator's git server and an attacker would, and
// looks for the secret, the signatures, the token and the payload in the logs and answers.
func TestHandler_logsNoSecrets(t *testing.T) {
	f := newFixture(t, nil)
	ghPush := readPayload(t, "github-push.json")
	glPush := readPayload(t, "gitlab-push.json")
	bbPush := readPayload(t, "bitbucket-push.json")
	notJSON := []byte("{not json " + bodyMarker + " " + testSecret)
	ghDev := edit(t, ghPush, `"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`)
	reqs := []struct {
		path   string
		header http.Header
		body   []byte
	}{
		{"/hooks/team-a/demo-github", githubHeaders("push", testSecret, ghPush), ghPush},            // triggered
		{"/hooks/team-a/demo-github", githubHeaders("push", testSecret, ghDev), ghDev},              // ignored
		{"/hooks/team-a/demo-github", githubHeaders("push", "attacker", ghPush), ghPush},            // 401
		{"/hooks/team-a/demo-github", githubHeaders("push", testSecret, notJSON), notJSON},          // 400
		{"/hooks/team-a/no-such", githubHeaders("push", testSecret, ghPush), ghPush},                // 401
		{"/hooks/team-a/demo-gitlab", gitlabHeaders("Push Hook", testSecret), glPush},               // triggered
		{"/hooks/team-a/demo-gitlab", gitlabHeaders("Push Hook", testSecret+"x"), glPush},           // 401
		{"/hooks/team-a/demo-bitbucket", bitbucketHeaders("repo:push", testSecret, bbPush), bbPush}, // triggered
	}
	var secrets []string
	var answers []byte
	for _, r := range reqs {
		for _, h := range []string{"X-Hub-Signature-256", "X-Hub-Signature", "X-Gitlab-Token"} {
			if v := r.header.Get(h); v != "" {
				secrets = append(secrets, strings.TrimPrefix(v, "sha256="))
			}
		}
		a := f.post(t, r.path, r.header, r.body)
		answers = append(answers, a.raw...)
	}
	secrets = append(secrets, testSecret, hex.EncodeToString([]byte(testSecret)), bodyMarker)

	logs := f.logged()
	for _, want := range []string{`"imagebuild"="team-a/demo-github"`, `"provider"="github"`, `"result"="triggered"`,
		`"result"="ignored"`, `"reason"="branch dev is not the revision main"`, `"status"=401`, `"status"=400`,
		`"provider"="gitlab"`, `"delivery"="72d3162e-cc78-11e3-81ab-4c9367dc0958"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs have no %s:\n%s", want, logs)
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("logs hold %q:\n%s", s, logs)
		}
		if bytes.Contains(answers, []byte(s)) {
			t.Errorf("answers hold %q: %s", s, answers)
		}
	}
}

// TestHandler_defaults: a Handler works without options, with the documented defaults.
func TestHandler_defaults(t *testing.T) {
	var calls []call
	h := New(lookupTargets, func(k types.NamespacedName, ev Event) { calls = append(calls, call{k, ev}) })
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := []byte{}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/team-a/demo-generic", nil)
	req.Header = genericHeaders(testSecret, body)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || len(calls) != 1 {
		t.Errorf("got %d and %d calls, want 202 and 1", resp.StatusCode, len(calls))
	}
	if h.maxBody != 1<<20 || h.limit != 1 || h.burst != 5 || cap(h.slots) != 16 || h.bodyTimeout != 10*time.Second {
		t.Errorf("defaults: body %d, rate %v burst %d, concurrency %d, body timeout %v", h.maxBody, h.limit, h.burst, cap(h.slots), h.bodyTimeout)
	}
}

// TestHandler_allow_forgetsFullBuckets: the buckets of ImageBuilds not called for a while
// are dropped, so the map does not grow with every ImageBuild ever called.
func TestHandler_allow_forgetsFullBuckets(t *testing.T) {
	h := New(lookupTargets, func(types.NamespacedName, Event) {}, WithRateLimit(10, 1))
	if _, ok := h.allow(nn("build-0")); !ok {
		t.Fatal("first request of build-0 limited")
	}
	if wait, ok := h.allow(nn("build-0")); ok || wait <= 0 {
		t.Fatalf("second request at once of build-0: allowed %v, wait %v; want limited with a burst of 1", ok, wait)
	}
	for i := 1; i < 100; i++ {
		if _, ok := h.allow(nn(fmt.Sprint("build-", i))); !ok {
			t.Fatalf("first request of build-%d limited", i)
		}
	}
	time.Sleep(300 * time.Millisecond) // every bucket refills (10/s, burst 1)
	h.mu.Lock()
	n := len(h.limiters)
	h.lastSweep = time.Time{} // a minute passed
	h.mu.Unlock()
	if _, ok := h.allow(nn("build-x")); !ok {
		t.Fatal("build-x limited")
	}
	if n != 100 || len(h.limiters) != 1 {
		t.Errorf("buckets: %d before the sweep, %d after; want 100 and 1", n, len(h.limiters))
	}
}

// genericCurl is the README's example of a generic request, run as written (HOOK is the
// webhook URL, SECRET the Secret's value).
const genericCurl = `body='{"repository":"https://git.example.com/platform/demo","ref":"refs/heads/main"}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/^.* //')
curl -fsS -X POST -H "X-Slipway-Signature-256: sha256=$sig" -d "$body" "$HOOK"`

// genericCurlNow is the README's "check now" example.
const genericCurlNow = `sig=$(printf '' | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/^.* //')
curl -fsS -X POST -H "X-Slipway-Signature-256: sha256=$sig" "$HOOK"`

func TestHandler_genericWithCurl(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	for name, script := range map[string]string{"push": genericCurl, "check now": genericCurlNow} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil)
			cmd := exec.Command("sh", "-ec", script)
			cmd.Env = append(os.Environ(), "SECRET="+testSecret, "HOOK="+f.srv.URL+"/hooks/team-a/demo-generic",
				"no_proxy=127.0.0.1", "NO_PROXY=127.0.0.1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != `{"result":"triggered"}` {
				t.Errorf("curl printed %q", got)
			}
			if calls := f.triggered(); len(calls) != 1 || calls[0].Event.Provider != Generic {
				t.Errorf("Trigger calls %v, want one generic", calls)
			}
		})
	}
}
