package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
)

// Transition is one transition row as the stream emitted it.
type Transition struct {
	// Step is true for a workflow step transition, false for a task's.
	Step   bool
	ID     engine.ID // the transition row's key
	TaskID engine.ID
	StepID engine.ID // zero for a task transition
	// Namespace, TaskName and Version of the task's named task ("" if it
	// has none).
	Namespace, TaskName, Version string
	// FromState is the to_state of the previous row of the same task or
	// step by sort_key, "" for its first transition.
	FromState string
	ToState   string
	SortKey   int32
	At        time.Time // created_at, naive UTC as Tasker writes it
	FromAt    time.Time // created_at of the previous row, zero if none
	// Replay marks a terminal task transition handed over again when this
	// replica took the lease over, because the previous holder had not
	// exported it. Replayed rows carry no FromState.
	Replay bool
	// History is set on a transition that ends a task's run when the
	// stream read every transition of the task and its steps (it saw the
	// task's row created, within the bounds in stream_runs.go): the trace
	// exporter then reads only the task's and steps' columns.
	History *TaskTransitions
}

// Sink consumes the stream's transitions, each exactly once while this
// replica holds the lease (always, without a lease). Consume runs on the
// stream's goroutine after the counts are updated and before the
// checkpoint is saved, so a sink that has returned never sees the same rows
// again after a clean restart. An error is counted and logged; the stream
// does not retry.
type Sink interface {
	Consume(ctx context.Context, transitions []Transition) error
}

// CountSource produces health counts; *DB (a full count) and *Stream (the
// incremental state) implement it.
type CountSource interface {
	Refresh(ctx context.Context) (Snapshot, error)
}

// ErrStreamStale is wrapped by Stream.Refresh when the last successful poll
// is older than StreamConfig.StaleAfter.
var ErrStreamStale = errors.New("transition stream is stale")

// StreamOption adds an optional collaborator to a Stream.
type StreamOption func(*Stream)

// WithTracerProvider traces the stream's own work (polls, queries,
// recounts, checkpoint and lease operations) with tp. The default records
// nothing.
func WithTracerProvider(tp trace.TracerProvider) StreamOption {
	return func(s *Stream) { s.tracer = tp.Tracer("github.com/tasker-systems/tasker-sidecar/collector") }
}

// WithLease makes the stream hand transitions to its sinks, and write a
// shared checkpoint, only while it holds l. Without a lease it always does.
func WithLease(l Lease) StreamOption { return func(s *Stream) { s.lease = l } }

// WithSink adds a consumer of the stream's transitions.
func WithSink(sink Sink) StreamOption { return func(s *Stream) { s.sinks = append(s.sinks, sink) } }

// WithExemplars attaches exemplars to the workflow counters and histograms:
// traceID returns the hex trace id of a task's trace, and false when the
// task is not traced (then no exemplar is attached).
func WithExemplars(traceID func(taskID engine.ID) (string, bool)) StreamOption {
	return func(s *Stream) { s.traceIDs = traceID }
}

// Stream follows Tasker's transition tables (and the task and step tables,
// whose new rows count before their first transition) by id. It keeps the
// health counts up to date in time proportional to the new rows, derives
// transition counters and duration histograms, and hands every transition
// to its sinks exactly once. See docs/stream.md for the design.
type Stream struct {
	db       *DB
	cfg      StreamConfig
	ckpt     Checkpointer
	lease    Lease
	sinks    []Sink
	traceIDs exemplarFunc
	tracer   trace.Tracer
	runs     *keptRuns // stream_runs.go
	logger   *slog.Logger
	m        *streamMetrics
	now      func() time.Time

	// Owned by the loop goroutine (or a test driving poll directly).
	initialized bool
	// eng is the engine the first count found; the stream reads that
	// engine's tables until the process restarts.
	eng  engine.Engine
	xids xidTracker // core only: the running transactions (stream_keys.go)
	// audit is true on a tasker-core database with the step result audit
	// table; steps caps its step labels (stream_audit.go).
	audit bool
	steps *stepLabeler
	// startedAt is the database's time at the first count (its snapshot).
	startedAt time.Time
	// settleGaps is false when a Rails key sequence caches ids per session
	// (Cursor.resolve's assumption does not hold): gaps wait for the horizon.
	settleGaps bool
	state      *countState
	// pos is what has been read. base is the position the counts were
	// last taken at by a full count: rows it contains are already counted
	// and are only emitted. traceBase is the shared checkpoint found on
	// taking the lease: rows it contains were exported by the previous
	// holder.
	pos, base, traceBase position
	named                map[engine.ID]namedTask
	labels               *labeler
	ident                string
	leader               bool
	dirty                bool // pos moved since the last checkpoint save
	lastSave             time.Time
	lastRecount          time.Time
	// churn is the table statistics last read (at churnRead); churnPending
	// is set when they showed deleted rows or a truncation, until a
	// recount ran.
	churn        map[string]tableChurn
	churnRead    time.Time
	churnPending bool
	// rowCheckAt is when a poll last counted the rows, rowCheckEvery the
	// interval its duration asks for (stream_rowcheck.go).
	rowCheckAt    time.Time
	rowCheckEvery time.Duration
	rowChecks     *rowCheckMetrics
	// The last answer of oldestRetryable, and when it was queried.
	retryMu         sync.Mutex
	retryOldest     time.Time
	retryAt         time.Time
	retryFailed     bool
	recountFailures int       // consecutive failed recounts
	recountRetry    time.Time // no recount before this, after a failure
	failures        int

	mu     sync.RWMutex
	snap   *Snapshot
	lastOK time.Time
	err    error
	// What keepLease judges the stream's health by; written by the loop.
	polling    bool      // a poll is under way
	pollFailed bool      // the last poll failed
	pollEnded  time.Time // when the last successful poll (or the first count) ended

	ready     chan struct{}
	tried     chan struct{} // closed when the first count has been tried
	triedOnce sync.Once

	loop     lifecycle.Loop
	stopOnce sync.Once
	stopErr  error
}

