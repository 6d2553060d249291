package main

import (
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/slipway-dev/slipway/controllers"
)

// parseFlags parses args as the manager's command line, on a flag set of its own.
func parseFlags(t *testing.T, args ...string) (*flags, error) {
	t.Helper()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := bindFlags(fs)
	return f, fs.Parse(args)
}

var quantities = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

// defaultOptions are the options of a command line that sets only --executor-image=img.
func defaultOptions() controllers.Options {
	return controllers.Options{
		ExecutorImage:   "img",
		HostUsersMode:   controllers.HostUsersAuto,
		MaxRetries:      ptr.To[int32](3),
		RetryBackoff:    10 * time.Second,
		MaxRetryBackoff: 5 * time.Minute,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("500m"),
				corev1.ResourceMemory:           resource.MustParse("512Mi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("1Gi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("20Gi")},
		},
	}
}

func TestFlags_options(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(*controllers.Options)
	}{{
		name: "defaults",
		args: []string{"--executor-image=img"},
		want: func(*controllers.Options) {},
	}, {
		name: "--max-build-retries=0 means no retries",
		args: []string{"--executor-image=img", "--max-build-retries=0"},
		want: func(o *controllers.Options) { o.MaxRetries = ptr.To[int32](0) },
	}, {
		name: "every flag set",
		args: []string{
			"--executor-image=img", "--host-users=false", "--max-concurrent-builds=4",
			"--max-build-retries=7", "--build-retry-backoff=1s", "--max-build-retry-backoff=1m",
			"--executor-cpu-request=1", "--executor-memory-request=1Gi", "--executor-ephemeral-storage-request=2Gi",
			"--executor-cpu-limit=2", "--executor-memory-limit=3Gi", "--executor-ephemeral-storage-limit=5Gi",
			`--executor-node-selector={"pool":"builds"}`,
			`--executor-tolerations=[{"key":"builds","operator":"Exists","effect":"NoSchedule"}]`,
			"--cache-repository-prefix=*=registry.example.com/cache/{namespace}",
			"--cache-repository-prefix=team=registry.example.com/team",
			"--default-signing-secret=cosign-default", "--manager-namespace=slipway-system",
			"--manager-image=registry.example.com/slipway/manager@sha256:" + strings.Repeat("a", 64),
		},
		want: func(o *controllers.Options) {
			o.HostUsersMode = controllers.HostUsersFalse
			o.MaxConcurrentBuilds = 4
			o.MaxRetries = ptr.To[int32](7)
			o.RetryBackoff, o.MaxRetryBackoff = time.Second, time.Minute
			o.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:              resource.MustParse("1"),
					corev1.ResourceMemory:           resource.MustParse("1Gi"),
					corev1.ResourceEphemeralStorage: resource.MustParse("2Gi"),
				},
				Limits: corev1.ResourceList{
					corev1.ResourceCPU:              resource.MustParse("2"),
					corev1.ResourceMemory:           resource.MustParse("3Gi"),
					corev1.ResourceEphemeralStorage: resource.MustParse("5Gi"),
				},
			}
			o.NodeSelector = map[string]string{"pool": "builds"}
			o.Tolerations = []corev1.Toleration{{Key: "builds", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
			o.CacheRepositoryPrefixes = []controllers.CacheRepositoryPrefix{
				{Namespace: "*", Prefix: "registry.example.com/cache/{namespace}"},
				{Namespace: "team", Prefix: "registry.example.com/team"},
			}
			o.DefaultSigningSecret = types.NamespacedName{Namespace: "slipway-system", Name: "cosign-default"}
			o.ManagerImage = "registry.example.com/slipway/manager@sha256:" + strings.Repeat("a", 64)
		},
	}, {
		name: "the default signing key is in $POD_NAMESPACE without --manager-namespace",
		args: []string{"--executor-image=img", "--default-signing-secret=cosign"},
		want: func(o *controllers.Options) {
			o.DefaultSigningSecret = types.NamespacedName{Namespace: "from-env", Name: "cosign"}
		},
	}, {
		name: "empty quantities set no requests and no limits",
		args: []string{"--executor-image=img", "--executor-cpu-request=", "--executor-memory-request=",
			"--executor-ephemeral-storage-request=", "--executor-ephemeral-storage-limit="},
		want: func(o *controllers.Options) { o.Resources = corev1.ResourceRequirements{} },
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", "from-env")
			f, err := parseFlags(t, tc.args...)
			if err != nil {
				t.Fatalf("parsing %q: %v", tc.args, err)
			}
			got, err := f.options()
			if err != nil {
				t.Fatalf("options() of %q: %v", tc.args, err)
			}
			want := defaultOptions()
			tc.want(&want)
			if diff := cmp.Diff(want, got, quantities); diff != "" {
				t.Errorf("options() of %q (-want +got):\n%s", tc.args, diff)
			}
		})
	}
}

