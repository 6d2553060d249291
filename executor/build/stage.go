package build

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// historyComment marks the history entries of instructions, as BuildKit
// (and so `docker build`) marks them.
const historyComment = "buildkit.dockerfile.v0"

// stageState is a stage being built and, once done is closed, its result.
type stageState struct {
	done chan struct{}
	err  error

	// consumers counts the later stages using this one (FROM or COPY
	// --from); copySources is set when one of them is a COPY --from.
	consumers   int
	copySources bool

	cfg    dockerspec.DockerOCIImage
	layers []v1.Layer
	// env and args are the stage's final state (ENV and ARG values), which a
	// stage built FROM this one starts with.
	env  *dockerfile.Env
	args []instructions.KeyValuePairOptional

	// root holds the stage's final file tree while it is available
	// (chroot isolation); tree is it, or a tree extracted on demand.
	rootMu    sync.Mutex
	root      string
	treeOnce  sync.Once
	tree      string
	treeErr   error
	rootTaken bool

	report result.Stage
}

// stage is the mutable state while one stage is dispatched.
type stage struct {
	b      *builder
	st     *dockerfile.Stage
	s      *stageState
	root   string
	snap   *rootfs.Snapshotter
	cfg    dockerspec.DockerOCIImage
	layers []v1.Layer
	env    *dockerfile.Env
	args   []instructions.KeyValuePairOptional
	cmdSet bool // CMD was set in this stage (ENTRYPOINT keeps it then)

	step, steps int
	prefix      string
}

func (b *builder) buildStage(ctx context.Context, i int) (err error) {
	st := b.plan.Stages[i]
	s := b.stages[i]
	start := time.Now()
	defer func() {
		s.err = err
		s.report = result.Stage{Name: st.DisplayName(), Instructions: len(st.Commands), Millis: result.Millis(time.Since(start))}
		close(s.done)
	}()
	g := &stage{b: b, st: st, s: s}
	if err := g.from(ctx); err != nil {
		return err
	}
	triggers, err := dockerfile.ParseTriggers(g.cfg.Config.OnBuild, st.Line)
	if err != nil {
		return fail(result.ReasonDockerfileInvalid, err)
	}
	g.cfg.Config.OnBuild = nil
	cmds := append(triggers, st.Commands...)
	g.steps = len(cmds) + 1
	for _, cmd := range cmds {
		g.step++
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		fmt.Fprintf(b.log, "%s %s\n", g.stepPrefix(), shorten(cmd.(fmt.Stringer).String(), 200))
		if err := g.dispatch(ctx, cmd); err != nil {
			return withLine(err, cmd)
		}
	}
	s.cfg, s.layers, s.env, s.args = g.cfg, g.layers, g.env, g.args
	if b.opts.Isolation == Chroot {
		s.root = g.root
	}
	fmt.Fprintf(b.log, "[%s] Built stage in %.1fs\n", st.DisplayName(), time.Since(start).Seconds())
	return nil
}

// withLine adds cmd's Dockerfile line to a build error that has none.
func withLine(err error, cmd instructions.Command) error {
	be, ok := err.(*Error)
	if !ok {
		be = fail(result.ReasonInternal, err).(*Error)
	}
	if be.Line == 0 {
		de := dockerfile.WithLine(be.Err, cmd).(*dockerfile.Error)
		be.Line, be.Instruction = de.Line, de.Instruction
	}
	return be
}

func (g *stage) stepPrefix() string {
	return fmt.Sprintf("[%s %d/%d]", g.st.DisplayName(), g.step+1, g.steps)
}

