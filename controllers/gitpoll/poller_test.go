package gitpoll_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/slipway-dev/slipway/controllers/gitpoll"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/gitserver"
)

// repo is a repository published under a root served by git http-backend.
type repo struct {
	work, bare string
	// path is the repository's path on the server ("org/app.git").
	path string
}

func newRepo(t *testing.T, root string) *repo {
	t.Helper()
	r := &repo{work: gitserver.NewWorkRepo(t), path: "org/app.git"}
	gitserver.WriteFiles(t, r.work, map[string]string{"Dockerfile": "FROM scratch\n"})
	gitserver.Commit(t, r.work, "first")
	r.bare = gitserver.Publish(t, r.work, root, r.path, false)
	return r
}

// commit makes a new commit on main and pushes it to the server.
func (r *repo) commit(t *testing.T, msg string) string {
	t.Helper()
	c := gitserver.Commit(t, r.work, msg)
	gitserver.Git(t, r.work, "push", "-q", r.bare, "main")
	return c
}

// head is the commit of main on the server.
func (r *repo) head(t *testing.T) string {
	return gitserver.Git(t, r.bare, "rev-parse", "refs/heads/main")
}

// notifications records the keys Notify was called with.
type notifications struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]int
	ch   chan types.NamespacedName
}

func newNotifications() *notifications {
	return &notifications{keys: map[types.NamespacedName]int{}, ch: make(chan types.NamespacedName, 10000)}
}

func (n *notifications) notify(k types.NamespacedName) {
	n.mu.Lock()
	n.keys[k]++
	n.mu.Unlock()
	n.ch <- k
}

func (n *notifications) count(k types.NamespacedName) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.keys[k]
}

// startPoller starts a Poller with short intervals for tests, stopped
// when the test ends.
func startPoller(t *testing.T, n *notifications, o gitpoll.Options) *gitpoll.Poller {
	t.Helper()
	if n != nil {
		o.Notify = n.notify
	}
	if o.MinInterval == 0 {
		o.MinInterval = 10 * time.Millisecond
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = 10 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	p := gitpoll.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Start did not return after its context ended")
		}
	})
	return p
}

func key(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }

// waitStatus waits until key's status satisfies ok.
func waitStatus(t *testing.T, p *gitpoll.Poller, k types.NamespacedName, timeout time.Duration, ok func(gitpoll.Status) bool) gitpoll.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, subscribed := p.Latest(k)
		if subscribed && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %+v (subscribed %v) did not come within %s", k, st, subscribed, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hasCommit(c string) func(gitpoll.Status) bool {
	return func(st gitpoll.Status) bool { return st.Commit == c && st.Err == nil }
}

func hasErr(st gitpoll.Status) bool { return st.Err != nil }

// TestPoller_branchMoves follows a branch of a real git http-backend: the
// first listing resolves it and notifies, a pushed commit is found by a
// later listing and notified, with the new commit in Latest.
func TestPoller_branchMoves(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	srv := gitserver.StartHTTP(t, root)
	n := newNotifications()
	p := startPoller(t, n, gitpoll.Options{})
	k := key("app")
	if err := p.Subscribe(k, gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: "main"}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	first := r.head(t)
	st := waitStatus(t, p, k, 10*time.Second, hasCommit(first))
	if st.Ref != "refs/heads/main" || st.CheckedAt.IsZero() {
		t.Errorf("status %+v: want ref refs/heads/main and a check time", st)
	}
	if got := <-n.ch; got != k {
		t.Fatalf("notified %v, want %v", got, k)
	}

	second := r.commit(t, "second")
	waitStatus(t, p, k, 10*time.Second, hasCommit(second))
	select {
	case got := <-n.ch:
		if got != k {
			t.Fatalf("notified %v, want %v", got, k)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for the new commit")
	}
	// Listings that find the same commit notify nothing.
	time.Sleep(300 * time.Millisecond)
	if c := n.count(k); c != 2 {
		t.Errorf("notified %d times, want 2 (first resolution, new commit)", c)
	}
}

// TestPoller_sharedListing subscribes 50 ImageBuilds to the same URL with
// the same credentials at various intervals: the server sees one listing
// per smallest interval, not one per ImageBuild.
func TestPoller_sharedListing(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("ci", "s3cret-pass"), gitserver.WithSpy(spy))
	n := newNotifications()
	p := startPoller(t, n, gitpoll.Options{})
	src := gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: "main", Credentials: gitpoll.Credentials{Username: "ci", Password: "s3cret-pass"}}
	const interval = 200 * time.Millisecond
	start := time.Now()
	for i := range 50 {
		// Every fifth at the smallest interval, the others longer.
		iv := interval * time.Duration(1+i%5)
		if err := p.Subscribe(key(fmt.Sprint("app-", i)), src, iv); err != nil {
			t.Fatal(err)
		}
	}
	head := r.head(t)
	for i := range 50 {
		waitStatus(t, p, key(fmt.Sprint("app-", i)), 10*time.Second, hasCommit(head))
	}
	time.Sleep(2 * time.Second)
	elapsed := time.Since(start)
	listings := spy.Requests()
	// The first listing at once, then one per interval (±10%).
	most := 1 + int(elapsed/(interval*9/10)) + 1
	t.Logf("50 subscribers, %s: %d listings (at most %d allowed)", elapsed.Round(time.Millisecond), listings, most)
	if listings > most || listings < 3 {
		t.Errorf("%d listings in %s at an interval of %s; want between 3 and %d", listings, elapsed, interval, most)
	}
	for i := range 50 {
		if c := n.count(key(fmt.Sprint("app-", i))); c != 1 {
			t.Errorf("app-%d notified %d times, want once (its first resolution)", i, c)
		}
	}
}

