package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
)

// gitRefs parses sources the way BuildKit's ADD does (dfgitutil): nil when
// none is a git repository (https://…/repo.git, git://…, ssh://…,
// user@host:path, with a "#ref:subdir" fragment), an error when one is
// malformed, or when git and other sources are mixed (which this executor
// does not do).
func gitRefs(srcs []string) ([]*dfgitutil.GitRef, error) {
	var refs []*dfgitutil.GitRef
	for _, src := range srcs {
		ref, isGit, err := dfgitutil.ParseGitRef(src)
		if err != nil && isGit {
			return nil, fmt.Errorf("%s: %w", source.RedactURL(src), err)
		}
		if err == nil && !ref.IndistinguishableFromLocal {
			refs = append(refs, ref)
		}
	}
	if len(refs) > 0 && len(refs) != len(srcs) {
		return nil, errors.New("ADD of a git repository together with other sources is not supported by this executor")
	}
	return refs, nil
}

// commitHex is what a git --checksum must be: a commit SHA, or a prefix of
// one.
var commitHex = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// gitSource is a git repository an ADD reads, fetched when the step is
// planned (its commit is the cache key).
type gitSource struct {
	remote, ref, subdir string
	commit              string
	dir                 string // the checkout, the sub-directory applied
}

// fetchGitSources fetches the repositories of an ADD into the work
// directory: shallow, at the ref, with submodules unless the URL says
// ?submodules=false, with the credentials Options.GitAuth scopes to each
// URL (the git context's go to its origin only). checksum, when set, is the commit (or a prefix of it)
// each must check out.
func (g *stage) fetchGitSources(ctx context.Context, refs []*dfgitutil.GitRef, keepGitDir *bool, checksum string) ([]gitSource, error) {
	if checksum != "" && !commitHex.MatchString(checksum) {
		return nil, fail(result.ReasonDockerfileInvalid, fmt.Errorf("ADD --checksum=%s: for a git repository it is a commit SHA (7 to 64 hex digits)", checksum))
	}
	var out []gitSource
	for _, ref := range refs {
		keep := keepGitDir
		if ref.KeepGitDir != nil {
			if keep != nil && *keep != *ref.KeepGitDir {
				return nil, fail(result.ReasonDockerfileInvalid, errors.New("inconsistent keep-git-dir configuration"))
			}
			keep = ref.KeepGitDir
		}
		if keep != nil && *keep {
			return nil, fail(result.ReasonDockerfileInvalid, fmt.Errorf("ADD --keep-git-dir=true %s: keeping the .git directory is not supported by this executor", source.RedactURL(ref.Remote)))
		}
		want := checksum
		if ref.Checksum != "" {
			if want != "" && want != ref.Checksum {
				return nil, fail(result.ReasonDockerfileInvalid, fmt.Errorf("checksum mismatch %q != %q", want, ref.Checksum))
			}
			want = ref.Checksum
		}
		dir, err := os.MkdirTemp(g.b.opts.WorkDir, "add-git-")
		if err != nil {
			return nil, fail(result.ReasonInternal, err)
		}
		url := ref.Remote
		if ref.Ref != "" || ref.SubDir != "" {
			url += "#" + ref.Ref
			if ref.SubDir != "" {
				url += ":" + ref.SubDir
			}
		}
		opts := source.FetchOptions{Git: "recurse-submodules=true", Auth: &g.b.opts.GitAuth}
		if ref.Submodules != nil && !*ref.Submodules {
			opts.Git = ""
		}
		f, err := source.FetchWithInfo(ctx, url, "", dir+"/checkout", opts)
		if err != nil {
			return nil, fail(result.ReasonSourceFetchFailed, fmt.Errorf("ADD %s: %w", source.RedactURL(ref.Remote), err))
		}
		if want != "" && !strings.HasPrefix(f.Commit, want) {
			return nil, fail(result.ReasonCopyFailed, fmt.Errorf("ADD %s: checked out commit %s, which does not match --checksum=%s", source.RedactURL(ref.Remote), f.Commit, want))
		}
		fmt.Fprintf(g.b.log, "ADD %s at %s: commit %s\n", source.RedactURL(ref.Remote), orHEAD(ref.Ref), f.Commit)
		out = append(out, gitSource{remote: source.RedactURL(ref.Remote), ref: ref.Ref, subdir: ref.SubDir, commit: f.Commit, dir: f.Dir})
	}
	return out, nil
}

func orHEAD(ref string) string {
	if ref == "" {
		return "HEAD"
	}
	return ref
}
