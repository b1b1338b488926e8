-- Step readiness on tasker-core: the columns and values of
-- tasker.get_step_readiness_status_batch($1, NULL)
-- (migrations/20260110000003_sql_functions.sql), computed by the sidecar
-- for the steps of the tasks in $1 (uuid[]), ordered by task and step uuid
-- as the engine orders them. Everything is an index probe: steps through
-- the task_uuid index, current states through the unique partial
-- most_recent index, incoming edges through to_step_uuid, the last error
-- through the (workflow_step_uuid, ...) transition index.
--
-- Engine semantics kept (docs/tasker-semantics.md, "tasker-core analytics"):
--   * retry_eligible: attempts = 0, or retryable and attempts < max_attempts
--     (both coalesced: attempts 0, retryable true, max_attempts 3);
--   * last_failure_at is the newest 'error' transition of the step, whatever
--     its current state;
--   * next_retry_at (calculate_step_next_retry_time): last_attempted_at +
--     backoff_request_seconds when both are set, else last_failure_at +
--     min(2^COALESCE(attempts, 1), 60) s; the exponent is capped at 10 first
--     (2^10 s is already past the cap) so absurd counts cannot overflow;
--   * ready (evaluate_step_state_readiness): pending or waiting_for_retry,
--     not processed, not in process, dependencies complete, retry eligible,
--     next retry time passed or absent.
SELECT ws.workflow_step_uuid::text,
       ws.task_uuid::text,
       ws.named_step_uuid::text,
       ns.name::text,
       COALESCE(cur.to_state, 'pending')::text AS current_state,
       (dep.total_parents = dep.completed_parents) AS dependencies_satisfied,
       f.retry_eligible,
       (COALESCE(cur.to_state, 'pending') IN ('pending', 'waiting_for_retry')
        AND (ws.processed = false OR ws.processed IS NULL)
        AND (ws.in_process = false OR ws.in_process IS NULL)
        AND dep.total_parents = dep.completed_parents
        AND f.retry_eligible
        AND (nr.at IS NULL OR nr.at <= now())) AS ready_for_execution,
       fail.at AS last_failure_at,
       nr.at AS next_retry_at,
       dep.total_parents::integer,
       dep.completed_parents::integer,
       COALESCE(ws.attempts, 0)::integer AS attempts,
       COALESCE(ws.max_attempts, 3)::integer AS max_attempts,
       ws.backoff_request_seconds,
       ws.last_attempted_at
FROM tasker.workflow_steps ws
JOIN tasker.named_steps ns
  ON ns.named_step_uuid = ws.named_step_uuid
LEFT JOIN tasker.workflow_step_transitions cur
       ON cur.workflow_step_uuid = ws.workflow_step_uuid AND cur.most_recent
CROSS JOIN LATERAL (
    SELECT count(*) AS total_parents,
           count(*) FILTER (WHERE pc.to_state IN ('complete', 'resolved_manually')) AS completed_parents
    FROM tasker.workflow_step_edges e
    LEFT JOIN tasker.workflow_step_transitions pc
           ON pc.workflow_step_uuid = e.from_step_uuid AND pc.most_recent
    WHERE e.to_step_uuid = ws.workflow_step_uuid
) dep
CROSS JOIN LATERAL (
    SELECT max(x.created_at) AS at
    FROM tasker.workflow_step_transitions x
    WHERE x.workflow_step_uuid = ws.workflow_step_uuid AND x.to_state = 'error'
) fail
CROSS JOIN LATERAL (
    SELECT (COALESCE(ws.attempts, 0) = 0
            OR (COALESCE(ws.retryable, true) AND COALESCE(ws.attempts, 0) < COALESCE(ws.max_attempts, 3))) AS retry_eligible
) f
CROSS JOIN LATERAL (
    SELECT CASE WHEN ws.backoff_request_seconds IS NOT NULL AND ws.last_attempted_at IS NOT NULL
                THEN ws.last_attempted_at + ws.backoff_request_seconds * interval '1 second'
                WHEN fail.at IS NOT NULL
                THEN fail.at + LEAST(power(2.0, LEAST(COALESCE(ws.attempts, 1), 10)) * interval '1 second',
                                     interval '60 seconds')
           END AS at
) nr
WHERE ws.task_uuid = ANY ($1::uuid[])
ORDER BY ws.task_uuid, ws.workflow_step_uuid
