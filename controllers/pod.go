package controllers

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// Paths and names inside the executor pod. The executor reads its credentials from them; see
// the executor's git and publish packages.
const (
	executorContainer = "executor"

	// terminationMessagePath is where the executor writes its result (executor/result).
	terminationMessagePath = "/dev/termination-log"

	// dockerConfigDir holds config.json, the push secret's .dockerconfigjson (kaniko's path).
	dockerConfigDir = "/kaniko/.docker"

	// gitSecretDir holds the files of an ssh-auth git secret (ssh-privatekey, known_hosts); the
	// executor finds it through GIT_SECRET_DIR (executor/source.GitAuthFromEnv).
	gitSecretDir = "/var/run/secrets/slipway/git"
	// buildSecretsDir holds a directory per spec.secrets entry, named by its id, with the
	// value in buildSecretFile.
	buildSecretsDir = "/var/run/secrets/slipway/build"
	buildSecretFile = "value"

	gitVolume  = "git-credentials"
	pushVolume = "push-credentials"

	// managedByLabel marks every executor pod, so the manager caches only those.
	managedByLabel = "app.kubernetes.io/managed-by"
	managedByValue = "slipway"
)

// executorCapabilities are the capabilities left to the executor: what package managers and
// file ownership changes in RUN steps need, all within Pod Security "baseline".
var executorCapabilities = []corev1.Capability{
	"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETFCAP", "SYS_CHROOT",
}

// gitAuth is the kind of credentials in spec.source.git.secretRef, resolved from the Secret's
// type by the reconciler.
type gitAuth int

const (
	gitAuthNone gitAuth = iota
	// gitAuthBasic: kubernetes.io/basic-auth, passed as GIT_USERNAME and GIT_PASSWORD.
	gitAuthBasic
	// gitAuthSSH: kubernetes.io/ssh-auth, mounted at gitSecretDir and named by GIT_SECRET_DIR.
	gitAuthSSH
)

// podOptions are the inputs of constructPod that do not come from the ImageBuild.
type podOptions struct {
	// executorImage is used unless spec.executorImage overrides it.
	executorImage string
	// hostUsers false runs executor pods in a user namespace (pod.spec.hostUsers=false);
	// true leaves the field unset, for clusters without user namespace support.
	hostUsers bool
	// resources apply when spec.resources is empty.
	resources corev1.ResourceRequirements
	// nodeSelector and tolerations apply when the spec sets none.
	nodeSelector map[string]string
	tolerations  []corev1.Toleration
	// gitAuth says how spec.source.git.secretRef is passed to the executor.
	gitAuth gitAuth
}

// podName is the deterministic name of the executor pod of an attempt:
// <imagebuild>-<generation>-<attempt>. Creating it twice fails with AlreadyExists, which is
// how a restarted manager finds the pod it had created.
func podName(ib *v1alpha1.ImageBuild, attempt int32) string {
	return fmt.Sprintf("%s-%d-%d", ib.Name, ib.Generation, attempt)
}

