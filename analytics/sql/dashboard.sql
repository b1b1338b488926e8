-- Dashboard gauges per (namespace, task name), versions merged: tasks
-- created in the last $1 (interval) by their current state with the run time
-- percentiles of the complete ones, and the current readiness of unfinished
-- steps. Pairs beyond the $2 most active are summed into ('other', 'other'),
-- in SQL, so that the other group's percentiles are real percentiles.
--
-- Recent tasks come through idx_tasks_completion_status_created (see
-- performance.sql). Step gauges cover the unprocessed steps of active tasks
-- (state pending or in_progress, or no transition yet): the engine runs
-- nothing of a failed or cancelled task until someone retries it, and such
-- tasks accumulate forever. Active tasks are found through the partial index
-- idx_tasks_active_operations (complete = false); states are probed one by
-- one through the unique most_recent indexes ("OFFSET 0" keeps the planner
-- from hashing whole transition tables, which it picks because it cannot
-- tell how few rows qualify).
WITH pairs AS (
    SELECT nt.named_task_id, tn.name AS namespace, nt.name AS task
    FROM tasker_named_tasks nt
    JOIN tasker_task_namespaces tn ON tn.task_namespace_id = nt.task_namespace_id
),
recent AS (
    SELECT t.named_task_id, tt.to_state, tt.created_at - t.created_at AS runtime
    FROM tasker_tasks t
    LEFT JOIN LATERAL (SELECT tt.to_state, tt.created_at
                       FROM tasker_task_transitions tt
                       WHERE tt.task_id = t.task_id AND tt.most_recent
                       OFFSET 0) tt ON true
    WHERE t.complete = ANY ('{f,t}'::boolean[])
      AND t.created_at > now() - $1::interval
),
active_tasks AS (
    SELECT t.task_id, t.named_task_id
    FROM tasker_tasks t
    LEFT JOIN LATERAL (SELECT tt.to_state
                       FROM tasker_task_transitions tt
                       WHERE tt.task_id = t.task_id AND tt.most_recent
                       OFFSET 0) tt ON true
    WHERE (t.complete = false OR t.complete IS NULL)
      AND COALESCE(tt.to_state, 'pending') IN ('pending', 'in_progress')
),
open_steps AS (
    SELECT a.named_task_id,
           COALESCE(cur.to_state, 'pending') AS state,
           dep.satisfied,
           COALESCE(ws.attempts, 0) < COALESCE(ws.retry_limit, 3) AND COALESCE(ws.retryable, true)
               AND NOT COALESCE(ws.in_process, false) AS may_run,
           COALESCE((ws.backoff_request_seconds IS NOT NULL AND ws.last_attempted_at IS NOT NULL
                     AND ws.last_attempted_at + ws.backoff_request_seconds * interval '1 second' > now())
                    OR (cur.to_state = 'error'
                        AND cur.created_at + LEAST(power(2, LEAST(COALESCE(ws.attempts, 1), 10)), 30)
                                             * interval '1 second' > now()), false) AS backing_off
    FROM active_tasks a
    CROSS JOIN LATERAL (SELECT ws.*
                        FROM tasker_workflow_steps ws
                        WHERE ws.task_id = a.task_id AND ws.processed = false
                        OFFSET 0) ws
    LEFT JOIN LATERAL (SELECT cur.to_state, cur.created_at
                       FROM tasker_workflow_step_transitions cur
                       WHERE cur.workflow_step_id = ws.workflow_step_id AND cur.most_recent
                       OFFSET 0) cur ON true
    CROSS JOIN LATERAL (
        SELECT bool_and(pc.to_state IS NOT NULL AND pc.to_state IN ('complete', 'resolved_manually')) IS NOT FALSE
                   AS satisfied
        FROM tasker_workflow_step_edges e
        LEFT JOIN tasker_workflow_step_transitions pc
               ON pc.workflow_step_id = e.from_step_id AND pc.most_recent
        WHERE e.to_step_id = ws.workflow_step_id
    ) dep
    WHERE COALESCE(cur.to_state, 'pending') IN ('pending', 'error')
),
per_named AS (
    SELECT named_task_id,
           count(*) FILTER (WHERE satisfied AND may_run AND NOT backing_off) AS ready,
           count(*) FILTER (WHERE NOT satisfied AND state = 'pending') AS blocked,
           count(*) FILTER (WHERE may_run AND backing_off) AS in_backoff
    FROM open_steps
    GROUP BY named_task_id
),
recent_counts AS (
    SELECT named_task_id, count(*) AS n FROM recent GROUP BY named_task_id
),
activity AS (
    SELECT p.namespace, p.task,
           COALESCE(sum(rc.n), 0) AS created,
           COALESCE(sum(s.ready + s.blocked + s.in_backoff), 0) AS waiting
    FROM pairs p
    LEFT JOIN recent_counts rc ON rc.named_task_id = p.named_task_id
    LEFT JOIN per_named s ON s.named_task_id = p.named_task_id
    GROUP BY p.namespace, p.task
),
ranked AS (
    SELECT namespace, task, created, waiting,
           row_number() OVER (ORDER BY created DESC, waiting DESC, namespace, task) AS rank
    FROM activity
    WHERE created > 0 OR waiting > 0
),
labels AS (
    SELECT p.named_task_id,
           CASE WHEN r.rank <= $2 THEN r.namespace ELSE 'other' END AS namespace,
           CASE WHEN r.rank <= $2 THEN r.task ELSE 'other' END AS task
    FROM pairs p
    JOIN ranked r ON r.namespace = p.namespace AND r.task = p.task
),
task_rows AS (
    SELECT l.namespace, l.task,
           count(*) AS created,
           count(*) FILTER (WHERE r.to_state = 'complete') AS completed,
           count(*) FILTER (WHERE r.to_state = 'error') AS failed,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY r.runtime)
               FILTER (WHERE r.to_state = 'complete') AS pct
    FROM recent r
    JOIN labels l ON l.named_task_id = r.named_task_id
    GROUP BY l.namespace, l.task
),
step_rows AS (
    SELECT l.namespace, l.task, sum(s.ready) AS ready, sum(s.blocked) AS blocked, sum(s.in_backoff) AS in_backoff
    FROM per_named s
    JOIN labels l ON l.named_task_id = s.named_task_id
    GROUP BY l.namespace, l.task
)
SELECT COALESCE(t.namespace, s.namespace) AS namespace,
       COALESCE(t.task, s.task) AS task,
       COALESCE(t.created, 0) AS created,
       COALESCE(t.completed, 0) AS completed,
       COALESCE(t.failed, 0) AS failed,
       extract(epoch FROM t.pct[1])::float8 AS p50,
       extract(epoch FROM t.pct[2])::float8 AS p95,
       extract(epoch FROM t.pct[3])::float8 AS p99,
       COALESCE(s.ready, 0)::bigint AS ready,
       COALESCE(s.blocked, 0)::bigint AS blocked,
       COALESCE(s.in_backoff, 0)::bigint AS in_backoff,
       (SELECT count(*) FROM ranked WHERE rank > $2) AS dropped
FROM task_rows t
FULL JOIN step_rows s ON s.namespace = t.namespace AND s.task = t.task
ORDER BY 1, 2
