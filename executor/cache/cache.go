// Package cache is the registry-backed layer cache. Each cached step is a
// plain single-layer OCI image (or a layer-less one, for a step that
// changed nothing) tagged with the step's key in the cache repository, so
// any OCI registry stores it. Its manifest carries, as annotations, the key,
// when the step made it and its layer's diff ID, so a lookup is one
// manifest read: the layer's bytes stay in the registry until a later step
// needs the file system, and pushes of the built image mount them from
// there. Entries written before the annotations (Docker manifests) are
// still read, through their config.
//
// Next to the entries, the repository holds layer indexes (tagged
// "sha256-HEX.index"): each layer's tar headers without the file contents,
// the same kind of plain image. A copy that misses after hits reads them
// instead of the layers below it (see rootfs.Index).
//
// What an entry can do to a build: the key is no secret and no MAC, so
// whoever can push to the cache repository can write an entry under any key,
// holding any layer, and a build that looks the key up takes that layer into
// its image. Only the cluster's choice of who shares a cache repository
// prevents that (the manager allows a namespace only repositories under its
// output repository or its own prefixes; see controllers/cachepolicy.go), and
// an executor run by hand trusts whoever can push to its --cache-repo.
// What the cache checks stops corrupt and mismatched entries, not a writer
// with push rights: an entry is used only if its manifest is one this package
// writes (an OCI or Docker v2 image manifest and config, at most one layer of
// a tar media type without URLs, the key it was looked up by, when it was
// made, the layer's diff ID), and its layer's bytes, when read, only if they
// hash to the manifest's digest and size and, uncompressed, to the diff ID.
// The bytes are checked as they stream (to whoever reads them: extraction,
// indexes, a push that cannot mount): a reader sees an ErrRefused error at
// the end of the layer or from Close, which drains what it did not read, and
// the key is a miss for the rest of the build. A build whose steps all hit
// reads no layer, so it checks none: a layer that is not its diff ID then
// makes an image that container runtimes refuse to unpack (they check diff
// IDs), and a registry serving other bytes for a digest is caught by every
// client that pulls it.
package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// keyLabel is set on every cache image's config, with the key it stores;
// keyAnnotation on its manifest too. createdAnnotation (the standard one)
// dates the manifest as the config's created field does, and
// diffIDAnnotation gives each layer descriptor its layer's diff ID.
const (
	keyLabel          = "dev.slipway.cache.key"
	keyAnnotation     = keyLabel
	createdAnnotation = "org.opencontainers.image.created"
	diffIDAnnotation  = "dev.slipway.cache.diff-id"
)

// Options configure a Cache.
type Options struct {
	// Repo is the cache repository.
	Repo name.Repository
	// TTL is how long an entry is used after it was written; 0 means
	// forever. kaniko's default is two weeks.
	TTL time.Duration
	// Remote returns the options of calls to the cache repository (auth,
	// transport); pull is false for writes.
	Remote func(pull bool) []remote.Option
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
}

// Cache looks steps up and stores them. It is safe for concurrent use. It
// owns its naming: an entry is tagged with its key in the repository, an
// index as indexTag says; no caller builds a tag.
type Cache struct {
	o Options

	wg       sync.WaitGroup
	mu       sync.Mutex
	storeErr error
	stored   int
	pending  int                 // writes started and not ended
	uploads  map[v1.Hash]*upload // the layers of the entries stored, by digest
	refused  map[string]bool     // keys whose entries' bytes were not what they said
	twins    map[v1.Hash]int     // layer twins stored or refused, by the original's digest (twins.go)
}

// New returns a Cache.
func New(o Options) *Cache {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Remote == nil {
		o.Remote = func(bool) []remote.Option { return nil }
	}
	return &Cache{o: o}
}

// Repo is the cache repository.
func (c *Cache) Repo() name.Repository { return c.o.Repo }

// Entry is a cached step.
type Entry struct {
	// Layer is the step's layer, nil when the step changed nothing. Its
	// bytes are fetched only when read.
	Layer v1.Layer
	// Created is when the step made its layer (what Store was given).
	Created time.Time
}

