package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// TestImageBuildReconciler_Reconcile_sshAgent: spec.sshAgent names a Secret of the ImageBuild's
// namespace only: one of that name in another namespace is not found (the build waits,
// SecretNotFound naming the field); one without ssh-privatekey is named as such; once the key
// exists, the pod's init container alone mounts it, as ssh/default of the staged credentials,
// and the key is nowhere in the pod spec or the status.
func TestImageBuildReconciler_Reconcile_sshAgent(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	other := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	ctx := context.Background()
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nc3NoLWM0bmFyeS0wYTRm\n-----END OPENSSH PRIVATE KEY-----\n"

	// Another tenant's Secret of the name the ImageBuild gives.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "deploy", Namespace: other},
		Type: corev1.SecretTypeSSHAuth, StringData: map[string]string{"ssh-privatekey": key}}); err != nil {
		t.Fatal(err)
	}
	ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.SSHAgent = &v1alpha1.SSHAgent{SecretRef: &corev1.LocalObjectReference{Name: "deploy"}}
	})
	ib := waitStatus(t, c, ibKey, "SecretNotFound", conditionIs("Ready", metav1.ConditionFalse, "SecretNotFound"))
	if msg := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready").Message; !strings.Contains(msg, `Secret "deploy" (spec.sshAgent.secretRef) not found`) {
		t.Errorf("Ready message = %q, want it to say the Secret of spec.sshAgent.secretRef is not found", msg)
	}

	// In the ImageBuild's namespace, without the key.
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "deploy", Namespace: ns}, StringData: map[string]string{"id_ed25519": key}}
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, ibKey, "the missing key named", func(ib *v1alpha1.ImageBuild) bool {
		cond := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready")
		return cond != nil && cond.Reason == "SecretNotFound" && strings.Contains(cond.Message, "(spec.sshAgent.secretRef) has no ssh-privatekey key")
	})
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "deploy"}, s); err != nil {
		t.Fatal(err)
	}
	s.StringData = map[string]string{"ssh-privatekey": key}
	if err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}

	pod := waitPod(t, c, ns, "app-1-1")
	ib = waitStatus(t, c, ibKey, "PodCreated", conditionIs("Ready", metav1.ConditionFalse, "PodCreated"))
	b, _ := pod.Marshal()
	if strings.Contains(string(b), "c3NoLWM0bmFyeS0wYTRm") || strings.Contains(describe(ib), "c3NoLWM0bmFyeS0wYTRm") {
		t.Error("the key reached the pod spec or the status")
	}
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers = %d, want the one that stages the credentials", len(pod.Spec.InitContainers))
	}
	var staged bool
	for _, m := range pod.Spec.InitContainers[0].VolumeMounts {
		if m.MountPath == "/var/run/secrets/slipway/ssh" {
			staged = m.ReadOnly
		}
	}
	if !staged {
		t.Errorf("the init container does not mount the ssh agent's Secret read-only at /var/run/secrets/slipway/ssh: %v", pod.Spec.InitContainers[0].VolumeMounts)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Name == "ssh-agent" {
			if v.Secret.SecretName != "deploy" || len(v.Secret.Items) != 1 || v.Secret.Items[0] != (corev1.KeyToPath{Key: "ssh-privatekey", Path: "default"}) {
				t.Errorf("ssh-agent volume = %+v, want deploy's ssh-privatekey as default", v.Secret)
			}
		}
	}
	if exec := pod.Spec.Containers[0]; len(exec.VolumeMounts) != 1 || exec.VolumeMounts[0].Name != "credentials" {
		t.Errorf("executor mounts = %v, want only the staged credentials", exec.VolumeMounts)
	}
}

// TestImageBuild_validation_sshAgent: spec.sshAgent gives exactly one key: a named Secret, or
// the git source's (gitSecret: true).
func TestImageBuild_validation_sshAgent(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	for i, tc := range []struct {
		agent *v1alpha1.SSHAgent
		want  string
	}{
		{&v1alpha1.SSHAgent{}, "exactly one of secretRef and gitSecret: true must be set"},
		{&v1alpha1.SSHAgent{GitSecret: false}, "exactly one of secretRef and gitSecret: true must be set"},
		{&v1alpha1.SSHAgent{SecretRef: &corev1.LocalObjectReference{Name: "k"}, GitSecret: true}, "exactly one of secretRef and gitSecret: true must be set"},
		{&v1alpha1.SSHAgent{SecretRef: &corev1.LocalObjectReference{}}, "secretRef.name must name a Secret"},
	} {
		ib := &v1alpha1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bad-%d", i), Namespace: ns},
			Spec: v1alpha1.ImageBuildSpec{
				Source:   v1alpha1.Source{Git: v1alpha1.GitSource{URL: "https://git.example.com/org/app.git"}},
				Output:   v1alpha1.Output{Image: "registry.example.com/org/app:v1"},
				SSHAgent: tc.agent,
			},
		}
		err := c.Create(context.Background(), ib)
		if err == nil || !strings.Contains(err.Error(), "spec.sshAgent") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("creating an ImageBuild with sshAgent %+v: %v, want a refusal naming spec.sshAgent: %s", tc.agent, err, tc.want)
		}
	}
}

// TestImageBuildReconciler_Reconcile_sshAgentGitSecret: the git source's key is a RUN step's
// agent only when spec.sshAgent.gitSecret says so, and only when it is an ssh key: with a
// basic-auth git Secret the build waits, saying why.
func TestImageBuildReconciler_Reconcile_sshAgentGitSecret(t *testing.T) {
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, Options{})
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "basic", Namespace: ns},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": "u", "password": "p"}}); err != nil {
		t.Fatal(err)
	}
	ibKey := newImageBuild(t, c, ns, "app", func(ib *v1alpha1.ImageBuild) {
		ib.Spec.Source.Git.SecretRef = &corev1.LocalObjectReference{Name: "basic"}
		ib.Spec.SSHAgent = &v1alpha1.SSHAgent{GitSecret: true}
	})
	waitStatus(t, c, ibKey, "gitSecret refused for a basic-auth git Secret", func(ib *v1alpha1.ImageBuild) bool {
		cond := apimeta.FindStatusCondition(ib.Status.Conditions, "Ready")
		return cond != nil && cond.Reason == "SecretNotFound" && strings.Contains(cond.Message, "spec.sshAgent.gitSecret needs spec.source.git.secretRef to name a Secret of type kubernetes.io/ssh-auth")
	})
}
