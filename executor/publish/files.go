package publish

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// UnsetDestination is the tag a tarball gets when the build has no
// destination, the one kaniko gives it (--no-push --tar-path without
// --destination): docker load then shows unset-repo/unset-image-name:latest.
const UnsetDestination = "docker.io/unset-repo/unset-image-name:latest"

// Annotations on an OCI layout's index entries.
const (
	// AnnotationRefName is the OCI image-spec reference name.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName is the full image name containerd imports.
	AnnotationContainerdName = "io.containerd.image.name"
)

// WriteTarball writes img to path as a docker-archive tarball (what docker
// load and podman load accept), tagged with every tag in refs, or with
// UnsetDestination when refs is empty. Digest references add no tag. The
// file is written beside path and renamed, so path never holds half a
// tarball.
func WriteTarball(path string, img v1.Image, refs []name.Reference) error {
	if len(refs) == 0 {
		unset, err := name.NewTag(UnsetDestination)
		if err != nil {
			return fmt.Errorf("writing tarball %s: %w", path, err)
		}
		refs = []name.Reference{unset}
	}
	todo := make(map[name.Reference]v1.Image, len(refs))
	for _, ref := range refs {
		todo[ref] = img
	}
	return writeAtomically(path, func(tmp string) error {
		if err := tarball.MultiRefWriteToFile(tmp, todo); err != nil {
			return fmt.Errorf("writing tarball %s: %w", path, err)
		}
		return nil
	})
}

// WriteOCILayout writes img (an image, or an index with its images) as an
// OCI image layout in the directory path, replacing its index. The
// layout's index lists it once per reference in refs, annotated with the
// full reference (AnnotationRefName and AnnotationContainerdName), or once
// without annotations when refs is empty, as kaniko's --oci-layout-path
// does.
func WriteOCILayout(path string, img Artifact, refs []name.Reference) error {
	p, err := layout.Write(path, empty.Index)
	if err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", path, err)
	}
	add := func(opts ...layout.Option) error {
		switch a := img.(type) {
		case v1.ImageIndex:
			return p.AppendIndex(a, opts...)
		case v1.Image:
			return p.AppendImage(a, opts...)
		}
		return fmt.Errorf("%T is neither an image nor an index", img)
	}
	if len(refs) == 0 {
		if err := add(); err != nil {
			return fmt.Errorf("writing OCI layout %s: %w", path, err)
		}
		return nil
	}
	for _, ref := range refs {
		ann := map[string]string{
			AnnotationRefName:        ref.Name(),
			AnnotationContainerdName: ref.Name(),
		}
		if err := add(layout.WithAnnotations(ann)); err != nil {
			return fmt.Errorf("writing %s to OCI layout %s: %w", ref, path, err)
		}
	}
	return nil
}

// WriteDigestFile writes digest (sha256:...) to path with no newline, the
// format of kaniko's --digest-file, creating path's directory if needed.
func WriteDigestFile(path string, digest v1.Hash) error {
	if err := writeFile(path, []byte(digest.String())); err != nil {
		return fmt.Errorf("writing digest file: %w", err)
	}
	return nil
}

// WriteImageNameWithDigestFile writes one repo@sha256:... per line, each
// line ended by a newline, the format of kaniko's
// --image-name-with-digest-file. refsWithDigest is what Push returns, or
// NamesWithDigest when nothing is pushed.
func WriteImageNameWithDigestFile(path string, refsWithDigest []string) error {
	var b strings.Builder
	for _, r := range refsWithDigest {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	if err := writeFile(path, []byte(b.String())); err != nil {
		return fmt.Errorf("writing image name with digest file: %w", err)
	}
	return nil
}

// NamesWithDigest returns repo@digest for each of refs, as Push does, for
// outputs of a build that is not pushed (--no-push).
func NamesWithDigest(refs []name.Reference, digest v1.Hash) []string {
	out := make([]string, len(refs))
	for i, ref := range refs {
		out[i] = ref.Context().Digest(digest.String()).String()
	}
	return out
}

func writeFile(path string, data []byte) error {
	return writeAtomically(path, func(tmp string) error {
		return os.WriteFile(tmp, data, 0o644)
	})
}

// writeAtomically has write fill a temporary file beside path, then
// renames it to path.
func writeAtomically(path string, write func(tmp string) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	if err := write(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
