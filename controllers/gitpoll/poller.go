// Package gitpoll follows git revisions for the controller: it resolves
// each subscribed ImageBuild's spec.source.git revision to a commit with a
// remote ref listing (what `git ls-remote` asks; no clone, no object
// fetched), at the ImageBuild's interval, and tells the controller when the
// commit moved.
//
// Subscriptions of the same repository URL with the same credentials share
// one listing, at the smallest interval among them, however many
// ImageBuilds they are: 200 ImageBuilds following one repository make one
// request per interval. Subscriptions with different credentials never
// share a listing, so that an ImageBuild cannot learn the commits of a
// private repository through another tenant's credentials: listings are
// keyed by the URL and an HMAC of the credentials (with a key of the
// process's, so the key says nothing of them), never the credentials
// themselves.
//
// A revision is resolved as the executor resolves it (see resolve.go). A
// full commit SHA is not polled (Subscribe returns ErrCommit); a revision
// that resolves to a tag is listed at most once per Options.TagInterval (a
// day by default: tags are not expected to move, and one that is moved
// by force is still noticed within the day, or at once by Refresh); an
// abbreviated SHA that no ref names is a commit and not polled again.
//
// The package does not log; errors are in each subscription's Status.
package gitpoll

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Credentials are the credentials of spec.source.git.secretRef, as the
// controller reads them from the Secret (kubernetes.io/basic-auth: username
// and password; kubernetes.io/ssh-auth: ssh-privatekey and known_hosts).
// They are sent only to the repository's URL.
type Credentials struct {
	// Username and Password are HTTP basic auth for http(s) URLs (a token
	// is a password).
	Username, Password string
	// SSHPrivateKey is an unencrypted PEM private key for ssh URLs.
	SSHPrivateKey []byte
	// KnownHosts are the host keys an ssh server must present, in
	// known_hosts form. Required for ssh URLs: as in the executor, no host
	// key is trusted on first use.
	KnownHosts []byte
}

// Source is what a subscription follows.
type Source struct {
	// URL is the repository: https://, http://, git:// (for https://),
	// ssh:// or user@host:path.
	URL string
	// Revision is a branch, a tag or any ref, as spec.source.git.revision;
	// empty is the remote's HEAD.
	Revision string
	// Credentials are the repository's; the zero value is anonymous.
	Credentials Credentials
}

// Status is what the latest listing said of a subscription's revision.
type Status struct {
	// Commit is the full SHA the revision resolves to (an annotated tag's
	// commit, not the tag object); empty until a listing resolved it, and
	// for a pinned revision. A failed listing keeps the commit of the last
	// one that succeeded, with Err set.
	Commit string
	// Ref is the ref the revision resolved to ("refs/heads/main",
	// "refs/tags/v1"; for an empty revision, the branch HEAD points at, or
	// "HEAD").
	Ref string
	// Pinned: the revision is a hexadecimal string that no ref names, which
	// the executor takes for an abbreviated commit: it never moves and is
	// not polled again. Commit is empty (a listing does not say which
	// commit an abbreviation stands for).
	Pinned bool
	// CheckedAt is when the listing that gave this status ended, StartedAt
	// when it began: it shows the refs as they were at some time between
	// the two. A subscription that a listing of its repository served at
	// once has that listing's times.
	StartedAt, CheckedAt time.Time
	// Err is why the revision could not be resolved: the listing failed (a
	// *ListError), or the repository has no such ref. Its message names no
	// credential.
	Err error
}

// ErrCommit is Subscribe's answer for a revision that is a full commit SHA,
// which never moves: it is not polled.
var ErrCommit = errors.New("the revision is a commit SHA, which never moves: not polled")

