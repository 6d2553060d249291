package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/executor/result"
)

// The cache volume of an ImageBuild (spec.cache.volume, issue 17).
//
// Each build of an ImageBuild with spec.cache.volume mounts a PersistentVolumeClaim of the
// ImageBuild's own at stateDir and runs the executor with --state-dir=stateDir: the executor
// keeps there, between builds, what it can reuse. In a pod that is the directories of the
// cache mounts (RUN --mount=type=cache): the unpacked stage trees it also keeps under chroot
// isolation cannot be reused in a pod, whose executor builds in the container's own root,
// which no volume can be.
//
// The claim (constructCacheClaim) is named cacheClaimName: <imagebuild>-cache, or, for a build
// of spec.platforms, <imagebuild>-cache-<platform suffix>, one per platform. One claim shared
// by the platforms' pods (each in a subPath) would not do: the claim is ReadWriteOnce, so
// every pod using it must run on one node (and a local volume is bound to one node for good),
// while each platform's pod goes to a node of its own architecture. The ImageBuild is the
// claim's controller: the garbage collector deletes it with the ImageBuild, and the manager
// deletes the claims a spec no longer names (cache.volume removed, a platform dropped). A
// claim of that name that the ImageBuild does not control is never used or adopted.
//
// One build at a time uses a claim: the builds of an ImageBuild never overlap (a new build
// starts once the pods of the previous one are gone: stopOthers; the CRD refuses runPolicy
// Parallel with cache.volume; a retry starts once the failed pod has ended), and the
// executor locks the directory besides (flock), using a busy one as an empty one.

const (
	// stateDir is where the executor pod mounts the cache volume: its --state-dir.
	stateDir = "/slipway/state"
	// cacheVolumeName is the pod's volume of the claim.
	cacheVolumeName = "cache-volume"
)

// claimGoingRecheck is how often a build waiting for a claim of its cache volume's name to be
// deleted looks again, besides being woken by the deletion of a claim the manager watches.
const claimGoingRecheck = 5 * time.Second

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete

// cacheClaimName is the name of the claim of ib's cache volume for platform (one of
// spec.platforms; "" for a build without). An ImageBuild's name is a DNS subdomain of at most
// 63 characters (the CRD), so the name is a valid claim name (a DNS subdomain, at most 253)
// as it is.
func cacheClaimName(ib *v1alpha1.ImageBuild, platform string) string {
	name := ib.Name + "-cache"
	if platform != "" {
		name += "-" + platformSuffix(platform)
	}
	return name
}

// cacheVolumeSpec is spec.cache.volume, nil when unset.
func cacheVolumeSpec(ib *v1alpha1.ImageBuild) *v1alpha1.CacheVolume {
	if ib.Spec.Cache == nil {
		return nil
	}
	return ib.Spec.Cache.Volume
}

// cacheClaimNames are the claims ib's spec asks for: one, one per platform, or none.
func cacheClaimNames(ib *v1alpha1.ImageBuild) []string {
	if cacheVolumeSpec(ib) == nil {
		return nil
	}
	if !multiPlatform(ib) {
		return []string{cacheClaimName(ib, "")}
	}
	names := make([]string, 0, len(ib.Spec.Platforms))
	for _, p := range ib.Spec.Platforms {
		names = append(names, cacheClaimName(ib, p))
	}
	return names
}

// constructCacheClaim is the claim of ib's cache volume for platform: ReadWriteOnce, the size
// and class of spec.cache.volume (the cluster's default class when it names none), labelled
// as the executor pods are (managed-by, the ImageBuild, the platform), with ib as its
// controller. It is a pure function; ib must have spec.cache.volume.
func constructCacheClaim(ib *v1alpha1.ImageBuild, platform string) *corev1.PersistentVolumeClaim {
	v := cacheVolumeSpec(ib)
	labels := map[string]string{managedByLabel: managedByValue, v1alpha1.LabelImageBuild: ib.Name}
	if platform != "" {
		labels[v1alpha1.LabelPlatform] = platformSuffix(platform)
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:      cacheClaimName(ib, platform),
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
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: v.StorageClassName,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: v.Size},
			},
		},
	}
}

