package build_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
)

// Attacks on cache mounts kept between builds (issue 17 review). A saved
// mount is whatever the last writer of the cache repository pushed, and a
// step is hostile code: each test here plays one of them.

// tarEntry is a tar header and, for a regular file, its content (Size is
// set from it).
type tarEntry struct {
	hdr     tar.Header
	content []byte
}

// rawLayer is an uncompressed tar layer of entries.
func rawLayer(t *testing.T, entries []tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.content))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.content); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
}

// pushSavedLayers replaces the saved mount at tag (desc) with one of
// layers, as a writer with push rights could; edit changes the manifest
// before it is pushed.
func pushSavedLayers(t *testing.T, f *fixture, tag name.Tag, desc *remote.Descriptor, layers []v1.Layer, edit func(m map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	var ds []any
	for _, l := range layers {
		if err := remote.WriteLayer(f.cacheTo, l); err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		diffID, _ := l.DiffID()
		size, _ := l.Size()
		ds = append(ds, map[string]any{
			"mediaType":   string(types.OCIUncompressedLayer),
			"digest":      d.String(),
			"size":        size,
			"annotations": map[string]string{"dev.slipway.cache.diff-id": diffID.String()},
		})
	}
	m["layers"] = ds
	if edit != nil {
		edit(m)
	}
	putManifest(t, tag, m)
}

// seedMount runs a build that saves the mount of dockerfile's step, and
// returns its tag and descriptor.
func seedMount(t *testing.T, f *fixture, dockerfile string, set ...func(*build.CacheMounts)) (name.Tag, *remote.Descriptor) {
	t.Helper()
	mountBuild(t, f, dockerfile, "s", set...)
	tag := mountTag(t, f.cacheTo)
	desc, err := remote.Get(tag)
	if err != nil {
		t.Fatal(err)
	}
	return tag, desc
}

// TestCacheMountsAttack_layersPastMaxSize: a saved mount of 8 layers,
// each just under --cache-mount-max-size, must not be written to disk
// whole (8 times the bound) before it is found too large: the restore
// stops at the layer that takes the directory past the bound, and never
// downloads the layers after it.
func TestCacheMountsAttack_layersPastMaxSize(t *testing.T) {
	f := newFixture(t, nil)
	const max = 1 << 20
	bound := func(cm *build.CacheMounts) { cm.MaxSize = max }
	tag, desc := seedMount(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`, bound)
	var layers []v1.Layer
	for i := range cache.MaxMountLayers {
		layers = append(layers, rawLayer(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("f%d", i)},
			content: bytes.Repeat([]byte{byte('a' + i)}, max-100<<10)}}))
	}
	pushSavedLayers(t, f, tag, desc, layers, nil)

	spy := &spyTransport{}
	f.cacheRemote = []remote.Option{remote.WithTransport(spy)}
	img, st := mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'ls /c > /out'
`, "s", bound)
	if got := out(t, img); got != "" {
		t.Errorf("a saved mount of %d layers over the bound was restored: the step saw %q", len(layers), got)
	}
	if st == nil || st.Restored != 0 || st.Skipped != 1 {
		t.Errorf("cache mounts %+v, want the saved one skipped", st)
	}
	fetched := 0
	for _, l := range layers {
		d, _ := l.Digest()
		if len(spy.asked("/blobs/"+d.String())) > 0 {
			fetched++
		}
	}
	// The first layer fits, the second takes the directory past the
	// bound: nothing after it is read.
	if fetched > 2 {
		t.Errorf("the restore downloaded and extracted %d layers of %d bytes each with a bound of %d bytes, want it to stop at the second",
			fetched, max-100<<10, max)
	}
}

// TestCacheMountsAttack_cacheDirNotADirectory: a cache with uid= mounts
// the saved mount's "cache" directory. A saved mount where that is a
// symlink, a file or missing is refused as any other bad saved mount: an
// empty cache (made with the uid) and a warning, never a failed build.
func TestCacheMountsAttack_cacheDirNotADirectory(t *testing.T) {
	f := newFixture(t, nil)
	tag, desc := seedMount(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c,uid=1000 sh -c 'echo saved > /c/f'
`)
	for i, tc := range []struct {
		name    string
		entries []tarEntry
	}{
		{"symlink to the root", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "cache", Linkname: "/"}}}},
		{"symlink climbing out", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "cache", Linkname: "../../../../.."}}}},
		{"file", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "cache"}, content: []byte("x")}}},
		{"missing", []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "other"}, content: []byte("x")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pushSavedLayers(t, f, tag, desc, []v1.Layer{rawLayer(t, tc.entries)}, nil)
			img, st, err := tryMountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c,uid=1000 sh -c 'echo %d; stat -c "%%u %%F" /c > /out; ls /c >> /out'
`, i), "s")
			if err != nil {
				t.Fatalf("a bad saved mount failed the build: %v", err)
			}
			if got := out(t, img); got != "1000 directory\n" {
				t.Errorf("the step saw %q, want an empty cache directory of uid 1000", got)
			}
			if st == nil || st.Restored != 0 || st.Skipped != 1 {
				t.Errorf("cache mounts %+v, want the saved one skipped", st)
			}
		})
	}
}