func TestFlags_options_invalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		// wantErr is in the error of the flag set's Parse, or of options.
		wantErr string
	}{
		{"no executor image", nil, "missing --executor-image"},
		{"unknown host-users mode", []string{"--executor-image=img", "--host-users=maybe"}, "--host-users=maybe"},
		{"negative retries", []string{"--executor-image=img", "--max-build-retries=-1"}, "--max-build-retries=-1"},
		{"retries beyond int32", []string{"--executor-image=img", "--max-build-retries=2147483648"}, "--max-build-retries=2147483648"},
		{"bad CPU request", []string{"--executor-image=img", "--executor-cpu-request=lots"}, "request of cpu"},
		{"bad memory limit", []string{"--executor-image=img", "--executor-memory-limit=1Gb"}, "limit of memory"},
		{"node selector not an object of strings", []string{"--executor-image=img", `--executor-node-selector={"a":1}`}, "--executor-node-selector"},
		{"tolerations not a list", []string{"--executor-image=img", `--executor-tolerations={}`}, "--executor-tolerations"},
		{"cache prefix without a namespace", []string{"--executor-image=img", "--cache-repository-prefix=registry.example.com/cache"}, "NAMESPACE=PREFIX"},
		{"a signing Secret name that is none", []string{"--executor-image=img", "--default-signing-secret=Cosign/Key", "--manager-namespace=x"},
			"--default-signing-secret=Cosign/Key"},
		{"a manager image without a digest", []string{"--executor-image=img", "--manager-image=slipway/manager:1"}, "--manager-image=slipway/manager:1"},
		{"a default signing key in no known namespace", []string{"--executor-image=img", "--default-signing-secret=cosign"},
			"the manager's namespace is unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", "")
			old := serviceAccountNamespace
			serviceAccountNamespace = filepath.Join(t.TempDir(), "none")
			t.Cleanup(func() { serviceAccountNamespace = old })
			f, err := parseFlags(t, tc.args...)
			if err == nil {
				_, err = f.options()
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("flags %q: got error %v, want one containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}

func TestBindFlags_manager(t *testing.T) {
	f, err := parseFlags(t, "--executor-image=img")
	if err != nil {
		t.Fatal(err)
	}
	want := managerFlags{metricsAddr: ":8080", probeAddr: ":8081", webhookAddr: ":8082"}
	if diff := cmp.Diff(want, f.manager, cmp.AllowUnexported(managerFlags{})); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	f, err = parseFlags(t, "--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:9000", "--webhook-bind-address=0",
		"--leader-elect", "--leader-election-namespace=slipway-system")
	if err != nil {
		t.Fatal(err)
	}
	want = managerFlags{metricsAddr: "0", probeAddr: "127.0.0.1:9000", webhookAddr: "0", leaderElect: true, leaderElectionNS: "slipway-system"}
	if diff := cmp.Diff(want, f.manager, cmp.AllowUnexported(managerFlags{})); diff != "" {
		t.Errorf("set (-want +got):\n%s", diff)
	}
}
