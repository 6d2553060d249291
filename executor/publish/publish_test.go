package publish

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func init() {
	// Retries in tests wait milliseconds, not seconds.
	retryDelay = time.Millisecond
}

// anonymous keeps tests away from the credentials of the machine.
var anonymous = RegistryOptions{Keychain: authn.NewMultiKeychain()}

// newRegistry serves ggcr's in-memory registry on 127.0.0.1, behind
// wrap when it is not nil, and returns its host:port.
func newRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func testImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func parseRefs(t *testing.T, o RegistryOptions, ss ...string) []name.Reference {
	t.Helper()
	var refs []name.Reference
	for _, s := range ss {
		ref, err := ParseReference(s, o, true)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	return refs
}

// pulled fetches ref, validates the image and returns its digest.
func pulled(t *testing.T, ref string, o RegistryOptions) v1.Hash {
	t.Helper()
	r := parseRefs(t, o, ref)[0]
	img, err := remote.Image(r, o.Remote(context.Background(), r, false)...)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validating %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPush(t *testing.T) {
	host := newRegistry(t, nil)
	img := testImage(t)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dests := []string{host + "/app:v1", host + "/app:latest", host + "/mirror/app:v1", host + "/app@" + digest.String()}
	got, err := Push(context.Background(), img, parseRefs(t, anonymous, dests...), anonymous)
	if err != nil {
		t.Fatal(err)
	}
	d := "@" + digest.String()
	want := []string{host + "/app" + d, host + "/app" + d, host + "/mirror/app" + d, host + "/app" + d}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Push() (-want +got):\n%s", diff)
	}
	for _, dest := range dests {
		if got := pulled(t, dest, anonymous); got != digest {
			t.Errorf("%s has digest %s, want %s", dest, got, digest)
		}
	}
}

func TestPush_digestMismatch(t *testing.T) {
	host := newRegistry(t, nil)
	other := testImage(t)
	d, err := other.Digest()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Push(context.Background(), testImage(t), parseRefs(t, anonymous, host+"/app@"+d.String()), anonymous)
	if err == nil {
		t.Fatal("Push() to another image's digest succeeded")
	}
}

func TestPush_tagsOnlyAfterAllBlobs(t *testing.T) {
	// The repository "broken" refuses every write; "ok" accepts them. (The
	// in-memory registry shares blobs between repositories, so refusing
	// only uploads would let "broken" succeed whenever "ok" went first.)
	host := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/v2/broken/") && r.Method != http.MethodGet && r.Method != http.MethodHead {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	refs := parseRefs(t, anonymous, host+"/ok:v1", host+"/broken:v1")
	if _, err := Push(context.Background(), testImage(t), refs, anonymous); err == nil {
		t.Fatal("Push() succeeded with a repository that refuses blobs")
	}
	_, err := remote.Head(refs[0], anonymous.Remote(context.Background(), refs[0], false)...)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD %s after a failed push: err = %v, want 404: the tag must not exist", refs[0], err)
	}
}

// Into one repository, the manifest is put under each tag and never by
// digest, and still only after every blob: a repository that refuses
// blobs gets no tag.
func TestPush_oneRepository(t *testing.T) {
	var mu sync.Mutex
	var puts []string
	refuseBlobs := false
	host := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
				puts = append(puts, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			}
			refuse := refuseBlobs && strings.Contains(r.URL.Path, "/blobs/uploads/")
			mu.Unlock()
			if refuse {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	img := testImage(t)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dests := []string{host + "/app:v1", host + "/app:latest", host + "/app@" + digest.String()}
	if _, err := Push(context.Background(), img, parseRefs(t, anonymous, dests...), anonymous); err != nil {
		t.Fatal(err)
	}
	for _, dest := range dests {
		if got := pulled(t, dest, anonymous); got != digest {
			t.Errorf("%s has digest %s, want %s", dest, got, digest)
		}
	}
	slices.Sort(puts)
	if diff := cmp.Diff([]string{"latest", "v1"}, puts); diff != "" {
		t.Errorf("manifest PUTs (-want +got):\n%s", diff)
	}

	mu.Lock()
	refuseBlobs = true
	mu.Unlock()
	ref := parseRefs(t, anonymous, host+"/other:v1")
	if _, err := Push(context.Background(), testImage(t), ref, anonymous); err == nil {
		t.Fatal("Push() succeeded into a repository that refuses blobs")
	}
	_, err = remote.Head(ref[0], anonymous.Remote(context.Background(), ref[0], false)...)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD %s after a failed push: err = %v, want 404: the tag must not exist", ref[0], err)
	}
}