// TestCacheMountsAttack_stateCopyNotADirectory: the state directory's
// copy of a cache mount is what an earlier build left there, checked as a
// download is: one whose "cache" directory (uid=) is a symlink is an empty
// cache and a warning, never a failed build.
func TestCacheMountsAttack_stateCopyNotADirectory(t *testing.T) {
	f := newFixture(t, nil)
	dir := filepath.Join(t.TempDir(), "state")
	df := `FROM {{BASE}}
ARG N
RUN --mount=type=cache,target=/c,uid=1000 sh -c 'echo $N; stat -c "%u %F" /c > /out; ls /c >> /out; echo x > /c/stamp'
`
	if _, _, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N=1", 1), false); err != nil {
		t.Fatal(err)
	}
	var kept []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "cache" && filepath.Base(filepath.Dir(filepath.Dir(p))) == "mounts" {
			kept = append(kept, p)
		}
		return err
	})
	if len(kept) != 1 {
		t.Fatalf("the state directory keeps %v, want one cache mount's cache directory", kept)
	}
	if err := os.RemoveAll(kept[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", kept[0]); err != nil {
		t.Fatal(err)
	}
	img, _, err := stateBuild(t, f, dir, strings.Replace(df, "ARG N", "ARG N=2", 1), false)
	if err != nil {
		t.Fatalf("a bad copy in the state directory failed the build: %v", err)
	}
	if got := out(t, img); got != "1000 directory\n" {
		t.Errorf("the step saw %q, want an empty cache directory of uid 1000", got)
	}
	if !strings.Contains(f.log, "WARNING: cache mount id=/c: the saved one is not used, it starts empty: the state directory's copy") {
		t.Errorf("no warning of the refused copy:\n%s", f.log)
	}
}

