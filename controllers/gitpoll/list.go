package gitpoll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/executor/result"
)

// A listing is Git's ref advertisement, the first thing a server sends to a
// fetch (`git ls-remote`): smart HTTP's GET /info/refs?service=git-upload-pack,
// or git-upload-pack's first answer over SSH. Nothing else is asked for, no
// object is fetched. The advertisement is read as a stream, keeping only the
// refs some subscriber may stand for, so memory does not grow with the
// repository's number of refs (a GitHub repository advertises every pull
// request's refs); its size is bounded all the same (Options.MaxListingBytes),
// and so is its time (Options.Timeout): every read and the SSH handshake are
// under the deadline. go-git's Remote.List is not used for this: it keeps
// every advertised ref, has no size bound, and its SSH transport reads
// ~/.ssh/config and does not bound the handshake by the context.

// listing is what one listing found of the refs asked for.
type listing struct {
	// refs are the wanted refs the server advertised, with "^{}" entries
	// for the commits annotated tags peel to: name → hexadecimal hash.
	refs map[string]string
	// head is the branch HEAD points at (symref capability), "" if the
	// server did not say.
	head string
	// empty: the repository has no refs at all.
	empty bool
}

// endpoint is a parsed repository URL.
type endpoint struct {
	// url is the URL as listed: git:// made https:// (as the executor does).
	url string
	ssh bool
	// ep is the parsed URL (for SSH: user, host, port, path).
	ep *transport.Endpoint
}

// parseURL parses a repository URL as the executor reads spec.source.git.url:
// https://, http://, git:// (https://), ssh:// and scp-like user@host:path.
// Credentials in an http(s) URL are refused: they belong in Credentials.
func parseURL(raw string) (endpoint, error) {
	u := raw
	if rest, ok := strings.CutPrefix(u, "git://"); ok {
		u = "https://" + rest
	}
	ep, err := transport.NewEndpoint(u)
	if err != nil {
		return endpoint{}, fmt.Errorf("parsing the repository URL %s: %w", redactURL(raw), errors.Unwrap(err))
	}
	switch ep.Protocol {
	case "http", "https":
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			return endpoint{}, fmt.Errorf("parsing the repository URL %s: no host", redactURL(raw))
		}
		if pu.User != nil {
			return endpoint{}, fmt.Errorf("the repository URL %s carries credentials: give them as Credentials", redactURL(raw))
		}
		return endpoint{url: u, ep: ep}, nil
	case "ssh":
		if ep.Host == "" {
			return endpoint{}, fmt.Errorf("parsing the repository URL %s: no host", redactURL(raw))
		}
		if ep.User == "" {
			ep.User = "git"
		}
		return endpoint{url: u, ssh: true, ep: ep}, nil
	}
	return endpoint{}, fmt.Errorf("the repository URL %s is neither https://, http://, git://, ssh:// nor user@host:path", redactURL(raw))
}

// redactURL is u without user information, for messages (as the executor's
// source.RedactURL shows URLs).
func redactURL(u string) string {
	pu, err := url.Parse(u)
	if err == nil {
		if pu.User == nil {
			return u
		}
		pu.User = nil
		return strings.Replace(pu.String(), "//", "//***@", 1)
	}
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		return scheme + "://…"
	}
	head, _, _ := strings.Cut(u, "/")
	if at := strings.LastIndexByte(head, '@'); at >= 0 {
		return "***" + u[at:]
	}
	return u
}

// ListError is a failed listing: the repository URL (without user
// information) and what went wrong, in words that name no credential.
type ListError struct {
	URL    string
	Reason string
	// Timeout: the listing did not end within Options.Timeout.
	Timeout bool
	err     error
}

func (e *ListError) Error() string { return "listing the refs of " + e.URL + ": " + e.Reason }

// Unwrap is the cause, for errors.Is; its text may be anything the
// transport said, so messages use Error.
func (e *ListError) Unwrap() error { return e.err }