// Options configure a Poller. Zero values are the defaults.
type Options struct {
	// Notify is called with a subscription's key after a listing whose
	// result for it differs from the one before: its commit moved, its
	// error appeared, changed or went, or it was resolved for the first
	// time. The controller turns it into a reconcile (a source.Channel).
	// It is called from the Poller's goroutines, several at once, never
	// with a lock held; it should not block long, as the next listing of
	// that repository waits for it. Nil calls nothing.
	Notify func(key types.NamespacedName)
	// Timeout bounds each listing, from the connection to the last byte.
	// The default is 30 seconds.
	Timeout time.Duration
	// MaxListingBytes bounds the size of a listing's answer. The default
	// is 32 MiB (a repository with a hundred thousand refs advertises
	// about 8 MiB).
	MaxListingBytes int64
	// MinInterval is the shortest interval a subscription is polled at;
	// shorter ones are raised to it. The default is 10 seconds.
	MinInterval time.Duration
	// TagInterval is how often a revision that resolves to a tag is
	// listed, however short its interval. The default is 24 hours.
	TagInterval time.Duration
	// RefreshInterval is the shortest time between a listing and one that
	// Refresh forces, per repository and credentials: a Refresh sooner
	// than that is served by a listing when the interval has passed. The
	// default is 10 seconds.
	RefreshInterval time.Duration
	// MaxConcurrent bounds how many listings run at once. The default is 4.
	MaxConcurrent int
	// Transport is the HTTP transport of listings. The default is Go's
	// default transport (proxies from the environment) with its own
	// connection pool.
	Transport http.RoundTripper
	// Clock is the clock; the default is the real one.
	Clock clock.WithTicker
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxListingBytes <= 0 {
		o.MaxListingBytes = 32 << 20
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 10 * time.Second
	}
	if o.TagInterval <= 0 {
		o.TagInterval = 24 * time.Hour
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 10 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// Poller resolves subscribed revisions periodically. Subscribe, Unsubscribe,
// Latest and Refresh may be called from any goroutine, before or after
// Start; listings run only while Start runs.
type Poller struct {
	opts   Options
	lister lister
	// credKey keys the HMAC of credentials in groupIDs.
	credKey []byte
	sem     chan struct{}

	mu     sync.Mutex
	subs   map[types.NamespacedName]*subscription
	groups map[groupID]*group
	// ctx is Start's, nil before; stopped is set when it ended.
	ctx     context.Context
	stopped bool
	wg      sync.WaitGroup
}

// groupID names a listing: the URL and an HMAC of the credentials.
type groupID string

// group is the listing shared by the subscriptions of one URL and one set
// of credentials.
type group struct {
	id    groupID
	ep    endpoint
	creds *groupCreds
	subs  map[types.NamespacedName]*subscription

	// interval is the smallest effective interval of subs; 0 when none
	// needs polling (every revision pinned).
	interval time.Duration
	// last is when the last listing ended (zero: never), lastStarted when
	// it began; next when the next one is due.
	last, lastStarted, next time.Time
	// lastWanted and lastListing are the refs the last listing was asked
	// for and what it found (nil if it failed: lastErr).
	lastWanted  map[string]bool
	lastListing *listing
	lastErr     error
	// failures counts the listings that failed in a row (failureBackoff).
	failures int

	// wake tells the loop that next changed; done that the group is gone.
	wake chan struct{}
	done chan struct{}
}

// groupCreds are a group's credentials, ready for listings.
type groupCreds struct {
	username, password string
	signer             ssh.Signer
	hostKeys           hostKeyDB
}

// subscription is one subscribed ImageBuild.
type subscription struct {
	key      types.NamespacedName
	revision string
	interval time.Duration
	group    *group
	status   Status
	// resolved: status comes from a listing; tag and pinned: what it said.
	resolved    bool
	tag, pinned bool
}

// New returns a Poller. Start runs its listings.
func New(o Options) *Poller {
	o = o.withDefaults()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return &Poller{
		opts:    o,
		lister:  lister{client: newHTTPClient(o.Transport), maxBytes: o.MaxListingBytes, timeout: o.Timeout},
		credKey: key,
		sem:     make(chan struct{}, o.MaxConcurrent),
		subs:    map[types.NamespacedName]*subscription{},
		groups:  map[groupID]*group{},
	}
}

// Start runs the listings until ctx ends, then waits for those under way
// to stop, and returns nil. It is a controller-runtime manager.Runnable.
func (p *Poller) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.ctx != nil {
		p.mu.Unlock()
		return errors.New("gitpoll: Start called twice")
	}
	p.ctx = ctx
	for _, g := range p.groups {
		p.startGroup(g)
	}
	p.mu.Unlock()
	<-ctx.Done()
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// NeedLeaderElection is true: only the leading manager polls.
func (p *Poller) NeedLeaderElection() bool { return true }

// Subscribe follows src for key, polling at interval (raised to
// Options.MinInterval). Calling it again with the same source and interval
// changes nothing, so the controller may call it on every reconcile; with
// another source (a new revision, new credentials) or interval it moves the
// subscription. It returns ErrCommit, and subscribes nothing, for a
// revision that is a full commit SHA, and an error for a URL it cannot list
// or unusable credentials (an ssh URL without known_hosts, a private key
// that does not parse); those name no credential. After an error, key is
// not subscribed.
//
// When the last listing of the same URL and credentials covered the
// revision, Latest has its status at once; otherwise a listing follows
// soon, and Notify tells when it did.
func (p *Poller) Subscribe(key types.NamespacedName, src Source, interval time.Duration) error {
	if IsCommit(src.Revision) {
		p.Unsubscribe(key)
		return ErrCommit
	}
	ep, err := parseURL(src.URL)
	if err != nil {
		p.Unsubscribe(key)
		return err
	}
	id := p.groupID(ep, src.Credentials)
	interval = max(interval, p.opts.MinInterval)

	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Clock.Now()
	s := p.subs[key]
	if s != nil && s.group.id == id {
		if s.revision == src.Revision && s.interval == interval {
			return nil
		}
		if s.revision != src.Revision {
			*s = subscription{key: key, revision: src.Revision, group: s.group}
			p.resolveOrScheduleLocked(s, now)
		}
		s.interval = interval
		p.updateIntervalLocked(s.group, now)
		return nil
	}
	if s != nil {
		p.removeLocked(s)
		delete(p.subs, key)
	}
	g := p.groups[id]
	if g == nil {
		creds, err := newGroupCreds(ep, src.Credentials)
		if err != nil {
			return err
		}
		g = &group{id: id, ep: ep, creds: creds, subs: map[types.NamespacedName]*subscription{},
			wake: make(chan struct{}, 1), done: make(chan struct{})}
		p.groups[id] = g
		if p.ctx != nil && !p.stopped {
			p.startGroup(g)
		}
	}
	s = &subscription{key: key, revision: src.Revision, interval: interval, group: g}
	p.subs[key] = s
	g.subs[key] = s
	p.resolveOrScheduleLocked(s, now)
	p.updateIntervalLocked(g, now)
	return nil
}

// resolveOrScheduleLocked gives s, new or with a new revision, its status
// from its group's last listing when that covered the revision, or else
// asks for a listing: at once for a new repository, else as Refresh does.
func (p *Poller) resolveOrScheduleLocked(s *subscription, now time.Time) {
	if g := s.group; g.covers(s.revision) {
		s.apply(g.resolveFor(s.revision), g.lastStarted, g.last)
	} else {
		p.scheduleLocked(g, p.refreshTime(g, now))
	}
}

// Unsubscribe stops following key. The listing of its repository stops
// with its last subscription.
func (p *Poller) Unsubscribe(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.subs[key]; s != nil {
		p.removeLocked(s)
		delete(p.subs, key)
	}
}

// Latest is the status of key's revision, and whether key is subscribed.
func (p *Poller) Latest(key types.NamespacedName) (Status, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.subs[key]
	if s == nil {
		return Status{}, false
	}
	return s.status, true
}

// Refresh lists key's repository now (a webhook said it changed), or as
// soon as Options.RefreshInterval has passed since the last listing of it:
// many calls in that time make one listing. It reports whether key is
// subscribed.
func (p *Poller) Refresh(key types.NamespacedName) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.subs[key]
	if s == nil {
		return false
	}
	p.scheduleLocked(s.group, p.refreshTime(s.group, p.opts.Clock.Now()))
	return true
}

// groupID is ep's URL with an HMAC of creds (length-prefixed fields, so no
// two sets of credentials give the same input).
func (p *Poller) groupID(ep endpoint, c Credentials) groupID {
	mac := hmac.New(sha256.New, p.credKey)
	for _, f := range [][]byte{[]byte(c.Username), []byte(c.Password), c.SSHPrivateKey, c.KnownHosts} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		mac.Write(n[:])
		mac.Write(f)
	}
	return groupID(ep.url + " " + hex.EncodeToString(mac.Sum(nil)[:16]))
}

