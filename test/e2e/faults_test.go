package e2e

// Cluster faults (issue 13): each test injects one fault on the real cluster while a build
// runs, and checks what the user sees on the ImageBuild (phase, conditions, failure, events,
// attempts and retries) and that nothing was lost or half-pushed: the tag in the registry
// points at the complete image the status names, or no tag exists, and no two executor pods of
// a build ever ran at once.
//
// The tests that stop cluster components use hack/cluster.sh (stop, start, kill-container) on
// the local cluster whose state SLIPWAY_STATE names (hack/e2e.sh sets it); without it they skip.
// The manager runs with a 2 s retry backoff (hack/demo.sh install).

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// faultFiles are appFiles and Dockerfile.fault: a RUN unique to the build (ARG NONCE) that
// sleeps 20 s, the window in which a test injects its fault, and a COPY after it.
var faultFiles = func() map[string]string {
	m := maps.Clone(appFiles)
	m["Dockerfile.fault"] = `ARG BASE=busybox:latest
FROM ${BASE}
ARG NONCE
RUN echo "${NONCE}" > /nonce && sleep 20
COPY message.txt /message.txt
`
	return m
}()

// faultStep is what the executor's log shows when the RUN of Dockerfile.fault starts.
const faultStep = "&& sleep 20"

// faultBuild is an ImageBuild of Dockerfile.fault pushing to e2e/NAME.
func faultBuild(e *env, name string) *v1alpha1.ImageBuild {
	ib := e.imageBuild(name, "e2e/"+name)
	ib.Spec.Dockerfile = "Dockerfile.fault"
	ib.Spec.BuildArgs = append(ib.Spec.BuildArgs, v1alpha1.BuildArg{Name: "NONCE", Value: ptr.To(nonce())})
	return ib
}

// --- the local cluster's components ----------------------------------------------------------

