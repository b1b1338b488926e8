package collector

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// BenchmarkStreamPoll measures what the transition stream costs per poll on
// a real, preferably large, Tasker database (SIDECAR_BENCH_DATABASE_URL,
// opt-in like BenchmarkRefresh). It only reads: each iteration moves the
// cursor back over the newest rows and polls them again, which runs the
// same queries as rows that have just been committed (the rows are already
// counted, so they are emitted but not counted twice). The step:task mix
// is about 4:1, as in the simulated workload.
//
// Sub-benchmarks: rows=N polls N new step transitions and N/4 task
// transitions; idle is a poll with nothing new; refresh is serving the
// health counts from the incremental state (what a Refresher tick costs);
// recount is the periodic full count; churn is the table-statistics read
// each poll makes to notice deleted rows.
func BenchmarkStreamPoll(b *testing.B) {
	url := os.Getenv("SIDECAR_BENCH_DATABASE_URL")
	if url == "" {
		b.Skip("set SIDECAR_BENCH_DATABASE_URL to a Tasker database to run this benchmark")
	}
	db, err := Open(DBConfig{URL: secret.URL(url), StatementTimeout: time.Minute}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultStreamConfig()
	cfg.Checkpoint.File = ""
	cfg.MaxBatchesPerPoll = 1000 // one poll drains the replayed rows
	cfg.PollTimeout = 5 * time.Minute
	s := NewStream(db, cfg, nil, nil, nil)
	ctx := context.Background()
	start := time.Now()
	if err := s.init(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("first full count: %v (%d tasks, %d steps)", time.Since(start).Round(time.Millisecond),
		s.snap.Counts.TotalTasks, s.snap.Counts.TotalSteps)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("Go heap in use after the first count: %.1f MiB (%d steps in error remembered)",
		float64(ms.HeapInuse)/(1<<20), len(s.state.errorSteps))

	// On core a cursor has no watermark to move back: the floor goes down
	// to the key of the n-th newest row, with nothing seen above it.
	newest := func(t table, n int64) engine.ID {
		var k engine.ID
		q := fmt.Sprintf("SELECT %[1]s FROM %[2]s ORDER BY %[1]s DESC OFFSET $1 LIMIT 1", t.keyColumn(), t.name(s.eng))
		if err := db.pool.QueryRow(ctx, q, max(n-1, 0)).Scan(&k); err != nil {
			b.Fatal(err)
		}
		return k
	}
	replay := func(n int64) {
		s.pos = s.base.clone()
		if s.eng.Kind == engine.KindCore {
			for t, k := range map[table]int64{tableStepTransitions: n, tableTaskTransitions: n / 4} {
				if k == 0 {
					continue
				}
				from := newest(t, k)
				s.pos[t] = Cursor{Floor: from, Next: from}
			}
			return
		}
		s.pos[tableStepTransitions].Watermark -= n
		s.pos[tableTaskTransitions].Watermark -= n / 4
	}
	for _, n := range []int64{0, 100, 1000, 10000} {
		name := fmt.Sprintf("rows=%d", n)
		if n == 0 {
			name = "idle"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				replay(n)
				b.StartTimer()
				for {
					more, err := s.poll(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if !more {
						break
					}
				}
			}
			if n > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n+n/4), "ns/row")
			}
		})
	}
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The full count a recount runs (the counts, the steps in error and in
	// progress, the named tasks), in its own snapshot.
	b.Run("recount", func(b *testing.B) {
		for b.Loop() {
			tx, err := s.beginRead(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := s.count(ctx, tx); err != nil {
				b.Fatal(err)
			}
			_ = tx.Rollback(ctx)
		}
	})
	// What every poll adds to notice deletions: four rows of table statistics.
	b.Run("churn", func(b *testing.B) {
		for b.Loop() {
			if _, err := readChurn(ctx, s.db.pool, s.eng); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestStreamSoak follows a database under live write load and checks,
// at every recount, that the incremental counts equal a full count of the
// same snapshot. It is opt-in: SIDECAR_SOAK_DATABASE_URL names the
// database (which something else writes to, e.g. `sidecar simulate --rate
// 1000`), SIDECAR_SOAK_DURATION the length (default 2m),
// SIDECAR_SOAK_RECOUNT the recount interval (default 30s). It reports the
// poll cost per row and the recount cost; docs/benchmarks.md has numbers.
func TestStreamSoak(t *testing.T) {
	url := os.Getenv("SIDECAR_SOAK_DATABASE_URL")
	if url == "" {
		t.Skip("set SIDECAR_SOAK_DATABASE_URL to a Tasker database under write load to run the soak test")
	}
	duration := envDuration(t, "SIDECAR_SOAK_DURATION", 2*time.Minute)
	db, err := Open(DBConfig{URL: secret.URL(url), StatementTimeout: time.Minute}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultStreamConfig()
	cfg.Checkpoint.File = ""
	cfg.RecountInterval = envDuration(t, "SIDECAR_SOAK_RECOUNT", 30*time.Second)
	cfg.PollTimeout = 5 * time.Minute
	s := testStream{Stream: NewStream(db, cfg, nil, nil, testLogger(t)), db: db}
	ctx := context.Background()
	start := time.Now()
	if err := s.init(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("first full count %v: %d tasks, %d steps", time.Since(start).Round(time.Millisecond),
		s.snap.Counts.TotalTasks, s.snap.Counts.TotalSteps)

	rowsRead := func() float64 {
		var n float64
		for t := range numTables {
			n += testutil.ToFloat64(s.m.rows.WithLabelValues(t.String()))
		}
		return n
	}
	var (
		polls      []time.Duration // polls without a recount
		perRow     []float64       // ns per row, polls with rows
		recounts   []time.Duration
		totalRows  float64
		driftTotal float64
	)
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		before, recountsBefore := rowsRead(), testutil.ToFloat64(s.m.recounts)
		t0 := time.Now()
		more, err := s.poll(ctx)
		took := time.Since(t0)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		rows := rowsRead() - before
		totalRows += rows
		if testutil.ToFloat64(s.m.recounts) > recountsBefore {
			recounts = append(recounts, took)
			var d float64
			for _, k := range driftKinds {
				d += testutil.ToFloat64(s.m.drift.WithLabelValues(k))
			}
			driftTotal += d
			t.Logf("recount in the poll's snapshot: %v, drift %v", took.Round(time.Millisecond), d)
		} else {
			polls = append(polls, took)
			if rows > 0 {
				perRow = append(perRow, float64(took.Nanoseconds())/rows)
			}
		}
		if !more {
			// Real time on purpose: the stream's own pause between polls,
			// measured against live traffic.
			time.Sleep(cfg.PollInterval)
		}
	}
	// A last recount in the same snapshot as a drained poll.
	s.cfg.RecountInterval = time.Nanosecond
	if _, err := s.poll(ctx); err != nil {
		t.Fatal(err)
	}
	var last float64
	for _, k := range driftKinds {
		last += testutil.ToFloat64(s.m.drift.WithLabelValues(k))
	}
	t.Logf("final recount: drift %v", last)
	if driftTotal+last != 0 {
		t.Errorf("the incremental counts drifted from the full count: %v", driftTotal+last)
	}
	t.Logf("%v: %d polls, %.0f rows (%.0f rows/s); poll p50 %v p95 %v max %v; %.1f µs/row (p50 over polls with rows); %d recounts, median %v; gaps open %v, late rows %v",
		duration, len(polls), totalRows, totalRows/duration.Seconds(),
		quantile(polls, .5), quantile(polls, .95), quantile(polls, 1), medianFloat(perRow)/1000,
		len(recounts), quantile(recounts, .5),
		testutil.ToFloat64(s.m.gaps.WithLabelValues("tasker_workflow_step_transitions")),
		testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker_workflow_step_transitions"))+
			testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker_task_transitions")))
}

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return d
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)].Round(10 * time.Microsecond)
}

func medianFloat(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := slices.Clone(fs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkStreamSparseIDs measures what missing ids cost an idle poll: a
// Rails database whose task transition ids are sparse (every other one
// missing: deleted or rolled-back rows), 50,000 gaps below a freshly
// started stream's watermark. "open" keeps the gaps (as before they were
// settled: until gap_horizon, 10 minutes of polls); "settled" is the poll
// after every transaction that could fill them has ended.
func BenchmarkStreamSparseIDs(b *testing.B) {
	pg := pgtest.NewTasker(b)
	f := newFixture(b, pg)
	nt := f.namedTask("default", "sparse", "0.1.0")
	task := f.task(nt)
	f.exec(`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent, created_at, updated_at)
		SELECT $1, 'pending', g, false, $2, $2 FROM generate_series(1, 100000) AS g`, task, epoch)
	f.exec(`DELETE FROM tasker_task_transitions WHERE id % 2 = 0`)
	cfg := DefaultStreamConfig()
	cfg.Checkpoint.File = ""
	cfg.RecountInterval = 0
	db, _ := openTest(b, pg.URL)
	s := NewStream(db, cfg, nil, nil, nil)
	ctx := context.Background()
	if err := s.init(ctx); err != nil {
		b.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()}
	s.now = clock.Now
	for _, settle := range []bool{false, true} {
		name := "open"
		if settle {
			name = "settled"
		}
		s.settleGaps = settle
		if settle {
			clock.Advance(gapSettle)
			if _, err := s.poll(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.poll(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(s.pos[tableTaskTransitions].gapIDs()), "gap_ids")
		})
	}
}
