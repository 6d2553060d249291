package controllers

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// Which cache repositories an ImageBuild may use.
//
// A cache entry is a layer tagged with its key in the cache repository, and the key is no
// secret and no MAC: whoever can push to the repository can write an entry under any key, and
// a build that looks that key up takes the entry's layer into its image. The executor checks
// that an entry is well-formed and that its bytes are what its manifest says (package
// executor/cache), which stops corrupt and mismatched entries, not a writer with push rights.
// So the cluster decides who shares a cache repository: a namespace's ImageBuilds may only
// use a cache repository under their own output repository ("<output repository>/cache" by
// default; whoever builds there needs push rights to it anyway) or under a prefix the operator
// gives that namespace (--cache-repository-prefix). A tenant of another namespace therefore
// cannot read this namespace's cache or feed it entries by naming its repository in
// spec.cache.repository; one that can push to the output repository can, as it could push the
// image itself. spec.output.image is not restricted here: a tenant that names another's output
// repository gets its cache too, and only the registry's credentials stop it (the executor
// checks its push rights while the build starts, at the time of the cache lookups, not before).

// CacheRepositoryPrefix lets the ImageBuilds of Namespace ("*": of every namespace) use the
// cache repositories under Prefix (Prefix itself or Prefix/...). "{namespace}" in Prefix stands
// for the ImageBuild's namespace. The command line form is NAMESPACE=PREFIX.
type CacheRepositoryPrefix struct {
	Namespace string
	Prefix    string
}

// String is the command line form, NAMESPACE=PREFIX.
func (p CacheRepositoryPrefix) String() string { return p.Namespace + "=" + p.Prefix }

// namespacePlaceholder is replaced by the ImageBuild's namespace in a CacheRepositoryPrefix.
const namespacePlaceholder = "{namespace}"

// ParseCacheRepositoryPrefix parses NAMESPACE=PREFIX (--cache-repository-prefix): NAMESPACE
// is a namespace's name or "*", PREFIX a repository, [registry/]path, in which
// "{namespace}" may stand for the namespace.
func ParseCacheRepositoryPrefix(s string) (CacheRepositoryPrefix, error) {
	ns, prefix, ok := strings.Cut(s, "=")
	if !ok {
		return CacheRepositoryPrefix{}, fmt.Errorf("%q is not NAMESPACE=PREFIX", s)
	}
	if ns != "*" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return CacheRepositoryPrefix{}, fmt.Errorf("%q: namespace %q: %s", s, ns, strings.Join(errs, "; "))
		}
	}
	p := CacheRepositoryPrefix{Namespace: ns, Prefix: prefix}
	// Any namespace's name must make it a repository prefix.
	if _, err := normalizePrefix(p.expand("ns")); err != nil {
		return CacheRepositoryPrefix{}, fmt.Errorf("%q: prefix: %w", s, err)
	}
	return p, nil
}

func (p CacheRepositoryPrefix) expand(namespace string) string {
	return strings.ReplaceAll(p.Prefix, namespacePlaceholder, namespace)
}

// pathComponent is a component of a repository path, as the distribution registry's grammar
// has it. go-containerregistry's parser only checks the characters, which lets "a/../b",
// "a/./b" and "a//b" through.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// normalizeRepository returns repo as registry/path with the registry lowercased, Docker Hub
// named index.docker.io (for "docker.io" and for no registry at all, with "library/" for a
// one-component path), so that two spellings of one repository compare equal. A tag, a
// digest, an empty, "." or ".." path component is an error.
func normalizeRepository(repo string) (string, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return "", err
	}
	path := r.RepositoryStr()
	for _, c := range strings.Split(path, "/") {
		if !pathComponent.MatchString(c) {
			return "", fmt.Errorf("repository %q: path component %q is not [a-z0-9] words joined by '.', '_', '__' or '-'", repo, c)
		}
	}
	return strings.ToLower(r.RegistryStr()) + "/" + path, nil
}

// normalizePrefix is normalizeRepository for a prefix of repositories, which may be a registry
// alone: Docker Hub's "library/" is not added to a one-component path ("docker.io/team" is
// team's repositories, not library/team).
func normalizePrefix(prefix string) (string, error) {
	n, err := normalizeRepository(prefix + "/x")
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(n, "/x"), nil
}

// under reports whether the normalized repository repo is prefix or below it.
func under(repo, prefix string) bool {
	return repo == prefix || strings.HasPrefix(repo, prefix+"/")
}

// checkCacheRepository says whether an ImageBuild of namespace ns that pushes outputImage may
// use the cache repository cacheRepo (its spec.cache.repository, or the default): nil when it
// may, else an error for its status that names the field and what is allowed. The repository
// must be below the output repository, or at or below one of the prefixes of ns or "*".
func checkCacheRepository(ns, outputImage, cacheRepo string, prefixes []CacheRepositoryPrefix) error {
	outRepo := outputRepository(outputImage)
	allowed := []string{outRepo + "/"}
	out, outErr := normalizeRepository(outRepo)
	var mine []string
	for _, p := range prefixes {
		if p.Namespace == ns || p.Namespace == "*" {
			mine = append(mine, p.expand(ns))
		}
	}
	allowed = append(allowed, mine...)
	refuse := func(why string) error {
		return fmt.Errorf("spec.cache.repository %q is not allowed%s: a cache repository must be under the output repository or one of the prefixes configured for namespace %q: %s",
			cacheRepo, why, ns, strings.Join(allowed, ", "))
	}
	repo, err := normalizeRepository(cacheRepo)
	if err != nil {
		return refuse(" (" + err.Error() + ")")
	}
	if outErr == nil && strings.HasPrefix(repo, out+"/") {
		return nil
	}
	for _, p := range mine {
		if np, err := normalizePrefix(p); err == nil && under(repo, np) {
			return nil
		}
	}
	return refuse("")
}

// cacheRepositoryProblem is checkCacheRepository for ib's cache repository, "" when it is
// allowed or the cache is disabled.
func cacheRepositoryProblem(ib *v1alpha1.ImageBuild, prefixes []CacheRepositoryPrefix) string {
	repo := cacheRepository(ib)
	if repo == "" {
		return ""
	}
	if err := checkCacheRepository(ib.Namespace, ib.Spec.Output.Image, repo, prefixes); err != nil {
		return err.Error()
	}
	return ""
}
