package collector

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

//go:embed testdata/get_system_health_counts_v01.sql
var yardstickSQL string

// withoutConns zeroes the two connection columns, which depend on the server
// rather than the fixture.
func withoutConns(c HealthCounts) HealthCounts {
	c.ActiveConnections, c.MaxConnections = 0, 0
	return c
}

func refresh(t *testing.T, db *DB) Snapshot {
	t.Helper()
	snap, err := db.Refresh(testCtx(t))
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	return snap
}

func TestRefreshEmptyTasker(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	snap := refresh(t, db)
	if got := withoutConns(snap.Counts); got != (HealthCounts{}) {
		t.Errorf("counts = %+v, want zeros", got)
	}
	if len(snap.Tasks) != 0 || len(snap.Steps) != 0 {
		t.Errorf("groups = %v / %v, want none", snap.Tasks, snap.Steps)
	}
	if snap.TakenAt.IsZero() || snap.TakenAt.Location() != time.UTC || snap.Duration <= 0 {
		t.Errorf("TakenAt=%v Duration=%v, want a UTC time and a positive duration", snap.TakenAt, snap.Duration)
	}
}

func TestRefreshCounts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		fromState bool
	}{
		{"from_state NULL as Tasker writes it", false},
		{"from_state filled", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.NewTasker(t)
			f := newFixture(t, pg)
			f.fromState = tc.fromState
			buildMixed(f)
			db, _ := openTest(t, pg.URL)

			snap := refresh(t, db)
			if got, want := withoutConns(snap.Counts), mixedCounts(); got != want {
				t.Errorf("counts\n got %+v\nwant %+v", got, want)
			}
			if !reflect.DeepEqual(snap.Tasks, mixedTaskGroups()) {
				t.Errorf("task groups\n got %v\nwant %v", snap.Tasks, mixedTaskGroups())
			}
			if !reflect.DeepEqual(snap.Steps, mixedStepGroups()) {
				t.Errorf("step groups\n got %v\nwant %v", snap.Steps, mixedStepGroups())
			}
			if snap.ResolvedManuallyTasks != 1 || snap.CancelledSteps != 1 || snap.ResolvedManuallySteps != 1 {
				t.Errorf("extras = %d resolved tasks, %d cancelled steps, %d resolved steps; want 1, 1, 1",
					snap.ResolvedManuallyTasks, snap.CancelledSteps, snap.ResolvedManuallySteps)
			}
			// The retry classes per named task sum to the columns (see
			// buildMixed: all steps in error belong to invoice or welcome).
			var byClass = map[string]int64{}
			for _, g := range snap.ErrorStepsByName {
				byClass[g.State] += g.Count
			}
			c := snap.Counts
			if byClass[RetryClassRetryable] != c.RetryableErrorSteps || byClass[RetryClassExhausted] != c.ExhaustedRetrySteps ||
				byClass[RetryClassInBackoff] != c.InBackoffSteps {
				t.Errorf("error steps by name %+v do not sum to the columns %+v", snap.ErrorStepsByName, c)
			}
			wantByName := []GroupCount{
				{"billing", "invoice", RetryClassExhausted, 3}, {"billing", "invoice", RetryClassInBackoff, 1},
				{"billing", "invoice", RetryClassRetryable, 2},
				{"default", "welcome", RetryClassInBackoff, 1}, {"default", "welcome", RetryClassRetryable, 1},
			}
			if !reflect.DeepEqual(snap.ErrorStepsByName, wantByName) {
				t.Errorf("error steps by name\n got %+v\nwant %+v", snap.ErrorStepsByName, wantByName)
			}
			// Transition rows are written at epoch + sort_key seconds: the one
			// step in progress entered it at sort key 20, the retryable step
			// of t1 (no transition: pending) entered error at 30. (t5's are
			// excluded, t5 itself being in error: TestOldestRetryableStep.)
			base, _ := time.Parse(time.DateTime, epoch)
			if got, want := snap.OldestInProgressStep, base.Add(20*time.Second); !got.Equal(want) {
				t.Errorf("oldest in progress = %v, want %v", got, want)
			}
			if got, want := snap.OldestRetryableErrorStep, base.Add(30*time.Second); !got.Equal(want) {
				t.Errorf("oldest retryable error = %v, want %v", got, want)
			}
			// The breakdown must add up to the totals, "" bucket included.
			if sum(snap.Tasks) != snap.Counts.TotalTasks || sum(snap.Steps) != snap.Counts.TotalSteps {
				t.Errorf("group sums %d/%d != totals %d/%d",
					sum(snap.Tasks), sum(snap.Steps), snap.Counts.TotalTasks, snap.Counts.TotalSteps)
			}
		})
	}
}

func sum(gs []GroupCount) int64 {
	var n int64
	for _, g := range gs {
		n += g.Count
	}
	return n
}

