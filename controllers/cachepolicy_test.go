package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

func TestCheckCacheRepository(t *testing.T) {
	prefixes := []CacheRepositoryPrefix{
		{Namespace: "team-a", Prefix: "registry.example.com/shared/team-a"},
		{Namespace: "*", Prefix: "Cache.Example.com/{namespace}"},
		{Namespace: "*", Prefix: "docker.io/shared"},
		{Namespace: "team-c", Prefix: "registry.internal"}, // a whole registry
	}
	tests := []struct {
		name   string
		ns     string
		output string
		cache  string
		ok     bool
	}{
		{name: "the default", ns: "team-b", output: "registry.example.com/b/app:v1", cache: "registry.example.com/b/app/cache", ok: true},
		{name: "deeper under the output repository", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app/x/y", ok: true},
		{name: "the output repository itself", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app"},
		{name: "a sibling sharing a name prefix", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app-cache"},
		{name: "another namespace's default", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/a/app/cache"},
		{name: "registry host case", ns: "team-b", output: "Registry.Example.com/b/app", cache: "registry.example.com/b/app/cache", ok: true},
		{name: "registry host case of the cache", ns: "team-b", output: "registry.example.com/b/app", cache: "REGISTRY.example.com/b/app/cache", ok: true},
		{name: "another registry, same path", ns: "team-b", output: "registry.example.com/b/app", cache: "evil.example.com/b/app/cache"},
		{name: "another port", ns: "team-b", output: "registry.example.com:5000/b/app", cache: "registry.example.com:5001/b/app/cache"},
		{name: "docker.io spelled out", ns: "team-b", output: "b/app", cache: "docker.io/b/app/cache", ok: true},
		{name: "index.docker.io spelled out", ns: "team-b", output: "docker.io/b/app", cache: "index.docker.io/b/app/cache", ok: true},
		{name: "dot-dot out of the output repository", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app/../../a/app/cache"},
		{name: "dot component", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app/./cache"},
		{name: "empty component", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app//cache"},
		{name: "a tag", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app/cache:latest"},
		{name: "a digest", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/b/app/cache@sha256:" + strings.Repeat("a", 64)},
		{name: "the namespace's prefix", ns: "team-a", output: "registry.example.com/a/app", cache: "registry.example.com/shared/team-a/app", ok: true},
		{name: "the namespace's prefix itself", ns: "team-a", output: "registry.example.com/a/app", cache: "registry.example.com/shared/team-a", ok: true},
		{name: "another namespace's prefix", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.example.com/shared/team-a/app"},
		{name: "templated prefix", ns: "team-b", output: "registry.example.com/b/app", cache: "cache.example.com/team-b/app", ok: true},
		{name: "templated prefix of another namespace", ns: "team-b", output: "registry.example.com/b/app", cache: "cache.example.com/team-a/app"},
		{name: "templated prefix, name prefix only", ns: "team-b", output: "registry.example.com/b/app", cache: "cache.example.com/team-bb/app"},
		{name: "Docker Hub prefix", ns: "team-b", output: "registry.example.com/b/app", cache: "shared/cache", ok: true},
		{name: "Docker Hub prefix is no library/ one", ns: "team-b", output: "registry.example.com/b/app", cache: "library/shared"},
		{name: "a registry as the prefix", ns: "team-c", output: "registry.example.com/c/app", cache: "registry.internal/anything/cache", ok: true},
		{name: "a registry as the prefix, another namespace", ns: "team-b", output: "registry.example.com/b/app", cache: "registry.internal/anything/cache"},
		{name: "a registry as the prefix, another port", ns: "team-c", output: "registry.example.com/c/app", cache: "registry.internal:5000/anything/cache"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkCacheRepository(tc.ns, tc.output, tc.cache, prefixes)
			if tc.ok {
				if err != nil {
					t.Errorf("checkCacheRepository(%q, %q, %q) = %v, want nil", tc.ns, tc.output, tc.cache, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkCacheRepository(%q, %q, %q) = nil, want a refusal", tc.ns, tc.output, tc.cache)
			}
			for _, want := range []string{"spec.cache.repository", tc.cache, "cache.example.com/" + tc.ns} {
				if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
					t.Errorf("message %q does not name %q", err, want)
				}
			}
		})
	}
}

// The refusal names the field and every allowed prefix, the namespace's own expanded.
func TestCheckCacheRepository_message(t *testing.T) {
	prefixes := []CacheRepositoryPrefix{
		{Namespace: "team-a", Prefix: "registry.example.com/shared/team-a"},
		{Namespace: "*", Prefix: "cache.example.com/{namespace}"},
	}
	err := checkCacheRepository("team-a", "registry.example.com/a/app:v1", "registry.example.com/b/app/cache", prefixes)
	want := `spec.cache.repository "registry.example.com/b/app/cache" is not allowed: a cache repository must be under the output repository or one of the prefixes configured for namespace "team-a": ` +
		`registry.example.com/a/app/, registry.example.com/shared/team-a, cache.example.com/team-a`
	if err == nil {
		t.Fatal("checkCacheRepository = nil, want a refusal")
	}
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
}

func TestParseCacheRepositoryPrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    CacheRepositoryPrefix
		wantErr bool
	}{
		{in: "team-a=registry.example.com/team-a", want: CacheRepositoryPrefix{Namespace: "team-a", Prefix: "registry.example.com/team-a"}},
		{in: "*=registry.example.com/cache/{namespace}", want: CacheRepositoryPrefix{Namespace: "*", Prefix: "registry.example.com/cache/{namespace}"}},
		{in: "registry.example.com/team-a", wantErr: true},
		{in: "Team_A=registry.example.com/team-a", wantErr: true},
		{in: "team-a=", wantErr: true},
		{in: "team-a=registry.example.com/a/../b", wantErr: true},
		{in: "team-a=registry.example.com/a:tag", wantErr: true},
		{in: "team-a=registry.example.com/{name}", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCacheRepositoryPrefix(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Errorf("ParseCacheRepositoryPrefix(%q) = %+v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCacheRepositoryPrefix(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Namespace B's ImageBuild names namespace A's cache repository: by A's default, in another
// spelling, and under A's templated prefix. Each is refused before any pod exists, Stalled and
// not retried; B's own repository builds.
func TestImageBuildReconciler_Reconcile_cacheRepositoryOfAnotherNamespace(t *testing.T) {
	c := startEnv(t)
	nsA := newNamespace(t, c, nil)
	nsB := newNamespace(t, c, nil)
	opts := Options{CacheRepositoryPrefixes: []CacheRepositoryPrefix{{Namespace: "*", Prefix: "registry.example.com/cache/{namespace}"}}}
	startManager(t, nsA, opts)
	startManager(t, nsB, opts)

	// A's build uses its default cache, registry.example.com/a/app/cache.
	newImageBuild(t, c, nsA, "app", func(ib *v1alpha1.ImageBuild) { ib.Spec.Output.Image = "registry.example.com/a/app:v1" })
	if pod := waitPod(t, c, nsA, "app-1-1"); !slices.Contains(pod.Spec.Containers[0].Args, "--cache-repo=registry.example.com/a/app/cache") {
		t.Errorf("A's executor args %v lack its default cache repository", pod.Spec.Containers[0].Args)
	}

	for i, repo := range []string{
		"registry.example.com/a/app/cache",
		"Registry.Example.COM/a/app/cache",
		"registry.example.com/cache/" + nsA,
		"registry.example.com/cache/" + nsA + "/app",
	} {
		name := fmt.Sprintf("steal-%d", i)
		key := newImageBuild(t, c, nsB, name, func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Output.Image = "registry.example.com/b/app:v1"
			ib.Spec.Cache = &v1alpha1.Cache{Repository: repo}
		})
		ib := waitStatus(t, c, key, "Stalled/CacheRepositoryNotAllowed", conditionIs("Stalled", metav1.ConditionTrue, "CacheRepositoryNotAllowed"))
		ready := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready")
		if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != "CacheRepositoryNotAllowed" {
			t.Errorf("%s: Ready = %+v, want False/CacheRepositoryNotAllowed", repo, ready)
		}
		for _, want := range []string{"spec.cache.repository", repo, "registry.example.com/b/app/", "registry.example.com/cache/" + nsB} {
			if ready != nil && !strings.Contains(ready.Message, want) {
				t.Errorf("%s: Ready message %q does not name %q", repo, ready.Message, want)
			}
		}
		if ib.Status.Phase != v1alpha1.PhaseFailed || apimeta.FindStatusCondition(ib.Status.Conditions, "Reconciling") != nil {
			t.Errorf("%s: %s; want phase Failed without Reconciling", repo, describe(ib))
		}
	}

	// B's own prefix and output repository are fine.
	newImageBuild(t, c, nsB, "own", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Output.Image = "registry.example.com/b/app:v1"
		ib.Spec.Cache = &v1alpha1.Cache{Repository: "registry.example.com/cache/" + nsB + "/app"}
	})
	waitPod(t, c, nsB, "own-1-1")

	// Nothing was started for the refused ones, and nothing is retried later.
	time.Sleep(time.Second)
	if got := podNames(t, c, nsB); !slices.Equal(got, []string{"own-1-1"}) {
		t.Errorf("pods of namespace B = %v, want only own-1-1", got)
	}
}
