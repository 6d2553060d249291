package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/check"
	"github.com/slipway-dev/slipway/executor/dockerfile"
	"github.com/slipway-dev/slipway/executor/result"
)

// checkedDockerfile has five findings (the executor's checks, run by checkResult): the stage
// name's casing (line 1), a secret-looking ENV (line 2, its value never shown), a shell-form CMD
// (line 4), and our RootUser and NoHealthcheck (at the FROM, line 1).
const checkedDockerfile = `FROM scratch AS Runtime
ENV API_PASSWORD=hunter2-not-shown
COPY app /app
CMD /app
`

// checkedRules are checkedDockerfile's findings, as RULE:LINE, in the executor's order (by line,
// then as found).
var checkedRules = []string{"StageNameCasing:1", "RootUser:1", "NoHealthcheck:1", "SecretsUsedInArgOrEnv:2", "JSONArgsRecommended:4"}

// checkResult is the result the executor writes for a build of dt under o: the findings of
// its build checks (executor/check, with no base image: FROM scratch), and the failure
// CheckFailed when one of them fails the build (o.FailOn), as executor/build reports it.
func checkResult(t *testing.T, dt string, o check.Options) result.Result {
	t.Helper()
	rep, err := check.Run([]byte(dt), o)
	if err != nil {
		t.Fatalf("running the checks: %v", err)
	}
	var res result.Result
	for _, f := range rep.Findings {
		res.AddWarnings(result.Warning{Rule: f.Rule, Line: f.Line, Message: f.Message, URL: f.URL})
	}
	if err := rep.Err(); err != nil {
		var de *dockerfile.Error
		if !errors.As(err, &de) {
			t.Fatalf("the checks' error %v has no line", err)
		}
		res.Failure = &result.Failure{Reason: result.ReasonCheckFailed, Message: de.Err.Error(), Line: de.Line}
		return res
	}
	res.Success, res.Digest = true, testDigest
	return res
}

// rules lists the findings as RULE:LINE.
func rules(ws []v1alpha1.BuildWarning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, fmt.Sprintf("%s:%d", w.Rule, w.Line))
	}
	return out
}