// constructPod returns the executor pod of attempt ib.Status.Attempt of ib's current
// generation. It is a pure function of its arguments.
func constructPod(ib *v1alpha1.ImageBuild, opts podOptions) *corev1.Pod {
	spec := &ib.Spec
	attempt := ib.Status.Attempt

	image := opts.executorImage
	if spec.ExecutorImage != "" {
		image = spec.ExecutorImage
	}
	nodeSelector, tolerations := spec.NodeSelector, spec.Tolerations
	if nodeSelector == nil {
		nodeSelector = opts.nodeSelector
	}
	if tolerations == nil {
		tolerations = opts.tolerations
	}
	resources := opts.resources
	if spec.Resources != nil {
		resources = *spec.Resources
	}

	var env []corev1.EnvVar
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount

	if ref := spec.Source.Git.SecretRef; ref != nil {
		switch opts.gitAuth {
		case gitAuthBasic:
			env = append(env,
				secretEnv("GIT_USERNAME", ref.Name, corev1.BasicAuthUsernameKey),
				secretEnv("GIT_PASSWORD", ref.Name, corev1.BasicAuthPasswordKey))
		case gitAuthSSH:
			volumes = append(volumes, corev1.Volume{
				Name: gitVolume,
				VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName:  ref.Name,
					DefaultMode: ptr.To[int32](0o400),
				}},
			})
			mounts = append(mounts, corev1.VolumeMount{Name: gitVolume, MountPath: gitSecretDir, ReadOnly: true})
			env = append(env, corev1.EnvVar{Name: "GIT_SECRET_DIR", Value: gitSecretDir})
		}
	}
	if ref := spec.Output.PushSecretRef; ref != nil {
		volumes = append(volumes, corev1.Volume{
			Name: pushVolume,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName:  ref.Name,
				Items:       []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: "config.json"}},
				DefaultMode: ptr.To[int32](0o400),
			}},
		})
		mounts = append(mounts, corev1.VolumeMount{Name: pushVolume, MountPath: dockerConfigDir, ReadOnly: true})
		env = append(env, corev1.EnvVar{Name: "DOCKER_CONFIG", Value: dockerConfigDir})
	}
	for i, bs := range spec.Secrets {
		name := fmt.Sprintf("build-secret-%d", i)
		volumes = append(volumes, corev1.Volume{
			Name: name,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName:  bs.SecretKeyRef.Name,
				Items:       []corev1.KeyToPath{{Key: bs.SecretKeyRef.Key, Path: buildSecretFile}},
				DefaultMode: ptr.To[int32](0o400),
			}},
		})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: buildSecretDir(bs.ID), ReadOnly: true})
	}
	for _, a := range spec.BuildArgs {
		if a.ValueFrom == nil {
			continue
		}
		e := corev1.EnvVar{Name: a.Name, ValueFrom: &corev1.EnvVarSource{}}
		if s := a.ValueFrom.SecretKeyRef; s != nil {
			e.ValueFrom.SecretKeyRef = s.DeepCopy()
		}
		if c := a.ValueFrom.ConfigMapKeyRef; c != nil {
			e.ValueFrom.ConfigMapKeyRef = c.DeepCopy()
		}
		env = append(env, e)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      podName(ib, attempt),
			Namespace: ib.Namespace,
			Labels: map[string]string{
				managedByLabel:           managedByValue,
				v1alpha1.LabelImageBuild: ib.Name,
				v1alpha1.LabelGeneration: strconv.FormatInt(ib.Generation, 10),
				v1alpha1.LabelAttempt:    strconv.FormatInt(int64(attempt), 10),
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion:         v1alpha1.GroupVersion.String(),
				Kind:               "ImageBuild",
				Name:               ib.Name,
				UID:                ib.UID,
				Controller:         ptr.To(true),
				BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:        activeDeadline(spec.Timeout),
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			ServiceAccountName:           spec.ServiceAccountName,
			NodeSelector:                 nodeSelector,
			Tolerations:                  tolerations,
			Affinity:                     spec.Affinity,
			PriorityClassName:            spec.PriorityClassName,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:                     executorContainer,
				Image:                    image,
				ImagePullPolicy:          corev1.PullIfNotPresent,
				Args:                     executorArgs(ib),
				Env:                      env,
				Resources:                resources,
				VolumeMounts:             mounts,
				TerminationMessagePath:   terminationMessagePath,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				SecurityContext: &corev1.SecurityContext{
					Privileged:               ptr.To(false),
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  executorCapabilities,
					},
				},
			}},
			Volumes: volumes,
		},
	}
	if !opts.hostUsers {
		pod.Spec.HostUsers = ptr.To(false)
	}
	return pod
}

// buildSecretDir is where the secret of spec.secrets with this id is mounted.
func buildSecretDir(id string) string { return path.Join(buildSecretsDir, id) }

