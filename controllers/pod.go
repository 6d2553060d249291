package controllers

import (
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// Paths and names inside the executor pod.
//
// Credentials (the push secret, the git secret, spec.secrets, spec.sshAgent) never reach the executor
// container as Secret volumes or environment variables: a RUN step of the Dockerfile runs
// in that container and could read them. The init container credentialsContainer alone
// mounts the Secrets (under secretsMount), copies them into the in-memory emptyDir
// credentialsDir (executor --stage-credentials), and ends; the executor reads them from
// there into memory and empties the directory before the first step (executor
// --credentials-dir, see executor/credentials.go). spec.buildArgs read from a Secret are
// environment variables of the executor container: a build argument is the Dockerfile's to
// read (spec.secrets is for what a step should not see unless it mounts it).
const (
	executorContainer    = "executor"
	credentialsContainer = "credentials"

	// terminationMessagePath is where the executor writes its result (executor/result).
	terminationMessagePath = "/dev/termination-log"

	// credentialsDir is the executor's --credentials-dir, in both containers.
	credentialsDir    = "/slipway/credentials"
	credentialsVolume = "credentials"
	// secretsMount is where the init container mounts the Secrets, in the layout of
	// --credentials-dir: docker/config.json (the push secret's .dockerconfigjson), git/ (the
	// git secret's keys: username and password, or ssh-privatekey and known_hosts),
	// secrets/<id> (one file per spec.secrets entry) and ssh/default (the ssh-privatekey of
	// the RUN --mount=type=ssh agent: see sshAgentSecret).
	secretsMount = "/var/run/secrets/slipway"

	gitVolume          = "git-credentials"
	pushVolume         = "push-credentials"
	buildSecretsVolume = "build-secrets"
	sshAgentVolume     = "ssh-agent"

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
	// gitAuthBasic: kubernetes.io/basic-auth (keys username and password).
	gitAuthBasic
	// gitAuthSSH: kubernetes.io/ssh-auth (ssh-privatekey, and known_hosts added).
	gitAuthSSH
)

// podOptions are the inputs of constructPod that do not come from the ImageBuild.
type podOptions struct {
	// executorImage is used unless spec.executorImage overrides it.
	executorImage string
	// hostUsers false runs executor pods in a user namespace (pod.spec.hostUsers=false);
	// true leaves the field unset, for clusters without user namespace support.
	hostUsers bool
	// resources apply when spec.resources is empty; their ephemeral-storage limit also
	// when spec.resources sets none.
	resources corev1.ResourceRequirements
	// nodeSelector and tolerations apply when the spec sets none.
	nodeSelector map[string]string
	tolerations  []corev1.Toleration
	// gitAuth says how spec.source.git.secretRef is passed to the executor.
	gitAuth gitAuth
	// commit, when set, is the commit the manager resolved the revision to (an ImageBuild
	// that follows its revision): the executor builds exactly that commit.
	commit string
	// tags are spec.output.additionalTags with their templates rendered (renderTags).
	tags []string
	// platform, when set, is the one of spec.platforms this pod builds (--custom-platform,
	// pushed by digest); native places it on a node of the platform's architecture
	// (platformPlacement), else it runs under emulation wherever its selector allows.
	platform string
	native   bool
	// managerImage, when known, is the manager's image, which the provenance records as a
	// dependency of the builder (--builder-dependency).
	managerImage string
}

// podName is the deterministic name of the executor pod of an attempt:
// <imagebuild>-<generation>-<attempt>. Creating it twice fails with AlreadyExists, which is
// how a restarted manager finds the pod it had created.
func podName(ib *v1alpha1.ImageBuild, attempt int32) string {
	return fmt.Sprintf("%s-%d-%d", ib.Name, ib.Generation, attempt)
}

// constructPod returns the executor pod of attempt ib.Status.Attempt of ib's current
// generation. It is a pure function of its arguments, assembled from named pieces: the pod's
// identity (podMeta), where it may run (placement), the executor container, and, when the
// build has credentials, their volumes (credentialVolumes) and the init container that
// stages them (newCredentialsContainer).
func constructPod(ib *v1alpha1.ImageBuild, opts podOptions) *corev1.Pod {
	spec := &ib.Spec
	image := executorImage(ib, opts)
	resources := executorResources(ib, opts)
	executor := newExecutorContainer(ib, opts, image, resources)

	volumes, secretMounts := credentialVolumes(ib, opts.gitAuth)
	var initContainers []corev1.Container
	if len(secretMounts) > 0 {
		staged := corev1.VolumeMount{Name: credentialsVolume, MountPath: credentialsDir}
		initContainers = []corev1.Container{newCredentialsContainer(image, resources, append(secretMounts, staged))}
		executor.VolumeMounts = append(executor.VolumeMounts, staged)
		executor.Args = append(executor.Args, "--credentials-dir="+credentialsDir)
	}

	nodeSelector, tolerations := placement(ib, opts)
	pod := &corev1.Pod{
		ObjectMeta: podMeta(ib, opts.platform),
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
			InitContainers: initContainers,
			Containers:     []corev1.Container{executor},
			Volumes:        volumes,
		},
	}
	if !opts.hostUsers {
		pod.Spec.HostUsers = ptr.To(false)
	}
	addCacheVolume(pod, ib, opts.platform) // spec.cache.volume: cachevolume.go
	return pod
}

