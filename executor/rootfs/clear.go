package rootfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Clear removes everything under root, root itself excepted, to reuse it for
// the next stage when building in place. It keeps excluded paths and, as a
// safety net, anything on another filesystem than root (mounts the caller
// forgot to exclude), with the directories leading to them. Symlinks are
// removed, never followed. A Covered given with WithCovered then records
// every name as absent.
func Clear(root string, opts ...Option) error {
	t, err := openTree(root, newOptions(opts))
	if err != nil {
		return err
	}
	defer t.close()
	rm := remover{t: t, sameDev: true}
	fd, err := t.open("", unix.O_RDONLY|unix.O_DIRECTORY, resolveFlags)
	if err != nil {
		return fmt.Errorf("clearing %s: %w", root, err)
	}
	f := os.NewFile(uintptr(fd), root)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("clearing %s: %w", root, err)
	}
	for _, n := range names {
		if _, err := rm.removeAll(fd, n, n); err != nil {
			return fmt.Errorf("clearing %s: %w", root, err)
		}
	}
	if c := t.opts.covered; c != nil {
		c.clear(nil)
	}
	return nil
}

// MountPoints lists the mount points strictly under root, as root-relative
// paths in lexical order, read from /proc/self/mountinfo. Pass them to
// WithExcludedPaths when working in place on "/".
func MountPoints(root string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("listing mount points: %w", err)
	}
	return mountPoints(root, data, filepath.EvalSymlinks)
}

func mountPoints(root string, mountinfo []byte, evalSymlinks func(string) (string, error)) ([]string, error) {
	real, err := evalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("listing mount points: %w", err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return nil, fmt.Errorf("listing mount points: %w", err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		var rel string
		switch {
		case real == "/":
			rel = strings.TrimPrefix(mp, "/")
		case strings.HasPrefix(mp, real+"/"):
			rel = mp[len(real)+1:]
		default:
			continue
		}
		if rel = cleanRel(rel); rel != "" {
			out = append(out, rel)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("listing mount points: %w", err)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space) of
// mountinfo fields.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
