-- Performance trends: get_analytics_metrics_v01 for the windows of the last
-- hour, 4 hours, 24 hours and the caller's window ($1, may be NULL), plus the
-- numbers defined by the tasks' own state, in one pass over the tasks of the
-- widest window.
--
-- Tasks: there is no index that starts with tasks.created_at. The composite
-- idx_tasks_completion_status_created (complete, created_at, task_id) serves
-- the range once the leading column is pinned, and complete is NOT NULL, so
-- "complete = ANY ('{f,t}')" keeps every row while letting the planner
-- range-scan created_at in both halves of the index (an index-only scan).
-- Steps come through index_workflow_steps_by_task, current states through
-- the unique partial most_recent indexes; when the window holds most of the
-- table the planner rightly prefers hash joins over sequential scans.
--
-- Averages: Tasker's AVG over numeric EXTRACT(EPOCH ...) values equals the
-- exact sum divided by the count. Summing integer microseconds per task and
-- then rebuilding the numeric sum with scale 6 (the scale of EXTRACT(EPOCH
-- FROM interval)) divides the same two numbers the same way, so the rounded
-- results are identical, while the per-task aggregate state stays small.
WITH per_task AS (
    SELECT t.task_id,
           t.created_at AS tc,
           count(ws.workflow_step_id) AS steps,
           count(*) FILTER (WHERE cur.to_state = 'complete') AS complete_steps,
           count(*) FILTER (WHERE cur.to_state = 'error') AS error_steps,
           sum((extract(epoch FROM cur.created_at - t.created_at) * 1000000)::bigint)
               FILTER (WHERE cur.to_state = 'complete') AS task_us,
           sum((extract(epoch FROM cur.created_at - ws.created_at) * 1000000)::bigint)
               FILTER (WHERE cur.to_state = 'complete') AS step_us
    FROM tasker_tasks t
    LEFT JOIN tasker_workflow_steps ws
           ON ws.task_id = t.task_id
    LEFT JOIN tasker_workflow_step_transitions cur
           ON cur.workflow_step_id = ws.workflow_step_id AND cur.most_recent
    WHERE t.complete = ANY ('{f,t}'::boolean[])
      AND t.created_at > LEAST(now() - interval '24 hours', COALESCE($1::timestamptz, 'infinity'))
    GROUP BY t.task_id
),
task_state AS (
    SELECT t.created_at AS tc,
           tt.to_state,
           tt.created_at - t.created_at AS runtime
    FROM tasker_tasks t
    LEFT JOIN tasker_task_transitions tt
           ON tt.task_id = t.task_id AND tt.most_recent
    WHERE t.complete = ANY ('{f,t}'::boolean[])
      AND t.created_at > LEAST(now() - interval '24 hours', COALESCE($1::timestamptz, 'infinity'))
),
windows AS (
    SELECT v.name, v.start
    FROM (VALUES ('last_hour', now() - interval '1 hour'),
                 ('last_4_hours', now() - interval '4 hours'),
                 ('last_24_hours', now() - interval '24 hours'),
                 ('period', $1::timestamptz)) AS v(name, start)
    WHERE v.start IS NOT NULL
),
by_steps AS (
    SELECT win.name,
           count(p.task_id) AS task_throughput,
           count(*) FILTER (WHERE p.complete_steps > 0) AS completion_count,
           count(*) FILTER (WHERE p.error_steps > 0) AS error_count,
           COALESCE(sum(p.steps), 0)::bigint AS step_throughput,
           sum(p.complete_steps) AS complete_steps,
           sum(p.task_us) AS task_us,
           sum(p.step_us) AS step_us
    FROM windows win
    LEFT JOIN per_task p ON p.tc > win.start
    GROUP BY win.name
),
by_state AS (
    SELECT win.name,
           count(*) FILTER (WHERE s.to_state = 'pending') AS pending,
           count(*) FILTER (WHERE s.to_state = 'in_progress') AS in_progress,
           count(*) FILTER (WHERE s.to_state = 'complete') AS complete,
           count(*) FILTER (WHERE s.to_state = 'error') AS error,
           count(*) FILTER (WHERE s.to_state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE s.to_state = 'resolved_manually') AS resolved_manually,
           count(*) FILTER (WHERE s.tc IS NOT NULL AND s.to_state IS NULL) AS no_transitions,
           avg(s.runtime) FILTER (WHERE s.to_state = 'complete') AS runtime_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s.runtime)
               FILTER (WHERE s.to_state = 'complete') AS runtime_pct
    FROM windows win
    LEFT JOIN task_state s ON s.tc > win.start
    GROUP BY win.name
)
SELECT w.name,
       w.start,
       st.task_throughput,
       st.completion_count,
       st.error_count,
       CASE WHEN st.task_throughput > 0
            THEN round((st.completion_count::numeric / st.task_throughput::numeric) * 100, 2)
            ELSE 0.0 END::text AS completion_rate,
       CASE WHEN st.task_throughput > 0
            THEN round((st.error_count::numeric / st.task_throughput::numeric) * 100, 2)
            ELSE 0.0 END::text AS error_rate,
       COALESCE(round((st.task_us::numeric * 0.000001) / st.complete_steps, 3), 0)::text AS avg_task_duration,
       COALESCE(round((st.step_us::numeric * 0.000001) / st.complete_steps, 3), 0)::text AS avg_step_duration,
       st.step_throughput,
       CASE WHEN st.completion_count + st.error_count > 0
            THEN round(st.completion_count::numeric / (st.completion_count + st.error_count), 3)
            ELSE 1.0 END::text AS health_score,
       ts.pending, ts.in_progress, ts.complete, ts.error, ts.cancelled, ts.resolved_manually, ts.no_transitions,
       CASE WHEN st.task_throughput > 0
            THEN round((ts.complete::numeric / st.task_throughput::numeric) * 100, 2)
            ELSE 0.0 END::text AS task_completion_rate,
       CASE WHEN st.task_throughput > 0
            THEN round((ts.error::numeric / st.task_throughput::numeric) * 100, 2)
            ELSE 0.0 END::text AS task_error_rate,
       COALESCE(round(extract(epoch FROM ts.runtime_avg), 3), 0)::text AS runtime_avg,
       COALESCE(round(extract(epoch FROM ts.runtime_pct[1]), 3), 0)::text AS runtime_p50,
       COALESCE(round(extract(epoch FROM ts.runtime_pct[2]), 3), 0)::text AS runtime_p95,
       COALESCE(round(extract(epoch FROM ts.runtime_pct[3]), 3), 0)::text AS runtime_p99
FROM windows w
JOIN by_steps st USING (name)
JOIN by_state ts USING (name)
