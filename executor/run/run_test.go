package run

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	Init()
	code := m.Run()
	if attackBin.dir != "" {
		os.RemoveAll(attackBin.dir)
	}
	os.Exit(code)
}

// newRoot returns a root filesystem in a temporary directory holding busybox at
// /bin/busybox, its applets as symlinks in /bin, and /tmp; nothing else (no /etc, /proc,
// /dev or /sys), unless more names are given: directories end in "/", others are files
// with their name as content.
func newRoot(t *testing.T, more ...string) string {
	t.Helper()
	return newRootIn(t, t.TempDir(), more...)
}

// newRootIn is newRoot, made in dir.
func newRootIn(t *testing.T, dir string, more ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("finding busybox (apt-get install busybox-static): %v", err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("listing busybox applets: %v", err)
	}
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range more {
		p := filepath.Join(root, m)
		if strings.HasSuffix(m, "/") {
			err = os.MkdirAll(p, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			err = os.WriteFile(p, []byte(m), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// exitCode returns the code of an *ExitError, 0 for nil, and -1 for other errors.
func exitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	}
	return -1
}

func TestExitError_Error(t *testing.T) {
	for _, tc := range []struct {
		err  *ExitError
		want string
	}{
		{&ExitError{Code: 3}, "exit code 3"},
		{&ExitError{Code: 137, Signal: 9}, "exit code 137 (killed by signal killed)"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	root := t.TempDir()
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{
		{"usr/bin/tool", 0o755},
		{"usr/bin/plain", 0o644},
		{"opt/real", 0o755},
		{"work/script", 0o755},
	} {
		p := filepath.Join(root, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	// Absolute symlinks resolve inside the root: /opt/real does not exist on the host.
	if err := os.Symlink("/opt/real", filepath.Join(root, "usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent", filepath.Join(root, "usr/bin/dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/local/bin/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, path string
		want             string // empty: ErrNotFound
	}{
		{"in PATH", "tool", "/bin:/usr/bin", "/usr/bin/tool"},
		{"first wins", "tool", "/usr/bin:/usr/../usr/bin", "/usr/bin/tool"},
		{"not executable", "plain", "/usr/bin", ""},
		{"symlink within root", "link", "/usr/bin", "/usr/bin/link"},
		{"dangling symlink", "dangling", "/usr/bin", ""},
		{"directory", "dir", "/usr/local/bin", ""},
		{"missing", "nope", "/usr/bin", ""},
		{"relative PATH entries ignored", "tool", "usr/bin:.", ""},
		{"absolute", "/usr/bin/tool", "", "/usr/bin/tool"},
		{"relative to dir", "./script", "", "/work/script"},
		{"empty", "", "/usr/bin", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lookPath(root, tc.file, "/work", tc.path)
			if tc.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("lookPath(%q) = %q, %v; want ErrNotFound", tc.file, got, err)
				}
				if !strings.Contains(err.Error(), `"`+tc.file+`"`) {
					t.Errorf("error %q does not name %q", err, tc.file)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("lookPath(%q) = %q, %v; want %q", tc.file, got, err, tc.want)
			}
		})
	}
}

func TestWithPath(t *testing.T) {
	env := []string{"A=1"}
	got := withPath(env)
	if want := "A=1 PATH=" + DefaultPath; strings.Join(got, " ") != want {
		t.Errorf("withPath = %q, want %q", got, want)
	}
	if len(env) != 1 {
		t.Errorf("withPath changed its argument: %q", env)
	}
	env = []string{"PATH=/x", "B=2"}
	if got := withPath(env); strings.Join(got, " ") != "PATH=/x B=2" {
		t.Errorf("withPath = %q, want it unchanged", got)
	}
}