// needLocalCluster skips unless hack/cluster.sh can reach the cluster's components: the e2e
// cluster is the local one (SLIPWAY_STATE) and this runs as root.
func needLocalCluster(t *testing.T) {
	t.Helper()
	if os.Getenv("SLIPWAY_STATE") == "" {
		t.Skip("SLIPWAY_STATE is not set: this test stops components of the local cluster with hack/cluster.sh (hack/e2e.sh sets it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("hack/cluster.sh stop and start need root")
	}
}

// clusterSh runs hack/cluster.sh with args on the local cluster, failing the test if it fails.
func clusterSh(t *testing.T, args ...string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join(root, "hack", "cluster.sh"), args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	t.Logf("hack/cluster.sh %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond), out)
	if err != nil {
		t.Fatalf("hack/cluster.sh %s: %v", strings.Join(args, " "), err)
	}
}

// stopComponent stops a component of the local cluster (how: TERM, or KILL as a crash would)
// and returns the function that starts it again; it is started again when the test ends if the
// test did not.
func stopComponent(t *testing.T, component, how string) (startAgain func()) {
	t.Helper()
	clusterSh(t, "stop", component, how)
	var once sync.Once
	startAgain = func() { once.Do(func() { clusterSh(t, "start", component) }) }
	t.Cleanup(startAgain)
	return startAgain
}

// containerID is the containerd ID of the executor container of pod.
func containerID(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "executor" {
			if id, ok := strings.CutPrefix(cs.ContainerID, "containerd://"); ok {
				return id
			}
		}
	}
	t.Fatalf("pod %s has no containerd ID for its executor: %+v", pod.Name, pod.Status.ContainerStatuses)
	return ""
}

// --- waiting on the build --------------------------------------------------------------------

// waitStep waits until the ImageBuild's current executor pod runs and its log shows step, and
// returns the pod.
func (e *env) waitStep(name, step string) *corev1.Pod {
	e.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		podName := e.waitRunningPod(name)
		log, err := clientset.CoreV1().Pods(e.ns).GetLogs(podName, &corev1.PodLogOptions{Container: "executor"}).DoRaw(ctx)
		if err == nil && strings.Contains(string(log), step) {
			var pod corev1.Pod
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: podName}, &pod); err == nil {
				return &pod
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.t.Fatalf("ImageBuild %s: no executor log showing %q after 3m", name, step)
	return nil
}

// waitTag waits until repo:tag is in the test's registry (asked directly, not through a pod's
// address) and returns its digest.
func (e *env) waitTag(repo, tag string, timeout time.Duration) string {
	e.t.Helper()
	ref, err := name.ParseReference(e.reg.Ref(repo+":"+tag), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		d, err := remote.Head(ref, remote.WithAuth(e.reg.Auth()))
		if err == nil {
			return d.Digest.String()
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s is not in the registry after %s: %v", ref, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkComplete checks that repo:tag points at digest, and that the registry holds all of that
// image: its manifest, config and every layer, each matching its digest (validate.Image reads
// them all).
func (e *env) checkComplete(repo, tag, digest string) {
	e.t.Helper()
	ref, err := name.ParseReference(e.reg.Ref(repo+":"+tag), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	desc, err := remote.Get(ref, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		e.t.Fatalf("pulling %s: %v", ref, err)
	}
	if desc.Digest.String() != digest {
		e.t.Errorf("%s points at %s, want %s, the digest of the status", ref, desc.Digest, digest)
	}
	// An image, or an index (the image with its provenance attestation): every manifest,
	// config and layer it names is read back.
	if desc.MediaType.IsIndex() {
		if err := validateIndex(desc); err != nil {
			e.t.Errorf("%s is not complete in the registry: %v", ref, err)
		}
		return
	}
	img, err := desc.Image()
	if err == nil {
		err = validate.Image(img)
	}
	if err != nil {
		e.t.Errorf("%s is not complete in the registry: %v", ref, err)
	}
}

// validateIndex reads back every manifest, config and blob the index names. Images are read
// with validate.Image; attestation manifests (platform unknown/unknown, whose in-toto layers
// validate.Image counts apart from the config's diff_ids, as BuildKit writes them) by digest.
func validateIndex(desc *remote.Descriptor) error {
	idx, err := desc.ImageIndex()
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		if d.Platform == nil || d.Platform.OS != "unknown" {
			if err := validate.Image(img); err != nil {
				return fmt.Errorf("%s: %w", d.Digest, err)
			}
			continue
		}
		if err := validate.Image(img, validate.Fast); err != nil {
			return fmt.Errorf("attestation manifest %s: %w", d.Digest, err)
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			want, err := l.Digest()
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			got, _, err := v1.SHA256(rc)
			rc.Close()
			if err != nil || got != want {
				return fmt.Errorf("attestation manifest %s: blob %s reads back as %s (%v)", d.Digest, want, got, err)
			}
		}
	}
	return nil
}

// checkEvent checks that the ImageBuild has an event with reason whose message contains want.
func (e *env) checkEvent(ibName, reason, want string) {
	e.t.Helper()
	evs, err := clientset.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var seen []string
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Kind != "ImageBuild" || ev.InvolvedObject.Name != ibName {
			continue
		}
		seen = append(seen, ev.Reason+": "+ev.Message)
		if ev.Reason == reason && strings.Contains(ev.Message, want) {
			return
		}
	}
	e.t.Errorf("ImageBuild %s: no event %s saying %q; its events:\n%s", ibName, reason, want, strings.Join(seen, "\n"))
}

// pods lists the names of the ImageBuild's executor pods, sorted.
func (e *env) pods(ibName string) []string {
	e.t.Helper()
	var pods corev1.PodList
	if err := k8s.List(context.Background(), &pods, client.InNamespace(e.ns),
		client.MatchingLabels{v1alpha1.LabelImageBuild: ibName}); err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// --- watching what the user sees -------------------------------------------------------------

// record watches an ImageBuild's status and its executor pods from before it is created, with
// watches that resume where they left off when the API server goes away and comes back:
//   - history is every status the ImageBuild had, as kubectl get -w would show it;
//   - every executor pod is followed from its creation to its end (phase Succeeded or Failed,
//     or gone), and a pod created while another of the build had not ended is an overlap:
//     two builds running at once.
type record struct {
	t    *testing.T
	name string

	mu       sync.Mutex
	history  []string
	statuses []v1alpha1.ImageBuildStatus
	live     map[string]corev1.PodPhase // pods created and not ended
	created  []string                   // pods, in the order they were created
	overlaps []string
}

// watchBuild starts the record of ImageBuild name of e's namespace; it stops when the test ends.
func watchBuild(e *env, name string) *record {
	e.t.Helper()
	r := &record{t: e.t, name: name, live: map[string]corev1.PodPhase{}}
	ctx, cancel := context.WithCancel(context.Background())
	var done sync.WaitGroup
	e.t.Cleanup(func() { cancel(); done.Wait() })

	// follow lists, hands each listed object to resync, and watches from there; when the
	// watch ends (an API server that restarted no longer knows the resource version it was
	// at: 410 Gone), it lists and watches again.
	follow := func(newList func() client.ObjectList, opts []client.ListOption, resync func(client.ObjectList), handle func(watch.Event)) {
		list := newList()
		if err := k8s.List(ctx, list, opts...); err != nil {
			e.t.Fatal(err)
		}
		done.Add(1)
		go func() {
			defer done.Done()
			for ctx.Err() == nil {
				resync(list)
				lw := watchFunc(func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
					return watcher.Watch(ctx, newList(), append(slices.Clone(opts), &client.ListOptions{Raw: &o})...)
				})
				w, err := watchtools.NewRetryWatcherWithContext(ctx, list.(metav1.ListInterface).GetResourceVersion(), lw)
				if err != nil {
					e.t.Errorf("watching: %v", err)
					return
				}
				for ev := range w.ResultChan() {
					if ev.Type != watch.Bookmark && ev.Type != watch.Error {
						handle(ev)
					}
				}
				w.Stop()
				for ctx.Err() == nil {
					list = newList()
					if err := k8s.List(ctx, list, opts...); err == nil {
						break
					}
					time.Sleep(time.Second)
				}
			}
		}()
	}
	follow(func() client.ObjectList { return &v1alpha1.ImageBuildList{} }, []client.ListOption{client.InNamespace(e.ns)},
		func(l client.ObjectList) {
			for i := range l.(*v1alpha1.ImageBuildList).Items {
				if ib := &l.(*v1alpha1.ImageBuildList).Items[i]; ib.Name == name {
					r.status(ib)
				}
			}
		},
		func(ev watch.Event) {
			if ib, ok := ev.Object.(*v1alpha1.ImageBuild); ok && ib.Name == name {
				r.status(ib)
			}
		})
	follow(func() client.ObjectList { return &corev1.PodList{} },
		[]client.ListOption{client.InNamespace(e.ns), client.MatchingLabels{v1alpha1.LabelImageBuild: name}},
		func(l client.ObjectList) { r.resyncPods(l.(*corev1.PodList).Items) },
		func(ev watch.Event) {
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				r.pod(ev.Type, pod)
			}
		})
	return r
}

// watchFunc is a function as the WatcherWithContext of a RetryWatcher.
type watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)

func (f watchFunc) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return f(ctx, o)
}

