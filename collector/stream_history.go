package collector

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// TaskHistory is everything the trace exporter needs to draw one task:
// its identity, every transition of the task and of its steps, the steps'
// retry columns and their dependencies.
type TaskHistory struct {
	TaskID                       engine.ID
	Namespace, TaskName, Version string
	CreatedAt                    time.Time
	Initiator, SourceSystem      string
	Reason                       string
	// CorrelationID is tasker-core's tracing id of the task (tasks.correlation_id),
	// which its own logs and spans carry; empty on Rails.
	CorrelationID string
	Transitions   []HistoryTransition // by sort_key, created_at, key
	Steps         []StepHistory       // by workflow_step_id
}

// HistoryTransition is one transition row.
type HistoryTransition struct {
	ID      engine.ID
	ToState string
	SortKey int32
	At      time.Time
}

// StepHistory is one workflow step. The retry columns hold their current
// values (Tasker overwrites them on every attempt); Error and ErrorClass come
// from results and so describe the latest failure only (on core, only while
// the latest result is a failure: a success overwrites results).
// RetryLimit is retry_limit on Rails, max_attempts on core.
type StepHistory struct {
	StepID                engine.ID
	Name                  string
	Retryable             bool
	RetryLimit            *int32
	Attempts              *int32
	BackoffRequestSeconds *int32
	LastAttemptedAt       *time.Time
	ProcessedAt           *time.Time
	Error, ErrorClass     string
	// Parents are the steps this one depends on (edge from_step_id).
	Parents     []engine.ID
	Transitions []HistoryTransition // by sort_key, created_at, key
	// Failures are the errors tasker-core recorded with each failed attempt,
	// on its enqueued_as_error_for_orchestration row; nil on Rails, which
	// keeps only the latest failure (Error).
	Failures []StepFailure
}

