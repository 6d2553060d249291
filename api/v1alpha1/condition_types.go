package v1alpha1

// Condition types of an ImageBuild. They follow kstatus
// (sigs.k8s.io/cli-utils/pkg/kstatus), so that kubectl wait, Flux and Argo CD read an
// ImageBuild without knowing it.
const (
	// ConditionReady is "normal-true": True once the image of the observed generation has been
	// built and pushed; False with the reason of the failure, or of the wait, otherwise.
	// `kubectl wait --for=condition=Ready imagebuild/NAME` waits for a successful build.
	ConditionReady = "Ready"

	// ConditionReconciling is "abnormal-true": True while a build is queued, starting, running
	// or waiting to be retried; removed once the build has ended (either way).
	ConditionReconciling = "Reconciling"

	// ConditionStalled is "abnormal-true": True when the controller cannot make progress without
	// a change to the spec or a rebuild request: the build failed for a reason that retrying
	// cannot fix, or it ran out of retries. Removed otherwise.
	ConditionStalled = "Stalled"
)

// Reasons of the conditions, also used as status.failure.reason. Reasons coming from the
// executor (SourceFetchFailed, DockerfileInvalid, RunFailed, PushFailed, ...) are copied from its
// result as they are.
const (
	// ReasonSucceeded: the image was built and pushed.
	ReasonSucceeded = "Succeeded"
	// ReasonQueued: the build waits for a free slot (--max-concurrent-builds).
	ReasonQueued = "Queued"
	// ReasonPodCreated: the executor pod was created and is not running yet.
	ReasonPodCreated = "PodCreated"
	// ReasonBuilding: the executor pod is running.
	ReasonBuilding = "Building"
	// ReasonResolving: the build of an ImageBuild that follows its revision waits for the
	// listing of the repository's refs that fixes the commit it builds.
	ReasonResolving = "Resolving"
	// ReasonInvalidTag: an additional tag's template could not be rendered into a valid tag;
	// not retried.
	ReasonInvalidTag = "InvalidTag"
	// ReasonRetrying: an attempt failed for a reason that may be transient; another follows
	// after a backoff.
	ReasonRetrying = "Retrying"
	// ReasonSecretNotFound: a referenced Secret or ConfigMap does not exist (yet), or has the
	// wrong type; retried with backoff.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonCacheRepositoryNotAllowed: spec.cache.repository is neither under the output
	// repository nor under a prefix the manager allows the namespace (--cache-repository-prefix);
	// the build fails before any pod is created, and is not retried (Stalled=True).
	ReasonCacheRepositoryNotAllowed = "CacheRepositoryNotAllowed"

	// ReasonNoNodeForPlatform: no Ready node of the architecture of one of spec.platforms
	// matches the build's placement, and spec.emulation is false; the build fails before any
	// pod is created and is not retried (Stalled=True).
	ReasonNoNodeForPlatform = "NoNodeForPlatform"
	// ReasonInvalidPlatforms: two of spec.platforms are the same platform (linux/arm64 and
	// linux/arm64/v8); not retried.
	ReasonInvalidPlatforms = "InvalidPlatforms"
	// ReasonRevisionMoved: the pods of a multi-platform build fetched different commits (the
	// revision moved while they started); retried.
	ReasonRevisionMoved = "RevisionMoved"
	// ReasonIndexInvalid: a platform's pushed image is not what an image index may name
	// (not an image manifest, or of another platform than the one it was built for); not
	// retried.
	ReasonIndexInvalid = "IndexInvalid"

	// ReasonSigning: the build's image was pushed and the manager signs it and its
	// attestations (spec.signing, or its default key).
	ReasonSigning = "Signing"
	// ReasonSigningKeyInvalid: the build's signing key (spec.signing.secretRef, or the
	// manager's default) is missing, lacks cosign.key or cosign.password, or does not decrypt
	// with its password; the build fails (before any pod when it is found then) and is not
	// retried (Stalled=True). No message holds key bytes or the password.
	ReasonSigningKeyInvalid = "SigningKeyInvalid"
	// ReasonSigningUnsupported: the build is to be signed (the manager's default key) but its
	// runPolicy is Parallel, whose overlapping builds the manager would not sign; it fails
	// before any pod and is not retried.
	ReasonSigningUnsupported = "SigningUnsupported"
	// ReasonSigningFailed: the manager could not push the signature or the signed
	// attestations of the pushed image (the registry refused or failed); retried as PushFailed.
	ReasonSigningFailed = "SigningFailed"
	// ReasonAttestationInvalid: the pushed index's attestations are not what the manager can
	// sign (an attestation manifest about an image the index does not hold, a statement that
	// is not an in-toto statement about its image, or one too large); not retried.
	ReasonAttestationInvalid = "AttestationInvalid"

	// ReasonBuildFailed: the executor failed without a readable result.
	ReasonBuildFailed = "BuildFailed"
	// ReasonOOMKilled: the executor was killed for exceeding its memory limit.
	ReasonOOMKilled = "OOMKilled"
	// ReasonEvicted: the executor pod was evicted from its node.
	ReasonEvicted = "Evicted"
	// ReasonPodDeleted: the executor pod was deleted before it ended.
	ReasonPodDeleted = "PodDeleted"
	// ReasonExecutorKilled: the executor was killed by a signal (its exit code is 128 + the
	// signal's number) before it wrote a result, and not for exceeding its memory limit: by the
	// kernel's OOM killer outside the container's limit, the container runtime, or a person.
	ReasonExecutorKilled = "ExecutorKilled"
	// ReasonTimeout: the build ran longer than spec.timeout.
	ReasonTimeout = "Timeout"
	// ReasonPodFailed: the executor pod could not start or ended in an unexpected way.
	ReasonPodFailed = "PodFailed"
)

// Labels and annotations.
const (
	// RebuildAnnotation on an ImageBuild asks for a new build of an unchanged spec: set it to any
	// value that differs from the previous one (a timestamp, for instance).
	RebuildAnnotation = "build.slipway.dev/rebuild"

	// LabelImageBuild on an executor pod names its ImageBuild.
	LabelImageBuild = "build.slipway.dev/imagebuild"
	// LabelGeneration on an executor pod is the ImageBuild generation it builds.
	LabelGeneration = "build.slipway.dev/generation"
	// LabelAttempt on an executor pod is the build attempt it runs (see status.attempt).
	LabelAttempt = "build.slipway.dev/attempt"
	// LabelPlatform on an executor pod of a multi-platform build is the platform it builds,
	// "/" made "-" (linux-arm-v7).
	LabelPlatform = "build.slipway.dev/platform"
)
