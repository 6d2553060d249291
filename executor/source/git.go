package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"
)

// GitOptions are kaniko's --git options, plus one of ours.
type GitOptions struct {
	// Branch is the branch to build when the context URL names no
	// revision ("branch=").
	Branch string
	// SingleBranch is accepted for kaniko compatibility ("single-branch="):
	// only one ref is ever fetched.
	SingleBranch bool
	// RecurseSubmodules checks out submodules, recursively, at the
	// commits the superproject records ("recurse-submodules="). On unless
	// --git says recurse-submodules=false: BuildKit checks out a git
	// context's submodules (dockerui.DetectGitContext skips them only for
	// ?submodules=false), where kaniko's default is off.
	RecurseSubmodules bool
	// InsecureSkipTLS does not verify the server's TLS certificate
	// ("insecure-skip-tls=").
	InsecureSkipTLS bool
	// InsecureIgnoreHostKey accepts any SSH host key
	// ("insecure-ignore-host-key=", ours). By default the host key must be
	// in a known_hosts file.
	InsecureIgnoreHostKey bool
}

// ParseGitOptions parses the value of --git: comma-separated key=value pairs
// with the keys branch, single-branch, recurse-submodules,
// insecure-skip-tls and insecure-ignore-host-key. An empty string is the
// defaults: RecurseSubmodules on (as BuildKit), everything else off.
func ParseGitOptions(s string) (GitOptions, error) {
	o := GitOptions{RecurseSubmodules: true}
	if strings.TrimSpace(s) == "" {
		return o, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return o, fmt.Errorf("--git: %q is not key=value", kv)
		}
		if k == "branch" {
			o.Branch = v
			continue
		}
		var dst *bool
		switch k {
		case "single-branch":
			dst = &o.SingleBranch
		case "recurse-submodules":
			dst = &o.RecurseSubmodules
		case "insecure-skip-tls":
			dst = &o.InsecureSkipTLS
		case "insecure-ignore-host-key":
			dst = &o.InsecureIgnoreHostKey
		default:
			return o, fmt.Errorf("--git: unknown key %q (branch, single-branch, recurse-submodules, insecure-skip-tls, insecure-ignore-host-key)", k)
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return o, fmt.Errorf("--git: %s=%q is not a boolean", k, v)
		}
		*dst = b
	}
	return o, nil
}

// GitSource names a revision of a git repository and a directory in it.
type GitSource struct {
	// URL is the repository: https://, http://, ssh:// or scp-like
	// user@host:path. User information in an http(s) URL is moved into
	// Auth and never shown.
	URL string
	// Ref is the revision: a branch, a tag (lightweight or annotated), a
	// full or abbreviated commit SHA, or any ref such as refs/pull/42/head.
	// Empty means Options.Branch, or else the remote's HEAD.
	Ref string
	// SubDir is the directory of the repository to use as the context.
	SubDir string
	// Options are the --git options.
	Options GitOptions
	// Auth are the credentials; the zero value is anonymous.
	Auth GitAuth
	// BuildKitRefs resolves Ref as BuildKit's git source does
	// (source/git's resolveMetadata): it names a commit only when it is a
	// full SHA (gitutil.IsCommitSHA); an abbreviated SHA is looked up as a
	// ref name, and is not one. Set for URLs with a query string, and by
	// ADD.
	BuildKitRefs bool
	// Checksum is what the commit checked out must start with
	// ("?commit=" / "?checksum="); "" checks nothing.
	Checksum string
	// KeepGitDir is "?keep-git-dir=": nil when the URL does not say.
	KeepGitDir *bool
	// Submodules is "?submodules=": nil when the URL does not say.
	Submodules *bool
}