// ErrMiss is returned for keys that are not cached (or expired).
var ErrMiss = errors.New("not in the cache")

// ErrRefused is in the errors of reading an entry's layer whose bytes are not
// what the entry's manifest says (digest, size or diff ID). Its key is a miss
// from then on: a build that meets it can build again without the entry.
var ErrRefused = errors.New("the cache entry's layer is not what its manifest says")

// Lookup returns the entry of key: ErrMiss when there is none, it expired
// or its layer was refused, another error when the cache could not be read
// or the entry is not one this package writes (which callers treat as a
// miss too).
func (c *Cache) Lookup(ctx context.Context, key string) (Entry, error) {
	c.mu.Lock()
	refused := c.refused[key]
	c.mu.Unlock()
	if refused {
		return Entry{}, ErrMiss
	}
	created, layers, err := c.read(ctx, key, key, "cache entry")
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Created: created}
	if c.o.TTL > 0 && c.o.Now().Sub(e.Created) > c.o.TTL {
		return Entry{}, ErrMiss
	}
	switch len(layers) {
	case 0:
	case 1:
		e.Layer = layers[0]
	default:
		return Entry{}, fmt.Errorf("cache entry %s has %d layers, want at most one", c.o.Repo.Tag(key), len(layers))
	}
	return e, nil
}

// The media types of what this package writes, and of entries earlier
// versions wrote; anything else under an entry's tag is refused.
var (
	manifestTypes = map[types.MediaType]bool{types.OCIManifestSchema1: true, types.DockerManifestSchema2: true}
	configTypes   = map[types.MediaType]bool{types.OCIConfigJSON: true, types.DockerConfigJSON: true}
	layerTypes    = map[types.MediaType]bool{
		types.OCILayer: true, types.OCILayerZStd: true, types.OCIUncompressedLayer: true,
		types.DockerLayer: true, types.DockerUncompressedLayer: true,
	}
)

// read reads the image tagged tag, which must hold key (what names it in
// errors): when it was made and its layers, ErrMiss when there is no such
// tag. An annotated manifest says all of that; an entry without the
// annotations is read through its config. Either way the manifest must be
// one this package writes (see the package doc), and the layers check their
// bytes when read.
func (c *Cache) read(ctx context.Context, tag, key, what string) (time.Time, []v1.Layer, error) {
	created, layers, _, _, err := c.readN(ctx, tag, key, what, 1)
	return created, layers, err
}

