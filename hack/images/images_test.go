// Package images tests hack/images.sh: Slipway's own images, built by the executor without
// Docker, are reproducible and hold what their Dockerfiles say and nothing else.
package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// runImages runs hack/images.sh --tar dir and returns the digest it printed per image name.
func runImages(t *testing.T, dir string) map[string]string {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join("..", "images.sh"), "--tar", dir, "--tag", "test")
	// SOURCE_DATE_EPOCH from the caller's environment would move every time in the image.
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/images.sh --tar %s: %v\n%s", dir, err, stderr.String())
	}
	got := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Fatalf("hack/images.sh printed %q, want NAME REF@DIGEST", sc.Text())
		}
		ref, digest, ok := strings.Cut(f[1], "@")
		if !ok || ref != "slipway/"+f[0]+":test" || !strings.HasPrefix(digest, "sha256:") {
			t.Fatalf("hack/images.sh printed %q, want %s slipway/%s:test@sha256:...", sc.Text(), f[0], f[0])
		}
		got[f[0]] = digest
	}
	return got
}

// entry is one file of an image's flattened file system.
type entry struct {
	Mode os.FileMode
	UID  int
	GID  int
	Size int64
}

// files lists the image's flattened file system (directories included) and checks that every
// entry carries the reproducible time.
func files(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the flattened image: %v", err)
		}
		if !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: modification time %v, want the Unix epoch", h.Name, h.ModTime)
		}
		out[strings.TrimSuffix(h.Name, "/")] = entry{Mode: h.FileInfo().Mode(), UID: h.Uid, GID: h.Gid, Size: h.Size}
	}
	return out
}

func load(t *testing.T, path, digest string) v1.Image {
	t.Helper()
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validating %s: %v", path, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", path, err)
	}
	if d.String() != digest {
		t.Errorf("%s has digest %s, hack/images.sh printed %s", path, d, digest)
	}
	return img
}

func TestImages_reproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the executor and the manager and both images twice")
	}
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err != nil {
		t.Fatalf("Debian's ca-certificates is needed (hack/deps.sh installs it): %v", err)
	}
	dirs := []string{t.TempDir(), t.TempDir()}
	first := runImages(t, dirs[0])
	second := runImages(t, dirs[1])
	if diff := cmp.Diff(first, second); diff != "" {
		t.Fatalf("two runs of hack/images.sh gave different digests (-first +second):\n%s", diff)
	}
	t.Logf("digests: %v", first)
	if len(first) != 3 || first["executor"] == "" || first["manager"] == "" || first["binfmt"] == "" {
		t.Fatalf("hack/images.sh printed %v, want the executor, the manager and binfmt", first)
	}

	caInfo, err := os.Stat("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	dir := os.ModeDir | 0o755
	tests := []struct {
		name       string
		wantFiles  map[string]entry
		entrypoint []string
		user       string
		certs      string
	}{{
		name: "executor",
		wantFiles: map[string]entry{
			"slipway":                               {Mode: dir},
			"slipway/executor":                      {Mode: 0o755},
			"slipway/slipway-sbom":                  {Mode: 0o755},
			"slipway/.executor-image":               {Mode: 0o644},
			"slipway/ssl":                           {Mode: dir},
			"slipway/ssl/certs":                     {Mode: dir},
			"slipway/ssl/certs/ca-certificates.crt": {Mode: 0o644, Size: caInfo.Size()},
		},
		entrypoint: []string{"/slipway/executor"},
		certs:      "/slipway/ssl/certs/ca-certificates.crt",
	}, {
		name: "manager",
		wantFiles: map[string]entry{
			"manager":                           {Mode: 0o755},
			"etc":                               {Mode: dir},
			"etc/ssl":                           {Mode: dir},
			"etc/ssl/certs":                     {Mode: dir},
			"etc/ssl/certs/ca-certificates.crt": {Mode: 0o644, Size: caInfo.Size()},
		},
		entrypoint: []string{"/manager"},
		user:       "65532:65532",
		certs:      "/etc/ssl/certs/ca-certificates.crt",
	}, {
		name:       "binfmt",
		wantFiles:  binfmtFiles(t),
		entrypoint: []string{"/usr/bin/slipway-binfmt"},
		user:       "65534:65534",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := load(t, filepath.Join(dirs[0], tc.name+".tar"), first[tc.name])
			got := files(t, img)
			// The binaries' sizes are whatever the toolchain makes; only their presence is fixed.
			for name, e := range got {
				if w, ok := tc.wantFiles[name]; ok && w.Size == 0 && !e.Mode.IsDir() && name != "slipway/.executor-image" {
					e.Size = 0
					got[name] = e
				}
			}
			if diff := cmp.Diff(tc.wantFiles, got); diff != "" {
				t.Errorf("files of the %s image (-want +got):\n%s", tc.name, diff)
			}

			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !cf.Created.Time.Equal(time.Unix(0, 0)) {
				t.Errorf("created %v, want the Unix epoch", cf.Created.Time)
			}
			if diff := cmp.Diff(tc.entrypoint, cf.Config.Entrypoint); diff != "" {
				t.Errorf("entrypoint (-want +got):\n%s", diff)
			}
			if len(cf.Config.Cmd) != 0 {
				t.Errorf("cmd %q, want none", cf.Config.Cmd)
			}
			if cf.Config.User != tc.user {
				t.Errorf("user %q, want %q", cf.Config.User, tc.user)
			}
			env := append([]string(nil), cf.Config.Env...)
			sort.Strings(env)
			wantEnv := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
			if tc.certs != "" {
				wantEnv = append(wantEnv, "SSL_CERT_FILE="+tc.certs)
			}
			if diff := cmp.Diff(wantEnv, env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
		})
	}
}

// binfmtFiles are the files of the binfmt image: slipway-binfmt, Debian's static QEMU for the
// default SLIPWAY_BINFMT_ARCHES as <arch>-binfmt-P, and Debian's rules for them.
func binfmtFiles(t *testing.T) map[string]entry {
	t.Helper()
	dir := os.ModeDir | 0o755
	files := map[string]entry{
		"usr": {Mode: dir}, "usr/bin": {Mode: dir}, "usr/bin/slipway-binfmt": {Mode: 0o755},
		"usr/libexec": {Mode: dir}, "usr/libexec/qemu-binfmt": {Mode: dir},
		"usr/lib": {Mode: dir}, "usr/lib/binfmt.d": {Mode: dir},
	}
	for _, arch := range []string{"aarch64", "arm", "riscv64", "ppc64le", "s390x"} {
		for path, name := range map[string]string{
			"/usr/bin/qemu-" + arch + "-static":        "usr/libexec/qemu-binfmt/" + arch + "-binfmt-P",
			"/usr/lib/binfmt.d/qemu-" + arch + ".conf": "usr/lib/binfmt.d/qemu-" + arch + ".conf",
		} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatalf("Debian's qemu-user-static is needed (hack/deps.sh installs it): %v", err)
			}
			mode := os.FileMode(0o644)
			if strings.HasSuffix(name, "-binfmt-P") {
				mode = 0o755
			}
			files[name] = entry{Mode: mode, Size: fi.Size()}
		}
	}
	return files
}
