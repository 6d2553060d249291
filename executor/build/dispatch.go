package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/sys/signal"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/idtools"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/run"
)

// runKeyVersion is in every RUN's cache key: it changes when a RUN given the same inputs
// runs differently, so that entries an older executor made miss instead of serving the old
// result. 2: HOME comes from the user's /etc/passwd entry when the environment has none.
// 3: a step without USER runs with root's supplementary groups from /etc/group.
const runKeyVersion = 3

// dispatch applies one instruction to the stage, with Docker's semantics
// (BuildKit's dockerfile2llb is the reference for each rule).
func (sb *stageBuilder) dispatch(ctx context.Context, cmd instructions.Command) error {
	if err := sb.expandWords(cmd); err != nil {
		return err
	}
	switch c := cmd.(type) {
	case *instructions.ArgCommand:
		return sb.arg(c)
	case *instructions.EnvCommand:
		return sb.applyEnv(c)
	case *instructions.LabelCommand:
		return sb.applyLabel(c)
	case *instructions.MaintainerCommand:
		sb.cfg.Author = c.Maintainer
		return sb.meta("MAINTAINER " + c.Maintainer)
	case *instructions.WorkdirCommand:
		return sb.workdir(c)
	case *instructions.UserCommand:
		sb.cfg.Config.User = c.User
		return sb.meta("USER " + c.User)
	case *instructions.ExposeCommand:
		return sb.expose(c)
	case *instructions.VolumeCommand:
		return sb.applyVolume(c)
	case *instructions.StopSignalCommand:
		if _, perr := signal.ParseSignal(c.Signal); perr != nil {
			return fail(result.ReasonDockerfileInvalid, perr)
		}
		sb.cfg.Config.StopSignal = c.Signal
		return sb.meta("STOPSIGNAL " + c.Signal)
	case *instructions.ShellCommand:
		sb.cfg.Config.Shell = slices.Clone(c.Shell)
		return sb.meta(fmt.Sprintf("SHELL %v", c.Shell))
	case *instructions.OnbuildCommand:
		// BuildKit records no history entry for ONBUILD.
		sb.cfg.Config.OnBuild = append(sb.cfg.Config.OnBuild, c.Expression)
		return nil
	case *instructions.CmdCommand:
		return sb.applyCmd(c)
	case *instructions.EntrypointCommand:
		return sb.applyEntrypoint(c)
	case *instructions.HealthCheckCommand:
		h := *c.Health
		h.Test = slices.Clone(h.Test)
		sb.cfg.Config.Healthcheck = &h
		return sb.meta(fmt.Sprintf("HEALTHCHECK %+v", h))
	case *instructions.RunCommand:
		return sb.run(ctx, c)
	case *instructions.CopyCommand:
		return sb.copy(ctx, c)
	case *instructions.AddCommand:
		return sb.add(ctx, c)
	default:
		return fail(result.ReasonDockerfileInvalid, fmt.Errorf("unsupported instruction %s", cmd.Name()))
	}
}

// expandWords expands the words of cmd with the stage's environment (ENV
// and ARGs in scope), for every instruction that supports it except ARG,
// whose values are expanded one by one as they are declared; and the raw
// words (quotes kept) of those that expand them so.
func (sb *stageBuilder) expandWords(cmd instructions.Command) error {
	if _, isArg := cmd.(*instructions.ArgCommand); !isArg {
		if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
			if err := ex.Expand(sb.expand); err != nil {
				return fail(result.ReasonDockerfileInvalid, err)
			}
		}
	}
	if ex, ok := cmd.(instructions.SupportsSingleWordExpansionRaw); ok {
		lex := shell.NewLex('\\')
		lex.SkipProcessQuotes = true
		err := ex.ExpandRaw(func(word string) (string, error) {
			s, _, err := lex.ProcessWord(word, sb.env)
			return s, err
		})
		if err != nil {
			return fail(result.ReasonDockerfileInvalid, err)
		}
	}
	return nil
}

// applyEnv applies ENV to the stage's environment and config.
func (sb *stageBuilder) applyEnv(c *instructions.EnvCommand) error {
	var msg strings.Builder
	msg.WriteString("ENV")
	for _, kv := range c.Env {
		sb.env.Set(kv.Key, kv.Value)
		sb.cfg.Config.Env = setEnv(sb.cfg.Config.Env, kv.Key, kv.Value)
		msg.WriteString(" " + kv.String())
	}
	return sb.meta(msg.String())
}

