-- Yardsticks for the sidecar's per-task answers on tasker-core: functions
-- with the signatures, columns and semantics of tasker-core's
-- get_step_readiness_status_batch(uuid[], uuid[]),
-- calculate_step_next_retry_time, evaluate_step_state_readiness and
-- get_task_execution_context(uuid)
-- (migrations/20260110000003_sql_functions.sql in tasker-systems/tasker-core),
-- written for the tests rather than copied. They keep the engine's query
-- shape (CTEs over the task's steps, DISTINCT ON for the newest error,
-- aggregation over the readiness rows), which the sidecar's lateral
-- index probes do not share, and live in schema yardstick.
CREATE SCHEMA IF NOT EXISTS yardstick;

CREATE OR REPLACE FUNCTION yardstick.next_retry_time(
    backoff integer, last_attempt timestamp, failed timestamp, attempts integer,
    max_backoff integer DEFAULT 60, multiplier numeric DEFAULT 2.0)
RETURNS timestamp LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN backoff IS NOT NULL AND last_attempt IS NOT NULL THEN last_attempt + backoff * interval '1 second'
        WHEN failed IS NOT NULL THEN failed + LEAST(power(multiplier, COALESCE(attempts, 1)) * interval '1 second',
                                                    max_backoff * interval '1 second')
    END
$$;

CREATE OR REPLACE FUNCTION yardstick.step_ready(
    state text, processed boolean, in_process boolean, deps_ok boolean, eligible boolean, next_retry timestamp)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT COALESCE(state, 'pending') IN ('pending', 'waiting_for_retry')
       AND NOT COALESCE(processed, false)
       AND NOT COALESCE(in_process, false)
       AND deps_ok AND eligible
       AND (next_retry IS NULL OR next_retry <= now())
$$;

CREATE OR REPLACE FUNCTION yardstick.get_step_readiness_status_batch(task_uuids uuid[])
RETURNS TABLE(
    workflow_step_uuid uuid, task_uuid uuid, named_step_uuid uuid, name text, current_state text,
    dependencies_satisfied boolean, retry_eligible boolean, ready_for_execution boolean,
    last_failure_at timestamp, next_retry_at timestamp, total_parents integer, completed_parents integer,
    attempts integer, max_attempts integer, backoff_request_seconds integer, last_attempted_at timestamp)
LANGUAGE sql STABLE AS $$
    WITH mine AS (
        SELECT s.workflow_step_uuid FROM tasker.workflow_steps s WHERE s.task_uuid = ANY(task_uuids)
    ), states AS (
        SELECT DISTINCT ON (x.workflow_step_uuid) x.workflow_step_uuid, x.to_state
        FROM tasker.workflow_step_transitions x JOIN mine USING (workflow_step_uuid)
        WHERE x.most_recent ORDER BY x.workflow_step_uuid, x.created_at DESC
    ), failures AS (
        SELECT DISTINCT ON (x.workflow_step_uuid) x.workflow_step_uuid, x.created_at AS failed
        FROM tasker.workflow_step_transitions x JOIN mine USING (workflow_step_uuid)
        WHERE x.to_state = 'error' ORDER BY x.workflow_step_uuid, x.created_at DESC
    ), deps AS (
        SELECT e.to_step_uuid, count(*) AS total,
               count(*) FILTER (WHERE ps.to_state IN ('complete', 'resolved_manually')) AS done
        FROM tasker.workflow_step_edges e
        JOIN mine ON mine.workflow_step_uuid = e.to_step_uuid
        LEFT JOIN states ps ON ps.workflow_step_uuid = e.from_step_uuid
        GROUP BY e.to_step_uuid
    ), flags AS (
        SELECT s.workflow_step_uuid,
               (d.total IS NULL OR d.total = d.done) AS deps_ok,
               (COALESCE(s.attempts, 0) = 0 OR (COALESCE(s.retryable, true)
                AND COALESCE(s.attempts, 0) < COALESCE(s.max_attempts, 3))) AS eligible,
               yardstick.next_retry_time(s.backoff_request_seconds, s.last_attempted_at, f.failed, s.attempts) AS next_retry
        FROM tasker.workflow_steps s JOIN mine USING (workflow_step_uuid)
        LEFT JOIN deps d ON d.to_step_uuid = s.workflow_step_uuid
        LEFT JOIN failures f ON f.workflow_step_uuid = s.workflow_step_uuid
    )
    SELECT s.workflow_step_uuid, s.task_uuid, s.named_step_uuid, n.name::text,
           COALESCE(st.to_state, 'pending')::text, fl.deps_ok, fl.eligible,
           yardstick.step_ready(COALESCE(st.to_state, 'pending'), s.processed, s.in_process, fl.deps_ok, fl.eligible, fl.next_retry),
           f.failed, fl.next_retry, COALESCE(d.total, 0)::integer, COALESCE(d.done, 0)::integer,
           COALESCE(s.attempts, 0)::integer, COALESCE(s.max_attempts, 3), s.backoff_request_seconds, s.last_attempted_at
    FROM tasker.workflow_steps s
    JOIN mine USING (workflow_step_uuid)
    JOIN tasker.named_steps n ON n.named_step_uuid = s.named_step_uuid
    LEFT JOIN states st ON st.workflow_step_uuid = s.workflow_step_uuid
    LEFT JOIN deps d ON d.to_step_uuid = s.workflow_step_uuid
    LEFT JOIN failures f ON f.workflow_step_uuid = s.workflow_step_uuid
    LEFT JOIN flags fl ON fl.workflow_step_uuid = s.workflow_step_uuid
    ORDER BY s.task_uuid, s.workflow_step_uuid
