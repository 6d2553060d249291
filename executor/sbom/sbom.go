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
	"crypto/sha256"
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

	"github.com/slipway-dev/slipway/executor/result"
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
	// asked (GOMEMLIMIT) to stay under 3/16 of it (softMemory).
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
	if err := checkRoot(root); err != nil {
		return nil, err
	}
	g, err := Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return g.Run(ctx, root, opts.ImageName)
}

// A Generator is slipway-sbom started before its tree is there (Start):
// it builds syft's license classifier, most of a run's cost whatever the
// tree (about a second of CPU and 90 MB of memory), while the caller still
// makes the tree (unpacks an image, builds it), then waits for Run to give
// it the tree. It makes one document; Close ends it, used or not. The
// limits of its Options hold from Start on (memory), or from Run on (time,
// output).
type Generator struct {
	opts     Options
	format   string
	c        *child
	stdin    io.WriteCloser
	tmp      string
	isolated bool

	mu     sync.Mutex
	used   bool
	closed bool
}

// Start starts slipway-sbom for one document of opts.Format (opts.ImageName
// is Run's). ctx bounds the child's whole life: it is killed when ctx is
// done.
func Start(ctx context.Context, opts Options) (*Generator, error) {
	format := opts.Format
	switch format {
	case "":
		format = FormatSPDXJSON
	case FormatSPDXJSON, FormatCycloneDXJSON:
	default:
		return nil, fmt.Errorf("unknown SBOM format %q (want %s or %s)", opts.Format, FormatSPDXJSON, FormatCycloneDXJSON)
	}
	opts = withDefaults(opts)
	bin, err := binary(opts.Binary)
	if err != nil {
		return nil, err
	}
	// HOME and TMPDIR of the child: a directory of its own, removed after.
	tmp, err := os.MkdirTemp(opts.TempDir, "slipway-sbom-")
	if err != nil {
		return nil, err
	}
	args := []string{"--format", format, "--max-file-size", strconv.FormatInt(opts.MaxFileSize, 10)}
	for _, p := range opts.Exclude {
		args = append(args, "--exclude", p)
	}
	// The tree and the name come as a request on standard input.
	args = append(args, "--", "-")

	g := &Generator{opts: opts, format: format, tmp: tmp, isolated: true}
	g.c = &child{opts: opts}
	err = g.c.start(ctx, bin, args, childEnv(tmp, opts), tmp, isolationFlags)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
		// No network namespace for us (not root, or a seccomp profile
		// forbids it): the child's configuration and environment are
		// what keeps it off the network.
		g.isolated = false
		g.c = &child{opts: opts}
		err = g.c.start(ctx, bin, args, childEnv(tmp, opts), tmp, 0)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	return g, nil
}

// Run gives the generator the tree at root, an image of the name imageName
// (default: the tree's path), and returns its document, checked to be of
// the generator's format, and its cost (Duration from the request on). A
// run that outlives the Timeout or ctx, grows past MaxMemory or writes
// more than MaxOutput is killed with its process group, and Run returns an
// error that names the limit. Run is called once.
func (g *Generator) Run(ctx context.Context, root, imageName string) (*Result, error) {
	g.mu.Lock()
	if g.used || g.closed {
		g.mu.Unlock()
		return nil, errors.New("generating the SBOM: the generator was used already")
	}
	g.used = true
	g.mu.Unlock()
	defer g.Close()
	if err := checkRoot(root); err != nil {
		return nil, err
	}
	req, err := json.Marshal(struct {
		Root string `json:"root"`
		Name string `json:"name,omitempty"`
	}{root, imageName})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	g.c.arm()
	// A child that died already (its memory limit) leaves a broken pipe:
	// wait says why.
	_, _ = g.c.stdin.Write(append(req, '\n'))
	g.c.stdin.Close()
	out, waitErr := g.c.wait(ctx)
	res := &Result{Duration: time.Since(start), PeakRSS: g.c.peakRSS, NetworkIsolated: g.isolated}
	c := g.c
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.memExceeded:
		return nil, fmt.Errorf("generating the SBOM of %s: %s used more than %d MiB of memory and was killed", root, BinaryName, g.opts.MaxMemory>>20)
	case c.outExceeded:
		return nil, fmt.Errorf("generating the SBOM of %s: the document is larger than %d MiB", root, g.opts.MaxOutput>>20)
	case c.timedOut:
		return nil, fmt.Errorf("generating the SBOM of %s: %s did not finish within %s and was killed", root, BinaryName, g.opts.Timeout)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("generating the SBOM of %s: %w", root, ctx.Err())
	case c.ctxDone:
		return nil, fmt.Errorf("generating the SBOM of %s: %w", root, context.Canceled)
	case waitErr != nil:
		msg := strings.TrimSpace(c.stderr.String())
		if msg == "" {
			msg = waitErr.Error()
		}
		return nil, fmt.Errorf("generating the SBOM of %s: %s", root, msg)
	}
	if err := checkDocument(out, g.format); err != nil {
		return nil, fmt.Errorf("generating the SBOM of %s: %s wrote %w", root, BinaryName, err)
	}
	res.Document = out
	return res, nil
}

