// Command loadbench applies many small ImageBuilds at once to a cluster where
// Slipway's manager runs, watches them to the end, and reports what issue 13's
// load targets ask: all succeeded, none lost, no duplicate executor pods, the
// order builds left the queue in, apply→Running and apply→Succeeded times, the
// manager's peak resident memory and the API requests it made per build.
// hack/loadbench.sh (`make bench-load`) brings the cluster, the registry, the
// git server and the manager up and runs it; see that script for the set-up.
//
// Every build is the same tiny Dockerfile (the git repository -repo) with a
// unique build arg N that its RUN uses, so no build's RUN is served from a
// cache: each runs its RUN and pushes a layer of its own.
//
// It exits 1 when a target is missed: a build lost (not finished by the
// deadline) or failed, more than one pod for one generation and attempt, the
// manager's peak RSS at or above -max-rss-mb, or more than -max-requests-per-build
// API requests per build.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

type options struct {
	n            int
	gitURL       string
	base         string
	output       string
	metricsURL   string
	deadline     time.Duration
	maxRSSMB     float64
	maxReqPerBld float64
	resultPath   string
}

// build is what the harness saw of one ImageBuild, in the order they were created.
type build struct {
	name      string
	applied   time.Time // when its Create was sent
	created   bool
	started   time.Time // its first executor pod appeared (it left the queue)
	startSeq  int       // the order pods appeared in (1 for the first)
	running   time.Time // phase Running first seen
	runningBy string    // "watch", or "startTime" when Running was never seen
	finished  time.Time
	phase     v1alpha1.BuildPhase
	attempt   int32
	failure   string
}

