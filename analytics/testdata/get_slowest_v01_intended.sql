-- Yardstick: get_slowest_tasks_v01 and get_slowest_steps_v01 as Tasker
-- meant them (shared/reference/tasker-facts.md §3.5, §3.6). Tasker's own
-- functions fail on every call (timestamp(6) returned where timestamptz is
-- declared) and multiply the step counts by each step's transition rows;
-- these copies cast the timestamps and count distinct steps. Ties are broken
-- by id, which Tasker leaves unspecified.
CREATE OR REPLACE FUNCTION get_slowest_tasks_v01(
    since_timestamp timestamptz DEFAULT NULL,
    limit_count integer DEFAULT 10,
    namespace_filter text DEFAULT NULL,
    task_name_filter text DEFAULT NULL,
    version_filter text DEFAULT NULL)
RETURNS TABLE (
    task_id bigint, task_name varchar, namespace_name varchar, version varchar,
    duration_seconds numeric, step_count bigint, completed_steps bigint, error_steps bigint,
    created_at timestamptz, completed_at timestamptz, initiator varchar, source_system varchar
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    analysis_start timestamptz;
BEGIN
    analysis_start := COALESCE(since_timestamp, NOW() - INTERVAL '24 hours');
    RETURN QUERY
    WITH task_steps AS (
        SELECT t.task_id, nt.name AS task_name, tn.name AS namespace_name, nt.version,
               t.created_at, t.initiator, t.source_system,
               ws.workflow_step_id, wst.to_state, wst.created_at AS state_at
        FROM tasker_tasks t
        JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
        JOIN tasker_task_namespaces tn ON tn.task_namespace_id = nt.task_namespace_id
        LEFT JOIN tasker_workflow_steps ws ON ws.task_id = t.task_id
        LEFT JOIN tasker_workflow_step_transitions wst
               ON wst.workflow_step_id = ws.workflow_step_id AND wst.most_recent = true
        WHERE t.created_at > analysis_start
          AND (namespace_filter IS NULL OR tn.name = namespace_filter)
          AND (task_name_filter IS NULL OR nt.name = task_name_filter)
          AND (version_filter IS NULL OR nt.version = version_filter)
    ),
    task_durations AS (
        SELECT ts.task_id, ts.task_name, ts.namespace_name, ts.version, ts.created_at,
               ts.initiator, ts.source_system,
               MAX(ts.state_at) FILTER (WHERE ts.to_state IN ('complete', 'error')) AS latest_completion,
               COUNT(DISTINCT ts.workflow_step_id) AS step_count,
               COUNT(DISTINCT ts.workflow_step_id) FILTER (WHERE ts.to_state = 'complete') AS completed_steps,
               COUNT(DISTINCT ts.workflow_step_id) FILTER (WHERE ts.to_state = 'error') AS error_steps
        FROM task_steps ts
        GROUP BY ts.task_id, ts.task_name, ts.namespace_name, ts.version, ts.created_at,
                 ts.initiator, ts.source_system
    )
    SELECT td.task_id, td.task_name, td.namespace_name, td.version,
           ROUND(EXTRACT(EPOCH FROM (td.latest_completion - td.created_at)), 3),
           td.step_count, td.completed_steps, td.error_steps,
           td.created_at::timestamptz, td.latest_completion::timestamptz,
           td.initiator, td.source_system
    FROM task_durations td
    WHERE td.latest_completion IS NOT NULL
    ORDER BY 5 DESC, td.task_id
    LIMIT limit_count;
END;
$$;

CREATE OR REPLACE FUNCTION get_slowest_steps_v01(
    since_timestamp timestamptz DEFAULT NULL,
    limit_count integer DEFAULT 10,
    namespace_filter text DEFAULT NULL,
    task_name_filter text DEFAULT NULL,
    version_filter text DEFAULT NULL)
RETURNS TABLE (
    workflow_step_id bigint, task_id bigint, step_name varchar, task_name varchar,
    namespace_name varchar, version varchar, duration_seconds numeric, attempts integer,
    created_at timestamptz, completed_at timestamptz, retryable boolean, step_status text
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    analysis_start timestamptz;
BEGIN
    analysis_start := COALESCE(since_timestamp, NOW() - INTERVAL '24 hours');
    RETURN QUERY
    SELECT ws.workflow_step_id, ws.task_id, ns.name, nt.name, tn.name, nt.version,
           ROUND(EXTRACT(EPOCH FROM (wst.created_at - ws.created_at)), 3) AS duration,
           ws.attempts, ws.created_at::timestamptz, wst.created_at::timestamptz, ws.retryable,
           'complete'::text
    FROM tasker_workflow_steps ws
    JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
    JOIN tasker_tasks t ON t.task_id = ws.task_id
    JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
    JOIN tasker_task_namespaces tn ON tn.task_namespace_id = nt.task_namespace_id
    JOIN tasker_workflow_step_transitions wst
      ON wst.workflow_step_id = ws.workflow_step_id AND wst.most_recent = true AND wst.to_state = 'complete'
    WHERE ws.created_at > analysis_start
      AND (namespace_filter IS NULL OR tn.name = namespace_filter)
      AND (task_name_filter IS NULL OR nt.name = task_name_filter)
      AND (version_filter IS NULL OR nt.version = version_filter)
      AND EXTRACT(EPOCH FROM (wst.created_at - ws.created_at)) > 0
    ORDER BY duration DESC, ws.workflow_step_id
    LIMIT limit_count;
END;
$$;
