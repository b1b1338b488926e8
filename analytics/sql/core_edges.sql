-- The edges that end at the steps of the tasker-core tasks in $1 (uuid[]),
-- for the graph analysis: steps through the task_uuid index, edges through
-- idx_workflow_step_edges_to_step. Ordered by task, then edge uuid
-- (creation order), as Rails' task_graph.sql orders by edge id.
SELECT ws.task_uuid::text,
       e.from_step_uuid::text,
       e.to_step_uuid::text
FROM tasker.workflow_steps ws
JOIN tasker.workflow_step_edges e
  ON e.to_step_uuid = ws.workflow_step_uuid
WHERE ws.task_uuid = ANY ($1::uuid[])
ORDER BY ws.task_uuid, e.workflow_step_edge_uuid