// TestRefreshMatchesYardstick checks our queries against a transcription of
// Tasker's own function on the same data.
func TestRefreshMatchesYardstick(t *testing.T) {
	t.Parallel()
	randomSeed := uint64(time.Now().UnixNano())
	for _, tc := range []struct {
		name  string
		build func(*fixture)
	}{
		{"empty", func(*fixture) {}},
		{"mixed", buildMixed},
		{"random seed 1", func(f *fixture) { buildRandom(f, 1, 150) }},
		{"random seed 2", func(f *fixture) { buildRandom(f, 2, 150) }},
		{"random seed 3", func(f *fixture) { buildRandom(f, 3, 300) }},
		{"random seed from clock", func(f *fixture) {
			f.t.Logf("seed %d (reproduce with buildRandom(f, %d, 200))", randomSeed, randomSeed)
			buildRandom(f, randomSeed, 200)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.NewTasker(t)
			f := newFixture(t, pg)
			f.exec("BEGIN") // one commit instead of one fsync per row
			tc.build(f)
			f.exec("COMMIT")
			f.exec(yardstickSQL)
			want := yardstick(t, f.conn)

			db, _ := openTest(t, pg.URL)
			got := refresh(t, db)
			t.Logf("counts %+v", got.Counts)
			if withoutConns(got.Counts) != withoutConns(want) {
				t.Errorf("counts differ from get_system_health_counts_v01()\n got %+v\nwant %+v",
					withoutConns(got.Counts), withoutConns(want))
			}
			// Both count their own querying session, so each sees at least 1;
			// the exact number can differ if autovacuum is active in between.
			if got.Counts.ActiveConnections < 1 || want.ActiveConnections < 1 {
				t.Errorf("active connections: got %d, yardstick %d; both must be >= 1",
					got.Counts.ActiveConnections, want.ActiveConnections)
			}
			if got.Counts.MaxConnections != want.MaxConnections {
				t.Errorf("max connections: got %d, yardstick %d", got.Counts.MaxConnections, want.MaxConnections)
			}
		})
	}
}

func yardstick(t *testing.T, conn *pgx.Conn) HealthCounts {
	t.Helper()
	var c HealthCounts
	err := conn.QueryRow(testCtx(t), "SELECT * FROM get_system_health_counts_v01()").Scan(
		&c.TotalTasks, &c.PendingTasks, &c.InProgressTasks, &c.CompleteTasks, &c.ErrorTasks, &c.CancelledTasks,
		&c.TotalSteps, &c.PendingSteps, &c.InProgressSteps, &c.CompleteSteps, &c.ErrorSteps,
		&c.RetryableErrorSteps, &c.ExhaustedRetrySteps, &c.InBackoffSteps,
		&c.ActiveConnections, &c.MaxConnections)
	if err != nil {
		t.Fatalf("yardstick: %v", err)
	}
	return c
}

func TestRefreshConnections(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	db, _ := openTest(t, pg.URL)
	snap := refresh(t, db)
	var max int64
	if err := pg.Conn(t).QueryRow(testCtx(t), "SELECT current_setting('max_connections')::bigint").Scan(&max); err != nil {
		t.Fatal(err)
	}
	if snap.Counts.ActiveConnections < 1 {
		t.Errorf("active connections = %d, want >= 1 (our own session)", snap.Counts.ActiveConnections)
	}
	if snap.Counts.MaxConnections != max || max <= 0 {
		t.Errorf("max connections = %d, want %d > 0", snap.Counts.MaxConnections, max)
	}
}

// TestSessionTimeZone sets a non-UTC zone everywhere a client could pick one
// up and checks that our sessions still run in UTC.
func TestSessionTimeZone(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	buildMixed(f)
	db, _ := openTest(t, pg.URL)
	before := refresh(t, db)
	db.Close()

	f.exec("ALTER DATABASE " + pgx.Identifier{pg.Name}.Sanitize() + " SET timezone = 'Asia/Tokyo'")
	var plain string
	if err := pg.Conn(t).QueryRow(testCtx(t), "SHOW TimeZone").Scan(&plain); err != nil {
		t.Fatal(err)
	}
	if plain != "Asia/Tokyo" {
		t.Fatalf("a plain session reports %q; the database setting did not take", plain)
	}

	for _, tc := range []struct{ name, query string }{
		{"database default", ""},
		{"timezone in URL", "timezone=Asia%2FTokyo"},
		{"TimeZone in URL", "TimeZone=America%2FNew_York"},
		{"-c option in URL", "options=-c%20TimeZone%3DAsia%2FTokyo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := pg.URL
			if tc.query != "" {
				u += "&"
				if !strings.Contains(pg.URL, "?") {
					u = pg.URL + "?"
				}
				u += tc.query
			}
			db, _ := openTest(t, u)
			var zone string
			if err := db.pool.QueryRow(testCtx(t), "SHOW TimeZone").Scan(&zone); err != nil {
				t.Fatal(err)
			}
			if zone != "UTC" {
				t.Errorf("session TimeZone = %q, want UTC", zone)
			}
			after := refresh(t, db)
			if withoutConns(after.Counts) != withoutConns(before.Counts) ||
				!reflect.DeepEqual(after.Tasks, before.Tasks) || !reflect.DeepEqual(after.Steps, before.Steps) {
				t.Errorf("numbers changed with the zone\nbefore %+v\n after %+v", before.Counts, after.Counts)
			}
		})
	}
}

