package collector

import (
	_ "embed"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
