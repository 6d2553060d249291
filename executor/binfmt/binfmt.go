// Package binfmt reads and writes the Linux kernel's binfmt_misc handler
// table, which lets a RUN step of a foreign platform (linux/arm64 on an
// amd64 node) run its executables through a user-mode emulator such as
// QEMU. Find answers, before a build starts, whether the kernel would run
// a platform's executables and through which handler, with the kernel's
// own matching rule; Register and Unregister change the table (the chart's
// binfmt DaemonSet and tests use them; the executor never does).
//
// The table is machine-wide: an entry written here serves every process
// of the node, in every container. Only a privileged process can write it.
package binfmt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// DefaultDir is where binfmt_misc is mounted on Linux.
const DefaultDir = "/proc/sys/fs/binfmt_misc"

// Handler is an enabled binfmt_misc entry.
type Handler struct {
	// Name is the entry's name (its file under the binfmt_misc directory).
	Name string
	// Interpreter is the path the entry was registered with.
	Interpreter string
	// Flags are the entry's flags as the kernel prints them: P (preserve
	// argv[0]), O (open the binary), C (credentials), F (fix binary: the
	// interpreter was opened at registration).
	Flags string
}

// Entry is one binfmt_misc entry: as the kernel prints it (ReadEntry), or
// to register (Register; ParseConf reads one from a binfmt.d file).
type Entry struct {
	Name        string
	Enabled     bool
	Interpreter string
	Flags       string
	// Offset, Magic and Mask describe a magic entry (type M): the file
	// matches when its bytes from Offset, masked with Mask (all ones when
	// Mask is empty), equal Magic.
	Offset int
	Magic  []byte
	Mask   []byte
	// Extension is set instead for an extension entry (type E), without
	// the dot.
	Extension string
}

// fixBinary is the flag that makes the kernel open the interpreter when
// the entry is registered, rather than at each exec inside the caller's
// root (which a build's root filesystem would not have).
const fixBinary = 'F'

// Native reports whether this machine runs p's executables without
// emulation: linux, and the executor's own GOARCH (with an amd64 variant
// only if the CPU has that level's features), or 386 on amd64 (the x86-64
// kernel's 32-bit compatibility mode). Everything else is false, including
// arm on arm64, which only some arm64 CPUs run.
func Native(p v1.Platform) bool {
	if runtime.GOOS != "linux" || (p.OS != "linux" && p.OS != "") {
		return false
	}
	switch {
	case p.Architecture == runtime.GOARCH:
		return nativeVariant(p.Architecture, p.Variant)
	case runtime.GOARCH == "amd64" && p.Architecture == "386":
		return p.Variant == ""
	}
	return false
}

// nativeVariant reports whether this CPU runs the variant of its own
// architecture.
func nativeVariant(arch, variant string) bool {
	switch arch {
	case "amd64":
		// The x86-64 microarchitecture levels (GOAMD64).
		x := cpu.X86
		v2 := x.HasCX16 && x.HasLAHF && x.HasPOPCNT && x.HasSSE3 && x.HasSSSE3 && x.HasSSE41 && x.HasSSE42
		v3 := v2 && x.HasAVX && x.HasAVX2 && x.HasBMI1 && x.HasBMI2 && x.HasF16C && x.HasFMA && x.HasLZCNT && x.HasMOVBE && x.HasOSXSAVE
		v4 := v3 && x.HasAVX512F && x.HasAVX512BW && x.HasAVX512CD && x.HasAVX512DQ && x.HasAVX512VL
		switch variant {
		case "", "v1":
			return true
		case "v2":
			return v2
		case "v3":
			return v3
		case "v4":
			return v4
		}
		return false
	case "arm64":
		return variant == "" || variant == "v8"
	case "arm":
		// This binary runs, so the CPU has at least the GOARM it was built for.
		own := 7
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" {
					if n, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(s.Value, ",", 2)[0], "v")); err == nil {
						own = n
					}
				}
			}
		}
		switch variant {
		case "":
			return true
		case "v5", "v6", "v7":
			return int(variant[1]-'0') <= own
		}
		return false
	}
	return variant == ""
}