// from resolves the stage's base (scratch, an earlier stage or an image),
// prepares its root filesystem and the initial state, as Docker does
// before the first instruction.
func (g *stage) from(ctx context.Context) error {
	b, st := g.b, g.st
	fmt.Fprintf(b.log, "[%s 1/%d] FROM %s\n", st.DisplayName(), len(st.Commands)+1, st.Base)
	var base *stageState
	switch {
	case st.BaseStage >= 0:
		var err error
		base, err = b.waitStage(ctx, st.BaseStage)
		if err != nil {
			return err
		}
		g.cfg = cloneImage(base.cfg)
		g.layers = slices.Clone(base.layers)
		g.env = base.env.Clone()
		g.args = slices.Clone(base.args)
	case strings.EqualFold(st.Base, dockerfile.Scratch):
		g.cfg = emptyImage()
		g.env = &dockerfile.Env{}
	default:
		src, err := b.image(ctx, st.Base)
		if err != nil {
			return &Error{Reason: result.ReasonBaseImagePullFailed, Line: st.Line, Instruction: st.Source, Err: err}
		}
		g.cfg = cloneImage(src.cfg)
		g.layers = slices.Clone(src.layers)
		g.env = &dockerfile.Env{}
		fmt.Fprintf(b.log, "[%s 1/%d] Resolved %s to %s\n", st.DisplayName(), len(st.Commands)+1, st.Base, src.digest)
	}
	g.cfg.Created = nil
	if _, ok := dockerfile.EnvFromSlice(g.cfg.Config.Env).Get("PATH"); !ok {
		g.cfg.Config.Env = append(g.cfg.Config.Env, "PATH="+defaultPath)
	}
	for _, kv := range g.cfg.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		g.env.Set(k, v)
	}
	if err := g.prepareRoot(ctx, base); err != nil {
		return &Error{Reason: result.ReasonBaseImagePullFailed, Line: st.Line, Instruction: st.Source, Err: err}
	}
	return nil
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// prepareRoot makes the stage's root filesystem hold its base's tree, then
// takes the snapshot baseline.
func (g *stage) prepareRoot(ctx context.Context, base *stageState) error {
	b := g.b
	opts := b.rootfsOptions()
	if b.opts.Isolation == InPlace {
		g.root = "/"
		if base == nil || b.lastInPlace != base {
			if err := rootfs.Clear(g.root, opts...); err != nil {
				return fmt.Errorf("clearing the root filesystem: %w", err)
			}
			if err := extractLayers(ctx, g.root, g.layers, opts); err != nil {
				return err
			}
		}
		b.lastInPlace = g.s
	} else {
		g.root = filepath.Join(b.opts.WorkDir, "stages", fmt.Sprint(g.st.Index), "rootfs")
		if err := os.MkdirAll(filepath.Dir(g.root), 0o700); err != nil {
			return err
		}
		if !(base != nil && base.takeRoot(g.root)) {
			if err := os.Mkdir(g.root, 0o755); err != nil {
				return err
			}
			if err := extractLayers(ctx, g.root, g.layers, opts); err != nil {
				return err
			}
		}
	}
	snap, err := rootfs.NewSnapshotter(g.root, opts...)
	if err != nil {
		return fmt.Errorf("recording the base file tree: %w", err)
	}
	g.snap = snap
	return nil
}

// takeRoot moves the stage's root to dst when this stage's only consumer is
// the caller's FROM: nobody else needs it, so it need not be copied.
func (s *stageState) takeRoot(dst string) bool {
	s.rootMu.Lock()
	defer s.rootMu.Unlock()
	if s.root == "" || s.consumers != 1 || s.copySources || s.rootTaken {
		return false
	}
	if err := os.Rename(s.root, dst); err != nil {
		return false
	}
	s.rootTaken = true
	s.root = ""
	return true
}

func (b *builder) rootfsOptions() []rootfs.Option {
	var opts []rootfs.Option
	if len(b.opts.Exclude) > 0 {
		var rels []string
		for _, p := range b.opts.Exclude {
			rels = append(rels, strings.TrimPrefix(path.Clean("/"+p), "/"))
		}
		opts = append(opts, rootfs.WithExcludedPaths(rels...))
	}
	if os.Geteuid() != 0 {
		opts = append(opts, rootfs.WithoutOwnership())
	}
	return opts
}

// extractLayers unpacks layers in order into root, streaming each from the
// registry (or its file) straight into the extraction.
func extractLayers(ctx context.Context, root string, layers []v1.Layer, opts []rootfs.Option) error {
	for _, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, _ := l.Digest()
		rc, err := l.Uncompressed()
		if err != nil {
			return fmt.Errorf("fetching layer %s: %w", d, err)
		}
		err = rootfs.Extract(root, rc, opts...)
		rc.Close()
		if err != nil {
			return fmt.Errorf("extracting layer %s: %w", d, err)
		}
	}
	return nil
}

