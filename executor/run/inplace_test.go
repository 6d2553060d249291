package run

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostSh returns the host's shell, for InPlace tests.
func hostSh(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skipf("no /bin/sh on the host: %v", err)
	}
	return "/bin/sh"
}

func TestInPlace_Run_output(t *testing.T) {
	dir := t.TempDir()
	stdout, stderr, err := runSh(t, InPlace(), "/", "echo out; echo err >&2; pwd", func(s *Spec) {
		s.Args[0] = hostSh(t)
		s.Dir = dir
		s.Env = []string{"PATH=/usr/bin:/bin"}
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := "out\n" + dir + "\n"; stdout != want || stderr != "err\n" {
		t.Errorf("stdout %q, stderr %q; want %q, %q", stdout, stderr, want, "err\n")
	}
}

func TestInPlace_Run_exitStatus(t *testing.T) {
	sh := hostSh(t)
	for script, want := range map[string]int{"true": 0, "exit 4": 4, "kill -KILL $$": 137} {
		t.Run(script, func(t *testing.T) {
			_, _, err := runSh(t, InPlace(), "", script, func(s *Spec) { s.Args[0] = sh })
			if got := exitCode(err); got != want {
				t.Errorf("Run: %v, want exit code %d", err, want)
			}
		})
	}
}

func TestInPlace_Run_pathAndEnv(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"$GREETING from $0\"\n"
	if err := os.WriteFile(filepath.Join(dir, "greet"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err := InPlace().Run(context.Background(), Spec{
		Args:   []string{"greet"},
		Env:    []string{"PATH=/nonexistent:" + dir, "GREETING=hi"},
		Stdout: &out,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := "hi from " + dir + "/greet\n"; out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
	err = InPlace().Run(context.Background(), Spec{Args: []string{"greet"}, Env: []string{"PATH=/nonexistent"}})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"greet"`) {
		t.Errorf("Run without greet in PATH: %v, want ErrNotFound naming it", err)
	}
}

func TestInPlace_Run_credentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	stdout, stderr, err := runSh(t, InPlace(), "/", "echo $(id -u) $(id -g) $(id -G)", func(s *Spec) {
		s.Args[0] = hostSh(t)
		s.Env = []string{"PATH=/usr/bin:/bin"}
		s.UID, s.GID, s.Groups = 65534, 65533, []uint32{7}
	})
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	if want := "65534 65533 65533 7"; strings.TrimSpace(stdout) != want {
		t.Errorf("ids %q, want %q", stdout, want)
	}
}

func TestInPlace_Run_rejects(t *testing.T) {
	dir := t.TempDir()
	for name, s := range map[string]Spec{
		"root":        {Root: dir, Args: []string{"true"}},
		"no args":     {},
		"missing dir": {Args: []string{"true"}, Dir: filepath.Join(dir, "missing")},
	} {
		t.Run(name, func(t *testing.T) {
			if err := InPlace().Run(context.Background(), s); err == nil || exitCode(err) != -1 {
				t.Errorf("Run: %v, want an error", err)
			}
		})
	}
}

func TestInPlace_Run_cancel(t *testing.T) {
	sh := hostSh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// The background sleep holds stdout: Run must not wait for it.
	var out strings.Builder
	err := InPlace().Run(ctx, Spec{Args: []string{sh, "-c", "sleep 100 & sleep 100"}, Stdout: &out})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v", d)
	}
}

func TestInPlace_Run_backgroundHoldsOutput(t *testing.T) {
	sh := hostSh(t)
	start := time.Now()
	var out strings.Builder
	err := InPlace().Run(context.Background(), Spec{Args: []string{sh, "-c", "sleep 30 & echo done"}, Stdout: &out})
	if err != nil || out.String() != "done\n" {
		t.Errorf("Run: %q, %v; want %q, nil", out.String(), err, "done\n")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v: it waited for the background process", d)
	}
}
