-- The tasks of $1 (uuid[]) on tasker-core with their current state
-- (get_task_execution_context's task_info), ordered by task uuid; a
-- primary-key probe and a most_recent index probe per task.
SELECT t.task_uuid::text,
       t.named_task_uuid::text,
       COALESCE(tt.to_state, 'pending')::text AS status,
       now() AS calculated_at
FROM tasker.tasks t
LEFT JOIN tasker.task_transitions tt
       ON tt.task_uuid = t.task_uuid AND tt.most_recent
WHERE t.task_uuid = ANY ($1::uuid[])
ORDER BY t.task_uuid