type sample struct {
	rss       float64
	requests  float64
	byMethod  map[string]float64
	reconcile float64
	startTime float64
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 500, "ImageBuilds to apply")
	flag.StringVar(&o.gitURL, "repo", "", "the git repository of the Dockerfile, as pods reach it")
	flag.StringVar(&o.base, "base", "", "the base image (build arg BASE), as pods reach it")
	flag.StringVar(&o.output, "output", "", "the output repository, as pods reach it; build i pushes OUTPUT:b-i")
	flag.StringVar(&o.metricsURL, "metrics", "http://127.0.0.1:25080/metrics", "the manager's metrics endpoint")
	flag.DurationVar(&o.deadline, "deadline", 30*time.Minute, "how long to wait for every build to finish")
	flag.Float64Var(&o.maxRSSMB, "max-rss-mb", 200, "the manager's peak RSS must stay below this (MB)")
	flag.Float64Var(&o.maxReqPerBld, "max-requests-per-build", 30, "the manager's API requests per build must not exceed this")
	flag.StringVar(&o.resultPath, "result", "", "write the figures as JSON here")
	flag.Parse()
	if o.gitURL == "" || o.base == "" || o.output == "" {
		fmt.Fprintln(os.Stderr, "loadbench: -repo, -base and -output are required")
		os.Exit(2)
	}
	ok, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(o options) (bool, error) {
	// The informers' reflectors log when a watch ends and they watch again; what the harness
	// needs it sees through the informers, which relist on their own.
	log.SetLogger(logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return false, fmt.Errorf("kubeconfig: %w", err)
	}
	// Creating 500 objects "as fast as the API takes them": not client-go's 5 QPS default.
	cfg.QPS, cfg.Burst = 500, 1000
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return false, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return false, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return false, err
	}

	nonce := make([]byte, 3)
	_, _ = rand.Read(nonce)
	ns := "loadbench-" + hex.EncodeToString(nonce)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return false, fmt.Errorf("namespace: %w", err)
	}
	fmt.Printf("loadbench: namespace %s, %d ImageBuilds, deadline %s\n", ns, o.n, o.deadline)

	builds := make([]*build, o.n)
	index := map[string]int{}
	for i := range builds {
		builds[i] = &build{name: fmt.Sprintf("b-%04d", i)}
		index[builds[i].name] = i
	}

	// Watch the ImageBuilds and the executor pods of the namespace through informers, which
	// relist on their own if a watch breaks.
	informers, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return false, err
	}
	var mu sync.Mutex
	podUIDs := map[string]map[types.UID]string{} // build/generation/attempt -> pod UIDs -> name
	podsPerBuild := map[string]map[types.UID]bool{}
	seq := 0
	ibInf, err := informers.GetInformer(ctx, &v1alpha1.ImageBuild{})
	if err != nil {
		return false, err
	}
	podInf, err := informers.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return false, err
	}
	onIB := func(obj any) {
		ib, ok := obj.(*v1alpha1.ImageBuild)
		if !ok {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		i, ok := index[ib.Name]
		if !ok {
			return
		}
		b := builds[i]
		b.attempt = ib.Status.Attempt
		if ib.Status.Phase == v1alpha1.PhaseRunning && b.running.IsZero() {
			b.running, b.runningBy = now, "watch"
		}
		if ib.Status.Phase.Finished() && ib.Status.ObservedGeneration == ib.Generation && b.finished.IsZero() {
			b.finished, b.phase = now, ib.Status.Phase
			if b.running.IsZero() && ib.Status.StartTime != nil {
				b.running, b.runningBy = ib.Status.StartTime.Time, "startTime"
			}
			if ib.Status.Failure != nil {
				b.failure = string(ib.Status.Failure.Reason) + ": " + ib.Status.Failure.Message
			}
		}
	}
	onPod := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		l := p.Labels
		name := l[v1alpha1.LabelImageBuild]
		mu.Lock()
		defer mu.Unlock()
		i, ok := index[name]
		if !ok {
			return
		}
		key := name + "/" + l[v1alpha1.LabelGeneration] + "/" + l[v1alpha1.LabelAttempt]
		if podUIDs[key] == nil {
			podUIDs[key] = map[types.UID]string{}
		}
		podUIDs[key][p.UID] = p.Name
		if podsPerBuild[name] == nil {
			podsPerBuild[name] = map[types.UID]bool{}
		}
		podsPerBuild[name][p.UID] = true
		if b := builds[i]; b.started.IsZero() {
			seq++
			b.started, b.startSeq = now, seq
		}
	}
	if _, err := ibInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onIB, UpdateFunc: func(_, n any) { onIB(n) },
	}); err != nil {
		return false, err
	}
	if _, err := podInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) },
	}); err != nil {
		return false, err
	}
	go func() { _ = informers.Start(ctx) }()
	if !informers.WaitForCacheSync(ctx) {
		return false, fmt.Errorf("the informers did not sync")
	}

	// The manager's metrics, every second, from before the first build to after the last.
	var samples []sample
	var smu sync.Mutex
	scrapeErrs := 0
	first, err := scrape(o.metricsURL)
	if err != nil {
		return false, fmt.Errorf("the manager's metrics at %s: %w", o.metricsURL, err)
	}
	samples = append(samples, first)
	stopSampling := make(chan struct{})
	samplingDone := make(chan struct{})
	go func() {
		defer close(samplingDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
			s, err := scrape(o.metricsURL)
			smu.Lock()
			if err != nil {
				scrapeErrs++
			} else {
				samples = append(samples, s)
			}
			smu.Unlock()
		}
	}()

	// Apply them all, one after the other, as fast as the API takes them: their creation
	// order is their index order (the queue's order: creation time, then name).
	t0 := time.Now()
	for i, b := range builds {
		ib := &v1alpha1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: b.name, Namespace: ns},
			Spec: v1alpha1.ImageBuildSpec{
				Source: v1alpha1.Source{Git: v1alpha1.GitSource{URL: o.gitURL, Revision: "main"}},
				BuildArgs: []v1alpha1.BuildArg{
					{Name: "BASE", Value: ptr.To(o.base)},
					{Name: "N", Value: ptr.To(fmt.Sprintf("%s-%d", ns, i))},
				},
				Output:  v1alpha1.Output{Image: fmt.Sprintf("%s:%s", o.output, b.name), Insecure: true},
				Timeout: &metav1.Duration{Duration: 10 * time.Minute},
			},
		}
		mu.Lock()
		b.applied = time.Now()
		mu.Unlock()
		if err := c.Create(ctx, ib); err != nil {
			fmt.Fprintf(os.Stderr, "loadbench: creating %s: %v\n", b.name, err)
			continue
		}
		mu.Lock()
		b.created = true
		mu.Unlock()
	}
	applyTook := time.Since(t0)
	fmt.Printf("loadbench: applied %d ImageBuilds in %s\n", o.n, applyTook.Round(time.Millisecond))

	// Wait for every build to finish, or the deadline.
	deadline := t0.Add(o.deadline)
	lastReport := time.Now()
	for {
		mu.Lock()
		done, phases := 0, map[string]int{}
		for _, b := range builds {
			if !b.finished.IsZero() {
				done++
			}
		}
		mu.Unlock()
		if done == o.n || time.Now().After(deadline) {
			break
		}
		if time.Since(lastReport) >= 30*time.Second {
			var ibs v1alpha1.ImageBuildList
			if err := c.List(ctx, &ibs, client.InNamespace(ns)); err == nil {
				for _, ib := range ibs.Items {
					phases[string(ib.Status.Phase)]++
				}
			}
			fmt.Printf("loadbench: [%4.0f s] %d of %d finished; phases %v\n", time.Since(t0).Seconds(), done, o.n, phases)
			lastReport = time.Now()
		}
		time.Sleep(time.Second)
	}
	allDone := time.Since(t0)
	// The last status writes and events land after the last phase: a few more samples.
	time.Sleep(5 * time.Second)
	close(stopSampling)
	<-samplingDone
	cancel()

	return report(o, ns, builds, podUIDs, podsPerBuild, samples, scrapeErrs, applyTook, allDone), nil
}

