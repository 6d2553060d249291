package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"
	"github.com/opencontainers/go-digest"
	chmodmode "github.com/tonistiigi/dchapes-mode"

	"github.com/slipway-dev/slipway/executor/copier"
	"github.com/slipway-dev/slipway/executor/idtools"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/source"
)

// copyFrom returns the --from of a COPY, or "".
func copyFrom(cmd instructions.Command) string {
	if c, ok := cmd.(*instructions.CopyCommand); ok {
		return c.From
	}
	return ""
}

// copyStep is what COPY and ADD share.
type copyStep struct {
	add      bool
	params   instructions.SourcesAndDest
	from     string
	chown    string
	chmod    string
	exclude  []string
	parents  bool
	checksum string
	// keepGitDir is ADD --keep-git-dir, nil when not given.
	keepGitDir *bool
	// unpack is ADD --unpack, nil when not given.
	unpack *bool
}

func (sb *stageBuilder) copy(ctx context.Context, c *instructions.CopyCommand) error {
	return sb.copyFiles(ctx, copyStep{params: c.SourcesAndDest, from: c.From, chown: c.Chown, chmod: c.Chmod, exclude: c.ExcludePatterns, parents: c.Parents})
}

func (sb *stageBuilder) add(ctx context.Context, c *instructions.AddCommand) error {
	return sb.copyFiles(ctx, copyStep{add: true, params: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, exclude: c.ExcludePatterns, checksum: c.Checksum, keepGitDir: c.KeepGitDir, unpack: c.Unpack})
}

// copyFiles plans a COPY or ADD: where the sources come from (the context,
// a stage, an image, git repositories or heredocs), the request, and with
// the cache on a key over the digests of exactly the files it reads. The
// copy itself runs later (copyPlan.run), and its layer holds exactly what
// it wrote.
func (sb *stageBuilder) copyFiles(ctx context.Context, s copyStep) error {
	name := "COPY"
	if s.add {
		name = "ADD"
	}
	refs, err := gitRefs(s.params.SourcePaths)
	if err != nil {
		return fail(result.ReasonDockerfileInvalid, err)
	}
	if refs != nil && !s.add {
		return fail(result.ReasonDockerfileInvalid, errors.New("source can't be a git ref for COPY"))
	}
	req, err := sb.copyRequest(s, refs)
	if err != nil {
		return err
	}
	p := &copyPlan{req: req, chown: s.chown, hasPaths: len(s.params.SourcePaths) > 0}
	p.heredocs, p.heredocNames = heredocFiles(s.params.SourceContents)
	keyParts := copyKeyParts(name, s, p.req.WorkDir)
	switch {
	case refs != nil:
		keyParts, err = sb.planGitSources(ctx, p, s, refs, keyParts)
	case !p.hasPaths:
		// Heredocs only.
	case s.from != "":
		keyParts, err = sb.planFromSources(ctx, p, s.from, keyParts)
	default:
		keyParts, err = sb.planContextSources(ctx, p, name, keyParts)
	}
	if err != nil {
		return err
	}
	if p.heredocs != nil && keyParts != nil {
		keyParts = append(keyParts, "heredocs", p.heredocs)
	}

	err = sb.fsStep(copyCreatedBy(name, s), keyParts, p.run)
	dest := s.params.DestPath
	if !path.IsAbs(dest) {
		dest = path.Join(p.req.WorkDir, dest)
	}
	sb.cur().copyDest = path.Clean("/" + dest)
	return err
}

// copyPlan is a planned COPY or ADD: the request and where its sources
// are, which run copies into the stage's root when the step runs.
type copyPlan struct {
	req   copier.Request
	chown string
	// hasPaths is false when the step copies heredocs only.
	hasPaths bool
	// srcRoot resolves the source tree when the step runs (nil for the
	// sources of git repositories, each of which has its own).
	srcRoot func(ctx context.Context) (string, error)
	// walked is the walk of the context the key was made from, which the
	// copy reads again rather than walking the context twice.
	walked *copier.Walked
	// gits are the repositories of an ADD of git sources, checked out.
	gits []gitSource
	// heredocs are the step's heredoc files by name, written when the step
	// runs, and copied after its paths (BuildKit's dispatchCopy adds them to
	// the file op after every path, whatever the order written).
	heredocs     map[string]string
	heredocNames []string
}

