package collector

import "fmt"

// The stream's reads on tasker-core (docs/stream.md#tasker-core), the
// counterparts of stream_sql.go's. Every read of new rows takes the same
// inputs: the key to read from ($1), the batch size ($2) and the keys at
// or above $1 already read ($3, Cursor.Seen). The scan is an index range
// on the primary key from $1; a hashed NOT IN drops the rows already read.
//
// sort_key is not unique on core (two writers can both compute max + 1),
// so "the row before" is the previous one by sort_key, then created_at,
// then key: a row comparison the (entity, sort_key) index serves.

const coreTaskEntitiesSQL = `
SELECT task_uuid, named_task_uuid FROM tasker.tasks
WHERE task_uuid >= $1::uuid AND task_uuid NOT IN (SELECT unnest($3::uuid[]))
ORDER BY task_uuid LIMIT $2`

const coreStepEntitiesSQL = `
WITH n AS (
    SELECT workflow_step_uuid, task_uuid FROM tasker.workflow_steps
    WHERE workflow_step_uuid >= $1::uuid AND workflow_step_uuid NOT IN (SELECT unnest($3::uuid[]))
    ORDER BY workflow_step_uuid LIMIT $2
)
SELECT n.workflow_step_uuid, t.named_task_uuid
FROM n
LEFT JOIN LATERAL (SELECT named_task_uuid FROM tasker.tasks t WHERE t.task_uuid = n.task_uuid LIMIT 1) t ON true
ORDER BY n.workflow_step_uuid`

const coreTaskTransitionsSQL = `
WITH n AS (
    SELECT task_transition_uuid, task_uuid, to_state, sort_key, created_at FROM tasker.task_transitions
    WHERE task_transition_uuid >= $1::uuid AND task_transition_uuid NOT IN (SELECT unnest($3::uuid[]))
    ORDER BY task_transition_uuid LIMIT $2
)
SELECT n.task_transition_uuid, n.task_uuid, n.to_state, n.sort_key, n.created_at,
       p.to_state, p.created_at,
       t.named_task_uuid, t.created_at,
       CASE WHEN n.to_state = ANY($4::text[]) THEN
           -- As on Rails: a rerun starts at the first transition after the
           -- previous terminal one, or at that one when nothing came between.
           (SELECT COALESCE(
                (SELECT r.created_at FROM tasker.task_transitions r
                 WHERE r.task_uuid = n.task_uuid
                   AND (r.sort_key, r.created_at, r.task_transition_uuid) > (q.sort_key, q.created_at, q.task_transition_uuid)
                   AND (r.sort_key, r.created_at, r.task_transition_uuid) < (n.sort_key, n.created_at, n.task_transition_uuid)
                 ORDER BY r.sort_key, r.created_at, r.task_transition_uuid LIMIT 1),
                q.created_at)
            FROM tasker.task_transitions q
            WHERE q.task_uuid = n.task_uuid
              AND (q.sort_key, q.created_at, q.task_transition_uuid) < (n.sort_key, n.created_at, n.task_transition_uuid)
              AND q.to_state = ANY($4::text[])
            ORDER BY q.sort_key DESC, q.created_at DESC, q.task_transition_uuid DESC LIMIT 1)
       END
FROM n
LEFT JOIN LATERAL (
    SELECT p.to_state, p.created_at FROM tasker.task_transitions p
    WHERE p.task_uuid = n.task_uuid
      AND (p.sort_key, p.created_at, p.task_transition_uuid) < (n.sort_key, n.created_at, n.task_transition_uuid)
    ORDER BY p.sort_key DESC, p.created_at DESC, p.task_transition_uuid DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (
    SELECT t.named_task_uuid, t.created_at FROM tasker.tasks t WHERE t.task_uuid = n.task_uuid LIMIT 1) t ON true
ORDER BY n.task_transition_uuid`

// The retry classes on core (engine.Core's doc): a step entering
// waiting_for_retry is retryable and in backoff; one entering error is
// exhausted when its attempts reached max_attempts (NULLs count in no
// class, as on Rails).
//
// On a database with tasker.workflow_step_result_audit (stream_audit.go),
// a hand-off row also brings the audit row tasker-core's trigger
// trg_step_result_audit wrote in the same transaction (the unique
// (workflow_step_uuid, workflow_step_transition_uuid) index serves the
// lookup): its success, execution_time_ms and the step's name. Elsewhere
// the three columns are NULL.
var (
	coreStepTransitionsSQL        = fmt.Sprintf(coreStepTransitionsTemplate, coreAuditColumns, coreAuditJoin)
	coreStepTransitionsNoAuditSQL = fmt.Sprintf(coreStepTransitionsTemplate, "NULL::boolean, NULL::bigint, NULL::text", "")
)

const coreAuditColumns = "a.success, a.execution_time_ms, a.step_name"