// errTooLarge ends a listing larger than the bound.
type errTooLarge struct{ max int64 }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("the ref listing is larger than %d bytes (Options.MaxListingBytes)", e.max)
}

// limitedReader reads r, failing past max bytes.
type limitedReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n >= l.max {
		// At the bound: one byte more is too much, an end is not.
		var one [1]byte
		if n, err := l.r.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, errTooLarge{l.max}
	}
	if rest := l.max - l.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	return n, err
}

// lister lists repositories; Poller uses one, tests may replace it.
type lister struct {
	client   *http.Client
	maxBytes int64
	// timeout is what the caller's context allows a listing, for messages.
	timeout time.Duration
}

// list lists the refs of the repository at ep with creds, keeping those in
// wanted. ctx bounds it.
func (l *lister) list(ctx context.Context, ep endpoint, creds *groupCreds, wanted map[string]bool) (*listing, error) {
	var out *listing
	var err error
	if ep.ssh {
		out, err = l.listSSH(ctx, ep, creds, wanted)
	} else {
		out, err = l.listHTTP(ctx, ep, creds, wanted)
	}
	if err != nil {
		return nil, l.explain(ctx, ep, creds, err)
	}
	return out, nil
}

// userAgent starts with "git/", which some servers look for before they
// speak the smart protocol.
const userAgent = "git/slipway-gitpoll"

// advertisementType is the Content-Type of a smart HTTP ref advertisement.
const advertisementType = "application/x-git-upload-pack-advertisement"

// maxRedirects bounds the redirects of one listing.
const maxRedirects = 5

// errOffOrigin refuses a redirect elsewhere with credentials.
var errOffOrigin = errors.New("the server redirected to another scheme, host or port, where the credentials must not go")

// httpStatusError is an HTTP answer other than 200.
type httpStatusError struct{ code int }

func (e httpStatusError) Error() string {
	return fmt.Sprintf("HTTP %d %s", e.code, http.StatusText(e.code))
}

