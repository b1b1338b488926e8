-- tasker-core's handler catalog: every named task with its namespace. One
-- row per handler version, so the tables are read whole.
SELECT tn.name::text AS namespace,
       nt.name::text,
       nt.version::text,
       nt.named_task_uuid::text,
       nt.description::text,
       nt.configuration,
       nt.identity_strategy::text,
       now() AS calculated_at
FROM tasker.named_tasks nt
JOIN tasker.task_namespaces tn ON tn.task_namespace_uuid = nt.task_namespace_uuid
ORDER BY tn.name, nt.name, nt.named_task_uuid
