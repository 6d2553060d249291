// Command manager runs the Slipway controller manager: the ImageBuild controller.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/slipway-dev/slipway/api/v1alpha1"
	"github.com/slipway-dev/slipway/controllers"
)

// main reads the flags into the controller's options (exit status 2 when they are wrong),
// creates the manager, sets up the ImageBuild controller and the health checks on it
// (exit status 1 when that fails), and runs until a signal stops it.
func main() {
	f := bindFlags(flag.CommandLine)
	logConfig := textlogger.NewConfig()
	logConfig.AddFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(textlogger.NewLogger(logConfig))
	setupLog := ctrl.Log.WithName("setup")

	opts, err := f.options()
	if err != nil {
		setupLog.Error(err, "Invalid flags")
		os.Exit(2)
	}
	mgr, err := newManager(ctrl.GetConfigOrDie(), f.manager)
	if err != nil {
		setupLog.Error(err, "Could not create the manager")
		os.Exit(1)
	}
	if err := setupControllers(mgr, opts, f.manager.webhookAddr); err != nil {
		setupLog.Error(err, "Could not set up the manager")
		os.Exit(1)
	}

	setupLog.Info("Starting the manager", "executorImage", opts.ExecutorImage,
		"maxConcurrentBuilds", opts.MaxConcurrentBuilds, "hostUsers", opts.HostUsersMode,
		"defaultSigningSecret", opts.DefaultSigningSecret.String())
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

// managerFlags are the flags of the manager itself: its endpoints and leader election.
type managerFlags struct {
	metricsAddr, probeAddr string
	webhookAddr            string
	leaderElect            bool
	leaderElectionNS       string
}

// flags are the command line as given, before options checks and converts it.
type flags struct {
	manager managerFlags
	// opts holds the flags that need no conversion (the executor image, the bound on
	// concurrent builds, the retry backoffs, the cache repository prefixes).
	opts       controllers.Options
	hostUsers  string
	maxRetries int
	// requests and limits of executor pods without spec.resources, as quantities; empty
	// for none.
	requests, limits resourceFlags
	// nodeSelector and tolerations of executor pods whose ImageBuild sets none, as JSON.
	nodeSelector, tolerations string
	// defaultSigningSecret names the Secret of the manager's namespace (managerNamespace)
	// with the default signing key; empty for none.
	defaultSigningSecret, managerNamespace string
}

// resourceFlags are the quantities of the executor's resources, by resource.
type resourceFlags struct{ cpu, memory, storage string }

// bindFlags defines the manager's flags, with their defaults, on fs.
func bindFlags(fs *flag.FlagSet) *flags {
	f := &flags{}
	fs.StringVar(&f.manager.metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 turns it off.")
	fs.StringVar(&f.manager.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	fs.StringVar(&f.manager.webhookAddr, "webhook-bind-address", ":8082", "Address of the git webhook receiver (/hooks/<namespace>/<name>); 0 turns it off.")
	fs.BoolVar(&f.manager.leaderElect, "leader-elect", false, "Elect a leader, so that only one of several replicas reconciles.")
	fs.StringVar(&f.manager.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease; the manager's own when empty.")
	fs.StringVar(&f.opts.ExecutorImage, "executor-image", "", "Image of the executor pods, unless an ImageBuild sets spec.executorImage. Required.")
	fs.StringVar(&f.hostUsers, "host-users", "auto", "auto: executor pods run in their own user namespace (hostUsers: false) when every node they may run on reports support, else in the host's; true: always the host's; false: always their own (the nodes must support it).")
	fs.IntVar(&f.opts.MaxConcurrentBuilds, "max-concurrent-builds", 0, "Executor pods running at once in the cluster; more builds wait in phase Queued, oldest first. 0 means no bound.")
	fs.IntVar(&f.maxRetries, "max-build-retries", 3, "Retries of a build whose pod was lost or killed or whose push failed, unless its spec.retry.limit says otherwise; 0 for none.")
	fs.DurationVar(&f.opts.RetryBackoff, "build-retry-backoff", 10*time.Second, "Wait before the first retry; doubled for each next one.")
	fs.DurationVar(&f.opts.MaxRetryBackoff, "max-build-retry-backoff", 5*time.Minute, "Longest wait between retries.")
	fs.DurationVar(&f.opts.BaseImageInterval, "base-image-check-interval", 0, "How often the base images of ImageBuilds with triggers.baseImages are checked (a HEAD request each); 0: their source.git.interval, or an hour.")
	fs.StringVar(&f.requests.cpu, "executor-cpu-request", "500m", "CPU request of executor pods without spec.resources.")
	fs.StringVar(&f.requests.memory, "executor-memory-request", "512Mi", "Memory request of executor pods without spec.resources.")
	fs.StringVar(&f.limits.cpu, "executor-cpu-limit", "", "CPU limit of executor pods without spec.resources; none when empty.")
	fs.StringVar(&f.limits.memory, "executor-memory-limit", "", "Memory limit of executor pods without spec.resources; none when empty.")
	fs.StringVar(&f.requests.storage, "executor-ephemeral-storage-request", "1Gi", "Ephemeral storage request of executor pods without spec.resources (without it, the limit would be the request).")
	fs.StringVar(&f.limits.storage, "executor-ephemeral-storage-limit", "20Gi", "Ephemeral storage limit of executor pods (the kubelet evicts a build that writes more: a layer bomb fails as Evicted); applies also when spec.resources sets none; none when empty.")
	fs.StringVar(&f.nodeSelector, "executor-node-selector", "", `Node selector of executor pods whose ImageBuild sets none, as JSON: {"key":"value"}.`)
	fs.StringVar(&f.tolerations, "executor-tolerations", "", `Tolerations of executor pods whose ImageBuild sets none, as a JSON list of corev1 tolerations.`)
	fs.StringVar(&f.defaultSigningSecret, "default-signing-secret", "", "Name of a Secret of the manager's own namespace with keys cosign.key (cosign's encrypted private key) and cosign.password: the manager signs with it the builds of ImageBuilds without spec.signing, in every namespace. It is read in the manager's namespace only and never copied elsewhere. Empty: such builds are not signed.")
	fs.StringVar(&f.managerNamespace, "manager-namespace", "", "The manager's own namespace, where --default-signing-secret is: $POD_NAMESPACE when empty, else the namespace of the pod's service account.")
	fs.StringVar(&f.opts.ManagerImage, "manager-image", "", "The manager's own image with its digest (repo@sha256:...): executor pods record it in their provenance as a dependency of the builder (--builder-dependency). Empty: not recorded.")
	fs.Func("cache-repository-prefix", "NAMESPACE=PREFIX (repeatable): the ImageBuilds of NAMESPACE (* for every namespace) may use cache repositories at or under PREFIX, where {namespace} stands for their namespace, e.g. '*=registry.example.com/cache/{namespace}'. Those under the output repository are always allowed; no other is.",
		func(s string) error {
			p, err := controllers.ParseCacheRepositoryPrefix(s)
			if err == nil {
				f.opts.CacheRepositoryPrefixes = append(f.opts.CacheRepositoryPrefixes, p)
			}
			return err
		})
	return f
}

// options checks the parsed flags and returns the controller's options; the error names the
// flag that is wrong.
func (f *flags) options() (controllers.Options, error) {
	opts := f.opts
	mode, err := controllers.ParseHostUsersMode(f.hostUsers) // its error names the flag
	if err != nil {
		return opts, err
	}
	opts.HostUsersMode = mode
	if f.maxRetries < 0 || f.maxRetries > math.MaxInt32 {
		return opts, fmt.Errorf("invalid --max-build-retries=%d: want 0 (no retries) or more", f.maxRetries)
	}
	opts.MaxRetries = ptr.To(int32(f.maxRetries))
	if opts.ExecutorImage == "" {
		return opts, errors.New("missing --executor-image")
	}
	if opts.Resources.Requests, err = f.requests.list("request"); err != nil {
		return opts, err
	}
	if opts.Resources.Limits, err = f.limits.list("limit"); err != nil {
		return opts, err
	}
	if f.nodeSelector != "" {
		if err := json.Unmarshal([]byte(f.nodeSelector), &opts.NodeSelector); err != nil {
			return opts, fmt.Errorf("invalid --executor-node-selector: want a JSON object of strings: %w", err)
		}
	}
	if f.tolerations != "" {
		if err := json.Unmarshal([]byte(f.tolerations), &opts.Tolerations); err != nil {
			return opts, fmt.Errorf("invalid --executor-tolerations: want a JSON list of tolerations: %w", err)
		}
	}
	if img := opts.ManagerImage; img != "" {
		if _, d, ok := strings.Cut(img, "@"); !ok || !sha256Digest.MatchString(d) {
			return opts, fmt.Errorf("invalid --manager-image=%s: want the image's reference with its digest (repo@sha256:...)", img)
		}
	}
	if name := f.defaultSigningSecret; name != "" {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return opts, fmt.Errorf("invalid --default-signing-secret=%s: want the name of a Secret: %s", name, strings.Join(errs, "; "))
		}
		ns, err := managerNamespace(f.managerNamespace)
		if err != nil {
			return opts, fmt.Errorf("--default-signing-secret=%s: %w", name, err)
		}
		opts.DefaultSigningSecret = types.NamespacedName{Namespace: ns, Name: name}
	}
	return opts, nil
}

// sha256Digest is a digest as --manager-image must end with.
var sha256Digest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// serviceAccountNamespace is where the kubelet writes the namespace of a pod's service account.
var serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// managerNamespace is the manager's namespace: flag, else $POD_NAMESPACE (the chart sets it
// from the pod's metadata), else its service account's.
func managerNamespace(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns, nil
	}
	b, err := os.ReadFile(serviceAccountNamespace)
	if ns := strings.TrimSpace(string(b)); err == nil && ns != "" {
		return ns, nil
	}
	return "", errors.New("the manager's namespace is unknown: set --manager-namespace or $POD_NAMESPACE")
}

// list parses the quantities that are set; nil when none is. kind ("request" or "limit")
// names them in the error.
func (r resourceFlags) list(kind string) (corev1.ResourceList, error) {
	var list corev1.ResourceList
	for _, q := range []struct {
		name  corev1.ResourceName
		value string
	}{{corev1.ResourceCPU, r.cpu}, {corev1.ResourceMemory, r.memory}, {corev1.ResourceEphemeralStorage, r.storage}} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return nil, fmt.Errorf("invalid executor resource %s of %s: %w", kind, q.name, err)
		}
		if list == nil {
			list = corev1.ResourceList{}
		}
		list[q.name] = v
	}
	return list, nil
}

// newManager creates the controller manager: a scheme of the built-in types and ours, the
// metrics and probe endpoints, leader election, and a cache of only what the controller
// watches (controllers.CacheOptions).
func newManager(cfg *rest.Config, f managerFlags) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	return ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:        f.probeAddr,
		LeaderElection:                f.leaderElect,
		LeaderElectionID:              "manager.build.slipway.dev",
		LeaderElectionNamespace:       f.leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
	})
}

// setupControllers adds the ImageBuild controller, with opts, the git webhook receiver on
// webhookAddr (none when "0" or empty), and the /healthz and /readyz checks to mgr.
func setupControllers(mgr manager.Manager, opts controllers.Options, webhookAddr string) error {
	r := &controllers.ImageBuildReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("slipway-controller"),
		Clock:     clock.RealClock{},
		Options:   opts,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ImageBuild controller: %w", err)
	}
	if webhookAddr != "" && webhookAddr != "0" {
		w := &controllers.WebhookReceiver{Addr: webhookAddr, Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
			Log: ctrl.Log.WithName("webhook")}
		if err := mgr.Add(w); err != nil {
			return fmt.Errorf("adding the webhook receiver: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	return nil
}
