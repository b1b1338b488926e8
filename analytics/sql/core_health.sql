-- tasker-core's get_system_health_counts() (migrations/
-- 20260110000003_sql_functions.sql) from the tables in schema tasker: tasks
-- and steps by the state of their most_recent transition, in the function's
-- column order; an entity without one counts in the totals only.
WITH task_counts AS (
    SELECT count(*) FILTER (WHERE cur.to_state = 'pending') AS pending,
           count(*) FILTER (WHERE cur.to_state = 'initializing') AS initializing,
           count(*) FILTER (WHERE cur.to_state = 'enqueuing_steps') AS enqueuing_steps,
           count(*) FILTER (WHERE cur.to_state = 'steps_in_process') AS steps_in_process,
           count(*) FILTER (WHERE cur.to_state = 'evaluating_results') AS evaluating_results,
           count(*) FILTER (WHERE cur.to_state = 'waiting_for_dependencies') AS waiting_for_dependencies,
           count(*) FILTER (WHERE cur.to_state = 'waiting_for_retry') AS waiting_for_retry,
           count(*) FILTER (WHERE cur.to_state = 'blocked_by_failures') AS blocked_by_failures,
           count(*) FILTER (WHERE cur.to_state = 'complete') AS complete,
           count(*) FILTER (WHERE cur.to_state = 'error') AS error,
           count(*) FILTER (WHERE cur.to_state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE cur.to_state = 'resolved_manually') AS resolved_manually,
           count(*) AS total
    FROM tasker.tasks t
    LEFT JOIN tasker.task_transitions cur ON cur.task_uuid = t.task_uuid AND cur.most_recent
),
step_counts AS (
    SELECT count(*) FILTER (WHERE cur.to_state = 'pending') AS pending,
           count(*) FILTER (WHERE cur.to_state = 'enqueued') AS enqueued,
           count(*) FILTER (WHERE cur.to_state = 'in_progress') AS in_progress,
           count(*) FILTER (WHERE cur.to_state = 'enqueued_for_orchestration') AS enqueued_for_orchestration,
           count(*) FILTER (WHERE cur.to_state = 'enqueued_as_error_for_orchestration') AS enqueued_as_error_for_orchestration,
           count(*) FILTER (WHERE cur.to_state = 'waiting_for_retry') AS waiting_for_retry,
           count(*) FILTER (WHERE cur.to_state = 'complete') AS complete,
           count(*) FILTER (WHERE cur.to_state = 'error') AS error,
           count(*) FILTER (WHERE cur.to_state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE cur.to_state = 'resolved_manually') AS resolved_manually,
           count(*) AS total
    FROM tasker.workflow_steps s
    LEFT JOIN tasker.workflow_step_transitions cur ON cur.workflow_step_uuid = s.workflow_step_uuid AND cur.most_recent
)
SELECT t.*, s.* FROM task_counts t, step_counts s
