package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The bases of the cache-mount cases that hack/baseimage does not push:
//
//   - apt: the bigbase Debian base (debootstrap --variant=minbase bookworm)
//     with one more layer, its APT sources pointing at the Debian mirror
//     this machine reaches (debianMirrors): bookworm, bookworm-updates and
//     bookworm-security, as Docker's debian:bookworm lists them.
//   - npmcache: the same Debian base with Debian's nodejs and npm packages
//     installed (apt-get in a chroot of the base's tree, once: the tarball
//     is kept beside the Debian one), and a layer with this machine's CA
//     bundle, which NODE_EXTRA_CA_CERTS names: where the way out to the npm
//     registry goes through a TLS-intercepting proxy (as here), npm trusts
//     the proxy's CA as the host does.

// debianMirrors returns the Debian archive's and its security archive's
// URLs as this machine's APT sources name them (the first "URIs:" of a
// deb822 .sources file, or "deb URL" line, ending in /debian or
// /debian-security), deb.debian.org's when none does. BENCH_DEBIAN_MIRROR
// and BENCH_DEBIAN_SECURITY_MIRROR win.
func debianMirrors() (archive, security string) {
	archive, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
	var found []string
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append(append([]string{"/etc/apt/sources.list"}, files...), lists...) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			switch {
			case len(fs) >= 2 && fs[0] == "URIs:":
				found = append(found, fs[1:]...)
			case len(fs) >= 3 && fs[0] == "deb":
				u := fs[1]
				if strings.HasPrefix(u, "[") { // deb [options] URL
					for k := 1; k < len(fs); k++ {
						if strings.HasSuffix(fs[k], "]") && k+1 < len(fs) {
							u = fs[k+1]
							break
						}
					}
				}
				found = append(found, u)
			}
		}
	}
	var a, s bool
	for _, u := range found {
		u = strings.TrimSuffix(u, "/")
		switch {
		case strings.HasSuffix(u, "/debian") && !a:
			archive, a = u, true
		case strings.HasSuffix(u, "/debian-security") && !s:
			security, s = u, true
		}
	}
	if v := os.Getenv("BENCH_DEBIAN_MIRROR"); v != "" {
		archive = v
	}
	if v := os.Getenv("BENCH_DEBIAN_SECURITY_MIRROR"); v != "" {
		security = v
	}
	return archive, security
}

// aptSources is the sources.list of the apt case's base.
func aptSources() string {
	archive, security := debianMirrors()
	return fmt.Sprintf("# hack/bench: the Debian mirror this machine reaches\ndeb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n",
		archive, archive, security)
}

// fileLayer is a layer of regular files (path -> content, mode 0644) and
// their parent directories, owned by root, with mtime 0.
func fileLayer(files map[string][]byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	epoch := time.Unix(0, 0)
	for _, p := range sortedKeys(files) {
		var parents []string
		for d := filepath.Dir(p); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
			dirs[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: 0o644, Size: int64(len(files[p])), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[p]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// pushDerived pushes base plus a layer of files, with env added to its
// config, as ref, and returns ref.
func pushDerived(base, ref string, files map[string][]byte, env []string, createdBy string) (string, error) {
	b, err := name.ParseReference(base, name.Insecure)
	if err != nil {
		return "", err
	}
	img, err := remote.Image(b)
	if err != nil {
		return "", fmt.Errorf("pulling %s: %w", base, err)
	}
	return pushWithLayers(img, ref, files, env, createdBy)
}

func pushWithLayers(img v1.Image, ref string, files map[string][]byte, env []string, createdBy string) (string, error) {
	l, err := fileLayer(files)
	if err != nil {
		return "", err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: time.Unix(0, 0).UTC()}, CreatedBy: createdBy}})
	if err != nil {
		return "", err
	}
	if len(env) > 0 {
		cf, err := img.ConfigFile()
		if err != nil {
			return "", err
		}
		cf = cf.DeepCopy()
		cf.Config.Env = append(cf.Config.Env, env...)
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return "", err
		}
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	return ref, nil
}

// pushAptBase pushes the apt case's base: the Debian base with its sources.
func pushAptBase(c *config) (string, error) {
	return pushDerived(c.debian, c.registry+"/library/debian:bench-apt",
		map[string][]byte{"etc/apt/sources.list": []byte(aptSources())}, nil,
		"hack/bench: APT sources on the Debian mirror this machine reaches")
}

// hostCABundle is this machine's CA bundle.
func hostCABundle() ([]byte, error) {
	for _, p := range []string{os.Getenv("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"} {
		if p == "" {
			continue
		}
		if data, err := os.ReadFile(p); err == nil {
			return data, nil
		}
	}
	return nil, fmt.Errorf("no CA bundle (SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt)")
}

const nodeCAPath = "etc/ssl/certs/bench-host-ca.crt"

// pushNodeBase pushes the npmcache case's base, making its tarball first
// when it is not there.
func pushNodeBase(c *config) (string, error) {
	if c.debianTarball == "" || c.cacheDir == "" {
		return "", fmt.Errorf("npmcache needs BENCH_DEBIAN_TARBALL and BENCH_CACHE (run hack/bench.sh)")
	}
	path := filepath.Join(c.cacheDir, "debian-bookworm-nodejs.tar.gz")
	if err := nodeTarball(c.debianTarball, path); err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromFile(path)
	if err != nil {
		return "", err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: time.Unix(0, 0).UTC()}, CreatedBy: "debootstrap --variant=minbase bookworm; apt-get install nodejs npm ca-certificates (hack/bench)"}})
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Cmd = []string{"node"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	ca, err := hostCABundle()
	if err != nil {
		return "", err
	}
	return pushWithLayers(img, c.registry+"/library/node:bench", map[string][]byte{nodeCAPath: ca},
		[]string{"NODE_EXTRA_CA_CERTS=/" + nodeCAPath}, "hack/bench: this machine's CA bundle for npm's TLS")
}

// nodeInstall runs in a mount namespace of its own: the Debian tree at $1
// gets /proc, /dev and the host's resolv.conf, then apt-get installs
// Debian's nodejs and npm in a chroot of it and leaves no package lists or
// .debs behind.
const nodeInstall = `set -e
R=$1
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
cp /etc/resolv.conf "$R/etc/resolv.conf"
printf '%s' "$2" > "$R/etc/apt/sources.list"
chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
	sh -c 'apt-get update && apt-get install -y --no-install-recommends nodejs npm ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*'
umount "$R/dev" "$R/proc"
`

// nodeTarball makes, once, a gzipped tarball at path of the Debian tree of
// debTar with nodejs and npm installed.
func nodeTarball(debTar, path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), "nodejs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: making the npmcache base: apt-get install nodejs npm in the Debian base (a minute, once)\n")
	steps := [][]string{
		{"tar", "-C", root, "--numeric-owner", "-xzf", debTar},
		{"unshare", "--mount", "--fork", "--propagation", "private", "sh", "-c", nodeInstall, "sh", root, aptSources()},
		{"sh", "-c", `tar -C "$1" --numeric-owner --sort=name --xattrs --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf - . | gzip -1 >"$2"`, "sh", root, path + ".tmp"},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			os.Remove(path + ".tmp")
			return fmt.Errorf("making the nodejs base: %s: %w", s[0], err)
		}
	}
	return os.Rename(path+".tmp", path)
}