func (r *record) status(ib *v1alpha1.ImageBuild) {
	line := fmt.Sprintf("phase=%s attempt=%d retries=%d pod=%s", ib.Status.Phase, ib.Status.Attempt, ib.Status.Retries, ib.Status.PodName)
	if c := apimeta.FindStatusCondition(ib.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		line += fmt.Sprintf(" Ready=%s/%s %q", c.Status, c.Reason, c.Message)
	}
	if f := ib.Status.Failure; f != nil {
		line += fmt.Sprintf(" failure=%s transient=%v", f.Reason, f.Transient)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.history); n == 0 || r.history[n-1] != line {
		r.history = append(r.history, line)
		r.statuses = append(r.statuses, *ib.Status.DeepCopy())
	}
}

func (r *record) pod(typ watch.EventType, pod *corev1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.created, pod.Name) {
		r.created = append(r.created, pod.Name)
		for other, phase := range r.live {
			r.overlaps = append(r.overlaps, fmt.Sprintf("pod %s was created while pod %s had not ended (phase %s)", pod.Name, other, phase))
		}
	}
	ended := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	if typ == watch.Deleted || ended {
		delete(r.live, pod.Name)
	} else if typ == watch.Added || typ == watch.Modified {
		r.live[pod.Name] = pod.Status.Phase
	}
}

// resyncPods takes the pods a list returned as they are: those it no longer has went away
// while nothing watched.
func (r *record) resyncPods(pods []corev1.Pod) {
	for i := range pods {
		r.pod(watch.Modified, &pods[i])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.live {
		if !slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == name }) {
			delete(r.live, name)
		}
	}
}

