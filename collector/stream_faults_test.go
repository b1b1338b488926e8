package collector

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// ctxSink records whether the context each Consume got was still live.
type ctxSink struct {
	mu   sync.Mutex
	errs []error
}

func (c *ctxSink) Consume(ctx context.Context, _ []Transition) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, ctx.Err())
	return nil
}

func (c *ctxSink) deadErrs() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []error
	for _, err := range c.errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// newStreamOn is newTestStream on a DB opened with opts (URL included).
func newStreamOn(t *testing.T, opts DBConfig, cfg StreamConfig, ckpt Checkpointer, sopts ...StreamOption) testStream {
	t.Helper()
	db, err := Open(opts, nil, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(db.Close)
	reg := prometheus.NewRegistry()
	sink := &recordingSink{}
	s := NewStream(db, cfg, ckpt, reg, testLogger(t), append([]StreamOption{WithSink(sink)}, sopts...)...)
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return testStream{Stream: s, db: db, reg: reg, sink: sink}
}

// lockRecount holds an ACCESS EXCLUSIVE lock on tasker_task_namespaces, as
// a migration would. A poll never reads that table while every named task
// is known; a full count does, so only the recount waits for the lock.
// unlock is idempotent and also runs at cleanup.
func lockRecount(t *testing.T, pg pgtest.DB) (unlock func()) {
	t.Helper()
	ctx := testCtx(t)
	tx, err := pg.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() { once.Do(func() { _ = tx.Rollback(context.Background()) }) }
	t.Cleanup(unlock)
	if _, err := tx.Exec(ctx, "LOCK TABLE tasker_task_namespaces IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	return unlock
}

// recountWaiting reports whether a query of pg's database waits for the
// lock lockRecount holds.
func recountWaiting(t *testing.T, f *fixture) bool {
	t.Helper()
	var n int
	err := f.conn.QueryRow(f.ctx, `SELECT count(*) FROM pg_locks
		WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND relation = 'tasker_task_namespaces'::regclass AND NOT granted`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// A recount that fails (here: it waits behind a lock until a lock,
// statement or poll timeout ends it, as a recount on a large database
// runs into the statement or poll timeout) must not fail the poll: the rows
// read before it are applied and handed over with a live context, the
// failure is counted, and the next recount waits for a back-off instead of
// failing every poll.
func TestStreamRecountFailureIsNotFatal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		db          DBConfig
		pollTimeout time.Duration
	}{
		{"lock timeout", DBConfig{lockTimeout: 100 * time.Millisecond}, 0},
		{"statement timeout", DBConfig{StatementTimeout: time.Second, lockTimeout: time.Minute}, 0},
		{"poll timeout", DBConfig{StatementTimeout: time.Minute, lockTimeout: time.Minute}, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.NewTasker(t)
			f := newFixture(t, pg)
			nt := f.namedTask("default", "welcome", "0.1.0")
			x := f.task(nt, "pending")
			cfg := testStreamConfig()
			cfg.RecountInterval = time.Hour
			if tc.pollTimeout > 0 {
				cfg.PollTimeout = tc.pollTimeout
			}
			opts := tc.db
			opts.URL = secret.URL(pg.URL)
			sink := &ctxSink{}
			s := newStreamOn(t, opts, cfg, nil, WithSink(sink))
			clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
			s.now = clock.Now
			ctx := testCtx(t)
			s.drain(t)

			unlock := lockRecount(t, pg)
			id := statesman(t, ctx, f.conn, tableTaskTransitions, x, "in_progress")
			clock.Advance(cfg.RecountInterval) // the next poll recounts
			if _, err := s.poll(ctx); err != nil {
				t.Fatalf("poll with a failing recount = %v; want its rows applied and no error", err)
			}
			if got := emittedIDs(s.sink.all(), false); !slices.Equal(got, []int64{id}) {
				t.Fatalf("emitted %v, want [%d]", got, id)
			}
			if got := s.pos[tableTaskTransitions].Watermark; got != id {
				t.Errorf("watermark = %d, want %d", got, id)
			}
			snap, err := s.Refresh(ctx)
			if err != nil {
				t.Fatalf("Refresh after the failed recount: %v", err)
			}
			if snap.Counts.InProgressTasks != 1 {
				t.Errorf("in-progress tasks served = %d, want 1", snap.Counts.InProgressTasks)
			}
			if n := testutil.ToFloat64(s.m.recountErrors.WithLabelValues(ReasonTimeout)); n != 1 {
				t.Errorf("recount_errors_total{reason=timeout} = %v, want 1", n)
			}
			if n := testutil.ToFloat64(s.m.recounts); n != 1 {
				t.Errorf("recounts_total = %v, want 1 (the first count only)", n)
			}
			if n := testutil.ToFloat64(s.m.recountFailures); n != 1 {
				t.Errorf("recount_consecutive_failures = %v, want 1", n)
			}
			if errs := sink.deadErrs(); len(errs) > 0 {
				t.Errorf("the sink got a dead context after the recount failed: %v", errs)
			}

			// Backed off: the next poll does not try again, and advances.
			id2 := statesman(t, ctx, f.conn, tableTaskTransitions, x, "complete")
			if _, err := s.poll(ctx); err != nil {
				t.Fatalf("poll during the back-off: %v", err)
			}
			if got := emittedIDs(s.sink.all(), false); !slices.Equal(got, []int64{id, id2}) {
				t.Fatalf("emitted %v, want [%d %d]", got, id, id2)
			}
			if n := testutil.ToFloat64(s.m.recountErrors.WithLabelValues(ReasonTimeout)); n != 1 {
				t.Errorf("recount_errors_total{reason=timeout} = %v after a poll in the back-off, want 1 (not retried)", n)
			}

			// After the back-off, with the lock gone, the recount runs.
			unlock()
			clock.Advance(cfg.RecountInterval)
			s.drain(t)
			if n := testutil.ToFloat64(s.m.recounts); n != 2 {
				t.Errorf("recounts_total = %v after the back-off, want 2", n)
			}
			if n := testutil.ToFloat64(s.m.recountFailures); n != 0 {
				t.Errorf("recount_consecutive_failures = %v after a recount succeeded, want 0", n)
			}
			if d := testutil.ToFloat64(s.m.drift.WithLabelValues("tasks")); d != 0 {
				t.Errorf("drift = %v, want 0", d)
			}
			s.assertMatchesRecount(t)
		})
	}
}

func TestRecountBackoff(t *testing.T) {
	t.Parallel()
	s := &Stream{cfg: StreamConfig{RecountInterval: 10 * time.Minute}, m: newStreamMetrics(nil),
		logger: testLogger(t), db: &DB{}}
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s.lastRecount = t0
	now := t0.Add(10 * time.Minute)
	if !s.recountDue(now) {
		t.Fatal("recount not due after recount_interval")
	}
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute} {
		s.recountFailed(now, context.DeadlineExceeded)
		if s.recountDue(now.Add(want - time.Nanosecond)) {
			t.Errorf("failure %d: recount due before its back-off of %s", i+1, want)
		}
		if !s.recountDue(now.Add(want)) {
			t.Errorf("failure %d: recount not due after its back-off of %s", i+1, want)
		}
		now = now.Add(want)
	}
}