// Close ends the generator: an unused one is killed (it may still be
// building its classifier), a used one was reaped by Run. Its temporary
// directory is removed. Close may be called more than once.
func (g *Generator) Close() {
	g.mu.Lock()
	closed, used := g.closed, g.used
	g.closed = true
	g.mu.Unlock()
	if closed {
		return
	}
	if !used {
		g.c.kill(nil)
		g.c.stdin.Close()
		_, _ = g.c.wait(context.Background())
	}
	os.RemoveAll(g.tmp)
}

// Fingerprint identifies the documents Run writes with opts: the SHA-256
// of the slipway-sbom binary it runs (syft's version and the catalogers'
// configuration are in it) and the options that change a document
// (format, exclusions, per-file cap). Runs of one fingerprint write the
// same document for the same tree and image name, creation time and UUIDs
// aside. It reads the whole binary (80 MB: some 70 ms).
func Fingerprint(opts Options) (string, error) {
	format := opts.Format
	if format == "" {
		format = FormatSPDXJSON
	}
	opts = withDefaults(opts)
	bin, err := binary(opts.Binary)
	if err != nil {
		return "", err
	}
	f, err := os.Open(bin)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", BinaryName, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", BinaryName, err)
	}
	return fmt.Sprintf("%s sha256:%x format=%s max-file-size=%d exclude=%q", BinaryName, h.Sum(nil), format, opts.MaxFileSize, opts.Exclude), nil
}

// checkRoot checks that root is a directory.
func checkRoot(root string) error {
	if fi, err := os.Stat(root); err != nil {
		return fmt.Errorf("generating the SBOM: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("generating the SBOM: %s is not a directory", root)
	}
	return nil
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
		"GOMEMLIMIT=" + strconv.FormatInt(softMemory(o), 10),
		"GOPROXY=off",
		"GOTOOLCHAIN=local",
		"HTTP_PROXY=" + nowhere, "HTTPS_PROXY=" + nowhere, "ALL_PROXY=" + nowhere,
		"http_proxy=" + nowhere, "https_proxy=" + nowhere, "all_proxy=" + nowhere,
		"NO_PROXY=", "no_proxy=",
	}
}

// softMemory is the child's GOMEMLIMIT: 3/16 of MaxMemory, 96 MiB by
// default. syft's license classifier alone keeps some 70 MB of heap live,
// and its build allocates twice that: under a quarter of the default (128
// MiB) a run of a Debian base peaks at about 172 MB resident, under 96 MiB
// at about 147 MB for 0.15 s more of garbage collection (mostly while the
// classifier is built, which a Generator started ahead does before its
// tree is there); under 64 MiB the collector takes most of the run.
func softMemory(o Options) int64 { return o.MaxMemory * 3 / 16 }

// childNice is the child's nice value.
const childNice = 10

// isolationFlags are the clone flags Run first tries: a network
// namespace of the child's own, without interfaces. Tests change them to
// exercise the fallback.
var isolationFlags uintptr = syscall.CLONE_NEWNET

