package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/slipway-dev/slipway/api/v1alpha1"
)

// buildMetrics are the controller's metrics on the manager's metrics endpoint
// (controller-runtime's registry).
type buildMetrics struct {
	started     *prometheus.CounterVec
	builds      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
}

// registerMetrics registers the metrics once per process; a second call (a second manager in
// the same process, as in tests) gets the same counters and a collector of the new cache.
func registerMetrics(c client.Reader) (*buildMetrics, error) {
	m := &buildMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_builds_started_total",
			Help: "Image builds started, by cause (Created, SpecChanged, Manual, Commit, Webhook, BaseImage).",
		}, []string{"cause"}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_builds_total",
			Help: "Finished image builds, by result (succeeded, failed) and reason.",
		}, []string{"result", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "slipway_build_duration_seconds",
			Help:    "Duration of finished image builds, from the executor's start to its end.",
			Buckets: []float64{5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600},
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slipway_build_cache_hits_total",
			Help: "Layer cache hits of succeeded builds.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slipway_build_cache_misses_total",
			Help: "Layer cache misses of succeeded builds.",
		}),
	}
	var err error
	m.started = register(m.started, &err)
	m.builds = register(m.builds, &err)
	m.duration = register(m.duration, &err)
	m.cacheHits = register(m.cacheHits, &err)
	m.cacheMisses = register(m.cacheMisses, &err)
	phases.set(c)
	_ = register[prometheus.Collector](phases, &err)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under its name.
func register[C prometheus.Collector](c C, errp *error) C {
	err := metrics.Registry.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil && *errp == nil {
		*errp = err
	}
	return c
}

// startedBuild records a build that just started.
func (m *buildMetrics) startedBuild(cause v1alpha1.BuildCause) {
	if m == nil {
		return
	}
	m.started.WithLabelValues(string(cause)).Inc()
}

// finished records a build that just ended.
func (m *buildMetrics) finished(st *v1alpha1.ImageBuildStatus) {
	if m == nil {
		return
	}
	res, reason := "succeeded", v1alpha1.ReasonSucceeded
	if st.Phase == v1alpha1.PhaseFailed {
		res = "failed"
		if st.Failure != nil {
			reason = st.Failure.Reason
		}
	}
	m.builds.WithLabelValues(res, reason).Inc()
	if st.StartTime != nil && st.CompletionTime != nil {
		m.duration.WithLabelValues(res).Observe(st.CompletionTime.Sub(st.StartTime.Time).Seconds())
	}
	if st.Cache != nil {
		m.cacheHits.Add(float64(st.Cache.Hits))
		m.cacheMisses.Add(float64(st.Cache.Misses))
	}
}

// phases is the process's gauge collector of running and queued builds.
var phases = &phaseCollector{
	running: prometheus.NewDesc("slipway_builds_running", "ImageBuilds whose executor pod exists and has not ended (phases Pending with a pod, and Running).", nil, nil),
	queued:  prometheus.NewDesc("slipway_builds_queued", "ImageBuilds waiting for a build slot (phase Queued).", nil, nil),
}

// phaseCollector counts ImageBuilds by phase from the cache when scraped, so the gauges never
// drift from what the API server holds.
type phaseCollector struct {
	running, queued *prometheus.Desc

	mu     sync.Mutex
	reader client.Reader
}

// set makes the collector count from c, the cache of the latest manager.
func (p *phaseCollector) set(c client.Reader) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reader = c
}

func (p *phaseCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.running
	ch <- p.queued
}

func (p *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	reader := p.reader
	p.mu.Unlock()
	if reader == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ibs v1alpha1.ImageBuildList
	if err := reader.List(ctx, &ibs); err != nil {
		return
	}
	var running, queued float64
	for i := range ibs.Items {
		st := &ibs.Items[i].Status
		switch {
		case st.Phase == v1alpha1.PhaseQueued:
			queued++
		case st.Phase == v1alpha1.PhaseRunning,
			st.Phase == v1alpha1.PhasePending && hasPods(st) && st.NextRetryTime == nil:
			running++
		}
	}
	ch <- prometheus.MustNewConstMetric(p.running, prometheus.GaugeValue, running)
	ch <- prometheus.MustNewConstMetric(p.queued, prometheus.GaugeValue, queued)
}