const coreAuditJoin = `
LEFT JOIN LATERAL (
    SELECT a.success, a.execution_time_ms,
           (SELECT ns.name FROM tasker.named_steps ns WHERE ns.named_step_uuid = s.named_step_uuid) AS step_name
    FROM tasker.workflow_step_result_audit a
    WHERE n.to_state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')
      AND a.workflow_step_uuid = n.workflow_step_uuid
      AND a.workflow_step_transition_uuid = n.workflow_step_transition_uuid
    LIMIT 1) a ON true`

const coreStepTransitionsTemplate = `
WITH n AS (
    SELECT workflow_step_transition_uuid, workflow_step_uuid, to_state, sort_key, created_at
    FROM tasker.workflow_step_transitions
    WHERE workflow_step_transition_uuid >= $1::uuid AND workflow_step_transition_uuid NOT IN (SELECT unnest($3::uuid[]))
    ORDER BY workflow_step_transition_uuid LIMIT $2
)
SELECT n.workflow_step_transition_uuid, n.workflow_step_uuid, s.task_uuid, n.to_state, n.sort_key, n.created_at,
       p.to_state, p.created_at,
       t.named_task_uuid,
       n.to_state = 'waiting_for_retry',
       n.to_state = 'error' AND COALESCE(s.attempts >= s.max_attempts, false),
       n.to_state = 'waiting_for_retry',
       CASE WHEN n.to_state = 'in_progress' THEN
           (SELECT q.created_at FROM tasker.workflow_step_transitions q
            WHERE q.workflow_step_uuid = n.workflow_step_uuid
              AND (q.sort_key, q.created_at, q.workflow_step_transition_uuid) < (n.sort_key, n.created_at, n.workflow_step_transition_uuid)
              AND q.to_state = 'waiting_for_retry'
            ORDER BY q.sort_key DESC, q.created_at DESC, q.workflow_step_transition_uuid DESC LIMIT 1)
       END,
       %[1]s
FROM n
LEFT JOIN LATERAL (
    SELECT p.to_state, p.created_at FROM tasker.workflow_step_transitions p
    WHERE p.workflow_step_uuid = n.workflow_step_uuid
      AND (p.sort_key, p.created_at, p.workflow_step_transition_uuid) < (n.sort_key, n.created_at, n.workflow_step_transition_uuid)
    ORDER BY p.sort_key DESC, p.created_at DESC, p.workflow_step_transition_uuid DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (
    SELECT s.task_uuid, s.attempts, s.max_attempts, s.named_step_uuid
    FROM tasker.workflow_steps s WHERE s.workflow_step_uuid = n.workflow_step_uuid LIMIT 1) s ON true
LEFT JOIN LATERAL (SELECT t.named_task_uuid FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid LIMIT 1) t ON true%[2]s
ORDER BY n.workflow_step_transition_uuid`

const coreErrorStepsSQL = `
SELECT s.workflow_step_uuid,
       st.to_state = 'waiting_for_retry',
       st.to_state = 'error' AND COALESCE(s.attempts >= s.max_attempts, false),
       st.to_state = 'waiting_for_retry',
       (SELECT t.named_task_uuid FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid)
FROM tasker.workflow_step_transitions st
JOIN tasker.workflow_steps s ON s.workflow_step_uuid = st.workflow_step_uuid
WHERE st.most_recent = true AND st.to_state IN ('error', 'waiting_for_retry')`

const coreRunningStepsSQL = `
SELECT st.workflow_step_uuid, st.to_state, st.created_at
FROM tasker.workflow_step_transitions st
WHERE st.most_recent = true AND st.to_state = ANY($1::text[])`

const coreNamedTasksSQL = `
SELECT nt.named_task_uuid, COALESCE(ns.name, ''), nt.name, nt.version
FROM tasker.named_tasks nt
LEFT JOIN tasker.task_namespaces ns ON ns.task_namespace_uuid = nt.task_namespace_uuid`

// coreReplaySQL returns the terminal task transitions from $1 up, newest
// first; the caller keeps those the new holder has read and the old one
// had not (Cursor.readSince).
const coreReplaySQL = `
SELECT r.task_transition_uuid, r.task_uuid, r.to_state, r.sort_key, r.created_at, t.named_task_uuid
FROM tasker.task_transitions r
LEFT JOIN LATERAL (SELECT t.named_task_uuid FROM tasker.tasks t WHERE t.task_uuid = r.task_uuid LIMIT 1) t ON true
WHERE r.task_transition_uuid >= $1::uuid AND r.to_state = ANY($2::text[])
ORDER BY r.task_transition_uuid DESC LIMIT $3`

// coreKeysSinceSQL lists the keys of a table from $1 up: at the start, the
// keys a fresh count has already counted above the floor.
const coreKeysSinceSQL = `SELECT %[2]s FROM %[1]s WHERE %[2]s >= $1::uuid ORDER BY 1 DESC LIMIT $2`
