-- Yardstick for the collector tests: get_system_health_counts_v01() as
-- described in shared/reference/tasker-facts.md §3.3 (Tasker source
-- db/functions/get_system_health_counts_v01.sql). It is deliberately written
-- the straightforward way (one COUNT ... FILTER pass per table over a LEFT
-- JOIN to the most_recent transition) so that it shares no structure with the
-- sidecar's grouped queries it checks.
CREATE OR REPLACE FUNCTION get_system_health_counts_v01()
RETURNS TABLE (
    total_tasks bigint,
    pending_tasks bigint,
    in_progress_tasks bigint,
    complete_tasks bigint,
    error_tasks bigint,
    cancelled_tasks bigint,
    total_steps bigint,
    pending_steps bigint,
    in_progress_steps bigint,
    complete_steps bigint,
    error_steps bigint,
    retryable_error_steps bigint,
    exhausted_retry_steps bigint,
    in_backoff_steps bigint,
    active_connections bigint,
    max_connections bigint
)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN QUERY
    WITH task_counts AS (
        SELECT
            COUNT(*) AS total_tasks,
            COUNT(*) FILTER (WHERE task_state.to_state = 'pending') AS pending_tasks,
            COUNT(*) FILTER (WHERE task_state.to_state = 'in_progress') AS in_progress_tasks,
            COUNT(*) FILTER (WHERE task_state.to_state = 'complete') AS complete_tasks,
            COUNT(*) FILTER (WHERE task_state.to_state = 'error') AS error_tasks,
            COUNT(*) FILTER (WHERE task_state.to_state = 'cancelled') AS cancelled_tasks
        FROM tasker_tasks t
        LEFT JOIN tasker_task_transitions task_state
               ON task_state.task_id = t.task_id
              AND task_state.most_recent = true
    ),
    step_counts AS (
        SELECT
            COUNT(*) AS total_steps,
            COUNT(*) FILTER (WHERE step_state.to_state = 'pending') AS pending_steps,
            COUNT(*) FILTER (WHERE step_state.to_state = 'in_progress') AS in_progress_steps,
            COUNT(*) FILTER (WHERE step_state.to_state = 'complete') AS complete_steps,
            COUNT(*) FILTER (WHERE step_state.to_state = 'error') AS error_steps,
            COUNT(*) FILTER (
                WHERE step_state.to_state = 'error'
                  AND ws.attempts < ws.retry_limit
                  AND COALESCE(ws.retryable, true) = true
            ) AS retryable_error_steps,
            COUNT(*) FILTER (
                WHERE step_state.to_state = 'error'
                  AND ws.attempts >= ws.retry_limit
            ) AS exhausted_retry_steps,
            COUNT(*) FILTER (
                WHERE step_state.to_state = 'error'
                  AND ws.attempts < ws.retry_limit
                  AND COALESCE(ws.retryable, true) = true
                  AND ws.last_attempted_at IS NOT NULL
            ) AS in_backoff_steps
        FROM tasker_workflow_steps ws
        LEFT JOIN tasker_workflow_step_transitions step_state
               ON step_state.workflow_step_id = ws.workflow_step_id
              AND step_state.most_recent = true
    ),
    connection_info AS (
        SELECT
            COUNT(*) AS active_connections,
            COALESCE((SELECT setting::bigint FROM pg_settings WHERE name = 'max_connections'), 0) AS max_connections
        FROM pg_stat_activity
        WHERE datname = current_database()
          AND state = 'active'
    )
    SELECT
        tc.total_tasks, tc.pending_tasks, tc.in_progress_tasks, tc.complete_tasks,
        tc.error_tasks, tc.cancelled_tasks,
        sc.total_steps, sc.pending_steps, sc.in_progress_steps, sc.complete_steps,
        sc.error_steps, sc.retryable_error_steps, sc.exhausted_retry_steps, sc.in_backoff_steps,
        ci.active_connections, ci.max_connections
    FROM task_counts tc
    CROSS JOIN step_counts sc
    CROSS JOIN connection_info ci;
END;
$$;