type result struct {
	N                  int                `json:"n"`
	Namespace          string             `json:"namespace"`
	ApplySeconds       float64            `json:"applySeconds"`
	WallSeconds        float64            `json:"wallSeconds"`
	Succeeded          int                `json:"succeeded"`
	Failed             int                `json:"failed"`
	Lost               int                `json:"lost"`
	DuplicatePods      int                `json:"duplicatePods"`
	Retried            int                `json:"retried"`
	Overtakers         int                `json:"overtakers"`
	InversionPairs     int                `json:"inversionPairs"`
	MaxOvertake        int                `json:"maxOvertake"`
	ToRunning          map[string]float64 `json:"applyToRunningSeconds"`
	ToSucceeded        map[string]float64 `json:"applyToSucceededSeconds"`
	RunningByStartTime int                `json:"runningFromStartTime"`
	PeakRSSMB          float64            `json:"peakRSSMB"`
	Requests           float64            `json:"requests"`
	RequestsPerBuild   float64            `json:"requestsPerBuild"`
	RequestsByMethod   map[string]float64 `json:"requestsByMethod"`
	ReconcilesPerBuild float64            `json:"reconcilesPerBuild"`
	ManagerRestarts    int                `json:"managerRestarts"`
	Samples            int                `json:"samples"`
	ScrapeErrors       int                `json:"scrapeErrors"`
	Missed             []string           `json:"missed"`
}

