package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

var (
	t0  = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	t1  = t0.Add(83 * time.Second)
	now = t0.Add(2 * time.Minute)
)

func mt(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }

func cond(typ string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: 1}
}

// started is the status of a build whose pod app-1-1 was created.
func started() v1alpha1.ImageBuildStatus {
	return v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhasePending, ObservedGeneration: 1, Attempt: 1, PodName: "app-1-1"}
}

func TestImageBuild_computeStatus(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	failed := func(f v1alpha1.Failure, msg string, start *metav1.Time, dur string) v1alpha1.ImageBuildStatus {
		st := started()
		st.Phase = v1alpha1.PhaseFailed
		st.StartTime = start
		st.CompletionTime = mt(now)
		st.Duration = dur
		st.Failure = &f
		st.Conditions = []metav1.Condition{
			cond("Ready", metav1.ConditionFalse, f.Reason, msg),
			cond("Stalled", metav1.ConditionTrue, f.Reason, msg),
		}
		return st
	}
	// failedReported is failed with the executor's result read: it reported no build check
	// findings (status.warningCount 0).
	failedReported := func(f v1alpha1.Failure, msg string, start *metav1.Time, dur string) v1alpha1.ImageBuildStatus {
		st := failed(f, msg, start, dur)
		st.WarningCount = ptr.To[int32](0)
		return st
	}

	tests := []struct {
		name   string
		status v1alpha1.ImageBuildStatus
		pod    *corev1.Pod
		want   v1alpha1.ImageBuildStatus
	}{
		{
			name:   "pending pod",
			status: started(),
			pod:    makePod("app-1-1").Phase(corev1.PodPending).Obj(),
			want: func() v1alpha1.ImageBuildStatus {
				st := started()
				msg := "Executor pod app-1-1 is pending (attempt 1)"
				st.Conditions = []metav1.Condition{
					cond("Ready", metav1.ConditionFalse, "PodCreated", msg),
					cond("Reconciling", metav1.ConditionTrue, "PodCreated", msg),
				}
				return st
			}(),
		},
		{
			name:   "pending pod that cannot pull the executor image",
			status: started(),
			pod:    makePod("app-1-1").Phase(corev1.PodPending).Waiting("ImagePullBackOff", "Back-off pulling image").Obj(),
			want: func() v1alpha1.ImageBuildStatus {
				st := started()
				msg := "Executor pod app-1-1 is pending (attempt 1): ImagePullBackOff: Back-off pulling image"
				st.Conditions = []metav1.Condition{
					cond("Ready", metav1.ConditionFalse, "PodCreated", msg),
					cond("Reconciling", metav1.ConditionTrue, "PodCreated", msg),
				}
				return st
			}(),
		},
		{
			name:   "running pod",
			status: started(),
			pod:    makePod("app-1-1").Running(t0).Obj(),
			want: func() v1alpha1.ImageBuildStatus {
				st := started()
				st.Phase = v1alpha1.PhaseRunning
				st.StartTime = mt(t0)
				st.Conditions = []metav1.Condition{
					cond("Ready", metav1.ConditionFalse, "Building", "Executor pod app-1-1 is running (attempt 1)"),
					cond("Reconciling", metav1.ConditionTrue, "Building", "Building registry.example.com/org/app:v1"),
				}
				return st
			}(),
		},
		{
			name:   "succeeded with a result",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 0, "Completed", encodeResult(result.Result{
				Success: true, Digest: digest,
				References: []string{"registry.example.com/org/app:v1@" + digest},
				Commit:     "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
				Stages: []result.Stage{
					{Name: "build", Instructions: 4, CacheHits: 3, Millis: 1500},
					{Name: "1", Instructions: 2, CacheHits: 0, Millis: 200},
				},
				CacheHits: 3, CacheMisses: 3,
			})).Obj(),
			want: v1alpha1.ImageBuildStatus{
				Phase: v1alpha1.PhaseSucceeded, ObservedGeneration: 1, Attempt: 1, PodName: "app-1-1",
				WarningCount: ptr.To[int32](0),
				StartTime:    mt(t0), CompletionTime: mt(t1), Duration: "1m23s",
				Source: &v1alpha1.SourceStatus{Commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904"},
				Image: &v1alpha1.ImageStatus{Digest: digest, ShortDigest: "0123456789ab",
					References: []string{"registry.example.com/org/app:v1@" + digest}},
				Cache: &v1alpha1.CacheStatus{Hits: 3, Misses: 3},
				Stages: []v1alpha1.StageStatus{
					{Name: "build", Instructions: 4, CacheHits: 3, Duration: "1.5s"},
					{Name: "1", Instructions: 2, Duration: "200ms"},
				},
				Conditions: []metav1.Condition{cond("Ready", metav1.ConditionTrue, "Succeeded",
					"Built and pushed "+digest+" in 1m23s, 3 of 6 cache lookups hit")},
			},
		},
		{
			name: "succeeded after a retry clears the failure and Reconciling",
			status: func() v1alpha1.ImageBuildStatus {
				st := started()
				st.Phase = v1alpha1.PhaseRunning
				st.Retries = 1
				st.Failure = &v1alpha1.Failure{Reason: "Evicted"}
				st.Conditions = []metav1.Condition{cond("Reconciling", metav1.ConditionTrue, "Building", "x")}
				return st
			}(),
			pod: makePod("app-1-1").Terminated(t0, t1, 0, "Completed", encodeResult(result.Result{Success: true})).Obj(),
			want: v1alpha1.ImageBuildStatus{
				Phase: v1alpha1.PhaseSucceeded, ObservedGeneration: 1, Attempt: 1, Retries: 1, PodName: "app-1-1",
				WarningCount: ptr.To[int32](0),
				StartTime:    mt(t0), CompletionTime: mt(t1), Duration: "1m23s",
				Cache: &v1alpha1.CacheStatus{},
				Conditions: []metav1.Condition{cond("Ready", metav1.ConditionTrue, "Succeeded",
					"Built and pushed the image in 1m23s, 0 of 0 cache lookups hit")},
			},
		},
		{
			name:   "Dockerfile error names the line",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonDockerfileInvalid, Message: "unknown instruction: FORM", Line: 3, Instruction: "FORM busybox"},
			})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "DockerfileInvalid", Message: "unknown instruction: FORM", Line: 3,
				Instruction: "FORM busybox", ExitCode: 1, Pod: "app-1-1", Container: "executor"},
				"Dockerfile line 3: unknown instruction: FORM", nil, ""),
		},
		{
			// Executors before the result's message lost its location wrote
			// "Dockerfile line 3 (FROM ${BASE}): ..."; the line is named once.
			name:   "a message that names its line already is not prefixed again",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonBaseImagePullFailed, Message: "Dockerfile line 3 (FROM ${BASE}): base name (${BASE}) should not be blank", Line: 3},
			})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "BaseImagePullFailed", Message: "Dockerfile line 3 (FROM ${BASE}): base name (${BASE}) should not be blank", Line: 3,
				ExitCode: 1, Pod: "app-1-1", Container: "executor"},
				"Dockerfile line 3 (FROM ${BASE}): base name (${BASE}) should not be blank", nil, ""),
		},
		{
			name:   "a failed build's duration is the executor's when it reports one",
			status: func() v1alpha1.ImageBuildStatus { st := started(); st.StartTime = mt(t0); return st }(),
			pod: makePod("app-1-1").Terminated(t0, t0, 1, "Error", encodeResult(result.Result{
				Millis:  111,
				Failure: &result.Failure{Reason: result.ReasonCopyFailed, Message: `COPY nope: "/nope": not found`, Line: 2},
			})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "CopyFailed", Message: `COPY nope: "/nope": not found`, Line: 2,
				ExitCode: 1, Pod: "app-1-1", Container: "executor"}, `Dockerfile line 2: COPY nope: "/nope": not found`, mt(t0), "111ms"),
		},
		{
			name:   "a build under a second reads as such",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t0, 0, "Completed", encodeResult(result.Result{
				Success: true, Millis: 111,
				Stages: []result.Stage{{Name: "0", Instructions: 1, Millis: 42}},
			})).Obj(),
			want: v1alpha1.ImageBuildStatus{
				Phase: v1alpha1.PhaseSucceeded, ObservedGeneration: 1, Attempt: 1, PodName: "app-1-1",
				WarningCount: ptr.To[int32](0),
				StartTime:    mt(t0), CompletionTime: mt(t0), Duration: "111ms",
				Cache:  &v1alpha1.CacheStatus{},
				Stages: []v1alpha1.StageStatus{{Name: "0", Instructions: 1, Duration: "42ms"}},
				Conditions: []metav1.Condition{cond("Ready", metav1.ConditionTrue, "Succeeded",
					"Built and pushed the image in 111ms, 0 of 0 cache lookups hit")},
			},
		},
		{
			name:   "RUN failure with its exit code",
			status: func() v1alpha1.ImageBuildStatus { st := started(); st.StartTime = mt(t0); return st }(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonRunFailed, Message: "RUN exited with 2", Line: 5, ExitCode: 2},
			})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "RunFailed", Message: "RUN exited with 2", Line: 5, ExitCode: 2,
				Pod: "app-1-1", Container: "executor"}, "Dockerfile line 5: RUN exited with 2", mt(t0), "2m0s"),
		},
		{
			name:   "OOMKilled",
			status: started(),
			pod:    makePod("app-1-1").Terminated(t0, t1, 137, "OOMKilled", "").Obj(),
			want: failed(v1alpha1.Failure{Reason: "OOMKilled", Message: "The executor ran out of memory; raise spec.resources.limits.memory",
				ExitCode: 137, Pod: "app-1-1", Container: "executor"},
				"The executor ran out of memory; raise spec.resources.limits.memory", nil, ""),
		},
		{
			name:   "evicted by the kubelet",
			status: started(),
			pod:    makePod("app-1-1").Phase(corev1.PodFailed).Reason("Evicted", "The node was low on resource: ephemeral-storage.").Obj(),
			want: failed(v1alpha1.Failure{Reason: "Evicted", Message: "Executor pod was evicted: The node was low on resource: ephemeral-storage.", Pod: "app-1-1"},
				"Executor pod was evicted: The node was low on resource: ephemeral-storage.", nil, ""),
		},
		{
			// One executor at a time: the attempt ends when the evicted pod has stopped.
			name:   "evicted through the eviction API, still stopping",
			status: started(),
			pod: makePod("app-1-1").Running(t0).Deleting(now).
				Disrupted("EvictionByEvictionAPI", "Eviction API: evicting").Obj(),
			want: func() v1alpha1.ImageBuildStatus {
				st := started()
				st.Phase = v1alpha1.PhaseRunning
				st.StartTime = mt(t0)
				msg := "Executor pod was disrupted: EvictionByEvictionAPI: Eviction API: evicting; the attempt ends once it has stopped"
				st.Conditions = []metav1.Condition{
					cond("Ready", metav1.ConditionFalse, "Evicted", msg),
					cond("Reconciling", metav1.ConditionTrue, "Evicted", msg),
				}
				return st
			}(),
		},
		{
			name:   "evicted through the eviction API, stopped",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonRunFailed, Message: "RUN sleep 45: signal: killed", Line: 4}})).
				DeletedAt(t1, 30).Disrupted("EvictionByEvictionAPI", "Eviction API: evicting").Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "Evicted", Message: "Executor pod was disrupted: EvictionByEvictionAPI: Eviction API: evicting",
				ExitCode: 1, Pod: "app-1-1", Container: "executor"},
				"Executor pod was disrupted: EvictionByEvictionAPI: Eviction API: evicting", nil, ""),
		},
		{
			name:   "deadline exceeded is a timeout",
			status: started(),
			pod:    makePod("app-1-1").Deadline(600).Terminated(t0, t1, 137, "Error", "").Reason("DeadlineExceeded", "Pod was active on the node longer than the specified deadline").Obj(),
			want: failed(v1alpha1.Failure{Reason: "Timeout", Message: "The build ran longer than its timeout (600s)", ExitCode: 137, Pod: "app-1-1", Container: "executor"},
				"The build ran longer than its timeout (600s)", nil, ""),
		},
		{
			name:   "pod gone mid-build",
			status: started(),
			pod:    nil,
			want: failed(v1alpha1.Failure{Reason: "PodDeleted", Message: "Executor pod app-1-1 was deleted before the build ended", Pod: "app-1-1"},
				"Executor pod app-1-1 was deleted before the build ended", nil, ""),
		},
		{
			// It may go on building and pushing for its grace period: no other attempt may
			// start before it has stopped.
			name:   "pod being deleted mid-build is waited for",
			status: func() v1alpha1.ImageBuildStatus { st := started(); st.Phase = v1alpha1.PhaseRunning; return st }(),
			pod:    makePod("app-1-1").Running(t0).DeletedAt(now, 30).Obj(),
			want: func() v1alpha1.ImageBuildStatus {
				st := started()
				st.Phase = v1alpha1.PhaseRunning
				st.StartTime = mt(t0)
				msg := "Executor pod app-1-1 is being deleted (attempt 1); the attempt ends once it has stopped"
				st.Conditions = []metav1.Condition{
					cond("Ready", metav1.ConditionFalse, "PodDeleted", msg),
					cond("Reconciling", metav1.ConditionTrue, "PodDeleted", msg),
				}
				return st
			}(),
		},
		{
			// The executor stopped by the deletion reports the RUN step it broke off: the
			// deletion is the cause, and the attempt may be retried.
			name:   "pod that failed once deleted was stopped by the deletion",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonRunFailed, Message: "RUN sleep 45: signal: killed", Line: 4}})).
				DeletedAt(t1, 30).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "PodDeleted", Message: "Executor pod app-1-1 was deleted before the build ended",
				ExitCode: 1, Pod: "app-1-1", Container: "executor"},
				"Executor pod app-1-1 was deleted before the build ended", nil, ""),
		},
		{
			name:   "pod killed at the end of its grace period was stopped by the deletion",
			status: started(),
			pod:    makePod("app-1-1").Terminated(t0, t1, 137, "Error", "").DeletedAt(t1.Add(-30*time.Second), 30).Obj(),
			want: failed(v1alpha1.Failure{Reason: "PodDeleted", Message: "Executor pod app-1-1 was deleted before the build ended",
				ExitCode: 137, Pod: "app-1-1", Container: "executor"},
				"Executor pod app-1-1 was deleted before the build ended", nil, ""),
		},
		{
			name:   "pod that failed before it was deleted keeps its reason",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonRunFailed, Message: "RUN exited with 2", Line: 5, ExitCode: 2}})).
				DeletedAt(t1.Add(2*time.Second), 30).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "RunFailed", Message: "RUN exited with 2", Line: 5, ExitCode: 2,
				Pod: "app-1-1", Container: "executor"}, "Dockerfile line 5: RUN exited with 2", nil, ""),
		},
		{
			name:   "executor killed by SIGKILL",
			status: started(),
			pod:    makePod("app-1-1").Terminated(t0, t1, 137, "Error", "").Obj(),
			want: failed(v1alpha1.Failure{Reason: "ExecutorKilled", Message: "The executor was killed by SIGKILL (exit code 137) before it wrote a result",
				ExitCode: 137, Pod: "app-1-1", Container: "executor"},
				"The executor was killed by SIGKILL (exit code 137) before it wrote a result", nil, ""),
		},
		{
			name:   "executor killed by SIGTERM without writing a result",
			status: started(),
			pod:    makePod("app-1-1").Terminated(t0, t1, 143, "Error", "").Obj(),
			want: failed(v1alpha1.Failure{Reason: "ExecutorKilled", Message: "The executor was killed by SIGTERM (exit code 143) before it wrote a result",
				ExitCode: 143, Pod: "app-1-1", Container: "executor"},
				"The executor was killed by SIGTERM (exit code 143) before it wrote a result", nil, ""),
		},
		{
			name:   "a source fetch the executor found transient says so",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonSourceFetchFailed, Message: "fetching git context: the host is unreachable", Transient: true}})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "SourceFetchFailed", Message: "fetching git context: the host is unreachable", Transient: true,
				ExitCode: 1, Pod: "app-1-1", Container: "executor"},
				"fetching git context: the host is unreachable", nil, ""),
		},
		{
			// The executor image is the spec's to choose: a reason the API server would refuse
			// in a condition must not reach one, or no status patch could succeed again.
			name:   "an invalid reason from the executor is BuildFailed",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 1, "Error", encodeResult(result.Result{
				Failure: &result.Failure{Reason: "no such reason!", Message: "broke"}})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "BuildFailed", Message: "broke", ExitCode: 1, Pod: "app-1-1", Container: "executor"},
				"broke", nil, ""),
		},
		{
			name:   "exit without a result",
			status: started(),
			pod:    makePod("app-1-1").Terminated(t0, t1, 2, "Error", "panic: oops").Obj(),
			want: failed(v1alpha1.Failure{Reason: "BuildFailed", Message: "The executor exited with code 2 without a result", ExitCode: 2, Pod: "app-1-1", Container: "executor"},
				"The executor exited with code 2 without a result", nil, ""),
		},
		{
			name:   "failed pod without a container status",
			status: started(),
			pod:    makePod("app-1-1").Phase(corev1.PodFailed).Reason("NodeLost", "node went away").Obj(),
			want: failed(v1alpha1.Failure{Reason: "PodFailed", Message: "Executor pod failed: NodeLost: node went away", Pod: "app-1-1"},
				"Executor pod failed: NodeLost: node went away", nil, ""),
		},
		{
			name:   "exit 0 with a failed result",
			status: started(),
			pod: makePod("app-1-1").Terminated(t0, t1, 0, "Completed", encodeResult(result.Result{
				Failure: &result.Failure{Reason: result.ReasonPushFailed, Message: "pushing: 401"}})).Obj(),
			want: failedReported(v1alpha1.Failure{Reason: "PushFailed", Message: "pushing: 401", Pod: "app-1-1", Container: "executor"},
				"pushing: 401", nil, ""),
		},
		{
			name:   "finished status is left alone",
			status: v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhaseSucceeded, PodName: "app-1-1"},
			pod:    nil,
			want:   v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhaseSucceeded, PodName: "app-1-1"},
		},
		{
			name:   "waiting for a retry is left alone",
			status: v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhasePending, PodName: "app-1-1", NextRetryTime: mt(now)},
			pod:    nil,
			want:   v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhasePending, PodName: "app-1-1", NextRetryTime: mt(now)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := makeImageBuild("app", "ns").Status(tc.status).Obj()
			got := computeStatus(ib, tc.pod, now)
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(metav1.Condition{}, "LastTransitionTime")); diff != "" {
				t.Errorf("computeStatus() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestImageBuild_buildDuration(t *testing.T) {
	tests := []struct {
		name       string
		millis     int64
		start, end *metav1.Time
		want       string
	}{
		{"executor's milliseconds", 111, mt(t0), mt(t0), "111ms"},
		{"executor's measure wins over the timestamps", 1540, mt(t0), mt(t1), "1.5s"},
		{"tenths under a minute", 59_949, nil, nil, "59.9s"},
		{"whole seconds from a minute", 83_400, nil, nil, "1m23s"},
		{"an hour", 3_600_000, nil, nil, "1h0m0s"},
		{"timestamps without a result", 0, mt(t0), mt(t1), "1m23s"},
		{"timestamps in the same second", 0, mt(t0), mt(t0), "<1s"},
		{"timestamps a few seconds apart", 0, mt(t0), mt(t0.Add(3 * time.Second)), "3s"},
		{"no start", 0, nil, mt(t1), ""},
		{"end before start", 0, mt(t1), mt(t0), ""},
		{"a negative report is ignored", -5, mt(t0), mt(t1), "1m23s"},
		{"an absurd report is ignored", 1 << 62, mt(t0), mt(t1), "1m23s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := buildDuration(result.Result{Millis: tc.millis}, tc.start, tc.end); got != tc.want {
				t.Errorf("buildDuration(%d ms, %v, %v) = %q, want %q", tc.millis, tc.start, tc.end, got, tc.want)
			}
		})
	}
}

