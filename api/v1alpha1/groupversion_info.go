// Package v1alpha1 contains the v1alpha1 API of the build.slipway.dev group: ImageBuild, a
// container image built in the cluster from a git repository by an executor pod.
//
// +kubebuilder:object:generate=true
// +groupName=build.slipway.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the objects of this package.
	GroupVersion = schema.GroupVersion{Group: "build.slipway.dev", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this package to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