func TestPush_retries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int64
		retries  int
		wantErr  bool
	}{
		{name: "transient errors retried within an attempt", failures: 2, retries: 0},
		{name: "more failures than one attempt absorbs", failures: 5, retries: 0, wantErr: true},
		{name: "another attempt with --push-retry", failures: 5, retries: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			host := newRegistry(t, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if n.Add(1) <= tc.failures {
						http.Error(w, "busy", http.StatusServiceUnavailable)
						return
					}
					h.ServeHTTP(w, r)
				})
			})
			o := anonymous
			o.Retries = tc.retries
			_, err := Push(context.Background(), testImage(t), parseRefs(t, o, host+"/app:v1"), o)
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Fatalf("Push() error = %v, want error: %t", err, tc.wantErr)
			}
			if !tc.wantErr {
				pulled(t, host+"/app:v1", o)
			}
		})
	}
}

// withBasicAuth wraps a registry so that every request needs user:pass.
func withBasicAuth(user, pass string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

// writeDockerConfig writes a config.json holding user:pass for host into
// a new directory and returns the directory.
func writeDockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCheckPush_auth(t *testing.T) {
	host := newRegistry(t, withBasicAuth("builder", "s3cret-pass"))
	o := RegistryOptions{} // DefaultKeychain: DOCKER_CONFIG as kaniko reads it
	refs := parseRefs(t, o, host+"/app:v1", host+"/app:v2", host+"/other:v1")

	t.Run("config dir", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", writeDockerConfig(t, host, "builder", "s3cret-pass"))
		if err := CheckPush(context.Background(), refs, o); err != nil {
			t.Fatalf("CheckPush() = %v", err)
		}
		img := testImage(t)
		want, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Push(context.Background(), img, refs, o); err != nil {
			t.Fatalf("Push() = %v", err)
		}
		if got := pulled(t, host+"/other:v1", o); got != want {
			t.Errorf("pulled digest %s, want %s", got, want)
		}
	})
	t.Run("config file", func(t *testing.T) {
		dir := writeDockerConfig(t, host, "builder", "s3cret-pass")
		t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "config.json"))
		if err := CheckPush(context.Background(), refs, o); err != nil {
			t.Fatalf("CheckPush() = %v", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", writeDockerConfig(t, host, "builder", "wrong-pass"))
		err := CheckPush(context.Background(), refs[:1], o)
		if err == nil {
			t.Fatal("CheckPush() with a wrong password succeeded")
		}
		if !strings.Contains(err.Error(), refs[0].String()) {
			t.Errorf("error %q does not name %s", err, refs[0])
		}
		if strings.Contains(err.Error(), "wrong-pass") || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte("builder:wrong-pass"))) {
			t.Errorf("error %q holds the credentials", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		t.Setenv("HOME", t.TempDir())
		if err := CheckPush(context.Background(), refs[:1], o); err == nil {
			t.Fatal("CheckPush() without credentials succeeded")
		}
	})
}