func TestImageBuild_statusWarnings(t *testing.T) {
	const docs = "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
	many := func(n int) []result.Warning {
		var ws []result.Warning
		for i := range n {
			ws = append(ws, result.Warning{Rule: "UndefinedVar", Line: i + 1, Message: fmt.Sprintf("Usage of undefined variable '$V%d'", i)})
		}
		return ws
	}
	tests := []struct {
		name      string
		res       result.Result
		want      []v1alpha1.BuildWarning
		wantCount int32
	}{
		{name: "none", res: result.Result{Success: true}, wantCount: 0},
		{
			name: "findings as reported",
			res: result.Result{Warnings: []result.Warning{
				{Rule: "JSONArgsRecommended", Line: 4, Message: "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals", URL: docs},
				{Rule: "RootUser", Line: 1, Message: "The image runs as root", URL: "https://github.com/slipway-dev/slipway#rootuser"},
			}},
			want: []v1alpha1.BuildWarning{
				{Rule: "JSONArgsRecommended", Line: 4, Message: "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals", URL: docs},
				{Rule: "RootUser", Line: 1, Message: "The image runs as root", URL: "https://github.com/slipway-dev/slipway#rootuser"},
			},
			wantCount: 2,
		},
		{
			name: "the first 20 kept, all counted with those the executor dropped",
			res:  result.Result{Warnings: many(25), WarningsDropped: 75},
			want: func() []v1alpha1.BuildWarning {
				var ws []v1alpha1.BuildWarning
				for i := range 20 {
					ws = append(ws, v1alpha1.BuildWarning{Rule: "UndefinedVar", Line: int32(i + 1), Message: fmt.Sprintf("Usage of undefined variable '$V%d'", i)})
				}
				return ws
			}(),
			wantCount: 100,
		},
		{
			// An executor image of the spec's choosing writes anything: escape sequences that
			// rewrite the terminal, bidirectional overrides, a token in a URL, a message of a
			// kilobyte, rules that are no rule's names, lines out of range, links elsewhere.
			name: "hostile findings",
			res: result.Result{Warnings: []result.Warning{
				{Rule: "UndefinedVar", Line: -3, Message: "\x1b[2J\x1b[31mReady\r\nStalled: False\u202egnp.exe", URL: "javascript:alert(1)"},
				{Rule: "UndefinedVar", Line: 1 << 40, Message: "fetching https://user:ghp_token@git.example.com/x failed", URL: "http://docs.example.com/plain"},
				{Rule: "Rule\x1b[0m", Line: 2, Message: "hidden"},
				{Rule: "all", Line: 2, Message: "hidden"},
				{Rule: "rootUser", Line: 2, Message: "hidden"},
				{Rule: strings.Repeat("A", 65), Line: 2, Message: "hidden"},
				{Rule: "RootUser", Line: 3, Message: strings.Repeat("é", 600), URL: "https://user:pw@docs.example.com/x"},
				{Rule: "RootUser", Line: 4, Message: "m", URL: "https://docs.example.com/a b"},
				{Rule: "RootUser", Line: 5, Message: "m", URL: "https://docs.example.com/" + strings.Repeat("x", 300)},
				{Rule: "RootUser", Line: 6, Message: "m", URL: "https://docs.example.com/\u202ex"},
			}, WarningsDropped: -7},
			want: []v1alpha1.BuildWarning{
				{Rule: "UndefinedVar", Line: 0, Message: "?[2J?[31mReady? Stalled: False?gnp.exe"},
				{Rule: "UndefinedVar", Line: 0, Message: "fetching https://***@git.example.com/x failed"},
				{Rule: "RootUser", Line: 3, Message: strings.Repeat("é", 98) + "…"},
				{Rule: "RootUser", Line: 4, Message: "m"},
				{Rule: "RootUser", Line: 5, Message: "m"},
				{Rule: "RootUser", Line: 6, Message: "m"},
			},
			wantCount: 10,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, count := statusWarnings(tc.res)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if count == nil || *count != tc.wantCount {
				t.Errorf("count = %v, want %d", count, tc.wantCount)
			}
			for _, w := range got {
				if len(w.Message) > result.MaxWarningMessage || strings.ContainsFunc(w.Message+w.URL, func(r rune) bool {
					return r < ' ' || r == 0x7f || (r >= '\u202a' && r <= '\u202e')
				}) {
					t.Errorf("unsafe warning on the status: %+q", w)
				}
			}
		})
	}
}