// A transition gap must not expire in a poll that did not re-check it: a
// backlog of task or step rows keeps the transition tables from being read,
// and a row committed inside the horizon would be lost.
func TestStreamGapExpiresOnlyAfterRecheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		tbl     table
		backlog table
	}{
		{"task transitions behind new tasks", tableTaskTransitions, tableTasks},
		{"step transitions behind new steps", tableStepTransitions, tableSteps},
		{"task transitions behind new steps", tableTaskTransitions, tableSteps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.NewTasker(t)
			f := newFixture(t, pg)
			nt := f.namedTask("default", "welcome", "0.1.0")
			x := f.task(nt, "pending")
			y := f.task(nt, "pending")
			a, b := x, y
			if tc.tbl == tableStepTransitions {
				a, b = f.step(x, stepSpec{}, "pending"), f.step(y, stepSpec{}, "pending")
			}
			cfg := testStreamConfig()
			cfg.BatchSize = 5
			cfg.MaxBatchesPerPoll = 1
			cfg.GapHorizon = time.Minute
			s := newTestStream(t, pg.URL, cfg, nil)
			clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
			s.now = clock.Now
			ctx := testCtx(t)
			s.drain(t)
			start := s.base.clone()

			txA, err := pg.Conn(t).Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = txA.Rollback(context.Background()) })
			idA := statesman(t, ctx, txA, tc.tbl, a, "in_progress")
			statesman(t, ctx, f.conn, tc.tbl, b, "in_progress")
			s.drain(t)
			if cur := s.pos[tc.tbl]; cur.Contains(engine.IntID(idA)) {
				t.Fatalf("cursor %+v: want %d in a gap", cur, idA)
			}
			clock.Advance(30 * time.Second)
			if err := txA.Commit(ctx); err != nil { // inside the horizon
				t.Fatal(err)
			}
			for range 4 * cfg.BatchSize {
				if tc.backlog == tableTasks {
					f.task(nt)
				} else {
					f.step(x, stepSpec{})
				}
			}
			clock.Advance(31 * time.Second) // the gap is older than the horizon now
			more, err := s.poll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !more {
				t.Fatal("the backlog did not keep the poll from reading the transitions")
			}
			if n := testutil.ToFloat64(s.m.gapsExpired.WithLabelValues(tc.tbl.String())); n != 0 {
				t.Errorf("%s: %v gap ids expired in a poll that did not re-check them", tc.tbl, n)
			}
			s.drain(t)
			if !slices.Contains(emittedIDs(s.sink.all(), tc.tbl == tableStepTransitions), idA) {
				t.Errorf("%s %d, committed 30 s inside the horizon, was never emitted", tc.tbl, idA)
			}
			if n := testutil.ToFloat64(s.m.gapsExpired.WithLabelValues(tc.tbl.String())); n != 0 {
				t.Errorf("%s: %v gap ids expired, want 0 (the row was found)", tc.tbl, n)
			}
			if len(s.pos[tc.tbl].Gaps) != 0 {
				t.Errorf("gaps left open: %+v", s.pos[tc.tbl].Gaps)
			}
			s.assertMatchesRecount(t)
			assertExactlyOnce(t, f.conn, start, s.sink.all())
		})
	}
}