// applyLabel applies LABEL to the config.
func (sb *stageBuilder) applyLabel(c *instructions.LabelCommand) error {
	var msg strings.Builder
	msg.WriteString("LABEL")
	if sb.cfg.Config.Labels == nil {
		sb.cfg.Config.Labels = map[string]string{}
	}
	for _, kv := range c.Labels {
		sb.cfg.Config.Labels[kv.Key] = kv.Value
		msg.WriteString(" " + kv.String())
	}
	return sb.meta(msg.String())
}

// applyVolume applies VOLUME to the config.
func (sb *stageBuilder) applyVolume(c *instructions.VolumeCommand) error {
	if sb.cfg.Config.Volumes == nil {
		sb.cfg.Config.Volumes = map[string]struct{}{}
	}
	for _, v := range c.Volumes {
		if v == "" {
			return fail(result.ReasonDockerfileInvalid, errors.New("VOLUME specified can not be an empty string"))
		}
		sb.cfg.Config.Volumes[v] = struct{}{}
	}
	return sb.meta(fmt.Sprintf("VOLUME %v", c.Volumes))
}

// applyCmd applies CMD to the config.
func (sb *stageBuilder) applyCmd(c *instructions.CmdCommand) error {
	args := c.CmdLine
	if c.PrependShell {
		args = sb.withShell(args)
	}
	sb.cfg.Config.Cmd = slices.Clone(args)
	sb.cfg.Config.ArgsEscaped = true //nolint:staticcheck // Docker still sets it.
	sb.cmdSet = true
	return sb.meta(fmt.Sprintf("CMD %q", args))
}

// applyEntrypoint applies ENTRYPOINT to the config: it resets a CMD the stage
// inherited, not one it set.
func (sb *stageBuilder) applyEntrypoint(c *instructions.EntrypointCommand) error {
	args := c.CmdLine
	if c.PrependShell {
		args = sb.withShell(args)
	}
	sb.cfg.Config.Entrypoint = slices.Clone(args)
	if !sb.cmdSet {
		sb.cfg.Config.Cmd = nil
	}
	return sb.meta(fmt.Sprintf("ENTRYPOINT %q", args))
}

// expand is the word expander of the stage's environment.
func (sb *stageBuilder) expand(word string) (string, error) {
	s, _, err := sb.b.plan.Lex.ProcessWord(word, sb.env)
	return s, err
}

// withShell prefixes a shell-form command with the SHELL (or /bin/sh -c).
func (sb *stageBuilder) withShell(args []string) []string {
	sh := slices.Clone(sb.cfg.Config.Shell)
	if len(sh) == 0 {
		sh = []string{"/bin/sh", "-c"}
	}
	return append(sh, strings.Join(args, " "))
}

// setEnv replaces or appends k in a KEY=VALUE list.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if key, _, _ := strings.Cut(kv, "="); key == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// arg declares build arguments in the stage: a --build-arg value wins, then
// the declared default (expanded now), then a global ARG of the same name.
// Values reach later instructions and RUN's environment, never the config.
func (sb *stageBuilder) arg(c *instructions.ArgCommand) error {
	var parts []string
	for _, kv := range c.Args {
		sb.b.sh.mu.Lock()
		sb.b.sh.usedArg[kv.Key] = true
		sb.b.sh.mu.Unlock()
		bv, hasValue := sb.b.opts.BuildArgs[kv.Key]
		switch {
		case hasValue:
			kv.Value = &bv
		case kv.Value != nil:
			v, err := sb.expand(*kv.Value)
			if err != nil {
				return fail(result.ReasonDockerfileInvalid, fmt.Errorf("expanding ARG %s: %w", kv.Key, err))
			}
			kv.Value = &v
		default:
			if v, ok := sb.b.plan.GlobalArgs.Get(kv.Key); ok {
				kv.Value = &v
			}
		}
		if kv.Value != nil {
			sb.env.Set(kv.Key, *kv.Value)
		}
		sb.args = append(sb.args, kv)
		s := kv.Key
		if kv.Value != nil {
			s += "=" + *kv.Value
		}
		parts = append(parts, s)
	}
	return sb.meta("ARG " + strings.Join(parts, " "))
}