func TestImageBuild_executorReason(t *testing.T) {
	tests := map[result.Reason]string{
		"PushFailed":              "PushFailed",
		"Custom_Reason:with,More": "Custom_Reason:with,More",
		"":                        "BuildFailed",
		"1Digit":                  "BuildFailed",
		"Trailing:":               "BuildFailed",
		"With space":              "BuildFailed",
		"Dash-ed":                 "BuildFailed",
		"Ünicode":                 "BuildFailed",
		result.Reason("A" + strings.Repeat("b", 1023)): "A" + strings.Repeat("b", 1023),
		result.Reason("A" + strings.Repeat("b", 1024)): "BuildFailed",
	}
	for in, want := range tests {
		if got := executorReason(in); got != want {
			t.Errorf("executorReason(%.40q) = %.40q, want %.40q", in, got, want)
		}
	}
}

// --max-build-retries=0 means no retry, not the default (3) as when it was taken for unset.
func TestImageBuildReconciler_retryPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  *int32
		want int32
	}{
		{"unset", nil, 3},
		{"zero", ptr.To[int32](0), 0},
		{"two", ptr.To[int32](2), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &ImageBuildReconciler{Options: Options{MaxRetries: tc.max}}
			p := r.retryPolicy()
			if p.maxRetries != tc.want || p.backoff != 10*time.Second || p.maxBackoff != 5*time.Minute {
				t.Fatalf("retryPolicy() = %+v, want %d retries, backoff 10s to 5m", p, tc.want)
			}
			st := started()
			fail(&st, 1, v1alpha1.Failure{Reason: v1alpha1.ReasonPodDeleted, Message: "gone"}, result.Result{}, now)
			wait := planRetry(&st, 1, p, now)
			if retried := wait > 0; retried != (tc.want > 0) {
				t.Errorf("planRetry with %d retries left: wait %s, phase %s", tc.want, wait, st.Phase)
			}
			if tc.want == 0 && (st.Phase != v1alpha1.PhaseFailed || st.NextRetryTime != nil) {
				t.Errorf("with no retries the build should stay Failed: phase %s, nextRetryTime %v", st.Phase, st.NextRetryTime)
			}
		})
	}
}

