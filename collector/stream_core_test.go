package collector

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// coreLateWriter writes step transitions on tasker-core the way the
// engine does, on steps of completed tasks (which the simulator no longer
// touches) (most_recent moved, sort_key = max + 1, the key from the
// column default), holding each transaction open while others commit
// newer keys: rows committed out of key order, some past several polls.
// Every fifth transaction rolls back: keys that never commit. It stops
// when ctx ends and returns how many rows it committed.
func coreLateWriter(t *testing.T, ctx context.Context, pg pgtest.DB, hold time.Duration) <-chan int {
	done := make(chan int, 1)
	conn := pg.Conn(t)
	go func() {
		n := 0
		states := []string{"pending", "enqueued", "in_progress", "enqueued_for_orchestration", "complete"}
		for i := 0; ctx.Err() == nil; i++ {
			wctx := context.WithoutCancel(ctx)
			var step string
			err := conn.QueryRow(wctx, `SELECT s.workflow_step_uuid::text FROM tasker.workflow_steps s
				JOIN tasker.task_transitions tt ON tt.task_uuid = s.task_uuid AND tt.most_recent AND tt.to_state = 'complete'
				ORDER BY random() LIMIT 1`).Scan(&step)
			if err != nil {
				if err == pgx.ErrNoRows {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				break
			}
			tx, err := conn.Begin(wctx)
			if err != nil {
				break
			}
			_, err = tx.Exec(wctx, `UPDATE tasker.workflow_step_transitions SET most_recent = false
				WHERE workflow_step_uuid = $1 AND most_recent`, step)
			if err == nil {
				_, err = tx.Exec(wctx, `INSERT INTO tasker.workflow_step_transitions
					(workflow_step_uuid, to_state, from_state, sort_key, most_recent, created_at, updated_at)
					SELECT $1, $2, (SELECT to_state FROM tasker.workflow_step_transitions
					                WHERE workflow_step_uuid = $1 ORDER BY sort_key DESC, created_at DESC LIMIT 1),
					       COALESCE(max(sort_key), 0) + 1, true, now(), now()
					FROM tasker.workflow_step_transitions WHERE workflow_step_uuid = $1`, step, states[i%len(states)])
			}
			if err != nil {
				_ = tx.Rollback(wctx)
				break
			}
			// Real time on purpose: the row's key was made now, and it
			// commits after rows with newer keys.
			time.Sleep(hold/2 + time.Duration(rand.Int64N(int64(hold))))
			if i%5 == 4 {
				_ = tx.Rollback(wctx)
				continue
			}
			if err := tx.Commit(wctx); err != nil {
				break
			}
			n++
		}
		done <- n
	}()
	return done
}

// TestCoreStreamConcurrentWriters drives tasker-core activity (the
// simulator's writers, which hold some transactions open for seconds and
// roll others back) and a writer committing rows out of key order across
// polls, and checks the incremental counts against full counts and every
// transition emitted exactly once.
func TestCoreStreamConcurrentWriters(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewCore(t)
	pool := writerPool(t, pg.URL, 6)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	opts := simulate.Options{Seed: 5, ErrorRate: 0.3, Workers: 4}
	if err := simulate.EnsureCoreCatalog(ctx, pool, opts); err != nil {
		t.Fatal(err)
	}
	cfg := testStreamConfig()
	cfg.BatchSize = 40
	cfg.MaxBatchesPerPoll = 2
	cfg.PollInterval = 50 * time.Millisecond
	s := newTestStream(t, pg.URL, cfg, nil)
	_ = s.Start(ctx)
	<-s.Ready()

	wctx, stopLate := context.WithCancel(ctx)
	lateDone := coreLateWriter(t, wctx, pg, 300*time.Millisecond)
	st, err := simulate.LiveCore(ctx, pool, 15, 4*time.Second, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	stopLate()
	lateRows := <-lateDone
	_ = s.Shutdown(context.Background())
	s.drain(t)
	late := testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker.workflow_step_transitions"))
	t.Logf("live wrote %+v; late writer %d rows; late rows found %v", st, lateRows, late)

	if s.eng.Kind != engine.KindCore {
		t.Fatalf("stream attached to %s", s.eng.Name)
	}
	s.assertMatchesRecount(t)
	assertExactlyOnceIn(t, engine.Core(), pg.Conn(t), s.base, s.sink.all())
	if late == 0 {
		t.Error("no row was committed out of key order; the test did not exercise the snapshot cursor")
	}
	for tbl := range numTables {
		if n := len(s.pos[tbl].Seen); n > 5000 {
			t.Errorf("%s remembers %d keys after draining", tbl.name(s.eng), n)
		}
	}
}

// TestCoreStreamResume restarts a core stream from its checkpoint: every
// row committed while it was down is emitted once, none counted twice.
func TestCoreStreamResume(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewCore(t)
	pool := writerPool(t, pg.URL, 4)
	ctx := testCtx(t)
	opts := simulate.Options{Seed: 9, ErrorRate: 0.3, Workers: 3}
	if err := simulate.EnsureCoreCatalog(ctx, pool, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := simulate.LiveCore(ctx, pool, 20, time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	file := NewFileCheckpointer(t.TempDir() + "/core.json")
	cfg := testStreamConfig()
	first := newTestStream(t, pg.URL, cfg, file)
	first.drain(t)
	start := first.base
	if _, err := simulate.LiveCore(ctx, pool, 20, time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	first.drain(t)
	first.save(ctx, first.now(), true)

	// Activity while no stream runs, then a new one resumes.
	if _, err := simulate.LiveCore(ctx, pool, 20, 2*time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	second := newTestStream(t, pg.URL, cfg, file)
	second.drain(t)
	second.assertMatchesRecount(t)
	emitted := append(first.sink.all(), second.sink.all()...)
	assertExactlyOnceIn(t, engine.Core(), pg.Conn(t), start, emitted)
}

// coreStepTransition writes one step transition the way the engine does,
// in q (a transaction left open by the caller, or a connection).
func coreStepTransition(t *testing.T, ctx context.Context, q execQuerier, step, state string) {
	t.Helper()
	if _, err := q.Exec(ctx, `UPDATE tasker.workflow_step_transitions SET most_recent = false
		WHERE workflow_step_uuid = $1 AND most_recent`, step); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO tasker.workflow_step_transitions
		(workflow_step_uuid, to_state, sort_key, most_recent, created_at, updated_at)
		SELECT $1, $2, COALESCE(max(sort_key), 0) + 1, true, now(), now()
		FROM tasker.workflow_step_transitions WHERE workflow_step_uuid = $1`, step, state); err != nil {
		t.Fatal(err)
	}
}

// TestCoreStreamLongTransaction holds a transaction that wrote a row open
// across polls while others commit, with no key clock margin: the row
// must still be read when it commits. Since PostgreSQL 14 a running
// transaction whose id is at or above the snapshot's xmax is in no list
// of the snapshot; the stream must not date it from a later poll.
func TestCoreStreamLongTransaction(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewCore(t)
	pool := writerPool(t, pg.URL, 3)
	ctx := testCtx(t)
	opts := simulate.Options{Seed: 3, Workers: 2}
	if err := simulate.EnsureCoreCatalog(ctx, pool, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := simulate.LiveCore(ctx, pool, 20, time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	var steps []string
	rows, err := pool.Query(ctx, `SELECT workflow_step_uuid::text FROM tasker.workflow_steps ORDER BY 1 LIMIT 2`)
	if err != nil {
		t.Fatal(err)
	}
	if steps, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || len(steps) < 2 {
		t.Fatalf("steps: %v %v", steps, err)
	}
	cfg := testStreamConfig()
	cfg.KeyClockMargin = 0
	s := newTestStream(t, pg.URL, cfg, nil)
	s.drain(t)
	start := s.base

	long, err := pg.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = long.Rollback(context.WithoutCancel(ctx)) }()
	coreStepTransition(t, ctx, long, steps[0], "waiting_for_retry")
	other := pg.Conn(t)
	for range 4 {
		time.Sleep(20 * time.Millisecond) // the polls' times move past the row's key
		s.drain(t)
		coreStepTransition(t, ctx, other, steps[1], "in_progress") // commits: xmax moves on
	}
	s.drain(t)
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.drain(t)
	s.assertMatchesRecount(t)
	assertExactlyOnceIn(t, engine.Core(), pg.Conn(t), start, s.sink.all())
}
