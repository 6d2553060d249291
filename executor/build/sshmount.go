package build

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path"
	"strconv"
	"sync"
	"syscall"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/executor/rootfs"
)

// RUN --mount=type=ssh gives the step an ssh agent: a unix socket at the
// mount's target through which the step can list the keys of one agent of
// the build (Options.SSH, by id) and have them sign, for the step's
// duration only. The private keys stay in the executor's memory: the agent
// protocol has no request that returns one, and the socket is served by
// the executor, outside the step's processes (see executor/credentials.go
// for how the executor keeps its memory from steps).
//
// As BuildKit plans it (dockerfile2llb dispatchSSH, llb.AddSSHSocket,
// ExecOp's marshalling):
//   - the id is "default" unless given (sshforward.DefaultID);
//   - the target is /run/buildkit/ssh_agent.N unless given, N the mount's
//     index among the step's ssh mounts; a relative one is under the
//     working directory, as every mount's;
//   - the socket is owned by uid:gid (0:0 by default) with mode mode&0777
//     (0600 by default; sshforward.MountSSHSocket);
//   - SSH_AUTH_SOCK is set to the first ssh mount's target as written
//     unless the step's environment already has it;
//   - source= is refused ("ssh does not support source"); from= and env=
//     mean nothing to it;
//   - an id the build was not given fails the step when required=true
//     ("no SSH key ... forwarded from the client"); otherwise the step runs
//     without the socket, SSH_AUTH_SOCK still set (MountManager
//     getSSHMountable returns no mount for an optional missing id);
//   - the cache key holds the id, target, uid, gid, mode and required, and
//     nothing of the keys.
//
// The socket is not bind-mounted (the executor pod has no CAP_SYS_ADMIN
// and in-place steps run in the pod's own root): it is bound at the target
// itself, through a descriptor of the target's parent opened in the stage
// root like every mount's (runmount.go), and removed with the mount after
// the step, so no layer holds it (snapshots never hold sockets anyway).
//
// Unlike BuildKit, which serves key files from a writable in-memory
// keyring, the agent only lists and signs (serveAgent): adding, removing
// and locking keys, and extensions, are refused, so that one step cannot
// change what a later step's agent holds.

// SSHDefaultID is the id of an ssh mount that names none (BuildKit's
// sshforward.DefaultID).
const SSHDefaultID = "default"

// sshAuthSock is the variable that tells ssh clients where the agent is.
const sshAuthSock = "SSH_AUTH_SOCK"

// planSSH plans the ssh mount m, the n-th (from 0) of its step, into rm
// and its key k, as BuildKit's dispatchSSH and llb.AddSSHSocket do. rm's
// target stays "" when the id was not given and the mount is optional: the
// step then only gets SSH_AUTH_SOCK.
func (sb *stageBuilder) planSSH(m *instructions.Mount, n int, wd string, rm *runMount, k *mountKey) error {
	if m.Source != "" {
		return fail(result.ReasonDockerfileInvalid, errors.New("RUN --mount=type=ssh: ssh does not support source"))
	}
	id := m.CacheID
	if id == "" {
		id = SSHDefaultID
	}
	target := m.Target
	if target == "" {
		target = "/run/buildkit/ssh_agent." + strconv.Itoa(n)
	}
	if n == 0 {
		if _, set := sb.env.Get(sshAuthSock); !set {
			// As written: BuildKit sets it before the target is resolved.
			rm.env, rm.secret = sshAuthSock, []byte(target)
		}
	}
	rm.mode = 0o600
	if m.Mode != nil {
		rm.mode = fs.FileMode(*m.Mode & 0o777)
	}
	if m.UID != nil {
		rm.uid = int(*m.UID)
	}
	if m.GID != nil {
		rm.gid = int(*m.GID)
	}
	if !path.IsAbs(target) {
		target = path.Join(wd, target)
	}
	target = path.Clean(target)
	if target == "/" {
		return fail(result.ReasonDockerfileInvalid, errors.New("RUN --mount=type=ssh: the target cannot be /"))
	}
	k.ID, k.Target, k.UID, k.GID, k.Mode, k.Required = id, target, rm.uid, rm.gid, rm.mode, m.Required
	k.Env = rm.env
	a, ok := sb.b.opts.SSH[id]
	if !ok {
		if m.Required {
			return fail(result.ReasonDockerfileInvalid, fmt.Errorf("RUN --mount=type=ssh,id=%s: the ssh key is required and was not given (the ImageBuild's spec.sshAgent, or executor --ssh %s=KEYFILE)", id, id))
		}
		return nil
	}
	rm.agent, rm.target = a, target
	return nil
}