func TestImageBuild_planRetry(t *testing.T) {
	policy := retryPolicy{maxRetries: 2, backoff: 10 * time.Second, maxBackoff: 15 * time.Second}
	failedWith := func(reason string, retries int32) v1alpha1.ImageBuildStatus {
		st := started()
		st.Phase = v1alpha1.PhaseFailed
		st.Retries = retries
		st.CompletionTime = mt(now)
		st.Duration = "1s"
		st.Failure = &v1alpha1.Failure{Reason: reason, Message: "m"}
		st.Conditions = []metav1.Condition{cond("Stalled", metav1.ConditionTrue, reason, "m")}
		return st
	}
	retrying := func(reason string, retries int32, wait time.Duration, msg string) v1alpha1.ImageBuildStatus {
		st := started()
		st.Retries = retries
		st.NextRetryTime = mt(now.Add(wait))
		st.Failure = &v1alpha1.Failure{Reason: reason, Message: "m"}
		st.Conditions = []metav1.Condition{
			cond("Ready", metav1.ConditionFalse, "Retrying", msg),
			cond("Reconciling", metav1.ConditionTrue, "Retrying", msg),
		}
		return st
	}
	tests := []struct {
		name     string
		status   v1alpha1.ImageBuildStatus
		want     v1alpha1.ImageBuildStatus
		wantWait time.Duration
	}{
		{"pod deleted is retried", failedWith("PodDeleted", 0),
			retrying("PodDeleted", 1, 10*time.Second, "Attempt 1 failed (PodDeleted: m); retry 1 of 2 in 10s"), 10 * time.Second},
		{"backoff doubles up to the bound", failedWith("Evicted", 1),
			retrying("Evicted", 2, 15*time.Second, "Attempt 1 failed (Evicted: m); retry 2 of 2 in 15s"), 15 * time.Second},
		{"push failure is retried", failedWith("PushFailed", 0),
			retrying("PushFailed", 1, 10*time.Second, "Attempt 1 failed (PushFailed: m); retry 1 of 2 in 10s"), 10 * time.Second},
		{"a killed executor is retried", failedWith("ExecutorKilled", 0),
			retrying("ExecutorKilled", 1, 10*time.Second, "Attempt 1 failed (ExecutorKilled: m); retry 1 of 2 in 10s"), 10 * time.Second},
		{"retries run out", failedWith("PodDeleted", 2), failedWith("PodDeleted", 2), 0},
		{"Dockerfile errors are never retried", failedWith("DockerfileInvalid", 0), failedWith("DockerfileInvalid", 0), 0},
		{"source errors are never retried", failedWith("SourceFetchFailed", 0), failedWith("SourceFetchFailed", 0), 0},
		{"OOM kills are not retried with the same limits", failedWith("OOMKilled", 0), failedWith("OOMKilled", 0), 0},
		{"timeouts are not retried", failedWith("Timeout", 0), failedWith("Timeout", 0), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.status
			wait := planRetry(&st, 1, policy, now)
			if wait != tc.wantWait {
				t.Errorf("planRetry() wait = %s, want %s", wait, tc.wantWait)
			}
			if diff := cmp.Diff(tc.want, st, cmpopts.IgnoreFields(metav1.Condition{}, "LastTransitionTime")); diff != "" {
				t.Errorf("planRetry() status (-want +got):\n%s", diff)
			}
		})
	}
}