// readN is read for images of up to maxLayers layers; it returns the
// manifest's annotations and digest too.
func (c *Cache) readN(ctx context.Context, tag, key, what string, maxLayers int) (time.Time, []v1.Layer, map[string]string, v1.Hash, error) {
	ref := c.o.Repo.Tag(tag)
	opts := append(c.o.Remote(true), remote.WithContext(ctx))
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || isUnknown(te)) {
			return time.Time{}, nil, nil, v1.Hash{}, ErrMiss
		}
		return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("looking up %s: %w", ref, err)
	}
	if !manifestTypes[desc.MediaType] {
		return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("%s %s is a %s, not an image manifest", what, ref, desc.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	if err := checkManifest(m, maxLayers); err != nil {
		return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("%s %s: %w", what, ref, err)
	}
	var created time.Time
	diffIDs := make([]v1.Hash, len(m.Layers))
	if held, ok := m.Annotations[keyAnnotation]; ok {
		if held != key {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("%s %s is annotated with another key, %s", what, ref, held)
		}
		if created, err = time.Parse(time.RFC3339Nano, m.Annotations[createdAnnotation]); err != nil {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("reading %s %s: annotation %s: %w", what, ref, createdAnnotation, err)
		}
		for i, d := range m.Layers {
			if diffIDs[i], err = v1.NewHash(d.Annotations[diffIDAnnotation]); err != nil {
				return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("reading %s %s: layer %s: annotation %s: %w", what, ref, d.Digest, diffIDAnnotation, err)
			}
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("reading %s %s: %w", what, ref, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("reading %s %s: %w", what, ref, err)
		}
		if held := cfg.Config.Labels[keyLabel]; held != key {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("%s %s is labelled with another key, %q", what, ref, held)
		}
		if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("%s %s: %d diff IDs for %d layers", what, ref, len(cfg.RootFS.DiffIDs), len(m.Layers))
		}
		copy(diffIDs, cfg.RootFS.DiffIDs)
		created = cfg.Created.Time
	}
	layers := make([]v1.Layer, 0, len(m.Layers))
	for i, d := range m.Layers {
		if diffIDs[i].Algorithm != "sha256" {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("%s %s: layer %s: diff ID %s is not a sha256 digest", what, ref, d.Digest, diffIDs[i])
		}
		l, err := remote.Layer(c.o.Repo.Digest(d.Digest.String()), opts...)
		if err != nil {
			return time.Time{}, nil, nil, v1.Hash{}, fmt.Errorf("reading %s %s: %w", what, ref, err)
		}
		dl := &describedLayer{desc: d, diffID: diffIDs[i], ref: ref.String(), refuse: func() { c.refuse(key) }}
		// Still a MountableLayer outside, so that pushes mount it.
		if ml, ok := l.(*remote.MountableLayer); ok {
			dl.Layer = ml.Layer
			l = &remote.MountableLayer{Layer: dl, Reference: ml.Reference}
		} else {
			dl.Layer = l
			l = dl
		}
		layers = append(layers, l)
	}
	return created.UTC(), layers, m.Annotations, desc.Digest, nil
}

// checkManifest refuses what this package does not write: more than
// maxLayers layers (one, but for saved cache mounts), a config that is not an image config, layers of other media types
// (foreign or non-distributable ones, which name URLs to fetch them from),
// descriptors with URLs, digests other than sha256.
func checkManifest(m *v1.Manifest, maxLayers int) error {
	if m.SchemaVersion != 2 {
		return fmt.Errorf("schema version %d, want 2", m.SchemaVersion)
	}
	if !configTypes[m.Config.MediaType] {
		return fmt.Errorf("config of media type %s, want an image config", m.Config.MediaType)
	}
	if len(m.Layers) > maxLayers {
		return fmt.Errorf("%d layers, want at most %d", len(m.Layers), maxLayers)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if d.Digest.Algorithm != "sha256" || d.Size < 0 {
			return fmt.Errorf("descriptor of %s with digest %s and size %d", d.MediaType, d.Digest, d.Size)
		}
		if len(d.URLs) > 0 {
			return fmt.Errorf("descriptor of %s names URLs", d.Digest)
		}
	}
	for _, d := range m.Layers {
		if !layerTypes[d.MediaType] {
			return fmt.Errorf("layer %s of media type %s, want a tar layer", d.Digest, d.MediaType)
		}
	}
	return nil
}

// refuse makes key a miss from now on.
func (c *Cache) refuse(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused == nil {
		c.refused = map[string]bool{}
	}
	c.refused[key] = true
}

// describedLayer is a layer of an entry: what its descriptor says is
// answered without a request; its bytes are fetched when read, and checked
// against the descriptor and the diff ID on the way.
type describedLayer struct {
	v1.Layer
	desc   v1.Descriptor
	diffID v1.Hash
	ref    string // the entry, for errors
	refuse func()
}

func (l *describedLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *describedLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *describedLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *describedLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *describedLayer) Descriptor() (*v1.Descriptor, error) { d := l.desc; return &d, nil }

// Compressed returns the layer's bytes, checked as they are read: at the
// end, or on Close, which reads what the caller left, the reader fails with
// ErrRefused unless they are the descriptor's size and digest and
// uncompress to the diff ID. (go-containerregistry checks the digest too,
// but only of a blob read to its end, and not its size.) A layer that
// cannot be fetched at all (the registry fails or times out) is refused
// too: the entry is a miss, and the build makes the step instead.
func (l *describedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		l.refuse()
		return nil, fmt.Errorf("%w: %s: layer %s: fetching it: %v", ErrRefused, l.ref, l.desc.Digest, err)
	}
	return newChecked(rc, l), nil
}

// Uncompressed is Compressed, uncompressed: its diff ID is checked as well
// by the time it ends.
func (l *describedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	r, closeDec, err := uncompress(rc)
	if err != nil {
		if cerr := rc.Close(); errors.Is(cerr, ErrRefused) {
			return nil, cerr
		}
		return nil, err
	}
	return &uncompressed{r: r, rc: rc, closeDec: closeDec}, nil
}