// TestCacheMountsAttack_hardLinksOutside: hard links in a saved mount to a
// file of the machine (absolute, climbing with "..", through a symlink to
// its directory) never link that file into the store.
func TestCacheMountsAttack_hardLinksOutside(t *testing.T) {
	f := newFixture(t, nil)
	tag, desc := seedMount(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "host-secret")
	marker := "host-only-" + strings.Repeat("y", 16)
	if err := os.WriteFile(secret, []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, entries := range [][]tarEntry{
		{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h1", Linkname: secret}}},
		{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h2", Linkname: "../../../../../../../../.." + secret}}},
		{
			{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "up", Linkname: secretDir}},
			{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h3", Linkname: "up/host-secret"}},
		},
		{
			{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "rel", Linkname: "../../../../../../../../.." + secretDir}},
			{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h4", Linkname: "rel/host-secret"}},
		},
	} {
		pushSavedLayers(t, f, tag, desc, []v1.Layer{rawLayer(t, entries)}, nil)
		img, _, err := tryMountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo %d; cat /c/h* > /out 2>&1 || true'
`, i), "s")
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if got := out(t, img); strings.Contains(got, marker) {
			t.Errorf("layer %d: the step read the host's file through a saved hard link: %q", i, got)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(secret, &st); err != nil {
			t.Fatal(err)
		}
		if st.Nlink != 1 {
			t.Errorf("layer %d: the host's file has %d links after the restore, want 1", i, st.Nlink)
		}
	}
}

// TestCacheMountsAttack_whiteoutsOutside: whiteouts of a saved mount
// (".wh.NAME", the opaque marker) met through symlinks to a directory of
// the machine, with "..", or naming "." and "..", delete nothing outside
// the store.
func TestCacheMountsAttack_whiteoutsOutside(t *testing.T) {
	f := newFixture(t, nil)
	tag, desc := seedMount(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	for i, entries := range [][]tarEntry{
		{
			{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: outside}},
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "abs/.wh.victim"}},
		},
		{
			{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "rel", Linkname: "../../../../../../../../.." + outside}},
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "rel/.wh..wh..opq"}},
		},
		{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../../../../../../../.." + outside + "/.wh.victim"}}},
		{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: outside + "/.wh.victim"}}},
		{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.."}}},
		{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x/.wh..."}}},
		{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh..wh..opq"}}},
	} {
		if err := os.WriteFile(victim, []byte("v"), 0o600); err != nil {
			t.Fatal(err)
		}
		pushSavedLayers(t, f, tag, desc, []v1.Layer{rawLayer(t, entries)}, nil)
		if _, _, err := tryMountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo %d; ls -a /c'
`, i), "s"); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if _, err := os.Stat(victim); err != nil {
			t.Errorf("layer %d: a saved mount's whiteout deleted a file of the machine: %v", i, err)
		}
	}
}

// TestCacheMountsAttack_manifests: saved mounts this executor never
// writes (more than MaxMountLayers layers, a layer with URLs, a foreign
// or non-distributable layer, another key, a size that is no number) are refused: an empty
// cache and a warning; an expired one is a miss.
func TestCacheMountsAttack_manifests(t *testing.T) {
	f := newFixture(t, nil)
	tag, desc := seedMount(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`)
	one := rawLayer(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f"}, content: []byte("crafted\n")}})
	var many []v1.Layer
	for i := range cache.MaxMountLayers + 1 {
		many = append(many, rawLayer(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("f%d", i)}, content: []byte("crafted\n")}}))
	}
	layer0 := func(m map[string]any) map[string]any { return m["layers"].([]any)[0].(map[string]any) }
	for i, tc := range []struct {
		name   string
		layers []v1.Layer
		edit   func(m map[string]any)
	}{
		{"9 layers", many, nil},
		{"urls", []v1.Layer{one}, func(m map[string]any) { layer0(m)["urls"] = []string{"http://127.0.0.1:1/x"} }},
		{"foreign", []v1.Layer{one}, func(m map[string]any) {
			layer0(m)["mediaType"] = string(types.DockerForeignLayer)
		}},
		{"nondistributable", []v1.Layer{one}, func(m map[string]any) {
			layer0(m)["mediaType"] = "application/vnd.oci.image.layer.nondistributable.v1.tar"
		}},
		{"another key", []v1.Layer{one}, func(m map[string]any) {
			m["annotations"].(map[string]any)["dev.slipway.cache.key"] = "mount:other"
		}},
		{"bad size", []v1.Layer{one}, func(m map[string]any) {
			m["annotations"].(map[string]any)["dev.slipway.cache-mount.size"] = "-1"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pushSavedLayers(t, f, tag, desc, tc.layers, tc.edit)
			img, st, err := tryMountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo %d; cat /c/f* > /out 2>/dev/null || true'
`, i), "s")
			if err != nil {
				t.Fatalf("a refused saved mount failed the build: %v", err)
			}
			if got := out(t, img); got != "" {
				t.Errorf("the step saw %q, want an empty cache", got)
			}
			if st == nil || st.Restored != 0 || st.Skipped != 1 {
				t.Errorf("cache mounts %+v, want the saved one skipped", st)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		pushSavedLayers(t, f, tag, desc, []v1.Layer{one}, nil)
		img, st := mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo expired; cat /c/f* > /out 2>/dev/null || true'
`, "s", func(cm *build.CacheMounts) {
			cm.Store = cache.New(cache.Options{Repo: f.cacheTo, TTL: time.Hour, Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
		})
		if got := out(t, img); got != "" {
			t.Errorf("an expired saved mount was restored: the step saw %q", got)
		}
		if st == nil || st.Restored != 0 {
			t.Errorf("cache mounts %+v, want none restored", st)
		}
	})
}

// TestCacheMountsAttack_specialFiles: a step that leaves in its cache a
// FIFO (which blocks whoever opens it to read), a hard link to a file of
// its root and a setuid file: the save ends (it opens none of
// them), the build succeeds, and the next build's restore makes no FIFO.
// A file the layer format cannot hold (".wh..") makes the mount unsaved,
// with a warning, and the build still succeeds.
func TestCacheMountsAttack_specialFiles(t *testing.T) {
	f := newFixture(t, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'mkfifo /c/fifo && ln /etc/passwd /c/passwd && echo x > /c/suid && chmod 4755 /c/suid && echo ok'
`, "s")
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the build with a FIFO in its cache mount did not end: the save blocks")
	}
	img, st := mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'ls -l /c > /out'
`, "s")
	if st == nil || st.Restored != 1 {
		t.Fatalf("cache mounts %+v, want one restored", st)
	}
	got := out(t, img)
	if strings.Contains(got, "fifo") {
		t.Errorf("the restore made a FIFO:\n%s", got)
	}
	if !strings.Contains(got, "passwd") {
		t.Errorf("the hard-linked file was not kept:\n%s", got)
	}

	_, st, err := tryMountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'touch /c/.wh.. /c/new'
`, "s")
	if err != nil {
		t.Fatalf("a cache holding a file named .wh.. failed the build: %v", err)
	}
	if st == nil || st.Saved != 0 || st.Skipped != 1 {
		t.Errorf("cache mounts %+v, want it skipped", st)
	}
	if !strings.Contains(f.log, "WARNING: cache mount id=/c: not saved") {
		t.Errorf("no warning of the unsaved mount:\n%s", f.log)
	}
}

