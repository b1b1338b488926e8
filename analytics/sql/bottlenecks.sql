-- Bottleneck analysis over the scoped task set T: tasks created in the last
-- $1 hours, filtered by namespace ($2), task name ($3) and version ($4) when
-- those are not NULL. $5 is the length of the slowest lists, $6 how long
-- after its task a step may have been created (see slowest_steps below).
--
-- The grouped lists (error classes, blocked and blocking step names) keep
-- their 10 largest entries.
--
-- One pass over T's steps builds a row per task (per_task); every list and
-- number is then derived from those rows or from the few step ids they
-- collect, so the big join is paid once. Tasks come through
-- idx_tasks_completion_status_created as in performance.sql.
WITH per_task AS MATERIALIZED (
    SELECT t.task_id,
           t.created_at AS tc,
           t.named_task_id,
           t.created_at > now() - make_interval(hours => $1) AS in_scope,
           count(ws.workflow_step_id) AS step_count,
           count(*) FILTER (WHERE cur.to_state = 'complete') AS completed_steps,
           count(*) FILTER (WHERE cur.to_state = 'error') AS error_steps,
           max(cur.created_at) FILTER (WHERE cur.to_state IN ('complete', 'error')) AS latest_completion,
           -- The task's own complete transition in the period: the
           -- duration sample of performance_distribution.
           max(tt.created_at) FILTER (WHERE tt.to_state = 'complete' AND tt.created_at > now() - make_interval(hours => $1))
               AS completed_at,
           -- The step-creation window is the period itself, as in
           -- get_slowest_steps_v01; rounding first makes the candidate
           -- threshold below agree with the list's sort key.
           max(round(extract(epoch FROM cur.created_at - ws.created_at), 3))
               FILTER (WHERE cur.to_state = 'complete'
                         AND ws.created_at > now() - make_interval(hours => $1)
                         AND cur.created_at > ws.created_at) AS slowest_step,
           count(*) FILTER (WHERE ws.attempts > 1) AS retried_steps,
           count(*) FILTER (WHERE ws.attempts > 1 AND cur.to_state = 'complete') AS retried_complete,
           array_agg(ws.workflow_step_id) FILTER (WHERE cur.to_state = 'pending') AS pending_ids,
           array_agg(ws.workflow_step_id) FILTER (WHERE ws.workflow_step_id IS NOT NULL AND cur.to_state IS NULL) AS new_ids,
           array_agg(ws.workflow_step_id) FILTER (WHERE cur.to_state = 'error') AS error_ids,
           COALESCE(bool_or(tt.to_state = 'error' AND tt.created_at > now() - make_interval(hours => $1)), false)
               AS failed_in_period
    FROM tasker_tasks t
    JOIN tasker_named_tasks nt
      ON nt.named_task_id = t.named_task_id
    JOIN tasker_task_namespaces tn
      ON tn.task_namespace_id = nt.task_namespace_id
    LEFT JOIN tasker_task_transitions tt
           ON tt.task_id = t.task_id AND tt.most_recent
    LEFT JOIN tasker_workflow_steps ws
           ON ws.task_id = t.task_id
    LEFT JOIN tasker_workflow_step_transitions cur
           ON cur.workflow_step_id = ws.workflow_step_id AND cur.most_recent
    WHERE t.complete = ANY ('{f,t}'::boolean[])
      AND t.created_at > now() - make_interval(hours => $1) - $6::interval
      AND ($2::text IS NULL OR tn.name = $2::text)
      AND ($3::text IS NULL OR nt.name = $3::text)
      AND ($4::text IS NULL OR nt.version = $4::text)
    GROUP BY t.task_id
),
summary AS (
    SELECT count(*) FILTER (WHERE in_scope) AS total_tasks,
           count(*) FILTER (WHERE in_scope AND failed_in_period) AS total_errors,
           COALESCE(sum(retried_steps) FILTER (WHERE in_scope), 0) AS retried_steps,
           COALESCE(sum(retried_complete) FILTER (WHERE in_scope), 0) AS retried_complete,
           count(*) FILTER (WHERE in_scope AND completed_at IS NOT NULL) AS completed_tasks,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY completed_at - tc)
               FILTER (WHERE in_scope AND completed_at IS NOT NULL) AS pct,
           count(*) FILTER (WHERE in_scope AND completed_at - tc < interval '10 seconds') AS under_10s,
           count(*) FILTER (WHERE in_scope AND completed_at - tc >= interval '10 seconds'
                              AND completed_at - tc < interval '30 seconds') AS under_30s,
           count(*) FILTER (WHERE in_scope AND completed_at - tc >= interval '30 seconds') AS over_30s
    FROM per_task
),
slowest_tasks AS (
    SELECT p.task_id, p.tc, p.latest_completion, p.step_count, p.completed_steps, p.error_steps,
           round(extract(epoch FROM p.latest_completion - p.tc), 3) AS duration
    FROM per_task p
    WHERE p.in_scope AND p.latest_completion IS NOT NULL
    ORDER BY duration DESC, p.task_id
    LIMIT $5
),
-- A step in the top $5 lies in a task whose slowest step is at least the
-- $5-th largest of the per-task maxima (otherwise $5 other tasks would each
-- hold a slower step), so only those tasks' steps are read again.
step_threshold AS (
    SELECT min(slowest_step) AS at_least
    FROM (SELECT slowest_step FROM per_task
          WHERE slowest_step IS NOT NULL
          ORDER BY slowest_step DESC LIMIT $5) top
),
-- The id lists below are handed to index scans as arrays: the planner
-- cannot see how few ids come out of per_task and would otherwise hash the
-- whole steps table.
candidate_tasks AS (
    SELECT array_agg(task_id) AS ids
    FROM per_task
    WHERE slowest_step >= (SELECT at_least FROM step_threshold)
),
slowest_steps AS (
    SELECT ws.workflow_step_id, ws.task_id, ws.named_step_id, ws.attempts, ws.retryable,
           ws.created_at, cur.created_at AS completed_at,
           round(extract(epoch FROM cur.created_at - ws.created_at), 3) AS duration
    FROM tasker_workflow_steps ws
    JOIN tasker_workflow_step_transitions cur
      ON cur.workflow_step_id = ws.workflow_step_id AND cur.most_recent AND cur.to_state = 'complete'
    WHERE ws.task_id = ANY ((SELECT ids FROM candidate_tasks)::bigint[])
      AND ws.created_at > now() - make_interval(hours => $1)
      AND cur.created_at > ws.created_at
    ORDER BY duration DESC, ws.workflow_step_id
    LIMIT $5
),
waiting_ids AS (
    SELECT array_agg(id) FILTER (WHERE explicit) AS pending, array_agg(id) FILTER (WHERE NOT explicit) AS new
    FROM (SELECT unnest(pending_ids) AS id, true AS explicit FROM per_task WHERE in_scope
          UNION ALL
          SELECT unnest(new_ids), false FROM per_task WHERE in_scope) w
),
waiting AS MATERIALIZED (
    SELECT ws.workflow_step_id AS step_id,
           ws.workflow_step_id = ANY ((SELECT pending FROM waiting_ids)::bigint[]) AS explicit,
           ws.created_at, ns.name,
           (SELECT count(*) FROM tasker_workflow_step_edges e
             WHERE e.to_step_id = ws.workflow_step_id) AS total_parents,
           (SELECT count(*) FROM tasker_workflow_step_edges e
              JOIN tasker_workflow_step_transitions pc
                ON pc.workflow_step_id = e.from_step_id AND pc.most_recent
               AND pc.to_state IN ('complete', 'resolved_manually')
             WHERE e.to_step_id = ws.workflow_step_id) AS completed_parents
    FROM tasker_workflow_steps ws
    JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
    WHERE ws.workflow_step_id = ANY ((SELECT pending || new FROM waiting_ids)::bigint[])
),
blocked AS MATERIALIZED (
    SELECT step_id, name FROM waiting WHERE total_parents > 0 AND completed_parents <> total_parents
),
blockers AS (
    SELECT pns.name, count(DISTINCT e.to_step_id) AS blocked_steps
    FROM tasker_workflow_step_edges e
    JOIN tasker_workflow_steps pws ON pws.workflow_step_id = e.from_step_id
    JOIN tasker_named_steps pns ON pns.named_step_id = pws.named_step_id
    LEFT JOIN tasker_workflow_step_transitions pc
           ON pc.workflow_step_id = e.from_step_id AND pc.most_recent
    WHERE e.to_step_id = ANY ((SELECT array_agg(step_id) FROM blocked)::bigint[])
      AND (pc.to_state IS NULL OR pc.to_state NOT IN ('complete', 'resolved_manually'))
    GROUP BY pns.name
),
errored AS MATERIALIZED (
    SELECT ws.workflow_step_id,
           COALESCE(CASE WHEN jsonb_typeof(ws.results) = 'object' THEN ws.results ->> 'error_class' END, 'unknown')
               AS error_class,
           COALESCE(ws.attempts, 0) >= COALESCE(ws.retry_limit, 3) AS exhausted,
           COALESCE(ws.retryable, true) AS retryable
    FROM tasker_workflow_steps ws
    WHERE ws.workflow_step_id = ANY ((SELECT array_agg(id) FROM per_task, unnest(error_ids) AS id
                                       WHERE in_scope)::bigint[])
)
SELECT s.total_tasks,
       (SELECT count(DISTINCT nt.name) FROM per_task p
          JOIN tasker_named_tasks nt ON nt.named_task_id = p.named_task_id
         WHERE p.in_scope) AS unique_task_types,
       s.total_errors,
       CASE WHEN s.total_tasks > 0
            THEN round((s.total_errors::numeric / s.total_tasks) * 100, 1)
            ELSE 0.0 END::text AS recent_error_rate,
       s.retried_steps,
       CASE WHEN s.retried_steps > 0
            THEN round((s.retried_complete::numeric / s.retried_steps) * 100, 1)
            ELSE 0.0 END::text AS retry_success_rate,
       (SELECT count(*) FROM errored) AS error_steps,
       (SELECT count(*) FILTER (WHERE exhausted) FROM errored) AS exhausted_steps,
       (SELECT count(*) FILTER (WHERE NOT retryable AND NOT exhausted) FROM errored) AS non_retryable_steps,
       (SELECT COALESCE(json_agg(json_build_object('error_class', error_class, 'count', n)
                                 ORDER BY n DESC, error_class), '[]')
          FROM (SELECT error_class, count(*) AS n FROM errored GROUP BY error_class
                ORDER BY n DESC, error_class LIMIT 10) g) AS error_classes,
       (SELECT COALESCE(sum(total_parents), 0) FROM waiting WHERE explicit) AS blocking_dependencies,
       (SELECT COALESCE(round(avg(extract(epoch FROM now() - created_at)), 1), 0.0)::text
          FROM waiting WHERE explicit AND created_at < now() - interval '5 minutes') AS avg_wait_time,
       (SELECT count(*) FROM waiting WHERE explicit) AS pending_steps,
       (SELECT count(*) FROM blocked) AS blocked_steps,
       (SELECT COALESCE(json_agg(json_build_object('name', name, 'count', n) ORDER BY n DESC, name), '[]')
          FROM (SELECT name, count(*) AS n FROM blocked GROUP BY name
                ORDER BY n DESC, name LIMIT 10) g) AS blocked_by_name,
       (SELECT COALESCE(json_agg(json_build_object('name', name, 'blocked_steps', blocked_steps)
                                 ORDER BY blocked_steps DESC, name), '[]')
          FROM (SELECT * FROM blockers ORDER BY blocked_steps DESC, name LIMIT 10) g) AS blockers,
       s.completed_tasks,
       COALESCE(round(extract(epoch FROM s.pct[1]), 3), 0.0)::text AS p50,
       COALESCE(round(extract(epoch FROM s.pct[2]), 3), 0.0)::text AS p95,
       COALESCE(round(extract(epoch FROM s.pct[3]), 3), 0.0)::text AS p99,
       s.under_10s, s.under_30s, s.over_30s,
       (SELECT COALESCE(json_agg(json_build_object(
                   'task_id', x.task_id, 'task_name', nt.name, 'namespace_name', tn.name,
                   'version', nt.version, 'duration_seconds', x.duration::text,
                   'step_count', x.step_count, 'completed_steps', x.completed_steps,
                   'error_steps', x.error_steps, 'created_at', x.tc, 'completed_at', x.latest_completion,
                   'initiator', t.initiator, 'source_system', t.source_system)
                 ORDER BY x.duration DESC, x.task_id), '[]')
          FROM slowest_tasks x
          JOIN tasker_tasks t ON t.task_id = x.task_id
          JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
          JOIN tasker_task_namespaces tn ON tn.task_namespace_id = nt.task_namespace_id) AS slowest_tasks,
       (SELECT COALESCE(json_agg(json_build_object(
                   'workflow_step_id', x.workflow_step_id, 'task_id', x.task_id, 'step_name', ns.name,
                   'task_name', nt.name, 'namespace_name', tn.name, 'version', nt.version,
                   'duration_seconds', x.duration::text, 'attempts', x.attempts,
                   'created_at', x.created_at, 'completed_at', x.completed_at,
                   'retryable', x.retryable, 'step_status', 'complete')
                 ORDER BY x.duration DESC, x.workflow_step_id), '[]')
          FROM slowest_steps x
          JOIN tasker_named_steps ns ON ns.named_step_id = x.named_step_id
          JOIN tasker_tasks t ON t.task_id = x.task_id
          JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
          JOIN tasker_task_namespaces tn ON tn.task_namespace_id = nt.task_namespace_id) AS slowest_steps,
       now() AS calculated_at
FROM summary s
