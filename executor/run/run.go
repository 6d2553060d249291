// Package run runs the command of a Dockerfile RUN instruction.
//
// Two runners share one contract (Runner):
//
//   - InPlace runs the command directly, kaniko's model: inside the executor pod the
//     container's root filesystem is the image being built, so nothing is isolated.
//   - Chroot runs the command with a stage's root filesystem as its root (pivot_root, so
//     no host path can be named), inside fresh mount, PID, UTS and IPC namespaces and a
//     user namespace where the host allows one, in a session of its own with no
//     controlling terminal, with Docker's default capabilities and seccomp profile
//     (TIOCSTI refused), and with /proc, /dev, /sys, /etc/hosts and /etc/resolv.conf
//     provided. The host's network namespace is kept (a docker build's default network
//     reaches registries): the command reaches what the executor reaches. Without a user
//     namespace, NET_RAW and NET_BIND_SERVICE, which would then act on the host's
//     network, are dropped. A step with Spec.Network NetworkNone gets a network
//     namespace of its own instead, with only lo, up (and keeps those two). Nothing
//     limits its resources. It leaves the root as it found it apart from what the
//     command itself changed and the mount points /proc, /dev and /sys it made where the
//     root had none (they stay, as runc leaves them in a BuildKit build), so that a
//     snapshot sees the step's work as BuildKit's does.
//
// Chroot needs Init to be called first thing in main (and in TestMain): it re-executes the
// current binary as the namespace helper.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// DefaultPath is the PATH used to find the executable, and given to the command, when
// Spec.Env has none; it is Docker's default.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrNotFound is wrapped by the error of Run when the executable named by Args[0] does not
// exist in the root (or is not an executable regular file).
var ErrNotFound = errors.New("executable file not found")

// Spec is one command to run.
type Spec struct {
	// Root is the root filesystem of the stage, an absolute host path. It must be "/" (or
	// empty) for InPlace.
	Root string
	// Args is the argv; it must not be empty. Args[0] is looked up as Docker does: if it
	// holds no slash, in the PATH from Env (DefaultPath if Env has none), inside Root,
	// symlinks followed within Root; a relative path with a slash is taken from Dir.
	Args []string
	// Env is the complete environment of the command, KEY=VALUE; the last of duplicate
	// keys wins. If it has no PATH, PATH=DefaultPath is added, as Docker does. Nothing else
	// is added (HOME, for example, is the caller's to set from the image config and user).
	Env []string
	// Dir is the working directory inside Root, absolute; empty means "/". It must exist:
	// creating WORKDIR is the caller's job.
	Dir string
	// UID and GID are the user and group the command runs as.
	UID, GID uint32
	// Groups are the supplementary groups; none if empty.
	Groups []uint32
	// Stdout and Stderr receive the command's output as it is written (the runner does not
	// buffer it). Nil discards. Stdin is always /dev/null.
	Stdout, Stderr io.Writer
	// Dev names entries of the root's /dev that the caller made for the step (the
	// directory of a RUN heredoc's script): a runner that gives the step a /dev of its own
	// binds them into it, read-only. The in-place runner's /dev is the root's.
	Dev []string
	// Network is the network the command has: NetworkDefault (the zero value) or
	// NetworkNone.
	Network Network
	// Hostname, when set, is the command's host name (BuildKit's ExecOp Meta.Hostname:
	// what uname -n, $HOSTNAME and /etc/hosts show); at most 64 bytes (HOST_NAME_MAX),
	// without whitespace or control characters. Empty: the runner's default. The in-place
	// runner shares the pod's UTS namespace, and refuses a step with one.
	Hostname string
	// CompatArch, when set, is the architecture (as a GOARCH and an OCI platform name it:
	// "386") of the step's executables when it is not this machine's own but the kernel
	// runs them itself, natively, through a compat ABI of its own: linux/386 on amd64 (see
	// compatABIs). The chroot runner's seccomp filter then allows that ABI too, with the
	// same rules as the native one; a step without it gets the native ABI alone, and a
	// 32-bit program's system calls fail there. Leave it empty for executables of the
	// machine's architecture and for those a binfmt_misc emulator runs (its interpreter
	// is a native program). The in-place runner installs no filter: the pod's seccomp
	// profile decides. An architecture the machine has no compat ABI for is an error.
	CompatArch string
}

// CheckHostname checks h as Spec.Hostname takes it.
func CheckHostname(h string) error {
	if len(h) > 64 {
		return fmt.Errorf("hostname %q is longer than 64 bytes", h)
	}
	for _, r := range h {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("hostname %q has whitespace or a control character", h)
		}
	}
	return nil
}

// Network is the network of a step, as RUN --network chooses it.
type Network int

