package build

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/copier"
	"github.com/slipway-dev/slipway/executor/result"
)

// RUN --mount is emulated in the stage's root without mount(2): the
// executor pod has no CAP_SYS_ADMIN, and in-place isolation runs in the
// pod's own root. Before the command each target is made in the root (what
// was there is set aside next to it under a hidden name, missing parents
// are created), and afterwards it is removed, with whatever the command
// wrote under it, and what was there is put back, so that the step's layer
// holds what the command wrote elsewhere, as with Docker's mounts:
//
//   - type=bind copies the source (the build context by default, a stage
//     or an image with from=) to the target; writes are discarded, and
//     read-only is not enforced;
//   - type=cache and type=tmpfs are empty directories (a fresh executor has
//     no cache to keep between builds, as BuildKit in a fresh pod has none);
//   - type=secret is a file (or, with env=, a variable) holding a secret
//     given to the executor with --secret; it never enters the cache key.
//
// Parent directories the command did not touch get their times back, so
// the layer does not list them.

// runMount is one RUN --mount, planned.
type runMount struct {
	typ    instructions.MountType
	target string // absolute in the stage, clean
	// type=bind: the source, copied to target when the step runs.
	src *copier.Walked                        // the build context, walked for the key
	req copier.Request                        // source (and for the context, ignore rules)
	dir func(context.Context) (string, error) // a stage's or image's tree
	// type=cache and tmpfs (a directory), secret (a file): owner and mode.
	uid, gid int
	mode     fs.FileMode
	// type=secret
	secret []byte
	env    string // the variable to set to the secret; "" for none
	file   bool   // whether the secret is a file at target too
}

// mountKey is what of a mount goes into the step's cache key: never a
// secret's value.
type mountKey struct {
	Type, Target, From, Source string
	ReadOnly                   bool
	UID, GID                   int
	Mode                       fs.FileMode
	ID, Env                    string
	Content                    string // a bind source's content key
}

