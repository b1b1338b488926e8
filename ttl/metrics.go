package ttl

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/detector"
)

const namespace = "tasker_sidecar_cache"

type metrics struct {
	hits        *prometheus.CounterVec
	misses      *prometheus.CounterVec
	coalesced   *prometheus.CounterVec
	leaseWaits  *prometheus.CounterVec
	staleServes *prometheus.CounterVec
	refreshes   *prometheus.CounterVec
	recomputes  *prometheus.CounterVec
	computeTime *prometheus.HistogramVec
	ttl         *prometheus.GaugeVec
	age         *prometheus.GaugeVec
	coordErrors *prometheus.CounterVec
	degraded    prometheus.Gauge
	mechanism   *prometheus.GaugeVec
	waiters     *prometheus.GaugeVec
	rejections  *prometheus.CounterVec
	tooLarge    *prometheus.CounterVec
	l1Evictions prometheus.Counter
	l1Bytes     prometheus.GaugeFunc
	l1Entries   prometheus.GaugeFunc

	// Children resolved once per resource: the hot path (an L1 hit) then
	// costs two atomic adds and no label hashing.
	mu  sync.Mutex
	per map[string]*resourceMetrics
}

type resourceMetrics struct {
	l1Fresh, l1Stale, l2Fresh, l2Stale prometheus.Counter
	miss, coalesced, leaseWait         prometheus.Counter
	staleRefreshing, staleError        prometheus.Counter
	ttl, age                           prometheus.Gauge
	waiters                            prometheus.Gauge
	rejections                         map[string]prometheus.Counter // by reason
	tooLargeL1, tooLargeL2             prometheus.Counter
	computeTime                        map[string]prometheus.Observer // by reason
}

// computeReasons label the recomputations done by the cache (the reason
// label of recomputations_total and recompute_duration_seconds): cold, a
// request waits for it (nothing servable: a cold miss, or a value past its
// grace recomputed synchronously); refresh, a renewal of a value in service,
// in the background; retry, a renewal while recomputations of the key are
// failing (after a failure here, or one the cluster's shared count reports).
// Calls with caching disabled are counted as uncached, and not timed.
var computeReasons = []string{"cold", "refresh", "retry"}

// l1Stats reads the in-process level's size for the gauges.
type l1Stats interface {
	WeightedSize() uint64
	EstimatedSize() int
}

func newMetrics(reg prometheus.Registerer, l1 l1Stats) (*metrics, error) {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	m := &metrics{
		hits: counter("hits_total",
			"Requests served from a cache level (l1: in-process, l2: shared store), fresh or stale.", "resource", "level", "freshness"),
		misses: counter("misses_total",
			"Requests that found no usable value in any level (cold misses).", "resource"),
		coalesced: counter("coalesced_waits_total",
			"Requests that waited for a computation another request of this replica had started.", "resource"),
		leaseWaits: counter("lease_waits_total",
			"Requests that waited for a value another replica was computing under its lease.", "resource"),
		staleServes: counter("stale_serves_total",
			"Values served past their TTL: a refresh was under way (refreshing) or had failed (error).", "resource", "reason"),
		refreshes: counter("refreshes_total",
			"Refreshes of values that were due or stale: computed here (ok, error), refused by an overloaded compute (overloaded, "+
				"not a failure: no backoff), or found done by another replica (elsewhere).", "resource", "result"),
		recomputes: counter("recomputations_total",
			"Calls of the compute function, i.e. database recomputations, by reason (cold, refresh, retry, uncached) and result "+
				"(ok, error; cancelled: every request waiting for it went away, or Stop; overloaded: compute refused for lack of capacity).",
			"resource", "reason", "result"),
		computeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "recompute_duration_seconds",
			Help: "Duration of each recomputation, by reason: cold (a request waited for it), refresh (background renewal " +
				"of a value in service) or retry (renewal while recomputations of the key fail).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"resource", "reason"}),
		ttl: gauge("ttl_seconds",
			"TTL of the value this replica currently holds.", "resource"),
		age: gauge("value_age_seconds",
			"Age of the value most recently served.", "resource"),
		coordErrors: counter("coordination_errors_total",
			"Shared-store operations of the cache that failed; the request fell back to in-process caching.", "resource", "op"),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "degraded",
			Help: "1 while the shared store has failed and the cache is in-process only."}),
		mechanism: gauge("coordination_mechanism",
			"1 for the coordination mechanism the cache used last, 0 for the others.", "mechanism"),
		waiters: gauge("waiters",
			"Requests waiting for cold computations (nothing servable in-process), the queue that max_waiters bounds.", "resource"),
		rejections: counter("rejections_total",
			"Requests answered without waiting: the resource had max_waiters waiting (waiters) or the request's deadline "+
				"came first (deadline); served the last value flagged stale if there was one, else an overloaded error.", "resource", "reason"),
		tooLarge: counter("value_too_large_total",
			"Values not kept in a level because of their size: l1, larger than an eighth of l1_max_bytes (served only); "+
				"l2, larger than max_value_bytes (kept in-process only).", "resource", "level"),
		l1Evictions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "l1_evictions_total",
			Help: "Entries the in-process level evicted to stay within l1_max_bytes."}),
		l1Bytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "l1_bytes",
			Help: "Weighed size of the in-process level: values, keys and a fixed overhead per entry (bounded by l1_max_bytes)."},
			func() float64 { return float64(l1.WeightedSize()) }),
		l1Entries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "l1_entries",
			Help: "Entries in the in-process level (approximate)."},
			func() float64 { return float64(l1.EstimatedSize()) }),
		per: map[string]*resourceMetrics{},
	}
	for _, mech := range detector.Mechanisms() {
		m.mechanism.WithLabelValues(mech)
	}
	for r := range builtinPolicies() {
		if r != ResourceDefault {
			m.touch(r)
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.hits, m.misses, m.coalesced, m.leaseWaits, m.staleServes, m.refreshes,
		m.recomputes, m.computeTime, m.ttl, m.age, m.coordErrors, m.degraded, m.mechanism, m.waiters, m.rejections,
		m.tooLarge, m.l1Evictions, m.l1Bytes, m.l1Entries} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("ttl metrics: %w (one Cache per registry)", err)
			}
			return nil, fmt.Errorf("ttl metrics: %w", err)
		}
	}
	return m, nil
}

