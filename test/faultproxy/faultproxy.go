// Package faultproxy is an HTTP reverse proxy on 127.0.0.1 in front of a
// real registry (testenv.StartRegistry's docker-registry) that answers
// chosen requests with faults, for tests of what a client does when a
// registry misbehaves: an error status (500, 502, 503, 429 with
// Retry-After), a reset connection, a stall, a truncated body, a body whose
// content does not match its digest, or a connection dropped in the middle
// of an upload. Every request is recorded (method, path, status, fault);
// no header and no query is recorded, so neither an Authorization header
// nor an upload's _state token ever appears in what a test prints.
package faultproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what the proxy does to a request a rule matches.
type Fault int

const (
	// Status answers with Rule.Status (and Rule.RetryAfter, if set)
	// without asking the registry.
	Status Fault = iota + 1
	// Reset closes the client's connection with a TCP reset before any
	// response.
	Reset
	// Stall answers nothing until the client gives up (its request's
	// context ends), Rule.StallFor has passed, or the proxy is closed; then
	// the connection is reset.
	Stall
	// Truncate forwards the request and sends the response's headers (with
	// the full Content-Length) but only the first half of its body, then
	// closes the connection (the client reads an unexpected EOF).
	Truncate
	// Corrupt forwards the request and sends a body of the same length
	// with its bytes changed, so it no longer matches its digest.
	Corrupt
	// DropUpload reads part of the request's body (a PATCH or PUT upload)
	// and then resets the connection, as a proxy or node that dies
	// mid-upload would.
	DropUpload
)