// workdir sets the working directory (relative paths join the current one)
// and, when it runs, creates it owned by the current USER, as BuildKit
// does. Any WORKDIR but / has a layer, the empty one when the directory was
// there (BuildKit's dispatchWorkdir makes a mkdir file op of it).
func (sb *stageBuilder) workdir(c *instructions.WorkdirCommand) error {
	wd := c.Path
	if !path.IsAbs(wd) {
		cur := sb.cfg.Config.WorkingDir
		if cur == "" {
			cur = "/"
		}
		wd = path.Join(cur, wd)
	}
	wd = path.Clean(wd)
	sb.cfg.Config.WorkingDir = wd
	if wd == "/" {
		return sb.meta("WORKDIR " + wd)
	}
	user := sb.cfg.Config.User
	return sb.fsStep("WORKDIR "+wd, []any{"WORKDIR", wd, user}, func(ctx context.Context, sb *stageBuilder, root string) ([]string, error) {
		created, err := sb.mkdirAll(root, wd, user)
		if err != nil {
			return nil, fail(result.ReasonRunFailed, fmt.Errorf("creating WORKDIR %s: %w", wd, err))
		}
		if created == nil {
			created = []string{}
		}
		return created, nil
	})
}

// mkdirAll creates dir (absolute, inside the stage root) and its missing
// parents with mode 0755, owned by user, and returns the created paths
// (relative to the root). Symlinks on the way resolve inside the root.
func (sb *stageBuilder) mkdirAll(root, dir, user string) ([]string, error) {
	var uid, gid int
	if user != "" {
		u, err := idtools.ResolveUser(root, user)
		if err != nil {
			return nil, err
		}
		uid, gid = int(u.UID), int(u.GID)
	}
	var created []string
	cur := "/"
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		next := path.Join(cur, part)
		host, err := securePath(root, next)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(host)
		switch {
		case err == nil && fi.IsDir():
		case err == nil:
			return nil, fmt.Errorf("%s is not a directory", next)
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(host, 0o755); err != nil {
				return nil, err
			}
			if err := os.Lchown(host, uid, gid); err != nil && os.Geteuid() == 0 {
				return nil, err
			}
			rel, _ := filepath.Rel(root, host)
			created = append(created, filepath.ToSlash(rel))
		default:
			return nil, err
		}
		// Continue from the resolved location (a symlinked parent).
		rel, _ := filepath.Rel(root, host)
		cur = "/" + filepath.ToSlash(rel)
	}
	return created, nil
}

func (sb *stageBuilder) expose(c *instructions.ExposeCommand) error {
	var ports []string
	for _, p := range c.Ports {
		words, err := sb.b.plan.Lex.ProcessWords(p, sb.env)
		if err != nil {
			return fail(result.ReasonDockerfileInvalid, err)
		}
		for _, w := range words {
			ps, err := parsePort(w)
			if err != nil {
				return fail(result.ReasonDockerfileInvalid, err)
			}
			ports = append(ports, ps...)
		}
	}
	if sb.cfg.Config.ExposedPorts == nil {
		sb.cfg.Config.ExposedPorts = map[string]struct{}{}
	}
	for _, p := range ports {
		sb.cfg.Config.ExposedPorts[p] = struct{}{}
	}
	return sb.meta(fmt.Sprintf("EXPOSE %v", ports))
}

// run plans a RUN step: the command line (SHELL applied), the environment
// it sees (ENV, ARGs in scope, proxy build args) and its working directory
// and user, all fixed now; the step runs later in the stage's root
// (runPlan.run).
func (sb *stageBuilder) run(ctx context.Context, c *instructions.RunCommand) error {
	network, err := runNetwork(c)
	if err != nil {
		return err
	}
	p := &runPlan{args: c.CmdLine, network: network, userSpec: sb.cfg.Config.User, wd: sb.cfg.Config.WorkingDir}
	var script *runMount
	if len(c.Files) > 0 {
		if p.args, script, err = heredocArgs(c); err != nil {
			return fail(result.ReasonDockerfileInvalid, err)
		}
	}
	if c.PrependShell {
		p.args = sb.withShell(p.args)
	}
	p.env = sb.env.Clone()
	keyEnv := p.env.Slice() // proxy settings never invalidate the cache, as in Docker
	for _, kv := range proxyEnv(sb.b.opts.BuildArgs) {
		k, v, _ := strings.Cut(kv, "=")
		if _, set := p.env.Get(k); !set {
			p.env.Set(k, v)
		}
	}
	if p.wd == "" {
		p.wd = "/"
	}
	mounts, mountKeys, cacheable, err := sb.planMounts(ctx, c, p.wd)
	if err != nil {
		return err
	}
	p.mounts = mounts
	sb.cur().mounts = mounts
	if script != nil {
		// First, as BuildKit adds it before the --mount ones.
		p.mounts = append([]*runMount{script}, mounts...)
		p.dev = []string{path.Base(script.target)}
	}
	var keyParts []any
	if cacheable {
		keyParts = sb.runKeyParts(p, keyEnv, script, mountKeys)
	}
	createdBy := "RUN " + runCommandString(p.args, sb.args, sb.env) + " # buildkit"
	return sb.fsStep(createdBy, keyParts, p.run)
}

