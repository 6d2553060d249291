package run

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// defaultMountPoints are the mount points of the OCI spec's default mounts that runc
// makes in a root that lacks them, and that stay there in a BuildKit build.
var defaultMountPoints = []string{"proc", "dev", "sys"}

// checkMadeMountPoints checks that root holds /proc, /dev and /sys as runc makes them:
// empty directories, mode 0755, owned by 0:0 (on disk, whatever the user namespace).
func checkMadeMountPoints(t *testing.T, root string) {
	t.Helper()
	for _, name := range defaultMountPoints {
		p := filepath.Join(root, name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Errorf("/%s: %v", name, err)
			continue
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Mode&0o7777 != 0o755 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("/%s: mode %o, owner %d:%d; want a directory, 755, 0:0", name, st.Mode, st.Uid, st.Gid)
		}
		if ents, err := os.ReadDir(p); err != nil || len(ents) != 0 {
			t.Errorf("/%s holds %v (%v); want it empty", name, ents, err)
		}
	}
}

// without returns m without the given keys.
func without(m map[string]entry, keys ...string) map[string]entry {
	c := maps.Clone(m)
	for _, k := range keys {
		delete(c, k)
	}
	return c
}

// TestChroot_Run_mountPointsStay: a step on a root without /proc, /dev and /sys leaves
// them, as runc does in a BuildKit build (it makes the mount points of the default mounts,
// and BuildKit's executor.MountStubsCleaner removes only the stubs of /etc/hosts,
// /etc/resolv.conf and the step's own mounts); a root that has them keeps them as they
// are.
func TestChroot_Run_mountPointsStay(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		t.Run("missing", func(t *testing.T) {
			root := newRoot(t, "etc/passwd")
			before := snapshot(t, root)
			// The mode is runc's under the usual umask, whatever the executor's is.
			old := syscall.Umask(0o077)
			_, stderr, err := runSh(t, chroot(), root, "test -r /proc/self/status && test -c /dev/null && test -d /sys/kernel")
			syscall.Umask(old)
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			checkMadeMountPoints(t, root)
			after := snapshot(t, root)
			// Nothing else changed: the stubs of /etc/hosts and /etc/resolv.conf are gone.
			// The root's own times changed with the mkdirs, as with runc's; a layer has no
			// entry for the root.
			if diff := cmp.Diff(without(before, "."), without(after, append([]string{"."}, defaultMountPoints...)...)); diff != "" {
				t.Errorf("root changed beyond the mount points (-before +after):\n%s", diff)
			}
			// The next step finds them and changes nothing.
			if _, stderr, err := runSh(t, chroot(), root, "true"); err != nil {
				t.Fatalf("second Run: %v (stderr %q)", err, stderr)
			}
			if diff := cmp.Diff(after, snapshot(t, root)); diff != "" {
				t.Errorf("the second step changed the root (-before +after):\n%s", diff)
			}
		})
		t.Run("present", func(t *testing.T) {
			// The root's own mount points, unlike runc's in mode, owner and times.
			root := newRoot(t, "proc/", "dev/", "sys/")
			old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
			for name, mode := range map[string]os.FileMode{"proc": 0o555, "dev": 0o700, "sys": 0o550} {
				p := filepath.Join(root, name)
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Lchown(p, 7, 8); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chtimes(root, old, old); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, root)
			if _, stderr, err := runSh(t, chroot(), root, "test -r /proc/self/status && test -c /dev/null && test -d /sys/kernel"); err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
				t.Errorf("root changed (-before +after):\n%s", diff)
			}
		})
	})
}

