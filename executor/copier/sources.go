package copier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/slipway-dev/slipway/executor/source"
)

// urlMode is the mode recorded for an ADD URL: the mode Copy gives the
// download without --chmod (--chmod is part of the instruction text).
const urlMode fs.FileMode = 0o600

// Sources enumerates and digests exactly the source entries Copy would read for r, without
// writing anything (DestRoot, Dest, WorkDir, Chown, Chmod, ModeSet are not used). For ADD URLs it does not
// download: it records the URL with the validators a HEAD request returns (ETag, Last-Modified,
// Content-Length) in SourceFile.Digest as "url:<etag or last-modified+length>", or "" when the
// server gives none (then the caller must treat the step as uncacheable).
//
// For local sources the result equals Copy's Result.Sources for the same
// request, sorted by Path, and a source Copy would not find (or that is
// ignored entirely) fails with Copy's error. Errors that depend on the
// destination (several sources to a non-directory, a file over a
// directory) are Copy's alone. Content digests are computed by up to
// GOMAXPROCS*2 goroutines; a file with several links in the step is read
// once.
//
// URL validators: a strong ETag is used as is; a weak one (W/"...") only
// promises equivalent content, not the same bytes, so it is ignored and
// Last-Modified with Content-Length is used instead, which needs both. A
// HEAD answered with a non-2xx status (some servers refuse HEAD) gives ""
// too, leaving the step to Copy, whose GET reports the real status. The
// URL is recorded with Mode 0600 (Copy's mode for a download).
// Request.HTTPClient sends the HEAD requests; nil means
// http.DefaultClient.
func Sources(ctx context.Context, r Request) ([]SourceFile, error) {
	w := newWalker(r)
	w.digest = true
	matches, err := w.plan(ctx)
	if err != nil {
		return nil, err
	}
	return sourcesOf(ctx, w, matches)
}

func sourcesOf(ctx context.Context, w *walker, matches []match) ([]SourceFile, error) {
	r := w.req
	var (
		files []SourceFile
		jobs  []digestJob
	)
	for _, m := range matches {
		if m.url != "" && r.Checksum != "" {
			// The content is pinned: no need to ask the server.
			files = append(files, SourceFile{Path: m.url, Mode: urlMode, Digest: r.Checksum.String()})
			continue
		}
		if m.url != "" {
			sf, err := urlSource(ctx, r.HTTPClient, m.url)
			if err != nil {
				return nil, err
			}
			files = append(files, sf)
			continue
		}
		for _, it := range m.items {
			if it.fi.Mode().IsRegular() && it.linked == "" {
				jobs = append(jobs, digestJob{index: len(files), abs: it.abs, rel: it.rel, size: it.fi.Size(), digest: it.digest})
			}
			files = append(files, w.sourceFile(it, ""))
		}
	}
	if err := digestAll(ctx, jobs); err != nil {
		return nil, err
	}
	byPath := make(map[string]string, len(jobs))
	for _, j := range jobs {
		files[j.index].Digest = j.digest
		byPath[j.rel] = j.digest
	}
	for i := range files {
		if files[i].HardLink != "" {
			files[i].Digest = byPath[files[i].HardLink]
		}
	}
	sortSources(files)
	return files, nil
}

// sortSources puts files in Result.Sources order: by Path, stable.
func sortSources(files []SourceFile) {
	sort.SliceStable(files, func(i, j int) bool { return files[i].Path < files[j].Path })
}

type digestJob struct {
	index    int
	abs, rel string
	size     int64 // as the walk saw it
	digest   string
}

// digestAll fills the digest of every job that has none yet (the walk
// reads most), with at most GOMAXPROCS*2 files open at once. It stops at
// the first error.
func digestAll(ctx context.Context, jobs []digestJob) error {
	var todo []int
	for i := range jobs {
		if jobs[i].digest == "" {
			todo = append(todo, i)
		}
	}
	workers := min(runtime.GOMAXPROCS(0)*2, len(todo))
	if workers == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     = make(chan int)
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, digestBufSize)
			for i := range next {
				sum, err := digestFile(jobs[i].abs, jobs[i].size, buf)
				if err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("reading %s: %w", jobs[i].rel, err)
						cancel()
					})
					continue
				}
				jobs[i].digest = sum
			}
		}()
	}
feed:
	for _, i := range todo {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// digestFile returns "sha256:<hex>" of the content of p, reading through
// buf.
// digestFile hashes the file at p, whose size the walk saw: once that many
// bytes are read, one more read confirms the end only when the buffer was
// filled (a file that grew since is hashed whole), so a small file costs
// open, read and close.
func digestFile(p string, size int64, buf []byte) (string, error) {
	// Raw system calls: os.Open registers every file with the runtime's
	// poller and a finalizer, which costs more than reading a small file
	// (a context holds tens of thousands).
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	sum, err := digestFD(fd, size, buf)
	if err != nil {
		return "", &os.PathError{Op: "read", Path: p, Err: err}
	}
	return sum, nil
}

// digestBufSize is the size of the buffers files are hashed through.
const digestBufSize = 32 << 10

// digestFD is digestFile of the open file fd.
func digestFD(fd int, size int64, buf []byte) (string, error) {
	h := sha256.New()
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		total += int64(n)
		if total == size && n < len(buf) {
			// A short read at the expected size: regular files return
			// all they have, so this is the end.
			break
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// urlSource records an ADD URL with the validators of a HEAD request.
func urlSource(ctx context.Context, client *http.Client, rawURL string) (SourceFile, error) {
	sf := SourceFile{Path: rawURL, Mode: urlMode}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, rawURL, nil)
	if err != nil {
		return SourceFile{}, fmt.Errorf("checking %s: %w", source.RedactURL(rawURL), withoutURL(err))
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return SourceFile{}, fmt.Errorf("checking %s: %w", source.RedactURL(rawURL), withoutURL(err))
	}
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		sf.Digest = urlValidators(resp.Header)
	}
	return sf, nil
}

// urlValidators is "url:<strong etag>", else "url:<last-modified>+<length>"
// when both are given, else "".
func urlValidators(h http.Header) string {
	if et := h.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		return "url:" + et
	}
	lm, cl := h.Get("Last-Modified"), h.Get("Content-Length")
	if lm == "" || cl == "" {
		return ""
	}
	if _, err := strconv.ParseUint(cl, 10, 63); err != nil {
		return ""
	}
	return "url:" + lm + "+" + cl
}