// copyRequest checks a COPY or ADD's flags and makes its request, without
// its source and destination roots (known when the step runs).
func (sb *stageBuilder) copyRequest(s copyStep, refs []*dfgitutil.GitRef) (copier.Request, error) {
	checksum, err := sb.copyChecksum(s, refs)
	if err != nil {
		return copier.Request{}, err
	}
	req := copier.Request{
		Checksum:   checksum,
		Sources:    s.params.SourcePaths,
		Dest:       s.params.DestPath,
		WorkDir:    sb.cfg.Config.WorkingDir,
		Add:        s.add,
		HTTPClient: sb.b.opts.HTTPClient,
		// COPY --parents applies to the local sources; heredocs have none.
		Parents: s.parents,
		// ADD --unpack: BuildKit's AttemptUnpack, for local and URL
		// sources (never git nor heredocs).
		Unpack:  s.unpack,
		TempDir: sb.b.opts.WorkDir,
	}
	if req.WorkDir == "" {
		req.WorkDir = "/"
	}
	if s.chmod != "" {
		if err := parseChmod(&req, s.chmod); err != nil {
			return copier.Request{}, err
		}
	}
	if len(s.exclude) > 0 {
		// The copier applies them below each source, as BuildKit does;
		// a pattern that does not parse is the Dockerfile's error.
		if _, err := patternmatcher.New(s.exclude); err != nil {
			return copier.Request{}, fail(result.ReasonDockerfileInvalid, fmt.Errorf("parsing --exclude: %w", err))
		}
		req.Exclude = s.exclude
	}
	return req, nil
}

// copyChecksum is ADD --checksum's digest for a URL source ("" without
// one; a git source's checksum is checked by fetchGitSources). BuildKit's
// rules (dockerfile2llb's dispatchCopy): one source, a git repository or an
// http(s) URL, whose content must have the digest.
func (sb *stageBuilder) copyChecksum(s copyStep, refs []*dfgitutil.GitRef) (digest.Digest, error) {
	if s.checksum != "" && len(s.params.SourcePaths) != 1 {
		return "", fail(result.ReasonDockerfileInvalid, errors.New("checksum can't be specified for multiple sources"))
	}
	if s.checksum == "" || refs != nil {
		return "", nil
	}
	if src := s.params.SourcePaths[0]; !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		return "", fail(result.ReasonDockerfileInvalid, errors.New("checksum requires HTTP(S) or Git sources"))
	}
	sum, err := sb.expand(s.checksum)
	if err != nil {
		return "", fail(result.ReasonDockerfileInvalid, err)
	}
	checksum, err := digest.Parse(sum)
	if err != nil {
		return "", fail(result.ReasonDockerfileInvalid, fmt.Errorf("invalid checksum digest format: %w", err))
	}
	return checksum, nil
}

// parseChmod sets req's mode from --chmod, as BuildKit's dispatchCopy
// reads it: an octal mode up to 07777, else a symbolic one as chmod(1)
// takes it (tonistiigi/dchapes-mode), which the copier applies to each
// entry's own mode. A value that looks numeric but is not octal gets the
// octal error, as in BuildKit.
func parseChmod(req *copier.Request, chmod string) error {
	nonOctal := fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", chmod)
	if m, err := strconv.ParseUint(chmod, 8, 32); err == nil {
		if m > 0o7777 {
			return fail(result.ReasonDockerfileInvalid, nonOctal)
		}
		// tar's FileInfo maps the Unix setuid, setgid and sticky bits,
		// which fs.FileMode keeps elsewhere.
		mode := (&tar.Header{Mode: int64(m)}).FileInfo().Mode()
		req.Chmod = &mode
		return nil
	}
	set, err := chmodmode.Parse(chmod)
	if err != nil {
		if ne := (*strconv.NumError)(nil); errors.As(err, &ne) {
			return fail(result.ReasonDockerfileInvalid, nonOctal)
		}
		return fail(result.ReasonDockerfileInvalid, fmt.Errorf("invalid chmod parameter: '%v': %w", chmod, err))
	}
	req.ModeSet = &set
	return nil
}

