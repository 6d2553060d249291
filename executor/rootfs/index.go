package rootfs

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
)

// indexContentLimit bounds the content an index keeps for one file.
const indexContentLimit = 1 << 20

// indexContent are the files whose content an index keeps: what a COPY or
// ADD reads of the tree it copies into (--chown by name).
var indexContent = map[string]bool{"etc/passwd": true, "etc/group": true}

// Index records a layer without its file contents: a tar of the layer's
// headers in their order, regular files emptied except /etc/passwd and
// /etc/group. Extracting the indexes of an image's layers instead of the
// layers gives the same tree of names, types, modes, owners, times, links,
// extended attributes and whiteouts, with empty files: everything a copy
// into that tree depends on, for a small fraction of the bytes.
//
// An Index is filled by Extract (WithIndex), Filter or Snapshot (IndexTo) as
// they go through a layer, so making it costs no extra pass. It is not safe
// for concurrent use.
type Index struct {
	buf bytes.Buffer
	zw  *gzip.Writer
	tw  *tar.Writer
	err error
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	ix := &Index{}
	// Headers are mostly zeros: compressed as they come, an index of
	// 20,000 entries takes a few hundred kilobytes, not ten megabytes.
	ix.zw, _ = gzip.NewWriterLevel(&ix.buf, gzip.BestSpeed)
	ix.tw = tar.NewWriter(ix.zw)
	return ix
}

// add records hdr. content is the entry's content, unread; the returned
// reader stands for it afterwards (add may have read it).
func (ix *Index) add(hdr *tar.Header, content io.Reader) io.Reader {
	if ix == nil || ix.err != nil {
		return content
	}
	h := *hdr
	h.Size = 0
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
		h.Typeflag = tar.TypeReg
		if indexContent[cleanRel(hdr.Name)] && hdr.Size > 0 {
			if hdr.Size > indexContentLimit {
				ix.err = fmt.Errorf("%s is larger than %d bytes", hdr.Name, indexContentLimit)
				return content
			}
			data, err := io.ReadAll(io.LimitReader(content, hdr.Size))
			if err != nil {
				// The caller meets the same error reading the content.
				ix.err = err
				return io.MultiReader(bytes.NewReader(data), errReader{err})
			}
			h.Size = int64(len(data))
			ix.write(&h, data)
			return bytes.NewReader(data)
		}
	}
	ix.write(&h, nil)
	return content
}

func (ix *Index) write(h *tar.Header, data []byte) {
	if err := ix.tw.WriteHeader(h); err != nil {
		ix.err = fmt.Errorf("indexing %s: %w", h.Name, err)
		return
	}
	if len(data) > 0 {
		if _, err := ix.tw.Write(data); err != nil {
			ix.err = fmt.Errorf("indexing %s: %w", h.Name, err)
		}
	}
}

// Bytes finishes the index and returns it as a gzip-compressed tar; it
// fails when an entry could not be recorded (the index is then unusable).
func (ix *Index) Bytes() ([]byte, error) {
	if ix.err != nil {
		return nil, ix.err
	}
	if err := ix.tw.Close(); err != nil {
		return nil, err
	}
	if err := ix.zw.Close(); err != nil {
		return nil, err
	}
	return ix.buf.Bytes(), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
