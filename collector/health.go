package collector

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// The queries below reproduce get_system_health_counts_v01 (docs/tasker-semantics.md#health-counts)
// on the Rails engine, and tasker-core's get_system_health_counts() plus the
// sidecar's retry classes on tasker-core (the core* constants), without
// calling either: the function may be absent or a different version in the
// database we observe. Shared rules:
//   - current state is the transition row with most_recent = true, joined
//     with LEFT JOIN so entities without transitions stay in the totals
//     (their to_state is NULL, reported as the "" group);
//   - the unique partial index on (parent_id, most_recent) WHERE most_recent
//     guarantees at most one row per entity, so the join cannot inflate counts;
//   - counting happens per named_task_id first (an integer), and names are
//     joined to the few resulting groups afterwards;
//   - the health columns are sums over the groups, so there is no second
//     scan for totals. The step query still reads tasker_tasks to find each
//     step's named task; that join is the price of the per-task breakdown
//     (measured on a 1M-task database: about +1.5 s over Tasker's own
//     function on 3M steps and 2 vCPUs).
// LEFT JOINs towards named tasks and namespaces keep the totals equal to
// count(*) even if a foreign key was dropped in the observed database.

const taskGroupsSQL = `
WITH per_named_task AS (
    SELECT t.named_task_id, tt.to_state, count(*) AS n
    FROM tasker_tasks t
    LEFT JOIN tasker_task_transitions tt
           ON tt.task_id = t.task_id AND tt.most_recent = true
    GROUP BY t.named_task_id, tt.to_state
)
SELECT COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(p.to_state, ''), sum(p.n)::bigint
FROM per_named_task p
LEFT JOIN tasker_named_tasks nt ON nt.named_task_id = p.named_task_id
LEFT JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3`

// The retry predicates deliberately leave attempts and retry_limit
// uncoalesced: a NULL in either makes the comparison NULL, so such a step
// falls out of all three counters, as in Tasker's function. retryable is
// coalesced to true there, so it is here too (the column is NOT NULL today).
const stepGroupsSQL = `
WITH per_named_task AS (
    SELECT t.named_task_id, st.to_state,
           count(*) AS n,
           count(*) FILTER (WHERE st.to_state = 'error'
                              AND s.attempts < s.retry_limit
                              AND COALESCE(s.retryable, true)) AS retryable,
           count(*) FILTER (WHERE st.to_state = 'error'
                              AND s.attempts >= s.retry_limit) AS exhausted,
           count(*) FILTER (WHERE st.to_state = 'error'
                              AND s.attempts < s.retry_limit
                              AND COALESCE(s.retryable, true)
                              AND s.last_attempted_at IS NOT NULL) AS backoff,
           min(st.created_at) FILTER (WHERE st.to_state = 'in_progress') AS oldest_in_progress
    FROM tasker_workflow_steps s
    LEFT JOIN tasker_tasks t ON t.task_id = s.task_id
    LEFT JOIN tasker_workflow_step_transitions st
           ON st.workflow_step_id = s.workflow_step_id AND st.most_recent = true
    GROUP BY t.named_task_id, st.to_state
)
SELECT COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(p.to_state, ''),
       sum(p.n)::bigint, sum(p.retryable)::bigint, sum(p.exhausted)::bigint, sum(p.backoff)::bigint,
       min(p.oldest_in_progress)
FROM per_named_task p
LEFT JOIN tasker_named_tasks nt ON nt.named_task_id = p.named_task_id
LEFT JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3`

// oldestRetryableSQL finds when the longest-waiting retryable step in error
// (a retry left) entered error, among steps whose task is still active
// (pending, in progress, or no transition yet): a task that ended, in error
// or otherwise, does not retry its steps until an operator retries it, so
// its steps are not "waiting". It starts from the partial index on current
// errors and looks each step and task up by key (LATERAL ... LIMIT 1 keeps
// the planner from scanning every step), so its cost follows the number of
// steps in error, not the table sizes.
const oldestRetryableSQL = `
SELECT min(st.created_at)
FROM tasker_workflow_step_transitions st
CROSS JOIN LATERAL (
    SELECT s.task_id FROM tasker_workflow_steps s
    WHERE s.workflow_step_id = st.workflow_step_id
      AND s.attempts < s.retry_limit AND COALESCE(s.retryable, true)
    LIMIT 1) s
WHERE st.most_recent = true AND st.to_state = 'error'
  AND COALESCE((SELECT tt.to_state FROM tasker_task_transitions tt
                WHERE tt.task_id = s.task_id AND tt.most_recent = true LIMIT 1), 'pending')
      IN ('pending', 'in_progress')`

