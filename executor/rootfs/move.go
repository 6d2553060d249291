package rootfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// Move renames the entry oldName of from to newName in to, the two
// directories possibly of different Roots, without following either name
// and without replacing anything at newName (fs.ErrExist then). Across
// file systems it fails with an error satisfying errors.Is(err,
// unix.EXDEV), and nothing is moved: the caller copies instead.
func Move(from *Dir, oldName string, to *Dir, newName string) error {
	orel, err := from.child(oldName)
	if err != nil {
		return err
	}
	nrel, err := to.child(newName)
	if err != nil {
		return err
	}
	if err := unix.Renameat2(from.fd, oldName, to.fd, newName, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "renameat2", Old: orel, New: nrel, Err: err}
	}
	return nil
}
