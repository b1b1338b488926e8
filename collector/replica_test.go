package collector

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// The read-replica tests run the sidecar against a real hot standby of the
// tests' server (pgtest.StartStandby: pg_basebackup -R, streaming), on
// both engines: where it is, its lag as data age, deletions made on the
// primary, recovery conflicts, and the connection figures
// (docs/operations.md#read-replicas).

// replicaEngine is one engine's database, writer and deletion for the
// standby tests.
type replicaEngine struct {
	name  string
	newDB func(testing.TB) pgtest.DB
	// write adds n tasks of history (with steps and transitions).
	write func(t testing.TB, pool *pgxpool.Pool, n int, seed int64)
	// deleteSQL deletes the n oldest tasks and every row that refers to
	// them, as a cleanup job would.
	deleteSQL func(n int) string
	tasks     string // the task table, for the conflict's VACUUM
}

var replicaEngines = []replicaEngine{
	{
		name:  "rails",
		newDB: func(t testing.TB) pgtest.DB { return pgtest.NewTasker(t) },
		write: func(t testing.TB, pool *pgxpool.Pool, n int, seed int64) {
			t.Helper()
			if _, err := simulate.Bulk(testCtx(t), pool, n, simulate.Options{Seed: seed, BatchSize: 200, History: time.Hour, ErrorRate: 0.2}, nil); err != nil {
				t.Fatalf("write tasks: %v", err)
			}
		},
		deleteSQL: func(n int) string {
			return fmt.Sprintf(`
CREATE TEMP TABLE doomed ON COMMIT DROP AS SELECT task_id FROM tasker_tasks ORDER BY task_id LIMIT %d;
CREATE TEMP TABLE doomed_steps ON COMMIT DROP AS
    SELECT workflow_step_id FROM tasker_workflow_steps WHERE task_id IN (SELECT task_id FROM doomed);
DELETE FROM tasker_workflow_step_edges WHERE from_step_id IN (SELECT * FROM doomed_steps) OR to_step_id IN (SELECT * FROM doomed_steps);
DELETE FROM tasker_workflow_step_transitions WHERE workflow_step_id IN (SELECT * FROM doomed_steps);
DELETE FROM tasker_workflow_steps WHERE workflow_step_id IN (SELECT * FROM doomed_steps);
DELETE FROM tasker_task_transitions WHERE task_id IN (SELECT task_id FROM doomed);
DELETE FROM tasker_task_annotations WHERE task_id IN (SELECT task_id FROM doomed);
DELETE FROM tasker_tasks WHERE task_id IN (SELECT task_id FROM doomed);`, n)
		},
		tasks: "tasker_tasks",
	},
	{
		name:  "core",
		newDB: func(t testing.TB) pgtest.DB { return pgtest.NewCore(t) },
		write: func(t testing.TB, pool *pgxpool.Pool, n int, seed int64) {
			t.Helper()
			if _, err := simulate.BulkCore(testCtx(t), pool, n, simulate.Options{Seed: seed, BatchSize: 200, History: time.Hour, ErrorRate: 0.2}, nil); err != nil {
				t.Fatalf("write tasks: %v", err)
			}
		},
		deleteSQL: func(n int) string {
			return fmt.Sprintf(`
CREATE TEMP TABLE doomed ON COMMIT DROP AS SELECT task_uuid FROM tasker.tasks ORDER BY task_uuid LIMIT %d;
CREATE TEMP TABLE doomed_steps ON COMMIT DROP AS
    SELECT workflow_step_uuid FROM tasker.workflow_steps WHERE task_uuid IN (SELECT task_uuid FROM doomed);
DELETE FROM tasker.workflow_step_result_audit WHERE task_uuid IN (SELECT task_uuid FROM doomed);
DELETE FROM tasker.tasks_dlq WHERE task_uuid IN (SELECT task_uuid FROM doomed);
DELETE FROM tasker.workflow_step_edges WHERE from_step_uuid IN (SELECT * FROM doomed_steps) OR to_step_uuid IN (SELECT * FROM doomed_steps);
DELETE FROM tasker.workflow_step_transitions WHERE workflow_step_uuid IN (SELECT * FROM doomed_steps);
DELETE FROM tasker.workflow_steps WHERE workflow_step_uuid IN (SELECT * FROM doomed_steps);
DELETE FROM tasker.task_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed);
DELETE FROM tasker.tasks WHERE task_uuid IN (SELECT task_uuid FROM doomed);`, n)
		},
		tasks: "tasker.tasks",
	},
}

