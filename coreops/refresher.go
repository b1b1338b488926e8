package coreops

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
)

// Source is the attached Tasker database: its pool and the engine the last
// schema check found (*collector.DB).
type Source interface {
	Engine() (engine.Engine, bool)
}

// Options configure a Refresher.
type Options struct {
	// Interval between reads (collector.refresh_interval) and the bound
	// of one read (collector.refresh_timeout); zeros resolve as for the
	// health counts (collector.RefreshConfig.Effective).
	Interval, Timeout time.Duration
	// Queues is where pgmq lives: the Tasker database's pool, or the pool
	// of pgmq.database_url when tasker-core keeps its queues apart
	// (PGMQ_DATABASE_URL). Nil reads no queues.
	Queues Querier
	Logger *slog.Logger
}

// Parts name what a read covers, for errors and logs.
const (
	PartQueues    = "queues"
	PartDLQ       = "dlq"
	PartStaleness = "staleness"
)

// Refresher reads a Snapshot every interval while the database is
// tasker-core's, and keeps each part's last good value: a failing DLQ query
// does not blank the queue gauges. Start/Shutdown follow internal/lifecycle.
type Refresher struct {
	loop lifecycle.Loop
	src  Source
	db   Querier
	opts Options
	now  func() time.Time

	reading sync.Mutex // one Refresh at a time; guards follow
	follow  *dlqFollower
	created *prometheus.CounterVec
	errs    *prometheus.CounterVec

	mu   sync.Mutex
	last Snapshot
	// at is each part's last good read; a part never read is absent.
	at map[string]time.Time
	// failing is each part's error state, logged on change only.
	failing map[string]bool
}

// NewRefresher reads from db (the Tasker database's pool) when src says the
// engine is tasker-core.
func NewRefresher(src Source, db Querier, opts Options) *Refresher {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// The health counts' schedule and its defaults, resolved where they
	// are defined.
	rc := collector.RefreshConfig{Interval: opts.Interval, Timeout: opts.Timeout}.Effective()
	opts.Interval, opts.Timeout = rc.Interval, rc.Timeout
	r := &Refresher{
		src: src, db: db, opts: opts, now: time.Now,
		follow: newDLQFollower(),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_dlq_entries_created_total",
			Help: "tasker-core dead-letter entries that appeared in tasks_dlq since the sidecar started, by reason (every enum value from the first read).",
		}, []string{"reason"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_sidecar_coreops_errors_total",
			Help: "Failed reads of tasker-core's queues, dead letters or staleness, by part.",
		}, []string{"part"}),
		at:      map[string]time.Time{},
		failing: map[string]bool{},
	}
	for _, p := range []string{PartQueues, PartDLQ, PartStaleness} {
		r.errs.WithLabelValues(p)
	}
	return r
}

// Start reads at once, then every interval.
func (r *Refresher) Start(ctx context.Context) error {
	r.loop.Start(ctx, func(ctx context.Context) {
		t := time.NewTicker(r.opts.Interval)
		defer t.Stop()
		for {
			r.Refresh(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// Shutdown stops the loop; safe twice and before Start.
func (r *Refresher) Shutdown(ctx context.Context) error { return r.loop.Shutdown(ctx) }

// Refresh reads once, when the engine is tasker-core. Exported for tests
// and for a caller that wants a read now; calls run one at a time (the
// dead-letter follower keeps state between reads).
func (r *Refresher) Refresh(ctx context.Context) {
	r.reading.Lock()
	defer r.reading.Unlock()
	e, ok := r.src.Engine()
	if !ok || e.Kind != engine.KindCore {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	// On a hot standby replay may cancel a read (a recovery conflict): the
	// whole read is repeated as the health counts' is, a bounded number of
	// times; a part still failing keeps its last good values below.
	var snap Snapshot
	_ = collector.RetryRecoveryConflict(ctx, func(ctx context.Context) error {
		snap = Read(ctx, r.db, r.opts.Queues, e, r.now())
		return snap.Err()
	})
	fresh, followErr := r.follow.read(ctx, r.db)

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, part := range []struct {
		name string
		err  error
		keep func()
	}{
		{PartQueues, snap.QueuesErr, func() { r.last.QueuesFound, r.last.Queues = snap.QueuesFound, snap.Queues }},
		{PartDLQ, snap.DLQErr, func() { r.last.DLQ, r.last.DLQOldestPending = snap.DLQ, snap.DLQOldestPending }},
		{PartStaleness, snap.StaleErr, func() { r.last.Stale, r.last.OldestActive = snap.Stale, snap.OldestActive }},
	} {
		if part.name == PartQueues && r.opts.Queues == nil {
			continue
		}
		r.note(part.name, part.err)
		if part.err == nil {
			part.keep()
			r.at[part.name] = snap.TakenAt
		}
	}
	// Every reason exists at zero from the first good count. New entries
	// are counted whenever the follower read them, even when the count
	// failed: the follower has marked them seen and will not return them
	// as new again.
	if snap.DLQErr == nil {
		for _, c := range snap.DLQ {
			r.created.WithLabelValues(c.Reason)
		}
	}
	if followErr != nil {
		r.errs.WithLabelValues(PartDLQ).Inc()
	}
	for reason, n := range fresh {
		r.created.WithLabelValues(reason).Add(float64(n))
	}
	r.last.TakenAt = snap.TakenAt
}

// note counts an error and logs a part's change between failing and good.
func (r *Refresher) note(part string, err error) {
	if err != nil {
		r.errs.WithLabelValues(part).Inc()
	}
	if (err != nil) == r.failing[part] {
		return
	}
	r.failing[part] = err != nil
	if err != nil {
		r.opts.Logger.Warn("tasker-core operational read failed; serving the last good values", "part", part, "err", err)
	} else {
		r.opts.Logger.Info("tasker-core operational read recovered", "part", part)
	}
}

// Last returns the last good value of every part and when each was read.
func (r *Refresher) Last() (Snapshot, map[string]time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := make(map[string]time.Time, len(r.at))
	for k, v := range r.at {
		at[k] = v
	}
	return r.last, at
}

// Metrics are the refresher's own counters, to register beside Collector.
func (r *Refresher) Metrics() []prometheus.Collector {
	return []prometheus.Collector{r.created, r.errs}
}