// saw returns the first status of the history that cond holds for, and whether there is one.
func (r *record) saw(cond func(v1alpha1.ImageBuildStatus) bool) (v1alpha1.ImageBuildStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range r.statuses {
		if cond(st) {
			return st, true
		}
	}
	return v1alpha1.ImageBuildStatus{}, false
}

// waitFor waits until the history has a status cond holds for, and returns it; it fails the
// test when the build finished first.
func (r *record) waitFor(what string, timeout time.Duration, cond func(v1alpha1.ImageBuildStatus) bool) v1alpha1.ImageBuildStatus {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if st, ok := r.saw(cond); ok {
			return st
		}
		_, ended := r.saw(func(st v1alpha1.ImageBuildStatus) bool { return st.Phase.Finished() })
		if ended || time.Now().After(deadline) {
			r.t.Fatalf("ImageBuild %s: never %s in %s; its statuses:\n%s", r.name, what, timeout, r.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ready is cond on the Ready condition: reason, and a message containing msg.
func ready(reason, msg string) func(v1alpha1.ImageBuildStatus) bool {
	return func(st v1alpha1.ImageBuildStatus) bool {
		c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == reason && strings.Contains(c.Message, msg)
	}
}

func (r *record) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "  " + strings.Join(r.history, "\n  ")
}

// checkOnePodAtATime checks that the build's executor pods, want of them, never ran two at a
// time, and logs the history.
func (r *record) checkOnePodAtATime(want ...string) {
	r.t.Helper()
	r.mu.Lock()
	created, overlaps := slices.Clone(r.created), slices.Clone(r.overlaps)
	r.mu.Unlock()
	r.t.Logf("ImageBuild %s: pods %v; statuses:\n%s", r.name, created, r)
	for _, o := range overlaps {
		r.t.Errorf("ImageBuild %s: two executor pods at once: %s", r.name, o)
	}
	if !slices.Equal(created, want) {
		r.t.Errorf("ImageBuild %s: executor pods %v, want %v", r.name, created, want)
	}
}

// --- a server that goes down -----------------------------------------------------------------

// switchable is a reverse proxy on SLIPWAY_POD_HOST in front of one of the test's servers on
// 127.0.0.1 (the registry, the git server), which a test takes down and brings back at the
// same address. Down, it refuses connections (its listener is closed) or, resetting, accepts
// each and resets it at once (counted); either way the connections open through it are reset.
// It records every request (method and path, never a header or a query) with its status.
type switchable struct {
	t      *testing.T
	addr   string
	target *url.URL
	proxy  *httputil.ReverseProxy

	mu       sync.Mutex
	srv      *http.Server
	conns    map[net.Conn]bool
	resetter net.Listener
	resets   int
	requests []string
	trip     func(*http.Request) bool // goes down (resetting) once the request it matches is answered
	tripConn net.Conn                 // the connection of that request
}

type connKey struct{}

// newSwitchable starts a switchable proxy to target (HOST:PORT), up.
func newSwitchable(t *testing.T, target string) *switchable {
	t.Helper()
	s := &switchable{t: t, target: &url.URL{Scheme: "http", Host: target}, conns: map[net.Conn]bool{}}
	s.proxy = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(s.target)
		// The registry writes its upload locations for the Host it was asked for.
		r.Out.Host = r.In.Host
	}}
	ln, err := net.Listen("tcp", net.JoinHostPort(podHost, "0"))
	if err != nil {
		t.Fatalf("listening on %s (SLIPWAY_POD_HOST): %v", podHost, err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(func() {
		s.mu.Lock()
		srv, resetter := s.srv, s.resetter
		s.mu.Unlock()
		if srv != nil {
			srv.Close()
		}
		if resetter != nil {
			resetter.Close()
		}
	})
	return s
}

// Host is the proxy's address as pods reach it: podHost:PORT.
func (s *switchable) Host() string { return s.addr }

func (s *switchable) serve(ln net.Listener) {
	srv := &http.Server{
		Handler:     s,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		ConnState:   s.connState,
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln)
}

func (s *switchable) connState(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch state {
	case http.StateNew:
		s.conns[c] = true
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	case http.StateIdle:
		if c == s.tripConn {
			s.tripConn = nil
			go s.Down(true)
		}
	}
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusRecorder{ResponseWriter: w}
	s.proxy.ServeHTTP(sw, r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, fmt.Sprintf("%s %s -> %d", r.Method, r.URL.Path, sw.status))
	if s.trip != nil && s.trip(r) {
		s.trip = nil
		s.tripConn, _ = r.Context().Value(connKey{}).(net.Conn)
		s.requests = append(s.requests, "(down from here)")
	}
}

// TripAfter arms the proxy: it goes down, resetting, right after it has answered the first
// request match holds for.
func (s *switchable) TripAfter(match func(*http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trip = match
}

// Down takes the proxy down: the connections open through it are reset, and new ones are
// refused, or, when resetting, accepted and reset.
func (s *switchable) Down(resetting bool) {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	for c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	s.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Close()
	if !resetting {
		return
	}
	ln := s.listen()
	s.mu.Lock()
	s.resetter = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			s.mu.Lock()
			s.resets++
			s.mu.Unlock()
		}
	}()
}

// Up brings the proxy back at its address.
func (s *switchable) Up() {
	s.mu.Lock()
	resetter := s.resetter
	s.resetter = nil
	s.mu.Unlock()
	if resetter != nil {
		resetter.Close()
	}
	s.serve(s.listen())
}

// listen listens at the proxy's address again; another socket may hold the port for a moment.
func (s *switchable) listen() net.Listener {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			return ln
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("listening on %s again: %v", s.addr, err)
	return nil
}

// Resets is how many connections the proxy reset while down.
func (s *switchable) Resets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resets
}

