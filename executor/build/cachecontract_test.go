package build_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// These tests hold the build to build.Cache's contract with an in-memory
// cache (fakeCache); the registry-backed cache's side of it is tested in
// package cache, and the two together by the tests with f.fake unset.

// TestBuild_cacheRefusedLayer: a cached layer that fails its check when read
// (cache.ErrRefused) makes the build start again without it, and the
// result is what a build without the entry makes.
func TestBuild_cacheRefusedLayer(t *testing.T) {
	f := newFixture(t, nil)
	f.fake = newFakeCache()
	mustBuild(t, f, "FROM {{BASE}}\nRUN echo one > /one\n", true)
	for _, k := range f.fake.keys() {
		f.fake.refuse(k)
	}
	// The first RUN hits; the second misses, so the first's layer is read
	// to make the tree, and refused.
	img, rep := mustBuild(t, f, "FROM {{BASE}}\nRUN echo one > /one\nRUN cat /one > /two\n", true)
	if !strings.Contains(f.log, "WARNING: a layer of the cache was refused, building again without it") {
		t.Errorf("the log does not say the cache's layer was refused:\n%s", f.log)
	}
	// What the second attempt did: both steps ran.
	if diff := cmp.Diff(counts{0, 2}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	if got, _ := fileContent(t, img, "two"); got != "one\n" {
		t.Errorf("/two = %q, want %q", got, "one\n")
	}
}

// TestBuild_cacheLookupFails: a cache that cannot be read is a miss for
// every step, warned of once; the steps are stored all the same, and the
// next build hits them.
func TestBuild_cacheLookupFails(t *testing.T) {
	f := newFixture(t, context1)
	f.fake = newFakeCache()
	f.fake.lookupErr = errors.New("the cache's registry is down")
	img, rep := mustBuild(t, f, cachedDockerfile, true)
	if diff := cmp.Diff(counts{0, 5}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	if n := strings.Count(f.log, "WARNING: the layer cache could not be read, building without it: the cache's registry is down"); n != 1 {
		t.Errorf("the log warns of the unreadable cache %d times, want once:\n%s", n, f.log)
	}
	if got, _ := fileContent(t, img, "app/all.txt"); got != "alpha\nbravo\n" {
		t.Errorf("/app/all.txt = %q", got)
	}
	if n := len(f.fake.keys()); n != 5 {
		t.Errorf("%d entries stored, want 5", n)
	}
	f.fake.lookupErr = nil
	if _, rep := mustBuild(t, f, cachedDockerfile, true); cacheCounts(rep) != (counts{5, 0}) {
		t.Errorf("the next build's cache counts = %+v, want 5 hits", cacheCounts(rep))
	}
}

// TestBuild_noCache: without a cache (Options.Cache nil, which is
// build.NoCache()), steps have no keys: the report counts no hits or
// misses, and the log no steps from the cache.
func TestBuild_noCache(t *testing.T) {
	f := newFixture(t, context1)
	_, rep := mustBuild(t, f, cachedDockerfile, false)
	if diff := cmp.Diff(counts{0, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("cache counts (-want +got):\n%s", diff)
	}
	if strings.Contains(f.log, "from the cache") {
		t.Errorf("the log of a build without a cache mentions it:\n%s", f.log)
	}
	f.fake = newFakeCache()
	mustBuild(t, f, cachedDockerfile, true)
	if !strings.Contains(f.log, "(0 of 5 steps from the cache)") {
		t.Errorf("the log of a cold build with a cache does not count its steps:\n%s", f.log)
	}
}