// deleteTasks runs e's deletion of the n oldest tasks in one transaction
// on the primary.
func deleteTasks(t testing.TB, conn *pgx.Conn, e replicaEngine, n int) {
	t.Helper()
	if _, err := conn.Exec(testCtx(t), "BEGIN;"+e.deleteSQL(n)+"COMMIT;"); err != nil {
		t.Fatalf("delete %d tasks: %v", n, err)
	}
}

// primaryCounts is the full count on the primary (the engine's health
// function's semantics), without the connection figures.
func primaryCounts(t testing.TB, db *DB) HealthCounts {
	t.Helper()
	snap, err := db.Refresh(testCtx(t))
	if err != nil {
		t.Fatalf("count on the primary: %v", err)
	}
	c := snap.Counts
	c.ActiveConnections, c.MaxConnections = 0, 0
	return c
}

// stateCounts are c's totals and states, without the retry classes.
func stateCounts(c HealthCounts) HealthCounts {
	c.RetryableErrorSteps, c.ExhaustedRetrySteps, c.InBackoffSteps = 0, 0, 0
	return c
}

func countsOf(snap Snapshot) HealthCounts {
	c := snap.Counts
	c.ActiveConnections, c.MaxConnections = 0, 0
	return c
}

// TestStandby attaches to a hot standby of each engine's database: the
// sidecar knows it is on a standby, reports the standby's own connection
// figures without judging them, follows deletions made on the primary
// (whose table statistics the standby does not have), and turns paused
// replay into data age.
func TestStandby(t *testing.T) {
	// Not parallel with the package's other tests: making standbys and
	// writing their data is a burst of load that the timing-bound stream
	// tests around it need not share (they run after it).
	for _, e := range replicaEngines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			pg := e.newDB(t)
			pool := writerPool(t, pg.URL, 4)
			e.write(t, pool, 400, 11)
			// Another max_connections than the primary's 100: the figures
			// must be the standby's own.
			sb := pgtest.StartStandby(t, "max_connections = 150")
			primary, _ := openTest(t, pg.URL)
			standby, standbyReg := openTest(t, sb.URLFor(pg.Name))

			t.Run("where", func(t *testing.T) { testStandbyWhere(t, sb, primary, standby, standbyReg) })
			t.Run("deletions", func(t *testing.T) { testStandbyDeletions(t, e, pg, sb, primary) })
			t.Run("lag", func(t *testing.T) { testStandbyLag(t, e, pool, sb, primary, standby, standbyReg) })
		})
	}
}

// testStandbyWhere: pg_is_in_recovery at the schema check, the role in the
// snapshot, the standby's own connection figures left out of the verdict,
// and the counts equal to the primary's once replay caught up.
func testStandbyWhere(t *testing.T, sb *pgtest.Standby, primary, standby *DB, reg *prometheus.Registry) {
	ctx := testCtx(t)
	sb.WaitCaughtUp(t, 30*time.Second)
	if _, err := standby.CheckSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := standby.Replication(); !r.Known || !r.Standby || r.Role() != "standby" {
		t.Fatalf("after the schema check the standby is %+v; want a known standby", r)
	}
	if st := standby.SchemaStatus(); st.Replication.Role() != "standby" {
		t.Errorf("schema status role %q, want standby", st.Replication.Role())
	}
	want := primaryCounts(t, primary)
	if r, _ := primary.Replication(); r.Role() != "primary" || r.Lag != 0 {
		t.Errorf("primary: %+v, want a primary without lag", r)
	}
	snap, err := standby.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Replication.Standby {
		t.Fatalf("standby snapshot %+v does not say it was read on a standby", snap.Replication)
	}
	if got := countsOf(snap); got != want {
		t.Errorf("standby counts differ from the primary's:\n got  %+v\n want %+v", got, want)
	}
	if snap.Counts.MaxConnections != 150 {
		t.Errorf("standby max_connections %d, want the standby's own 150", snap.Counts.MaxConnections)
	}
	if _, _, judged := VerdictOf(&snap); judged {
		t.Error("the verdict judged a standby's connection figures")
	}
	psnap, err := primary.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, judged := VerdictOf(&psnap); !judged || psnap.Replication.Standby {
		t.Errorf("primary snapshot: standby %v, connections judged %v", psnap.Replication.Standby, judged)
	}
	if v := gaugeValue(t, reg, "tasker_sidecar_database_in_recovery"); v != 1 {
		t.Errorf("tasker_sidecar_database_in_recovery = %v, want 1", v)
	}
}