// heredocFiles returns a step's heredocs by file name, and the names in
// the order written (nil, nil when it has none).
func heredocFiles(contents []instructions.SourceContent) (map[string]string, []string) {
	var heredocs map[string]string
	var names []string
	for _, sc := range contents {
		if heredocs == nil {
			heredocs = map[string]string{}
		}
		heredocs[filepath.Base(sc.Path)] = sc.Data
		names = append(names, filepath.Base(sc.Path))
	}
	return heredocs, names
}

// copyKeyParts is the part of a COPY or ADD's cache key its flags make;
// the sources add theirs.
func copyKeyParts(name string, s copyStep, workDir string) []any {
	keyParts := []any{name, s.params.DestPath, workDir, s.chown, s.chmod, s.exclude}
	if s.chmod != "" {
		// Entries of older executors, which made missing parents 0755 whatever --chmod said,
		// must miss.
		keyParts = append(keyParts, "chmod-parents")
	}
	if s.parents {
		// Where the pivot ("/./") is changes where files land, not which
		// are read: the sources as written are part of the key.
		keyParts = append(keyParts, "parents", s.params.SourcePaths)
	}
	if s.unpack != nil {
		keyParts = append(keyParts, "unpack", *s.unpack)
	}
	return keyParts
}

// planGitSources checks out the repositories of an ADD of git sources
// and adds each one's commit to the key.
func (sb *stageBuilder) planGitSources(ctx context.Context, p *copyPlan, s copyStep, refs []*dfgitutil.GitRef, keyParts []any) ([]any, error) {
	sum, err := sb.expand(s.checksum)
	if err != nil {
		return nil, fail(result.ReasonDockerfileInvalid, err)
	}
	if p.gits, err = sb.fetchGitSources(ctx, refs, s.keepGitDir, sum); err != nil {
		return nil, err
	}
	for _, gs := range p.gits {
		keyParts = append(keyParts, "git", gs.remote, gs.ref, gs.subdir, gs.commit)
		if gs.keepGitDir {
			// .git/config names origin with its credentials masked,
			// which the key may hold.
			keyParts = append(keyParts, "keep-git-dir", maskCredentials(gs.rawRemote))
		}
	}
	p.req.Sources = []string{"."}
	return keyParts, nil
}

