package simulate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The state machines as facts §2.2 states them, written out again here so the
// tests do not trust the package's own copy. "" is "no row yet" (pending).
func allowedTask() map[[2]string]bool {
	return pairs(map[string][]string{
		"":                  {"in_progress", "cancelled", "error"},
		"pending":           {"in_progress", "cancelled", "error"},
		"in_progress":       {"complete", "error", "cancelled", "pending"},
		"error":             {"pending", "resolved_manually"},
		"complete":          {"cancelled"},
		"resolved_manually": {"cancelled"},
	})
}

func allowedStep() map[[2]string]bool {
	return pairs(map[string][]string{
		"":            {"in_progress", "error", "cancelled", "resolved_manually"},
		"pending":     {"in_progress", "error", "cancelled", "resolved_manually"},
		"in_progress": {"complete", "error", "cancelled"},
		"error":       {"pending", "resolved_manually"},
	})
}

func pairs(m map[string][]string) map[[2]string]bool {
	out := make(map[[2]string]bool)
	for from, tos := range m {
		for _, to := range tos {
			out[[2]string{from, to}] = true
		}
	}
	return out
}

func count(t *testing.T, conn *pgx.Conn, query string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var n int64
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
	return n
}

// checkInvariants asserts what every Tasker database written by the engine
// satisfies. now bounds the timestamps.
func checkInvariants(t *testing.T, conn *pgx.Conn, now time.Time) {
	t.Helper()
	for _, tr := range []struct{ table, owner, parent, parentKey string }{
		{"tasker_task_transitions", "task_id", "tasker_tasks", "task_id"},
		{"tasker_workflow_step_transitions", "workflow_step_id", "tasker_workflow_steps", "workflow_step_id"},
	} {
		zero := []struct{ name, query string }{
			{"entities without exactly one most_recent row",
				`SELECT count(*) FROM (SELECT ` + tr.owner + ` FROM ` + tr.table + ` GROUP BY 1
				 HAVING count(*) FILTER (WHERE most_recent) <> 1) x`},
			{"most_recent row that is not the newest",
				`SELECT count(*) FROM (SELECT ` + tr.owner + ` FROM ` + tr.table + ` GROUP BY 1
				 HAVING max(sort_key) <> max(sort_key) FILTER (WHERE most_recent)) x`},
			{"sort keys not 10, 20, 30, …",
				`SELECT count(*) FROM (SELECT sort_key, row_number() OVER (PARTITION BY ` + tr.owner + ` ORDER BY sort_key) rn
				 FROM ` + tr.table + `) x WHERE sort_key <> rn * 10`},
			{"from_state not NULL", `SELECT count(*) FROM ` + tr.table + ` WHERE from_state IS NOT NULL`},
			{"created_at not increasing with sort_key",
				`SELECT count(*) FROM (SELECT created_at, lag(created_at) OVER (PARTITION BY ` + tr.owner + ` ORDER BY sort_key) prev
				 FROM ` + tr.table + `) x WHERE created_at <= prev`},
			{"updated_at of superseded row is not the successor's created_at",
				`SELECT count(*) FROM (SELECT most_recent, updated_at, created_at,
				   lead(created_at) OVER (PARTITION BY ` + tr.owner + ` ORDER BY sort_key) nxt FROM ` + tr.table + `) x
				 WHERE (most_recent AND updated_at <> created_at) OR (NOT most_recent AND updated_at <> nxt)`},
			{"transition before its entity was created",
				`SELECT count(*) FROM ` + tr.table + ` x JOIN ` + tr.parent + ` p ON p.` + tr.parentKey + ` = x.` + tr.owner + `
				 WHERE x.created_at < p.created_at`},
			{"transition in the future", `SELECT count(*) FROM ` + tr.table + ` WHERE created_at > $1::timestamp + interval '1 second'`},
		}
		for _, z := range zero {
			args := []any{}
			if z.name == "transition in the future" {
				args = append(args, now.UTC())
			}
			if n := count(t, conn, z.query, args...); n != 0 {
				t.Errorf("%s: %d %s", tr.table, n, z.name)
			}
		}
		allowed := allowedTask()
		if tr.owner == "workflow_step_id" {
			allowed = allowedStep()
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
			if !allowed[m] {
				t.Errorf("%s: move %q → %q is not in the state machine", tr.table, m[0], m[1])
			}
		}
	}

	zero := []struct{ name, query string }{
		{"step started before a parent was complete or resolved", `
			SELECT count(*) FROM tasker_workflow_step_transitions st
			JOIN tasker_workflow_step_edges e ON e.to_step_id = st.workflow_step_id
			WHERE st.to_state = 'in_progress' AND NOT EXISTS (
			  SELECT 1 FROM tasker_workflow_step_transitions p WHERE p.workflow_step_id = e.from_step_id
			  AND p.to_state IN ('complete', 'resolved_manually') AND p.created_at < st.created_at)`},
		{"step in_progress/complete now whose parent is not complete/resolved", `
			SELECT count(*) FROM tasker_workflow_step_transitions st
			JOIN tasker_workflow_step_edges e ON e.to_step_id = st.workflow_step_id
			LEFT JOIN tasker_workflow_step_transitions p ON p.workflow_step_id = e.from_step_id AND p.most_recent
			WHERE st.most_recent AND st.to_state IN ('in_progress', 'complete')
			AND (p.to_state IS NULL OR p.to_state NOT IN ('complete', 'resolved_manually'))`},
		{"complete task with a step not complete", `
			SELECT count(*) FROM tasker_task_transitions tt
			JOIN tasker_workflow_steps ws ON ws.task_id = tt.task_id
			LEFT JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent
			WHERE tt.most_recent AND tt.to_state = 'complete' AND (st.to_state IS NULL OR st.to_state <> 'complete')`},
		{"tasks.complete disagrees with the current state", `
			SELECT count(*) FROM tasker_tasks t
			LEFT JOIN tasker_task_transitions tt ON tt.task_id = t.task_id AND tt.most_recent
			WHERE t.complete <> (tt.to_state IS NOT DISTINCT FROM 'complete')`},
		{"edge across tasks", `
			SELECT count(*) FROM tasker_workflow_step_edges e
			JOIN tasker_workflow_steps a ON a.workflow_step_id = e.from_step_id
			JOIN tasker_workflow_steps b ON b.workflow_step_id = e.to_step_id
			WHERE a.task_id <> b.task_id OR e.name <> 'provides'`},
		{"edge cycles (or paths deeper than 20)", `
			WITH RECURSIVE walk(start, node, depth) AS (
			  SELECT from_step_id, to_step_id, 1 FROM tasker_workflow_step_edges
			  UNION ALL
			  SELECT w.start, e.to_step_id, w.depth + 1 FROM walk w
			  JOIN tasker_workflow_step_edges e ON e.from_step_id = w.node WHERE w.depth < 21)
			SELECT count(*) FROM walk WHERE start = node OR depth > 20`},
		{"step created before its task", `
			SELECT count(*) FROM tasker_workflow_steps ws JOIN tasker_tasks t USING (task_id)
			WHERE ws.created_at < t.created_at OR ws.created_at > t.created_at + interval '1 second'`},
		{"new step with attempts other than 0", `
			SELECT count(*) FROM tasker_workflow_steps ws WHERE NOT EXISTS (
			  SELECT 1 FROM tasker_workflow_step_transitions st WHERE st.workflow_step_id = ws.workflow_step_id)
			AND (ws.attempts IS DISTINCT FROM 0 OR ws.processed OR ws.last_attempted_at IS NOT NULL OR ws.results IS NOT NULL)`},
		{"complete step without success columns", `
			SELECT count(*) FROM tasker_workflow_steps ws
			JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent
			WHERE st.to_state = 'complete' AND (NOT ws.processed OR ws.processed_at IS NULL OR ws.attempts < 1
			  OR ws.last_attempted_at IS NULL OR ws.processed_at <> st.created_at)`},
		{"error step without error results", `
			SELECT count(*) FROM tasker_workflow_steps ws
			JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent
			WHERE st.to_state = 'error' AND (ws.processed OR NOT (ws.results ?& array['error', 'backtrace', 'error_class']))`},
		{"more attempts than executions", `
			SELECT count(*) FROM tasker_workflow_steps ws WHERE ws.attempts > (
			  SELECT count(*) FROM tasker_workflow_step_transitions st
			  WHERE st.workflow_step_id = ws.workflow_step_id AND st.to_state = 'in_progress')`},
		{"first task in_progress without initializer metadata", `
			SELECT count(*) FROM (SELECT DISTINCT ON (task_id) metadata FROM tasker_task_transitions
			  WHERE to_state = 'in_progress' ORDER BY task_id, sort_key) x
			WHERE NOT (metadata ? 'initialization_completed' AND metadata ? 'step_dependencies_established')`},
		{"step transition metadata other than {}",
			`SELECT count(*) FROM tasker_workflow_step_transitions WHERE metadata <> '{}'::jsonb`},
		{"rows referencing missing parents (foreign keys)", `
			SELECT (SELECT count(*) FROM tasker_workflow_steps ws LEFT JOIN tasker_tasks t USING (task_id) WHERE t.task_id IS NULL)
			 + (SELECT count(*) FROM tasker_workflow_step_edges e LEFT JOIN tasker_workflow_steps a ON a.workflow_step_id = e.from_step_id
			    LEFT JOIN tasker_workflow_steps b ON b.workflow_step_id = e.to_step_id WHERE a.workflow_step_id IS NULL OR b.workflow_step_id IS NULL)
			 + (SELECT count(*) FROM tasker_task_transitions x LEFT JOIN tasker_tasks t USING (task_id) WHERE t.task_id IS NULL)
			 + (SELECT count(*) FROM tasker_workflow_step_transitions x LEFT JOIN tasker_workflow_steps ws USING (workflow_step_id) WHERE ws.workflow_step_id IS NULL)
			 + (SELECT count(*) FROM tasker_tasks t LEFT JOIN tasker_named_tasks nt USING (named_task_id) WHERE nt.named_task_id IS NULL)
			 + (SELECT count(*) FROM tasker_workflow_steps ws LEFT JOIN tasker_named_steps ns USING (named_step_id) WHERE ns.named_step_id IS NULL)`},
		{"timestamps in the future", `
			SELECT count(*) FROM tasker_tasks WHERE created_at > $1::timestamp OR updated_at > $1::timestamp + interval '1 second'`},
	}
	for _, z := range zero {
		var args []any
		if z.name == "timestamps in the future" {
			args = append(args, now.UTC())
		}
		if n := count(t, conn, z.query, args...); n != 0 {
			t.Errorf("%d %s", n, z.name)
		}
	}
}