// The tasker-core versions of the queries above: the same shape on schema
// tasker's tables and uuid keys (docs/tasker-semantics.md#tasker-core). Core
// moves a retryable failure to the state waiting_for_retry, so the retry
// classes come from states, not from error rows and columns:
//   - retryable and in_backoff are the steps in waiting_for_retry (the same
//     number: every such step waits out a delay);
//   - exhausted are the steps in error with attempts >= max_attempts, left
//     uncoalesced as on Rails, so a NULL in either falls out.
//
// oldest is when the step longest in its group's state entered it, for the
// states of $1 (the engine's running step states).
const coreTaskGroupsSQL = `
WITH per_named_task AS (
    SELECT t.named_task_uuid, tt.to_state, count(*) AS n
    FROM tasker.tasks t
    LEFT JOIN tasker.task_transitions tt
           ON tt.task_uuid = t.task_uuid AND tt.most_recent = true
    GROUP BY t.named_task_uuid, tt.to_state
)
SELECT COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(p.to_state, ''), sum(p.n)::bigint
FROM per_named_task p
LEFT JOIN tasker.named_tasks nt ON nt.named_task_uuid = p.named_task_uuid
LEFT JOIN tasker.task_namespaces ns ON ns.task_namespace_uuid = nt.task_namespace_uuid
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3`

const coreStepGroupsSQL = `
WITH per_named_task AS (
    SELECT t.named_task_uuid, st.to_state,
           count(*) AS n,
           count(*) FILTER (WHERE st.to_state = 'waiting_for_retry') AS retryable,
           count(*) FILTER (WHERE st.to_state = 'error'
                              AND s.attempts >= s.max_attempts) AS exhausted,
           min(st.created_at) FILTER (WHERE st.to_state = ANY($1::text[])) AS oldest
    FROM tasker.workflow_steps s
    LEFT JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
    LEFT JOIN tasker.workflow_step_transitions st
           ON st.workflow_step_uuid = s.workflow_step_uuid AND st.most_recent = true
    GROUP BY t.named_task_uuid, st.to_state
)
SELECT COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(p.to_state, ''),
       sum(p.n)::bigint, sum(p.retryable)::bigint, sum(p.exhausted)::bigint, sum(p.retryable)::bigint,
       min(p.oldest)
FROM per_named_task p
LEFT JOIN tasker.named_tasks nt ON nt.named_task_uuid = p.named_task_uuid
LEFT JOIN tasker.task_namespaces ns ON ns.task_namespace_uuid = nt.task_namespace_uuid
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3`

// coreOldestRetryableSQL finds when the step longest in waiting_for_retry
// entered it, among steps whose task's current state is not terminal (the
// engine's TaskStates.Terminal; no transition is pending): as on Rails, a task that ended retries nothing
// until an operator acts. Its cost follows the steps in waiting_for_retry.
const coreOldestRetryableSQL = `
SELECT min(st.created_at)
FROM tasker.workflow_step_transitions st
CROSS JOIN LATERAL (
    SELECT s.task_uuid FROM tasker.workflow_steps s
    WHERE s.workflow_step_uuid = st.workflow_step_uuid
    LIMIT 1) s
WHERE st.most_recent = true AND st.to_state = 'waiting_for_retry'
  AND COALESCE((SELECT tt.to_state FROM tasker.task_transitions tt
                WHERE tt.task_uuid = s.task_uuid AND tt.most_recent = true LIMIT 1), 'pending')
      NOT IN ('complete', 'error', 'cancelled', 'resolved_manually')`

