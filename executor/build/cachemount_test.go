package build_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/slipway-dev/slipway/executor/build"
)

// TestBuild_cacheMount runs BuildKit's cache mount tests that a
// single-platform builder without a daemon can run: each Dockerfile must
// build (its RUN steps check what they see), and the image must hold no
// trace of the caches.
func TestBuild_cacheMount(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	tests := []cacheMountTest{
		{
			// BuildKit's testCacheMountDefaultID.
			name: "testCacheMountDefaultID",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,target=/mycache touch /mycache/foo
RUN --mount=type=cache,target=/mycache2 [ ! -f /mycache2/foo ]
RUN --mount=type=cache,target=/mycache [ -f /mycache/foo ]
`,
		},
		{
			// BuildKit's testCacheMountUser.
			name: "testCacheMountUser",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,target=/mycache,uid=1001,gid=1002,mode=0751 [ "$(stat -c "%u %g %f" /mycache)" == "1001 1002 41e9" ]
`,
		},
		{
			// uid, gid and mode apply when the cache is made: a later step
			// sees what an earlier one wrote, and the same cache.
			name: "uid gid mode kept by the next step",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,target=/c,uid=1001,gid=1002,mode=0751 touch /c/f
RUN --mount=type=cache,target=/c,uid=1001,gid=1002,mode=0751 stat -c "%u %g %a" /c /c/f > /out
`,
			wantOut: "1001 1002 751\n0 0 644\n",
		},
		{
			// BuildKit keys a cache by its id and what it starts from: the
			// same id with another mode is another cache.
			name: "same id, other mode",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,id=x,target=/c,mode=0700 touch /c/f
RUN --mount=type=cache,id=x,target=/d,mode=0750 sh -c '[ ! -e /d/f ]'
RUN --mount=type=cache,id=x,target=/e,mode=0700 sh -c '[ -e /e/f ]'
`,
		},
		{
			// A given id is shared across targets and stages.
			name: "id across targets and stages",
			dockerfile: `FROM {{BASE}} AS one
RUN --mount=type=cache,id=shared,target=/one echo hello > /one/greeting
FROM {{BASE}}
COPY --from=one /etc/passwd /dep
RUN --mount=type=cache,id=shared,target=/two,sharing=locked cat /two/greeting > /out
`,
			wantOut: "hello\n",
		},
		{
			// BuildKit's testCacheMountSourceEscape: a source= that the
			// cache holds as a link out of it is refused.
			name: "testCacheMountSourceEscape",
			dockerfile: `FROM {{BASE}} AS init
RUN --mount=type=cache,id=sourceescape,target=/cache mkdir -p /cache/sel && echo benign > /cache/sel/benign.txt

FROM init AS link
RUN --mount=type=cache,id=sourceescape,target=/cache rm -rf /cache/sel && ln -s /etc /cache/sel

FROM link AS victim
RUN --mount=type=cache,id=sourceescape,source=sel,target=/victim cat /victim/hostname

FROM scratch
COPY --from=victim /etc/hostname /hostname
`,
			wantErr: "source=sel in the cache is not a directory",
		},
		{
			// A step that replaces the cache directory itself loses the
			// cache (a mount point could not be removed); nothing the link
			// names is touched, and the next step gets a new, empty cache.
			name: "cache replaced by a link out of the root",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,id=v,target=/c sh -c 'echo x > /c/old; rm -rf /c; ln -s VICTIM /c'
RUN --mount=type=cache,id=v,target=/c sh -c '(ls -A /c; echo end) > /out; touch /c/new'
`,
			wantOut: "end\n",
		},
		{
			// source= mounts a directory of the cache.
			name: "source in the cache",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,id=c,target=/cache mkdir -p /cache/sub && echo in-sub > /cache/sub/f
RUN --mount=type=cache,id=c,source=sub,target=/s cat /s/f > /out
`,
			wantOut: "in-sub\n",
		},
		{
			// BuildKit's testCacheMountParallel: two stages mounting nested
			// caches at once.
			name: "testCacheMountParallel",
			dockerfile: `FROM {{BASE}} AS b1
RUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 1

FROM {{BASE}} AS b2
RUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 2

FROM scratch
COPY --from=b1 /etc/passwd p1
COPY --from=b2 /etc/passwd p2
`,
		},
		{
			// BuildKit's testLockedCacheMounts (client/client_mount_test.go),
			// as a Dockerfile: the two steps do not run at once.
			name: "testLockedCacheMounts",
			dockerfile: `FROM {{BASE}} AS s1
RUN --mount=type=cache,id=mycache1,sharing=locked,target=/wd sh -e -c 'cd /wd; touch one; if [ -f two ]; then exit 0; fi; for i in $(seq 10); do if [ -f two ]; then exit 1; fi; sleep 0.2; done'
FROM {{BASE}} AS s2
RUN --mount=type=cache,id=mycache1,sharing=locked,target=/wd sh -e -c 'cd /wd; touch two; if [ -f one ]; then exit 0; fi; for i in $(seq 10); do if [ -f one ]; then exit 1; fi; sleep 0.2; done'
FROM {{BASE}}
COPY --from=s1 /etc/passwd /p1
COPY --from=s2 /etc/passwd /p2
`,
		},
		{
			// A step that mounts a cache and binds another stage, which
			// mounts the same cache, reads that stage first: it does not
			// hold the cache while it waits for it.
			name: "cache and a bind of a stage using the cache",
			dockerfile: `FROM {{BASE}} AS b
RUN sleep 0.5
RUN --mount=type=cache,id=d,target=/c touch /c/from-b
FROM {{BASE}}
RUN --mount=type=cache,id=d,target=/c --mount=type=bind,from=b,source=/etc,target=/b ls /c > /out
`,
			wantOut: "from-b\n",
		},
		{
			// sharing=private: a step that finds the cache busy gets a new
			// one. s1 holds the cache until s2 has run.
			name: "private cache while the other is busy",
			dockerfile: `FROM {{BASE}} AS s1
RUN --mount=type=cache,id=p,sharing=private,target=/wd sh -e -c 'touch /wd/one; sleep 3'
FROM {{BASE}} AS s2
RUN sleep 1
RUN --mount=type=cache,id=p,sharing=private,target=/wd sh -e -c '(ls /wd; echo end) > /seen; touch /wd/two'
FROM {{BASE}}
COPY --from=s1 /etc/passwd /p1
COPY --from=s2 /seen /out
`,
			wantOut: "end\n",
		},
		{
			// from= seeds a new cache with a stage's directory (source=),
			// owner and mode included; the cache then lives on its own.
			name: "from a stage",
			dockerfile: `FROM {{BASE}} AS seed
RUN mkdir -p /data && echo seeded > /data/f && chown 5:6 /data && chmod 0710 /data
FROM {{BASE}}
RUN --mount=type=cache,from=seed,source=/data,target=/c sh -c 'stat -c "%u %g %a" /c; cat /c/f; echo more > /c/g' > /out1
RUN --mount=type=cache,from=seed,source=/data,target=/c sh -c 'cat /c/f /c/g' > /out2
RUN cat /out1 /out2 > /out
`,
			wantOut: "5 6 710\nseeded\nseeded\nmore\n",
		},
		{
			// BuildKit's setCacheUIDGID adds /cache to the from= tree with
			// uid, gid and mode, and its Mkdir leaves a /cache the tree has
			// as it is: the cache starts as that directory, owner and mode
			// included.
			name: "from a stage with /cache, uid gid mode",
			dockerfile: `FROM {{BASE}} AS seed
RUN mkdir /cache && echo hi > /cache/f && chown 7:8 /cache && chmod 0700 /cache
FROM {{BASE}}
RUN --mount=type=cache,from=seed,target=/c,uid=1001,gid=1002,mode=0751 sh -c 'stat -c "%u %g %a" /c; cat /c/f' > /out
`,
			wantOut: "7 8 700\nhi\n",
		},
		{
			// And makes it, where the tree has none.
			name: "from a stage without /cache, uid gid mode",
			dockerfile: `FROM {{BASE}} AS seed
RUN echo x > /x
FROM {{BASE}}
RUN --mount=type=cache,from=seed,target=/c,uid=1001,gid=1002,mode=0751 sh -c 'stat -c "%u %g %a" /c; ls -A /c' > /out
`,
			wantOut: "1001 1002 751\n",
		},
		{
			// The file op takes mode&0777 (buildkitd's umask is 0): no
			// sticky, setuid or setgid bit on the cache directory.
			name: "mode beyond the permission bits",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,target=/c,mode=01777 stat -c "%a" /c > /out
RUN --mount=type=cache,target=/d,mode=06750,uid=5 stat -c "%u %a" /d >> /out
`,
			wantOut: "777\n5 750\n",
		},
		{
			// In BuildKit a cache from a tree is one copy of the whole tree
			// (getRefCacheDirNoCache makes it from the tree's ref) of which
			// each mount shows its source= path: mounts with other sources
			// see other parts of the one copy, and a part a step changed
			// stays changed when a mount shows more.
			name: "from a stage, several sources of one cache",
			dockerfile: `FROM {{BASE}} AS seed
RUN mkdir -p /data/a /data/b && echo A > /data/a/f && echo B > /data/b/f
FROM {{BASE}}
RUN --mount=type=cache,id=s,from=seed,source=/data/a,target=/a sh -c 'cat /a/f; echo A2 > /a/g'
RUN --mount=type=cache,id=s,from=seed,source=/data/b,target=/b cat /b/f > /out1
RUN --mount=type=cache,id=s,from=seed,source=/data,target=/d sh -c 'cat /d/a/f /d/a/g /d/b/f; echo D > /d/h' > /out2
RUN --mount=type=cache,id=s,from=seed,target=/all sh -c 'cat /all/data/a/g /all/data/h; test -f /all/etc/passwd && echo whole' > /out3
RUN --mount=type=cache,id=s,from=seed,source=/data/a,target=/a cat /a/g > /out4
RUN cat /out1 /out2 /out3 /out4 > /out
`,
			wantOut: "B\nA\nA2\nB\nA2\nD\nwhole\nA2\n",
		},
		{
			// A source= path resolves in the copy of the tree as
			// BuildKit's selector does (fs.RootPath): through a symlink of
			// the tree, to the part it names.
			name: "from a stage, source through a symlink",
			dockerfile: `FROM {{BASE}} AS seed
RUN mkdir /data && echo D > /data/f && ln -s /data /link && ln -s ../../data /rel
FROM {{BASE}}
RUN --mount=type=cache,id=l,from=seed,source=/link,target=/c sh -c 'cat /c/f; echo new > /c/g' > /out1
RUN --mount=type=cache,id=l,from=seed,source=/rel,target=/c cat /c/g > /out2
RUN --mount=type=cache,id=l,from=seed,source=/data,target=/c cat /c/g > /out3
RUN cat /out1 /out2 /out3 > /out
`,
			wantOut: "D\nnew\nnew\n",
		},
		{
			// The same id seeded from a stage is another cache than the one
			// without from= (BuildKit's key holds the tree's ref).
			name: "same id, from a stage or not",
			dockerfile: `FROM {{BASE}} AS seed
RUN mkdir /data
FROM {{BASE}}
RUN --mount=type=cache,id=x,target=/c touch /c/plain
RUN --mount=type=cache,id=x,from=seed,source=/data,target=/c sh -c '[ ! -e /c/plain ]'
RUN --mount=type=cache,id=x,target=/c sh -c '[ -e /c/plain ]'
`,
		},
		{
			// from= an image: its tree.
			name: "from an image",
			dockerfile: `FROM {{BASE}}
RUN --mount=type=cache,from={{BASE}},source=/bin,target=/c sh -c 'test -e /c/busybox && echo yes' > /out
`,
			wantOut: "yes\n",
		},
		{
			name: "from a stage, missing source",
			dockerfile: `FROM {{BASE}} AS seed
RUN true
FROM {{BASE}}
RUN --mount=type=cache,from=seed,source=/nope,target=/c true
`,
			wantErr: "source=/nope in the from= tree",
		},
		{
			// BuildKit's testMountFromError.
			name: "testMountFromError",
			dockerfile: `FROM {{BASE}} AS test
RUN touch /tmp/test
FROM {{BASE}}
ENV ttt=test
RUN --mount=from=$ttt,type=cache,target=/tmp ls
`,
			wantErr: "'from' doesn't support variable expansion, define alias stage instead",
		},
		{
			// Without source=, from= seeds the cache with the stage's root.
			name: "from a stage, whole",
			dockerfile: `FROM scratch AS seed
COPY a.txt /
FROM {{BASE}}
RUN --mount=type=cache,from=seed,target=/c ls /c > /out
`,
			wantOut: "a.txt\n",
		},
	}
	for _, moved := range []bool{true, false} {
		t.Run(map[bool]string{true: "moved", false: "copied"}[moved], func(t *testing.T) {
			defer build.SetCacheMoves(moved)()
			testCacheMounts(t, f, tests)
		})
	}
}

type cacheMountTest struct {
	name       string
	dockerfile string
	wantErr    string // the build fails with this
	wantOut    string // /out of the image, when set
}

func testCacheMounts(t *testing.T, f *fixture, tests []cacheMountTest) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// VICTIM is a directory outside the root that no step may change.
			victim := t.TempDir()
			writeContext(t, victim, map[string]string{"keep": "victim\n"})
			before := treeOf(t, victim)
			start := time.Now()
			img, _, err := f.build(t, strings.ReplaceAll(tc.dockerfile, "VICTIM", victim), false)
			if diff := cmp.Diff(before, treeOf(t, victim)); diff != "" {
				t.Errorf("the directory outside the root changed (-before +after):\n%s", diff)
			}
			t.Logf("built in %s", time.Since(start))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Build error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			tree := flatten(t, img)
			for p := range tree {
				for _, c := range []string{"mycache", "foo/bar", "wd/", "c/f", "cache/"} {
					if strings.HasPrefix(p, c) {
						t.Errorf("%s is in the image: a cache's content is never in a layer", p)
					}
				}
			}
			if tc.wantOut != "" {
				if got, _ := fileContent(t, img, "out"); got != tc.wantOut {
					t.Errorf("/out = %q, want %q", got, tc.wantOut)
				}
			}
		})
	}
}

// TestBuild_cacheMountNotInLayerNorKey: what a step writes to a cache
// mount is not in its layer, and a second build with other cache content
// hits the same keys.
func TestBuild_cacheMountNotInLayerNorKey(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	const df = `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'date +%s%N > /c/stamp; echo done > /out'
RUN --mount=type=cache,target=/c cat /c/stamp > /stamp
`
	img, _ := mustBuild(t, f, df, true)
	if diff := cmp.Diff([]string{"stamp"}, lastLayerFiles(t, img)); diff != "" {
		t.Errorf("the last RUN's layer (-want +got):\n%s", diff)
	}
	if got, _ := fileContent(t, img, "stamp"); got == "" {
		t.Errorf("/stamp is empty: the second step did not see the first one's cache")
	}
	_, rep := mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{2, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("second build (-want +got):\n%s", diff)
	}
}
