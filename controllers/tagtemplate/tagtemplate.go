// Package tagtemplate renders the templates of spec.output.additionalTags:
// tags such as "{{.Branch}}-{{.ShortCommit}}-{{.Timestamp}}" that name each
// build, so that GitOps image automation (Flux's image-reflector and
// image-automation controllers, Argo CD Image Updater) can pick the newest
// build by a sortable tag.
//
// A template is Go's text/template restricted to a few fields and nothing
// else: no functions, no pipelines, no variables, no if/range/with/template.
// The fields are:
//
//	{{.Branch}}       the branch built, made a valid tag part: every character
//	                  outside [A-Za-z0-9_.-] becomes "-" ("feature/x" →
//	                  "feature-x"); a leading "refs/heads/" is dropped
//	{{.Commit}}       the full commit SHA
//	{{.ShortCommit}}  its first 7 characters
//	{{.Timestamp}}    the build's time in Unix seconds (UTC), e.g. 1733555700
//	{{.BuildNumber}}  the build's number, in decimal
//
// Timestamp is Unix seconds because that is the pattern Flux documents for
// picking the latest build of a branch: tags "${BRANCH}-${SHA:0:7}-$(date
// +%s)" with an ImagePolicy filterTags pattern
// '^main-[a-f0-9]+-(?P<ts>[0-9]+)', extract '$ts' and policy numerical asc
// (`flux create image policy --select-numeric=asc`). Ten digits also sort
// alphabetically until the year 2286, so an alphabetical policy works too.
//
// A template without any field ("latest") is a plain tag. Every rendered
// tag must be a valid Docker tag, ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$.
package tagtemplate

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// Data are the values of one build that a template may use.
type Data struct {
	// Branch is the branch built (a name such as "main" or
	// "refs/heads/main"); empty when the revision is not a branch.
	Branch string
	// Commit is the full SHA of the commit built.
	Commit string
	// Timestamp is the build's time; rendered as Unix seconds.
	Timestamp time.Time
	// BuildNumber is the build's number.
	BuildNumber int64
}

// Fields are the only fields a template may use, in the order documented.
var Fields = []string{"Branch", "Commit", "ShortCommit", "Timestamp", "BuildNumber"}

// MaxTagLength is the longest Docker tag.
const MaxTagLength = 128

// shortCommitLength is how many characters of the commit ShortCommit keeps
// (git's default abbreviation, and Flux's documented ${GIT_SHA:0:7}).
const shortCommitLength = 7

var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidTag reports whether tag is a valid Docker tag.
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }

// sample is what Validate renders a template with: a commit, a short
// branch, a time and a number, so that a template whose literal text makes
// no valid tag is refused at once.
var sample = Data{
	Branch:      "main",
	Commit:      "0123456789abcdef0123456789abcdef01234567",
	Timestamp:   time.Unix(1733555700, 0),
	BuildNumber: 1,
}

// Validate reports whether tmpl is a template this package renders: it
// parses, uses only the fields in Fields, each alone in its action
// ({{.Branch}}, not {{.Branch | printf "%s"}}, {{if}}, {{$x := …}} or any
// function), and renders a valid Docker tag with a sample build (branch
// "main"). A template may still fail to render for a given build, with a
// branch that makes the tag too long or start with "." or "-": Render says
// so. The error names the template and what is wrong.
func Validate(tmpl string) error {
	_, err := Render(tmpl, sample)
	return err
}

// Render renders tmpl with d and checks that the result is a valid Docker
// tag. Errors name the template and, for a bad result, the tag rendered.
func Render(tmpl string, d Data) (string, error) {
	t, err := parseTemplate(tmpl)
	if err != nil {
		return "", fmt.Errorf("tag template %q: %w", tmpl, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, values(d)); err != nil {
		return "", fmt.Errorf("tag template %q: %w", tmpl, err)
	}
	tag := b.String()
	switch {
	case tag == "":
		return "", fmt.Errorf("tag template %q renders an empty tag", tmpl)
	case len(tag) > MaxTagLength:
		return "", fmt.Errorf("tag template %q renders a tag of %d characters (%s…); a tag has at most %d", tmpl, len(tag), tag[:32], MaxTagLength)
	case !ValidTag(tag):
		return "", fmt.Errorf("tag template %q renders %q, which is not a valid tag (letters, digits, '_', '.' and '-', not starting with '.' or '-')", tmpl, tag)
	}
	return tag, nil
}

// values are the template's fields as strings (a map, so that the template
// reaches no method of any type).
func values(d Data) map[string]string {
	short := d.Commit
	if len(short) > shortCommitLength {
		short = short[:shortCommitLength]
	}
	return map[string]string{
		"Branch":      SanitizeBranch(d.Branch),
		"Commit":      d.Commit,
		"ShortCommit": short,
		"Timestamp":   strconv.FormatInt(d.Timestamp.Unix(), 10),
		"BuildNumber": strconv.FormatInt(d.BuildNumber, 10),
	}
}

// SanitizeBranch makes a branch name a part of a tag: without a leading
// "refs/heads/", every character outside [A-Za-z0-9_.-] replaced by "-"
// ("feature/x" → "feature-x", "fix/ü" → "fix--").
func SanitizeBranch(branch string) string {
	branch = strings.TrimPrefix(branch, "refs/heads/")
	var b strings.Builder
	for _, r := range branch {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// parseTemplate parses tmpl with no functions and checks that its tree is
// only text and {{.Field}} actions of known fields.
func parseTemplate(tmpl string) (*template.Template, error) {
	if len(tmpl) > 4*MaxTagLength {
		return nil, errors.New("too long")
	}
	t, err := template.New("tag").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: tag:"))
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("only text and fields, such as {{.Branch}}, are allowed: no {{define}} or {{block}}")
	}
	if t.Tree == nil || t.Root == nil {
		return t, nil // empty template: Render says so
	}
	for _, n := range t.Root.Nodes {
		if err := checkNode(n); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func checkNode(n parse.Node) error {
	switch n := n.(type) {
	case *parse.TextNode:
		return nil
	case *parse.ActionNode:
		p := n.Pipe
		if p == nil || len(p.Decl) > 0 || p.IsAssign || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
			return fmt.Errorf("%s: only a field, such as {{.Branch}}, may be in an action (fields: %s)", n, fieldList())
		}
		f, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
		if !ok || len(f.Ident) != 1 {
			return fmt.Errorf("%s: only a field, such as {{.Branch}}, may be in an action (fields: %s)", n, fieldList())
		}
		for _, known := range Fields {
			if f.Ident[0] == known {
				return nil
			}
		}
		return fmt.Errorf("%s: unknown field %s (fields: %s)", n, f.Ident[0], fieldList())
	default:
		return fmt.Errorf("%s: only text and fields, such as {{.Branch}}, are allowed (fields: %s)", n, fieldList())
	}
}

func fieldList() string { return "." + strings.Join(Fields, ", .") }
