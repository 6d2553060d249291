// Package probe is a hostile RUN step for tests: a shell script (busybox sh) that looks for
// the build's credentials everywhere a step of the Dockerfile can look.
package probe

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/test/imagetest"
)

// Script is what a hostile Dockerfile's RUN step does to find the
// build's credentials: it reads every file it can (but the kernel's
// pseudo-files), the environment and command line of every process, and
// everything reachable through each process's /proc entries (root, cwd,
// open files). It writes the names (never the contents) of what held a
// canary to /found, what it could open of other processes to /reached,
// and every file it read to /scanned.
//
// The canaries come reversed in its argument, so that no file of the build
// (the Dockerfile, this script) and no command line holds them as they are.
const Script = `
canaries=$(echo "$1" | rev)
: > /found; : > /reached; : > /scanned
check() {
	echo "$1" >> /scanned
	# NULs as newlines: busybox grep stops a line at a NUL (environ, binaries).
	for c in $canaries; do if tr '\000' '\n' < "$1" 2>/dev/null | grep -qF -e "$c"; then echo "$1: $c" >> /found; fi; done
}
for f in $(find / -xdev \( -path /proc -o -path /sys -o -path /found -o -path /reached -o -path /scanned \) -prune -o -type f -print 2>/dev/null); do
	check "$f"
done
for d in /proc/[0-9]*; do
	# This script and the shell of its step are the step's own; PID 1 (the
	# executor in a pod, the namespace helper in a chroot) is not, even
	# when it is this script's parent.
	p=${d#/proc/}
	if [ "$p" = $$ ] || { [ "$p" = "$PPID" ] && [ "$p" != 1 ]; }; then continue; fi
	for f in environ cmdline; do check "$d/$f"; done
	if ls "$d/root/" >/dev/null 2>&1; then echo "$d/root" >> /reached; fi
	if head -c1 "$d/environ" >/dev/null 2>&1; then echo "$d/environ" >> /reached; fi
	for f in "$d"/fd/*; do
		if readlink "$f" >/dev/null 2>&1; then echo "$d/fd" >> /reached; break; fi
	done
	for f in $(find "$d/root/" "$d/cwd/" -xdev -type f 2>/dev/null | head -5000); do check "$f"; done
	for f in "$d"/fd/*; do [ -f "$f" ] && check "$f"; done
done
for c in $canaries; do if env | grep -qF "$c"; then echo "env: $c" >> /found; fi; done
`

// Dockerfile is a hostile Dockerfile on base: a first RUN step runs Script with no mount, then
// keeps its results as /found.1, /reached.1 and /scanned.1; a second runs it with the build
// secret mountedID mounted (at /run/secrets/ID), whose canary it should find there alone.
func Dockerfile(base, mountedID string, canaries ...string) string {
	args := Args(canaries...)
	return "FROM " + base + "\n" +
		"COPY probe.sh /probe.sh\n" +
		"RUN sh /probe.sh \"" + args + "\"\n" +
		"RUN --mount=type=secret,id=" + mountedID + " sh -c 'mv /found /found.1 && mv /reached /reached.1 && mv /scanned /scanned.1 && sh /probe.sh \"" + args + "\"'\n"
}

// Check asserts what the two steps of Dockerfile left in img: nothing found by the first, only
// /run/secrets/ID: mounted by the second, no other process reached by either, and every path of
// mustScan read by the first.
func Check(t testing.TB, img v1.Image, mountedID, mounted string, mustScan ...string) {
	t.Helper()
	dir := t.TempDir()
	if err := imagetest.Extract(img, dir); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatalf("the probe did not write /%s: %v", p, err)
		}
		return string(b)
	}
	if got := read("found.1"); got != "" {
		t.Errorf("a RUN step without mounts found credentials:\n%s", got)
	}
	if got, want := read("found"), "/run/secrets/"+mountedID+": "+mounted+"\n"; got != want {
		t.Errorf("the RUN step mounting secret %s found:\n%s\nwant only:\n%s", mountedID, got, want)
	}
	for _, p := range []string{"reached.1", "reached"} {
		if got := read(p); got != "" {
			t.Errorf("a RUN step reached into other processes:\n%s", got)
		}
	}
	scanned := strings.Split(read("scanned.1"), "\n")
	for _, want := range mustScan {
		if !slices.Contains(scanned, want) {
			t.Errorf("the probe did not read %s; it read:\n%s", want, read("scanned.1"))
		}
	}
	t.Logf("the probe read %d files and /proc entries", len(scanned)-1)
}

// Args is the argument of Script for these canaries: reversed, so that no file of the build
// and no command line holds them as they are.
func Args(canaries ...string) string {
	r := []rune(strings.Join(canaries, " "))
	slices.Reverse(r)
	return string(r)
}
