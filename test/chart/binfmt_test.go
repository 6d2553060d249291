package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const binfmtKey = "DaemonSet/" + fullname + "-binfmt"

// podSpecs returns the pod templates of every rendered workload, by "Kind/name".
func podSpecs(t *testing.T, objs map[string]object) map[string]corev1.PodSpec {
	t.Helper()
	specs := map[string]corev1.PodSpec{}
	for k, o := range objs {
		switch o.Kind {
		case "Deployment":
			specs[k] = decode[appsv1.Deployment](t, objs, k).Spec.Template.Spec
		case "DaemonSet":
			specs[k] = decode[appsv1.DaemonSet](t, objs, k).Spec.Template.Spec
		case "StatefulSet", "Job", "CronJob", "Pod", "ReplicaSet":
			t.Fatalf("%s: a workload kind this test does not check", k)
		}
	}
	return specs
}

// privileged lists "Kind/name/container" for every container that is privileged, may gain
// privileges, runs as root or adds capabilities, and every pod that shares a host namespace or
// mounts a host path.
func privileged(specs map[string]corev1.PodSpec) []string {
	var out []string
	for k, s := range specs {
		if s.HostPID || s.HostIPC || s.HostNetwork {
			out = append(out, k+": host namespace")
		}
		for _, v := range s.Volumes {
			if v.HostPath != nil {
				out = append(out, k+": hostPath "+v.Name)
			}
		}
		for _, c := range append(slices.Clone(s.InitContainers), s.Containers...) {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				out = append(out, k+"/"+c.Name+": no securityContext")
			case sc.Privileged != nil && *sc.Privileged:
				out = append(out, k+"/"+c.Name+": privileged")
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				out = append(out, k+"/"+c.Name+": may gain privileges")
			case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
				out = append(out, k+"/"+c.Name+": capabilities")
			case sc.RunAsUser != nil && *sc.RunAsUser == 0:
				out = append(out, k+"/"+c.Name+": root")
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestChart_binfmt_offByDefault(t *testing.T) {
	objs := render(t)
	if _, ok := objs[binfmtKey]; ok {
		t.Errorf("%s rendered with the default values", binfmtKey)
	}
	if got := privileged(podSpecs(t, objs)); len(got) > 0 {
		t.Errorf("privileged parts with the default values: %q", got)
	}
	if notes := renderNotesWith(t); strings.Contains(notes, "binfmt") {
		t.Errorf("NOTES mention binfmt with it off:\n%s", notes)
	}
}

func TestChart_binfmt_enabled(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	set := []string{"binfmt.enabled=true", "binfmt.platforms={arm64,riscv64,linux/arm/v6}",
		"binfmt.image.repository=registry.example/slipway/binfmt", "binfmt.image.digest=" + digest}
	objs := render(t, set...)
	ds := decode[appsv1.DaemonSet](t, objs, binfmtKey)
	if ds.Namespace != namespace {
		t.Errorf("namespace %q, want %q", ds.Namespace, namespace)
	}
	spec := ds.Spec.Template.Spec

	// The only privileged container of the chart is the DaemonSet's init container.
	if diff := cmp.Diff([]string{binfmtKey + "/register: privileged"}, privileged(podSpecs(t, objs))); diff != "" {
		t.Errorf("privileged parts (-want +got):\n%s", diff)
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("%d init containers and %d containers, want 1 and 1", len(spec.InitContainers), len(spec.Containers))
	}
	reg, pause := spec.InitContainers[0], spec.Containers[0]
	image := "registry.example/slipway/binfmt@" + digest
	if reg.Image != image || pause.Image != image {
		t.Errorf("images %q and %q, want %q", reg.Image, pause.Image, image)
	}
	if diff := cmp.Diff([]string{"--platforms=arm64,riscv64,linux/arm/v6"}, reg.Args); diff != "" {
		t.Errorf("register args (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"--pause"}, pause.Args); diff != "" {
		t.Errorf("pause args (-want +got):\n%s", diff)
	}
	flags := binfmtFlags(t)
	for _, a := range append(slices.Clone(reg.Args), pause.Args...) {
		if !flags[flagName(a)] {
			t.Errorf("the chart passes %s, which cmd/slipway-binfmt does not define", a)
		}
	}
	if sc := reg.SecurityContext; sc.RunAsUser == nil || *sc.RunAsUser != 0 || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("register security context %+v, want privileged root with a read-only root file system", sc)
	}
	sc := pause.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65534 || !*sc.ReadOnlyRootFilesystem ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pause security context %+v, want non-root 65534, read-only root, seccomp RuntimeDefault", sc)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the binfmt pods mount a service account token")
	}
	if len(spec.Volumes) > 0 {
		t.Errorf("volumes %+v, want none", spec.Volumes)
	}
	if diff := cmp.Diff(map[string]string{"kubernetes.io/arch": "amd64"}, spec.NodeSelector); diff != "" {
		t.Errorf("node selector (-want +got):\n%s", diff)
	}

	// Its pods are not the manager's: neither the Deployment nor the Services select them.
	d, _ := manager(t, objs)
	labels := ds.Spec.Template.Labels
	for k, v := range ds.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("the DaemonSet's selector %s=%s does not match its pods", k, v)
		}
	}
	selects := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	if selects(d.Spec.Selector.MatchLabels) {
		t.Error("the manager Deployment's selector matches the binfmt pods")
	}
	for _, k := range []string{"Service/" + fullname + "-metrics", "Service/" + fullname + "-webhooks"} {
		if selects(decode[corev1.Service](t, objs, k).Spec.Selector) {
			t.Errorf("%s selects the binfmt pods", k)
		}
	}

	notes := renderNotesWith(t, set...)
	for _, want := range []string{"DaemonSet " + fullname + "-binfmt registers QEMU for arm64, riscv64, linux/arm/v6",
		"kubernetes.io/arch=amd64", "only privileged part of Slipway", "affects EVERY pod", "Build pods stay unprivileged"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES do not say %q:\n%s", want, notes)
		}
	}

	out, stderr, err := runHelm(t, "lint", "--strict", chartDir, "--namespace", namespace, "--set", "binfmt.enabled=true", "--set", "binfmt.image.digest="+digest)
	if err != nil {
		t.Errorf("helm lint with binfmt.enabled: %v\n%s%s", err, out, stderr)
	}
}