// Log is the requests the proxy answered, one a line.
func (s *switchable) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.requests, "\n")
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// registrySecret makes a dockerconfigjson Secret name for the test's registry at each of
// hosts.
func (e *env) registrySecret(name string, hosts ...string) {
	e.t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(regUser + ":" + regPassword))
	auths := map[string]any{}
	for _, h := range hosts {
		auths[h] = map[string]string{"auth": auth}
	}
	cfg, _ := json.Marshal(map[string]any{"auths": auths})
	if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg}}); err != nil {
		e.t.Fatal(err)
	}
}

// --- the faults ------------------------------------------------------------------------------

// TestFaultExecutorKilled: the executor pod deleted mid-build, and the executor's process
// killed with SIGKILL mid-build. Each attempt is retried by a new pod once the old one has
// stopped (never two at once); the status and the events say why (PodDeleted,
// ExecutorKilled); the retry builds and pushes the whole image, which the tag points at.
func TestFaultExecutorKilled(t *testing.T) {
	needLocalCluster(t)
	e := newEnv(t, nil, faultFiles)
	ctx := context.Background()
	faults := []struct {
		build, reason, why string
		inject             func(*corev1.Pod)
	}{
		{"deleted", v1alpha1.ReasonPodDeleted, "was deleted before the build ended", func(pod *corev1.Pod) {
			if err := k8s.Delete(ctx, pod); err != nil {
				t.Fatal(err)
			}
		}},
		{"sigkill", v1alpha1.ReasonExecutorKilled, "killed by SIGKILL (exit code 137)", func(pod *corev1.Pod) {
			clusterSh(t, "kill-container", containerID(t, pod))
		}},
	}
	records := map[string]*record{}
	for _, f := range faults {
		records[f.build] = watchBuild(e, f.build)
		e.create(faultBuild(e, f.build))
	}
	for _, f := range faults {
		pod := e.waitStep(f.build, faultStep)
		t.Logf("%s: %s mid-build (pod %s)", f.build, f.reason, pod.Name)
		f.inject(pod)
	}
	for _, f := range faults {
		r := records[f.build]
		ib := e.waitSucceeded(f.build)
		retrying := r.waitFor("Retrying after "+f.reason, time.Minute, ready(v1alpha1.ReasonRetrying,
			fmt.Sprintf("Attempt 1 failed (%s: ", f.reason)))
		if !strings.Contains(apimeta.FindStatusCondition(retrying.Conditions, v1alpha1.ConditionReady).Message, f.why) {
			t.Errorf("%s: the Retrying condition does not say %q: %+v", f.build, f.why, retrying.Conditions)
		}
		if ib.Status.Attempt != 2 || ib.Status.Retries != 1 || ib.Status.Failure != nil {
			t.Errorf("%s: attempt %d, retries %d, failure %+v; want attempt 2 after 1 retry, no failure",
				f.build, ib.Status.Attempt, ib.Status.Retries, ib.Status.Failure)
		}
		e.checkEvent(f.build, v1alpha1.ReasonRetrying, "Attempt 1 failed with "+f.reason+"; retrying in")
		e.checkEvent(f.build, v1alpha1.ReasonSucceeded, ib.Status.Image.Digest)
		e.checkComplete("e2e/"+f.build, "latest", ib.Status.Image.Digest)
		r.checkOnePodAtATime(f.build+"-1-1", f.build+"-1-2")
	}
}