// ParseGitURL splits a git context into repository URL, ref and
// sub-directory. The forms are kaniko's, git://host/org/repo.git#ref, where
// git:// stands for https:// (or for GIT_PULL_METHOD://, as in kaniko, when
// pullMethod is "http"), and BuildKit's https://…, ssh://… and
// user@host:path URLs with a "#ref:subdir" fragment (git refs cannot
// contain ':', so the split is unambiguous). Either part of the fragment
// may be empty.
//
// A URL with a query string is BuildKit's git reference
// (…/repo.git?ref=…&subdir=…), parsed by BuildKit's own parser,
// dfgitutil.ParseGitRef, as its dockerui.DetectGitContext does for a
// build context: the keys ref, branch (refs/heads/…), tag (refs/tags/…),
// commit or checksum, subdir, keep-git-dir and submodules, conflicts with
// the fragment being errors. Such a source resolves its ref as BuildKit
// does (BuildKitRefs).
func ParseGitURL(contextURL, pullMethod string) (GitSource, error) {
	var src GitSource
	u, frag, _ := strings.Cut(contextURL, "#")
	if rest, ok := strings.CutPrefix(u, "git://"); ok {
		switch pullMethod {
		case "", "https":
			u = "https://" + rest
		case "http":
			u = "http://" + rest
		default:
			return src, fmt.Errorf("GIT_PULL_METHOD %q is neither https nor http", pullMethod)
		}
	}
	if strings.Contains(u, "?") {
		return parseBuildKitGitRef(u, frag)
	}
	src.Ref, src.SubDir, _ = strings.Cut(frag, ":")
	if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
		pu, err := url.Parse(u)
		if err != nil {
			return src, fmt.Errorf("parsing git URL %s: %w", RedactURL(u), errors.Unwrap(err))
		}
		if pu.User != nil {
			src.Auth.Username = pu.User.Username()
			src.Auth.Password, _ = pu.User.Password()
			pu.User = nil
		}
		u = pu.String()
	}
	if u == "" {
		return src, errors.New("git context without a repository URL")
	}
	src.URL = u
	return src, nil
}

// parseBuildKitGitRef parses u (with its query) and the fragment frag
// with dfgitutil.ParseGitRef. Its errors name query keys and refs, never
// the URL's credentials.
func parseBuildKitGitRef(u, frag string) (GitSource, error) {
	var src GitSource
	full := u
	if frag != "" {
		full += "#" + frag
	}
	ref, isGit, err := dfgitutil.ParseGitRef(full)
	if err != nil || ref == nil || ref.IndistinguishableFromLocal {
		if !isGit || err == nil {
			return src, fmt.Errorf("git URL %s: a URL with a query string must be a BuildKit git reference (https://host/repo.git?ref=…, ssh://…, user@host:path?…)", RedactURL(stripQuery(u)))
		}
		return src, fmt.Errorf("git URL %s: %w", RedactURL(stripQuery(u)), err)
	}
	if ref.MTime != "" || ref.FetchByCommit {
		return src, fmt.Errorf("git URL %s: the query keys mtime and fetch-by-commit are not supported by this executor", RedactURL(ref.Remote))
	}
	src.URL, src.Ref, src.SubDir = ref.Remote, ref.Ref, ref.SubDir
	src.Checksum, src.KeepGitDir, src.Submodules = ref.Checksum, ref.KeepGitDir, ref.Submodules
	src.BuildKitRefs = true
	if src.Checksum != "" && !commitHexRE.MatchString(src.Checksum) {
		return src, fmt.Errorf("git URL %s: invalid checksum %s for Git URL, expected hex commit hash", RedactURL(ref.Remote), src.Checksum)
	}
	if strings.HasPrefix(src.URL, "http://") || strings.HasPrefix(src.URL, "https://") {
		pu, err := url.Parse(src.URL)
		if err != nil {
			return GitSource{}, fmt.Errorf("parsing git URL %s: %w", RedactURL(src.URL), errors.Unwrap(err))
		}
		if pu.User != nil {
			src.Auth.Username = pu.User.Username()
			src.Auth.Password, _ = pu.User.Password()
			pu.User = nil
		}
		src.URL = pu.String()
	}
	return src, nil
}

// stripQuery is u without its query string, for messages.
func stripQuery(u string) string {
	u, _, _ = strings.Cut(u, "?")
	return u
}

