-- tasker-core's get_slowest_tasks_aggregated(since, limit, min_executions)
-- without filters (migrations/20260125000001_analytics_aggregated_functions.sql),
-- from the tables in schema tasker. $1 since (NULL: 24 hours before now()),
-- $2 limit, $3 min_executions. Per (namespace, task, version): the tasks
-- created after since that have a step whose current state is complete or
-- error, each lasting from its creation to the latest such transition
-- (only positive durations count). The engine's step count is every step
-- of the task, and its error_rate is error steps per task, not a share.
WITH te AS (
    SELECT tn.name AS ns_name, nt.name AS t_name, nt.version AS t_version, t.created_at,
           max(cur.created_at) FILTER (WHERE cur.to_state IN ('complete', 'error')) AS latest_completion,
           count(ws.workflow_step_uuid) AS step_count,
           count(*) FILTER (WHERE cur.to_state = 'error') AS error_steps
    FROM tasker.tasks t
    JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
    JOIN tasker.task_namespaces tn ON tn.task_namespace_uuid = nt.task_namespace_uuid
    LEFT JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
    LEFT JOIN tasker.workflow_step_transitions cur
           ON cur.workflow_step_uuid = ws.workflow_step_uuid AND cur.most_recent
    WHERE t.created_at > COALESCE($1::timestamptz, now() - interval '24 hours')
    GROUP BY t.task_uuid, tn.name, nt.name, nt.version, t.created_at
),
td AS (
    SELECT ns_name, t_name, t_version, step_count, error_steps, latest_completion,
           extract(epoch FROM latest_completion - created_at) AS duration_seconds
    FROM te
    WHERE latest_completion IS NOT NULL
)
SELECT ns_name, t_name, t_version,
       round(avg(duration_seconds), 3)::text,
       round(max(duration_seconds), 3)::text,
       count(*),
       round(avg(step_count), 2)::text,
       sum(error_steps)::bigint,
       round(sum(error_steps)::numeric / NULLIF(count(*), 0)::numeric, 4)::text,
       max(latest_completion)
FROM td
WHERE duration_seconds > 0
GROUP BY ns_name, t_name, t_version
HAVING count(*) >= $3::int
ORDER BY avg(duration_seconds) DESC, ns_name, t_name, t_version
LIMIT $2::int