// NewStream registers the stream's metrics on reg (nil skips them; a
// duplicate registration panics, being a wiring bug) and returns a stream
// that does nothing until Start. ckpt may be nil (no checkpoint: a restart
// begins at a fresh count). cfg must be valid (StreamConfig.Validate).
func NewStream(db *DB, cfg StreamConfig, ckpt Checkpointer, reg prometheus.Registerer, logger *slog.Logger, opts ...StreamOption) *Stream {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Stream{
		db:     db,
		cfg:    cfg,
		ckpt:   ckpt,
		tracer: noop.NewTracerProvider().Tracer(""),
		logger: logger,
		m:      newStreamMetrics(reg),
		// In their own file: the stream's deletion check (stream_rowcheck.go).
		rowChecks: newRowCheckMetrics(reg),
		now:       time.Now,
		labels:    newLabeler(cfg.MaxLabelGroups),
		steps:     newStepLabeler(maxStepLabels),
		runs:      newKeptRuns(reg),
		ready:     make(chan struct{}),
		tried:     make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Ready is closed once the first full count is in memory.
func (s *Stream) Ready() <-chan struct{} { return s.ready }

// Start counts once in full, resumes from the checkpoint if there is one,
// and then polls until ctx ends or Shutdown is called. A database that is
// down is retried every poll interval. Calling Start again, or after
// Shutdown, does nothing.
func (s *Stream) Start(ctx context.Context) error {
	s.loop.Start(ctx, s.run)
	return nil
}

// Shutdown ends the loop, waits for a poll under way, saves the checkpoint
// and releases the lease, all within ctx. When the loop does not end within
// ctx, nothing is saved (the poll under way may still move the counts) and
// ctx's error is returned. It is safe before Start and more than once.
func (s *Stream) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		started := s.loop.Done() != nil
		if s.stopErr = s.loop.Shutdown(ctx); s.stopErr == nil && started {
			if ctx.Err() != nil {
				// The loop ended just as the budget did: the final
				// checkpoint still spares a restart or the next replica the
				// replay, so it gets a moment of its own.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), finalSaveGrace)
				defer cancel()
			}
			s.shutdown(ctx)
		}
	})
	return s.stopErr
}

// finalSaveGrace bounds the final checkpoint and lease release when the
// shutdown budget is already spent: one round trip each.
const finalSaveGrace = time.Second

// shutdown saves the final checkpoint and gives the lease back, so a
// clean restart or another replica continues exactly where this one
// stopped.
func (s *Stream) shutdown(ctx context.Context) {
	if s.initialized {
		s.save(ctx, s.now(), true)
	}
	if s.lease != nil {
		if err := s.lease.Release(ctx); err != nil {
			s.logger.Warn("could not release the stream lease; another replica takes over when it expires", "err", err)
		}
		s.m.leader.Set(0)
	}
}

func (s *Stream) run(ctx context.Context) {
	if s.lease != nil {
		var wg sync.WaitGroup
		wg.Go(func() { s.keepLease(ctx) })
		defer wg.Wait() // before the loop ends: Shutdown releases the lease after it
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	conflicts := 0 // consecutive polls a recovery conflict cancelled
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		wait := s.cfg.PollInterval
		if !s.initialized {
			if err := s.init(ctx); err != nil {
				s.failed(ctx, "could not take the first count; retrying", err)
			}
			s.triedOnce.Do(func() { close(s.tried) })
		}
		if s.initialized {
			more, err := s.poll(ctx)
			switch {
			case err != nil && IsRecoveryConflict(err) && conflicts < conflictRetries:
				// A standby cancelled a read to replay the primary's
				// changes: the next snapshot does not need those rows.
				// Counted as retried, not as a poll error: only a poll that
				// gives up is one (as for the refresh).
				conflicts++
				conflictCounter.WithLabelValues("retried").Inc()
				s.logger.Debug("a hot standby cancelled the poll for a conflict with recovery; polling again", "err", err,
					"attempt", conflicts)
				wait = conflictBackoff << (conflicts - 1)
			case err != nil:
				if IsRecoveryConflict(err) {
					conflictCounter.WithLabelValues("failed").Inc()
				}
				conflicts = 0
				s.failed(ctx, "poll failed; serving the last counts", err)
			default:
				conflicts = 0
				if more {
					wait = 0 // a backlog: go on at once
				}
			}
		}
		timer.Reset(wait)
	}
}

// keepLease renews the lease every third of its TTL while the stream is
// healthy (leaseHealthy). Polls renew it too, but a recount on a large
// database can take longer than the TTL, and the lease must not change
// hands for that. A holder that cannot read the database gives the lease
// up, so that a replica that can exports traces and writes the checkpoint.
func (s *Stream) keepLease(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.Lease.TTL/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, s.cfg.Lease.TTL/3)
		if s.leaseHealthy(s.now()) {
			if _, err := s.lease.Renew(hctx); err != nil && ctx.Err() == nil {
				s.leaseError(err, slog.LevelDebug, "could not renew the stream lease between polls")
			}
		} else if s.lease.Holding() {
			s.logger.Warn("the transition stream has not polled successfully for longer than the lease TTL; giving the lease up so a healthy replica exports traces",
				"lease_ttl", s.cfg.Lease.TTL)
			if err := s.lease.Release(hctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("could not release the stream lease; another replica takes over when it expires", "err", err)
			}
			s.m.leader.Set(0)
		}
		cancel()
	}
}

