// Package imagetest looks inside built images for tests: Flatten gives the
// file tree an image's layers add up to, and Run runs an image's command in
// a chroot, the way a container runtime would start it.
package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/executor/idtools"
	"github.com/slipway-dev/slipway/executor/rootfs"
	"github.com/slipway-dev/slipway/executor/run"
)

// Entry is one path of a flattened image. Times are left out on purpose:
// two builders of the same Dockerfile agree on everything else.
type Entry struct {
	// Type is the tar type flag: tar.TypeReg, TypeDir, TypeSymlink,
	// TypeChar, TypeBlock or TypeFifo. Hard links are flattened into
	// regular files (see Flatten).
	Type byte
	// Mode holds the permission bits with setuid, setgid and sticky (07777).
	Mode int64
	UID  int
	GID  int
	// Size and Digest (sha256:HEX of the content) are set for regular files.
	Size   int64
	Digest string
	// Linkname is a symlink's target.
	Linkname string
}

// String formats e for failure messages: "file 0644 0:0 12 sha256:…".
func (e Entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %04o %d:%d", typeName(e.Type), e.Mode, e.UID, e.GID)
	switch e.Type {
	case tar.TypeReg:
		fmt.Fprintf(&b, " %d bytes %s", e.Size, shortDigest(e.Digest))
	case tar.TypeSymlink:
		fmt.Fprintf(&b, " -> %s", e.Linkname)
	}
	return b.String()
}

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

func typeName(t byte) string {
	switch t {
	case tar.TypeReg:
		return "file"
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeChar:
		return "char"
	case tar.TypeBlock:
		return "block"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type%q", t)
}

// Flatten applies the layers of img in order and returns the resulting
// tree, keyed by absolute, cleaned path ("/etc/passwd"; the root itself is
// left out). It follows the OCI layer rules: ".wh.NAME" deletes NAME (and
// everything under it) as lower layers left it, ".wh..wh..opq" empties its
// directory of what lower layers put there, an entry replaces whatever the
// path held, and a non-directory replacing a directory removes its
// contents. A hard link becomes a regular file with its target's metadata
// and content, which is what an extracted tree shows apart from the shared
// inode.
func Flatten(img v1.Image) (map[string]Entry, error) {
	tree, _, err := flatten(img, false)
	return tree, err
}

// FlattenContents is Flatten that also returns the content of every
// regular file, by path.
func FlattenContents(img v1.Image) (map[string]Entry, map[string][]byte, error) {
	return flatten(img, true)
}

func flatten(img v1.Image, withData bool) (map[string]Entry, map[string][]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, fmt.Errorf("listing layers: %w", err)
	}
	tree := map[string]Entry{}
	var data map[string][]byte
	if withData {
		data = map[string][]byte{}
	}
	for i, l := range layers {
		if err := applyLayer(tree, data, l); err != nil {
			return nil, nil, fmt.Errorf("applying layer %d: %w", i, err)
		}
	}
	for p := range data {
		if _, ok := tree[p]; !ok {
			delete(data, p)
		}
	}
	return tree, data, nil
}

type layerEntry struct {
	path string
	hdr  *tar.Header
	e    Entry
	data []byte
}

// applyLayer applies l to tree and, when data is not nil, the contents of
// its regular files to data (which may keep contents of paths tree no
// longer has; flatten drops them).
func applyLayer(tree map[string]Entry, data map[string][]byte, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	var (
		opaque, whiteouts []string
		entries           []layerEntry
	)
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		p := path.Clean("/" + hdr.Name)
		dir, base := path.Split(p)
		dir = path.Clean(dir)
		switch {
		case base == ".wh..wh..opq":
			opaque = append(opaque, dir)
			continue
		case strings.HasPrefix(base, ".wh."):
			whiteouts = append(whiteouts, path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			continue
		case p == "/":
			continue
		}
		e := Entry{Type: hdr.Typeflag, Mode: hdr.Mode & 0o7777, UID: hdr.Uid, GID: hdr.Gid}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.Type = tar.TypeReg
			h := sha256.New()
			var w io.Writer = h
			var buf bytes.Buffer
			if data != nil {
				w = io.MultiWriter(h, &buf)
			}
			n, err := io.Copy(w, tr)
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			e.Size, e.Digest = n, "sha256:"+hex.EncodeToString(h.Sum(nil))
			entries = append(entries, layerEntry{path: p, hdr: hdr, e: e, data: buf.Bytes()})
			continue
		case tar.TypeSymlink:
			e.Linkname = hdr.Linkname
		}
		entries = append(entries, layerEntry{path: p, hdr: hdr, e: e})
	}
	// Opaque directories and whiteouts apply to lower layers only, whatever
	// their place in the tar stream.
	for _, d := range opaque {
		removeUnder(tree, d)
	}
	for _, w := range whiteouts {
		delete(tree, w)
		removeUnder(tree, w)
	}
	for _, le := range entries {
		if le.hdr.Typeflag == tar.TypeLink {
			target := path.Clean("/" + le.hdr.Linkname)
			t, ok := tree[target]
			if !ok {
				return fmt.Errorf("hard link %s: target %s missing", le.path, target)
			}
			tree[le.path] = t
			if data != nil {
				data[le.path] = data[target]
			}
			continue
		}
		if old, ok := tree[le.path]; ok && old.Type == tar.TypeDir && le.e.Type != tar.TypeDir {
			removeUnder(tree, le.path)
		}
		tree[le.path] = le.e
		if data != nil && le.e.Type == tar.TypeReg {
			data[le.path] = le.data
		}
	}
	return nil
}