func TestStreamLeaseHealth(t *testing.T) {
	t.Parallel()
	ttl := time.Second
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		polling    bool
		pollFailed bool
		lastOK     time.Duration // before now
		pollEnded  time.Duration // before now
		want       bool
	}{
		{"just polled", false, false, 20 * time.Millisecond, 10 * time.Millisecond, true},
		{"between polls", false, false, ttl / 2, ttl / 2, true},
		{"in a long poll (recount, slow export)", true, false, 10 * ttl, 10 * ttl, true},
		{"stuck outside a poll", false, false, 2 * ttl, 2 * ttl, false},
		{"first failure, last success recent", false, true, ttl / 2, ttl / 2, true},
		{"failing for longer than the ttl", false, true, 2 * ttl, 2 * ttl, false},
		{"retrying after failing for longer than the ttl", true, true, 2 * ttl, 2 * ttl, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Stream{cfg: StreamConfig{Lease: LeaseConfig{TTL: ttl}}}
			s.polling, s.pollFailed = tc.polling, tc.pollFailed
			s.lastOK, s.pollEnded = now.Add(-tc.lastOK), now.Add(-tc.pollEnded)
			if got := s.leaseHealthy(now); got != tc.want {
				t.Errorf("leaseHealthy = %v, want %v", got, tc.want)
			}
		})
	}
}

// leaseReplica is a stream on the shared Redis st with its own lease.
func leaseReplica(t *testing.T, pg pgtest.DB, st store.Store, cfg StreamConfig, opts ...StreamOption) testStream {
	t.Helper()
	lease, err := newLease(st, cfg.Lease)
	if err != nil {
		t.Fatal(err)
	}
	return newStreamOn(t, DBConfig{URL: secret.URL(pg.URL), StatementTimeout: time.Minute, lockTimeout: time.Minute}, cfg,
		NewCheckpointer(checkpointsIn(st), cfg.Checkpoint), append(opts, WithLease(lease))...)
}

