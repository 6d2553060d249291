package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/slipway-dev/slipway/executor/attest"
	"github.com/slipway-dev/slipway/executor/layer"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/sbom"
)

// generateSBOM makes the SBOM (format spdx-json or cyclonedx-json) of the
// file tree at root, an image of the name imageName: executor/sbom's
// Generate, which runs slipway-sbom (beside the executor, else on PATH) in
// a child process of its own, bounded in time, memory and output. Tests
// replace it.
var generateSBOM = func(ctx context.Context, root, format, imageName string) ([]byte, error) {
	return sbom.Generate(ctx, root, sbom.Options{Format: format, ImageName: imageName})
}

// sbomStatement is the in-toto statement of the SBOM of ai's file system
// about sub.
//
// The generator reads a file tree. The builder's own tree of the final
// stage is no such tree: a stage whose steps came from the cache is left
// partial (only what later steps needed is extracted), and in place the
// stage's tree is the container's root, the executor's own files in it. So
// the image's layers are unpacked into a directory of the work directory,
// with the extractor of every layer of the build (rootfs.Extract: contained
// in the directory, whiteouts applied, --max-layer-size per layer), without
// ownership or device nodes, which no SBOM reads; the directory is removed
// once the SBOM is made.
func sbomStatement(ctx context.Context, o *options, ai attestedImage, sub attest.Subject) (attest.Statement, error) {
	dir, err := os.MkdirTemp(o.sc.workDir, "sbom-")
	if err != nil {
		return attest.Statement{}, fmt.Errorf("making the SBOM's directory: %w", err)
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return attest.Statement{}, err
	}
	if err := unpackImage(ctx, ai, root, o.maxLayerBytes); err != nil {
		return attest.Statement{}, err
	}
	name := ""
	if len(sub.Names) > 0 {
		name = sub.Names[0]
	}
	doc, err := generateSBOM(ctx, root, o.sc.sbomFormat, name)
	if err != nil {
		return attest.Statement{}, err
	}
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

// unpackImage extracts the layers of ai's image into root, in order.
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