// TestImageBuild_computeStatus_warnings: the findings of the executor's checks reach the status
// when its build ends, succeeded or failed (CheckFailed, not retried); a pod that left no
// result keeps those of an earlier attempt; a new build clears them.
func TestImageBuild_computeStatus_warnings(t *testing.T) {
	ib := makeImageBuild("app", "ns").Status(started()).Obj()
	wantRules := checkedRules

	t.Run("succeeded", func(t *testing.T) {
		res := checkResult(t, checkedDockerfile, check.Options{})
		pod := makePod("app-1-1").Terminated(t0, t1, 0, "Completed", encodeResult(res)).Obj()
		st := computeStatus(ib, pod, now)
		if st.Phase != v1alpha1.PhaseSucceeded || st.WarningCount == nil || *st.WarningCount != 5 {
			t.Fatalf("phase %s, warningCount %v; want Succeeded with 5", st.Phase, st.WarningCount)
		}
		if diff := cmp.Diff(wantRules, rules(st.Warnings)); diff != "" {
			t.Errorf("warnings (-want +got):\n%s", diff)
		}
		for _, w := range st.Warnings {
			if w.Message == "" || strings.Contains(w.Message, "hunter2") {
				t.Errorf("warning %+v: want a message that shows no secret value", w)
			}
		}
		for _, c := range st.Conditions {
			if c.Status == metav1.ConditionTrue && c.Type != v1alpha1.ConditionReady {
				t.Errorf("condition %s=True on a successful build with warnings: kstatus reads it as abnormal", c.Type)
			}
		}
	})

	t.Run("failed by a check, not retried", func(t *testing.T) {
		res := checkResult(t, checkedDockerfile, check.Options{FailOn: []string{"SecretsUsedInArgOrEnv"}})
		if res.Failure == nil {
			t.Fatal("check.Run did not fail on SecretsUsedInArgOrEnv")
		}
		pod := makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(res)).Obj()
		st := computeStatus(ib, pod, now)
		if st.Phase != v1alpha1.PhaseFailed || st.Failure == nil || st.Failure.Reason != "CheckFailed" || st.Failure.Line != 2 {
			t.Fatalf("status: phase %s failure %+v; want Failed, CheckFailed at line 2", st.Phase, st.Failure)
		}
		if c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "CheckFailed" {
			t.Errorf("Stalled = %+v, want True/CheckFailed", c)
		}
		if diff := cmp.Diff(wantRules, rules(st.Warnings)); diff != "" || st.WarningCount == nil || *st.WarningCount != 5 {
			t.Errorf("warnings of the failed build (-want +got):\n%s count %v", diff, st.WarningCount)
		}
		policy := retryPolicy{maxRetries: 3, backoff: time.Second, maxBackoff: time.Minute, sourceFetch: true}
		if wait := planRetry(&st, 1, policy, now); wait != 0 || st.Phase != v1alpha1.PhaseFailed {
			t.Errorf("planRetry of CheckFailed: wait %s, phase %s; want no retry", wait, st.Phase)
		}
	})

	t.Run("a pod without a result keeps the earlier attempt's", func(t *testing.T) {
		prev := started()
		prev.Attempt, prev.PodName = 2, "app-1-2"
		prev.Warnings = []v1alpha1.BuildWarning{{Rule: "RootUser", Line: 1, Message: "m"}}
		prev.WarningCount = ptr.To[int32](1)
		ib := makeImageBuild("app", "ns").Status(prev).Obj()
		pod := makePod("app-1-2").Terminated(t0, t1, 137, "Error", "").Obj()
		st := computeStatus(ib, pod, now)
		if st.Failure == nil || st.Failure.Reason != v1alpha1.ReasonExecutorKilled {
			t.Fatalf("failure %+v, want ExecutorKilled", st.Failure)
		}
		if diff := cmp.Diff(prev.Warnings, st.Warnings); diff != "" || st.WarningCount == nil || *st.WarningCount != 1 {
			t.Errorf("warnings (-want +got):\n%s count %v", diff, st.WarningCount)
		}
	})

	t.Run("a running pod has none yet", func(t *testing.T) {
		st := computeStatus(ib, makePod("app-1-1").Running(t0).Obj(), now)
		if st.Warnings != nil || st.WarningCount != nil {
			t.Errorf("warnings of a running build: %+v, count %v", st.Warnings, st.WarningCount)
		}
	})

	t.Run("a new build clears them", func(t *testing.T) {
		prev := started()
		prev.Phase, prev.BuildNumber = v1alpha1.PhaseSucceeded, 1
		prev.Warnings = []v1alpha1.BuildWarning{{Rule: "RootUser", Line: 1, Message: "m"}}
		prev.WarningCount = ptr.To[int32](1)
		ib := makeImageBuild("app", "ns").Status(prev).Obj()
		ib.Annotations = map[string]string{v1alpha1.RebuildAnnotation: "1"}
		st := startBuild(ib, v1alpha1.BuildRequest{Cause: v1alpha1.CauseManual, Time: metav1.Time{Time: now}}, false, now)
		if st.Warnings != nil || st.WarningCount != nil {
			t.Errorf("warnings of a new build: %+v, count %v", st.Warnings, st.WarningCount)
		}
	})
}