// testStandbyDeletions deletes tasks on the primary and follows both
// streams, the standby's and the primary's, with a fake clock: the row
// check notices within rowCheckInterval, and the early recount corrects
// the counts to the primary's full count.
func testStandbyDeletions(t *testing.T, e replicaEngine, pg pgtest.DB, sb *pgtest.Standby, primary *DB) {
	cfg := testStreamConfig()
	cfg.RecountInterval = time.Hour
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	onStandby := newTestStream(t, sb.URLFor(pg.Name), cfg, nil)
	onPrimary := newTestStream(t, pg.URL, cfg, nil)
	clock := &fakeClock{now: start}
	onStandby.now, onPrimary.now = clock.Now, clock.Now
	onStandby.drain(t)
	onPrimary.drain(t)

	deleteTasks(t, pg.Conn(t), e, 40)
	sb.WaitCaughtUp(t, 30*time.Second)
	want := primaryCounts(t, primary)
	mismatches := func(s testStream) float64 {
		return testutil.ToFloat64(s.rowChecks.mismatches.WithLabelValues(s.eng.Tables.Tasks))
	}
	if got := countsOf(onStandby.state.snapshot()); got == want {
		t.Fatal("the deletion did not change the primary's counts; the test deletes nothing")
	}

	// The first row check after the deletion notices it on the standby,
	// whose table statistics show no deleted row.
	clock.Advance(rowCheckInterval)
	onStandby.drain(t)
	onPrimary.drain(t)
	if n := mismatches(onStandby); n != 1 {
		t.Errorf("row check mismatches on the standby = %v, want 1", n)
	}
	if !onStandby.churnPending {
		t.Error("the standby's stream did not note the deletion")
	}
	// Past the early recount spacing: both corrected.
	clock.Advance(earlyRecountSpacing)
	onStandby.drain(t)
	onPrimary.drain(t)
	for name, s := range map[string]testStream{"standby": onStandby, "primary": onPrimary} {
		if got := countsOf(s.state.snapshot()); got != want {
			t.Errorf("%s stream after the recount:\n got  %+v\n want %+v (the primary's full count)", name, got, want)
		}
		if d := testutil.ToFloat64(s.m.drift.WithLabelValues("tasks")); d != 40 {
			t.Errorf("%s task drift = %v, want 40 (the deleted tasks)", name, d)
		}
	}
	// Nothing more deleted: the next checks agree and ask for nothing.
	before := mismatches(onStandby)
	clock.Advance(2 * earlyRecountSpacing)
	onStandby.drain(t)
	if n := mismatches(onStandby); n != before || onStandby.churnPending {
		t.Errorf("after the correction: mismatches %v (was %v), pending %v", n, before, onStandby.churnPending)
	}
}

// testStandbyLag pauses replay on the standby while the primary is
// written to: the lag grows, is added to the data's age, and past the
// staleness bound (two refresh intervals) the data is stale; resuming
// clears it and the counts catch up.
func testStandbyLag(t *testing.T, e replicaEngine, pool *pgxpool.Pool, sb *pgtest.Standby, primary, standby *DB, reg *prometheus.Registry) {
	ctx := testCtx(t)
	interval := time.Second
	limit := 2 * interval
	r := NewRefresher(standby, RefreshConfig{Interval: interval}, nil, testLogger(t))
	sb.WaitCaughtUp(t, 30*time.Second)
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	before := *r.State().Last
	if before.Replication.Lag > limit {
		t.Fatalf("lag %s before pausing, already past the bound", before.Replication.Lag)
	}

	sb.Exec(t, "SELECT pg_wal_replay_pause()")
	e.write(t, pool, 30, 12)
	var snap Snapshot
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := r.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		snap = *r.State().Last
		if snap.Replication.Lag > limit || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // bounded by the deadline
	}
	if snap.Replication.Lag <= limit {
		t.Fatalf("replay paused while the primary was written: lag %s after 30s, want past %s (%+v)", snap.Replication.Lag, limit, snap.Replication)
	}
	if !snap.Replication.Paused {
		t.Error("the snapshot does not say replay is paused")
	}
	if countsOf(snap) != countsOf(before) {
		t.Errorf("counts moved while replay was paused: %+v, then %+v", countsOf(before), countsOf(snap))
	}
	if age := snap.Age(time.Now()); age <= limit {
		t.Errorf("data age %s with lag %s; want past %s", age, snap.Replication.Lag, limit)
	}
	if v := gaugeValue(t, reg, "tasker_sidecar_replication_lag_seconds"); v <= limit.Seconds() {
		t.Errorf("tasker_sidecar_replication_lag_seconds = %v, want past %v", v, limit.Seconds())
	}
	if v := gaugeValue(t, reg, "tasker_sidecar_replication_replay_paused"); v != 1 {
		t.Errorf("tasker_sidecar_replication_replay_paused = %v, want 1", v)
	}

	sb.Exec(t, "SELECT pg_wal_replay_resume()")
	sb.WaitCaughtUp(t, 30*time.Second)
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	snap = *r.State().Last
	if snap.Replication.Lag > limit || snap.Replication.Paused {
		t.Errorf("after resuming: %+v, want the lag within %s", snap.Replication, limit)
	}
	if got, want := countsOf(snap), primaryCounts(t, primary); got != want {
		t.Errorf("after resuming the counts differ from the primary's:\n got  %+v\n want %+v", got, want)
	}
}