func (l *lister) listHTTP(ctx context.Context, ep endpoint, creds *groupCreds, wanted map[string]bool) (*listing, error) {
	u, err := url.Parse(ep.url)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/info/refs"
	u.RawPath = ""
	u.RawQuery = "service=git-upload-pack"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", advertisementType+", */*")
	withAuth := creds.username != "" || creds.password != ""
	if withAuth {
		req.SetBasicAuth(creds.username, creds.password)
	}
	origin := u.Scheme + "://" + u.Host
	c := *l.client
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if withAuth && r.URL.Scheme+"://"+r.URL.Host != origin {
			return errOffOrigin
		}
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, httpStatusError{resp.StatusCode}
	}
	if ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";"); strings.TrimSpace(ct) != advertisementType {
		return nil, errors.New("the server does not speak Git's smart HTTP protocol (no ref advertisement)")
	}
	return parseAdvertisement(&limitedReader{r: resp.Body, max: l.maxBytes}, wanted)
}

func (l *lister) listSSH(ctx context.Context, ep endpoint, creds *groupCreds, wanted map[string]bool) (*listing, error) {
	port := ep.ep.Port
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(ep.ep.Host, strconv.Itoa(port))
	config := &ssh.ClientConfig{
		User:              ep.ep.User,
		HostKeyCallback:   creds.hostKeys.HostKeyCallback(),
		HostKeyAlgorithms: creds.hostKeys.HostKeyAlgorithms(addr),
	}
	if creds.signer != nil {
		config.Auth = []ssh.AuthMethod{ssh.PublicKeys(creds.signer)}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The deadline bounds the handshake and every read; closing the
	// connection when ctx ends covers a cancellation.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	if err != nil {
		return nil, err
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &headWriter{max: 512}
	sess.Stderr = stderr
	if err := sess.Start("git-upload-pack " + shellQuote(ep.ep.Path)); err != nil {
		return nil, err
	}
	out, err := parseAdvertisement(&limitedReader{r: stdout, max: l.maxBytes}, wanted)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The server ended the session: its stderr says why (a
			// repository that does not exist, a forced command's refusal).
			sess.Wait()
			if msg := firstLine(stderr.String()); msg != "" && ctx.Err() == nil {
				return nil, &serverSaid{msg: msg}
			}
		}
		return nil, err
	}
	// A flush-pkt: we want nothing; the server ends the session.
	stdin.Write([]byte("0000"))
	stdin.Close()
	return out, nil
}

// serverSaid is an error message of the server's (its stderr or an ERR
// line), already sanitised.
type serverSaid struct{ msg string }

func (e *serverSaid) Error() string { return "the server said: " + e.msg }

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (w *headWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rest := w.max - w.buf.Len(); rest > 0 {
		w.buf.Write(p[:min(len(p), rest)])
	}
	return len(p), nil
}

func (w *headWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// firstLine is the first non-empty line of s, sanitised (the server's text
// may hold anything) and bounded.
func firstLine(s string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			return result.Truncate(result.Sanitize(line), 200)
		}
	}
	return ""
}

// shellQuote quotes a path for the remote shell as git does
// (sq_quote_buf: ' and ! escaped outside single quotes).
func shellQuote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\'' || c == '!' {
			b.WriteString(`'\`)
			b.WriteByte(c)
			b.WriteByte('\'')
			continue
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('\'')
	return b.String()
}

// parseAdvertisement reads a protocol v0 ref advertisement (gitprotocol-pack:
// "Reference Discovery"), keeping the refs in wanted and their peeled
// entries: smart HTTP's "# service=git-upload-pack" line and flush first,
// then "<hash> SP <name>[NUL <capabilities>]" lines up to a flush-pkt.
func parseAdvertisement(r io.Reader, wanted map[string]bool) (*listing, error) {
	out := &listing{refs: map[string]string{}}
	s := pktline.NewScanner(r)
	first := true
	for {
		if !s.Scan() {
			err := s.Err()
			var el *pktline.ErrorLine
			if errors.As(err, &el) {
				return nil, &serverSaid{msg: result.Truncate(result.Sanitize(el.Text), 200)}
			}
			if err == nil {
				err = io.ErrUnexpectedEOF // no flush-pkt: cut short
				if first {
					err = io.EOF
				}
			}
			return nil, err
		}
		line := s.Bytes()
		if first && bytes.HasPrefix(line, []byte("# service=")) {
			// Smart HTTP's service line, then a flush-pkt.
			if !s.Scan() {
				return nil, io.ErrUnexpectedEOF
			}
			if len(s.Bytes()) != 0 {
				line = s.Bytes()
			} else {
				continue
			}
		}
		if len(line) == 0 { // flush-pkt: the end
			if first {
				out.empty = true
			}
			return out, nil
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		var caps []byte
		if first {
			line, caps, _ = bytes.Cut(line, []byte{0})
		}
		first = false
		hash, name, ok := bytes.Cut(line, []byte(" "))
		if !ok || !isHash(hash) {
			continue // "shallow <hash>" and the like
		}
		if string(name) == "capabilities^{}" {
			out.empty = true // an empty repository's capabilities line
			continue
		}
		for c := range bytes.FieldsSeq(caps) {
			// The server's word for the default branch: kept only when it is a plausible
			// ref name (the tag templates' {{.Branch}} is made from it).
			if target, ok := bytes.CutPrefix(c, []byte("symref=HEAD:")); ok && plausibleRef(target) {
				out.head = string(target)
			}
		}
		if n := string(name); wanted[strings.TrimSuffix(n, "^{}")] {
			out.refs[n] = strings.ToLower(string(hash))
		}
	}
}

func isHash(b []byte) bool {
	if len(b) != 40 && len(b) != 64 {
		return false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// explain turns a listing's error into a ListError whose reason names no
// credential and says what a person can act on.
func (l *lister) explain(ctx context.Context, ep endpoint, creds *groupCreds, err error) *ListError {
	le := &ListError{URL: redactURL(ep.url), err: err}
	var status httpStatusError
	var tooLarge errTooLarge
	var said *serverSaid
	var dnse *net.DNSError
	var ke *knownhosts.KeyError
	var ne net.Error
	withAuth := creds.username != "" || creds.password != "" || creds.signer != nil
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		le.Reason, le.Timeout = fmt.Sprintf("no answer within %s", l.timeout), true
	case errors.As(err, &status) && status.code == http.StatusUnauthorized && withAuth:
		le.Reason = "the server refused the credentials (" + status.Error() + ")"
	case errors.As(err, &status) && status.code == http.StatusUnauthorized:
		le.Reason = "the server requires credentials (" + status.Error() + ")"
	case errors.As(err, &status) && status.code == http.StatusForbidden:
		le.Reason = "the server refused access (" + status.Error() + ")"
	case errors.As(err, &status) && status.code == http.StatusNotFound:
		le.Reason = "repository not found, or not visible with these credentials (" + status.Error() + ")"
	case errors.As(err, &status) && status.code >= 500:
		le.Reason = "the server failed (" + status.Error() + ")"
	case errors.As(err, &status):
		le.Reason = "unexpected answer (" + status.Error() + ")"
	case errors.As(err, &tooLarge):
		le.Reason = tooLarge.Error()
	case errors.Is(err, errOffOrigin):
		le.Reason = errOffOrigin.Error()
	case errors.As(err, &ke) && len(ke.Want) > 0:
		le.Reason = "the SSH host key does not match known_hosts (it changed, or someone is in the middle)"
	case errors.As(err, &ke):
		le.Reason = "the SSH host key is not in known_hosts"
	case strings.Contains(err.Error(), "unable to authenticate"):
		le.Reason = "the server refused the SSH key"
	case errors.As(err, &said):
		le.Reason = said.Error()
	case errors.As(err, &dnse):
		le.Reason = "the host name does not resolve"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, pktline.ErrInvalidPktLen):
		le.Reason = "the server's answer was cut short or is not a ref advertisement"
	default:
		le.Reason = "the host is unreachable: " + scrub(rootCause(err).Error(), creds)
	}
	return le
}

// rootCause is the innermost error of err's chain: a *url.Error or
// *net.OpError names URLs and addresses the message already has.
func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// scrub removes the credentials from a message.
func scrub(msg string, creds *groupCreds) string {
	for _, s := range []string{creds.password, creds.username} {
		if len(s) < 4 {
			continue
		}
		msg = strings.ReplaceAll(msg, s, "***")
		msg = strings.ReplaceAll(msg, url.QueryEscape(s), "***")
	}
	return result.Truncate(result.Sanitize(msg), 300)
}

// knownHostsDB parses known_hosts content into the database SSH listings
// check host keys against: through a memory file, so that no copy of it is
// written anywhere (as the executor's source.GitAuth does).
func knownHostsDB(content []byte) (hostKeyDB, error) {
	fd, err := unix.MemfdCreate("known_hosts", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "known_hosts")
	defer f.Close()
	if _, err := f.Write(content); err != nil {
		return nil, err
	}
	return gitssh.NewKnownHostsDb(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// hostKeyDB is go-git's known_hosts database (skeema/knownhosts).
type hostKeyDB interface {
	HostKeyCallback() ssh.HostKeyCallback
	HostKeyAlgorithms(hostWithPort string) []string
}

// newHTTPClient is the client of HTTP listings: Go's default transport
// (proxies from the environment), with its own connection pool.
func newHTTPClient(rt http.RoundTripper) *http.Client {
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 30 * time.Second
		t.MaxIdleConnsPerHost = 4
		rt = t
	}
	return &http.Client{Transport: rt}
}

// plausibleRef reports whether a server-given ref name is one git could have made: under
// refs/, at most 255 bytes of printable ASCII without spaces or the characters git refuses in
// ref names.
func plausibleRef(b []byte) bool {
	if len(b) > 255 || !bytes.HasPrefix(b, []byte("refs/")) {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte("~^:?*[\\"), c) >= 0 {
			return false
		}
	}
	return true
}