func TestSessionSettings(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	db, err := Open(DBConfig{
		URL: secret.URL(pg.URL), StatementTimeout: 7 * time.Second, lockTimeout: 300 * time.Millisecond,
		ApplicationName: "sidecar-under-test",
	}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for setting, want := range map[string]string{
		"TimeZone":                      "UTC",
		"default_transaction_read_only": "on",
		"statement_timeout":             "7s",
		"lock_timeout":                  "300ms",
		"application_name":              "sidecar-under-test",
	} {
		var got string
		if err := db.pool.QueryRow(testCtx(t), "SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := db.pool.Stat().MaxConns(); got != DefaultDBConfig().MaxConns {
		t.Errorf("pool max conns = %d, want %d", got, DefaultDBConfig().MaxConns)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	db, _ := openTest(t, pg.URL)
	for _, sql := range []string{
		"INSERT INTO tasker_task_namespaces (name, created_at, updated_at) VALUES ('x', now(), now())",
		"UPDATE tasker_tasks SET complete = true",
		"CREATE TABLE sidecar_was_here (id int)",
		"SELECT nextval('tasker_tasks_task_id_seq')",
	} {
		_, err := db.pool.Exec(testCtx(t), sql)
		if code := sqlState(err); code != "25006" { // read_only_sql_transaction
			t.Errorf("%s: err = %v (SQLSTATE %q), want read_only_sql_transaction", sql, err, code)
		}
	}
}

func TestMissingTables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		drop []string
		want []string
	}{
		{"not a Tasker database", nil, schema.Required},
		{"one table dropped", []string{"tasker_workflow_step_edges"}, []string{"tasker_workflow_step_edges"}},
		{"two tables dropped", []string{"tasker_workflow_step_transitions", "tasker_task_transitions"},
			[]string{"tasker_task_transitions", "tasker_workflow_step_transitions"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var pg pgtest.DB
			if tc.drop == nil {
				pg = pgtest.New(t)
			} else {
				pg = pgtest.NewTasker(t)
				for _, table := range tc.drop {
					if _, err := pg.Conn(t).Exec(testCtx(t), "DROP TABLE "+table+" CASCADE"); err != nil {
						t.Fatal(err)
					}
				}
			}
			logger, logs := captureLogger(t)
			db, err := Open(DBConfig{URL: secret.URL(pg.URL)}, nil, logger)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := db.MissingTables(); got != nil {
				t.Errorf("MissingTables before any check = %v, want nil", got)
			}
			missing, err := db.CheckSchema(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(missing, tc.want) || !slices.Equal(db.MissingTables(), tc.want) {
				t.Errorf("missing = %v, MissingTables = %v, want %v", missing, db.MissingTables(), tc.want)
			}

			_, err = db.Refresh(testCtx(t))
			var se *SchemaError
			if !errors.As(err, &se) || !slices.Equal(se.Missing, tc.want) {
				t.Fatalf("Refresh err = %v, want SchemaError for %v", err, tc.want)
			}
			for _, table := range tc.want {
				if !strings.Contains(err.Error(), table) {
					t.Errorf("error %q does not name %s", err, table)
				}
				if !strings.Contains(logs.String(), table) {
					t.Errorf("logs do not name %s", table)
				}
			}
			// Logged when the answer changes, not on every check.
			if n := strings.Count(logs.String(), "Tasker tables are missing"); n != 1 {
				t.Errorf("missing tables logged %d times, want once", n)
			}
		})
	}
}

// TestSchemaRecheckAfterReconnect: tables created while the sidecar runs are
// noticed by Ping once it is on a new connection.
func TestSchemaRecheckAfterReconnect(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	admin := pg.Conn(t)
	if _, err := admin.Exec(testCtx(t), "DROP TABLE tasker_workflow_step_edges CASCADE"); err != nil {
		t.Fatal(err)
	}
	db, _ := openTest(t, pg.URL)
	if latency, err := db.Ping(testCtx(t)); err != nil || latency <= 0 {
		t.Fatalf("Ping = %v, %v", latency, err)
	}
	if got := db.MissingTables(); !slices.Equal(got, []string{"tasker_workflow_step_edges"}) {
		t.Fatalf("after first ping MissingTables = %v", got)
	}
	if err := schema.Apply(testCtx(t), admin); err != nil {
		t.Fatal(err)
	}
	db.pool.Reset() // drop every connection, as a server restart would
	if _, err := db.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := db.MissingTables(); got != nil {
		t.Errorf("after reconnect MissingTables = %v, want nil", got)
	}
}

func sqlState(err error) string {
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) {
		return pgErr.SQLState()
	}
	return ""
}

// Only a step whose task is still active waits for a retry: a task that
// ended (in error, say) retries nothing until an operator retries it.
func TestOldestRetryableStep(t *testing.T) {
	t.Parallel()
	base, _ := time.Parse(time.DateTime, epoch)
	retryable := stepSpec{attempts: n32(1), retryLimit: n32(3)}
	exhausted := stepSpec{attempts: n32(3), retryLimit: n32(3)}
	for _, tc := range []struct {
		name  string
		build func(f *fixture)
		want  time.Time
	}{
		{"none in error", func(f *fixture) {
			nt := f.namedTask("ns", "t", "1")
			f.step(f.task(nt, "pending", "in_progress"), retryable, "pending", "in_progress", "complete")
		}, time.Time{}},
		{"a task in progress waits", func(f *fixture) {
			nt := f.namedTask("ns", "t", "1")
			f.step(f.task(nt, "pending", "in_progress"), retryable, "pending", "in_progress", "error")
		}, base.Add(30 * time.Second)},
		{"a task with no transition is pending", func(f *fixture) {
			nt := f.namedTask("ns", "t", "1")
			f.step(f.task(nt), retryable, "pending", "error")
		}, base.Add(20 * time.Second)},
		{"a task that ended in error does not", func(f *fixture) {
			nt := f.namedTask("ns", "t", "1")
			f.step(f.task(nt, "pending", "in_progress", "error"), retryable, "pending", "in_progress", "error")
		}, time.Time{}},
		{"no retries left does not", func(f *fixture) {
			nt := f.namedTask("ns", "t", "1")
			f.step(f.task(nt, "pending", "in_progress"), exhausted, "pending", "in_progress", "error")
		}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.NewTasker(t)
			f := newFixture(t, pg)
			tc.build(f)
			db, _ := openTest(t, pg.URL)
			if got := refresh(t, db).OldestRetryableErrorStep; !got.Equal(tc.want) {
				t.Errorf("oldest retryable step in error = %v, want %v", got, tc.want)
			}
		})
	}
}

