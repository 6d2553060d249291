package run

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file gives a step no network (Spec.Network NetworkNone), as BuildKit gives a RUN
// --network=none step (pb.NetMode_NONE: runc's new network namespace, loopback up): the
// step runs in a network namespace of its own whose only interface is lo, up. The chroot
// runner starts its namespace helper in one (see chrootRunner.Run); the in-place runner
// starts the command through the network stage below.

// loopbackUp brings up the loopback interface of this process's network namespace, as
// runc does for a container without a network: 127.0.0.1 and ::1 then work, and reach
// only the namespace itself. It needs CAP_NET_ADMIN over the namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up lo: reading its flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	return nil
}

// netnsEnvValue marks, in helperEnv, the in-place runner's network stage.
const netnsEnvValue = "netns"

// netnsConfig is what the in-place runner sends its network stage on fd 3, gob-encoded.
type netnsConfig struct {
	Path string // the executable
	Args []string
	Env  []string
	Dir  string
	// SetUser makes the stage take UID, GID and Groups (the in-place runner's credential
	// is not nil).
	SetUser  bool
	UID, GID uint32
	Groups   []uint32
	// Bound is the capability bounding set the command keeps: the executor's own, which
	// a new user namespace would otherwise have reset to every capability.
	Bound uint64
}

// The first byte of a message of the network stage on fd 4 says what failed.
const (
	// netnsSetupFailed: the namespace, or the stage's own confinement; another way of
	// making the namespace may work, and nothing of the step ran.
	netnsSetupFailed = 'S'
	// netnsExecFailed: the user, the working directory or the exec, as they would fail
	// without a namespace.
	netnsExecFailed = 'E'
)

// netnsMain is the in-place runner's network stage: started by the executor in a new
// network namespace (and, where the executor may not make one alone, a new user
// namespace), it brings lo up, keeps the executor's capability bounding set, takes the
// step's user and execs the command. If that fails, it writes why on fd 4 (close-on-exec,
// so the runner sees EOF when the exec succeeds) and exits 127.
func netnsMain() int {
	// Credentials and capabilities are per thread; execve keeps this thread's.
	runtime.LockOSThread()
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	cfgF := os.NewFile(3, "config")
	errF := os.NewFile(4, "error")
	var cfg netnsConfig
	err := gob.NewDecoder(cfgF).Decode(&cfg)
	cfgF.Close()
	kind := byte(netnsSetupFailed)
	if err != nil {
		err = fmt.Errorf("reading the network stage's configuration: %w", err)
	} else {
		kind, err = netnsExec(cfg)
	}
	errF.Write(append([]byte{kind}, err.Error()...))
	return 127
}

// netnsExec sets up the step in the stage's network namespace and execs the command; it
// returns only on failure, with its kind.
func netnsExec(cfg netnsConfig) (byte, error) {
	if err := loopbackUp(); err != nil {
		return netnsSetupFailed, err
	}
	last, err := lastCap()
	if err != nil {
		return netnsSetupFailed, err
	}
	for c := 0; c <= last; c++ {
		if cfg.Bound&(1<<c) != 0 {
			continue
		}
		if in, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uintptr(c), 0); e != 0 || in == 0 {
			continue
		}
		if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			return netnsSetupFailed, fmt.Errorf("dropping capability %d from the bounding set: %w", c, e)
		}
	}
	// The ambient capabilities the runner raised for this stage (see netnsAttr) are not
	// the command's. Before Linux 4.3 there are none, and the call fails.
	unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0)
	if cfg.SetUser {
		// Raw calls: Go's Setuid and friends change every thread, and they need not.
		groups := cfg.Groups
		var gp unsafe.Pointer
		if len(groups) > 0 {
			gp = unsafe.Pointer(&groups[0])
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(gp), 0); e != 0 {
			return netnsExecFailed, fmt.Errorf("setting the supplementary groups %v: %w", groups, e)
		}
		g := uintptr(cfg.GID)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, g, g, g); e != 0 {
			return netnsExecFailed, fmt.Errorf("setting the group to %d: %w", cfg.GID, e)
		}
		u := uintptr(cfg.UID)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, u, u, u); e != 0 {
			return netnsExecFailed, fmt.Errorf("setting the user to %d: %w", cfg.UID, e)
		}
	}
	// No inheritable capabilities (the ambient ones needed them), and none at all for a
	// user other than root, which the exec would drop anyway but for those.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return netnsSetupFailed, fmt.Errorf("reading capabilities: %w", err)
	}
	for i := range data {
		data[i].Inheritable = 0
		if unix.Geteuid() != 0 {
			data[i].Effective, data[i].Permitted = 0, 0
		}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return netnsSetupFailed, fmt.Errorf("setting capabilities: %w", err)
	}
	if err := syscall.Chdir(cfg.Dir); err != nil {
		return netnsExecFailed, fmt.Errorf("changing to the working directory %s: %w", cfg.Dir, err)
	}
	err = syscall.Exec(cfg.Path, cfg.Args, cfg.Env)
	return netnsExecFailed, fmt.Errorf("starting %s: %w", cfg.Path, err)
}

// netnsWay is a way for the in-place runner to make a step's network namespace.
type netnsWay int

const (
	// netnsAlone makes a network namespace only: the executor needs CAP_SYS_ADMIN over its
	// user namespace (and CAP_NET_ADMIN, to bring lo up), which a pod seldom grants.
	netnsAlone netnsWay = iota
	// netnsInUserNS makes a user namespace mapping the executor's IDs to themselves, and a
	// network namespace it owns: what an unprivileged process may do where the kernel
	// and the seccomp profile allow user namespaces. Files keep their owners; the step
	// keeps the executor's capabilities, over its own namespaces only.
	netnsInUserNS
)