func (f Fault) String() string {
	switch f {
	case 0:
		return "none"
	case Status:
		return "status"
	case Reset:
		return "reset"
	case Stall:
		return "stall"
	case Truncate:
		return "truncate"
	case Corrupt:
		return "corrupt"
	case DropUpload:
		return "drop-upload"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Rule matches requests and says what fault they get. Each rule counts
// the requests it matches; a request gets the fault of the first rule
// whose count is in its Nth..Nth+Times-1 range.
type Rule struct {
	// Method is the request method to match; empty matches any.
	Method string
	// Path is matched against the request's path (without the query);
	// nil matches any.
	Path *regexp.Regexp
	// Nth is the first matching request (counting from 1) that gets the
	// fault; 0 or 1: the first.
	Nth int
	// Times is how many matching requests, from the Nth on, get the fault;
	// 0: all of them.
	Times int

	Fault Fault
	// Status is the status of a Status fault.
	Status int
	// RetryAfter is the Retry-After header of a Status fault (seconds or
	// an HTTP date); empty: none.
	RetryAfter string
	// StallFor bounds a Stall; 0: until the client gives up or the proxy
	// is closed.
	StallFor time.Duration

	seen int // matching requests so far
}

// Request is one request the proxy saw.
type Request struct {
	Method string
	Path   string // without the query
	// Status is the status the client got; 0 when it got none (a reset,
	// a stall, a dropped upload).
	Status int
	// Fault is the fault the request got; 0 when it was forwarded as is.
	Fault Fault
}

func (r Request) String() string {
	s := fmt.Sprintf("%s %s -> %d", r.Method, r.Path, r.Status)
	if r.Fault != 0 {
		s += " (" + r.Fault.String() + ")"
	}
	return s
}

// Proxy is a fault-injecting reverse proxy in front of one registry.
type Proxy struct {
	srv     *http.Server
	ln      net.Listener
	backend *url.URL
	rp      *httputil.ReverseProxy
	closed  chan struct{}
	once    sync.Once

	mu       sync.Mutex
	rules    []*Rule
	requests []Request
}

// Start starts a proxy on 127.0.0.1 at a free port in front of the
// registry at backend (host:port, plain HTTP) with rules, and closes it
// when the test ends.
func Start(t testing.TB, backend string, rules ...Rule) *Proxy {
	t.Helper()
	p, err := New(backend, rules...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// New is Start without a test: the caller closes the proxy.
func New(backend string, rules ...Rule) (*Proxy, error) {
	u, err := url.Parse("http://" + backend)
	if err != nil {
		return nil, fmt.Errorf("parsing backend %q: %w", backend, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on 127.0.0.1: %w", err)
	}
	p := &Proxy{backend: u, ln: ln, closed: make(chan struct{})}
	// The Host header stays the proxy's, so that the Location of an upload
	// the registry answers with points at the proxy too.
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		ErrorLog: nil,
	}
	p.SetRules(rules...)
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// Close stops the proxy, ending every stall.
func (p *Proxy) Close() {
	p.once.Do(func() {
		close(p.closed)
		p.srv.Close()
	})
}

// Host returns the proxy's host:port.
func (p *Proxy) Host() string { return p.ln.Addr().String() }

// Ref returns repo (with an optional :tag or @digest) in the proxy:
// HOST:PORT/repo.
func (p *Proxy) Ref(repo string) string { return p.Host() + "/" + repo }

// SetRules replaces the rules (and their counts of matches).
func (p *Proxy) SetRules(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = make([]*Rule, len(rules))
	for i := range rules {
		r := rules[i]
		r.seen = 0
		p.rules[i] = &r
	}
}

// Requests returns the requests seen so far, in the order they ended.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.requests...)
}

// Count returns how many requests seen so far have method (any when empty)
// and a path that path matches (any when nil).
func (p *Proxy) Count(method string, path *regexp.Regexp) int {
	n := 0
	for _, r := range p.Requests() {
		if (method == "" || r.Method == method) && (path == nil || path.MatchString(r.Path)) {
			n++
		}
	}
	return n
}

// Log returns the requests seen so far, one a line, for failure messages.
func (p *Proxy) Log() string {
	var b strings.Builder
	for _, r := range p.Requests() {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// match returns the rule r gets, nil when none.
func (p *Proxy) match(r *http.Request) *Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	var got *Rule
	for _, rule := range p.rules {
		if rule.Method != "" && rule.Method != r.Method {
			continue
		}
		if rule.Path != nil && !rule.Path.MatchString(r.URL.Path) {
			continue
		}
		// Every rule counts the requests it matches, whichever gets them.
		rule.seen++
		first := max(rule.Nth, 1)
		if got != nil || rule.seen < first || (rule.Times > 0 && rule.seen >= first+rule.Times) {
			continue
		}
		got = rule
	}
	return got
}

func (p *Proxy) record(r *http.Request, status int, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, Request{Method: r.Method, Path: r.URL.Path, Status: status, Fault: f})
}

// ServeHTTP applies the first matching rule's fault, or forwards r.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rule := p.match(r)
	if rule == nil {
		sw := &statusWriter{ResponseWriter: w}
		p.rp.ServeHTTP(sw, r)
		p.record(r, sw.code(), 0)
		return
	}
	switch rule.Fault {
	case Status:
		if rule.RetryAfter != "" {
			w.Header().Set("Retry-After", rule.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rule.Status)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"faultproxy: injected %d"}]}`, rule.Status)
		p.record(r, rule.Status, Status)
	case Reset:
		p.record(r, 0, Reset)
		reset(w)
	case Stall:
		var timeout <-chan time.Time
		if rule.StallFor > 0 {
			timer := time.NewTimer(rule.StallFor)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-r.Context().Done():
		case <-timeout:
		case <-p.closed:
		}
		p.record(r, 0, Stall)
		reset(w)
	case DropUpload:
		// Read a part of the upload, so that the client is mid-body.
		io.CopyN(io.Discard, r.Body, 512)
		p.record(r, 0, DropUpload)
		reset(w)
	case Truncate, Corrupt:
		p.forwardChanged(w, r, rule.Fault)
	default:
		panic(fmt.Sprintf("faultproxy: rule with unknown fault %v", rule.Fault))
	}
}

// forwardChanged forwards r and sends the response with its body truncated
// or corrupted.
func (p *Proxy) forwardChanged(w http.ResponseWriter, r *http.Request, f Fault) {
	rec := &bufferWriter{header: http.Header{}}
	p.rp.ServeHTTP(rec, r)
	body := rec.body.Bytes()
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	status := rec.code
	if status == 0 {
		status = http.StatusOK
	}
	if len(body) == 0 || status != http.StatusOK {
		// Nothing to change (a HEAD, an error): forward as is.
		w.WriteHeader(status)
		w.Write(body)
		p.record(r, status, 0)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if f == Truncate {
		w.Write(body[:len(body)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		p.record(r, status, Truncate)
		closeConn(w)
		return
	}
	changed := bytes.Clone(body)
	for i := len(changed) / 2; i < len(changed) && i < len(changed)/2+64; i++ {
		changed[i] ^= 0xff
	}
	w.Write(changed)
	p.record(r, status, Corrupt)
}

// closeConn closes the connection under w (a FIN: the client reads an
// unexpected EOF).
func closeConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
		}
	}
}

// reset closes the connection under w with a TCP reset (SO_LINGER 0).
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("faultproxy: the connection cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// bufferWriter holds a whole response.
type bufferWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}
