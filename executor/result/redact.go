package result

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What a message may show. Every text that leaves the executor (a log
// line, the result's message and instruction, and so the ImageBuild's
// status) follows one rule:
//
//   - the content of a file is never quoted, with one exception: of the
//     Dockerfile, which the repository wrote and the executor read from
//     inside the build context (source.ReadFile), a message may quote the
//     instruction it is about, as an Excerpt (one line, at most a few
//     hundred bytes, no control characters); the parser's own errors may
//     quote a word of the line they point at;
//   - the user info of a URL never shows (Redact), wherever the URL came
//     from: the Dockerfile, a build argument, the command line, an error
//     of net/http or of git;
//   - the result stays within MaxSize (Encode).
//
// Paths (of the context, of the image) are names, not content, and show.

// scheme matches the start of a URL in free text.
var scheme = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://`)

// Redact replaces the user info of every URL in s with "***", as in
// "https://***@example.com/x": the password, and the user name too, since
// a token is often given as the user name (https://TOKEN@github.com/…).
//
// A URL's authority ends at "/", "?", "#" or white space, and its user
// info at the authority's last "@", as net/url reads it. A password that
// holds an unescaped "/", "?" or "#" makes no valid URL, but is redacted
// too: when the authority has no "@" but "user:" followed by more than a
// port, everything up to the last "@" before white space goes.
func Redact(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	for {
		loc := scheme.FindStringIndex(s)
		if loc == nil {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:loc[1]])
		s = s[loc[1]:]
		word := s[:wordEnd(s)]
		authority := word[:strings.IndexAny(word+"/", "/?#")]
		end := strings.LastIndexByte(authority, '@')
		if end < 0 && looksLikePassword(authority) {
			end = strings.LastIndexByte(word, '@')
		}
		if end >= 0 {
			b.WriteString("***")
			s = s[end:]
		}
	}
}

func wordEnd(s string) int {
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return i
	}
	return len(s)
}

// looksLikePassword reports whether an authority without "@" is
// "user:secret" cut short by a "/", "?" or "#" in the secret, rather than
// "host:port" or an IPv6 literal.
func looksLikePassword(authority string) bool {
	if strings.HasPrefix(authority, "[") {
		return false
	}
	_, after, ok := strings.Cut(authority, ":")
	if !ok {
		return false
	}
	return strings.ContainsFunc(after, func(r rune) bool { return r < '0' || r > '9' })
}

// Sanitize makes s fit for a message: Redact, and control characters
// (other than tab and newline) and bidirectional overrides replaced by
// "?", so that a message cannot rewrite the terminal or the line it is
// shown on.
func Sanitize(s string) string {
	s = Redact(s)
	if !strings.ContainsFunc(s, unsafeRune) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // invalid UTF-8 comes as U+FFFD
		if unsafeRune(r) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	switch {
	case r == '\t' || r == '\n':
		return false
	case unicode.IsControl(r):
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// Excerpt is s as one sanitised line (white space collapsed) of at most n
// bytes, cut with "…" when longer: how a Dockerfile instruction is shown.
// User info is redacted before the cut, so a cut never leaves part of it.
func Excerpt(s string, n int) string {
	s = strings.Join(strings.Fields(Sanitize(s)), " ")
	return Truncate(s, n)
}

// Truncate cuts s to at most n bytes, on a rune boundary, ending it with
// "…" when it was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := max(n-len(ellipsis), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
