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
// a stage, an image, or heredocs), the request, and with the cache on a key
// over the digests of exactly the files it reads. The copy itself runs
// later, and its layer holds exactly what it wrote.
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
	var checksum digest.Digest
	// BuildKit's rules (dockerfile2llb's dispatchCopy): one source, a git
	// repository (see fetchGitSources) or an http(s) URL, whose content
	// must have the digest.
	if s.checksum != "" && len(s.params.SourcePaths) != 1 {
		return fail(result.ReasonDockerfileInvalid, errors.New("checksum can't be specified for multiple sources"))
	}
	if s.checksum != "" && refs == nil {
		if src := s.params.SourcePaths[0]; !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
			return fail(result.ReasonDockerfileInvalid, errors.New("checksum requires HTTP(S) or Git sources"))
		}
		sum, err := sb.expand(s.checksum)
		if err != nil {
			return fail(result.ReasonDockerfileInvalid, err)
		}
		if checksum, err = digest.Parse(sum); err != nil {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("invalid checksum digest format: %w", err))
		}
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
		// BuildKit's dispatchCopy: an octal mode up to 07777, else a
		// symbolic one as chmod(1) takes it (tonistiigi/dchapes-mode), which
		// the copier applies to each entry's own mode. A value that looks
		// numeric but is not octal gets the octal error, as in BuildKit.
		nonOctal := fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s.chmod)
		if m, err := strconv.ParseUint(s.chmod, 8, 32); err == nil {
			if m > 0o7777 {
				return fail(result.ReasonDockerfileInvalid, nonOctal)
			}
			// tar's FileInfo maps the Unix setuid, setgid and sticky bits,
			// which fs.FileMode keeps elsewhere.
			mode := (&tar.Header{Mode: int64(m)}).FileInfo().Mode()
			req.Chmod = &mode
		} else {
			set, err := chmodmode.Parse(s.chmod)
			if err != nil {
				if ne := (*strconv.NumError)(nil); errors.As(err, &ne) {
					return fail(result.ReasonDockerfileInvalid, nonOctal)
				}
				return fail(result.ReasonDockerfileInvalid, fmt.Errorf("invalid chmod parameter: '%v': %w", s.chmod, err))
			}
			req.ModeSet = &set
		}
	}
	if len(s.exclude) > 0 {
		// The copier applies them below each source, as BuildKit does;
		// a pattern that does not parse is the Dockerfile's error.
		if _, err := patternmatcher.New(s.exclude); err != nil {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("parsing --exclude: %w", err))
		}
		req.Exclude = s.exclude
	}

	// srcRoot resolves the source tree when the step runs.
	var srcRoot func(ctx context.Context) (string, error)
	// heredocs are the step's heredoc files by name, written when the step
	// runs, and copied after its paths (BuildKit's dispatchCopy adds them to
	// the file op after every path, whatever the order written).
	var heredocs map[string]string
	var heredocNames []string
	for _, sc := range s.params.SourceContents {
		if heredocs == nil {
			heredocs = map[string]string{}
		}
		heredocs[filepath.Base(sc.Path)] = sc.Data
		heredocNames = append(heredocNames, filepath.Base(sc.Path))
	}
	hasPaths := len(s.params.SourcePaths) > 0
	// walked is the walk of the context the key was made from, which the
	// copy reads again rather than walking the context twice.
	var walked *copier.Walked
	keyParts := []any{name, s.params.DestPath, req.WorkDir, s.chown, s.chmod, s.exclude}
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
	// gits are the repositories of an ADD of git sources, checked out.
	var gits []gitSource
	switch {
	case refs != nil:
		sum, err := sb.expand(s.checksum)
		if err != nil {
			return fail(result.ReasonDockerfileInvalid, err)
		}
		if gits, err = sb.fetchGitSources(ctx, refs, s.keepGitDir, sum); err != nil {
			return err
		}
		for _, gs := range gits {
			keyParts = append(keyParts, "git", gs.remote, gs.ref, gs.subdir, gs.commit)
			if gs.keepGitDir {
				// .git/config names origin with its credentials masked,
				// which the key may hold.
				keyParts = append(keyParts, "keep-git-dir", maskCredentials(gs.rawRemote))
			}
		}
		req.Sources = []string{"."}
	case !hasPaths:
		// Heredocs only.
	case s.from != "":
		req.KeepOwner = true
		if src := sb.b.plan.StageForFrom(s.from, sb.st.Index); src != nil {
			if sb.b.stages[src.Index].sb == nil {
				// Only an ONBUILD trigger can name a stage the plan left out.
				return fail(result.ReasonDockerfileInvalid, fmt.Errorf("COPY --from=%s: the stage is not built for this target (an ONBUILD trigger cannot add stages)", s.from))
			}
			if k := sb.b.stages[src.Index].sb.key; k == "" {
				keyParts = nil // the stage is not cacheable
			} else {
				keyParts = append(keyParts, "stage", k, req.Sources)
			}
			srcRoot = func(ctx context.Context) (string, error) {
				tree, err := sb.b.stageTree(ctx, src.Index)
				if err != nil {
					return "", fmt.Errorf("preparing stage %s for COPY --from: %w", src.DisplayName(), err)
				}
				return tree, nil
			}
		} else {
			img, err := sb.b.image(ctx, s.from)
			if err != nil {
				return fail(result.ReasonBaseImagePullFailed, err)
			}
			keyParts = append(keyParts, "image", img.digest.String(), req.Sources)
			srcRoot = func(ctx context.Context) (string, error) {
				tree, err := img.extracted(ctx, sb.b)
				if err != nil {
					return "", fmt.Errorf("extracting %s: %w", s.from, err)
				}
				return tree, nil
			}
		}
	default:
		bc := sb.b.opts.Context
		if bc == nil {
			return fail(result.ReasonCopyFailed, fmt.Errorf("%s needs a build context, and this build has none", name))
		}
		req.Ignore = bc.Excluded
		req.IgnoreDescend = bc.MayContainIncluded
		req.SrcRoot = bc.Dir
		srcRoot = func(context.Context) (string, error) { return bc.Dir, nil }
		if sb.b.keyed {
			w, files, err := copier.WalkSources(ctx, req)
			if err != nil {
				return fail(result.ReasonCopyFailed, err)
			}
			walked = w
			sum := copier.KeyOf(files)
			for _, f := range files {
				if strings.Contains(f.Path, "://") && f.Digest == "" {
					sum = "" // a URL without validators is never cached
				}
			}
			if sum == "" {
				keyParts = nil
			} else {
				keyParts = append(keyParts, "context", sum)
			}
		}
	}
	if heredocs != nil && keyParts != nil {
		keyParts = append(keyParts, "heredocs", heredocs)
	}

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

	err = sb.fsStep(strings.Join(msg, " ")+" # buildkit", keyParts, func(ctx context.Context, sb *stageBuilder, root string) ([]string, error) {
		req := req
		req.DestRoot = root
		if srcRoot != nil { // git sources set it per repository
			root, err := srcRoot(ctx)
			if err != nil {
				return nil, fail(result.ReasonCopyFailed, err)
			}
			req.SrcRoot = root
		}
		if s.chown != "" {
			uid, gid, err := idtools.ResolveChown(root, s.chown)
			if err != nil {
				return nil, fail(result.ReasonCopyFailed, fmt.Errorf("resolving --chown=%s: %w", s.chown, err))
			}
			req.Chown = &copier.Owner{UID: uid, GID: gid}
		}
		var res copier.Result
		var err error
		switch {
		case !hasPaths:
		case walked != nil:
			res, err = walked.Copy(ctx, req)
			walked = nil // the step runs once; let the walk go
		case gits != nil:
			// Each repository's tree goes to the destination, in order.
			for _, gs := range gits {
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
		if err == nil && heredocs != nil {
			var r copier.Result
			r, err = sb.copyHeredocs(ctx, req, heredocs, heredocNames)
			res.Changed = append(res.Changed, r.Changed...)
		}
		if err != nil {
			return nil, fail(result.ReasonCopyFailed, err)
		}
		if res.Changed == nil {
			return []string{}, nil
		}
		return topmost(res.Changed), nil
	})
	dest := s.params.DestPath
	if !path.IsAbs(dest) {
		dest = path.Join(req.WorkDir, dest)
	}
	sb.cur().copyDest = path.Clean("/" + dest)
	return err
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