// runNetwork checks RUN's flags, and returns the network its --network
// asks for.
func runNetwork(c *instructions.RunCommand) (run.Network, error) {
	network := run.NetworkDefault
	for _, f := range c.FlagsUsed {
		switch {
		case f == "mount":
		case f == "network":
			// BuildKit's dispatchRunNetwork: none is pb.NetMode_NONE, a network
			// namespace of the step's own with only lo; default and host are the
			// executor's network here (the parser refuses any other value).
			if instructions.GetNetwork(c) == instructions.NetworkNone {
				network = run.NetworkNone
			}
		case f == "security":
			// sandbox is the default; insecure needs BuildKit's
			// security.insecure entitlement, which this executor never
			// grants: it runs unprivileged, and a step with every capability
			// would hold the pod's.
			if instructions.GetSecurity(c) == instructions.SecurityInsecure {
				return network, fail(result.ReasonDockerfileInvalid, errors.New("RUN --security=insecure: entitlement security.insecure is not allowed: this executor never runs a step with full privileges"))
			}
		default:
			return network, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --%s is not supported by this executor", f))
		}
	}
	return network, nil
}

// defaultMountPoints are the mount points of the OCI spec's default mounts
// that runc makes in a step's root where it has none (/run BuildKit drops).
// They stay in the step's layer: BuildKit's executor.MountStubsCleaner
// removes only the stubs of /etc/hosts, /etc/resolv.conf and the step's own
// mounts. The chroot runner makes them in the root as runc does; in place
// the pod's cover them, and the snapshot adds the ones the image lacks
// (rootfs.DefaultMounts).
var defaultMountPoints = []string{"proc", "dev", "sys"}

// defaultMountsOf returns the default mount points a RUN with mounts keeps:
// all but those a mount's target is at or under. Where the image lacks
// one, BuildKit's MountStubsCleaner (RemoveMountStubsRecursive, which the
// Dockerfile frontend always sets) records it as a stub of that mount, and
// removes it, empty once its file system is unmounted: a RUN heredoc's
// /dev/pipes leaves no /dev. The chroot runner gets this from the mount's
// own stubs (runmount.go).
func defaultMountsOf(mounts []*runMount) []string {
	var out []string
	for _, n := range defaultMountPoints {
		if !slices.ContainsFunc(mounts, func(m *runMount) bool {
			return m.target != "" && rootfs.IsUnder(strings.TrimPrefix(m.target, "/"), n)
		}) {
			out = append(out, n)
		}
	}
	return out
}

// runKeyParts is a cacheable RUN step's part of its cache key: the command,
// the environment without proxy settings, where and as whom it runs, its
// heredoc script and mounts, and its network and host name when not the
// default.
func (sb *stageBuilder) runKeyParts(p *runPlan, keyEnv []string, script *runMount, mountKeys []mountKey) []any {
	keyParts := []any{"RUN", runKeyVersion, p.args, keyEnv, p.wd, p.userSpec}
	if script != nil {
		// The command names the script; its content is in BuildKit's key
		// as the mounted file's.
		keyParts = append(keyParts, "script", script.script, string(script.secret))
	}
	if len(mountKeys) > 0 {
		keyParts = append(keyParts, "mounts", mountKeys)
	}
	if p.network != run.NetworkDefault {
		// Only then, so that the keys of steps with the default network stay
		// those older executors made. default and host are one key: the same
		// network here.
		keyParts = append(keyParts, "network", p.network.String())
	}
	if h := sb.b.opts.Hostname; h != "" {
		// BuildKit's key has it (ExecOp Meta.Hostname); only when set, so the
		// keys of steps without one stay those older executors made.
		keyParts = append(keyParts, "hostname", h)
	}
	return keyParts
}

