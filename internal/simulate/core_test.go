package simulate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

func newCoreDB(t *testing.T) pgtest.DB {
	t.Helper()
	db := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := schema.ApplyCore(ctx, db.Conn(t)); err != nil {
		t.Fatal(err)
	}
	return db
}

// tasker-core's state machines, written out again from
// crates/tasker-shared/src/state_machine/task_state_machine.rs and
// step_state_machine.rs so the tests do not trust the simulator's copy.
// "" is the first row (from_state NULL).
func coreAllowedTask() map[[2]string]bool {
	m := map[string][]string{
		"":                         {"pending"},
		"pending":                  {"initializing", "cancelled"},
		"initializing":             {"enqueuing_steps", "complete", "waiting_for_dependencies", "cancelled"},
		"enqueuing_steps":          {"steps_in_process", "error", "cancelled"},
		"steps_in_process":         {"evaluating_results", "waiting_for_retry", "complete", "error", "cancelled"},
		"evaluating_results":       {"complete", "enqueuing_steps", "waiting_for_dependencies", "blocked_by_failures", "cancelled"},
		"waiting_for_dependencies": {"evaluating_results", "cancelled"},
		"waiting_for_retry":        {"enqueuing_steps", "cancelled"},
		"blocked_by_failures":      {"error", "resolved_manually", "cancelled"},
		"error":                    {"pending", "resolved_manually"},
	}
	return pairs(m)
}

func coreAllowedStep() map[[2]string]bool {
	m := map[string][]string{
		"":                                    {"pending"},
		"pending":                             {"enqueued", "in_progress", "error", "cancelled", "waiting_for_retry"},
		"enqueued":                            {"in_progress", "error", "cancelled", "waiting_for_retry"},
		"in_progress":                         {"enqueued_for_orchestration", "enqueued_as_error_for_orchestration", "complete", "error", "cancelled", "waiting_for_retry"},
		"enqueued_for_orchestration":          {"complete", "error", "cancelled"},
		"enqueued_as_error_for_orchestration": {"error", "complete", "cancelled", "waiting_for_retry"},
		"waiting_for_retry":                   {"pending", "cancelled"},
		"error":                               {"cancelled", "pending"},
	}
	return pairs(m)
}

