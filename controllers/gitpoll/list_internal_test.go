package gitpoll

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/google/go-cmp/cmp"
)

// advertisement encodes pkt-lines; "" is a flush-pkt.
func advertisement(t *testing.T, lines ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	e := pktline.NewEncoder(&b)
	for _, l := range lines {
		var err error
		if l == "" {
			err = e.Flush()
		} else {
			err = e.EncodeString(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

const (
	h1 = "1111111111111111111111111111111111111111"
	h2 = "2222222222222222222222222222222222222222"
	h3 = "3333333333333333333333333333333333333333"
)

func TestParseAdvertisement(t *testing.T) {
	wanted := map[string]bool{"HEAD": true, "refs/heads/main": true, "refs/tags/v1": true}
	tests := []struct {
		name  string
		input []byte
		want  *listing
	}{{
		name: "smart HTTP, with peeled tag and symref",
		input: advertisement(t, "# service=git-upload-pack\n", "",
			h1+" HEAD\x00multi_ack symref=HEAD:refs/heads/main agent=git/2\n",
			h1+" refs/heads/main\n", h2+" refs/heads/other\n",
			h2+" refs/tags/v1\n", h3+" refs/tags/v1^{}\n", ""),
		want: &listing{refs: map[string]string{"HEAD": h1, "refs/heads/main": h1, "refs/tags/v1": h2, "refs/tags/v1^{}": h3}, head: "refs/heads/main"},
	}, {
		name: "a symref HEAD that is no ref name is not kept (security review)",
		input: advertisement(t, "# service=git-upload-pack\n", "",
			h1+" HEAD\x00multi_ack symref=HEAD:refs/heads/\x1b[31mred\u202e agent=git/2\n", h1+" refs/heads/main\n", ""),
		want: &listing{refs: map[string]string{"HEAD": h1, "refs/heads/main": h1}},
	}, {
		name:  "ssh, without a service line",
		input: advertisement(t, h1+" refs/heads/main\x00caps\n", ""),
		want:  &listing{refs: map[string]string{"refs/heads/main": h1}},
	}, {
		name:  "empty repository",
		input: advertisement(t, "# service=git-upload-pack\n", "", "0000000000000000000000000000000000000000 capabilities^{}\x00caps\n", ""),
		want:  &listing{refs: map[string]string{}, empty: true},
	}, {
		name:  "empty repository, old git",
		input: advertisement(t, "# service=git-upload-pack\n", "", ""),
		want:  &listing{refs: map[string]string{}, empty: true},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAdvertisement(bytes.NewReader(tc.input), wanted)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(listing{})); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestParseAdvertisement_errors(t *testing.T) {
	cut := advertisement(t, h1+" refs/heads/main\n")
	if _, err := parseAdvertisement(bytes.NewReader(cut), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("no flush-pkt: %v, want io.ErrUnexpectedEOF", err)
	}
	errLine := advertisement(t, "ERR access denied\x1b[31m\n")
	_, err := parseAdvertisement(bytes.NewReader(errLine), nil)
	var said *serverSaid
	if !errors.As(err, &said) || !strings.HasPrefix(said.msg, "access denied") || strings.ContainsRune(said.msg, 0x1b) {
		t.Errorf("ERR line: %v, want the server's words, sanitised", err)
	}
}

// TestLimitedReader: a listing larger than the bound fails, however the
// reads are cut, and one of exactly the bound does not.
func TestLimitedReader(t *testing.T) {
	lines := []string{"# service=git-upload-pack\n", ""}
	for range 1000 {
		lines = append(lines, h1+" refs/heads/"+strings.Repeat("b", 40)+"\n")
	}
	input := advertisement(t, append(lines, "")...)
	for _, max := range []int64{10, 4096, int64(len(input)) - 1} {
		_, err := parseAdvertisement(&limitedReader{r: bytes.NewReader(input), max: max}, nil)
		var tl errTooLarge
		if !errors.As(err, &tl) {
			t.Errorf("bound %d: %v, want errTooLarge", max, err)
		}
	}
	if _, err := parseAdvertisement(&limitedReader{r: bytes.NewReader(input), max: int64(len(input))}, nil); err != nil {
		t.Errorf("at the bound: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/x.git":  `'/srv/x.git'`,
		"it's":        `'it'\''s'`,
		"a!b":         `'a'\!'b'`,
		"$(rm -rf /)": `'$(rm -rf /)'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// A repository whose listings keep failing is listed less and less often, up to once an hour,
// so that a tenant's unreachable repositories cannot take the listing slots every interval
// (security review).
func TestFailureBackoff(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		n        int
		want     time.Duration
	}{
		{time.Minute, 0, time.Minute},
		{time.Minute, 1, 2 * time.Minute},
		{time.Minute, 3, 8 * time.Minute},
		{time.Minute, 10, time.Hour},
		{time.Minute, 1000, time.Hour},
		{2 * time.Hour, 3, 2 * time.Hour},
	} {
		if got := failureBackoff(tc.interval, tc.n); got != tc.want {
			t.Errorf("failureBackoff(%s, %d) = %s, want %s", tc.interval, tc.n, got, tc.want)
		}
	}
}