// TestPoller_credentialsNotShared: subscriptions with different
// credentials are listed separately, each with its own credentials; those
// with the same share.
func TestPoller_credentialsNotShared(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	p := startPoller(t, nil, gitpoll.Options{})
	url := srv.URL + "/" + r.path
	a := gitpoll.Credentials{Username: "alice", Password: "alice-password"}
	b := gitpoll.Credentials{Username: "bob", Password: "bob-password"}
	const interval = 200 * time.Millisecond
	for name, c := range map[string]gitpoll.Credentials{"a1": a, "a2": a, "b1": b, "anon": {}} {
		if err := p.Subscribe(key(name), gitpoll.Source{URL: url, Revision: "main", Credentials: c}, interval); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	byAuth := map[string]int{}
	for _, h := range spy.Authorizations() {
		byAuth[h]++
	}
	basic := func(u, pw string) string {
		req, _ := newBasic(u, pw)
		return req
	}
	na, nb, nanon := byAuth[basic("alice", "alice-password")], byAuth[basic("bob", "bob-password")], byAuth[""]
	t.Logf("listings by credentials: alice %d, bob %d, anonymous %d", na, nb, nanon)
	if len(byAuth) != 3 {
		t.Errorf("the server saw %d distinct Authorization headers, want 3: %v", len(byAuth), byAuth)
	}
	most := 1 + int(1500*time.Millisecond/(interval*9/10)) + 1
	for who, c := range map[string]int{"alice": na, "bob": nb, "anonymous": nanon} {
		if c < 2 || c > most {
			t.Errorf("%s's listings: %d, want 2 to %d (one per interval, a1 and a2 sharing)", who, c, most)
		}
	}
	head := r.head(t)
	for _, name := range []string{"a1", "a2", "b1", "anon"} {
		waitStatus(t, p, key(name), time.Second, hasCommit(head))
	}
}

// newBasic is the Authorization header of basic auth.
func newBasic(user, password string) (string, error) {
	req, err := newRequest()
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, password)
	return req.Header.Get("Authorization"), nil
}

