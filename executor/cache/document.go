package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Documents (issue 16): what the build derives from an image and can reuse
// when it makes the same image again, an SBOM, is kept next to the entries
// under a tag derived from its key, "sha256-HEX.doc" (HEX the SHA-256 of
// the key), as the same kind of plain single-layer image: the layer a tar
// of one file, documentName, holding the document. Like an entry, a
// document is whatever the last writer of the repository put there: the
// key annotation, the layer's digest and diff ID are checked as for an
// entry, and the caller checks that the document is one it would have
// written (its format, what it names). Documents do not expire: their key
// names what they describe by digest.

// documentName is the name of the one file of a document's layer.
const documentName = "document"

// documentTag is the tag of key's document in the cache repository.
func documentTag(key string) string {
	h := sha256.Sum256([]byte(key))
	return "sha256-" + hex.EncodeToString(h[:]) + ".doc"
}

// documentKey is what a document image's key annotation holds.
func documentKey(key string) string { return "doc:" + key }

// StoreDocument writes doc under key in the background, dated at the
// epoch; Flush reports the outcome.
func (c *Cache) StoreDocument(key string, doc []byte) {
	c.background(false, func() error {
		ref := c.o.Repo.Tag(documentTag(key))
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: documentName, Mode: 0o644, Size: int64(len(doc)), Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(doc); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
		if err == nil {
			err = c.write(ref, l, time.Unix(0, 0), documentKey(key), v1.Platform{})
		}
		if err != nil {
			return fmt.Errorf("writing document %s: %w", ref, err)
		}
		return nil
	})
}

// ErrTooLarge is the error of a document larger than Document's max.
var ErrTooLarge = errors.New("the cached document is larger than allowed")

// Document returns the document StoreDocument stored under key: ErrMiss
// when there is none, ErrTooLarge when its layer or document is larger
// than max bytes, another error when it could not be read or is not what
// StoreDocument writes. Its bytes are checked against the manifest's
// digest, size and diff ID as they are read.
func (c *Cache) Document(ctx context.Context, key string, max int64) ([]byte, error) {
	tag := documentTag(key)
	ref := c.o.Repo.Tag(tag)
	_, layers, err := c.read(ctx, tag, documentKey(key), "document")
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("document %s has %d layers, want one", ref, len(layers))
	}
	// The tar's own headers and padding on top of the document.
	if size, err := layers[0].Size(); err != nil || size > max+64<<10 {
		return nil, fmt.Errorf("document %s: %w", ref, ErrTooLarge)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("reading document %s: %w", ref, err)
	}
	defer rc.Close()
	// A layer whose bytes are not its digest's may fail the tar before
	// its end: Close reads the rest and says so.
	refused := func(err error) error {
		if cerr := rc.Close(); errors.Is(cerr, ErrRefused) {
			return cerr
		}
		return err
	}
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		return nil, refused(fmt.Errorf("reading document %s: %w", ref, err))
	}
	if h.Typeflag != tar.TypeReg || h.Name != documentName {
		return nil, refused(fmt.Errorf("document %s holds %q, not a file %q", ref, h.Name, documentName))
	}
	if h.Size > max {
		return nil, fmt.Errorf("document %s: %w", ref, ErrTooLarge)
	}
	doc := make([]byte, h.Size)
	if _, err := io.ReadFull(tr, doc); err != nil {
		return nil, refused(fmt.Errorf("reading document %s: %w", ref, err))
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return nil, refused(fmt.Errorf("document %s holds more than one file", ref))
	}
	// Close checks the rest of the layer against its digest and diff ID.
	if err := rc.Close(); err != nil {
		return nil, fmt.Errorf("reading document %s: %w", ref, err)
	}
	return doc, nil
}