// executorArgs are the executor's command line: kaniko's flags, and --result-file and
// --isolation of ours.
func executorArgs(ib *v1alpha1.ImageBuild) []string {
	spec := &ib.Spec
	git := spec.Source.Git

	context := git.URL
	if git.Revision != "" {
		context += "#" + git.Revision
	}
	args := []string{"--context=" + context}
	if spec.Source.ContextDir != "" {
		args = append(args, "--context-sub-path="+spec.Source.ContextDir)
	}
	if git.Submodules {
		args = append(args, "--git=recurse-submodules=true")
	}
	dockerfile := spec.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	args = append(args, "--dockerfile="+dockerfile)

	repo, _ := splitImage(spec.Output.Image)
	args = append(args, "--destination="+spec.Output.Image)
	for _, tag := range spec.Output.AdditionalTags {
		args = append(args, "--destination="+repo+":"+tag)
	}

	for _, a := range spec.BuildArgs {
		switch {
		case a.ValueFrom != nil:
			// Like docker build --build-arg NAME: the value is the environment variable NAME.
			args = append(args, "--build-arg="+a.Name)
		case a.Value != nil:
			args = append(args, "--build-arg="+a.Name+"="+*a.Value)
		default:
			args = append(args, "--build-arg="+a.Name+"=")
		}
	}
	keys := make([]string, 0, len(spec.Labels))
	for k := range spec.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--label="+k+"="+spec.Labels[k])
	}
	if spec.Target != "" {
		args = append(args, "--target="+spec.Target)
	}
	for _, bs := range spec.Secrets {
		args = append(args, "--secret=id="+bs.ID+",src="+path.Join(buildSecretDir(bs.ID), buildSecretFile))
	}

	cacheRepo := cacheRepository(ib)
	if cacheRepo == "" {
		args = append(args, "--cache=false")
	} else {
		args = append(args, "--cache=true", "--cache-repo="+cacheRepo)
		if c := spec.Cache; c != nil && c.TTL != nil {
			args = append(args, "--cache-ttl="+c.TTL.Duration.String())
		}
	}

	if spec.Output.Insecure {
		args = append(args, "--insecure", "--skip-tls-verify")
		hosts := []string{registryHost(repo)}
		if cacheRepo != "" {
			if h := registryHost(cacheRepo); h != hosts[0] {
				hosts = append(hosts, h)
			}
		}
		for _, h := range hosts {
			args = append(args, "--insecure-registry="+h)
		}
	}

	return append(args, "--result-file="+terminationMessagePath, "--isolation=inplace")
}

// cacheRepository is the repository of the layer cache: spec.cache.repository, else
// "<output repository>/cache" (kaniko's default); empty when the cache is disabled.
func cacheRepository(ib *v1alpha1.ImageBuild) string {
	c := ib.Spec.Cache
	if c != nil && c.Disabled {
		return ""
	}
	if c != nil && c.Repository != "" {
		return c.Repository
	}
	repo, _ := splitImage(ib.Spec.Output.Image)
	return repo + "/cache"
}

// splitImage splits repository[:tag] (validated by the CRD: no digest) into the repository and
// the tag, empty when absent. A colon before the last slash is a registry port.
func splitImage(image string) (repo, tag string) {
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, ""
}

// registryHost is the registry of a repository, docker.io when it names none (Docker's rule:
// the first component is a registry when it has a dot or a port, or is localhost).
func registryHost(repo string) string {
	first, _, found := strings.Cut(repo, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}

// activeDeadline converts spec.timeout to whole seconds, rounded up.
func activeDeadline(timeout *metav1.Duration) *int64 {
	if timeout == nil || timeout.Duration <= 0 {
		return nil
	}
	return ptr.To(int64(math.Ceil(timeout.Duration.Seconds())))
}

func secretEnv(name, secret, key string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret},
		Key:                  key,
	}}}
}