// Find returns the enabled handler under dir (DefaultDir on a node) that
// the kernel would pick for ELF executables of p, or an error saying why
// none can serve a build: binfmt_misc is not mounted at dir or is
// disabled; no entry matches p's executables; the matching entry is
// disabled; or it lacks the F (fix-binary) flag, so the kernel would look
// for its interpreter inside the build's root filesystem. Each error
// names the fix.
//
// Matching is the kernel's (fs/binfmt_misc.c, check_file): an enabled
// magic entry matches when the file's bytes from its offset, masked, equal
// its magic; extension entries match by file name, which says nothing
// about a platform, so they never count. p's executables are represented
// by ELF headers built for p (static and position-independent, OS/ABI
// none and GNU/Linux), and an entry serves p only when it matches them
// all and its mask looks at no byte those headers leave open (entry point,
// e_flags, ...). When several enabled entries serve p, the kernel takes
// the one registered last, which the directory does not tell reliably:
// Find then returns the one with the highest inode number (the newest one
// in practice) if every one of them has the F flag, and an error if not.
func Find(dir string, p v1.Platform) (*Handler, error) {
	t, err := elfFor(p)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) error {
		return &NotServedError{Platform: p, Reason: fmt.Sprintf(format, args...)}
	}
	if !Mounted(dir) {
		return nil, fail("binfmt_misc is not mounted at %s", dir)
	}
	if status, err := os.ReadFile(filepath.Join(dir, "status")); err == nil && strings.TrimSpace(string(status)) != "enabled" {
		return nil, fail("binfmt_misc at %s is disabled (%s/status says %q)", dir, dir, strings.TrimSpace(string(status)))
	}
	entries, inodes, err := readEntries(dir)
	if err != nil {
		return nil, err
	}
	headers := elfHeaders(t)
	var enabled, disabled, partial []int
	for i, e := range entries {
		all, some := e.servesHeaders(headers)
		switch {
		case all && e.Enabled:
			enabled = append(enabled, i)
		case all:
			disabled = append(disabled, i)
		case some:
			partial = append(partial, i)
		}
	}
	if len(enabled) == 0 {
		if len(disabled) > 0 {
			return nil, fail("the binfmt_misc handler %q for ELF executables of %s (%s) is disabled", entries[disabled[0]].Name, PlatformString(p), t)
		}
		if len(partial) > 0 {
			e := entries[partial[0]]
			return nil, fail("the binfmt_misc handler %q matches only some ELF executables of %s (%s): its magic %x with mask %x at offset %d also tests bytes that differ between executables", e.Name, PlatformString(p), t, e.Magic, e.Mask, e.Offset)
		}
		return nil, fail("no binfmt_misc handler under %s matches ELF executables of %s (%s)", dir, PlatformString(p), t)
	}
	sort.SliceStable(enabled, func(a, b int) bool { return inodes[enabled[a]] > inodes[enabled[b]] })
	var withoutF []string
	for _, i := range enabled {
		if !strings.ContainsRune(entries[i].Flags, fixBinary) {
			withoutF = append(withoutF, strconv.Quote(entries[i].Name))
		}
	}
	if len(withoutF) > 0 {
		e := entries[enabled[0]]
		if len(enabled) == 1 {
			return nil, fail("the binfmt_misc handler %q (interpreter %s, flags %q) lacks the F (fix-binary) flag, so the kernel would open %s inside the build's root filesystem, where it does not exist", e.Name, e.Interpreter, e.Flags, e.Interpreter)
		}
		return nil, fail("%d binfmt_misc handlers match ELF executables of %s and the kernel uses the one registered last, which %s does not tell; %s lack the F (fix-binary) flag, so their interpreter would have to exist inside the build's root filesystem", len(enabled), PlatformString(p), dir, strings.Join(withoutF, ", "))
	}
	e := entries[enabled[0]]
	return &Handler{Name: e.Name, Interpreter: e.Interpreter, Flags: e.Flags}, nil
}

// NotServedError says why no binfmt_misc handler can run a platform's
// executables for a build, and how to register one.
type NotServedError struct {
	Platform v1.Platform
	Reason   string
}

func (e *NotServedError) Error() string {
	return fmt.Sprintf("%s executables cannot run on this linux/%s node: %s; register QEMU for %s with the F (fix-binary) flag on the node, e.g. with the Slipway chart's binfmt DaemonSet (--set binfmt.enabled=true) or `docker run --privileged tonistiigi/binfmt --install %s`",
		PlatformString(e.Platform), runtime.GOARCH, e.Reason, e.Platform.Architecture, e.Platform.Architecture)
}

// Serves reports whether e, a magic entry, matches every ELF executable
// of p by Find's rule, enabled or not and whatever its flags.
func (e Entry) Serves(p v1.Platform) bool {
	t, err := elfFor(p)
	if err != nil {
		return false
	}
	all, _ := e.servesHeaders(elfHeaders(t))
	return all
}

