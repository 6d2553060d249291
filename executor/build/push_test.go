package build_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/executor/build"
	"github.com/slipway-dev/slipway/executor/cache"
	"github.com/slipway-dev/slipway/executor/publish"
	"github.com/slipway-dev/slipway/executor/source"
	"github.com/slipway-dev/slipway/test/testenv"
)

// uploadCounter counts, in front of a registry, the blob upload sessions
// that carry bytes and the cross-repository mounts.
type uploadCounter struct {
	mu              sync.Mutex
	uploads, mounts int
}

func (c *uploadCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/") {
			c.mu.Lock()
			if r.URL.Query().Get("mount") != "" {
				c.mounts++
			} else {
				c.uploads++
			}
			c.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// TestBuild_pushMountsFromCache checks, against the distribution registry
// (which keeps blobs per repository), that pushing a built image uploads
// only its config: the new layers are mounted from the cache repository
// the build wrote them to, the base layers from the base's repository.
func TestBuild_pushMountsFromCache(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot builds need root")
	}
	reg := testenv.StartRegistry(t)
	testenv.PushBusybox(t, reg)
	target, err := url.Parse("http://" + reg.Host())
	if err != nil {
		t.Fatal(err)
	}
	counter := &uploadCounter{}
	proxy := httptest.NewServer(counter.wrap(httputil.NewSingleHostReverseProxy(target)))
	t.Cleanup(proxy.Close)
	host := strings.TrimPrefix(proxy.URL, "http://")

	ctxDir := t.TempDir()
	writeContext(t, ctxDir, context1)
	bc, err := source.Open(ctxDir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	regOpts := publish.RegistryOptions{InsecureRegistries: []string{host}}
	cacheRef, err := publish.ParseReference(host+"/apps/cache", regOpts, true)
	if err != nil {
		t.Fatal(err)
	}
	// Flushed before the push: every new layer, small ones too, is in the
	// cache repository then (the executor waits only for large ones).
	img, _, err := buildAndFlush(t, build.Options{
		Dockerfile: []byte(strings.ReplaceAll(cachedDockerfile, "{{BASE}}", host+"/library/busybox:latest")),
		Context:    bc,
		Isolation:  build.Chroot,
		WorkDir:    t.TempDir(),
		PullReferences: func(s string) ([]name.Reference, error) {
			return publish.PullReferences(s, regOpts)
		},
		Cache: cache.New(cache.Options{Repo: cacheRef.Context(), Remote: func(pull bool) []remote.Option {
			return regOpts.Remote(t.Context(), cacheRef, !pull)
		}}),
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}

	counter.mu.Lock()
	counter.uploads, counter.mounts = 0, 0
	counter.mu.Unlock()
	dest, err := publish.ParseReference(host+"/apps/dest:v1", regOpts, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish.Push(t.Context(), img, []name.Reference{dest}, regOpts); err != nil {
		t.Fatalf("Push: %v", err)
	}
	counter.mu.Lock()
	defer counter.mu.Unlock()
	if counter.uploads != 1 {
		t.Errorf("the push uploaded %d blobs, want 1 (the config)", counter.uploads)
	}
	if counter.mounts != len(layers) {
		t.Errorf("the push mounted %d blobs, want its %d layers", counter.mounts, len(layers))
	}
}