func TestChart_binfmt_refusals(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"binfmt.enabled=true", "binfmt.platforms=null"}, "binfmt.enabled needs binfmt.platforms"},
		{[]string{"binfmt.enabled=true", "binfmt.platforms={arm64,--uninstall}"}, `binfmt.platforms: "--uninstall" is not an architecture`},
		{[]string{"binfmt.enabled=true", "binfmt.platforms={arm64 riscv64}"}, `binfmt.platforms: "arm64 riscv64" is not an architecture`},
		{[]string{"binfmt.enabled=true", "binfmt.image.digest=latest"}, `image digest "latest": want sha256:<hex>`},
		// review15: the only privileged container must not run a mutable tag by default.
		{[]string{"binfmt.enabled=true"}, "binfmt.enabled needs binfmt.image.digest"},
		{[]string{"binfmt.enabled=true", "binfmt.image.tag=v1", "binfmt.image.allowTag=false"}, "binfmt.enabled needs binfmt.image.digest"},
	} {
		args := []string{"template", release, chartDir, "--namespace", namespace}
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		_, stderr, err := runHelm(t, args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("helm template --set %s: %v, stderr %q; want it to say %q", strings.Join(tc.set, " --set "), err, stderr, tc.want)
		}
	}
}

// binfmt.image.allowTag=true runs the DaemonSet's image by tag (appVersion by default), as an
// explicit choice; a digest still wins over the tag.
func TestChart_binfmt_allowTag(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"binfmt.image.allowTag=true"}, "slipway/binfmt:" + appVersion(t)},
		{[]string{"binfmt.image.allowTag=true", "binfmt.image.tag=v2"}, "slipway/binfmt:v2"},
		{[]string{"binfmt.image.allowTag=true", "binfmt.image.digest=sha256:" + strings.Repeat("cd", 32)}, "slipway/binfmt@sha256:" + strings.Repeat("cd", 32)},
	} {
		objs := render(t, append([]string{"binfmt.enabled=true"}, tc.set...)...)
		spec := decode[appsv1.DaemonSet](t, objs, binfmtKey).Spec.Template.Spec
		if got := spec.InitContainers[0].Image; got != tc.want {
			t.Errorf("--set %s: register image %q, want %q", strings.Join(tc.set, " --set "), got, tc.want)
		}
	}
}

// appVersion is the chart's appVersion.
func appVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %q, %v", c.AppVersion, err)
	}
	return c.AppVersion
}

// The chart README says what the values comments say about the DaemonSet.
func TestChart_binfmt_documented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"only privileged part of Slipway", "off by default", "tonistiigi/binfmt", "every pod", "--uninstall", "F (fix-binary)",
		"pinned by digest", "binfmt.image.allowTag=true"} {
		if !strings.Contains(strings.ToLower(string(readme)), strings.ToLower(want)) {
			t.Errorf("charts/slipway/README.md does not say %q", want)
		}
	}
	for _, want := range []string{"ONLY PRIVILEGED PART OF SLIPWAY", "OFF BY DEFAULT", "tonistiigi/binfmt", "EVERY pod", "REQUIRES digest", "allowTag: false"} {
		if !strings.Contains(string(values), want) {
			t.Errorf("values.yaml's binfmt comment does not say %q", want)
		}
	}
}

// binfmtFlags are the flags cmd/slipway-binfmt defines.
func binfmtFlags(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "cmd", "slipway-binfmt", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`\b\w+\.\w+Var\([^,]+,\s*"([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		flags[m[1]] = true
	}
	return flags
}

// renderNotesWith renders templates/NOTES.txt with values set, as renderNotes does with the
// defaults.
func renderNotesWith(t *testing.T, set ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "slipway")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.in"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl := `notes: {{ tpl (.Files.Get "notes.in") . | toJson }}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-test.yaml"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"template", release, dir, "--namespace", namespace, "--show-only", "templates/notes-test.yaml"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, stderr, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("rendering NOTES.txt: %v\n%s", err, stderr)
	}
	var v struct {
		Notes string `json:"notes"`
	}
	if err := yaml.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("parsing the rendered NOTES: %v\n%s", err, out)
	}
	return v.Notes
}
