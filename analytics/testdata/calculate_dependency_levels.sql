-- Yardstick: calculate_dependency_levels(task_id) as described in
-- shared/reference/tasker-facts.md §3.7 (Tasker source
-- db/functions/calculate_dependency_levels_v01.sql): a recursive walk from
-- the roots, longest distance wins. Like Tasker's, it never ends on a cycle
-- reachable from a root; the tests only give it acyclic graphs.
CREATE OR REPLACE FUNCTION calculate_dependency_levels(input_task_id bigint)
RETURNS TABLE (workflow_step_id bigint, dependency_level integer)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE dependency_levels AS (
        SELECT ws.workflow_step_id, 0 AS level
        FROM tasker_workflow_steps ws
        WHERE ws.task_id = input_task_id
          AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges wse WHERE wse.to_step_id = ws.workflow_step_id)
        UNION ALL
        SELECT wse.to_step_id, dl.level + 1
        FROM dependency_levels dl
        JOIN tasker_workflow_step_edges wse ON wse.from_step_id = dl.workflow_step_id
    )
    SELECT dl.workflow_step_id, MAX(dl.level)::integer
    FROM dependency_levels dl
    GROUP BY dl.workflow_step_id
    ORDER BY MAX(dl.level), dl.workflow_step_id;
END;
$$;