// gaugeValue is the value of the single series of name in g.
func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not exported", name)
	return 0
}

// TestStandbyRecoveryConflict provokes a real recovery conflict: a
// standby that waits for no query (max_standby_streaming_delay = 0,
// hot_standby_feedback off) replays the cleanup of rows a running read
// still sees and cancels it. RetryRecoveryConflict runs the read again,
// which succeeds, and counts the retry; the error has its own reason.
func TestStandbyRecoveryConflict(t *testing.T) {
	// Not parallel with the package's other tests: making standbys and
	// writing their data is a burst of load that the timing-bound stream
	// tests around it need not share (they run after it).
	for _, e := range replicaEngines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			pg := e.newDB(t)
			pool := writerPool(t, pg.URL, 4)
			e.write(t, pool, 100, 21)
			sb := pgtest.StartStandby(t, "max_standby_streaming_delay = 0", "hot_standby_feedback = off")
			standby, _ := openTest(t, sb.URLFor(pg.Name))
			conn := pg.Conn(t)
			ctx := testCtx(t)
			retried := testutil.ToFloat64(conflictCounter.WithLabelValues("retried"))

			var (
				attempts int
				first    error
				once     sync.Once
				cleaned  = make(chan struct{})
				cleanErr error
			)
			err := RetryRecoveryConflict(ctx, func(ctx context.Context) error {
				attempts++
				tx, err := standby.Pool().BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
				var n int64
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+e.tasks).Scan(&n); err != nil {
					return err
				}
				// The first attempt holds its snapshot while the primary
				// deletes rows it sees and vacuums them away.
				once.Do(func() {
					go func() {
						defer close(cleaned)
						if _, err := conn.Exec(ctx, "BEGIN;"+e.deleteSQL(20)+"COMMIT;"); err != nil {
							cleanErr = err
						} else if _, err := conn.Exec(ctx, "VACUUM "+e.tasks); err != nil {
							cleanErr = err
						}
					}()
					_, err = tx.Exec(ctx, "SELECT pg_sleep(20)")
				})
				if err != nil {
					if first == nil {
						first = err
					}
					return err
				}
				return nil
			})
			<-cleaned
			if cleanErr != nil {
				t.Fatalf("delete and vacuum on the primary: %v", cleanErr)
			}
			if err != nil {
				t.Fatalf("the read failed after %d attempts: %v", attempts, err)
			}
			if first == nil {
				t.Fatal("the first attempt was not cancelled: no recovery conflict happened")
			}
			if !IsRecoveryConflict(first) || classify(first) != ReasonRecoveryConflict {
				t.Errorf("the cancelled read's error %q (%s) is not a recovery conflict", first, classify(first))
			}
			if attempts != 2 {
				t.Errorf("attempts = %d, want 2 (cancelled, then retried)", attempts)
			}
			if d := testutil.ToFloat64(conflictCounter.WithLabelValues("retried")) - retried; d < 1 {
				t.Errorf("retried conflicts counted %v, want at least 1", d)
			}
			t.Logf("recovery conflict: %v; retried once", first)
		})
	}
}

