package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// waitDelay bounds how long Run waits for the output pipes to close after the command
// exited (a background process it started may hold them) or after ctx is done.
const waitDelay = 2 * time.Second

// InPlace returns the Runner for the executor pod: the command runs directly on the
// host's (the container's) root filesystem, without namespaces. Spec.Root must be "/" or
// empty. The command runs in its own process group, which is killed when ctx is done.
//
// A step is hostile code beside the executor, so when the executor is PID 1 of its PID
// namespace (in a pod) nothing of a step outlives it: once the command is done, every other
// process of the namespace is killed (a daemon it left could otherwise change later steps'
// files, or serve the executor's own connections), and /etc/hosts, /etc/resolv.conf and
// /etc/hostname (the kubelet's, which no snapshot keeps) get back the content they had
// before the first step, as each RUN of a Docker build starts with its own. While a step
// runs, it can still change them under the executor's concurrent downloads: only TLS keeps
// those safe (the CA certificates are read before the first step).
//
// A step with Spec.Network NetworkNone runs in a network namespace of its own, with only
// lo, up: made alone where the executor may (CAP_SYS_ADMIN), else together with a user
// namespace mapping every ID the executor has to itself (so files keep their owners and
// the step its user), which needs no privilege where the kernel and the seccomp profile
// allow user namespaces (containerd's RuntimeDefault profile does not, without
// CAP_SYS_ADMIN). The step keeps the executor's capability bounding set. Where neither
// way works, Run fails and nothing of the step runs. It needs Init, as Chroot does.
func InPlace() Runner { return &inPlace{} }

type inPlace struct {
	once  sync.Once
	saved map[string][]byte // the files restored after each step, as before the first
	// netnsWays, for tests, replaces defaultNetnsWays.
	netnsWays []netnsWay
}

// networkFiles are restored after each in-place step.
var networkFiles = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

func (r *inPlace) Run(ctx context.Context, s Spec) error {
	if s.Root != "" && s.Root != "/" {
		return fmt.Errorf("checking root %s: the in-place runner runs in / only", s.Root)
	}
	if s.Hostname != "" {
		return fmt.Errorf("checking hostname: the in-place runner cannot name a step %q: it shares the pod's UTS namespace (build with --isolation=chroot)", s.Hostname)
	}
	r.once.Do(func() {
		r.saved = map[string][]byte{}
		for _, f := range networkFiles {
			if b, err := os.ReadFile(f); err == nil {
				r.saved[f] = b
			}
		}
	})
	err := r.run(ctx, s)
	return errors.Join(err, r.cleanUp())
}

// cleanUp kills what the step left running (when this process is PID 1) and restores the
// network files.
func (r *inPlace) cleanUp() error {
	var errs []error
	if os.Getpid() == 1 {
		if err := killOthers(); err != nil {
			errs = append(errs, err)
		}
	}
	for f, want := range r.saved {
		if got, err := os.ReadFile(f); err == nil && bytes.Equal(got, want) {
			continue
		}
		// Written in place: the kubelet's file is a bind mount, which a rename cannot replace.
		if err := writeInPlace(f, want); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s after the step: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// killOthers kills every process of this PID namespace but this one, until none is left, and
// reaps those that were reparented to it.
func killOthers() error {
	for range 20 {
		pids, err := otherProcesses()
		if err != nil {
			return fmt.Errorf("listing what the step left running: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
		for _, pid := range pids {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, syscall.WNOHANG, nil) // only ours: a step's orphans are
		}
	}
	return errors.New("killing what the step left running: processes keep appearing")
}

// otherProcesses lists the live processes of this PID namespace but PID 1, reaping the
// zombies among them that are its children.
func otherProcesses() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		// "pid (comm) S ...": comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// writeInPlace replaces the content of the file f without replacing the file.
func writeInPlace(f string, b []byte) error {
	fd, err := os.OpenFile(f, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	_, err = fd.Write(b)
	return errors.Join(err, fd.Close())
}

func (r *inPlace) run(ctx context.Context, s Spec) error {
	p, err := prepare("/", s)
	if err != nil {
		return err
	}
	if p.noNetwork {
		return r.runNoNetwork(ctx, s, p)
	}
	cmd := exec.CommandContext(ctx, p.path)
	cmd.Args = append([]string(nil), s.Args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cred := credential(s); cred != nil {
		cmd.SysProcAttr.Credential = cred
	}
	cmd.Cancel = func() error {
		// The whole group, so that a shell's children die with it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", s.Args[0], err)
	}
	return waitStep(ctx, cmd, s.Args[0])
}

// waitStep waits for the started command of an in-place step, named name in errors, and
// returns what Run returns.
func waitStep(ctx context.Context, cmd *exec.Cmd, name string) error {
	err := cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("running %s: %w", name, ctx.Err())
	}
	var ee *exec.ExitError
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
		// ErrWaitDelay: the command succeeded but left a process holding its output.
		return nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return exitErrorFromStatus(ws)
		}
	}
	return fmt.Errorf("running %s: %w", name, err)
}

// credential returns the credential for s, or nil when the process already has it and
// could not set it anyway (an unprivileged executor running as the requested user).
func credential(s Spec) *syscall.Credential {
	if os.Geteuid() != 0 && uint32(os.Geteuid()) == s.UID && uint32(os.Getegid()) == s.GID && len(s.Groups) == 0 {
		return nil
	}
	return &syscall.Credential{Uid: s.UID, Gid: s.GID, Groups: append([]uint32{}, s.Groups...)}
}