// uncompressed reads a checked layer uncompressed. Bytes that fail to
// uncompress are the checked layer's refusal, which Close gives.
type uncompressed struct {
	r        io.Reader
	rc       io.ReadCloser
	closeDec func()
}

func (u *uncompressed) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if err != nil && err != io.EOF {
		if cerr := u.rc.Close(); errors.Is(cerr, ErrRefused) {
			err = cerr
		}
	}
	return n, err
}

func (u *uncompressed) Close() error {
	u.closeDec()
	return u.rc.Close()
}

// uncompress uncompresses r by its magic bytes (gzip, zstd or none), as the
// build's extraction does.
func uncompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		g, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return g, func() { g.Close() }, nil
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	}
	return br, func() {}, nil
}

// checked reads a layer's bytes, hashing them and, in a goroutine, their
// uncompressed form, and fails at their end (or on Close) unless both are
// what the layer's descriptor and diff ID say.
type checked struct {
	rc     io.ReadCloser
	l      *describedLayer
	digest hash.Hash
	n      int64
	pw     *io.PipeWriter
	diffID chan error // the uncompressed side's verdict

	ended, closed bool
	err           error
}

func newChecked(rc io.ReadCloser, l *describedLayer) *checked {
	pr, pw := io.Pipe()
	c := &checked{rc: rc, l: l, digest: sha256.New(), pw: pw, diffID: make(chan error, 1)}
	go func() {
		c.diffID <- checkDiffID(pr, l.diffID)
		// Whatever the uncompressed side left (trailing bytes, or all of
		// them after an error) must not block the reader.
		io.Copy(io.Discard, pr)
	}()
	return c
}

func checkDiffID(r io.Reader, want v1.Hash) error {
	u, closeDec, err := uncompress(r)
	if err != nil {
		return fmt.Errorf("uncompressing: %w", err)
	}
	defer closeDec()
	h := sha256.New()
	if _, err := io.Copy(h, u); err != nil {
		return fmt.Errorf("uncompressing: %w", err)
	}
	if got := (v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}); got != want {
		return fmt.Errorf("uncompressed it is %s, not its diff ID %s", got, want)
	}
	return nil
}

