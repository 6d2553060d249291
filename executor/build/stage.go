package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// historyComment marks the history entries of instructions, as BuildKit
// (and so `docker build`) marks them.
const historyComment = "buildkit.dockerfile.v0"

// stageResult is what one stage of the build gives the stages after it:
// once done is closed, its image config and layers (or err) and, while it is
// there, its file tree. It also counts the stages that consume it. sb is the
// stageBuilder that plans and runs the stage (set by planStage).
//
// Three types are about a stage: dockerfile.Stage is the parsed stage (its
// base and instructions), stageBuilder plans and runs it, and stageResult
// is what it produced, shared with its consumers.
type stageResult struct {
	sb   *stageBuilder
	done chan struct{}
	err  error

	// consumers counts the later stages using this one (FROM or COPY
	// --from); copySources is set when one of them is a COPY --from.
	consumers   int
	copySources bool

	// Results.
	cfg    dockerspec.DockerOCIImage
	layers []v1.Layer

	// root holds the stage's final file tree while it is available and up
	// to date (chroot isolation, last step not served from the cache);
	// tree is it, or a tree extracted on demand.
	rootMu    sync.Mutex
	root      string
	rootTaken bool
	treeOnce  sync.Once
	tree      string
	treeErr   error

	report result.Stage
	// finished is when the stage was built.
	finished time.Time
}

// step is one planned instruction.
type step struct {
	cmd  instructions.Command
	hist int // index of the step's history entry in the stage's own entries
	// action changes the file system; nil for metadata instructions. It
	// returns the paths it changed (then only they are snapshotted), nil
	// to snapshot the whole tree, or an empty non-nil slice when nothing
	// changed.
	action func(ctx context.Context, sb *stageBuilder, root string) ([]string, error)
	// copyDest is, for COPY and ADD, the absolute destination: the part of
	// the tree the step depends on (with its parents), so it can run on a
	// partial tree (see copyOnPartialTree).
	copyDest string
	// key is the step's cache key ("" when the build computes none, see
	// builder.keys, or the step cannot be cached).
	key string
	// platform is the step's log prefix's platform part (platformPrefix),
	// set when the build names platforms in its log.
	platform string
	// hit is set when the cache holds the step; cached is its layer (nil
	// in an entry an older executor stored for a step that changed
	// nothing, which then has the empty layer).
	hit     bool
	cached  v1.Layer
	created time.Time
	// mounts are a RUN's --mount flags, planned.
	mounts []*runMount
}

// stageBuilder plans one stage (dockerfile.Stage st), then executes it;
// execStage writes what it made into the stage's stageResult. Planning keeps the state
// Docker's dispatcher keeps (config, env, args, cache key); executing keeps
// the stage's root file system and the layers so far.
type stageBuilder struct {
	b  *builder
	st *dockerfile.Stage
	// platform is the platform the stage is built for
	// (dockerfile.Plan.StagePlatform): its RUN steps run executables of
	// it, and its cache keys hold it.
	platform ocispec.Platform

	// Planning state, as Docker's dispatcher keeps it.
	cfg    dockerspec.DockerOCIImage
	env    *dockerfile.Env
	args   []instructions.KeyValuePairOptional
	cmdSet bool // CMD was set in this stage (ENTRYPOINT keeps it then)
	key    string
	steps  []*step
	// baseHist is the number of history entries inherited from the base.
	baseHist  int
	baseStage *stageResult
	baseImage *imageSource

	// Execution state.
	root    string
	snap    *rootfs.Snapshotter
	layers  []v1.Layer
	applied int // layers[:applied] are in root
	ready   bool
	hits    int
	keyed   int    // steps with a cache key
	prefix  string // the running step's log prefix, e.g. "[build 3/7]"
	// defaultMounts are the mount points of the runtime's default mounts
	// the running step had (a RUN's), for its snapshot (see
	// rootfs.DefaultMounts).
	defaultMounts []string
}

