package collector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func testStreamConfig() StreamConfig {
	c := DefaultStreamConfig()
	c.BatchSize = 50
	c.MaxBatchesPerPoll = 3
	c.PollInterval = 20 * time.Millisecond
	c.RecountInterval = 0
	c.Checkpoint.File = ""
	c.Lease.TTL = time.Second
	return c
}

// recordingSink keeps every transition handed to it.
type recordingSink struct {
	mu  sync.Mutex
	got []Transition
}

func (r *recordingSink) Consume(_ context.Context, ts []Transition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, ts...)
	return nil
}

func (r *recordingSink) all() []Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

type testStream struct {
	*Stream
	db   *DB
	reg  *prometheus.Registry
	sink *recordingSink
}

func newTestStream(t *testing.T, url string, cfg StreamConfig, ckpt Checkpointer, opts ...StreamOption) testStream {
	t.Helper()
	db, _ := openTest(t, url)
	reg := prometheus.NewRegistry()
	sink := &recordingSink{}
	s := NewStream(db, cfg, ckpt, reg, testLogger(t), append([]StreamOption{WithSink(sink)}, opts...)...)
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return testStream{Stream: s, db: db, reg: reg, sink: sink}
}

// drain takes the first count if needed and polls until everything
// committed has been read. The stream must not be running.
func (s testStream) drain(t *testing.T) {
	t.Helper()
	ctx := testCtx(t)
	if !s.initialized {
		if err := s.init(ctx); err != nil {
			t.Fatalf("init: %v", err)
		}
	}
	for range 100_000 {
		more, err := s.poll(ctx)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if !more {
			return
		}
	}
	t.Fatal("the stream never caught up")
}

// crash stops a running stream the way a killed process stops: no final
// checkpoint, no lease release.
func (s testStream) crash() {
	s.stopOnce.Do(func() {}) // no Shutdown work after this
	_ = s.loop.Shutdown(context.Background())
}

