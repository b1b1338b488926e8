-- tasker-core's get_slowest_steps_aggregated(since, limit, min_executions)
-- without filters (migrations/20260125000001_analytics_aggregated_functions.sql),
-- from the tables in schema tasker. $1 since (NULL: 24 hours before now()),
-- $2 limit, $3 min_executions. Per (namespace, task, version, step name):
-- the steps created after since whose current state is complete or error,
-- each lasting from the step's creation to that transition (only positive
-- durations count). The engine orders by the average only; ties here
-- follow the group's names so that a page is stable.
WITH se AS (
    SELECT tn.name AS ns_name, nt.name AS t_name, nt.version AS t_version, nst.name AS s_name,
           extract(epoch FROM cur.created_at - ws.created_at) AS duration_seconds,
           cur.to_state AS final_state,
           cur.created_at AS completed_at
    FROM tasker.workflow_steps ws
    JOIN tasker.workflow_step_transitions cur
      ON cur.workflow_step_uuid = ws.workflow_step_uuid AND cur.most_recent
     AND cur.to_state IN ('complete', 'error')
    JOIN tasker.named_steps nst ON nst.named_step_uuid = ws.named_step_uuid
    JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
    JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
    JOIN tasker.task_namespaces tn ON tn.task_namespace_uuid = nt.task_namespace_uuid
    WHERE ws.created_at > COALESCE($1::timestamptz, now() - interval '24 hours')
)
SELECT ns_name, t_name, t_version, s_name,
       round(avg(duration_seconds), 3)::text,
       round(max(duration_seconds), 3)::text,
       count(*),
       count(*) FILTER (WHERE final_state = 'error'),
       round(count(*) FILTER (WHERE final_state = 'error')::numeric / NULLIF(count(*), 0)::numeric, 4)::text,
       max(completed_at)
FROM se
WHERE duration_seconds > 0
GROUP BY ns_name, t_name, t_version, s_name
HAVING count(*) >= $3::int
ORDER BY avg(duration_seconds) DESC, ns_name, t_name, t_version, s_name
LIMIT $2::int
