package main

import "testing"

// The in-place warning about credentials in --context names only what is a
// credential: a password, or the user of an http(s) URL (often a token);
// not the user name of an ssh URL, which every ssh remote has.
func TestCarriesCredentials(t *testing.T) {
	for in, want := range map[string]bool{
		"https://tok@github.com/org/app.git":      true,
		"https://bob:pw@github.com/org/app.git":   true,
		"ssh://git@github.com/org/app.git":        false,
		"ssh://git:pw@github.com/org/app.git":     true,
		"git@github.com:org/app.git":              false,
		"https://github.com/org/app.git#main":     false,
		"dir:///workspace":                        false,
		"https://bob:p%zz@github.com/org/app.git": true, // does not parse: the "@" may end a password
		"https://github.com/org/app.git?x=a@b":    false,
	} {
		if got := carriesCredentials(in); got != want {
			t.Errorf("carriesCredentials(%q) = %v, want %v", in, got, want)
		}
	}
}
