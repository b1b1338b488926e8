-- Yardstick for the performance tests: get_analytics_metrics_v01(since) as
-- described in shared/reference/tasker-facts.md §3.4 (Tasker source
-- db/functions/get_analytics_metrics_v01.sql). Written the straightforward
-- way, with COUNT(DISTINCT ...) over joins of every step to its current
-- transition, so that it shares no structure with the sidecar's per-task
-- aggregation that it checks.
CREATE OR REPLACE FUNCTION get_analytics_metrics_v01(since_timestamp timestamptz DEFAULT NULL)
RETURNS TABLE (
    active_tasks_count bigint,
    total_namespaces_count bigint,
    unique_task_types_count bigint,
    system_health_score numeric,
    task_throughput bigint,
    completion_count bigint,
    error_count bigint,
    completion_rate numeric,
    error_rate numeric,
    avg_task_duration numeric,
    avg_step_duration numeric,
    step_throughput bigint,
    analysis_period_start timestamptz,
    calculated_at timestamptz
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    analysis_start timestamptz;
BEGIN
    analysis_start := COALESCE(since_timestamp, NOW() - INTERVAL '1 hour');

    RETURN QUERY
    WITH active_tasks AS (
        SELECT COUNT(DISTINCT t.task_id) AS active_task_count
        FROM tasker_tasks t
        INNER JOIN tasker_workflow_steps ws ON ws.task_id = t.task_id
        INNER JOIN tasker_workflow_step_transitions wst ON wst.workflow_step_id = ws.workflow_step_id
        WHERE wst.most_recent = true
          AND wst.to_state NOT IN ('complete', 'error', 'skipped', 'resolved_manually')
    ),
    namespace_summary AS (
        SELECT COUNT(DISTINCT tn.name) AS namespace_count
        FROM tasker_task_namespaces tn
        INNER JOIN tasker_named_tasks nt ON nt.task_namespace_id = tn.task_namespace_id
        INNER JOIN tasker_tasks t ON t.named_task_id = nt.named_task_id
    ),
    task_type_summary AS (
        SELECT COUNT(DISTINCT nt.name) AS task_type_count
        FROM tasker_named_tasks nt
        INNER JOIN tasker_tasks t ON t.named_task_id = nt.named_task_id
    ),
    recent_task_health AS (
        SELECT
            COUNT(DISTINCT t.task_id) FILTER (WHERE wst.to_state = 'complete') AS completed_tasks,
            COUNT(DISTINCT t.task_id) FILTER (WHERE wst.to_state = 'error') AS error_tasks
        FROM tasker_tasks t
        LEFT JOIN tasker_workflow_steps ws ON ws.task_id = t.task_id
        LEFT JOIN tasker_workflow_step_transitions wst
               ON wst.workflow_step_id = ws.workflow_step_id AND wst.most_recent = true
        WHERE t.created_at > NOW() - INTERVAL '1 hour'
    ),
    period_metrics AS (
        SELECT
            COUNT(DISTINCT t.task_id) AS task_throughput,
            COUNT(DISTINCT t.task_id) FILTER (WHERE wst.to_state = 'complete') AS completion_count,
            COUNT(DISTINCT t.task_id) FILTER (WHERE wst.to_state = 'error') AS error_count,
            AVG(EXTRACT(EPOCH FROM (wst.created_at - t.created_at)))
                FILTER (WHERE wst.to_state = 'complete') AS avg_task_duration
        FROM tasker_tasks t
        LEFT JOIN tasker_workflow_steps ws ON ws.task_id = t.task_id
        LEFT JOIN tasker_workflow_step_transitions wst
               ON wst.workflow_step_id = ws.workflow_step_id AND wst.most_recent = true
        WHERE t.created_at > analysis_start
    ),
    step_metrics AS (
        SELECT
            COUNT(DISTINCT ws.workflow_step_id) AS step_throughput,
            AVG(EXTRACT(EPOCH FROM (wst.created_at - ws.created_at)))
                FILTER (WHERE wst.to_state = 'complete') AS avg_step_duration
        FROM tasker_workflow_steps ws
        INNER JOIN tasker_tasks t ON t.task_id = ws.task_id
        LEFT JOIN tasker_workflow_step_transitions wst
               ON wst.workflow_step_id = ws.workflow_step_id AND wst.most_recent = true
        WHERE t.created_at > analysis_start
    )
    SELECT
        at.active_task_count,
        ns.namespace_count,
        tts.task_type_count,
        CASE WHEN rth.completed_tasks + rth.error_tasks > 0
             THEN ROUND(rth.completed_tasks::numeric / (rth.completed_tasks + rth.error_tasks), 3)
             ELSE 1.0 END,
        pm.task_throughput,
        pm.completion_count,
        pm.error_count,
        CASE WHEN pm.task_throughput > 0
             THEN ROUND((pm.completion_count::numeric / pm.task_throughput::numeric) * 100, 2)
             ELSE 0.0 END,
        CASE WHEN pm.task_throughput > 0
             THEN ROUND((pm.error_count::numeric / pm.task_throughput::numeric) * 100, 2)
             ELSE 0.0 END,
        COALESCE(ROUND(pm.avg_task_duration, 3), 0),
        COALESCE(ROUND(sm.avg_step_duration, 3), 0),
        sm.step_throughput,
        analysis_start,
        NOW()
    FROM active_tasks at
    CROSS JOIN namespace_summary ns
    CROSS JOIN task_type_summary tts
    CROSS JOIN recent_task_health rth
    CROSS JOIN period_metrics pm
    CROSS JOIN step_metrics sm;
END;
$$;
