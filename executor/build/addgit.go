package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
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

// commitHex is what a git --checksum must be: hex digits, a commit SHA or
// a prefix of one (BuildKit's git source, resolveMetadata).
var commitHex = regexp.MustCompile(`^[a-fA-F0-9]+$`)

// gitSource is a git repository an ADD reads, fetched when the step is
// planned (its commit is the cache key).
type gitSource struct {
	remote, ref, subdir string
	commit              string
	dir                 string // the checkout, the sub-directory applied
	// keepGitDir: the checkout has a .git directory (see source.WriteGitDir).
	keepGitDir bool
	// rawRemote is the URL as written, credentials and all: never to be
	// shown or keyed unmasked.
	rawRemote string
}

// fetchGitSources fetches the repositories of an ADD into the work
// directory: shallow, at the ref, with submodules unless the URL says
// ?submodules=false, with the credentials Options.GitAuth scopes to each
// URL (the git context's go to its origin only). checksum, when set, is the commit (or a prefix of it)
// each must check out.
func (sb *stageBuilder) fetchGitSources(ctx context.Context, refs []*dfgitutil.GitRef, keepGitDir *bool, checksum string) ([]gitSource, error) {
	if checksum != "" && !commitHex.MatchString(checksum) {
		return nil, fail(result.ReasonDockerfileInvalid, fmt.Errorf("ADD --checksum=%s: invalid checksum %s for Git URL, expected hex commit hash", checksum, checksum))
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
		want := checksum
		if ref.Checksum != "" {
			if want != "" && want != ref.Checksum {
				return nil, fail(result.ReasonDockerfileInvalid, fmt.Errorf("checksum mismatch %q != %q", want, ref.Checksum))
			}
			want = ref.Checksum
		}
		dir, err := os.MkdirTemp(sb.b.opts.WorkDir, "add-git-")
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
		opts := source.FetchOptions{Git: "recurse-submodules=true", Auth: &sb.b.opts.GitAuth, BuildKitRefs: true}
		if ref.Submodules != nil && !*ref.Submodules {
			opts.Git = "recurse-submodules=false"
		}
		f, err := source.FetchWithInfo(ctx, url, "", dir+"/checkout", opts)
		if err != nil {
			return nil, fail(result.ReasonSourceFetchFailed, fmt.Errorf("ADD %s: %w", source.RedactURL(ref.Remote), err))
		}
		if want != "" && !strings.HasPrefix(f.Commit, want) {
			return nil, fail(result.ReasonCopyFailed, fmt.Errorf("ADD %s: expected checksum to match %s, got %s (the commit checked out, which does not match --checksum=%s)", source.RedactURL(ref.Remote), want, f.Commit, want))
		}
		// BuildKit keeps .git only for the whole repository: with a
		// sub-directory, its checkout has none (source/git's checkout).
		kept := keep != nil && *keep && path.Clean("/"+ref.SubDir) == "/"
		if kept {
			if err := source.WriteGitDir(f.Dir, dir+"/checkout.git", ref.Remote, ref.Ref, f.Commit); err != nil {
				return nil, fail(result.ReasonSourceFetchFailed, fmt.Errorf("ADD --keep-git-dir %s: %w", source.RedactURL(ref.Remote), err))
			}
		}
		fmt.Fprintf(sb.b.log, "ADD %s at %s: commit %s\n", source.RedactURL(ref.Remote), orHEAD(ref.Ref), f.Commit)
		out = append(out, gitSource{remote: source.RedactURL(ref.Remote), ref: ref.Ref, subdir: ref.SubDir, commit: f.Commit, dir: f.Dir, keepGitDir: kept, rawRemote: ref.Remote})
	}
	return out, nil
}

func orHEAD(ref string) string {
	if ref == "" {
		return "HEAD"
	}
	return ref
}

// maskCredentials is BuildKit's urlutil.RedactCredentials (see
// source.MaskCredentials).
func maskCredentials(s string) string { return source.MaskCredentials(s) }