// planFromSources resolves COPY --from: a stage of this build (the key
// holds the stage's; nil when the stage is not cacheable) or an image (the
// key holds its digest). Either tree is made ready when the step runs.
func (sb *stageBuilder) planFromSources(ctx context.Context, p *copyPlan, from string, keyParts []any) ([]any, error) {
	p.req.KeepOwner = true
	if src := sb.b.plan.StageForFrom(from, sb.st.Index); src != nil {
		if sb.b.stages[src.Index].sb == nil {
			// Only an ONBUILD trigger can name a stage the plan left out.
			return nil, fail(result.ReasonDockerfileInvalid, fmt.Errorf("COPY --from=%s: the stage is not built for this target (an ONBUILD trigger cannot add stages)", from))
		}
		if k := sb.b.stages[src.Index].sb.key; k == "" {
			keyParts = nil // the stage is not cacheable
		} else {
			keyParts = append(keyParts, "stage", k, p.req.Sources)
		}
		p.srcRoot = func(ctx context.Context) (string, error) {
			tree, err := sb.b.stageTree(ctx, src.Index)
			if err != nil {
				return "", fmt.Errorf("preparing stage %s for COPY --from: %w", src.DisplayName(), err)
			}
			return tree, nil
		}
		return keyParts, nil
	}
	// An image is resolved for the build's target platform, whatever the
	// stage's: BuildKit makes COPY --from=IMAGE an unregistered stage
	// without a platform of its own (toCommand), which resolveBaseImage
	// resolves for platformOpt.targetPlatform ("the platform is the current
	// platform of the build", moby/moby#39233).
	img, err := sb.b.image(ctx, from, sb.b.platform)
	if err != nil {
		return nil, fail(result.ReasonBaseImagePullFailed, err)
	}
	keyParts = append(keyParts, "image", img.digest.String(), p.req.Sources)
	p.srcRoot = func(ctx context.Context) (string, error) {
		tree, err := img.extracted(ctx, sb.b)
		if err != nil {
			return "", fmt.Errorf("extracting %s: %w", from, err)
		}
		return tree, nil
	}
	return keyParts, nil
}

// planContextSources reads from the build context; with the cache on, it
// walks the sources now and keys the step on the digests of the files
// they name (nil, uncacheable, when a URL among them has no validators).
func (sb *stageBuilder) planContextSources(ctx context.Context, p *copyPlan, name string, keyParts []any) ([]any, error) {
	bc := sb.b.opts.Context
	if bc == nil {
		return nil, fail(result.ReasonCopyFailed, fmt.Errorf("%s needs a build context, and this build has none", name))
	}
	p.req.Ignore = bc.Excluded
	p.req.IgnoreDescend = bc.MayContainIncluded
	p.req.SrcRoot = bc.Dir
	p.srcRoot = func(context.Context) (string, error) { return bc.Dir, nil }
	if !sb.b.keys {
		return keyParts, nil
	}
	w, files, err := copier.WalkSources(ctx, p.req)
	if err != nil {
		return nil, fail(result.ReasonCopyFailed, err)
	}
	p.walked = w
	sum := copier.KeyOf(files)
	for _, f := range files {
		if strings.Contains(f.Path, "://") && f.Digest == "" {
			sum = "" // a URL without validators is never cached
		}
	}
	if sum == "" {
		return nil, nil
	}
	return append(keyParts, "context", sum), nil
}

// copyCreatedBy is a COPY or ADD's history entry, as BuildKit writes it.
func copyCreatedBy(name string, s copyStep) string {
	msg := []string{name}
	if s.parents {
		msg = append(msg, "--parents")
	}
	if s.chown != "" {
		msg = append(msg, "--chown="+s.chown)
	}
	if s.chmod != "" {
		msg = append(msg, "--chmod="+s.chmod)
	}
	for _, src := range s.params.SourcePaths {
		// A URL's password never reaches the image's history.
		msg = append(msg, source.RedactURL(src))
	}
	for _, sc := range s.params.SourceContents {
		msg = append(msg, "<<"+sc.Path)
	}
	msg = append(msg, s.params.DestPath)
	return strings.Join(msg, " ") + " # buildkit"
}