// A leader that can no longer read the database (but still reaches the
// store) gives the lease up, so a replica that can read exports traces and
// writes the checkpoint.
func TestStreamLeaderWithoutDatabaseGivesLeaseUp(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	task := f.task(f.namedTask("default", "welcome", "0.1.0"), "pending")
	st := openRedis(t, storetest.Prefix(t))
	cfg := testStreamConfig()
	cfg.Lease.TTL = 300 * time.Millisecond
	ctx := testCtx(t)
	acfg := cfg
	acfg.Checkpoint.Interval = time.Hour // a holds unsaved progress when it fails
	a := leaseReplica(t, pg, st, acfg)
	a.Start(ctx)
	waitFor(t, "a to take the lease", func() bool { return testutil.ToFloat64(a.m.leader) == 1 })
	b := leaseReplica(t, pg, st, cfg)
	b.Start(ctx)
	<-b.Ready()
	// The first row a reads is saved at once, the second waits for the
	// checkpoint interval.
	for _, state := range []string{"in_progress", "error"} {
		id := statesman(t, ctx, f.conn, tableTaskTransitions, task, state)
		waitFor(t, "a to export "+state, func() bool { return slices.Contains(emittedIDs(a.sink.all(), false), id) })
	}

	a.db.Close() // every poll of a fails from now on
	waitFor(t, "b to take the lease from a, whose polls fail", func() bool { return testutil.ToFloat64(b.m.leader) == 1 })
	if a.lease.Held() || testutil.ToFloat64(a.m.leader) != 0 {
		t.Errorf("a still believes it leads: held %v, leader gauge %v", a.lease.Held(), testutil.ToFloat64(a.m.leader))
	}
	id := statesman(t, ctx, f.conn, tableTaskTransitions, task, "pending")
	waitFor(t, "b to export a new transition", func() bool {
		return slices.Contains(emittedIDs(b.sink.all(), false), id)
	})
	ckpt := NewCheckpointer(checkpointsIn(st), cfg.Checkpoint)
	saved := func() int64 {
		cp, ok, err := ckpt.Load(ctx)
		if err != nil || !ok {
			t.Fatalf("shared checkpoint: %v, %v", ok, err)
		}
		return cp.TaskTransitions.Watermark
	}
	waitFor(t, "b to save the checkpoint", func() bool { return saved() >= id })
	// a, which gave the lease up, must not write its older position on
	// stopping.
	_ = a.Shutdown(context.Background())
	if got := saved(); got < id {
		t.Errorf("shared checkpoint at %d after a stopped, want b's %d", got, id)
	}
}

// A poll still under way (a recount on a large database) keeps the lease
// renewed, however old the last successful poll is.
func TestStreamKeepsLeaseThroughLongRecount(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	f.task(f.namedTask("default", "welcome", "0.1.0"), "pending")
	st := openRedis(t, storetest.Prefix(t))
	cfg := testStreamConfig()
	cfg.Lease.TTL = 300 * time.Millisecond
	ctx := testCtx(t)
	acfg := cfg
	acfg.RecountInterval = time.Second
	a := leaseReplica(t, pg, st, acfg)
	a.Start(ctx)
	waitFor(t, "a to take the lease", func() bool { return testutil.ToFloat64(a.m.leader) == 1 })
	b := leaseReplica(t, pg, st, cfg) // no recount: the lock does not stop it
	b.Start(ctx)
	<-b.Ready()

	unlock := lockRecount(t, pg)
	waitFor(t, "a's recount to wait for the lock", func() bool { return recountWaiting(t, f) })
	// From a lease TTL after its last successful poll ended, only the poll
	// under way can justify a renewal.
	a.mu.RLock()
	since := a.pollEnded.Add(cfg.Lease.TTL)
	a.mu.RUnlock()
	waitFor(t, "a to renew the lease while its recount runs", func() bool {
		l := a.lease.(*coord.Lease)
		return l.Holding() && l.Renewed().After(since)
	})
	if testutil.ToFloat64(b.m.leader) != 0 {
		t.Error("b took the lease while a was recounting")
	}
	recounts := testutil.ToFloat64(a.m.recounts)
	unlock()
	waitFor(t, "a's recount to finish", func() bool { return testutil.ToFloat64(a.m.recounts) > recounts })
	if !a.lease.Held() || testutil.ToFloat64(a.m.recountErrors.WithLabelValues(ReasonTimeout)) != 0 {
		t.Errorf("a's recount: lease held %v, recount errors %v", a.lease.Held(),
			testutil.ToFloat64(a.m.recountErrors.WithLabelValues(ReasonTimeout)))
	}
}