// TestChroot_mountPointsAttack plays a step, and a root, that try to turn the mount
// points Run makes and leaves onto something outside the root.
func TestChroot_mountPointsAttack(t *testing.T) {
	eachSandbox(t, func(t *testing.T, chroot func(...ChrootOption) Runner) {
		t.Run("step replaces them", func(t *testing.T) {
			// The step tries to remove, rename and replace the mount points with symlinks
			// to a host directory: each is a mount while it runs, so each attempt fails,
			// and what Run made stays as it made it.
			root := newRoot(t)
			host := hostSecret(t)
			old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
			if err := os.Chtimes(host, old, old); err != nil {
				t.Fatal(err)
			}
			var script strings.Builder
			for _, name := range defaultMountPoints {
				for _, try := range []string{
					"rmdir /" + name,
					"mv /" + name + " /" + name + ".old",
					"mv /" + name + " /" + name + ".old && ln -s " + host + " /" + name,
				} {
					script.WriteString("if " + try + " 2>/dev/null; then echo 'done: " + try + "'; fi\n")
				}
			}
			stdout, stderr, err := runSh(t, chroot(), root, script.String())
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			if stdout != "" {
				t.Errorf("the step changed its mount points:\n%s", stdout)
			}
			checkMadeMountPoints(t, root)
			for _, name := range defaultMountPoints {
				if _, err := os.Lstat(filepath.Join(root, name+".old")); err == nil {
					t.Errorf("/%s.old exists", name)
				}
			}
			checkHostDir(t, host, old)
		})
		for _, name := range []string{"proc", "sys"} {
			t.Run(name+" is a symlink out", func(t *testing.T) {
				// A root (a base image, an earlier step) whose /proc or /sys is a symlink
				// to a host path: proc and sysfs are mounted on ordinary directories only,
				// as runc requires, so Run fails before any mount, and nothing is made
				// through the symlink, in the root or out of it.
				host := hostSecret(t)
				old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
				if err := os.Chtimes(host, old, old); err != nil {
					t.Fatal(err)
				}
				root := newRoot(t, "proc/", "dev/", "sys/")
				if err := os.Remove(filepath.Join(root, name)); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(host, filepath.Join(root, name)); err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, root)
				_, _, err := runSh(t, chroot(), root, "true")
				if err == nil || !strings.Contains(err.Error(), "/"+name) {
					t.Errorf("Run: %v, want an error naming /%s", err, name)
				}
				if diff := cmp.Diff(before, snapshot(t, root)); diff != "" {
					t.Errorf("root changed (-before +after):\n%s", diff)
				}
				checkHostDir(t, host, old)
			})
		}
		t.Run("dev is a symlink out", func(t *testing.T) {
			// /dev as a symlink to a host path resolves inside the root, as runc resolves
			// a tmpfs mount's target: the directory is made there, and stays.
			host := hostSecret(t)
			old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
			if err := os.Chtimes(host, old, old); err != nil {
				t.Fatal(err)
			}
			root := newRoot(t, "proc/", "sys/")
			if err := os.Symlink(host, filepath.Join(root, "dev")); err != nil {
				t.Fatal(err)
			}
			if _, stderr, err := runSh(t, chroot(), root, "test -c /dev/null && echo x > /dev/null"); err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr)
			}
			checkHostDir(t, host, old)
			inRoot := filepath.Join(root, host)
			if fi, err := os.Lstat(inRoot); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
				t.Errorf("%s in the root: %v, %v; want a directory, 755", host, fi, err)
			}
			if ents, err := os.ReadDir(inRoot); err != nil || len(ents) != 0 {
				t.Errorf("%s in the root holds %v (%v); want it empty", host, ents, err)
			}
		})
	})
}

// checkHostDir checks that dir, made by hostSecret, still holds only its secret and has
// mtime old.
func checkHostDir(t *testing.T, dir string, old time.Time) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("the host directory changed: mtime %v, %v", fi.ModTime(), err)
	}
	var names []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != dir {
			names = append(names, d.Name())
		}
		return err
	})
	if err != nil || len(names) != 1 || names[0] != "secret" {
		t.Errorf("the host directory holds %q (%v), want only its secret", names, err)
	}
}