// run is the step's action: it copies the sources, then the heredocs, into
// root, and returns the topmost paths it changed.
func (p *copyPlan) run(ctx context.Context, sb *stageBuilder, root string) ([]string, error) {
	req := p.req
	req.DestRoot = root
	if p.srcRoot != nil { // git sources set it per repository
		root, err := p.srcRoot(ctx)
		if err != nil {
			return nil, fail(result.ReasonCopyFailed, err)
		}
		req.SrcRoot = root
	}
	if p.chown != "" {
		uid, gid, err := idtools.ResolveChown(root, p.chown)
		if err != nil {
			return nil, fail(result.ReasonCopyFailed, fmt.Errorf("resolving --chown=%s: %w", p.chown, err))
		}
		req.Chown = &copier.Owner{UID: uid, GID: gid}
	}
	var res copier.Result
	var err error
	switch {
	case !p.hasPaths:
	case p.walked != nil:
		res, err = p.walked.Copy(ctx, req)
		p.walked = nil // the step runs once; let the walk go
	case p.gits != nil:
		// Each repository's tree goes to the destination, in order.
		for _, gs := range p.gits {
			req.SrcRoot = gs.dir
			var r copier.Result
			if r, err = copier.Copy(ctx, req); err != nil {
				break
			}
			res.Changed = append(res.Changed, r.Changed...)
		}
	default:
		res, err = copier.Copy(ctx, req)
	}
	if err == nil && p.heredocs != nil {
		var r copier.Result
		r, err = sb.copyHeredocs(ctx, req, p.heredocs, p.heredocNames)
		res.Changed = append(res.Changed, r.Changed...)
	}
	if err != nil {
		return nil, fail(result.ReasonCopyFailed, err)
	}
	if res.Changed == nil {
		return []string{}, nil
	}
	return topmost(res.Changed), nil
}

// copyHeredocs copies a step's heredocs, in the order written, to the
// destination of req: each a file 0644 (before --chmod) owned by root
// (before --chown), as BuildKit's dispatchCopy makes each with llb.Mkfile
// in a scratch state and copies it from there, never extracted by ADD.
func (sb *stageBuilder) copyHeredocs(ctx context.Context, req copier.Request, heredocs map[string]string, names []string) (copier.Result, error) {
	dir, err := os.MkdirTemp(sb.b.opts.WorkDir, "heredoc-")
	if err != nil {
		return copier.Result{}, fail(result.ReasonInternal, err)
	}
	defer os.RemoveAll(dir)
	for name, data := range heredocs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return copier.Result{}, fail(result.ReasonInternal, err)
		}
		// Whatever the umask.
		if err := os.Chmod(filepath.Join(dir, name), 0o644); err != nil {
			return copier.Result{}, fail(result.ReasonInternal, err)
		}
	}
	req.SrcRoot, req.Sources = dir, names
	req.Ignore, req.IgnoreDescend, req.KeepOwner, req.Add, req.Checksum, req.Parents, req.Unpack = nil, nil, false, false, "", false, nil
	return copier.Copy(ctx, req)
}

// securePath resolves p (absolute in the stage's file system) to a host
// path inside root, following symlinks as a chroot would.
func securePath(root, p string) (string, error) {
	return securejoin.SecureJoin(root, p)
}

// parsePort turns an EXPOSE word into "port/proto" entries (ranges
// expanded), as Docker does.
func parsePort(raw string) ([]string, error) {
	spec := raw
	if i := strings.LastIndex(spec, ":"); i >= 0 {
		// [ip:]hostPort:containerPort: only the container port is exposed.
		spec = spec[i+1:]
	}
	port, proto, _ := strings.Cut(spec, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return nil, fmt.Errorf("invalid port %q: invalid proto: %s", raw, proto)
	}
	startS, endS, isRange := strings.Cut(port, "-")
	start, err := strconv.Atoi(startS)
	if err != nil || start < 0 || start > 65535 {
		return nil, fmt.Errorf("invalid containerPort: %s", port)
	}
	end := start
	if isRange {
		end, err = strconv.Atoi(endS)
		if err != nil || end < start || end > 65535 {
			return nil, fmt.Errorf("invalid containerPort: %s", port)
		}
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

// topmost drops the paths that lie under another one of paths: a snapshot
// of a path covers what is below it, and tens of thousands of scopes cost
// more to resolve than one walk.
func topmost(paths []string) []string {
	in := make(map[string]bool, len(paths))
	for _, p := range paths {
		in[p] = true
	}
	var out []string
	for _, p := range paths {
		covered := false
		for d := path.Dir(p); d != "." && d != "/" && !covered; d = path.Dir(d) {
			covered = in[d]
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