// TestPoller_wrongCredentials: against a private repository, the
// subscription with the right credentials resolves the commit; one with
// wrong credentials, and one without, get an error of their own and never
// the commit, although the right credentials' listing had it.
func TestPoller_wrongCredentials(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	const password = "the-Right-passw0rd"
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("ci", password))
	n := newNotifications()
	p := startPoller(t, n, gitpoll.Options{})
	url := srv.URL + "/" + r.path
	subs := map[string]gitpoll.Credentials{
		"right": {Username: "ci", Password: password},
		"wrong": {Username: "ci", Password: "a-Wrong-passw0rd"},
		"none":  {},
	}
	for name, c := range subs {
		if err := p.Subscribe(key(name), gitpoll.Source{URL: url, Revision: "main", Credentials: c}, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	head := r.head(t)
	waitStatus(t, p, key("right"), 10*time.Second, hasCommit(head))
	wrong := waitStatus(t, p, key("wrong"), 10*time.Second, hasErr)
	none := waitStatus(t, p, key("none"), 10*time.Second, hasErr)
	// More listings of each, after the right one had the commit.
	time.Sleep(300 * time.Millisecond)
	for name, want := range map[string]string{"wrong": "the server refused the credentials (HTTP 401", "none": "the server requires credentials (HTTP 401"} {
		st, _ := p.Latest(key(name))
		if st.Commit != "" {
			t.Errorf("%s: learned commit %s through another's listing", name, st.Commit)
		}
		if st.Err == nil || !strings.Contains(st.Err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", name, st.Err, want)
		}
		var le *gitpoll.ListError
		if !errors.As(st.Err, &le) {
			t.Errorf("%s: error %T is not a *ListError", name, st.Err)
		}
	}
	for _, st := range []gitpoll.Status{wrong, none} {
		for _, secret := range []string{password, "a-Wrong-passw0rd"} {
			if strings.Contains(st.Err.Error(), secret) {
				t.Errorf("error %q shows a password", st.Err)
			}
		}
	}
	if st, _ := p.Latest(key("right")); st.Err != nil {
		t.Errorf("right: %v", st.Err)
	}
	// An error notifies once, not at every listing that repeats it.
	for _, name := range []string{"wrong", "none"} {
		if c := n.count(key(name)); c != 1 {
			t.Errorf("%s notified %d times, want once", name, c)
		}
	}
}

// TestPoller_unsubscribeStops: once its last subscription is gone, a
// repository is not listed again.
func TestPoller_unsubscribeStops(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	p := startPoller(t, nil, gitpoll.Options{})
	src := gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: "main"}
	for _, name := range []string{"a", "b"} {
		if err := p.Subscribe(key(name), src, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus(t, p, key("a"), 10*time.Second, hasCommit(r.head(t)))
	p.Unsubscribe(key("a"))
	time.Sleep(300 * time.Millisecond)
	if spy.Requests() < 3 {
		t.Fatalf("%d listings: b's subscription should keep the listing going", spy.Requests())
	}
	if _, ok := p.Latest(key("a")); ok {
		t.Error("Latest reports a as subscribed after Unsubscribe")
	}
	p.Unsubscribe(key("b"))
	time.Sleep(100 * time.Millisecond) // a listing under way ends
	before := spy.Requests()
	time.Sleep(500 * time.Millisecond)
	if after := spy.Requests(); after != before {
		t.Errorf("%d listings after the last Unsubscribe, want none", after-before)
	}
	if p.Refresh(key("b")) {
		t.Error("Refresh of an unsubscribed key reports it subscribed")
	}
}

// stalledListener accepts connections and never answers.
func stalledListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestPoller_stalledServerTimesOut: a server that accepts the connection
// and never answers (HTTP, or the SSH handshake) ends the listing at the
// timeout, with an error that says so.
func TestPoller_stalledServerTimesOut(t *testing.T) {
	addr := stalledListener(t)
	const timeout = 300 * time.Millisecond
	p := startPoller(t, nil, gitpoll.Options{Timeout: timeout})
	kh := []byte("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxHUsmD9mPYjQJqu0qN+6pT0f1qKGKd9zpGJvJH1e5D\n")
	for name, src := range map[string]gitpoll.Source{
		"http": {URL: "http://" + addr + "/org/app.git", Revision: "main"},
		"ssh":  {URL: "ssh://git@" + addr + "/org/app.git", Revision: "main", Credentials: gitpoll.Credentials{KnownHosts: kh}},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			if err := p.Subscribe(key(name), src, time.Hour); err != nil {
				t.Fatal(err)
			}
			st := waitStatus(t, p, key(name), 5*time.Second, hasErr)
			elapsed := time.Since(start)
			var le *gitpoll.ListError
			if !errors.As(st.Err, &le) || !le.Timeout {
				t.Fatalf("error %v: want a *ListError with Timeout", st.Err)
			}
			if !strings.Contains(st.Err.Error(), "no answer within 300ms") {
				t.Errorf("error %q does not say it timed out", st.Err)
			}
			if elapsed > timeout+time.Second {
				t.Errorf("the listing took %s, beyond the timeout of %s", elapsed, timeout)
			}
		})
	}
}