// newGroupCreds prepares c for listings of ep: an ssh URL needs known_hosts
// (no host key is trusted on first use, as in the executor) and a key that
// parses; an http(s) URL uses the user name and password only.
func newGroupCreds(ep endpoint, c Credentials) (*groupCreds, error) {
	if !ep.ssh {
		return &groupCreds{username: c.Username, password: c.Password}, nil
	}
	if len(c.KnownHosts) == 0 {
		return nil, fmt.Errorf("the ssh repository %s needs the server's host key: add known_hosts to the Secret", redactURL(ep.url))
	}
	db, err := knownHostsDB(c.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("reading known_hosts: %w", err)
	}
	gc := &groupCreds{hostKeys: db}
	if len(c.SSHPrivateKey) > 0 {
		if gc.signer, err = ssh.ParsePrivateKey(c.SSHPrivateKey); err != nil {
			// The parser's message never quotes the key.
			return nil, fmt.Errorf("parsing the SSH private key: %w", err)
		}
	}
	return gc, nil
}

// startGroup runs g's loop under Start's context. p.mu is held.
func (p *Poller) startGroup(g *group) {
	p.wg.Add(1)
	go p.loop(p.ctx, g)
}

// removeLocked takes s out of its group, and the group away with its last
// subscription.
func (p *Poller) removeLocked(s *subscription) {
	g := s.group
	delete(g.subs, s.key)
	if len(g.subs) == 0 {
		delete(p.groups, g.id)
		close(g.done)
		return
	}
	p.updateIntervalLocked(g, p.opts.Clock.Now())
}

