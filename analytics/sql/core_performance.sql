-- tasker-core's get_analytics_metrics(since) (migrations/
-- 20260110000003_sql_functions.sql) for several windows, computed from the
-- tables in schema tasker without calling the function, with the sidecar's
-- additions: one row per window, in one pass over the tasks of the widest.
-- $1 is since, $2 whether the trend windows are wanted:
--   - GET /tasker/analytics/performance ($2 true): the last hour, 4 hours and
--     24 hours, and 'period' when $1 is not NULL;
--   - get_analytics_metrics($1) alone ($2 false, /v1/analytics/performance):
--     'period' from $1, or from one hour ago (the function's default) when
--     $1 is NULL, and the last hour, which the health score needs anyway.
--
-- The engine's definitions are kept, quirks included (docs/tasker-semantics.md,
-- "tasker-core analytics"): a task is "completed" or "failed" when one of its
-- steps' current state is complete or error, durations are per complete step,
-- the health score is always the last hour's, and active tasks are those with
-- a step whose current state is not complete, error, resolved_manually or
-- 'skipped' (a state tasker-core does not have).
--
-- Per task: its own current state and runtime (the additions), and over its
-- steps the engine's step-derived outcome and the exact (numeric) sums of its
-- complete steps' durations, whose window sums divided by the window's
-- complete-step count are what AVG(numeric) gives over the engine's join rows
-- (at most one current transition per step: the partial unique index on
-- most_recent), digit for digit.
WITH windows AS (
    SELECT v.name, v.start
    FROM (VALUES ('last_hour', now() - interval '1 hour'),
                 ('last_4_hours', now() - interval '4 hours'),
                 ('last_24_hours', now() - interval '24 hours'),
                 ('period', CASE WHEN $1::timestamptz IS NOT NULL THEN $1::timestamptz
                                 WHEN NOT $2::boolean THEN now() - interval '1 hour' END)) AS v(name, start)
    WHERE v.start IS NOT NULL AND ($2::boolean OR v.name IN ('last_hour', 'period'))
),
per_task AS (
    SELECT t.created_at AS tc,
           tt.to_state AS task_state,
           tt.created_at - t.created_at AS runtime,
           count(ws.workflow_step_uuid) AS steps,
           count(*) FILTER (WHERE cur.to_state = 'complete') AS complete_steps,
           count(*) FILTER (WHERE cur.to_state = 'error') AS error_steps,
           sum(extract(epoch FROM cur.created_at - t.created_at)) FILTER (WHERE cur.to_state = 'complete') AS task_s,
           sum(extract(epoch FROM cur.created_at - ws.created_at)) FILTER (WHERE cur.to_state = 'complete') AS step_s
    FROM tasker.tasks t
    -- Only the trends carry the additions: without them (get_analytics_metrics
    -- alone) the join is planned away and the task-state columns are unused.
    LEFT JOIN tasker.task_transitions tt ON $2::boolean AND tt.task_uuid = t.task_uuid AND tt.most_recent
    LEFT JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
    LEFT JOIN tasker.workflow_step_transitions cur
           ON cur.workflow_step_uuid = ws.workflow_step_uuid AND cur.most_recent
    WHERE t.created_at > (SELECT min(start) FROM windows)
    GROUP BY t.task_uuid, tt.to_state, tt.created_at
),
by_window AS (
    SELECT w.name, w.start,
           count(p.tc) AS throughput,
           count(*) FILTER (WHERE p.complete_steps > 0) AS completions,
           count(*) FILTER (WHERE p.error_steps > 0) AS errors,
           COALESCE(sum(p.steps), 0)::bigint AS step_count,
           sum(p.complete_steps) AS complete_steps,
           sum(p.task_s) AS task_s,
           sum(p.step_s) AS step_s,
           count(*) FILTER (WHERE p.task_state = 'pending') AS pending,
           count(*) FILTER (WHERE p.task_state = 'initializing') AS initializing,
           count(*) FILTER (WHERE p.task_state = 'enqueuing_steps') AS enqueuing_steps,
           count(*) FILTER (WHERE p.task_state = 'steps_in_process') AS steps_in_process,
           count(*) FILTER (WHERE p.task_state = 'evaluating_results') AS evaluating_results,
           count(*) FILTER (WHERE p.task_state = 'waiting_for_dependencies') AS waiting_for_dependencies,
           count(*) FILTER (WHERE p.task_state = 'waiting_for_retry') AS waiting_for_retry,
           count(*) FILTER (WHERE p.task_state = 'blocked_by_failures') AS blocked_by_failures,
           count(*) FILTER (WHERE p.task_state = 'complete') AS complete,
           count(*) FILTER (WHERE p.task_state = 'error') AS error,
           count(*) FILTER (WHERE p.task_state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE p.task_state = 'resolved_manually') AS resolved_manually,
           count(*) FILTER (WHERE p.tc IS NOT NULL AND p.task_state IS NULL) AS no_transitions,
           avg(p.runtime) FILTER (WHERE p.task_state = 'complete') AS runtime_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY p.runtime)
               FILTER (WHERE p.task_state = 'complete') AS runtime_pct
    FROM windows w
    LEFT JOIN per_task p ON p.tc > w.start
    GROUP BY w.name, w.start
),
health AS (
    SELECT CASE WHEN (completions + errors) > 0
                THEN round((completions::numeric / (completions + errors)), 3)
                ELSE 1.0 END::text AS score
    FROM by_window WHERE name = 'last_hour'
),
overall AS (
    SELECT
        (SELECT count(DISTINCT ws.task_uuid)
           FROM tasker.workflow_step_transitions cur
           JOIN tasker.workflow_steps ws ON ws.workflow_step_uuid = cur.workflow_step_uuid
          WHERE cur.most_recent
            AND cur.to_state NOT IN ('complete', 'error', 'skipped', 'resolved_manually')) AS active,
        (SELECT count(DISTINCT tn.name)
           FROM tasker.task_namespaces tn
           JOIN tasker.named_tasks nt ON nt.task_namespace_uuid = tn.task_namespace_uuid
          WHERE EXISTS (SELECT 1 FROM tasker.tasks t WHERE t.named_task_uuid = nt.named_task_uuid)) AS namespaces,
        (SELECT count(DISTINCT nt.name)
           FROM tasker.named_tasks nt
          WHERE EXISTS (SELECT 1 FROM tasker.tasks t WHERE t.named_task_uuid = nt.named_task_uuid)) AS task_types
)
SELECT b.name, b.start,
       o.active, o.namespaces, o.task_types, h.score,
       b.throughput, b.completions, b.errors,
       CASE WHEN b.throughput > 0 THEN round((b.completions::numeric / b.throughput * 100), 2) ELSE 0.0 END::text,
       CASE WHEN b.throughput > 0 THEN round((b.errors::numeric / b.throughput * 100), 2) ELSE 0.0 END::text,
       round(COALESCE(b.task_s / NULLIF(b.complete_steps, 0), 0), 3)::text,
       round(COALESCE(b.step_s / NULLIF(b.complete_steps, 0), 0), 3)::text,
       b.step_count,
       now(),
       b.pending, b.initializing, b.enqueuing_steps, b.steps_in_process, b.evaluating_results,
       b.waiting_for_dependencies, b.waiting_for_retry, b.blocked_by_failures, b.complete, b.error,
       b.cancelled, b.resolved_manually, b.no_transitions,
       CASE WHEN b.throughput > 0 THEN round((b.complete::numeric / b.throughput::numeric) * 100, 2) ELSE 0.0 END::text,
       CASE WHEN b.throughput > 0 THEN round((b.error::numeric / b.throughput::numeric) * 100, 2) ELSE 0.0 END::text,
       COALESCE(round(extract(epoch FROM b.runtime_avg), 3), 0)::text,
       COALESCE(round(extract(epoch FROM b.runtime_pct[1]), 3), 0)::text,
       COALESCE(round(extract(epoch FROM b.runtime_pct[2]), 3), 0)::text,
       COALESCE(round(extract(epoch FROM b.runtime_pct[3]), 3), 0)::text
FROM by_window b, health h, overall o
