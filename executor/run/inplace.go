package run

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// waitDelay bounds how long Run waits for the output pipes to close after the command
// exited (a background process it started may hold them) or after ctx is done.
const waitDelay = 2 * time.Second

// InPlace returns the Runner for the executor pod: the command runs directly on the
// host's (the container's) root filesystem, without namespaces. Spec.Root must be "/" or
// empty. The command runs in its own process group, which is killed when ctx is done;
// background processes it leaves behind are not killed (kaniko does the same).
func InPlace() Runner { return inPlace{} }

type inPlace struct{}

func (inPlace) Run(ctx context.Context, s Spec) error {
	if s.Root != "" && s.Root != "/" {
		return fmt.Errorf("checking root %s: the in-place runner runs in / only", s.Root)
	}
	p, err := prepare("/", s)
	if err != nil {
		return err
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
	err = cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("running %s: %w", s.Args[0], ctx.Err())
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
	return fmt.Errorf("running %s: %w", s.Args[0], err)
}

// credential returns the credential for s, or nil when the process already has it and
// could not set it anyway (an unprivileged executor running as the requested user).
func credential(s Spec) *syscall.Credential {
	if os.Geteuid() != 0 && uint32(os.Geteuid()) == s.UID && uint32(os.Getegid()) == s.GID && len(s.Groups) == 0 {
		return nil
	}
	return &syscall.Credential{Uid: s.UID, Gid: s.GID, Groups: append([]uint32{}, s.Groups...)}
}