var commitHexRE = regexp.MustCompile(`^[0-9a-fA-F]+$`)

// ContextOrigin is the origin (GitOrigin) of a git context as
// FetchWithInfo fetches it (git:// is https:// unless pullMethod is
// "http"), "" for any other context.
func ContextOrigin(contextURL, pullMethod string) string {
	if contextURL == "" || !isGit(contextURL) {
		return ""
	}
	src, err := ParseGitURL(contextURL, pullMethod)
	if err != nil {
		return ""
	}
	return GitOrigin(src.URL)
}

// RedactURL is u, a URL or an scp-like git address (user@host:path), as a
// message shows it: the user information, user name included (a token is
// often given as one, and an ssh user name is no better to show), replaced
// by "***", as result.Redact does in free text: "https://***@host/x",
// "***@host:path". A URL that does not parse shows its scheme only
// ("https://…"), since where its user information ends is unknown; an
// address without "://" that does not parse shows without everything up to
// its last "@" before its first "/". What has no user information shows as
// it is. It is the one function of the executor for this: the git context,
// ADD's URLs and git sources, and their errors use it.
func RedactURL(u string) string {
	pu, err := url.Parse(u)
	if err == nil {
		if pu.User == nil {
			return u
		}
		pu.User = nil // url.User would escape "*"
		return strings.Replace(pu.String(), "//", "//***@", 1)
	}
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		if scheme != "" && !strings.ContainsAny(scheme, "@:/") {
			return scheme + "://…"
		}
		return "an unparsable URL"
	}
	head, _, _ := strings.Cut(u, "/")
	if at := strings.LastIndexByte(head, '@'); at >= 0 {
		return "***" + u[at:]
	}
	return u
}

// FetchGit fetches the revision src.Ref of src.URL into dest (created if
// needed) and returns the SHA of the commit checked out.
//
// Only that revision is fetched, at depth 1, when the server advertises it
// (a branch, a tag, any ref, or a commit at the tip of one) or serves
// commits by SHA (uploadpack.allowReachableSHA1InWant, as GitHub and GitLab
// do). An abbreviated SHA, or a full one the server does not serve by SHA,
// needs the history: the branch of Options.Branch, else every branch and
// tag, is fetched in full and the commit looked up in it.
//
// Objects are written to gitDir, which must be outside dest, and read from
// disk (large blobs are streamed, not cached), so memory stays bounded on
// large repositories. dest gets the files only: no .git, in submodules
// neither, unless src.KeepGitDir (?keep-git-dir=true) gives the whole
// repository's checkout the .git BuildKit's does (WriteGitDir).
// src.Checksum, when set, is what the commit must start with. With Options.RecurseSubmodules, submodules are checked out
// recursively at their recorded commits. Credentials go where src.Auth
// scopes them (see GitAuth), to the superproject and its submodules alike.
func FetchGit(ctx context.Context, src GitSource, dest, gitDir string) (commit string, err error) {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return "", fmt.Errorf("fetching git context %s: %w", RedactURL(src.URL), err)
	}
	f := &gitFetcher{opts: src.Options, auth: src.Auth, buildkitRefs: src.BuildKitRefs}
	h, err := f.fetch(ctx, src.URL, src.Ref, src.Options.Branch, dest, gitDir, 0)
	if err != nil {
		return "", err
	}
	commit = h.String()
	fail := func(msg string, err error) (string, error) {
		return "", newGitError(RedactURL(src.URL), src.Ref, msg, err, f.scrub)
	}
	// source/git's resolveMetadata: the commit must start with the
	// checksum (?commit=, ?checksum=).
	if src.Checksum != "" && !strings.HasPrefix(commit, strings.ToLower(src.Checksum)) {
		return fail(fmt.Sprintf("expected checksum to match %s, got %s (the commit checked out, which does not match ?commit=%s)", src.Checksum, commit, src.Checksum), nil)
	}
	// BuildKit keeps .git only for the whole repository: with a
	// sub-directory, its checkout has none (source/git's checkout).
	if src.KeepGitDir != nil && *src.KeepGitDir && path.Clean("/"+src.SubDir) == "/" {
		// Its origin is URL, which has no credentials (ParseGitURL moved
		// the URL's own into Auth; BuildKit's would show them as xxxxx).
		if err := WriteGitDir(dest, gitDir, src.URL, src.Ref, commit); err != nil {
			return fail("keeping .git (?keep-git-dir)", err)
		}
	}
	return commit, nil
}