// assertMatchesRecount checks the incremental counts against the
// foundation's full count (an independent code path) and against a full
// count of the stream's own kind (which also compares the retry classes
// step by step).
func (s testStream) assertMatchesRecount(t *testing.T) {
	t.Helper()
	ctx := testCtx(t)
	full, err := s.db.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := s.state.snapshot()
	want := full
	want.Counts.ActiveConnections, want.Counts.MaxConnections = 0, 0
	SortGroups(want.Tasks)
	SortGroups(want.Steps)
	if got.Counts != want.Counts {
		t.Errorf("incremental counts differ from a full recount:\n got  %+v\n want %+v", got.Counts, want.Counts)
	}
	if !slices.Equal(got.Tasks, want.Tasks) {
		t.Errorf("task groups differ:\n got  %+v\n want %+v", got.Tasks, want.Tasks)
	}
	if !slices.Equal(got.Steps, want.Steps) {
		t.Errorf("step groups differ:\n got  %+v\n want %+v", got.Steps, want.Steps)
	}
	if !slices.Equal(got.ErrorStepsByName, want.ErrorStepsByName) {
		t.Errorf("error steps by name differ:\n got  %+v\n want %+v", got.ErrorStepsByName, want.ErrorStepsByName)
	}
	if !maps.EqualFunc(got.OldestStepByState, want.OldestStepByState, time.Time.Equal) {
		t.Errorf("oldest running step per state differs: got %v, want %v", got.OldestStepByState, want.OldestStepByState)
	}
	if !got.OldestInProgressStep.Equal(want.OldestInProgressStep) {
		t.Errorf("oldest step in progress differs: got %v, want %v", got.OldestInProgressStep, want.OldestInProgressStep)
	}
	if got.ResolvedManuallyTasks != want.ResolvedManuallyTasks || got.CancelledSteps != want.CancelledSteps ||
		got.ResolvedManuallySteps != want.ResolvedManuallySteps {
		t.Errorf("extra states differ: got %d/%d/%d want %d/%d/%d", got.ResolvedManuallyTasks, got.CancelledSteps,
			got.ResolvedManuallySteps, want.ResolvedManuallyTasks, want.CancelledSteps, want.ResolvedManuallySteps)
	}
	tx, err := s.beginRead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	mine, _, err := s.count(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.state.drift(mine); !d.zero() {
		t.Errorf("drift against a recount: %+v", d)
	}
}

type transitionKey struct {
	step bool
	id   engine.ID
}

// assertExactlyOnce checks that every transition row outside start was
// emitted exactly once across emitted, and none inside start was.
func assertExactlyOnce(t *testing.T, conn *pgx.Conn, start position, emitted []Transition) {
	t.Helper()
	assertExactlyOnceIn(t, engine.Rails(), conn, start, emitted)
}

// assertExactlyOnceIn is assertExactlyOnce on e's tables.
func assertExactlyOnceIn(t *testing.T, e engine.Engine, conn *pgx.Conn, start position, emitted []Transition) {
	t.Helper()
	seen := map[transitionKey]int{}
	for _, tr := range emitted {
		seen[transitionKey{tr.Step, tr.ID}]++
	}
	var checked, missing, dup, early int
	for _, tbl := range []table{tableTaskTransitions, tableStepTransitions} {
		key := "id"
		if e.Kind == engine.KindCore {
			key = tbl.keyColumn()
		}
		rows, err := conn.Query(testCtx(t), "SELECT "+key+" FROM "+tbl.name(e)+" ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[engine.ID])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			k := transitionKey{tbl == tableStepTransitions, id}
			n := seen[k]
			delete(seen, k)
			switch {
			case start[tbl].Contains(id) && n != 0:
				early++
				t.Errorf("%s %s was counted at start but emitted %d times", tbl, id, n)
			case !start[tbl].Contains(id) && n == 0:
				missing++
				if missing < 10 {
					t.Errorf("%s %s never emitted", tbl, id)
				}
			case !start[tbl].Contains(id) && n > 1:
				dup++
				if dup < 10 {
					t.Errorf("%s %s emitted %d times", tbl, id, n)
				}
			default:
				checked++
			}
		}
	}
	if len(seen) > 0 {
		t.Errorf("emitted %d transitions that are not in the database", len(seen))
	}
	t.Logf("exactly once: %d rows ok, %d missing, %d duplicated, %d emitted although counted at start", checked, missing, dup, early)
}

// execQuerier is the part of pgx.Conn and pgx.Tx a writer needs.
type execQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// statesman writes one transition the way Statesman does (facts §2.3) and
// returns its id: clear most_recent, insert with sort_key = last + 10.
func statesman(t testing.TB, ctx context.Context, q execQuerier, tbl table, parent int64, state string) int64 {
	t.Helper()
	fk := "task_id"
	if tbl == tableStepTransitions {
		fk = "workflow_step_id"
	}
	if _, err := q.Exec(ctx, fmt.Sprintf(`UPDATE %s SET most_recent = false WHERE %s = $1 AND most_recent`, tbl, fk), parent); err != nil {
		t.Fatalf("statesman: %v", err)
	}
	var id int64
	err := q.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %[1]s (to_state, sort_key, most_recent, %[2]s, created_at, updated_at)
		SELECT $2, COALESCE(max(sort_key), 0) + 10, true, $1, clock_timestamp() AT TIME ZONE 'UTC', clock_timestamp() AT TIME ZONE 'UTC'
		FROM %[1]s WHERE %[2]s = $1 RETURNING id`, tbl, fk), parent, state).Scan(&id)
	if err != nil {
		t.Fatalf("statesman: %v", err)
	}
	return id
}

func emittedIDs(ts []Transition, step bool) []int64 {
	var out []int64
	for _, t := range ts {
		if t.Step == step {
			out = append(out, t.ID.Int())
		}
	}
	return out
}

func TestStreamOutOfOrderCommit(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	buildMixed(f)
	nt := f.namedTask("default", "greet", "0.1.0")
	x := f.task(nt, "pending")
	y := f.task(nt, "pending")
	s := newTestStream(t, pg.URL, testStreamConfig(), nil)
	ctx := testCtx(t)
	s.drain(t)
	start := s.base.clone()
	s.assertMatchesRecount(t)

	// Transaction A takes the lower id and stays open while B commits a
	// higher one.
	connA := pg.Conn(t)
	txA, err := connA.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idA := statesman(t, ctx, txA, tableTaskTransitions, x, "in_progress")
	idB := statesman(t, ctx, pg.Conn(t), tableTaskTransitions, y, "in_progress")
	if idA >= idB {
		t.Fatalf("ids %d and %d are not out of commit order", idA, idB)
	}
	s.drain(t)
	if got := emittedIDs(s.sink.all(), false); !slices.Equal(got, []int64{idB}) {
		t.Fatalf("emitted %v after B committed, want [%d]", got, idB)
	}
	cur := s.pos[tableTaskTransitions]
	if cur.Watermark != idB || cur.Contains(engine.IntID(idA)) {
		t.Fatalf("cursor %+v: want watermark %d with %d in a gap", cur, idB, idA)
	}
	s.assertMatchesRecount(t) // A is not committed: the counts must not include it

	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.drain(t)
	s.drain(t) // and nothing more on a second look
	if got := emittedIDs(s.sink.all(), false); !slices.Equal(got, []int64{idB, idA}) {
		t.Fatalf("emitted %v, want [%d %d]: A exactly once, after the watermark passed it", got, idB, idA)
	}
	if s.pos[tableTaskTransitions].Contains(engine.IntID(idA)) != true || len(s.pos[tableTaskTransitions].Gaps) != 0 {
		t.Errorf("gap not closed: %+v", s.pos[tableTaskTransitions])
	}
	if n := testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker_task_transitions")); n != 1 {
		t.Errorf("late rows = %v, want 1", n)
	}
	s.assertMatchesRecount(t)
	assertExactlyOnce(t, f.conn, start, s.sink.all())
	if got := s.sink.all()[1]; got.FromState != "pending" || got.ToState != "in_progress" || got.TaskName != "greet" {
		t.Errorf("late transition = %+v, want pending → in_progress of greet", got)
	}
}

func TestStreamGapHorizon(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "welcome", "0.1.0")
	x := f.task(nt, "pending")
	y := f.task(nt, "pending")
	cfg := testStreamConfig()
	cfg.GapHorizon = time.Minute
	s := newTestStream(t, pg.URL, cfg, nil)
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	ctx := testCtx(t)
	s.drain(t)

	txA, err := pg.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idA := statesman(t, ctx, txA, tableTaskTransitions, x, "in_progress")
	statesman(t, ctx, pg.Conn(t), tableTaskTransitions, y, "in_progress")
	s.drain(t)
	clock.Advance(time.Minute + time.Second)
	s.drain(t) // re-checks once more, then gives up
	if n := testutil.ToFloat64(s.m.gapsExpired.WithLabelValues("tasker_task_transitions")); n != 1 {
		t.Errorf("expired gap ids = %v, want 1", n)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.drain(t)
	if slices.Contains(emittedIDs(s.sink.all(), false), idA) {
		t.Errorf("row %d committed after the horizon was emitted", idA)
	}

	// The recount finds what the horizon lost and corrects it.
	s.cfg.RecountInterval = time.Second
	clock.Advance(time.Second)
	s.drain(t)
	if d := testutil.ToFloat64(s.m.drift.WithLabelValues("tasks")); d != 2 {
		t.Errorf("drift = %v, want 2 (one task counted pending instead of in_progress)", d)
	}
	s.assertMatchesRecount(t)
}

// writerPool is a read-write pool for the simulator.
func writerPool(t *testing.T, url string, conns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = conns
	cfg.ConnConfig.RuntimeParams["TimeZone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// slowWriter keeps committing transitions out of id order on its own
// tasks: each transaction takes an id, waits, and commits after others
// with higher ids have. It stops when ctx ends.
func slowWriter(t *testing.T, ctx context.Context, pg pgtest.DB, tasks []int64) <-chan int {
	done := make(chan int, 1)
	conn := pg.Conn(t)
	go func() {
		n := 0
		states := []string{"pending", "in_progress", "error", "pending", "in_progress", "complete"}
		for i := 0; ctx.Err() == nil; i++ {
			wctx := context.WithoutCancel(ctx)
			tx, err := conn.Begin(wctx)
			if err != nil {
				break
			}
			statesman(t, wctx, tx, tableTaskTransitions, tasks[i%len(tasks)], states[(i/len(tasks))%len(states)])
			// Real time on purpose: a slow writer holds its id uncommitted
			// while others commit higher ones.
			time.Sleep(time.Duration(5+rand.IntN(40)) * time.Millisecond)
			if err := tx.Commit(wctx); err != nil {
				break
			}
			n++
		}
		done <- n
	}()
	return done
}

func runLive(t *testing.T, pool *pgxpool.Pool, rate float64, d time.Duration, seed int64) simulate.Stats {
	t.Helper()
	st, err := simulate.Live(context.Background(), pool, rate, d, simulate.Options{Seed: seed, ErrorRate: 0.3, Workers: 4}, nil)
	if err != nil {
		t.Fatalf("live: %v", err)
	}
	return st
}

func TestStreamConcurrentWriters(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "slow", "0.1.0")
	var slow []int64
	for range 5 {
		slow = append(slow, f.task(nt))
	}
	pool := writerPool(t, pg.URL, 5)
	cfg := testStreamConfig()
	cfg.BatchSize = 40
	cfg.MaxBatchesPerPoll = 2
	s := newTestStream(t, pg.URL, cfg, nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	_ = s.Start(ctx)
	<-s.Ready()

	wctx, stopSlow := context.WithCancel(ctx)
	slowDone := slowWriter(t, wctx, pg, slow)
	st := runLive(t, pool, 40, 3*time.Second, 11)
	stopSlow()
	slowRows := <-slowDone
	_ = s.Shutdown(context.Background())
	cancel()
	s.drain(t)
	t.Logf("live wrote %+v; slow writer %d out-of-order transitions; late rows found %v",
		st, slowRows, testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker_task_transitions")))

	s.assertMatchesRecount(t)
	assertExactlyOnce(t, f.conn, s.base, s.sink.all())
	if testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker_task_transitions")) == 0 {
		t.Error("no row was committed out of id order; the test did not exercise the gaps")
	}
	// The counters saw what the sink saw.
	var tasks, steps float64
	for _, tr := range s.sink.all() {
		if tr.Step {
			steps++
		} else {
			tasks++
		}
	}
	if got := sumCounter(t, s.reg, "tasker_task_transitions_total"); got != tasks {
		t.Errorf("tasker_task_transitions_total = %v, want %v", got, tasks)
	}
	if got := sumCounter(t, s.reg, "tasker_step_transitions_total"); got != steps {
		t.Errorf("tasker_step_transitions_total = %v, want %v", got, steps)
	}
}

func sumCounter(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestStreamLargeBacklog(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	pool := writerPool(t, pg.URL, 4)
	if err := simulate.EnsureCatalog(testCtx(t), pool, simulate.Options{}); err != nil {
		t.Fatal(err)
	}
	cfg := testStreamConfig()
	cfg.BatchSize = 1000
	cfg.MaxBatchesPerPoll = 4
	s := newTestStream(t, pg.URL, cfg, nil)
	s.drain(t)
	start := s.base.clone()

	// Bulk copies with two writers, whose batches interleave in id order.
	ctx, cancel := context.WithCancel(testCtx(t))
	_ = s.Start(ctx)
	st, err := simulate.Bulk(testCtx(t), pool, 5000, simulate.Options{Seed: 5, BatchSize: 250, History: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Shutdown(context.Background())
	cancel()
	s.drain(t)
	t.Logf("bulk wrote %+v; stream read %v task transition rows, %v late",
		st, testutil.ToFloat64(s.m.rows.WithLabelValues("tasker_task_transitions")),
		testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker_workflow_step_transitions")))
	s.assertMatchesRecount(t)
	assertExactlyOnce(t, pg.Conn(t), start, s.sink.all())
}

func TestStreamRestartFromFileCheckpoint(t *testing.T) {
	t.Parallel()
	testRestart(t, NewFileCheckpointer(t.TempDir()+"/ckpt/stream.json"), nil)
}

// With a distributed store the checkpoint lives in it, and the restarted
// stream takes the lease its predecessor released.
func TestStreamRestartFromRedisCheckpoint(t *testing.T) {
	t.Parallel()
	st := openRedis(t, storetest.Prefix(t))
	cfg := testStreamConfig()
	testRestart(t, NewCheckpointer(checkpointsIn(st), cfg.Checkpoint), func() StreamOption {
		lease, err := newLease(st, cfg.Lease)
		if err != nil {
			t.Fatal(err)
		}
		return WithLease(lease)
	})
}

func testRestart(t *testing.T, ckpt Checkpointer, lease func() StreamOption) {
	pg := pgtest.NewTasker(t)
	pool := writerPool(t, pg.URL, 5)
	cfg := testStreamConfig()
	var opts []StreamOption
	if lease != nil {
		opts = append(opts, lease())
	}
	first := newTestStream(t, pg.URL, cfg, ckpt, opts...)
	ctx := testCtx(t)
	_ = first.Start(ctx)
	<-first.Ready()
	liveDone := make(chan simulate.Stats, 1)
	go func() { liveDone <- runLive(t, pool, 30, 3*time.Second, 21) }()
	waitFor(t, "the first stream to export rows", func() bool { return len(first.sink.all()) > 0 })
	_ = first.Shutdown(context.Background()) // mid-stream; the writer carries on
	start := first.base.clone()
	saved, ok, err := ckpt.Load(ctx)
	if err != nil || !ok {
		t.Fatalf("no checkpoint after Stop: %v", err)
	}
	if saved.TaskTransitions.Watermark != first.pos[tableTaskTransitions].Watermark {
		t.Fatalf("checkpoint %d, stream stopped at %d", saved.TaskTransitions.Watermark, first.pos[tableTaskTransitions].Watermark)
	}
	// Real time on purpose: the writer must commit rows while no sidecar
	// runs, which the second stream's start position checks below.
	time.Sleep(500 * time.Millisecond)

	if lease != nil {
		opts = []StreamOption{lease()}
	}
	second := newTestStream(t, pg.URL, cfg, ckpt, opts...)
	_ = second.Start(ctx)
	<-second.Ready()
	if second.base[tableTaskTransitions].Watermark <= saved.TaskTransitions.Watermark {
		t.Error("no rows were written while the sidecar was down; the test proves less than it should")
	}
	<-liveDone
	_ = second.Shutdown(context.Background())
	second.drain(t)
	second.assertMatchesRecount(t)
	assertExactlyOnce(t, pg.Conn(t), start, append(first.sink.all(), second.sink.all()...))
}

// flakyCheckpointer stops saving after limit saves, like a process killed
// right after its last save.
type flakyCheckpointer struct {
	Checkpointer
	mu    sync.Mutex
	limit int
	saves int
}

func (f *flakyCheckpointer) Save(ctx context.Context, c Checkpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.saves >= f.limit {
		return nil
	}
	f.saves++
	return f.Checkpointer.Save(ctx, c)
}

func (f *flakyCheckpointer) saved() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.saves
}

func TestStreamCrashRestartLosesNothing(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	pool := writerPool(t, pg.URL, 5)
	cfg := testStreamConfig()
	file := NewFileCheckpointer(t.TempDir() + "/stream.json")
	ckpt := &flakyCheckpointer{Checkpointer: file, limit: 10}

	first := newTestStream(t, pg.URL, cfg, ckpt)
	ctx := testCtx(t)
	_ = first.Start(ctx)
	<-first.Ready()
	liveDone := make(chan simulate.Stats, 1)
	go func() { liveDone <- runLive(t, pool, 30, 3*time.Second, 31) }()
	// Crash after the last save the checkpointer keeps and after rows
	// emitted since: those are the rows that may come twice.
	waitFor(t, "the checkpointer's last save", func() bool { return ckpt.saved() >= ckpt.limit })
	emitted := len(first.sink.all())
	waitFor(t, "rows emitted after the last save", func() bool { return len(first.sink.all()) > emitted })
	first.crash()
	start := first.base.clone()
	last, _, err := file.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}

	second := newTestStream(t, pg.URL, cfg, file)
	_ = second.Start(ctx)
	<-liveDone
	_ = second.Shutdown(context.Background())
	second.drain(t)
	second.assertMatchesRecount(t)

	// At least once: every row after the start is emitted; only rows the
	// crashed process emitted after its last save may come twice.
	seen := map[transitionKey]int{}
	for _, tr := range append(first.sink.all(), second.sink.all()...) {
		seen[transitionKey{tr.Step, tr.ID}]++
	}
	var again int
	for _, tbl := range []table{tableTaskTransitions, tableStepTransitions} {
		ids, err := pgx.CollectRows(must(pg.Conn(t).Query(ctx, "SELECT id FROM "+tbl.String())), pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		cp := last.TaskTransitions
		if tbl == tableStepTransitions {
			cp = last.StepTransitions
		}
		for _, id := range ids {
			n := seen[transitionKey{tbl == tableStepTransitions, engine.IntID(id)}]
			switch {
			case start[tbl].Contains(engine.IntID(id)):
			case n == 0:
				t.Errorf("%s %d lost in the crash", tbl, id)
			case n > 1 && cp.Contains(engine.IntID(id)):
				t.Errorf("%s %d emitted %d times although the checkpoint had it", tbl, id, n)
			case n > 1:
				again++
			}
		}
	}
	t.Logf("%d rows emitted again after the crash (emitted after the last checkpoint)", again)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestStreamRecountCorrectsDrift(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	buildMixed(f)
	s := newTestStream(t, pg.URL, testStreamConfig(), nil)
	s.drain(t)
	s.assertMatchesRecount(t)

	// Changes the stream cannot see: a row rewritten in place, and a step's
	// retry columns changed while it stays in error.
	f.exec(`UPDATE tasker_task_transitions SET to_state = 'complete' WHERE most_recent AND to_state = 'in_progress'`)
	f.exec(`UPDATE tasker_workflow_steps SET attempts = 9 WHERE attempts = 1 AND last_attempted_at IS NOT NULL AND retryable`)
	s.cfg.RecountInterval = time.Nanosecond
	s.drain(t)
	if d := testutil.ToFloat64(s.m.drift.WithLabelValues("tasks")); d != 2 {
		t.Errorf("task drift = %v, want 2", d)
	}
	if d := testutil.ToFloat64(s.m.drift.WithLabelValues("error_steps")); d != 2 {
		t.Errorf("error step drift = %v, want 2", d)
	}
	s.assertMatchesRecount(t)
	s.drain(t)
	if d := testutil.ToFloat64(s.m.drift.WithLabelValues("tasks")); d != 0 {
		t.Errorf("drift after correction = %v, want 0", d)
	}
}

func TestStreamServesRefresher(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	buildMixed(f)
	s := newTestStream(t, pg.URL, testStreamConfig(), nil)
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	s.drain(t)
	r, _, _ := newTestRefresher(t, s.db, RefreshConfig{Interval: time.Minute}, WithSource(s.Stream))
	ctx := testCtx(t)
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	st := r.State()
	if st.Last == nil || withoutConns(st.Last.Counts) != mixedCounts() || st.Last.Counts.ActiveConnections < 1 {
		t.Fatalf("refresher state from the stream: %+v", st.Last)
	}

	// A new task with a step and no transitions counts in the totals.
	task := f.task(f.namedTask("default", "fresh", "0.1.0"))
	f.step(task, stepSpec{})
	s.drain(t)
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c := r.State().Last.Counts; c.TotalTasks != 9 || c.TotalSteps != 19 || c.PendingTasks != 1 {
		t.Errorf("after a new task: %+v", c)
	}

	clock.Advance(2 * s.cfg.StaleAfter)
	err := r.Refresh(ctx)
	if !errors.Is(err, ErrStreamStale) || classify(err) != ReasonQuery {
		t.Errorf("stale stream: err %v (reason %s), want ErrStreamStale", err, classify(err))
	}
	if r.State().Last.Counts.TotalTasks != 9 {
		t.Error("the refresher dropped its last good snapshot")
	}
}

func TestStreamRefreshBeforeFirstCount(t *testing.T) {
	t.Parallel()
	s := newTestStream(t, "postgres://sidecar@"+closedPort(t)+"/tasker?sslmode=disable&connect_timeout=1", testStreamConfig(), nil)
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	if _, err := s.Refresh(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Refresh before the first count = %v, want the context's deadline", err)
	}
	_ = s.Start(testCtx(t))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Refresh(testCtx(t))
		if err != nil && classify(err) == ReasonConnection {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Refresh with the database down = %v, want a connection error", err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of this bounded wait
	}
	_ = s.Shutdown(context.Background())
	_ = s.Shutdown(context.Background())
}

func TestStreamStopBeforeStart(t *testing.T) {
	t.Parallel()
	s := NewStream(nil, testStreamConfig(), nil, nil, nil)
	_ = s.Shutdown(context.Background())
	_ = s.Shutdown(context.Background())
	_ = s.Start(context.Background()) // after Stop: does nothing
	_ = s.Shutdown(context.Background())
}

func TestStreamMetricsAndExemplars(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "welcome", "0.1.0")
	task := f.task(nt)
	step := f.step(task, stepSpec{attempts: n32(0), retryLimit: n32(3)})
	s := newTestStream(t, pg.URL, testStreamConfig(), nil, WithExemplars(func(id engine.ID) (string, bool) {
		return fmt.Sprintf("%032x", id.Int()), true
	}))
	s.drain(t)

	ctx := testCtx(t)
	conn := pg.Conn(t)
	statesman(t, ctx, conn, tableTaskTransitions, task, "in_progress")
	for _, st := range []string{"pending", "in_progress", "error", "pending", "in_progress", "complete"} {
		statesman(t, ctx, conn, tableStepTransitions, step, st)
	}
	statesman(t, ctx, conn, tableTaskTransitions, task, "complete")
	s.drain(t)
	s.assertMatchesRecount(t)

	if n := testutil.ToFloat64(s.m.taskTransitions.WithLabelValues("complete", "default", "welcome")); n != 1 {
		t.Errorf("task complete transitions = %v", n)
	}
	if n := testutil.ToFloat64(s.m.stepTransitions.WithLabelValues("in_progress", "default", "welcome")); n != 2 {
		t.Errorf("step in_progress transitions = %v", n)
	}
	if n := testutil.ToFloat64(s.m.stepRetries.WithLabelValues("default", "welcome")); n != 1 {
		t.Errorf("retries = %v, want 1", n)
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		"tasker_task_duration_seconds": 1, "tasker_step_duration_seconds": 2, "tasker_step_backoff_seconds": 1,
	}
	exemplar := fmt.Sprintf("%032x", task)
	for _, mf := range mfs {
		n, ok := want[mf.GetName()]
		if !ok {
			continue
		}
		var count uint64
		var found bool
		for _, m := range mf.GetMetric() {
			count += m.GetHistogram().GetSampleCount()
			for _, b := range m.GetHistogram().GetBucket() {
				found = found || hasTraceID(b.GetExemplar(), exemplar)
			}
		}
		if count != n {
			t.Errorf("%s count = %d, want %d", mf.GetName(), count, n)
		}
		if !found {
			t.Errorf("%s has no exemplar with trace_id %s", mf.GetName(), exemplar)
		}
		delete(want, mf.GetName())
	}
	if len(want) > 0 {
		t.Errorf("histograms not exported: %v", want)
	}
	problems, err := testutil.GatherAndLint(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func hasTraceID(e *dto.Exemplar, id string) bool {
	for _, l := range e.GetLabel() {
		if l.GetName() == "trace_id" && l.GetValue() == id {
			return true
		}
	}
	return false
}

// A task's duration runs from pending to terminal: for a retried task, from
// the error -> pending row, not from the error (time spent waiting for an
// operator is not part of the run).
func TestStreamTaskDurationPerRun(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "welcome", "0.1.0")
	task := f.task(nt) // created at epoch
	s := newTestStream(t, pg.URL, testStreamConfig(), nil)
	s.drain(t)

	ctx := testCtx(t)
	conn := pg.Conn(t)
	for _, tr := range []struct {
		state string
		at    time.Duration // after the task's creation
	}{
		{"pending", 1 * time.Second}, {"in_progress", 2 * time.Second}, {"error", 5 * time.Second},
		// An operator retries it 95 s later.
		{"pending", 100 * time.Second}, {"in_progress", 101 * time.Second}, {"complete", 110 * time.Second},
	} {
		id := statesman(t, ctx, conn, tableTaskTransitions, task, tr.state)
		if _, err := conn.Exec(ctx, `UPDATE tasker_task_transitions SET created_at = $2::timestamp + make_interval(secs => $3) WHERE id = $1`,
			id, epoch, tr.at.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
	s.drain(t)

	for _, tc := range []struct {
		state string
		want  float64
	}{
		{"error", 5},     // creation -> error
		{"complete", 10}, // the retry's pending -> complete
	} {
		m := &dto.Metric{}
		if err := s.m.taskDuration.WithLabelValues("default", "welcome", tc.state).(prometheus.Metric).Write(m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetHistogram().GetSampleSum(); got != tc.want || m.GetHistogram().GetSampleCount() != 1 {
			t.Errorf("task duration to %s: sum %v over %d runs, want %v over 1", tc.state, got, m.GetHistogram().GetSampleCount(), tc.want)
		}
	}
}

// The stream serves the oldest retryable step from the same query as a full
// count (it does not keep tasks' states in memory).
func TestStreamRefreshOldestRetryable(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "welcome", "0.1.0")
	f.step(f.task(nt, "pending", "in_progress"), stepSpec{attempts: n32(1), retryLimit: n32(3)}, "pending", "in_progress", "error")
	s := newTestStream(t, pg.URL, testStreamConfig(), nil)
	s.drain(t)
	got, err := s.Refresh(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	full := refresh(t, s.db)
	if got.OldestRetryableErrorStep.IsZero() || !got.OldestRetryableErrorStep.Equal(full.OldestRetryableErrorStep) {
		t.Errorf("oldest retryable step = %v, want %v as the full count says", got.OldestRetryableErrorStep, full.OldestRetryableErrorStep)
	}
}

// TestStreamSettlesRolledBackIDs checks that ids no transaction can
// commit any more (rolled-back inserts) stop costing re-checks once every
// transaction that was running when they were skipped has ended, instead
// of being re-checked on every poll until the gap horizon: the sparse-id
// case of docs/stream.md, from a fresh start and in steady state.
func TestStreamSettlesRolledBackIDs(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("default", "welcome", "0.1.0")
	x := f.task(nt, "pending")
	ctx := testCtx(t)
	rollBack := func(n int) {
		conn := pg.Conn(t)
		for range n {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			statesman(t, ctx, tx, tableTaskTransitions, x, "in_progress")
			_ = tx.Rollback(ctx)
		}
		statesman(t, ctx, conn, tableTaskTransitions, x, "pending") // above the rolled-back ids
	}
	rollBack(30)

	cfg := testStreamConfig()
	cfg.StartGapWindow = 1000
	s := newTestStream(t, pg.URL, cfg, nil)
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	s.drain(t)
	tt := tableTaskTransitions
	if got := s.pos[tt].gapIDs(); got < 30 {
		t.Fatalf("fresh start: %d missing ids in gaps, want the 30 rolled back", got)
	}
	// Transactions of the whole cluster count (other tests' databases
	// too): poll until those running when the gaps were seen have ended.
	settle := func() int64 {
		clock.Advance(gapSettle)
		deadline := time.Now().Add(10 * time.Second)
		for {
			s.drain(t)
			if n := s.pos[tt].gapIDs(); n == 0 || time.Now().After(deadline) {
				return n
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := settle(); got != 0 {
		t.Errorf("fresh start: %d ids still re-checked after every transaction that could fill them ended", got)
	}

	rollBack(20)
	s.drain(t)
	if got := s.pos[tt].gapIDs(); got != 20 {
		t.Errorf("steady state: %d ids in gaps, want 20", got)
	}
	if got := settle(); got != 0 {
		t.Errorf("steady state: %d ids still re-checked", got)
	}
	if n := testutil.ToFloat64(s.m.gapsExpired.WithLabelValues("tasker_task_transitions")); n != 0 {
		t.Errorf("%v ids given up at the horizon; they were settled, not given up", n)
	}
	s.assertMatchesRecount(t)
}
