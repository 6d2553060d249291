package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// multiplatformMain is the program the multiplatform case cross-compiles.
const multiplatformMain = `package main

import (
	"fmt"
	"runtime"
)

func main() { fmt.Printf("hello from %s/%s\n", runtime.GOOS, runtime.GOARCH) }
`

// compareOutputs checks, for every run of a platform case that both we and
// BuildKit built, that the two images of each scenario are indexes of the
// same platforms with the same file trees per platform (names, types,
// modes, owners, link targets and contents; not times). A difference is
// reported as a failure.
func compareOutputs(c *config, results map[cell][]result) []string {
	var failures []string
	for cs := range platformCases {
		if !has(c.cases, cs) || !has(c.tools, "slipway") || !has(c.tools, "buildkit") {
			continue
		}
		for r := 0; r < c.runs; r++ {
			for _, sc := range scenarios {
				ours, theirs := results[cell{cs, sc, "slipway"}], results[cell{cs, sc, "buildkit"}]
				if len(ours) <= r || len(theirs) <= r || ours[r].err != nil || theirs[r].err != nil {
					continue
				}
				a := fmt.Sprintf("%s/bench-%s/%s/%s-r%d:%s", c.registry, c.runID, "slipway", cs, r, sc)
				b := fmt.Sprintf("%s/bench-%s/%s/%s-r%d:%s", c.registry, c.runID, "buildkit", cs, r, sc)
				diff, err := compareIndexes(a, b)
				switch {
				case err != nil:
					failures = append(failures, fmt.Sprintf("%s %s (run %d): comparing with BuildKit: %v", cs, sc, r+1, err))
				case diff != "":
					failures = append(failures, fmt.Sprintf("%s %s (run %d): not what BuildKit built:\n%s", cs, sc, r+1, diff))
				default:
					fmt.Fprintf(os.Stderr, "bench: %s %s run %d: same platforms and file trees as BuildKit\n", cs, sc, r+1)
				}
			}
		}
	}
	return failures
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// compareIndexes returns "" when a and b hold the same platforms with the
// same trees, else what differs.
func compareIndexes(a, b string) (string, error) {
	ta, err := platformTrees(a)
	if err != nil {
		return "", err
	}
	tb, err := platformTrees(b)
	if err != nil {
		return "", err
	}
	var out []string
	for p, ea := range ta {
		eb, ok := tb[p]
		if !ok {
			out = append(out, "platform "+p+" only in ours")
			continue
		}
		out = append(out, diffTrees(p, ea, eb)...)
	}
	for p := range tb {
		if _, ok := ta[p]; !ok {
			out = append(out, "platform "+p+" only in BuildKit's")
		}
	}
	sort.Strings(out)
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("... and %d more", len(out)-40))
	}
	return strings.Join(out, "\n"), nil
}

// platformTrees pulls the index at ref and returns each platform's
// flattened file tree, path -> description. Attestation manifests (platform
// unknown/unknown) are left out.
func platformTrees(ref string) (map[string]map[string]string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	idx, err := remote.Index(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	trees := map[string]map[string]string{}
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		t, err := tree(img)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", ref, d.Platform, err)
		}
		trees[platformString(d.Platform)] = t
	}
	return trees, nil
}

func platformString(p *v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func tree(img v1.Image) (map[string]string, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	t := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return nil, err
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			return nil, err
		}
		t["/"+strings.TrimPrefix(strings.TrimSuffix(h.Name, "/"), "./")] = fmt.Sprintf("type=%c mode=%o uid=%d gid=%d link=%q sha256=%s",
			h.Typeflag, h.Mode&0o7777, h.Uid, h.Gid, h.Linkname, hex.EncodeToString(sum.Sum(nil))[:12])
	}
}

func diffTrees(p string, a, b map[string]string) []string {
	var out []string
	for k, va := range a {
		if vb, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("%s: %s only in ours (%s)", p, k, va))
		} else if va != vb {
			out = append(out, fmt.Sprintf("%s: %s: ours %s, BuildKit's %s", p, k, va, vb))
		}
	}
	for k, vb := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: %s only in BuildKit's (%s)", p, k, vb))
		}
	}
	return out
}