// checkCoreInvariants asserts what a tasker-core database written by the
// engine satisfies.
func checkCoreInvariants(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	core := engine.Core()
	for _, tr := range []struct {
		table, owner string
		states       []string
		allowed      map[[2]string]bool
	}{
		{"tasker.task_transitions", "task_uuid", core.TaskStates.All, coreAllowedTask()},
		{"tasker.workflow_step_transitions", "workflow_step_uuid", core.StepStates.All, coreAllowedStep()},
	} {
		zero := []struct{ name, query string }{
			{"entities without exactly one most_recent row",
				`SELECT count(*) FROM (SELECT ` + tr.owner + ` FROM ` + tr.table + ` GROUP BY 1
				 HAVING count(*) FILTER (WHERE most_recent) <> 1) x`},
			{"most_recent row that is not the max sort_key",
				`SELECT count(*) FROM (SELECT ` + tr.owner + ` FROM ` + tr.table + ` GROUP BY 1
				 HAVING max(sort_key) <> max(sort_key) FILTER (WHERE most_recent)) x`},
			{"sort keys not 1, 2, 3, …",
				`SELECT count(*) FROM (SELECT sort_key, row_number() OVER (PARTITION BY ` + tr.owner + ` ORDER BY sort_key, created_at) rn
				 FROM ` + tr.table + `) x WHERE sort_key <> rn`},
			{"from_state not the previous to_state",
				`SELECT count(*) FROM (SELECT from_state, lag(to_state) OVER (PARTITION BY ` + tr.owner + ` ORDER BY sort_key) prev
				 FROM ` + tr.table + `) x WHERE from_state IS DISTINCT FROM prev`},
			{"created_at decreasing with sort_key",
				`SELECT count(*) FROM (SELECT created_at, lag(created_at) OVER (PARTITION BY ` + tr.owner + ` ORDER BY sort_key) prev
				 FROM ` + tr.table + `) x WHERE created_at < prev`},
			{"state outside the engine's set",
				`SELECT count(*) FROM ` + tr.table + ` WHERE NOT (to_state = ANY($1))`},
			{"key not UUID version 7",
				`SELECT count(*) FROM ` + tr.table + ` WHERE substr(` + tr.owner + `::text, 15, 1) <> '7'`},
		}
		for _, z := range zero {
			var args []any
			if z.name == "state outside the engine's set" {
				args = append(args, tr.states)
			}
			if n := count(t, conn, z.query, args...); n != 0 {
				t.Errorf("%s: %d %s", tr.table, n, z.name)
			}
		}
		rows, err := conn.Query(context.Background(), `SELECT DISTINCT coalesce(prev, ''), to_state FROM (
			SELECT to_state, lag(to_state) OVER (PARTITION BY `+tr.owner+` ORDER BY sort_key) prev FROM `+tr.table+`) x`)
		if err != nil {
			t.Fatal(err)
		}
		moves, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var m [2]string
			return m, r.Scan(&m[0], &m[1])
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range moves {
			if !tr.allowed[m] {
				t.Errorf("%s: move %q → %q is not in tasker-core's state machine", tr.table, m[0], m[1])
			}
		}
	}
	zero := []struct{ name, query string }{
		{"hand-off rows without the worker's result", `SELECT count(*) FROM tasker.workflow_step_transitions
			WHERE to_state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')
			AND NOT (metadata ? 'success' AND metadata ? 'execution_time_ms' OR metadata->'result' ? 'success')`},
		{"complete task with a step not complete", `SELECT count(*) FROM tasker.task_transitions tt
			JOIN tasker.workflow_steps ws ON ws.task_uuid = tt.task_uuid
			JOIN tasker.workflow_step_transitions st ON st.workflow_step_uuid = ws.workflow_step_uuid AND st.most_recent
			WHERE tt.most_recent AND tt.to_state = 'complete' AND st.to_state <> 'complete'`},
		{"tasks.complete disagrees with the current state", `SELECT count(*) FROM tasker.tasks t
			JOIN tasker.task_transitions tt ON tt.task_uuid = t.task_uuid AND tt.most_recent
			WHERE t.complete <> (tt.to_state = 'complete') OR t.complete <> (t.completed_at IS NOT NULL)`},
		{"step started before a parent completed", `SELECT count(*) FROM tasker.workflow_step_transitions st
			JOIN tasker.workflow_step_edges e ON e.to_step_uuid = st.workflow_step_uuid
			WHERE st.to_state = 'in_progress' AND NOT EXISTS (SELECT 1 FROM tasker.workflow_step_transitions p
			  WHERE p.workflow_step_uuid = e.from_step_uuid AND p.to_state = 'complete' AND p.created_at <= st.created_at)`},
		{"complete step not processed", `SELECT count(*) FROM tasker.workflow_steps ws
			JOIN tasker.workflow_step_transitions st ON st.workflow_step_uuid = ws.workflow_step_uuid AND st.most_recent
			WHERE st.to_state = 'complete' AND (NOT ws.processed OR ws.processed_at IS NULL OR ws.attempts < 1 OR ws.last_attempted_at IS NULL)`},
		{"attempts beyond max_attempts", `SELECT count(*) FROM tasker.workflow_steps WHERE attempts > max_attempts`},
		{"waiting_for_retry step that may not retry", `SELECT count(*) FROM tasker.workflow_steps ws
			JOIN tasker.workflow_step_transitions st ON st.workflow_step_uuid = ws.workflow_step_uuid AND st.most_recent
			WHERE st.to_state = 'waiting_for_retry' AND (NOT ws.retryable OR ws.attempts >= ws.max_attempts OR ws.last_attempted_at IS NULL)`},
		{"more attempts than in_progress rows", `SELECT count(*) FROM tasker.workflow_steps ws WHERE ws.attempts > (
			SELECT count(*) FROM tasker.workflow_step_transitions st
			WHERE st.workflow_step_uuid = ws.workflow_step_uuid AND st.to_state = 'in_progress')`},
		{"task without a correlation id", `SELECT count(*) FROM tasker.tasks WHERE correlation_id IS NULL`},
	}
	for _, z := range zero {
		if n := count(t, conn, z.query); n != 0 {
			t.Errorf("%d %s", n, z.name)
		}
	}
}

