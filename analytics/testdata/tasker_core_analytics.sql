-- Yardsticks for the sidecar's tasker-core analytics: functions with the
-- signatures, columns and semantics of tasker-core's
-- get_analytics_metrics(since), get_system_health_counts()
-- (migrations/20260110000003_sql_functions.sql) and
-- get_slowest_steps_aggregated / get_slowest_tasks_aggregated
-- (migrations/20260125000001_analytics_aggregated_functions.sql) in
-- tasker-systems/tasker-core, written for the tests rather than copied.
-- They keep the engine's query shapes (every step joined to its
-- transitions, COUNT(DISTINCT ...), AVG over the join rows), which the
-- sidecar's per-task aggregation does not share. They live in schema
-- yardstick, names schema-qualified, so that the tasker schema the sidecar
-- reads holds no function it could call by mistake.
CREATE SCHEMA IF NOT EXISTS yardstick;

CREATE OR REPLACE FUNCTION yardstick.get_analytics_metrics(since_timestamp timestamptz DEFAULT NULL)
RETURNS TABLE(
    active_tasks_count bigint, total_namespaces_count bigint, unique_task_types_count bigint,
    system_health_score numeric, task_throughput bigint, completion_count bigint, error_count bigint,
    completion_rate numeric, error_rate numeric, avg_task_duration numeric, avg_step_duration numeric,
    step_throughput bigint, analysis_period_start timestamptz, calculated_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    win_start timestamptz := COALESCE(since_timestamp, NOW() - INTERVAL '1 hour');
BEGIN
    RETURN QUERY
    WITH a AS (
        SELECT COUNT(DISTINCT t.task_uuid) AS n
        FROM tasker.tasks t
        JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
        JOIN tasker.workflow_step_transitions x ON x.workflow_step_uuid = ws.workflow_step_uuid
        WHERE x.most_recent AND x.to_state NOT IN ('complete', 'error', 'skipped', 'resolved_manually')
    ), ns AS (
        SELECT COUNT(DISTINCT n.name) AS n
        FROM tasker.task_namespaces n
        JOIN tasker.named_tasks nt ON nt.task_namespace_uuid = n.task_namespace_uuid
        JOIN tasker.tasks t ON t.named_task_uuid = nt.named_task_uuid
    ), tt AS (
        SELECT COUNT(DISTINCT nt.name) AS n
        FROM tasker.named_tasks nt JOIN tasker.tasks t ON t.named_task_uuid = nt.named_task_uuid
    ), h AS (
        SELECT COUNT(DISTINCT t.task_uuid) FILTER (WHERE x.to_state = 'complete' AND x.most_recent) AS ok,
               COUNT(DISTINCT t.task_uuid) FILTER (WHERE x.to_state = 'error' AND x.most_recent) AS bad
        FROM tasker.tasks t
        JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
        JOIN tasker.workflow_step_transitions x ON x.workflow_step_uuid = ws.workflow_step_uuid
        WHERE t.created_at > NOW() - INTERVAL '1 hour'
    ), p AS (
        SELECT COUNT(DISTINCT t.task_uuid) AS thr,
               COUNT(DISTINCT t.task_uuid) FILTER (WHERE c.to_state = 'complete' AND c.most_recent) AS done,
               COUNT(DISTINCT t.task_uuid) FILTER (WHERE e.to_state = 'error' AND e.most_recent) AS failed,
               COUNT(DISTINCT ws.workflow_step_uuid) AS steps,
               AVG(CASE WHEN c.to_state = 'complete' AND c.most_recent
                        THEN EXTRACT(EPOCH FROM (c.created_at - t.created_at)) END) AS task_s,
               AVG(CASE WHEN sc.to_state = 'complete' AND sc.most_recent
                        THEN EXTRACT(EPOCH FROM (sc.created_at - ws.created_at)) END) AS step_s
        FROM tasker.tasks t
        LEFT JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
        LEFT JOIN tasker.workflow_step_transitions c ON c.workflow_step_uuid = ws.workflow_step_uuid
             AND c.to_state = 'complete' AND c.most_recent
        LEFT JOIN tasker.workflow_step_transitions e ON e.workflow_step_uuid = ws.workflow_step_uuid
             AND e.to_state = 'error' AND e.most_recent
        LEFT JOIN tasker.workflow_step_transitions sc ON sc.workflow_step_uuid = ws.workflow_step_uuid
             AND sc.to_state = 'complete' AND sc.most_recent
        WHERE t.created_at > win_start
    )
    SELECT a.n, ns.n, tt.n,
           CASE WHEN (h.ok + h.bad) > 0 THEN ROUND((h.ok::NUMERIC / (h.ok + h.bad)), 3) ELSE 1.0 END,
           p.thr, p.done, p.failed,
           CASE WHEN p.thr > 0 THEN ROUND((p.done::NUMERIC / p.thr * 100), 2) ELSE 0.0 END,
           CASE WHEN p.thr > 0 THEN ROUND((p.failed::NUMERIC / p.thr * 100), 2) ELSE 0.0 END,
           ROUND(COALESCE(p.task_s, 0), 3),
           ROUND(COALESCE(p.step_s, 0), 3),
           p.steps, win_start, NOW()
    FROM a, ns, tt, h, p;
END;
$$;

CREATE OR REPLACE FUNCTION yardstick.get_system_health_counts()
RETURNS TABLE(
    pending_tasks bigint, initializing_tasks bigint, enqueuing_steps_tasks bigint, steps_in_process_tasks bigint,
    evaluating_results_tasks bigint, waiting_for_dependencies_tasks bigint, waiting_for_retry_tasks bigint,
    blocked_by_failures_tasks bigint, complete_tasks bigint, error_tasks bigint, cancelled_tasks bigint,
    resolved_manually_tasks bigint, total_tasks bigint,
    pending_steps bigint, enqueued_steps bigint, in_progress_steps bigint, enqueued_for_orchestration_steps bigint,
    enqueued_as_error_for_orchestration_steps bigint, waiting_for_retry_steps bigint, complete_steps bigint,
    error_steps bigint, cancelled_steps bigint, resolved_manually_steps bigint, total_steps bigint)
LANGUAGE sql STABLE AS $$
    SELECT tc.*, sc.* FROM
    (SELECT COUNT(*) FILTER (WHERE x.to_state = 'pending'), COUNT(*) FILTER (WHERE x.to_state = 'initializing'),
            COUNT(*) FILTER (WHERE x.to_state = 'enqueuing_steps'), COUNT(*) FILTER (WHERE x.to_state = 'steps_in_process'),
            COUNT(*) FILTER (WHERE x.to_state = 'evaluating_results'), COUNT(*) FILTER (WHERE x.to_state = 'waiting_for_dependencies'),
            COUNT(*) FILTER (WHERE x.to_state = 'waiting_for_retry'), COUNT(*) FILTER (WHERE x.to_state = 'blocked_by_failures'),
            COUNT(*) FILTER (WHERE x.to_state = 'complete'), COUNT(*) FILTER (WHERE x.to_state = 'error'),
            COUNT(*) FILTER (WHERE x.to_state = 'cancelled'), COUNT(*) FILTER (WHERE x.to_state = 'resolved_manually'),
            COUNT(*)
       FROM tasker.tasks t LEFT JOIN tasker.task_transitions x ON x.task_uuid = t.task_uuid AND x.most_recent) tc,
    (SELECT COUNT(*) FILTER (WHERE x.to_state = 'pending'), COUNT(*) FILTER (WHERE x.to_state = 'enqueued'),
            COUNT(*) FILTER (WHERE x.to_state = 'in_progress'), COUNT(*) FILTER (WHERE x.to_state = 'enqueued_for_orchestration'),
            COUNT(*) FILTER (WHERE x.to_state = 'enqueued_as_error_for_orchestration'), COUNT(*) FILTER (WHERE x.to_state = 'waiting_for_retry'),
            COUNT(*) FILTER (WHERE x.to_state = 'complete'), COUNT(*) FILTER (WHERE x.to_state = 'error'),
            COUNT(*) FILTER (WHERE x.to_state = 'cancelled'), COUNT(*) FILTER (WHERE x.to_state = 'resolved_manually'),
            COUNT(*)
       FROM tasker.workflow_steps s LEFT JOIN tasker.workflow_step_transitions x
         ON x.workflow_step_uuid = s.workflow_step_uuid AND x.most_recent) sc
$$;

CREATE OR REPLACE FUNCTION yardstick.get_slowest_steps_aggregated(
    since_timestamp timestamptz DEFAULT NULL, limit_count integer DEFAULT 10, min_executions integer DEFAULT 5,
    namespace_filter text DEFAULT NULL, task_name_filter text DEFAULT NULL, version_filter text DEFAULT NULL)
RETURNS TABLE(
    namespace_name varchar, task_name varchar, version varchar, step_name varchar,
    average_duration_seconds numeric, max_duration_seconds numeric, execution_count bigint, error_count bigint,
    error_rate numeric, last_executed_at timestamp)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    win_start timestamptz := COALESCE(since_timestamp, NOW() - INTERVAL '24 hours');
BEGIN
    RETURN QUERY
    WITH r AS (
        SELECT n.name AS a, nt.name AS b, nt.version AS c, s.name AS d,
               EXTRACT(EPOCH FROM (x.created_at - ws.created_at)) AS secs,
               x.to_state AS st, x.created_at AS at
        FROM tasker.workflow_steps ws
        JOIN tasker.named_steps s ON s.named_step_uuid = ws.named_step_uuid
        JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
        JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
        JOIN tasker.task_namespaces n ON n.task_namespace_uuid = nt.task_namespace_uuid
        JOIN tasker.workflow_step_transitions x ON x.workflow_step_uuid = ws.workflow_step_uuid
        WHERE ws.created_at > win_start AND x.most_recent AND x.to_state IN ('complete', 'error')
          AND (namespace_filter IS NULL OR n.name = namespace_filter)
          AND (task_name_filter IS NULL OR nt.name = task_name_filter)
          AND (version_filter IS NULL OR nt.version = version_filter)
    )
    SELECT r.a::varchar, r.b::varchar, r.c::varchar, r.d::varchar,
           ROUND(AVG(r.secs), 3), ROUND(MAX(r.secs), 3), COUNT(*),
           COUNT(*) FILTER (WHERE r.st = 'error'),
           ROUND(COUNT(*) FILTER (WHERE r.st = 'error')::numeric / NULLIF(COUNT(*), 0)::numeric, 4),
           MAX(r.at)
    FROM r
    WHERE r.secs IS NOT NULL AND r.secs > 0
    GROUP BY r.a, r.b, r.c, r.d
    HAVING COUNT(*) >= min_executions
    ORDER BY AVG(r.secs) DESC
    LIMIT limit_count;
END;
$$;

CREATE OR REPLACE FUNCTION yardstick.get_slowest_tasks_aggregated(
    since_timestamp timestamptz DEFAULT NULL, limit_count integer DEFAULT 10, min_executions integer DEFAULT 5,
    namespace_filter text DEFAULT NULL, task_name_filter text DEFAULT NULL, version_filter text DEFAULT NULL)
RETURNS TABLE(
    namespace_name varchar, task_name varchar, version varchar,
    average_duration_seconds numeric, max_duration_seconds numeric, execution_count bigint,
    average_step_count numeric, total_error_steps bigint, error_rate numeric, last_executed_at timestamp)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    win_start timestamptz := COALESCE(since_timestamp, NOW() - INTERVAL '24 hours');
BEGIN
    RETURN QUERY
    WITH per AS (
        SELECT n.name AS a, nt.name AS b, nt.version AS c, t.task_uuid, t.created_at,
               MAX(x.created_at) FILTER (WHERE x.to_state IN ('complete', 'error') AND x.most_recent) AS last_done,
               COUNT(DISTINCT ws.workflow_step_uuid) AS steps,
               COUNT(DISTINCT ws.workflow_step_uuid) FILTER (WHERE x.to_state = 'error' AND x.most_recent) AS bad
        FROM tasker.tasks t
        JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
        JOIN tasker.task_namespaces n ON n.task_namespace_uuid = nt.task_namespace_uuid
        LEFT JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
        LEFT JOIN tasker.workflow_step_transitions x ON x.workflow_step_uuid = ws.workflow_step_uuid
        WHERE t.created_at > win_start
          AND (namespace_filter IS NULL OR n.name = namespace_filter)
          AND (task_name_filter IS NULL OR nt.name = task_name_filter)
          AND (version_filter IS NULL OR nt.version = version_filter)
        GROUP BY t.task_uuid, n.name, nt.name, nt.version, t.created_at
        HAVING MAX(x.created_at) FILTER (WHERE x.to_state IN ('complete', 'error') AND x.most_recent) IS NOT NULL
    ), d AS (
        SELECT per.a, per.b, per.c, EXTRACT(EPOCH FROM (per.last_done - per.created_at)) AS secs,
               per.steps, per.bad, per.last_done
        FROM per WHERE EXTRACT(EPOCH FROM (per.last_done - per.created_at)) > 0
    )
    SELECT d.a::varchar, d.b::varchar, d.c::varchar,
           ROUND(AVG(d.secs), 3), ROUND(MAX(d.secs), 3), COUNT(*),
           ROUND(AVG(d.steps), 2), SUM(d.bad)::bigint,
           ROUND(SUM(d.bad)::numeric / NULLIF(COUNT(*), 0)::numeric, 4),
           MAX(d.last_done)
    FROM d
    GROUP BY d.a, d.b, d.c
    HAVING COUNT(*) >= min_executions
    ORDER BY AVG(d.secs) DESC
    LIMIT limit_count;
END;
$$;