// spec.retry: its limit replaces the manager's, and sourceFetch retries a SourceFetchFailed
// that the executor found transient, never one the server refused.
func TestImageBuild_planRetry_specRetry(t *testing.T) {
	manager := retryPolicy{maxRetries: 3, backoff: 10 * time.Second, maxBackoff: time.Minute}
	sourceFailure := func(transient bool) v1alpha1.Failure {
		return v1alpha1.Failure{Reason: "SourceFetchFailed", Message: "fetching git context", Transient: transient}
	}
	tests := []struct {
		name        string
		retry       *v1alpha1.Retry
		failure     v1alpha1.Failure
		retries     int32
		wantRetried bool
	}{
		{"no spec.retry: a lost pod is retried", nil, v1alpha1.Failure{Reason: "PodDeleted"}, 0, true},
		{"no spec.retry: the manager's limit", nil, v1alpha1.Failure{Reason: "PodDeleted"}, 3, false},
		{"no spec.retry: an unreachable git server is not retried", nil, sourceFailure(true), 0, false},
		{"limit 0 turns retries off", &v1alpha1.Retry{Limit: ptr.To[int32](0)}, v1alpha1.Failure{Reason: "PodDeleted"}, 0, false},
		{"a limit above the manager's", &v1alpha1.Retry{Limit: ptr.To[int32](5)}, v1alpha1.Failure{Reason: "PushFailed"}, 4, true},
		{"a limit below the manager's", &v1alpha1.Retry{Limit: ptr.To[int32](1)}, v1alpha1.Failure{Reason: "PushFailed"}, 1, false},
		{"sourceFetch: an unreachable git server is retried", &v1alpha1.Retry{SourceFetch: true}, sourceFailure(true), 0, true},
		{"sourceFetch: within the manager's limit", &v1alpha1.Retry{SourceFetch: true}, sourceFailure(true), 3, false},
		{"sourceFetch with a limit", &v1alpha1.Retry{SourceFetch: true, Limit: ptr.To[int32](6)}, sourceFailure(true), 5, true},
		{"sourceFetch: a refused source is never retried", &v1alpha1.Retry{SourceFetch: true}, sourceFailure(false), 0, false},
		{"sourceFetch does not retry a Dockerfile error", &v1alpha1.Retry{SourceFetch: true},
			v1alpha1.Failure{Reason: "DockerfileInvalid", Transient: true}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ib := makeImageBuild("app", "ns").Obj()
			ib.Spec.Retry = tc.retry
			st := started()
			st.Retries = tc.retries
			fail(&st, 1, tc.failure, result.Result{}, now)
			wait := planRetry(&st, 1, manager.forBuild(ib), now)
			if retried := wait > 0; retried != tc.wantRetried {
				t.Fatalf("planRetry: retried=%v (wait %s, phase %s), want %v", retried, wait, st.Phase, tc.wantRetried)
			}
			if !tc.wantRetried && (st.Phase != v1alpha1.PhaseFailed || st.NextRetryTime != nil) {
				t.Errorf("a failure not retried should stay Failed: phase %s, nextRetryTime %v", st.Phase, st.NextRetryTime)
			}
		})
	}
	// forBuild leaves the backoff the manager's.
	p := manager.forBuild(makeImageBuild("app", "ns").Obj())
	if p != manager {
		t.Errorf("forBuild without spec.retry = %+v, want the manager's %+v", p, manager)
	}
}