func TestImageBuild_warningsEvent(t *testing.T) {
	ws := func(n int) []v1alpha1.BuildWarning {
		all := []v1alpha1.BuildWarning{{Rule: "RootUser", Line: 1}, {Rule: "NoHealthcheck", Line: 1},
			{Rule: "SecretsUsedInArgOrEnv", Line: 2}, {Rule: "JSONArgsRecommended", Line: 4}, {Rule: "UndefinedVar"}}
		return all[:n]
	}
	tests := []struct {
		name  string
		ws    []v1alpha1.BuildWarning
		count *int32
		want  string // "": no event
	}{
		{"not reported", nil, nil, ""},
		{"none", nil, ptr.To[int32](0), ""},
		{"one", ws(1), ptr.To[int32](1), "1 Dockerfile warning: RootUser (line 1) (status.warnings)"},
		{"three", ws(3), ptr.To[int32](3), "3 Dockerfile warnings: RootUser (line 1), NoHealthcheck (line 1), SecretsUsedInArgOrEnv (line 2) (status.warnings)"},
		{"more than the status lists", ws(5), ptr.To[int32](30), "30 Dockerfile warnings: RootUser (line 1), NoHealthcheck (line 1), SecretsUsedInArgOrEnv (line 2) and 27 more (status.warnings)"},
		{"counted, none listed", nil, ptr.To[int32](2), "2 Dockerfile warnings (status.warnings)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhaseSucceeded, Warnings: tc.ws, WarningCount: tc.count}
			pod := makePod("app-1-1").Obj()
			e, ok := warningsEvent(makeImageBuild("app", "ns").Status(st).Obj(), pod)
			if tc.want == "" {
				if ok {
					t.Fatalf("event %+v, want none", e)
				}
				return
			}
			if !ok || e.typ != corev1.EventTypeWarning || e.reason != "DockerfileWarnings" || e.note != tc.want || e.related != pod {
				t.Errorf("event %+v, want a Warning DockerfileWarnings about the pod: %q", e, tc.want)
			}
		})
	}
}

// TestImageBuild_crdBuildChecks reads the CRD as generated: kubectl get shows the WARNINGS
// count, and spec.checks admits every rule of the executor's checks by name, and "all".
func TestImageBuild_crdBuildChecks(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "build.slipway.dev_imagebuilds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	v := crd.Spec.Versions[0]
	var col *apiextensionsv1.CustomResourceColumnDefinition
	for i, c := range v.AdditionalPrinterColumns {
		if c.Name == "Warnings" {
			col = &v.AdditionalPrinterColumns[i]
		}
	}
	if col == nil || col.Type != "integer" || col.JSONPath != ".status.warningCount" || col.Priority != 0 {
		t.Errorf("printer column Warnings = %+v, want an integer of .status.warningCount shown by default", col)
	}
	checks := v.Schema.OpenAPIV3Schema.Properties["spec"].Properties["checks"]
	for _, field := range []string{"failOn", "skip"} {
		s := checks.Properties[field]
		if s.MaxItems == nil || s.Items == nil || s.Items.Schema == nil || s.Items.Schema.MaxLength == nil {
			t.Fatalf("spec.checks.%s is not bounded: %+v", field, s)
		}
		pattern := regexp.MustCompile(s.Items.Schema.Pattern)
		for _, name := range append(check.RuleNames(), check.All) {
			if !pattern.MatchString(name) || int64(len(name)) > *s.Items.Schema.MaxLength {
				t.Errorf("spec.checks.%s refuses the rule %q", field, name)
			}
			if len(name) > 64 || !ruleName.MatchString(name) && name != check.All {
				t.Errorf("status.warnings would leave out the rule %q", name)
			}
		}
	}
}

