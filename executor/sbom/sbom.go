// Package sbom makes the software bill of materials of an image: an SPDX
// 2.3 JSON document (CycloneDX JSON on request) of the packages found in
// the image's unpacked file tree.
//
// The cataloging is anchore/syft's (executor/sbom/scan), run as its own
// program, slipway-sbom (cmd/slipway-sbom), shipped beside the executor.
// Linked into the executor, syft made it five times larger (22 MB to
// 116 MB) and needed some 200 MB of memory for even an empty tree; as a
// child process its code and memory are out of the build's, and the limits
// below hold whatever the tree holds: it is killed past Options.Timeout,
// Options.MaxMemory of resident memory or Options.MaxOutput bytes of
// output. This package imports nothing of syft.
//
// The tree is untrusted. The child gets only the tree's path and a clean
// environment (no credential, PATH pointing nowhere, proxies pointing at a
// closed port), runs in a network namespace of its own where it can make
// one (as root), resolves every symbolic link inside the tree, runs no
// program and caps what it reads from one file (see package scan).
package sbom

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The formats Generate writes.
const (
	FormatSPDXJSON      = "spdx-json"      // SPDX 2.3, JSON (the default)
	FormatCycloneDXJSON = "cyclonedx-json" // CycloneDX 1.7, JSON
)

// BinaryName is the name of the program Generate runs. The executor image
// has it beside the executor, at /slipway/slipway-sbom.
const BinaryName = "slipway-sbom"

// Defaults of Options.
const (
	DefaultTimeout     = 5 * time.Minute
	DefaultMaxMemory   = 512 << 20 // resident bytes; a Debian base takes about 200 MB
	DefaultMaxOutput   = 64 << 20  // a Debian base's SPDX document is 0.4 MB
	DefaultMaxFileSize = 64 << 20  // bytes a cataloger may read from one file
)

// Options configures Generate. The zero value makes an SPDX document with
// the default limits.
type Options struct {
	// Format is FormatSPDXJSON (the default, also when empty) or
	// FormatCycloneDXJSON.
	Format string
	// ImageName names the document's subject: SPDX's document name,
	// CycloneDX's metadata component. Default: the tree's path.
	ImageName string
	// Exclude lists absolute paths inside the tree that are not
	// cataloged, nor anything under them (/proc, /sys, /dev and the
	// executor's /slipway when the tree is the container's own root).
	Exclude []string
	// Binary is the path of slipway-sbom. Default: BinaryName in the
	// directory of the running program, else on $PATH.
	Binary string
	// Timeout bounds the run. Default DefaultTimeout.
	Timeout time.Duration
	// MaxMemory is the resident memory, in bytes, past which the child
	// is killed. Default DefaultMaxMemory. The child's Go heap is also
	// asked (GOMEMLIMIT) to stay under a quarter of it.
	MaxMemory int64
	// MaxOutput is the largest document, in bytes, Generate accepts; the
	// child is killed when it writes more. Default DefaultMaxOutput.
	MaxOutput int64
	// MaxFileSize caps the bytes a cataloger reads from one file in
	// sequence (a package database, a lock file); a larger file is noted
	// in the document as not cataloged. Default DefaultMaxFileSize.
	MaxFileSize int64
	// TempDir is where the child's own temporary directory (its HOME and
	// TMPDIR: syft copies an rpmdb there, up to MaxFileSize) is made and
	// removed after. Default os.TempDir().
	TempDir string
}

// Result is a document and what making it cost.
type Result struct {
	Document []byte
	Duration time.Duration
	// PeakRSS is the child's largest resident set, in bytes.
	PeakRSS int64
	// NetworkIsolated tells whether the child ran in a network namespace
	// of its own (it does when the caller may create one).
	NetworkIsolated bool
}