// leaseError logs a failed lease operation: one the store refused (the
// lease is unusable now, see Lease) always as a warning, others as msg at
// level.
func (s *Stream) leaseError(err error, level slog.Level, msg string) {
	if errors.Is(err, errors.ErrUnsupported) {
		s.logger.Warn("the cache store refuses the export lease's operations: every replica exports traces, as without a lease", "err", err)
		return
	}
	s.logger.Log(context.Background(), level, msg, "err", err)
}

// leaseHealthy reports whether this replica may keep the lease at now:
// its last poll succeeded and a poll is under way (a long recount or
// export) or the last one ended less than a lease TTL ago; after a failed
// poll, only until a lease TTL has passed since the last successful one.
// A poll that hangs is bounded by PollTimeout, after which it has failed.
func (s *Stream) leaseHealthy(now time.Time) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.pollFailed {
		return now.Sub(s.lastOK) < s.cfg.Lease.TTL
	}
	return s.polling || now.Sub(s.pollEnded) < s.cfg.Lease.TTL
}

// failed records an error, loudly at the start of an outage and quietly
// while it lasts; the metrics carry the rate.
func (s *Stream) failed(ctx context.Context, msg string, err error) {
	if ctx.Err() != nil {
		return // shutting down
	}
	// Rows may be committing that this replica cannot read: it is not
	// caught up until a poll drains them.
	s.m.caughtUp.Set(0)
	reason := classify(err)
	s.m.pollErrors.WithLabelValues(reason).Inc()
	s.db.noteReachable(err)
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	level := slog.LevelDebug
	if s.failures == 0 {
		level = slog.LevelWarn
	}
	s.failures++
	s.logger.Log(ctx, level, msg, "reason", reason, "err", err, "consecutive_failures", s.failures)
}

func (s *Stream) succeeded() {
	if s.failures > 0 {
		s.logger.Info("transition stream recovered", "after_failures", s.failures)
	}
	s.failures = 0
}

// beginRead opens the read-only REPEATABLE READ transaction every read of
// one poll shares, so entities, transitions and a recount describe one
// instant.
func (s *Stream) beginRead(ctx context.Context) (pgx.Tx, error) {
	if s.db.closed.Load() {
		return nil, ErrClosed
	}
	tx, err := s.db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin read-only transaction: %w", err)
	}
	// The planner's estimates for "the rows after the watermark" are poor
	// and can push a poll over jit_above_cost: compiling then takes
	// hundreds of milliseconds for a query that runs in one.
	if _, err := tx.Exec(ctx, "SET LOCAL jit = off"); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("begin read-only transaction: %w", err)
	}
	return tx, nil
}

// init takes the first full count and the position it corresponds to, and
// resumes emission from the checkpoint when there is a usable one.
func (s *Stream) init(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PollTimeout)
	defer cancel()
	ctx, span := s.tracer.Start(ctx, "stream.start")
	defer func() { endSpan(span, err) }()
	now := s.now()

	var (
		cp     Checkpoint
		haveCP bool
	)
	if s.ckpt != nil {
		cp, haveCP, err = s.loadCheckpoint(ctx)
		if err != nil {
			s.logger.Warn("could not read the stream checkpoint; starting from a fresh count", "checkpoint", s.ckpt.String(), "err", err)
			haveCP = false
		}
	}

	// The engine first, to know which tables' statistics to read; the
	// statistics before the snapshot of the count, as in read.
	eng, err := s.db.attach(ctx, s.db.pool)
	if err != nil {
		return err
	}
	s.eng = eng
	churn, _ := readChurn(ctx, s.db.pool, eng)
	tx, err := s.beginRead(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	snap, err := readSnapshot(ctx, tx) // first: it must report the transaction's snapshot
	if err != nil {
		return err
	}
	if e, err := s.db.attach(ctx, tx); err != nil {
		return err
	} else if e.Kind != eng.Kind {
		return fmt.Errorf("the database changed engines while the stream started (%s, then %s)", eng.Name, e.Name)
	}
	var ident string
	tables := eng.Tables
	if err := tx.QueryRow(ctx, identitySQL, tables.TaskTransitions, tables.StepTransitions).Scan(&ident); err != nil {
		return fmt.Errorf("identify database: %w", err)
	}
	full, named, err := s.count(ctx, tx)
	if err != nil {
		return err
	}
	pos, err := startPosition(ctx, tx, eng, s.cfg.StartGapWindow, now, snap)
	if err != nil {
		return err
	}
	if eng.Kind == engine.KindCore {
		if err := tx.QueryRow(ctx, hasAuditSQL).Scan(&s.audit); err != nil {
			return fmt.Errorf("look for the step result audit table: %w", err)
		}
		s.xids.start(snap, snap.at.Add(-coreStartLookback))
	} else if s.settleGaps, err = canSettleGaps(ctx, tx); err != nil {
		return err
	}
	s.startedAt = snap.at
	s.m.touchTables(eng)

	s.state, s.named, s.ident = full, named, ident
	s.pos, s.base = pos, pos.clone()
	s.lastRecount = now
	s.churn, s.churnRead = churn, now
	s.rowCheckAt = now
	s.labels.seed(full.groupSizes())
	// Every kept pair's transition series at zero, so the per-task panels
	// read "nothing happened" on a quiet database instead of "No data"
	// (issue 15); the cap bounds them as it bounds the series activity makes.
	s.m.touchGroups(eng, s.labels.keptLabels())
	if s.audit {
		// Last in the transaction: a failure only leaves the step series
		// to appear with their first observation.
		if err := s.touchAudit(ctx, tx); err != nil {
			s.logger.Warn("could not create the step execution series at zero", "err", err)
		}
	}
	if haveCP {
		s.resume(cp)
	}
	s.m.setPosition(s.eng, s.pos)
	s.publish(now)
	s.initialized = true
	close(s.ready)
	s.succeeded()
	s.logger.Info("transition stream started", "engine", eng.Kind,
		"task_transitions_position", s.pos[tableTaskTransitions].describe(),
		"step_transitions_position", s.pos[tableStepTransitions].describe(),
		"tasks", s.snap.Counts.TotalTasks, "steps", s.snap.Counts.TotalSteps)
	return nil
}

