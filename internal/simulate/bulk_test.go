package simulate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

func newPool(t *testing.T, url string, tweak func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// tokyo runs the sessions in a far-from-UTC time zone: the simulator must
// write UTC regardless (facts §1.5).
func tokyo(cfg *pgxpool.Config) { cfg.ConnConfig.RuntimeParams["timezone"] = "Asia/Tokyo" }

func TestBulkInvariantsAndCoverage(t *testing.T) {
	db := pgtest.NewTasker(t)
	pool := newPool(t, db.URL, tokyo)
	now := time.Now().UTC()
	var progress []int
	stats, err := simulate.Bulk(context.Background(), pool, 4000, simulate.Options{
		Seed:      7,
		BatchSize: 700,
		Now:       now,
		// A short history packs many tasks into the last minutes, where tasks
		// are still in flight, so a small run shows every state.
		History: 2 * time.Hour,
		// More failures than the default exercise every retry path.
		ErrorRate: 0.12,
	}, func(done int) { progress = append(progress, done) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", stats)
	if stats.Tasks != 4000 || stats.Steps < 4000*3 || stats.Edges == 0 || stats.TaskTransitions == 0 || stats.StepTransitions == 0 {
		t.Errorf("stats %+v", stats)
	}
	if len(progress) != 6 || progress[len(progress)-1] != 4000 {
		t.Errorf("progress calls %v, want 6 ending at 4000", progress)
	}
	conn := db.Conn(t)
	checkRowCounts(t, conn, stats)
	checkInvariants(t, conn, now)
	checkCoverage(t, conn)

	// Naive timestamps are UTC: the newest task is just before Now, not nine
	// hours off.
	var newest time.Time
	if err := conn.QueryRow(context.Background(), `SELECT max(created_at) FROM tasker_tasks`).Scan(&newest); err != nil {
		t.Fatal(err)
	}
	if d := now.Sub(newest); d < 0 || d > 5*time.Minute {
		t.Errorf("newest task created %v before Now, want within 5m", d)
	}
}

func checkRowCounts(t *testing.T, conn *pgx.Conn, s simulate.Stats) {
	t.Helper()
	for _, c := range []struct {
		table string
		want  int64
	}{
		{"tasker_tasks", s.Tasks},
		{"tasker_workflow_steps", s.Steps},
		{"tasker_workflow_step_edges", s.Edges},
		{"tasker_task_transitions", s.TaskTransitions},
		{"tasker_workflow_step_transitions", s.StepTransitions},
	} {
		if got := count(t, conn, "SELECT count(*) FROM "+c.table); got != c.want {
			t.Errorf("%s has %d rows, stats say %d", c.table, got, c.want)
		}
	}
}

// fingerprint summarises everything Bulk wrote except the ids, which come
// from the sequences.
func fingerprint(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var f string
	err := conn.QueryRow(context.Background(), `
		SELECT md5(string_agg(line, E'\n' ORDER BY line)) FROM (
		  SELECT concat_ws(' ', 'task', t.created_at, t.requested_at, t.updated_at, nt.name, nt.version, t.complete, t.context::text,
		    (SELECT string_agg(concat_ws(':', to_state, sort_key, most_recent, created_at, metadata::text), ',' ORDER BY sort_key)
		     FROM tasker_task_transitions tt WHERE tt.task_id = t.task_id)) AS line
		  FROM tasker_tasks t JOIN tasker_named_tasks nt USING (named_task_id)
		  UNION ALL
		  SELECT concat_ws(' ', 'step', t.created_at, ns.name, ws.created_at, ws.updated_at, ws.attempts, ws.retry_limit, ws.retryable,
		    ws.last_attempted_at, ws.backoff_request_seconds, ws.processed_at, ws.results::text,
		    (SELECT string_agg(concat_ws(':', to_state, sort_key, created_at), ',' ORDER BY sort_key)
		     FROM tasker_workflow_step_transitions st WHERE st.workflow_step_id = ws.workflow_step_id))
		  FROM tasker_workflow_steps ws JOIN tasker_tasks t USING (task_id) JOIN tasker_named_steps ns USING (named_step_id)
		) x`).Scan(&f)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBulkDeterministic(t *testing.T) {
	now := time.Date(2025, 6, 18, 15, 30, 0, 0, time.UTC)
	run := func(batch int) (simulate.Stats, string) {
		db := pgtest.NewTasker(t)
		pool := newPool(t, db.URL, nil)
		s, err := simulate.Bulk(context.Background(), pool, 1500, simulate.Options{Seed: 42, Now: now, BatchSize: batch}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Elapsed = 0
		return s, fingerprint(t, db.Conn(t))
	}
	// A different batch size changes how work is spread over goroutines and
	// transactions, not what is written.
	s1, f1 := run(200)
	s2, f2 := run(1500)
	if s1 != s2 {
		t.Errorf("same seed, different counts:\n%+v\n%+v", s1, s2)
	}
	if f1 != f2 {
		t.Error("same seed, different data")
	}
}

func TestBulkAppendsToExistingData(t *testing.T) {
	db := pgtest.NewTasker(t)
	pool := newPool(t, db.URL, func(c *pgxpool.Config) { c.MaxConns = 1 })
	var total simulate.Stats
	for _, seed := range []int64{9, 9} { // the same seed twice: identity hashes still unique
		s, err := simulate.Bulk(context.Background(), pool, 400, simulate.Options{Seed: seed, Namespaces: []string{"payments", "billing"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		total.Tasks += s.Tasks
		total.Steps += s.Steps
		total.Edges += s.Edges
		total.TaskTransitions += s.TaskTransitions
		total.StepTransitions += s.StepTransitions
	}
	conn := db.Conn(t)
	checkRowCounts(t, conn, total)
	checkInvariants(t, conn, time.Now())
	if n := count(t, conn, `SELECT count(DISTINCT nt.task_namespace_id) FROM tasker_tasks JOIN tasker_named_tasks nt USING (named_task_id)`); n != 2 {
		t.Errorf("tasks in %d namespaces, want 2", n)
	}
}

func TestEnsureCatalogIsIdempotent(t *testing.T) {
	db := pgtest.NewTasker(t)
	pool := newPool(t, db.URL, nil)
	conn := db.Conn(t)
	tables := []string{"tasker_task_namespaces", "tasker_dependent_systems", "tasker_named_steps",
		"tasker_named_tasks", "tasker_named_tasks_named_steps"}
	var first []int64
	for i := range 2 {
		if err := simulate.EnsureCatalog(context.Background(), pool, simulate.Options{}); err != nil {
			t.Fatal(err)
		}
		for j, tbl := range tables {
			n := count(t, conn, "SELECT count(*) FROM "+tbl)
			if i == 0 {
				first = append(first, n)
				if n == 0 {
					t.Errorf("%s is empty", tbl)
				}
			} else if n != first[j] {
				t.Errorf("%s grew from %d to %d rows", tbl, first[j], n)
			}
		}
	}
	if n := count(t, conn, `SELECT count(*) FROM tasker_task_namespaces`); n != 4 {
		t.Errorf("%d namespaces, want the 4 defaults", n)
	}
	if n := count(t, conn, `SELECT count(DISTINCT version) FROM tasker_named_tasks`); n < 2 {
		t.Errorf("%d versions", n)
	}
	// Step templates carry their retry settings, which new steps copy.
	if n := count(t, conn, `SELECT count(*) FROM tasker_named_tasks_named_steps WHERE NOT default_retryable`); n == 0 {
		t.Error("no non-retryable step template")
	}
	if n := count(t, conn, `SELECT count(DISTINCT default_retry_limit) FROM tasker_named_tasks_named_steps`); n < 3 {
		t.Errorf("%d distinct retry limits, want several", n)
	}
}