// TestImageBuild_validationChecks: the API server refuses a bad spec.checks, naming the field,
// and accepts good ones.
func TestImageBuild_validationChecks(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	newIB := func(name string, checks *v1alpha1.Checks) *v1alpha1.ImageBuild {
		return &v1alpha1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ImageBuildSpec{
				Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
				Output: v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
				Checks: checks,
			},
		}
	}
	many := make([]string, 33)
	for i := range many {
		many[i] = "Rule" + strings.Repeat("x", i)
	}
	bad := []struct {
		name   string
		checks v1alpha1.Checks
		want   string
	}{
		{"all beside a rule", v1alpha1.Checks{FailOn: []string{"all", "RootUser"}}, "spec.checks.failOn: Invalid value"},
		{"all beside a rule in skip", v1alpha1.Checks{Skip: []string{"NoHealthcheck", "all"}}, "all must be the only item"},
		{"lower case rule", v1alpha1.Checks{FailOn: []string{"rootUser"}}, "spec.checks.failOn[0]"},
		{"a digit", v1alpha1.Checks{Skip: []string{"Rule2"}}, "spec.checks.skip[0]"},
		{"a comma-separated item", v1alpha1.Checks{FailOn: []string{"RootUser,NoHealthcheck"}}, "spec.checks.failOn[0]"},
		{"an option smuggled in", v1alpha1.Checks{Skip: []string{"RootUser --no-push"}}, "spec.checks.skip[0]"},
		{"empty rule", v1alpha1.Checks{FailOn: []string{""}}, "spec.checks.failOn[0]"},
		{"duplicate rule", v1alpha1.Checks{Skip: []string{"RootUser", "RootUser"}}, "spec.checks.skip[1]: Duplicate value"},
		{"too long a rule", v1alpha1.Checks{Skip: []string{strings.Repeat("A", 65)}}, "spec.checks.skip[0]"},
		{"too many rules", v1alpha1.Checks{FailOn: many}, "spec.checks.failOn: Too many"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			ib := newIB("bad", &tc.checks)
			err := c.Create(context.Background(), ib)
			if err == nil {
				_ = c.Delete(context.Background(), ib)
				t.Fatal("the API server accepted the ImageBuild")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
	for i, checks := range []v1alpha1.Checks{
		{FailOn: []string{"all"}},
		{Skip: []string{"all"}, FailOn: []string{"SecretsUsedInArgOrEnv"}},
		{FailOn: []string{"RootUser", "NoHealthcheck"}, Skip: []string{"JSONArgsRecommended", "RootUser"}},
		{FailOn: check.RuleNames()},
	} {
		if err := c.Create(context.Background(), newIB(fmt.Sprintf("good-%d", i), &checks)); err != nil {
			t.Errorf("creating an ImageBuild with checks %+v: %v", checks, err)
		}
	}
}

// warningEvents are the DockerfileWarnings events of ImageBuild name in ns.
func warningEvents(t *testing.T, c client.Client, ns, name string) []eventsv1.Event {
	t.Helper()
	var evs eventsv1.EventList
	if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing events: %v", err)
	}
	var out []eventsv1.Event
	for _, e := range evs.Items {
		if e.Reason == "DockerfileWarnings" && e.Regarding.Kind == "ImageBuild" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// tableCell is the value of column col of ImageBuild name as `kubectl get` shows it: the API
// server's Table of the object, made from the CRD's printer columns.
func tableCell(t *testing.T, ns, name, col string) any {
	t.Helper()
	hc, err := rest.HTTPClientFor(envCfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/apis/build.slipway.dev/v1alpha1/namespaces/%s/imagebuilds/%s", strings.TrimSuffix(envCfg.Host, "/"), ns, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var table metav1.Table
	if err := json.NewDecoder(resp.Body).Decode(&table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("reading the table of %s (%s, HTTP %s): %v, %d rows", name, req.URL, resp.Status, err, len(table.Rows))
	}
	for i, c := range table.ColumnDefinitions {
		if c.Name == col {
			return table.Rows[0].Cells[i]
		}
	}
	t.Fatalf("no column %s in %+v", col, table.ColumnDefinitions)
	return nil
}

// TestImageBuildReconciler_Reconcile_buildWarnings: spec.checks reaches the executor; the
// findings of its checks (the real checks' of checkedDockerfile) are on the status, in the
// WARNINGS column and in one DockerfileWarnings event; a rebuild clears them, and its build
// without findings shows 0 and has no such event.
func TestImageBuildReconciler_Reconcile_buildWarnings(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Checks = &v1alpha1.Checks{Skip: []string{"ConsistentInstructionCasing"}}
	})
	pod := waitPod(t, c, ns, "app-1-1")
	if args := pod.Spec.Containers[0].Args; !strings.Contains(strings.Join(args, " "), " --check-skip=ConsistentInstructionCasing ") {
		t.Errorf("executor args %q lack --check-skip", args)
	}
	k.run(ns, "app-1-1")
	res := checkResult(t, checkedDockerfile, check.Options{Skip: []string{"ConsistentInstructionCasing"}})
	res.WarningsDropped = 2 // as if the executor had trimmed two to fit its termination message
	k.finish(ns, "app-1-1", 0, "Completed", encodeResult(res))

	ib := waitStatus(t, c, key, "Ready with warnings", func(ib *v1alpha1.ImageBuild) bool {
		return conditionIs("Ready", metav1.ConditionTrue, "Succeeded")(ib) && ib.Status.WarningCount != nil
	})
	wantRules := checkedRules
	if diff := cmp.Diff(wantRules, rules(ib.Status.Warnings)); diff != "" || *ib.Status.WarningCount != 7 {
		t.Errorf("status.warnings (-want +got):\n%s warningCount %d, want 7", diff, *ib.Status.WarningCount)
	}
	for _, w := range ib.Status.Warnings {
		if w.Message == "" || w.URL == "" || strings.Contains(w.Message, "hunter2") {
			t.Errorf("warning %+v: want a message showing no secret value, and a URL", w)
		}
	}
	if got := tableCell(t, ns, "app", "Warnings"); got != float64(7) {
		t.Errorf("kubectl get's WARNINGS = %v, want 7", got)
	}
	eventually(t, 10*time.Second, "a DockerfileWarnings event", func() (bool, string) {
		evs := warningEvents(t, c, ns, "app")
		return len(evs) == 1, fmt.Sprint(len(evs), " events")
	})
	e := warningEvents(t, c, ns, "app")[0]
	want := "7 Dockerfile warnings: StageNameCasing (line 1), RootUser (line 1), NoHealthcheck (line 1) and 4 more (status.warnings)"
	if e.Type != corev1.EventTypeWarning || e.Note != want || e.Related == nil || e.Related.Name != "app-1-1" {
		t.Errorf("event: type %s note %q related %+v; want Warning %q about app-1-1", e.Type, e.Note, e.Related, want)
	}

	// A rebuild: its status has no warnings until its executor reports, and then none.
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Annotations = map[string]string{v1alpha1.RebuildAnnotation: "1"}
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatal(err)
	}
	ib = waitStatus(t, c, key, "the rebuild's pod", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.PodName == "app-1-2" })
	if ib.Status.Warnings != nil || ib.Status.WarningCount != nil {
		t.Errorf("a new build shows the last one's warnings: %+v, count %v", ib.Status.Warnings, ib.Status.WarningCount)
	}
	if got := tableCell(t, ns, "app", "Warnings"); got != nil {
		t.Errorf("kubectl get's WARNINGS while building = %v, want <none>", got)
	}
	k.run(ns, "app-1-2")
	clean := checkResult(t, "FROM scratch\nCOPY app /app\n", check.Options{})
	k.finish(ns, "app-1-2", 0, "Completed", encodeResult(clean))
	ib = waitStatus(t, c, key, "the rebuild Ready", func(ib *v1alpha1.ImageBuild) bool {
		return ib.Status.Phase == v1alpha1.PhaseSucceeded && ib.Status.PodName == "app-1-2"
	})
	if ib.Status.Warnings != nil || ib.Status.WarningCount == nil || *ib.Status.WarningCount != 0 {
		t.Errorf("a build without findings: warnings %+v, count %v; want none, 0", ib.Status.Warnings, ib.Status.WarningCount)
	}
	if got := tableCell(t, ns, "app", "Warnings"); got != float64(0) {
		t.Errorf("kubectl get's WARNINGS = %v, want 0", got)
	}
	time.Sleep(time.Second) // the events of the reconcile that wrote the status
	if evs := warningEvents(t, c, ns, "app"); len(evs) != 1 {
		t.Errorf("%d DockerfileWarnings events, want the first build's only", len(evs))
	}
}

