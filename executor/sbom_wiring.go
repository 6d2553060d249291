package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/sbom"
)

// The SBOM of each image (--sbom), and what it costs (issue 16).
//
// An SBOM is made once per image: the statement about the image and the
// one about the index (signed with --sign-key) hold the same document.
// Before anything is unpacked or scanned, the layer cache (--cache) is
// asked for the document of the same image (its manifest digest, the same
// on a rebuild from the cache), the same format and the same generator
// (sbomKey): a rebuild that changed nothing makes no SBOM. A document from
// the cache is whatever the cache repository's last writer put there, as
// its layers are: it is used only if it is a document of the format that
// names that image (sbom.Validate), and made again otherwise.
//
// The generator, slipway-sbom, spends most of a run building syft's
// license classifier whatever the tree (about a second and most of its
// memory), so it is started before its tree is there: when the build first
// runs a step rather than take it from the cache (the image will be new,
// its SBOM in no cache; under chroot isolation only, see startBuild), else
// when the cache misses, and it prepares while the build goes on or the
// image is unpacked. The tree it reads is the
// builder's own final stage when the build left it whole (see treeFor),
// else the image's layers unpacked in the work directory. The builder
// tells each image's digest and tree (build.Options.ImageReady) before it
// waits for the cache to take the image's new layers: the lookup and the
// scan of that tree go on meanwhile (imageReady), and attach takes their
// result.

// sbomGenerator makes one SBOM (sbom.Generator).
type sbomGenerator interface {
	Run(ctx context.Context, root, imageName string) (*sbom.Result, error)
	Close()
}

// startSBOM starts a generator: executor/sbom's Start, which runs
// slipway-sbom (beside the executor, else on PATH) in a child process of
// its own, bounded in time, memory and output, that prepares until it is
// given a tree. Tests replace it.
var startSBOM = func(ctx context.Context, opts sbom.Options) (sbomGenerator, error) {
	return sbom.Start(ctx, opts)
}

// sbomFingerprint identifies the generator's documents (sbom.Fingerprint:
// the digest of the slipway-sbom binary and the options). Tests replace
// it.
var sbomFingerprint = sbom.Fingerprint

// documentCache is where SBOMs are kept between builds: the layer cache
// (cache.Cache).
type documentCache interface {
	Document(ctx context.Context, key string, max int64) ([]byte, error)
	StoreDocument(key string, doc []byte)
}

// sbomState is the build's SBOM machinery.
type sbomState struct {
	// ctx is the build's, which bounds a generator started ahead and
	// the SBOMs begun while the build ends; cancel ends them (endBuild).
	ctx    context.Context
	cancel context.CancelFunc
	// docs is the layer cache's store of documents; nil without --cache.
	docs documentCache
	// fingerprint is sbomFingerprint's answer, computed once, in the
	// background from the build's start.
	fingerprint func() (string, error)
	// destinations name the images (sbomName).
	destinations []name.Reference
	// log is the build's log; debug the same at -v debug, else
	// io.Discard.
	log, debug io.Writer

	mu sync.Mutex
	// ahead is a generator started ahead and not used yet.
	ahead sbomGenerator
	// early are the SBOMs begun when the builder told an image's digest,
	// by digest, until attach takes them; wg counts them.
	early map[v1.Hash]*sbomFuture
	wg    sync.WaitGroup
}

// sbomFuture is an SBOM begun before attach: done is closed when doc (or
// err) is there, or when the cache missed and the image has no tree to
// scan (then key is the document's key in the cache, "" without one, and
// attach unpacks the image).
type sbomFuture struct {
	done chan struct{}
	doc  []byte
	key  string
	err  error
}

// sbomOptions are the generator's options: the build's format; the
// child's temporary directory in the work directory.
func (sc *supplyChain) sbomOptions() sbom.Options {
	return sbom.Options{Format: sc.sbomFormat, TempDir: sc.workDir}
}

// startBuild readies the SBOMs of a build that asked for them: their
// documents are kept in the layer cache when bo has the registry's, the
// generator's fingerprint is computed while the build runs, and bo's hooks
// start the generator (stepRuns) and each image's SBOM (imageReady).
func (sc *supplyChain) startBuild(ctx context.Context, bo *build.Options, destinations []name.Reference, verbosity string, logw io.Writer) {
	if !sc.sbom {
		return
	}
	s := &sc.sboms
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.destinations, s.log, s.debug = destinations, logw, io.Discard
	if verbosity == "debug" || verbosity == "trace" {
		s.debug = logw
	}
	if dc, ok := bo.Cache.(*cache.Cache); ok && dc != nil {
		s.docs = dc
		opts := sc.sbomOptions()
		s.fingerprint = sync.OnceValues(func() (string, error) { return sbomFingerprint(opts) })
		go s.fingerprint()
	}
	bo.ImageReady = sc.imageReady
	// In place, the runner kills every process of the pod but the
	// executor after each RUN step (what a step left running): a
	// generator started then would be killed too. It starts after the
	// build there, while the image is unpacked.
	if bo.Isolation != build.InPlace {
		bo.StepRuns = sc.stepRuns
	}
}

