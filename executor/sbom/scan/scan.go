// Package scan catalogs an unpacked image file tree with anchore/syft and
// encodes the result as an SPDX 2.3 or CycloneDX JSON document.
//
// It is the body of the slipway-sbom command (cmd/slipway-sbom), which
// executor/sbom.Generate runs as a child process: syft and what it brings
// (about 90 MB of code, a license classifier that allocates some 150 MB to
// build) stay out of the executor binary and out of the build's memory.
// Nothing but cmd/slipway-sbom and tests may import this package; a test in
// executor/sbom checks that the executor does not.
//
// The tree is untrusted. Scan reads it only through syft's directory source
// with the tree as its base, which resolves every symbolic link, absolute or
// relative, inside the tree, as a chroot would; selects only the catalogers
// listed in Catalogers, none of which reads the network or runs a program
// once configured as Scan configures them (the Go module cataloger's
// go-toolchain analysis, `go list` in the tree's module directory, is
// turned off); and caps what a cataloger reads from one file sequentially
// at Config.MaxFileSize.
package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"

	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/cataloging/filecataloging"
	"github.com/anchore/syft/syft/cataloging/pkgcataloging"
	"github.com/anchore/syft/syft/file"
	"github.com/anchore/syft/syft/format/cyclonedxjson"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/pkg/cataloger/golang"
	"github.com/anchore/syft/syft/pkg/cataloger/javascript"
	"github.com/anchore/syft/syft/pkg/cataloger/python"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"
	"github.com/anchore/syft/syft/source/directorysource"

	// The RPM database of Fedora 33+, RHEL 9 and their kin is SQLite;
	// go-rpmdb reads it through database/sql with this pure-Go driver
	// (no cgo).
	_ "modernc.org/sqlite"
)

// The formats Scan writes.
const (
	FormatSPDXJSON      = "spdx-json"      // SPDX 2.3, JSON
	FormatCycloneDXJSON = "cyclonedx-json" // CycloneDX 1.7 (syft's default version), JSON
)

// Catalogers names the syft catalogers Scan runs: the package databases of
// Debian (dpkg status), Alpine (apk installed) and RPM (Berkeley DB,
// NDB and SQLite rpmdb), Go binaries (their build information), go.mod
// files, npm/yarn/pnpm lock files and installed node_modules package.json
// files, and Python's declared (requirements*.txt, poetry.lock,
// Pipfile.lock, setup.py, uv.lock, pdm.lock) and installed (dist-info,
// egg-info) packages.
var Catalogers = []string{
	"dpkg-db-cataloger",
	"apk-db-cataloger",
	"rpm-db-cataloger",
	"go-module-binary-cataloger",
	"go-module-file-cataloger",
	"javascript-lock-cataloger",
	"javascript-package-cataloger",
	"python-package-cataloger",
	"python-installed-package-cataloger",
}

// DefaultMaxFileSize is the default of Config.MaxFileSize: 64 MiB, four
// times the largest npm lock file or dpkg status we know of.
const DefaultMaxFileSize = 64 << 20

// Config configures Scan.
type Config struct {
	// Format is FormatSPDXJSON (the default when empty) or
	// FormatCycloneDXJSON.
	Format string
	// Name names the document's subject (the image), in SPDX's document
	// name and CycloneDX's metadata component. Default: the tree's path.
	Name string
	// Exclude lists absolute paths inside the tree (/proc, /slipway) that
	// are not cataloged, nor anything under them.
	Exclude []string
	// MaxFileSize caps the bytes a cataloger reads from one file with
	// Read; past it the read fails, syft notes the file as an unknown and
	// catalogs the rest. Random access (ReadAt, which syft's binary
	// parsers use for a section at a time) is not capped. Default
	// DefaultMaxFileSize.
	MaxFileSize int64
}

// Prepare returns ctx holding syft's license classifier, built as
// syft.CreateSBOM builds it for Scan's configuration (with
// syft.SetContextLicenseScanner and the same license configuration):
// CreateSBOM uses a classifier it finds in its context instead of building
// one. Building it is most of a scan's fixed cost (about a second of CPU
// and 90 MB of heap, whatever the tree), so a caller that knows a tree is
// coming prepares before the tree is there. The document is the same
// either way.
func Prepare(ctx context.Context) (context.Context, error) {
	ctx, err := syft.SetContextLicenseScanner(ctx, licenseConfig())
	if err != nil {
		return nil, fmt.Errorf("building the license classifier: %w", err)
	}
	return ctx, nil
}

// Scan catalogs the file tree at root and returns the encoded document.
// With a context from Prepare it uses the license classifier built there.
func Scan(ctx context.Context, root string, cfg Config) ([]byte, error) {
	enc, err := encoder(cfg.Format)
	if err != nil {
		return nil, err
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = DefaultMaxFileSize
	}
	// The base must be the real path: syft's indexer compares it with
	// the symlink-resolved paths it walks.
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("resolving the tree's path: %w", err)
	}
	excl := make([]string, 0, len(cfg.Exclude))
	for _, p := range cfg.Exclude {
		p = path.Clean("/" + p)
		if p == "/" {
			return nil, fmt.Errorf("excluding %q would exclude the whole tree", p)
		}
		excl = append(excl, "."+p)
	}
	alias := source.Alias{Name: cfg.Name}
	src, err := directorysource.New(directorysource.Config{
		Path:    root,
		Base:    root, // resolve links inside the tree, as a chroot would
		Exclude: source.ExcludeConfig{Paths: excl},
		Alias:   alias,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the tree %s: %w", root, err)
	}
	defer src.Close()

	s, err := syft.CreateSBOM(ctx, boundedSource{src, cfg.MaxFileSize}, createConfig())
	if err != nil {
		return nil, fmt.Errorf("cataloging %s: %w", root, err)
	}
	// Where the tree is (a directory of the executor's, another on every
	// build) is no part of the image: the document describes the image's
	// root, "/". (CycloneDX's metadata component reference is a hash of
	// this path; with the tree's, documents of one image differed.)
	if dm, ok := s.Source.Metadata.(source.DirectoryMetadata); ok {
		dm.Path = "/"
		s.Source.Metadata = dm
	}
	var buf bytes.Buffer
	if err := enc.Encode(&buf, *s); err != nil {
		return nil, fmt.Errorf("encoding the SBOM as %s: %w", cfg.Format, err)
	}
	return buf.Bytes(), nil
}

