// Package e2e tests Slipway on a real cluster, through the manager the Helm chart installed:
// hack/e2e.sh brings the local cluster up, installs everything with `hack/demo.sh install`,
// runs these tests with SLIPWAY_E2E=1, and takes the cluster down. Without SLIPWAY_E2E=1 they
// are skipped, so `go test ./...` does not need a cluster.
//
// Environment (written by hack/demo.sh install into <state>/demo/env):
//
//	KUBECONFIG                  the cluster
//	SLIPWAY_REGISTRY            a plain-HTTP registry the kubelet pulls from (127.0.0.1:PORT)
//	SLIPWAY_POD_HOST            the address executor pods reach this host at (the CNI bridge's)
//	SLIPWAY_MANAGER_NAMESPACE   where the manager runs, for its log on failure
//
// Every test starts its own servers on 127.0.0.1 (a registry requiring basic auth, a git
// server requiring basic auth) and forwards a port on SLIPWAY_POD_HOST to each, because pods on
// the CNI bridge cannot reach the host's loopback.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/gitserver"
	"github.com/slipway-dev/slipway/test/testenv"
)

var (
	k8s       client.Client
	watcher   client.WithWatch // for the fault tests' watches (faults_test.go)
	clientset *kubernetes.Clientset
	podHost   string
	plainReg  string
	managerNS string
)

func TestMain(m *testing.M) {
	if os.Getenv("SLIPWAY_E2E") != "1" {
		fmt.Println("test/e2e: skipped: these tests need a cluster with Slipway installed; run hack/e2e.sh (make test-e2e), or set SLIPWAY_E2E=1 with KUBECONFIG, SLIPWAY_REGISTRY and SLIPWAY_POD_HOST")
		os.Exit(0)
	}
	podHost = mustEnv("SLIPWAY_POD_HOST")
	plainReg = mustEnv("SLIPWAY_REGISTRY")
	managerNS = os.Getenv("SLIPWAY_MANAGER_NAMESPACE")
	if managerNS == "" {
		managerNS = "slipway-system"
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e: kubeconfig:", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e: client:", err)
		os.Exit(1)
	}
	if watcher, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e: client:", err)
		os.Exit(1)
	}
	clientset = kubernetes.NewForConfigOrDie(cfg)
	os.Exit(m.Run())
}

func mustEnv(k string) string {
	v := os.Getenv(k)
	if v == "" {
		fmt.Fprintf(os.Stderr, "test/e2e: %s is not set (hack/demo.sh install writes it into <state>/demo/env)\n", k)
		os.Exit(1)
	}
	return v
}

// --- servers -------------------------------------------------------------------------------

// forward listens on podHost at a free port, copies every connection to target, and returns
// podHost:PORT.
func forward(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(podHost, "0"))
	if err != nil {
		t.Fatalf("listening on %s (SLIPWAY_POD_HOST): %v", podHost, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { io.Copy(c, u); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

const (
	regUser, regPassword = "pusher", "s3cret-push"
	gitUser, gitPassword = "reader", "s3cret-git"
)

// env is what one test case builds against: a registry and a git server, both requiring basic
// auth, reachable from pods, and a namespace holding the credentials as Secrets.
type env struct {
	t         *testing.T
	ns        string
	reg       *testenv.Registry
	regPods   string // the registry as pods reach it: podHost:PORT
	gitURL    string // the git server as pods reach it: http://podHost:PORT
	gitHost   string // the git server on 127.0.0.1: HOST:PORT
	gitRoot   string
	work      string // the work repository published as app.git
	commit    string
	baseImage string // busybox in reg, as pods name it
}

// newEnv starts the servers, publishes a repository with files (and a Dockerfile using the
// busybox base as ARG BASE) and makes a namespace with the git and registry secrets.
func newEnv(t *testing.T, nsLabels map[string]string, files map[string]string) *env {
	t.Helper()
	e := &env{t: t}
	e.reg = testenv.StartRegistry(t, testenv.WithBasicAuth(regUser, regPassword))
	testenv.PushBusybox(t, e.reg)
	e.regPods = forward(t, e.reg.Host())
	e.baseImage = e.regPods + "/library/busybox:latest"

	e.gitRoot = t.TempDir()
	git := gitserver.StartHTTP(t, e.gitRoot, gitserver.WithBasicAuth(gitUser, gitPassword))
	e.gitHost = git.Host()
	e.gitURL = "http://" + forward(t, e.gitHost)
	e.work = gitserver.NewWorkRepo(t)
	gitserver.WriteFiles(t, e.work, files)
	e.commit = gitserver.Commit(t, e.work, "e2e")
	gitserver.Publish(t, e.work, e.gitRoot, "app.git", true)

	e.ns = "e2e-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(e.ns) > 50 {
		e.ns = e.ns[:50]
	}
	e.ns = strings.TrimRight(e.ns, "-") + "-" + nonce()[:6]
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns, Labels: nsLabels}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dump()
		}
		k8s.Delete(context.Background(), ns)
	})
	auth := base64.StdEncoding.EncodeToString([]byte(regUser + ":" + regPassword))
	dockercfg, _ := json.Marshal(map[string]any{"auths": map[string]any{e.regPods: map[string]string{"auth": auth}}})
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: e.ns}, Type: corev1.SecretTypeBasicAuth,
			StringData: map[string]string{"username": gitUser, "password": gitPassword}},
		{ObjectMeta: metav1.ObjectMeta{Name: "registry", Namespace: e.ns}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: dockercfg}},
	} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func nonce() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// imageBuild is an ImageBuild of app.git at main, with the credentials, pushing to repo.
