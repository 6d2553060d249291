package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

// ibWrapper builds ImageBuilds for tests: makeImageBuild(name, ns).Git(...).Obj().
type ibWrapper struct{ v1alpha1.ImageBuild }

func makeImageBuild(name, ns string) *ibWrapper {
	return &ibWrapper{v1alpha1.ImageBuild{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageBuild"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name), Generation: 1},
		Spec: v1alpha1.ImageBuildSpec{
			Source:     v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
			Dockerfile: "Dockerfile",
			Output:     v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
		},
	}}
}

func (w *ibWrapper) Obj() *v1alpha1.ImageBuild { return w.ImageBuild.DeepCopy() }

func (w *ibWrapper) Generation(g int64) *ibWrapper { w.ObjectMeta.Generation = g; return w }
func (w *ibWrapper) Revision(r string) *ibWrapper  { w.Spec.Source.Git.Revision = r; return w }
func (w *ibWrapper) Git(url string) *ibWrapper     { w.Spec.Source.Git.URL = url; return w }
func (w *ibWrapper) Image(i string) *ibWrapper     { w.Spec.Output.Image = i; return w }
func (w *ibWrapper) Timeout(d time.Duration) *ibWrapper {
	w.Spec.Timeout = &metav1.Duration{Duration: d}
	return w
}
func (w *ibWrapper) GitSecret(name string) *ibWrapper {
	w.Spec.Source.Git.SecretRef = &corev1.LocalObjectReference{Name: name}
	return w
}
func (w *ibWrapper) PushSecret(name string) *ibWrapper {
	w.Spec.Output.PushSecretRef = &corev1.LocalObjectReference{Name: name}
	return w
}
func (w *ibWrapper) Status(st v1alpha1.ImageBuildStatus) *ibWrapper {
	w.ImageBuild.Status = st
	return w
}

// podWrapper builds executor pods for tests.
type podWrapper struct{ corev1.Pod }

func makePod(name string) *podWrapper {
	return &podWrapper{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}}}
}

func (w *podWrapper) Obj() *corev1.Pod { return w.Pod.DeepCopy() }

func (w *podWrapper) Phase(p corev1.PodPhase) *podWrapper { w.Pod.Status.Phase = p; return w }
func (w *podWrapper) Reason(reason, msg string) *podWrapper {
	w.Pod.Status.Reason, w.Pod.Status.Message = reason, msg
	return w
}
func (w *podWrapper) Deleting(at time.Time) *podWrapper {
	w.DeletionTimestamp = &metav1.Time{Time: at}
	return w
}

// DeletedAt is a deletion asked for at asked with a grace period of grace seconds, as the API
// server records it: deletionTimestamp is asked + grace.
func (w *podWrapper) DeletedAt(asked time.Time, grace int64) *podWrapper {
	w.DeletionTimestamp = &metav1.Time{Time: asked.Add(time.Duration(grace) * time.Second)}
	w.DeletionGracePeriodSeconds = ptr.To(grace)
	return w
}
func (w *podWrapper) Running(started time.Time) *podWrapper {
	w.Pod.Status.Phase = corev1.PodRunning
	w.Pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: started}}}}}
	return w
}
func (w *podWrapper) Waiting(reason, msg string) *podWrapper {
	w.Pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}
	return w
}

// Terminated ends the executor container with exit code, reason and termination message.
func (w *podWrapper) Terminated(started, finished time.Time, code int32, reason, msg string) *podWrapper {
	if code == 0 {
		w.Pod.Status.Phase = corev1.PodSucceeded
	} else {
		w.Pod.Status.Phase = corev1.PodFailed
	}
	w.Pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, Message: msg,
			StartedAt: metav1.Time{Time: started}, FinishedAt: metav1.Time{Time: finished},
		}}}}
	return w
}
func (w *podWrapper) Disrupted(reason, msg string) *podWrapper {
	w.Pod.Status.Conditions = append(w.Pod.Status.Conditions, corev1.PodCondition{
		Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: reason, Message: msg})
	return w
}
func (w *podWrapper) Deadline(s int64) *podWrapper {
	w.Spec.ActiveDeadlineSeconds = ptr.To(s)
	return w
}

func encodeResult(r result.Result) string { return string(result.Encode(r)) }
