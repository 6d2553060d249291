package testenv

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// GoImageGOROOT is where GoImage puts the Go toolchain.
const GoImageGOROOT = "/usr/local/go"

var (
	goImageOnce sync.Once
	goImage     v1.Image
	goImageErr  error
)

// GoImage returns a linux/amd64 image for cross-compiling Go programs:
// BusyboxImage plus this machine's Go toolchain (`go env GOROOT`) at
// /usr/local/go, only what `CGO_ENABLED=0 go build` needs: bin/go,
// pkg/tool/linux_amd64, pkg/include, go.env, VERSION and src without
// src/cmd, testdata directories and _test.go files. Its Env adds
// /usr/local/go/bin to PATH and sets GOROOT, GOTOOLCHAIN=local (never
// download another toolchain) and CGO_ENABLED=0 (there is no C compiler).
//
// Making the layer takes seconds, so the image is kept on disk as an OCI
// layout under CacheDir()/images/golang-KEY, KEY a hash of the toolchain's
// version and of every file's path, mode, size and modification time (and
// of the busybox image's digest): later runs reuse it, a changed toolchain
// makes a new one. It is built or loaded once per process.
func GoImage() (v1.Image, error) {
	goImageOnce.Do(func() { goImage, goImageErr = loadOrBuildGoImage() })
	return goImage, goImageErr
}

// PushGoImage pushes GoImage to reg as library/golang:host and returns the
// reference (HOST:PORT/library/golang:host).
func PushGoImage(t testing.TB, reg *Registry) string {
	t.Helper()
	img, err := GoImage()
	if err != nil {
		t.Fatal(err)
	}
	s := reg.Ref("library/golang:host")
	ref, err := name.NewTag(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatalf("pushing %s: %v", s, err)
	}
	return s
}

// goFile is a file or directory of the toolchain to put into the image.
type goFile struct {
	rel  string // slash-separated, relative to GOROOT
	info fs.FileInfo
}

// goToolchainFiles lists the files GoImage takes from goroot, sorted.
func goToolchainFiles(goroot string) ([]goFile, error) {
	var files []goFile
	add := func(rel string) error {
		return filepath.WalkDir(filepath.Join(goroot, rel), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			r, err := filepath.Rel(goroot, p)
			if err != nil {
				return err
			}
			r = filepath.ToSlash(r)
			if d.IsDir() && (r == "src/cmd" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if strings.HasSuffix(r, "_test.go") {
				return nil
			}
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			files = append(files, goFile{rel: r, info: info})
			return nil
		})
	}
	for _, rel := range []string{"bin/go", "pkg/tool/linux_amd64", "pkg/include", "go.env", "VERSION", "src"} {
		if err := add(rel); err != nil {
			return nil, fmt.Errorf("listing the Go toolchain in %s: %w", goroot, err)
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, nil
}

func loadOrBuildGoImage() (v1.Image, error) {
	out, err := exec.Command("go", "env", "GOROOT", "GOVERSION", "GOHOSTOS", "GOHOSTARCH").Output()
	if err != nil {
		return nil, fmt.Errorf("running go env: %w", err)
	}
	env := strings.Fields(string(out))
	if len(env) != 4 {
		return nil, fmt.Errorf("go env GOROOT GOVERSION GOHOSTOS GOHOSTARCH printed %q", out)
	}
	goroot, version := env[0], env[1]
	if env[2] != "linux" || env[3] != "amd64" {
		return nil, fmt.Errorf("GoImage is linux/amd64 and needs a linux/amd64 Go toolchain; this one is %s/%s", env[2], env[3])
	}
	base, err := BusyboxImage()
	if err != nil {
		return nil, err
	}
	baseDigest, err := base.Digest()
	if err != nil {
		return nil, err
	}
	files, err := goToolchainFiles(goroot)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "slipway testenv GoImage v1\n%s\n%s\n", version, baseDigest)
	for _, f := range files {
		fmt.Fprintf(h, "%s %o %d %d\n", f.rel, f.info.Mode(), f.info.Size(), f.info.ModTime().UnixNano())
	}
	key := hex.EncodeToString(h.Sum(nil))[:24]
	dir := filepath.Join(CacheDir(), "images", "golang-"+key)

	if img, err := goImageFromLayout(dir); err == nil {
		return img, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".golang-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	layerPath := filepath.Join(tmp, "layer.tar.gz")
	if err := writeGoLayer(layerPath, goroot, files); err != nil {
		return nil, fmt.Errorf("writing the Go toolchain layer: %w", err)
	}
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, err
	}
	epoch := v1.Time{Time: time.Unix(0, 0).UTC()}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     plainLayer{layer},
		History:   v1.History{Created: epoch, CreatedBy: "slipway testenv: the host's Go toolchain " + version + " (what CGO_ENABLED=0 go build needs) at " + GoImageGOROOT},
		MediaType: types.DockerLayer,
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config.Env = []string{
		"PATH=" + GoImageGOROOT + "/bin:" + strings.TrimPrefix(busyboxEnvPath, "PATH="),
		"GOROOT=" + GoImageGOROOT,
		"GOTOOLCHAIN=local",
		"CGO_ENABLED=0",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	lp, err := layout.Write(filepath.Join(tmp, "layout"), empty.Index)
	if err != nil {
		return nil, err
	}
	if err := lp.AppendImage(img); err != nil {
		return nil, fmt.Errorf("writing the Go image layout: %w", err)
	}
	// Another process may have made the same image meanwhile: theirs is as good.
	if err := os.Rename(filepath.Join(tmp, "layout"), dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "index.json")); serr != nil {
			return nil, err
		}
	}
	return goImageFromLayout(dir)
}

// goImageFromLayout loads the one image of the OCI layout dir.
func goImageFromLayout(dir string) (v1.Image, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the cached Go image %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("the cached Go image %s holds %d manifests, want 1", dir, len(m.Manifests))
	}
	return idx.Image(m.Manifests[0].Digest)
}

// writeGoLayer writes a gzipped tar of files under usr/local/go, with
// their parent directories, numeric owner 0 and mtime 0.
func writeGoLayer(dst, goroot string, files []goFile) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	prefix := strings.TrimPrefix(GoImageGOROOT, "/")
	dirs := map[string]bool{}
	var mkdirs func(d string) error
	mkdirs = func(d string) error {
		if d == "." || dirs[d] {
			return nil
		}
		if err := mkdirs(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
	}
	for _, gf := range files {
		name := path.Join(prefix, gf.rel)
		mode := int64(gf.info.Mode().Perm())
		switch {
		case gf.info.IsDir():
			if err := mkdirs(name); err != nil {
				return err
			}
		case gf.info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(goroot, gf.rel))
			if err != nil {
				return err
			}
			if err := mkdirs(path.Dir(name)); err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: time.Unix(0, 0)}); err != nil {
				return err
			}
		case gf.info.Mode().IsRegular():
			if err := mkdirs(path.Dir(name)); err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: gf.info.Size(), ModTime: time.Unix(0, 0)}); err != nil {
				return err
			}
			src, err := os.Open(filepath.Join(goroot, gf.rel))
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", gf.rel, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}
