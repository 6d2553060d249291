package faultproxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/slipway-dev/slipway/test/testenv"
)

// setup starts a registry holding busybox and returns it, the digest of
// busybox's layer and its compressed bytes.
func setup(t *testing.T) (*testenv.Registry, string, []byte) {
	t.Helper()
	reg := testenv.StartRegistry(t)
	testenv.PushBusybox(t, reg)
	img, err := testenv.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return reg, d.String(), b
}

func get(c *http.Client, url string, header http.Header) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// Without rules the proxy is transparent: ggcr pulls and validates the
// image through it, and every request is recorded with its real status.
func TestProxy_forwards(t *testing.T) {
	reg, _, _ := setup(t)
	p := Start(t, reg.Host())
	ref, err := name.ParseReference(p.Ref("library/busybox:latest"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validating busybox through the proxy: %v\n%s", err, p.Log())
	}
	if n := p.Count(http.MethodGet, regexp.MustCompile(`^/v2/library/busybox/blobs/sha256:`)); n < 2 {
		t.Errorf("%d blob GETs recorded, want the config's and the layer's at least; requests:\n%s", n, p.Log())
	}
	for _, r := range p.Requests() {
		if r.Fault != 0 || (r.Status != 200 && r.Status != 401) {
			t.Errorf("request %s: want a forwarded 200", r)
		}
	}
}

// A Status rule answers the Nth to (Nth+Times-1)th matching requests with
// its status and Retry-After, and forwards the others.
func TestProxy_statusNthTimes(t *testing.T) {
	reg, _, _ := setup(t)
	p := Start(t, reg.Host(), Rule{
		Method: http.MethodGet, Path: regexp.MustCompile(`^/v2/$`),
		Nth: 2, Times: 2, Fault: Status, Status: http.StatusTooManyRequests, RetryAfter: "1",
	})
	var got []string
	for range 5 {
		code, h, _, err := get(http.DefaultClient, "http://"+p.Host()+"/v2/", nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%s", code, h.Get("Retry-After")))
	}
	want := "200/ 429/1 429/1 200/ 200/"
	if strings.Join(got, " ") != want {
		t.Errorf("statuses/Retry-After %q, want %q", strings.Join(got, " "), want)
	}
	if n := p.Count(http.MethodGet, nil); n != 5 {
		t.Errorf("%d requests recorded, want 5", n)
	}
}

// Reset, a bounded Stall and a Stall the client gives up on end in an
// error on the client's side, and are recorded without a status.
func TestProxy_resetAndStall(t *testing.T) {
	reg, _, _ := setup(t)
	for _, tc := range []struct {
		name   string
		rule   Rule
		client time.Duration
	}{
		{"reset", Rule{Fault: Reset}, 5 * time.Second},
		{"stall until the client gives up", Rule{Fault: Stall}, 300 * time.Millisecond},
		{"stall for a while", Rule{Fault: Stall, StallFor: 300 * time.Millisecond}, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Start(t, reg.Host(), tc.rule)
			c := &http.Client{Timeout: tc.client, Transport: &http.Transport{DisableKeepAlives: true}}
			start := time.Now()
			_, _, _, err := get(c, "http://"+p.Host()+"/v2/", nil)
			if err == nil {
				t.Fatal("the request succeeded")
			}
			if d := time.Since(start); d < 200*time.Millisecond && tc.rule.Fault == Stall {
				t.Errorf("a stall ended after %s", d)
			}
			// The proxy records a stall once it sees the client go.
			var reqs []Request
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if reqs = p.Requests(); len(reqs) > 0 {
					break
				}
			}
			if len(reqs) != 1 || reqs[0].Status != 0 || reqs[0].Fault != tc.rule.Fault {
				t.Errorf("recorded %v, want one request with status 0 and fault %s", reqs, tc.rule.Fault)
			}
		})
	}
}