// maxSubmoduleDepth bounds submodule recursion (a repository may name
// itself).
const maxSubmoduleDepth = 10

type gitFetcher struct {
	opts GitOptions
	auth GitAuth
	// buildkitRefs: see GitSource.BuildKitRefs.
	buildkitRefs bool
}

// gitError is a failed fetch: what a person can act on, with the URL
// (without credentials) and the ref asked for.
type gitError struct {
	url, ref string
	msg      string
	err      error
	// unreachable: see Unreachable. Decided on the error as it came,
	// since scrub may replace it by its text.
	unreachable bool
}

func (e *gitError) Error() string {
	ref := e.ref
	if ref == "" {
		ref = "HEAD"
	}
	s := fmt.Sprintf("fetching git context %s at %s: %s", e.url, ref, e.msg)
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *gitError) Unwrap() error { return e.err }

// newGitError is the gitError of a fetch of url (redacted) at ref that
// failed doing msg with err (nil when msg says it all); scrub removes
// the credentials from err's text.
func newGitError(url, ref, msg string, err error, scrub func(error) error) *gitError {
	return &gitError{url: url, ref: ref, msg: msg, err: scrub(err), unreachable: unreachable(err)}
}

// Unreachable reports whether err, an error of FetchGit or
// FetchWithInfo, says that the git server could not be reached or
// failed on its side, so that the same fetch may succeed later: the
// connection was refused, reset, broken off or timed out, a host name did
// not resolve for a temporary reason, or the server answered an HTTP 5xx,
// 429 or 408 status. A repository, revision or credentials that the server refused,
// a host name that does not exist, a certificate or host key that does
// not match, and the build's own deadline are not: fetching again would
// meet them again.
func Unreachable(err error) bool {
	var ge *gitError
	return errors.As(err, &ge) && ge.unreachable
}

func unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ge *gitError
	if errors.As(err, &ge) {
		return ge.unreachable // a submodule's fetch
	}
	var ue *plumbing.UnexpectedError // go-git's wrapper, which does not unwrap
	if errors.As(err, &ue) && ue.Err != nil {
		return unreachable(ue.Err)
	}
	if code := httpStatus(err); code != 0 {
		return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
	}
	var dnse *net.DNSError
	if errors.As(err, &dnse) {
		return !dnse.IsNotFound && (dnse.IsTimeout || dnse.IsTemporary)
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT, syscall.EPIPE} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true // the connection broke off before or in the middle of an answer
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// httpStatus is the status of the HTTP answer err reports (go-git wraps
// it in a plumbing.UnexpectedError, which does not unwrap), 0 if none.
func httpStatus(err error) int {
	var he *githttp.Err
	if errors.As(err, &he) {
		return he.StatusCode()
	}
	var ue *plumbing.UnexpectedError
	if errors.As(err, &ue) && errors.As(ue.Err, &he) {
		return he.StatusCode()
	}
	return 0
}

var hexRE = regexp.MustCompile(`^[0-9a-fA-F]{4,40}$`)

