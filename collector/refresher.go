package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
)

// RefreshConfig is the background refresh of the health counts, the
// configuration's collector section.
type RefreshConfig struct {
	// Interval between the starts of two refreshes; Tasker caches its
	// status for as long (health.cache_duration_seconds).
	Interval time.Duration `yaml:"refresh_interval"`
	// Timeout bounds one refresh; 0 means the interval, at most
	// maxRefreshTimeout. It is capped at Interval: a run slower than that
	// would delay the next tick anyway, and holding a snapshot open on
	// Tasker's database longer buys nothing.
	Timeout time.Duration `yaml:"refresh_timeout"`
}

// maxRefreshTimeout is the refresh timeout when none is set.
const maxRefreshTimeout = 10 * time.Second

// DefaultRefreshConfig is the collector section's defaults.
func DefaultRefreshConfig() RefreshConfig {
	return RefreshConfig{Interval: 15 * time.Second}
}

// Validate returns every problem, each starting with its key relative to
// the section.
func (c RefreshConfig) Validate() []error {
	var errs []error
	switch {
	case c.Interval <= 0:
		errs = append(errs, fmt.Errorf("refresh_interval: must be a positive duration such as 5s (got %s)", c.Interval))
	case c.Interval < time.Second:
		errs = append(errs, fmt.Errorf("refresh_interval: must be at least 1s (got %s)", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("refresh_timeout: must not be negative (got %s); 0 means the refresh interval, at most 10s", c.Timeout))
	} else if c.Timeout > c.Interval && c.Interval > 0 {
		errs = append(errs, fmt.Errorf("refresh_timeout: must not exceed collector.refresh_interval (%s > %s)", c.Timeout, c.Interval))
	}
	return errs
}

// Effective is c as a refresher runs it: a zero interval is
// DefaultRefreshConfig's, a zero timeout the interval at most 10 s. Other
// readers on the same schedule (coreops) resolve theirs with it.
func (c RefreshConfig) Effective() RefreshConfig { return c.withDefaults() }

// withDefaults fills a zero interval from DefaultRefreshConfig and resolves
// the timeout.
func (c RefreshConfig) withDefaults() RefreshConfig {
	if c.Interval <= 0 {
		c.Interval = DefaultRefreshConfig().Interval
	}
	if c.Timeout <= 0 {
		c.Timeout = maxRefreshTimeout
	}
	c.Timeout = min(c.Timeout, c.Interval)
	return c
}

// RefresherOption supplies what a Refresher reads from besides its
// configuration.
type RefresherOption func(*Refresher)

// WithSource makes the refresher take its counts from src instead of the
// database's full count: a *Stream serves its incremental counts, so a
// refresh costs in proportion to what changed, not to the size of the
// tables.
func WithSource(src CountSource) RefresherOption {
	return func(r *Refresher) {
		if src != nil {
			r.src = src
		}
	}
}

// WithRefreshTracer traces every refresh (the sidecar's own spans).
func WithRefreshTracer(tp trace.TracerProvider) RefresherOption {
	return func(r *Refresher) {
		if tp != nil {
			r.tracer = tp.Tracer(tracerName)
		}
	}
}

const tracerName = "github.com/tasker-systems/tasker-sidecar/collector"

// RefreshState is what the loop knows after its latest attempt.
type RefreshState struct {
	// Last is the last good snapshot, nil before the first success. It is
	// kept forever when later refreshes fail. Treat it as read-only: it is
	// shared with every caller.
	Last *Snapshot
	// LastError is the error of the most recent attempt, nil if it succeeded,
	// or an *UnreachableError when ReportUnreachable was told of one since.
	LastError error
	// LastAttempt and LastSuccess are when the most recent attempt and the
	// most recent success finished; zero if none yet.
	LastAttempt, LastSuccess time.Time
	// Failures counts consecutive failed attempts; a success resets it.
	Failures uint64
}

// Refresher keeps a recent Snapshot in memory so that request handlers never
// query the database: the refresh runs in the background and handlers read
// State.
type Refresher struct {
	src    CountSource
	cfg    RefreshConfig
	logger *slog.Logger
	tracer trace.Tracer

	// Test seams: now is the wall clock for timestamps and age, tick replaces
	// the ticker, onRun is called after every loop iteration.
	now   func() time.Time
	tick  <-chan time.Time
	onRun func()

	runMu sync.Mutex // one refresh at a time, so state updates stay ordered

	mu      sync.RWMutex
	state   RefreshState
	created time.Time
	// reports counts ReportUnreachable calls, so that a refresh that began
	// before one does not clear it.
	reports uint64

	loop lifecycle.Loop

	duration    prometheus.Histogram
	success     prometheus.Gauge
	lastSuccess prometheus.Gauge
	errs        *prometheus.CounterVec
}

// NewRefresher registers the refresh metrics on reg (nil skips them; a
// duplicate registration panics, being a wiring bug) and returns a refresher
// that does nothing until Start or Refresh. A zero interval takes the
// default; logger is used as given (nil discards).
func NewRefresher(db *DB, cfg RefreshConfig, reg prometheus.Registerer, logger *slog.Logger, opts ...RefresherOption) *Refresher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Refresher{
		src:    db,
		cfg:    cfg.withDefaults(),
		logger: logger,
		tracer: noop.NewTracerProvider().Tracer(tracerName),
		now:    time.Now,
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tasker_sidecar", Subsystem: "refresh", Name: "duration_seconds",
			Help:    "Duration of background refreshes of the Tasker health counts, successful or not.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "refresh", Name: "success",
			Help: "1 if the most recent refresh succeeded, 0 if it failed or none ran yet.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "refresh", Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last successful refresh, 0 if none yet.",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "refresh", Name: "errors_total",
			Help: "Failed refreshes by reason (timeout, connection, query, schema).",
		}, []string{"reason"}),
	}
	for _, o := range opts {
		o(r)
	}
	r.created = r.now()
	for _, reason := range Reasons() {
		r.errs.WithLabelValues(reason)
	}
	if reg != nil {
		age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "refresh", Name: "age_seconds",
			Help: "Seconds since the last successful refresh plus the replication lag its counts were read with (0 on a primary), computed at scrape time; " +
				"before the first success, seconds since the refresher was created, so staleness alerts also fire for a sidecar that never succeeded.",
		}, r.age)
		reg.MustRegister(r.duration, r.success, r.lastSuccess, r.errs, age)
	}
	return r
}