// TestFaultAPIServerDown: the kube-apiserver is killed (SIGKILL, as a crash) mid-build and
// comes back only after the executor has pushed. The build goes on without it, is not run
// again, and its status is written once the API server is back (the manager, which loses its
// leader lease meanwhile, may restart): Succeeded with the digest the tag points at.
func TestFaultAPIServerDown(t *testing.T) {
	needLocalCluster(t)
	testComponentDownUntilPushed(t, "kube-apiserver", "KILL")
}

// TestFaultKubeletDown: the kubelet stops (SIGTERM) mid-build and comes back only after the
// executor has pushed and written its result. The kubelet reports that result when it is
// back, and the build is Succeeded with the digest the tag points at, in one attempt.
func TestFaultKubeletDown(t *testing.T) {
	needLocalCluster(t)
	testComponentDownUntilPushed(t, "kubelet", "TERM")
}

func testComponentDownUntilPushed(t *testing.T, component, how string) {
	e := newEnv(t, nil, faultFiles)
	const build = "down"
	r := watchBuild(e, build)
	e.create(faultBuild(e, build))
	e.waitStep(build, faultStep)
	startAgain := stopComponent(t, component, how)
	stopped := time.Now()
	if _, err := remote.Head(mustRef(t, e.reg.Ref("e2e/"+build+":latest")), remote.WithAuth(e.reg.Auth())); err == nil {
		t.Fatalf("the build had pushed before %s was down: the fault came too late", component)
	}
	// Without it the build goes on: the executor pushes.
	pushed := e.waitTag("e2e/"+build, "latest", 2*time.Minute)
	t.Logf("pushed %s %s after %s stopped", pushed, time.Since(stopped).Round(100*time.Millisecond), component)
	if st, ok := r.saw(func(st v1alpha1.ImageBuildStatus) bool { return st.Phase.Finished() }); ok {
		t.Fatalf("the status said %s while %s was down", st.Phase, component)
	}
	if component == "kubelet" {
		e.waitResultWritten(build)
	}
	startAgain()
	back := time.Now()

	ib := e.waitSucceeded(build)
	t.Logf("status Succeeded %s after %s was back", time.Since(back).Round(100*time.Millisecond), component)
	if ib.Status.Image.Digest != pushed {
		t.Errorf("status digest %s, the registry's tag %s", ib.Status.Image.Digest, pushed)
	}
	if ib.Status.Attempt != 1 || ib.Status.Retries != 0 {
		t.Errorf("attempt %d, retries %d: the build was run again", ib.Status.Attempt, ib.Status.Retries)
	}
	if c := apimeta.FindStatusCondition(ib.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.Contains(c.Message, "Built and pushed "+pushed) {
		t.Errorf("Ready = %+v, want True naming %s", c, pushed)
	}
	e.checkEvent(build, v1alpha1.ReasonSucceeded, pushed)
	e.checkComplete("e2e/"+build, "latest", pushed)
	r.checkOnePodAtATime(build + "-1-1")
}

// waitResultWritten waits until the executor of the build's pod has written its result (its
// last act before it exits) into its termination message file, which the kubelet keeps in the
// pod's directory on the node and reads when it is back.
func (e *env) waitResultWritten(build string) {
	e.t.Helper()
	var ib v1alpha1.ImageBuild
	var pod corev1.Pod
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: build}, &ib); err != nil {
		e.t.Fatal(err)
	}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: ib.Status.PodName}, &pod); err != nil {
		e.t.Fatal(err)
	}
	glob := filepath.Join(os.Getenv("SLIPWAY_STATE"), "cluster", "kubelet", "pods", string(pod.UID), "containers", "executor", "*")
	deadline := time.Now().Add(time.Minute)
	for {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && json.Valid(b) {
				e.t.Logf("the executor wrote its result while the kubelet was down: %s", b)
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no result in %s after 1m", glob)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestFaultGitServerDown: the git server is down when the build fetches its source. The
// build fails with SourceFetchFailed saying the host is unreachable (failure.transient), and
// is not retried unless spec.retry.sourceFetch asks: then it is retried with backoff and
// succeeds once the server is back. With sourceFetch, a repository or revision the server does
// not have, or credentials it refuses, still fail at once: never retried in a loop.
func TestFaultGitServerDown(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	ctx := context.Background()
	git := newSwitchable(t, e.gitHost)
	git.Down(false)
	down := "http://" + git.Host() + "/app.git"
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-wrong", Namespace: e.ns},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": gitUser, "password": "not-" + gitPassword}}); err != nil {
		t.Fatal(err)
	}
	sourceFetch := &v1alpha1.Retry{SourceFetch: true, Limit: ptr.To[int32](5)}

	type build struct {
		name      string
		mutate    func(*v1alpha1.ImageBuild)
		msg       string // of the failure
		transient bool
	}
	failing := []build{
		{"not-asked", func(ib *v1alpha1.ImageBuild) { ib.Spec.Source.Git.URL = down }, "the host is unreachable", true},
		{"no-repository", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Source.Git.URL = e.gitURL + "/nope.git"
			ib.Spec.Retry = sourceFetch
		}, "repository not found", false},
		{"no-revision", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Source.Git.Revision = "no-such-branch"
			ib.Spec.Retry = sourceFetch
		}, "repository does not contain ref no-such-branch", false},
		{"refused-credentials", func(ib *v1alpha1.ImageBuild) {
			ib.Spec.Source.Git.SecretRef = &corev1.LocalObjectReference{Name: "git-wrong"}
			ib.Spec.Retry = sourceFetch
		}, "the server refused the credentials", false},
	}
	records := map[string]*record{}
	retried := e.imageBuild("retried", "e2e/retried")
	retried.Spec.Source.Git.URL = down
	retried.Spec.Retry = sourceFetch
	records["retried"] = watchBuild(e, "retried")
	e.create(retried)
	for _, b := range failing {
		ib := e.imageBuild(b.name, "e2e/"+b.name)
		b.mutate(ib)
		records[b.name] = watchBuild(e, b.name)
		e.create(ib)
	}

	// Retried while the server is down, then back.
	r := records["retried"]
	st := r.waitFor("Retrying after SourceFetchFailed", 3*time.Minute, ready(v1alpha1.ReasonRetrying, "Attempt 1 failed (SourceFetchFailed: "))
	if f := st.Failure; f == nil || !f.Transient || !strings.Contains(f.Message, "the host is unreachable") {
		t.Errorf("retried: failure %+v, want a transient SourceFetchFailed saying the host is unreachable", f)
	}
	// The build that did not ask has failed by now, on the same server, down.
	for _, b := range failing[:1] {
		e.wait(b.name, 3*time.Minute, "finished", finished)
	}
	git.Up()
	ib := e.waitSucceeded("retried")
	if ib.Status.Attempt < 2 || ib.Status.Retries < 1 || ib.Status.Retries != ib.Status.Attempt-1 || ib.Status.Failure != nil {
		t.Errorf("retried: attempt %d, retries %d, failure %+v; want a success after retries", ib.Status.Attempt, ib.Status.Retries, ib.Status.Failure)
	}
	e.checkEvent("retried", v1alpha1.ReasonRetrying, "Attempt 1 failed with SourceFetchFailed; retrying in")
	e.checkComplete("e2e/retried", "latest", ib.Status.Image.Digest)
	var want []string
	for i := int32(1); i <= ib.Status.Attempt; i++ {
		want = append(want, fmt.Sprintf("retried-1-%d", i))
	}
	r.checkOnePodAtATime(want...)

	// The others failed once, each saying why, and were not retried (the server was back, and
	// the retried build's backoff long past, when this is checked).
	for _, b := range failing {
		ib := e.waitFailed(b.name)
		f := ib.Status.Failure
		t.Logf("%s: %+v", b.name, f)
		if f.Reason != "SourceFetchFailed" || f.Transient != b.transient || !strings.Contains(f.Message, b.msg) {
			t.Errorf("%s: failure %+v, want SourceFetchFailed (transient %v) saying %q", b.name, f, b.transient, b.msg)
		}
		if ib.Status.Attempt != 1 || ib.Status.Retries != 0 {
			t.Errorf("%s: attempt %d, retries %d: retried", b.name, ib.Status.Attempt, ib.Status.Retries)
		}
		if c := apimeta.FindStatusCondition(ib.Status.Conditions, v1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("%s: Stalled = %+v, want True", b.name, c)
		}
		if _, ok := records[b.name].saw(ready(v1alpha1.ReasonRetrying, "")); ok {
			t.Errorf("%s: its status said Retrying", b.name)
		}
		e.checkEvent(b.name, "SourceFetchFailed", b.msg)
		e.checkNothingPushed("e2e/" + b.name)
		records[b.name].checkOnePodAtATime(b.name + "-1-1")
	}
}