func (f *gitFetcher) fetch(ctx context.Context, repoURL, ref, branch, dest, gitDir string, depth int) (plumbing.Hash, error) {
	redacted, shown := RedactURL(repoURL), ref
	if shown == "" {
		shown = branch
	}
	fail := func(msg string, err error) (plumbing.Hash, error) {
		return plumbing.ZeroHash, newGitError(redacted, shown, msg, err, f.scrub)
	}
	auth, err := f.auth.method(repoURL, f.opts.InsecureIgnoreHostKey)
	if err != nil {
		return fail("preparing credentials", err)
	}

	st := filesystem.NewStorageWithOptions(osfs.New(gitDir), cache.NewObjectLRU(16*cache.MiByte),
		filesystem.Options{ExclusiveAccess: true, LargeObjectThreshold: 1 << 20})
	repo, err := git.Init(st, osfs.New(dest))
	if err != nil {
		return fail("initialising the repository", err)
	}
	// Init links the work tree to gitDir with a ".git" file; the context
	// must not have one.
	if err := os.Remove(filepath.Join(dest, ".git")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail("initialising the repository", err)
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{repoURL}})
	if err != nil {
		return fail("adding the remote", err)
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, InsecureSkipTLS: f.opts.InsecureSkipTLS, PeelingOption: git.AppendPeeled})
	if err != nil {
		return fail(f.explain(err, auth != nil), err)
	}

	want := ref
	if want == "" {
		want = branch
	}
	const local = "refs/slipway/fetched"
	var commit plumbing.Hash
	resolve := resolveRefName
	if f.buildkitRefs && want != "" {
		resolve = resolveRefNameBuildKit
	}
	name, isName := resolve(refs, want)
	full := plumbing.ZeroHash
	if !isName && len(want) == 40 && hexRE.MatchString(want) {
		full = plumbing.NewHash(want)
		// A commit at the tip of a ref is fetched through that ref.
		if n, ok := refPointingAt(refs, full); ok {
			name, isName = n, true
		}
	}
	fo := &git.FetchOptions{Auth: auth, InsecureSkipTLS: f.opts.InsecureSkipTLS, Tags: git.NoTags, Depth: 1}
	switch {
	case isName:
		fo.RefSpecs = []config.RefSpec{config.RefSpec("+" + name.String() + ":" + local)}
		if err := remote.FetchContext(ctx, fo); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return fail("fetching "+name.String(), err)
		}
		r, err := repo.Reference(local, true)
		if err != nil {
			return fail("reading the fetched ref", err)
		}
		commit, err = peel(repo, r.Hash())
		if err != nil {
			return fail("reading the fetched ref", err)
		}
		if !full.IsZero() && commit != full {
			return fail("resolving the revision", fmt.Errorf("%s does not point at %s", name, full))
		}
	case !full.IsZero():
		fo.RefSpecs = []config.RefSpec{config.RefSpec("+" + full.String() + ":" + local)}
		err := remote.FetchContext(ctx, fo)
		if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
			commit = full
			break
		}
		if !errors.Is(err, git.ErrExactSHA1NotSupported) {
			return fail("fetching commit "+full.String(), err)
		}
		fallthrough
	case hexRE.MatchString(want) && (!f.buildkitRefs || !full.IsZero()):
		// The commit is not at a tip, and the server does not serve it by
		// its SHA: fetch the history it is in.
		specs := []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
		if branch != "" && branch != want {
			specs = []config.RefSpec{config.RefSpec("+" + plumbing.NewBranchReferenceName(strings.TrimPrefix(branch, "refs/heads/")).String() + ":refs/remotes/origin/" + path.Base(branch))}
		}
		fo.Depth, fo.RefSpecs = 0, specs
		if err := remote.FetchContext(ctx, fo); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return fail("fetching history to find the commit", err)
		}
		h, err := repo.ResolveRevision(plumbing.Revision(want))
		if err != nil {
			return fail(notContained(want, "no branch, tag or commit of that name"), nil)
		}
		commit, err = peel(repo, *h)
		if err != nil {
			return fail("resolving the revision", err)
		}
	default:
		return fail(notContained(want, "no branch, tag or ref of that name"), nil)
	}

	wt, err := repo.Worktree()
	if err != nil {
		return fail("opening the work tree", err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: commit, Force: true}); err != nil {
		return fail("checking out "+commit.String(), err)
	}
	if f.opts.RecurseSubmodules {
		if err := f.submodules(ctx, repo, repoURL, commit, dest, gitDir, depth); err != nil {
			return fail("checking out submodules of "+commit.String(), err)
		}
	}
	return commit, nil
}