func (w netnsWay) String() string {
	if w == netnsAlone {
		return "a network namespace"
	}
	return "a user namespace and a network namespace"
}

// defaultNetnsWays are tried in order, until one works.
var defaultNetnsWays = []netnsWay{netnsAlone, netnsInUserNS}

// runNoNetwork runs the prepared step in a network namespace of its own, made the first
// of r's ways that works. If none does, nothing of the step runs, and the error says why.
func (r *inPlace) runNoNetwork(ctx context.Context, s Spec, p prepared) error {
	if !initCalled {
		return errors.New("running with no network: run.Init was not called at the start of main")
	}
	bound, err := boundingSet()
	if err != nil {
		return err
	}
	cfg := netnsConfig{Path: p.path, Args: s.Args, Env: p.env, Dir: p.dir, Bound: bound}
	if credential(s) != nil {
		cfg.SetUser, cfg.UID, cfg.GID, cfg.Groups = true, s.UID, s.GID, s.Groups
	}
	ways := r.netnsWays
	if ways == nil {
		ways = defaultNetnsWays
	}
	var errs []string
	for _, way := range ways {
		ran, err := runInNetns(ctx, s, cfg, way)
		if ran {
			return err
		}
		errs = append(errs, fmt.Sprintf("making %s: %v", way, err))
	}
	return fmt.Errorf("running %s with no network (RUN --network=none): the executor cannot give the step a network namespace of its own here, and does not run it with its own network (%s)",
		s.Args[0], strings.Join(errs, "; "))
}

// runInNetns starts the network stage for cfg in a network namespace made the given way
// and waits for the command. ran is false if the namespace or the stage could not be set
// up; nothing of the step ran then.
func runInNetns(ctx context.Context, s Spec, cfg netnsConfig, way netnsWay) (ran bool, err error) {
	sys, err := netnsAttr(way)
	if err != nil {
		return false, err
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return false, err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return false, err
	}
	defer errR.Close()
	defer errW.Close()

	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"slipway-run-netns"}
	cmd.Env = []string{helperEnv + "=" + netnsEnvValue}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	cmd.ExtraFiles = []*os.File{cfgR, errW} // fds 3 and 4
	cmd.SysProcAttr = sys
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		return false, unwrapStart(err)
	}
	cfgR.Close()
	errW.Close()
	encErr := gob.NewEncoder(cfgW).Encode(cfg)
	cfgW.Close()
	msg, readErr := io.ReadAll(errR)
	if len(msg) == 0 && encErr == nil && readErr == nil {
		return true, waitStep(ctx, cmd, s.Args[0]) // the pipe closed on exec
	}
	cmd.Wait()
	if ctx.Err() != nil {
		return true, fmt.Errorf("running %s: %w", s.Args[0], ctx.Err())
	}
	if len(msg) > 0 && msg[0] == netnsExecFailed {
		return true, errors.New(string(msg[1:]))
	}
	if len(msg) > 0 {
		return false, errors.New(string(msg[1:]))
	}
	return false, fmt.Errorf("starting the network stage: %w", errors.Join(encErr, readErr))
}

// netnsAttr returns how to start the network stage the given way. In its own process
// group, as every in-place step.
func netnsAttr(way netnsWay) (*syscall.SysProcAttr, error) {
	sys := &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWNET}
	if way == netnsAlone {
		return sys, nil
	}
	sys.Cloneflags |= syscall.CLONE_NEWUSER
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
		// An unprivileged process may map its own IDs only, and may not setgroups then.
		// The stage keeps CAP_NET_ADMIN (for lo) and CAP_SETPCAP (for the bounding set)
		// across its exec as ambient capabilities, and drops them before the command's.
		sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		sys.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		sys.AmbientCaps = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SETPCAP}
		return sys, nil
	}
	// Root maps every ID it has to itself, so that files keep their owners and the
	// step may be any user, as without the namespace.
	var err error
	if sys.UidMappings, err = identityMap("/proc/self/uid_map"); err != nil {
		return nil, err
	}
	if sys.GidMappings, err = identityMap("/proc/self/gid_map"); err != nil {
		return nil, err
	}
	sys.GidMappingsEnableSetgroups = true
	sys.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	return sys, nil
}

// identityMap reads a uid_map or gid_map of this process and returns the mapping of each
// of its IDs to itself, for a child user namespace.
func identityMap(file string) ([]syscall.SysProcIDMap, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	var m []syscall.SysProcIDMap
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		inside, err1 := strconv.ParseUint(f[0], 10, 32)
		size, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || size == 0 {
			return nil, fmt.Errorf("reading %s: bad line %q", file, sc.Text())
		}
		m = append(m, syscall.SysProcIDMap{ContainerID: int(inside), HostID: int(inside), Size: int(size)})
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("reading %s: no mapping", file)
	}
	return m, nil
}

// boundingSet returns this thread's capability bounding set (bit n is capability n).
func boundingSet() (uint64, error) {
	last, err := lastCap()
	if err != nil {
		return 0, err
	}
	var set uint64
	for c := 0; c <= last; c++ {
		in, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uintptr(c), 0)
		if e != 0 {
			return 0, fmt.Errorf("reading the capability bounding set: %w", e)
		}
		if in != 0 {
			set |= 1 << c
		}
	}
	return set, nil
}
