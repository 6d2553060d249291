package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageBuildSpec is the image to build: where its source is, how to build it and where to push it.
// +kubebuilder:validation:XValidation:rule="!has(self.platforms) || size(self.platforms) == 0 || !has(self.nodeSelector) || !('kubernetes.io/arch' in self.nodeSelector)",message="nodeSelector cannot set kubernetes.io/arch when platforms are given: each platform's pod is placed on a node of its own architecture"
// +kubebuilder:validation:XValidation:rule="!has(self.platforms) || size(self.platforms) == 0 || !has(self.runPolicy) || self.runPolicy != 'Parallel'",message="runPolicy Parallel is not supported with platforms: use Serial or SerialLatestOnly"
// +kubebuilder:validation:XValidation:rule="!has(self.emulation) || !self.emulation || (has(self.platforms) && size(self.platforms) > 0)",message="emulation applies to platforms: list them in platforms"
// +kubebuilder:validation:XValidation:rule="!has(self.sbomFormat) || (has(self.sbom) && self.sbom)",message="sbomFormat applies to an SBOM: set sbom: true"
// +kubebuilder:validation:XValidation:rule="!has(self.signing) || size(self.signing.secretRef.name) > 0",message="signing.secretRef.name must name a Secret"
// +kubebuilder:validation:XValidation:rule="!has(self.signing) || !has(self.runPolicy) || self.runPolicy != 'Parallel'",message="runPolicy Parallel is not supported with signing: the manager signs the latest build only, so overlapping builds would push unsigned images; use Serial or SerialLatestOnly"
// +kubebuilder:validation:XValidation:rule="!has(self.cache) || !has(self.cache.volume) || !has(self.runPolicy) || self.runPolicy != 'Parallel'",message="runPolicy Parallel is not supported with cache.volume: one build at a time uses the volume; use Serial or SerialLatestOnly"
type ImageBuildSpec struct {
	// source is where the build context comes from.
	// +required
	Source Source `json:"source"`

	// dockerfile is the path of the Dockerfile, relative to the build context.
	// +kubebuilder:default=Dockerfile
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",message="must be a relative path inside the build context"
	// +optional
	Dockerfile string `json:"dockerfile,omitempty"`

	// target is the stage of a multi-stage Dockerfile to build; the last stage when empty.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9_.-]*$`
	// +optional
	Target string `json:"target,omitempty"`

	// buildArgs are the values of the Dockerfile's ARG instructions.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	BuildArgs []BuildArg `json:"buildArgs,omitempty"`

	// secrets are what the Dockerfile's RUN --mount=type=secret,id=ID steps read, each the value
	// of a key of a Secret of the ImageBuild's namespace. They never reach the image, its
	// history, the layer cache's keys or the logs.
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Secrets []BuildSecret `json:"secrets,omitempty"`

	// sshAgent is the ssh key that the Dockerfile's RUN --mount=type=ssh steps (id "default",
	// BuildKit's) reach: the executor serves each such step an ssh agent that lists the key and
	// signs with it, for that step only; no step can read the key, and it never reaches the
	// image, the layer cache's keys or the logs. A step that mounts the agent can authenticate
	// as the key while it runs, so the Dockerfile (the repository's) gets no agent unless the
	// ImageBuild gives one: a Secret of its own (secretRef), or the git source's ssh key
	// (gitSecret: true). Without sshAgent an ssh mount gets no socket, or fails the build when
	// it is required=true.
	// +optional
	SSHAgent *SSHAgent `json:"sshAgent,omitempty"`

	// labels are added to the image's configuration (like LABEL instructions).
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// output is where the image is pushed.
	// +required
	Output Output `json:"output"`

	// cache configures the registry-backed layer cache. It is enabled by default.
	// +optional
	Cache *Cache `json:"cache,omitempty"`

	// timeout bounds the duration of one build attempt (the executor pod's
	// activeDeadlineSeconds). A build that runs longer fails with reason Timeout.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('24h')",message="must be between 10s and 24h"
	// +kubebuilder:default="1h"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// resources of the executor container. The manager's defaults apply when empty.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// nodeSelector of the executor pod.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations of the executor pod.
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity of the executor pod.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// priorityClassName of the executor pod.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// serviceAccountName of the executor pod. Its token is never mounted; the account only
	// matters for image pull secrets and admission policies.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// executorImage overrides the manager's executor image (--executor-image) for this build.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	ExecutorImage string `json:"executorImage,omitempty"`

	// retention says how long a finished executor pod is kept, so that its logs can be read.
	// +optional
	Retention *Retention `json:"retention,omitempty"`

	// retry says how many times a failed attempt of this build is run again, and whether a
	// source fetch that failed because the git server could not be reached is. Without it the
	// manager's defaults apply: up to --max-build-retries (3) retries, a backoff doubling from
	// --build-retry-backoff, of an attempt whose executor pod was lost (PodDeleted, Evicted,
	// ExecutorKilled, PodFailed) or whose push or executor failed (PushFailed, Internal). A
	// failure that the same build would meet again (a Dockerfile error, a failed RUN step, a
	// missing revision, a timeout, OOMKilled) is never retried.
	// +optional
	Retry *Retry `json:"retry,omitempty"`

	// triggers start builds besides a change of the spec or of the rebuild annotation: a push
	// that a webhook reports, a base image that moved. Following the revision itself is
	// source.git.interval.
	// +optional
	Triggers *Triggers `json:"triggers,omitempty"`

	// runPolicy is what a build that a trigger starts (a new commit, a webhook, a base image)
	// does when the ImageBuild's latest build is still running. Serial, the default: it waits
	// for that build to end, and only the newest such build waits (status.next). SerialLatestOnly:
	// the running build is stopped (history result Superseded) and the new one starts.
	// Parallel: both run; every build is recorded in status.history, and the rest of the status
	// describes the newest. A change of the spec or of the rebuild annotation always stops the
	// running build, whatever the policy.
	// +kubebuilder:validation:Enum=Serial;SerialLatestOnly;Parallel
	// +kubebuilder:default=Serial
	// +optional
	RunPolicy RunPolicy `json:"runPolicy,omitempty"`

	// checks says which build checks (BuildKit's Dockerfile rules, RootUser, NoHealthcheck)
	// fail the build and which are not evaluated. Without it every rule is evaluated, as the
	// Dockerfile's `# check=` directive says, and its findings are warnings
	// (status.warnings).
	// +optional
	Checks *Checks `json:"checks,omitempty"`

	// platforms are the platforms the image is built for, each os/arch[/variant] as OCI names
	// them (linux/amd64, linux/arm64, linux/arm/v7), Linux only. When set, the manager runs one
	// executor pod per platform, each building that platform's image and pushing it by digest,
	// and once every platform has succeeded it pushes an image index naming them under
	// output.image and output.additionalTags (an OCI image index that also names each
	// platform's attestation manifest, with provenance or sbom; a Docker manifest list of
	// Docker manifests without); status.image.digest is then the index's, status.platforms has each
	// platform's. A pod runs on a Ready node of its platform's architecture (the
	// kubernetes.io/arch and kubernetes.io/os node selector) when one matches the build's
	// nodeSelector and tolerations; else on any node when emulation is true; else the build
	// fails before any pod starts (NoNodeForPlatform). One platform that fails fails the
	// build: no tag is pushed and the other platforms' pods are stopped. A retry runs every
	// platform again. Empty: one pod builds for its node's own platform, and output.image
	// names that image, as without this field.
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$`
	// +kubebuilder:validation:XValidation:rule="self.all(p, p.startsWith('linux/'))",message="only linux platforms can be built (linux/amd64, linux/arm64, linux/arm/v7, ...)"
	// +optional
	Platforms []string `json:"platforms,omitempty"`

	// emulation, when true, lets a platform for which no Ready node of its architecture
	// matches run on any node, building under emulation: the node must have a binfmt_misc
	// handler for the architecture registered (QEMU user mode, as the chart's optional binfmt
	// DaemonSet installs), or the executor fails the build naming the step and the platform.
	// The pod stays unprivileged. Emulated steps run many times slower than native ones.
	// +optional
	Emulation bool `json:"emulation,omitempty"`

	// provenance is how much the SLSA provenance attestation of each pushed image records, as
	// BuildKit's modes (the executor's --provenance): min, the default, records the build's
	// source, Dockerfile path, target, platform, every base image by digest and the times,
	// without build arguments, labels or secret ids; max also the build arguments and labels
	// (those whose name or value looks like a secret's left out) and the ids of secrets and ssh
	// agents; none attaches none. With an attestation (provenance other than none, or sbom),
	// the pushed artifact is an OCI image index holding each image and its attestation
	// manifest (BuildKit's layout), and status.image.digest is the index's.
	// +kubebuilder:validation:Enum=none;min;max
	// +kubebuilder:default=min
	// +optional
	Provenance ProvenanceMode `json:"provenance,omitempty"`

	// sbom, when true, attaches an SBOM of each pushed image (its packages: dpkg, apk, rpm, Go
	// binaries, npm, pip and Go module lock files) as an attestation beside the provenance, in
	// sbomFormat. Off by default, as in BuildKit.
	// +optional
	SBOM bool `json:"sbom,omitempty"`

	// sbomFormat is the SBOM's format: spdx (SPDX 2.3 JSON, the default) or cyclonedx
	// (CycloneDX JSON).
	// +kubebuilder:validation:Enum=spdx;cyclonedx
	// +optional
	SBOMFormat SBOMFormat `json:"sbomFormat,omitempty"`

	// signing names the cosign key that signs the pushed image and its attestations. Without
	// it, the manager's default key signs (--default-signing-secret, the chart's
	// signing.defaultSecret), if the manager has one; else nothing is signed. The MANAGER
	// signs, once the image (or, with platforms, the index) is pushed: the key never reaches
	// the executor pod, where the repository's RUN steps run. A signed build cannot use
	// runPolicy Parallel (refused, reason SigningUnsupported, when the key is the default).
	// +optional
	Signing *Signing `json:"signing,omitempty"`
}

// ProvenanceMode is how much a provenance attestation records.
type ProvenanceMode string

// Provenance modes, BuildKit's.
const (
	ProvenanceNone ProvenanceMode = "none"
	ProvenanceMin  ProvenanceMode = "min"
	ProvenanceMax  ProvenanceMode = "max"
)

// SBOMFormat is the format of an SBOM attestation.
type SBOMFormat string

// SBOM formats.
const (
	SBOMFormatSPDX      SBOMFormat = "spdx"
	SBOMFormatCycloneDX SBOMFormat = "cyclonedx"
)

// Signing is the cosign key of an ImageBuild.
type Signing struct {
	// secretRef names a Secret of the ImageBuild's namespace with the keys cosign.key (a private
	// key in cosign's encrypted format, as `cosign generate-key-pair` or `cosign
	// import-key-pair` write it) and cosign.password (its password, which may be empty). Only
	// the manager reads it, to sign; a build whose Secret is missing, lacks a key or does not
	// decrypt fails before any pod starts (reason SigningKeyInvalid, not retried).
	// +required
	SecretRef corev1.LocalObjectReference `json:"secretRef"`
}

