-- Step readiness, get_step_readiness_status v02 semantics, for the steps of
-- the tasks in $1 (bigint[]). One row per step whose named step exists.
--
-- Steps come through index_workflow_steps_by_task; current states and the
-- parents' states through the unique partial most_recent index; incoming
-- edges through idx_step_edges_to_from.
SELECT ws.workflow_step_id,
       ws.task_id,
       ws.named_step_id,
       ns.name::text,
       COALESCE(cur.to_state, 'pending')::text AS current_state,
       (dep.total_parents = 0 OR dep.completed_parents = dep.total_parents) AS dependencies_satisfied,
       COALESCE(ws.attempts, 0) < COALESCE(ws.retry_limit, 3) AS retry_eligible,
       (COALESCE(cur.to_state, 'pending') IN ('pending', 'error')
        AND (ws.processed = false OR ws.processed IS NULL)
        AND (dep.total_parents = 0 OR dep.completed_parents = dep.total_parents)
        AND COALESCE(ws.attempts, 0) < COALESCE(ws.retry_limit, 3)
        AND COALESCE(ws.retryable, true) = true
        AND (ws.in_process = false OR ws.in_process IS NULL)
        AND (ws.backoff_request_seconds IS NULL OR ws.last_attempted_at IS NULL
             OR ws.last_attempted_at + ws.backoff_request_seconds * interval '1 second' <= now())
        AND (fail.at IS NULL OR fail.at + fail.backoff <= now())) AS ready_for_execution,
       fail.at AS last_failure_at,
       CASE WHEN ws.last_attempted_at IS NOT NULL AND ws.backoff_request_seconds IS NOT NULL
            THEN ws.last_attempted_at + ws.backoff_request_seconds * interval '1 second'
            WHEN fail.at IS NOT NULL
            THEN fail.at + fail.backoff
       END AS next_retry_at,
       dep.total_parents::integer,
       dep.completed_parents::integer,
       COALESCE(ws.attempts, 0) AS attempts,
       COALESCE(ws.retry_limit, 3) AS retry_limit,
       ws.backoff_request_seconds,
       ws.last_attempted_at,
       -- Not part of Tasker's row; the graph analysis needs them.
       COALESCE(ws.retryable, true) AS retryable,
       COALESCE(ws.processed, false) AS processed,
       COALESCE(ws.in_process, false) AS in_process
FROM tasker_workflow_steps ws
JOIN tasker_named_steps ns
  ON ns.named_step_id = ws.named_step_id
LEFT JOIN tasker_workflow_step_transitions cur
       ON cur.workflow_step_id = ws.workflow_step_id AND cur.most_recent
CROSS JOIN LATERAL (
    SELECT count(*) AS total_parents,
           count(*) FILTER (WHERE pc.to_state IN ('complete', 'resolved_manually')) AS completed_parents
    FROM tasker_workflow_step_edges e
    LEFT JOIN tasker_workflow_step_transitions pc
           ON pc.workflow_step_id = e.from_step_id AND pc.most_recent
    WHERE e.to_step_id = ws.workflow_step_id
) dep
-- The failure backoff is min(2^attempts, 30) s with attempts coalesced to 1;
-- capping the exponent first gives the same value without overflowing
-- power() on absurd attempt counts.
CROSS JOIN LATERAL (
    SELECT CASE WHEN cur.to_state = 'error' THEN cur.created_at END AS at,
           LEAST(power(2, LEAST(COALESCE(ws.attempts, 1), 10)), 30) * interval '1 second' AS backoff
) fail
WHERE ws.task_id = ANY ($1::bigint[])
ORDER BY ws.task_id, ws.workflow_step_id