// planStage resolves the stage's base and plans every instruction: the
// config it leads to, each step's history entry, action and cache key.
// Nothing touches a file system yet.
func (b *builder) planStage(ctx context.Context, i int) error {
	st := b.plan.Stages[i]
	s := b.stages[i]
	sb := &stageBuilder{b: b, st: st, platform: b.plan.StagePlatform(i)}
	s.sb = sb
	switch {
	case st.BaseStage >= 0:
		base := b.stages[st.BaseStage].sb
		sb.baseStage = b.stages[st.BaseStage]
		sb.cfg = cloneImage(base.cfg)
		sb.env = base.env.Clone()
		sb.args = slices.Clone(base.args)
		sb.key = base.key
	case strings.EqualFold(st.Base, dockerfile.Scratch):
		sb.cfg = emptyImage(sb.platform)
		sb.env = &dockerfile.Env{}
		sb.key = "scratch"
	default:
		src, err := b.image(ctx, st.Base, sb.platform)
		if err != nil {
			return &Error{Reason: result.ReasonBaseImagePullFailed, Line: st.Line, Instruction: st.Source, Err: err}
		}
		sb.baseImage = src
		sb.cfg = cloneImage(src.cfg)
		sb.env = &dockerfile.Env{}
		sb.key = src.digest.String()
	}
	sb.cfg.Created = nil
	if _, ok := dockerfile.EnvFromSlice(sb.cfg.Config.Env).Get("PATH"); !ok {
		sb.cfg.Config.Env = append(sb.cfg.Config.Env, "PATH="+defaultPath)
	}
	for _, kv := range sb.cfg.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		sb.env.Set(k, v)
	}
	sb.baseHist = len(sb.cfg.History)

	triggers, err := dockerfile.ParseTriggers(sb.cfg.Config.OnBuild, st.Line)
	if err != nil {
		return fail(result.ReasonDockerfileInvalid, err)
	}
	sb.cfg.Config.OnBuild = nil
	for _, cmd := range append(triggers, st.Commands...) {
		sb.steps = append(sb.steps, &step{cmd: cmd, hist: -1, platform: platformPrefix(sb.platform, sb.env)})
		if err := sb.dispatch(ctx, cmd); err != nil {
			return withLine(err, cmd)
		}
	}
	return nil
}

// meta records a metadata instruction's history entry.
func (sb *stageBuilder) meta(createdBy string) error {
	sb.cur().hist = sb.history(createdBy, true)
	return nil
}

// fsStep records a step that changes files: its history entry (it has a
// layer, the empty one if it changes nothing), its action and, with the
// cache on, its key: the parent key, the step's inputs, the stage's
// platform, and SOURCE_DATE_EPOCH when the build has one (it dates the
// layer's files). The platform is in every key, as BuildKit's vertices
// hold theirs (llb.Platform): a step for arm64 never takes a layer made
// for amd64, even from scratch or from a single-platform image, whose
// keys would otherwise be the same.
func (sb *stageBuilder) fsStep(createdBy string, keyParts []any, action func(ctx context.Context, sb *stageBuilder, root string) ([]string, error)) error {
	s := sb.cur()
	s.hist = sb.history(createdBy, false)
	s.action = action
	if sb.b.keys {
		if keyParts == nil || sb.key == "" {
			// An uncacheable step makes everything built on it
			// uncacheable too: later steps, stages FROM this one and
			// COPY --from it.
			sb.key = ""
			return nil
		}
		h := sha256.New()
		enc := json.NewEncoder(h)
		enc.Encode(sb.key)
		enc.Encode(keyParts)
		enc.Encode([]any{"platform", dockerfile.FormatPlatform(sb.platform)})
		if e := sb.b.opts.SourceDateEpoch; e != nil {
			// The layer's file times are clamped to it (snapshot), so a
			// dated build never takes an undated one's layer, nor one of
			// another date; undated keys stay as they were.
			enc.Encode([]any{"source-date-epoch", e.Unix()})
		}
		sb.key = "sha256:" + hex.EncodeToString(h.Sum(nil))
		s.key = strings.TrimPrefix(sb.key, "sha256:")
	}
	return nil
}

func (sb *stageBuilder) cur() *step { return sb.steps[len(sb.steps)-1] }

func (sb *stageBuilder) history(createdBy string, empty bool) int {
	sb.cfg.History = append(sb.cfg.History, ocispec.History{CreatedBy: createdBy, Comment: historyComment, EmptyLayer: empty, Created: sb.b.opts.SourceDateEpoch})
	return len(sb.cfg.History) - 1 - sb.baseHist
}

