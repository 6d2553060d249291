package gitpoll_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/controllers/gitpoll"
	"github.com/slipway-dev/slipway/test/gitserver"
)

// TestPoller_load is the measurement issue 14 asks for: 200 ImageBuilds
// following the same repository with the same credentials make one
// listing per interval, not 200. It prints the count
// (go test ./controllers/gitpoll -run TestPoller_load -v).
func TestPoller_load(t *testing.T) {
	const (
		subscribers = 200
		interval    = 200 * time.Millisecond
		intervals   = 10
	)
	root := t.TempDir()
	r := newRepo(t, root)
	spy := &gitserver.Spy{}
	srv := gitserver.StartHTTP(t, root, gitserver.WithBasicAuth("ci", "load-passw0rd"), gitserver.WithSpy(spy))
	p := startPoller(t, nil, gitpoll.Options{})
	src := gitpoll.Source{URL: srv.URL + "/" + r.path, Revision: "main", Credentials: gitpoll.Credentials{Username: "ci", Password: "load-passw0rd"}}
	start := time.Now()
	for i := range subscribers {
		if err := p.Subscribe(key(fmt.Sprint("ib-", i)), src, interval); err != nil {
			t.Fatal(err)
		}
	}
	head := r.head(t)
	for i := range subscribers {
		waitStatus(t, p, key(fmt.Sprint("ib-", i)), 10*time.Second, hasCommit(head))
	}
	time.Sleep(time.Until(start.Add(intervals * interval)))
	elapsed := time.Since(start)
	listings := spy.Requests()
	n := float64(elapsed) / float64(interval)
	fmt.Printf("gitpoll load: %d subscribers of one repository, interval %s: %d listings over %.1f intervals (%s), %.2f listings per interval; without sharing: %d\n",
		subscribers, interval, listings, n, elapsed.Round(time.Millisecond), float64(listings)/n, subscribers*(int(n)+1))
	if most := 1 + int(elapsed/(interval*9/10)) + 1; listings > most {
		t.Errorf("%d listings over %.1f intervals, want at most %d", listings, n, most)
	}
}