func (c *checked) Read(p []byte) (int, error) {
	if c.ended {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	// One byte more than the descriptor's size is enough to know it is
	// too long.
	if left := c.l.desc.Size + 1 - c.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.rc.Read(p)
	c.n += int64(n)
	c.digest.Write(p[:n])
	if n > 0 {
		if _, werr := c.pw.Write(p[:n]); werr != nil {
			return n, werr
		}
	}
	if c.n > c.l.desc.Size {
		err = io.EOF
		n--
	}
	if err == io.EOF {
		return n, c.end()
	}
	if err != nil {
		// go-containerregistry's own check fails the read of the last
		// bytes, and a broken connection one before them: either way, the
		// layer is not what its entry says, and the entry is not used.
		c.pw.CloseWithError(err)
		c.ended = true
		c.l.refuse()
		c.err = fmt.Errorf("%w: %s: layer %s: reading it: %v", ErrRefused, c.l.ref, c.l.desc.Digest, err)
		return n, c.err
	}
	return n, nil
}

// end decides, once every byte was read, whether they were right.
func (c *checked) end() error {
	if c.ended {
		return c.err
	}
	c.ended = true
	c.pw.Close()
	diffErr := <-c.diffID
	got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", c.digest.Sum(nil))}
	switch {
	case c.n != c.l.desc.Size:
		c.err = fmt.Errorf("%d bytes or more, not %d", c.n, c.l.desc.Size)
	case got != c.l.desc.Digest:
		c.err = fmt.Errorf("its bytes are %s", got)
	case diffErr != nil:
		c.err = diffErr
	}
	if c.err == nil {
		return io.EOF
	}
	c.l.refuse()
	c.err = fmt.Errorf("%w: %s: layer %s: %v", ErrRefused, c.l.ref, c.l.desc.Digest, c.err)
	return c.err
}

// Close reads what the caller left of the layer, so that it is checked,
// and returns the verdict.
func (c *checked) Close() error {
	var err error
	if !c.ended {
		_, err = io.Copy(io.Discard, c)
		if err == nil {
			err = c.end()
			if err == io.EOF {
				err = nil
			}
		}
	} else if c.err != nil {
		err = c.err
	}
	c.pw.CloseWithError(errors.New("closed"))
	if !c.closed {
		c.closed = true
		if cerr := c.rc.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

func isUnknown(te *transport.Error) bool {
	for _, d := range te.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return false
}

// Store writes key's entry in the background; layer is nil for a step that
// changed nothing, created is when the step made it (a build served from
// the entry later dates the step with it, so its image is the same), and
// platform the platform the step was built for (the entry's config names
// it; the key holds it already). Flush reports the outcome; Mountable
// gives layer as a push should see it.
func (c *Cache) Store(key string, layer v1.Layer, created time.Time, platform v1.Platform) {
	var up *upload
	if layer != nil {
		if d, err := layer.Digest(); err == nil {
			c.mu.Lock()
			if c.uploads == nil {
				c.uploads = map[v1.Hash]*upload{}
			}
			if _, ok := c.uploads[d]; !ok {
				up = &upload{key: key, done: make(chan struct{})}
				c.uploads[d] = up
			}
			c.mu.Unlock()
		}
	}
	c.background(true, func() error {
		ref := c.o.Repo.Tag(key)
		if layer != nil {
			// The layer first, for Mountable; writing the entry then finds
			// it there.
			err := remote.WriteLayer(c.o.Repo, layer, c.o.Remote(false)...)
			if up != nil {
				close(up.done)
			}
			if err != nil {
				return fmt.Errorf("writing cache entry %s: %w", ref, err)
			}
		}
		if err := c.write(ref, layer, created, key, platform); err != nil {
			return fmt.Errorf("writing cache entry %s: %w", ref, err)
		}
		return nil
	})
}

// upload is a stored layer's way to the cache repository.
type upload struct {
	key  string        // the first entry stored with the layer
	done chan struct{} // closed once the layer is there, or failed to get there
}

// background runs store in the background for Flush to report; entry says
// whether it stores an entry (which Flush counts).
func (c *Cache) background(entry bool, store func() error) {
	c.wg.Add(1)
	c.mu.Lock()
	c.pending++
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		err := store()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.pending--
		if err != nil && c.storeErr == nil {
			c.storeErr = err
		}
		if err == nil && entry {
			c.stored++
		}
	}()
}

// write pushes to ref a plain image of layer (none when nil), created at
// created, with key in its key label and its annotations, for platform
// (this machine's when it names no OS).
func (c *Cache) write(ref name.Tag, layer v1.Layer, created time.Time, key string, platform v1.Platform) error {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if layer != nil {
		diffID, err := layer.DiffID()
		if err != nil {
			return err
		}
		mt, err := layer.MediaType()
		if err != nil {
			return err
		}
		if img, err = mutate.Append(img, mutate.Addendum{
			Layer:       layer,
			MediaType:   ociLayerType(mt),
			Annotations: map[string]string{diffIDAnnotation: diffID.String()},
		}); err != nil {
			return err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created.UTC()}
	cf.Config.Labels = map[string]string{keyLabel: key}
	cf.OS, cf.Architecture, cf.Variant = platform.OS, platform.Architecture, platform.Variant
	if cf.OS == "" {
		cf.OS, cf.Architecture, cf.Variant = runtime.GOOS, runtime.GOARCH, ""
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	// RFC 3339 with nanoseconds, as the config's created field is written,
	// so that an entry read either way dates its step alike.
	img = mutate.Annotations(img, map[string]string{
		keyAnnotation:     key,
		createdAnnotation: cf.Created.Format(time.RFC3339Nano),
	}).(v1.Image)
	return remote.Write(ref, img, c.o.Remote(false)...)
}

// ociLayerType is the OCI media type of a layer of type mt: the same bytes
// under the name an OCI manifest uses.
func ociLayerType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	}
	return mt
}

// indexTag is the tag of layer's index in the cache repository.
func indexTag(layer v1.Hash) string {
	return layer.Algorithm + "-" + layer.Hex + ".index"
}

// indexKey is what an index image's key label holds.
func indexKey(layer v1.Hash) string { return "index:" + layer.String() }

// StoreIndex writes, in the background, the index of the layer whose
// (compressed) digest is layer: the gzip-compressed tar of its headers that
// rootfs.Index makes. It is stored as a plain single-layer image dated at
// the epoch, unless the repository has it already and replace is false
// (replace overwrites an index that could not be read, and saves asking
// whether there is one). Flush reports the outcome.
func (c *Cache) StoreIndex(layer v1.Hash, index []byte, replace bool) {
	c.background(false, func() error {
		ref := c.o.Repo.Tag(indexTag(layer))
		if !replace {
			if _, err := remote.Head(ref, c.o.Remote(true)...); err == nil {
				return nil
			}
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(index)), nil
		})
		if err == nil {
			err = c.write(ref, l, time.Unix(0, 0), indexKey(layer), v1.Platform{})
		}
		if err != nil {
			return fmt.Errorf("writing layer index %s: %w", ref, err)
		}
		return nil
	})
}