// servesHeaders reports whether e matches all of headers and whether it
// matches some. A magic entry whose mask tests a byte past the headers'
// known part matches none: what it tests differs between executables.
func (e Entry) servesHeaders(headers [][]byte) (all, some bool) {
	if e.Extension != "" || len(e.Magic) == 0 {
		return false, false
	}
	for i := range e.Magic {
		if e.Offset+i >= knownHeaderLen && (len(e.Mask) == 0 || e.Mask[i] != 0) {
			return false, false
		}
	}
	all = true
	for _, h := range headers {
		if e.matches(h) {
			some = true
		} else {
			all = false
		}
	}
	return all, some
}

// matches is the kernel's comparison (check_file): every byte of the file
// from the offset, xor the magic, masked, is zero. buf may be shorter than
// the kernel's buffer; bytes past it are taken as zero.
func (e Entry) matches(buf []byte) bool {
	for i, m := range e.Magic {
		var b byte
		if j := e.Offset + i; j < len(buf) {
			b = buf[j]
		}
		mask := byte(0xff)
		if len(e.Mask) > 0 {
			mask = e.Mask[i]
		}
		if (b^m)&mask != 0 {
			return false
		}
	}
	return true
}

// Mounted reports whether binfmt_misc is mounted at dir (it has a register file).
func Mounted(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "register"))
	return err == nil
}

// Mount mounts binfmt_misc at dir unless it is mounted there already. It
// needs CAP_SYS_ADMIN.
func Mount(dir string) error {
	if Mounted(dir) {
		return nil
	}
	if err := unix.Mount("binfmt_misc", dir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting binfmt_misc at %s: %w", dir, err)
	}
	return nil
}

// ReadEntry reads the entry name under dir.
func ReadEntry(dir, name string) (Entry, error) {
	if err := checkName(name); err != nil {
		return Entry{}, err
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return Entry{}, fmt.Errorf("reading binfmt_misc entry: %w", err)
	}
	e, err := parseEntry(name, b)
	if err != nil {
		return Entry{}, fmt.Errorf("reading binfmt_misc entry %s: %w", name, err)
	}
	return e, nil
}

// ReadEntries reads every entry under dir, sorted by name.
func ReadEntries(dir string) ([]Entry, error) {
	entries, _, err := readEntries(dir)
	return entries, err
}

// readEntries reads every entry under dir, sorted by name, and their inode numbers.
func readEntries(dir string) ([]Entry, []uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("listing binfmt_misc entries: %w", err)
	}
	var entries []Entry
	var inodes []uint64
	for _, de := range des {
		name := de.Name()
		if name == "register" || name == "status" || de.IsDir() {
			continue
		}
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // unregistered since the listing
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading binfmt_misc entry: %w", err)
		}
		e, err := parseEntry(name, b)
		if err != nil {
			return nil, nil, fmt.Errorf("reading binfmt_misc entry %s: %w", path, err)
		}
		var ino uint64
		if fi, err := os.Stat(path); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				ino = st.Ino
			}
		}
		entries = append(entries, e)
		inodes = append(inodes, ino)
	}
	return entries, inodes, nil
}

// parseEntry parses an entry file as the kernel writes it (entry_status
// in fs/binfmt_misc.c):
//
//	enabled
//	interpreter /usr/bin/qemu-aarch64-static
//	flags: POCF
//	offset 0
//	magic 7f454c46...
//	mask ffffffff...
//
// or "extension .ext" in place of the last three lines.
func parseEntry(name string, b []byte) (Entry, error) {
	e := Entry{Name: name}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 0 {
		return e, errors.New("empty")
	}
	switch lines[0] {
	case "enabled":
		e.Enabled = true
	case "disabled":
	default:
		return e, fmt.Errorf("first line %q is neither enabled nor disabled", lines[0])
	}
	magic := false
	for _, l := range lines[1:] {
		key, value, _ := strings.Cut(l, " ")
		var err error
		switch key {
		case "interpreter":
			e.Interpreter = value
		case "flags:":
			e.Flags = value
		case "offset":
			e.Offset, err = strconv.Atoi(value)
		case "magic":
			e.Magic, err = hex.DecodeString(value)
			magic = true
		case "mask":
			e.Mask, err = hex.DecodeString(value)
		case "extension":
			e.Extension = strings.TrimPrefix(value, ".")
		}
		if err != nil {
			return e, fmt.Errorf("line %q: %w", l, err)
		}
	}
	if magic && len(e.Mask) > 0 && len(e.Mask) != len(e.Magic) {
		return e, fmt.Errorf("mask of %d bytes for a magic of %d", len(e.Mask), len(e.Magic))
	}
	if magic == (e.Extension != "") {
		return e, errors.New("neither a magic nor an extension entry")
	}
	return e, nil
}