// StepFailure is the error of one failed attempt on tasker-core.
type StepFailure struct {
	// TransitionID is the enqueued_as_error_for_orchestration row's key.
	TransitionID      engine.ID
	Error, ErrorClass string
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
func (db *DB) TaskHistories(ctx context.Context, taskIDs []engine.ID, seen map[engine.ID]*TaskTransitions) ([]TaskHistory, error) {
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

func (db *DB) taskHistories(ctx context.Context, taskIDs []engine.ID, seen map[engine.ID]*TaskTransitions) ([]TaskHistory, error) {
	// unseen tasks get every transition row; known ones the rows above
	// the lowest position the stream handed theirs over at.
	core := taskIDs[0].IsUUID()
	var unseen, known []engine.ID
	var taskThrough, stepThrough engine.ID
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
		taskThrough, stepThrough = minID(taskThrough, t.TaskThrough), minID(stepThrough, t.StepThrough)
	}

	q := railsHistorySQL
	if core {
		q = coreHistorySQL
		// The stream's position is a UUID on core; an unknown one (zero)
		// reads every row of the known tasks, as 0 does on Rails.
		if !taskThrough.IsUUID() {
			taskThrough = engine.UUIDID([16]byte{})
		}
		if !stepThrough.IsUUID() {
			stepThrough = engine.UUIDID([16]byte{})
		}
	}

	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin read-only transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var tasks []TaskHistory
	index := map[engine.ID]int{}
	stepIndex := map[engine.ID][2]int{}
	b := &pgx.Batch{}
	b.Queue(q.tasks, keyArgs(taskIDs)).Query(func(rows pgx.Rows) error {
		var h TaskHistory
		_, err := pgx.ForEachRow(rows, []any{&h.TaskID, &h.Namespace, &h.TaskName, &h.Version, &h.CreatedAt,
			&h.Initiator, &h.SourceSystem, &h.Reason, &h.CorrelationID}, func() error {
			index[h.TaskID] = len(tasks)
			tasks = append(tasks, h)
			return nil
		})
		return err
	})
	b.Queue(q.taskTransitions, keyArgsOf(core, unseen), keyArgsOf(core, known), taskThrough).Query(func(rows pgx.Rows) error {
		var (
			taskID engine.ID
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
	b.Queue(q.steps, keyArgs(taskIDs)).Query(func(rows pgx.Rows) error {
		var (
			taskID engine.ID
			s      StepHistory
		)
		_, err := pgx.ForEachRow(rows, []any{&taskID, &s.StepID, &s.Name, &s.Retryable, &s.RetryLimit, &s.Attempts,
			&s.BackoffRequestSeconds, &s.LastAttemptedAt, &s.ProcessedAt, &s.Error, &s.ErrorClass}, func() error {
			i, ok := index[taskID]
			if !ok {
				return nil
			}
			s.Error = truncateError(s.Error)
			stepIndex[s.StepID] = [2]int{i, len(tasks[i].Steps)}
			tasks[i].Steps = append(tasks[i].Steps, s)
			return nil
		})
		return err
	})
	b.Queue(q.stepTransitions, keyArgsOf(core, unseen), keyArgsOf(core, known), stepThrough).Query(func(rows pgx.Rows) error {
		var (
			stepID engine.ID
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
	b.Queue(q.edges, keyArgs(taskIDs)).Query(func(rows pgx.Rows) error {
		var child, parent engine.ID
		_, err := pgx.ForEachRow(rows, []any{&child, &parent}, func() error {
			if at, ok := stepIndex[child]; ok {
				st := &tasks[at[0]].Steps[at[1]]
				st.Parents = append(st.Parents, parent)
			}
			return nil
		})
		return err
	})
	if q.failures != "" {
		// Every failure row of the tasks, whether or not the stream saw
		// them: the stream does not keep metadata, and failures are few.
		b.Queue(q.failures, keyArgs(taskIDs)).Query(func(rows pgx.Rows) error {
			var (
				stepID engine.ID
				f      StepFailure
				meta   []byte
			)
			_, err := pgx.ForEachRow(rows, []any{&stepID, &f.TransitionID, &meta}, func() error {
				at, ok := stepIndex[stepID]
				if !ok {
					return nil
				}
				f.Error, f.ErrorClass = coreFailure(meta)
				f.Error = truncateError(f.Error)
				st := &tasks[at[0]].Steps[at[1]]
				st.Failures = append(st.Failures, f)
				return nil
			})
			return err
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read task histories: %w", err)
	}
	for i := range tasks {
		fillTransitions(&tasks[i], seen[tasks[i].TaskID])
	}
	return tasks, nil
}

// historySQL are the queries of TaskHistories for one engine. Arguments:
// $1 the tasks (for the transitions: the tasks the stream did not see),
// $2 the tasks the stream saw, $3 the key below which it read every row.
// Transitions come by task or step, sort_key, created_at, key: sort_key is
// unique per entity on Rails, not on core.
type historySQL struct {
	tasks, taskTransitions, steps, stepTransitions, edges string
	// failures lists each failed attempt's hand-off row with its metadata;
	// empty when the engine keeps none (Rails).
	failures string
}

var railsHistorySQL = historySQL{
	tasks: `
SELECT t.task_id, COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(nt.version, ''), t.created_at,
       COALESCE(t.initiator, ''), COALESCE(t.source_system, ''), COALESCE(t.reason, ''), ''
FROM tasker_tasks t
LEFT JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
LEFT JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
WHERE t.task_id = ANY($1)
ORDER BY t.task_id`,
	taskTransitions: `
SELECT task_id, id, to_state, sort_key, created_at FROM tasker_task_transitions
WHERE task_id = ANY($1)
UNION ALL
SELECT task_id, id, to_state, sort_key, created_at FROM tasker_task_transitions
WHERE id >= $3 AND task_id = ANY($2)
ORDER BY 1, 4, 5, 2`,
	steps: `
SELECT s.task_id, s.workflow_step_id, COALESCE(n.name, ''), COALESCE(s.retryable, true), s.retry_limit, s.attempts,
       s.backoff_request_seconds, s.last_attempted_at, s.processed_at,
       COALESCE(s.results->>'error', ''), COALESCE(s.results->>'error_class', '')
FROM tasker_workflow_steps s
LEFT JOIN tasker_named_steps n ON n.named_step_id = s.named_step_id
WHERE s.task_id = ANY($1)
ORDER BY s.task_id, s.workflow_step_id`,
	stepTransitions: `
SELECT st.workflow_step_id, st.id, st.to_state, st.sort_key, st.created_at
FROM tasker_workflow_steps s
JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = s.workflow_step_id
WHERE s.task_id = ANY($1)
UNION ALL
SELECT st.workflow_step_id, st.id, st.to_state, st.sort_key, st.created_at
FROM tasker_workflow_step_transitions st
JOIN tasker_workflow_steps s ON s.workflow_step_id = st.workflow_step_id
WHERE st.id >= $3 AND s.task_id = ANY($2)
ORDER BY 1, 4, 5, 2`,
	edges: `
SELECT DISTINCT e.to_step_id, e.from_step_id
FROM tasker_workflow_steps s
JOIN tasker_workflow_step_edges e ON e.to_step_id = s.workflow_step_id
WHERE s.task_id = ANY($1)
ORDER BY 1, 2`,
}

// coreHistorySQL reads tasker-core's schema. results is the worker's
// StepExecutionResult (crates/tasker-shared/src/messaging/execution_types.rs),
// written on every hand-off to orchestration: its error is an object
// {message, error_type, ...}, and a later success overwrites it, so the
// step's Error is read only while the latest result is not a success.
var coreHistorySQL = historySQL{
	tasks: `
SELECT t.task_uuid, COALESCE(ns.name, ''), COALESCE(nt.name, ''), COALESCE(nt.version, ''), t.created_at,
       COALESCE(t.initiator, ''), COALESCE(t.source_system, ''), COALESCE(t.reason, ''),
       COALESCE(t.correlation_id::text, '')
FROM tasker.tasks t
LEFT JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
LEFT JOIN tasker.task_namespaces ns ON ns.task_namespace_uuid = nt.task_namespace_uuid
WHERE t.task_uuid = ANY($1)
ORDER BY t.task_uuid`,
	taskTransitions: `
SELECT task_uuid, task_transition_uuid, to_state, sort_key, created_at FROM tasker.task_transitions
WHERE task_uuid = ANY($1)
UNION ALL
SELECT task_uuid, task_transition_uuid, to_state, sort_key, created_at FROM tasker.task_transitions
WHERE task_transition_uuid >= $3 AND task_uuid = ANY($2)
ORDER BY 1, 4, 5, 2`,
	steps: `
SELECT s.task_uuid, s.workflow_step_uuid, COALESCE(n.name, ''), COALESCE(s.retryable, true), s.max_attempts, s.attempts,
       s.backoff_request_seconds, s.last_attempted_at, s.processed_at,
       CASE WHEN s.results->'success' = 'true'::jsonb THEN ''
            WHEN jsonb_typeof(s.results->'error') = 'object' THEN COALESCE(s.results->'error'->>'message', '')
            WHEN jsonb_typeof(s.results->'error') = 'string' THEN s.results->>'error'
            ELSE '' END,
       CASE WHEN s.results->'success' = 'true'::jsonb THEN ''
            ELSE COALESCE(s.results->'error'->>'error_type', s.results->'error'->>'error_class', '') END
FROM tasker.workflow_steps s
LEFT JOIN tasker.named_steps n ON n.named_step_uuid = s.named_step_uuid
WHERE s.task_uuid = ANY($1)
ORDER BY s.task_uuid, s.workflow_step_uuid`,
	stepTransitions: `
SELECT st.workflow_step_uuid, st.workflow_step_transition_uuid, st.to_state, st.sort_key, st.created_at
FROM tasker.workflow_steps s
JOIN tasker.workflow_step_transitions st ON st.workflow_step_uuid = s.workflow_step_uuid
WHERE s.task_uuid = ANY($1)
UNION ALL
SELECT st.workflow_step_uuid, st.workflow_step_transition_uuid, st.to_state, st.sort_key, st.created_at
FROM tasker.workflow_step_transitions st
JOIN tasker.workflow_steps s ON s.workflow_step_uuid = st.workflow_step_uuid
WHERE st.workflow_step_transition_uuid >= $3 AND s.task_uuid = ANY($2)
ORDER BY 1, 4, 5, 2`,
	edges: `
SELECT DISTINCT e.to_step_uuid, e.from_step_uuid
FROM tasker.workflow_steps s
JOIN tasker.workflow_step_edges e ON e.to_step_uuid = s.workflow_step_uuid
WHERE s.task_uuid = ANY($1)
ORDER BY 1, 2`,
	failures: `
SELECT st.workflow_step_uuid, st.workflow_step_transition_uuid, COALESCE(st.metadata, '{}'::jsonb)
FROM tasker.workflow_steps s
JOIN tasker.workflow_step_transitions st ON st.workflow_step_uuid = s.workflow_step_uuid
WHERE s.task_uuid = ANY($1) AND st.to_state = 'enqueued_as_error_for_orchestration'
ORDER BY 1, st.sort_key, st.created_at, 2`,
}

// coreFailure reads the error of a failed attempt from the metadata of its
// enqueued_as_error_for_orchestration row. The engine writes
// {"event": "<StepEvent as JSON text>", ...}
// (crates/tasker-shared/src/state_machine/step_state_machine.rs), the
// event being {"type": "EnqueueAsErrorForOrchestration", "data": <result>}
// (events.rs, serde tag/content); some workers' rows carry the result, or
// its error, in the metadata itself. The error is a string or an object
// with message and error_type (or error_class). Anything else gives "".
func coreFailure(meta []byte) (msg, class string) {
	var m map[string]json.RawMessage
	if json.Unmarshal(meta, &m) != nil {
		return "", ""
	}
	var candidates []json.RawMessage
	var event string
	if json.Unmarshal(m["event"], &event) == nil {
		var ev struct {
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal([]byte(event), &ev) == nil && ev.Data != nil {
			candidates = append(candidates, ev.Data)
		}
	}
	candidates = append(candidates, meta, m["result"])
	for _, c := range candidates {
		var r struct {
			Error json.RawMessage `json:"error"`
		}
		if c == nil || json.Unmarshal(c, &r) != nil || r.Error == nil {
			continue
		}
		var s string
		if json.Unmarshal(r.Error, &s) == nil && s != "" {
			return s, ""
		}
		var e struct {
			Message    string `json:"message"`
			ErrorType  string `json:"error_type"`
			ErrorClass string `json:"error_class"`
		}
		if json.Unmarshal(r.Error, &e) == nil && e.Message != "" {
			return e.Message, cmp.Or(e.ErrorType, e.ErrorClass)
		}
	}
	return "", ""
}

// truncateError bounds an error text to maxErrorLen bytes, cut at a rune
// boundary.
func truncateError(s string) string {
	if len(s) <= maxErrorLen {
		return s
	}
	n := maxErrorLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
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

// minID is the lower of two keys.
func minID(a, b engine.ID) engine.ID {
	if b.Compare(a) < 0 {
		return b
	}
	return a
}

// keyArgs is a list of keys as a query argument: numbers on Rails, UUID
// text on core (pgx encodes both into the key column's array type).
func keyArgs(ids []engine.ID) any { return keyArgsOf(len(ids) > 0 && ids[0].IsUUID(), ids) }

// keyArgsOf is keyArgs for a list that may be empty: uuid says which
// engine's keys it holds.
func keyArgsOf(uuid bool, ids []engine.ID) any {
	if uuid {
		out := make([][16]byte, len(ids)) // binary: no text to format or parse
		for i, id := range ids {
			out[i] = id.UUID()
		}
		return out
	}
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = id.Int()
	}
	return out
}