// Checks is the build checks' policy of an ImageBuild: the executor's --check-fail-on and
// --check-skip. Rules are named as BuildKit names them (JSONArgsRecommended,
// SecretsUsedInArgOrEnv, ...) or as ours are (RootUser, NoHealthcheck), case-sensitively, or
// "all" alone; a name the executor does not know fails the build (InvalidArguments, not
// retried).
type Checks struct {
	// failOn are the rules whose findings fail the build before its first step (reason
	// CheckFailed, not retried; nothing runs or is pushed), or "all" (every rule but the
	// experimental ones). The Dockerfile's check=skip cannot waive them.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^([A-Z][A-Za-z]+|all)$`
	// +kubebuilder:validation:XValidation:rule="!self.exists(r, r == 'all') || size(self) == 1",message="all must be the only item"
	// +optional
	FailOn []string `json:"failOn,omitempty"`

	// skip are the rules not evaluated, or "all", besides those the Dockerfile's check=skip
	// directive names. A rule in failOn is evaluated anyway.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^([A-Z][A-Za-z]+|all)$`
	// +kubebuilder:validation:XValidation:rule="!self.exists(r, r == 'all') || size(self) == 1",message="all must be the only item"
	// +optional
	Skip []string `json:"skip,omitempty"`
}

// RunPolicy says how a triggered build and a running one share the ImageBuild.
type RunPolicy string

