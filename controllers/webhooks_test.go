package controllers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

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

// secretReads counts the Secrets read through it, and can fail them.
type secretReads struct {
	client.Reader
	mu    sync.Mutex
	n     int
	fail  bool
	delay time.Duration
}

func (r *secretReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.mu.Lock()
	r.n++
	fail, delay := r.fail, r.delay
	r.mu.Unlock()
	time.Sleep(delay)
	if err := ctx.Err(); err != nil {
		return err
	}
	if fail {
		return errors.New("etcdserver: request timed out")
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r *secretReads) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Requests for an ImageBuild with a webhook trigger read its Secret from the API server at most
// once in secretTTL, also when every caller hangs up at once (a cancelled request must not
// cancel the read, or each would cost one) and when many come together; a failed read is
// remembered for a few seconds, not retried by each request.
func TestWebhookReceiver_secretReads(t *testing.T) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: "ns"}, Data: map[string][]byte{"secret": []byte("s3cret")}}
	ib := makeImageBuild("app", "ns").Obj()
	ib.Spec.Triggers = &v1alpha1.Triggers{Webhook: &v1alpha1.WebhookTrigger{SecretRef: corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "hook"}, Key: "secret"}}}
	c := fake.NewClientBuilder().WithScheme(envScheme).WithObjects(secret, ib).Build()
	reads := &secretReads{Reader: c, delay: 50 * time.Millisecond}
	w := &WebhookReceiver{Client: c, APIReader: reads, Log: logr.Discard()}
	key := client.ObjectKeyFromObject(ib)

	hungUp, cancel := context.WithCancel(context.Background())
	cancel()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := w.lookup(hungUp, key); err != nil {
				t.Errorf("lookup: %v", err)
			}
		})
	}
	wg.Wait()
	target, err := w.lookup(context.Background(), key)
	if err != nil || string(target.Secret) != "s3cret" {
		t.Fatalf("lookup = %+v, %v", target, err)
	}
	if n := reads.count(); n != 1 {
		t.Errorf("51 requests, 50 of them hung up at once, read the Secret %d times, want 1", n)
	}

	// A read that fails is answered from memory for secretErrorTTL.
	w2 := &WebhookReceiver{Client: c, APIReader: reads, Log: logr.Discard()}
	reads.mu.Lock()
	reads.fail, reads.n = true, 0
	reads.mu.Unlock()
	for range 20 {
		if _, err := w2.lookup(context.Background(), key); err == nil || errors.Is(err, webhook.ErrNotFound) {
			t.Fatalf("lookup with the API server failing: %v, want an error that is not ErrNotFound", err)
		}
	}
	if n := reads.count(); n != 1 {
		t.Errorf("20 requests while the API server failed read the Secret %d times, want 1", n)
	}
}

// The webhook port refuses headers over 64 KiB (431), before any handler runs.
func TestWebhookReceiver_Start_limitsHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := fake.NewClientBuilder().WithScheme(envScheme).Build()
	w := &WebhookReceiver{Addr: addr, Client: c, APIReader: c, Log: logr.Discard()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	post := func(header string) int {
		t.Helper()
		for range 50 {
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hooks/ns/app", nil)
			req.Header.Set("X-Padding", header)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				time.Sleep(20 * time.Millisecond) // not listening yet
				continue
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		t.Fatal("the receiver did not answer")
		return 0
	}
	if code := post("small"); code != http.StatusUnauthorized {
		t.Errorf("a request for an unknown ImageBuild: %d, want 401", code)
	}
	if code := post(strings.Repeat("a", 100<<10)); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB of headers: %d, want 431", code)
	}
}