func (s *Stream) loadCheckpoint(ctx context.Context) (Checkpoint, bool, error) {
	ctx, span := s.tracer.Start(ctx, "stream.checkpoint.load", trace.WithAttributes(attribute.String("checkpoint", s.ckpt.String())))
	cp, ok, err := s.ckpt.Load(ctx)
	endSpan(span, err)
	return cp, ok, err
}

// resume continues emission from a checkpoint: the rows between it and the
// fresh count are emitted (they are already counted).
func (s *Stream) resume(cp Checkpoint) {
	tt, st := tableTaskTransitions, tableStepTransitions
	switch {
	case cp.Database != s.ident:
		s.logger.Warn("the stream checkpoint belongs to another database; ignoring it",
			"checkpoint", s.ckpt.String(), "checkpoint_database", cp.Database, "database", s.ident)
	case cp.TaskTransitions.ahead(s.pos[tt], s.startedAt) || cp.StepTransitions.ahead(s.pos[st], s.startedAt):
		s.logger.Warn("the stream checkpoint is ahead of the database (restored from a backup?); ignoring it",
			"checkpoint", s.ckpt.String())
	default:
		s.pos[tt], s.pos[st] = cp.TaskTransitions.resumed(), cp.StepTransitions.resumed()
		s.logger.Info("resuming the transition stream from its checkpoint", "checkpoint", s.ckpt.String(),
			"saved_at", cp.SavedAt,
			"task_transitions_from", s.pos[tt].describe(), "step_transitions_from", s.pos[st].describe())
	}
}

// count takes a full count inside tx: the health counts, the retry class
// of every step in error and the named tasks.
func (s *Stream) count(ctx context.Context, tx pgx.Tx) (*countState, map[engine.ID]namedTask, error) {
	ctx, span := s.tracer.Start(ctx, "stream.recount")
	start := time.Now()
	snap, err := queryCounts(ctx, tx, s.eng)
	var named map[engine.ID]namedTask
	if err == nil {
		named, err = readNamedTasks(ctx, tx, s.eng)
	}
	var errorSteps map[engine.ID]errorStep
	if err == nil {
		errorSteps, err = readErrorSteps(ctx, tx, s.eng, named)
	}
	var running map[engine.ID]stateSince
	if err == nil {
		running, err = readRunningSteps(ctx, tx, s.eng)
	}
	endSpan(span, err)
	if err != nil {
		return nil, nil, err
	}
	s.m.recounts.Inc()
	s.m.recountDuration.Observe(time.Since(start).Seconds())
	return countStateFrom(s.eng, snap, errorSteps, running), named, nil
}

// pollResult is what one poll read; nothing is applied until every read
// of the poll has succeeded.
type pollResult struct {
	rows            [numTables][]row
	pos             position
	late            [numTables]int
	checked         [numTables]bool // the table was read, and its gaps re-checked
	expired         [numTables]int64
	drained         bool
	recount         *countState
	named           map[engine.ID]namedTask
	recountDuration time.Duration
	// recountErr is a recount that failed after every read succeeded: the
	// rows are applied all the same.
	recountErr error
	// churn is the tables' statistics (nil when they could not be read);
	// churnedTable names a table that lost rows since the last poll.
	churn        map[string]tableChurn
	churnedTable string
	// statsReset is set when a table's deletion counter fell (a statistics
	// reset, a failover): deletions before it may be lost, so the rows are
	// counted in this poll. rowCheck is that count's outcome.
	statsReset bool
	rowCheck   rowCheckResult
	// xids is the transaction tracker after this poll (core), applied with
	// the rows; given is how many transactions it gave up waiting for.
	xids  xidTracker
	given int
}

// poll reads what was committed since the last poll and applies it. more
// is true when it stopped at MaxBatchesPerPoll with rows left.
func (s *Stream) poll(ctx context.Context) (more bool, err error) {
	start := time.Now()
	s.mu.Lock()
	s.polling = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.polling, s.pollFailed = false, err != nil
		if err == nil {
			s.pollEnded = s.now()
		}
		s.mu.Unlock()
	}()
	ctx, span := s.tracer.Start(ctx, "stream.poll")
	defer func() { endSpan(span, err) }()
	now := s.now()

	rctx, cancel := context.WithTimeout(ctx, s.cfg.PollTimeout)
	res, err := s.read(rctx, now)
	cancel()
	if err == nil && res.recountErr != nil && ctx.Err() != nil {
		err = res.recountErr // shutting down: apply nothing, as for any failed read
	}
	if err != nil {
		return false, err
	}
	s.m.pollDuration.Observe((time.Since(start) - res.recountDuration).Seconds())
	if res.recountErr != nil {
		s.recountFailed(now, res.recountErr)
	}
	out := s.apply(res, now)
	s.publish(now)
	s.succeeded()
	span.SetAttributes(attribute.Int("transitions", len(out)), attribute.Bool("drained", res.drained))

	// The reads may have used the whole poll timeout (a recount that ran
	// into it): handing over and saving get their own.
	hctx, cancel := context.WithTimeout(ctx, s.cfg.PollTimeout)
	defer cancel()
	s.handOver(hctx, out)
	s.save(hctx, now, false)
	return !res.drained, nil
}

