-- One tasker-core handler version ($1 = named_task_uuid): its step
-- templates (named_tasks_named_steps) and the dependency edges of its most
-- recent task, by step name. As on Rails, named tasks carry no edges of
-- their own; a task's edges are what its template declared.
--
-- "Most recent" is the greatest task_uuid: the engine's uuids are version 7,
-- ordered by creation time. It is looked for among the newest 10000 tasks
-- first (a backward scan of the primary key that stops early), then through
-- idx_tasks_named_task_uuid for a handler that has not run lately (uuid has
-- no max() in PostgreSQL 15, hence ORDER BY ... LIMIT 1).
WITH recent AS (
    SELECT r.task_uuid
    FROM (SELECT task_uuid, named_task_uuid FROM tasker.tasks ORDER BY task_uuid DESC LIMIT 10000) r
    WHERE r.named_task_uuid = $1::uuid
    ORDER BY r.task_uuid DESC
    LIMIT 1
),
latest AS (
    SELECT COALESCE((SELECT task_uuid FROM recent),
                    (SELECT task_uuid FROM tasker.tasks WHERE named_task_uuid = $1::uuid
                     ORDER BY task_uuid DESC LIMIT 1)) AS task_uuid
)
SELECT 'template' AS kind, ns.name::text AS step, ns.description::text, ntns.default_retryable,
       ntns.default_max_attempts, NULL::text AS child, (SELECT task_uuid::text FROM latest) AS task_uuid,
       ntns.created_at, ntns.ntns_uuid::text AS ord
FROM tasker.named_tasks_named_steps ntns
JOIN tasker.named_steps ns ON ns.named_step_uuid = ntns.named_step_uuid
WHERE ntns.named_task_uuid = $1::uuid
UNION ALL
SELECT 'edge', pns.name::text, NULL, NULL, NULL, cns.name::text, ws.task_uuid::text, e.created_at,
       e.workflow_step_edge_uuid::text
FROM tasker.workflow_steps ws
JOIN tasker.workflow_step_edges e ON e.to_step_uuid = ws.workflow_step_uuid
JOIN tasker.workflow_steps pws ON pws.workflow_step_uuid = e.from_step_uuid
JOIN tasker.named_steps pns ON pns.named_step_uuid = pws.named_step_uuid
JOIN tasker.named_steps cns ON cns.named_step_uuid = ws.named_step_uuid
WHERE ws.task_uuid = (SELECT task_uuid FROM latest)
UNION ALL
SELECT 'step', ns.name::text, NULL, NULL, NULL, NULL, ws.task_uuid::text, ws.created_at, ws.workflow_step_uuid::text
FROM tasker.workflow_steps ws
JOIN tasker.named_steps ns ON ns.named_step_uuid = ws.named_step_uuid
WHERE ws.task_uuid = (SELECT task_uuid FROM latest)
ORDER BY 1, 8, 9
