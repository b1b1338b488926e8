package collector

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// TaskHistory is everything the trace exporter needs to draw one task:
// its identity, every transition of the task and of its steps, the steps'
// retry columns and their dependencies.
type TaskHistory struct {
	TaskID                       int64
	Namespace, TaskName, Version string
	CreatedAt                    time.Time
	Initiator, SourceSystem      string
	Reason                       string
	Transitions                  []HistoryTransition // by sort_key
	Steps                        []StepHistory       // by workflow_step_id
}

// HistoryTransition is one transition row.
type HistoryTransition struct {
	ID      int64
	ToState string
	SortKey int32
	At      time.Time
}

// StepHistory is one workflow step. The retry columns hold their current
// values (Tasker overwrites them on every attempt); Error and ErrorClass come
// from results and so describe the latest failure only.
type StepHistory struct {
	StepID                int64
	Name                  string
	Retryable             bool
	RetryLimit            *int32
	Attempts              *int32
	BackoffRequestSeconds *int32
	LastAttemptedAt       *time.Time
	ProcessedAt           *time.Time
	Error, ErrorClass     string
	// Parents are the steps this one depends on (edge from_step_id).
	Parents     []int64
	Transitions []HistoryTransition // by sort_key
}

// maxErrorLen bounds the error text carried into a span: a Ruby message
// can be kilobytes of interpolated input.
const maxErrorLen = 1024

// TaskHistories reads the histories of the given tasks in one read-only
// snapshot, in ascending task id order; unknown ids are skipped. Every
// query is an index lookup by task or step id.
//
// seen (may be nil) holds the transitions the stream already read for some
// of the tasks (Transition.History): of those tasks only the transition rows
// above what the stream had read are queried (an index range over the newest
// ids), and merged with the stream's; the task's and steps' columns are read
// for every task.
func (db *DB) TaskHistories(ctx context.Context, taskIDs []int64, seen map[int64]*TaskTransitions) ([]TaskHistory, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	if len(taskIDs) == 0 {
		return nil, nil
	}
	out, err := db.taskHistories(ctx, taskIDs, seen)
	db.noteReachable(err)
	return out, err
}