// recountDue reports whether a poll that has drained everything at now
// runs the full recount.
func (s *Stream) recountDue(now time.Time) bool {
	return s.cfg.RecountInterval > 0 && now.Sub(s.lastRecount) >= s.cfg.RecountInterval && !now.Before(s.recountRetry)
}

// churnCheckInterval is how often a poll reads the table statistics.
const churnCheckInterval = 10 * time.Second

// earlyRecountSpacing is the least time between recounts that deletions
// ask for: a cleanup job deleting all day must not turn every poll into a
// full count.
const earlyRecountSpacing = time.Minute

// earlyRecountAllowed reports whether a recount asked for by deleted rows
// may run at now.
func (s *Stream) earlyRecountAllowed(now time.Time) bool {
	return s.cfg.RecountInterval > 0 && now.Sub(s.lastRecount) >= earlyRecountSpacing && !now.Before(s.recountRetry)
}

// recountRetryMin is the wait after a failed recount; it doubles with each
// further failure, up to RecountInterval.
const recountRetryMin = time.Minute

// recountFailed records a recount that failed in a poll whose reads
// succeeded, and backs the next attempt off: a recount that cannot fit in
// the poll timeout must not cost every poll.
func (s *Stream) recountFailed(now time.Time, err error) {
	reason := classify(err)
	s.m.recountErrors.WithLabelValues(reason).Inc()
	s.db.noteReachable(err)
	s.recountFailures++
	s.m.recountFailures.Set(float64(s.recountFailures))
	wait := min(recountRetryMin<<min(s.recountFailures-1, 16), s.cfg.RecountInterval)
	s.recountRetry = now.Add(wait)
	s.logger.Warn("recount failed; serving the incremental counts and retrying it later",
		"reason", reason, "err", err, "consecutive_failures", s.recountFailures, "retry_in", wait)
}

