-- The tasks of $1 (bigint[]) with their current state, and the edges that
-- end at their steps (idx_step_edges_to_from), for the context and the
-- graph analysis. Two result sets would need two round trips; the edges are
-- returned as one array per task.
SELECT t.task_id,
       t.named_task_id,
       COALESCE(tt.to_state, 'pending')::text AS status,
       COALESCE((SELECT array_agg(ARRAY[e.from_step_id, e.to_step_id] ORDER BY e.id)
                   FROM tasker_workflow_steps ws
                   JOIN tasker_workflow_step_edges e ON e.to_step_id = ws.workflow_step_id
                  WHERE ws.task_id = t.task_id), '{}') AS edges,
       now() AS calculated_at
FROM tasker_tasks t
LEFT JOIN tasker_task_transitions tt
       ON tt.task_id = t.task_id AND tt.most_recent
WHERE t.task_id = ANY ($1::bigint[])
ORDER BY t.task_id
