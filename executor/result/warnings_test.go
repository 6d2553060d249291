package result

import (
	"fmt"
	"strings"
	"testing"
)

func warning(i int) Warning {
	return Warning{
		Rule:    "UndefinedVar",
		Line:    i + 1,
		Message: fmt.Sprintf("Usage of undefined variable '$V%d' (did you mean $W%d?)", i, i),
		URL:     "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
	}
}

// At most MaxWarnings are kept, the others counted; messages are one
// sanitised line of at most MaxWarningMessage bytes.
func TestResult_AddWarnings(t *testing.T) {
	var r Result
	for i := range MaxWarnings + 7 {
		r.AddWarnings(warning(i))
	}
	if len(r.Warnings) != MaxWarnings || r.WarningsDropped != 7 {
		t.Errorf("%d warnings, %d dropped; want %d and 7", len(r.Warnings), r.WarningsDropped, MaxWarnings)
	}
	if r.Warnings[0].Line != 1 || r.Warnings[MaxWarnings-1].Line != MaxWarnings {
		t.Errorf("kept lines %d..%d, want the first ones", r.Warnings[0].Line, r.Warnings[MaxWarnings-1].Line)
	}

	var s Result
	s.AddWarnings(Warning{Rule: "R", Message: "a\x1b[2Jb\nfrom https://user:pw@example.com/x " + strings.Repeat("y", 500)})
	m := s.Warnings[0].Message
	if len(m) > MaxWarningMessage || strings.ContainsAny(m, "\x1b\n") || strings.Contains(m, "pw") {
		t.Errorf("message %q: want one sanitised line of at most %d bytes", m, MaxWarningMessage)
	}
}

// A result with as many warnings as it may hold, stages and a failure
// fits in MaxSize: the stages go, then the last warnings (counted), and
// the failure stays whole.
func TestEncode_warningsFit(t *testing.T) {
	r := Result{Failure: &Failure{Reason: ReasonCheckFailed, Message: "lint violation found for rules: RootUser (line 3)", Line: 3}}
	for i := range 40 {
		r.Stages = append(r.Stages, Stage{Name: fmt.Sprintf("stage-%d", i), Instructions: 10})
	}
	for i := range MaxWarnings {
		r.AddWarnings(warning(i))
	}
	b := Encode(r)
	if len(b) > MaxSize {
		t.Fatalf("encoded %d bytes, more than %d", len(b), MaxSize)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stages != nil {
		t.Errorf("the stages stayed")
	}
	if len(got.Warnings) == 0 || len(got.Warnings)+got.WarningsDropped != MaxWarnings {
		t.Errorf("%d warnings and %d dropped, want some kept and %d in all", len(got.Warnings), got.WarningsDropped, MaxWarnings)
	}
	for i, w := range got.Warnings {
		if w != warning(i) {
			t.Fatalf("warning %d is %+v, want the Dockerfile's first ones in order", i, w)
		}
	}
	if got.Failure == nil || got.Failure.Message != r.Failure.Message {
		t.Errorf("failure %+v, want it whole", got.Failure)
	}
	// Dropping as few as needed: one more would not fit.
	more := got
	more.Warnings = append(more.Warnings, warning(len(got.Warnings)))
	more.WarningsDropped--
	if d, _ := Decode(Encode(more)); len(d.Warnings) == len(more.Warnings) {
		t.Errorf("%d warnings were dropped, %d would have fitted", got.WarningsDropped, got.WarningsDropped-1)
	}

	// A few warnings are all kept, with the stages.
	small := Result{Success: true, Stages: r.Stages[:2]}
	small.AddWarnings(warning(0), warning(1))
	if got, _ := Decode(Encode(small)); len(got.Warnings) != 2 || got.WarningsDropped != 0 || len(got.Stages) != 2 {
		t.Errorf("small result: %+v", got)
	}
}
