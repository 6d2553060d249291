package controllers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers/webhook"
)

// A GitHub push webhook, verified with the ImageBuild's Secret, reaches the controller through
// the annotation and starts a build of the commit the manager lists (cause Webhook); a request
// signed with another secret gets 401 and changes nothing.
func TestWebhookReceiver_githubPushStartsABuild(t *testing.T) {
	repo := newGitRepo(t)
	c := startEnv(t)
	ns := newNamespace(t, c, nil)
	startManager(t, ns, triggerOptions())
	k := kubelet{t, c}
	const hookSecret = "gh-hook-s3cret"
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns},
		StringData: map[string]string{"secret": hookSecret}}); err != nil {
		t.Fatal(err)
	}
	key := followingBuild(t, c, ns, repo, v1alpha1.RunPolicySerial)
	ib := &v1alpha1.ImageBuild{}
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Spec.Triggers = &v1alpha1.Triggers{Webhook: &v1alpha1.WebhookTrigger{SecretRef: corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "hook"}, Key: "secret"}}}
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatal(err)
	}
	// Generation 2 is the build to finish; the push comes after it.
	waitPod(t, c, ns, "app-2-1")
	k.finish(ns, "app-2-1", 0, "Completed", commitResult(repo.head()))
	// (Build 1, of generation 1, may or may not have started before the update.)
	n := waitStatus(t, c, key, "generation 2 built", phaseIs(v1alpha1.PhaseSucceeded)).Status.BuildNumber

	recv := &WebhookReceiver{Client: c, APIReader: c, Log: ctrl.Log.WithName("webhook-test")}
	srv := httptest.NewServer(recv.Handler())
	defer srv.Close()
	b := repo.push("two")
	body, _ := json.Marshal(map[string]any{"ref": "refs/heads/main", "after": "1111111111111111111111111111111111111111",
		"repository": map[string]any{"clone_url": repo.url, "html_url": repo.url}})
	post := func(secret string) int {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+webhook.Path(key), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var answer bytes.Buffer
		_, _ = answer.ReadFrom(resp.Body)
		t.Logf("webhook answer %d: %s", resp.StatusCode, answer.String())
		return resp.StatusCode
	}

	if code := post("another-secret"); code != http.StatusUnauthorized {
		t.Errorf("a request signed with another secret: %d, want 401", code)
	}
	time.Sleep(300 * time.Millisecond)
	if err := c.Get(context.Background(), key, ib); err != nil {
		t.Fatal(err)
	}
	if _, ok := ib.Annotations[WebhookAnnotation]; ok || ib.Status.BuildNumber != n {
		t.Fatalf("an unverified request changed the ImageBuild: annotations %v, %s", ib.Annotations, describe(ib))
	}

	if code := post(hookSecret); code != http.StatusAccepted {
		t.Fatalf("a verified push: %d, want 202", code)
	}
	// The payload's "after" commit is not what is built: the listing's is.
	builtFrom(t, waitPod(t, c, ns, "app-2-2"), repo.url, b, int(n+1))
	got := waitStatus(t, c, key, "the next build", func(ib *v1alpha1.ImageBuild) bool { return ib.Status.BuildNumber == n+1 })
	if got.Status.Cause != v1alpha1.CauseWebhook {
		t.Errorf("cause = %s, want Webhook", got.Status.Cause)
	}
	if v := got.Annotations[WebhookAnnotation]; v == "" {
		t.Error("no webhook annotation")
	}
}