func (e *env) imageBuild(name, repo string) *v1alpha1.ImageBuild {
	return &v1alpha1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: v1alpha1.ImageBuildSpec{
			Source: v1alpha1.Source{Git: v1alpha1.GitSource{
				URL:       e.gitURL + "/app.git",
				Revision:  "main",
				SecretRef: &corev1.LocalObjectReference{Name: "git"},
			}},
			BuildArgs: []v1alpha1.BuildArg{{Name: "BASE", Value: ptr.To(e.baseImage)}},
			Output: v1alpha1.Output{
				Image:         e.regPods + "/" + repo + ":latest",
				PushSecretRef: &corev1.LocalObjectReference{Name: "registry"},
				Insecure:      true,
			},
			Timeout: &metav1.Duration{Duration: 5 * time.Minute},
		},
	}
}

func (e *env) create(ib *v1alpha1.ImageBuild) {
	e.t.Helper()
	if err := k8s.Create(context.Background(), ib); err != nil {
		e.t.Fatal(err)
	}
}

// wait polls the ImageBuild until cond holds, and returns it.
func (e *env) wait(name string, timeout time.Duration, what string, cond func(*v1alpha1.ImageBuild) bool) *v1alpha1.ImageBuild {
	e.t.Helper()
	var ib v1alpha1.ImageBuild
	deadline := time.Now().Add(timeout)
	for {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, &ib)
		if err == nil && cond(&ib) {
			return &ib
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(ib.Status, "", "  ")
			e.t.Fatalf("ImageBuild %s: not %s after %s (get: %v); status:\n%s", name, what, timeout, err, b)
		}
		time.Sleep(time.Second)
	}
}

func finished(ib *v1alpha1.ImageBuild) bool {
	return ib.Status.ObservedGeneration == ib.Generation &&
		(ib.Status.Phase == v1alpha1.PhaseSucceeded || ib.Status.Phase == v1alpha1.PhaseFailed)
}

func (e *env) waitSucceeded(name string) *v1alpha1.ImageBuild {
	e.t.Helper()
	ib := e.wait(name, 5*time.Minute, "finished", finished)
	if ib.Status.Phase != v1alpha1.PhaseSucceeded {
		b, _ := json.MarshalIndent(ib.Status, "", "  ")
		e.t.Fatalf("ImageBuild %s: phase %s, want Succeeded; status:\n%s", name, ib.Status.Phase, b)
	}
	if ib.Status.Image == nil || !strings.HasPrefix(ib.Status.Image.Digest, "sha256:") {
		e.t.Fatalf("ImageBuild %s: no digest in the status: %+v", name, ib.Status.Image)
	}
	return ib
}

func (e *env) waitFailed(name string) *v1alpha1.ImageBuild {
	e.t.Helper()
	ib := e.wait(name, 5*time.Minute, "finished", finished)
	if ib.Status.Phase != v1alpha1.PhaseFailed || ib.Status.Failure == nil {
		b, _ := json.MarshalIndent(ib.Status, "", "  ")
		e.t.Fatalf("ImageBuild %s: phase %s, want Failed with a failure; status:\n%s", name, ib.Status.Phase, b)
	}
	return ib
}

// waitRunningPod waits until the ImageBuild's executor pod of the current generation runs and
// returns its name.
func (e *env) waitRunningPod(name string) string {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var ib v1alpha1.ImageBuild
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, &ib); err == nil && ib.Status.PodName != "" {
			var pod corev1.Pod
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: ib.Status.PodName}, &pod); err == nil &&
				pod.Status.Phase == corev1.PodRunning {
				return pod.Name
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.t.Fatalf("ImageBuild %s: no running executor pod after 2m", name)
	return ""
}