// effectiveInterval is how often s needs a listing; 0 for never.
func (p *Poller) effectiveInterval(s *subscription) time.Duration {
	switch {
	case s.pinned:
		return 0
	case s.tag:
		return max(s.interval, p.opts.TagInterval)
	}
	return s.interval
}

// updateIntervalLocked recomputes g's interval; a shorter one brings the
// next listing forward.
func (p *Poller) updateIntervalLocked(g *group, now time.Time) {
	var iv time.Duration
	for _, s := range g.subs {
		if e := p.effectiveInterval(s); e > 0 && (iv == 0 || e < iv) {
			iv = e
		}
	}
	if iv == g.interval {
		return
	}
	g.interval = iv
	if iv > 0 && !g.last.IsZero() {
		p.scheduleLocked(g, g.last.Add(jitter(failureBackoff(iv, g.failures))))
	}
}

// maxFailureBackoff bounds how far failed listings push a repository's next one.
const maxFailureBackoff = time.Hour

// failureBackoff is the interval of a repository whose last n listings failed: doubled for
// each failure, up to maxFailureBackoff (never shorter than the interval itself). A repository
// that stalls every listing until its timeout then takes one of the listing slots rarely, not
// every interval, so it cannot hold back the other repositories' listings (Refresh still
// lists it at once).
func failureBackoff(interval time.Duration, n int) time.Duration {
	d := interval
	for range min(n, 16) {
		if d >= maxFailureBackoff {
			return max(interval, maxFailureBackoff)
		}
		d *= 2
	}
	return max(interval, min(d, maxFailureBackoff))
}

// refreshTime is when a listing asked for now may run: now, unless g was
// listed less than RefreshInterval ago.
func (p *Poller) refreshTime(g *group, now time.Time) time.Time {
	if g.last.IsZero() {
		return now
	}
	return maxTime(now, g.last.Add(p.opts.RefreshInterval))
}

