package e2e

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/test/imagetest"
	"github.com/slipway-dev/slipway/test/probe"
)

// appFiles is the repository of the tests: a multi-stage Dockerfile, a broken one (line 4) and
// a slow one (a RUN that sleeps, unique per build through ARG NONCE).
var appFiles = map[string]string{
	"Dockerfile": `ARG BASE=busybox:latest
FROM ${BASE} AS build
WORKDIR /src
COPY message.txt ./
RUN mkdir /out && tr a-z A-Z < message.txt > /out/message && echo "built in stage build" >> /out/message

FROM ${BASE}
COPY --from=build /out/message /message
COPY greet.sh /greet.sh
CMD ["/bin/sh", "/greet.sh"]
`,
	"message.txt": "hello from a private repository\n",
	"greet.sh":    "echo \"e2e says:\"\ncat /message\n",
	"Dockerfile.broken": `ARG BASE=busybox:latest
FROM ${BASE}
RUN true
COPPY greet.sh /greet.sh
`,
	"Dockerfile.mounts": `ARG BASE=busybox:latest
FROM ${BASE}
RUN --mount=type=secret,id=token,required \
    --mount=type=bind,source=message.txt,target=/mnt/message.txt \
    --mount=type=cache,target=/var/cache/e2e \
    sh -c 'test "$(cat /run/secrets/token)" = "e2e-build-secret" && echo "the secret was there" > /result && cat /mnt/message.txt >> /result'
CMD ["cat", "/result"]
`,
	"Dockerfile.slow": `ARG BASE=busybox:latest
FROM ${BASE}
ARG NONCE
RUN echo "${NONCE}" > /nonce && sleep 45
`,
}

// TestPrivateMultiStageAndCache: a multi-stage build from a private repository (basic auth),
// pushed with a dockerconfigjson secret to a registry requiring auth; the digest is in the
// registry and the image runs on the cluster. A second build of the same source is served
// from the cache.
func TestPrivateMultiStageAndCache(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	e.create(e.imageBuild("app", "e2e/app"))
	ib := e.waitSucceeded("app")
	t.Logf("first build: digest %s, commit %s, cache %+v, stages %+v, duration %s",
		ib.Status.Image.Digest, ib.Status.Source, ib.Status.Cache, ib.Status.Stages, ib.Status.Duration)
	if ib.Status.Source == nil || ib.Status.Source.Commit != e.commit {
		t.Errorf("status.source %+v, want commit %s", ib.Status.Source, e.commit)
	}
	if len(ib.Status.Stages) != 2 {
		t.Errorf("status.stages %+v, want 2 stages", ib.Status.Stages)
	}
	if ib.Status.Cache == nil || ib.Status.Cache.Misses == 0 {
		t.Errorf("status.cache %+v: a first build into an empty registry should miss", ib.Status.Cache)
	}
	e.checkPushed("e2e/app", ib.Status.Image.Digest)
	out := e.run("e2e/app", ib.Status.Image.Digest)
	if !strings.Contains(out, "HELLO FROM A PRIVATE REPOSITORY") || !strings.Contains(out, "built in stage build") {
		t.Errorf("the image said %q", out)
	}

	// The same source again, under another name: every instruction is a cache hit.
	e.create(e.imageBuild("app-again", "e2e/app"))
	again := e.waitSucceeded("app-again")
	t.Logf("second build: digest %s, cache %+v, duration %s", again.Status.Image.Digest, again.Status.Cache, again.Status.Duration)
	if c := again.Status.Cache; c == nil || c.Hits == 0 || c.Misses != 0 {
		t.Errorf("second build: status.cache %+v, want hits and no miss", c)
	}
	e.checkPushed("e2e/app", again.Status.Image.Digest)
	if out := e.run("e2e/app", again.Status.Image.Digest); !strings.Contains(out, "HELLO FROM A PRIVATE REPOSITORY") {
		t.Errorf("the cached image said %q", out)
	}
}