func (e *env) waitPodGone(pod string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var p corev1.Pod
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: pod}, &p)
		if apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(time.Second)
	}
	e.t.Fatalf("pod %s still exists after %s", pod, timeout)
}

// checkPushed checks that repo@digest is in the registry with that digest.
func (e *env) checkPushed(repo, digest string) {
	e.t.Helper()
	ref, err := name.ParseReference(e.reg.Ref(repo+"@"+digest), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := remote.Head(ref, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		e.t.Fatalf("%s is not in the registry: %v", ref, err)
	}
	if d.Digest.String() != digest {
		e.t.Fatalf("%s: the registry has digest %s", ref, d.Digest)
	}
}

// checkNothingPushed checks that the registry has no tag in repo.
func (e *env) checkNothingPushed(repo string) {
	e.t.Helper()
	r, err := name.NewRepository(e.reg.Ref(repo), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	tags, err := remote.List(r, remote.WithAuth(e.reg.Auth()))
	if err == nil && len(tags) > 0 {
		e.t.Fatalf("%s has tags %v, want none", r, tags)
	}
}

// run copies repo@digest to the plain registry the kubelet pulls from (same digest), runs it as
// a pod in the test's namespace and returns its log.
func (e *env) run(repo, digest string) string {
	e.t.Helper()
	ctx := context.Background()
	src, err := name.ParseReference(e.reg.Ref(repo+"@"+digest), name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	// An image or an index (a multi-platform build, or an image with its provenance
	// attestation), copied whole so that the digest stays.
	desc, err := remote.Get(src, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		e.t.Fatalf("pulling %s: %v", src, err)
	}
	dstRepo := plainReg + "/e2e/" + e.ns + "/" + repo
	dst, err := name.ParseReference(dstRepo+"@"+digest, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			e.t.Fatal(err)
		}
		err = remote.WriteIndex(dst, idx, remote.WithAuth(authn.Anonymous))
	} else {
		img, err := desc.Image()
		if err != nil {
			e.t.Fatal(err)
		}
		err = remote.Write(dst, img, remote.WithAuth(authn.Anonymous))
	}
	if err != nil {
		e.t.Fatalf("copying to %s: %v", dst, err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "run-" + nonce()[:6], Namespace: e.ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "app", Image: dstRepo + "@" + digest,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			e.t.Fatal(err)
		}
		if pod.Status.Phase == corev1.PodSucceeded {
			break
		}
		if pod.Status.Phase == corev1.PodFailed || time.Now().After(deadline) {
			e.t.Fatalf("pod %s running %s: phase %s: %+v", pod.Name, dst, pod.Status.Phase, pod.Status.ContainerStatuses)
		}
		time.Sleep(500 * time.Millisecond)
	}
	log, err := clientset.CoreV1().Pods(e.ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(log)
}

// dump prints the manager's log, the logs of the pods in the test's namespace and its events.
func (e *env) dump() {
	ctx := context.Background()
	logs := func(ns string, pods []corev1.Pod, tail int64) {
		for _, p := range pods {
			for _, c := range p.Spec.Containers {
				b, err := clientset.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: ptr.To(tail)}).DoRaw(ctx)
				e.t.Logf("--- log of %s/%s (%s, phase %s, err %v):\n%s", ns, p.Name, c.Name, p.Status.Phase, err, b)
			}
		}
	}
	if l, err := clientset.CoreV1().Pods(managerNS).List(ctx, metav1.ListOptions{}); err == nil {
		logs(managerNS, l.Items, 80)
	}
	if l, err := clientset.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{}); err == nil {
		logs(e.ns, l.Items, 200)
	}
	if l, err := clientset.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{}); err == nil {
		var b bytes.Buffer
		for _, ev := range l.Items {
			fmt.Fprintf(&b, "%s %s %s/%s %s: %s\n", ev.LastTimestamp.Format(time.TimeOnly), ev.Type,
				ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Reason, ev.Message)
		}
		e.t.Logf("--- events in %s:\n%s", e.ns, b.String())
	}
	var ibs v1alpha1.ImageBuildList
	if err := k8s.List(ctx, &ibs, client.InNamespace(e.ns)); err == nil {
		for _, ib := range ibs.Items {
			b, _ := json.MarshalIndent(ib.Status, "", "  ")
			e.t.Logf("--- ImageBuild %s (generation %d) status:\n%s", ib.Name, ib.Generation, b)
		}
	}
}
