package build

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"

	"github.com/slipway-dev/slipway/executor/copier"
	"github.com/slipway-dev/slipway/executor/idtools"
	"github.com/slipway-dev/slipway/executor/result"
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
}

func (g *stage) copy(ctx context.Context, c *instructions.CopyCommand) error {
	return g.copyFiles(ctx, copyStep{params: c.SourcesAndDest, from: c.From, chown: c.Chown, chmod: c.Chmod, exclude: c.ExcludePatterns, parents: c.Parents})
}

func (g *stage) add(ctx context.Context, c *instructions.AddCommand) error {
	return g.copyFiles(ctx, copyStep{add: true, params: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, exclude: c.ExcludePatterns, checksum: c.Checksum})
}

// copyFiles runs a COPY or ADD: resolves where sources come from (the
// context, a stage, an image, or heredocs), copies, and commits a layer of
// exactly what was written.
func (g *stage) copyFiles(ctx context.Context, s copyStep) error {
	name := "COPY"
	if s.add {
		name = "ADD"
	}
	if s.parents {
		return fail(result.ReasonDockerfileInvalid, fmt.Errorf("%s --parents is not supported by this executor", name))
	}
	if s.checksum != "" {
		return fail(result.ReasonDockerfileInvalid, errors.New("ADD --checksum is not supported by this executor"))
	}
	req := copier.Request{
		Sources:    s.params.SourcePaths,
		Dest:       s.params.DestPath,
		WorkDir:    g.cfg.Config.WorkingDir,
		DestRoot:   g.root,
		Add:        s.add,
		HTTPClient: g.b.opts.HTTPClient,
	}
	if req.WorkDir == "" {
		req.WorkDir = "/"
	}
	switch {
	case len(s.params.SourceContents) > 0:
		if len(s.params.SourcePaths) > 0 {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("%s with both heredocs and paths is not supported by this executor", name))
		}
		dir, err := os.MkdirTemp(g.b.opts.WorkDir, "heredoc-")
		if err != nil {
			return fail(result.ReasonInternal, err)
		}
		defer os.RemoveAll(dir)
		for _, sc := range s.params.SourceContents {
			p := filepath.Join(dir, filepath.Base(sc.Path))
			if err := os.WriteFile(p, []byte(sc.Data), 0o644); err != nil {
				return fail(result.ReasonInternal, err)
			}
			req.Sources = append(req.Sources, filepath.Base(sc.Path))
		}
		req.SrcRoot = dir
	case s.from != "":
		req.KeepOwner = true
		if src := g.b.plan.StageForFrom(s.from, g.st.Index); src != nil {
			tree, err := g.b.stageTree(ctx, src.Index)
			if err != nil {
				return fail(result.ReasonCopyFailed, fmt.Errorf("preparing stage %s for COPY --from: %w", src.DisplayName(), err))
			}
			req.SrcRoot = tree
		} else {
			img, err := g.b.image(ctx, s.from)
			if err != nil {
				return fail(result.ReasonBaseImagePullFailed, err)
			}
			tree, err := img.extracted(ctx, g.b, "image")
			if err != nil {
				return fail(result.ReasonBaseImagePullFailed, fmt.Errorf("extracting %s: %w", s.from, err))
			}
			req.SrcRoot = tree
		}
	default:
		if g.b.opts.Context == nil {
			return fail(result.ReasonCopyFailed, fmt.Errorf("%s needs a build context, and this build has none", name))
		}
		bc := g.b.opts.Context
		req.SrcRoot = bc.Dir
		req.Ignore = bc.Excluded
		req.IgnoreDescend = bc.MayContainIncluded
	}
	if len(s.exclude) > 0 {
		pm, err := patternmatcher.New(s.exclude)
		if err != nil {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("parsing --exclude: %w", err))
		}
		inner := req.Ignore
		req.Ignore = func(rel string) (bool, error) {
			if inner != nil {
				if ign, err := inner(rel); ign || err != nil {
					return ign, err
				}
			}
			return pm.MatchesOrParentMatches(rel)
		}
		req.IgnoreDescend = nil
	}
	if s.chown != "" {
		uid, gid, err := idtools.ResolveChown(g.root, s.chown)
		if err != nil {
			return fail(result.ReasonCopyFailed, fmt.Errorf("resolving --chown=%s: %w", s.chown, err))
		}
		req.Chown = &copier.Owner{UID: uid, GID: gid}
	}
	if s.chmod != "" {
		m, err := strconv.ParseUint(s.chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s.chmod))
		}
		mode := fs.FileMode(m)
		req.Chmod = &mode
	}
	res, err := copier.Copy(ctx, req)
	if err != nil {
		return fail(result.ReasonCopyFailed, err)
	}
	msg := []string{name}
	if s.chown != "" {
		msg = append(msg, "--chown="+s.chown)
	}
	if s.chmod != "" {
		msg = append(msg, "--chmod="+s.chmod)
	}
	if len(s.params.SourceContents) > 0 {
		for _, sc := range s.params.SourceContents {
			msg = append(msg, "<<"+sc.Path)
		}
	} else {
		msg = append(msg, s.params.SourcePaths...)
	}
	msg = append(msg, s.params.DestPath)
	if len(res.Changed) == 0 {
		return g.commit(strings.Join(msg, " ")+" # buildkit", false)
	}
	return g.commit(strings.Join(msg, " ")+" # buildkit", true, res.Changed...)
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
