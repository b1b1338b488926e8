-- A yardstick for the sidecar's tasker-core health counts: a function with
-- the columns and semantics of tasker-core's tasker.get_system_health_counts()
-- (migrations/20260110000003_sql_functions.sql in tasker-systems/tasker-core),
-- written for the tests rather than copied. One count per task state (12)
-- and total_tasks, one per step state (10) and total_steps, each entity in
-- the state of its most_recent transition row; an entity without one counts
-- in its total only. Names are schema-qualified: the engine's own function
-- relies on search_path, the tests do not.
CREATE OR REPLACE FUNCTION tasker.get_system_health_counts()
RETURNS TABLE(
    pending_tasks bigint,
    initializing_tasks bigint,
    enqueuing_steps_tasks bigint,
    steps_in_process_tasks bigint,
    evaluating_results_tasks bigint,
    waiting_for_dependencies_tasks bigint,
    waiting_for_retry_tasks bigint,
    blocked_by_failures_tasks bigint,
    complete_tasks bigint,
    error_tasks bigint,
    cancelled_tasks bigint,
    resolved_manually_tasks bigint,
    total_tasks bigint,
    pending_steps bigint,
    enqueued_steps bigint,
    in_progress_steps bigint,
    enqueued_for_orchestration_steps bigint,
    enqueued_as_error_for_orchestration_steps bigint,
    waiting_for_retry_steps bigint,
    complete_steps bigint,
    error_steps bigint,
    cancelled_steps bigint,
    resolved_manually_steps bigint,
    total_steps bigint
)
LANGUAGE sql STABLE
AS $$
    WITH task_state AS (
        SELECT (SELECT tt.to_state FROM tasker.task_transitions tt
                WHERE tt.task_uuid = t.task_uuid AND tt.most_recent) AS state
        FROM tasker.tasks t
    ), step_state AS (
        SELECT (SELECT st.to_state FROM tasker.workflow_step_transitions st
                WHERE st.workflow_step_uuid = s.workflow_step_uuid AND st.most_recent) AS state
        FROM tasker.workflow_steps s
    ), tc AS (
        SELECT
            count(*) FILTER (WHERE state = 'pending'),
            count(*) FILTER (WHERE state = 'initializing'),
            count(*) FILTER (WHERE state = 'enqueuing_steps'),
            count(*) FILTER (WHERE state = 'steps_in_process'),
            count(*) FILTER (WHERE state = 'evaluating_results'),
            count(*) FILTER (WHERE state = 'waiting_for_dependencies'),
            count(*) FILTER (WHERE state = 'waiting_for_retry'),
            count(*) FILTER (WHERE state = 'blocked_by_failures'),
            count(*) FILTER (WHERE state = 'complete'),
            count(*) FILTER (WHERE state = 'error'),
            count(*) FILTER (WHERE state = 'cancelled'),
            count(*) FILTER (WHERE state = 'resolved_manually'),
            count(*)
        FROM task_state
    ), sc AS (
        SELECT
            count(*) FILTER (WHERE state = 'pending'),
            count(*) FILTER (WHERE state = 'enqueued'),
            count(*) FILTER (WHERE state = 'in_progress'),
            count(*) FILTER (WHERE state = 'enqueued_for_orchestration'),
            count(*) FILTER (WHERE state = 'enqueued_as_error_for_orchestration'),
            count(*) FILTER (WHERE state = 'waiting_for_retry'),
            count(*) FILTER (WHERE state = 'complete'),
            count(*) FILTER (WHERE state = 'error'),
            count(*) FILTER (WHERE state = 'cancelled'),
            count(*) FILTER (WHERE state = 'resolved_manually'),
            count(*)
        FROM step_state
    )
    SELECT tc.*, sc.* FROM tc, sc
$$;
