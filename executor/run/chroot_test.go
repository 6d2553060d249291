package run

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// runSh runs script with busybox sh in root and returns its stdout, stderr and error.
func runSh(t *testing.T, r Runner, root, script string, edit ...func(*Spec)) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	s := Spec{
		Root:   root,
		Args:   []string{"sh", "-c", script},
		Env:    []string{"PATH=/bin"},
		Stdout: &stdout,
		Stderr: &stderr,
	}
	for _, e := range edit {
		e(&s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := r.Run(ctx, s)
	return stdout.String(), stderr.String(), err
}

func TestChroot_Run_output(t *testing.T) {
	root := newRoot(t)
	stdout, stderr, err := runSh(t, Chroot(), root, "echo out; echo err >&2; echo more")
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	if stdout != "out\nmore\n" || stderr != "err\n" {
		t.Errorf("stdout %q, stderr %q; want %q, %q", stdout, stderr, "out\nmore\n", "err\n")
	}
}

// signalWriter reports on first when its first write arrives.
type signalWriter struct {
	once  sync.Once
	first chan struct{}
	mu    sync.Mutex
	buf   bytes.Buffer
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.buf.Write(p)
}

func TestChroot_Run_streamsOutput(t *testing.T) {
	root := newRoot(t)
	w := &signalWriter{first: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		// The command waits for the test to see its first line before it goes on.
		done <- Chroot().Run(context.Background(), Spec{
			Root:   root,
			Args:   []string{"sh", "-c", "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second"},
			Env:    []string{"PATH=/bin"},
			Stdout: w,
		})
	}()
	select {
	case <-w.first:
	case err := <-done:
		t.Fatalf("Run returned before any output was seen: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no output while the command runs")
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := w.buf.String(); got != "first\nsecond\n" {
		t.Errorf("stdout %q, want %q", got, "first\nsecond\n")
	}
}

func TestChroot_Run_exitStatus(t *testing.T) {
	root := newRoot(t)
	for _, tc := range []struct {
		script string
		want   ExitError
	}{
		{"exit 0", ExitError{}},
		{"exit 3", ExitError{Code: 3}},
		{"exit 255", ExitError{Code: 255}},
		{"kill -KILL $$", ExitError{Code: 137, Signal: syscall.SIGKILL}},
		{"kill -TERM $$", ExitError{Code: 143, Signal: syscall.SIGTERM}},
	} {
		t.Run(tc.script, func(t *testing.T) {
			_, _, err := runSh(t, Chroot(), root, tc.script)
			var got ExitError
			var ee *ExitError
			if errors.As(err, &ee) {
				got = *ee
			} else if err != nil {
				t.Fatalf("Run: %v, want an *ExitError", err)
			}
			if got != tc.want {
				t.Errorf("Run: %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestChroot_Run_envAndPath(t *testing.T) {
	root := newRoot(t, "opt/tools/")
	// hello exists only in the root, behind an absolute symlink that resolves there.
	if err := os.WriteFile(filepath.Join(root, "opt/tools/hello.sh"), []byte("#!/bin/sh\necho hello \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/opt/tools/hello.sh", filepath.Join(root, "usr/local/bin/hello")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{
			name: "env",
			spec: Spec{Args: []string{"sh", "-c", "echo $FOO $PATH"}, Env: []string{"FOO=bar", "PATH=/nope:/bin"}},
			want: "bar /nope:/bin\n",
		},
		{
			name: "last duplicate wins",
			spec: Spec{Args: []string{"sh", "-c", "echo $FOO"}, Env: []string{"FOO=1", "PATH=/bin", "FOO=2"}},
			want: "2\n",
		},
		{
			name: "default PATH",
			spec: Spec{Args: []string{"hello", "world"}, Env: []string{"A=1"}},
			want: "hello world\n",
		},
		{
			name: "default PATH given to the command",
			spec: Spec{Args: []string{"/bin/sh", "-c", "echo $PATH"}},
			want: DefaultPath + "\n",
		},
		{
			name: "bytes that are not UTF-8",
			spec: Spec{Args: []string{"sh", "-c", `printf %s "$V$1" | wc -c`, "sh", "\xff"}, Env: []string{"PATH=/bin", "V=\xfe"}},
			want: "2\n",
		},
		{
			name: "PATH from env",
			spec: Spec{Args: []string{"hello.sh"}, Env: []string{"PATH=/opt/tools"}},
			want: "hello\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			s := tc.spec
			s.Root, s.Stdout = root, &out
			if err := Chroot().Run(context.Background(), s); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if out.String() != tc.want {
				t.Errorf("stdout %q, want %q", out.String(), tc.want)
			}
		})
	}
}

func TestChroot_Run_missingExecutable(t *testing.T) {
	root := newRoot(t)
	before := snapshot(t, root)
	err := Chroot().Run(context.Background(), Spec{Root: root, Args: []string{"frobnicate"}, Env: []string{"PATH=/bin"}})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"frobnicate"`) {
		t.Errorf("Run: %v, want ErrNotFound naming frobnicate", err)
	}
	if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
		t.Errorf("root changed (-before +after):\n%s", diff)
	}
}

func TestChroot_Run_workingDir(t *testing.T) {
	root := newRoot(t, "work/dir/")
	if err := os.Symlink("/work/dir", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{"": "/", "/": "/", "/work/dir": "/work/dir", "/link": "/work/dir"} {
		t.Run(dir, func(t *testing.T) {
			stdout, _, err := runSh(t, Chroot(), root, "pwd", func(s *Spec) { s.Dir = dir })
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if stdout != want+"\n" {
				t.Errorf("pwd = %q, want %q", stdout, want)
			}
		})
	}
	for _, dir := range []string{"/missing", "relative", "/bin/busybox"} {
		t.Run(dir, func(t *testing.T) {
			_, _, err := runSh(t, Chroot(), root, "pwd", func(s *Spec) { s.Dir = dir })
			if err == nil || exitCode(err) != -1 || !strings.Contains(err.Error(), dir) {
				t.Errorf("Run: %v, want an error naming %s", err, dir)
			}
		})
	}
}

func TestChroot_Run_credentials(t *testing.T) {
	root := newRoot(t)
	for _, tc := range []struct {
		uid, gid uint32
		groups   []uint32
		want     string
	}{
		{0, 0, nil, "0 0 0"},
		{1000, 1001, []uint32{10, 20}, "1000 1001 1001 10 20"},
		{65534, 65534, nil, "65534 65534 65534"},
	} {
		t.Run(strconv.Itoa(int(tc.uid)), func(t *testing.T) {
			stdout, stderr, err := runSh(t, Chroot(), root, "echo $(id -u) $(id -g) $(id -G)", func(s *Spec) {
				s.UID, s.GID, s.Groups = tc.uid, tc.gid, tc.groups
			})
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if strings.TrimSpace(stdout) != tc.want {
				t.Errorf("ids %q, want %q", stdout, tc.want)
			}
		})
	}
}

func TestChroot_Run_environment(t *testing.T) {
	root := newRoot(t)
	for _, tc := range []struct{ name, script, want string }{
		// PID 1 is the helper, its threads take a few more.
		{"new PID namespace", "test $$ -lt 20 && echo small", "small\n"},
		{"proc", "test -e /proc/self/exe && cat /proc/1/cmdline", "slipway-run\x00"},
		{"dev null", "echo x > /dev/null && wc -c < /dev/null", "0\n"},
		{"dev zero", "head -c 5 /dev/zero | wc -c", "5\n"},
		{"dev urandom", "head -c 7 /dev/urandom | wc -c", "7\n"},
		{"dev full", "echo x > /dev/full || echo refused", "refused\n"},
		{"dev fd", "ls /dev/fd/ >/dev/null && readlink /dev/stdout", "/proc/self/fd/1\n"},
		{"dev shm", "echo hi > /dev/shm/x && cat /dev/shm/x && stat -c %a /dev/shm", "hi\n1777\n"},
		{"dev owned by root", "stat -c %u:%g /dev /dev/shm && mkdir /dev/mine", "0:0\n0:0\n"},
		{"dev pts", "test -c /dev/pts/ptmx && readlink /dev/ptmx", "pts/ptmx\n"},
		{"sys read-only", "test -d /sys/kernel && touch /sys/x 2>/dev/null || echo ro", "ro\n"},
		{"resolv.conf", "cat /etc/resolv.conf > /dev/null && echo ok", "ok\n"},
		{"hosts read-only", "grep -q localhost /etc/hosts && (echo x >> /etc/hosts) 2>/dev/null || echo ro", "ro\n"},
		{"stdin", "cat", ""},
		{"umask", "umask", "0022\n"},
		{"orphans reaped", "(sleep 0.1 &); sleep 1; ps -o stat | grep Z || echo none", "none\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := runSh(t, Chroot(), root, tc.script)
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if stdout != tc.want {
				t.Errorf("stdout %q, want %q (stderr %q)", stdout, tc.want, stderr)
			}
		})
	}
}

func TestChroot_Run_writesLandInRoot(t *testing.T) {
	root := newRoot(t)
	if _, _, err := runSh(t, Chroot(), root, "mkdir -p /usr/share && echo data > /usr/share/out"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(root, "usr/share/out"))
	if err != nil || string(got) != "data\n" {
		t.Errorf("reading the written file: %q, %v", got, err)
	}
}

// entry is what a snapshot by stat sees of a path; atime and ctime are left out (reading
// changes the one, nothing can restore the other).
type entry struct {
	Mode     fs.FileMode
	UID, GID uint32
	Size     int64
	Mtime    syscall.Timespec
	Link     string
}

// snapshot returns an entry for every path in root, root itself included.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	m := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Size: st.Size, Mtime: st.Mtim}
		if fi.Mode()&fs.ModeSymlink != 0 {
			e.Link, _ = os.Readlink(p)
		}
		rel, _ := filepath.Rel(root, p)
		m[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return m
}

func TestChroot_Run_leavesRootUnchanged(t *testing.T) {
	// A root holding the mount points of the default mounts (/proc, /dev, /sys): without
	// them, Run leaves the ones it makes (TestChroot_Run_mountPointsStay).
	for _, tc := range []struct {
		name string
		more []string
	}{
		{"without etc", []string{"proc/", "dev/", "sys/"}},
		{"etc without hosts", []string{"etc/passwd", "proc/", "dev/", "sys/"}},
		{"full", []string{"etc/hosts", "etc/resolv.conf", "proc/", "dev/", "sys/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot(t, tc.more...)
			// Old times, so that a change within the clock's resolution would show.
			old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
			for _, d := range []string{".", "etc"} {
				if err := os.Chtimes(filepath.Join(root, d), old, old); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
			}
			before := snapshot(t, root)
			// The command sees the root's own times too.
			stdout, stderr, err := runSh(t, Chroot(), root, "stat -c %Y /")
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if want := strconv.FormatInt(old.Unix(), 10) + "\n"; stdout != want {
				t.Errorf("mtime of / seen by the command %q, want %q", stdout, want)
			}
			if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
				t.Errorf("root changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestChroot_Run_keepsCommandChanges(t *testing.T) {
	root := newRoot(t)
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	if err := os.Chtimes(root, old, old); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runSh(t, Chroot(), root, "mkdir -p /etc && echo x > /etc/motd && touch /new"); err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr)
	}
	var names []string
	for _, p := range []string{"etc", "etc/motd", "etc/hosts", "etc/resolv.conf", "new", "proc", "dev", "sys"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			names = append(names, p)
		}
	}
	// The mount points of the default mounts stay, as runc leaves them.
	if diff := cmp.Diff([]string{"etc", "etc/motd", "new", "proc", "dev", "sys"}, names); diff != "" {
		t.Errorf("entries in the root (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	if fi.ModTime().Equal(old) {
		t.Errorf("mtime of / is still %v; the command's change was undone", old)
	}
}

// mountsUnder returns the mount points under root in /proc/self/mountinfo.
func mountsUnder(t *testing.T, root string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == root || strings.HasPrefix(fields[4], root+"/")) {
			found = append(found, fields[4])
		}
	}
	return found
}

// descendants returns the PIDs of the processes below this one: once Run has returned,
// none of the step's may be left. (Their root, pivoted into, names no host path, so it
// cannot tell them apart.)
func descendants() []string {
	parent := map[string]string{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
				parent[d.Name()] = f[1]
			}
		}
	}
	self := strconv.Itoa(os.Getpid())
	var found []string
	for pid := range parent {
		for p := parent[pid]; p != "" && p != "0"; p = parent[p] {
			if p == self {
				found = append(found, pid)
				break
			}
		}
	}
	return found
}

func TestChroot_Run_leavesNothingMounted(t *testing.T) {
	root := newRoot(t)
	if _, _, err := runSh(t, Chroot(), root, "exit 1"); exitCode(err) != 1 {
		t.Fatalf("Run: %v, want exit code 1", err)
	}
	if m := mountsUnder(t, root); len(m) != 0 {
		t.Errorf("mounted after Run: %q", m)
	}
}

func TestChroot_Run_cancel(t *testing.T) {
	// With the default mounts' mount points, which Run would make and leave.
	root := newRoot(t, "proc/", "dev/", "sys/")
	before := snapshot(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	var out signalWriter
	out.first = make(chan struct{})
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- Chroot().Run(ctx, Spec{
			Root:   root,
			Args:   []string{"sh", "-c", "sleep 100 & echo started; sleep 100"},
			Env:    []string{"PATH=/bin"},
			Stdout: &out,
		})
	}()
	select {
	case <-out.first:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Run took %v after cancel", d)
	}
	if p := descendants(); len(p) != 0 {
		t.Errorf("processes left in the root: %v", p)
	}
	if m := mountsUnder(t, root); len(m) != 0 {
		t.Errorf("mounted after Run: %q", m)
	}
	if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
		t.Errorf("root changed (-before +after):\n%s", diff)
	}
}

func TestChroot_Run_concurrent(t *testing.T) {
	roots := []string{newRoot(t), newRoot(t), newRoot(t)}
	var wg sync.WaitGroup
	errs := make([]error, len(roots))
	outs := make([]string, len(roots))
	for i, root := range roots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			errs[i] = Chroot().Run(context.Background(), Spec{
				Root:   root,
				Args:   []string{"sh", "-c", "echo " + strconv.Itoa(i) + " > /id; sleep 0.3; cat /id; test $$ -lt 20 && echo small"},
				Env:    []string{"PATH=/bin"},
				Stdout: &out,
			})
			outs[i] = out.String()
		}()
	}
	wg.Wait()
	for i := range roots {
		if want := strconv.Itoa(i) + "\nsmall\n"; errs[i] != nil || outs[i] != want {
			t.Errorf("run %d: %q, %v; want %q", i, outs[i], errs[i], want)
		}
	}
}

func TestChroot_Run_badRoot(t *testing.T) {
	for _, root := range []string{"relative/root", "/nonexistent/root"} {
		err := Chroot().Run(context.Background(), Spec{Root: root, Args: []string{"true"}})
		if err == nil || !strings.Contains(err.Error(), root) {
			t.Errorf("Run in %s: %v, want an error naming it", root, err)
		}
	}
}

func TestChroot_Run_unusualRoot(t *testing.T) {
	t.Run("proc is a file", func(t *testing.T) {
		root := newRoot(t, "proc")
		before := snapshot(t, root)
		_, _, err := runSh(t, Chroot(), root, "true")
		if err == nil || !strings.Contains(err.Error(), "/proc") {
			t.Errorf("Run: %v, want an error naming /proc", err)
		}
		if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
			t.Errorf("root changed (-before +after):\n%s", diff)
		}
	})
	t.Run("hosts is a directory", func(t *testing.T) {
		root := newRoot(t, "etc/hosts/", "proc/", "dev/", "sys/")
		before := snapshot(t, root)
		if _, stderr, err := runSh(t, Chroot(), root, "test -d /etc/hosts && test -f /etc/resolv.conf"); err != nil {
			t.Errorf("Run: %v (stderr %q)", err, stderr)
		}
		if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
			t.Errorf("root changed (-before +after):\n%s", diff)
		}
	})
	t.Run("etc is a symlink", func(t *testing.T) {
		root := newRoot(t, "private/etc/", "proc/", "dev/", "sys/")
		if err := os.Symlink("/private/etc", filepath.Join(root, "etc")); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, root)
		if _, stderr, err := runSh(t, Chroot(), root, "grep -q localhost /private/etc/hosts"); err != nil {
			t.Errorf("Run: %v (stderr %q)", err, stderr)
		}
		if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
			t.Errorf("root changed (-before +after):\n%s", diff)
		}
	})
}
