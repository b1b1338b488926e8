-- Yardstick: get_step_readiness_status(task_id, step_ids) and
-- get_step_readiness_status_batch(task_ids), v02, as described in
-- shared/reference/tasker-facts.md §3.1 (Tasker source
-- db/functions/get_step_readiness_status_single_and_batch_v02.sql). Written
-- with CTEs over the task's step ids, unlike the sidecar's lateral query.
CREATE OR REPLACE FUNCTION get_step_readiness_status(input_task_id bigint, step_ids bigint[] DEFAULT NULL)
RETURNS TABLE (
    workflow_step_id bigint,
    task_id bigint,
    named_step_id integer,
    name text,
    current_state text,
    dependencies_satisfied boolean,
    retry_eligible boolean,
    ready_for_execution boolean,
    last_failure_at timestamp,
    next_retry_at timestamp,
    total_parents integer,
    completed_parents integer,
    attempts integer,
    retry_limit integer,
    backoff_request_seconds integer,
    last_attempted_at timestamp
)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN QUERY
    WITH task_steps AS (
        SELECT ws.workflow_step_id
        FROM tasker_workflow_steps ws
        WHERE ws.task_id = input_task_id
          AND (step_ids IS NULL OR ws.workflow_step_id = ANY(step_ids))
    ),
    step_states AS (
        SELECT wst.workflow_step_id, wst.to_state, wst.created_at
        FROM tasker_workflow_step_transitions wst
        WHERE wst.most_recent = true
          AND wst.workflow_step_id IN (SELECT ts.workflow_step_id FROM task_steps ts)
    ),
    dependency_counts AS (
        SELECT dep_edges.to_step_id,
               COUNT(*) AS total_parents,
               COUNT(CASE WHEN parent_states.to_state IN ('complete', 'resolved_manually') THEN 1 END) AS completed_parents
        FROM tasker_workflow_step_edges dep_edges
        LEFT JOIN tasker_workflow_step_transitions parent_states
               ON parent_states.workflow_step_id = dep_edges.from_step_id
              AND parent_states.most_recent = true
        WHERE dep_edges.to_step_id IN (SELECT ts.workflow_step_id FROM task_steps ts)
        GROUP BY dep_edges.to_step_id
    ),
    last_failures AS (
        SELECT wst.workflow_step_id, wst.created_at AS failure_time
        FROM tasker_workflow_step_transitions wst
        WHERE wst.to_state = 'error'
          AND wst.most_recent = true
          AND wst.workflow_step_id IN (SELECT ts.workflow_step_id FROM task_steps ts)
    )
    SELECT
        ws.workflow_step_id,
        ws.task_id,
        ws.named_step_id,
        ns.name::text,
        COALESCE(ss.to_state, 'pending')::text,
        (dc.total_parents IS NULL OR dc.completed_parents = dc.total_parents),
        (COALESCE(ws.attempts, 0) < COALESCE(ws.retry_limit, 3)),
        (
            COALESCE(ss.to_state, 'pending') IN ('pending', 'error')
            AND (ws.processed = false OR ws.processed IS NULL)
            AND (dc.total_parents IS NULL OR dc.completed_parents = dc.total_parents)
            AND (COALESCE(ws.attempts, 0) < COALESCE(ws.retry_limit, 3))
            AND (COALESCE(ws.retryable, true) = true)
            AND (ws.in_process = false OR ws.in_process IS NULL)
            AND (CASE WHEN ws.backoff_request_seconds IS NOT NULL AND ws.last_attempted_at IS NOT NULL
                      THEN ws.last_attempted_at + (ws.backoff_request_seconds * INTERVAL '1 second') <= NOW()
                      ELSE true END)
            AND (lf.failure_time IS NULL
                 OR lf.failure_time + (LEAST(power(2, COALESCE(ws.attempts, 1)), 30) * INTERVAL '1 second') <= NOW())
        ),
        lf.failure_time,
        CASE WHEN ws.last_attempted_at IS NOT NULL AND ws.backoff_request_seconds IS NOT NULL
             THEN ws.last_attempted_at + (ws.backoff_request_seconds * INTERVAL '1 second')
             WHEN lf.failure_time IS NOT NULL
             THEN lf.failure_time + (LEAST(power(2, COALESCE(ws.attempts, 1)), 30) * INTERVAL '1 second')
             ELSE NULL END,
        COALESCE(dc.total_parents, 0)::integer,
        COALESCE(dc.completed_parents, 0)::integer,
        COALESCE(ws.attempts, 0)::integer,
        COALESCE(ws.retry_limit, 3)::integer,
        ws.backoff_request_seconds,
        ws.last_attempted_at
    FROM tasker_workflow_steps ws
    INNER JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
    LEFT JOIN step_states ss ON ss.workflow_step_id = ws.workflow_step_id
    LEFT JOIN dependency_counts dc ON dc.to_step_id = ws.workflow_step_id
    LEFT JOIN last_failures lf ON lf.workflow_step_id = ws.workflow_step_id
    WHERE ws.task_id = input_task_id
      AND (step_ids IS NULL OR ws.workflow_step_id = ANY(step_ids))
    ORDER BY ws.workflow_step_id;
END;
$$;

-- The batch form is the single form over each task (v02 has no ORDER BY).
CREATE OR REPLACE FUNCTION get_step_readiness_status_batch(input_task_ids bigint[])
RETURNS TABLE (
    workflow_step_id bigint, task_id bigint, named_step_id integer, name text, current_state text,
    dependencies_satisfied boolean, retry_eligible boolean, ready_for_execution boolean,
    last_failure_at timestamp, next_retry_at timestamp, total_parents integer, completed_parents integer,
    attempts integer, retry_limit integer, backoff_request_seconds integer, last_attempted_at timestamp
)
LANGUAGE sql STABLE
AS $$
    SELECT r.*
    FROM unnest(input_task_ids) AS ids(id)
    CROSS JOIN LATERAL get_step_readiness_status(ids.id, NULL) r
$$;
