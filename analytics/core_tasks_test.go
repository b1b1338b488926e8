package analytics

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

//go:embed testdata/tasker_core_tasks.sql
var coreTasksYardstickSQL string

// coreTasksDB is coreSimulated with the per-task yardsticks, and rows bent
// into the corners the simulated engine does not reach: NULL attempts,
// max_attempts 0, non-retryable retries, steps in process or processed,
// backoffs still running and already past, waiting_for_retry without a
// backoff, an error that is no longer the current state.
func coreTasksDB(t *testing.T) pgtest.DB {
	t.Helper()
	db := coreSimulated(t, 400)
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := testCtx(t)
	for _, q := range []string{
		coreTasksYardstickSQL,
		// Every 7th step of a kind, by uuid, so each change touches some
		// steps of each state.
		`WITH s AS (SELECT workflow_step_uuid, row_number() OVER (ORDER BY workflow_step_uuid) AS n FROM tasker.workflow_steps)
		 UPDATE tasker.workflow_steps w SET attempts = NULL FROM s WHERE s.workflow_step_uuid = w.workflow_step_uuid AND s.n % 7 = 1`,
		`WITH s AS (SELECT workflow_step_uuid, row_number() OVER (ORDER BY workflow_step_uuid) AS n FROM tasker.workflow_steps)
		 UPDATE tasker.workflow_steps w SET max_attempts = 0, retryable = false, attempts = 1 FROM s WHERE s.workflow_step_uuid = w.workflow_step_uuid AND s.n % 7 = 2`,
		`WITH s AS (SELECT workflow_step_uuid, row_number() OVER (ORDER BY workflow_step_uuid) AS n FROM tasker.workflow_steps)
		 UPDATE tasker.workflow_steps w SET backoff_request_seconds = 3600, last_attempted_at = now() AT TIME ZONE 'UTC' FROM s WHERE s.workflow_step_uuid = w.workflow_step_uuid AND s.n % 7 = 3`,
		`WITH s AS (SELECT workflow_step_uuid, row_number() OVER (ORDER BY workflow_step_uuid) AS n FROM tasker.workflow_steps)
		 UPDATE tasker.workflow_steps w SET backoff_request_seconds = 5, last_attempted_at = now() AT TIME ZONE 'UTC' - interval '1 minute' FROM s WHERE s.workflow_step_uuid = w.workflow_step_uuid AND s.n % 7 = 4`,
		`WITH s AS (SELECT workflow_step_uuid, row_number() OVER (ORDER BY workflow_step_uuid) AS n FROM tasker.workflow_steps)
		 UPDATE tasker.workflow_steps w SET backoff_request_seconds = NULL, attempts = 40 FROM s WHERE s.workflow_step_uuid = w.workflow_step_uuid AND s.n % 7 = 5`,
		`WITH s AS (SELECT workflow_step_uuid, row_number() OVER (ORDER BY workflow_step_uuid) AS n FROM tasker.workflow_steps)
		 UPDATE tasker.workflow_steps w SET in_process = (s.n % 2 = 0), processed = (s.n % 3 = 0) FROM s WHERE s.workflow_step_uuid = w.workflow_step_uuid AND s.n % 7 = 6`,
		// A recent error, then a retry: last_failure_at is the old error,
		// and its backoff may still run.
		`WITH s AS (SELECT ws.workflow_step_uuid FROM tasker.workflow_steps ws
		            JOIN tasker.workflow_step_transitions x ON x.workflow_step_uuid = ws.workflow_step_uuid AND x.most_recent AND x.to_state = 'waiting_for_retry'
		            ORDER BY 1 LIMIT 40)
		 INSERT INTO tasker.workflow_step_transitions (workflow_step_uuid, to_state, from_state, sort_key, most_recent, created_at, updated_at)
		 SELECT workflow_step_uuid, 'error', 'in_progress', -1, false, now() AT TIME ZONE 'UTC' - interval '3 seconds', now() AT TIME ZONE 'UTC' FROM s`,
		// A task of complete steps whose root step waits for a retry with
		// no backoff and no failure: ready now, so the task has ready steps.
		`CREATE TABLE yardstick.pick AS
		 SELECT ws.workflow_step_uuid FROM tasker.workflow_steps ws
		 WHERE NOT EXISTS (SELECT 1 FROM tasker.workflow_step_edges e WHERE e.to_step_uuid = ws.workflow_step_uuid)
		   AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps o JOIN tasker.workflow_step_transitions x
		                   ON x.workflow_step_uuid = o.workflow_step_uuid AND x.most_recent
		                   WHERE o.task_uuid = ws.task_uuid AND x.to_state <> 'complete')
		 ORDER BY ws.workflow_step_uuid LIMIT 3`,
		`UPDATE tasker.workflow_step_transitions SET most_recent = false
		 WHERE most_recent AND workflow_step_uuid IN (SELECT workflow_step_uuid FROM yardstick.pick)`,
		`INSERT INTO tasker.workflow_step_transitions (workflow_step_uuid, to_state, from_state, sort_key, most_recent, created_at, updated_at)
		 SELECT workflow_step_uuid, 'waiting_for_retry', 'complete', 99, true, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM yardstick.pick`,
		`UPDATE tasker.workflow_steps SET attempts = 1, max_attempts = 3, retryable = true, backoff_request_seconds = NULL,
		        last_attempted_at = NULL, processed = false, in_process = false
		 WHERE workflow_step_uuid IN (SELECT workflow_step_uuid FROM yardstick.pick)`,
		`ANALYZE`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("prepare: %v\n%s", err, q)
		}
	}
	return db
}