func TestChurned(t *testing.T) {
	t.Parallel()
	base := map[string]tableChurn{"tasker_tasks": {deleted: 5, filenode: 100}, "tasker_workflow_steps": {deleted: 0, filenode: 200}}
	with := func(name string, c tableChurn) map[string]tableChurn {
		m := maps.Clone(base)
		m[name] = c
		return m
	}
	reset := with("tasker_tasks", tableChurn{deleted: 0, filenode: 100})
	resetThenDeleted := maps.Clone(reset)
	resetThenDeleted["tasker_workflow_steps"] = tableChurn{deleted: 2, filenode: 200}
	for _, tc := range []struct {
		name        string
		before, now map[string]tableChurn
		want        string
		reset       bool
	}{
		{"no baseline yet", nil, base, "", false},
		{"nothing changed", base, base, "", false},
		{"rows deleted", base, with("tasker_workflow_steps", tableChurn{deleted: 3, filenode: 200}), "tasker_workflow_steps", false},
		{"truncated", base, with("tasker_tasks", tableChurn{deleted: 5, filenode: 101}), "tasker_tasks", false},
		// A fall is a reset: the rows are counted, and the check goes on.
		{"statistics reset", base, reset, "", true},
		{"deleted after a reset", reset, with("tasker_tasks", tableChurn{deleted: 1, filenode: 100}), "tasker_tasks", false},
		{"reset of one table, deletions in another", base, resetThenDeleted, "tasker_workflow_steps", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reset := churned(tc.before, tc.now)
			if got != tc.want || reset != tc.reset {
				t.Errorf("churned = %q, reset %v; want %q, reset %v", got, reset, tc.want, tc.reset)
			}
		})
	}
}

// Rows deleted outside Statesman are invisible to the stream: the
// deletion shows in PostgreSQL's table statistics, and the stream recounts
// within a minute instead of waiting for recount_interval.
func TestStreamRecountsAfterDeletes(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "welcome", "0.1.0")
	doomed := f.task(nt, "pending", "in_progress", "complete")
	f.step(doomed, stepSpec{attempts: n32(1), retryLimit: n32(3)}, "pending", "in_progress", "complete")
	f.task(nt, "pending")
	cfg := testStreamConfig()
	cfg.RecountInterval = time.Hour
	s := newTestStream(t, pg.URL, cfg, nil)
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	s.drain(t)
	ctx := testCtx(t)

	// The statistics of this session reach the shared counters when its
	// transaction ends; force that instead of waiting for the idle flush.
	conn := pg.Conn(t)
	if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `
		WITH s AS (DELETE FROM tasker_workflow_step_transitions WHERE workflow_step_id IN
		           (SELECT workflow_step_id FROM tasker_workflow_steps WHERE task_id = $1)),
		     w AS (DELETE FROM tasker_workflow_steps WHERE task_id = $1),
		     t AS (DELETE FROM tasker_task_transitions WHERE task_id = $1)
		DELETE FROM tasker_tasks WHERE task_id = $1`, doomed); err != nil {
		t.Fatal(err)
	}
	recounts := testutil.ToFloat64(s.m.recounts)

	// Within the spacing: noted, not yet recounted.
	clock.Advance(10 * time.Second)
	waitForStats(t, ctx, conn)
	s.drain(t)
	if n := testutil.ToFloat64(s.m.recounts); n != recounts {
		t.Fatalf("recounts = %v ten seconds after the last one; want none yet", n)
	}
	if !s.churnPending {
		t.Fatal("the deletion was not noticed")
	}
	// Past it: recounted, and the counts match the database again.
	clock.Advance(time.Minute)
	s.drain(t)
	if n := testutil.ToFloat64(s.m.recounts); n != recounts+1 {
		t.Fatalf("recounts = %v, want %v: the deletion did not trigger one", n, recounts+1)
	}
	s.assertMatchesRecount(t)
	if d := testutil.ToFloat64(s.m.drift.WithLabelValues("tasks")); d != 1 {
		t.Errorf("task drift = %v, want 1 (the deleted task)", d)
	}
	// Nothing more deleted: no further early recount. (assertMatchesRecount
	// counted once more itself.)
	recounts = testutil.ToFloat64(s.m.recounts)
	clock.Advance(2 * time.Minute)
	s.drain(t)
	if n := testutil.ToFloat64(s.m.recounts); n != recounts {
		t.Errorf("recounts = %v after a quiet poll, want %v", n, recounts)
	}
}

// waitForStats waits until the deletes of conn's last transaction are in
// pg_stat_user_tables for all four tables.
func waitForStats(t *testing.T, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		// Each table's counters are flushed on their own (a busy one
		// later), so wait for all four.
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables WHERE n_tup_del > 0 AND relname IN
			('tasker_tasks', 'tasker_workflow_steps', 'tasker_task_transitions', 'tasker_workflow_step_transitions')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the deletion never reached pg_stat_user_tables")
		}
		time.Sleep(100 * time.Millisecond) // poll interval of this bounded wait
	}
}
