package binfmt

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Check says whether the kernel runs p's executables for a build here: nil when p is native;
// Find's answer when binfmt_misc is mounted at dir; otherwise (a pod, whose /proc has no
// binfmt_misc mounted and which cannot mount it) Probe's in workDir.
func Check(dir, workDir string, p v1.Platform) error {
	if Native(p) {
		return nil
	}
	if Mounted(dir) {
		_, err := Find(dir, p)
		return err
	}
	return Probe(workDir, p)
}

// Probe asks the kernel itself whether it runs p's executables from this process's root: it
// writes a file that starts with an ELF header of p (and holds no program) into dir, which
// must allow exec, and executes it. The kernel's ELF loader refuses a foreign machine, so the
// exec succeeds only through a binfmt_misc handler (whose emulator then fails to load the
// file, which does not matter); ENOEXEC means no enabled handler matches; ENOENT (or another
// error opening the interpreter) means one matches but its interpreter is not in this root,
// which is what a handler without the F flag looks like from a container. It needs no
// binfmt_misc mount, so it works in an unprivileged pod. Less precise than Find (it tests one
// kind of executable: static, OS/ABI none) and it cannot name the handler.
func Probe(dir string, p v1.Platform) error {
	t, err := elfFor(p)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".binfmt-probe-")
	if err != nil {
		return fmt.Errorf("probing binfmt_misc: %w", err)
	}
	path := f.Name()
	defer os.Remove(path)
	header := make([]byte, 64)
	copy(header, elfHeaders(t)[0])
	_, err = f.Write(header)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(path, 0o755)
	}
	if err != nil {
		return fmt.Errorf("probing binfmt_misc: %w", err)
	}
	cmd := exec.Command(path)
	cmd.Env = []string{}
	err = cmd.Start()
	switch {
	case err == nil:
		_ = cmd.Wait() // the emulator's verdict on a file with no program
		return nil
	case errors.Is(err, syscall.ENOEXEC):
		return &NotServedError{Platform: p, Reason: fmt.Sprintf("the kernel runs no ELF executables of %s (%s): no enabled binfmt_misc handler matches them", PlatformString(p), t)}
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.ELIBBAD):
		return &NotServedError{Platform: p, Reason: fmt.Sprintf("a binfmt_misc handler matches ELF executables of %s (%s) but its interpreter cannot be opened from this container's root (%v): it lacks the F (fix-binary) flag, so the kernel looks for it inside the build's root filesystem", PlatformString(p), t, errors.Unwrap(err))}
	}
	return fmt.Errorf("probing binfmt_misc for %s: %w", PlatformString(p), err)
}
