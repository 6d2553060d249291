// Package idtools resolves users and groups the way Docker does inside an
// image: names are looked up in the image's own /etc/passwd and /etc/group,
// never the host's.
package idtools

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"
)

const (
	passwdPath = "/etc/passwd"
	groupPath  = "/etc/group"

	// maxUserFileBytes bounds how much of /etc/passwd or /etc/group is read,
	// as BuildKit does (10 MiB), so a hostile image cannot exhaust memory.
	maxUserFileBytes = 10 << 20
)

// User is the identity a RUN step (or the image's USER) runs as.
type User struct {
	UID uint32
	GID uint32
	// Groups are the supplementary group IDs: the groups of /etc/group that
	// list the user by name. Set only when the spec names no group.
	Groups []uint32
	// Home is the home directory of the uid's /etc/passwd entry, "/" when
	// it has none: the HOME a RUN step gets when its environment sets none
	// (runc's setupUser looks the step's uid up, BuildKit passes no HOME).
	Home string
}

// ResolveUser resolves a Dockerfile USER spec ("name", "uid", "name:group",
// "uid:gid", "uid:group", "name:gid") in the root filesystem at root.
//
// It follows BuildKit (executor/oci.GetUser, which uses runc's
// user.GetExecUser):
//   - an empty spec is looked up as uid 0 (root with the groups that list
//     it), and any failure to is then no error but plain 0:0 (GetUser's
//     default user);
//   - "uid:gid" with both numeric (or "root") is taken as is, without looking
//     at any file and without supplementary groups;
//   - otherwise the user is looked up in root's /etc/passwd: a name must
//     exist, a numeric uid may be absent (its gid is then 0); without a group
//     the gid is the user's primary group and the supplementary groups are
//     those of /etc/group that list the user's name; an explicit group is
//     looked up in /etc/group, and a name must exist there.
func ResolveUser(root, spec string) (User, error) {
	if spec == "" {
		// GetUser looks the default user up as uid 0, so root gets the
		// groups of /etc/group that list it (wheel on busybox), and falls
		// back to plain 0:0 when that fails.
		if u, err := ResolveUser(root, "0"); err == nil {
			return u, nil
		}
		passwd, err := readFile(root, passwdPath)
		if err != nil {
			passwd = nil
		}
		return User{Home: homeOf(passwd, 0)}, nil
	}
	passwd, err := readFile(root, passwdPath)
	if err != nil {
		return User{}, fmt.Errorf("resolving user %q: %w", spec, err)
	}
	group, err := readFile(root, groupPath)
	if err != nil {
		return User{}, fmt.Errorf("resolving user %q: %w", spec, err)
	}

	if uid, gid, ok := parseUIDGID(spec); ok {
		return User{UID: uid, GID: gid, Home: homeOf(passwd, uid)}, nil
	}

	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, reader(passwd), reader(group))
	if err != nil {
		return User{}, fmt.Errorf("resolving user %q: %w", spec, err)
	}
	var u User
	if u.UID, err = toID(eu.Uid); err != nil {
		return User{}, fmt.Errorf("resolving user %q: %w", spec, err)
	}
	u.Home = homeOf(passwd, u.UID)
	if u.GID, err = toID(eu.Gid); err != nil {
		return User{}, fmt.Errorf("resolving user %q: %w", spec, err)
	}
	for _, g := range eu.Sgids {
		id, err := toID(g)
		if err != nil {
			return User{}, fmt.Errorf("resolving user %q: %w", spec, err)
		}
		u.Groups = append(u.Groups, id)
	}
	return u, nil
}

