package binfmt

import (
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// debianRules are rules of Debian 12's qemu-user-static
// (/usr/lib/binfmt.d/qemu-*.conf), an independent source to check the
// ELF table and the matching against; qemu-x86_64-like is written the same
// way (Debian ships no x86_64 rule for amd64 machines).
var debianRules = map[string]string{
	"qemu-aarch64":     `:qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF`,
	"qemu-arm":         `:qemu-arm:M::\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/arm-binfmt-P:OPF`,
	"qemu-armeb":       `:qemu-armeb:M::\x7f\x45\x4c\x46\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff:/usr/libexec/qemu-binfmt/armeb-binfmt-P:OPF`,
	"qemu-riscv64":     `:qemu-riscv64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/riscv64-binfmt-P:OPF`,
	"qemu-s390x":       `:qemu-s390x:M::\x7f\x45\x4c\x46\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16:\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff:/usr/libexec/qemu-binfmt/s390x-binfmt-P:OPF`,
	"qemu-ppc64le":     `:qemu-ppc64le:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00:\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00:/usr/libexec/qemu-binfmt/ppc64le-binfmt-P:OPF`,
	"qemu-mips64el":    `:qemu-mips64el:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/mips64el-binfmt-P:OPF`,
	"qemu-mipsn32el":   `:qemu-mipsn32el:M::\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00:/usr/libexec/qemu-binfmt/mipsn32el-binfmt-P:OPF`,
	"qemu-x86_64-like": `:qemu-x86_64-like:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-x86_64-static:F`,
	"python3.11":       `:python3.11:M::\xa7\x0d\x0d\x0a::/usr/bin/python3.11:`,
}

func platform(s string) v1.Platform {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		panic(err)
	}
	return *p
}

func mustConf(t *testing.T, name string) Entry {
	t.Helper()
	e, err := ParseConf(debianRules[name])
	if err != nil {
		t.Fatal(err)
	}
	e.Enabled = true
	return e
}

// entryFile is an entry as the kernel prints it (fs/binfmt_misc.c, entry_status).
func entryFile(e Entry) string {
	var s strings.Builder
	if e.Enabled {
		s.WriteString("enabled\n")
	} else {
		s.WriteString("disabled\n")
	}
	fmt.Fprintf(&s, "interpreter %s\nflags: %s\n", e.Interpreter, e.Flags)
	if e.Extension != "" {
		fmt.Fprintf(&s, "extension .%s\n", e.Extension)
		return s.String()
	}
	fmt.Fprintf(&s, "offset %d\nmagic %s\n", e.Offset, hex.EncodeToString(e.Magic))
	if len(e.Mask) > 0 {
		fmt.Fprintf(&s, "mask %s\n", hex.EncodeToString(e.Mask))
	}
	return s.String()
}

