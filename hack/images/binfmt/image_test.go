// Package binfmt tests the binfmt image (hack/images/binfmt/Dockerfile, built by
// hack/images.sh): its slipway-binfmt, run from the image's own file system, registers the
// image's QEMU in this machine's kernel with the F flag, and a foreign busybox then runs in a
// root that has no QEMU, even after the emulator's file is gone from the image's.
package binfmt

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/binfmt"
	"github.com/slipway-dev/slipway/test/testenv"
)

// untar extracts a flattened image file system into dir.
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
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()); err == nil {
				_, err = io.Copy(f, tr)
				f.Close()
			}
		default:
			err = fmt.Errorf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// chroot runs args in root as uid:gid and returns the output.
func chroot(root string, uid uint32, args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestImage_registersWithF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Slipway's images")
	}
	if err := binfmt.Mount(binfmt.DefaultDir); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("binfmt_misc cannot be mounted here (needs root): %v", err)
		}
		t.Fatal(err)
	}
	testenv.RequireQEMUUserStatic(t)
	// ppc64le: neither the executor's tests nor RequireEmulation's users emulate it, so no
	// other handler of theirs serves it meanwhile.
	ppc := v1.Platform{OS: "linux", Architecture: "ppc64le"}
	debRoot, err := testenv.ForeignDeb("busybox-static", "ppc64el")
	if err != nil {
		t.Fatal(err)
	}

	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "..", "images.sh"), "--tar", out, "--tag", "test")
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=", "SLIPWAY_BINFMT_ARCHES=ppc64le aarch64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/images.sh: %v\n%s", err, stderr.String())
	}
	img, err := tarball.ImageFromPath(filepath.Join(out, "binfmt.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	untar(t, mutate.Extract(img), root)
	// Where the program mounts binfmt_misc in the image's root (a chroot has no /proc).
	if err := os.Mkdir(filepath.Join(root, "binfmt"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(filepath.Join(root, "binfmt"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmounting: %v", err)
		}
	})
	b := make([]byte, 6)
	rand.Read(b)
	prefix := "slipway-test-" + hex.EncodeToString(b) + "-"
	name := prefix + "ppc64le"
	t.Cleanup(func() {
		if err := binfmt.Unregister(binfmt.DefaultDir, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
	})

	// A root with the ppc64le busybox and no QEMU, as a build's.
	buildRoot := t.TempDir()
	bb, err := os.ReadFile(filepath.Join(debRoot, "bin", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(buildRoot, "bin"), 0o755)
	if err := os.WriteFile(filepath.Join(buildRoot, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}

	got, err := chroot(root, 0, "/usr/bin/slipway-binfmt", "--dir=/binfmt", "--platforms=ppc64le", "--name-prefix="+prefix)
	if err != nil {
		t.Fatalf("slipway-binfmt in the image: %v\n%s", err, got)
	}
	if want := "linux/ppc64le: registered " + name + " (interpreter /usr/libexec/qemu-binfmt/ppc64le-binfmt-P, flags OPF)\n"; got != want {
		t.Errorf("slipway-binfmt printed %q, want %q", got, want)
	}
	h, err := binfmt.Find(binfmt.DefaultDir, ppc)
	if err != nil || h.Name != name || !strings.Contains(h.Flags, "F") {
		t.Fatalf("Find(linux/ppc64le) on the host = %+v, %v; want %s with F", h, err, name)
	}

	// The kernel holds the emulator it opened: its file can go.
	if err := os.Remove(filepath.Join(root, "usr/libexec/qemu-binfmt/ppc64le-binfmt-P")); err != nil {
		t.Fatal(err)
	}
	if got, err := chroot(buildRoot, 65534, "/bin/busybox", "uname", "-m"); err != nil || strings.TrimSpace(got) != "ppc64le" {
		t.Errorf("ppc64le busybox in a root without QEMU: %q, %v; want ppc64le", got, err)
	}

	// The image's long-running container: --pause as nobody, ended by SIGTERM.
	pause := exec.Command("/usr/bin/slipway-binfmt", "--pause")
	pause.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	syscall.Kill(pause.Process.Pid, syscall.SIGTERM)
	if err := pause.Wait(); err != nil {
		t.Errorf("slipway-binfmt --pause after SIGTERM: %v, want exit 0", err)
	}

	got, err = chroot(root, 0, "/usr/bin/slipway-binfmt", "--dir=/binfmt", "--platforms=ppc64le", "--name-prefix="+prefix, "--uninstall")
	if err != nil || got != "linux/ppc64le: removed "+name+"\n" {
		t.Errorf("slipway-binfmt --uninstall: %q, %v", got, err)
	}
	if _, err := binfmt.ReadEntry(binfmt.DefaultDir, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after --uninstall: %v", name, err)
	}
}