$$;

CREATE OR REPLACE FUNCTION yardstick.get_task_execution_context(the_task uuid)
RETURNS TABLE(
    task_uuid uuid, named_task_uuid uuid, status text, total_steps bigint, pending_steps bigint,
    in_progress_steps bigint, completed_steps bigint, failed_steps bigint, ready_steps bigint,
    execution_status text, recommended_action text, completion_percentage numeric, health_status text,
    enqueued_steps bigint)
LANGUAGE sql STABLE AS $$
    WITH r AS (
        SELECT * FROM yardstick.get_step_readiness_status_batch(ARRAY[the_task])
    ), c AS (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE r.current_state = 'pending') AS pending,
               count(*) FILTER (WHERE r.current_state = 'in_progress') AS running,
               count(*) FILTER (WHERE r.current_state IN ('enqueued', 'enqueued_for_orchestration',
                                                          'enqueued_as_error_for_orchestration')) AS enqueued,
               count(*) FILTER (WHERE r.current_state IN ('complete', 'resolved_manually')) AS done,
               count(*) FILTER (WHERE r.current_state = 'error') AS failed,
               count(*) FILTER (WHERE r.ready_for_execution) AS ready
        FROM r
    )
    SELECT t.task_uuid, t.named_task_uuid, COALESCE(tt.to_state, 'pending')::text,
           c.total, c.pending, c.running, c.done, c.failed, c.ready,
           CASE WHEN c.failed > 0 THEN 'blocked_by_failures' WHEN c.ready > 0 THEN 'has_ready_steps'
                WHEN c.running > 0 OR c.enqueued > 0 THEN 'processing'
                WHEN c.done = c.total AND c.total > 0 THEN 'all_complete' ELSE 'waiting_for_dependencies' END,
           CASE WHEN c.failed > 0 THEN 'handle_failures' WHEN c.ready > 0 THEN 'execute_ready_steps'
                WHEN c.running > 0 OR c.enqueued > 0 THEN 'wait_for_completion'
                WHEN c.done = c.total AND c.total > 0 THEN 'finalize_task' ELSE 'wait_for_dependencies' END,
           CASE WHEN c.total = 0 THEN 0.0 ELSE round(c.done::numeric / c.total * 100, 2) END,
           CASE WHEN c.failed > 0 THEN 'blocked' WHEN c.failed = 0 THEN 'healthy' ELSE 'recovering' END,
           c.enqueued
    FROM tasker.tasks t
    LEFT JOIN tasker.task_transitions tt ON tt.task_uuid = t.task_uuid AND tt.most_recent
    CROSS JOIN c
    WHERE t.task_uuid = the_task
$$;
