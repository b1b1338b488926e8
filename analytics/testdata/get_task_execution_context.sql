-- Yardstick: get_task_execution_context(task_id) and
-- get_task_execution_contexts_batch(task_ids) as described in
-- shared/reference/tasker-facts.md §3.2 (Tasker source
-- db/functions/get_task_execution_context_v01.sql and
-- get_task_execution_contexts_batch_v01.sql). Needs the readiness yardstick.
CREATE OR REPLACE FUNCTION get_task_execution_context(input_task_id bigint)
RETURNS TABLE (
    task_id bigint,
    named_task_id integer,
    status text,
    total_steps bigint,
    pending_steps bigint,
    in_progress_steps bigint,
    completed_steps bigint,
    failed_steps bigint,
    ready_steps bigint,
    execution_status text,
    recommended_action text,
    completion_percentage numeric,
    health_status text
)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN QUERY
    WITH step_data AS (
        SELECT * FROM get_step_readiness_status(input_task_id, NULL)
    ),
    task_info AS (
        SELECT t.task_id, t.named_task_id, COALESCE(task_state.to_state, 'pending')::text AS current_status
        FROM tasker_tasks t
        LEFT JOIN tasker_task_transitions task_state
               ON task_state.task_id = t.task_id AND task_state.most_recent = true
        WHERE t.task_id = input_task_id
    ),
    aggregated_stats AS (
        SELECT
            COUNT(*) AS total_steps,
            COUNT(CASE WHEN sd.current_state = 'pending' THEN 1 END) AS pending_steps,
            COUNT(CASE WHEN sd.current_state = 'in_progress' THEN 1 END) AS in_progress_steps,
            COUNT(CASE WHEN sd.current_state IN ('complete', 'resolved_manually') THEN 1 END) AS completed_steps,
            COUNT(CASE WHEN sd.current_state = 'error' THEN 1 END) AS failed_steps,
            COUNT(CASE WHEN sd.ready_for_execution = true THEN 1 END) AS ready_steps,
            COUNT(CASE WHEN sd.current_state = 'error' AND sd.attempts >= sd.retry_limit THEN 1 END) AS permanently_blocked_steps
        FROM step_data sd
    )
    SELECT
        ti.task_id,
        ti.named_task_id,
        ti.current_status,
        ast.total_steps,
        ast.pending_steps,
        ast.in_progress_steps,
        ast.completed_steps,
        ast.failed_steps,
        ast.ready_steps,
        CASE
            WHEN ast.ready_steps > 0 THEN 'has_ready_steps'
            WHEN ast.in_progress_steps > 0 THEN 'processing'
            WHEN ast.permanently_blocked_steps > 0 AND ast.ready_steps = 0 THEN 'blocked_by_failures'
            WHEN ast.completed_steps = ast.total_steps AND ast.total_steps > 0 THEN 'all_complete'
            ELSE 'waiting_for_dependencies'
        END,
        CASE
            WHEN ast.ready_steps > 0 THEN 'execute_ready_steps'
            WHEN ast.in_progress_steps > 0 THEN 'wait_for_completion'
            WHEN ast.permanently_blocked_steps > 0 AND ast.ready_steps = 0 THEN 'handle_failures'
            WHEN ast.completed_steps = ast.total_steps AND ast.total_steps > 0 THEN 'finalize_task'
            ELSE 'wait_for_dependencies'
        END,
        CASE WHEN ast.total_steps = 0 THEN 0.0
             ELSE ROUND((ast.completed_steps::decimal / ast.total_steps::decimal) * 100, 2) END,
        CASE
            WHEN ast.failed_steps = 0 THEN 'healthy'
            WHEN ast.failed_steps > 0 AND ast.ready_steps > 0 THEN 'recovering'
            WHEN ast.permanently_blocked_steps > 0 AND ast.ready_steps = 0 THEN 'blocked'
            WHEN ast.failed_steps > 0 AND ast.permanently_blocked_steps = 0 AND ast.ready_steps = 0 THEN 'recovering'
            ELSE 'unknown'
        END
    FROM task_info ti
    CROSS JOIN aggregated_stats ast;
END;
$$;

CREATE OR REPLACE FUNCTION get_task_execution_contexts_batch(input_task_ids bigint[])
RETURNS TABLE (
    task_id bigint, named_task_id integer, status text, total_steps bigint, pending_steps bigint,
    in_progress_steps bigint, completed_steps bigint, failed_steps bigint, ready_steps bigint,
    execution_status text, recommended_action text, completion_percentage numeric, health_status text
)
LANGUAGE sql STABLE
AS $$
    SELECT c.*
    FROM tasker_tasks t
    CROSS JOIN LATERAL get_task_execution_context(t.task_id) c
    WHERE t.task_id = ANY(input_task_ids)
    ORDER BY t.task_id
$$;
