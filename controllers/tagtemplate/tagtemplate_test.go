package tagtemplate

import (
	"strings"
	"testing"
	"time"
)

var build = Data{
	Branch:      "main",
	Commit:      "abc1234def5678abc1234def5678abc1234def56",
	Timestamp:   time.Date(2024, 12, 7, 7, 15, 0, 0, time.FixedZone("CET", 3600)),
	BuildNumber: 42,
}

func TestRender(t *testing.T) {
	with := func(f func(*Data)) Data { d := build; f(&d); return d }
	tests := []struct {
		name string
		tmpl string
		data Data
		want string
	}{
		{"plain tag", "latest", build, "latest"},
		{"Flux's documented pattern", "{{.Branch}}-{{.ShortCommit}}-{{.Timestamp}}", build, "main-abc1234-1733552100"},
		{"timestamp is Unix seconds whatever the zone", "{{.Timestamp}}", with(func(d *Data) { d.Timestamp = d.Timestamp.UTC() }), "1733552100"},
		{"build number", "build-{{.BuildNumber}}", build, "build-42"},
		{"full commit", "{{.Commit}}", build, build.Commit},
		{"branch with a slash", "{{.Branch}}-{{.BuildNumber}}", with(func(d *Data) { d.Branch = "feature/x" }), "feature-x-42"},
		{"full branch ref", "{{.Branch}}", with(func(d *Data) { d.Branch = "refs/heads/release/1.2" }), "release-1.2"},
		{"branch with characters outside a tag's", "{{.Branch}}", with(func(d *Data) { d.Branch = "fix/ü+x" }), "fix---x"},
		{"short commit of a short commit", "{{.ShortCommit}}", with(func(d *Data) { d.Commit = "abc" }), "abc"},
		{"trim markers", "v-{{- .BuildNumber -}}", build, "v-42"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.tmpl, tc.data)
			if err != nil {
				t.Fatalf("Render(%q): %v", tc.tmpl, err)
			}
			if got != tc.want {
				t.Errorf("Render(%q) = %q, want %q", tc.tmpl, got, tc.want)
			}
		})
	}
}

func TestRender_invalidResult(t *testing.T) {
	with := func(f func(*Data)) Data { d := build; f(&d); return d }
	tests := []struct {
		name    string
		tmpl    string
		data    Data
		wantErr string
	}{
		{"branch empty at the start", "{{.Branch}}-{{.ShortCommit}}", with(func(d *Data) { d.Branch = "" }), `renders "-abc1234", which is not a valid tag`},
		{"branch starting with a dot", "{{.Branch}}", with(func(d *Data) { d.Branch = ".hidden" }), "not a valid tag"},
		{"too long", "{{.Branch}}-{{.Commit}}", with(func(d *Data) { d.Branch = strings.Repeat("b", 100) }), "a tag of 141 characters"},
		{"empty", "{{.Branch}}", with(func(d *Data) { d.Branch = "" }), "renders an empty tag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.tmpl, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Render(%q) = %q, %v; want an error containing %q", tc.tmpl, got, err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.tmpl) {
				t.Errorf("error %q does not name the template", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		tmpl    string
		wantErr string // "" for valid
	}{
		{"latest", ""},
		{"{{.Branch}}-{{.ShortCommit}}-{{.Timestamp}}", ""},
		{"{{.BuildNumber}}", ""},
		{"v1.{{.BuildNumber}}_{{.Commit}}", ""},
		{"{{/* a comment */}}x", ""},
		// Unknown fields.
		{"{{.Tag}}", "unknown field Tag"},
		{"{{.branch}}", "unknown field branch"},
		{"{{.Branch.Name}}", "only a field"},
		// Functions, pipelines, variables and control structures.
		{`{{printf "%s" .Branch}}`, "only a field"},
		{`{{.Branch | printf "%s"}}`, "only a field"},
		{`{{len .Branch}}`, "only a field"},
		{`{{index . "Branch"}}`, "only a field"},
		{`{{call .Branch}}`, "only a field"},
		{"{{$x := .Branch}}{{$x}}", "only a field"},
		{"{{.}}", "only a field"},
		{"{{if .Branch}}x{{end}}", "only text and fields"},
		{"{{range .Branch}}x{{end}}", "only text and fields"},
		{"{{with .Branch}}x{{end}}", "only text and fields"},
		{`{{template "x"}}`, "only text and fields"},
		{`{{define "x"}}y{{end}}z`, "no {{define}}"},
		{`{{block "x" .}}y{{end}}`, "no {{define}}"},
		{`{{"literal"}}`, "only a field"},
		{"{{html .Branch}}", "only a field"},
		// Syntax errors.
		{"{{.Branch", "unclosed action"},
		{"{{nosuchfunc}}", `function "nosuchfunc" not defined`},
		// Results that are not tags.
		{"", "renders an empty tag"},
		{"feature/{{.Branch}}", "not a valid tag"},
		{"-{{.Branch}}", "not a valid tag"},
		{".{{.Branch}}", "not a valid tag"},
		{"{{.Branch}}:{{.ShortCommit}}", "not a valid tag"},
		{"{{.Branch}} {{.ShortCommit}}", "not a valid tag"},
		{strings.Repeat("x", 129), "at most 128"},
		{strings.Repeat("{{.Commit}}", 4), "a tag of 160 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.tmpl, func(t *testing.T) {
			err := Validate(tc.tmpl)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate(%q): %v", tc.tmpl, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate(%q) = %v, want an error containing %q", tc.tmpl, err, tc.wantErr)
			}
		})
	}
}

// TestRender_noFunctions proves that the text/template builtins are out of
// reach even where the parser would accept them: a template that calls
// one is refused before it runs.
func TestRender_noFunctions(t *testing.T) {
	for _, fn := range []string{"print", "printf", "println", "len", "index", "slice", "html", "js", "urlquery", "and", "or", "not", "eq", "call"} {
		tmpl := "{{" + fn + " .Branch}}"
		if got, err := Render(tmpl, build); err == nil {
			t.Errorf("Render(%q) = %q, want an error", tmpl, got)
		}
	}
}

func TestSanitizeBranch(t *testing.T) {
	tests := map[string]string{
		"main":               "main",
		"feature/x":          "feature-x",
		"refs/heads/a/b":     "a-b",
		"release-1.2_rc":     "release-1.2_rc",
		"a b@c":              "a-b-c",
		"refs/tags/v1":       "refs-tags-v1",
		"":                   "",
		"dependabot/npm/x@2": "dependabot-npm-x-2",
	}
	for in, want := range tests {
		if got := SanitizeBranch(in); got != want {
			t.Errorf("SanitizeBranch(%q) = %q, want %q", in, got, want)
		}
	}
}