//go:embed testdata/get_system_health_counts_core.sql
var coreYardstickSQL string

// coreFixture writes tasker-core rows directly with SQL into a fresh
// database holding the core schema (schema.ApplyCore). Every transition of
// an entity is written at coreBase + start + sort_key seconds, the last one
// most_recent, the earlier ones kept as history rows.
type coreFixture struct {
	t    *testing.T
	pg   pgtest.DB
	conn *pgx.Conn
	n    int
}

var coreBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newCoreFixture(t *testing.T) *coreFixture {
	t.Helper()
	pg := pgtest.New(t)
	conn := pg.Conn(t)
	if err := schema.ApplyCore(testCtx(t), conn); err != nil {
		t.Fatal(err)
	}
	return &coreFixture{t: t, pg: pg, conn: conn}
}

func (f *coreFixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.conn.Exec(testCtx(f.t), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f *coreFixture) key(sql string, args ...any) string {
	f.t.Helper()
	var k string
	if err := f.conn.QueryRow(testCtx(f.t), sql, args...).Scan(&k); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return k
}

func (f *coreFixture) namedTask(ns, name string) string {
	f.exec(`INSERT INTO tasker.task_namespaces (name, created_at, updated_at) VALUES ($1, $2, $2)
	        ON CONFLICT (name) DO NOTHING`, ns, coreBase)
	return f.key(`INSERT INTO tasker.named_tasks (task_namespace_uuid, name, created_at, updated_at)
	              SELECT task_namespace_uuid, $2, $3, $3 FROM tasker.task_namespaces WHERE name = $1
	              RETURNING named_task_uuid::text`, ns, name, coreBase)
}

// transitions writes states as table's history for key (column col).
func (f *coreFixture) transitions(table, col, key string, start int, states []string) {
	var from any
	for i, st := range states {
		at := coreBase.Add(time.Duration(start+i+1) * time.Second)
		f.exec(`INSERT INTO `+table+` (`+col+`, to_state, from_state, sort_key, most_recent, created_at, updated_at)
		        VALUES ($1, $2, $3, $4, $5, $6, $6)`, key, st, from, i+1, i == len(states)-1, at)
		from = st
	}
}

func (f *coreFixture) task(nt string, start int, states ...string) string {
	f.n++
	k := f.key(`INSERT INTO tasker.tasks (named_task_uuid, requested_at, identity_hash, created_at, updated_at, correlation_id)
	            VALUES ($1, $2, $3, $2, $2, gen_random_uuid()) RETURNING task_uuid::text`,
		nt, coreBase, fmt.Sprintf("identity-%d", f.n))
	f.transitions("tasker.task_transitions", "task_uuid", k, start, states)
	return k
}

type coreStep struct {
	attempts, maxAttempts *int32
	start                 int
}

func (f *coreFixture) step(task string, spec coreStep, states ...string) string {
	f.n++
	ns := f.key(`INSERT INTO tasker.named_steps (name, created_at, updated_at) VALUES ($1, $2, $2)
	             RETURNING named_step_uuid::text`, fmt.Sprintf("step-%d", f.n), coreBase)
	k := f.key(`INSERT INTO tasker.workflow_steps (task_uuid, named_step_uuid, attempts, max_attempts, created_at, updated_at)
	            VALUES ($1, $2, $3, $4, $5, $5) RETURNING workflow_step_uuid::text`,
		task, ns, spec.attempts, spec.maxAttempts, coreBase)
	f.transitions("tasker.workflow_step_transitions", "workflow_step_uuid", k, spec.start, states)
	return k
}

// Core state paths, each a prefix of the next, as the engine walks them.
var (
	coreTaskRun = []string{"pending", "initializing", "enqueuing_steps", "steps_in_process", "evaluating_results"}
	coreStepRun = []string{"pending", "enqueued", "in_progress"}
	coreFailed  = []string{"pending", "enqueued", "in_progress", "enqueued_as_error_for_orchestration"}
)

func path(prefix []string, more ...string) []string { return append(slices.Clone(prefix), more...) }

// buildCoreMixed writes every task and step state of tasker-core, tasks and
// steps without transitions, history rows, and the retry cases. The
// expected numbers below are worked out from it by hand.
func buildCoreMixed(f *coreFixture) {
	inv, wel := f.namedTask("billing", "invoice"), f.namedTask("default", "welcome")
	f.task(inv, 0) // no transition: total only
	f.task(inv, 0, "pending")
	f.task(inv, 0, coreTaskRun[:2]...)
	f.task(inv, 0, coreTaskRun[:3]...)
	running := f.task(inv, 0, coreTaskRun[:4]...)
	f.task(inv, 0, coreTaskRun...)
	f.task(inv, 0, path(coreTaskRun, "waiting_for_dependencies")...)
	f.task(inv, 0, path(coreTaskRun, "waiting_for_retry")...)
	f.task(inv, 0, path(coreTaskRun, "blocked_by_failures")...)
	f.task(inv, 0, path(coreTaskRun, "complete")...)
	failed := f.task(inv, 0, path(coreTaskRun, "blocked_by_failures", "error")...)
	f.task(inv, 0, "pending", "cancelled")
	resolved := f.task(wel, 0, path(coreTaskRun, "blocked_by_failures", "error", "resolved_manually")...)
	f.task(wel, 0)
	done := f.task(wel, 0, path(coreTaskRun, "complete")...)
	_ = resolved

	one, three, four, five := n32(1), n32(3), n32(4), n32(5)
	// Steps of the invoice task in steps_in_process.
	f.step(running, coreStep{}) // no transition
	f.step(running, coreStep{}, "pending")
	f.step(running, coreStep{}, "pending", "enqueued")                                                                // enqueued at +2
	f.step(running, coreStep{start: 50}, coreStepRun...)                                                              // in_progress at +53
	f.step(running, coreStep{start: 10}, path(coreStepRun, "enqueued_for_orchestration")...)                          // at +14
	f.step(running, coreStep{start: 20}, coreFailed...)                                                               // at +24
	f.step(running, coreStep{attempts: one, maxAttempts: three, start: 20}, path(coreFailed, "waiting_for_retry")...) // at +25
	f.step(running, coreStep{}, path(coreStepRun, "enqueued_for_orchestration", "complete")...)
	f.step(running, coreStep{attempts: three, maxAttempts: three}, path(coreFailed, "error")...) // exhausted
	f.step(running, coreStep{attempts: one, maxAttempts: three}, path(coreFailed, "error")...)   // not retryable: no class
	f.step(running, coreStep{attempts: five}, path(coreFailed, "error")...)                      // NULL max_attempts: no class
	f.step(running, coreStep{}, "pending", "cancelled")
	f.step(running, coreStep{}, path(coreFailed, "error", "resolved_manually")...)
	// Retried once and waiting again: at +10, with a history of nine rows.
	f.step(running, coreStep{attempts: n32(2), maxAttempts: three},
		path(path(coreFailed, "waiting_for_retry"), path(coreFailed, "waiting_for_retry")...)...)
	// Waiting for a retry on a task that ended in error (at +5): counted,
	// but nothing retries it, so it is not the oldest waiting.
	f.step(failed, coreStep{attempts: one, maxAttempts: three}, path(coreFailed, "waiting_for_retry")...)
	// Steps of the complete welcome task.
	f.step(done, coreStep{}, path(coreStepRun, "enqueued_for_orchestration", "complete")...)
	f.step(done, coreStep{attempts: four, maxAttempts: three}, path(coreFailed, "error")...) // exhausted
	f.step(done, coreStep{}, coreStepRun...)                                                 // in_progress at +3
	f.step(done, coreStep{maxAttempts: three}, path(coreFailed, "error")...)                 // NULL attempts: no class
}

func coreMixedTaskStates() map[string]int64 {
	return map[string]int64{"pending": 1, "initializing": 1, "enqueuing_steps": 1, "steps_in_process": 1,
		"evaluating_results": 1, "waiting_for_dependencies": 1, "waiting_for_retry": 1, "blocked_by_failures": 1,
		"complete": 2, "error": 1, "cancelled": 1, "resolved_manually": 1}
}

func coreMixedStepStates() map[string]int64 {
	return map[string]int64{"pending": 1, "enqueued": 1, "in_progress": 2, "enqueued_for_orchestration": 1,
		"enqueued_as_error_for_orchestration": 1, "waiting_for_retry": 3, "complete": 2, "error": 5,
		"cancelled": 1, "resolved_manually": 1}
}

// coreYardstick reads the yardstick function into per-state maps and the
// totals, by its column names (pending_tasks is the state pending).
func coreYardstick(t *testing.T, conn *pgx.Conn) (tasks, steps map[string]int64, totalTasks, totalSteps int64) {
	t.Helper()
	rows, err := conn.Query(testCtx(t), "SELECT * FROM tasker.get_system_health_counts()")
	if err != nil {
		t.Fatalf("yardstick: %v", err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("yardstick: no row: %v", rows.Err())
	}
	vals, err := rows.Values()
	if err != nil {
		t.Fatal(err)
	}
	tasks, steps = map[string]int64{}, map[string]int64{}
	for i, fd := range rows.FieldDescriptions() {
		n := vals[i].(int64)
		switch name := fd.Name; {
		case name == "total_tasks":
			totalTasks = n
		case name == "total_steps":
			totalSteps = n
		case strings.HasSuffix(name, "_tasks"):
			tasks[strings.TrimSuffix(name, "_tasks")] = n
		case strings.HasSuffix(name, "_steps"):
			steps[strings.TrimSuffix(name, "_steps")] = n
		default:
			t.Fatalf("yardstick column %s", name)
		}
	}
	return tasks, steps, totalTasks, totalSteps
}

// withZeros is m with every state of states, zeros included, as the
// yardstick reports them.
func withZeros(m map[string]int64, states []string) map[string]int64 {
	out := maps.Clone(m)
	for _, s := range states {
		out[s] += 0
	}
	return out
}

func TestRefreshCoreCounts(t *testing.T) {
	t.Parallel()
	core := engine.Core()
	f := newCoreFixture(t)
	buildCoreMixed(f)
	f.exec(coreYardstickSQL)
	db, _ := openTest(t, f.pg.URL)
	snap := refresh(t, db)

	if snap.Engine != engine.KindCore {
		t.Errorf("Engine = %q, want core", snap.Engine)
	}
	if e, ok := db.Engine(); !ok || e.Kind != engine.KindCore {
		t.Errorf("DB.Engine = %v, %v; want core", e.Kind, ok)
	}
	// By hand (buildCoreMixed): 15 tasks, 2 without a transition; 19 steps,
	// 1 without. Retryable = in backoff = the 3 steps in waiting_for_retry;
	// exhausted = 3 >= 3 and 4 >= 3; 1 < 3 and the NULLs are in no class.
	want := HealthCounts{
		TotalTasks: 15, PendingTasks: 1, CompleteTasks: 2, ErrorTasks: 1, CancelledTasks: 1,
		TotalSteps: 19, PendingSteps: 1, InProgressSteps: 2, CompleteSteps: 2, ErrorSteps: 5,
		RetryableErrorSteps: 3, ExhaustedRetrySteps: 2, InBackoffSteps: 3,
	}
	if got := withoutConns(snap.Counts); got != want {
		t.Errorf("counts\n got %+v\nwant %+v", got, want)
	}
	if got := snap.TaskStates(); !maps.Equal(got, coreMixedTaskStates()) {
		t.Errorf("task states\n got %v\nwant %v", got, coreMixedTaskStates())
	}
	if got := snap.StepStates(); !maps.Equal(got, coreMixedStepStates()) {
		t.Errorf("step states\n got %v\nwant %v", got, coreMixedStepStates())
	}
	if snap.ResolvedManuallyTasks != 1 || snap.CancelledSteps != 1 || snap.ResolvedManuallySteps != 1 {
		t.Errorf("extras = %d, %d, %d; want 1, 1, 1", snap.ResolvedManuallyTasks, snap.CancelledSteps, snap.ResolvedManuallySteps)
	}
	wantTasks := []GroupCount{
		{"billing", "invoice", "", 1}, {"billing", "invoice", "blocked_by_failures", 1},
		{"billing", "invoice", "cancelled", 1}, {"billing", "invoice", "complete", 1},
		{"billing", "invoice", "enqueuing_steps", 1}, {"billing", "invoice", "error", 1},
		{"billing", "invoice", "evaluating_results", 1}, {"billing", "invoice", "initializing", 1},
		{"billing", "invoice", "pending", 1}, {"billing", "invoice", "steps_in_process", 1},
		{"billing", "invoice", "waiting_for_dependencies", 1}, {"billing", "invoice", "waiting_for_retry", 1},
		{"default", "welcome", "", 1}, {"default", "welcome", "complete", 1}, {"default", "welcome", "resolved_manually", 1},
	}
	if !reflect.DeepEqual(snap.Tasks, wantTasks) {
		t.Errorf("task groups\n got %v\nwant %v", snap.Tasks, wantTasks)
	}
	wantSteps := []GroupCount{
		{"billing", "invoice", "", 1}, {"billing", "invoice", "cancelled", 1}, {"billing", "invoice", "complete", 1},
		{"billing", "invoice", "enqueued", 1}, {"billing", "invoice", "enqueued_as_error_for_orchestration", 1},
		{"billing", "invoice", "enqueued_for_orchestration", 1}, {"billing", "invoice", "error", 3},
		{"billing", "invoice", "in_progress", 1}, {"billing", "invoice", "pending", 1},
		{"billing", "invoice", "resolved_manually", 1}, {"billing", "invoice", "waiting_for_retry", 3},
		{"default", "welcome", "complete", 1}, {"default", "welcome", "error", 2}, {"default", "welcome", "in_progress", 1},
	}
	if !reflect.DeepEqual(snap.Steps, wantSteps) {
		t.Errorf("step groups\n got %v\nwant %v", snap.Steps, wantSteps)
	}
	wantByName := []GroupCount{
		{"billing", "invoice", RetryClassExhausted, 1}, {"billing", "invoice", RetryClassInBackoff, 3},
		{"billing", "invoice", RetryClassRetryable, 3}, {"default", "welcome", RetryClassExhausted, 1},
	}
	if !reflect.DeepEqual(snap.ErrorStepsByName, wantByName) {
		t.Errorf("error steps by name\n got %+v\nwant %+v", snap.ErrorStepsByName, wantByName)
	}
	at := func(s int) time.Time { return coreBase.Add(time.Duration(s) * time.Second) }
	wantOldest := map[string]time.Time{
		"enqueued": at(2), "in_progress": at(3), "enqueued_for_orchestration": at(14),
		"enqueued_as_error_for_orchestration": at(24),
	}
	if !maps.EqualFunc(snap.OldestStepByState, wantOldest, time.Time.Equal) {
		t.Errorf("oldest step by state\n got %v\nwant %v", snap.OldestStepByState, wantOldest)
	}
	if !snap.OldestInProgressStep.Equal(at(3)) {
		t.Errorf("oldest in progress = %v, want %v", snap.OldestInProgressStep, at(3))
	}
	if !snap.OldestRetryableErrorStep.Equal(at(10)) {
		t.Errorf("oldest waiting for retry = %v, want %v", snap.OldestRetryableErrorStep, at(10))
	}

	yt, ys, tt, ts := coreYardstick(t, f.conn)
	if !maps.Equal(yt, withZeros(coreMixedTaskStates(), core.TaskStates.All)) || tt != 15 {
		t.Errorf("yardstick tasks %v total %d disagree with the hand count", yt, tt)
	}
	if !maps.Equal(ys, withZeros(coreMixedStepStates(), core.StepStates.All)) || ts != 19 {
		t.Errorf("yardstick steps %v total %d disagree with the hand count", ys, ts)
	}
}

// buildCoreRandom writes n tasks with random histories (random prefixes
// of random core states, so every state and some odd paths occur) and up
// to four steps each.
func buildCoreRandom(f *coreFixture, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	core := engine.Core()
	states := func(all []string) []string {
		out := make([]string, r.IntN(5))
		for i := range out {
			out[i] = all[r.IntN(len(all))]
		}
		return out
	}
	maybe := func() *int32 {
		if r.IntN(8) == 0 {
			return nil
		}
		return n32(int32(r.IntN(5)))
	}
	var named []string
	for i := range 5 {
		named = append(named, f.namedTask(fmt.Sprintf("ns%d", i%3), fmt.Sprintf("task%d", i)))
	}
	for range n {
		task := f.task(named[r.IntN(len(named))], r.IntN(100), states(core.TaskStates.All)...)
		for range r.IntN(5) {
			f.step(task, coreStep{attempts: maybe(), maxAttempts: maybe(), start: r.IntN(100)}, states(core.StepStates.All)...)
		}
	}
}

// TestRefreshCoreMatchesYardstick compares every core state count and the
// totals with the yardstick function on the same data.
func TestRefreshCoreMatchesYardstick(t *testing.T) {
	t.Parallel()
	core := engine.Core()
	seed := uint64(time.Now().UnixNano())
	for _, tc := range []struct {
		name  string
		build func(*coreFixture)
	}{
		{"empty", func(*coreFixture) {}},
		{"mixed", buildCoreMixed},
		{"random seed 1", func(f *coreFixture) { buildCoreRandom(f, 1, 120) }},
		{"random seed from clock", func(f *coreFixture) {
			f.t.Logf("seed %d (reproduce with buildCoreRandom(f, %d, 120))", seed, seed)
			buildCoreRandom(f, seed, 120)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newCoreFixture(t)
			f.exec("BEGIN")
			tc.build(f)
			f.exec("COMMIT")
			f.exec(coreYardstickSQL)
			yt, ys, tt, ts := coreYardstick(t, f.conn)

			db, _ := openTest(t, f.pg.URL)
			snap := refresh(t, db)
			if got := withZeros(snap.TaskStates(), core.TaskStates.All); !maps.Equal(got, yt) {
				t.Errorf("task states differ from get_system_health_counts()\n got %v\nwant %v", got, yt)
			}
			if got := withZeros(snap.StepStates(), core.StepStates.All); !maps.Equal(got, ys) {
				t.Errorf("step states differ from get_system_health_counts()\n got %v\nwant %v", got, ys)
			}
			c := snap.Counts
			if c.TotalTasks != tt || c.TotalSteps != ts || sum(snap.Tasks) != tt || sum(snap.Steps) != ts {
				t.Errorf("totals %d/%d (groups %d/%d), yardstick %d/%d", c.TotalTasks, c.TotalSteps,
					sum(snap.Tasks), sum(snap.Steps), tt, ts)
			}
			if c.ErrorTasks != yt["error"] || c.ErrorSteps != ys["error"] || c.InBackoffSteps != ys["waiting_for_retry"] ||
				c.RetryableErrorSteps != ys["waiting_for_retry"] {
				t.Errorf("columns %+v disagree with the yardstick's error and waiting_for_retry", c)
			}
		})
	}
}

// On core a step waiting for a retry waits only while its task has not
// reached a terminal state.
func TestOldestRetryableStepCore(t *testing.T) {
	t.Parallel()
	at := func(s int) time.Time { return coreBase.Add(time.Duration(s) * time.Second) }
	waiting := path(coreFailed, "waiting_for_retry") // entered at +5
	for _, tc := range []struct {
		name  string
		build func(f *coreFixture)
		want  time.Time
	}{
		{"none waiting", func(f *coreFixture) {
			f.step(f.task(f.namedTask("ns", "t"), 0, coreTaskRun[:4]...), coreStep{}, path(coreStepRun, "enqueued_for_orchestration", "complete")...)
		}, time.Time{}},
		{"a running task waits", func(f *coreFixture) {
			f.step(f.task(f.namedTask("ns", "t"), 0, coreTaskRun[:4]...), coreStep{start: 7}, waiting...)
		}, at(12)},
		{"a task with no transition is pending", func(f *coreFixture) {
			f.step(f.task(f.namedTask("ns", "t"), 0), coreStep{}, waiting...)
		}, at(5)},
		{"a task waiting for its own retry waits", func(f *coreFixture) {
			f.step(f.task(f.namedTask("ns", "t"), 0, path(coreTaskRun, "waiting_for_retry")...), coreStep{start: 1}, waiting...)
		}, at(6)},
		{"a task that ended does not", func(f *coreFixture) {
			nt := f.namedTask("ns", "t")
			for _, end := range []string{"complete", "error", "cancelled", "resolved_manually"} {
				f.step(f.task(nt, 0, path(coreTaskRun, end)...), coreStep{}, waiting...)
			}
		}, time.Time{}},
		{"a step in error does not", func(f *coreFixture) {
			f.step(f.task(f.namedTask("ns", "t"), 0, coreTaskRun[:4]...), coreStep{attempts: n32(1), maxAttempts: n32(3)}, path(coreFailed, "error")...)
		}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newCoreFixture(t)
			tc.build(f)
			db, _ := openTest(t, f.pg.URL)
			if got := refresh(t, db).OldestRetryableErrorStep; !got.Equal(tc.want) {
				t.Errorf("oldest step waiting for a retry = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAttachEngine: the schema check resolves the engine as
// database.engine asks, reports it (Engine, SchemaStatus, the snapshot, one
// log line) and names what it found when it cannot.
func TestAttachEngine(t *testing.T) {
	t.Parallel()
	rails := func(t *testing.T, pg pgtest.DB) {
		if err := schema.Apply(testCtx(t), pg.Conn(t)); err != nil {
			t.Fatal(err)
		}
	}
	core := func(t *testing.T, pg pgtest.DB) {
		if err := schema.ApplyCore(testCtx(t), pg.Conn(t)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name       string
		setup      []func(*testing.T, pgtest.DB)
		configured engine.Kind
		want       engine.Kind // "" when the check must fail
		wantErr    string      // a fragment of the SchemaError
		missing    []string
		is         error
	}{
		{name: "rails", setup: []func(*testing.T, pgtest.DB){rails}, configured: engine.KindAuto, want: engine.KindRails},
		{name: "core", setup: []func(*testing.T, pgtest.DB){core}, configured: engine.KindAuto, want: engine.KindCore},
		{name: "core insisted", setup: []func(*testing.T, pgtest.DB){core}, configured: engine.KindCore, want: engine.KindCore},
		{name: "neither", configured: engine.KindAuto, wantErr: "found neither tasker_tasks", missing: schema.Required, is: engine.ErrNoTables},
		{name: "neither, core insisted", configured: engine.KindCore,
			wantErr: "tasker-core's tables are incomplete: missing tasker.tasks", missing: engine.Core().Tables.List()},
		{name: "both", setup: []func(*testing.T, pgtest.DB){rails, core}, configured: engine.KindAuto,
			wantErr: "found both the Rails engine's tables and tasker-core's", is: engine.ErrBothEngines},
		{name: "both, core insisted", setup: []func(*testing.T, pgtest.DB){rails, core}, configured: engine.KindCore, want: engine.KindCore},
		{name: "partial core", setup: []func(*testing.T, pgtest.DB){core, func(t *testing.T, pg pgtest.DB) {
			if _, err := pg.Conn(t).Exec(testCtx(t), "DROP TABLE tasker.workflow_step_edges CASCADE"); err != nil {
				t.Fatal(err)
			}
		}}, configured: engine.KindAuto, wantErr: "tasker-core's tables are incomplete: missing tasker.workflow_step_edges",
			missing: []string{"tasker.workflow_step_edges"}},
		{name: "rails insisted on core", setup: []func(*testing.T, pgtest.DB){core}, configured: engine.KindRails,
			wantErr: "tasker-core's tables are all there", missing: schema.Required},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := pgtest.New(t)
			for _, s := range tc.setup {
				s(t, pg)
			}
			logger, logs := captureLogger(t)
			db, err := Open(DBConfig{URL: secret.URL(pg.URL), Engine: tc.configured}, nil, logger)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, ok := db.Engine(); ok {
				t.Error("Engine known before any check")
			}
			for range 2 { // the second refresh must not log again
				snap, err := db.Refresh(testCtx(t))
				if tc.want != "" {
					if err != nil {
						t.Fatalf("Refresh: %v", err)
					}
					if snap.Engine != tc.want {
						t.Errorf("snapshot engine = %q, want %q", snap.Engine, tc.want)
					}
					continue
				}
				var se *SchemaError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.wantErr) || !slices.Equal(se.Missing, tc.missing) {
					t.Fatalf("Refresh err = %v (missing %v), want a SchemaError with %q and missing %v", err, se, tc.wantErr, tc.missing)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("%v is not %v", err, tc.is)
				}
				if classify(err) != ReasonSchema {
					t.Errorf("reason = %s, want %s", classify(err), ReasonSchema)
				}
			}
			st := db.SchemaStatus()
			e, ok := db.Engine()
			if tc.want != "" {
				if !ok || e.Kind != tc.want || st.Err != nil || st.Engine.Kind != tc.want {
					t.Errorf("Engine = %q, %v; status %+v; want %q", e.Kind, ok, st, tc.want)
				}
				if n := strings.Count(logs.String(), "attached to a Tasker engine"); n != 1 || !strings.Contains(logs.String(), "engine="+string(tc.want)) {
					t.Errorf("engine logged %d times, want once naming %s", n, tc.want)
				}
				return
			}
			if ok || st.Err == nil || !st.Checked || !slices.Equal(st.Missing, tc.missing) {
				t.Errorf("Engine = %q, %v; status %+v; want no engine and the error", e.Kind, ok, st)
			}
			if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), tc.wantErr) {
				t.Errorf("the schema error was logged %d times, want once naming %q", n, tc.wantErr)
			}
		})
	}
}

// An engine that appears later (a migration while the sidecar runs) is
// found on the next check and logged.
func TestAttachEngineChanges(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	logger, logs := captureLogger(t)
	db, err := Open(DBConfig{URL: secret.URL(pg.URL)}, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Refresh(testCtx(t)); err == nil {
		t.Fatal("Refresh on an empty database succeeded")
	}
	if err := schema.ApplyCore(testCtx(t), pg.Conn(t)); err != nil {
		t.Fatal(err)
	}
	if snap := refresh(t, db); snap.Engine != engine.KindCore {
		t.Errorf("engine = %q after the core schema appeared", snap.Engine)
	}
	if !strings.Contains(logs.String(), "attached to a Tasker engine") || db.MissingTables() != nil {
		t.Errorf("the engine was not logged, or tables are still missing (%v)", db.MissingTables())
	}
}

func TestSnapshotStates(t *testing.T) {
	s := Snapshot{
		Tasks: []GroupCount{{"a", "x", "", 2}, {"a", "x", "complete", 1}, {"b", "y", "complete", 3}, {"b", "y", "steps_in_process", 4}},
		Steps: []GroupCount{{"a", "x", "waiting_for_retry", 5}, {"b", "y", "waiting_for_retry", 1}},
	}
	if got, want := s.TaskStates(), map[string]int64{"complete": 4, "steps_in_process": 4}; !maps.Equal(got, want) {
		t.Errorf("TaskStates = %v, want %v", got, want)
	}
	if got, want := s.StepStates(), map[string]int64{"waiting_for_retry": 6}; !maps.Equal(got, want) {
		t.Errorf("StepStates = %v, want %v", got, want)
	}
	if got := (Snapshot{}).TaskStates(); len(got) != 0 {
		t.Errorf("empty TaskStates = %v", got)
	}
}
