package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/executor/result"
)

// canary stands for a secret the repository must not be able to read: it
// is in the executor's environment (as GIT_PASSWORD is in a pod) and in
// files outside the build context.
const canary = "c4nary-s3cret-7f3a9"

// outsideContext returns a build context directory and, beside it (outside
// it), a file holding the canary as a line the Dockerfile parser would
// quote back ("unknown instruction: ...").
func outsideContext(t *testing.T) (ctxDir, outsideFile string) {
	t.Helper()
	top := t.TempDir()
	ctxDir = filepath.Join(top, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	outsideFile = filepath.Join(top, "secret")
	if err := os.WriteFile(outsideFile, []byte("FROM scratch\n"+canary+" "+canary+"\n*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return ctxDir, outsideFile
}

// assertNoCanary fails when s holds the canary (in any case).
func assertNoCanary(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(strings.ToLower(s), strings.ToLower(canary)) {
		t.Errorf("the canary secret reached %s:\n%s", what, s)
	}
}

// A Dockerfile or ignore file that is a symlink is resolved inside the
// build context, never out of it: a repository that links its Dockerfile
// to /proc/self/environ, to ../secret or to an absolute path outside the
// context gets an error naming its Dockerfile, and nothing of the file
// it pointed at reaches the log or the result.
func TestExecute_dockerfileSymlinkStaysInContext(t *testing.T) {
	t.Setenv("GIT_PASSWORD", canary)
	for _, tc := range []struct {
		name   string
		link   string // which context file is the symlink
		target func(outside string) string
		want   string // what the failure message must name
	}{
		{"Dockerfile to /proc/self/environ", "Dockerfile", func(string) string { return "/proc/self/environ" }, "Dockerfile"},
		{"Dockerfile to ../secret", "Dockerfile", func(string) string { return "../secret" }, "Dockerfile"},
		{"Dockerfile to an absolute path outside", "Dockerfile", func(o string) string { return o }, "Dockerfile"},
		{".dockerignore to ../secret", ".dockerignore", func(string) string { return "../secret" }, ".dockerignore"},
		{".dockerignore to /proc/self/environ", ".dockerignore", func(string) string { return "/proc/self/environ" }, ".dockerignore"},
		{"Dockerfile.dockerignore to an absolute path outside", "Dockerfile.dockerignore", func(o string) string { return o }, "Dockerfile.dockerignore"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctxDir, outside := outsideContext(t)
			if tc.link != "Dockerfile" {
				if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\nCOPY a.txt /a.txt\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(tc.target(outside), filepath.Join(ctxDir, tc.link)); err != nil {
				t.Fatal(err)
			}
			b := runExecutor(t, "--context=dir://"+ctxDir, "--no-push")
			if b.exit == 0 || b.res.Success || b.res.Failure == nil {
				t.Fatalf("the build succeeded (exit %d); want it refused; log:\n%s", b.exit, b.log)
			}
			if !strings.Contains(b.res.Failure.Message, tc.want) {
				t.Errorf("message %q does not name %s", b.res.Failure.Message, tc.want)
			}
			t.Logf("message: %s", b.res.Failure.Message)
			assertNoCanary(t, "the log", b.log)
			assertNoCanary(t, "the result", b.resRaw)
		})
	}
}

// A symlink that stays inside the context is followed, as BuildKit follows
// it (an absolute target is taken from the context's root).
func TestExecute_dockerfileSymlinkInsideContext(t *testing.T) {
	for _, target := range []string{"build/Dockerfile.real", "/build/Dockerfile.real", "build/../build/Dockerfile.real"} {
		t.Run(target, func(t *testing.T) {
			ctxDir, _ := outsideContext(t)
			if err := os.Mkdir(filepath.Join(ctxDir, "build"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ctxDir, "build", "Dockerfile.real"), []byte("FROM scratch\nCOPY a.txt /a.txt\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(ctxDir, "Dockerfile")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/build/ignore", filepath.Join(ctxDir, ".dockerignore")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ctxDir, "build", "ignore"), []byte("b.txt\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			b := runExecutor(t, "--context=dir://"+ctxDir, "--no-push")
			if b.exit != 0 || !b.res.Success {
				t.Fatalf("exit %d, %s; log:\n%s", b.exit, b.resRaw, b.log)
			}
		})
	}
}

// A Dockerfile that is a FIFO or a device is refused without being opened
// for reading (which would block, or read the device), and one larger
// than BuildKit's limit is refused without being read whole.
func TestExecute_dockerfileNotRegular(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, p string)
		want string
	}{
		{"fifo", func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"symlink to a device", func(t *testing.T, p string) {
			if err := os.Symlink("/dev/zero", p); err != nil {
				t.Fatal(err)
			}
			// The context's own dev/zero, a device node: still refused.
			if err := os.Mkdir(filepath.Join(filepath.Dir(p), "dev"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mknod(filepath.Join(filepath.Dir(p), "dev", "zero"), syscall.S_IFCHR|0o666, 1<<8|5); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"too large", func(t *testing.T, p string) {
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("FROM scratch\n"); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(64 << 20); err != nil {
				t.Fatal(err)
			}
		}, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctxDir, _ := outsideContext(t)
			tc.make(t, filepath.Join(ctxDir, "Dockerfile"))
			done := make(chan buildResult, 1)
			go func() { done <- runExecutor(t, "--context=dir://"+ctxDir, "--no-push") }()
			var b buildResult
			select {
			case b = <-done:
			case <-time.After(20 * time.Second):
				// Unblock the reader so the build ends, then fail.
				if f, err := os.OpenFile(filepath.Join(ctxDir, "Dockerfile"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				<-done
				t.Fatal("reading the Dockerfile hung")
			}
			if b.exit == 0 || b.res.Failure == nil || b.res.Failure.Reason != result.ReasonDockerfileInvalid {
				t.Fatalf("exit %d, %s; want a DockerfileInvalid failure", b.exit, b.resRaw)
			}
			if !strings.Contains(b.res.Failure.Message, tc.want) || !strings.Contains(b.res.Failure.Message, "Dockerfile") {
				t.Errorf("message %q does not say the Dockerfile is %s", b.res.Failure.Message, tc.want)
			}
		})
	}
}