func report(o options, ns string, builds []*build, podUIDs map[string]map[types.UID]string, podsPerBuild map[string]map[types.UID]bool,
	samples []sample, scrapeErrs int, applyTook, wall time.Duration) bool {
	r := result{N: o.n, Namespace: ns, ApplySeconds: applyTook.Seconds(), WallSeconds: wall.Seconds(),
		Samples: len(samples), ScrapeErrors: scrapeErrs, RequestsByMethod: map[string]float64{}}
	var toRunning, toSucceeded []float64
	var lost, failed []string
	for _, b := range builds {
		switch {
		case b.finished.IsZero():
			lost = append(lost, b.name)
		case b.phase == v1alpha1.PhaseSucceeded:
			r.Succeeded++
			toSucceeded = append(toSucceeded, b.finished.Sub(b.applied).Seconds())
		default:
			failed = append(failed, b.name+" ("+b.failure+")")
		}
		if !b.running.IsZero() {
			toRunning = append(toRunning, b.running.Sub(b.applied).Seconds())
			if b.runningBy == "startTime" {
				r.RunningByStartTime++
			}
		}
		if b.attempt > 1 || len(podsPerBuild[b.name]) > 1 {
			r.Retried++
		}
	}
	r.Failed, r.Lost = len(failed), len(lost)
	var dups []string
	for key, uids := range podUIDs {
		if len(uids) > 1 {
			r.DuplicatePods++
			var names []string
			for _, n := range uids {
				names = append(names, n)
			}
			dups = append(dups, fmt.Sprintf("%s: %d pods %v", key, len(uids), names))
		}
	}
	sort.Strings(dups)

	// Queue order: builds are indexed in creation order; a build "overtook" when it left the
	// queue (its first pod appeared) before an earlier-created build did.
	for j, b := range builds {
		if b.startSeq == 0 {
			continue
		}
		overtook := 0
		for i := 0; i < j; i++ {
			if a := builds[i]; a.startSeq == 0 || a.startSeq > b.startSeq {
				if a.created {
					overtook++
				}
			}
		}
		if overtook > 0 {
			r.Overtakers++
			r.InversionPairs += overtook
			if overtook > r.MaxOvertake {
				r.MaxOvertake = overtook
			}
		}
	}
	r.ToRunning = percentiles(toRunning)
	r.ToSucceeded = percentiles(toSucceeded)

	// Memory and requests. A manager restart resets its counters: sum each run's increase.
	if len(samples) > 0 {
		last := samples[0]
		base := samples[0]
		for _, s := range samples {
			r.PeakRSSMB = math.Max(r.PeakRSSMB, s.rss/1e6)
			if s.startTime != last.startTime {
				r.ManagerRestarts++
				r.Requests += last.requests - base.requests
				r.ReconcilesPerBuild += last.reconcile - base.reconcile
				addMethods(r.RequestsByMethod, last.byMethod, base.byMethod)
				base = sample{byMethod: map[string]float64{}, startTime: s.startTime}
			}
			last = s
		}
		r.Requests += last.requests - base.requests
		r.ReconcilesPerBuild += last.reconcile - base.reconcile
		addMethods(r.RequestsByMethod, last.byMethod, base.byMethod)
		r.RequestsPerBuild = r.Requests / float64(o.n)
		r.ReconcilesPerBuild /= float64(o.n)
	}

	if r.Lost > 0 {
		r.Missed = append(r.Missed, fmt.Sprintf("%d builds lost (not finished after %s): %s", r.Lost, o.deadline, head(lost, 10)))
	}
	if r.Failed > 0 {
		r.Missed = append(r.Missed, fmt.Sprintf("%d builds failed: %s", r.Failed, head(failed, 5)))
	}
	if r.DuplicatePods > 0 {
		r.Missed = append(r.Missed, fmt.Sprintf("%d generation/attempts with more than one pod: %s", r.DuplicatePods, head(dups, 10)))
	}
	if r.PeakRSSMB >= o.maxRSSMB {
		r.Missed = append(r.Missed, fmt.Sprintf("the manager's peak RSS %.1f MB is not under %.0f MB", r.PeakRSSMB, o.maxRSSMB))
	}
	if r.RequestsPerBuild > o.maxReqPerBld {
		r.Missed = append(r.Missed, fmt.Sprintf("%.1f API requests per build, above the bound %.0f (by method %v)", r.RequestsPerBuild, o.maxReqPerBld, r.RequestsByMethod))
	}
	if len(samples) < 2 {
		r.Missed = append(r.Missed, "the manager's metrics could not be sampled")
	}

	fmt.Printf("\n==> Load benchmark: %d ImageBuilds (namespace %s)\n", o.n, ns)
	row := func(k, v string) { fmt.Printf("  %-34s %s\n", k, v) }
	row("applied in", fmt.Sprintf("%.1f s", r.ApplySeconds))
	row("all finished after", fmt.Sprintf("%.0f s", r.WallSeconds))
	row("succeeded / failed / lost", fmt.Sprintf("%d / %d / %d", r.Succeeded, r.Failed, r.Lost))
	row("duplicate pods (gen+attempt)", strconv.Itoa(r.DuplicatePods))
	row("builds with more than one attempt", strconv.Itoa(r.Retried))
	row("queue: builds that overtook", fmt.Sprintf("%d (%d pairs out of order; at most %d earlier builds overtaken by one)", r.Overtakers, r.InversionPairs, r.MaxOvertake))
	row("apply→Running p50/p95/max", fmtP(r.ToRunning)+fmt.Sprintf(" (%d from status.startTime)", r.RunningByStartTime))
	row("apply→Succeeded p50/p95/max", fmtP(r.ToSucceeded))
	row("manager peak RSS", fmt.Sprintf("%.1f MB (%d samples, %d scrape errors, %d restarts)", r.PeakRSSMB, r.Samples, r.ScrapeErrors, r.ManagerRestarts))
	row("manager API requests", fmt.Sprintf("%.0f = %.1f per build (bound %.0f)", r.Requests, r.RequestsPerBuild, o.maxReqPerBld))
	row("  by method", fmtMethods(r.RequestsByMethod))
	row("manager reconciles per build", fmt.Sprintf("%.1f", r.ReconcilesPerBuild))
	if len(r.Missed) == 0 {
		fmt.Println("\nloadbench: every target met")
	} else {
		fmt.Println("\nloadbench: targets missed:")
		for _, m := range r.Missed {
			fmt.Println("  - " + m)
		}
	}
	if o.resultPath != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(o.resultPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "loadbench:", err)
		}
	}
	return len(r.Missed) == 0
}