// TestImageBuildReconciler_Reconcile_checkFailedIsNotRetried: a finding of a rule that
// spec.checks.failOn names fails the build (the executor's CheckFailed) without a retry, with
// its warnings on the status and both events.
func TestImageBuildReconciler_Reconcile_checkFailedIsNotRetried(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Checks = &v1alpha1.Checks{FailOn: []string{"all"}}
		ib.Spec.Retry = &v1alpha1.Retry{Limit: ptr.To[int32](3)}
	})
	pod := waitPod(t, c, ns, "app-1-1")
	if args := pod.Spec.Containers[0].Args; !strings.Contains(strings.Join(args, " "), " --check-fail-on=all ") {
		t.Errorf("executor args %q lack --check-fail-on=all", args)
	}
	k.run(ns, "app-1-1")
	res := checkResult(t, checkedDockerfile, check.Options{FailOn: []string{check.All}})
	if res.Failure == nil {
		t.Fatal("check.Run did not fail the build")
	}
	k.finish(ns, "app-1-1", 1, "Error", encodeResult(res))

	ib := waitStatus(t, c, key, "Stalled", conditionIs("Stalled", metav1.ConditionTrue, "CheckFailed"))
	f := ib.Status.Failure
	if ib.Status.Phase != v1alpha1.PhaseFailed || f == nil || f.Line != 1 || !strings.Contains(f.Message, "lint violation found for rules: StageNameCasing (line 1), RootUser (line 1)") {
		t.Errorf("status: %s failure %+v", describe(ib), f)
	}
	if diff := cmp.Diff(checkedRules, rules(ib.Status.Warnings)); diff != "" || ib.Status.WarningCount == nil || *ib.Status.WarningCount != 5 {
		t.Errorf("warnings of the failed build (-want +got):\n%s count %v, want 5", diff, ib.Status.WarningCount)
	}
	eventually(t, 10*time.Second, "the CheckFailed and DockerfileWarnings events", func() (bool, string) {
		var evs eventsv1.EventList
		if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason)
		}
		return strings.Contains(strings.Join(seen, " "), "CheckFailed") && len(warningEvents(t, c, ns, "app")) == 1, fmt.Sprint(seen)
	})
	time.Sleep(time.Second)
	if names := podNames(t, c, ns); len(names) != 1 {
		t.Errorf("pods after CheckFailed = %v, want only app-1-1 (no retry)", names)
	}
	if ib := waitStatus(t, c, key, "still Failed", phaseIs(v1alpha1.PhaseFailed)); ib.Status.Retries != 0 {
		t.Errorf("retries = %d, want 0", ib.Status.Retries)
	}
}