func TestCheckPush_unreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	start := time.Now()
	err = CheckPush(context.Background(), parseRefs(t, anonymous, host+"/app:v1"), anonymous)
	if err == nil {
		t.Fatal("CheckPush() to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), host+"/app:v1") {
		t.Errorf("error %q does not name the destination", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("CheckPush() took %s to fail", d)
	}
}

func TestRegistryOptions_Remote_skipTLSVerify(t *testing.T) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	img := testImage(t)

	if _, err := Push(context.Background(), img, parseRefs(t, anonymous, host+"/app:v1"), anonymous); err == nil {
		t.Error("Push() to a registry with an unknown certificate succeeded without --skip-tls-verify")
	}
	o := anonymous
	o.SkipTLSVerifyRegistries = []string{host}
	if _, err := Push(context.Background(), img, parseRefs(t, o, host+"/app:v1"), o); err != nil {
		t.Errorf("Push() with --skip-tls-verify-registry %s: %v", host, err)
	}
}

func TestParseReference(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ref     string
		o       RegistryOptions
		forPush bool
		want    string // the registry's scheme
		wantStr string
	}{
		{name: "secure by default", ref: "registry.example.com/app", forPush: true, want: "https", wantStr: "registry.example.com/app:latest"},
		{name: "--insecure for pushes", ref: "registry.example.com/app:v1", o: RegistryOptions{Insecure: true}, forPush: true, want: "http", wantStr: "registry.example.com/app:v1"},
		{name: "--insecure not for pulls", ref: "registry.example.com/app", o: RegistryOptions{Insecure: true}, want: "https", wantStr: "registry.example.com/app:latest"},
		{name: "--insecure-pull", ref: "registry.example.com/app", o: RegistryOptions{InsecurePull: true}, want: "http", wantStr: "registry.example.com/app:latest"},
		{name: "--insecure-registry", ref: "registry.example.com:5000/app", o: RegistryOptions{InsecureRegistries: []string{"registry.example.com:5000"}}, want: "http", wantStr: "registry.example.com:5000/app:latest"},
		{name: "--insecure-registry of another port", ref: "registry.example.com:5001/app", o: RegistryOptions{InsecureRegistries: []string{"registry.example.com:5000"}}, want: "https", wantStr: "registry.example.com:5001/app:latest"},
		{name: "docker.io", ref: "busybox", o: RegistryOptions{InsecureRegistries: []string{"docker.io"}}, forPush: true, want: "http", wantStr: "index.docker.io/library/busybox:latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := ParseReference(tc.ref, tc.o, tc.forPush)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{ref.Context().Registry.Scheme(), ref.Name()}
			if diff := cmp.Diff([]string{tc.want, tc.wantStr}, got); diff != "" {
				t.Errorf("ParseReference(%q) scheme, string (-want +got):\n%s", tc.ref, diff)
			}
		})
	}
	if _, err := ParseReference("UPPER/case", RegistryOptions{}, true); err == nil {
		t.Error("ParseReference of an invalid reference succeeded")
	}
}

func TestWriteTarball(t *testing.T) {
	img := testImage(t)
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		refs     []string
		wantTags []string
	}{
		{name: "destinations", refs: []string{"127.0.0.1:5000/app:v1", "example.com/x/app:latest"}, wantTags: []string{"127.0.0.1:5000/app:v1", "example.com/x/app:latest"}},
		{name: "no destination", wantTags: []string{"docker.io/unset-repo/unset-image-name:latest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out", "image.tar")
			if err := WriteTarball(path, img, parseRefs(t, anonymous, tc.refs...)); err != nil {
				t.Fatal(err)
			}
			opener := func() (io.ReadCloser, error) { return os.Open(path) }
			m, err := tarball.LoadManifest(opener)
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != 1 {
				t.Fatalf("manifest.json has %d images, want 1", len(m))
			}
			// go-containerregistry writes the tags in map order.
			if diff := cmp.Diff(tc.wantTags, m[0].RepoTags, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("RepoTags (-want +got):\n%s", diff)
			}
			for _, tag := range m[0].RepoTags {
				nt, err := name.NewTag(tag)
				if err != nil {
					t.Fatal(err)
				}
				got, err := tarball.Image(opener, &nt)
				if err != nil {
					t.Fatal(err)
				}
				if err := validate.Image(got); err != nil {
					t.Errorf("validating %s: %v", tag, err)
				}
				if d, err := got.Digest(); err != nil || d != want {
					t.Errorf("%s has digest %s (%v), want %s", tag, d, err, want)
				}
			}
			leftovers, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".*"))
			if err != nil || len(leftovers) != 0 {
				t.Errorf("temporary files left: %v (%v)", leftovers, err)
			}
		})
	}
}