// oldestRetryableSQLFor is the query behind Snapshot.OldestRetryableErrorStep
// on e. It takes no arguments and returns one nullable timestamp.
func oldestRetryableSQLFor(e engine.Engine) string {
	if e.Kind == engine.KindCore {
		return coreOldestRetryableSQL
	}
	return oldestRetryableSQL
}

// Our own session is active while this runs, so active_connections >= 1,
// matching the function. Without pg_read_all_stats other roles' sessions have
// a NULL state and are not counted, also as in the function.
const connectionsSQL = `
SELECT (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active')::bigint,
       COALESCE((SELECT setting::bigint FROM pg_settings WHERE name = 'max_connections'), 0)::bigint`

// Refresh computes a Snapshot in one read-only REPEATABLE READ transaction,
// so all numbers describe the same instant. A database missing Tasker tables
// yields a *SchemaError naming them.
func (db *DB) Refresh(ctx context.Context) (Snapshot, error) {
	if db.closed.Load() {
		return Snapshot{}, ErrClosed
	}
	start := time.Now()
	var snap Snapshot
	// A standby cancels a count whose rows replay must remove
	// (docs/operations.md#read-replicas): a new transaction sees a newer
	// snapshot and no longer needs them.
	err := RetryRecoveryConflict(ctx, func(ctx context.Context) (err error) {
		snap, err = db.refresh(ctx)
		return err
	})
	db.noteReachable(err)
	if err != nil {
		return Snapshot{}, err
	}
	db.noteReplication(snap.Replication)
	snap.Duration = time.Since(start)
	snap.TakenAt = time.Now().UTC()
	return snap, nil
}

func (db *DB) refresh(ctx context.Context) (Snapshot, error) {
	var snap Snapshot
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return snap, fmt.Errorf("begin read-only transaction: %w", err)
	}
	// Nothing was written, so rollback and commit are equivalent; rollback
	// also covers every early return.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	e, err := db.attach(ctx, tx)
	if err != nil {
		return snap, err
	}
	return queryCounts(ctx, tx, e)
}

// queryCounts runs the full count of e's tables inside tx, so that a
// caller holding a REPEATABLE READ snapshot (the transition stream) gets
// counts of exactly the rows it has seen. e is the engine the caller's
// schema check found (DB.attach).
func queryCounts(ctx context.Context, tx pgx.Tx, e engine.Engine) (Snapshot, error) {
	snap := Snapshot{Engine: e.Kind}
	var steps []stepGroup
	taskSQL, stepSQL, stepArgs := taskGroupsSQL, stepGroupsSQL, []any(nil)
	if e.Kind == engine.KindCore {
		taskSQL, stepSQL, stepArgs = coreTaskGroupsSQL, coreStepGroupsSQL, []any{e.StepStates.Running}
	}
	b := &pgx.Batch{}
	b.Queue(taskSQL).Query(func(rows pgx.Rows) error {
		groups, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (GroupCount, error) {
			var g GroupCount
			return g, r.Scan(&g.Namespace, &g.TaskName, &g.State, &g.Count)
		})
		if err != nil {
			return fmt.Errorf("count tasks: %w", err)
		}
		snap.Tasks = groups
		return nil
	})
	b.Queue(stepSQL, stepArgs...).Query(func(rows pgx.Rows) error {
		groups, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stepGroup, error) {
			var g stepGroup
			return g, r.Scan(&g.Namespace, &g.TaskName, &g.State, &g.Count, &g.retryable, &g.exhausted, &g.backoff,
				&g.oldest)
		})
		if err != nil {
			return fmt.Errorf("count steps: %w", err)
		}
		steps = groups
		return nil
	})
	b.Queue(serverSQL).QueryRow(func(row pgx.Row) error {
		if err := scanServer(row, &snap.Counts, &snap.Replication); err != nil {
			return fmt.Errorf("count connections: %w", err)
		}
		return nil
	})
	b.Queue(oldestRetryableSQLFor(e)).QueryRow(func(row pgx.Row) error {
		var at *time.Time
		if err := row.Scan(&at); err != nil {
			return fmt.Errorf("find the oldest retryable step: %w", err)
		}
		snap.OldestRetryableErrorStep = earliest(time.Time{}, at)
		return nil
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return snap, fmt.Errorf("health queries: %w", err)
	}

	snap.tallyTasks()
	snap.Steps = snap.tallySteps(steps)
	return snap, nil
}

