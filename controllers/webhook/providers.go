package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// detect names the provider from the request's headers. Gitea and Forgejo also send
// GitHub's headers (X-GitHub-Event, X-Hub-Signature-256) and Forgejo Gitea's, so the most
// specific header wins. Empty when no header names one: the request cannot verify.
func detect(h http.Header) Provider {
	switch {
	case h.Get("X-Forgejo-Event") != "":
		return Forgejo
	case h.Get("X-Gitea-Event") != "":
		return Gitea
	case h.Get("X-Gitlab-Event") != "":
		return GitLab
	case h.Get("X-Event-Key") != "":
		return Bitbucket
	case h.Get("X-GitHub-Event") != "":
		return GitHub
	case h.Get("X-Slipway-Signature-256") != "":
		return Generic
	}
	return ""
}

// verify checks the request's signature or token against secret, in constant time.
func verify(p Provider, h http.Header, body, secret []byte) bool {
	switch p {
	case GitHub:
		return verifyHMAC(h, "X-Hub-Signature-256", "sha256=", body, secret)
	case Gitea:
		return verifyHMAC(h, "X-Gitea-Signature", "", body, secret)
	case Forgejo:
		return verifyHMAC(h, "X-Forgejo-Signature", "", body, secret)
	case Bitbucket:
		// Bitbucket Cloud's X-Hub-Signature is HMAC-SHA256 with a "sha256=" prefix, unlike
		// GitHub's SHA-1 header of the same name (which Gitea also sends): only sha256= passes.
		return verifyHMAC(h, "X-Hub-Signature", "sha256=", body, secret)
	case Generic:
		return verifyHMAC(h, "X-Slipway-Signature-256", "sha256=", body, secret)
	case GitLab:
		return verifyToken(h, "X-Gitlab-Token", secret)
	}
	verifyHMAC(nil, "", "", body, secret) // the same work as a request that names a provider
	return false
}

// signedContent is what the provider signed: the body, but for Gitea and Forgejo, which
// sign the JSON also when they send it as the form field payload
// (application/x-www-form-urlencoded), that field.
func signedContent(p Provider, h http.Header, body []byte) []byte {
	if p != Gitea && p != Forgejo || !isForm(h) {
		return body
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil
	}
	return []byte(form.Get("payload"))
}

func isForm(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "application/x-www-form-urlencoded"
}

// verifyHMAC checks that the one header name holds prefix and the hex HMAC-SHA256 of body
// keyed with secret. The MAC is computed first, whatever the header holds.
func verifyHMAC(h http.Header, name, prefix string, body, secret []byte) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	sum := mac.Sum(nil)
	vals := h.Values(name)
	if len(vals) != 1 {
		return false
	}
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(vals[0]), prefix)
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return false
	}
	return hmac.Equal(sum, sig)
}