func addMethods(dst, last, base map[string]float64) {
	for k, v := range last {
		dst[k] += v - base[k]
	}
}

func head(xs []string, n int) string {
	if len(xs) > n {
		return strings.Join(xs[:n], ", ") + fmt.Sprintf(", ... (%d more)", len(xs)-n)
	}
	return strings.Join(xs, ", ")
}

// percentiles: nearest-rank p50, p95 and the maximum.
func percentiles(xs []float64) map[string]float64 {
	if len(xs) == 0 {
		return nil
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(i, 0)]
	}
	return map[string]float64{"p50": rank(50), "p95": rank(95), "max": s[len(s)-1]}
}

func fmtP(p map[string]float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f s", p["p50"], p["p95"], p["max"])
}

func fmtMethods(m map[string]float64) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// scrape reads the figures it needs from the manager's Prometheus text: its resident memory,
// its start time, its client's requests (in all, and by method) and the imagebuild reconciles.
func scrape(url string) (sample, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sample{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	s := sample{byMethod: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		metric := line[:i]
		switch {
		case metric == "process_resident_memory_bytes":
			s.rss, seen = v, true
		case metric == "process_start_time_seconds":
			s.startTime = v
		case strings.HasPrefix(metric, "rest_client_requests_total{"):
			s.requests += v
			s.byMethod[label(metric, "method")] += v
		case strings.HasPrefix(metric, "controller_runtime_reconcile_total{") && strings.Contains(metric, `controller="imagebuild"`):
			s.reconcile += v
		}
	}
	if err := sc.Err(); err != nil {
		return sample{}, err
	}
	if !seen {
		return sample{}, fmt.Errorf("%s: no process_resident_memory_bytes", url)
	}
	return s, nil
}

func label(metric, name string) string {
	i := strings.Index(metric, name+`="`)
	if i < 0 {
		return ""
	}
	rest := metric[i+len(name)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return rest
}
