package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/test/imagetest"
)

// buildahBinary is Debian's buildah, the peer of the differential test.
const buildahBinary = "/usr/bin/buildah"

// comparedConfigFields are the container config fields both builders must
// agree on (Labels without buildah's own io.buildah.version).
var comparedConfigFields = []string{
	"Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
	"Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell",
}

// buildahRunStubs are the mount points buildah 1.28 leaves in the layer of
// every RUN (empty directories and files). BuildKit removes the stubs it
// created for a RUN's mounts (executor.MountStubsCleaner: /etc/hosts,
// /etc/resolv.conf and each mount destination) and so does the executor,
// so a path of this list that only buildah's image has is not a
// difference. Listing them in every RUN case would bury the real ones.
var buildahRunStubs = map[string]bool{
	"/dev": true, "/proc": true, "/sys": true, "/run": true,
	"/etc/hostname": true, "/etc/hosts": true, "/etc/resolv.conf": true,
}

// buildahBuild builds the case's context with buildah in a fresh storage
// directory (as a fresh pod would) and pushes it to ref.
func (e *corpusEnv) buildahBuild(t *testing.T, c *corpusCase, ctxDir, ref string) {
	t.Helper()
	dir := t.TempDir()
	global := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}
	args := append(append([]string{}, global...), "bud", "--isolation", "chroot", "--layers", "--format", "docker",
		"--tls-verify=false", "-f", filepath.Join(ctxDir, c.Dockerfile), "-t", ref)
	for _, a := range e.buildArgs(c) {
		args = append(args, "--build-arg", a)
	}
	if c.Target != "" {
		args = append(args, "--target", c.Target)
	}
	args = append(args, ctxDir)
	runBuildah(t, dir, args...)
	runBuildah(t, dir, append(append([]string{}, global...), "push", "--tls-verify=false", ref, "docker://"+ref)...)
}

func runBuildah(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(buildahBinary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+dir, "BUILDAH_ISOLATION=chroot")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestExecute_buildah builds every successful corpus case with the
// executor and with Debian's buildah and compares the images: the config
// fields of comparedConfigFields and the flattened file trees (path, type,
// mode, owner, size, content digest, link target; not times). Where the
// executor is Docker-correct and buildah 1.28 is not, case.json lists the
// difference with the reason; each listed difference must occur.
func TestExecute_buildah(t *testing.T) {
	if _, err := os.Stat(buildahBinary); err != nil {
		t.Fatalf("%s: %v: the differential test needs Debian's buildah (apt-get install buildah; hack/deps.sh installs it)", buildahBinary, err)
	}
	cases := loadCorpus(t)
	env := newCorpusEnv(t)
	for _, c := range cases {
		if c.Failure != nil {
			continue // failures are checked by TestExecute_corpus
		}
		t.Run(c.name, func(t *testing.T) {
			if c.Buildah.Skip != "" {
				t.Skip(c.Buildah.Skip)
			}
			t.Parallel()
			ctxDir := env.prepareContext(t, c)
			ours := env.reg.Ref("buildah-diff/" + c.name + ":slipway")
			theirs := env.reg.Ref("buildah-diff/" + c.name + ":buildah")
			b := env.executorBuild(t, c, ctxDir, ours)
			if b.exit != 0 {
				t.Fatalf("executor build failed: %s; log:\n%s", b.resRaw, b.log)
			}
			env.buildahBuild(t, c, ctxDir, theirs)
			diffs := compareImages(t, pullImage(t, theirs), pullImage(t, ours))
			checkDifferences(t, c, diffs)
		})
	}
}

// compareImages returns the differences between buildah's image and ours,
// keyed "config.FIELD" or by path, each with a "buildah => ours" text.
func compareImages(t *testing.T, theirs, ours v1.Image) map[string]string {
	t.Helper()
	diffs := map[string]string{}
	tc, err := theirs.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	oc, err := ours.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	tf, of := configFields(t, tc.Config), configFields(t, oc.Config)
	for _, f := range comparedConfigFields {
		if tf[f] != of[f] {
			diffs["config."+f] = fmt.Sprintf("%s => %s", tf[f], of[f])
		}
	}
	tt, err := imagetest.Flatten(theirs)
	if err != nil {
		t.Fatal(err)
	}
	ot, err := imagetest.Flatten(ours)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range imagetest.DiffTrees(tt, ot, nil) {
		p, _, _ := strings.Cut(line[1:], ": ")
		if _, ours := ot[p]; !ours && buildahRunStubs[p] && isStub(tt[p]) {
			continue
		}
		diffs[p] = line
	}
	return diffs
}

// isStub reports whether e is an empty file or a 0755 directory owned by root.
func isStub(e imagetest.Entry) bool {
	return e.UID == 0 && e.GID == 0 &&
		((e.Type == tar.TypeDir && e.Mode == 0o755) || (e.Type == tar.TypeReg && e.Size == 0))
}

// configFields renders each compared field of c as canonical JSON.
func configFields(t *testing.T, c v1.Config) map[string]string {
	t.Helper()
	if c.Labels != nil {
		labels := map[string]string{}
		for k, v := range c.Labels {
			if k != "io.buildah.version" {
				labels[k] = v
			}
		}
		if len(labels) == 0 {
			labels = nil
		}
		c.Labels = labels
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range comparedConfigFields {
		v, ok := m[f]
		if !ok {
			out[f] = "(unset)"
			continue
		}
		j, _ := json.Marshal(v) // maps marshal with sorted keys
		out[f] = string(j)
	}
	return out
}

// checkDifferences fails for every difference case.json does not document
// and for every documented one that did not occur.
func checkDifferences(t *testing.T, c *corpusCase, diffs map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(diffs))
	for k := range diffs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := c.Buildah.Differences[k]; !ok {
			t.Errorf("undocumented difference (buildah => executor) %s: %s", k, diffs[k])
		}
	}
	for k, reason := range c.Buildah.Differences {
		if _, ok := diffs[k]; !ok {
			t.Errorf("documented difference %s (%s) did not occur: update %s/case.json", k, reason, c.name)
		}
	}
}
