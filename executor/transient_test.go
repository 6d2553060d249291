package main

import (
	"net"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/executor/result"
	"github.com/slipway-dev/slipway/test/gitserver"
)

// The result says whether a source fetch failed for a reason that may pass (the git server
// could not be reached): the controller retries only those, and only when asked
// (spec.retry.sourceFetch). A repository the server does not have is no such reason.
func TestExecute_sourceFetchTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/org/app.git#main"
	ln.Close()
	srv := gitserver.StartHTTP(t, t.TempDir())

	for _, tc := range []struct {
		name, context, message string
		transient              bool
	}{
		{"unreachable", closed, "the host is unreachable", true},
		{"no such repository", srv.URL + "/org/nope.git#main", "repository not found", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runExecutor(t, "--context="+tc.context, "--no-push")
			f := r.res.Failure
			if r.exit == 0 || f == nil || f.Reason != result.ReasonSourceFetchFailed {
				t.Fatalf("exit %d, result %s; want SourceFetchFailed", r.exit, r.resRaw)
			}
			if f.Transient != tc.transient || !strings.Contains(f.Message, tc.message) {
				t.Errorf("failure %+v: want transient=%v and a message saying %q", f, tc.transient, tc.message)
			}
		})
	}
}