// stepGroup carries the per-group retry counters that GroupCount has no
// fields for.
type stepGroup struct {
	GroupCount
	retryable, exhausted, backoff int64
	// oldest is when the step longest in the group's state entered it; on
	// Rails only for in_progress, on core for every running state.
	oldest *time.Time
}

func (s *Snapshot) tallyTasks() {
	c := &s.Counts
	for _, g := range s.Tasks {
		c.TotalTasks += g.Count
		switch g.State {
		case engine.Pending:
			c.PendingTasks += g.Count
		case engine.InProgress:
			c.InProgressTasks += g.Count
		case engine.Complete:
			c.CompleteTasks += g.Count
		case engine.Error:
			c.ErrorTasks += g.Count
		case engine.Cancelled:
			c.CancelledTasks += g.Count
		case engine.ResolvedManually:
			s.ResolvedManuallyTasks += g.Count
		}
	}
}

// tallyTasks and tallySteps fill the Rails-named columns from the groups
// by state name, on either engine: a core state Rails does not have (core
// tasks have no in_progress) counts in the totals only, as on core's own
// function; TaskStates and StepStates have every state.
func (s *Snapshot) tallySteps(groups []stepGroup) []GroupCount {
	e := engineOf(*s)
	c := &s.Counts
	out := make([]GroupCount, 0, len(groups))
	for _, g := range groups {
		out = append(out, g.GroupCount)
		c.TotalSteps += g.Count
		c.RetryableErrorSteps += g.retryable
		c.ExhaustedRetrySteps += g.exhausted
		c.InBackoffSteps += g.backoff
		s.ErrorStepsByName = appendRetryGroups(s.ErrorStepsByName, g.Namespace, g.TaskName,
			retryCounts{retryable: g.retryable, exhausted: g.exhausted, backoff: g.backoff})
		if g.oldest != nil && slices.Contains(e.StepStates.Running, g.State) {
			if s.OldestStepByState == nil {
				s.OldestStepByState = map[string]time.Time{}
			}
			s.OldestStepByState[g.State] = earliest(s.OldestStepByState[g.State], g.oldest)
		}
		switch g.State {
		case engine.Pending:
			c.PendingSteps += g.Count
		case engine.InProgress:
			c.InProgressSteps += g.Count
		case engine.Complete:
			c.CompleteSteps += g.Count
		case engine.Error:
			c.ErrorSteps += g.Count
		case engine.Cancelled:
			s.CancelledSteps += g.Count
		case engine.ResolvedManually:
			s.ResolvedManuallySteps += g.Count
		}
	}
	SortGroups(s.ErrorStepsByName)
	s.OldestInProgressStep = s.OldestStepByState[engine.InProgress]
	return out
}

// TaskStates sums Tasks by state: one entry per state some task is in,
// without the "" group of tasks with no transition (the total minus the
// sum).
func (s Snapshot) TaskStates() map[string]int64 { return byState(s.Tasks) }

// StepStates sums Steps by state, as TaskStates does Tasks.
func (s Snapshot) StepStates() map[string]int64 { return byState(s.Steps) }

func byState(groups []GroupCount) map[string]int64 {
	out := map[string]int64{}
	for _, g := range groups {
		if g.State != "" {
			out[g.State] += g.Count
		}
	}
	return out
}

// engineOf is the engine whose tables s counted: Rails when Engine is
// unset, as in snapshots from before engines were told apart.
func engineOf(s Snapshot) engine.Engine {
	if e, err := engine.For(s.Engine); err == nil {
		return e
	}
	return engine.Rails()
}

// earliest is the earlier of cur (zero: none yet) and t (nil: none).
func earliest(cur time.Time, t *time.Time) time.Time {
	if t != nil && (cur.IsZero() || t.Before(cur)) {
		return t.UTC()
	}
	return cur
}