// coreTaskUUIDs lists every task of the database, in uuid order.
func coreTaskUUIDs(t *testing.T, ctx context.Context, q querier) []string {
	t.Helper()
	rows, err := q.Query(ctx, `SELECT task_uuid::text FROM tasker.tasks ORDER BY task_uuid`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestCoreTasksMatchYardstick(t *testing.T) {
	db := coreTasksDB(t)
	ctx, tx := coreTx(t, db)
	ids := coreTaskUUIDs(t, ctx, tx)
	if len(ids) < 400 {
		t.Fatalf("%d tasks, want 400", len(ids))
	}

	// Readiness, all tasks at once: the sidecar's rows against the
	// engine's batch function, field by field.
	tasks, err := loadCoreTasks(ctx, tx, ids)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `SELECT workflow_step_uuid::text, task_uuid::text, named_step_uuid::text, name, current_state,
	        dependencies_satisfied, retry_eligible, ready_for_execution, last_failure_at, next_retry_at, total_parents,
	        completed_parents, attempts, max_attempts, backoff_request_seconds, last_attempted_at
	        FROM yardstick.get_step_readiness_status_batch($1::uuid[])`, ids)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CoreStepReadiness, error) {
		var r CoreStepReadiness
		var lf, nr, la *time.Time
		err := row.Scan(&r.WorkflowStepUUID, &r.TaskUUID, &r.NamedStepUUID, &r.Name, &r.CurrentState,
			&r.DependenciesSatisfied, &r.RetryEligible, &r.ReadyForExecution, &lf, &nr,
			&r.TotalParents, &r.CompletedParents, &r.Attempts, &r.MaxAttempts, &r.BackoffRequestSeconds, &la)
		r.LastFailureAt, r.NextRetryAt, r.LastAttemptedAt = timeOf(lf), timeOf(nr), timeOf(la)
		return r, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []CoreStepReadiness
	for _, task := range tasks {
		got = append(got, task.steps...)
	}
	if len(got) != len(want) {
		t.Fatalf("%d readiness rows, yardstick %d", len(got), len(want))
	}
	// Each kind of row the comparison must cover, or it proves little.
	seen := map[string]int{}
	for i := range want {
		if g, w := js(got[i]), js(want[i]); g != w {
			t.Errorf("step %d:\n got %s\nwant %s", i, g, w)
		}
		w := want[i]
		seen["state="+w.CurrentState]++
		if w.ReadyForExecution {
			seen["ready"]++
		}
		if !w.RetryEligible {
			seen["not eligible"]++
		}
		if !w.NextRetryAt.Std().IsZero() && w.NextRetryAt.Std().After(time.Now()) {
			seen["backoff running"]++
		}
		if !w.LastFailureAt.Std().IsZero() && w.CurrentState != engine.Error {
			seen["old failure"]++
		}
		if !w.DependenciesSatisfied {
			seen["deps pending"]++
		}
	}
	for _, k := range []string{"ready", "not eligible", "backoff running", "old failure", "deps pending",
		"state=complete", "state=error", "state=waiting_for_retry", "state=pending"} {
		if seen[k] == 0 {
			t.Errorf("the sample has no %q row (%v)", k, seen)
		}
	}

	// Context, task by task against the engine's single-task function.
	statuses := map[string]int{}
	for _, task := range tasks {
		var w CoreTaskContext
		var pct string
		err := tx.QueryRow(ctx, `SELECT task_uuid::text, named_task_uuid::text, status, total_steps, pending_steps,
		        in_progress_steps, completed_steps, failed_steps, ready_steps, execution_status, recommended_action,
		        completion_percentage::text, health_status, enqueued_steps
		        FROM yardstick.get_task_execution_context($1)`, task.uuid).Scan(&w.TaskUUID, &w.NamedTaskUUID, &w.Status,
			&w.TotalSteps, &w.PendingSteps, &w.InProgressSteps, &w.CompletedSteps, &w.FailedSteps, &w.ReadySteps,
			&w.ExecutionStatus, &w.RecommendedAction, &pct, &w.HealthStatus, &w.EnqueuedSteps)
		if err != nil {
			t.Fatal(err)
		}
		w.CompletionPercentage = Decimal(pct)
		if g, w := js(task.context()), js(w); g != w {
			t.Errorf("task %s:\n got %s\nwant %s", task.uuid, g, w)
		}
		statuses[w.ExecutionStatus]++
	}
	for _, k := range []string{"blocked_by_failures", "has_ready_steps", "processing", "all_complete"} {
		if statuses[k] == 0 {
			t.Errorf("no task is %s (%v)", k, statuses)
		}
	}
	t.Logf("rows %v; contexts %v", seen, statuses)
}

func TestCoreTaskService(t *testing.T) {
	db := coreTasksDB(t)
	ctx := testCtx(t)
	att := &fixedAttachment{e: engine.Core()}
	svc := New(servicePool(t, db.URL), Config{}, nil, WithAttachment(att))
	if !svc.OnCore() || svc.CoreTasksSupported() != nil {
		t.Fatal("core attachment: not on core")
	}
	pool := servicePool(t, db.URL)
	ids := coreTaskUUIDs(t, ctx, pool)[:3]
	unknown := "00000000-0000-4000-8000-000000000000"
	ask := append([]string{unknown}, ids...)
	contexts, missing, err := svc.CoreTaskContexts(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(contexts) != 3 || len(missing) != 1 || missing[0] != unknown {
		t.Fatalf("contexts %d, missing %v", len(contexts), missing)
	}
	for i, c := range contexts {
		if c.TaskUUID != ids[i] || c.TotalSteps == 0 {
			t.Errorf("context %d: %+v", i, c)
		}
	}
	steps, _, err := svc.CoreTaskSteps(ctx, ids[:1])
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || int64(len(steps[0].Steps)) != contexts[0].TotalSteps {
		t.Fatalf("steps %+v against context %+v", steps, contexts[0])
	}
	b, _ := json.Marshal(steps[0].Steps[0])
	for _, k := range []string{`"max_attempts":`, `"workflow_step_uuid":"`, `"next_retry_at":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("step JSON lacks %s: %s", k, b)
		}
	}
	if strings.Contains(string(b), "retry_limit") {
		t.Errorf("step JSON has Rails' retry_limit: %s", b)
	}

	// On the Rails engine's database the core computations refuse.
	rails := pgtest.NewTasker(t)
	svc = New(servicePool(t, rails.URL), Config{}, nil)
	if _, _, err := svc.CoreTaskContexts(ctx, ids); !errors.Is(err, ErrNotCore) {
		t.Errorf("core contexts on Rails: %v, want ErrNotCore", err)
	}
}

func TestParseTaskUUIDs(t *testing.T) {
	const a, b = "0190f5a4-8b9e-7c3d-9f00-0123456789ab", "0190f5a4-8b9e-7c3d-9f00-0123456789ac"
	for _, tc := range []struct {
		raw     string
		want    []string
		wantErr string
	}{
		{raw: a, want: []string{a}},
		{raw: strings.ToUpper(b) + " , " + a + "," + a, want: []string{a, b}},
		{raw: "", wantErr: "is required"},
		{raw: "12", wantErr: `"12"`},
		{raw: a + ",x,{" + b + "}", wantErr: `"x", "{` + b + `}"`},
		{raw: strings.ReplaceAll(a, "-", ""), wantErr: "must be task UUIDs"},
		{raw: a + "," + b + ",0190f5a4-8b9e-7c3d-9f00-0123456789ad", wantErr: "at most 2 task UUIDs"},
	} {
		got, err := ParseTaskUUIDs(tc.raw, 2)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%q: %v %v, want %v", tc.raw, got, err, tc.want)
		}
	}
	if _, err := ParseTaskUUID("42"); err == nil || !strings.Contains(err.Error(), "UUID") {
		t.Errorf("ParseTaskUUID(42): %v", err)
	}
	if got, err := ParseTaskUUID(strings.ToUpper(a)); err != nil || got != a {
		t.Errorf("ParseTaskUUID upper: %q %v", got, err)
	}
}