// runPlan is a planned RUN step, which run runs in the stage's root.
type runPlan struct {
	args []string
	// env is the step's environment, proxy build args included; HOME and
	// secrets in environment variables are added when it runs.
	env      *dockerfile.Env
	userSpec string
	wd       string
	// mounts are the step's mounts, its heredoc script first.
	mounts  []*runMount
	dev     []string
	network run.Network
}

// run is the step's action: it resolves the user in root, mounts what the
// step mounts, and runs the command with its output in the build's log.
func (p *runPlan) run(ctx context.Context, sb *stageBuilder, root string) ([]string, error) {
	user, err := idtools.ResolveUser(root, p.userSpec)
	if err != nil {
		return nil, fail(result.ReasonRunFailed, fmt.Errorf("resolving USER: %w", err))
	}
	env := p.env.Clone()
	// BuildKit passes no HOME; runc's setupUser sets the home of the
	// step's uid in /etc/passwd ("/" without an entry) when the
	// environment has none. Only the step sees it, never the config.
	if _, ok := env.Get("HOME"); !ok {
		env.Set("HOME", user.Home)
	}
	if p.wd != "/" {
		// The runtime creates a missing working directory (owned by
		// root); the snapshot after the step records it.
		if _, err := sb.mkdirAll(root, p.wd, ""); err != nil {
			return nil, fail(result.ReasonRunFailed, fmt.Errorf("creating the working directory %s: %w", p.wd, err))
		}
	}
	for _, m := range p.mounts {
		if m.env != "" {
			env.Set(m.env, string(m.secret))
		}
	}
	unmount, err := sb.mount(ctx, root, p.mounts)
	if err != nil {
		return nil, err
	}
	out := newLinePrefixer(sb.b.log, sb.prefix+" ")
	releaseMemory()
	err = sb.b.opts.Runner.Run(ctx, run.Spec{
		Root:     root,
		Args:     p.args,
		Env:      env.Slice(),
		Dir:      p.wd,
		UID:      user.UID,
		GID:      user.GID,
		Groups:   withPrimaryGroup(user.Groups, user.GID),
		Stdout:   out,
		Stderr:   out,
		Dev:      p.dev,
		Network:  p.network,
		Hostname: sb.b.opts.Hostname,
		// The step's seccomp filter allows the machine's compat ABI
		// only for a stage of that platform.
		CompatArch: sb.compatArch(),
	})
	out.Flush()
	if uerr := unmount(); uerr != nil && err == nil {
		return nil, fail(result.ReasonRunFailed, uerr)
	}
	sb.defaultMounts = defaultMountsOf(p.mounts)
	if err != nil {
		var xe *run.ExitError
		if errors.As(err, &xe) {
			return nil, &Error{Reason: result.ReasonRunFailed, ExitCode: xe.Code,
				Err: fmt.Errorf("process %q did not complete successfully: exit code: %d", strings.Join(p.args, " "), xe.Code)}
		}
		return nil, fail(result.ReasonRunFailed, fmt.Errorf("running %q: %w", strings.Join(p.args, " "), err))
	}
	return nil, nil
}

// compatArch is the run.Spec CompatArch of the stage's RUN steps: its
// platform's architecture when that is not this machine's but the
// machine runs its executables itself (Emulator.Native: linux/386 on
// amd64, with no emulator, as BuildKit does, where containerd's
// platforms.Only lists it), else empty, as for executables an emulator
// runs, whose interpreter makes native system calls.
func (sb *stageBuilder) compatArch() string {
	p := sb.platform
	if p.Architecture == "" || p.Architecture == dockerfile.NativePlatform().Architecture || !sb.b.opts.Emulator.Native(p) {
		return ""
	}
	return p.Architecture
}

// releaseMemory gives the heap's garbage and free pages back to the system
// before a RUN starts its processes, when there are megabytes of it (a COPY
// of many files leaves that much): the peak of the build, ours and the
// command's together, then does not carry it. It costs a collection, so
// small heaps are left alone.
func releaseMemory() {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	var heap uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			heap += v.Value.Uint64()
		}
	}
	if heap > 16<<20 {
		debug.FreeOSMemory()
	}
}