// checkCoverage asserts the data exercises every state and counting rule
// the sidecar's queries distinguish (facts §3.1, §3.3).
func checkCoverage(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	states := []string{"pending", "in_progress", "complete", "error", "cancelled", "resolved_manually"}
	for _, s := range states {
		if n := count(t, conn, `SELECT count(*) FROM tasker_task_transitions WHERE most_recent AND to_state = $1`, s); n == 0 {
			t.Errorf("no task currently %s", s)
		}
		if n := count(t, conn, `SELECT count(*) FROM tasker_workflow_step_transitions WHERE most_recent AND to_state = $1`, s); n == 0 {
			t.Errorf("no step currently %s", s)
		}
	}
	errorSteps := `SELECT count(*) FROM tasker_workflow_steps ws
		JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent
		WHERE st.to_state = 'error' AND `
	for _, c := range []struct{ name, where string }{
		{"retryable error", "ws.attempts < ws.retry_limit AND ws.retryable"},
		{"retryable error in backoff", "ws.attempts < ws.retry_limit AND ws.retryable AND ws.last_attempted_at IS NOT NULL"},
		{"retryable error never attempted (last_attempted_at NULL)", "ws.attempts < ws.retry_limit AND ws.retryable AND ws.last_attempted_at IS NULL"},
		{"exhausted retries", "ws.attempts >= ws.retry_limit"},
		{"non-retryable error", "NOT ws.retryable"},
		{"error with a backoff request", "ws.backoff_request_seconds IS NOT NULL"},
		{"error after retries", "ws.attempts > 1"},
	} {
		if n := count(t, conn, errorSteps+c.where); n == 0 {
			t.Errorf("no step in class %s", c.name)
		}
	}
	for _, c := range []struct {
		name  string
		query string
		min   int64
	}{
		{"tasks without transitions", `SELECT count(*) FROM tasker_tasks t WHERE NOT EXISTS (
			SELECT 1 FROM tasker_task_transitions tt WHERE tt.task_id = t.task_id)`, 1},
		{"steps without transitions", `SELECT count(*) FROM tasker_workflow_steps ws WHERE NOT EXISTS (
			SELECT 1 FROM tasker_workflow_step_transitions st WHERE st.workflow_step_id = ws.workflow_step_id)`, 1},
		{"namespaces with tasks", `SELECT count(DISTINCT nt.task_namespace_id) FROM tasker_tasks t JOIN tasker_named_tasks nt USING (named_task_id)`, 2},
		{"versions with tasks", `SELECT count(DISTINCT nt.version) FROM tasker_tasks t JOIN tasker_named_tasks nt USING (named_task_id)`, 2},
		{"named tasks run in two versions", `SELECT count(*) FROM (SELECT nt.task_namespace_id, nt.name FROM tasker_tasks t
			JOIN tasker_named_tasks nt USING (named_task_id) GROUP BY 1, 2 HAVING count(DISTINCT nt.version) > 1) x`, 1},
		{"steps with several parents (fan-in)", `SELECT count(*) FROM (SELECT to_step_id FROM tasker_workflow_step_edges
			GROUP BY 1 HAVING count(*) > 1) x`, 1},
		{"steps with several children (fan-out)", `SELECT count(*) FROM (SELECT from_step_id FROM tasker_workflow_step_edges
			GROUP BY 1 HAVING count(*) > 1) x`, 1},
		{"tasks re-enqueued (in_progress → pending)", `SELECT count(*) FROM (SELECT to_state, lag(to_state) OVER (
			PARTITION BY task_id ORDER BY sort_key) prev FROM tasker_task_transitions) x WHERE prev = 'in_progress' AND to_state = 'pending'`, 1},
		{"steps retried (error → pending)", `SELECT count(*) FROM (SELECT to_state, lag(to_state) OVER (
			PARTITION BY workflow_step_id ORDER BY sort_key) prev FROM tasker_workflow_step_transitions) x WHERE prev = 'error' AND to_state = 'pending'`, 1},
	} {
		if n := count(t, conn, c.query); n < c.min {
			t.Errorf("%s: %d, want at least %d", c.name, n, c.min)
		}
	}
	// Time-windowed analytics need data in each window (facts §3.4).
	for _, w := range []string{"1 hour", "4 hours", "24 hours"} {
		q := `SELECT count(*) FROM tasker_tasks WHERE created_at > (now() AT TIME ZONE 'UTC') - interval '` + w + `'`
		if n := count(t, conn, q); n == 0 {
			t.Errorf("no tasks created in the last %s", w)
		}
	}
}
