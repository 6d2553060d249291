// Command attack tries, from inside a RUN step, what a hostile step would. The tests of
// package run build it statically and copy it into a stage root. It prints one line per
// attempt, "name: ok" or "name: <error>", and exits 0.
package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attack chroot-escape FILE | syscalls | whoami")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "chroot-escape":
		chrootEscape(os.Args[2])
	case "syscalls":
		syscalls()
	case "whoami":
		fmt.Printf("uid %d euid %d\n", os.Getuid(), os.Geteuid())
	default:
		fmt.Fprintln(os.Stderr, "unknown attack", os.Args[1])
		os.Exit(2)
	}
}

func report(name string, err error) {
	if err == nil {
		fmt.Printf("%s: ok\n", name)
		return
	}
	fmt.Printf("%s: %v\n", name, err)
}

// chrootEscape is the classic way out of a chroot(2) jail: chroot into a subdirectory
// without entering it, climb out of it with "..", and chroot to where that leads.
func chrootEscape(file string) {
	if err := os.MkdirAll("/tmp/jail", 0o755); err != nil {
		report("mkdir", err)
		return
	}
	if err := syscall.Chroot("/tmp/jail"); err != nil {
		report("chroot", err)
		return
	}
	for range 64 {
		if err := syscall.Chdir(".."); err != nil {
			report("chdir", err)
			return
		}
	}
	if err := syscall.Chroot("."); err != nil {
		report("chroot", err)
		return
	}
	b, err := os.ReadFile(file)
	if err != nil {
		report("read", err)
		return
	}
	fmt.Printf("read: ok: %s\n", b)
}

// syscalls tries system calls Docker's default seccomp profile refuses (or refuses with
// these arguments).
func syscalls() {
	errno := func(e syscall.Errno) error {
		if e == 0 {
			return nil
		}
		return e
	}
	_, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, uintptr(0xfffffffd) /* KEY_SPEC_SESSION_KEYRING */, 0)
	report("keyctl", errno(e))
	report("unshare", unix.Unshare(unix.CLONE_NEWUSER))
	report("mount", unix.Mount("none", "/tmp", "tmpfs", 0, ""))
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0x0040000 /* ADDR_COMPAT_LAYOUT */, 0, 0)
	report("personality", errno(e))
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.Close(fd)
	}
	report("socket-vsock", err)
	// clone with a namespace flag; the child, if any, exits at once.
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, unix.CLONE_NEWUTS|uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e == 0 && pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	if e == 0 {
		var ws syscall.WaitStatus
		syscall.Wait4(int(pid), &ws, 0, nil)
	}
	report("clone-newuts", errno(e))
	var args [11]uint64 // struct clone_args: a plain fork, exit_signal SIGCHLD
	args[4] = uint64(syscall.SIGCHLD)
	pid, _, e = unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	if e == 0 && pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	if e == 0 {
		var ws syscall.WaitStatus
		syscall.Wait4(int(pid), &ws, 0, nil)
	}
	report("clone3", errno(e))
	// A plain fork must work: the profile allows clone without namespace flags.
	pid, _, e = unix.RawSyscall6(unix.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e == 0 && pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	if e == 0 {
		var ws syscall.WaitStatus
		syscall.Wait4(int(pid), &ws, 0, nil)
	}
	report("fork", errno(e))
}