// podMeta is the executor pod's identity: its deterministic name (podName, or
// platformPodName for one of spec.platforms), the labels the manager selects and caches it
// by, and ib as its controller.
func podMeta(ib *v1alpha1.ImageBuild, platform string) metav1.ObjectMeta {
	attempt := ib.Status.Attempt
	labels := map[string]string{
		managedByLabel:           managedByValue,
		v1alpha1.LabelImageBuild: ib.Name,
		v1alpha1.LabelGeneration: strconv.FormatInt(ib.Generation, 10),
		v1alpha1.LabelAttempt:    strconv.FormatInt(int64(attempt), 10),
	}
	name := podName(ib, attempt)
	if platform != "" {
		name = platformPodName(ib, attempt, platform)
		labels[v1alpha1.LabelPlatform] = platformSuffix(platform)
	}
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: ib.Namespace,
		Labels:    labels,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion:         v1alpha1.GroupVersion.String(),
			Kind:               "ImageBuild",
			Name:               ib.Name,
			UID:                ib.UID,
			Controller:         ptr.To(true),
			BlockOwnerDeletion: ptr.To(true),
		}},
	}
}

// executorImage is spec.executorImage, else the manager's --executor-image.
func executorImage(ib *v1alpha1.ImageBuild, opts podOptions) string {
	if ib.Spec.ExecutorImage != "" {
		return ib.Spec.ExecutorImage
	}
	return opts.executorImage
}

// placement is the pod's node selector and tolerations: each the spec's, else the manager's
// default when the spec sets none. The pod of one of spec.platforms also selects nodes of
// the platform's OS (kubernetes.io/os), and, placed natively, of its architecture
// (kubernetes.io/arch, instead of any the manager's default names).
func placement(ib *v1alpha1.ImageBuild, opts podOptions) (map[string]string, []corev1.Toleration) {
	nodeSelector, tolerations := ib.Spec.NodeSelector, ib.Spec.Tolerations
	if nodeSelector == nil {
		nodeSelector = opts.nodeSelector
	}
	if tolerations == nil {
		tolerations = opts.tolerations
	}
	if opts.platform != "" {
		nodeSelector = platformSelector(nodeSelector, opts.platform, opts.native)
	}
	return nodeSelector, tolerations
}

// executorResources are the resources of both containers: spec.resources, else the manager's
// defaults. The default ephemeral-storage limit (the bound on what a build writes) holds
// also under spec.resources unless it sets its own.
func executorResources(ib *v1alpha1.ImageBuild, opts podOptions) corev1.ResourceRequirements {
	if ib.Spec.Resources == nil {
		return opts.resources
	}
	resources := *ib.Spec.Resources.DeepCopy()
	if q, ok := opts.resources.Limits[corev1.ResourceEphemeralStorage]; ok {
		if _, set := resources.Limits[corev1.ResourceEphemeralStorage]; !set {
			if resources.Limits == nil {
				resources.Limits = corev1.ResourceList{}
			}
			resources.Limits[corev1.ResourceEphemeralStorage] = q
		}
	}
	return resources
}

// newExecutorContainer is the container that runs the build: the executor's command line
// (executorArgs), the build arguments read from Secrets and ConfigMaps (executorEnv), its
// termination message as the result, and no privilege beyond executorCapabilities.
func newExecutorContainer(ib *v1alpha1.ImageBuild, opts podOptions, image string, resources corev1.ResourceRequirements) corev1.Container {
	return corev1.Container{
		Name:                     executorContainer,
		Image:                    image,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Args:                     executorArgs(ib, opts),
		Env:                      executorEnv(ib),
		Resources:                resources,
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
	}
}

