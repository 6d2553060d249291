package controllers

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

var testResources = corev1.ResourceRequirements{Requests: corev1.ResourceList{
	corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("512Mi")}}

// wantPod is the pod of makeImageBuild("app", "ns") at attempt 1 with default options.
func wantPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "app-1-1",
			Namespace: "ns",
			Labels: map[string]string{
				"app.kubernetes.io/managed-by": "slipway",
				"build.slipway.dev/imagebuild": "app",
				"build.slipway.dev/generation": "1",
				"build.slipway.dev/attempt":    "1",
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "build.slipway.dev/v1alpha1", Kind: "ImageBuild", Name: "app", UID: "uid-app",
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "executor",
				Image:           "slipway/executor:test",
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{
					"--context=https://git.example.com/org/app.git",
					"--git=recurse-submodules=false",
					"--dockerfile=Dockerfile",
					"--destination=registry.example.com/org/app:v1",
					"--cache=true",
					"--cache-repo=registry.example.com/org/app/cache",
					"--cache-mount-scope=namespace/ns",
					"--provenance=min",
					"--builder-id=slipway/executor:test",
					"--push-retry=2",
					"--result-file=/dev/termination-log",
					"--isolation=inplace",
				},
				Resources:                testResources,
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				SecurityContext: &corev1.SecurityContext{
					Privileged:               ptr.To(false),
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETFCAP", "SYS_CHROOT"},
					},
				},
			}},
		},
	}
}

