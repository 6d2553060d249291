package result

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ADD http://user:s3cr3t@127.0.0.1:80/missing /x", "ADD http://***@127.0.0.1:80/missing /x"},
		{"ADD https://ghp_t0ken@github.com/o/r.git#main /src", "ADD https://***@github.com/o/r.git#main /src"},
		{`Get "http://user:***@host:1/x": dial tcp`, `Get "http://***@host:1/x": dial tcp`},
		{`Get "http://user:s3cr3t@host": EOF`, `Get "http://***@host": EOF`},
		{`parse "http://user:s3cr3t@[::1/x": missing ']' in host`, `parse "http://***@[::1/x": missing ']' in host`},
		{"http://us@er:p@ss@host/a@b", "http://***@host/a@b"},
		{"ssh://git@example.com/repo and git://a:b@c/d", "ssh://***@example.com/repo and git://***@c/d"},
		{"HTTPS://U:P@H/", "HTTPS://***@H/"},
		// Not user info: an "@" in the path, query or fragment, or no URL.
		{"https://registry.npmjs.org/@types/node", "https://registry.npmjs.org/@types/node"},
		{"https://host/x?to=a@b", "https://host/x?to=a@b"},
		{"git@github.com:o/r.git", "git@github.com:o/r.git"},
		{"mail me at a@b.c", "mail me at a@b.c"},
		{"http://***@host", "http://***@host"},
		// A password with an unescaped "/" or "#": no URL, but redacted.
		{"ADD http://user:s3/cr3t@host/x /x", "ADD http://***@host/x /x"},
		{"ADD http://user:s3#cr3t@host/x /x", "ADD http://***@host/x /x"},
		// A port is no password, an IPv6 literal neither.
		{"http://localhost:4873/@scope%2fpkg", "http://localhost:4873/@scope%2fpkg"},
		{"http://[::1]:80/@scope", "http://[::1]:80/@scope"},
		{"http://host:/@x", "http://host:/@x"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestExcerpt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"RUN  echo \\\n   hi", 200, "RUN echo \\ hi"},
		{"RUN echo \x1b[2J\x1b]0;pwned\x07", 200, "RUN echo ?[2J?]0;pwned?"},
		{"LABEL a=\u202eb", 200, "LABEL a=?b"},
		{"RUN echo \xff", 200, "RUN echo \ufffd"},
		{"RUN echo héllo", 11, "RUN echo…"}, {"RUN echo héllo", 13, "RUN echo h…"}, {"RUN echo héllo", 14, "RUN echo h…"},
		// The user info goes before the cut, so no part of it is left.
		{"ADD http://user:s3cr3t@host/x /x", 20, "ADD http://***@ho…"},
	} {
		got := Excerpt(tc.in, tc.n)
		if got != tc.want {
			t.Errorf("Excerpt(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
		if len(got) > tc.n || !utf8.ValidString(got) {
			t.Errorf("Excerpt(%q, %d) = %q: longer than %d or not UTF-8", tc.in, tc.n, got, tc.n)
		}
	}
}

// Encode sanitises the failure whoever wrote it, and fits MaxSize even
// when the message is made of what JSON escapes.
func TestEncode_failureBoundedAndRedacted(t *testing.T) {
	for _, msg := range []string{
		strings.Repeat("x", 10*MaxSize),
		strings.Repeat("<", 10*MaxSize),
		strings.Repeat("é", 10*MaxSize),
		"downloading http://user:s3cr3t@host/x: " + strings.Repeat("\x00", 10*MaxSize),
	} {
		b := Encode(Result{Failure: &Failure{
			Reason:      ReasonCopyFailed,
			Message:     msg,
			Instruction: "ADD http://user:s3cr3t@host/x /x " + strings.Repeat("y", 1000),
		}})
		if len(b) > MaxSize {
			t.Errorf("encoded %d bytes, want at most %d", len(b), MaxSize)
		}
		r, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "s3cr3t") {
			t.Errorf("the password is in %s", b)
		}
		if len(r.Failure.Instruction) > MaxInstruction || !utf8.ValidString(r.Failure.Message) || r.Failure.Message == "" {
			t.Errorf("failure %.100q… not bounded, valid and present", r.Failure.Message)
		}
	}
}

func TestLocated(t *testing.T) {
	tests := []struct {
		name string
		line int
		msg  string
		want string
	}{
		{"no line", 0, "pushing: refused", "pushing: refused"},
		{"a cause gets its line", 3, "unknown instruction: FORM", "Dockerfile line 3: unknown instruction: FORM"},
		{"a message naming its line keeps it once", 3, "Dockerfile line 3 (FROM ${BASE}): blank", "Dockerfile line 3 (FROM ${BASE}): blank"},
		{"with a colon", 3, "Dockerfile line 3: blank", "Dockerfile line 3: blank"},
		{"another line is not this one", 3, "Dockerfile line 30: x", "Dockerfile line 3: Dockerfile line 30: x"},
		{"another line named later", 3, "copying: Dockerfile line 2 of the stage", "Dockerfile line 3: copying: Dockerfile line 2 of the stage"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Located(tc.line, tc.msg); got != tc.want {
				t.Errorf("Located(%d, %q) = %q, want %q", tc.line, tc.msg, got, tc.want)
			}
		})
	}
}