// removeUnder deletes every path below dir (not dir itself).
func removeUnder(tree map[string]Entry, dir string) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for p := range tree {
		if strings.HasPrefix(p, prefix) {
			delete(tree, p)
		}
	}
}

// DiffTrees lists the paths where want and got differ, one line each,
// sorted: "-/path: want" for a path only in want, "+/path: got" for one
// only in got, and "~/path: want => got" for a changed one. ignore, if not
// nil, skips paths for which it returns true.
func DiffTrees(want, got map[string]Entry, ignore func(p string) bool) []string {
	var out []string
	for p, w := range want {
		if ignore != nil && ignore(p) {
			continue
		}
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("-%s: %s", p, w))
		case g != w:
			out = append(out, fmt.Sprintf("~%s: %s => %s", p, w, g))
		}
	}
	for p, g := range got {
		if ignore != nil && ignore(p) {
			continue
		}
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("+%s: %s", p, g))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][1:] < out[j][1:] })
	return out
}

// RunOptions change how Run starts the image.
type RunOptions struct {
	// Cmd replaces the image's Cmd when not nil, as `docker run IMAGE CMD...`.
	Cmd []string
	// Env is added after the image's Env (later keys win).
	Env []string
	// Dir is where the image is extracted; the default is a new temporary
	// directory, removed when Run returns.
	Dir string
}

// Run extracts img into a directory and runs its Entrypoint and Cmd there
// as a container runtime would: with the image's Env (plus HOME of the
// user when Env has none), WorkingDir (created if missing) and User
// (names resolved in the image's /etc/passwd and /etc/group, the primary
// group also among the supplementary ones), chrooted in
// fresh namespaces by executor/run.Chroot, which needs root and run.Init in
// TestMain. It returns the command's stdout; a failure to start or a
// non-zero exit is an error that includes stderr.
func Run(ctx context.Context, img v1.Image, opts RunOptions) (string, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", fmt.Errorf("reading the config: %w", err)
	}
	root := opts.Dir
	if root == "" {
		root, err = os.MkdirTemp("", "imagetest-run-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(root)
	}
	// MkdirTemp makes 0700, which a non-root USER could not traverse.
	if err := os.Chmod(root, 0o755); err != nil {
		return "", err
	}
	if err := Extract(img, root); err != nil {
		return "", err
	}
	c := cfg.Config
	cmd := c.Cmd
	if opts.Cmd != nil {
		cmd = opts.Cmd
	}
	args := append(append([]string{}, c.Entrypoint...), cmd...)
	if len(args) == 0 {
		return "", errors.New("running the image: it has neither Entrypoint nor Cmd")
	}
	u, err := idtools.ResolveUser(root, c.User)
	if err != nil {
		return "", fmt.Errorf("running the image: %w", err)
	}
	env := append(append([]string{}, c.Env...), opts.Env...)
	if !hasKey(env, "HOME") {
		env = append(env, "HOME="+u.Home)
	}
	dir := c.WorkingDir
	if dir == "" {
		dir = "/"
	}
	if err := os.MkdirAll(path.Join(root, path.Clean("/"+dir)), 0o755); err != nil {
		return "", fmt.Errorf("creating the working directory: %w", err)
	}
	// Runtimes put the primary group among the supplementary ones
	// (runtime-spec: gid must be in the list; containerd, runc).
	groups := append([]uint32{}, u.Groups...)
	if !slices.Contains(groups, u.GID) {
		groups = append(groups, u.GID)
	}
	var stdout, stderr bytes.Buffer
	err = run.Chroot().Run(ctx, run.Spec{
		Root: root, Args: args, Env: env, Dir: dir,
		UID: u.UID, GID: u.GID, Groups: groups,
		Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		return stdout.String(), fmt.Errorf("running %q: %w; stderr:\n%s", args, err, stderr.String())
	}
	return stdout.String(), nil
}

// Extract applies the layers of img onto dir with executor/rootfs.Extract.
func Extract(img v1.Image, dir string) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("listing layers: %w", err)
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return fmt.Errorf("reading layer %d: %w", i, err)
		}
		err = rootfs.Extract(dir, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("extracting layer %d: %w", i, err)
		}
	}
	return nil
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// Blobs returns what an image carries that a leak could hide in: each
// layer's uncompressed tar, in order, then the raw config file. Tests that
// plant a secret search them.
func Blobs(img v1.Image) ([][]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	var blobs [][]byte
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", i, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", i, err)
		}
		blobs = append(blobs, b)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	return append(blobs, cfg), nil
}