func (s *Stream) read(ctx context.Context, now time.Time) (pollResult, error) {
	res := pollResult{pos: s.pos.clone(), drained: true}
	// Four catalog rows (under a millisecond), not on every poll: PostgreSQL
	// publishes a session's statistics seconds late anyway. Read before the
	// snapshot is taken: a deletion counted here is then visible to a
	// recount in this poll, and one counted later is noticed next time.
	// Outside the transaction, so that a failure costs only the check:
	// deletions then wait for the periodic recount.
	if now.Sub(s.churnRead) >= churnCheckInterval {
		if churn, err := readChurn(ctx, s.db.pool, s.eng); err == nil {
			res.churn = churn
			res.churnedTable, res.statsReset = churned(s.churn, churn)
		} else if ctx.Err() == nil {
			s.logger.Debug("could not read table statistics", "err", err)
		}
	}
	tx, err := s.beginRead(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	snap, err := readSnapshot(ctx, tx) // first: it must report the transaction's snapshot
	if err != nil {
		return res, err
	}
	var scanFrom, floor time.Time
	if s.eng.Kind == engine.KindCore {
		res.xids = s.xids.clone()
		scanFrom, floor = res.xids.advance(snap)
	}

	// Entities first, and transitions only once they are drained: a
	// transition is never applied before the row of its task or step, so
	// the "no transition yet" counts never dip below zero.
	for _, t := range []table{tableTasks, tableSteps, tableTaskTransitions, tableStepTransitions} {
		if !res.drained && (t == tableTaskTransitions || t == tableStepTransitions) {
			break
		}
		var drained bool
		if s.eng.Kind == engine.KindCore {
			drained, err = s.readKeys(ctx, tx, t, &res, scanFrom)
		} else {
			drained, err = s.readTable(ctx, tx, t, &res, now, snap.xmax)
		}
		if err != nil {
			return res, err
		}
		res.checked[t] = true
		res.drained = res.drained && drained
	}
	if s.eng.Kind == engine.KindCore {
		s.raiseFloors(&res, scanFrom, floor)
	}
	for t := range numTables {
		// Gaps are re-checked (above) before they are settled or expire, so
		// a row that commits just before is still found; a table this poll
		// did not read (transitions behind a backlog of tasks or steps)
		// keeps its gaps until a poll that re-checks them.
		if res.checked[t] && s.eng.Kind == engine.KindRails {
			// A standby's snapshot does not say which transactions run
			// (stream_keys.go): there gaps wait for the horizon.
			if s.settleGaps && !snap.recovery {
				res.pos[t].resolve(snap.xmin, now)
			}
			res.expired[t] = res.pos[t].expire(now, s.cfg.GapHorizon)
		}
	}
	if s.hasUnknownNamedTasks(&res) {
		if res.named, err = readNamedTasks(ctx, tx, s.eng); err != nil {
			return res, err
		}
	}
	if res.drained && (s.rowCheckDue(now) || res.statsReset) {
		s.checkRows(ctx, tx, &res)
	}
	early := s.churnPending || res.churnedTable != ""
	if res.drained && (s.recountDue(now) || early && s.earlyRecountAllowed(now)) {
		start := time.Now()
		// Last in the transaction: a failure (a statement or poll timeout on
		// a large database) leaves every read above intact.
		recount, named, err := s.count(ctx, tx)
		res.recountDuration = time.Since(start)
		if err != nil {
			res.recountErr = err
		} else {
			res.recount, res.named = recount, named
		}
	}
	return res, nil
}

// readTable reads new rows of t, and in its first batch the rows that
// appeared in gaps, until a batch comes back short (drained) or the
// poll's batch budget is spent.
func (s *Stream) readTable(ctx context.Context, tx pgx.Tx, t table, res *pollResult, now time.Time, xmax uint64) (bool, error) {
	cur := &res.pos[t]
	gaps := *cur
	for range s.cfg.MaxBatchesPerPoll {
		qctx, span := s.tracer.Start(ctx, "stream.read", trace.WithAttributes(
			attribute.String("db.system", "postgresql"), attribute.String("db.sql.table", t.name(s.eng))))
		rows, err := readRows(qctx, tx, t, cur.Watermark, s.cfg.BatchSize, gaps)
		span.SetAttributes(attribute.Int("rows", len(rows)))
		endSpan(span, err)
		if err != nil {
			return false, err
		}
		gaps = Cursor{}
		var fresh, late []int64
		for _, r := range rows {
			if id := r.id.Int(); id > cur.Watermark {
				fresh = append(fresh, id)
			} else {
				late = append(late, id)
			}
		}
		slices.Sort(fresh)
		cur.fill(late)
		cur.advance(fresh, now, xmax)
		res.rows[t] = append(res.rows[t], rows...)
		res.late[t] += len(late)
		if len(fresh) < s.cfg.BatchSize {
			return true, nil
		}
	}
	return false, nil
}

func (s *Stream) hasUnknownNamedTasks(res *pollResult) bool {
	for _, rows := range res.rows {
		for i := range rows {
			if id := rows[i].namedTask; id != nil {
				if _, ok := s.named[*id]; !ok {
					return true
				}
			}
		}
	}
	return false
}

func (s *Stream) namedTaskOf(id *engine.ID) namedTask {
	if id == nil {
		return namedTask{}
	}
	return s.named[*id] // a dangling id is the ("", "") group, as in the full count
}

// apply moves the counts, emits metrics, advances the position and returns
// the transitions for the sinks.
func (s *Stream) apply(res pollResult, now time.Time) []Transition {
	if res.named != nil {
		s.named = res.named
	}
	if len(s.sinks) > 0 { // only the sinks (traces) read the kept runs
		s.runs.add(&res)
	}
	for _, r := range res.rows[tableTasks] {
		if !s.base[tableTasks].Contains(r.id) {
			s.state.newTask(s.namedTaskOf(r.namedTask).group)
		}
	}
	for _, r := range res.rows[tableSteps] {
		if !s.base[tableSteps].Contains(r.id) {
			s.state.newStep(s.namedTaskOf(r.namedTask).group)
		}
	}

	var out []Transition
	for _, t := range []table{tableTaskTransitions, tableStepTransitions} {
		rows := res.rows[t]
		// A step's rows in sort_key order: leaving error must find the
		// class that entering it recorded.
		slices.SortFunc(rows, func(a, b row) int {
			return cmp.Or(a.taskID.Compare(b.taskID), a.stepID.Compare(b.stepID), cmp.Compare(a.sortKey, b.sortKey),
				a.at.Compare(b.at), a.id.Compare(b.id))
		})
		for i := range rows {
			r := &rows[i]
			nt := s.namedTaskOf(r.namedTask)
			from := ""
			if r.fromState != nil {
				from = *r.fromState
			}
			if !s.base[t].Contains(r.id) {
				if t == tableTaskTransitions {
					s.state.moveTask(nt.group, from, r.toState)
				} else {
					s.state.moveStep(nt.group, r.stepID, from, r.toState, r.class, r.at)
				}
			}
			ns, task := s.labels.labels(nt.group)
			ex := s.exemplar(r.taskID)
			s.m.emit(s.eng, t, r, ns, task, ex)
			s.m.emitAudit(s.steps, r, ns, task, ex)
			if !s.traceBase[t].Contains(r.id) {
				tr := Transition{
					Step: t == tableStepTransitions, ID: r.id, TaskID: r.taskID, StepID: r.stepID,
					Namespace: nt.namespace, TaskName: nt.task, Version: nt.version,
					FromState: from, ToState: r.toState, SortKey: r.sortKey, At: r.at,
				}
				if r.fromAt != nil {
					tr.FromAt = *r.fromAt
				}
				out = append(out, tr)
			}
		}
	}
	slices.SortFunc(out, func(a, b Transition) int {
		return cmp.Or(cmp.Compare(b2i(a.Step), b2i(b.Step)), a.ID.Compare(b.ID))
	})
	if len(s.sinks) > 0 {
		s.runs.attach(out, res.pos)
	}

	if s.eng.Kind == engine.KindCore {
		s.xids = res.xids
		if res.given > 0 {
			s.logger.Warn("gave up waiting for long-running transactions; the next recount corrects the counts if they commit rows older than the stream's floor",
				"transactions", res.given, "gap_horizon", s.cfg.GapHorizon, "seen_limit", maxSeenKeys)
		}
	}
	for t := range numTables {
		name := t.name(s.eng)
		s.m.rows.WithLabelValues(name).Add(float64(len(res.rows[t])))
		s.m.lateRows.WithLabelValues(name).Add(float64(res.late[t]))
		s.m.gapsExpired.WithLabelValues(name).Add(float64(res.expired[t]))
		if res.expired[t] > 0 && s.eng.Kind == engine.KindRails {
			s.logger.Warn("gave up waiting for rows in gaps below the watermark; the next recount corrects the counts if they commit later",
				"table", name, "ids", res.expired[t], "gap_horizon", s.cfg.GapHorizon)
		}
		if t == tableTaskTransitions || t == tableStepTransitions {
			s.dirty = s.dirty || len(res.rows[t]) > 0 || res.expired[t] > 0
		}
	}
	s.pos = res.pos
	if res.churn != nil {
		s.churn, s.churnRead = res.churn, now
	}
	if res.rowCheck.done {
		s.rowCheckDone(now, res.rowCheck.took)
	}
	if res.statsReset {
		s.logger.Info("a Tasker table's deletion counter fell (statistics reset, or a failover); counting the rows to catch deletions it no longer shows")
	}
	if t := res.rowCheck.table; t != "" && !s.churnPending {
		s.logger.Warn("a Tasker table holds another number of rows than the counts: rows were deleted outside Statesman (on a standby the table statistics do not show it); recounting",
			"table", t, "rows", res.rowCheck.rows, "counted", res.rowCheck.want,
			"at_most_in", max(earlyRecountSpacing-now.Sub(s.lastRecount), 0))
	} else if res.churnedTable != "" && !s.churnPending {
		s.logger.Info("rows were deleted from a Tasker table (or it was truncated) outside Statesman; recounting",
			"table", res.churnedTable, "at_most_in", max(earlyRecountSpacing-now.Sub(s.lastRecount), 0))
	}
	s.churnPending = (s.churnPending || res.churnedTable != "") && res.recount == nil
	if res.recount != nil {
		d := s.state.drift(res.recount)
		s.m.setDrift(d)
		if !d.zero() {
			s.logger.Warn("recount found drift in the incremental counts; corrected",
				"tasks", d.Tasks, "steps", d.Steps, "error_steps", d.ErrorSteps)
		}
		s.state = res.recount
		s.base = s.pos.clone()
		s.lastRecount = now
		s.recountFailures, s.recountRetry = 0, time.Time{}
		s.m.recountFailures.Set(0)
	}
	s.m.setPosition(s.eng, s.pos)
	if res.drained {
		s.m.caughtUp.Set(1)
	} else {
		s.m.caughtUp.Set(0)
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *Stream) exemplar(taskID engine.ID) prometheus.Labels {
	if s.traceIDs == nil || taskID.IsZero() {
		return nil
	}
	id, ok := s.traceIDs(taskID)
	if !ok {
		return nil
	}
	return prometheus.Labels{"trace_id": id}
}

// publish makes the current counts what Refresh serves.
func (s *Stream) publish(now time.Time) {
	snap := s.state.snapshot()
	s.mu.Lock()
	s.snap, s.lastOK, s.err = &snap, now, nil
	s.pollEnded = now
	s.mu.Unlock()
	s.m.lastPoll.Set(float64(now.UnixNano()) / 1e9)
}

// handOver gives the poll's transitions to the sinks if this replica holds
// the lease, after replaying what a previous holder left unexported.
func (s *Stream) handOver(ctx context.Context, out []Transition) {
	leader := true
	if s.lease != nil {
		if s.leader && !s.lease.Held() {
			// Lost between polls: keepLease found it taken, or gave it up
			// while the stream could not read. Taking it again must replay.
			s.logger.Info("lost the stream lease: another replica exports traces now")
			s.leader = false
		}
		hctx, span := s.tracer.Start(ctx, "stream.lease.hold")
		held, err := s.lease.Hold(hctx)
		endSpan(span, err)
		if err != nil {
			s.leaseError(err, slog.LevelWarn, "could not renew the stream lease")
		}
		leader = held
		if leader && !s.leader {
			s.logger.Info("took the stream lease: this replica exports traces now", "token", s.lease.Token())
			out = s.takeOver(ctx, out)
		} else if !leader && s.leader {
			s.logger.Info("lost the stream lease: another replica exports traces now")
		}
		s.leader = leader
		s.m.leader.Set(float64(b2i(leader)))
	}
	if !leader || len(out) == 0 {
		return
	}
	for _, sink := range s.sinks {
		sctx, span := s.tracer.Start(ctx, "stream.sink", trace.WithAttributes(attribute.Int("transitions", len(out))))
		err := sink.Consume(sctx, out)
		endSpan(span, err)
		if err != nil {
			s.m.sinkErrors.Inc()
			s.logger.Warn("stream consumer failed", "err", err)
		}
	}
}

// takeOver runs when this replica becomes the lease holder, with the
// poll's transitions. Rows the shared checkpoint contains were exported
// by the previous holder and are dropped; terminal task transitions this
// replica read while it did not hold the lease, and the checkpoint does
// not contain, are replayed, so their traces are not lost in the
// handover.
func (s *Stream) takeOver(ctx context.Context, polled []Transition) []Transition {
	if s.ckpt == nil || !s.ckpt.Shared() {
		return polled
	}
	cp, ok, err := s.loadCheckpoint(ctx)
	if err != nil || !ok || cp.Database != s.ident {
		if err != nil {
			s.logger.Warn("could not read the shared checkpoint on taking the lease; nothing replayed", "err", err)
		}
		return polled
	}
	s.traceBase[tableTaskTransitions] = cp.TaskTransitions.clone()
	s.traceBase[tableStepTransitions] = cp.StepTransitions.clone()
	var out []Transition
	inPoll := map[engine.ID]bool{}
	for _, t := range polled {
		if !t.Step {
			inPoll[t.ID] = true
		}
		if !s.traceBase[tableFor(t)].Contains(t.ID) {
			out = append(out, t)
		}
	}
	limit := s.cfg.BatchSize * s.cfg.MaxBatchesPerPoll
	rows, err := s.replay(ctx, cp.TaskTransitions, limit)
	if err != nil {
		s.logger.Warn("could not replay the transitions the previous lease holder left unexported", "err", err)
		return out
	}
	if len(rows) == limit {
		s.logger.Warn("replay after taking the lease was cut short; older terminal transitions are not exported", "limit", limit)
	}
	var replayed []Transition
	for _, r := range rows {
		if inPoll[r.id] {
			continue // this poll read it: it is in out already
		}
		nt := s.namedTaskOf(r.namedTask)
		replayed = append(replayed, Transition{
			ID: r.id, TaskID: r.taskID, Namespace: nt.namespace, TaskName: nt.task, Version: nt.version,
			ToState: r.toState, SortKey: r.sortKey, At: r.at, Replay: true,
		})
	}
	slices.SortFunc(replayed, func(a, b Transition) int { return a.ID.Compare(b.ID) })
	s.m.replayed.Add(float64(len(replayed)))
	s.logger.Info("replayed terminal task transitions the previous lease holder had not exported", "transitions", len(replayed))
	return append(replayed, out...)
}

func tableFor(t Transition) table {
	if t.Step {
		return tableStepTransitions
	}
	return tableTaskTransitions
}

// replay reads the terminal task transitions this replica has read and
// the checkpoint old had not.
func (s *Stream) replay(ctx context.Context, old Cursor, limit int) ([]row, error) {
	pos := s.pos[tableTaskTransitions]
	var ranges []Gap
	if s.eng.Kind == engine.KindRails {
		if ranges = pos.since(old); len(ranges) == 0 {
			return nil, nil
		}
	}
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if s.eng.Kind == engine.KindCore {
		return readCoreReplay(ctx, tx, pos, old, limit)
	}
	return readReplay(ctx, tx, ranges, limit)
}

// save writes the checkpoint when the position moved, the save interval
// has passed (or final) and this replica may write it.
func (s *Stream) save(ctx context.Context, now time.Time, final bool) {
	if s.ckpt == nil || !s.dirty {
		return
	}
	if s.ckpt.Shared() && s.lease != nil && (!s.leader || !s.lease.Held()) {
		return // a lease lost since the last poll (given up, expired) must not write either
	}
	if !final && now.Sub(s.lastSave) < s.cfg.Checkpoint.Interval {
		return
	}
	cp := Checkpoint{
		Database: s.ident, SavedAt: now.UTC(),
		TaskTransitions: s.pos[tableTaskTransitions].clone(),
		StepTransitions: s.pos[tableStepTransitions].clone(),
	}
	ctx, span := s.tracer.Start(ctx, "stream.checkpoint.save", trace.WithAttributes(attribute.String("checkpoint", s.ckpt.String())))
	err := s.ckpt.Save(ctx, cp)
	endSpan(span, err)
	if err != nil {
		s.m.checkpoints.WithLabelValues("error").Inc()
		s.logger.Warn("could not save the stream checkpoint", "checkpoint", s.ckpt.String(), "err", err)
		return
	}
	s.m.checkpoints.WithLabelValues("ok").Inc()
	s.dirty, s.lastSave = false, now
}

// Refresh serves the incremental counts as a Snapshot, with the
// connection counts queried now; it implements CountSource for the
// Refresher. Before the first count it waits for it (bounded by ctx), or
// returns the error that keeps it from happening. When the last successful
// poll is older than StaleAfter it fails with an error wrapping
// ErrStreamStale and the last poll error.
func (s *Stream) Refresh(ctx context.Context) (Snapshot, error) {
	start := time.Now()
	select {
	case <-s.ready:
	case <-s.tried:
	case <-ctx.Done():
		return Snapshot{}, fmt.Errorf("waiting for the transition stream's first count: %w", ctx.Err())
	}
	select {
	case <-s.ready:
	default:
		s.mu.RLock()
		err := s.err
		s.mu.RUnlock()
		return Snapshot{}, fmt.Errorf("transition stream has no counts yet: %w", err)
	}
	s.mu.RLock()
	snap, lastOK, lastErr := *s.snap, s.lastOK, s.err
	s.mu.RUnlock()
	if age := s.now().Sub(lastOK); age > s.cfg.StaleAfter {
		if lastErr != nil {
			return Snapshot{}, fmt.Errorf("%w: last poll %s ago: %w", ErrStreamStale, age.Round(time.Second), lastErr)
		}
		return Snapshot{}, fmt.Errorf("%w: last poll %s ago", ErrStreamStale, age.Round(time.Second))
	}
	err := RetryRecoveryConflict(ctx, func(ctx context.Context) error {
		return scanServer(s.db.pool.QueryRow(ctx, serverSQL), &snap.Counts, &snap.Replication)
	})
	s.db.noteReachable(err)
	if err != nil {
		return Snapshot{}, fmt.Errorf("count connections: %w", err)
	}
	s.db.noteReplication(snap.Replication)
	snap.OldestRetryableErrorStep, snap.OldestRetryableUnknown = s.oldestRetryable(ctx)
	snap.Duration = time.Since(start)
	snap.TakenAt = time.Now().UTC()
	return snap, nil
}

// oldestRetryableEvery bounds how often Refresh looks for the oldest
// retryable step in error: its query costs in proportion to the steps in
// error (about 70 ms for 8,000 on bench_100k), and the gauge feeds an alert
// measured in tens of minutes.
const oldestRetryableEvery = time.Minute

// oldestRetryable returns Snapshot.OldestRetryableErrorStep from a query at
// most oldestRetryableEvery old, and whether it is unknown: the last query
// failed (logged when it starts failing).
func (s *Stream) oldestRetryable(ctx context.Context) (time.Time, bool) {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	if !s.retryAt.IsZero() && s.now().Sub(s.retryAt) < oldestRetryableEvery {
		return s.retryOldest, s.retryFailed
	}
	var at *time.Time
	err := RetryRecoveryConflict(ctx, func(ctx context.Context) error {
		return s.db.pool.QueryRow(ctx, oldestRetryableSQLFor(s.eng)).Scan(&at)
	})
	if err != nil && !s.retryFailed {
		s.logger.Warn("could not find the oldest retryable step in error; its age is not exported until the query works", "err", err)
	}
	s.retryFailed, s.retryAt = err != nil, s.now()
	s.retryOldest = earliest(time.Time{}, at)
	return s.retryOldest, s.retryFailed
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