// TestCacheMountsAttack_secretInsideCacheMount: a secret, or files of the
// context, mounted inside a cache mount (in either order of the flags) are
// gone from the cache before it is saved: the executor never writes a
// secret into a saved mount; only what a step itself copies there is kept.
func TestCacheMountsAttack_secretInsideCacheMount(t *testing.T) {
	marker := "the-secret-" + strings.Repeat("z", 20)
	f := newFixture(t, map[string]string{"ctxfile": "context-content-marker"})
	f.secrets = map[string][]byte{"tok": []byte(marker)}
	for i, mounts := range []string{
		"--mount=type=cache,target=/c --mount=type=secret,id=tok,target=/c/tok --mount=type=bind,target=/c/ctx",
		"--mount=type=secret,id=tok,target=/c/tok --mount=type=bind,target=/c/ctx --mount=type=cache,target=/c",
		"--mount=type=cache,target=/c --mount=type=secret,id=tok,target=/c/sub/tok",
	} {
		mountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN %s sh -c 'echo %d; ls -la /c /c/sub || true; echo step >> /c/log'
`, mounts, i), "s")
		for _, data := range savedMountTars(t, f) {
			if bytes.Contains(data, []byte(marker)) {
				t.Errorf("%s: the saved mount holds the secret", mounts)
			}
			if bytes.Contains(data, []byte("context-content-marker")) {
				t.Errorf("%s: the saved mount holds the bind-mounted context file", mounts)
			}
		}
	}
}

// TestCacheMountsAttack_cacheDirReplacedBySymlink: a step that replaces
// its cache directory with a symlink to the root (absolute and relative)
// gets nothing saved through it; the saved mount stays the last good one.
func TestCacheMountsAttack_cacheDirReplacedBySymlink(t *testing.T) {
	f := newFixture(t, nil)
	tag, _ := seedMount(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo saved > /c/f'
`)
	for i, link := range []string{"/", "../../../../../../.."} {
		if _, _, err := tryMountBuild(t, f, fmt.Sprintf(`FROM {{BASE}}
RUN --mount=type=cache,target=/c sh -c 'echo %d; rm -rf /c && ln -s %s /c'
`, i, link), "s"); err != nil {
			t.Fatalf("%s: %v", link, err)
		}
		desc, err := remote.Get(tag)
		if err != nil {
			t.Fatal(err)
		}
		img, err := desc.Image()
		if err != nil {
			t.Fatal(err)
		}
		layers, _ := img.Layers()
		for _, l := range layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				if strings.HasPrefix(strings.TrimPrefix(h.Name, "./"), "bin") || strings.HasPrefix(strings.TrimPrefix(h.Name, "./"), "etc") {
					t.Errorf("%s: the saved mount holds %s of the step's root", link, h.Name)
				}
			}
			rc.Close()
		}
	}
}

// TestCacheMountsAttack_concurrentStages: stages that use one cache at
// once (shared, locked and private), while its saved mount is restored in
// the background, all succeed; one of them (whichever asks first) gets the
// restored instance, the others wait for it or, private, start another;
// run with -race.
func TestCacheMountsAttack_concurrentStages(t *testing.T) {
	f := newFixture(t, nil)
	mountBuild(t, f, `FROM {{BASE}}
RUN --mount=type=cache,target=/c,id=k sh -c 'echo saved > /c/f'
`, "s")
	for i := range 2 {
		img, st := mountBuild(t, f, fmt.Sprintf(`FROM {{BASE}} AS a
RUN --mount=type=cache,target=/c,id=k sh -c 'echo %d; cat /c/f > /a; echo a >> /c/f'
FROM {{BASE}} AS b
RUN --mount=type=cache,target=/c,id=k,sharing=locked sh -c 'cat /c/f > /b; echo b >> /c/f'
FROM {{BASE}} AS p
RUN --mount=type=cache,target=/c,id=k,sharing=private sh -c 'cat /c/f > /p 2>/dev/null || echo none > /p; echo p >> /c/f'
FROM {{BASE}}
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=p /p /p
RUN cat /a /b /p > /out
`, i), "s")
		if got := out(t, img); !strings.Contains(got, "saved\n") {
			t.Errorf("build %d: the stages saw %q, none the saved content", i, got)
		}
		if st == nil || st.Restored != 1 || st.Saved != 1 {
			t.Errorf("build %d: cache mounts %+v, want one restored and saved", i, st)
		}
	}
}
