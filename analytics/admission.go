package analytics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/tasker-systems/tasker-sidecar/internal/overload"
)

// Admission classes. Every computation holds a database connection for its
// whole transaction; the classes keep the cheap per-task and catalog lookups
// (milliseconds) from queueing behind aggregates that take seconds (issue
// 10: four clients varying period= slowed single-task lookups a
// hundredfold when both shared one slot).
const (
	// ClassExpensive: performance, bottlenecks, the dashboard gauges.
	ClassExpensive = "expensive"
	// ClassLookup: per-task context, steps and graph; the handler catalog.
	ClassLookup = "lookup"
)

// Reasons a computation is refused a connection (the reason label of
// tasker_sidecar_analytics_rejections_total).
const (
	ReasonQueueFull = "queue_full" // the class already had its maximum of waiters
	ReasonDeadline  = "deadline"   // the computation's context ended while it waited
)

// How long a refused client is told to wait (Retry-After): about one
// aggregate for the expensive class, a moment for lookups.
const (
	expensiveRetryAfter = 5 * time.Second
	lookupRetryAfter    = time.Second
)

// OverloadedError refuses a computation a connection. It wraps
// overload.Err, so that the coordinated cache serves the last value
// (stale) where it has one and the HTTP layer answers 503 with Retry-After
// where it has none; a refusal at the deadline also wraps the context's
// error.
type OverloadedError struct {
	Class   string
	Reason  string
	Waiters int           // the class's waiter cap
	After   time.Duration // suggested wait before a retry
	Err     error         // the context's error, for ReasonDeadline
}

func (e *OverloadedError) Error() string {
	if e.Reason == ReasonQueueFull {
		return fmt.Sprintf("analytics %s computations busy: %d already waiting for a database connection; try again later",
			e.Class, e.Waiters)
	}
	return fmt.Sprintf("analytics %s computations busy: no database connection before the deadline (%v); try again later",
		e.Class, e.Err)
}

// Unwrap makes errors.Is(err, overload.Err) true, and
// errors.Is(err, context.DeadlineExceeded) for a deadline.
func (e *OverloadedError) Unwrap() []error {
	if e.Err == nil {
		return []error{overload.Err}
	}
	return []error{overload.Err, e.Err}
}

// RetryAfter is the wait to suggest in a Retry-After header.
func (e *OverloadedError) RetryAfter() time.Duration { return e.After }

// gate admits a class's computations: at most concurrent transactions,
// at most waiters queued for one (FIFO, as semaphore.Weighted queues), the
// rest refused at once rather than piling up without bound.
type gate struct {
	class      string
	sem        *semaphore.Weighted
	maxWaiters int64
	waiting    atomic.Int64
	retryAfter time.Duration

	depth, inUse        prometheus.Gauge
	queueFull, deadline prometheus.Counter
}

// enter waits for a slot; the returned func gives it back.
func (g *gate) enter(ctx context.Context) (func(), error) {
	if !g.sem.TryAcquire(1) {
		if g.waiting.Add(1) > g.maxWaiters {
			g.waiting.Add(-1)
			g.queueFull.Inc()
			return nil, &OverloadedError{Class: g.class, Reason: ReasonQueueFull, Waiters: int(g.maxWaiters), After: g.retryAfter}
		}
		g.depth.Inc()
		err := g.sem.Acquire(ctx, 1)
		g.waiting.Add(-1)
		g.depth.Dec()
		if err != nil {
			g.deadline.Inc()
			return nil, &OverloadedError{Class: g.class, Reason: ReasonDeadline, Waiters: int(g.maxWaiters),
				After: g.retryAfter, Err: err}
		}
	}
	g.inUse.Inc()
	return func() {
		g.inUse.Dec()
		g.sem.Release(1)
	}, nil
}

// admission is the Service's gates and their metrics.
type admission struct {
	gates                     map[string]*gate
	depth, inUse              *prometheus.GaugeVec
	rejections                *prometheus.CounterVec
	maxConcurrent, maxWaiters *prometheus.GaugeVec
}

func newAdmission(o Config) *admission {
	name := func(n string) string { return prometheus.BuildFQName("tasker_sidecar", "analytics", n) }
	a := &admission{
		gates: map[string]*gate{},
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("queue_depth"),
			Help: "Analytics computations waiting for a database connection, by admission class (expensive, lookup)."}, []string{"class"}),
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("in_use"),
			Help: "Analytics transactions open, by admission class."}, []string{"class"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("rejections_total"),
			Help: "Analytics computations refused a database connection, by admission class and reason: queue_full " +
				"(the class had its maximum of waiters) or deadline (the request's deadline passed while it waited)."},
			[]string{"class", "reason"}),
		maxConcurrent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("max_concurrent"),
			Help: "Configured cap of open analytics transactions, by admission class."}, []string{"class"}),
		maxWaiters: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("max_waiters"),
			Help: "Configured cap of analytics computations waiting for a connection, by admission class."}, []string{"class"}),
	}
	for _, c := range []struct {
		class               string
		concurrent, waiters int
		after               time.Duration
	}{
		{ClassExpensive, o.MaxConcurrent, o.MaxWaiters, expensiveRetryAfter},
		{ClassLookup, o.LookupMaxConcurrent, o.LookupMaxWaiters, lookupRetryAfter},
	} {
		a.maxConcurrent.WithLabelValues(c.class).Set(float64(c.concurrent))
		a.maxWaiters.WithLabelValues(c.class).Set(float64(c.waiters))
		a.gates[c.class] = &gate{
			class: c.class, sem: semaphore.NewWeighted(int64(c.concurrent)), maxWaiters: int64(c.waiters),
			retryAfter: c.after,
			depth:      a.depth.WithLabelValues(c.class), inUse: a.inUse.WithLabelValues(c.class),
			queueFull: a.rejections.WithLabelValues(c.class, ReasonQueueFull),
			deadline:  a.rejections.WithLabelValues(c.class, ReasonDeadline),
		}
	}
	return a
}

func (a *admission) collectors() []prometheus.Collector {
	return []prometheus.Collector{a.depth, a.inUse, a.rejections, a.maxConcurrent, a.maxWaiters}
}

// Describe sends the admission metrics' descriptors: a Service is a
// prometheus.Collector of its own admission control (register it once).
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.adm.collectors() {
		c.Describe(ch)
	}
}

// Collect sends the admission metrics: queue depth and transactions in use
// per class, the caps, and the rejections.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.adm.collectors() {
		c.Collect(ch)
	}
}

var _ prometheus.Collector = (*Service)(nil)

// errUnknownClass is a programming error: every read names its class.
var errUnknownClass = errors.New("analytics: unknown admission class")

// Saturated reports whether a class has as many computations waiting as it
// admits, so that the next one would be refused, for a readiness check (see
// exporters.NewSaturationCheck): refusals then answer 503 or stale values.
func (s *Service) Saturated() (bool, string) {
	var busy []string
	for _, class := range []string{ClassExpensive, ClassLookup} {
		g := s.adm.gates[class]
		if n := g.waiting.Load(); n >= g.maxWaiters {
			busy = append(busy, fmt.Sprintf("%s computations: %d waiting for a database connection (at most %d)",
				class, n, g.maxWaiters))
		}
	}
	if len(busy) == 0 {
		return false, ""
	}
	return true, "analytics saturated: " + strings.Join(busy, "; ")
}
