package controllers

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

// Build checks on the ImageBuild: spec.checks becomes the executor's --check-fail-on and
// --check-skip (checkArgs); the findings its result reports become status.warnings and
// status.warningCount (observeWarnings) and one DockerfileWarnings event per build
// (warningsEvent). No condition says that a build has warnings: kstatus reads any other
// condition type that is True as abnormal, and a build with warnings is Ready.

// reasonDockerfileWarnings is the reason of the event that a build ended with findings.
const reasonDockerfileWarnings = "DockerfileWarnings"

// maxStatusWarnings bounds status.warnings (the CRD's MaxItems).
const maxStatusWarnings = 20

// eventWarnings is how many findings the DockerfileWarnings event names.
const eventWarnings = 3

// maxWarningURL bounds status.warnings[].url (the CRD's MaxLength).
const maxWarningURL = 256

// checkArgs are the executor's flags for spec.checks: --check-fail-on and --check-skip, each
// the rules joined by commas (the CRD admits names of letters only, or "all").
func checkArgs(c *v1alpha1.Checks) []string {
	if c == nil {
		return nil
	}
	var args []string
	if len(c.FailOn) > 0 {
		args = append(args, "--check-fail-on="+strings.Join(c.FailOn, ","))
	}
	if len(c.Skip) > 0 {
		args = append(args, "--check-skip="+strings.Join(c.Skip, ","))
	}
	return args
}

// observeWarnings sets st's warnings from the result that the finished pod's executor wrote,
// if it wrote one: on success and on failure alike, as the executor reports its findings
// either way. Without a result (a pod lost or killed) st keeps what an earlier attempt of the
// build reported, if any.
func observeWarnings(st *v1alpha1.ImageBuildStatus, pod *corev1.Pod) {
	res, ok := podResult(pod)
	if !ok {
		return
	}
	st.Warnings, st.WarningCount = statusWarnings(res)
}

// ruleName is what a build check rule's name looks like (BuildKit's and ours).
var ruleName = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)

// statusWarnings are res's findings as status.warnings and status.warningCount: the first
// maxStatusWarnings findings, and the number of all of them (those the executor dropped
// included). The result is the executor image's to write (spec.executorImage), and the
// Dockerfile's words reach its messages, so every finding is made safe to show whoever wrote
// it: a finding whose rule is no rule's name is left out of the list (it is counted), a line
// out of range is 0, the message is one sanitised line of at most result.MaxWarningMessage
// bytes (result.Excerpt: no control character, no URL user info), and a url that is not a
// plain https URL is dropped.
func statusWarnings(res result.Result) ([]v1alpha1.BuildWarning, *int32) {
	total := int64(len(res.Warnings)) + int64(max(res.WarningsDropped, 0))
	var out []v1alpha1.BuildWarning
	for _, w := range res.Warnings {
		if len(out) == maxStatusWarnings {
			break
		}
		if !ruleName.MatchString(w.Rule) {
			continue
		}
		line := int32(0)
		if w.Line > 0 && w.Line <= math.MaxInt32 {
			line = int32(w.Line)
		}
		out = append(out, v1alpha1.BuildWarning{
			Rule:    w.Rule,
			Line:    line,
			Message: result.Excerpt(w.Message, result.MaxWarningMessage),
			URL:     warningURL(w.URL),
		})
	}
	return out, ptr.To(int32(min(total, math.MaxInt32)))
}

// warningURL is u when it is an https URL of printable ASCII without user info, of at most
// maxWarningURL bytes, else "".
func warningURL(u string) string {
	if u == "" || len(u) > maxWarningURL {
		return ""
	}
	for i := 0; i < len(u); i++ {
		if u[i] <= ' ' || u[i] > '~' {
			return ""
		}
	}
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "https" || p.Host == "" || p.User != nil {
		return ""
	}
	return u
}

// warningsEvent is the event of a build that ended with findings: type Warning, reason
// DockerfileWarnings, naming their number and the first eventWarnings rules with their lines
// ("3 Dockerfile warnings: JSONArgsRecommended (line 9), RootUser (line 1), NoHealthcheck
// (line 1)"). ok is false when the build found none. Like status.warnings, it is emitted
// whether the build succeeded or failed.
func warningsEvent(ib *v1alpha1.ImageBuild, pod *corev1.Pod) (e pendingEvent, ok bool) {
	st := &ib.Status
	if st.WarningCount == nil || *st.WarningCount <= 0 {
		return pendingEvent{}, false
	}
	n := *st.WarningCount
	var b strings.Builder
	if n == 1 {
		b.WriteString("1 Dockerfile warning")
	} else {
		fmt.Fprintf(&b, "%d Dockerfile warnings", n)
	}
	named := 0
	for i, w := range st.Warnings {
		if i == eventWarnings {
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(w.Rule)
		if w.Line > 0 {
			fmt.Fprintf(&b, " (line %d)", w.Line)
		}
		named++
	}
	if rest := int64(n) - int64(named); named > 0 && rest > 0 {
		fmt.Fprintf(&b, " and %d more", rest)
	}
	b.WriteString(" (status.warnings)")
	return pendingEvent{related: related(pod), typ: corev1.EventTypeWarning, reason: reasonDockerfileWarnings,
		action: "Check", note: b.String()}, true
}