// child is one run of slipway-sbom.
type child struct {
	opts   Options
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr tailBuffer
	// timer bounds the run once armed; done ends the watch.
	timer *time.Timer
	done  chan struct{}
	// waitOnce reaps the child once; out and waitErr are what it got.
	waitOnce sync.Once
	out      []byte
	waitErr  error

	mu          sync.Mutex
	killed      bool
	memExceeded bool
	outExceeded bool
	timedOut    bool
	ctxDone     bool
	peakRSS     int64
}

// start starts the child and its watch: its memory from now on, ctx, and
// the timer once armed.
func (c *child) start(ctx context.Context, bin string, args, env []string, dir string, cloneflags uintptr) error {
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = env
	c.cmd.Dir = dir
	c.cmd.Stderr = &c.stderr
	// Its own process group, so that a kill reaches anything it started;
	// killed with this process, whatever ends it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: cloneflags, Pdeathsig: syscall.SIGKILL}
	in, err := c.cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		in.Close()
		return err
	}
	c.stdin, c.stdout = in, out
	if err := c.cmd.Start(); err != nil {
		return err
	}
	// It yields the CPU to the build it runs beside (a generator started
	// ahead builds its classifier while the build goes on): every thread
	// of its process group (its own), those it makes later inheriting it.
	// Raising a nice value needs no privilege; where it fails, it runs at
	// ours.
	_ = syscall.Setpriority(syscall.PRIO_PGRP, c.cmd.Process.Pid, childNice)
	c.timer = time.NewTimer(time.Hour)
	c.timer.Stop()
	c.done = make(chan struct{})
	go c.watch(ctx)
	return nil
}

// arm starts the run's time limit.
func (c *child) arm() { c.timer.Reset(c.opts.Timeout) }

// watch kills the child past its memory limit, its time limit or when ctx
// is done, until done is closed.
func (c *child) watch(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-ctx.Done():
			c.kill(&c.ctxDone)
			return
		case <-c.timer.C:
			c.kill(&c.timedOut)
			return
		case <-tick.C:
			if rss := residentBytes(c.cmd.Process.Pid); rss > c.opts.MaxMemory {
				c.kill(&c.memExceeded)
				return
			}
		}
	}
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

// wait reads the child's output up to the limit and reaps it; ctx done
// kills it.
func (c *child) wait(ctx context.Context) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { c.kill(nil) })
	defer stop()
	c.waitOnce.Do(func() {
		var buf bytes.Buffer
		_, err := io.Copy(&buf, io.LimitReader(c.stdout, c.opts.MaxOutput+1))
		if err == nil && int64(buf.Len()) > c.opts.MaxOutput {
			c.kill(&c.outExceeded)
		}
		// Drain what is left so that the child is not blocked on a full
		// pipe between the kill and its death.
		_, _ = io.Copy(io.Discard, c.stdout)
		c.waitErr = c.cmd.Wait()
		close(c.done)
		c.timer.Stop()
		// No state when another reaped it (waitid: ECHILD): an error.
		if st := c.cmd.ProcessState; st != nil {
			if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
				c.peakRSS = ru.Maxrss * 1024
			}
		}
		c.out = buf.Bytes()
	})
	return c.out, c.waitErr
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

// Validate checks a document that comes from elsewhere than a run (a
// cache): it must be a JSON document of format (as Run checks its child's)
// that names imageName: SPDX's document name, CycloneDX's metadata
// component, as the generator names the image it is given.
func Validate(doc []byte, format, imageName string) error {
	if format != FormatSPDXJSON && format != FormatCycloneDXJSON {
		return fmt.Errorf("unknown SBOM format %q (want %s or %s)", format, FormatSPDXJSON, FormatCycloneDXJSON)
	}
	if err := checkDocument(doc, format); err != nil {
		return err
	}
	var names struct {
		Name     string `json:"name"`
		Metadata struct {
			Component struct {
				Name string `json:"name"`
			} `json:"component"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(doc, &names); err != nil {
		return fmt.Errorf("no JSON document: %w", err)
	}
	got := names.Name
	if format == FormatCycloneDXJSON {
		got = names.Metadata.Component.Name
	}
	if got != imageName {
		return fmt.Errorf("a document that names %s, not %s", result.Excerpt(got, 200), imageName)
	}
	return nil
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
