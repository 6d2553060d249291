package testenv

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"
)

// layerFiles reads img's single-layer file system: entry headers and the
// contents of the regular files named in want.
func layerFiles(t *testing.T, img v1.Image, want ...string) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	hdrs := map[string]*tar.Header{}
	data := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		for _, w := range want {
			if h.Name == w {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				data[w] = b
			}
		}
	}
	return hdrs, data
}

func TestBusyboxImageFor(t *testing.T) {
	amd64, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	amd64Entries, _ := layerFiles(t, amd64)
	for _, tc := range []struct {
		platform v1.Platform
		want     v1.Platform // in the config
		class    elf.Class
		machine  elf.Machine
	}{
		{v1.Platform{OS: "linux", Architecture: "arm64"}, v1.Platform{OS: "linux", Architecture: "arm64"}, elf.ELFCLASS64, elf.EM_AARCH64},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, elf.ELFCLASS64, elf.EM_AARCH64},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, elf.ELFCLASS32, elf.EM_ARM},
		{v1.Platform{Architecture: "arm"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, elf.ELFCLASS32, elf.EM_ARM},
	} {
		t.Run(tc.platform.OS+"/"+tc.platform.Architecture+"/"+tc.platform.Variant, func(t *testing.T) {
			img, err := BusyboxImageFor(tc.platform)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Fatal(err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			got := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("config platform (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{busyboxEnvPath, "sh"}, []string{strings.Join(cfg.Config.Env, ","), strings.Join(cfg.Config.Cmd, " ")}); diff != "" {
				t.Errorf("Env, Cmd (-want +got):\n%s", diff)
			}
			entries, data := layerFiles(t, img, "bin/busybox", "etc/passwd")
			f, err := elf.NewFile(bytes.NewReader(data["bin/busybox"]))
			if err != nil {
				t.Fatalf("bin/busybox: %v", err)
			}
			if f.Class != tc.class || f.Machine != tc.machine || f.Data != elf.ELFDATA2LSB {
				t.Errorf("bin/busybox is %v %v %v, want %v %v little-endian", f.Class, f.Data, f.Machine, tc.class, tc.machine)
			}
			if string(data["etc/passwd"]) != busyboxPasswd {
				t.Errorf("etc/passwd differs from BusyboxImage's")
			}
			// The same files, owners and links as the amd64 image.
			var diffs []string
			for n, h := range amd64Entries {
				o, ok := entries[n]
				if !ok {
					diffs = append(diffs, "missing "+n)
				} else if o.Typeflag != h.Typeflag || o.Mode != h.Mode || o.Uid != h.Uid || o.Gid != h.Gid || o.Linkname != h.Linkname {
					diffs = append(diffs, "differs "+n)
				}
			}
			if len(entries) != len(amd64Entries) {
				diffs = append(diffs, "entry count")
			}
			if len(diffs) > 0 {
				t.Errorf("layer differs from BusyboxImage's: %q", diffs)
			}
			again, err := BusyboxImageFor(tc.platform)
			if err != nil || again != img {
				t.Errorf("second call built another image (%v)", err)
			}
		})
	}

	img, err := BusyboxImageFor(v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil || img != amd64 {
		t.Errorf("BusyboxImageFor(linux/amd64) is not BusyboxImage (%v)", err)
	}
	if _, err := BusyboxImageFor(v1.Platform{OS: "linux", Architecture: "sparc64"}); err == nil || !strings.Contains(err.Error(), "no Debian busybox-static for platform linux/sparc64") {
		t.Errorf("BusyboxImageFor(linux/sparc64): %v", err)
	}
}

// The foreign busybox has the applets of this machine's, whose list made
// the links (run through QEMU).
func TestBusyboxImageFor_applets(t *testing.T) {
	RequireEmulation(t, "arm64")
	root, err := ForeignDeb("busybox-static", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := exec.Command(filepath.Join(root, "bin", "busybox"), "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	host, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Fields(string(host)), strings.Fields(string(foreign))); diff != "" {
		t.Errorf("applets (-amd64 +arm64):\n%s", diff)
	}
}

func TestPushMultiPlatformBusybox(t *testing.T) {
	reg := StartRegistry(t)
	s := PushMultiPlatformBusybox(t, reg)
	if want := reg.Host() + "/library/busybox:multiplatform"; s != want {
		t.Errorf("ref %q, want %q", s, want)
	}
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatal(err)
	}
	mt, err := idx.MediaType()
	if err != nil || mt != types.DockerManifestList {
		t.Errorf("index media type %s (%v), want %s", mt, err, types.DockerManifestList)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 3 {
		t.Fatalf("%d manifests, want 3", len(m.Manifests))
	}
	var got []string
	for _, d := range m.Manifests {
		got = append(got, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if c := (v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}); c.String() != d.Platform.String() {
			t.Errorf("manifest for %s has config platform %s", d.Platform, c)
		}
		if d.MediaType != types.DockerManifestSchema2 {
			t.Errorf("manifest for %s: media type %s", d.Platform, d.MediaType)
		}
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64/v8", "linux/arm/v7"}, got); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
}

func TestGoImage(t *testing.T) {
	img, err := GoImage()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
	}
	wantEnv := []string{"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOROOT=/usr/local/go", "GOTOOLCHAIN=local", "CGO_ENABLED=0"}
	if diff := cmp.Diff(wantEnv, cfg.Config.Env); diff != "" {
		t.Errorf("Env (-want +got):\n%s", diff)
	}
	entries, _ := layerFiles(t, img)
	for _, n := range []string{"bin/busybox", "usr/local/go/bin/go", "usr/local/go/pkg/tool/linux_amd64/compile", "usr/local/go/pkg/tool/linux_amd64/link",
		"usr/local/go/pkg/include/textflag.h", "usr/local/go/go.env", "usr/local/go/VERSION", "usr/local/go/src/runtime/proc.go", "usr/local/go/src/go.mod"} {
		if _, ok := entries[n]; !ok {
			t.Errorf("no %s in the image", n)
		}
	}
	for n, h := range entries {
		if strings.HasSuffix(n, "_test.go") || strings.Contains(n, "/testdata/") || strings.HasPrefix(n, "usr/local/go/src/cmd/") {
			t.Errorf("%s is in the image", n)
		}
		if strings.HasPrefix(n, "usr/") && (h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0) {
			t.Errorf("%s: mtime %v, uid %d", n, h.ModTime, h.Uid)
		}
	}

	// A second process finds it on disk: the same image.
	again, err := loadOrBuildGoImage()
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, err := again.Digest()
	if err != nil || d1 != d2 {
		t.Errorf("loaded again: %s (%v), want %s", d2, err, d1)
	}
}

// The image's toolchain cross-compiles a program for arm64 with nothing
// from the host: chrooted into the image's file system.
func TestGoImage_crossCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the standard library for arm64")
	}
	img, err := GoImage()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	untar(t, mutate.Extract(img), root)
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	// os/exec gives the compiler /dev/null as its standard input.
	if err := unix.Mknod(filepath.Join(root, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make /dev/null in the root (needs root): %v", err)
	}
	src := filepath.Join(root, "src", "hello")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n"), 0o644)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/local/go/bin/go", "build", "-o", "/src/hello/hello", ".")
	cmd.Dir = "/src/hello"
	cmd.Env = append(cfg.Config.Env, "HOME=/root", "GOARCH=arm64")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in the image: %v\n%s", err, out)
	}
	f, err := elf.Open(filepath.Join(src, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("built %v, want EM_AARCH64", f.Machine)
	}
}

// untar extracts a flattened image file system into dir (directories,
// regular files, symlinks: what the test images hold).
func untar(t *testing.T, rc io.ReadCloser, dir string) {
	t.Helper()
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm()|0o700)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()); err == nil {
				_, err = io.Copy(f, tr)
				f.Close()
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestPushGoImage(t *testing.T) {
	reg := StartRegistry(t)
	s := PushGoImage(t, reg)
	if want := reg.Host() + "/library/golang:host"; s != want {
		t.Errorf("ref %q, want %q", s, want)
	}
	img, err := GoImage()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	got, err := pull(t, s, reg.Auth()).Digest()
	if err != nil || got != want {
		t.Errorf("pulled %s (%v), want %s", got, err, want)
	}
}
