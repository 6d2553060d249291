package run

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// IDMap maps the IDs 0 to Size-1 of a user namespace to the host IDs HostID to
// HostID+Size-1; users and groups alike.
type IDMap struct {
	HostID, Size uint32
}

func (m IDMap) String() string { return fmt.Sprintf("0→%d:%d", m.HostID, m.Size) }

// defaultUserNamespace is the mapping of WithUserNamespace's default.
var defaultUserNamespace = IDMap{HostID: 0x7fff0000, Size: 65536}

// check reports an error if cfg's user or groups are outside m.
func (m IDMap) check(cfg helperConfig) error {
	ids := append([]uint32{cfg.UID, cfg.GID}, cfg.Groups...)
	for _, id := range ids {
		if id >= m.Size {
			return fmt.Errorf("running %s: ID %d is outside the user namespace's range 0-%d (see run.WithUserNamespace)",
				cfg.Args0(), id, m.Size-1)
		}
	}
	return nil
}

// Isolation is how Chroot confines the steps it runs in roots on one filesystem, as far
// as it depends on the host.
type Isolation struct {
	// UserNamespace says steps run in a user namespace, mapped by IDMap.
	UserNamespace bool
	IDMap         IDMap
	// Reason says why not, when UserNamespace is false.
	Reason string
}

// String is "user namespace on (0→2147418112:65536)" or "user namespace off: <reason>".
func (i Isolation) String() string {
	if i.UserNamespace {
		return "user namespace on (" + i.IDMap.String() + ")"
	}
	return "user namespace off: " + i.Reason
}

// isolations caches, per filesystem and mapping, whether a user namespace worked: the
// host and the filesystem decide, and a failed attempt costs a second setup.
var isolations = struct {
	sync.Mutex
	m map[isolationKey]Isolation
}{m: map[isolationKey]Isolation{}}

type isolationKey struct {
	dev uint64
	ns  IDMap
}

func lookupIsolation(dev uint64, ns IDMap) (Isolation, bool) {
	isolations.Lock()
	defer isolations.Unlock()
	iso, ok := isolations.m[isolationKey{dev, ns}]
	return iso, ok
}

func storeIsolation(dev uint64, ns IDMap, iso Isolation) {
	isolations.Lock()
	defer isolations.Unlock()
	isolations.m[isolationKey{dev, ns}] = iso
}

// ChrootIsolation finds out how the runner Chroot(opts...) returns confines steps whose
// roots are on dir's filesystem, by setting a step up, without running anything, in an
// empty root it makes (and removes) in dir. Like Chroot it needs root privileges and
// Init. An error means the runner cannot run steps there at all.
//
// The executor logs it once at start, so that a build's log says whether its steps ran
// in a user namespace.
func ChrootIsolation(ctx context.Context, dir string, opts ...ChrootOption) (Isolation, error) {
	r := Chroot(opts...).(*chrootRunner)
	if r.userns.Size == 0 {
		return Isolation{Reason: "disabled (run.WithoutUserNamespace)"}, nil
	}
	root, err := os.MkdirTemp(dir, "slipway-probe-")
	if err != nil {
		return Isolation{}, fmt.Errorf("probing the chroot isolation: %w", err)
	}
	defer os.RemoveAll(root)
	root, err = resolveRoot(root)
	if err != nil {
		return Isolation{}, fmt.Errorf("probing the chroot isolation: %w", err)
	}
	if err := r.run(ctx, helperConfig{Root: root, Dir: "/"}, nil, nil); err != nil {
		return Isolation{}, fmt.Errorf("probing the chroot isolation: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return Isolation{}, fmt.Errorf("probing the chroot isolation: %w", err)
	}
	iso, ok := lookupIsolation(statDev(fi), r.userns)
	if !ok {
		return Isolation{}, fmt.Errorf("probing the chroot isolation: no outcome recorded")
	}
	return iso, nil
}

// statDev returns the device of the file fi describes.
func statDev(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Dev
	}
	return 0
}
