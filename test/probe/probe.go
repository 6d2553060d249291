// Package probe is a hostile RUN step for tests: a shell script (busybox sh) that looks for
// the build's credentials everywhere a step of the Dockerfile can look.
package probe

import (
	"slices"
	"strings"
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
	# This script and the shell of its step (unless the step is this
	# script, whose parent is then the executor) are the step's own.
	p=${d#/proc/}
	if [ "$p" = $$ ]; then continue; fi
	if [ "$p" = $PPID ] && ! grep -qF slipway/executor "$d/cmdline"; then continue; fi
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

// Args is the argument of Script for these canaries: reversed, so that no file of the build
// and no command line holds them as they are.
func Args(canaries ...string) string {
	r := []rune(strings.Join(canaries, " "))
	slices.Reverse(r)
	return string(r)
}
