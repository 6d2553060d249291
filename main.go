// Command manager runs the Slipway controller manager: the ImageBuild controller.
package main

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2/textlogger"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers"
)

func main() {
	var (
		metricsAddr, probeAddr string
		leaderElect            bool
		leaderElectionNS       string
		opts                   controllers.Options
		cpu, memory            string
		cpuLimit, memoryLimit  string
		storage, storageLimit  string
		nodeSelector           string
		tolerations            string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 turns it off.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one of several replicas reconciles.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease; the manager's own when empty.")
	flag.StringVar(&opts.ExecutorImage, "executor-image", "", "Image of the executor pods, unless an ImageBuild sets spec.executorImage. Required.")
	hostUsers := "auto"
	flag.StringVar(&hostUsers, "host-users", hostUsers, "auto: executor pods run in their own user namespace (hostUsers: false) when every node they may run on reports support, else in the host's; true: always the host's; false: always their own (the nodes must support it).")
	flag.IntVar(&opts.MaxConcurrentBuilds, "max-concurrent-builds", 0, "Executor pods running at once in the cluster; more builds wait in phase Queued, oldest first. 0 means no bound.")
	var maxRetries int
	flag.IntVar(&maxRetries, "max-build-retries", 3, "Retries of a build whose pod was lost or whose push failed; 0 for none.")
	flag.DurationVar(&opts.RetryBackoff, "build-retry-backoff", 10*time.Second, "Wait before the first retry; doubled for each next one.")
	flag.DurationVar(&opts.MaxRetryBackoff, "max-build-retry-backoff", 5*time.Minute, "Longest wait between retries.")
	flag.StringVar(&cpu, "executor-cpu-request", "500m", "CPU request of executor pods without spec.resources.")
	flag.StringVar(&memory, "executor-memory-request", "512Mi", "Memory request of executor pods without spec.resources.")
	flag.StringVar(&cpuLimit, "executor-cpu-limit", "", "CPU limit of executor pods without spec.resources; none when empty.")
	flag.StringVar(&memoryLimit, "executor-memory-limit", "", "Memory limit of executor pods without spec.resources; none when empty.")
	flag.StringVar(&storage, "executor-ephemeral-storage-request", "1Gi", "Ephemeral storage request of executor pods without spec.resources (without it, the limit would be the request).")
	flag.StringVar(&storageLimit, "executor-ephemeral-storage-limit", "20Gi", "Ephemeral storage limit of executor pods (the kubelet evicts a build that writes more: a layer bomb fails as Evicted); applies also when spec.resources sets none; none when empty.")
	flag.StringVar(&nodeSelector, "executor-node-selector", "", `Node selector of executor pods whose ImageBuild sets none, as JSON: {"key":"value"}.`)
	flag.StringVar(&tolerations, "executor-tolerations", "", `Tolerations of executor pods whose ImageBuild sets none, as a JSON list of corev1 tolerations.`)
	flag.Func("cache-repository-prefix", "NAMESPACE=PREFIX (repeatable): the ImageBuilds of NAMESPACE (* for every namespace) may use cache repositories at or under PREFIX, where {namespace} stands for their namespace, e.g. '*=registry.example.com/cache/{namespace}'. Those under the output repository are always allowed; no other is.",
		func(s string) error {
			p, err := controllers.ParseCacheRepositoryPrefix(s)
			if err == nil {
				opts.CacheRepositoryPrefixes = append(opts.CacheRepositoryPrefixes, p)
			}
			return err
		})
	logConfig := textlogger.NewConfig()
	logConfig.AddFlags(flag.CommandLine)
	flag.Parse()
	opts.MaxRetries = ptr.To(int32(maxRetries))

	ctrl.SetLogger(textlogger.NewLogger(logConfig))
	setupLog := ctrl.Log.WithName("setup")

	mode, err := controllers.ParseHostUsersMode(hostUsers)
	if err != nil {
		setupLog.Error(err, "Invalid --host-users")
		os.Exit(2)
	}
	opts.HostUsersMode = mode
	if maxRetries < 0 || maxRetries > math.MaxInt32 {
		setupLog.Error(nil, "Invalid --max-build-retries: want 0 (no retries) or more", "value", maxRetries)
		os.Exit(2)
	}

	if opts.ExecutorImage == "" {
		setupLog.Error(nil, "Missing --executor-image")
		os.Exit(2)
	}
	for name, q := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory, corev1.ResourceEphemeralStorage: storage} {
		if q == "" {
			continue
		}
		v, err := resource.ParseQuantity(q)
		if err != nil {
			setupLog.Error(err, "Invalid executor resource request", "resource", name)
			os.Exit(2)
		}
		if opts.Resources.Requests == nil {
			opts.Resources.Requests = corev1.ResourceList{}
		}
		opts.Resources.Requests[name] = v
	}
	for name, q := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpuLimit, corev1.ResourceMemory: memoryLimit, corev1.ResourceEphemeralStorage: storageLimit} {
		if q == "" {
			continue
		}
		v, err := resource.ParseQuantity(q)
		if err != nil {
			setupLog.Error(err, "Invalid executor resource limit", "resource", name)
			os.Exit(2)
		}
		if opts.Resources.Limits == nil {
			opts.Resources.Limits = corev1.ResourceList{}
		}
		opts.Resources.Limits[name] = v
	}
	if nodeSelector != "" {
		if err := json.Unmarshal([]byte(nodeSelector), &opts.NodeSelector); err != nil {
			setupLog.Error(err, "Invalid --executor-node-selector: want a JSON object of strings")
			os.Exit(2)
		}
	}
	if tolerations != "" {
		if err := json.Unmarshal([]byte(tolerations), &opts.Tolerations); err != nil {
			setupLog.Error(err, "Invalid --executor-tolerations: want a JSON list of tolerations")
			os.Exit(2)
		}
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		setupLog.Error(err, "Could not build the scheme")
		os.Exit(1)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		setupLog.Error(err, "Could not build the scheme")
		os.Exit(1)
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "manager.build.slipway.dev",
		LeaderElectionNamespace:       leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
	})
	if err != nil {
		setupLog.Error(err, "Could not create the manager")
		os.Exit(1)
	}

	r := &controllers.ImageBuildReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("slipway-controller"),
		Clock:     clock.RealClock{},
		Options:   opts,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "Could not set up the ImageBuild controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Could not add the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "Could not add the readiness check")
		os.Exit(1)
	}

	setupLog.Info("Starting the manager", "executorImage", opts.ExecutorImage,
		"maxConcurrentBuilds", opts.MaxConcurrentBuilds, "hostUsers", opts.HostUsersMode)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "Manager stopped")
		os.Exit(1)
	}
}