// commit records a history entry, and for steps that can change files
// snapshots the root: a layer if anything changed, an empty_layer entry if
// not (Docker's layer counts).
func (g *stage) commit(createdBy string, snapshot bool, paths ...string) error {
	h := ocispec.History{CreatedBy: createdBy, Comment: historyComment, EmptyLayer: true, Created: g.b.opts.SourceDateEpoch}
	if snapshot {
		var sopts []rootfs.SnapshotOption
		if len(paths) > 0 {
			sopts = append(sopts, rootfs.Paths(paths...))
		}
		if e := g.b.opts.SourceDateEpoch; e != nil {
			sopts = append(sopts, rootfs.ModTime(*e))
		}
		l, err := layer.Write(g.b.layers, g.b.opts.Layers, func(w io.Writer) (bool, error) {
			return g.snap.Snapshot(w, sopts...)
		})
		if err != nil {
			return fail(result.ReasonInternal, fmt.Errorf("snapshotting the file system: %w", err))
		}
		if l != nil {
			diffID, _ := l.DiffID()
			g.layers = append(g.layers, l)
			g.cfg.RootFS.DiffIDs = append(g.cfg.RootFS.DiffIDs, digestOf(diffID))
			h.EmptyLayer = false
		}
	}
	g.cfg.History = append(g.cfg.History, h)
	return nil
}

func emptyImage() dockerspec.DockerOCIImage {
	var img dockerspec.DockerOCIImage
	img.OS = runtime.GOOS
	img.Architecture = runtime.GOARCH
	img.RootFS.Type = "layers"
	img.Config.WorkingDir = "/"
	img.Config.Env = []string{"PATH=" + defaultPath}
	return img
}

// cloneImage deep-copies an image config (JSON round trip: the configs
// are small, and this cannot miss a field).
func cloneImage(img dockerspec.DockerOCIImage) dockerspec.DockerOCIImage {
	dt, err := json.Marshal(img)
	if err != nil {
		panic(err)
	}
	var out dockerspec.DockerOCIImage
	if err := json.Unmarshal(dt, &out); err != nil {
		panic(err)
	}
	return out
}

// image is where COPY --from and FROM images come from: the pulled image,
// its config and, once needed, its extracted tree.
type imageSource struct {
	once   sync.Once
	err    error
	digest v1.Hash
	img    v1.Image
	cfg    dockerspec.DockerOCIImage
	layers []v1.Layer

	treeOnce sync.Once
	tree     string
	treeErr  error
}

// image pulls ref's manifest and config once per build.
func (b *builder) image(ctx context.Context, ref string) (*imageSource, error) {
	b.mu.Lock()
	src, ok := b.images[ref]
	if !ok {
		src = &imageSource{}
		b.images[ref] = src
	}
	b.mu.Unlock()
	src.once.Do(func() { src.err = src.pull(ctx, b, ref) })
	return src, src.err
}

func (src *imageSource) pull(ctx context.Context, b *builder, s string) error {
	ref, err := b.opts.ParseReference(s)
	if err != nil {
		return fmt.Errorf("parsing image reference %q: %w", s, err)
	}
	opts := append([]remote.Option{remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH})}, b.opts.Remote(ref)...)
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	if src.digest, err = img.Digest(); err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("pulling the config of %s: %w", ref, err)
	}
	if err := json.Unmarshal(raw, &src.cfg); err != nil {
		return fmt.Errorf("parsing the config of %s: %w", ref, err)
	}
	if src.layers, err = img.Layers(); err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	src.img = img
	return nil
}

// extracted returns a directory holding the image's file tree, extracting
// it on first use.
func (src *imageSource) extracted(ctx context.Context, b *builder, id string) (string, error) {
	src.treeOnce.Do(func() {
		src.tree, src.treeErr = b.extractTree(ctx, id, src.layers)
	})
	return src.tree, src.treeErr
}

func (b *builder) extractTree(ctx context.Context, id string, layers []v1.Layer) (string, error) {
	dir, err := os.MkdirTemp(b.opts.WorkDir, "tree-"+id+"-")
	if err != nil {
		return "", err
	}
	if err := extractLayers(ctx, dir, layers, nil); err != nil {
		return "", err
	}
	return dir, nil
}

// stageTree returns a directory with stage i's final file tree for COPY
// --from: its root when still there, else an extraction of its layers.
func (b *builder) stageTree(ctx context.Context, i int) (string, error) {
	s, err := b.waitStage(ctx, i)
	if err != nil {
		return "", err
	}
	s.rootMu.Lock()
	root := s.root
	s.rootMu.Unlock()
	if root != "" {
		return root, nil
	}
	s.treeOnce.Do(func() {
		s.tree, s.treeErr = b.extractTree(ctx, fmt.Sprint(i), s.layers)
	})
	return s.tree, s.treeErr
}