// withLine adds cmd's Dockerfile line to a build error that has none.
func withLine(err error, cmd instructions.Command) error {
	be, ok := err.(*Error)
	if !ok {
		// err may wrap an *Error: keep its reason, and err's message.
		var inner *Error
		if errors.As(err, &inner) {
			c := *inner
			c.Err = err
			be = &c
		} else {
			be = fail(result.ReasonInternal, err).(*Error)
		}
	}
	if be.Line == 0 {
		de := dockerfile.WithLine(be.Err, cmd).(*dockerfile.Error)
		be.Line, be.Instruction = de.Line, de.Instruction
	}
	return be
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execStage runs the planned stage: steps the cache holds only add their
// layer; the first step it does not hold makes the root file system real
// (base and layers so far) and from there every step runs and is
// snapshotted. Its stageResult is done when it returns.
func (b *builder) execStage(ctx context.Context, i int) (err error) {
	s := b.stages[i]
	sb := s.sb
	start := time.Now()
	defer func() {
		var be *Error
		if b.decorate && errors.As(err, &be) && be.Platform == "" {
			be.Platform = dockerfile.FormatPlatform(sb.platform)
		}
		s.err = err
		s.report = result.Stage{Name: sb.st.DisplayName(), Instructions: len(sb.steps), CacheHits: sb.hits, Millis: result.Millis(time.Since(start))}
		if b.decorate {
			s.report.Platform = dockerfile.FormatPlatform(sb.platform)
		}
		s.finished = time.Now()
		close(s.done)
	}()
	baseHistory, err := sb.startFromBase(ctx)
	if err != nil {
		return err
	}
	own := sb.cfg.History[sb.baseHist:]
	sb.cfg.History = append(slices.Clone(baseHistory), own...)

	missed := false
	for n, sp := range sb.steps {
		if sp.key != "" && b.keyed {
			sb.keyed++
		}
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		line := result.Excerpt(sp.cmd.(fmt.Stringer).String(), 200)
		if sp.action == nil {
			fmt.Fprintf(b.log, "%s %s\n", sb.stepPrefix(n+2), line)
			continue
		}
		h := &sb.cfg.History[len(baseHistory)+sp.hist]
		if sp.hit && !missed {
			if err := sb.useCachedStep(n, sp, line, h); err != nil {
				return err
			}
			continue
		}
		missed = true
		if err := sb.execStep(ctx, n, sp, line, h); err != nil {
			return err
		}
	}
	sb.storeResult(s)
	name := sb.st.DisplayName()
	if b.decorate {
		// The platform as its last step's prefix names it, so that the
		// stages a stage of the build platform cross-compiles for each
		// target tell apart ("linux/amd64->arm64 build").
		plat := dockerfile.FormatPlatform(sb.platform)
		if n := len(sb.steps); n > 0 && sb.steps[n-1].platform != "" {
			plat = sb.steps[n-1].platform
		}
		name = plat + " " + name
	}
	if b.keyed {
		fmt.Fprintf(b.log, "[%s] Built stage in %.2fs (%d of %d steps from the cache)\n", name, time.Since(start).Seconds(), sb.hits, sb.keyed)
	} else {
		fmt.Fprintf(b.log, "[%s] Built stage in %.2fs\n", name, time.Since(start).Seconds())
	}
	return nil
}

// stepPrefix is the log prefix of the stage's nth step (FROM is the
// first), e.g. "[build 3/7]", or "[3/7]" in a build of one unnamed stage;
// when the build names platforms, the step's platform first, as BuildKit
// writes it: "[linux/arm64 build 3/7]", "[linux/amd64->arm64 build 3/7]"
// for a step that cross-compiles (its TARGET* args name another
// platform).
func (sb *stageBuilder) stepPrefix(n int) string {
	total := len(sb.steps) + 1
	plat := ""
	if sb.b.decorate {
		plat = dockerfile.FormatPlatform(sb.platform) + " "
		if n >= 2 && sb.steps[n-2].platform != "" {
			plat = sb.steps[n-2].platform + " "
		}
	}
	if len(sb.b.plan.Stages) == 1 && sb.st.Name == "" {
		return fmt.Sprintf("[%s%d/%d]", plat, n, total)
	}
	return fmt.Sprintf("[%s%s %d/%d]", plat, sb.st.DisplayName(), n, total)
}

// startFromBase logs the stage's FROM and starts its layers with its
// base's (waiting for a base stage to be built), and returns the base's
// history.
func (sb *stageBuilder) startFromBase(ctx context.Context) ([]ocispec.History, error) {
	b, st := sb.b, sb.st
	switch {
	case sb.baseStage != nil:
		base, err := b.waitStage(ctx, sb.baseStage.sb.st.Index)
		if err != nil {
			return nil, err
		}
		sb.layers = slices.Clone(base.layers)
		fmt.Fprintf(b.log, "%s FROM %s\n", sb.stepPrefix(1), st.Base)
		return base.cfg.History, nil
	case sb.baseImage != nil:
		sb.layers = slices.Clone(sb.baseImage.layers)
		fmt.Fprintf(b.log, "%s FROM %s@%s\n", sb.stepPrefix(1), st.Base, sb.baseImage.digest)
		return sb.cfg.History[:sb.baseHist], nil
	default:
		fmt.Fprintf(b.log, "%s FROM %s\n", sb.stepPrefix(1), st.Base)
		return nil, nil
	}
}

// useCachedStep takes the nth step's layer from the cache; h is its
// history entry.
func (sb *stageBuilder) useCachedStep(n int, sp *step, line string, h *ocispec.History) error {
	sb.hits++
	fmt.Fprintf(sb.b.log, "%s CACHED %s\n", sb.stepPrefix(n+2), line)
	sb.dated(h, sp.created)
	l := sp.cached
	if l == nil {
		// An entry stored without a layer, as executors before
		// this one stored a step that changed nothing: the step
		// has the empty layer now, as when it runs.
		var err error
		if l, err = sb.emptyLayer(); err != nil {
			return withLine(err, sp.cmd)
		}
	}
	sb.layers = append(sb.layers, l)
	return nil
}

// execStep runs the nth step and snapshots what it changed as its layer,
// which it stores in the cache when the step has a key; h is its history
// entry. A COPY or ADD followed by no other kind of file system step runs
// on a partial tree (copyOnPartialTree); any other step first makes the
// root file system real (materialize).
func (sb *stageBuilder) execStep(ctx context.Context, n int, sp *step, line string, h *ocispec.History) error {
	b := sb.b
	sb.prefix = sb.stepPrefix(n + 2)
	fmt.Fprintf(b.log, "%s %s\n", sb.prefix, line)
	if b.opts.StepRuns != nil {
		b.opts.StepRuns()
	}
	var l v1.Layer
	done := false
	if sp.copyDest != "" && !sb.ready && copiesOnly(sb.steps[n:]) {
		var err error
		if l, done, err = sb.copyOnPartialTree(ctx, sp); err != nil {
			return withLine(err, sp.cmd)
		}
	}
	if !done {
		if err := sb.materialize(ctx); err != nil {
			return withLine(fail(result.ReasonBaseImagePullFailed, err), sp.cmd)
		}
		sb.defaultMounts = nil
		paths, err := sp.action(ctx, sb, sb.root)
		if err != nil {
			return withLine(err, sp.cmd)
		}
		if l, err = sb.snapshot(sb.snap, paths); err != nil {
			return withLine(err, sp.cmd)
		}
		sb.applied = len(sb.layers) + 1
	}
	created := b.opts.Now().UTC().Truncate(time.Second)
	sb.dated(h, created)
	if sp.key != "" {
		b.opts.Cache.Store(sp.key, l, created, ggcrPlatform(sb.platform))
	}
	sb.layers = append(sb.layers, l)
	return nil
}

// storeResult gives the stage's config and layers to its stageResult,
// with its root while that is up to date (with chroot isolation; with
// in-place isolation, the root file system is then the stage's, which a
// stage FROM it can build on).
func (sb *stageBuilder) storeResult(s *stageResult) {
	b := sb.b
	s.cfg, s.layers = sb.cfg, sb.layers
	upToDate := sb.ready && sb.applied == len(sb.layers)
	if b.opts.Isolation == Chroot && upToDate {
		s.root = sb.root
	}
	if b.opts.Isolation == InPlace {
		if upToDate {
			b.sh.lastInPlace = s
		} else if sb.ready {
			b.sh.lastInPlace = nil
		}
	}
}

// copiesOnly reports whether the file system steps among steps are all
// COPY or ADD: then none needs the whole tree, and unpacking it (only to
// unpack it again for a later RUN) is avoided.
func copiesOnly(steps []*step) bool {
	for _, sp := range steps {
		if sp.action != nil && sp.copyDest == "" {
			return false
		}
	}
	return true
}

// dated sets the time of a file system step's history entry: when its
// layer was made, cached or not (so a rebuild from the cache gives the same
// image), unless the build is reproducible (then every time is the epoch).
func (sb *stageBuilder) dated(h *ocispec.History, t time.Time) {
	if sb.b.opts.SourceDateEpoch != nil {
		return
	}
	h.Created = &t
}

// materialize makes the root file system hold the base and every layer so
// far (extracting only what is not there yet), with the snapshot baseline
// taken after it.
func (sb *stageBuilder) materialize(ctx context.Context) error {
	b := sb.b
	opts := b.rootfsOptions()
	if b.opts.Isolation == InPlace {
		// The pod's /proc, /dev and /sys cover the image's: whether the
		// image has them is followed aside, for RUN's layers (see
		// defaultMountPoints). One root, one record, as lastInPlace.
		if b.sh.covered == nil {
			b.sh.covered = rootfs.NewCovered(defaultMountPoints...)
		}
		opts = append(opts, rootfs.WithCovered(b.sh.covered))
	}
	if sb.ready {
		if sb.applied == len(sb.layers) {
			return nil
		}
		if err := b.extractLayers(ctx, sb.root, sb.layers[sb.applied:], opts); err != nil {
			return err
		}
		sb.applied = len(sb.layers)
		if _, err := sb.snap.Snapshot(io.Discard); err != nil {
			return fmt.Errorf("recording the file tree: %w", err)
		}
		return nil
	}
	base := sb.baseStage
	baseLayers := 0
	if base != nil {
		baseLayers = len(base.layers)
	}
	if b.opts.Isolation == InPlace {
		sb.root = "/"
		if base == nil || b.sh.lastInPlace != base {
			if err := rootfs.Clear(sb.root, opts...); err != nil {
				return fmt.Errorf("clearing the root filesystem: %w", err)
			}
			if err := b.extractLayers(ctx, sb.root, sb.layers, opts); err != nil {
				return err
			}
		} else if err := b.extractLayers(ctx, sb.root, sb.layers[baseLayers:], opts); err != nil {
			return err
		}
		b.sh.lastInPlace = nil
	} else {
		sb.root = filepath.Join(b.opts.WorkDir, "stages", b.rootName(sb.st.Index), "rootfs")
		if err := os.MkdirAll(filepath.Dir(sb.root), 0o700); err != nil {
			return err
		}
		if base != nil && base.takeRoot(sb.root) {
			if err := b.extractLayers(ctx, sb.root, sb.layers[baseLayers:], opts); err != nil {
				return err
			}
		} else if kept, indexes := b.opts.State.takeTree(sb.root, sb.layers, func(i int) (io.ReadCloser, error) {
			return b.openLayer(ctx, sb.layers[i])
		}, opts); kept > 0 {
			// The state directory's tree of the first layers (issue 17).
			fmt.Fprintf(b.log, "%s started from the state directory's tree of %d layers\n", sb.stepPrefix(1), kept)
			b.knownIndexes(sb.layers[:kept], indexes)
			if err := b.extractLayers(ctx, sb.root, sb.layers[kept:], opts); err != nil {
				return err
			}
		} else {
			if err := os.Mkdir(sb.root, 0o755); err != nil {
				return err
			}
			if err := b.extractLayers(ctx, sb.root, sb.layers, opts); err != nil {
				return err
			}
		}
	}
	sb.applied = len(sb.layers)
	snap, err := rootfs.NewSnapshotter(sb.root, opts...)
	if err != nil {
		return fmt.Errorf("recording the base file tree: %w", err)
	}
	sb.snap, sb.ready = snap, true
	return nil
}

// snapshot writes the changes snap sees since its last snapshot as a layer
// (the empty layer when nothing changed).
func (sb *stageBuilder) snapshot(snap *rootfs.Snapshotter, paths []string) (v1.Layer, error) {
	if paths != nil && len(paths) == 0 {
		return sb.emptyLayer()
	}
	var sopts []rootfs.SnapshotOption
	if len(paths) > 0 {
		sopts = append(sopts, rootfs.Paths(paths...))
	}
	if e := sb.b.opts.SourceDateEpoch; e != nil {
		sopts = append(sopts, rootfs.ModTime(*e))
	}
	if len(sb.defaultMounts) > 0 {
		sopts = append(sopts, rootfs.DefaultMounts(sb.defaultMounts...))
		sb.defaultMounts = nil
	}
	var ix *rootfs.Index
	if sb.b.keyed {
		ix = rootfs.NewIndex()
		sopts = append(sopts, rootfs.IndexTo(ix))
	}
	l, err := layer.Write(sb.b.layers, sb.b.opts.Layers, func(w io.Writer) (bool, error) {
		return snap.Snapshot(w, sopts...)
	})
	if err != nil {
		return nil, fail(result.ReasonInternal, fmt.Errorf("snapshotting the file system: %w", err))
	}
	if l == nil {
		return sb.emptyLayer()
	}
	if ix != nil {
		d, _ := l.Digest()
		sb.b.sh.indexed.Store(d, true)
		sb.b.storeIndex(d, ix, true)
	}
	return l, nil
}

// emptyLayer is the layer of a file system step that changed nothing.
// BuildKit gives every RUN, COPY and ADD, and every WORKDIR but WORKDIR /,
// a layer whether it changed something or not (dockerfile2llb's
// commitToHistory with withLayer, and its exporter writes the diff of each
// ref of the chain, an empty tar for a step that changed nothing): so does
// the executor, with a history entry whose empty_layer is false
// (testExportedHistory: "RUN ls" has a layer). Metadata instructions have
// none.
func (sb *stageBuilder) emptyLayer() (v1.Layer, error) {
	l, err := layer.Empty(sb.b.opts.Layers)
	if err != nil {
		return nil, fail(result.ReasonInternal, err)
	}
	if sb.b.keyed {
		d, _ := l.Digest()
		if _, seen := sb.b.sh.indexed.LoadOrStore(d, true); !seen {
			sb.b.storeIndex(d, rootfs.NewIndex(), true)
		}
	}
	return l, nil
}

// takeRoot moves the stage's root to dst when this stage's only consumer is
// the caller's FROM: nobody else needs it, so it need not be copied.
func (s *stageResult) takeRoot(dst string) bool {
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
	return append(opts, rootfs.WithMaxSize(b.opts.MaxLayerSize))
}

// extractLayers unpacks layers in order into root, streaming each from the
// registry (or its file) straight into the extraction, the next ones
// fetched and decompressed a little ahead, from their twins when the cache
// has them (see unpacking), and indexes them on the way. Each layer is
// held to MaxLayerSize.
func (b *builder) extractLayers(ctx context.Context, root string, layers []v1.Layer, opts []rootfs.Option) error {
	u := b.startUnpacking(ctx, layers)
	defer u.close()
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, _ := l.Digest()
		ix := u.newIndex(i)
		lopts := append(slices.Clone(opts), rootfs.WithMaxSize(b.opts.MaxLayerSize))
		if ix != nil {
			lopts = append(lopts, rootfs.WithIndex(ix))
		}
		ml, remote := l.(*remote.MountableLayer)
		rc, err := u.open(i)
		if err != nil {
			u.done(i, false)
			if remote && errors.Is(err, cache.ErrRefused) {
				return fmt.Errorf("pulling and extracting layer %s from %s: %w", d, ml.Reference.Context(), err)
			}
			return fmt.Errorf("fetching layer %s: %w", d, err)
		}
		err = rootfs.Extract(root, rc, lopts...)
		if err == nil {
			u.extracted(i, rc)
		}
		if remote && err != nil && !errors.Is(err, rootfs.ErrLayerTooLarge) && ctx.Err() == nil {
			// A download that is not the blob the manifest names fails
			// the extraction before its digest is checked: say so.
			if size, serr := l.Size(); serr == nil && size > 0 && size <= b.opts.MaxLayerSize {
				switch derr := layer.Drain(rc, size+1); {
				case errors.Is(derr, io.ErrUnexpectedEOF):
					err = fmt.Errorf("the download ended early (%w)", derr)
				case derr != nil:
					err = fmt.Errorf("the download does not match the layer's digest (%w)", derr)
				}
			}
		}
		// Closing reads what the extraction left of a cached layer and
		// checks it (cache.ErrRefused).
		if cerr := rc.Close(); err == nil || errors.Is(cerr, cache.ErrRefused) {
			err = cerr
		}
		u.done(i, err == nil)
		if errors.Is(err, rootfs.ErrLayerTooLarge) {
			return fmt.Errorf("extracting layer %s: %w (the executor's --max-layer-size)", d, err)
		}
		if remote && err != nil {
			// A layer read from a registry (a base image's, a cached
			// step's): the error names the pull, since a corrupt or
			// truncated download shows up here as a bad archive.
			return fmt.Errorf("pulling and extracting layer %s from %s: %w", d, ml.Reference.Context(), err)
		}
		if err != nil {
			return fmt.Errorf("extracting layer %s: %w", d, err)
		}
		b.storeIndex(d, ix, false)
	}
	return nil
}