// runCommandString is the history text of a RUN: the build args in scope
// (as `|N K=V ...`) and the command, as BuildKit writes it.
func runCommandString(args []string, buildArgs []instructions.KeyValuePairOptional, env *dockerfile.Env) string {
	var kvs []string
	idx := map[string]int{}
	for _, a := range buildArgs {
		v, ok := env.Get(a.Key)
		if !ok {
			v = a.ValueString()
		}
		if i, ok := idx[a.Key]; ok {
			kvs[i] = a.Key + "=" + v
			continue
		}
		idx[a.Key] = len(kvs)
		kvs = append(kvs, a.Key+"="+v)
	}
	if len(kvs) > 0 {
		kvs = append([]string{fmt.Sprintf("|%d", len(kvs))}, kvs...)
	}
	return strings.Join(append(kvs, args...), " ")
}

// heredocArgs turns a RUN heredoc into the command line BuildKit runs
// (dockerfile2llb's dispatchRun). A single heredoc whose content (chomped
// with <<-) starts with #! is a script: BuildKit writes it, mode 0755, as
// a file named after the heredoc's word in a scratch directory mounted
// read-only at /dev/pipes, and runs /dev/pipes/WORD through the shell, so
// the #! line picks the interpreter. script is that mount, emulated as
// RUN --mount is (runmount.go); nil for other heredocs, whose content is
// the shell's command.
func heredocArgs(c *instructions.RunCommand) (args []string, script *runMount, err error) {
	args = c.CmdLine
	if len(args) != 1 || !c.PrependShell {
		return nil, nil, errors.New("parsing produced an invalid run command")
	}
	if hd := parser.MustParseHeredoc(args[0]); hd != nil {
		data := c.Files[0].Data
		if c.Files[0].Chomp {
			data = parser.ChompHeredocContent(data)
		}
		if strings.HasPrefix(data, "#!") {
			name := c.Files[0].Name
			script = &runMount{typ: mountTypeScript, target: heredocDir, script: name, secret: []byte(data), mode: 0o755}
			return []string{path.Join(heredocDir, name)}, script, nil
		}
		return []string{data}, nil, nil
	}
	var b strings.Builder
	b.WriteString(args[0])
	for _, f := range c.Files {
		b.WriteByte('\n')
		b.WriteString(f.Data)
		b.WriteString(f.Name)
	}
	return []string{b.String()}, nil, nil
}

// linePrefixer writes each complete line to w with a prefix.
type linePrefixer struct {
	w      io.Writer
	prefix string
	buf    bytes.Buffer
}

func newLinePrefixer(w io.Writer, prefix string) *linePrefixer {
	return &linePrefixer{w: w, prefix: prefix}
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.buf.Write(p)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := l.buf.Next(i + 1)
		if _, err := io.WriteString(l.w, l.prefix+string(line)); err != nil {
			return len(p), nil //nolint:nilerr // logging must never fail the step
		}
	}
	return len(p), nil
}

// Flush writes a last unterminated line.
func (l *linePrefixer) Flush() {
	if l.buf.Len() > 0 {
		rest := l.buf.String()
		l.buf.Reset()
		io.WriteString(l.w, l.prefix+rest+"\n")
	}
}

// withPrimaryGroup adds the primary group to the supplementary ones, as
// BuildKit does (moby/buildkit#3651) and as `id` then shows it.
func withPrimaryGroup(groups []uint32, gid uint32) []uint32 {
	if slices.Contains(groups, gid) {
		return groups
	}
	return append(slices.Clone(groups), gid)
}

// proxyEnv is the proxy environment a RUN step gets from the build args,
// as BuildKit: each of HTTP_PROXY, HTTPS_PROXY, FTP_PROXY, NO_PROXY and
// ALL_PROXY is taken from a build arg of that name in any case (when two
// spellings are given, the one sorting last, the lower-case one, wins:
// dockerfile2llb proxyEnvFromBuildArgs) and, when not empty, set in both
// spellings (llbsolver's proxyEnvList).
func proxyEnv(buildArgs map[string]string) []string {
	var out []string
	for _, name := range []string{"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"} {
		v := ""
		for _, k := range slices.Sorted(maps.Keys(buildArgs)) {
			if strings.EqualFold(k, name) {
				v = buildArgs[k]
			}
		}
		if v != "" {
			out = append(out, name+"="+v, strings.ToLower(name)+"="+v)
		}
	}
	return out
}
