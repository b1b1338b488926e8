package collector

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Defaults for zero RefresherOptions fields.
const (
	DefaultRefreshInterval = 15 * time.Second
	DefaultRefreshTimeout  = 10 * time.Second
)

// RefresherOptions configures the background refresh loop.
type RefresherOptions struct {
	// Interval between the starts of two refreshes.
	Interval time.Duration
	// Timeout bounds one refresh. It is capped at Interval: a run slower than
	// that would delay the next tick anyway, and holding a snapshot open on
	// Tasker's database longer buys nothing.
	Timeout time.Duration
	// Source produces the counts. Nil means the database's full count; a
	// *Stream serves its incremental counts instead, so a refresh costs in
	// proportion to what changed, not to the size of the tables.
	Source CountSource
	// TracerProvider traces every refresh (the sidecar's own spans); nil
	// records nothing.
	TracerProvider trace.TracerProvider
}

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
	opts   RefresherOptions
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

	lifeMu  sync.Mutex
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}

	duration    prometheus.Histogram
	success     prometheus.Gauge
	lastSuccess prometheus.Gauge
	errs        *prometheus.CounterVec
}

// NewRefresher registers the refresh metrics on reg (nil skips them; a
// duplicate registration panics, being a wiring bug) and returns a refresher
// that does nothing until Start or Refresh. Zero options take the Default*
// values; logger is used as given (nil discards).
func NewRefresher(db *DB, opts RefresherOptions, reg prometheus.Registerer, logger *slog.Logger) *Refresher {
	if opts.Interval <= 0 {
		opts.Interval = DefaultRefreshInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRefreshTimeout
	}
	opts.Timeout = min(opts.Timeout, opts.Interval)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var src CountSource = db
	if opts.Source != nil {
		src = opts.Source
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	r := &Refresher{
		src:    src,
		opts:   opts,
		logger: logger,
		tracer: tp.Tracer("github.com/tasker-systems/tasker-sidecar/collector"),
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
	r.created = r.now()
	for _, reason := range Reasons() {
		r.errs.WithLabelValues(reason)
	}
	if reg != nil {
		age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "refresh", Name: "age_seconds",
			Help: "Seconds since the last successful refresh, computed at scrape time; " +
				"before the first success, seconds since the refresher was created, so staleness alerts also fire for a sidecar that never succeeded.",
		}, r.age)
		reg.MustRegister(r.duration, r.success, r.lastSuccess, r.errs, age)
	}
	return r
}

func (r *Refresher) age() float64 {
	r.mu.RLock()
	since := r.state.LastSuccess
	if since.IsZero() {
		since = r.created
	}
	r.mu.RUnlock()
	return r.now().Sub(since).Seconds()
}

// State returns a copy of the current state; safe for concurrent use.
func (r *Refresher) State() RefreshState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.state
}

// Start runs a refresh immediately and then every Interval until ctx ends or
// Stop is called. Calling Start again, or after Stop, does nothing.
func (r *Refresher) Start(ctx context.Context) {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.stopped || r.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan struct{})

	tick, stopTick := r.tick, func() {}
	if tick == nil {
		t := time.NewTicker(r.opts.Interval)
		tick, stopTick = t.C, t.Stop
	}
	go func() {
		defer close(r.done)
		defer stopTick()
		for {
			r.runLoopOnce(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
	}()
}

func (r *Refresher) runLoopOnce(ctx context.Context) {
	_ = r.Refresh(ctx)
	if r.onRun != nil {
		r.onRun()
	}
}

// Stop ends the loop and waits for a running refresh to return. It is safe
// before Start and more than once.
func (r *Refresher) Stop() {
	r.lifeMu.Lock()
	r.stopped = true
	cancel, done := r.cancel, r.done
	r.lifeMu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

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

	runCtx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
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
