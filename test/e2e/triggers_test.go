package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/gitserver"
)

// TestTriggers: an ImageBuild that follows main (issue 14), on the real cluster. A webhook
// call from the host reaches the manager's receiver and builds the pushed commit at once
// (cause Webhook); a later push with no webhook is found by polling (cause Commit). Nobody
// touches the ImageBuild; each build pushes the tag made from its commit, and the history
// records all three.
func TestTriggers(t *testing.T) {
	hook := os.Getenv("SLIPWAY_MANAGER_WEBHOOK_URL")
	if hook == "" {
		t.Skip("SLIPWAY_MANAGER_WEBHOOK_URL is not set (hack/demo.sh install writes it)")
	}
	e := newEnv(t, nil, appFiles)
	const secret = "e2e-webhook-s3cret"
	if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: e.ns},
		StringData: map[string]string{"secret": secret}}); err != nil {
		t.Fatal(err)
	}
	ib := e.imageBuild("follow", "e2e/follow")
	ib.Spec.Source.Git.Interval = &metav1.Duration{Duration: 30 * time.Second}
	ib.Spec.Triggers = &v1alpha1.Triggers{Webhook: &v1alpha1.WebhookTrigger{SecretRef: corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "hook"}, Key: "secret"}}}
	ib.Spec.Output.AdditionalTags = []string{"{{.Branch}}-{{.ShortCommit}}"}
	e.create(ib)

	built := func(n int64, cause v1alpha1.BuildCause, commit string) {
		t.Helper()
		got := e.wait("follow", 5*time.Minute, fmt.Sprintf("build %d finished", n), func(ib *v1alpha1.ImageBuild) bool {
			return ib.Status.BuildNumber == n && ib.Status.Phase.Finished()
		})
		if got.Status.Phase != v1alpha1.PhaseSucceeded || got.Status.Cause != cause || got.Status.Source == nil ||
			got.Status.Source.Commit != commit {
			t.Fatalf("build %d: phase %s, cause %s, source %+v; want Succeeded, %s, %s", n, got.Status.Phase, got.Status.Cause,
				got.Status.Source, cause, commit)
		}
		// The tag made from the commit names what the build pushed.
		tag, err := name.ParseReference(e.reg.Ref("e2e/follow:main-"+commit[:7]), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		d, err := remote.Head(tag, remote.WithAuth(e.reg.Auth()))
		if err != nil || d.Digest.String() != got.Status.Image.Digest {
			t.Fatalf("%s: %v, digest %v; want %s", tag, err, d, got.Status.Image.Digest)
		}
	}
	built(1, v1alpha1.CauseCreated, e.commit)

	bare := e.gitRoot + "/app.git"
	push := func(msg string) string {
		gitserver.WriteFiles(t, e.work, map[string]string{"message.txt": msg + "\n"})
		c := gitserver.Commit(t, e.work, msg)
		gitserver.Git(t, e.work, "push", "-q", bare, "HEAD:main")
		return c
	}
	second := push("second")
	body := []byte(`{"repository":"` + e.gitURL + `/app.git","ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, hook+"/hooks/"+e.ns+"/follow", bytes.NewReader(body))
	req.Header.Set("X-Slipway-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the webhook call: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("the webhook call: %s, want 202 Accepted", resp.Status)
	}
	built(2, v1alpha1.CauseWebhook, second)

	third := push("third")
	built(3, v1alpha1.CauseCommit, third)
	got := e.wait("follow", time.Minute, "history", func(ib *v1alpha1.ImageBuild) bool { return len(ib.Status.History) == 3 })
	for i, want := range []string{third, second, e.commit} {
		if r := got.Status.History[i]; r.Commit != want || r.Result != v1alpha1.BuildResultSucceeded || r.Digest == "" {
			t.Errorf("history[%d] = %+v, want a success of %s", i, r, want)
		}
	}
}
