package v1alpha1

import "k8s.io/apimachinery/pkg/api/resource"

// CacheVolume is a PersistentVolumeClaim of the ImageBuild's own that keeps, between its
// builds, what the executor can reuse (its --state-dir): in an executor pod, the directories of
// the Dockerfile's RUN --mount=type=cache steps. The manager makes the claim, named
// <imagebuild>-cache (<imagebuild>-cache-<platform, "/" made "-"> for each of spec.platforms:
// each platform's pod has a claim of its own, so that pods on nodes of different
// architectures never wait for one volume), ReadWriteOnce, in the ImageBuild's namespace,
// controlled by the ImageBuild: it is deleted with it, and when spec.cache.volume (or a
// platform) is removed. A claim of that name that the ImageBuild does not control is never
// used: the build fails with reason CacheVolumeConflict. One build at a time uses the volume
// (runPolicy Parallel is refused with it); the executor uses a volume it cannot read, that
// is full or that another build holds as an empty one, with a warning in its log.
type CacheVolume struct {
	// size is the claim's storage request, at least 1Mi, in whole bytes. It applies when the
	// claim is made; a larger size later asks the claim to expand, which its StorageClass
	// must allow (allowVolumeExpansion), else the claim keeps its size and the manager says
	// so in a Warning event (CacheVolumeNotResized). A claim never shrinks.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isInteger() && quantity(string(self)).compareTo(quantity('1Mi')) >= 0",message="must be a whole number of bytes, at least 1Mi"
	// +required
	Size resource.Quantity `json:"size"`

	// storageClassName is the claim's StorageClass; the cluster's default class when unset,
	// and "" for a PersistentVolume without a class (no dynamic provisioning). It applies
	// when the claim is made: a claim's class cannot change (the manager says so in a Warning
	// event); delete the claim for a new one to be made with the next build.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// CacheVolumeStatus is what the executor of a build did with its cache volume
// (spec.cache.volume), as its result says: counts and sizes, no file names.
type CacheVolumeStatus struct {
	// claimName is the PersistentVolumeClaim the executor pod mounted.
	// +kubebuilder:validation:MaxLength=253
	// +required
	ClaimName string `json:"claimName"`

	// found is true when the volume held what an earlier build left there.
	// +optional
	Found bool `json:"found,omitempty"`

	// reset says why what the volume held was not used (another build held it, it could not
	// be read, it was full, it was written by another version of the executor): the build ran
	// as without it. Empty when it was used, or was empty.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Reset string `json:"reset,omitempty"`

	// mountsUsed counts the cache mounts (RUN --mount=type=cache) the build took from the
	// volume.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MountsUsed int32 `json:"mountsUsed,omitempty"`

	// treesUsed counts the stages that started from an unpacked tree kept in the volume;
	// always 0 in an executor pod, which builds in its own root filesystem.
	// +kubebuilder:validation:Minimum=0
	// +optional
	TreesUsed int32 `json:"treesUsed,omitempty"`

	// bytes is what the volume holds after the build (its files' sizes summed).
	// +kubebuilder:validation:Minimum=0
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
}

// Reasons of spec.cache.volume.
const (
	// ReasonCacheVolumeConflict: a PersistentVolumeClaim has the name of the build's cache
	// volume and is not controlled by the ImageBuild; the build fails (Stalled=True) and the
	// claim is left alone.
	ReasonCacheVolumeConflict = "CacheVolumeConflict"
	// ReasonCacheVolumePending: the claim of the build's cache volume is being deleted (or
	// belongs to a deleted ImageBuild of the same name); the build waits for it to go, then
	// makes a new one.
	ReasonCacheVolumePending = "CacheVolumePending"
	// ReasonCacheVolumeNotResized: an event: the claim could not take spec.cache.volume's
	// size or class; the build uses it as it is.
	ReasonCacheVolumeNotResized = "CacheVolumeNotResized"
)
