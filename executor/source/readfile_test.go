package source

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// ReadFile reads inside the root whatever the repository links where, and
// reads regular files only, up to a limit. Its errors name the file asked
// for, never the content of anything.
func TestReadFile(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "ctx")
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(top, "outside"), "SECRET outside")
	write(filepath.Join(root, "Dockerfile"), "FROM scratch\n")
	write(filepath.Join(root, "sub", "real"), "FROM real\n")
	write(filepath.Join(root, "outside"), "FROM in-context outside\n")
	link("sub/real", "rel")
	link("/sub/real", "abs")
	link("../outside", "dotdot")              // resolves to the context's own /outside
	link(filepath.Join(top, "outside"), "up") // resolves to <root><top>/outside: nothing
	link("/proc/self/environ", "environ")
	link(top, "topdir")
	link("loop", "loop")
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	link("/dev/null", "null")
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(root, "dev", "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, want, wantErr string
		notExist            bool
	}{
		{name: "Dockerfile", want: "FROM scratch\n"},
		{name: "./sub/../Dockerfile", want: "FROM scratch\n"},
		{name: "rel", want: "FROM real\n"},
		{name: "abs", want: "FROM real\n"},
		{name: "dotdot", want: "FROM in-context outside\n"},
		{name: "../../outside", want: "FROM in-context outside\n"},
		{name: "missing", wantErr: "reading missing: no such file or directory", notExist: true},
		{name: "up", wantErr: "reading up: it leads through a symlink to " + filepath.Join(top, "outside") + ", which does not exist in the build context"},
		{name: "environ", wantErr: "reading environ: it leads through a symlink to /proc/self/environ, which does not exist"},
		{name: "topdir/outside", wantErr: "reading topdir/outside: it leads through a symlink to " + filepath.Join(top, "outside")},
		{name: "loop", wantErr: "reading loop: too many levels of symbolic links"},
		{name: "fifo", wantErr: "reading fifo: not a regular file (a FIFO)"},
		{name: "null", wantErr: "reading null: not a regular file (a character device)"},
		{name: "sub", wantErr: "reading sub: not a regular file (a directory)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadFile(root, tc.name)
			if tc.wantErr == "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("got %q, %v; want the error %q…", got, err, tc.wantErr)
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v, want %v", err, !tc.notExist, tc.notExist)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the error quotes a file's content: %v", err)
			}
		})
	}

	if _, err := readFileLimit(root, "Dockerfile", 12); err == nil || err.Error() != "reading Dockerfile: its size, 13 bytes, exceeds the maximum allowed size of 12 bytes" {
		t.Errorf("over the limit: %v", err)
	}
	// procfs reports size 0: the read itself is bounded.
	if _, err := readFileLimit("/", "/proc/self/status", 12); err == nil || err.Error() != "reading /proc/self/status: it exceeds the maximum allowed size of 12 bytes" {
		t.Errorf("over the limit, size unknown: %v", err)
	}
}

// An ignore file that is a symlink leading out of the context is an
// error naming it, not a missing ignore file (which would send what it
// excludes); one linked inside the context is used.
func TestOpen_ignoreFileSymlink(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "ctx")
	if err := os.MkdirAll(filepath.Join(root, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "ignore"), []byte("SECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "conf", "ignore"), []byte("*.log\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := os.Symlink("../ignore", filepath.Join(root, "Dockerfile.dockerignore")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "Dockerfile"); err == nil || !strings.Contains(err.Error(), "reading Dockerfile.dockerignore: it leads through a symlink to /ignore") {
		t.Errorf("Open: %v; want the symlink refused", err)
	}

	if err := os.Remove(filepath.Join(root, "Dockerfile.dockerignore")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/conf/ignore", filepath.Join(root, ".dockerignore")); err != nil {
		t.Fatal(err)
	}
	c, err := Open(root, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Patterns) != 1 || c.Patterns[0] != "*.log" {
		t.Errorf("patterns %q, want those of conf/ignore", c.Patterns)
	}
}