// TestRunMounts: RUN --mount of a build secret from spec.secrets, a file of the context and a
// cache, in the executor pod: the command sees them, the image keeps none of them.
func TestRunMounts(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	const value = "e2e-build-secret"
	if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "build-token", Namespace: e.ns},
		StringData: map[string]string{"token": value}}); err != nil {
		t.Fatal(err)
	}
	ib := e.imageBuild("mounts", "e2e/mounts")
	ib.Spec.Dockerfile = "Dockerfile.mounts"
	ib.Spec.Secrets = []v1alpha1.BuildSecret{{ID: "token", SecretKeyRef: corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "build-token"}, Key: "token"}}}
	e.create(ib)
	ib = e.waitSucceeded("mounts")
	e.checkPushed("e2e/mounts", ib.Status.Image.Digest)
	out := e.run("e2e/mounts", ib.Status.Image.Digest)
	if !strings.Contains(out, "the secret was there") || !strings.Contains(out, "hello from a private repository") {
		t.Errorf("the image said %q", out)
	}
	if strings.Contains(out, value) {
		t.Errorf("the secret's value reached the image's output: %q", out)
	}
	ref, err := name.ParseReference(e.reg.Ref("e2e/mounts@"+ib.Status.Image.Digest), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := imagetest.Flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tree["/result"]; !ok {
		t.Errorf("/result is not in the image")
	}
	for _, p := range []string{"/run/secrets", "/run/secrets/token", "/mnt", "/mnt/message.txt", "/var/cache/e2e"} {
		if _, ok := tree[p]; ok {
			t.Errorf("%s is in the image; mounts must leave nothing", p)
		}
	}
}

// TestRunStepFindsNoCredential is finding 2 of issue 10 on a real cluster: a RUN step of the
// Dockerfile being built (test/probe: every file it can read, every process's environment,
// command line, root, working directory and open files) finds none of the build's credentials:
// the git password, the push secret (as written and base64-encoded in the docker config), and
// a build secret the step does not mount. A second step mounts the other build secret and
// finds it there and nowhere else, which shows the probe finds what is there to find.
func TestRunStepFindsNoCredential(t *testing.T) {
	const used, unused = "e2e-mounted-c4nary", "e2e-unmounted-c4nary"
	pushAuth := base64.StdEncoding.EncodeToString([]byte(regUser + ":" + regPassword))
	all := []string{gitPassword, regPassword, pushAuth, used, unused}
	files := map[string]string{
		"probe.sh":   probe.Script,
		"Dockerfile": "ARG BASE=busybox:latest\n" + probe.Dockerfile("${BASE}", "used", all...),
	}
	e := newEnv(t, nil, files)
	for id, v := range map[string]string{"used": used, "unused": unused} {
		if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s-" + id, Namespace: e.ns},
			StringData: map[string]string{"value": v}}); err != nil {
			t.Fatal(err)
		}
	}
	ib := e.imageBuild("probe", "e2e/probe")
	for _, id := range []string{"used", "unused"} {
		ib.Spec.Secrets = append(ib.Spec.Secrets, v1alpha1.BuildSecret{ID: id, SecretKeyRef: corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "s-" + id}, Key: "value"}})
	}
	e.create(ib)
	ib = e.waitSucceeded("probe")

	ref, err := name.ParseReference(e.reg.Ref("e2e/probe@"+ib.Status.Image.Digest), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(e.reg.Auth()))
	if err != nil {
		t.Fatal(err)
	}
	probe.Check(t, img, "used", used, "/probe.sh", "/slipway/executor", "/proc/1/environ", "/proc/1/cmdline")
}

// TestDockerfileError: the status names the reason and the line; nothing is pushed.
func TestDockerfileError(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	ib := e.imageBuild("broken", "e2e/broken")
	ib.Spec.Dockerfile = "Dockerfile.broken"
	e.create(ib)
	ib = e.waitFailed("broken")
	f := ib.Status.Failure
	t.Logf("failure: %+v", f)
	if f.Reason != "DockerfileInvalid" {
		t.Errorf("failure reason %q, want DockerfileInvalid", f.Reason)
	}
	if f.Line != 4 {
		t.Errorf("failure line %d, want 4 (COPPY)", f.Line)
	}
	e.checkNothingPushed("e2e/broken")
}