func TestImageBuild_constructPod(t *testing.T) {
	base := podOptions{executorImage: "slipway/executor:test", hostUsers: true, resources: testResources}
	str := func(s string) *string { return &s }

	tests := []struct {
		name string
		ib   func() *v1alpha1.ImageBuild
		opts func(o *podOptions)
		want func(p *corev1.Pod)
	}{
		{
			name: "minimal",
			ib:   func() *v1alpha1.ImageBuild { return makeImageBuild("app", "ns").Obj() },
			want: func(*corev1.Pod) {},
		},
		{
			name: "name from generation and attempt",
			ib: func() *v1alpha1.ImageBuild {
				return makeImageBuild("app", "ns").Generation(4).Status(v1alpha1.ImageBuildStatus{Attempt: 3}).Obj()
			},
			want: func(p *corev1.Pod) {
				p.Name = "app-4-3"
				p.Labels["build.slipway.dev/generation"] = "4"
				p.Labels["build.slipway.dev/attempt"] = "3"
			},
		},
		{
			name: "every build flag",
			opts: func(o *podOptions) { o.tags = []string{"latest", "stable"} },
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Revision("refs/tags/v1").Obj()
				ib.Spec.Source.ContextDir = "services/api"
				ib.Spec.Source.Git.Submodules = true
				ib.Spec.Dockerfile = "build/Dockerfile.prod"
				ib.Spec.Target = "runtime"
				ib.Spec.Output.AdditionalTags = []string{"latest", "stable"} // rendered by renderTags: opts.tags
				ib.Spec.BuildArgs = []v1alpha1.BuildArg{{Name: "VERSION", Value: str("1.2")}, {Name: "EMPTY"}}
				ib.Spec.Labels = map[string]string{"b": "2", "a": "1"}
				ib.Spec.Cache = &v1alpha1.Cache{Repository: "cache.example.com/layers", TTL: &metav1.Duration{Duration: 6 * time.Hour}}
				return ib
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args = []string{
					"--context=https://git.example.com/org/app.git#refs/tags/v1",
					"--context-sub-path=services/api",
					"--git=recurse-submodules=true",
					"--dockerfile=build/Dockerfile.prod",
					"--destination=registry.example.com/org/app:v1",
					"--destination=registry.example.com/org/app:latest",
					"--destination=registry.example.com/org/app:stable",
					"--build-arg=VERSION=1.2",
					"--build-arg=EMPTY=",
					"--label=a=1",
					"--label=b=2",
					"--target=runtime",
					"--cache=true",
					"--cache-repo=cache.example.com/layers",
					"--cache-ttl=6h0m0s",
					"--cache-mount-scope=namespace/ns",
					"--provenance=min",
					"--builder-id=slipway/executor:test",
					"--push-retry=2",
					"--result-file=/dev/termination-log",
					"--isolation=inplace",
				}
			},
		},
		{
			name: "build checks",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Target = "runtime"
				ib.Spec.Checks = &v1alpha1.Checks{FailOn: []string{"SecretsUsedInArgOrEnv", "RootUser"}, Skip: []string{"NoHealthcheck"}}
				return ib
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args = []string{
					"--context=https://git.example.com/org/app.git",
					"--git=recurse-submodules=false",
					"--dockerfile=Dockerfile",
					"--destination=registry.example.com/org/app:v1",
					"--target=runtime",
					"--check-fail-on=SecretsUsedInArgOrEnv,RootUser",
					"--check-skip=NoHealthcheck",
					"--cache=true",
					"--cache-repo=registry.example.com/org/app/cache",
					"--cache-mount-scope=namespace/ns",
					"--provenance=min",
					"--builder-id=slipway/executor:test",
					"--push-retry=2",
					"--result-file=/dev/termination-log",
					"--isolation=inplace",
				}
			},
		},
		{
			name: "build checks: all, and empty lists",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Checks = &v1alpha1.Checks{FailOn: []string{"all"}, Skip: []string{}}
				return ib
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args = []string{
					"--context=https://git.example.com/org/app.git",
					"--git=recurse-submodules=false",
					"--dockerfile=Dockerfile",
					"--destination=registry.example.com/org/app:v1",
					"--check-fail-on=all",
					"--cache=true",
					"--cache-repo=registry.example.com/org/app/cache",
					"--cache-mount-scope=namespace/ns",
					"--provenance=min",
					"--builder-id=slipway/executor:test",
					"--push-retry=2",
					"--result-file=/dev/termination-log",
					"--isolation=inplace",
				}
			},
		},
		{
			name: "insecure registry with a port and no cache",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Image("127.0.0.1:5999/hello").Obj()
				ib.Spec.Output.Insecure = true
				ib.Spec.Cache = &v1alpha1.Cache{Disabled: true}
				return ib
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args = []string{
					"--context=https://git.example.com/org/app.git",
					"--git=recurse-submodules=false",
					"--dockerfile=Dockerfile",
					"--destination=127.0.0.1:5999/hello",
					"--cache=false",
					"--insecure", "--skip-tls-verify", "--insecure-registry=127.0.0.1:5999",
					"--provenance=min",
					"--builder-id=slipway/executor:test",
					"--push-retry=2",
					"--result-file=/dev/termination-log",
					"--isolation=inplace",
				}
			},
		},
		{
			name: "insecure with a cache on another registry",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Image("localhost:5000/hello:v2").Obj()
				ib.Spec.Output.Insecure = true
				ib.Spec.Cache = &v1alpha1.Cache{Repository: "cache.internal:5001/c"}
				return ib
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args = []string{
					"--context=https://git.example.com/org/app.git",
					"--git=recurse-submodules=false",
					"--dockerfile=Dockerfile",
					"--destination=localhost:5000/hello:v2",
					"--cache=true", "--cache-repo=cache.internal:5001/c", "--cache-mount-scope=namespace/ns",
					"--insecure", "--skip-tls-verify",
					"--insecure-registry=localhost:5000", "--insecure-registry=cache.internal:5001",
					"--provenance=min",
					"--builder-id=slipway/executor:test",
					"--push-retry=2",
					"--result-file=/dev/termination-log",
					"--isolation=inplace",
				}
			},
		},
		{
			name: "basic-auth git secret staged by the init container, never in the environment",
			ib:   func() *v1alpha1.ImageBuild { return makeImageBuild("app", "ns").GitSecret("git-creds").Obj() },
			opts: func(o *podOptions) { o.gitAuth = gitAuthBasic },
			want: func(p *corev1.Pod) {
				withCredentials(p,
					[]corev1.Volume{{Name: "git-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
						SecretName: "git-creds", DefaultMode: ptr.To[int32](0o400)}}}},
					[]corev1.VolumeMount{{Name: "git-credentials", MountPath: "/var/run/secrets/slipway/git", ReadOnly: true}})
			},
		},
		{
			name: "ssh git secret and push secret staged by the init container",
			ib: func() *v1alpha1.ImageBuild {
				return makeImageBuild("app", "ns").Git("ssh://git@git.example.com/org/app.git").GitSecret("ssh").PushSecret("push").Obj()
			},
			opts: func(o *podOptions) { o.gitAuth = gitAuthSSH },
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args[0] = "--context=ssh://git@git.example.com/org/app.git"
				withCredentials(p,
					[]corev1.Volume{
						{Name: "git-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "ssh", DefaultMode: ptr.To[int32](0o400)}}},
						// Without spec.sshAgent, the git key is no RUN step's agent.
						{Name: "push-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "push", DefaultMode: ptr.To[int32](0o400),
							Items: []corev1.KeyToPath{{Key: ".dockerconfigjson", Path: "config.json"}}}}},
					},
					[]corev1.VolumeMount{
						{Name: "git-credentials", MountPath: "/var/run/secrets/slipway/git", ReadOnly: true},
						{Name: "push-credentials", MountPath: "/var/run/secrets/slipway/docker", ReadOnly: true},
					})
			},
		},
		{
			name: "spec.sshAgent.gitSecret: the ssh git secret's key is the agent's too",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Git("ssh://git@git.example.com/org/app.git").GitSecret("ssh").Obj()
				ib.Spec.SSHAgent = &v1alpha1.SSHAgent{GitSecret: true}
				return ib
			},
			opts: func(o *podOptions) { o.gitAuth = gitAuthSSH },
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args[0] = "--context=ssh://git@git.example.com/org/app.git"
				withCredentials(p,
					[]corev1.Volume{
						{Name: "git-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "ssh", DefaultMode: ptr.To[int32](0o400)}}},
						{Name: "ssh-agent", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "ssh", DefaultMode: ptr.To[int32](0o400),
							Items: []corev1.KeyToPath{{Key: "ssh-privatekey", Path: "default"}}}}},
					},
					[]corev1.VolumeMount{
						{Name: "git-credentials", MountPath: "/var/run/secrets/slipway/git", ReadOnly: true},
						{Name: "ssh-agent", MountPath: "/var/run/secrets/slipway/ssh", ReadOnly: true},
					})
			},
		},
		{
			name: "spec.sshAgent's key, staged as ssh/default, beside an ssh git secret",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Git("ssh://git@git.example.com/org/app.git").GitSecret("ssh").Obj()
				ib.Spec.SSHAgent = &v1alpha1.SSHAgent{SecretRef: &corev1.LocalObjectReference{Name: "deploy-key"}}
				return ib
			},
			opts: func(o *podOptions) { o.gitAuth = gitAuthSSH },
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Args[0] = "--context=ssh://git@git.example.com/org/app.git"
				withCredentials(p,
					[]corev1.Volume{
						{Name: "git-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "ssh", DefaultMode: ptr.To[int32](0o400)}}},
						{Name: "ssh-agent", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "deploy-key", DefaultMode: ptr.To[int32](0o400),
							Items: []corev1.KeyToPath{{Key: "ssh-privatekey", Path: "default"}}}}},
					},
					[]corev1.VolumeMount{
						{Name: "git-credentials", MountPath: "/var/run/secrets/slipway/git", ReadOnly: true},
						{Name: "ssh-agent", MountPath: "/var/run/secrets/slipway/ssh", ReadOnly: true},
					})
			},
		},
		{
			name: "spec.sshAgent alone, with an https source",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.SSHAgent = &v1alpha1.SSHAgent{SecretRef: &corev1.LocalObjectReference{Name: "deploy-key"}}
				return ib
			},
			want: func(p *corev1.Pod) {
				withCredentials(p,
					[]corev1.Volume{{Name: "ssh-agent", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
						SecretName: "deploy-key", DefaultMode: ptr.To[int32](0o400),
						Items: []corev1.KeyToPath{{Key: "ssh-privatekey", Path: "default"}}}}}},
					[]corev1.VolumeMount{{Name: "ssh-agent", MountPath: "/var/run/secrets/slipway/ssh", ReadOnly: true}})
			},
		},
		{
			name: "build arguments from a Secret and a ConfigMap",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.BuildArgs = []v1alpha1.BuildArg{
					{Name: "TOKEN", ValueFrom: &v1alpha1.BuildArgSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "token"}}},
					{Name: "MIRROR", ValueFrom: &v1alpha1.BuildArgSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "mirror"}}},
				}
				return ib
			},
			want: func(p *corev1.Pod) {
				c := &p.Spec.Containers[0]
				c.Args = append(c.Args[:4:4], append([]string{"--build-arg=TOKEN", "--build-arg=MIRROR"}, c.Args[4:]...)...)
				c.Env = []corev1.EnvVar{
					{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "token"}}},
					{Name: "MIRROR", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "mirror"}}},
				}
			},
		},
		{
			name: "build secrets projected into one volume of the init container, a file each, named by id",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Secrets = []v1alpha1.BuildSecret{
					{ID: "npmrc", SecretKeyRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "npm"}, Key: ".npmrc"}},
					{ID: "GIT_AUTH_TOKEN.git.example.com:8443", SecretKeyRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "api"}, Key: "token"}},
				}
				return ib
			},
			want: func(p *corev1.Pod) {
				withCredentials(p,
					[]corev1.Volume{{Name: "build-secrets", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
						DefaultMode: ptr.To[int32](0o400),
						Sources: []corev1.VolumeProjection{
							{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "npm"},
								Items: []corev1.KeyToPath{{Key: ".npmrc", Path: "npmrc"}}}},
							{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "api"},
								Items: []corev1.KeyToPath{{Key: "token", Path: "GIT_AUTH_TOKEN.git.example.com:8443"}}}},
						}}}}},
					[]corev1.VolumeMount{{Name: "build-secrets", MountPath: "/var/run/secrets/slipway/secrets", ReadOnly: true}})
			},
		},
		{
			name: "timeout, placement, resources, executor image and user namespaces",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Timeout(90*time.Second + 500*time.Millisecond).Obj()
				ib.Spec.NodeSelector = map[string]string{"pool": "builders"}
				ib.Spec.Tolerations = []corev1.Toleration{{Key: "builds", Operator: corev1.TolerationOpExists}}
				ib.Spec.PriorityClassName = "low"
				ib.Spec.ServiceAccountName = "builder"
				ib.Spec.ExecutorImage = "example.com/exec:dev"
				ib.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}
				return ib
			},
			opts: func(o *podOptions) { o.hostUsers = false },
			want: func(p *corev1.Pod) {
				p.Spec.ActiveDeadlineSeconds = ptr.To[int64](91)
				p.Spec.NodeSelector = map[string]string{"pool": "builders"}
				p.Spec.Tolerations = []corev1.Toleration{{Key: "builds", Operator: corev1.TolerationOpExists}}
				p.Spec.PriorityClassName = "low"
				p.Spec.ServiceAccountName = "builder"
				p.Spec.HostUsers = ptr.To(false)
				p.Spec.Containers[0].Image = "example.com/exec:dev"
				p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}
				// The provenance names the builder the pod runs.
				replaceArg(p, "--builder-id=", "--builder-id=example.com/exec:dev")
			},
		},
		{
			name: "attestations: provenance, SBOM, the manager's image",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Provenance = v1alpha1.ProvenanceMax
				ib.Spec.SBOM = true
				ib.Spec.SBOMFormat = v1alpha1.SBOMFormatCycloneDX
				ib.Spec.Signing = &v1alpha1.Signing{SecretRef: corev1.LocalObjectReference{Name: "cosign"}}
				return ib
			},
			opts: func(o *podOptions) {
				o.executorImage = "registry.example.com/slipway/executor@sha256:" + strings.Repeat("e", 64)
				o.managerImage = "registry.example.com/slipway/manager@sha256:" + strings.Repeat("m", 64)
			},
			want: func(p *corev1.Pod) {
				// No signing key reaches the pod: the manager signs. No volume, no flag.
				p.Spec.Containers[0].Image = "registry.example.com/slipway/executor@sha256:" + strings.Repeat("e", 64)
				replaceArg(p, "--provenance=", "--provenance=max", "--sbom=true", "--sbom-format=cyclonedx")
				replaceArg(p, "--builder-id=", "--builder-id=registry.example.com/slipway/executor@sha256:"+strings.Repeat("e", 64),
					"--builder-dependency=registry.example.com/slipway/manager@sha256:"+strings.Repeat("m", 64))
			},
		},
		{
			name: "no provenance",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Provenance = v1alpha1.ProvenanceNone
				return ib
			},
			want: func(p *corev1.Pod) { replaceArg(p, "--provenance=", "--provenance=none") },
		},
		{
			name: "cache mounts: the namespace is the scope of every saved mount",
			ib:   func() *v1alpha1.ImageBuild { return makeImageBuild("app", "team-b").Obj() },
			want: func(p *corev1.Pod) {
				p.Namespace = "team-b"
				replaceArg(p, "--cache-mount-scope=", "--cache-mount-scope=namespace/team-b")
			},
		},
		{
			name: "cache mounts: maxSize in bytes",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Cache = &v1alpha1.Cache{Mounts: &v1alpha1.CacheMounts{Enabled: ptr.To(true), MaxSize: ptr.To(resource.MustParse("1536Mi"))}}
				return ib
			},
			want: func(p *corev1.Pod) {
				replaceArg(p, "--cache-mount-scope=", "--cache-mount-scope=namespace/ns", "--cache-mount-max-size=1610612736")
			},
		},
		{
			name: "cache mounts: maxSize 0 is no limit",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Cache = &v1alpha1.Cache{Mounts: &v1alpha1.CacheMounts{MaxSize: ptr.To(resource.MustParse("0"))}}
				return ib
			},
			want: func(p *corev1.Pod) {
				replaceArg(p, "--cache-mount-scope=", "--cache-mount-scope=namespace/ns", "--cache-mount-max-size=0")
			},
		},
		{
			name: "cache mounts: an empty mounts keeps the executor's defaults",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Cache = &v1alpha1.Cache{Mounts: &v1alpha1.CacheMounts{}}
				return ib
			},
			want: func(*corev1.Pod) {},
		},
		{
			name: "cache mounts disabled",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Cache = &v1alpha1.Cache{Mounts: &v1alpha1.CacheMounts{Enabled: ptr.To(false), MaxSize: ptr.To(resource.MustParse("1Gi"))}}
				return ib
			},
			want: func(p *corev1.Pod) {
				replaceArg(p, "--cache-mount-scope=", "--cache-mount-scope=namespace/ns", "--cache-mounts=false")
			},
		},
		{
			name: "cache mounts: no flag of theirs without the cache",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Cache = &v1alpha1.Cache{Disabled: true}
				return ib
			},
			want: func(p *corev1.Pod) {
				replaceArg(p, "--cache=true", "--cache=false")
				replaceArg(p, "--cache-repo=")
				replaceArg(p, "--cache-mount-scope=")
			},
		},
		{
			name: "cache mounts: a platform's pod has the same scope (the executor keys the platform)",
			ib:   func() *v1alpha1.ImageBuild { return makeImageBuild("app", "ns").Obj() },
			opts: func(o *podOptions) { o.platform, o.native = "linux/arm64", true },
			want: func(p *corev1.Pod) {
				p.Name = "app-1-1-linux-arm64"
				p.Labels["build.slipway.dev/platform"] = "linux-arm64"
				p.Spec.NodeSelector = map[string]string{"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"}
				replaceArg(p, "--provenance=", "--custom-platform=linux/arm64", "--push-by-digest", "--provenance=min")
			},
		},
		{
			name: "the manager's ephemeral storage limit holds when spec.resources sets none",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}
				return ib
			},
			opts: func(o *podOptions) {
				o.resources.Limits = corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("20Gi")}
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceMemory: resource.MustParse("2Gi"), corev1.ResourceEphemeralStorage: resource.MustParse("20Gi")}}
			},
		},
		{
			name: "spec.resources' own ephemeral storage limit wins",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("50Gi")}}
				return ib
			},
			opts: func(o *podOptions) {
				o.resources.Limits = corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("20Gi")}
			},
			want: func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceEphemeralStorage: resource.MustParse("50Gi")}}
			},
		},
		{
			name: "the manager's default placement applies when the spec has none",
			ib:   func() *v1alpha1.ImageBuild { return makeImageBuild("app", "ns").Obj() },
			opts: func(o *podOptions) {
				o.nodeSelector = map[string]string{"pool": "default-builders"}
				o.tolerations = []corev1.Toleration{{Key: "default", Operator: corev1.TolerationOpExists}}
			},
			want: func(p *corev1.Pod) {
				p.Spec.NodeSelector = map[string]string{"pool": "default-builders"}
				p.Spec.Tolerations = []corev1.Toleration{{Key: "default", Operator: corev1.TolerationOpExists}}
			},
		},
		{
			name: "the spec's placement wins over the manager's default",
			ib: func() *v1alpha1.ImageBuild {
				ib := makeImageBuild("app", "ns").Obj()
				ib.Spec.NodeSelector = map[string]string{"pool": "builders"}
				return ib
			},
			opts: func(o *podOptions) { o.nodeSelector = map[string]string{"pool": "default-builders"} },
			want: func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"pool": "builders"} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := base
			if tc.opts != nil {
				tc.opts(&opts)
			}
			ib := tc.ib()
			if ib.Status.Attempt == 0 {
				ib.Status.Attempt = 1
			}
			want := wantPod()
			tc.want(want)
			got := constructPod(ib, opts)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("constructPod() (-want +got):\n%s", diff)
			}
			// Pure: the same input gives the same pod.
			if diff := cmp.Diff(got, constructPod(ib, opts)); diff != "" {
				t.Errorf("constructPod() is not deterministic (-first +second):\n%s", diff)
			}
		})
	}
}