func TestImageBuild_newBuildStatus(t *testing.T) {
	prev := v1alpha1.ImageBuildStatus{
		Phase: v1alpha1.PhaseFailed, ObservedGeneration: 1, Attempt: 2, Retries: 1, PodName: "app-1-2",
		Failure:    &v1alpha1.Failure{Reason: "RunFailed"},
		Conditions: []metav1.Condition{cond("Ready", metav1.ConditionFalse, "RunFailed", "x"), cond("Stalled", metav1.ConditionTrue, "RunFailed", "x")},
	}
	t.Run("new generation starts at attempt 1", func(t *testing.T) {
		ib := makeImageBuild("app", "ns").Generation(2).Status(prev).Obj()
		if !isNewBuild(ib) {
			t.Fatal("isNewBuild() = false, want true")
		}
		want := v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhasePending, ObservedGeneration: 2, Attempt: 1,
			Conditions: []metav1.Condition{cond("Ready", metav1.ConditionFalse, "RunFailed", "x")}}
		if diff := cmp.Diff(want, newBuildStatus(ib)); diff != "" {
			t.Errorf("newBuildStatus() (-want +got):\n%s", diff)
		}
	})
	t.Run("rebuild continues the attempts", func(t *testing.T) {
		ib := makeImageBuild("app", "ns").Status(prev).Obj()
		if isNewBuild(ib) {
			t.Fatal("isNewBuild() = true before the annotation")
		}
		ib.Annotations = map[string]string{v1alpha1.RebuildAnnotation: "2026-01-01"}
		if !isNewBuild(ib) {
			t.Fatal("isNewBuild() = false, want true")
		}
		want := v1alpha1.ImageBuildStatus{Phase: v1alpha1.PhasePending, ObservedGeneration: 1, ObservedRebuild: "2026-01-01", Attempt: 3,
			Conditions: []metav1.Condition{cond("Ready", metav1.ConditionFalse, "RunFailed", "x")}}
		if diff := cmp.Diff(want, newBuildStatus(ib)); diff != "" {
			t.Errorf("newBuildStatus() (-want +got):\n%s", diff)
		}
	})
}