// withoutUserInfo is p without a URL's user info, p itself when it is not
// a URL with user info.
func withoutUserInfo(p string) string {
	if !strings.Contains(p, "://") {
		return p
	}
	u, err := url.Parse(p)
	if err != nil || u.User == nil {
		return p
	}
	u.User = nil
	return u.String()
}

// withoutURL is the cause of a failed request without the URL that
// net/url and net/http put in their errors: all of it when it does not
// parse (password and all), else with its user name (net/http hides the
// password only). The caller names the URL, redacted.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if _, parsing := ue.Err.(*url.Error); parsing || ue.Op == "parse" {
			return errors.New("not a valid URL")
		}
		return ue.Err
	}
	return err
}

// keyVersion names the encoding KeyOf hashes; change it when the encoding
// changes, so old keys miss instead of colliding.
const keyVersion = "slipway.copier.sources.v1"

// KeyOf returns the hex sha256 of a canonical encoding of files, for cache
// keys. It depends only on the fields' values, not on the machine, the Go
// version or the order of files: each file is encoded as a record of
// length-prefixed fields (path, Unix-style mode with type letter and
// setuid/setgid/sticky bits, uid, gid, symlink target, hard-link path,
// device number, xattrs sorted by name, digest), and the records are
// sorted bytewise before hashing. Records repeat as often as files do. An
// ADD URL is keyed without its user info: a password is not content, and a
// key (a tag anyone who can list the cache repository reads) must not be a
// hash to test guesses of it against.
func KeyOf(files []SourceFile) string {
	// All records in one buffer (a context can hold tens of thousands of
	// files): ends[i] is where record i stops.
	size := 0
	for _, f := range files {
		// Path and digest, the other fields' usual lengths and the
		// fields' length prefixes.
		size += len(f.Path) + len(f.Link) + len(f.HardLink) + len(f.Digest) + 40
	}
	buf := make([]byte, 0, size)
	ends := make([]int, len(files))
	field := func(s string) {
		buf = strconv.AppendInt(buf, int64(len(s)), 10)
		buf = append(buf, ':')
		buf = append(buf, s...)
	}
	var names []string
	for i, f := range files {
		field(withoutUserInfo(f.Path))
		field(unixMode(f.Mode))
		field(strconv.Itoa(f.UID))
		field(strconv.Itoa(f.GID))
		field(f.Link)
		field(f.HardLink)
		field(strconv.FormatUint(f.Rdev, 10))
		names = names[:0]
		for n := range f.Xattrs {
			names = append(names, n)
		}
		slices.Sort(names)
		field(strconv.Itoa(len(names)))
		for _, n := range names {
			field(n)
			field(string(f.Xattrs[n]))
		}
		field(f.Digest)
		ends[i] = len(buf)
	}
	records := make([][]byte, len(files))
	start := 0
	for i, end := range ends {
		records[i] = buf[start:end:end]
		start = end
	}
	slices.SortFunc(records, bytes.Compare)
	h := sha256.New()
	var num []byte
	lengthPrefix := func(n int) {
		num = strconv.AppendInt(num[:0], int64(n), 10)
		num = append(num, ':')
		h.Write(num)
	}
	lengthPrefix(len(keyVersion))
	h.Write([]byte(keyVersion))
	lengthPrefix(len(records))
	for _, r := range records {
		lengthPrefix(len(r))
		h.Write(r)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// unixMode spells m as a type letter and four octal digits ("-4755",
// "d0750", "l0777"), independent of Go's FileMode bit layout.
func unixMode(m fs.FileMode) string {
	t := byte('-')
	switch {
	case m.IsDir():
		t = 'd'
	case m&fs.ModeSymlink != 0:
		t = 'l'
	case m&fs.ModeCharDevice != 0:
		t = 'c'
	case m&fs.ModeDevice != 0:
		t = 'b'
	case m&fs.ModeNamedPipe != 0:
		t = 'p'
	case m&fs.ModeSocket != 0:
		t = 's'
	case !m.IsRegular():
		t = '?'
	}
	p := uint32(m.Perm()) | unixModeBits(m)
	b := make([]byte, 1, 5)
	b[0] = t
	for shift := 9; shift >= 0; shift -= 3 {
		b = append(b, byte('0'+(p>>shift)&7))
	}
	return string(b)
}