// TestWriteTarball_podmanLoad checks that podman (Debian's) loads the tarball as the image it
// holds: the same image ID (the config digest) and layers, under the destination's name.
func TestWriteTarball_podmanLoad(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Fatalf("podman: %v (hack/deps.sh installs it)", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("podman's own storage needs root here")
	}
	img := testImage(t)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "image.tar")
	const ref = "127.0.0.1:5000/app:v1"
	if err := WriteTarball(path, img, parseRefs(t, anonymous, ref)); err != nil {
		t.Fatal(err)
	}
	// Its own store under the test's directory (vfs: plain directories, no mounts).
	store := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}
	podmanDo := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(podman, append(store, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := podmanDo("load", "-i", path); !strings.Contains(out, "Loaded image: "+ref) {
		t.Errorf("podman load said %q, want it to name %s", out, ref)
	}
	got := strings.Fields(podmanDo("image", "inspect", "--format", "{{.Id}} {{range .RootFS.Layers}}{{.}} {{end}}", ref))
	want := []string{cfg.Hex}
	for _, d := range cf.RootFS.DiffIDs {
		want = append(want, d.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("podman's image ID and layers (-want +got):\n%s", diff)
	}
}

func TestWriteOCILayout(t *testing.T) {
	img := testImage(t)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		refs []string
		want []map[string]string
	}{
		{name: "no destination", want: []map[string]string{nil}},
		{name: "destinations", refs: []string{"127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v2"}, want: []map[string]string{
			{AnnotationRefName: "127.0.0.1:5000/app:v1", AnnotationContainerdName: "127.0.0.1:5000/app:v1"},
			{AnnotationRefName: "127.0.0.1:5000/app:v2", AnnotationContainerdName: "127.0.0.1:5000/app:v2"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			if err := WriteOCILayout(dir, img, parseRefs(t, anonymous, tc.refs...)); err != nil {
				t.Fatal(err)
			}
			idx, err := layout.ImageIndexFromPath(dir)
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var got []map[string]string
			for _, desc := range im.Manifests {
				got = append(got, desc.Annotations)
				if desc.Digest != digest {
					t.Errorf("index entry %s, want %s", desc.Digest, digest)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
			limg, err := idx.Image(digest)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(limg); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestWriteDigestFile(t *testing.T) {
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	path := filepath.Join(t.TempDir(), "sub", "digest")
	if err := WriteDigestFile(path, d); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("sha256:"+strings.Repeat("ab", 32), string(got)); diff != "" {
		t.Errorf("digest file (-want +got):\n%s", diff)
	}
}

func TestWriteImageNameWithDigestFile(t *testing.T) {
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	refs := parseRefs(t, anonymous, "127.0.0.1:5000/app:v1", "busybox:1", "gcr.io/p/app")
	path := filepath.Join(t.TempDir(), "names")
	if err := WriteImageNameWithDigestFile(path, NamesWithDigest(refs, d)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1:5000/app@" + d.String() + "\n" +
		"index.docker.io/library/busybox@" + d.String() + "\n" +
		"gcr.io/p/app@" + d.String() + "\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("image name with digest file (-want +got):\n%s", diff)
	}
}

func TestDefaultKeychain_configPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(file, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, want string
	}{
		{name: "unset", env: "", want: "/kaniko/.docker/config.json"},
		{name: "directory", env: dir, want: filepath.Join(dir, "config.json")},
		{name: "file", env: file, want: file},
		{name: "missing", env: filepath.Join(dir, "nope"), want: "/kaniko/.docker/config.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DOCKER_CONFIG", tc.env)
			if diff := cmp.Diff(tc.want, configPath()); diff != "" {
				t.Errorf("configPath() (-want +got):\n%s", diff)
			}
		})
	}
}
