-- One handler version ($1 = named_task_id): its step templates and the
-- dependency edges of its most recent task, by step name. Named tasks carry
-- no edges of their own; a task's edges are what the handler declared when
-- the task was created.
--
-- The most recent task is looked for among the newest 10000 tasks first
-- (a backward scan of the primary key that stops early), then, for a
-- handler that has not run lately, through tasks_named_task_id_index
-- ("task_id + 0" keeps the planner from answering max() with a backward
-- primary-key scan that reads the whole table when the handler never ran).
WITH recent AS (
    SELECT r.task_id
    FROM (SELECT task_id, named_task_id FROM tasker_tasks ORDER BY task_id DESC LIMIT 10000) r
    WHERE r.named_task_id = $1
    ORDER BY r.task_id DESC
    LIMIT 1
),
latest AS (
    SELECT COALESCE((SELECT task_id FROM recent),
                    (SELECT max(task_id + 0) FROM tasker_tasks WHERE named_task_id = $1)) AS task_id
)
SELECT 'template' AS kind, ntns.id AS ord, ns.name AS step, ds.name AS system, ns.description,
       ntns.default_retryable, ntns.default_retry_limit, ntns.skippable, NULL::text AS child,
       (SELECT task_id FROM latest) AS task_id
FROM tasker_named_tasks_named_steps ntns
JOIN tasker_named_steps ns ON ns.named_step_id = ntns.named_step_id
JOIN tasker_dependent_systems ds ON ds.dependent_system_id = ns.dependent_system_id
WHERE ntns.named_task_id = $1
UNION ALL
SELECT 'edge', e.id, pns.name, NULL, NULL, NULL, NULL, NULL, cns.name, ws.task_id
FROM tasker_workflow_steps ws
JOIN tasker_workflow_step_edges e ON e.to_step_id = ws.workflow_step_id
JOIN tasker_workflow_steps pws ON pws.workflow_step_id = e.from_step_id
JOIN tasker_named_steps pns ON pns.named_step_id = pws.named_step_id
JOIN tasker_named_steps cns ON cns.named_step_id = ws.named_step_id
WHERE ws.task_id = (SELECT task_id FROM latest)
UNION ALL
SELECT 'step', ws.workflow_step_id, ns.name, NULL, NULL, NULL, NULL, NULL, NULL, ws.task_id
FROM tasker_workflow_steps ws
JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
WHERE ws.task_id = (SELECT task_id FROM latest)
ORDER BY 1, 2