// verifyToken checks that the one header name holds secret. Both are hashed first, so that
// the comparison takes the same time whatever their lengths.
func verifyToken(h http.Header, name string, secret []byte) bool {
	want := sha256.Sum256(secret)
	vals := h.Values(name)
	if len(vals) != 1 {
		return false
	}
	got := sha256.Sum256([]byte(vals[0]))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// deliveryHeaders name each provider's id of a delivery.
var deliveryHeaders = map[Provider]string{
	GitHub:    "X-GitHub-Delivery",
	GitLab:    "X-Gitlab-Event-UUID",
	Gitea:     "X-Gitea-Delivery",
	Forgejo:   "X-Forgejo-Delivery",
	Bitbucket: "X-Request-UUID",
	Generic:   "X-Slipway-Delivery",
}

// deliveryID is the request's delivery id if it is a short token (a GUID, a UUID in braces),
// else empty: it goes into logs and events.
func deliveryID(p Provider, h http.Header) string {
	v := h.Get(deliveryHeaders[p])
	if len(v) > 128 {
		return ""
	}
	for _, c := range v {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.ContainsRune("-_.:{}", c)
		if !ok {
			return ""
		}
	}
	return v
}

// payload is what a verified request says of a push.
type payload struct {
	// pushes are the refs the push changed.
	pushes []push
	// repos are the URLs the payload gives for its repository (clone, ssh, web).
	repos []string
	// anyRepo is true for a generic request that names no repository: it is the
	// ImageBuild's.
	anyRepo bool
	// defaultBranch is the repository's default branch if the payload says.
	defaultBranch string
}

// push is one ref a push changed.
type push struct {
	ref     string // full ref (refs/heads/main), or a generic request's ref as given
	deleted bool
	anyRef  bool // a generic request that names no ref: "check now"
}

// errNotJSON is the answer to a verified body that is not the JSON of its provider.
var errNotJSON = errors.New("the payload is not valid JSON")

// zeroSHA reports a ref that a push deleted (its new commit is all zeros).
func zeroSHA(s string) bool {
	return (len(s) == 40 || len(s) == 64) && strings.Trim(s, "0") == ""
}

// parse reads a verified request's payload: the push, or why the event is ignored.
func parse(p Provider, h http.Header, body []byte) (*payload, string, error) {
	switch p {
	case GitHub, Gitea, Forgejo:
		header := map[Provider]string{GitHub: "X-GitHub-Event", Gitea: "X-Gitea-Event", Forgejo: "X-Forgejo-Event"}[p]
		switch ev := h.Get(header); ev {
		case "push":
		case "ping":
			return nil, "ping", nil
		default:
			return nil, "event " + clip(ev) + " is not a push", nil
		}
		data, err := formOrJSON(h, body)
		if err != nil {
			return nil, "", err
		}
		// GitHub's push event; Gitea and Forgejo send the same fields.
		var m struct {
			Ref        string `json:"ref"`
			After      string `json:"after"`
			Deleted    bool   `json:"deleted"`
			Repository struct {
				CloneURL      string `json:"clone_url"`
				SSHURL        string `json:"ssh_url"`
				HTMLURL       string `json:"html_url"`
				GitURL        string `json:"git_url"`
				DefaultBranch string `json:"default_branch"`
			} `json:"repository"`
		}
		if json.Unmarshal(data, &m) != nil {
			return nil, "", errNotJSON
		}
		r := m.Repository
		return &payload{
			pushes:        []push{{ref: m.Ref, deleted: m.Deleted || zeroSHA(m.After)}},
			repos:         nonEmpty(r.CloneURL, r.SSHURL, r.HTMLURL, r.GitURL),
			defaultBranch: r.DefaultBranch,
		}, "", nil

	case GitLab:
		// Push Hook, Tag Push Hook, and System Hook with a push: the body's object_kind says.
		var m struct {
			ObjectKind string `json:"object_kind"`
			Ref        string `json:"ref"`
			After      string `json:"after"`
			Project    struct {
				WebURL        string `json:"web_url"`
				GitSSHURL     string `json:"git_ssh_url"`
				GitHTTPURL    string `json:"git_http_url"`
				DefaultBranch string `json:"default_branch"`
			} `json:"project"`
			Repository struct {
				Homepage   string `json:"homepage"`
				GitSSHURL  string `json:"git_ssh_url"`
				GitHTTPURL string `json:"git_http_url"`
			} `json:"repository"`
		}
		if json.Unmarshal(body, &m) != nil {
			return nil, "", errNotJSON
		}
		if m.ObjectKind != "push" && m.ObjectKind != "tag_push" {
			return nil, "event " + clip(h.Get("X-Gitlab-Event")) + " is not a push", nil
		}
		pr, rp := m.Project, m.Repository
		return &payload{
			pushes:        []push{{ref: m.Ref, deleted: zeroSHA(m.After)}},
			repos:         nonEmpty(pr.GitHTTPURL, pr.GitSSHURL, pr.WebURL, rp.GitHTTPURL, rp.GitSSHURL, rp.Homepage),
			defaultBranch: pr.DefaultBranch,
		}, "", nil

	case Bitbucket:
		if ev := h.Get("X-Event-Key"); ev != "repo:push" {
			return nil, "event " + clip(ev) + " is not a push", nil
		}
		// Bitbucket Cloud's repo:push: one change per ref; new is null when the ref was
		// deleted, old when it was created.
		type ref struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}
		var m struct {
			Push struct {
				Changes []struct {
					New *ref `json:"new"`
					Old *ref `json:"old"`
				} `json:"changes"`
			} `json:"push"`
			Repository struct {
				FullName string `json:"full_name"`
				Links    struct {
					HTML struct {
						Href string `json:"href"`
					} `json:"html"`
				} `json:"links"`
			} `json:"repository"`
		}
		if json.Unmarshal(body, &m) != nil {
			return nil, "", errNotJSON
		}
		pl := &payload{repos: nonEmpty(m.Repository.Links.HTML.Href)}
		if m.Repository.FullName != "" {
			host := "bitbucket.org"
			if u, err := url.Parse(m.Repository.Links.HTML.Href); err == nil && u.Host != "" {
				host = u.Host
			}
			pl.repos = append(pl.repos, "https://"+host+"/"+m.Repository.FullName)
		}
		for _, c := range m.Push.Changes {
			r, deleted := c.New, false
			if r == nil {
				r, deleted = c.Old, true
			}
			if r == nil {
				continue
			}
			switch r.Type {
			case "branch":
				pl.pushes = append(pl.pushes, push{ref: "refs/heads/" + r.Name, deleted: deleted})
			case "tag", "annotated_tag":
				pl.pushes = append(pl.pushes, push{ref: "refs/tags/" + r.Name, deleted: deleted})
			}
		}
		return pl, "", nil

	case Generic:
		if len(bytes.TrimSpace(body)) == 0 {
			return &payload{pushes: []push{{anyRef: true}}, anyRepo: true}, "", nil
		}
		var m struct {
			Repository string `json:"repository"`
			Ref        string `json:"ref"`
		}
		if json.Unmarshal(body, &m) != nil {
			return nil, "", errNotJSON
		}
		return &payload{
			pushes:  []push{{ref: m.Ref, anyRef: m.Ref == ""}},
			repos:   nonEmpty(m.Repository),
			anyRepo: m.Repository == "",
		}, "", nil
	}
	return nil, "", errors.New("unknown provider") // verify accepted none
}

// formOrJSON returns the JSON of a body that GitHub, Gitea or Forgejo sent as
// application/x-www-form-urlencoded (payload=<json>), or the body itself.
func formOrJSON(h http.Header, body []byte) ([]byte, error) {
	if !isForm(h) {
		return body, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("payload") == "" {
		return nil, errors.New("the form has no payload field")
	}
	return []byte(form.Get("payload")), nil
}

// nonEmpty returns the non-empty strings of ss, nil if none.
func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
