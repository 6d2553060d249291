package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Filter copies the entries of the layer tar r whose path keep accepts to
// w, so that extracting the filtered layers of an image gives the image's
// tree restricted to those paths. keep is given clean root-relative slash
// paths. Whiteouts are kept when keep accepts the path they delete, opaque
// markers when keep accepts their directory; a hard link whose target is
// filtered out becomes an empty regular file (its type and metadata are
// kept, not its content), AUFS metadata (".wh..wh.plnk") is dropped, and
// whiteouts of "", "." or ".." are refused as Extract refuses them. Nothing
// is written to w for an empty result but the tar trailer. When ix is not nil, every entry of r, kept or not, is
// recorded in it.
func Filter(r io.Reader, w io.Writer, keep func(rel string) bool, ix *Index) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	kept := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		content := ix.add(hdr, tr) // tr itself when ix is nil
		rel := cleanRel(hdr.Name)
		dir, base := path.Split(rel)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == whiteoutOpaque:
			if !keep(dir) {
				continue
			}
		case strings.HasPrefix(base, whiteoutPrefix):
			target, aufs, err := whiteoutTarget(base)
			if err != nil {
				return fmt.Errorf("reading layer entry %q: %w", hdr.Name, err)
			}
			if aufs || !keep(path.Join(dir, target)) {
				continue
			}
		default:
			if rel == "" || !keep(rel) {
				continue
			}
		}
		h := *hdr
		if h.Typeflag == tar.TypeLink && !kept[cleanRel(h.Linkname)] {
			h.Typeflag, h.Linkname, h.Size = tar.TypeReg, "", 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("writing filtered layer: %w", err)
		}
		if h.Size > 0 {
			if _, err := io.Copy(tw, content); err != nil {
				return fmt.Errorf("copying %s: %w", rel, err)
			}
		}
		kept[rel] = true
	}
	return tw.Close()
}