// createConfig is syft's configuration for Scan: only Catalogers; no
// per-file records (digests, metadata) and no package-to-file
// relationships, which would list every file a package owns; nothing
// fetched (remote license look-ups are off, as by default) and nothing
// run (the Go module cataloger's `go list`, on by default, is off); no
// license texts in the document.
func createConfig() *syft.CreateSBOMConfig {
	golangCfg := golang.DefaultCatalogerConfig().
		WithUsePackagesLib(false).
		WithSearchLocalModCacheLicenses(false).
		WithSearchLocalVendorLicenses(false).
		WithSearchRemoteLicenses(false)
	pkgCfg := pkgcataloging.DefaultConfig().
		WithGolangConfig(golangCfg).
		WithJavascriptConfig(javascript.DefaultCatalogerConfig().WithSearchRemoteLicenses(false)).
		WithPythonConfig(python.DefaultCatalogerConfig().WithSearchRemoteLicenses(false))
	return syft.DefaultCreateSBOMConfig().
		WithCatalogerSelection(cataloging.NewSelectionRequest().WithDefaults(Catalogers...)).
		WithPackagesConfig(pkgCfg).
		WithLicenseConfig(licenseConfig()).
		WithFilesConfig(filecataloging.DefaultConfig().WithSelection(file.NoFilesSelection).WithHashers()).
		WithRelationshipsConfig(cataloging.DefaultRelationshipsConfig().WithPackageFileOwnership(false))
}

// licenseConfig is syft's license configuration for Scan: the default
// (the classifier's coverage threshold), without license texts in the
// document.
func licenseConfig() cataloging.LicenseConfig {
	licenses := cataloging.DefaultLicenseConfig()
	licenses.IncludeContent = cataloging.LicenseContentExcludeAll
	return licenses
}

func encoder(format string) (sbom.FormatEncoder, error) {
	switch format {
	case "", FormatSPDXJSON:
		c := spdxjson.DefaultEncoderConfig()
		c.Version = "2.3"
		return spdxjson.NewFormatEncoderWithConfig(c)
	case FormatCycloneDXJSON:
		return cyclonedxjson.NewFormatEncoderWithConfig(cyclonedxjson.DefaultEncoderConfig())
	default:
		return nil, fmt.Errorf("unknown SBOM format %q (want %s or %s)", format, FormatSPDXJSON, FormatCycloneDXJSON)
	}
}

// boundedSource is a syft source whose file resolver caps sequential reads.
type boundedSource struct {
	source.Source
	max int64
}

func (s boundedSource) FileResolver(scope source.Scope) (file.Resolver, error) {
	r, err := s.Source.FileResolver(scope)
	if err != nil {
		return nil, err
	}
	return boundedResolver{r, s.max}, nil
}

// ExcludedPaths forwards the directory source's exclusions, which syft
// also applies inside archives.
func (s boundedSource) ExcludedPaths() []string {
	if pe, ok := s.Source.(source.PathExcluder); ok {
		return pe.ExcludedPaths()
	}
	return nil
}

// boundedResolver is a file resolver whose file contents fail a Read past
// max bytes.
type boundedResolver struct {
	file.Resolver
	max int64
}

// ErrFileTooLarge is the error of a Read past Config.MaxFileSize.
var ErrFileTooLarge = errors.New("file larger than the SBOM's per-file read limit")

func (r boundedResolver) FileContentsByLocation(loc file.Location) (io.ReadCloser, error) {
	rc, err := r.Resolver.FileContentsByLocation(loc)
	if err != nil {
		return nil, err
	}
	lr := &limitedReader{rc: rc, left: r.max, path: loc.RealPath}
	// Keep random access where the file has it: syft's binary parsers
	// need it, and read a whole file into memory when it is missing.
	if ra, ok := rc.(readAtSeeker); ok {
		return &limitedRandomReader{limitedReader: lr, ra: ra}, nil
	}
	return lr, nil
}

type readAtSeeker interface {
	io.ReaderAt
	io.Seeker
}

type limitedReader struct {
	rc   io.ReadCloser
	left int64
	path string
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Past the limit only EOF is fine: one byte more tells.
		var b [1]byte
		if n, err := l.rc.Read(b[:]); n == 0 && errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("reading %s: %w", l.path, ErrFileTooLarge)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	return n, err
}

func (l *limitedReader) Close() error { return l.rc.Close() }

type limitedRandomReader struct {
	*limitedReader
	ra readAtSeeker
}

func (l *limitedRandomReader) ReadAt(p []byte, off int64) (int, error) { return l.ra.ReadAt(p, off) }

func (l *limitedRandomReader) Seek(off int64, whence int) (int64, error) {
	return l.ra.Seek(off, whence)
}
