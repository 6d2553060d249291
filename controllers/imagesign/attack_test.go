package imagesign

// Attacks on the manager's signing by a tenant who runs the output registry, as the
// security review of issue 15 (review15) made them on the index push: a registry that
// redirects the manager into its own network, answers with error bodies meant for the
// tenant's status, or serves manifests and configurations far larger than any signing needs.
// Each failed before the signing went through imageindex's guard. They use Run and its
// error's text, as the controller does.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/sign"
)

// interceptedRepo is a repository of ggcr's in-memory registry behind intercept, which answers
// a request itself when it returns true. It starts as nil (everything reaches the registry).
func interceptedRepo(t *testing.T) (name.Repository, *func(w http.ResponseWriter, r *http.Request) bool) {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var mu sync.Mutex
	var intercept func(w http.ResponseWriter, r *http.Request) bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := intercept
		mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/team/app")
	if err != nil {
		t.Fatal(err)
	}
	return repo, &intercept
}

// zeros writes n zero bytes, counting them, until the client goes away.
func zeros(w http.ResponseWriter, n int64, served *atomic.Int64) {
	w.Header().Set("Content-Length", fmt.Sprint(n))
	chunk := make([]byte, 1<<20)
	for left := n; left > 0; {
		k, err := w.Write(chunk[:min(int64(len(chunk)), left)])
		served.Add(int64(k))
		left -= int64(k)
		if err != nil {
			return
		}
	}
}

// attestedIndex pushes an index of an image and its attestation manifest, and returns the
// index's digest, the attestation manifest's, and its statement's.
func attestedIndex(t *testing.T, repo name.Repository) (index, att, statement v1.Hash) {
	t.Helper()
	img, d := ociImage(t)
	a := attestationManifest(t, inToto("https://slsa.dev/provenance/v1", d))
	index = pushIndex(t, repo, img, a, d)
	att, _ = a.Digest()
	layers, _ := a.Layers()
	statement, _ = layers[0].Digest()
	return index, att, statement
}

const internalSecret = "INTERNAL-ONLY: token=s3cr3t-from-the-managers-network"

// The registry redirects the GET of a statement to an internal service named by DNS: it is
// not reached, and its answer is not in the error.
func TestJob_Run_attack_redirectToInternalHost(t *testing.T) {
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, internalSecret)
	}))
	t.Cleanup(internal.Close)
	port := internal.URL[strings.LastIndex(internal.URL, ":")+1:]
	repo, intercept := interceptedRepo(t)
	index, _, statement := attestedIndex(t, repo)
	*intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+statement.String()) {
			http.Redirect(w, r, "http://localhost:"+port+"/latest/meta-data/", http.StatusFound)
			return true
		}
		return false
	}
	_, err := NewJob(Request{Repository: repo.String(), Digest: index.String(), Signer: newSigner(t)}).Run(context.Background())
	t.Logf("Run: %.400v", err)
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "meta-data") {
		t.Errorf("err = %v; want an error without the internal service's answer or the redirect's URL", err)
	}
	if n := internalHits.Load(); n > 0 {
		t.Errorf("the internal service was reached %d times", n)
	}
}

// A refusal's body (the .sig push answered 403 with a page of the tenant's choosing) is not
// in the error: our words, the status and the host are.
func TestJob_Run_attack_errorBodyNotReflected(t *testing.T) {
	repo, intercept := interceptedRepo(t)
	img, d := ociImage(t)
	if err := remote.Write(repo.Digest(d.String()), img); err != nil {
		t.Fatal(err)
	}
	*intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, internalSecret+strings.Repeat(" padding", 8000))
			return true
		}
		return false
	}
	_, err := NewJob(Request{Repository: repo.String(), Digest: d.String(), Signer: newSigner(t)}).Run(context.Background())
	t.Logf("Run: %.400v", err)
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "padding") || len(err.Error()) > 1024 {
		t.Fatalf("err = %.300q (%d bytes); want our words only", fmt.Sprint(err), len(fmt.Sprint(err)))
	}
	if !strings.Contains(err.Error(), "refused access (HTTP 403 from 127.0.0.1)") {
		t.Errorf("err = %v; want it to say the registry refused access, with the status", err)
	}
	if Retryable(err) {
		t.Error("a refused push is retried")
	}
}

// The attestation manifest the index names is served as 64 MiB (ggcr reads up to 100 MiB of
// a manifest): the manager stops at 4 MiB.
func TestJob_Run_attack_hugeAttestationManifest(t *testing.T) {
	repo, intercept := interceptedRepo(t)
	index, att, _ := attestedIndex(t, repo)
	var served atomic.Int64
	*intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+att.String()) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			zeros(w, 64<<20, &served)
			return true
		}
		return false
	}
	_, err := NewJob(Request{Repository: repo.String(), Digest: index.String(), Signer: newSigner(t)}).Run(context.Background())
	t.Logf("Run: %.400v", err)
	if served.Load() > 16<<20 || err == nil {
		t.Errorf("served %d MiB of the attestation manifest before the manager stopped (err %v)", served.Load()>>20, err)
	}
}

// A statement served longer than its descriptor says is not read past it.
func TestJob_Run_attack_longStatement(t *testing.T) {
	repo, intercept := interceptedRepo(t)
	index, _, statement := attestedIndex(t, repo)
	var served atomic.Int64
	*intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+statement.String()) {
			zeros(w, 64<<20, &served)
			return true
		}
		return false
	}
	_, err := NewJob(Request{Repository: repo.String(), Digest: index.String(), Signer: newSigner(t)}).Run(context.Background())
	t.Logf("Run: %.400v", err)
	if served.Load() > 16<<20 || err == nil {
		t.Errorf("served %d MiB of a statement before the manager stopped (err %v)", served.Load()>>20, err)
	}
}

// A .sig tag the tenant made before the build, whose manifest declares a 256 MiB
// configuration: appending the signature to it (executor/sign reads the image under the tag)
// must not read that configuration into the manager's memory.
func TestJob_Run_attack_hugeExistingSignatureConfig(t *testing.T) {
	const size = 256 << 20
	repo, intercept := interceptedRepo(t)
	img, d := ociImage(t)
	if err := remote.Write(repo.Digest(d.String()), img); err != nil {
		t.Fatal(err)
	}
	sigTag, _ := sign.SignatureTag(repo.Digest(d.String()))
	sum := sha256.Sum256([]byte("not the configuration"))
	cfgDigest := "sha256:" + hex.EncodeToString(sum[:])
	manifest, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "size": size, "digest": cfgDigest}, "layers": []any{}})
	var served atomic.Int64
	*intercept = func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+sigTag.TagStr()):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write(manifest)
			return true
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+cfgDigest):
			zeros(w, size, &served)
			return true
		}
		return false
	}
	_, err := NewJob(Request{Repository: repo.String(), Digest: d.String(), Signer: newSigner(t)}).Run(context.Background())
	t.Logf("Run: %.400v", err)
	if served.Load() > 32<<20 || err == nil {
		t.Errorf("served %d MiB of the .sig image's configuration before the manager stopped (err %v)", served.Load()>>20, err)
	}
}
