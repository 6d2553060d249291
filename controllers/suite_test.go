package controllers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// The envtest tests share one etcd and kube-apiserver (from hack/envtest.sh), started by the
// first test that needs them. Each test runs its own manager, restricted to its own namespace.
var (
	envOnce   sync.Once
	testEnv   *envtest.Environment
	envCfg    *rest.Config
	envErr    error
	envScheme = runtime.NewScheme()
)

func init() {
	if err := clientgoscheme.AddToScheme(envScheme); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(envScheme); err != nil {
		panic(err)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testEnv != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}
	os.Exit(code)
}

// startEnv returns a client of the shared test API server. Without KUBEBUILDER_ASSETS it fails
// the test and says how to get them, unless the tests run with -short, which skips it.
func startEnv(t *testing.T) client.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("envtest test skipped in -short mode")
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal(`KUBEBUILDER_ASSETS is not set: run eval "$(hack/envtest.sh)" first; it builds etcd and kube-apiserver once and caches them (or run go test -short to skip the envtest tests)`)
	}
	envOnce.Do(func() {
		// The manager's log goes to managerLog, which tests search for what must never be
		// logged, and to stderr with SLIPWAY_TEST_LOG=1.
		var out io.Writer = &managerLog
		if os.Getenv("SLIPWAY_TEST_LOG") != "" {
			out = io.MultiWriter(&managerLog, os.Stderr)
		}
		log.SetLogger(textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4), textlogger.Output(out))))
		testEnv = &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
		envCfg, envErr = testEnv.Start()
	})
	if envErr != nil {
		t.Fatalf("starting envtest (KUBEBUILDER_ASSETS=%s): %v", os.Getenv("KUBEBUILDER_ASSETS"), envErr)
	}
	c, err := client.New(envCfg, client.Options{Scheme: envScheme})
	if err != nil {
		t.Fatalf("creating a client: %v", err)
	}
	return c
}

// managerLog holds everything the test managers logged (at verbosity 4).
var managerLog syncBuffer

// syncBuffer is a bytes.Buffer for several writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testManager is a running manager with the ImageBuild controller, watching one namespace.
type testManager struct {
	cancel context.CancelFunc
	done   chan error
}

// startManager starts a manager for namespace ns; the test stops it at its end, or earlier
// with stop.
func startManager(t *testing.T, ns string, opts Options) *testManager {
	t.Helper()
	return startManagerWith(t, ns, opts, nil)
}

// startManagerWith is startManager with the reconciler's client wrapped by wrap (nil: not
// wrapped), for tests that make the API server fail.
func startManagerWith(t *testing.T, ns string, opts Options, wrap func(client.Client) client.Client) *testManager {
	t.Helper()
	return startManagerWrapped(t, ns, opts, wrap, nil)
}

// startManagerWrapped is startManagerWith with the reconciler's API reader also wrapped by
// wrapReader (nil: not wrapped), for tests that count what it reads.
func startManagerWrapped(t *testing.T, ns string, opts Options, wrap func(client.Client) client.Client,
	wrapReader func(client.Reader) client.Reader) *testManager {
	t.Helper()
	return startManagerIn(t, []string{ns}, opts, wrap, wrapReader)
}

