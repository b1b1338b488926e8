-- All-time figures of get_analytics_metrics_v01's system overview.
--
-- active_tasks: the steps whose current state is not one of Tasker's
-- finished states are a small minority, found with an index-only scan of
-- idx_step_transitions_current_state (which carries to_state); each one's task
-- is then one primary-key probe. The planner misjudges the NOT IN filter
-- and would merge-join the whole steps table instead, hence the scalar
-- subquery.
-- Namespaces and task types: a semi-join probe of tasks_named_task_id_index
-- per named task, instead of reading the tasks.
SELECT
    (SELECT count(DISTINCT (SELECT ws.task_id FROM tasker_workflow_steps ws
                             WHERE ws.workflow_step_id = cur.workflow_step_id))
       FROM tasker_workflow_step_transitions cur
      WHERE cur.most_recent
        AND cur.to_state NOT IN ('complete', 'error', 'skipped', 'resolved_manually')) AS active_tasks,
    (SELECT count(DISTINCT tn.name)
       FROM tasker_task_namespaces tn
       JOIN tasker_named_tasks nt ON nt.task_namespace_id = tn.task_namespace_id
      WHERE EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.named_task_id = nt.named_task_id)) AS total_namespaces,
    (SELECT count(DISTINCT nt.name)
       FROM tasker_named_tasks nt
      WHERE EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.named_task_id = nt.named_task_id)) AS unique_task_types,
    now() AS calculated_at
