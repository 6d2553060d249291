package gitpoll_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/controllers/gitpoll"
)

// A git server that redirects a listing with credentials to another host or port does not get
// them sent there: the listing fails, naming why, and the other server sees no Authorization
// header (security review of issue 14).
func TestPoller_redirectElsewhereKeepsTheCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer elsewhere.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path+"?"+r.URL.RawQuery, http.StatusFound)
	}))
	defer origin.Close()

	p := startPoller(t, nil, gitpoll.Options{})
	k := key("redirected")
	src := gitpoll.Source{URL: origin.URL + "/org/app.git", Revision: "main",
		Credentials: gitpoll.Credentials{Username: "ci", Password: "redirect-s3cret"}}
	if err := p.Subscribe(k, src, time.Minute); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, p, k, 10*time.Second, hasErr)
	if !strings.Contains(st.Err.Error(), "redirected to another scheme, host or port") || strings.Contains(st.Err.Error(), "redirect-s3cret") {
		t.Errorf("error %q: want the refused redirect named, and no password", st.Err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range seen {
		if a != "" {
			t.Errorf("the server redirected to got Authorization %q", a)
		}
	}
}