// addCacheVolume gives pod, the executor pod of ib for platform ("" for a build without
// spec.platforms), the claim of ib's cache volume, mounted by the executor container alone
// (never by the init container that stages credentials) at stateDir, and --state-dir. Nothing
// when ib has no spec.cache.volume.
func addCacheVolume(pod *corev1.Pod, ib *v1alpha1.ImageBuild, platform string) {
	if cacheVolumeSpec(ib) == nil {
		return
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: cacheVolumeName, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: cacheClaimName(ib, platform)},
	}})
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if c.Name != executorContainer {
			continue
		}
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: cacheVolumeName, MountPath: stateDir})
		c.Args = append(c.Args, "--state-dir="+stateDir)
	}
}

// podCacheClaim is the claim pod mounts as its cache volume, "" for none.
func podCacheClaim(pod *corev1.Pod) string {
	if pod == nil {
		return ""
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == cacheVolumeName && v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return ""
}

// cacheVolumeStatus is status.cache.volume of a build whose executor pod is pod and whose
// result reported state (nil when it reported none): the claim the pod mounted, and what the
// executor found and used there; nil when the pod mounted none. The result is the executor
// image's to write (spec.executorImage): negative figures count as 0, counts stop at
// math.MaxInt32, and reset is cut to the CRD's 256 bytes with control characters removed, so
// that the status always passes the CRD's validation.
func cacheVolumeStatus(pod *corev1.Pod, state *result.State) *v1alpha1.CacheVolumeStatus {
	claim := podCacheClaim(pod)
	if claim == "" {
		return nil
	}
	st := &v1alpha1.CacheVolumeStatus{ClaimName: claim}
	if state == nil {
		return st
	}
	st.Found = state.Found
	st.Reset = result.Excerpt(state.Reset, 256)
	st.MountsUsed = addCount(0, state.MountsUsed)
	st.TreesUsed = addCount(0, state.TreesUsed)
	st.Bytes = addSize(0, state.Bytes)
	return st
}

// cacheVolumeMessage is what the Ready message says of the cache volume: ", cache volume: 2
// cache mounts reused" when the build found state there, ", cache volume not used: <why>"
// when it could not use it; "" when the build had none, found it empty (the first build) or
// its executor said nothing of it.
func cacheVolumeMessage(v *v1alpha1.CacheVolumeStatus) string {
	switch {
	case v == nil:
		return ""
	case v.Reset != "":
		return ", cache volume not used: " + v.Reset
	case !v.Found:
		return ""
	}
	msg := fmt.Sprintf(", cache volume: %d cache mounts reused", v.MountsUsed)
	if v.TreesUsed > 0 {
		msg += fmt.Sprintf(", %d trees", v.TreesUsed)
	}
	return msg
}

// claimState is how an existing claim of a cache volume's name stands for the ImageBuild.
type claimState int

const (
	// claimOurs: controlled by the ImageBuild, not being deleted.
	claimOurs claimState = iota
	// claimGoing: being deleted, or controlled by a deleted ImageBuild of the same name (the
	// garbage collector deletes it): a new one is made once it is gone.
	claimGoing
	// claimForeign: anything else; never used.
	claimForeign
)

// judgeClaim says how claim stands for ib, and, when it is foreign, who controls it.
func judgeClaim(ib *v1alpha1.ImageBuild, claim *corev1.PersistentVolumeClaim) (claimState, string) {
	owner := metav1.GetControllerOf(claim)
	switch {
	case owner != nil && owner.UID == ib.UID:
		if claim.DeletionTimestamp != nil {
			return claimGoing, ""
		}
		return claimOurs, ""
	case owner != nil && owner.Kind == "ImageBuild" && owner.APIVersion == v1alpha1.GroupVersion.String() && owner.Name == ib.Name:
		return claimGoing, ""
	case claim.DeletionTimestamp != nil:
		return claimGoing, ""
	case owner == nil:
		return claimForeign, "it has no controller"
	}
	return claimForeign, fmt.Sprintf("its controller is %s %s", owner.Kind, owner.Name)
}

// prepareCacheVolumes makes ready the claims of ib's cache volumes before its pods are
// created: each claim the spec asks for (cacheClaimNames) is made when missing
// (constructCacheClaim), asked to grow to spec.cache.volume.size when smaller (a Warning event
// CacheVolumeNotResized when that is refused, or when the spec asks for a smaller size or
// another class than the claim has: it is used as it is); the claims of ib the spec no longer
// asks for are deleted. It reports done when the pods must not be created now:
//   - a claim of that name that ib does not control: the build fails (phase Failed,
//     Ready=False and Stalled=True with reason CacheVolumeConflict, a Warning event, no
//     retry), and the claim is left as it is;
//   - a claim of that name being deleted (or of a deleted ImageBuild of the same name): phase
//     Pending, Ready=False and Reconciling=True with reason CacheVolumePending, until it is gone
//     (its deletion wakes ib: the manager watches the claims it made).
func (r *ImageBuildReconciler) prepareCacheVolumes(ctx context.Context, ib *v1alpha1.ImageBuild, now time.Time,
	evs *[]pendingEvent) (ctrl.Result, bool, error) {
	gen := ib.Generation
	if err := r.pruneCacheClaims(ctx, ib, evs); err != nil {
		return ctrl.Result{}, true, err
	}
	v := cacheVolumeSpec(ib)
	if v == nil {
		return ctrl.Result{}, false, nil
	}
	platforms := []string{""}
	if multiPlatform(ib) {
		platforms = ib.Spec.Platforms
	}
	for _, p := range platforms {
		want := constructCacheClaim(ib, p)
		claim, err := r.getOrCreateClaim(ctx, want)
		if err != nil {
			return ctrl.Result{}, true, err
		}
		if claim == nil {
			log.FromContext(ctx).Info("Created cache volume claim", "claim", klog.KObj(want))
			*evs = append(*evs, pendingEvent{typ: corev1.EventTypeNormal, reason: "CacheVolumeCreated", action: "Create",
				note: fmt.Sprintf("Created PersistentVolumeClaim %s (%s) for the build's cache volume", want.Name, v.Size.String())})
			continue
		}
		switch state, who := judgeClaim(ib, claim); state {
		case claimForeign:
			msg := fmt.Sprintf("PersistentVolumeClaim %s, the name of this ImageBuild's cache volume, exists and is not this ImageBuild's (%s): "+
				"it is never used or adopted; delete or rename it, or rename the ImageBuild, then rebuild", claim.Name, who)
			fail(&ib.Status, gen, v1alpha1.Failure{Reason: v1alpha1.ReasonCacheVolumeConflict, Message: msg}, result.Result{}, now)
			*evs = append(*evs, pendingEvent{typ: corev1.EventTypeWarning, reason: v1alpha1.ReasonCacheVolumeConflict, action: "Build", note: msg})
			return ctrl.Result{}, true, nil
		case claimGoing:
			msg := fmt.Sprintf("Waiting for PersistentVolumeClaim %s, of an earlier cache volume, to be deleted; a new one is made then", claim.Name)
			ib.Status.Phase = v1alpha1.PhasePending
			setCondition(&ib.Status, gen, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonCacheVolumePending, msg)
			setCondition(&ib.Status, gen, v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonCacheVolumePending, msg)
			// Its deletion wakes ib when the manager caches it (the claims it labels); a
			// claim of another's is not watched, so look again a little later.
			return ctrl.Result{RequeueAfter: claimGoingRecheck}, true, nil
		}
		if note := r.resizeClaim(ctx, claim, v); note != "" {
			*evs = append(*evs, pendingEvent{typ: corev1.EventTypeWarning, reason: v1alpha1.ReasonCacheVolumeNotResized, action: "Resize", note: note})
		}
	}
	return ctrl.Result{}, false, nil
}

// getOrCreateClaim returns the claim named as want, from the manager's cache (which holds the
// claims labelled as the manager's) or, when another has that name, from the API server; it
// creates want and returns nil when there is none.
func (r *ImageBuildReconciler) getOrCreateClaim(ctx context.Context, want *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	key := client.ObjectKeyFromObject(want)
	claim := &corev1.PersistentVolumeClaim{}
	err := r.Client.Get(ctx, key, claim)
	if err == nil {
		return claim, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("getting PersistentVolumeClaim %s: %w", want.Name, err)
	}
	err = r.Client.Create(ctx, want.DeepCopy())
	if err == nil {
		return nil, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating PersistentVolumeClaim %s: %w", want.Name, err)
	}
	// Not in the cache: someone else's, or one just made that the cache has not seen.
	if err := r.APIReader.Get(ctx, key, claim); err != nil {
		return nil, fmt.Errorf("getting PersistentVolumeClaim %s: %w", want.Name, err)
	}
	return claim, nil
}

// resizeClaim asks claim, of ib, to grow to v.size when its request is smaller; it returns
// what an event should say when the claim keeps a size or class other than v's ("" when
// none): the expansion was refused (the class does not allow it, the claim is not bound yet),
// v asks for less than the claim has (claims never shrink), or another class.
func (r *ImageBuildReconciler) resizeClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim, v *v1alpha1.CacheVolume) string {
	if v.StorageClassName != nil && (claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != *v.StorageClassName) {
		return fmt.Sprintf("PersistentVolumeClaim %s keeps its StorageClass %q: spec.cache.volume.storageClassName %q applies to a new claim "+
			"(delete this one to have it made with the next build)", claim.Name, ptr.Deref(claim.Spec.StorageClassName, ""), *v.StorageClassName)
	}
	have := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	switch have.Cmp(v.Size) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("PersistentVolumeClaim %s keeps its size %s: a claim cannot shrink to spec.cache.volume.size %s "+
			"(delete it to have a new one made with the next build)", claim.Name, have.String(), v.Size.String())
	}
	orig := claim.DeepCopy()
	if claim.Spec.Resources.Requests == nil {
		claim.Spec.Resources.Requests = corev1.ResourceList{}
	}
	claim.Spec.Resources.Requests[corev1.ResourceStorage] = v.Size
	if err := r.Client.Patch(ctx, claim, client.MergeFrom(orig)); err != nil {
		return fmt.Sprintf("PersistentVolumeClaim %s keeps its size %s: growing it to spec.cache.volume.size %s was refused: %s",
			claim.Name, have.String(), v.Size.String(), result.Excerpt(err.Error(), 512))
	}
	log.FromContext(ctx).Info("Asked cache volume claim to grow", "claim", klog.KObj(claim), "from", have.String(), "to", v.Size.String())
	return ""
}