// stepRuns is called when the build runs a step rather than take it from
// the cache, and before an image is unpacked: a generator starts preparing
// then, unless one is already.
func (sc *supplyChain) stepRuns() {
	s := &sc.sboms
	if s.ctx == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ahead != nil {
		return
	}
	g, err := startSBOM(s.ctx, sc.sbomOptions())
	if err != nil {
		// Started again, and failing for good, when the SBOM is made.
		fmt.Fprintf(s.debug, "Starting the SBOM generator ahead: %v\n", err)
		return
	}
	s.ahead = g
	fmt.Fprintln(s.debug, "Started the SBOM generator ahead of the image")
}

// imageReady is called when the builder knows the digest of the ith image
// and, when it left one, its whole tree: the image's SBOM is looked up in
// the cache and, when it is not there and the tree is, made from the
// tree, in the background, for attach.
func (sc *supplyChain) imageReady(i int, d v1.Hash, tree string) {
	s := &sc.sboms
	f := &sbomFuture{done: make(chan struct{})}
	s.mu.Lock()
	if s.early == nil {
		s.early = map[v1.Hash]*sbomFuture{}
	}
	if _, dup := s.early[d]; dup {
		s.mu.Unlock()
		return
	}
	s.early[d] = f
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(f.done)
		name := sbomName(s.destinations, d)
		if f.doc, f.key = sc.cachedSBOM(s.ctx, d, name); f.doc != nil || tree == "" {
			return
		}
		f.doc, f.err = sc.makeSBOM(s.ctx, d, tree, name, f.key, "the builder's tree")
	}()
}

// takeEarly returns the SBOM begun for the image of digest d, nil if
// none was.
func (s *sbomState) takeEarly(d v1.Hash) *sbomFuture {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.early[d]
	delete(s.early, d)
	return f
}

// generator returns the generator started ahead, else a new one.
func (sc *supplyChain) generator(ctx context.Context) (sbomGenerator, error) {
	s := &sc.sboms
	s.mu.Lock()
	g := s.ahead
	s.ahead = nil
	s.mu.Unlock()
	if g != nil {
		return g, nil
	}
	if s.ctx != nil {
		ctx = s.ctx
	}
	return startSBOM(ctx, sc.sbomOptions())
}

// endBuild ends what the build's SBOMs left running: the SBOMs begun
// for images attach did not take (a build that failed after the builder
// told them), and a generator started ahead and not used.
func (sc *supplyChain) endBuild() {
	s := &sc.sboms
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	g := s.ahead
	s.ahead = nil
	s.mu.Unlock()
	if g != nil {
		g.Close()
	}
}

// sbomName is the name an image's SBOM gives it: the first destination's
// repository with the image's digest, or the digest alone without a
// destination. By digest, so that a document describes that image and no
// other, whatever tag pushes it (and can be kept for it: sbomKey).
func sbomName(destinations []name.Reference, d v1.Hash) string {
	if len(destinations) == 0 {
		return d.String()
	}
	return destinations[0].Context().Name() + "@" + d.String()
}

// sbomKey is the key of an image's SBOM in the layer cache: its name
// (the image's digest), the format and the generator's fingerprint.
func sbomKey(name, fingerprint string) string {
	return "sbom " + name + " " + fingerprint
}

// sbomDocument is the SBOM of ai's file system, an image of the name
// imageName: what imageReady began for it, else from the layer cache when
// it holds one (see the comment at the top), else made by the generator
// from tree, the builder's whole tree of the image when it left one
// (treeFor), else from the image's layers unpacked in the work directory,
// and then kept in the cache.
func sbomDocument(ctx context.Context, o *options, ai attestedImage, tree, imageName string) ([]byte, error) {
	sc := &o.sc
	var doc []byte
	var key string
	if f := sc.sboms.takeEarly(ai.digest); f != nil {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.doc != nil || f.err != nil {
			return f.doc, f.err
		}
		key = f.key
	} else if doc, key = sc.cachedSBOM(ctx, ai.digest, imageName); doc != nil {
		return doc, nil
	}
	root, kind := tree, "the builder's tree"
	if root == "" {
		// The generator prepares while the image is unpacked.
		sc.stepRuns()
		dir, err := os.MkdirTemp(sc.workDir, "sbom-")
		if err != nil {
			return nil, fmt.Errorf("making the SBOM's directory: %w", err)
		}
		defer os.RemoveAll(dir)
		root, kind = filepath.Join(dir, "rootfs"), "its unpacked layers"
		if err := os.Mkdir(root, 0o755); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := unpackImage(ctx, ai, root, o.maxLayerBytes); err != nil {
			return nil, err
		}
		fmt.Fprintf(sc.sboms.debugLog(), "Unpacked %s for its SBOM in %.2fs\n", ai.digest, time.Since(start).Seconds())
	}
	return sc.makeSBOM(ctx, ai.digest, root, imageName, key, kind)
}