// fakeDir is a directory shaped like a mounted binfmt_misc holding entries.
func fakeDir(t *testing.T, entries ...Entry) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"register": "", "status": "enabled\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range entries {
		if err := os.WriteFile(filepath.Join(dir, e.Name), []byte(entryFile(e)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The ELF table agrees with Debian's QEMU rules: each rule serves exactly
// the platforms of its emulator.
func TestFind_debianRules(t *testing.T) {
	platforms := []string{"linux/amd64", "linux/386", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5",
		"linux/riscv64", "linux/ppc64le", "linux/ppc64", "linux/s390x", "linux/mips64le", "linux/mips64", "linux/mipsle", "linux/loong64"}
	want := map[string][]string{
		"qemu-aarch64":     {"linux/arm64", "linux/arm64/v8"},
		"qemu-arm":         {"linux/arm/v5", "linux/arm/v6", "linux/arm/v7"},
		"qemu-armeb":       nil,
		"qemu-riscv64":     {"linux/riscv64"},
		"qemu-s390x":       {"linux/s390x"},
		"qemu-ppc64le":     {"linux/ppc64le"},
		"qemu-mips64el":    {"linux/mips64le"},
		"qemu-mipsn32el":   nil, // n32 is 32-bit ELF with an e_flags test
		"qemu-x86_64-like": {"linux/amd64"},
		"python3.11":       nil,
	}
	for name := range debianRules {
		t.Run(name, func(t *testing.T) {
			e := mustConf(t, name)
			dir := fakeDir(t, e)
			var got []string
			for _, p := range platforms {
				if h, err := Find(dir, platform(p)); err == nil {
					if h.Name != name {
						t.Errorf("Find(%s) = %q, want %q", p, h.Name, name)
					}
					got = append(got, p)
				}
			}
			sort.Strings(got)
			if diff := cmp.Diff(want[name], got); diff != "" {
				t.Errorf("platforms served (-want +got):\n%s", diff)
			}
		})
	}
}

// The rules installed on this machine, when there are any, agree too.
func TestQEMUConf_installed(t *testing.T) {
	for _, p := range []string{"linux/arm64", "linux/arm/v7", "linux/riscv64", "linux/ppc64le", "linux/s390x", "linux/mips64le"} {
		e, err := QEMUConf(DebianConfDir, platform(p))
		if errors.Is(err, fs.ErrNotExist) {
			t.Skipf("no Debian qemu-user-static rules in %s: %v", DebianConfDir, err)
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !strings.Contains(e.Flags, "F") {
			t.Errorf("%s: flags %q without F", p, e.Flags)
		}
		if _, err := Find(fakeDir(t, e), platform(p)); err != nil {
			t.Errorf("%s: Find with Debian's rule %s: %v", p, e.Name, err)
		}
	}
}

func TestFind_errors(t *testing.T) {
	arm64 := platform("linux/arm64")
	good := mustConf(t, "qemu-aarch64")
	disabled := good
	disabled.Enabled = false
	noF := good
	noF.Flags = "OC"
	noF.Interpreter = "/usr/bin/qemu-aarch64-static"
	ext := Entry{Name: "aarch64-ext", Enabled: true, Interpreter: "/x", Flags: "F", Extension: "arm64"}
	// Matches static executables only (mask ff on e_type): not every executable.
	strict := good
	strict.Name = "exec-only"
	strict.Mask = append([]byte(nil), good.Mask...)
	strict.Mask[16] = 0xff
	// Tests e_flags, which differ between executables.
	flags := good
	flags.Name = "eflags"
	flags.Magic = append(append([]byte(nil), good.Magic...), make([]byte, 32)...)
	flags.Mask = append(append([]byte(nil), good.Mask...), make([]byte, 32)...)
	flags.Mask[50] = 0x01

	statusDir := fakeDir(t, good)
	if err := os.WriteFile(filepath.Join(statusDir, "status"), []byte("disabled\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		dir  string
		p    v1.Platform
		want string
	}{
		{"not mounted", t.TempDir(), arm64, "binfmt_misc is not mounted at "},
		{"status disabled", statusDir, arm64, "binfmt_misc at " + statusDir + " is disabled"},
		{"no handler", fakeDir(t, mustConf(t, "qemu-arm"), mustConf(t, "python3.11")), arm64,
			"no binfmt_misc handler under %DIR% matches ELF executables of linux/arm64 (EM_AARCH64, 64-bit little-endian)"},
		{"no handler, big-endian", fakeDir(t), platform("linux/s390x"), "ELF executables of linux/s390x (EM_S390, 64-bit big-endian)"},
		{"disabled", fakeDir(t, disabled), arm64, `the binfmt_misc handler "qemu-aarch64" for ELF executables of linux/arm64 (EM_AARCH64, 64-bit little-endian) is disabled`},
		{"without F", fakeDir(t, noF), arm64,
			`the binfmt_misc handler "qemu-aarch64" (interpreter /usr/bin/qemu-aarch64-static, flags "OC") lacks the F (fix-binary) flag, so the kernel would open /usr/bin/qemu-aarch64-static inside the build's root filesystem, where it does not exist`},
		{"extension entries never match", fakeDir(t, ext), arm64, "no binfmt_misc handler"},
		{"matches only static executables", fakeDir(t, strict), arm64, `the binfmt_misc handler "exec-only" matches only some ELF executables of linux/arm64`},
		{"tests e_flags", fakeDir(t, flags), arm64, "no binfmt_misc handler"},
		{"several, one without F", fakeDir(t, good, func() Entry { e := noF; e.Name = "other"; return e }()), arm64,
			`2 binfmt_misc handlers match ELF executables of linux/arm64 and the kernel uses the one registered last`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Find(tc.dir, tc.p)
			if err == nil {
				t.Fatalf("Find = %+v, want an error", h)
			}
			want := strings.ReplaceAll(tc.want, "%DIR%", tc.dir)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q\ndoes not say %q", err, want)
			}
			var nse *NotServedError
			if !errors.As(err, &nse) {
				t.Fatalf("error %T, want *NotServedError", err)
			}
			fix := fmt.Sprintf("register QEMU for %[1]s with the F (fix-binary) flag on the node, e.g. with the Slipway chart's binfmt DaemonSet (--set binfmt.enabled=true) or `docker run --privileged tonistiigi/binfmt --install %[1]s`", tc.p.Architecture)
			if !strings.HasSuffix(err.Error(), fix) {
				t.Errorf("error %q\ndoes not end with the fix %q", err, fix)
			}
		})
	}
}

func TestFind(t *testing.T) {
	good := mustConf(t, "qemu-aarch64")
	other := good
	other.Name = "qemu-aarch64-other"
	arm := mustConf(t, "qemu-arm")
	for _, tc := range []struct {
		name    string
		entries []Entry
		p       string
		want    []string // any of these names
	}{
		{"arm64", []Entry{good, arm, mustConf(t, "python3.11")}, "linux/arm64", []string{"qemu-aarch64"}},
		{"arm/v7", []Entry{good, arm}, "linux/arm/v7", []string{"qemu-arm"}},
		{"arm, no variant", []Entry{arm}, "linux/arm", []string{"qemu-arm"}},
		{"both with F", []Entry{good, other}, "linux/arm64", []string{"qemu-aarch64", "qemu-aarch64-other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Find(fakeDir(t, tc.entries...), platform(tc.p))
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, n := range tc.want {
				found = found || h.Name == n
			}
			if !found {
				t.Errorf("Find = %+v, want one of %q", h, tc.want)
			}
			var e Entry
			for _, x := range tc.entries {
				if x.Name == h.Name {
					e = x
				}
			}
			if h.Interpreter != e.Interpreter || h.Flags != e.Flags {
				t.Errorf("Find = %+v, want interpreter %s and flags %s", h, e.Interpreter, e.Flags)
			}
		})
	}
}

func TestFind_unknownPlatform(t *testing.T) {
	dir := fakeDir(t, mustConf(t, "qemu-aarch64"))
	for p, want := range map[string]string{
		"linux/sparc64":  `no ELF machine is known for architecture "sparc64"`,
		"windows/arm64":  "only linux executables can run through binfmt_misc",
		"linux/arm/v8.1": `unknown arm variant "v8.1"`,
	} {
		if _, err := Find(dir, platform(p)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Find(%s) = %v, want an error saying %q", p, err, want)
		}
	}
}

// The headers are the ELF identification Go's own linker writes: checked
// against this test binary, an ELF file of this machine.
func TestElfHeaders_thisBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tgt, err := elfFor(platform("linux/" + runtime.GOARCH))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != tgt.class || f.Data != tgt.data || f.Machine != tgt.machine {
		t.Errorf("this binary is %v %v %v; the table says %v", f.Class, f.Data, f.Machine, tgt)
	}
	raw, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	matched := false
	for _, h := range elfHeaders(tgt) {
		matched = matched || string(h) == string(raw[:knownHeaderLen])
	}
	if !matched {
		t.Errorf("no synthetic header equals this binary's first %d bytes %x", knownHeaderLen, raw[:knownHeaderLen])
	}
}

func TestNative(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the cases are for an amd64 machine, this is %s", runtime.GOARCH)
	}
	for p, want := range map[string]bool{
		"linux/amd64":    true,
		"linux/amd64/v1": true,
		"linux/386":      true,
		"linux/arm64":    false,
		"linux/arm/v7":   false,
		"linux/riscv64":  false,
		"windows/amd64":  false,
		"linux/amd64/v9": false,
	} {
		if got := Native(platform(p)); got != want {
			t.Errorf("Native(%s) = %v, want %v", p, got, want)
		}
	}
}