// TestPoller_commitNotPolled: a full commit SHA is refused by Subscribe
// and never listed.
func TestPoller_commitNotPolled(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	p := startPoller(t, nil, gitpoll.Options{})
	err := p.Subscribe(key("pinned"), gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: r.head(t)}, 10*time.Millisecond)
	if !errors.Is(err, gitpoll.ErrCommit) {
		t.Fatalf("Subscribe with a commit SHA: %v, want ErrCommit", err)
	}
	time.Sleep(200 * time.Millisecond)
	if spy.Requests() != 0 {
		t.Errorf("%d listings of a commit SHA, want none", spy.Requests())
	}
	if _, ok := p.Latest(key("pinned")); ok {
		t.Error("a commit SHA is subscribed")
	}
	if !gitpoll.IsCommit(r.head(t)) || gitpoll.IsCommit("main") || gitpoll.IsCommit("abc1234") {
		t.Error("IsCommit is wrong")
	}
}

// TestPoller_abbreviatedCommit: a hexadecimal revision that no ref names
// is a commit to the executor: pinned, and not listed again; one that a
// ref names is that ref.
func TestPoller_abbreviatedCommit(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	gitserver.Git(t, r.work, "branch", "cafe")
	r.bare = gitserver.Publish(t, r.work, root, r.path, false)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	p := startPoller(t, nil, gitpoll.Options{})
	url := srv.URL + "/" + r.path
	short := r.head(t)[:7]
	if err := p.Subscribe(key("short"), gitpoll.Source{URL: url, Revision: short}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, p, key("short"), 10*time.Second, func(st gitpoll.Status) bool { return st.Pinned })
	if st.Commit != "" || st.Err != nil {
		t.Errorf("pinned status %+v: want no commit and no error", st)
	}
	time.Sleep(300 * time.Millisecond)
	if n := spy.Requests(); n != 1 {
		t.Errorf("%d listings of a pinned revision, want 1", n)
	}
	if err := p.Subscribe(key("cafe"), gitpoll.Source{URL: url, Revision: "cafe"}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, p, key("cafe"), 10*time.Second, hasCommit(r.head(t)))
	if st.Ref != "refs/heads/cafe" || st.Pinned {
		t.Errorf("status %+v: want the branch cafe", st)
	}
}

// TestPoller_tagListedDaily: a revision that resolves to a tag is listed
// once, then at the tag interval (a day), not at its own; Refresh lists it
// at once.
func TestPoller_tagListedDaily(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	gitserver.Git(t, r.work, "tag", "-a", "-m", "release", "v1")
	r.bare = gitserver.Publish(t, r.work, root, r.path, false)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	n := newNotifications()
	p := startPoller(t, n, gitpoll.Options{})
	k := key("tag")
	if err := p.Subscribe(k, gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: "v1"}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, p, k, 10*time.Second, hasCommit(r.head(t)))
	if st.Ref != "refs/tags/v1" {
		t.Errorf("ref %q, want refs/tags/v1", st.Ref)
	}
	time.Sleep(400 * time.Millisecond)
	if got := spy.Requests(); got != 1 {
		t.Errorf("%d listings of a tag in 400ms at an interval of 50ms, want 1 (tags at the tag interval)", got)
	}
	// The tag is moved by force; a webhook's Refresh finds it.
	moved := r.commit(t, "moved")
	gitserver.Git(t, r.work, "tag", "-f", "-a", "-m", "release again", "v1")
	gitserver.Git(t, r.work, "push", "-q", "-f", r.bare, "refs/tags/v1")
	if !p.Refresh(k) {
		t.Fatal("Refresh: not subscribed")
	}
	waitStatus(t, p, k, 10*time.Second, hasCommit(moved))
	if got := spy.Requests(); got != 2 {
		t.Errorf("%d listings, want 2", got)
	}
}

