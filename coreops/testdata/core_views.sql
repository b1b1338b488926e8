-- Yardsticks for the sidecar's tasker-core dead-letter and staleness figures:
-- a function and two views with the columns and semantics of tasker-core's
-- tasker.calculate_staleness_threshold, tasker.v_dlq_dashboard and
-- tasker.v_task_staleness_monitoring (migrations/20260110000003_sql_functions.sql
-- in tasker-systems/tasker-core), written for the tests rather than copied.
-- Names are schema-qualified: the engine's own relies on search_path.
CREATE OR REPLACE FUNCTION tasker.calculate_staleness_threshold(
    state varchar, config jsonb, waiting_deps integer, waiting_retry integer, in_process integer)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE state
        WHEN 'waiting_for_dependencies' THEN
            COALESCE((config -> 'lifecycle' ->> 'max_waiting_for_dependencies_minutes')::integer, waiting_deps)
        WHEN 'waiting_for_retry' THEN
            COALESCE((config -> 'lifecycle' ->> 'max_waiting_for_retry_minutes')::integer, waiting_retry)
        WHEN 'steps_in_process' THEN
            COALESCE((config -> 'lifecycle' ->> 'max_steps_in_process_minutes')::integer, in_process)
        ELSE 1440
    END
$$;

CREATE OR REPLACE VIEW tasker.v_dlq_dashboard AS
SELECT dlq_reason,
       count(*) AS total_entries,
       count(*) FILTER (WHERE resolution_status = 'pending') AS pending,
       count(*) FILTER (WHERE resolution_status = 'manually_resolved') AS manually_resolved,
       count(*) FILTER (WHERE resolution_status = 'permanently_failed') AS permanent_failures,
       count(*) FILTER (WHERE resolution_status = 'cancelled') AS cancelled,
       min(dlq_timestamp) AS oldest_entry
FROM tasker.tasks_dlq
GROUP BY dlq_reason;

CREATE OR REPLACE VIEW tasker.v_task_staleness_monitoring AS
WITH analysis AS (
    SELECT t.task_uuid, nt.configuration AS template_config, tt.to_state AS current_state,
           EXTRACT(epoch FROM (now() - tt.created_at)) / 60 AS time_in_state_minutes
    FROM tasker.tasks t
    JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
    JOIN tasker.task_namespaces tns ON tns.task_namespace_uuid = nt.task_namespace_uuid
    JOIN tasker.task_transitions tt ON tt.task_uuid = t.task_uuid AND tt.most_recent
    WHERE t.complete = false
)
SELECT task_uuid, current_state, time_in_state_minutes,
       tasker.calculate_staleness_threshold(current_state, template_config, 60, 30, 30) AS staleness_threshold_minutes,
       CASE
           WHEN time_in_state_minutes >= tasker.calculate_staleness_threshold(current_state, template_config, 60, 30, 30) THEN 'stale'
           WHEN time_in_state_minutes >= tasker.calculate_staleness_threshold(current_state, template_config, 60, 30, 30) * 0.8 THEN 'warning'
           ELSE 'healthy'
       END AS health_status
FROM analysis
WHERE current_state IN ('waiting_for_dependencies', 'waiting_for_retry', 'steps_in_process');
