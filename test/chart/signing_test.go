package chart

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
)

// signing.defaultSecret: the manager gets --default-signing-secret, knows its namespace from
// the pod (POD_NAMESPACE), and a Role in the release's namespace lets it get that one Secret
// and nothing else; nothing is rendered in any other namespace, and no Secret is. Without the
// value there is neither flag nor Role. The manager's image goes to --manager-image when the
// chart names it by digest.
func TestChart_template_signing(t *testing.T) {
	objs := render(t, "signing.defaultSecret=cosign-default")
	_, c := manager(t, objs)
	if !slices.Contains(c.Args, "--default-signing-secret=cosign-default") {
		t.Errorf("manager args %v lack --default-signing-secret=cosign-default", c.Args)
	}
	flags := mainFlags(t)
	for _, a := range c.Args {
		if !flags[flagName(a)] {
			t.Errorf("the chart passes %s, which main.go does not define", a)
		}
	}
	var podNS bool
	for _, e := range c.Env {
		podNS = podNS || e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "metadata.namespace"
	}
	if !podNS {
		t.Errorf("env %v lacks POD_NAMESPACE from metadata.namespace", c.Env)
	}

	role := decode[rbacv1.Role](t, objs, "Role/"+fullname+"-signing-key")
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"cosign-default"}, Verbs: []string{"get"}}}
	if diff := cmp.Diff(want, role.Rules); diff != "" || role.Namespace != namespace {
		t.Errorf("Role in %q, rules (-want +got):\n%s", role.Namespace, diff)
	}
	rb := decode[rbacv1.RoleBinding](t, objs, "RoleBinding/"+fullname+"-signing-key")
	if rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 || rb.Subjects[0].Name != fullname || rb.Subjects[0].Namespace != namespace {
		t.Errorf("RoleBinding %+v", rb)
	}
	for k, o := range objs {
		if o.Kind == "Secret" {
			t.Errorf("the chart renders %s: the key is the administrator's to create, in %s only", k, namespace)
		}
		if o.Metadata.Namespace != "" && o.Metadata.Namespace != namespace {
			t.Errorf("%s is in namespace %q", k, o.Metadata.Namespace)
		}
	}

	objs = render(t)
	_, c = manager(t, objs)
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--default-signing-secret") {
			t.Errorf("without signing.defaultSecret the chart passes %s", a)
		}
	}
	if _, ok := objs["Role/"+fullname+"-signing-key"]; ok {
		t.Error("without signing.defaultSecret the chart renders the signing key's Role")
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--manager-image") {
			t.Errorf("without image.digest the chart passes %s (the executor records only a reference with a digest)", a)
		}
	}

	// With the manager's digest, builds record it in their provenance.
	d := "sha256:" + strings.Repeat("c", 64)
	_, c = manager(t, render(t, "image.digest="+d))
	if !slices.Contains(c.Args, "--manager-image=slipway/manager@"+d) {
		t.Errorf("manager args %v lack --manager-image=slipway/manager@%s", c.Args, d)
	}
}