// TestImageBuildReconciler_Reconcile_hostileWarnings: an executor image of the spec's choosing
// writes findings that the CRD would refuse as they are (too many, too long, control
// characters, rules that are no rule's names, a negative line): the status write still
// succeeds, with 20 sanitised findings and all of them counted.
func TestImageBuildReconciler_Reconcile_hostileWarnings(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	k := kubelet{t, c}

	key := newImageBuild(t, c, ns, "app")
	k.run(ns, "app-1-1")
	res := result.Result{Success: true, Digest: testDigest}
	res.Warnings = append(res.Warnings, result.Warning{Rule: "Bad\x1b]0;owned\x07", Line: 1, Message: "x"})
	for i := range 29 {
		res.Warnings = append(res.Warnings, result.Warning{Rule: "UndefinedVar", Line: -i,
			Message: "\x1b[2K\r" + strings.Repeat("\u202eA", 300), URL: "https://docs.example.com/" + strings.Repeat("u", 400)})
	}
	raw, err := json.Marshal(res) // not result.Encode, which would sanitise them first
	if err != nil {
		t.Fatal(err)
	}
	k.finish(ns, "app-1-1", 0, "Completed", string(raw))

	ib := waitStatus(t, c, key, "Succeeded", phaseIs(v1alpha1.PhaseSucceeded))
	st := ib.Status
	if len(st.Warnings) != 20 || st.WarningCount == nil || *st.WarningCount != 30 {
		t.Fatalf("%d warnings, count %v; want 20 of 30", len(st.Warnings), st.WarningCount)
	}
	for _, w := range st.Warnings {
		if w.Rule != "UndefinedVar" || w.Line != 0 || w.URL != "" || len(w.Message) > result.MaxWarningMessage ||
			strings.ContainsAny(w.Message, "\x1b\r\u202e") {
			t.Errorf("unsafe warning on the status: %+q", w)
		}
	}
}

// TestImageBuild_samplesAreValid: the API server takes the ImageBuilds of config/samples as
// they are written (their spec.checks included).
func TestImageBuild_samplesAreValid(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "build_v1alpha1_imagebuild*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ib v1alpha1.ImageBuild
		if err := yaml.UnmarshalStrict(b, &ib); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ib.Namespace = ns
		if err := c.Create(context.Background(), &ib, client.DryRunAll); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if ib.Spec.Checks == nil {
			t.Errorf("%s has no spec.checks", f)
		}
	}
}