// newIndex returns an index to fill while reading the whole layer whose
// digest is d, or nil when the build indexes no layers (it has no cache)
// or already stores that index.
func (b *builder) newIndex(d v1.Hash) *rootfs.Index {
	if !b.keyed {
		return nil
	}
	if _, seen := b.sh.indexed.LoadOrStore(d, true); seen {
		return nil
	}
	return rootfs.NewIndex()
}

// storeIndex stores ix, filled from the layer whose digest is d, in the
// cache (in the background); made says this build made the layer, whose
// index the cache can then only hold if the very same layer was made
// before, so it is written without asking. A layer that could not be
// indexed is only read in full when a later build needs it.
func (b *builder) storeIndex(d v1.Hash, ix *rootfs.Index, made bool) {
	if ix == nil {
		return
	}
	data, err := ix.Bytes()
	if err != nil {
		fmt.Fprintf(b.log, "not indexing layer %s: %v\n", d, err)
		return
	}
	_, bad := b.sh.indexes.Load(d) // only an unreadable index is there before
	b.sh.indexes.Store(d, data)
	b.opts.Cache.StoreIndex(d, data, bad || made)
}

// emptyImage is the config of scratch for platform p (BuildKit's
// emptyImage).
func emptyImage(p ocispec.Platform) dockerspec.DockerOCIImage {
	var img dockerspec.DockerOCIImage
	img.OS = p.OS
	img.Architecture = p.Architecture
	img.OSVersion = p.OSVersion
	img.OSFeatures = slices.Clone(p.OSFeatures)
	img.Variant = p.Variant
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

// imageSource is a FROM or COPY --from image: the pulled manifest and
// config and, once needed, its extracted tree.
type imageSource struct {
	once   sync.Once
	err    error
	digest v1.Hash
	cfg    dockerspec.DockerOCIImage
	layers []v1.Layer

	// ref is the reference pulled, normalised (normalizedRef); resolved
	// is what it resolved to, an index's digest when index is set (digest
	// is then the platform's manifest's).
	ref      string
	resolved v1.Hash
	index    bool

	treeOnce sync.Once
	tree     string
	treeErr  error
}

// rootName is the name of stage i's root directory under the work
// directory's "stages": its index, after the platform's for the second
// platform and later.
func (b *builder) rootName(i int) string {
	if b.index == 0 {
		return fmt.Sprint(i)
	}
	return fmt.Sprintf("p%d-%d", b.index, i)
}

// image pulls the manifest and config of ref for platform p once per build
// (no layer bytes).
func (b *builder) image(ctx context.Context, ref string, p ocispec.Platform) (*imageSource, error) {
	k := imageKey{ref: ref, platform: dockerfile.FormatPlatform(p)}
	b.sh.mu.Lock()
	src, ok := b.sh.images[k]
	if !ok {
		src = &imageSource{}
		b.sh.images[k] = src
	}
	b.sh.mu.Unlock()
	src.once.Do(func() { src.err = src.pull(ctx, b, ref, p) })
	return src, src.err
}

func (src *imageSource) pull(ctx context.Context, b *builder, s string, p ocispec.Platform) error {
	refs, err := b.opts.PullReferences(s)
	if err != nil {
		return fmt.Errorf("parsing image reference %q: %w", s, err)
	}
	// Each reference in turn (registry mirrors before Docker Hub); the
	// error reported is the last one's, the others are logged.
	var img v1.Image
	var ref name.Reference
	var desc *remote.Descriptor
	for i, r := range refs {
		opts := append([]remote.Option{remote.WithContext(ctx)}, b.opts.Remote(r)...)
		// remote.Image, keeping what the reference resolved to (the
		// index, for a multi-platform tag) for the result's bases.
		if desc, err = remote.Get(r, opts...); err == nil {
			img, err = imageFor(desc, p)
		}
		var noMatch *noPlatformError
		if err == nil || ctx.Err() != nil || errors.As(err, &noMatch) {
			ref = r
			break
		}
		if i < len(refs)-1 {
			fmt.Fprintf(b.log, "pulling %s: %v; trying %s\n", r, err, refs[i+1])
		}
		ref = r
	}
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	if src.digest, err = img.Digest(); err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	src.resolved, src.index = desc.Digest, desc.MediaType.IsIndex()
	if src.ref, err = normalizedRef(s); err != nil {
		return fmt.Errorf("parsing image reference %q: %w", s, err)
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
	return nil
}

// noPlatformError is an index that has no manifest for the platform.
type noPlatformError struct {
	index    v1.Hash
	platform ocispec.Platform
	has      []string
}

func (e *noPlatformError) Error() string {
	has := "no platform"
	if len(e.has) > 0 {
		has = strings.Join(e.has, ", ")
	}
	return fmt.Sprintf("no match for platform %s in the image index %s (it has %s)", dockerfile.FormatPlatform(e.platform), e.index, has)
}

// maxIndexDepth bounds how deep indexes nest in an image reference.
const maxIndexDepth = 4

// imageFor is the image desc names for platform p, as BuildKit resolves a
// base image (imageutil.Config, containerd's images.Manifest with
// platforms.Only(p)): an image manifest is taken whatever platform its
// config names (the build checks warn of a mismatch:
// InvalidBaseImagePlatform); from an index, the manifests whose platform
// p's matcher accepts (p itself, then what it runs: arm/v6 for arm/v7,
// 386 for amd64, ...) or that name none, best first, those without a
// platform last, and of those the first whose config matches.
func imageFor(desc *remote.Descriptor, p ocispec.Platform) (v1.Image, error) {
	if !desc.MediaType.IsIndex() {
		return desc.Image()
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, err
	}
	return imageFromIndex(idx, desc.Digest, platforms.Only(p), p, 0)
}

func imageFromIndex(idx v1.ImageIndex, digest v1.Hash, m platforms.MatchComparer, p ocispec.Platform, depth int) (v1.Image, error) {
	if depth >= maxIndexDepth {
		return nil, fmt.Errorf("image index %s: indexes nested more than %d deep", digest, maxIndexDepth)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var cands []v1.Descriptor
	var has []string
	for _, d := range im.Manifests {
		if d.Platform != nil {
			has = append(has, platforms.FormatAll(ociPlatform(*d.Platform)))
		}
		if d.Platform == nil || m.Match(ociPlatform(*d.Platform)) {
			cands = append(cands, d)
		}
	}
	slices.SortStableFunc(cands, func(a, b v1.Descriptor) int {
		switch {
		case a.Platform == nil && b.Platform == nil:
			return 0
		case a.Platform == nil:
			return 1
		case b.Platform == nil:
			return -1
		case m.Less(ociPlatform(*a.Platform), ociPlatform(*b.Platform)):
			return -1
		case m.Less(ociPlatform(*b.Platform), ociPlatform(*a.Platform)):
			return 1
		}
		return 0
	})
	for _, d := range cands {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			img, err := imageFromIndex(child, d.Digest, m, p, depth+1)
			var noMatch *noPlatformError
			if errors.As(err, &noMatch) {
				continue
			}
			return img, err
		case !d.MediaType.IsImage():
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		if d.Platform == nil {
			// A manifest the index names no platform for: its config's
			// platform decides (images.Manifest).
			cf, err := img.ConfigFile()
			if err != nil {
				return nil, err
			}
			if !m.Match(platforms.Normalize(ocispec.Platform{OS: cf.OS, Architecture: cf.Architecture})) {
				continue
			}
		}
		return img, nil
	}
	slices.Sort(has)
	return nil, &noPlatformError{index: digest, platform: p, has: slices.Compact(has)}
}

// ociPlatform is p as the OCI image spec's type.
func ociPlatform(p v1.Platform) ocispec.Platform {
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: slices.Clone(p.OSFeatures)}
}

// extracted returns a directory holding the image's file tree, extracting
// it on first use.
func (src *imageSource) extracted(ctx context.Context, b *builder) (string, error) {
	src.treeOnce.Do(func() {
		src.tree, src.treeErr = b.extractTree(ctx, "image", src.layers)
	})
	return src.tree, src.treeErr
}

func (b *builder) extractTree(ctx context.Context, id string, layers []v1.Layer) (string, error) {
	dir, err := os.MkdirTemp(b.opts.WorkDir, "tree-"+id+"-")
	if err != nil {
		return "", err
	}
	if err := b.extractLayers(ctx, dir, layers, nil); err != nil {
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
