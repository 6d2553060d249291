package webhook

import (
	"net/url"
	"strings"
)

// match decides whether a verified push is one of t's repository and revision. It returns
// the ref to pass on, or why the push is ignored.
//
// The repository matches when one of the payload's URLs names the same repository as t.URL
// (sameRepository). The ref matches when:
//   - t.Revision is a branch ("main" or "refs/heads/main") or another full ref, and the push
//     is of that ref; a tag push therefore matches only a revision refs/tags/X, and a branch
//     push never matches such a revision;
//   - t.Revision is empty (the default branch), and the push is of a branch that is the
//     payload's default branch, or of any branch when the payload does not say (Bitbucket,
//     generic): the resolution finds out;
//   - the request is a generic one that names no ref ("check now").
//
// A commit SHA revision never matches: no push moves it. A push that deleted the ref is
// ignored. A push that changed several refs (Bitbucket) matches if one of them does.
func match(t *Target, pl *payload) (ref, ignored string) {
	if !pl.anyRepo && !sameRepository(t.URL, pl.repos) {
		if len(pl.repos) == 0 {
			return "", "the payload names no repository"
		}
		name := repositoryID(pl.repos[0])
		if name == "" {
			name = "(not a git URL)"
		}
		return "", "repository " + clip(name) + " is not the ImageBuild's source"
	}
	if isCommit(t.Revision) {
		return "", "the revision is a commit, which no push moves"
	}
	for _, p := range pl.pushes {
		why := matchRef(t.Revision, pl.defaultBranch, p)
		if why == "" {
			return p.ref, ""
		}
		if ignored == "" {
			ignored = why
		}
	}
	if ignored == "" {
		ignored = "the push changed no branch or tag"
	}
	return "", ignored
}

// matchRef says why push p is not of revision rev, or "" if it is.
func matchRef(rev, defaultBranch string, p push) string {
	if p.anyRef {
		return "" // a generic "check now"
	}
	if p.ref == "" {
		return "the payload names no ref"
	}
	got := fullRef(p.ref)
	if rev == "" {
		branch, ok := strings.CutPrefix(got, "refs/heads/")
		if !ok {
			return describeRef(got) + " is not a branch, and the revision is the default branch"
		}
		if defaultBranch != "" && branch != defaultBranch {
			return describeRef(got) + " is not the default branch " + clip(defaultBranch)
		}
	} else if got != fullRef(rev) {
		return describeRef(got) + " is not the revision " + clip(rev)
	}
	if p.deleted {
		return describeRef(got) + " was deleted"
	}
	return ""
}

// fullRef is the full ref a revision or a pushed ref names: a name that does not start
// with refs/ is a branch.
func fullRef(s string) string {
	if strings.HasPrefix(s, "refs/") {
		return s
	}
	return "refs/heads/" + s
}

// describeRef names a full ref for a person: "branch main", "tag v1", "ref refs/x".
func describeRef(ref string) string {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return "branch " + clip(b)
	}
	if t, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return "tag " + clip(t)
	}
	return "ref " + clip(ref)
}

// isCommit says whether a revision is a full commit SHA (SHA-1 or SHA-256).
func isCommit(rev string) bool {
	if len(rev) != 40 && len(rev) != 64 {
		return false
	}
	for _, c := range rev {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// sameRepository says whether one of urls names the repository of source.
func sameRepository(source string, urls []string) bool {
	id := repositoryID(source)
	if id == "" {
		return false
	}
	for _, u := range urls {
		if repositoryID(u) == id {
			return true
		}
	}
	return false
}

// repositoryID reduces a git URL to "host/path", the same for every form of the URL of one
// repository: https://, http://, ssh://, git:// and scp-like user@host:path; any user,
// password or port dropped (the same server serves https and ssh on different ports, and
// a false match costs only one listing of refs); host and path in lower case (GitHub,
// GitLab and Bitbucket ignore the case of paths); no trailing slash or ".git"; repeated
// slashes one. Empty when raw is not such a URL.
func repositoryID(raw string) string {
	s := strings.TrimSpace(raw)
	var host, path string
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return ""
		}
		switch strings.ToLower(u.Scheme) {
		case "https", "http", "ssh", "git", "git+ssh", "ssh+git":
		default:
			return ""
		}
		host, path = u.Hostname(), u.Path
	} else {
		// scp-like [user@]host:path, as git reads it: a colon before any slash.
		i := strings.IndexByte(s, ':')
		if i <= 0 || strings.Contains(s[:i], "/") {
			return ""
		}
		host, path = s[:i], s[i+1:]
		if at := strings.LastIndexByte(host, '@'); at >= 0 {
			host = host[at+1:]
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	var parts []string
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if n := len(parts); n > 0 {
		parts[n-1] = strings.TrimSuffix(parts[n-1], ".git")
		if parts[n-1] == "" {
			parts = parts[:n-1]
		}
	}
	if host == "" || len(parts) == 0 {
		return ""
	}
	return host + "/" + strings.ToLower(strings.Join(parts, "/"))
}