// Run policies.
const (
	RunPolicySerial           RunPolicy = "Serial"
	RunPolicySerialLatestOnly RunPolicy = "SerialLatestOnly"
	RunPolicyParallel         RunPolicy = "Parallel"
)

// Triggers are the events besides spec changes that start a build.
type Triggers struct {
	// webhook lets the git server report pushes: the manager serves
	// /hooks/<namespace>/<name> (its webhook port), verifies each request with the Secret's
	// value (an HMAC signature for GitHub, Gitea, Forgejo, Bitbucket and the generic form; the
	// token for GitLab), and on a verified push to the source's URL and branch lists the
	// repository's refs at once, as source.git.interval does: the payload's commit is not
	// trusted. Unverified requests get 401 and change nothing.
	// +optional
	Webhook *WebhookTrigger `json:"webhook,omitempty"`

	// baseImages, when true, starts a build (cause BaseImage) when an image the latest
	// successful build was FROM moved: its tag names another digest than the one built from
	// (status.baseImages). The manager checks with HEAD requests, with the pull credentials of
	// output.pushSecretRef, every source.git.interval, or every hour without one. An image
	// named by digest never moves.
	// +optional
	BaseImages bool `json:"baseImages,omitempty"`
}

// WebhookTrigger verifies a git server's webhook requests.
type WebhookTrigger struct {
	// secretRef selects the key of a Secret of the ImageBuild's namespace that holds the
	// webhook's secret (GitHub, Gitea, Forgejo, Bitbucket, generic) or token (GitLab). It must
	// not be empty; until it exists, webhook requests for this ImageBuild get 401.
	// +kubebuilder:validation:XValidation:rule="!has(self.optional) || !self.optional",message="optional is not supported"
	// +required
	SecretRef corev1.SecretKeySelector `json:"secretRef"`
}

// Retry is the retry policy of one ImageBuild; what it leaves unset is the manager's.
// +kubebuilder:validation:XValidation:rule="!(has(self.sourceFetch) && self.sourceFetch && has(self.limit) && self.limit == 0)",message="sourceFetch retries nothing with limit 0: raise limit or drop sourceFetch"
type Retry struct {
	// limit is how many times a failed attempt of this build may be retried, instead of the
	// manager's --max-build-retries; 0 turns retries off.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Limit *int32 `json:"limit,omitempty"`

	// sourceFetch, when true, also retries an attempt that failed with SourceFetchFailed because
	// the git server could not be reached: the connection was refused, reset or timed out, or
	// the server answered with a 5xx (or 429) status (status.failure.transient is then true). A
	// repository, revision or credentials that the server refused are never retried.
	// +optional
	SourceFetch bool `json:"sourceFetch,omitempty"`
}

// Source is the build context.
type Source struct {
	// git is the repository the build context is fetched from.
	// +required
	Git GitSource `json:"git"`

	// contextDir is the directory of the repository used as the build context; the
	// repository's root when empty.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",message="must be a relative path inside the repository"
	// +optional
	ContextDir string `json:"contextDir,omitempty"`
}