// age is the refresh age metric: the time since the last success plus the
// replication lag its counts were read with (zero on a primary), so the
// staleness alerts fire for a standby that stopped replaying as for a
// refresher that stopped (docs/operations.md#read-replicas).
func (r *Refresher) age() float64 {
	r.mu.RLock()
	since := r.state.LastSuccess
	var lag time.Duration
	if since.IsZero() {
		since = r.created
	} else if r.state.Last != nil {
		lag = r.state.Last.Replication.Lag
	}
	r.mu.RUnlock()
	return (r.now().Sub(since) + lag).Seconds()
}

// State returns a copy of the current state; safe for concurrent use.
func (r *Refresher) State() RefreshState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.state
}

// Start runs a refresh immediately and then every Interval until ctx ends or
// Shutdown is called. Calling Start again, or after Shutdown, does nothing.
func (r *Refresher) Start(ctx context.Context) error {
	r.loop.Start(ctx, func(ctx context.Context) {
		tick, stopTick := r.tick, func() {}
		if tick == nil {
			t := time.NewTicker(r.cfg.Interval)
			tick, stopTick = t.C, t.Stop
		}
		defer stopTick()
		for {
			r.runLoopOnce(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
	})
	return nil
}

func (r *Refresher) runLoopOnce(ctx context.Context) {
	_ = r.Refresh(ctx)
	if r.onRun != nil {
		r.onRun()
	}
}

// Shutdown ends the loop and waits, within ctx, for a running refresh to
// return. It is safe before Start and more than once.
func (r *Refresher) Shutdown(ctx context.Context) error { return r.loop.Shutdown(ctx) }

// UnreachableError is what ReportUnreachable records: the database was
// found unreachable between two refreshes.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return "database unreachable: " + e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// ReportUnreachable marks the state failing at once when something else
// (the readiness ping) finds the database unreachable, so that the status
// endpoint does not call the last snapshot healthy for up to an interval
// (issue 10). The snapshot, its time and the failure count stay as they
// are: they describe refreshes. Only the next successful refresh clears
// it; a later successful ping does not, because it says nothing of whether
// the counts can be read. A nil err does nothing.
func (r *Refresher) ReportUnreachable(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	wasFailing := r.state.LastError != nil
	r.state.LastError = &UnreachableError{Err: err}
	r.reports++
	r.mu.Unlock()
	if !wasFailing {
		r.logger.Warn("database unreachable; the status endpoint reports the failure until the next successful refresh",
			"reason", classify(err), "err", err)
	}
}

// Refresh runs one refresh synchronously (bounded by Timeout) and records the
// outcome. An attempt aborted because ctx itself was cancelled — shutdown —
// is not recorded as a failure.
func (r *Refresher) Refresh(ctx context.Context) error {
	r.runMu.Lock()
	defer r.runMu.Unlock()

	r.mu.RLock()
	reports := r.reports
	r.mu.RUnlock()

	runCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	runCtx, span := r.tracer.Start(runCtx, "refresh")
	start := time.Now()
	snap, err := r.src.Refresh(runCtx)
	elapsed := time.Since(start)
	endSpan(span, err)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	r.duration.Observe(elapsed.Seconds())
	now := r.now()

	r.mu.Lock()
	prev := r.state
	r.state.LastAttempt = now
	if err != nil {
		r.state.LastError = err
		r.state.Failures++
	} else {
		r.state.Last = &snap
		r.state.LastSuccess = now
		r.state.Failures = 0
		// A report made while this refresh ran may be about a database
		// that went away after the counts were read.
		if r.reports == reports {
			r.state.LastError = nil
		}
	}
	recovered := prev.LastError != nil && r.state.LastError == nil
	r.mu.Unlock()

	if err != nil {
		reason := classify(err)
		r.errs.WithLabelValues(reason).Inc()
		r.success.Set(0)
		// Log the start of an outage loudly and its continuation quietly; the
		// metrics carry the rate.
		level := slog.LevelDebug
		if prev.Failures == 0 {
			level = slog.LevelWarn
		}
		r.logger.Log(ctx, level, "refresh failed; serving the last good snapshot",
			"reason", reason, "err", err, "consecutive_failures", prev.Failures+1,
			"have_snapshot", prev.Last != nil)
		return err
	}
	r.success.Set(1)
	r.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
	if recovered {
		r.logger.Info("refresh recovered", "after_failures", prev.Failures)
	}
	return nil
}