func TestImageBuild_outputRepository(t *testing.T) {
	tests := map[string]string{
		"busybox":               "busybox",
		"busybox:1.36":          "busybox",
		"busybox:latest":        "busybox",
		"localhost:5000/hello":  "localhost:5000/hello",
		"localhost:5000/a/b:v1": "localhost:5000/a/b",
		"ghcr.io/org/x:latest":  "ghcr.io/org/x",
	}
	for in, want := range tests {
		if got := outputRepository(in); got != want {
			t.Errorf("outputRepository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageBuild_registryHost(t *testing.T) {
	tests := map[string]string{
		"busybox": "index.docker.io", "library/busybox": "index.docker.io", "docker.io/library/busybox": "index.docker.io",
		"localhost/x": "localhost", "127.0.0.1:5000/x": "127.0.0.1:5000", "ghcr.io/org/x": "ghcr.io",
	}
	for in, want := range tests {
		if got := registryHost(in); got != want {
			t.Errorf("registryHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// withCredentials is what every pod with credentials has: the in-memory credentials volume,
// the init container that stages the Secrets (mounted there only) into it, and the executor
// reading it with --credentials-dir.
func withCredentials(p *corev1.Pod, secretVolumes []corev1.Volume, secretMounts []corev1.VolumeMount) {
	staged := corev1.VolumeMount{Name: "credentials", MountPath: "/slipway/credentials"}
	p.Spec.Volumes = append(secretVolumes, corev1.Volume{Name: "credentials", VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("32Mi"))}}})
	c := &p.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{staged}
	c.Args = append(c.Args, "--credentials-dir=/slipway/credentials")
	p.Spec.InitContainers = []corev1.Container{{
		Name:            "credentials",
		Image:           c.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"--stage-credentials=/var/run/secrets/slipway", "--credentials-dir=/slipway/credentials"},
		Resources:       c.Resources,
		VolumeMounts:    append(secretMounts, staged),
		SecurityContext: &corev1.SecurityContext{
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}}
}

// replaceArg replaces the executor's argument that starts with prefix by with.
func replaceArg(p *corev1.Pod, prefix string, with ...string) {
	args := p.Spec.Containers[0].Args
	for i, a := range args {
		if strings.HasPrefix(a, prefix) {
			p.Spec.Containers[0].Args = slices.Concat(args[:i:i], with, args[i+1:])
			return
		}
	}
	panic("no argument " + prefix)
}
