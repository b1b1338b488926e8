package analytics

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

var (
	//go:embed testdata/get_analytics_metrics_v01.sql
	yardstickMetricsSQL string
	//go:embed testdata/get_step_readiness_status_v02.sql
	yardstickReadinessSQL string
	//go:embed testdata/get_task_execution_context.sql
	yardstickContextSQL string
	//go:embed testdata/calculate_dependency_levels.sql
	yardstickLevelsSQL string
	//go:embed testdata/get_slowest_v01_intended.sql
	yardstickSlowestSQL string
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// installYardsticks creates Tasker's functions, transcribed from the facts,
// in the test database.
func installYardsticks(t testing.TB, db pgtest.DB) {
	t.Helper()
	conn := db.Conn(t)
	for _, sql := range []string{yardstickMetricsSQL, yardstickReadinessSQL, yardstickContextSQL, yardstickLevelsSQL, yardstickSlowestSQL} {
		if _, err := conn.Exec(testCtx(t), sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("install yardstick: %v", err)
		}
	}
}

// servicePool opens the sidecar's own read-only UTC pool on db.
func servicePool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := collector.Open(collector.DBConfig{URL: secret.URL(url)}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(db.Close)
	return db.Pool()
}

// tr is a transition: to state, at now minus ago.
type tr struct {
	state string
	ago   time.Duration
}

func at(state string, ago time.Duration) tr { return tr{state, ago} }

// stepOpts are a step's columns; nil pointers are stored as NULL (or the
// column default where the column is NOT NULL).
type stepOpts struct {
	attempts, retryLimit *int32
	notRetryable         bool
	processed, inProcess bool
	nullRetryLimit       bool // store NULL instead of the default 3 when retryLimit is nil
	lastAttemptedAgo     *time.Duration
	backoff              *int32
	results              string
	createdAgo           time.Duration
}

func i32(v int32) *int32                 { return &v }
func dur(d time.Duration) *time.Duration { return &d }

// fixture writes Tasker rows in one open transaction whose NOW() the code
// under test shares: every timestamp is "now minus ago", so window
// boundaries can be hit to the microsecond.
type fixture struct {
	t   testing.TB
	ctx context.Context
	tx  pgx.Tx

	system     int32
	namespaces map[string]int32
	stepNames  map[string]int32
	seq        int
}

// newFixture begins a REPEATABLE READ transaction on a UTC session of db;
// it is rolled back at cleanup, so each test starts from the bare schema.
func newFixture(t testing.TB, db pgtest.DB) *fixture {
	t.Helper()
	ctx := testCtx(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "SET TIME ZONE 'UTC'"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	f := &fixture{t: t, ctx: ctx, tx: tx, namespaces: map[string]int32{}, stepNames: map[string]int32{}}
	f.system = f.id(`INSERT INTO tasker_dependent_systems (name, created_at, updated_at)
		VALUES ('fixture', now(), now()) RETURNING dependent_system_id`)
	return f
}

func (f *fixture) id(sql string, args ...any) int32 {
	f.t.Helper()
	var id int32
	if err := f.tx.QueryRow(f.ctx, sql, args...).Scan(&id); err != nil {
		f.t.Fatalf("fixture %q: %v", sql, err)
	}
	return id
}

func (f *fixture) id64(sql string, args ...any) int64 {
	f.t.Helper()
	var id int64
	if err := f.tx.QueryRow(f.ctx, sql, args...).Scan(&id); err != nil {
		f.t.Fatalf("fixture %q: %v", sql, err)
	}
	return id
}

func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.tx.Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("fixture %q: %v", sql, err)
	}
}

// naive is the SQL for a naive UTC timestamp ago before NOW().
const naive = `((now() AT TIME ZONE 'UTC') - $%d::interval)`

func ts(n int) string { return fmt.Sprintf(naive, n) }

func (f *fixture) namedTask(ns, name, version string) int32 {
	f.t.Helper()
	nsID, ok := f.namespaces[ns]
	if !ok {
		nsID = f.id(`INSERT INTO tasker_task_namespaces (name, created_at, updated_at)
			VALUES ($1, now(), now()) RETURNING task_namespace_id`, ns)
		f.namespaces[ns] = nsID
	}
	return f.id(`INSERT INTO tasker_named_tasks (name, task_namespace_id, version, created_at, updated_at)
		VALUES ($1, $2, $3, now(), now()) RETURNING named_task_id`, name, nsID, version)
}

func (f *fixture) namedStep(name string) int32 {
	f.t.Helper()
	if id, ok := f.stepNames[name]; ok {
		return id
	}
	id := f.id(`INSERT INTO tasker_named_steps (dependent_system_id, name, created_at, updated_at)
		VALUES ($1, $2, now(), now()) RETURNING named_step_id`, f.system, name)
	f.stepNames[name] = id
	return id
}

// task creates a task created ago before NOW() with the given transitions
// (the last one most recent).
func (f *fixture) task(namedTask int32, ago time.Duration, states ...tr) int64 {
	f.t.Helper()
	f.seq++
	id := f.id64(`INSERT INTO tasker_tasks (named_task_id, requested_at, identity_hash, context, initiator, source_system, created_at, updated_at)
		VALUES ($1, `+ts(2)+`, $3, '{}', 'fixture', 'tests', `+ts(2)+`, `+ts(2)+`) RETURNING task_id`,
		namedTask, ago, fmt.Sprintf("fixture-%d", f.seq))
	f.transitions("tasker_task_transitions", "task_id", id, states)
	return id
}

func (f *fixture) transitions(table, owner string, id int64, states []tr) {
	f.t.Helper()
	for i, s := range states {
		f.exec(`INSERT INTO `+table+` (to_state, sort_key, most_recent, `+owner+`, metadata, created_at, updated_at)
			VALUES ($1, $2, $3, $4, '{}', `+ts(5)+`, `+ts(5)+`)`,
			s.state, (i+1)*10, i == len(states)-1, id, s.ago)
	}
}

func (f *fixture) step(task int64, name string, o stepOpts, states ...tr) int64 {
	f.t.Helper()
	var last any
	if o.lastAttemptedAgo != nil {
		last = *o.lastAttemptedAgo
	}
	var results any
	if o.results != "" {
		results = o.results
	}
	id := f.id64(`INSERT INTO tasker_workflow_steps
		(task_id, named_step_id, retryable, retry_limit, in_process, processed, attempts,
		 last_attempted_at, backoff_request_seconds, results, created_at, updated_at)
		VALUES ($1, $2, $3, CASE WHEN $12::boolean THEN NULL ELSE COALESCE($4::integer, 3) END, $5, $6, $7,
		 CASE WHEN $8::interval IS NULL THEN NULL ELSE (now() AT TIME ZONE 'UTC') - $8::interval END,
		 $9, $10::text::jsonb, `+ts(11)+`, `+ts(11)+`)
		RETURNING workflow_step_id`,
		task, f.namedStep(name), !o.notRetryable, o.retryLimit, o.inProcess, o.processed, o.attempts,
		last, o.backoff, results, o.createdAgo, o.nullRetryLimit && o.retryLimit == nil)
	f.transitions("tasker_workflow_step_transitions", "workflow_step_id", id, states)
	return id
}

func (f *fixture) edge(from, to int64) {
	f.t.Helper()
	f.exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name, created_at, updated_at)
		VALUES ($1, $2, 'provides', now(), now())`, from, to)
}

// now is the fixture transaction's NOW().
func (f *fixture) now() time.Time {
	f.t.Helper()
	var n time.Time
	if err := f.tx.QueryRow(f.ctx, "SELECT now()").Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}
