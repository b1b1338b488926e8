-- Every named task with its namespace: the handler catalog. These tables
-- hold one row per handler version, so they are read whole.
SELECT tn.name AS namespace,
       nt.name,
       nt.version,
       nt.named_task_id,
       nt.description,
       nt.configuration,
       now() AS calculated_at
FROM tasker_named_tasks nt
JOIN tasker_task_namespaces tn ON tn.task_namespace_id = nt.task_namespace_id
ORDER BY tn.name, nt.name, nt.named_task_id
