package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFilter(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o750},
		{Name: "app/keep.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4},
		{Name: "app/.wh.gone", Typeflag: tar.TypeReg},
		{Name: "app/sub/.wh..wh..opq", Typeflag: tar.TypeReg},
		{Name: "other/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "other/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3},
		{Name: "other/.wh.x", Typeflag: tar.TypeReg},
		{Name: ".wh.app2", Typeflag: tar.TypeReg},
		{Name: "app/link", Typeflag: tar.TypeLink, Linkname: "other/big"},
		{Name: "app/link2", Typeflag: tar.TypeLink, Linkname: "app/keep.txt"},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(strings.Repeat("x", int(h.Size))))
		}
	}
	tw.Close()

	var out bytes.Buffer
	keep := func(rel string) bool { return rel == "app" || strings.HasPrefix(rel, "app/") }
	if err := Filter(&in, &out, keep, nil); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Name     string
		Type     byte
		Link     string
		Size     int64
		Contents string
	}
	var got []entry
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got = append(got, entry{h.Name, h.Typeflag, h.Linkname, h.Size, string(b)})
	}
	want := []entry{
		{"app/", tar.TypeDir, "", 0, ""},
		{"app/keep.txt", tar.TypeReg, "", 4, "xxxx"},
		{"app/.wh.gone", tar.TypeReg, "", 0, ""},
		{"app/sub/.wh..wh..opq", tar.TypeReg, "", 0, ""},
		// The link's target was filtered out: an empty regular file.
		{"app/link", tar.TypeReg, "", 0, ""},
		{"app/link2", tar.TypeLink, "app/keep.txt", 0, ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("filtered layer (-want +got):\n%s", diff)
	}
}

// TestFilter_invalidWhiteout checks that Filter refuses the whiteouts
// Extract refuses, whatever keep says, naming the entry.
func TestFilter_invalidWhiteout(t *testing.T) {
	for _, name := range []string{".wh.", ".wh..", ".wh...", "app/.wh...", "other/.wh.."} {
		t.Run(name, func(t *testing.T) {
			layer := layerTar(t, fileE(name, "", 0))
			for _, keep := range []func(string) bool{
				func(string) bool { return true },
				func(rel string) bool { return strings.HasPrefix(rel, "app") },
			} {
				err := Filter(bytes.NewReader(layer), io.Discard, keep, nil)
				if err == nil || !strings.Contains(err.Error(), `"`+name+`"`) {
					t.Errorf("Filter() = %v, want an error naming %q", err, name)
				}
			}
		})
	}
}