func TestParseConf_roundTrip(t *testing.T) {
	for name, line := range debianRules {
		e, err := ParseConf(line)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s, err := e.RegisterString()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := ParseConf(s)
		if err != nil {
			t.Fatalf("%s: parsing %q: %v", name, s, err)
		}
		if diff := cmp.Diff(e, again); diff != "" {
			t.Errorf("%s: RegisterString then ParseConf (-first +again):\n%s", name, diff)
		}
	}
	e := mustConf(t, "qemu-aarch64")
	if e.Offset != 0 || len(e.Magic) != 20 || e.Magic[18] != byte(elf.EM_AARCH64) || e.Mask[16] != 0xfe || e.Interpreter != "/usr/libexec/qemu-binfmt/aarch64-binfmt-P" || e.Flags != "OPF" {
		t.Errorf("ParseConf(qemu-aarch64) = %+v", e)
	}
}

func TestRegisterString_invalid(t *testing.T) {
	good := mustConf(t, "qemu-aarch64")
	for _, tc := range []struct {
		name string
		mod  func(*Entry)
		want string
	}{
		{"slash in name", func(e *Entry) { e.Name = "a/b" }, "invalid binfmt_misc entry name"},
		{"colon in name", func(e *Entry) { e.Name = "a:b" }, "invalid binfmt_misc entry name"},
		{"register", func(e *Entry) { e.Name = "register" }, "invalid binfmt_misc entry name"},
		{"relative interpreter", func(e *Entry) { e.Interpreter = "qemu" }, "not an absolute path"},
		{"colon in interpreter", func(e *Entry) { e.Interpreter = "/a:b" }, "not an absolute path"},
		{"unknown flag", func(e *Entry) { e.Flags = "FX" }, `unknown flag 'X'`},
		{"mask length", func(e *Entry) { e.Mask = e.Mask[:3] }, "mask of 3 bytes for a magic of 20"},
		{"past the buffer", func(e *Entry) { e.Offset = 250 }, "go past the kernel's 256"},
		{"extension", func(e *Entry) { e.Magic, e.Mask, e.Extension = nil, nil, "x" }, "only magic entries"},
	} {
		e := good
		tc.mod(&e)
		if _, err := e.RegisterString(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: RegisterString() error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseConf_invalid(t *testing.T) {
	for line, want := range map[string]string{
		`:x:M::\x7f:`:                 "5 fields, want 7",
		`:x:Q::\x7f::/i:F`:            `type "Q"`,
		`:x:M:-1:\x7f::/i:F`:          `offset "-1"`,
		`:x:M::\x7g::/i:F`:            "magic",
		`:x:M::\x7f\x45:\xff:/i:F`:    "mask of 1 bytes for a magic of 2",
		`:../x:M::\x7f\x45::/i:F`:     "invalid binfmt_misc entry name",
		`:x:M::\x7f\x4:\xff\xff:/i:F`: "short escape",
	} {
		if _, err := ParseConf(line); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConf(%q) error %v, want %q", line, err, want)
		}
	}
}

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       Entry
		err        string
	}{
		{"magic", "enabled\ninterpreter /q\nflags: POCF\noffset 2\nmagic 7f45\nmask ff00\n",
			Entry{Name: "magic", Enabled: true, Interpreter: "/q", Flags: "POCF", Offset: 2, Magic: []byte{0x7f, 0x45}, Mask: []byte{0xff, 0}}, ""},
		{"nomask", "disabled\ninterpreter /q\nflags: \noffset 0\nmagic 7f45\n",
			Entry{Name: "nomask", Interpreter: "/q", Magic: []byte{0x7f, 0x45}}, ""},
		{"ext", "enabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n",
			Entry{Name: "ext", Enabled: true, Interpreter: "/usr/bin/wine", Extension: "exe"}, ""},
		{"bad", "maybe\n", Entry{}, "neither enabled nor disabled"},
		{"badhex", "enabled\ninterpreter /q\nflags: \noffset 0\nmagic 7g\n", Entry{}, "magic 7g"},
		{"neither", "enabled\ninterpreter /q\nflags: \n", Entry{}, "neither a magic nor an extension"},
	} {
		got, err := parseEntry(tc.name, []byte(tc.file))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}
