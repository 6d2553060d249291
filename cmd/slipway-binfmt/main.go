// Command slipway-binfmt registers QEMU user-mode emulators in the node kernel's binfmt_misc
// table, so that executor pods can run RUN steps of other platforms (spec.emulation), as
// tonistiigi/binfmt does for BuildKit. It is the program of the Slipway chart's binfmt
// DaemonSet (hack/images/binfmt/Dockerfile):
//
//	slipway-binfmt --platforms=arm64,arm   # in the privileged init container: register, exit
//	slipway-binfmt --pause                 # in the unprivileged container: wait for SIGTERM
//	slipway-binfmt --uninstall --platforms=arm64,arm
//
// Each handler is Debian's qemu-user-static rule for the platform (--conf-dir, the
// qemu-<arch>.conf files), pointed at the emulator in this image (--qemu-dir/<arch>-binfmt-P,
// a name that tells QEMU the P flag is set) and registered with the F (fix-binary) flag: the
// kernel opens the emulator once, now, in this container, and uses that file for every later
// match in every container of the node, whose root file systems have no QEMU. The entries are
// named slipway-qemu-<arch> (--name-prefix).
//
// It only adds: an entry of another name is never removed or changed. Running it again is a
// no-op when its entries are there as it would write them; an entry of its own name that
// differs is replaced. A platform whose executables the node runs natively is left alone. A
// platform that an entry of another name serves too (tonistiigi/binfmt's qemu-aarch64, say)
// still gets its own entry, so that the node keeps its emulator when the other goes; the kernel
// uses the entry registered last. --uninstall removes its own entries for the platforms and
// nothing else.
//
// Writing binfmt_misc needs a privileged container (CAP_SYS_ADMIN to mount it, and a /proc/sys
// that is not read-only); the table is the node's, shared by every pod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/binfmt"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "slipway-binfmt:", err)
		os.Exit(1)
	}
}

type options struct {
	platforms  string
	dir        string
	confDir    string
	qemuDir    string
	namePrefix string
	uninstall  bool
	pause      bool
}

func run(args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("slipway-binfmt", flag.ContinueOnError)
	fs.StringVar(&o.platforms, "platforms", "arm64,arm", "Comma-separated platforms to register an emulator for: GOARCH names (arm64, arm, riscv64, ppc64le, s390x) or os/arch[/variant].")
	fs.StringVar(&o.dir, "dir", binfmt.DefaultDir, "Where binfmt_misc is (mounted there when it is not).")
	fs.StringVar(&o.confDir, "conf-dir", binfmt.DebianConfDir, "Directory of Debian's qemu-<arch>.conf binfmt rules.")
	fs.StringVar(&o.qemuDir, "qemu-dir", "/usr/libexec/qemu-binfmt", "Directory of the static emulators, named <arch>-binfmt-P.")
	fs.StringVar(&o.namePrefix, "name-prefix", "slipway-qemu-", "Prefix of the names of the entries this program makes and may remove.")
	fs.BoolVar(&o.uninstall, "uninstall", false, "Remove this program's entries for --platforms instead of registering them.")
	fs.BoolVar(&o.pause, "pause", false, "Only wait for SIGTERM or SIGINT, then exit 0 (the DaemonSet's long-running container).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.pause {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		return nil
	}
	if o.namePrefix == "" || strings.ContainsAny(o.namePrefix, "/:") {
		return fmt.Errorf("--name-prefix %q: want a non-empty prefix without / or :", o.namePrefix)
	}
	platforms, err := parsePlatforms(o.platforms)
	if err != nil {
		return err
	}
	if err := binfmt.Mount(o.dir); err != nil {
		return err
	}
	for _, p := range platforms {
		msg, err := apply(o, p)
		if err != nil {
			return fmt.Errorf("%s: %w", binfmt.PlatformString(p), err)
		}
		fmt.Fprintf(out, "%s: %s\n", binfmt.PlatformString(p), msg)
	}
	return nil
}

// parsePlatforms parses "arm64,linux/arm/v7": a bare architecture is linux/ARCH (arm is
// arm/v7, the emulator running every 32-bit ARM variant).
func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			f = "linux/" + f
		}
		p, err := v1.ParsePlatform(f)
		if err != nil {
			return nil, fmt.Errorf("--platforms: %w", err)
		}
		if p.Architecture == "arm" && p.Variant == "" {
			p.Variant = "v7"
		}
		if _, err := binfmt.QEMUArch(*p); err != nil {
			return nil, fmt.Errorf("--platforms: %w", err)
		}
		ps = append(ps, *p)
	}
	if len(ps) == 0 {
		return nil, errors.New("--platforms: none given")
	}
	return ps, nil
}

// apply registers (or with --uninstall removes) this program's entry for p, and says what it did.
func apply(o options, p v1.Platform) (string, error) {
	arch, err := binfmt.QEMUArch(p)
	if err != nil {
		return "", err
	}
	name := o.namePrefix + arch
	existing, err := binfmt.ReadEntry(o.dir, name)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}

	if o.uninstall {
		if !exists {
			return "no entry " + name + " to remove", nil
		}
		if err := binfmt.Unregister(o.dir, name); err != nil {
			return "", err
		}
		return "removed " + name, nil
	}

	if binfmt.Native(p) {
		return "runs natively on this node, nothing to register", nil
	}
	want, err := binfmt.QEMUConf(o.confDir, p)
	if err != nil {
		return "", err
	}
	want.Name = name
	want.Interpreter = filepath.Join(o.qemuDir, arch+"-binfmt-P")
	if err := checkEmulator(want.Interpreter); err != nil {
		return "", err
	}
	if exists && same(existing, want) {
		return "already registered as " + name, nil
	}
	entries, err := binfmt.ReadEntries(o.dir)
	if err != nil {
		return "", err
	}
	var others []string
	for _, e := range entries {
		if e.Enabled && e.Serves(p) && e.Name != name {
			others = append(others, e.Name)
		}
	}
	if exists {
		// Ours, but not as this image would write it (another image version's path).
		if err := binfmt.Unregister(o.dir, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	if err := binfmt.Register(o.dir, want); err != nil {
		return "", err
	}
	verb := "registered"
	if exists {
		verb = "replaced"
	}
	msg := fmt.Sprintf("%s %s (interpreter %s, flags %s)", verb, name, want.Interpreter, want.Flags)
	if len(others) > 0 {
		msg += fmt.Sprintf(", ahead of %s, which also serve it and are left alone", strings.Join(others, ", "))
	}
	return msg, nil
}

// same reports whether the kernel's entry e is want as registered: enabled, the same match,
// interpreter and flags (in any order; the kernel prints them as P, O, C, F). The kernel keeps
// magic bytes masked.
func same(e, want binfmt.Entry) bool {
	sorted := func(s string) string { b := []byte(s); slices.Sort(b); return string(b) }
	masked := func(x binfmt.Entry) []byte {
		m := slices.Clone(x.Magic)
		for i := range m {
			if i < len(x.Mask) {
				m[i] &= x.Mask[i]
			}
		}
		return m
	}
	return e.Enabled && e.Extension == "" && e.Offset == want.Offset && e.Interpreter == want.Interpreter &&
		sorted(e.Flags) == sorted(want.Flags) && slices.Equal(masked(e), masked(want)) && slices.Equal(e.Mask, want.Mask)
}

// checkEmulator refuses an interpreter that is not an executable regular file: with the F flag
// the kernel would refuse it too, less clearly.
func checkEmulator(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("the emulator: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("the emulator %s is not an executable file (%s)", path, fi.Mode())
	}
	return nil
}