// Truncate sends half the blob under the full Content-Length; Corrupt
// sends other bytes of the same length, which do not hash to the digest.
func TestProxy_truncateAndCorrupt(t *testing.T) {
	reg, digest, blob := setup(t)
	path := "/v2/library/busybox/blobs/" + digest
	p := Start(t, reg.Host(),
		Rule{Method: http.MethodGet, Path: regexp.MustCompile(regexp.QuoteMeta(path)), Nth: 1, Times: 1, Fault: Truncate},
		Rule{Method: http.MethodGet, Path: regexp.MustCompile(regexp.QuoteMeta(path)), Nth: 2, Times: 1, Fault: Corrupt},
	)
	url := "http://" + p.Host() + path
	code, h, body, err := get(http.DefaultClient, url, nil)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: err %v, want an unexpected EOF", err)
	}
	if code != 200 || h.Get("Content-Length") != fmt.Sprint(len(blob)) || len(body) >= len(blob) || !bytes.Equal(body, blob[:len(body)]) {
		t.Errorf("truncated: status %d, Content-Length %s, %d of %d bytes; want 200, the full length and a prefix",
			code, h.Get("Content-Length"), len(body), len(blob))
	}
	// The first rule is used up: the second request gets the second's fault.
	code, _, body, err = get(http.DefaultClient, url, nil)
	if err != nil || code != 200 || len(body) != len(blob) {
		t.Fatalf("corrupt: status %d, %d of %d bytes, err %v", code, len(body), len(blob), err)
	}
	sum := sha256.Sum256(body)
	if "sha256:"+hex.EncodeToString(sum[:]) == digest {
		t.Errorf("the corrupted blob still hashes to its digest")
	}
	// Then the blob is forwarded intact.
	_, _, body, err = get(http.DefaultClient, url, nil)
	if err != nil || !bytes.Equal(body, blob) {
		t.Errorf("third GET: err %v, intact %v", err, bytes.Equal(body, blob))
	}
	got := []Fault{}
	for _, r := range p.Requests() {
		got = append(got, r.Fault)
	}
	if fmt.Sprint(got) != fmt.Sprint([]Fault{Truncate, Corrupt, 0}) {
		t.Errorf("recorded faults %v", got)
	}
}

// DropUpload resets the connection of a PATCH in the middle of its body;
// the registry never sees the upload finish, and a retry then succeeds.
func TestProxy_dropUpload(t *testing.T) {
	reg, _, _ := setup(t)
	p := Start(t, reg.Host(), Rule{Method: http.MethodPatch, Nth: 1, Times: 1, Fault: DropUpload})
	start := func() string {
		resp, err := http.Post("http://"+p.Host()+"/v2/app/up/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("starting an upload: %s", resp.Status)
		}
		loc := resp.Header.Get("Location")
		if !strings.Contains(loc, p.Host()) && !strings.HasPrefix(loc, "/") {
			t.Fatalf("the upload's Location %q does not lead back to the proxy", loc)
		}
		if strings.HasPrefix(loc, "/") {
			loc = "http://" + p.Host() + loc
		}
		return loc
	}
	patch := func(loc string) (int, error) {
		req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(make([]byte, 1<<20)))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := patch(start()); err == nil {
		t.Errorf("the dropped PATCH answered %d", code)
	}
	if code, err := patch(start()); err != nil || code != http.StatusAccepted {
		t.Errorf("the second PATCH: %d, %v; want 202", code, err)
	}
	if n := p.Count(http.MethodPatch, nil); n != 2 {
		t.Errorf("%d PATCHes recorded, want 2:\n%s", n, p.Log())
	}
}

// What the proxy records holds no header and no query: an Authorization
// header's value and an upload's _state token never appear in it.
func TestProxy_recordsNoCredentials(t *testing.T) {
	reg, _, _ := setup(t)
	p := Start(t, reg.Host(), Rule{Path: regexp.MustCompile(`/fail$`), Fault: Status, Status: 500})
	const secret = "c2VjcmV0LXRva2VuLXZhbHVl"
	h := http.Header{"Authorization": {"Bearer " + secret}}
	for _, u := range []string{"/v2/?token=" + secret, "/v2/x/fail?_state=" + secret} {
		if _, _, _, err := get(http.DefaultClient, "http://"+p.Host()+u, h); err != nil {
			t.Fatal(err)
		}
	}
	all := fmt.Sprintf("%v %+v %s", p.Requests(), p.Requests(), p.Log())
	if strings.Contains(all, secret) {
		t.Errorf("the recorded requests hold the secret: %s", all)
	}
	if p.Count("", nil) != 2 {
		t.Errorf("recorded %s", p.Log())
	}
}
