package testenv

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is Debian's statically linked busybox (package busybox-static).
const BusyboxPath = "/bin/busybox"

// Users and groups of the busybox image, for tests of USER and file owners.
const (
	AppUID   = 1000 // user "app", primary group "app"
	AppGID   = 1000
	StaffGID = 50 // group "staff", which has "app" as a supplementary member
)

const (
	// Docker Hub's busybox accounts (which BuildKit's tests use: daemon,
	// the wheel group, gid 65534 named nobody), plus app and its groups.
	busyboxPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
`
	busyboxGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:app
lock:x:54:
netdev:x:82:
users:x:100:
app:x:1000:
nobody:x:65534:
nogroup:x:65534:
`
	busyboxEnvPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

var (
	busyboxOnce sync.Once
	busyboxImg  v1.Image
	busyboxErr  error
)

// BusyboxImage returns a one-layer linux/amd64 image made from Debian's
// /bin/busybox: /bin/busybox with a symlink per applet in /bin,
// /etc/passwd and /etc/group with Docker Hub busybox's accounts (daemon 1,
// nobody 65534, the wheel group, ...) plus app 1000, a member of staff 50,
// and nogroup, a second name of gid 65534, /tmp (1777),
// /root (0700) and /home/app owned by 1000:1000. Its entries are sorted,
// with numeric owners and mtime 0, and its config and history have the
// Unix epoch as their time, so its digest depends only on the busybox
// binary (and the gzip of go-containerregistry). It uses Docker v2 media
// types, with Env PATH and Cmd ["sh"]. The image is built once per process.
func BusyboxImage() (v1.Image, error) {
	busyboxOnce.Do(func() { busyboxImg, busyboxErr = buildBusybox() })
	return busyboxImg, busyboxErr
}

func buildBusybox() (v1.Image, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: install Debian's busybox-static (hack/deps.sh): %w", BusyboxPath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", BusyboxPath, err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	layer, err := busyboxLayer(bin, strings.Fields(string(out)))
	if err != nil {
		return nil, fmt.Errorf("building busybox layer: %w", err)
	}

	epoch := v1.Time{Time: time.Unix(0, 0).UTC()}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      epoch,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env: []string{busyboxEnvPath},
			Cmd: []string{"sh"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("building busybox config: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   epoch,
			CreatedBy: "slipway testenv: Debian busybox-static /bin/busybox, applet links, /etc/passwd, /etc/group",
		},
		MediaType: types.DockerLayer,
	})
	if err != nil {
		return nil, fmt.Errorf("appending busybox layer: %w", err)
	}
	return img, nil
}

// busyboxLayer returns the layer holding bin as /bin/busybox, a link to it
// for each applet, and the files and directories BusyboxImage lists.
func busyboxLayer(bin []byte, applets []string) (v1.Layer, error) {
	type entry struct {
		hdr  tar.Header
		data []byte
	}
	dir := func(name string, mode int64, uid int) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}}
	}
	file := func(name string, mode int64, data []byte) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
	}
	entries := []entry{
		dir("bin", 0o755, 0),
		dir("etc", 0o755, 0),
		dir("home", 0o755, 0),
		dir("home/app", 0o755, AppUID),
		dir("root", 0o700, 0),
		dir("tmp", 0o1777, 0),
		file("bin/busybox", 0o755, bin),
		file("etc/passwd", 0o644, []byte(busyboxPasswd)),
		file("etc/group", 0o644, []byte(busyboxGroup)),
	}
	seen := map[string]bool{"busybox": true}
	for _, a := range applets {
		if seen[a] || strings.Contains(a, "/") {
			continue
		}
		seen[a] = true
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, err
	}
	return plainLayer{l}, nil
}

// plainLayer hides the Descriptor method of a tarball layer, whose empty
// annotations map would make the manifest that mutate computes differ
// from its own serialisation (validate.Image reports it).
type plainLayer struct{ v1.Layer }