// coordinationOps are the op label values of coordination_errors_total:
// the shared-store operations the cache makes.
var coordinationOps = []string{"get", "lease", "put", "release", "backoff"}

// recomputeReasons and recomputeResults are the label values of
// recomputations_total: computeReasons plus uncached (caching disabled),
// and the results its help text lists.
var (
	recomputeReasons = append(slices.Clone(computeReasons), "uncached")
	recomputeResults = []string{"ok", "error", "cancelled", "overloaded"}
)

// touch makes resource r's counters and histograms exist at zero, so that
// the cache dashboard shows zero requests for a resource nobody asked for
// yet instead of no data. The gauges (ttl, value age, waiters) are left
// until r is first used: a TTL or an age of zero would be a false reading.
func (m *metrics) touch(r string) {
	for _, level := range []string{"l1", "l2"} {
		for _, freshness := range []string{"fresh", "stale"} {
			m.hits.WithLabelValues(r, level, freshness)
		}
		m.tooLarge.WithLabelValues(r, level)
	}
	m.misses.WithLabelValues(r)
	m.coalesced.WithLabelValues(r)
	m.leaseWaits.WithLabelValues(r)
	for _, reason := range []string{"refreshing", "error"} {
		m.staleServes.WithLabelValues(r, reason)
	}
	for _, reason := range []string{RejectWaiters, RejectDeadline} {
		m.rejections.WithLabelValues(r, reason)
	}
	for _, res := range refreshResults {
		m.refreshes.WithLabelValues(r, res)
	}
	for _, reason := range recomputeReasons {
		for _, res := range recomputeResults {
			m.recomputes.WithLabelValues(r, reason, res)
		}
	}
	for _, reason := range computeReasons {
		m.computeTime.WithLabelValues(r, reason)
	}
	for _, op := range coordinationOps {
		m.coordErrors.WithLabelValues(r, op)
	}
}

// refreshResults are the result label values of refreshes_total.
var refreshResults = []string{"ok", "error", "elsewhere", "overloaded"}

func (m *metrics) resource(r string) *resourceMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm, ok := m.per[r]; ok {
		return rm
	}
	rm := &resourceMetrics{
		l1Fresh:         m.hits.WithLabelValues(r, "l1", "fresh"),
		l1Stale:         m.hits.WithLabelValues(r, "l1", "stale"),
		l2Fresh:         m.hits.WithLabelValues(r, "l2", "fresh"),
		l2Stale:         m.hits.WithLabelValues(r, "l2", "stale"),
		miss:            m.misses.WithLabelValues(r),
		coalesced:       m.coalesced.WithLabelValues(r),
		leaseWait:       m.leaseWaits.WithLabelValues(r),
		staleRefreshing: m.staleServes.WithLabelValues(r, "refreshing"),
		staleError:      m.staleServes.WithLabelValues(r, "error"),
		ttl:             m.ttl.WithLabelValues(r),
		age:             m.age.WithLabelValues(r),
		waiters:         m.waiters.WithLabelValues(r),
		rejections:      map[string]prometheus.Counter{},
		tooLargeL1:      m.tooLarge.WithLabelValues(r, "l1"),
		tooLargeL2:      m.tooLarge.WithLabelValues(r, "l2"),
		computeTime:     map[string]prometheus.Observer{},
	}
	for _, reason := range []string{RejectWaiters, RejectDeadline} {
		rm.rejections[reason] = m.rejections.WithLabelValues(r, reason)
	}
	for _, reason := range computeReasons {
		rm.computeTime[reason] = m.computeTime.WithLabelValues(r, reason)
	}
	// At zero from the start, so that dashboards and alerts can tell "no
	// errors" from "no data" (for a resource without a built-in policy,
	// from its first use).
	m.touch(r)
	m.per[r] = rm
	return rm
}

func (m *metrics) useMechanism(mech string) {
	for _, name := range detector.Mechanisms() {
		v := 0.0
		if name == mech {
			v = 1
		}
		m.mechanism.WithLabelValues(name).Set(v)
	}
}