// cachedSBOM returns the SBOM of the image of digest d, of the name
// imageName, from the layer cache, nil when the cache has none (or none
// it may use, said in the log), and the key it is kept under ("" without
// a cache, or a generator that cannot be identified).
func (sc *supplyChain) cachedSBOM(ctx context.Context, d v1.Hash, imageName string) ([]byte, string) {
	s := &sc.sboms
	if s.docs == nil {
		return nil, ""
	}
	fp, err := s.fingerprint()
	if err != nil {
		fmt.Fprintf(s.log, "WARNING: the SBOM generator cannot be identified, so its documents are not kept in the cache: %v\n", err)
		return nil, ""
	}
	key := sbomKey(imageName, fp)
	start := time.Now()
	doc, err := s.docs.Document(ctx, key, sbom.DefaultMaxOutput)
	if err == nil {
		err = sbom.Validate(doc, sc.sbomFormat, imageName)
	}
	switch {
	case err == nil:
		fmt.Fprintf(s.log, "CACHED SBOM of %s\n", d)
		fmt.Fprintf(s.debugLog(), "Read the SBOM of %s from the cache in %.2fs\n", d, time.Since(start).Seconds())
		return doc, key
	case errors.Is(err, cache.ErrMiss):
	default:
		fmt.Fprintf(s.log, "WARNING: the SBOM of %s in the cache is not used: %v\n", d, err)
	}
	return nil, key
}

// makeSBOM runs the generator (started ahead, else now) on root, the tree
// of the image of digest d (kind says which), and keeps its document
// under key in the cache when key is set.
func (sc *supplyChain) makeSBOM(ctx context.Context, d v1.Hash, root, imageName, key, kind string) ([]byte, error) {
	s := &sc.sboms
	g, err := sc.generator(ctx)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	res, err := g.Run(ctx, root, imageName)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(s.debugLog(), "Made the SBOM of %s from %s in %.2fs after the tree was there (generator's peak RSS %d MiB)\n", d, kind, res.Duration.Seconds(), res.PeakRSS>>20)
	if key != "" {
		s.docs.StoreDocument(key, res.Document)
	}
	return res.Document, nil
}

// debugLog is the log at -v debug, else io.Discard.
func (s *sbomState) debugLog() io.Writer {
	if s.debug == nil {
		return io.Discard
	}
	return s.debug
}

// treeFor is the directory holding the whole file system of the ith image
// of the build, when the builder left one (build.Report.Trees: the final
// stage's root under chroot isolation, every one of its layers applied to
// it), else "".
//
// That tree is the image's, file for file, as far as the generator reads
// it: each of its layers is a snapshot of it, and it holds besides only
// what no cataloger reads or what the generator skips (the mount points a
// RUN step had, device nodes, which syft does not read even through a
// link; ownership and times, which no document records). In place the
// stage's tree is the container's root: the pod's /proc, /sys and /dev, the
// kubelet's /etc/hosts, /etc/hostname and /etc/resolv.conf mounted over
// the image's, the executor's own files and the paths it excludes. Those
// are not the image's, and a file of the image there would be missed or
// replaced: the layers are unpacked instead (no tree is reported).
func treeFor(rep *build.Report, i int) string {
	if rep == nil || i >= len(rep.Trees) {
		return ""
	}
	return rep.Trees[i]
}

// sbomStatement is the in-toto statement of the SBOM doc about sub.
func sbomStatement(o *options, doc []byte, sub attest.Subject) (attest.Statement, error) {
	predicateType := attest.PredicateSPDX
	if o.sc.sbomFormat == "cyclonedx-json" {
		predicateType = attest.PredicateCycloneDX
	}
	st, err := attest.SBOM(doc, predicateType, sub)
	if err != nil {
		return attest.Statement{}, err
	}
	return attest.Statement{PredicateType: predicateType, JSON: st}, nil
}

// unpackImage extracts the layers of ai's image into root, in order, with
// the extractor of every layer of the build (rootfs.Extract: contained in
// the directory, whiteouts applied, --max-layer-size per layer), without
// ownership, device nodes or extended attributes, which no SBOM reads.
func unpackImage(ctx context.Context, ai attestedImage, root string, maxLayer int64) error {
	layers, err := ai.image.Layers()
	if err != nil {
		return fmt.Errorf("reading the image's layers: %w", err)
	}
	opts := []rootfs.Option{rootfs.WithContext(ctx), rootfs.WithoutOwnership(), rootfs.WithDevices(rootfs.Ignored), rootfs.WithXattrs(rootfs.Ignored)}
	if maxLayer > 0 {
		opts = append(opts, rootfs.WithMaxSize(maxLayer))
	}
	for i, l := range layers {
		rc, err := layer.Uncompressed(l)
		if err != nil {
			return fmt.Errorf("reading layer %d of the image: %w", i+1, err)
		}
		err = rootfs.Extract(root, rc, opts...)
		rc.Close()
		if err != nil {
			return fmt.Errorf("unpacking layer %d of the image: %w", i+1, err)
		}
	}
	return nil
}