func (db *DB) taskHistories(ctx context.Context, taskIDs []int64, seen map[int64]*TaskTransitions) ([]TaskHistory, error) {
	// unseen tasks get every transition row; known ones the rows above
	// the lowest position the stream handed theirs over at.
	var unseen, known []int64
	var taskThrough, stepThrough int64
	for _, id := range taskIDs {
		t := seen[id]
		if t == nil {
			unseen = append(unseen, id)
			continue
		}
		if len(known) == 0 {
			taskThrough, stepThrough = t.TaskThrough, t.StepThrough
		}
		known = append(known, id)
		taskThrough, stepThrough = min(taskThrough, t.TaskThrough), min(stepThrough, t.StepThrough)
	}

	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin read-only transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var tasks []TaskHistory
	index := map[int64]int{}
	stepIndex := map[int64][2]int{}
	b := &pgx.Batch{}
	b.Queue(`
SELECT t.task_id, COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(nt.version, ''), t.created_at,
       COALESCE(t.initiator, ''), COALESCE(t.source_system, ''), COALESCE(t.reason, '')
FROM tasker_tasks t
LEFT JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
LEFT JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
WHERE t.task_id = ANY($1)
ORDER BY t.task_id`, taskIDs).Query(func(rows pgx.Rows) error {
		var h TaskHistory
		_, err := pgx.ForEachRow(rows, []any{&h.TaskID, &h.Namespace, &h.TaskName, &h.Version, &h.CreatedAt,
			&h.Initiator, &h.SourceSystem, &h.Reason}, func() error {
			index[h.TaskID] = len(tasks)
			tasks = append(tasks, h)
			return nil
		})
		return err
	})
	b.Queue(`
SELECT task_id, id, to_state, sort_key, created_at FROM tasker_task_transitions
WHERE task_id = ANY($1)
UNION ALL
SELECT task_id, id, to_state, sort_key, created_at FROM tasker_task_transitions
WHERE id > $3 AND task_id = ANY($2)
ORDER BY 1, 4`, unseen, known, taskThrough).Query(func(rows pgx.Rows) error {
		var (
			taskID int64
			tr     HistoryTransition
		)
		_, err := pgx.ForEachRow(rows, []any{&taskID, &tr.ID, &tr.ToState, &tr.SortKey, &tr.At}, func() error {
			if i, ok := index[taskID]; ok {
				tasks[i].Transitions = append(tasks[i].Transitions, tr)
			}
			return nil
		})
		return err
	})
	b.Queue(`
SELECT s.task_id, s.workflow_step_id, COALESCE(n.name, ''), COALESCE(s.retryable, true), s.retry_limit, s.attempts,
       s.backoff_request_seconds, s.last_attempted_at, s.processed_at,
       COALESCE(s.results->>'error', ''), COALESCE(s.results->>'error_class', '')
FROM tasker_workflow_steps s
LEFT JOIN tasker_named_steps n ON n.named_step_id = s.named_step_id
WHERE s.task_id = ANY($1)
ORDER BY s.task_id, s.workflow_step_id`, taskIDs).Query(func(rows pgx.Rows) error {
		var (
			taskID int64
			s      StepHistory
		)
		_, err := pgx.ForEachRow(rows, []any{&taskID, &s.StepID, &s.Name, &s.Retryable, &s.RetryLimit, &s.Attempts,
			&s.BackoffRequestSeconds, &s.LastAttemptedAt, &s.ProcessedAt, &s.Error, &s.ErrorClass}, func() error {
			i, ok := index[taskID]
			if !ok {
				return nil
			}
			if len(s.Error) > maxErrorLen {
				s.Error = s.Error[:maxErrorLen]
			}
			stepIndex[s.StepID] = [2]int{i, len(tasks[i].Steps)}
			tasks[i].Steps = append(tasks[i].Steps, s)
			return nil
		})
		return err
	})
	b.Queue(`
SELECT st.workflow_step_id, st.id, st.to_state, st.sort_key, st.created_at
FROM tasker_workflow_steps s
JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = s.workflow_step_id
WHERE s.task_id = ANY($1)
UNION ALL
SELECT st.workflow_step_id, st.id, st.to_state, st.sort_key, st.created_at
FROM tasker_workflow_step_transitions st
JOIN tasker_workflow_steps s ON s.workflow_step_id = st.workflow_step_id
WHERE st.id > $3 AND s.task_id = ANY($2)
ORDER BY 1, 4`, unseen, known, stepThrough).Query(func(rows pgx.Rows) error {
		var (
			stepID int64
			tr     HistoryTransition
		)
		_, err := pgx.ForEachRow(rows, []any{&stepID, &tr.ID, &tr.ToState, &tr.SortKey, &tr.At}, func() error {
			if at, ok := stepIndex[stepID]; ok {
				st := &tasks[at[0]].Steps[at[1]]
				st.Transitions = append(st.Transitions, tr)
			}
			return nil
		})
		return err
	})
	b.Queue(`
SELECT DISTINCT e.to_step_id, e.from_step_id
FROM tasker_workflow_steps s
JOIN tasker_workflow_step_edges e ON e.to_step_id = s.workflow_step_id
WHERE s.task_id = ANY($1)
ORDER BY 1, 2`, taskIDs).Query(func(rows pgx.Rows) error {
		var child, parent int64
		_, err := pgx.ForEachRow(rows, []any{&child, &parent}, func() error {
			if at, ok := stepIndex[child]; ok {
				st := &tasks[at[0]].Steps[at[1]]
				st.Parents = append(st.Parents, parent)
			}
			return nil
		})
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read task histories: %w", err)
	}
	for i := range tasks {
		fillTransitions(&tasks[i], seen[tasks[i].TaskID])
	}
	return tasks, nil
}

// fillTransitions merges the transitions the stream read into h, which
// holds the rows above them, as the queries would have filled h for an
// unseen task: by sort_key, each row once, nil when there are none.
func fillTransitions(h *TaskHistory, t *TaskTransitions) {
	if t == nil {
		return
	}
	h.Transitions = mergeRows(t.Task, h.Transitions)
	for i := range h.Steps {
		h.Steps[i].Transitions = mergeRows(t.Steps[h.Steps[i].StepID], h.Steps[i].Transitions)
	}
}

func mergeRows(kept, read []HistoryTransition) []HistoryTransition {
	if len(read) == 0 {
		return slices.Clone(kept)
	}
	out := append(slices.Clone(kept), read...)
	bySortKey(out)
	return slices.CompactFunc(out, func(a, b HistoryTransition) bool { return a.ID == b.ID })
}