// ResolveChown resolves the spec of COPY/ADD --chown ("user", "uid",
// "user:group", "uid:gid", ...) in the root filesystem at root.
//
// It follows BuildKit (client/llb.WithUser and the file op's readUser), which
// differs from the legacy builder and from the documentation's sentence
// "a username without groupname ... will use the same numeric UID as the GID":
//   - "root" and decimal numbers are IDs and are never looked up;
//   - a numeric uid without a group gives gid = uid ("--chown=1000" is
//     1000:1000), which is what the documentation describes;
//   - a user name without a group gives the user's primary group from
//     /etc/passwd (BuildKit), not a group of the same name (legacy builder);
//   - "user:" (empty group) is the same as "user";
//   - an empty user (":group") is uid 0.
//
// One deliberate difference: BuildKit silently uses 0 for a user or group
// name it cannot find; ResolveChown returns an error naming it, so a typo
// does not quietly produce root-owned files.
func ResolveChown(root, spec string) (uid, gid int, err error) {
	if spec == "" {
		return 0, 0, errors.New("resolving --chown: empty user")
	}
	userPart, groupPart, _ := strings.Cut(spec, ":")

	var passwd, group []byte
	load := func(p string, dst *[]byte) error {
		if *dst != nil {
			return nil
		}
		b, err := readFile(root, p)
		if err != nil {
			return err
		}
		if b == nil {
			b = []byte{}
		}
		*dst = b
		return nil
	}

	switch id, ok := parseID(userPart); {
	case ok:
		uid, gid = int(id), int(id)
	case userPart == "":
		uid, gid = 0, 0
	default:
		if err := load(passwdPath, &passwd); err != nil {
			return 0, 0, fmt.Errorf("resolving --chown=%s: %w", spec, err)
		}
		users, err := user.ParsePasswdFilter(strings.NewReader(string(passwd)), func(u user.User) bool {
			return u.Name == userPart
		})
		if err != nil {
			return 0, 0, fmt.Errorf("resolving --chown=%s: parsing %s: %w", spec, passwdPath, err)
		}
		if len(users) == 0 {
			return 0, 0, fmt.Errorf("resolving --chown=%s: unable to find user %s: %w", spec, userPart, user.ErrNoPasswdEntries)
		}
		uid, gid = users[0].Uid, users[0].Gid
	}

	if groupPart == "" {
		return uid, gid, nil
	}
	if id, ok := parseID(groupPart); ok {
		return uid, int(id), nil
	}
	if err := load(groupPath, &group); err != nil {
		return 0, 0, fmt.Errorf("resolving --chown=%s: %w", spec, err)
	}
	groups, err := user.ParseGroupFilter(strings.NewReader(string(group)), func(g user.Group) bool {
		return g.Name == groupPart
	})
	if err != nil {
		return 0, 0, fmt.Errorf("resolving --chown=%s: parsing %s: %w", spec, groupPath, err)
	}
	if len(groups) == 0 {
		return 0, 0, fmt.Errorf("resolving --chown=%s: unable to find group %s: %w", spec, groupPart, user.ErrNoGroupEntries)
	}
	return uid, groups[0].Gid, nil
}

// parseID parses a numeric ID; "root" is 0, as in BuildKit.
func parseID(s string) (uint32, bool) {
	if s == "root" {
		return 0, true
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// parseUIDGID is BuildKit's fast path: both parts given and numeric.
func parseUIDGID(spec string) (uid, gid uint32, ok bool) {
	u, g, found := strings.Cut(spec, ":")
	if !found {
		return 0, 0, false
	}
	uid, okU := parseID(u)
	gid, okG := parseID(g)
	return uid, gid, okU && okG
}

func homeOf(passwd []byte, uid uint32) string {
	if passwd == nil {
		return "/"
	}
	users, err := user.ParsePasswdFilter(strings.NewReader(string(passwd)), func(u user.User) bool {
		return u.Uid == int(uid)
	})
	if err != nil || len(users) == 0 || users[0].Home == "" {
		return "/"
	}
	return users[0].Home
}

func toID(n int) (uint32, error) {
	if n < 0 || n > math.MaxUint32 {
		return 0, fmt.Errorf("id %d out of range", n)
	}
	return uint32(n), nil
}

// reader returns an untyped nil for a missing file, which GetExecUser treats
// as "no entries" rather than as an error.
func reader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return strings.NewReader(string(b))
}

// readFile reads p inside root, resolving symlinks as if root were "/".
// A missing file (or a non-directory on the way) is (nil, nil).
func readFile(root, p string) ([]byte, error) {
	h, err := pathrs.OpenInRoot(root, p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil, nil
		}
		return nil, fmt.Errorf("opening %s: %w", p, err)
	}
	defer h.Close()
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("reading %s: not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxUserFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(b) > maxUserFileBytes {
		return nil, fmt.Errorf("reading %s: larger than %d bytes", p, maxUserFileBytes)
	}
	return b, nil
}