const (
	// NetworkDefault is the executor's own network: the command shares the network
	// namespace of the executor, and reaches what it reaches. RUN --network=default and
	// --network=host both mean this here (BuildKit's default is a namespace of the
	// step's own on a bridge, which reaches the same registries).
	NetworkDefault Network = iota
	// NetworkNone is a network namespace of the command's own, holding only the loopback
	// interface, up, as BuildKit's pb.NetMode_NONE gives a RUN --network=none step: no
	// address of the executor's network, its loopback included, can be reached. A runner
	// that cannot make one fails the step rather than run it with the executor's network.
	NetworkNone
)

func (n Network) String() string {
	switch n {
	case NetworkDefault:
		return "default"
	case NetworkNone:
		return "none"
	}
	return fmt.Sprintf("Network(%d)", int(n))
}

// A Runner runs one RUN command. Run returns nil if the command exited 0, an *ExitError
// if it exited non-zero or was killed by a signal, and another error if it could not be
// run at all (missing executable or working directory, setup failure, or ctx done, in
// which case the error wraps ctx.Err() and the command has been killed).
type Runner interface {
	Run(ctx context.Context, s Spec) error
}

// ExitError reports a command that ran but did not succeed.
type ExitError struct {
	// Code is the exit status, or 128+n if the command was killed by signal n, as a shell
	// reports it.
	Code int
	// Signal is the signal that killed the command, or 0 if it exited.
	Signal syscall.Signal
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("exit code %d (killed by signal %s)", e.Code, e.Signal)
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

// exitErrorFromStatus turns a wait status into nil or an *ExitError.
func exitErrorFromStatus(ws syscall.WaitStatus) error {
	switch {
	case ws.Signaled():
		return &ExitError{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
	case ws.ExitStatus() != 0:
		return &ExitError{Code: ws.ExitStatus()}
	}
	return nil
}

// prepared is a Spec checked against its root: what both runners need to start it.
type prepared struct {
	path      string   // the executable, as seen from inside the root
	dir       string   // the working directory, as seen from inside the root
	env       []string // the environment, PATH included
	noNetwork bool     // Network is NetworkNone
}

// prepare checks s against root and resolves the executable.
func prepare(root string, s Spec) (prepared, error) {
	if len(s.Args) == 0 {
		return prepared{}, errors.New("checking command: no arguments")
	}
	if s.Network != NetworkDefault && s.Network != NetworkNone {
		return prepared{}, fmt.Errorf("checking network: unknown %s", s.Network)
	}
	if err := CheckHostname(s.Hostname); err != nil {
		return prepared{}, fmt.Errorf("checking hostname: %w", err)
	}
	if err := checkCompatArch(s.CompatArch); err != nil {
		return prepared{}, err
	}
	dir := s.Dir
	if dir == "" {
		dir = "/"
	}
	if !path.IsAbs(dir) {
		return prepared{}, fmt.Errorf("checking working directory %q: not an absolute path", dir)
	}
	dir = path.Clean(dir)
	hostDir, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return prepared{}, fmt.Errorf("checking working directory %s: %w", dir, err)
	}
	fi, err := os.Stat(hostDir)
	if err != nil {
		return prepared{}, fmt.Errorf("checking working directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return prepared{}, fmt.Errorf("checking working directory %s: not a directory", dir)
	}
	env := withPath(s.Env)
	exe, err := lookPath(root, s.Args[0], dir, getenv(env, "PATH"))
	if err != nil {
		return prepared{}, err
	}
	return prepared{path: exe, dir: dir, env: env, noNetwork: s.Network == NetworkNone}, nil
}

// getenv returns the value of the last key in env.
func getenv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// withPath returns env with PATH=DefaultPath appended if it has no PATH.
func withPath(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return env
		}
	}
	return append(env[:len(env):len(env)], "PATH="+DefaultPath)
}

// lookPath finds the executable file for name inside root, the way Docker does, and returns
// its path as seen from inside root. Symlinks are followed within root.
func lookPath(root, name, dir, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !path.IsAbs(p) {
			p = path.Join(dir, p)
		}
		if err := checkExecutable(root, p); err != nil {
			return "", fmt.Errorf("finding executable %q: %w", name, err)
		}
		return path.Clean(p), nil
	}
	if name == "" {
		return "", fmt.Errorf("finding executable %q: %w", name, ErrNotFound)
	}
	for _, d := range strings.Split(pathEnv, ":") {
		if !path.IsAbs(d) {
			// Relative and empty entries mean the working directory; Docker (Go's
			// exec.LookPath inside the container) refuses them.
			continue
		}
		p := path.Join(d, name)
		if checkExecutable(root, p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("finding executable %q in PATH %s: %w", name, pathEnv, ErrNotFound)
}

// checkExecutable reports whether p, inside root, is a regular file with an execute bit.
func checkExecutable(root, p string) error {
	host, err := securejoin.SecureJoin(root, p)
	if err != nil {
		return err
	}
	fi, err := os.Stat(host)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrNotFound
		}
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w (%s is not an executable file)", ErrNotFound, p)
	}
	return nil
}