// GitSource is a git repository at a revision.
type GitSource struct {
	// url of the repository: https://, http://, ssh://, scp-like user@host:path, or git://,
	// which (as in kaniko) stands for https://. Credentials go in secretRef, never in the URL
	// (a RUN step could read the executor's command line): only an ssh user name may be in it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(https?|git)://[^/]*@') && !self.matches('^ssh://[^/@]*:[^/@]*@')",message="must not carry credentials; put them in a Secret named by secretRef"
	// +kubebuilder:validation:XValidation:rule="self.matches('^(https?|ssh|git)://[^\\\\s/@]+(@[^\\\\s/]+)?/[^\\\\s#]*$') || self.matches('^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\\\\s#]+$')",message="must be an https://, http://, ssh:// or git:// URL with a host and a path, or scp-like user@host:path, without a #fragment"
	// +required
	URL string `json:"url"`

	// revision is a branch, a tag, a commit SHA or any ref (refs/pull/42/head); the
	// repository's default branch when empty.
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[^\s:#~^?*\[\\]+$`
	// +optional
	Revision string `json:"revision,omitempty"`

	// secretRef names a Secret of the ImageBuild's namespace with the credentials of the
	// repository: type kubernetes.io/basic-auth (username and password, or a token as the
	// password) for http(s), or kubernetes.io/ssh-auth (ssh-privatekey, and known_hosts) for ssh.
	// +optional
	SecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`

	// submodules, when true, fetches the repository's submodules recursively.
	// +optional
	Submodules bool `json:"submodules,omitempty"`

	// interval, when set, makes the ImageBuild follow its revision: every interval (jittered)
	// the manager lists the repository's refs, without cloning it, and starts a build (cause
	// Commit) when the revision names another commit than the latest build's. A revision that
	// is a full commit SHA never moves and is not polled. ImageBuilds that name the same URL
	// with the same credentials share one listing; those with other credentials never do.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('168h')",message="must be between 30s and 168h"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// BuildArg is the value of one ARG.
// +kubebuilder:validation:XValidation:rule="!(has(self.value) && has(self.valueFrom))",message="value and valueFrom are mutually exclusive"
// +kubebuilder:validation:XValidation:rule="!has(self.valueFrom) || !(self.name in ['PATH', 'HOME', 'HOSTNAME', 'DOCKER_CONFIG', 'GIT_USERNAME', 'GIT_PASSWORD', 'GIT_TOKEN', 'GIT_SECRET_DIR', 'GIT_PULL_METHOD', 'SSL_CERT_FILE', 'SSL_CERT_DIR'])",message="a build argument read from valueFrom is passed as an environment variable of the same name and cannot be one the executor uses"
type BuildArg struct {
	// name of the ARG.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +required
	Name string `json:"name"`

	// value of the ARG.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Value *string `json:"value,omitempty"`

	// valueFrom reads the value from a key of a Secret or a ConfigMap. Like Docker's build
	// arguments, a value read from a Secret can end up in the image's history if a RUN step
	// uses it; prefer secret mounts for real secrets.
	// +optional
	ValueFrom *BuildArgSource `json:"valueFrom,omitempty"`
}

// BuildSecret is a secret of the build (RUN --mount=type=secret).
type BuildSecret struct {
	// id is the id the Dockerfile names: RUN --mount=type=secret,id=ID. The ids
	// GIT_AUTH_TOKEN.<host> and GIT_AUTH_HEADER.<host> (host or host:port, as BuildKit names
	// them) are also the credentials of git repositories on that host other than the source's
	// (ADD of a git URL, submodules), sent over https only; the source's own credentials
	// (source.git.secretRef) go to its exact scheme, host and port, nowhere else.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-][A-Za-z0-9_.:-]*$`
	// +required
	ID string `json:"id"`

	// secretKeyRef selects the key of a Secret of the ImageBuild's namespace that holds the
	// value. The Secret and the key must exist: until they do, the build does not start
	// (Ready=False, SecretNotFound), as for the other Secrets it names.
	// +kubebuilder:validation:XValidation:rule="!has(self.optional) || !self.optional",message="optional is not supported: leave the secret out instead"
	// +required
	SecretKeyRef corev1.SecretKeySelector `json:"secretKeyRef"`
}

// SSHAgent is the ssh agent of the build's RUN --mount=type=ssh steps: exactly one of
// secretRef and gitSecret.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) != (has(self.gitSecret) && self.gitSecret)",message="exactly one of secretRef and gitSecret: true must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || size(self.secretRef.name) > 0",message="secretRef.name must name a Secret"
type SSHAgent struct {
	// secretRef names a Secret of the ImageBuild's namespace, of type kubernetes.io/ssh-auth:
	// its ssh-privatekey (an unencrypted private key, PEM or OpenSSH) is the agent's key. The
	// Secret and the key must exist: until they do, the build does not start (Ready=False,
	// SecretNotFound), as for the other Secrets it names.
	// +optional
	SecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`

	// gitSecret, when true, makes the key of source.git.secretRef, which must then be an
	// ssh-auth Secret, the agent's key: the Dockerfile's steps can then authenticate as the
	// repository's deploy key (push with it, if it may). Until source.git.secretRef is such a
	// Secret, the build does not start (Ready=False, SecretNotFound).
	// +optional
	GitSecret bool `json:"gitSecret,omitempty"`
}

// BuildArgSource is the origin of a build argument's value.
// +kubebuilder:validation:XValidation:rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",message="exactly one of secretKeyRef and configMapKeyRef must be set"
type BuildArgSource struct {
	// secretKeyRef selects a key of a Secret of the ImageBuild's namespace.
	// +optional
	SecretKeyRef *corev1.SecretKeySelector `json:"secretKeyRef,omitempty"`

	// configMapKeyRef selects a key of a ConfigMap of the ImageBuild's namespace.
	// +optional
	ConfigMapKeyRef *corev1.ConfigMapKeySelector `json:"configMapKeyRef,omitempty"`
}

// Output is where the built image goes.
type Output struct {
	// image is the reference the image is pushed to: [registry/]repository[:tag], without a
	// digest. The tag is "latest" when omitted.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?([.][A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$')",message="must be an image reference [registry/]repository[:tag] without a digest"
	// +required
	Image string `json:"image"`

	// additionalTags are more tags of the same repository that the image is pushed to. Each is
	// a tag, or a template of one with the fields {{.Branch}} (the branch, "/" made "-"),
	// {{.Commit}}, {{.ShortCommit}} (7 characters), {{.Timestamp}} (the build's start, Unix
	// seconds) and {{.BuildNumber}}, and nothing else: "{{.Branch}}-{{.ShortCommit}}-{{.Timestamp}}"
	// names each build so that Flux's image automation or Argo CD Image Updater can pick the
	// newest. An ImageBuild with a tag made from the commit builds the commit the manager
	// resolved the revision to, so the tag names what was built; a rendered tag that is not a
	// valid tag fails the build (reason InvalidTag).
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^([A-Za-z0-9_]|\{\{ *\.(Branch|Commit|ShortCommit|Timestamp|BuildNumber) *\}\})([A-Za-z0-9_.-]|\{\{ *\.(Branch|Commit|ShortCommit|Timestamp|BuildNumber) *\}\})*$`
	// +optional
	AdditionalTags []string `json:"additionalTags,omitempty"`

	// pushSecretRef names a Secret of type kubernetes.io/dockerconfigjson of the ImageBuild's
	// namespace with the credentials of the registry (and of the cache repository).
	// +optional
	PushSecretRef *corev1.LocalObjectReference `json:"pushSecretRef,omitempty"`

	// insecure allows a registry served over plain HTTP or with an untrusted certificate.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// Cache configures the layer cache.
// +kubebuilder:validation:XValidation:rule="!(has(self.repository) && size(self.repository) > 0 && has(self.disabled) && self.disabled)",message="repository cannot be set when disabled is true"
// +kubebuilder:validation:XValidation:rule="!(has(self.mounts) && has(self.disabled) && self.disabled)",message="mounts cannot be set when disabled is true"
type Cache struct {
	// repository where cached layers are stored; "<output image repository>/cache" when empty.
	// It must be under the output image's repository ("<output repository>/...") or under a
	// prefix the manager allows this namespace (--cache-repository-prefix); any other is refused
	// before the build starts (Stalled=True, reason CacheRepositoryNotAllowed). Whoever can push
	// to it can write entries that builds using it take into their images: share it only with
	// those you would let push your image.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?([.][A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$')",message="must be a repository [registry/]path without a tag or digest"
	// +optional
	Repository string `json:"repository,omitempty"`

	// ttl is how long a cached layer is used after it was pushed; the executor's default
	// (two weeks) when empty.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="must be at least 1m"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// disabled turns the cache off.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// mounts configures the cache mounts kept in the cache repository: the directories of the
	// Dockerfile's RUN --mount=type=cache steps (a package manager's downloads, a compiler's
	// cache), which a fresh executor pod would otherwise find empty. With the cache on they
	// are kept unless mounts.enabled is false.
	// +optional
	Mounts *CacheMounts `json:"mounts,omitempty"`

	// volume, when set, gives the ImageBuild a PersistentVolumeClaim of its own that keeps
	// what the executor can reuse between builds: in an executor pod, the cache mounts of
	// RUN --mount=type=cache steps, found there by the next build without a download (see
	// CacheVolume).
	// +optional
	Volume *CacheVolume `json:"volume,omitempty"`
}

// CacheMounts says whether and how the cache mounts of RUN --mount=type=cache steps are kept
// between builds: after a successful build each one a step used is saved to the cache
// repository, and the next build restores it before the first step that mounts it and misses
// the layer cache. A saved mount belongs to the ImageBuild's namespace (the manager passes it as
// the mount's scope, with its id, the cache repository and the platform): builds of another
// namespace never restore it, even from the same cache repository. Its contents never reach the
// image or the layer cache's keys.
type CacheMounts struct {
	// enabled keeps the cache mounts between builds; true when unset. false: every build's cache
	// mounts start empty, as in a fresh BuildKit.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// maxSize bounds the size of one saved cache mount (its files' sizes summed); a mount
	// larger than that is not saved (the executor logs a warning) and the next build finds it
	// empty. The executor's default, 2Gi, when unset; 0 means no limit.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isInteger() && quantity(string(self)).compareTo(quantity('0')) >= 0 && quantity(string(self)).compareTo(quantity('1Ti')) <= 0",message="must be a whole number of bytes from 0 (no limit) to 1Ti"
	// +optional
	MaxSize *resource.Quantity `json:"maxSize,omitempty"`
}

// Retention says how long finished executor pods are kept.
type Retention struct {
	// ttlSecondsAfterFinished is how long a finished executor pod is kept before the
	// controller deletes it; kept until the ImageBuild is deleted when unset.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2592000
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// history is how many builds status.history keeps, newest first.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=10
	// +optional
	History *int32 `json:"history,omitempty"`
}

// BuildPhase is a coarse summary of where a build is; conditions carry the details.
// +kubebuilder:validation:Enum=Pending;Queued;Running;Succeeded;Failed
type BuildPhase string

// Phases of a build.
const (
	// PhasePending: the executor pod is being created or waits to be scheduled or retried.
	PhasePending BuildPhase = "Pending"
	// PhaseQueued: the build waits for a free slot (--max-concurrent-builds).
	PhaseQueued BuildPhase = "Queued"
	// PhaseRunning: the executor pod is running.
	PhaseRunning BuildPhase = "Running"
	// PhaseSucceeded: the image was pushed.
	PhaseSucceeded BuildPhase = "Succeeded"
	// PhaseFailed: the build failed and will not be retried.
	PhaseFailed BuildPhase = "Failed"
)

// Finished reports whether a build in phase p has ended.
func (p BuildPhase) Finished() bool { return p == PhaseSucceeded || p == PhaseFailed }

// ImageBuildStatus is what the controller observed of the latest build.
type ImageBuildStatus struct {
	// phase of the latest build.
	// +optional
	Phase BuildPhase `json:"phase,omitempty"`

	// conditions: Ready, Reconciling and Stalled (kstatus).
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// observedGeneration is the generation the latest build is for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// observedRebuild is the value of the build.slipway.dev/rebuild annotation the latest
	// build is for.
	// +optional
	ObservedRebuild string `json:"observedRebuild,omitempty"`

	// attempt counts the executor pods started for the observed generation (1 for the first).
	// +optional
	Attempt int32 `json:"attempt,omitempty"`

	// buildNumber counts the builds of this ImageBuild: 1 for the first, one more for each
	// new generation, rebuild or trigger. Retries of a build keep its number.
	// +optional
	BuildNumber int64 `json:"buildNumber,omitempty"`

	// cause is what started the latest build.
	// +optional
	Cause BuildCause `json:"cause,omitempty"`

	// next is the build a trigger asked for while the latest build runs (runPolicy Serial):
	// it starts when the latest build ends. A newer trigger replaces it.
	// +optional
	Next *BuildRequest `json:"next,omitempty"`

	// history records the builds, newest first, at most spec.retention.history (10).
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +optional
	History []BuildRecord `json:"history,omitempty"`

	// baseImages are the images the latest successful build was FROM, with the digests it
	// used: what triggers.baseImages compares.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	BaseImages []BaseImage `json:"baseImages,omitempty"`

	// retries counts the attempts of the latest build that were retried after a transient
	// failure.
	// +optional
	Retries int32 `json:"retries,omitempty"`

	// nextRetryTime is when the next attempt starts, while phase is Pending after a
	// retryable failure.
	// +optional
	NextRetryTime *metav1.Time `json:"nextRetryTime,omitempty"`

	// podName is the executor pod of the latest attempt.
	// +optional
	PodName string `json:"podName,omitempty"`

	// startTime is when the executor container of the latest attempt started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the latest build ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// duration is how long the latest build took, for people (111ms, 1.5s, 1m23s): the
	// executor's own measure, else completionTime - startTime ("<1s" within a second).
	// +optional
	Duration string `json:"duration,omitempty"`

	// source is what was fetched.
	// +optional
	Source *SourceStatus `json:"source,omitempty"`

	// image is what was pushed.
	// +optional
	Image *ImageStatus `json:"image,omitempty"`

	// cache counts the layer cache lookups of the build.
	// +optional
	Cache *CacheStatus `json:"cache,omitempty"`

	// stages summarises each built stage, in build order.
	// +listType=atomic
	// +optional
	Stages []StageStatus `json:"stages,omitempty"`

	// failure says why and where the latest build failed.
	// +optional
	Failure *Failure `json:"failure,omitempty"`

	// warnings are the build checks' findings of the latest build (its latest attempt that
	// reported them), by line, at most 20: what BuildKit's `docker build` prints as
	// warnings. A build that fails has them too. They are cleared when a new build starts.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	// +optional
	Warnings []BuildWarning `json:"warnings,omitempty"`

	// warningCount is the number of the latest build's findings, those warnings leaves out
	// included; unset until an attempt of the build has reported them (kubectl get shows
	// <none>), 0 when it found none.
	// +kubebuilder:validation:Minimum=0
	// +optional
	WarningCount *int32 `json:"warningCount,omitempty"`

	// platforms is the latest build's progress for each of spec.platforms, in their order;
	// empty for a build without spec.platforms.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Platforms []PlatformStatus `json:"platforms,omitempty"`
}

// PlatformStatus is one platform's part of a multi-platform build (spec.platforms).
type PlatformStatus struct {
	// platform as spec.platforms names it (linux/arm64).
	// +kubebuilder:validation:MaxLength=32
	// +required
	Platform string `json:"platform"`

	// phase of the platform's executor pod: Pending, Running, Succeeded or Failed.
	// +optional
	Phase BuildPhase `json:"phase,omitempty"`

	// podName is the executor pod that builds the platform in the latest attempt.
	// +optional
	PodName string `json:"podName,omitempty"`

	// node the pod was scheduled on.
	// +optional
	Node string `json:"node,omitempty"`

	// emulated is true when the pod was placed without an architecture selector
	// (spec.emulation, and no Ready node of the platform's architecture matched): its RUN
	// steps run under the node's binfmt_misc handler.
	// +optional
	Emulated bool `json:"emulated,omitempty"`

	// digest of the platform's image manifest, pushed by digest.
	// +optional
	Digest string `json:"digest,omitempty"`

	// index is the digest of the image index the platform's pod pushed by digest when it
	// attached attestations (spec.provenance, spec.sbom): its image and the attestation
	// manifest about it, which the build's index takes both from. Empty when the pod pushed
	// its image alone.
	// +optional
	Index string `json:"index,omitempty"`

	// duration of the platform's build, for people (1m23s).
	// +optional
	Duration string `json:"duration,omitempty"`

	// cache counts the platform's layer cache lookups.
	// +optional
	Cache *CacheStatus `json:"cache,omitempty"`

	// failure says why and where the platform's build failed.
	// +optional
	Failure *Failure `json:"failure,omitempty"`
}

// BuildWarning is one finding of the build checks.
type BuildWarning struct {
	// rule is the rule's name (JSONArgsRecommended, RootUser, ...).
	// +kubebuilder:validation:MaxLength=64
	// +required
	Rule string `json:"rule"`

	// line is the 1-based Dockerfile line the finding is about; 0 when none.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Line int32 `json:"line,omitempty"`

	// message says what was found, in one line.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Message string `json:"message,omitempty"`

	// url documents the rule.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	URL string `json:"url,omitempty"`
}

// SourceStatus is the fetched source.
type SourceStatus struct {
	// commit is the resolved git commit that was built.
	// +optional
	Commit string `json:"commit,omitempty"`
}

// BuildCause is what started a build.
// +kubebuilder:validation:Enum=Created;SpecChanged;Manual;Commit;Webhook;BaseImage
type BuildCause string

// Causes of a build.
const (
	// CauseCreated: the ImageBuild was created.
	CauseCreated BuildCause = "Created"
	// CauseSpecChanged: its spec changed (a new generation).
	CauseSpecChanged BuildCause = "SpecChanged"
	// CauseManual: the build.slipway.dev/rebuild annotation changed.
	CauseManual BuildCause = "Manual"
	// CauseCommit: polling (source.git.interval) found the revision at a new commit.
	CauseCommit BuildCause = "Commit"
	// CauseWebhook: a verified webhook push made the manager find the revision at a new commit.
	CauseWebhook BuildCause = "Webhook"
	// CauseBaseImage: an image the latest successful build was FROM moved.
	CauseBaseImage BuildCause = "BaseImage"
)

// BuildRequest is a build that a trigger asked for and that has not started.
type BuildRequest struct {
	// cause of the build.
	// +required
	Cause BuildCause `json:"cause"`

	// commit the revision was found at, if the trigger resolved it.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Commit string `json:"commit,omitempty"`

	// time the trigger fired.
	// +required
	Time metav1.Time `json:"time"`
}

// BuildRecord is one build of the ImageBuild's history.
type BuildRecord struct {
	// number of the build (status.buildNumber when it started).
	// +required
	Number int64 `json:"number"`

	// cause of the build.
	// +required
	Cause BuildCause `json:"cause"`

	// commit that was built (or that the trigger found, until the build reports it).
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Commit string `json:"commit,omitempty"`

	// baseImages the build was FROM, as reference@digest.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	BaseImages []string `json:"baseImages,omitempty"`

	// digest of the pushed image.
	// +optional
	Digest string `json:"digest,omitempty"`

	// podName is the executor pod of the build's latest attempt.
	// +optional
	PodName string `json:"podName,omitempty"`

	// startTime is when the build was started (its first executor pod created).
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// duration of the build, for people (1.5s, 1m23s), once it ended.
	// +optional
	Duration string `json:"duration,omitempty"`

	// result of the build: Running while it runs, then Succeeded, Failed, or Superseded when
	// a newer build stopped it (runPolicy SerialLatestOnly, a spec change, a rebuild).
	// +kubebuilder:validation:Enum=Running;Succeeded;Failed;Superseded
	// +required
	Result BuildResult `json:"result"`

	// reason of a failure (status.failure.reason's values).
	// +optional
	Reason string `json:"reason,omitempty"`
}

// BuildResult is how a recorded build ended.
type BuildResult string

// Results of recorded builds.
const (
	BuildResultRunning    BuildResult = "Running"
	BuildResultSucceeded  BuildResult = "Succeeded"
	BuildResultFailed     BuildResult = "Failed"
	BuildResultSuperseded BuildResult = "Superseded"
)

// BaseImage is an image a build was FROM.
type BaseImage struct {
	// reference as the Dockerfile resolved it (docker.io/library/debian:bookworm).
	// +required
	Reference string `json:"reference"`

	// digest the reference named when the build pulled it: the index's digest when it
	// named an index, else the manifest's.
	// +required
	Digest string `json:"digest"`
}

// ImageStatus is the pushed image.
type ImageStatus struct {
	// digest of the image manifest (sha256:...).
	// +optional
	Digest string `json:"digest,omitempty"`

	// shortDigest is the first 12 hex digits of digest, for kubectl get.
	// +optional
	ShortDigest string `json:"shortDigest,omitempty"`

	// references are the pushed references, each with the digest (repo@sha256:...).
	// +listType=atomic
	// +optional
	References []string `json:"references,omitempty"`

	// signature is the digest of the manifest under cosign's tag sha256-<digest>.sig that holds
	// the signature of digest (`cosign verify --key` finds it there); empty when the build is not
	// signed.
	// +optional
	Signature string `json:"signature,omitempty"`

	// attestations are the attestations of the build: one per image of the pushed index, whose
	// attestation manifest (BuildKit's layout) holds its statements, and, when signed, one more
	// whose subject is digest itself (the index), for `cosign verify-attestation` of the tags.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=17
	// +optional
	Attestations []AttestationStatus `json:"attestations,omitempty"`

	// sbom is true when an SBOM attestation (SPDX or CycloneDX) was attached to the image.
	// +optional
	SBOM bool `json:"sbom,omitempty"`
}

// AttestationStatus is what is attested about one image (or the index).
type AttestationStatus struct {
	// subject is the digest of the image the statements are about.
	// +required
	Subject string `json:"subject"`

	// platform of that image (linux/amd64); empty for the index.
	// +optional
	Platform string `json:"platform,omitempty"`

	// manifest is the digest of the attestation manifest in the pushed index that holds the
	// statements (BuildKit's layout: what `docker buildx imagetools inspect` reads); empty for
	// the index's entry.
	// +optional
	Manifest string `json:"manifest,omitempty"`

	// predicateTypes are the in-toto predicate types of the statements
	// (https://slsa.dev/provenance/v1, https://spdx.dev/Document, https://cyclonedx.org/bom).
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	PredicateTypes []string `json:"predicateTypes,omitempty"`

	// signed is the digest of the manifest under cosign's tag sha256-<subject>.att that holds the
	// statements signed (`cosign verify-attestation --key` finds them there); empty when the
	// build is not signed.
	// +optional
	Signed string `json:"signed,omitempty"`
}

// CacheStatus counts layer cache lookups.
type CacheStatus struct {
	// hits is the number of instructions served from the cache.
	// +optional
	Hits int32 `json:"hits"`

	// misses is the number of instructions that were built.
	// +optional
	Misses int32 `json:"misses"`

	// mounts counts the cache mounts (RUN --mount=type=cache) restored from the cache
	// repository and saved to it (spec.cache.mounts); unset when the build did neither.
	// +optional
	Mounts *CacheMountsStatus `json:"mounts,omitempty"`

	// volume is what the build did with its cache volume (spec.cache.volume): of a build of
	// spec.platforms, each platform's is in status.platforms[].cache.volume.
	// +optional
	Volume *CacheVolumeStatus `json:"volume,omitempty"`
}

// CacheMountsStatus counts what a build did with the cache mounts kept in the cache
// repository: of a build of spec.platforms, the sums of its platforms' (status.platforms[].cache.mounts).
// Sizes are in bytes, of the mounts' files (their sizes summed); the executor's log has a line
// per mount.
type CacheMountsStatus struct {
	// restored is the number of cache mounts restored before the steps that mounted them.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Restored int32 `json:"restored"`

	// restoredBytes is the size of the restored mounts.
	// +kubebuilder:validation:Minimum=0
	// +optional
	RestoredBytes int64 `json:"restoredBytes,omitempty"`

	// restoreDuration is how long restoring them took (they are restored at the same time,
	// while earlier steps run), for people (1.5s); of a build of spec.platforms, the longest
	// platform's, as for saveDuration.
	// +optional
	RestoreDuration string `json:"restoreDuration,omitempty"`

	// saved is the number of cache mounts saved after the build.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Saved int32 `json:"saved"`

	// savedBytes is the size of the saved mounts.
	// +kubebuilder:validation:Minimum=0
	// +optional
	SavedBytes int64 `json:"savedBytes,omitempty"`

	// uploadedBytes is what saving them sent to the registry, compressed: only what changed
	// since they were restored.
	// +kubebuilder:validation:Minimum=0
	// +optional
	UploadedBytes int64 `json:"uploadedBytes,omitempty"`

	// saveDuration is how long saving them took, for people (1.5s).
	// +optional
	SaveDuration string `json:"saveDuration,omitempty"`

	// skipped is the number of cache mounts neither restored nor saved as they would have
	// been: a saved one that could not be read, was refused (its bytes not what its manifest
	// says) or was too large (the step got an empty mount), or one larger than
	// spec.cache.mounts.maxSize or whose save failed (not saved). A mount never saved before is
	// not skipped: it starts empty. The executor's log says which and why.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Skipped int32 `json:"skipped,omitempty"`
}

// StageStatus summarises one built stage.
type StageStatus struct {
	// name of the stage, or its index when it has none.
	// +optional
	Name string `json:"name"`

	// instructions is the number of instructions of the stage (FROM excluded).
	// +optional
	Instructions int32 `json:"instructions"`

	// cacheHits is the number of instructions served from the cache.
	// +optional
	CacheHits int32 `json:"cacheHits"`

	// duration of the stage (1.5s).
	// +optional
	Duration string `json:"duration,omitempty"`
}

// Failure says why and where a build failed.
type Failure struct {
	// reason is machine-readable: an executor reason (SourceFetchFailed, DockerfileInvalid,
	// RunFailed, PushFailed, ...) or one of the pod's (OOMKilled, Evicted, PodDeleted,
	// ExecutorKilled, Timeout, PodFailed, BuildFailed).
	// +optional
	Reason string `json:"reason,omitempty"`

	// message is for people.
	// +optional
	Message string `json:"message,omitempty"`

	// line is the 1-based line of the failing Dockerfile instruction.
	// +optional
	Line int32 `json:"line,omitempty"`

	// instruction is the failing instruction as written, shortened.
	// +optional
	Instruction string `json:"instruction,omitempty"`

	// exitCode is the exit status of a failed RUN step, or of the executor.
	// +optional
	ExitCode int32 `json:"exitCode,omitempty"`

	// pod is the executor pod that failed.
	// +optional
	Pod string `json:"pod,omitempty"`

	// container is the container of the pod that failed.
	// +optional
	Container string `json:"container,omitempty"`

	// transient is true when the executor found that the cause may pass without a change to the
	// build: the git server could not be reached (connection refused, reset or timed out) or
	// answered with a server error (5xx, or 429). spec.retry.sourceFetch retries such a
	// SourceFetchFailed.
	// +optional
	Transient bool `json:"transient,omitempty"`
}

// ImageBuild builds a container image from a git repository in the cluster and pushes it to a
// registry.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ib,categories=slipway
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Build",type=integer,JSONPath=`.status.buildNumber`
// +kubebuilder:printcolumn:name="Cause",type=string,JSONPath=`.status.cause`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.output.image`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.image.shortDigest`
// +kubebuilder:printcolumn:name="Cache-Hits",type=integer,JSONPath=`.status.cache.hits`
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.status.duration`
// +kubebuilder:printcolumn:name="Warnings",type=integer,JSONPath=`.status.warningCount`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.failure.reason`,priority=1
// +kubebuilder:printcolumn:name="Platforms",type=string,JSONPath=`.spec.platforms`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters (it names the executor pods and labels them)"
type ImageBuild struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the image to build.
	// +required
	Spec ImageBuildSpec `json:"spec"`

	// status is what the controller observed.
	// +optional
	Status ImageBuildStatus `json:"status,omitempty"`
}

// ImageBuildList is a list of ImageBuilds.
// +kubebuilder:object:root=true
type ImageBuildList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageBuild `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ImageBuild{}, &ImageBuildList{})
}
