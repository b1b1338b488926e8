-- Bottleneck analysis on tasker-core: bottlenecks.sql (the Rails engine's,
-- which documents the shape) over schema tasker, uuid keys, and the
-- engine's semantics where tasker-core's functions define a field
-- (docs/tasker-semantics.md, "tasker-core analytics"):
--   * a step's duration runs from its creation to its current complete or
--     error transition, as in get_slowest_steps_aggregated, and only
--     positive durations count; so the slowest steps include steps in
--     error (step_status says which);
--   * a task's duration runs from its creation to the newest such step
--     transition, positive only, as in get_slowest_tasks_aggregated;
--     step_count is every step of the task, error_steps those in error;
--   * a step in error is exhausted or not retryable (retryable failures
--     are waiting_for_retry on tasker-core), exhausted meaning
--     attempts >= max_attempts;
--   * error classes come from results.error.error_class, then
--     results.error_class, then the newest step transition whose metadata
--     has error.error_class (the worker's failure event), else 'unknown'.
-- $1 period hours, $2..$4 namespace, name, version (NULL: any), $5 the
-- length of the slowest lists, $6 how long after its task a step may have
-- been created and still be seen by the slowest-steps list.
WITH per_task AS MATERIALIZED (
    SELECT t.task_uuid,
           t.created_at AS tc,
           t.named_task_uuid,
           t.created_at > now() - make_interval(hours => $1) AS in_scope,
           count(ws.workflow_step_uuid) AS step_count,
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
               FILTER (WHERE cur.to_state IN ('complete', 'error')
                         AND ws.created_at > now() - make_interval(hours => $1)
                         AND cur.created_at > ws.created_at) AS slowest_step,
           count(*) FILTER (WHERE ws.attempts > 1) AS retried_steps,
           count(*) FILTER (WHERE ws.attempts > 1 AND cur.to_state = 'complete') AS retried_complete,
           array_agg(ws.workflow_step_uuid) FILTER (WHERE cur.to_state = 'pending') AS pending_ids,
           array_agg(ws.workflow_step_uuid) FILTER (WHERE ws.workflow_step_uuid IS NOT NULL AND cur.to_state IS NULL) AS new_ids,
           array_agg(ws.workflow_step_uuid) FILTER (WHERE cur.to_state = 'error') AS error_ids,
           COALESCE(bool_or(tt.to_state = 'error' AND tt.created_at > now() - make_interval(hours => $1)), false)
               AS failed_in_period
    FROM tasker.tasks t
    JOIN tasker.named_tasks nt
      ON nt.named_task_uuid = t.named_task_uuid
    JOIN tasker.task_namespaces tn
      ON tn.task_namespace_uuid = nt.task_namespace_uuid
    LEFT JOIN tasker.task_transitions tt
           ON tt.task_uuid = t.task_uuid AND tt.most_recent
    LEFT JOIN tasker.workflow_steps ws
           ON ws.task_uuid = t.task_uuid
    LEFT JOIN tasker.workflow_step_transitions cur
           ON cur.workflow_step_uuid = ws.workflow_step_uuid AND cur.most_recent
    WHERE t.created_at > now() - make_interval(hours => $1) - $6::interval
      AND ($2::text IS NULL OR tn.name = $2::text)
      AND ($3::text IS NULL OR nt.name = $3::text)
      AND ($4::text IS NULL OR nt.version = $4::text)
    GROUP BY t.task_uuid
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
    SELECT p.task_uuid, p.tc, p.latest_completion, p.step_count, p.completed_steps, p.error_steps,
           round(extract(epoch FROM p.latest_completion - p.tc), 3) AS duration
    FROM per_task p
    WHERE p.in_scope AND p.latest_completion > p.tc
    ORDER BY duration DESC, p.task_uuid
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
    SELECT array_agg(task_uuid) AS ids
    FROM per_task
    WHERE slowest_step >= (SELECT at_least FROM step_threshold)
),
slowest_steps AS (
    SELECT ws.workflow_step_uuid, ws.task_uuid, ws.named_step_uuid, ws.attempts, ws.retryable,
           ws.created_at, cur.created_at AS completed_at, cur.to_state AS step_status,
           round(extract(epoch FROM cur.created_at - ws.created_at), 3) AS duration
    FROM tasker.workflow_steps ws
    JOIN tasker.workflow_step_transitions cur
      ON cur.workflow_step_uuid = ws.workflow_step_uuid AND cur.most_recent AND cur.to_state IN ('complete', 'error')
    WHERE ws.task_uuid = ANY ((SELECT ids FROM candidate_tasks)::uuid[])
      AND ws.created_at > now() - make_interval(hours => $1)
      AND cur.created_at > ws.created_at
    ORDER BY duration DESC, ws.workflow_step_uuid
    LIMIT $5
),
waiting_ids AS (
    SELECT array_agg(id) FILTER (WHERE explicit) AS pending, array_agg(id) FILTER (WHERE NOT explicit) AS new
    FROM (SELECT unnest(pending_ids) AS id, true AS explicit FROM per_task WHERE in_scope
          UNION ALL
          SELECT unnest(new_ids), false FROM per_task WHERE in_scope) w
),
waiting AS MATERIALIZED (
    SELECT ws.workflow_step_uuid AS step_id,
           ws.workflow_step_uuid = ANY ((SELECT pending FROM waiting_ids)::uuid[]) AS explicit,
           ws.created_at, ns.name,
           (SELECT count(*) FROM tasker.workflow_step_edges e
             WHERE e.to_step_uuid = ws.workflow_step_uuid) AS total_parents,
           (SELECT count(*) FROM tasker.workflow_step_edges e
              JOIN tasker.workflow_step_transitions pc
                ON pc.workflow_step_uuid = e.from_step_uuid AND pc.most_recent
               AND pc.to_state IN ('complete', 'resolved_manually')
             WHERE e.to_step_uuid = ws.workflow_step_uuid) AS completed_parents
    FROM tasker.workflow_steps ws
    JOIN tasker.named_steps ns ON ns.named_step_uuid = ws.named_step_uuid
    WHERE ws.workflow_step_uuid = ANY ((SELECT pending || new FROM waiting_ids)::uuid[])
),
blocked AS MATERIALIZED (
    SELECT step_id, name FROM waiting WHERE total_parents > 0 AND completed_parents <> total_parents
),
blockers AS (
    SELECT pns.name, count(DISTINCT e.to_step_uuid) AS blocked_steps
    FROM tasker.workflow_step_edges e
    JOIN tasker.workflow_steps pws ON pws.workflow_step_uuid = e.from_step_uuid
    JOIN tasker.named_steps pns ON pns.named_step_uuid = pws.named_step_uuid
    LEFT JOIN tasker.workflow_step_transitions pc
           ON pc.workflow_step_uuid = e.from_step_uuid AND pc.most_recent
    WHERE e.to_step_uuid = ANY ((SELECT array_agg(step_id) FROM blocked)::uuid[])
      AND (pc.to_state IS NULL OR pc.to_state NOT IN ('complete', 'resolved_manually'))
    GROUP BY pns.name
),
errored AS MATERIALIZED (
    SELECT ws.workflow_step_uuid,
           COALESCE(CASE WHEN jsonb_typeof(ws.results -> 'error') = 'object' THEN ws.results -> 'error' ->> 'error_class' END,
                    CASE WHEN jsonb_typeof(ws.results) = 'object' THEN ws.results ->> 'error_class' END,
                    -- The worker's failure event, as the engine records it
                    -- on the step's transitions (newest first).
                    (SELECT x.metadata -> 'error' ->> 'error_class'
                       FROM tasker.workflow_step_transitions x
                      WHERE x.workflow_step_uuid = ws.workflow_step_uuid
                        AND jsonb_typeof(x.metadata -> 'error') = 'object'
                        AND x.metadata -> 'error' ->> 'error_class' IS NOT NULL
                      ORDER BY x.sort_key DESC
                      LIMIT 1),
                    'unknown')
               AS error_class,
           COALESCE(ws.attempts, 0) >= COALESCE(ws.max_attempts, 3) AS exhausted,
           COALESCE(ws.retryable, true) AS retryable
    FROM tasker.workflow_steps ws
    WHERE ws.workflow_step_uuid = ANY ((SELECT array_agg(id) FROM per_task, unnest(error_ids) AS id
                                       WHERE in_scope)::uuid[])
)
SELECT s.total_tasks,
       (SELECT count(DISTINCT nt.name) FROM per_task p
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = p.named_task_uuid
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
                   'task_uuid', x.task_uuid, 'task_name', nt.name, 'namespace_name', tn.name,
                   'version', nt.version, 'duration_seconds', x.duration::text,
                   'step_count', x.step_count, 'completed_steps', x.completed_steps,
                   'error_steps', x.error_steps, 'created_at', x.tc, 'completed_at', x.latest_completion,
                   'initiator', t.initiator, 'source_system', t.source_system)
                 ORDER BY x.duration DESC, x.task_uuid), '[]')
          FROM slowest_tasks x
          JOIN tasker.tasks t ON t.task_uuid = x.task_uuid
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
          JOIN tasker.task_namespaces tn ON tn.task_namespace_uuid = nt.task_namespace_uuid) AS slowest_tasks,
       (SELECT COALESCE(json_agg(json_build_object(
                   'workflow_step_uuid', x.workflow_step_uuid, 'task_uuid', x.task_uuid, 'step_name', ns.name,
                   'task_name', nt.name, 'namespace_name', tn.name, 'version', nt.version,
                   'duration_seconds', x.duration::text, 'attempts', x.attempts,
                   'created_at', x.created_at, 'completed_at', x.completed_at,
                   'retryable', x.retryable, 'step_status', x.step_status)
                 ORDER BY x.duration DESC, x.workflow_step_uuid), '[]')
          FROM slowest_steps x
          JOIN tasker.named_steps ns ON ns.named_step_uuid = x.named_step_uuid
          JOIN tasker.tasks t ON t.task_uuid = x.task_uuid
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
          JOIN tasker.task_namespaces tn ON tn.task_namespace_uuid = nt.task_namespace_uuid) AS slowest_steps,
       now() AS calculated_at
FROM summary s