// planMounts turns a RUN's --mount flags into mounts, with what the cache
// key needs of them; cacheable is false when the step cannot be cached (it
// binds a stage that cannot be).
func (g *stage) planMounts(ctx context.Context, c *instructions.RunCommand, wd string) (mounts []*runMount, keys []mountKey, cacheable bool, err error) {
	if err := c.Expand(g.expand); err != nil {
		return nil, nil, false, fail(result.ReasonDockerfileInvalid, err)
	}
	cacheable = true
	for _, m := range instructions.GetMounts(c) {
		rm := &runMount{typ: m.Type}
		k := mountKey{Type: string(m.Type), From: m.From, Source: m.Source, ReadOnly: m.ReadOnly}
		target := m.Target
		switch m.Type {
		case instructions.MountTypeSecret:
			id := m.CacheID
			if id == "" {
				id = path.Base(target)
			}
			if target == "" && m.Env == nil {
				target = "/run/secrets/" + id
			}
			rm.file = target != ""
			if m.Env != nil {
				rm.env = *m.Env
			}
			val, ok := g.b.opts.Secrets[id]
			if !ok {
				if m.Required {
					return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=secret,id=%s: the secret is required and was not given (the ImageBuild's spec.secrets, or executor --secret id=%s,src=FILE)", id, id))
				}
				continue // as BuildKit: an optional secret that is missing is not mounted
			}
			rm.secret, rm.mode = val, 0o400
			k.ID, k.Env = id, rm.env
		case instructions.MountTypeCache, instructions.MountTypeTmpfs:
			if m.From != "" {
				return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s,from=%s: a cache seeded from another stage is not supported by this executor", m.Type, m.From))
			}
			rm.mode = 0o755
			if m.Type == instructions.MountTypeTmpfs {
				rm.mode = 0o777 | fs.ModeSticky
			}
		case instructions.MountTypeBind:
			if err := g.planBind(ctx, m, rm, &k); err != nil {
				return nil, nil, false, err
			}
			if k.Content == "" {
				cacheable = false
			}
		default:
			return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s is not supported by this executor", m.Type))
		}
		if m.Mode != nil {
			rm.mode = fs.FileMode(*m.Mode & 0o777)
			if *m.Mode&0o1000 != 0 {
				rm.mode |= fs.ModeSticky
			}
		}
		if m.UID != nil {
			rm.uid = int(*m.UID)
		}
		if m.GID != nil {
			rm.gid = int(*m.GID)
		}
		k.UID, k.GID, k.Mode = rm.uid, rm.gid, rm.mode
		if rm.typ == instructions.MountTypeSecret && !rm.file {
			mounts, keys = append(mounts, rm), append(keys, k)
			continue
		}
		if target == "" {
			return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s needs a target", m.Type))
		}
		if !path.IsAbs(target) {
			target = path.Join(wd, target)
		}
		rm.target = path.Clean(target)
		if rm.target == "/" {
			return nil, nil, false, fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=%s: the target cannot be /", m.Type))
		}
		k.Target = rm.target
		mounts, keys = append(mounts, rm), append(keys, k)
	}
	return mounts, keys, cacheable, nil
}

// planBind resolves a bind mount's source: the build context, a stage or
// an image; k.Content gets the key of what it reads.
func (g *stage) planBind(ctx context.Context, m *instructions.Mount, rm *runMount, k *mountKey) error {
	src := m.Source
	if src == "" {
		src = "/"
	}
	rm.req = copier.Request{Sources: []string{src}, WorkDir: "/"}
	if m.From == "" {
		bc := g.b.opts.Context
		if bc == nil {
			return fail(result.ReasonCopyFailed, errors.New("RUN --mount=type=bind needs a build context, and this build has none"))
		}
		rm.req.SrcRoot, rm.req.Ignore, rm.req.IgnoreDescend = bc.Dir, bc.Excluded, bc.MayContainIncluded
		if g.b.opts.Cache == nil {
			w, err := copier.Walk(ctx, rm.req)
			if err != nil {
				return fail(result.ReasonCopyFailed, fmt.Errorf("RUN --mount=type=bind,source=%s: %w", src, err))
			}
			rm.src = w
			return nil
		}
		w, files, err := copier.WalkSources(ctx, rm.req)
		if err != nil {
			return fail(result.ReasonCopyFailed, fmt.Errorf("RUN --mount=type=bind,source=%s: %w", src, err))
		}
		rm.src = w
		k.Content = "context:" + copier.KeyOf(files)
		return nil
	}
	rm.req.KeepOwner = true
	if st := g.b.plan.StageForFrom(m.From, g.st.Index); st != nil {
		if g.b.stages[st.Index].g == nil {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=from=%s: the stage is not built for this target", m.From))
		}
		if key := g.b.stages[st.Index].g.key; key != "" {
			k.Content = "stage:" + key
		}
		rm.dir = func(ctx context.Context) (string, error) { return g.b.stageTree(ctx, st.Index) }
		return nil
	}
	img, err := g.b.image(ctx, m.From)
	if err != nil {
		return fail(result.ReasonBaseImagePullFailed, err)
	}
	k.Content = "image:" + img.digest.String()
	rm.dir = func(ctx context.Context) (string, error) { return img.extracted(ctx, g.b) }
	return nil
}

// mounted is a mount made in a root, to be undone.
type mounted struct {
	host    string   // the target, resolved in the root
	stash   string   // where what was at host waits; "" for nothing
	stubs   []string // parent directories made for it, outermost first
	anc     string   // the deepest directory that existed, whose entries change
	ancTime [2]unix.Timespec
	ancMod  unix.Timespec // its mtime once the mount was made; zero if unknown
}

// mount makes the mounts in root and returns how to undo them.
func (g *stage) mount(ctx context.Context, root string, mounts []*runMount) (func() error, error) {
	var done []*mounted
	undo := func() error {
		var first error
		for _, m := range slices.Backward(done) {
			if err := m.undo(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for _, rm := range mounts {
		if rm.target == "" {
			continue // a secret given as a variable only
		}
		m, err := g.mountOne(ctx, root, rm)
		if m != nil {
			done = append(done, m)
		}
		if err != nil {
			undo()
			return nil, fail(result.ReasonRunFailed, fmt.Errorf("RUN --mount=type=%s,target=%s: %w", rm.typ, rm.target, err))
		}
	}
	return undo, nil
}

func (g *stage) mountOne(ctx context.Context, root string, rm *runMount) (*mounted, error) {
	host, err := securePath(root, rm.target)
	if err != nil {
		return nil, err
	}
	m := &mounted{host: host}
	// The deepest existing directory above the target: its entries are
	// what making the mount changes.
	m.anc = filepath.Dir(host)
	for {
		if fi, err := os.Lstat(m.anc); err == nil && fi.IsDir() {
			break
		}
		if m.anc == root {
			break
		}
		m.anc = filepath.Dir(m.anc)
	}
	var st unix.Stat_t
	if err := unix.Lstat(m.anc, &st); err != nil {
		return nil, err
	}
	m.ancTime = [2]unix.Timespec{st.Atim, st.Mtim}
	rel, _ := filepath.Rel(root, filepath.Dir(host))
	created, err := g.mkdirAll(root, "/"+filepath.ToSlash(rel), "")
	if err != nil {
		return nil, err
	}
	for _, c := range created {
		m.stubs = append(m.stubs, filepath.Join(root, filepath.FromSlash(c)))
	}
	if _, err := os.Lstat(host); err == nil {
		var b [8]byte
		rand.Read(b[:])
		m.stash = filepath.Join(filepath.Dir(host), ".slipway-mount-"+hex.EncodeToString(b[:]))
		if err := os.Rename(host, m.stash); err != nil {
			m.stash = ""
			return m, err
		}
	}
	if err := g.fill(ctx, root, rm, host); err != nil {
		return m, err
	}
	if err := unix.Lstat(m.anc, &st); err == nil {
		m.ancMod = st.Mtim
	}
	return m, nil
}

// fill makes the mount's content at host.
func (g *stage) fill(ctx context.Context, root string, rm *runMount, host string) error {
	switch rm.typ {
	case instructions.MountTypeSecret:
		if err := os.WriteFile(host, rm.secret, 0o600); err != nil {
			return err
		}
	case instructions.MountTypeBind:
		req := rm.req
		req.DestRoot, req.Dest = root, rm.target
		var err error
		if rm.src != nil {
			_, err = rm.src.Copy(ctx, req)
		} else {
			if req.SrcRoot, err = rm.dir(ctx); err != nil {
				return err
			}
			_, err = copier.Copy(ctx, req)
		}
		return err
	default:
		if err := os.Mkdir(host, 0o700); err != nil {
			return err
		}
	}
	if err := os.Lchown(host, rm.uid, rm.gid); err != nil && os.Geteuid() == 0 {
		return err
	}
	return os.Chmod(host, rm.mode)
}

// undo removes the mount and what the command wrote under it, puts back
// what was there, removes the parents it made when they are still empty,
// and gives the directory whose entries it changed its times back when the
// command did not change them too.
func (m *mounted) undo() error {
	var st unix.Stat_t
	untouched := m.ancMod != (unix.Timespec{}) && unix.Lstat(m.anc, &st) == nil && st.Mtim == m.ancMod
	if err := os.RemoveAll(m.host); err != nil {
		return fmt.Errorf("removing the mount %s: %w", m.host, err)
	}
	if m.stash != "" {
		if err := os.Rename(m.stash, m.host); err != nil {
			return fmt.Errorf("putting %s back: %w", m.host, err)
		}
	}
	for _, s := range slices.Backward(m.stubs) {
		if err := os.Remove(s); err != nil {
			break // the command put something there: it stays
		}
	}
	if untouched {
		ts := m.ancTime
		_ = unix.UtimesNanoAt(unix.AT_FDCWD, m.anc, ts[:], unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}