// TestFaultRegistryDownDuringPush: the registry goes down in the middle of the push (right
// after the first blob of the image was uploaded) and resets every connection. The executor
// retries the push on its own (--push-retry, bounded), then the attempt fails with PushFailed
// and no tag exists, not even on the part of the image that was uploaded; the controller
// retries with backoff, and once the registry is back a later attempt pushes the whole image,
// which the tag points at.
func TestFaultRegistryDownDuringPush(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	reg := newSwitchable(t, e.reg.Host())
	// The base image comes from the registry's other address, which stays up.
	e.registrySecret("registry-switchable", reg.Host(), e.regPods)
	const build, repo = "push", "e2e/push"
	ib := e.imageBuild(build, repo)
	ib.Spec.Output.Image = reg.Host() + "/" + repo + ":latest"
	ib.Spec.Output.PushSecretRef = &corev1.LocalObjectReference{Name: "registry-switchable"}
	// No layer cache: every blob of the image is uploaded by the push itself.
	ib.Spec.Cache = &v1alpha1.Cache{Disabled: true}
	reg.TripAfter(func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/blobs/uploads/")
	})
	r := watchBuild(e, build)
	e.create(ib)

	st := r.waitFor("Retrying after PushFailed", 3*time.Minute, ready(v1alpha1.ReasonRetrying, "Attempt 1 failed (PushFailed: "))
	resets := reg.Resets()
	t.Logf("attempt 1: %s; %d connections reset while down; requests:\n%s", st.Failure.Message, resets, reg.Log())
	if !strings.Contains(st.Failure.Message, repo) {
		t.Errorf("the failure does not name the repository pushed to: %q", st.Failure.Message)
	}
	// The executor tried the push 1+2 times (--push-retry=2), each at least one connection.
	if resets < 3 {
		t.Errorf("%d connections while the registry was down: the executor did not retry the push", resets)
	}
	// A part of the image was uploaded, and no tag points at it.
	if !strings.Contains(reg.Log(), "/blobs/uploads/") || !strings.Contains(reg.Log(), "-> 201\n(down from here)") {
		t.Errorf("the registry went down before a blob was uploaded:\n%s", reg.Log())
	}
	e.checkNothingPushed(repo)

	reg.Up()
	done := e.waitSucceeded(build)
	if done.Status.Attempt < 2 || done.Status.Retries != done.Status.Attempt-1 || done.Status.Failure != nil {
		t.Errorf("attempt %d, retries %d, failure %+v; want a success after retries", done.Status.Attempt, done.Status.Retries, done.Status.Failure)
	}
	e.checkEvent(build, v1alpha1.ReasonRetrying, "Attempt 1 failed with PushFailed; retrying in")
	e.checkComplete(repo, "latest", done.Status.Image.Digest)
	var want []string
	for i := int32(1); i <= done.Status.Attempt; i++ {
		want = append(want, fmt.Sprintf("%s-1-%d", build, i))
	}
	r.checkOnePodAtATime(want...)
}
