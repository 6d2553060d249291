package source

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// WriteGitDir gives the checkout dir of commit, whose objects the fetch
// wrote to the directory objects, the .git directory BuildKit's git source
// makes for ADD --keep-git-dir (source/git's checkout: git init, a fetch
// of the ref at depth 1 from the fetched repository, checkout FETCH_HEAD,
// the origin set to the remote URL with its credentials masked by
// urlutil.RedactCredentials, the reflog expired, FETCH_HEAD removed):
//   - objects: the commit, its trees and blobs (no submodule's), and the
//     annotated tag the ref names, in one pack, the commit marked shallow
//     when it has parents, as a depth-1 fetch leaves it;
//   - HEAD detached at the commit, the index that of the commit (the work
//     tree is the checkout: git status is clean);
//   - the ref named, when its kind is known: an annotated tag
//     (refs/tags/NAME) or a full ref name (refs/...); a short name of a
//     branch or a lightweight tag gets none, since the fetch does not say
//     which it was (BuildKit fetches it as NAME:NAME, git making it
//     refs/heads/ or refs/tags/ as the remote had it);
//   - the config: origin's URL with user and password replaced by "xxxxx"
//     and git's default fetch refspec, nothing else: no credential, no
//     header, no reflog, no FETCH_HEAD.
//
// Submodules are checked out as files, without .git of their own (BuildKit
// runs git submodule update, which gives them one under .git/modules).
func WriteGitDir(dir, objects, remote, ref, commit string) error {
	src, err := git.Open(filesystem.NewStorage(osfs.New(objects), cache.NewObjectLRUDefault()), nil)
	if err != nil {
		return fmt.Errorf("opening the fetched objects: %w", err)
	}
	head := plumbing.NewHash(commit)
	c, err := src.CommitObject(head)
	if err != nil {
		return fmt.Errorf("reading commit %s: %w", commit, err)
	}
	hashes := []plumbing.Hash{head}
	seen := map[plumbing.Hash]bool{head: true}
	tree, err := c.Tree()
	if err != nil {
		return fmt.Errorf("reading the tree of %s: %w", commit, err)
	}
	if err := treeObjects(tree, seen, &hashes); err != nil {
		return err
	}
	// The ref as BuildKit's fetch NAME:NAME would make it.
	var local *plumbing.Reference
	switch {
	case ref == "" || commitHexRE.MatchString(ref) && strings.HasPrefix(commit, strings.ToLower(ref)):
		// HEAD or a commit: FETCH_HEAD only.
	default:
		if tag := annotatedTag(src, ref, head); tag != nil {
			for h := tag.Hash; !seen[h]; {
				seen[h] = true
				hashes = append(hashes, h)
				t, err := src.TagObject(h)
				if err != nil || t.TargetType != plumbing.TagObject {
					break
				}
				h = t.Target
			}
			local = plumbing.NewHashReference(plumbing.NewTagReferenceName(tag.Name), tag.Hash)
		} else if strings.HasPrefix(ref, "refs/") {
			local = plumbing.NewHashReference(plumbing.ReferenceName(ref), head)
		}
	}

	dst, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: plumbing.Master}})
	if err != nil {
		return fmt.Errorf("initialising .git: %w", err)
	}
	pw, ok := dst.Storer.(storer.PackfileWriter)
	if !ok {
		return errors.New("initialising .git: the storage cannot write packs")
	}
	w, err := pw.PackfileWriter()
	if err != nil {
		return fmt.Errorf("writing the objects: %w", err)
	}
	if _, err := packfile.NewEncoder(w, src.Storer, false).Encode(hashes, 0); err != nil {
		w.Close()
		return fmt.Errorf("writing the objects: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing the objects: %w", err)
	}
	if c.NumParents() > 0 {
		if err := dst.Storer.SetShallow([]plumbing.Hash{head}); err != nil {
			return fmt.Errorf("writing .git/shallow: %w", err)
		}
	}
	if local != nil {
		if err := dst.Storer.SetReference(local); err != nil {
			return fmt.Errorf("writing %s: %w", local.Name(), err)
		}
	}
	if err := dst.Storer.SetReference(plumbing.NewHashReference(plumbing.HEAD, head)); err != nil {
		return fmt.Errorf("writing HEAD: %w", err)
	}
	cfg, err := dst.Config()
	if err != nil {
		return fmt.Errorf("reading .git/config: %w", err)
	}
	cfg.Remotes = map[string]*config.RemoteConfig{"origin": {
		Name:  "origin",
		URLs:  []string{MaskCredentials(remote)},
		Fetch: []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*"},
	}}
	if err := dst.SetConfig(cfg); err != nil {
		return fmt.Errorf("writing .git/config: %w", err)
	}
	wt, err := dst.Worktree()
	if err != nil {
		return fmt.Errorf("writing .git/index: %w", err)
	}
	// The index only: the work tree is the checkout already.
	if err := wt.Reset(&git.ResetOptions{Commit: head, Mode: git.MixedReset}); err != nil {
		return fmt.Errorf("writing .git/index: %w", err)
	}
	return nil
}

// treeObjects appends to hashes the trees and blobs of t not yet seen,
// leaving out submodules' commits (which are not in this repository).
func treeObjects(t *object.Tree, seen map[plumbing.Hash]bool, hashes *[]plumbing.Hash) error {
	if seen[t.Hash] {
		return nil
	}
	seen[t.Hash] = true
	*hashes = append(*hashes, t.Hash)
	for _, e := range t.Entries {
		switch {
		case e.Mode == filemode.Submodule:
		case e.Mode == filemode.Dir:
			sub, err := t.Tree(e.Name)
			if err != nil {
				return fmt.Errorf("reading tree %s: %w", e.Name, err)
			}
			if err := treeObjects(sub, seen, hashes); err != nil {
				return err
			}
		case !seen[e.Hash]:
			seen[e.Hash] = true
			*hashes = append(*hashes, e.Hash)
		}
	}
	return nil
}

// annotatedTag is the tag object ref names, found among what the fetch
// stored (its refs point at what the remote's ref pointed at), when it is
// an annotated tag of commit head; nil otherwise.
func annotatedTag(repo *git.Repository, ref string, head plumbing.Hash) *object.Tag {
	name := strings.TrimPrefix(ref, "refs/tags/")
	if strings.HasPrefix(name, "refs/") {
		return nil
	}
	refs, err := repo.References()
	if err != nil {
		return nil
	}
	defer refs.Close()
	var found *object.Tag
	_ = refs.ForEach(func(r *plumbing.Reference) error {
		if r.Type() != plumbing.HashReference {
			return nil
		}
		t, err := repo.TagObject(r.Hash())
		if err != nil || t.Name != name {
			return nil
		}
		if c, err := t.Commit(); err != nil || c.Hash != head {
			return nil
		}
		found = t
		return storer.ErrStop
	})
	return found
}

// MaskCredentials is BuildKit's urlutil.RedactCredentials, the origin URL
// its --keep-git-dir checkout keeps: a URL's user name and password each
// replaced by "xxxxx"; what does not parse as a URL (user@host:path) as it
// is.
func MaskCredentials(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	const mask = "xxxxx"
	_, hasPassword := u.User.Password()
	switch hasUser := u.User.Username() != ""; {
	case hasUser && hasPassword:
		u.User = url.UserPassword(mask, mask)
	case hasUser:
		u.User = url.User(mask)
	case hasPassword:
		u.User = url.UserPassword("", mask)
	}
	return u.String()
}
