package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/test/imagetest"
)

// inplaceCases are the corpus cases built both ways: a multi-stage build,
// and RUN --mount (emulated in the root the build runs in).
var inplaceCases = []string{"java-multistage", "run-mounts"}

// TestExecute_inplace builds corpus cases (inplaceCases) with
// --isolation=inplace inside a throwaway root, as the executor runs in its
// own image in a pod (PEERS.md runs kaniko the same way), and with
// --isolation=chroot in-process, both with --reproducible, and checks that
// the two images are the same.
//
// The throwaway root holds the executor binary at /slipway/executor, the
// image marker /slipway/.executor-image, /etc/nsswitch.conf, /tmp (1777)
// and the context bound read-only at /workspace; the executor runs
// chrooted into it in new mount and PID namespaces (unshare), with /proc
// and a tmpfs /dev holding the host's null, zero, random, urandom and tty.
func TestExecute_inplace(t *testing.T) {
	for _, tool := range []string{"unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (util-linux and coreutils)", tool, err)
		}
	}
	env := newCorpusEnv(t)
	cases := map[string]*corpusCase{}
	for _, cc := range loadCorpus(t) {
		cases[cc.name] = cc
	}
	// One root for all: an in-place build clears it first.
	root := makeExecutorRoot(t)
	for _, name := range inplaceCases {
		c := cases[name]
		if c == nil {
			t.Fatalf("corpus case %s is missing", name)
		}
		t.Run(name, func(t *testing.T) { buildInPlaceAndChroot(t, env, c, root) })
	}
}

func buildInPlaceAndChroot(t *testing.T, env *corpusEnv, c *corpusCase, root string) {
	ctxDir := env.prepareContext(t, c)
	inplaceRef := env.reg.Ref("inplace/" + c.name + ":inplace")
	args := []string{
		"--isolation=inplace",
		"--context=dir:///workspace",
		"--dockerfile=" + c.Dockerfile,
		"--destination=" + inplaceRef,
		"--insecure-registry=" + env.reg.Host(),
		"--reproducible",
		"--result-file=/slipway/result.json",
	}
	for _, a := range env.buildArgs(c) {
		args = append(args, "--build-arg="+a)
	}
	out, err := runInPlace(t, root, ctxDir, args)
	if err != nil {
		raw, _ := os.ReadFile(filepath.Join(root, "slipway", "result.json"))
		t.Fatalf("in-place build: %v; result %s; output:\n%s", err, raw, out)
	}
	inplaceImg := pullImage(t, inplaceRef)

	chrootRef := env.reg.Ref("inplace/" + c.name + ":chroot")
	b := env.executorBuild(t, c, ctxDir, chrootRef, "--reproducible")
	if b.exit != 0 {
		t.Fatalf("chroot build failed: %s; log:\n%s", b.resRaw, b.log)
	}
	chrootImg := pullImage(t, chrootRef)

	di, err := inplaceImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := chrootImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if di != dc {
		t.Errorf("in place: %s, chroot: %s; want the same image", di, dc)
		ti, err1 := imagetest.Flatten(inplaceImg)
		tc, err2 := imagetest.Flatten(chrootImg)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if d := imagetest.DiffTrees(tc, ti, nil); len(d) > 0 {
			t.Errorf("file trees (-chroot +inplace):\n%s", strings.Join(d, "\n"))
		}
		ci, _ := inplaceImg.RawConfigFile()
		cc, _ := chrootImg.RawConfigFile()
		if string(ci) != string(cc) {
			t.Errorf("configs differ:\nchroot:  %s\ninplace: %s", cc, ci)
		}
		t.Logf("in-place output:\n%s", out)
	}
}

// makeExecutorRoot builds the executor (statically) into a new directory
// laid out like the executor image, and returns the directory.
func makeExecutorRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"slipway", "etc", "tmp", "proc", "dev", "workspace"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"slipway/.executor-image": "",
		"etc/nsswitch.conf":       "hosts: files dns\n",
	}
	for p, data := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(root, "slipway", "executor"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./executor: %v\n%s", err, out)
	}
	return root
}