// resolveRefName finds want among the advertised refs as git rev-parse
// does: the exact name, then refs/<want>, refs/tags/<want>,
// refs/heads/<want>. Empty want is HEAD.
func resolveRefName(refs []*plumbing.Reference, want string) (plumbing.ReferenceName, bool) {
	if want == "" {
		want = "HEAD"
	}
	names := make(map[plumbing.ReferenceName]bool, len(refs))
	for _, r := range refs {
		names[r.Name()] = true
	}
	for _, c := range []string{want, "refs/" + want, "refs/tags/" + want, "refs/heads/" + want} {
		if names[plumbing.ReferenceName(c)] {
			return plumbing.ReferenceName(c), true
		}
	}
	return "", false
}

// resolveRefNameBuildKit finds want among the advertised refs as
// BuildKit's git source does (source/git's resolveMetadataFromURL, which
// runs ls-remote): refs/<want> (want with or without its "refs/"), then
// the branch refs/heads/<want> ("git-checkout prefers branches in case of
// ambiguity"), then the tag refs/tags/<want>.
func resolveRefNameBuildKit(refs []*plumbing.Reference, want string) (plumbing.ReferenceName, bool) {
	names := make(map[plumbing.ReferenceName]bool, len(refs))
	for _, r := range refs {
		names[r.Name()] = true
	}
	for _, c := range []string{
		"refs/" + strings.TrimPrefix(want, "refs/"),
		"refs/heads/" + strings.TrimPrefix(want, "refs/heads/"),
		"refs/tags/" + strings.TrimPrefix(want, "refs/tags/"),
	} {
		if names[plumbing.ReferenceName(c)] {
			return plumbing.ReferenceName(c), true
		}
	}
	return "", false
}

// notContained is the message for a ref the repository does not have:
// BuildKit's words (source/git: "repository does not contain ref"), then
// ours.
func notContained(ref, why string) string {
	return "repository does not contain ref " + ref + " (unknown revision: " + why + ")"
}

// refPointingAt finds an advertised ref whose commit (peeled) is h.
func refPointingAt(refs []*plumbing.Reference, h plumbing.Hash) (plumbing.ReferenceName, bool) {
	for _, r := range refs {
		if r.Type() == plumbing.HashReference && r.Hash() == h {
			return plumbing.ReferenceName(strings.TrimSuffix(r.Name().String(), "^{}")), true
		}
	}
	return "", false
}

// peel follows annotated tags to the commit.
func peel(repo *git.Repository, h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		obj, err := repo.Storer.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return h, err
		}
		switch obj.Type() {
		case plumbing.CommitObject:
			return h, nil
		case plumbing.TagObject:
			tag, err := object.DecodeTag(repo.Storer, obj)
			if err != nil {
				return h, err
			}
			h = tag.Target
		default:
			return h, fmt.Errorf("%s is a %s, not a commit", h, obj.Type())
		}
	}
	return h, errors.New("too many nested tags")
}