// SetEnabled enables or disables the entry name under dir.
func SetEnabled(dir, name string, enabled bool) error {
	v := "0"
	if enabled {
		v = "1"
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, name), v); err != nil {
		return fmt.Errorf("setting binfmt_misc entry %s enabled=%v: %w", name, enabled, err)
	}
	return nil
}

// Register writes e (a magic entry) to dir's register file; the kernel
// refuses a name already registered (an error matching fs.ErrExist). With
// the F flag the kernel opens e.Interpreter now, in the caller's mount
// namespace, and uses that file for every later match.
func Register(dir string, e Entry) error {
	s, err := e.RegisterString()
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "register"), s); err != nil {
		return fmt.Errorf("registering binfmt_misc entry %s: %w", e.Name, err)
	}
	return nil
}

// Unregister removes the entry name under dir (an error matching
// fs.ErrNotExist when there is none).
func Unregister(dir, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, name), "-1"); err != nil {
		return fmt.Errorf("unregistering binfmt_misc entry %s: %w", name, err)
	}
	return nil
}

// writeFile writes s to an existing file in one write, as binfmt_misc's
// files want.
func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(s))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkName refuses names the kernel refuses or that are not entries.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || name == "register" || name == "status" || strings.ContainsAny(name, "/:\n") {
		return fmt.Errorf("invalid binfmt_misc entry name %q", name)
	}
	return nil
}

// maxRegister is the longest string the kernel accepts in register
// (MAX_REGISTER_LENGTH).
const maxRegister = 1920

// RegisterString returns the line to write to the register file for e:
// ":name:M:offset:magic:mask:interpreter:flags", every magic and mask
// byte written \xNN.
func (e Entry) RegisterString() (string, error) {
	if err := checkName(e.Name); err != nil {
		return "", err
	}
	switch {
	case e.Extension != "":
		return "", fmt.Errorf("binfmt_misc entry %s: only magic entries can be registered", e.Name)
	case len(e.Magic) == 0:
		return "", fmt.Errorf("binfmt_misc entry %s: no magic", e.Name)
	case len(e.Mask) > 0 && len(e.Mask) != len(e.Magic):
		return "", fmt.Errorf("binfmt_misc entry %s: mask of %d bytes for a magic of %d", e.Name, len(e.Mask), len(e.Magic))
	case e.Offset < 0 || e.Offset+len(e.Magic) > headerBufLen:
		return "", fmt.Errorf("binfmt_misc entry %s: offset %d and %d magic bytes go past the kernel's %d", e.Name, e.Offset, len(e.Magic), headerBufLen)
	case !filepath.IsAbs(e.Interpreter) || strings.ContainsAny(e.Interpreter, ":\n"):
		return "", fmt.Errorf("binfmt_misc entry %s: interpreter %q is not an absolute path without ':'", e.Name, e.Interpreter)
	}
	for _, f := range e.Flags {
		if !strings.ContainsRune("POCF", f) {
			return "", fmt.Errorf("binfmt_misc entry %s: unknown flag %q", e.Name, f)
		}
	}
	esc := func(b []byte) string {
		var s strings.Builder
		for _, c := range b {
			fmt.Fprintf(&s, `\x%02x`, c)
		}
		return s.String()
	}
	s := fmt.Sprintf(":%s:M:%d:%s:%s:%s:%s", e.Name, e.Offset, esc(e.Magic), esc(e.Mask), e.Interpreter, e.Flags)
	if len(s) > maxRegister {
		return "", fmt.Errorf("binfmt_misc entry %s: %d bytes to register, more than the kernel's %d", e.Name, len(s), maxRegister)
	}
	return s, nil
}