// TestStandbyDeletionsCorrectedInTime measures, in real time, how long the
// counts of a running stream stay wrong after tasks are deleted on the
// primary, on a standby and on the primary, for both engines: the issue's
// bound is 90 s.
func TestStandbyDeletionsCorrectedInTime(t *testing.T) {
	// Not parallel with the package's other tests: four streams polling for
	// a minute beside two standbys are load the timing-bound stream tests
	// (lease handover) need not share; they run after it.
	for _, e := range replicaEngines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			pg := e.newDB(t)
			pool := writerPool(t, pg.URL, 4)
			e.write(t, pool, 300, 31)
			sb := pgtest.StartStandby(t)
			primary, _ := openTest(t, pg.URL)
			cfg := testStreamConfig()
			cfg.RecountInterval = time.Hour
			cfg.PollInterval = 200 * time.Millisecond
			streams := map[string]testStream{
				"standby": newTestStream(t, sb.URLFor(pg.Name), cfg, nil),
				"primary": newTestStream(t, pg.URL, cfg, nil),
			}
			// Longer than testCtx: the stream runs through the whole wait.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for _, s := range streams {
				_ = s.Start(ctx)
				<-s.Ready()
			}
			deleteTasks(t, pg.Conn(t), e, 50)
			deleted := time.Now()
			var wg sync.WaitGroup
			for name, s := range streams {
				wg.Go(func() {
					for time.Since(deleted) < 90*time.Second {
						snap, err := s.Refresh(ctx)
						// The retry classes move with the clock (a backoff
						// ends); the totals and states are what deletions
						// change.
						if err == nil && stateCounts(countsOf(snap)) == stateCounts(primaryCounts(t, primary)) {
							t.Logf("%s %s: counts corrected %.1fs after the deletion", e.name, name, time.Since(deleted).Seconds())
							return
						}
						time.Sleep(250 * time.Millisecond) // bounded by the loop's 90 s
					}
					t.Errorf("%s: counts still wrong 90s after the deletion", name)
				})
			}
			wg.Wait()
		})
	}
}

// A statistics reset makes the deletion counters fall: the stream counts
// the rows at once (deletions counted before the reset are lost from the
// statistics) and goes on watching from the lower value.
func TestStreamDeletionsAcrossStatisticsReset(t *testing.T) {
	// Not parallel: pg_stat_reset() resets the statistics of the whole
	// test database, and its writes are a burst of load the timing-bound
	// stream tests need not share (they run after it).
	e := replicaEngines[0]
	pg := e.newDB(t)
	pool := writerPool(t, pg.URL, 4)
	e.write(t, pool, 200, 41)
	primary, _ := openTest(t, pg.URL)
	cfg := testStreamConfig()
	cfg.RecountInterval = time.Hour
	s := newTestStream(t, pg.URL, cfg, nil)
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	s.drain(t)
	ctx := testCtx(t)
	conn := pg.Conn(t)
	if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}

	// A first deletion, seen by the statistics and corrected.
	deleteTasks(t, conn, e, 10)
	waitForStats(t, ctx, conn)
	clock.Advance(earlyRecountSpacing)
	s.drain(t) // notices (statistics and row check)
	s.drain(t) // recounts
	if got, want := countsOf(s.state.snapshot()), primaryCounts(t, primary); got != want {
		t.Fatalf("after the first deletion:\n got  %+v\n want %+v", got, want)
	}
	checks := testutil.ToFloat64(s.rowChecks.checks)

	// A second deletion, then the counters are reset before the stream
	// reads them: they fall below what it last read.
	deleteTasks(t, conn, e, 10)
	waitForStats(t, ctx, conn)
	if _, err := conn.Exec(ctx, `SELECT pg_stat_reset()`); err != nil {
		t.Fatal(err)
	}
	// Past the statistics interval, before the row check's own.
	clock.Advance(churnCheckInterval)
	s.drain(t)
	if n := testutil.ToFloat64(s.rowChecks.checks); n != checks+1 {
		t.Fatalf("row checks %v after the reset, want %v: the fall did not trigger one", n, checks+1)
	}
	if !s.churnPending {
		t.Fatal("the deletion hidden by the reset was not noticed")
	}
	clock.Advance(earlyRecountSpacing)
	s.drain(t)
	if got, want := countsOf(s.state.snapshot()), primaryCounts(t, primary); got != want {
		t.Errorf("after the reset:\n got  %+v\n want %+v", got, want)
	}
	// Watching goes on from the lower value: a third deletion is seen by
	// the statistics again.
	deleteTasks(t, conn, e, 5)
	waitForStats(t, ctx, conn)
	clock.Advance(churnCheckInterval)
	s.drain(t)
	if !s.churnPending {
		t.Error("a deletion after the reset was not noticed by the statistics")
	}
}