// scheduleLocked brings g's next listing forward to at, if it is sooner.
func (p *Poller) scheduleLocked(g *group, at time.Time) {
	if !g.next.IsZero() && !at.Before(g.next) {
		return
	}
	g.next = at
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// jitter is d ±10%, so that listings of many repositories spread out.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*mrand.Float64()))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// loop lists g whenever it is due, until g is gone or ctx ends.
func (p *Poller) loop(ctx context.Context, g *group) {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		next := g.next
		p.mu.Unlock()
		var due <-chan time.Time
		var timer clock.Timer
		if !next.IsZero() {
			timer = p.opts.Clock.NewTimer(next.Sub(p.opts.Clock.Now()))
			due = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-g.done:
		case <-g.wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil || isDone(g) {
			return
		}
		p.mu.Lock()
		ready := !g.next.IsZero() && !p.opts.Clock.Now().Before(g.next)
		p.mu.Unlock()
		if ready {
			p.list(ctx, g)
		}
	}
}

func isDone(g *group) bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// list runs one listing of g and gives each subscription its result,
// notifying those whose status changed.
func (p *Poller) list(ctx context.Context, g *group) {
	p.mu.Lock()
	wanted := map[string]bool{}
	for _, s := range g.subs {
		for _, c := range candidates(s.revision) {
			wanted[c] = true
		}
	}
	// Until this listing ends, the next is due only if asked again.
	g.next = time.Time{}
	p.mu.Unlock()

	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	started := p.opts.Clock.Now()
	lctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	l, err := p.lister.list(lctx, g.ep, g.creds, wanted)
	cancel()
	<-p.sem
	if ctx.Err() != nil {
		return // shutting down: the result may be the cancellation's
	}

	now := p.opts.Clock.Now()
	var changed []types.NamespacedName
	p.mu.Lock()
	prevFailures := g.failures
	g.last, g.lastStarted, g.lastWanted, g.lastListing, g.lastErr = now, started, wanted, l, nil
	g.failures = 0
	if err != nil {
		g.lastErr, g.lastListing = err, nil
		g.failures = prevFailures + 1
	}
	for _, s := range g.subs {
		if !g.covers(s.revision) {
			// Subscribed while the listing ran: another for it.
			p.scheduleLocked(g, p.refreshTime(g, now))
			continue
		}
		if s.apply(g.resolveFor(s.revision), started, now) {
			changed = append(changed, s.key)
		}
	}
	// Recomputed with what this listing said of tags and pinned
	// revisions; the next listing is due an interval from now.
	g.interval = -1
	p.updateIntervalLocked(g, now)
	p.mu.Unlock()

	if p.opts.Notify != nil && !isDone(g) {
		for _, k := range changed {
			p.opts.Notify(k)
		}
	}
}

// covers reports whether g's last listing was asked for revision.
func (g *group) covers(revision string) bool {
	if g.lastWanted == nil {
		return false
	}
	for _, c := range candidates(revision) {
		if !g.lastWanted[c] {
			return false
		}
	}
	return true
}

// resolveFor is what g's last listing says of revision.
func (g *group) resolveFor(revision string) resolution {
	if g.lastErr != nil {
		return resolution{err: g.lastErr}
	}
	return resolve(revision, g.lastListing)
}

// apply records r as s's status, and reports whether it changed what the
// controller sees: the commit, the error or whether it is pinned (or it is
// the first result).
func (s *subscription) apply(r resolution, started, ended time.Time) bool {
	old := s.status
	st := Status{Commit: r.commit, Ref: r.ref, Pinned: r.pinned, StartedAt: started, CheckedAt: ended, Err: r.err}
	if r.err != nil {
		// A failure keeps what the last success said.
		st.Commit, st.Ref = old.Commit, old.Ref
	} else {
		s.tag, s.pinned = r.tag, r.pinned
	}
	first := !s.resolved
	s.resolved = true
	s.status = st
	return first || old.Commit != st.Commit || old.Pinned != st.Pinned || errText(old.Err) != errText(st.Err)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