// Generate returns the SBOM of the unpacked image file tree at root, in
// opts.Format. See Run.
func Generate(ctx context.Context, root string, opts Options) ([]byte, error) {
	r, err := Run(ctx, root, opts)
	if err != nil {
		return nil, err
	}
	return r.Document, nil
}

// Run runs slipway-sbom on the tree at root and returns its document,
// checked to be one of the requested format, and its cost. A run that
// outlives opts.Timeout or ctx, grows past opts.MaxMemory or writes more
// than opts.MaxOutput is killed with its process group, and Run returns an
// error that names the limit.
func Run(ctx context.Context, root string, opts Options) (*Result, error) {
	format := opts.Format
	switch format {
	case "":
		format = FormatSPDXJSON
	case FormatSPDXJSON, FormatCycloneDXJSON:
	default:
		return nil, fmt.Errorf("unknown SBOM format %q (want %s or %s)", opts.Format, FormatSPDXJSON, FormatCycloneDXJSON)
	}
	opts = withDefaults(opts)
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("generating the SBOM: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("generating the SBOM: %s is not a directory", root)
	}
	bin, err := binary(opts.Binary)
	if err != nil {
		return nil, err
	}
	// HOME and TMPDIR of the child: a directory of its own, removed after.
	tmp, err := os.MkdirTemp(opts.TempDir, "slipway-sbom-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	args := []string{"--format", format, "--max-file-size", strconv.FormatInt(opts.MaxFileSize, 10)}
	if opts.ImageName != "" {
		args = append(args, "--name", opts.ImageName)
	}
	for _, p := range opts.Exclude {
		args = append(args, "--exclude", p)
	}
	args = append(args, "--", root)

	c := &child{opts: opts}
	start := time.Now()
	isolated := true
	err = c.start(bin, args, childEnv(tmp, opts), tmp, isolationFlags)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
		// No network namespace for us (not root, or a seccomp profile
		// forbids it): the child's configuration and environment are
		// what keeps it off the network.
		isolated = false
		c = &child{opts: opts}
		err = c.start(bin, args, childEnv(tmp, opts), tmp, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	out, waitErr := c.wait(ctx)
	res := &Result{Duration: time.Since(start), PeakRSS: c.peakRSS, NetworkIsolated: isolated}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.memExceeded:
		return nil, fmt.Errorf("generating the SBOM of %s: %s used more than %d MiB of memory and was killed", root, BinaryName, opts.MaxMemory>>20)
	case c.outExceeded:
		return nil, fmt.Errorf("generating the SBOM of %s: the document is larger than %d MiB", root, opts.MaxOutput>>20)
	case c.timedOut:
		return nil, fmt.Errorf("generating the SBOM of %s: %s did not finish within %s and was killed", root, BinaryName, opts.Timeout)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("generating the SBOM of %s: %w", root, ctx.Err())
	case waitErr != nil:
		msg := strings.TrimSpace(c.stderr.String())
		if msg == "" {
			msg = waitErr.Error()
		}
		return nil, fmt.Errorf("generating the SBOM of %s: %s", root, msg)
	}
	if err := checkDocument(out, format); err != nil {
		return nil, fmt.Errorf("generating the SBOM of %s: %s wrote %w", root, BinaryName, err)
	}
	res.Document = out
	return res, nil
}

func withDefaults(o Options) Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxMemory <= 0 {
		o.MaxMemory = DefaultMaxMemory
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = DefaultMaxOutput
	}
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	return o
}

// binary finds slipway-sbom: explicit, beside the running program, on PATH.
func binary(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), BinaryName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath(BinaryName)
	if err != nil {
		return "", fmt.Errorf("generating the SBOM: %s is neither beside this program nor on PATH", BinaryName)
	}
	return p, nil
}