// executorEnv is one environment variable per build argument with a valueFrom (a Secret's or
// a ConfigMap's key), named as the argument: executorArgs passes it as --build-arg=NAME.
func executorEnv(ib *v1alpha1.ImageBuild) []corev1.EnvVar {
	var env []corev1.EnvVar
	for _, a := range ib.Spec.BuildArgs {
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
	return env
}

// newCredentialsContainer is the init container that copies the Secrets mounted by mounts
// (under secretsMount) into credentialsDir, also in mounts, and ends: it runs the executor
// image with --stage-credentials, read-only and with no capability.
func newCredentialsContainer(image string, resources corev1.ResourceRequirements, mounts []corev1.VolumeMount) corev1.Container {
	return corev1.Container{
		Name:            credentialsContainer,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"--stage-credentials=" + secretsMount, "--credentials-dir=" + credentialsDir},
		Resources:       resources,
		VolumeMounts:    mounts,
		SecurityContext: &corev1.SecurityContext{
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// credentialVolumes returns the pod's volumes of credentials and where the init container
// mounts the Secrets among them (read-only, in the layout of --credentials-dir); none when
// the build has no credentials.
func credentialVolumes(ib *v1alpha1.ImageBuild, auth gitAuth) ([]corev1.Volume, []corev1.VolumeMount) {
	spec := &ib.Spec
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	add := func(name, dir string, src corev1.VolumeSource) {
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: src})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: path.Join(secretsMount, dir), ReadOnly: true})
	}
	if ref := spec.Source.Git.SecretRef; ref != nil && auth != gitAuthNone {
		add(gitVolume, "git", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: ref.Name, DefaultMode: ptr.To[int32](0o400),
		}})
	}
	if ref := spec.Output.PushSecretRef; ref != nil {
		add(pushVolume, "docker", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  ref.Name,
			Items:       []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: "config.json"}},
			DefaultMode: ptr.To[int32](0o400),
		}})
	}
	if len(spec.Secrets) > 0 {
		proj := &corev1.ProjectedVolumeSource{DefaultMode: ptr.To[int32](0o400)}
		for _, bs := range spec.Secrets {
			proj.Sources = append(proj.Sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
				LocalObjectReference: bs.SecretKeyRef.LocalObjectReference,
				Items:                []corev1.KeyToPath{{Key: bs.SecretKeyRef.Key, Path: bs.ID}},
			}})
		}
		add(buildSecretsVolume, "secrets", corev1.VolumeSource{Projected: proj})
	}
	if name := sshAgentSecret(ib, auth); name != "" {
		add(sshAgentVolume, "ssh", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  name,
			Items:       []corev1.KeyToPath{{Key: corev1.SSHAuthPrivateKey, Path: "default"}},
			DefaultMode: ptr.To[int32](0o400),
		}})
	}
	if len(mounts) > 0 {
		volumes = append(volumes, corev1.Volume{Name: credentialsVolume, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(credentialsSizeLimit)},
		}})
	}
	return volumes, mounts
}

// sshAgentSecret is the Secret whose ssh-privatekey is the key of the build's ssh agent (the
// executor's ssh id "default", what RUN --mount=type=ssh reaches): spec.sshAgent's Secret, or
// the git source's ssh-auth Secret when spec.sshAgent.gitSecret says so; "" for none. Never
// the git key by default: a step that mounts the agent can have it sign (never read the key,
// executor/build/sshmount.go), and the Dockerfile is the repository's.
func sshAgentSecret(ib *v1alpha1.ImageBuild, auth gitAuth) string {
	a := ib.Spec.SSHAgent
	switch {
	case a == nil:
		return ""
	case a.SecretRef != nil:
		return a.SecretRef.Name
	case a.GitSecret && auth == gitAuthSSH && ib.Spec.Source.Git.SecretRef != nil:
		return ib.Spec.Source.Git.SecretRef.Name
	}
	return ""
}

// credentialsSizeLimit bounds the in-memory credentials volume: Secrets are at most 1 MiB each.
var credentialsSizeLimit = resource.MustParse("32Mi")