// ParseConf parses one rule of a binfmt.d file (systemd-binfmt's format,
// which Debian's qemu-user-static ships in /usr/lib/binfmt.d/qemu-*.conf):
// ":name:type:offset:magic:mask:interpreter:flags", the first character
// being the delimiter and \xNN an escaped byte in magic and mask.
func ParseConf(line string) (Entry, error) {
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return Entry{}, errors.New("empty binfmt rule")
	}
	fields := strings.Split(line[1:], line[:1])
	if len(fields) != 7 {
		return Entry{}, fmt.Errorf("binfmt rule %q: %d fields, want 7 (name:type:offset:magic:mask:interpreter:flags)", line, len(fields))
	}
	e := Entry{Name: fields[0], Interpreter: fields[5], Flags: fields[6]}
	if err := checkName(e.Name); err != nil {
		return Entry{}, fmt.Errorf("binfmt rule %q: %w", line, err)
	}
	magic, err := unescape(fields[3])
	if err != nil {
		return Entry{}, fmt.Errorf("binfmt rule %q: magic: %w", line, err)
	}
	mask, err := unescape(fields[4])
	if err != nil {
		return Entry{}, fmt.Errorf("binfmt rule %q: mask: %w", line, err)
	}
	switch fields[1] {
	case "M":
		e.Magic, e.Mask = magic, mask
		if fields[2] != "" {
			if e.Offset, err = strconv.Atoi(fields[2]); err != nil || e.Offset < 0 {
				return Entry{}, fmt.Errorf("binfmt rule %q: offset %q", line, fields[2])
			}
		}
		if len(mask) > 0 && len(mask) != len(magic) {
			return Entry{}, fmt.Errorf("binfmt rule %q: mask of %d bytes for a magic of %d", line, len(mask), len(magic))
		}
	case "E":
		e.Extension = string(magic)
	default:
		return Entry{}, fmt.Errorf("binfmt rule %q: type %q is neither M nor E", line, fields[1])
	}
	return e, nil
}

// unescape decodes the kernel's \xNN escapes (string_unescape with
// UNESCAPE_HEX); other bytes stand for themselves.
func unescape(s string) ([]byte, error) {
	var out bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == 'x' {
			if i+4 > len(s) {
				return nil, fmt.Errorf("short escape at %d", i)
			}
			b, err := hex.DecodeString(s[i+2 : i+4])
			if err != nil {
				return nil, fmt.Errorf("escape %q: %w", s[i:i+4], err)
			}
			out.Write(b)
			i += 3
			continue
		}
		out.WriteByte(s[i])
	}
	return out.Bytes(), nil
}

// DebianConfDir holds Debian's binfmt.d rules (qemu-user-static's among them).
const DebianConfDir = "/usr/lib/binfmt.d"

// qemuArch maps a GOARCH to QEMU's name for its user-mode emulator
// (qemu-<name>-static, /usr/lib/binfmt.d/qemu-<name>.conf).
var qemuArch = map[string]string{
	"386":      "i386",
	"amd64":    "x86_64",
	"arm":      "arm",
	"arm64":    "aarch64",
	"loong64":  "loongarch64",
	"mips":     "mips",
	"mipsle":   "mipsel",
	"mips64":   "mips64",
	"mips64le": "mips64el",
	"ppc64":    "ppc64",
	"ppc64le":  "ppc64le",
	"riscv64":  "riscv64",
	"s390x":    "s390x",
}

// QEMUArch returns QEMU's name for p's architecture (aarch64 for arm64).
func QEMUArch(p v1.Platform) (string, error) {
	if _, err := elfFor(p); err != nil {
		return "", err
	}
	a, ok := qemuArch[p.Architecture]
	if !ok {
		return "", fmt.Errorf("platform %s: QEMU's name for %s is not known", PlatformString(p), p.Architecture)
	}
	return a, nil
}

// QEMUConf reads QEMU's rule for p from confDir (DebianConfDir:
// qemu-<arch>.conf from Debian's qemu-user-static), checks that it serves
// p's executables, and returns it with the F flag added.
func QEMUConf(confDir string, p v1.Platform) (Entry, error) {
	arch, err := QEMUArch(p)
	if err != nil {
		return Entry{}, err
	}
	path := filepath.Join(confDir, "qemu-"+arch+".conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return Entry{}, fmt.Errorf("reading QEMU's binfmt rule for %s (Debian's qemu-user-static; hack/deps.sh installs it): %w", PlatformString(p), err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		e, err := ParseConf(l)
		if err != nil {
			return Entry{}, fmt.Errorf("%s: %w", path, err)
		}
		if !e.Serves(p) {
			return Entry{}, fmt.Errorf("%s: rule %s does not match ELF executables of %s", path, e.Name, PlatformString(p))
		}
		if !strings.ContainsRune(e.Flags, fixBinary) {
			e.Flags += string(fixBinary)
		}
		e.Enabled = true
		return e, nil
	}
	return Entry{}, fmt.Errorf("%s: no rule", path)
}