// pruneCacheClaims deletes the claims of ib's cache volumes (those it controls, from the
// manager's cache) that its spec no longer asks for: spec.cache.volume removed, or a platform
// dropped. A claim still mounted by a pod is deleted once the pod is gone (the API server's
// claim protection).
func (r *ImageBuildReconciler) pruneCacheClaims(ctx context.Context, ib *v1alpha1.ImageBuild, evs *[]pendingEvent) error {
	var claims corev1.PersistentVolumeClaimList
	if err := r.Client.List(ctx, &claims, client.InNamespace(ib.Namespace),
		client.MatchingLabels{managedByLabel: managedByValue, v1alpha1.LabelImageBuild: ib.Name}); err != nil {
		return fmt.Errorf("listing cache volume claims: %w", err)
	}
	wanted := map[string]bool{}
	for _, n := range cacheClaimNames(ib) {
		wanted[n] = true
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		if wanted[c.Name] || !metav1.IsControlledBy(c, ib) || c.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, c, client.Preconditions{UID: &c.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting PersistentVolumeClaim %s: %w", c.Name, err)
		}
		*evs = append(*evs, pendingEvent{typ: corev1.EventTypeNormal, reason: "CacheVolumeDeleted", action: "Delete",
			note: fmt.Sprintf("Deleted PersistentVolumeClaim %s: spec.cache.volume no longer asks for it", c.Name)})
	}
	return nil
}