// startManagerIn is startManagerWrapped for a manager watching the namespaces nss.
func startManagerIn(t *testing.T, nss []string, opts Options, wrap func(client.Client) client.Client,
	wrapReader func(client.Reader) client.Reader) *testManager {
	t.Helper()
	namespaces := map[string]cache.Config{}
	for _, ns := range nss {
		namespaces[ns] = cache.Config{}
	}
	if opts.ExecutorImage == "" {
		opts.ExecutorImage = "slipway/executor:test"
	}
	if opts.RetryBackoff == 0 {
		opts.RetryBackoff = 200 * time.Millisecond
	}
	mgr, err := ctrl.NewManager(envCfg, ctrl.Options{
		Scheme:                 envScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache: cache.Options{
			DefaultNamespaces: namespaces,
			ByObject:          CacheOptions().ByObject,
		},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("creating the manager: %v", err)
	}
	c := mgr.GetClient()
	if wrap != nil {
		c = wrap(c)
	}
	var reader client.Reader = mgr.GetAPIReader()
	if wrapReader != nil {
		reader = wrapReader(reader)
	}
	r := &ImageBuildReconciler{
		Client:    c,
		APIReader: reader,
		Recorder:  mgr.GetEventRecorder("slipway-controller"),
		Options:   opts,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatalf("setting up the controller: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &testManager{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(ctx) }()
	t.Cleanup(m.stop)
	return m
}

func (m *testManager) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	<-m.done
}

// newNamespace creates a namespace with the given labels, deleted at the end of the test.
func newNamespace(t *testing.T, c client.Client, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ib-", Labels: labels}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}

// eventually polls cond every 100ms until it returns true, failing the test after timeout with
// the last thing cond reported.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitStatus waits until the ImageBuild's status satisfies cond, and returns it.
func waitStatus(t *testing.T, c client.Client, key client.ObjectKey, what string, cond func(*v1alpha1.ImageBuild) bool) *v1alpha1.ImageBuild {
	t.Helper()
	ib := &v1alpha1.ImageBuild{}
	eventually(t, 20*time.Second, what, func() (bool, string) {
		if err := c.Get(context.Background(), key, ib); err != nil {
			return false, err.Error()
		}
		return cond(ib), describe(ib)
	})
	return ib
}

func describe(ib *v1alpha1.ImageBuild) string {
	var conds []string
	for _, c := range ib.Status.Conditions {
		conds = append(conds, fmt.Sprintf("%s=%s/%s(%q)", c.Type, c.Status, c.Reason, c.Message))
	}
	return fmt.Sprintf("phase=%s pod=%s attempt=%d retries=%d conditions=[%s]", ib.Status.Phase, ib.Status.PodName,
		ib.Status.Attempt, ib.Status.Retries, strings.Join(conds, " "))
}

// podNames lists the executor pods of namespace ns.
func podNames(t *testing.T, c client.Client, ns string) []string {
	t.Helper()
	var pods corev1.PodList
	if err := c.List(context.Background(), &pods, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing pods: %v", err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return names
}

// waitPod waits for the pod to exist and returns it.
func waitPod(t *testing.T, c client.Client, ns, name string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	eventually(t, 20*time.Second, "pod "+name, func() (bool, string) {
		err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, pod)
		return err == nil, fmt.Sprintf("%v; pods: %v", err, podNames(t, c, ns))
	})
	return pod
}

// waitPodGone waits for the pod to be deleted.
func waitPodGone(t *testing.T, c client.Client, ns, name string) {
	t.Helper()
	eventually(t, 20*time.Second, "pod "+name+" to be deleted", func() (bool, string) {
		err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &corev1.Pod{})
		return err != nil, fmt.Sprintf("pods: %v", podNames(t, c, ns))
	})
}

// kubelet plays the kubelet's part for one pod: it writes the pod's status.
type kubelet struct {
	t *testing.T
	c client.Client
}

func (k kubelet) update(ns, name string, mutate func(*corev1.PodStatus)) {
	k.t.Helper()
	pod := waitPod(k.t, k.c, ns, name)
	mutate(&pod.Status)
	if err := k.c.Status().Update(context.Background(), pod); err != nil {
		k.t.Fatalf("updating the status of pod %s: %v", name, err)
	}
}

func (k kubelet) run(ns, name string) {
	k.t.Helper()
	now := metav1.Now()
	k.update(ns, name, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodRunning
		s.StartTime = &now
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer, Image: "slipway/executor:test", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
	})
}

// finish ends the executor with exit code, reason and termination message.
func (k kubelet) finish(ns, name string, code int32, reason, message string) {
	k.t.Helper()
	k.update(ns, name, func(s *corev1.PodStatus) {
		started := metav1.NewTime(time.Now().Add(-5 * time.Second))
		if s.StartTime == nil {
			s.StartTime = &started
		}
		s.Phase = corev1.PodSucceeded
		if code != 0 {
			s.Phase = corev1.PodFailed
		}
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: executorContainer, Image: "slipway/executor:test",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, Message: message, StartedAt: *s.StartTime, FinishedAt: metav1.Now(),
			}}}}
	})
}