// Index returns the index of the layer whose digest is layer, as
// StoreIndex was given it (gzip-compressed): ErrMiss when there is none,
// another error when it could not be read. Indexes do not expire: they
// describe a layer, which never changes.
func (c *Cache) Index(ctx context.Context, layer v1.Hash) ([]byte, error) {
	ref := c.o.Repo.Tag(indexTag(layer))
	_, layers, err := c.read(ctx, indexTag(layer), indexKey(layer), "layer index")
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("layer index %s has %d layers, want one", ref, len(layers))
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return nil, fmt.Errorf("reading layer index %s: %w", ref, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading layer index %s: %w", ref, err)
	}
	return data, nil
}

// MountWorthwhile is the compressed size from which a push had better wait
// for a new layer to reach the cache repository and mount it from there
// than upload it a second time at once. A smaller layer costs less to send
// again than the wait; the push's mount attempt then simply turns into
// its upload.
const MountWorthwhile = 1 << 20

// Mountable returns l as a push should see it. A layer this cache stores
// (Store) comes back as a *remote.MountableLayer of the cache repository,
// which a push mounts from there instead of uploading it again; when it is
// of MountWorthwhile bytes or more, Mountable first waits until its upload
// to the cache ended (or failed) or ctx is done. Any other layer (a base
// image's, an entry's the cache read: those mount from where they come
// from already) is returned as it is.
func (c *Cache) Mountable(ctx context.Context, l v1.Layer) v1.Layer {
	d, err := l.Digest()
	if err != nil {
		return l
	}
	c.mu.Lock()
	up, ok := c.uploads[d]
	c.mu.Unlock()
	if !ok {
		return l
	}
	if size, err := l.Size(); err == nil && size >= MountWorthwhile {
		select {
		case <-up.done:
		case <-ctx.Done():
		}
	}
	// A push mounts from the entry's repository (the reference's tag is
	// not part of the request).
	return &remote.MountableLayer{Layer: l, Reference: c.o.Repo.Tag(up.key)}
}

// Flushed is what Flush saw of the writes (entries and indexes) started
// so far.
type Flushed struct {
	// Stored is how many entries were written (indexes are not counted).
	Stored int
	// Pending is how many writes were still under way when ctx ended; 0
	// when Flush waited for them all.
	Pending int
}

// Flush waits for the writes started so far, or until ctx is done, and
// returns how many entries were written and how many writes were still
// under way. The error is the first write that failed or, when writes are
// still under way, ctx's cause; the writes go on in the background (until
// the context of their registry calls ends).
func (c *Cache) Flush(ctx context.Context) (Flushed, error) {
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := Flushed{Stored: c.stored, Pending: c.pending}
	switch {
	case c.storeErr != nil:
		return f, c.storeErr
	case f.Pending > 0:
		return f, fmt.Errorf("%d writes still under way: %w", f.Pending, context.Cause(ctx))
	}
	return f, nil
}