// executorArgs are the executor's command line: kaniko's flags (with --push-retry), and
// --result-file, --isolation, the platform's and the attestations' (attestationArgs) of ours.
func executorArgs(ib *v1alpha1.ImageBuild, opts podOptions) []string {
	spec := &ib.Spec
	git := spec.Source.Git

	context := git.URL
	switch {
	case opts.commit != "":
		context += "#" + opts.commit
	case git.Revision != "":
		context += "#" + git.Revision
	}
	args := []string{"--context=" + context}
	if spec.Source.ContextDir != "" {
		args = append(args, "--context-sub-path="+spec.Source.ContextDir)
	}
	// Always said: the executor's default (BuildKit's) fetches submodules,
	// the API's is not to.
	args = append(args, "--git=recurse-submodules="+strconv.FormatBool(git.Submodules))
	dockerfile := spec.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	args = append(args, "--dockerfile="+dockerfile)

	repo := outputRepository(spec.Output.Image)
	args = append(args, "--destination="+spec.Output.Image)
	for _, tag := range opts.tags {
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
	args = append(args, checkArgs(spec.Checks)...)

	cacheRepo := cacheRepository(ib)
	if cacheRepo == "" {
		args = append(args, "--cache=false")
	} else {
		args = append(args, "--cache=true", "--cache-repo="+cacheRepo)
		if c := spec.Cache; c != nil && c.TTL != nil {
			args = append(args, "--cache-ttl="+c.TTL.Duration.String())
		}
		args = append(args, cacheMountArgs(ib)...)
	}

	if spec.Output.Insecure {
		args = append(args, "--insecure", "--skip-tls-verify")
		hosts := []string{registryHost(repo)}
		if cacheRepo != "" {
			hosts = append(hosts, registryHost(cacheRepo))
		}
		for i, h := range hosts {
			if h != "" && !slices.Contains(hosts[:i], h) {
				args = append(args, "--insecure-registry="+h)
			}
		}
	}

	if opts.platform != "" {
		// One platform of spec.platforms: its image is pushed by digest only, and the
		// manager pushes the index naming every platform's under the tags.
		args = append(args, "--custom-platform="+opts.platform, "--push-by-digest")
	}

	args = append(args, attestationArgs(ib, opts)...)

	// A push that fails is tried again by the executor before the attempt fails with
	// PushFailed, which the controller retries with a whole new pod (planRetry).
	args = append(args, "--push-retry="+strconv.Itoa(executorPushRetries))

	return append(args, "--result-file="+terminationMessagePath, "--isolation=inplace")
}

// attestationArgs are the executor's flags of the attestations it attaches to what it pushes
// (executor/attest): --provenance (spec.provenance, min when unset, as the CRD's default and
// BuildKit's), --sbom and --sbom-format (spec.sbom), and the builder the provenance names:
// --builder-id, the executor image the pod runs as given (with its digest when the chart or
// --executor-image names one), and --builder-dependency, the manager's image when known (main.go
// takes it only with its digest, which the executor requires).
// Never a signing key: the manager signs (signing.go).
func attestationArgs(ib *v1alpha1.ImageBuild, opts podOptions) []string {
	spec := &ib.Spec
	mode := spec.Provenance
	if mode == "" {
		mode = v1alpha1.ProvenanceMin
	}
	args := []string{"--provenance=" + string(mode)}
	if spec.SBOM {
		format := spec.SBOMFormat
		if format == "" {
			format = v1alpha1.SBOMFormatSPDX
		}
		args = append(args, "--sbom=true", "--sbom-format="+string(format))
	}
	args = append(args, "--builder-id="+executorImage(ib, opts))
	if opts.managerImage != "" {
		args = append(args, "--builder-dependency="+opts.managerImage)
	}
	return args
}

// cacheMountArgs are the executor's flags of the cache mounts it keeps in the cache repository
// (spec.cache.mounts), for a build with the cache on: --cache-mount-scope=namespace/<ns>
// always, which the executor puts in the key of every saved mount, so that the builds of two
// namespaces never restore each other's mounts, even from one cache repository (an allowed
// shared prefix, or one output repository); then --cache-mounts=false when mounts.enabled is
// false, else --cache-mount-max-size in bytes when mounts.maxSize is set (the executor's
// default, 2GiB, otherwise). The scope is the manager's to give: nothing in the spec sets it.
// A pod of one of spec.platforms builds for its platform, which the executor puts in the key.
func cacheMountArgs(ib *v1alpha1.ImageBuild) []string {
	args := []string{"--cache-mount-scope=namespace/" + ib.Namespace}
	var m *v1alpha1.CacheMounts
	if ib.Spec.Cache != nil {
		m = ib.Spec.Cache.Mounts
	}
	switch {
	case m == nil:
	case m.Enabled != nil && !*m.Enabled:
		args = append(args, "--cache-mounts=false")
	case m.MaxSize != nil:
		// The CRD bounds it to whole bytes from 0 to 1Ti.
		args = append(args, "--cache-mount-max-size="+strconv.FormatInt(max(m.MaxSize.Value(), 0), 10))
	}
	return args
}

// executorPushRetries is the executor's --push-retry: a failed push (a registry that is down,
// resets the connection or answers 5xx) is tried twice more, one then two seconds later
// (executor/publish), on top of go-containerregistry's retries of each request.
const executorPushRetries = 2

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
	repo := outputRepository(ib.Spec.Output.Image)
	return repo + "/cache"
}

// outputRepository is the repository of spec.output.image ([registry/]repository[:tag], no
// digest: the CRD validates it), spelled as the spec spells it: the image without its tag,
// which go-containerregistry's name package finds.
func outputRepository(image string) string {
	tag, err := name.NewTag(image)
	if err != nil {
		return image
	}
	return strings.TrimSuffix(image, ":"+tag.TagStr())
}

// registryHost is the registry of a repository as go-containerregistry names it
// (index.docker.io for Docker Hub); empty when repo is not a repository.
func registryHost(repo string) string {
	r, err := name.NewRepository(repo)
	if err != nil {
		return ""
	}
	return r.RegistryStr()
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
