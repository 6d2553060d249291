package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/slipway-dev/slipway/controllers/webhook"
)

// The manager serves the Handler on its own port; Lookup reads the ImageBuild and its
// webhook Secret from the cache, Trigger queues a resolution of its revision.
func ExampleNew() {
	lookup := func(_ context.Context, key types.NamespacedName) (*webhook.Target, error) {
		if key != (types.NamespacedName{Namespace: "team-a", Name: "demo"}) {
			return nil, webhook.ErrNotFound
		}
		return &webhook.Target{URL: "https://github.com/slipway-dev/demo", Revision: "main", Secret: []byte("s3cr3t")}, nil
	}
	trigger := func(key types.NamespacedName, ev webhook.Event) {
		fmt.Printf("resolve %s now (%s pushed %s)\n", key, ev.Provider, ev.Ref)
	}
	srv := httptest.NewUnstartedServer(webhook.New(lookup, trigger))
	srv.Config.ReadHeaderTimeout = 10 * time.Second // as the manager's server should
	srv.Start()
	defer srv.Close()

	// What a CI job sends with the generic form.
	body := `{"repository":"git@github.com:slipway-dev/demo.git","ref":"refs/heads/main"}`
	mac := hmac.New(sha256.New, []byte("s3cr3t"))
	mac.Write([]byte(body))
	req, _ := http.NewRequest(http.MethodPost, srv.URL+webhook.Path(types.NamespacedName{Namespace: "team-a", Name: "demo"}), strings.NewReader(body))
	req.Header.Set("X-Slipway-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, " ", string(answer))
	// Output:
	// resolve team-a/demo now (generic pushed refs/heads/main)
	// 202 {"result":"triggered"}
}
