package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/testenv"
)

// compat386Dockerfile runs a RUN in a linux/386 stage: its busybox is
// Debian's busybox-static:i386, a 32-bit executable that amd64 runs
// itself (binfmt.Native, as containerd's platforms.Only lists linux/386
// for amd64), with no emulator, making its system calls through the
// kernel's ia32 ABI.
const compat386Dockerfile = `ARG BASE
FROM --platform=linux/386 $BASE
RUN uname -m > /m; echo ok > /ok
`

// push386Busybox pushes Debian's busybox-static:i386 as a linux/386
// image and returns its reference.
func push386Busybox(t *testing.T, reg *testenv.Registry) string {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("linux/386 runs natively on amd64 only")
	}
	img, err := testenv.BusyboxImageFor(v1.Platform{OS: "linux", Architecture: "386"})
	if err != nil {
		t.Fatal(err)
	}
	s := reg.Ref("library/busybox:i386")
	ref, err := name.NewTag(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(reg.Auth())); err != nil {
		t.Fatalf("pushing %s: %v", s, err)
	}
	return s
}

// machine is what uname -m says on this machine.
func machine(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Machine[:])
}

// check386Image checks what compat386Dockerfile's RUN left: "ok", and
// uname -m as BuildKit's step prints it. BuildKit sets no personality for
// a step (executor/oci's spec has no Linux.Personality, and runc sets
// one only when the spec asks), so a linux/386 step on amd64 sees the
// machine's own name, x86_64, not i686 as under linux32.
func check386Image(t *testing.T, img v1.Image) {
	t.Helper()
	_, contents, err := imagetest.FlattenContents(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(contents["/ok"]); got != "ok\n" {
		t.Errorf("/ok = %q, want %q", got, "ok\n")
	}
	if got, want := string(contents["/m"]), machine(t)+"\n"; got != want {
		t.Errorf("/m (uname -m) = %q, want %q", got, want)
	}
	if p := configPlatformOf(t, img); p != "linux/386" {
		t.Errorf("config platform %s, want linux/386", p)
	}
}

// TestExecute_compat386: a RUN of a linux/386 stage runs under
// --isolation=chroot, its 32-bit system calls allowed by the step's
// seccomp filter (Docker's default profile for the x86 ABI as well).
func TestExecute_compat386(t *testing.T) {
	e := newPlatformExec(t, compat386Dockerfile)
	e.base = push386Busybox(t, e.reg)
	b := e.mustRun(t, "app/compat386:v1")
	t.Logf("log:\n%s", b.log)
	check386Image(t, pullImage(t, e.reg.Ref("app/compat386:v1")))
	if strings.Contains(b.log, "run through") {
		t.Errorf("the log says linux/386 RUN steps run through an emulator:\n%s", b.log)
	}
}

// TestExecute_compat386InPlace: the same build in place. There the
// executor installs no seccomp filter of its own: the pod's profile
// applies (RuntimeDefault, containerd's and CRI-O's, allows the x86 ABI
// on amd64, as Docker's does); this test runs unconfined.
func TestExecute_compat386InPlace(t *testing.T) {
	e := newPlatformExec(t, compat386Dockerfile)
	e.base = push386Busybox(t, e.reg)
	root := makeExecutorRoot(t)
	ref := e.reg.Ref("app/compat386-inplace:v1")
	args := []string{"--isolation=inplace", "--context=dir:///workspace", "--destination=" + ref,
		"--insecure-registry=" + e.reg.Host(), "--build-arg=BASE=" + e.base,
		"--result-file=/slipway/result.json"}
	out, err := runInPlace(t, root, e.ctxDir, args)
	if err != nil {
		raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	check386Image(t, pullImage(t, ref))
}