// childEnv is the child's whole environment: nothing of ours (no
// credential, no proxy, no DOCKER_CONFIG); no PATH to run a program from;
// proxies at the discard port, so that a request that got past syft's
// configuration would fail; and the Go runtime's soft memory target.
func childEnv(tmp string, o Options) []string {
	const nowhere = "http://127.0.0.1:9"
	return []string{
		"PATH=/nonexistent",
		"HOME=" + tmp,
		"TMPDIR=" + tmp,
		"GOMEMLIMIT=" + strconv.FormatInt(o.MaxMemory/4, 10),
		"GOPROXY=off",
		"GOTOOLCHAIN=local",
		"HTTP_PROXY=" + nowhere, "HTTPS_PROXY=" + nowhere, "ALL_PROXY=" + nowhere,
		"http_proxy=" + nowhere, "https_proxy=" + nowhere, "all_proxy=" + nowhere,
		"NO_PROXY=", "no_proxy=",
	}
}

// isolationFlags are the clone flags Run first tries: a network
// namespace of the child's own, without interfaces. Tests change them to
// exercise the fallback.
var isolationFlags uintptr = syscall.CLONE_NEWNET

// child is one run of slipway-sbom.
type child struct {
	opts   Options
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr tailBuffer

	mu          sync.Mutex
	killed      bool
	memExceeded bool
	outExceeded bool
	timedOut    bool
	peakRSS     int64
}

func (c *child) start(bin string, args, env []string, dir string, cloneflags uintptr) error {
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = env
	c.cmd.Dir = dir
	c.cmd.Stdin = nil
	c.cmd.Stderr = &c.stderr
	// Its own process group, so that a kill reaches anything it started.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: cloneflags}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	c.stdout = out
	return c.cmd.Start()
}

// kill ends the child's process group, once.
func (c *child) kill(reason *bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reason != nil && !c.killed {
		*reason = true
	}
	if c.killed {
		return
	}
	c.killed = true
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
}

// wait reads the child's output up to the limit, watches its memory and
// the time, and reaps it.
func (c *child) wait(ctx context.Context) ([]byte, error) {
	done := make(chan struct{})
	timer := time.NewTimer(c.opts.Timeout)
	defer timer.Stop()
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				c.kill(nil)
				return
			case <-timer.C:
				c.kill(&c.timedOut)
				return
			case <-tick.C:
				if rss := residentBytes(c.cmd.Process.Pid); rss > c.opts.MaxMemory {
					c.kill(&c.memExceeded)
					return
				}
			}
		}
	}()
	var buf bytes.Buffer
	_, err := io.Copy(&buf, io.LimitReader(c.stdout, c.opts.MaxOutput+1))
	if err == nil && int64(buf.Len()) > c.opts.MaxOutput {
		c.kill(&c.outExceeded)
	}
	// Drain what is left so that the child is not blocked on a full pipe
	// between the kill and its death.
	_, _ = io.Copy(io.Discard, c.stdout)
	waitErr := c.cmd.Wait()
	close(done)
	if ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		c.peakRSS = ru.Maxrss * 1024
	}
	return buf.Bytes(), waitErr
}

// residentBytes is a process's resident set (VmRSS), 0 when unknown.
func residentBytes(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// checkDocument checks that doc is a JSON document of the format.
func checkDocument(doc []byte, format string) error {
	var head struct {
		SPDXVersion string `json:"spdxVersion"`
		BOMFormat   string `json:"bomFormat"`
	}
	if err := json.Unmarshal(doc, &head); err != nil {
		return fmt.Errorf("no JSON document: %w", err)
	}
	switch {
	case format == FormatSPDXJSON && head.SPDXVersion != "SPDX-2.3":
		return fmt.Errorf("an SPDX document of version %q, not SPDX-2.3", head.SPDXVersion)
	case format == FormatCycloneDXJSON && head.BOMFormat != "CycloneDX":
		return fmt.Errorf("a document of bomFormat %q, not CycloneDX", head.BOMFormat)
	}
	return nil
}

// tailBuffer keeps the last 4 KiB written to it: the end of the child's
// standard error, for the error message.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