// TestUnknownRevision: a revision the repository does not have fails the fetch.
func TestUnknownRevision(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	ib := e.imageBuild("norev", "e2e/norev")
	ib.Spec.Source.Git.Revision = "no-such-branch"
	e.create(ib)
	ib = e.waitFailed("norev")
	t.Logf("failure: %+v", ib.Status.Failure)
	if ib.Status.Failure.Reason != "SourceFetchFailed" {
		t.Errorf("failure reason %q, want SourceFetchFailed", ib.Status.Failure.Reason)
	}
	if !strings.Contains(ib.Status.Failure.Message, "no-such-branch") {
		t.Errorf("failure message %q does not name the revision", ib.Status.Failure.Message)
	}
	e.checkNothingPushed("e2e/norev")
}

// slowBuild is an ImageBuild of Dockerfile.slow, which sleeps 45 s in a RUN.
func slowBuild(e *env, name string) *v1alpha1.ImageBuild {
	ib := e.imageBuild(name, "e2e/"+name)
	ib.Spec.Dockerfile = "Dockerfile.slow"
	ib.Spec.BuildArgs = append(ib.Spec.BuildArgs, v1alpha1.BuildArg{Name: "NONCE", Value: ptr.To(nonce())})
	return ib
}

// TestSpecChangeMidBuild: changing the spec while the pod runs replaces the pod; the new
// generation builds and succeeds.
func TestSpecChangeMidBuild(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	e.create(slowBuild(e, "change"))
	old := e.waitRunningPod("change")

	// The controller writes the status as the build runs: a user's edit that meets one of
	// those writes is retried, as kubectl edit would be.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var ib v1alpha1.ImageBuild
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "change"}, &ib); err != nil {
			return err
		}
		ib.Spec.Dockerfile = "Dockerfile"
		return k8s.Update(context.Background(), &ib)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.waitPodGone(old, 90*time.Second)
	done := e.waitSucceeded("change")
	if done.Status.ObservedGeneration != 2 || done.Status.PodName == old {
		t.Errorf("observedGeneration %d, pod %s (old %s): want generation 2 built by a new pod",
			done.Status.ObservedGeneration, done.Status.PodName, old)
	}
	e.checkPushed("e2e/change", done.Status.Image.Digest)
	if out := e.run("e2e/change", done.Status.Image.Digest); !strings.Contains(out, "e2e says:") {
		t.Errorf("the image said %q", out)
	}
}

// TestDeleteMidBuild: deleting the ImageBuild while its pod runs removes the pod.
func TestDeleteMidBuild(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	ib := slowBuild(e, "deleted")
	e.create(ib)
	pod := e.waitRunningPod("deleted")
	if err := k8s.Delete(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	e.waitPodGone(pod, 90*time.Second)
	e.checkNothingPushed("e2e/deleted")
}

// TestTimeout: a build running longer than spec.timeout fails with reason Timeout.
func TestTimeout(t *testing.T) {
	e := newEnv(t, nil, appFiles)
	ib := slowBuild(e, "slow")
	ib.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Second}
	e.create(ib)
	ib = e.waitFailed("slow")
	t.Logf("failure: %+v", ib.Status.Failure)
	if ib.Status.Failure.Reason != v1alpha1.ReasonTimeout {
		t.Errorf("failure reason %q, want %s", ib.Status.Failure.Reason, v1alpha1.ReasonTimeout)
	}
	e.checkNothingPushed("e2e/slow")
}

// TestPodSecurityBaseline: in a namespace enforcing Pod Security baseline the executor pod is
// admitted and the build succeeds.
func TestPodSecurityBaseline(t *testing.T) {
	e := newEnv(t, map[string]string{
		"pod-security.kubernetes.io/enforce":         "baseline",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}, appFiles)
	e.create(e.imageBuild("baseline", "e2e/baseline"))
	ib := e.waitSucceeded("baseline")
	events, err := clientset.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events.Items {
		if ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "violates PodSecurity") {
			t.Errorf("event %s: %s", ev.Reason, ev.Message)
		}
	}
	e.checkPushed("e2e/baseline", ib.Status.Image.Digest)
	if out := e.run("e2e/baseline", ib.Status.Image.Digest); !strings.Contains(out, "e2e says:") {
		t.Errorf("the image said %q", out)
	}
}