// sshServer serves one step's agent on its socket.
type sshServer struct {
	l     *net.UnixListener
	agent agent.Agent
	wg    sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// serveSSH binds the socket of the ssh mount rm as name in parent, a
// directory of root, with the mount's owner and mode, and serves rm's
// agent on it, listing and signing only, until stop.
func serveSSH(root string, rm *runMount, parent *rootfs.Dir, name string) (*sshServer, error) {
	// A second descriptor of parent, since a Dir lends none: the parent's
	// path opened again in the root, as a chroot would resolve it, and the
	// socket made there checked to be parent's entry below.
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rootFD)
	rel := parent.Rel()
	if rel == "" {
		rel = "."
	}
	dirFD, err := openat2Retry(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &fs.PathError{Op: "openat2", Path: "/" + parent.Rel(), Err: err}
	}
	defer unix.Close(dirFD)
	// The /proc link of the descriptor keeps the address short (a socket's
	// path has at most 107 bytes) and resolves nothing of the root again.
	addr := "/proc/self/fd/" + strconv.Itoa(dirFD) + "/" + name
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Closing must not unlink addr: by then the descriptor is gone, and
	// the number may name another directory. The mount's undo removes it.
	l.SetUnlinkOnClose(false)
	s := &sshServer{l: l, agent: rm.agent, conns: map[net.Conn]struct{}{}}
	if err := s.setOwnerMode(dirFD, parent, name, rm); err != nil {
		l.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// setOwnerMode checks that the socket bound through dirFD is parent's
// entry name, and gives it the mount's owner and mode.
func (s *sshServer) setOwnerMode(dirFD int, parent *rootfs.Dir, name string, rm *runMount) error {
	fi, err := parent.Lstat(name)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	pst, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode().Type() != fs.ModeSocket || st.Mode&unix.S_IFMT != unix.S_IFSOCK || uint64(pst.Dev) != uint64(st.Dev) || pst.Ino != st.Ino {
		return fmt.Errorf("the socket at %s moved while it was made", path.Join("/"+parent.Rel(), name))
	}
	// Through a descriptor of the socket itself: chmod and chown then
	// act on that inode, whatever the name comes to be.
	fd, err := unix.Openat(dirFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	if uid := owner(rm.uid); uid >= 0 {
		if err := unix.Fchownat(fd, "", uid, rm.gid, unix.AT_EMPTY_PATH); err != nil {
			return &fs.PathError{Op: "chown", Path: name, Err: err}
		}
	}
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), uint32(rm.mode.Perm())); err != nil {
		return &fs.PathError{Op: "chmod", Path: name, Err: err}
	}
	return nil
}

func (s *sshServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return // closed by stop (or the listener failed: the step's clients fail)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			// Until the client closes the connection or stop closes it.
			_ = serveAgent(s.agent, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// open counts the connections being served.
func (s *sshServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// stop closes the socket and every connection, and waits until nothing is
// served. It may be called more than once.
func (s *sshServer) stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.l.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func openat2Retry(dirfd int, p string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, p, how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// The agent protocol (draft-miller-ssh-agent), as much of it as a step
// may use: listing the keys and signing. Every other request (adding,
// removing, locking, extensions) gets a failure, so that one step cannot
// change what a later step's agent holds; and nothing a step sends is
// logged (x/crypto's ServeAgent logs refused requests).
const (
	agentFailure           = 5
	agentRequestIdentities = 11
	agentIdentitiesAnswer  = 12
	agentSignRequest       = 13
	agentSignResponse      = 14
	// maxAgentMessage bounds a request, as OpenSSH's agent does.
	maxAgentMessage = 256 << 10
)

// serveAgent answers the requests read from rw with a's keys until rw
// fails or sends a malformed frame.
func serveAgent(a agent.Agent, rw io.ReadWriter) error {
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > maxAgentMessage {
			return fmt.Errorf("agent request of %d bytes", n)
		}
		req := make([]byte, n)
		if _, err := io.ReadFull(rw, req); err != nil {
			return err
		}
		reply := answerAgent(a, req)
		if _, err := rw.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(reply))), reply...)); err != nil {
			return err
		}
	}
}

// answerAgent is the reply to one request: the keys' list, a signature, or
// a failure.
func answerAgent(a agent.Agent, req []byte) []byte {
	failure := []byte{agentFailure}
	if len(req) == 0 {
		return failure
	}
	switch req[0] {
	case agentRequestIdentities:
		keys, err := a.List()
		if err != nil || len(req) != 1 {
			return failure
		}
		b := binary.BigEndian.AppendUint32([]byte{agentIdentitiesAnswer}, uint32(len(keys)))
		for _, k := range keys {
			b = appendSSHString(appendSSHString(b, k.Blob), []byte(k.Comment))
		}
		return b
	case agentSignRequest:
		blob, rest, ok := cutSSHString(req[1:])
		if !ok {
			return failure
		}
		data, rest, ok := cutSSHString(rest)
		if !ok || len(rest) != 4 {
			return failure
		}
		flags := agent.SignatureFlags(binary.BigEndian.Uint32(rest))
		key, err := ssh.ParsePublicKey(blob)
		if err != nil {
			return failure
		}
		var sig *ssh.Signature
		if ea, ok := a.(agent.ExtendedAgent); ok {
			sig, err = ea.SignWithFlags(key, data, flags)
		} else if flags == 0 {
			sig, err = a.Sign(key, data)
		} else {
			return failure
		}
		if err != nil {
			return failure
		}
		return appendSSHString([]byte{agentSignResponse}, ssh.Marshal(sig))
	}
	return failure
}

// appendSSHString appends s as an ssh string: its length, then its bytes.
func appendSSHString(b, s []byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// cutSSHString reads an ssh string from the start of b.
func cutSSHString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