func TestCoreBulkInvariantsAndCoverage(t *testing.T) {
	db := newCoreDB(t)
	pool := newPool(t, db.URL, tokyo)
	stats, err := simulate.BulkCore(context.Background(), pool, 3000, simulate.Options{
		Seed: 7, BatchSize: 700, History: 2 * time.Hour, ErrorRate: 0.12,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", stats)
	if stats.Tasks != 3000 || stats.Steps < 3000*3 || stats.TaskTransitions < 3000*3 || stats.StepTransitions < stats.Steps {
		t.Errorf("stats %+v", stats)
	}
	conn := db.Conn(t)
	checkCoreInvariants(t, conn)
	core := engine.Core()
	// A short history leaves tasks in every state a run passes through, though
	// not the momentary ones (a task sits in initializing for milliseconds).
	for _, st := range []string{engine.Pending, engine.StepsInProcess, engine.WaitingForRetry, engine.Complete,
		engine.Error, engine.Cancelled, engine.ResolvedManually} {
		if n := count(t, conn, `SELECT count(*) FROM tasker.task_transitions WHERE most_recent AND to_state = $1`, st); n == 0 {
			t.Errorf("no task currently %s", st)
		}
	}
	for _, st := range core.StepStates.All {
		if st == engine.ResolvedManually {
			continue // operators resolve tasks here, not single steps
		}
		if n := count(t, conn, `SELECT count(*) FROM tasker.workflow_step_transitions WHERE to_state = $1`, st); n == 0 {
			t.Errorf("no step transition to %s", st)
		}
	}
	for _, c := range []struct{ name, query string }{
		{"task metadata in transition_metadata", `SELECT count(*) FROM tasker.task_transitions WHERE transition_metadata <> '{}'`},
		{"hand-off with nested timing", `SELECT count(*) FROM tasker.workflow_step_transitions WHERE metadata->'result'->'metadata' ? 'execution_time_ms'`},
		{"steps retried", `SELECT count(*) FROM tasker.workflow_step_transitions WHERE from_state = 'waiting_for_retry' AND to_state = 'pending'`},
		{"backoff requests", `SELECT count(*) FROM tasker.workflow_steps WHERE backoff_request_seconds IS NOT NULL`},
		{"tasks waiting for dependencies", `SELECT count(*) FROM tasker.task_transitions WHERE to_state = 'waiting_for_dependencies'`},
	} {
		if n := count(t, conn, c.query); n == 0 {
			t.Errorf("no %s", c.name)
		}
	}
}

func TestCoreLiveInvariants(t *testing.T) {
	db := newCoreDB(t)
	pool := newPool(t, db.URL, func(c *pgxpool.Config) { c.MaxConns = 6 })
	stats, err := simulate.LiveCore(context.Background(), pool, 40, 6*time.Second, simulate.Options{Seed: 3, ErrorRate: 0.2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", stats)
	if stats.Tasks == 0 || stats.StepTransitions == 0 || stats.TaskTransitions <= stats.Tasks {
		t.Errorf("stats %+v", stats)
	}
	conn := db.Conn(t)
	checkCoreInvariants(t, conn)
	if n := count(t, conn, `SELECT count(*) FROM tasker.tasks`); n != stats.Tasks {
		t.Errorf("%d tasks in the database, stats say %d", n, stats.Tasks)
	}
	// Transactions held open commit after rows with later keys: some
	// transition was created (transaction start) more than a second before
	// a row whose key is smaller... in key order, created_at goes back.
	late := count(t, conn, `SELECT count(*) FROM (SELECT created_at, lag(created_at) OVER (ORDER BY task_transition_uuid) prev
		FROM tasker.task_transitions) x WHERE created_at < prev`)
	t.Logf("task transitions whose created_at precedes the previous key's: %d", late)
}

func TestCoreCatalogIsIdempotent(t *testing.T) {
	db := newCoreDB(t)
	pool := newPool(t, db.URL, nil)
	for range 2 {
		if err := simulate.EnsureCoreCatalog(context.Background(), pool, simulate.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	conn := db.Conn(t)
	if n := count(t, conn, `SELECT count(*) FROM tasker.named_tasks`); n != 12 {
		t.Errorf("%d named tasks, want 12 (4 namespaces × 3)", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM tasker.named_tasks_named_steps`); n == 0 {
		t.Error("no named_tasks_named_steps")
	}
}