// TestPoller_refreshRateLimited: many Refresh calls in a short time make
// one listing, RefreshInterval after the last.
func TestPoller_refreshRateLimited(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	const refresh = time.Second
	p := startPoller(t, nil, gitpoll.Options{RefreshInterval: refresh})
	k := key("hooked")
	if err := p.Subscribe(k, gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: "main"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, k, 10*time.Second, hasCommit(r.head(t)))
	listed := time.Now()
	for range 20 {
		if !p.Refresh(k) {
			t.Fatal("Refresh: not subscribed")
		}
	}
	time.Sleep(refresh / 2)
	if got := spy.Requests(); got != 1 {
		t.Errorf("%d listings %s after 20 Refresh calls, want 1 (the next waits for the refresh interval)", got, refresh/2)
	}
	for spy.Requests() < 2 {
		if time.Since(listed) > 5*time.Second {
			t.Fatal("the refresh did not list")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(listed); d < refresh*8/10 {
		t.Errorf("the refresh listed %s after the last listing, want about %s", d, refresh)
	}
	time.Sleep(refresh * 3 / 2)
	if got := spy.Requests(); got != 2 {
		t.Errorf("%d listings after 20 Refresh calls, want 2", got)
	}
}

// TestPoller_errorComesAndGoes: a server that stops answering gives each
// subscription an error (notified, the commit kept), and its return clears
// it (notified again).
func TestPoller_errorComesAndGoes(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithSpy(spy))
	n := newNotifications()
	p := startPoller(t, n, gitpoll.Options{})
	k := key("app")
	url := srv.URL + "/" + r.path
	if err := p.Subscribe(k, gitpoll.Source{URL: url, Revision: "main"}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	head := r.head(t)
	waitStatus(t, p, k, 10*time.Second, hasCommit(head))
	// The repository goes away: 404.
	moved := filepath.Join(root, "org", "gone.git")
	if err := exec.Command("mv", r.bare, moved).Run(); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, p, k, 10*time.Second, hasErr)
	if st.Commit != head || !strings.Contains(st.Err.Error(), "repository not found") {
		t.Errorf("status %+v: want the last commit kept and a repository-not-found error", st)
	}
	if err := exec.Command("mv", moved, r.bare).Run(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, k, 10*time.Second, hasCommit(head))
	if c := n.count(k); c != 3 {
		t.Errorf("notified %d times, want 3 (resolved, error, error cleared)", c)
	}
}

// TestPoller_unknownRevision: a revision the repository does not have is
// an error of that subscription only, in the executor's words.
func TestPoller_unknownRevision(t *testing.T) {
	root := t.TempDir()
	r := newRepo(t, root)
	srv := gitserver.StartHTTP(t, root)
	p := startPoller(t, nil, gitpoll.Options{})
	url := srv.URL + "/" + r.path
	for name, rev := range map[string]string{"good": "main", "bad": "no-such-branch"} {
		if err := p.Subscribe(key(name), gitpoll.Source{URL: url, Revision: rev}, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	st := waitStatus(t, p, key("bad"), 10*time.Second, hasErr)
	if want := "repository does not contain ref no-such-branch"; !strings.Contains(st.Err.Error(), want) {
		t.Errorf("error %q, want one containing %q", st.Err, want)
	}
	waitStatus(t, p, key("good"), time.Second, hasCommit(r.head(t)))
}

// TestPoller_agreesWithExecutor resolves revisions of every form with the
// poller and with the executor's own fetch (source.FetchGit, as the
// executor pod runs it for URL#revision): both name the same commit.
func TestPoller_agreesWithExecutor(t *testing.T) {
	root := t.TempDir()
	w := gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, w, map[string]string{"f": "1"})
	c1 := gitserver.Commit(t, w, "one")
	gitserver.Git(t, w, "tag", "-a", "-m", "annotated", "v1")
	gitserver.Git(t, w, "tag", "light")
	gitserver.Git(t, w, "branch", "both")
	c2 := gitserver.Commit(t, w, "two")
	gitserver.Git(t, w, "tag", "both") // a tag and a branch of one name
	gitserver.Git(t, w, "branch", "feature/x")
	c3 := gitserver.Commit(t, w, "three")
	gitserver.Git(t, w, "update-ref", "refs/pull/1/head", c2)
	_ = c1
	_ = c3
	gitserver.Publish(t, w, root, "org/app.git", false)
	srv := gitserver.StartHTTP(t, root)
	url := srv.URL + "/org/app.git"
	p := startPoller(t, nil, gitpoll.Options{})
	for _, rev := range []string{"", "main", "refs/heads/main", "HEAD", "v1", "refs/tags/v1", "tags/v1", "light", "both", "heads/both", "feature/x", "refs/pull/1/head", "pull/1/head"} {
		t.Run("rev="+rev, func(t *testing.T) {
			k := key("rev-" + strings.ReplaceAll(rev, "/", "-"))
			if err := p.Subscribe(k, gitpoll.Source{URL: url, Revision: rev}, time.Hour); err != nil {
				t.Fatal(err)
			}
			st := waitStatus(t, p, k, 10*time.Second, func(st gitpoll.Status) bool { return st.Commit != "" || st.Err != nil })
			if st.Err != nil {
				t.Fatalf("poller: %v", st.Err)
			}
			dir := t.TempDir()
			want, err := source.FetchGit(context.Background(), source.GitSource{URL: url, Ref: rev}, filepath.Join(dir, "ctx"), filepath.Join(dir, "git"))
			if err != nil {
				t.Fatalf("executor: %v", err)
			}
			if st.Commit != want {
				t.Errorf("poller resolved %q to %s (%s), the executor to %s", rev, st.Commit, st.Ref, want)
			}
		})
	}
}

// TestPoller_ssh lists over SSH with a key and known_hosts (Debian's
// sshd); refuses an ssh URL without known_hosts; reports a host key that
// does not match and a key the server refuses.
func TestPoller_ssh(t *testing.T) {
	s := gitserver.StartSSH(t)
	root := t.TempDir()
	r := newRepo(t, root)
	url := s.URL(r.bare)
	p := startPoller(t, nil, gitpoll.Options{})

	good := gitpoll.Credentials{SSHPrivateKey: s.ClientKey, KnownHosts: s.KnownHosts}
	if err := p.Subscribe(key("ssh"), gitpoll.Source{URL: url, Revision: "main", Credentials: good}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, key("ssh"), 15*time.Second, hasCommit(r.head(t)))
	next := r.commit(t, "over ssh")
	waitStatus(t, p, key("ssh"), 15*time.Second, hasCommit(next))

	err := p.Subscribe(key("no-known-hosts"), gitpoll.Source{URL: url, Revision: "main", Credentials: gitpoll.Credentials{SSHPrivateKey: s.ClientKey}}, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Errorf("Subscribe without known_hosts: %v, want an error naming known_hosts", err)
	}

	other := gitpoll.Credentials{SSHPrivateKey: s.ClientKey, KnownHosts: s.OtherKnownHosts}
	if err := p.Subscribe(key("other-host"), gitpoll.Source{URL: url, Revision: "main", Credentials: other}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, p, key("other-host"), 15*time.Second, hasErr)
	if !strings.Contains(st.Err.Error(), "host key does not match") || st.Commit != "" {
		t.Errorf("status %+v: want a host key mismatch and no commit", st)
	}

	stranger := generateKey(t)
	if err := p.Subscribe(key("stranger"), gitpoll.Source{URL: url, Revision: "main", Credentials: gitpoll.Credentials{SSHPrivateKey: stranger, KnownHosts: s.KnownHosts}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, p, key("stranger"), 15*time.Second, hasErr)
	if !strings.Contains(st.Err.Error(), "refused the SSH key") || st.Commit != "" {
		t.Errorf("status %+v: want the key refused and no commit", st)
	}

	if err := p.Subscribe(key("missing"), gitpoll.Source{URL: s.URL(filepath.Join(root, "org", "nope.git")), Revision: "main", Credentials: good}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, p, key("missing"), 15*time.Second, hasErr)
	if !strings.Contains(st.Err.Error(), "does not appear to be a git repository") {
		t.Errorf("missing repository over ssh: %v, want the server's words", st.Err)
	}
}

// generateKey makes a new ed25519 private key in OpenSSH PEM form.
func generateKey(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "k")).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return readFile(t, filepath.Join(dir, "k"))
}

// TestPoller_badSources: what cannot be listed is refused by Subscribe,
// naming no credential.
func TestPoller_badSources(t *testing.T) {
	p := gitpoll.New(gitpoll.Options{})
	for _, tc := range []struct {
		src  gitpoll.Source
		want string
	}{
		{gitpoll.Source{URL: "https://user:hunter2-secret@example.com/x.git"}, "carries credentials"},
		{gitpoll.Source{URL: "file:///srv/x.git"}, "neither"},
		{gitpoll.Source{URL: "ssh://git@example.com/x.git", Credentials: gitpoll.Credentials{SSHPrivateKey: []byte("not a key hunter2-secret"), KnownHosts: []byte("example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxHUsmD9mPYjQJqu0qN+6pT0f1qKGKd9zpGJvJH1e5D\n")}}, "parsing the SSH private key"},
		{gitpoll.Source{URL: "git@example.com:org/x.git"}, "known_hosts"},
	} {
		err := p.Subscribe(key("x"), tc.src, time.Minute)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Subscribe(%s): %v, want an error containing %q", tc.src.URL, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q shows a credential", err)
		}
		if _, ok := p.Latest(key("x")); ok {
			t.Errorf("Subscribe(%s) failed but subscribed", tc.src.URL)
		}
	}
}

func newRequest() (*http.Request, error) { return http.NewRequest(http.MethodGet, "http://x/", nil) }

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