// submodules checks out the submodules recorded in commit, each into its
// path under dest, recursively.
func (f *gitFetcher) submodules(ctx context.Context, repo *git.Repository, repoURL string, commit plumbing.Hash, dest, gitDir string, depth int) error {
	c, err := repo.CommitObject(commit)
	if err != nil {
		return err
	}
	file, err := c.File(".gitmodules")
	if errors.Is(err, object.ErrFileNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	text, err := file.Contents()
	if err != nil {
		return err
	}
	mods := config.NewModules()
	if err := mods.Unmarshal([]byte(text)); err != nil {
		return fmt.Errorf("parsing .gitmodules: %w", err)
	}
	tree, err := c.Tree()
	if err != nil {
		return err
	}
	if depth+1 > maxSubmoduleDepth {
		return fmt.Errorf("submodules nested deeper than %d", maxSubmoduleDepth)
	}
	for i, name := range slices.Sorted(maps.Keys(mods.Submodules)) {
		m := mods.Submodules[name]
		if err := m.Validate(); err != nil {
			return fmt.Errorf("submodule %q: %w", name, err)
		}
		p := path.Clean(m.Path)
		if path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") || p == "." {
			return fmt.Errorf("submodule %q: path %q leaves the repository", name, m.Path)
		}
		entry, err := tree.FindEntry(p)
		if err != nil || entry.Mode != filemode.Submodule {
			// Listed in .gitmodules but not recorded in the tree: git
			// skips it too.
			continue
		}
		subURL, err := resolveSubmoduleURL(repoURL, m.URL)
		if err != nil {
			return fmt.Errorf("submodule %q: %w", name, err)
		}
		subDest, err := joinSubPath(dest, p)
		if err != nil {
			return fmt.Errorf("submodule %q: %w", name, err)
		}
		subGit := filepath.Join(gitDir, "modules", strconv.Itoa(i))
		if _, err := f.fetch(ctx, subURL, entry.Hash.String(), "", subDest, subGit, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// resolveSubmoduleURL resolves a relative submodule URL ("./x", "../x")
// against the superproject's URL, as git does.
func resolveSubmoduleURL(base, rel string) (string, error) {
	if !strings.HasPrefix(rel, "./") && !strings.HasPrefix(rel, "../") {
		return rel, nil
	}
	if pu, err := url.Parse(base); err == nil && pu.Scheme != "" {
		pu.Path = path.Join(strings.TrimSuffix(pu.Path, "/"), rel)
		return pu.String(), nil
	}
	// scp-like user@host:path
	host, p, ok := strings.Cut(base, ":")
	if !ok {
		return path.Join(base, rel), nil
	}
	return host + ":" + path.Join(p, rel), nil
}

// explain says in words why listing the remote failed.
func (f *gitFetcher) explain(err error, withAuth bool) string {
	var ne net.Error
	var oe *net.OpError
	var dnse *net.DNSError
	switch {
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return "repository not found (or not visible with these credentials)"
	case errors.Is(err, transport.ErrAuthenticationRequired) && withAuth,
		errors.Is(err, transport.ErrAuthorizationFailed):
		return "the server refused the credentials"
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return "the server requires credentials (GIT_USERNAME and GIT_PASSWORD or GIT_TOKEN, or a basic-auth secret in GIT_SECRET_DIR)"
	case isHostKeyChanged(err):
		return "the SSH host key does not match known_hosts (it changed, or someone is in the middle)"
	case isHostKeyUnknown(err):
		return "the SSH host key is not in known_hosts (add it to the ssh-auth secret's known_hosts)"
	case strings.Contains(err.Error(), "unable to authenticate"):
		return "the server refused the SSH key"
	case errors.As(err, &dnse):
		return "the host name does not resolve"
	case errors.As(err, &oe), errors.As(err, &ne):
		return "the host is unreachable"
	case httpStatus(err) >= 500:
		return fmt.Sprintf("the server failed (HTTP %d %s)", httpStatus(err), http.StatusText(httpStatus(err)))
	case httpStatus(err) == http.StatusTooManyRequests:
		return "the server refused for now (HTTP 429 Too Many Requests)"
	}
	return "listing the remote's refs"
}

// scrub removes every secret of f.auth from err's message.
func (f *gitFetcher) scrub(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	out := f.auth.scrub(msg)
	if out == msg {
		return err
	}
	return errors.New(out)
}

// Fetched is a build context made available by FetchWithInfo.
type Fetched struct {
	// Dir is the context directory, with the sub-path applied.
	Dir string
	// Commit is the SHA of the commit checked out, for git contexts.
	Commit string
	// CommitTime is that commit's committer time (what BuildKit takes for
	// SOURCE_DATE_EPOCH=context); zero for other contexts.
	CommitTime time.Time
}

// FetchOptions configure FetchWithInfo.
type FetchOptions struct {
	// Git is the value of kaniko's --git flag (see ParseGitOptions).
	Git string
	// Getenv reads GIT_PULL_METHOD, and when Auth is nil GIT_USERNAME,
	// GIT_PASSWORD, GIT_TOKEN and GIT_SECRET_DIR. The default is os.Getenv.
	Getenv func(string) string
	// Auth are the credentials, scoped by their Origin (see GitAuth). Nil:
	// GitAuthFromEnv's, scoped to the URL fetched.
	Auth *GitAuth
	// BuildKitRefs resolves the ref as BuildKit does whatever the URL's
	// form (GitSource.BuildKitRefs): ADD sets it.
	BuildKitRefs bool
}

// FetchWithInfo is Fetch that also fetches git contexts and reports the
// commit. A git context (git://, https://, http://, ssh://, user@host:path)
// is checked out into workDir by FetchGit, with its objects in the sibling
// directory workDir+".git" (outside the context); the fragment's
// sub-directory and then subPath are applied. Every git error is a
// *gitError naming the URL without credentials and the ref.
func FetchWithInfo(ctx context.Context, contextURL, subPath, workDir string, o FetchOptions) (Fetched, error) {
	if contextURL == "" || !isGit(contextURL) {
		dir, err := Fetch(ctx, contextURL, subPath, workDir)
		return Fetched{Dir: dir}, err
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	src, err := ParseGitURL(contextURL, getenv("GIT_PULL_METHOD"))
	if err != nil {
		return Fetched{}, fmt.Errorf("fetching context: %w", err)
	}
	if src.Options, err = ParseGitOptions(o.Git); err != nil {
		return Fetched{}, fmt.Errorf("fetching context %s: %w", RedactURL(src.URL), err)
	}
	// The URL's ?submodules= is the more specific, and wins over --git.
	if src.Submodules != nil {
		src.Options.RecurseSubmodules = *src.Submodules
	}
	src.BuildKitRefs = src.BuildKitRefs || o.BuildKitRefs
	var auth GitAuth
	if o.Auth != nil {
		auth = *o.Auth
	} else if auth, err = GitAuthFromEnv(getenv); err != nil {
		return Fetched{}, fmt.Errorf("fetching context %s: %w", RedactURL(src.URL), err)
	} else {
		auth.Origin = GitOrigin(src.URL)
	}
	// Credentials in the URL are for that URL, and win over the others.
	if src.Auth.Username != "" || src.Auth.Password != "" {
		auth.Origin, auth.Username, auth.Password, auth.SSHKey = GitOrigin(src.URL), src.Auth.Username, src.Auth.Password, nil
	}
	src.Auth = auth
	if workDir == "" {
		return Fetched{}, fmt.Errorf("fetching context %s: no work directory to check out into", RedactURL(src.URL))
	}
	workDir = filepath.Clean(workDir)
	commit, err := FetchGit(ctx, src, workDir, workDir+".git")
	if err != nil {
		return Fetched{}, err
	}
	when, err := commitTime(workDir+".git", commit)
	if err != nil {
		return Fetched{}, &gitError{url: RedactURL(src.URL), ref: src.Ref, msg: "reading commit " + commit, err: err}
	}
	dir := workDir
	for _, sub := range []string{src.SubDir, subPath} {
		if sub == "" {
			continue
		}
		if dir, err = joinSubPath(dir, sub); err != nil {
			return Fetched{}, fmt.Errorf("fetching context %s at %s: %w", RedactURL(src.URL), src.Ref, err)
		}
	}
	return Fetched{Dir: dir, Commit: commit, CommitTime: when}, nil
}

// commitTime reads the committer time of commit from the objects in gitDir.
func commitTime(gitDir, commit string) (time.Time, error) {
	st := filesystem.NewStorage(osfs.New(gitDir), cache.NewObjectLRUDefault())
	defer st.Close()
	c, err := object.GetCommit(st, plumbing.NewHash(commit))
	if err != nil {
		return time.Time{}, err
	}
	return c.Committer.When.UTC(), nil
}
