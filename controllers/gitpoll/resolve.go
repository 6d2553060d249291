package gitpoll

import (
	"fmt"
	"regexp"
	"strings"
)

// How a revision is resolved. The controller passes the executor the
// context URL#revision (controllers/pod.go executorArgs), whose fragment the
// executor resolves with source.resolveRefName (executor/source/git.go): the
// revision as git rev-parse finds it among the advertised refs, trying the
// exact name, then refs/<rev>, refs/tags/<rev>, refs/heads/<rev>; an empty
// revision is HEAD; an annotated tag is peeled to its commit. What no ref
// names is a commit SHA if it is hexadecimal (4 to 40 digits), which never
// moves. The poller follows the same rules, so that the commit it reports is
// the one the executor builds; TestPoller_agreesWithExecutor checks it
// against source.FetchGit.

var (
	// fullSHARE is a full commit SHA (SHA-1; 64 digits for SHA-256
	// repositories).
	fullSHARE = regexp.MustCompile(`^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$`)
	// abbrevSHARE is what the executor looks up as a commit when no ref
	// has that name (source's hexRE).
	abbrevSHARE = regexp.MustCompile(`^[0-9a-fA-F]{4,40}$`)
)

// IsCommit reports whether revision is a full commit SHA: it never moves,
// so Subscribe does not poll it (ErrCommit).
func IsCommit(revision string) bool { return fullSHARE.MatchString(revision) }

// candidates are the ref names revision may stand for, in the order the
// executor tries them (source.resolveRefName).
func candidates(revision string) []string {
	if revision == "" {
		revision = "HEAD"
	}
	return []string{revision, "refs/" + revision, "refs/tags/" + revision, "refs/heads/" + revision}
}

// resolution is what one listing says of one revision.
type resolution struct {
	commit string
	ref    string
	// tag: the revision is a tag, which is checked at the tag interval.
	tag bool
	// pinned: no ref has that name, and it is hexadecimal: the executor
	// takes it for an abbreviated commit, which never moves.
	pinned bool
	err    error
}

// resolve finds revision in a listing: the first candidate the listing
// has, its peeled commit when it is an annotated tag.
func resolve(revision string, l *listing) resolution {
	for _, name := range candidates(revision) {
		h, ok := l.refs[name]
		if !ok {
			continue
		}
		if peeled, ok := l.refs[name+"^{}"]; ok {
			h = peeled
		}
		ref := name
		if name == "HEAD" && l.head != "" {
			ref = l.head
		}
		return resolution{commit: h, ref: ref, tag: strings.HasPrefix(ref, "refs/tags/")}
	}
	if abbrevSHARE.MatchString(revision) {
		return resolution{pinned: true}
	}
	shown := revision
	if shown == "" {
		shown = "HEAD"
	}
	why := "no branch, tag or ref of that name"
	if l.empty {
		why = "the repository has no refs"
	}
	// The executor's words (source.notContained), so that both say the same.
	return resolution{err: fmt.Errorf("repository does not contain ref %s (unknown revision: %s)", shown, why)}
}
