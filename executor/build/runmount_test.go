package build_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/result"
)

// lastLayerFiles lists the entries of the image's last layer.
func lastLayerFiles(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return layerFiles(t, ls[len(ls)-1])
}

// TestBuild_runMounts checks RUN --mount of each kind: the command sees the
// mount, and the step's layer holds only what it wrote elsewhere: no
// target, no parent made for it, and what the target hid is still there.
func TestBuild_runMounts(t *testing.T) {
	files := map[string]string{
		"src/a.txt":     "from the context\n",
		"src/secret.db": "ignored\n",
		".dockerignore": "src/secret.db\n",
	}
	f := newFixture(t, files)
	f.secrets = map[string][]byte{"token": []byte("s3cr3t")}
	tests := []struct {
		name       string
		run        string // the RUN line, after "FROM {{BASE}}\nRUN mkdir -p /data && echo keep > /data/k\n"
		wantOut    string // what the RUN wrote to /out
		wantAbsent []string
	}{
		{
			name:       "bind of the context",
			run:        `RUN --mount=type=bind,source=src,target=/mnt/src sh -c 'cat /mnt/src/a.txt; ls /mnt/src' > /out`,
			wantOut:    "from the context\na.txt\n",
			wantAbsent: []string{"mnt", "mnt/src"},
		},
		{
			name:       "bind of the whole context, relative target",
			run:        `RUN --mount=target=ctx cat /ctx/src/a.txt > /out`,
			wantOut:    "from the context\n",
			wantAbsent: []string{"ctx"},
		},
		{
			name:       "cache hides what was there, which stays",
			run:        `RUN --mount=type=cache,target=/data sh -c 'ls -A /data; echo new > /data/n; stat -c %a /data' > /out`,
			wantOut:    "755\n",
			wantAbsent: []string{"data/n"},
		},
		{
			name:       "cache with owner and mode under a new parent",
			run:        `RUN --mount=type=cache,target=/root/.cache/x,uid=7,gid=8,mode=0700 stat -c '%u %g %a' /root/.cache/x > /out`,
			wantOut:    "7 8 700\n",
			wantAbsent: []string{"root/.cache", "root/.cache/x"},
		},
		{
			name:       "tmpfs",
			run:        `RUN --mount=type=tmpfs,target=/scratch sh -c 'touch /scratch/t && stat -c %a /scratch' > /out`,
			wantOut:    "1777\n",
			wantAbsent: []string{"scratch"},
		},
		{
			name:       "secret as a file and as a variable",
			run:        `RUN --mount=type=secret,id=token --mount=type=secret,id=token,env=TOKEN sh -c 'cat /run/secrets/token; echo; echo $TOKEN; stat -c %a /run/secrets/token' > /out`,
			wantOut:    "s3cr3t\ns3cr3t\n400\n",
			wantAbsent: []string{"run/secrets", "run/secrets/token"},
		},
		{
			name:       "optional secret that was not given",
			run:        `RUN --mount=type=secret,id=nope sh -c 'test -e /run/secrets/nope && echo there || echo absent' > /out`,
			wantOut:    "absent\n",
			wantAbsent: []string{"run/secrets"},
		},
		{
			name:       "bind from another stage",
			run:        "RUN --mount=type=bind,from=tools,source=/tool,target=/opt/tool /opt/tool > /out",
			wantOut:    "tool ran\n",
			wantAbsent: []string{"opt/tool"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			df := "FROM {{BASE}} AS tools\nRUN printf '#!/bin/sh\\necho tool ran\\n' > /tool && chmod 755 /tool\n" +
				"FROM {{BASE}}\nRUN mkdir -p /data && echo keep > /data/k\n" + tc.run + "\n"
			img, _ := mustBuild(t, f, df, false)
			if got, _ := fileContent(t, img, "out"); got != tc.wantOut {
				t.Errorf("/out = %q, want %q", got, tc.wantOut)
			}
			if got, ok := fileContent(t, img, "data/k"); !ok || got != "keep\n" {
				t.Errorf("/data/k = %q (found %v), want keep", got, ok)
			}
			tree := flatten(t, img)
			for _, p := range tc.wantAbsent {
				if _, ok := tree[p]; ok {
					t.Errorf("%s is in the image; the mount should leave nothing", p)
				}
			}
			if diff := cmp.Diff([]string{"out"}, lastLayerFiles(t, img)); diff != "" {
				t.Errorf("the RUN's layer (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBuild_runMountCacheKey checks that a RUN binding the context is keyed
// on what it binds: a change there runs it again, a change elsewhere in
// the context does not; and that secrets' values are not in the key.
func TestBuild_runMountCacheKey(t *testing.T) {
	f := newFixture(t, map[string]string{"src/a.txt": "1\n", "other.txt": "x\n"})
	f.secrets = map[string][]byte{"token": []byte("one")}
	const df = "FROM {{BASE}}\nRUN --mount=source=src,target=/s --mount=type=secret,id=token cat /s/a.txt > /out\n"
	mustBuild(t, f, df, true)

	writeContext(t, f.ctxDir, map[string]string{"other.txt": "y\n"})
	f.secrets = map[string][]byte{"token": []byte("two")}
	_, rep := mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{1, 0}, cacheCounts(rep)); diff != "" {
		t.Errorf("after changing an unbound file and the secret (-want +got):\n%s", diff)
	}

	writeContext(t, f.ctxDir, map[string]string{"src/a.txt": "2\n"})
	img, rep := mustBuild(t, f, df, true)
	if diff := cmp.Diff(counts{0, 1}, cacheCounts(rep)); diff != "" {
		t.Errorf("after changing the bound file (-want +got):\n%s", diff)
	}
	if got, _ := fileContent(t, img, "out"); got != "2\n" {
		t.Errorf("/out = %q, want 2", got)
	}
}

// TestBuild_runMountErrors checks the mounts refused, each with its line.
func TestBuild_runMountErrors(t *testing.T) {
	f := newFixture(t, map[string]string{"a.txt": "a\n"})
	f.secrets = map[string][]byte{"GIT_AUTH_TOKEN.git.example.com": []byte("tok"), "GIT_AUTH_HEADER.git.example.com": []byte("Bearer tok")}
	for _, tc := range []struct{ name, run, want string }{
		{"required secret missing", "RUN --mount=type=secret,id=k,required true", "the secret is required"},
		{"required ssh key missing", "RUN --mount=type=ssh,required=true true", "the ssh key is required"},
		{"missing bind source", "RUN --mount=source=nope,target=/n true", "nope"},
		{"cache without a target", "RUN --mount=type=cache true", "needs a target"},
		// Given for git fetches of one host only: a step could send it anywhere.
		{"git token of a host", "RUN --mount=type=secret,id=GIT_AUTH_TOKEN.git.example.com cat /run/secrets/GIT_AUTH_TOKEN.git.example.com", "a git credential for its host"},
		{"git header of a host", "RUN --mount=type=secret,id=GIT_AUTH_HEADER.git.example.com,env=H true", "a git credential for its host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.build(t, "FROM {{BASE}}\n"+tc.run+"\n", false)
			var be *build.Error
			if !errors.As(err, &be) || be.Line != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error %v, want one on line 2 containing %q", err, tc.want)
			}
			if be.Reason != result.ReasonDockerfileInvalid && be.Reason != result.ReasonCopyFailed {
				t.Errorf("reason %s", be.Reason)
			}
		})
	}
}

// TestBuild_runMountCleanupStaysInRoot plays a step that, around its
// mount, replaces the mount's parent with a symlink to a directory outside
// the stage's root (absolute, or climbing out with ".."), which holds
// entries named like the mount target and like the parents made for it.
// Putting the mount away afterwards must not touch them.
func TestBuild_runMountCleanupStaysInRoot(t *testing.T) {
	f := newFixture(t, map[string]string{"src/a.txt": "a\n"})
	tests := []struct {
		name string
		run  string // VICTIM stands for the victim directory, UP for enough ../ to reach /
		// What the image holds where the step moved the mount's parent:
		// the mount is gone from there, what it hid is back.
		absent, present []string
	}{
		{"cache, parent replaced by an absolute symlink",
			`RUN --mount=type=cache,target=/a/b sh -c "mv /a /a.old && ln -s VICTIM /a"`,
			[]string{"a.old/b"}, []string{"a.old/h"}},
		{"cache, parent replaced by a relative symlink climbing out",
			`RUN --mount=type=cache,target=/a/b sh -c "mv /a /a.old && ln -s UPVICTIM /a"`,
			[]string{"a.old/b"}, []string{"a.old/h"}},
		{"cache, grandparent replaced",
			`RUN --mount=type=cache,target=/a/b/c sh -c "mv /a /a.old && ln -s VICTIM/n /a"`,
			[]string{"a.old/b"}, []string{"a.old/h"}},
		{"cache under parents the mount made",
			`RUN --mount=type=cache,target=/x/y/z sh -c "mv /x /x.old && ln -s VICTIM /x"`,
			[]string{"x.old/y"}, []string{"x.old"}},
		{"cache that hid an entry",
			`RUN --mount=type=cache,target=/a/h sh -c "mv /a /a.old && ln -s VICTIM /a"`,
			nil, []string{"a.old/h"}},
		{"bind of the context",
			`RUN --mount=type=bind,source=src,target=/a/b sh -c "mv /a /a.old && ln -s VICTIM /a"`,
			[]string{"a.old/b"}, []string{"a.old/h"}},
		{"tmpfs",
			`RUN --mount=type=tmpfs,target=/a/b sh -c "mv /a /a.old && ln -s UPVICTIM /a"`,
			[]string{"a.old/b"}, []string{"a.old/h"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			victim := t.TempDir()
			writeContext(t, victim, map[string]string{
				"b/keep":   "victim\n",
				"n/b/c/k":  "victim\n",
				"h":        "victim\n",
				"y/z/keep": "victim\n",
				".keep":    "victim\n",
			})
			// Empty directories, named like the ones the cleanup removes
			// when they are empty.
			for _, d := range []string{"y/z/empty", "empty"} {
				if err := os.MkdirAll(filepath.Join(victim, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			before := treeOf(t, victim)
			run := strings.ReplaceAll(tc.run, "UP", strings.Repeat("../", 40))
			run = strings.ReplaceAll(run, "VICTIM", victim)
			df := "FROM {{BASE}}\nRUN mkdir -p /a && echo hidden > /a/h\n" + run + "\n"
			img, _, err := f.build(t, df, false)
			if diff := cmp.Diff(before, treeOf(t, victim)); diff != "" {
				t.Errorf("the directory outside the root changed (-before +after):\n%s", diff)
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			tree := flatten(t, img)
			for _, p := range tc.absent {
				if _, ok := tree[p]; ok {
					t.Errorf("%s is in the image; the mount moved there should be gone", p)
				}
			}
			for _, p := range tc.present {
				if _, ok := tree[p]; !ok {
					t.Errorf("%s is not in the image", p)
				}
			}
		})
	}
}

// treeOf lists the entries under dir with their types, and files' content.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		default:
			out[rel] = d.Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
