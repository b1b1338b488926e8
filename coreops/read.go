// Package coreops reads what tasker-core plans for its operators but does
// not ship (../shared/reference/tasker-core-facts.md §7): the depth and age
// of its PGMQ queues, its dead-letter queue (tasks_dlq) by reason and
// resolution, and the active tasks past their staleness threshold, as the
// engine's views compute them. A Refresher reads them in the background
// into a Snapshot; Collector exports the last one at scrape time, as
// exporters/domain.go does for the health counts.
//
// Everything is read with the sidecar's own read-only SQL. The one engine
// function it calls is pgmq.metrics_all(), PGMQ's own read-only summary,
// which is the contract issue 13 names for queue figures.
package coreops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Querier is what a read needs of a pool (*pgxpool.Pool) or a connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Queue is one row of pgmq.metrics_all().
type Queue struct {
	Name   string
	Length int64
	// NewestAge and OldestAge are the ages in seconds of the newest and
	// oldest message in the queue; nil when it is empty (PGMQ's NULL).
	NewestAge, OldestAge *float64
	// Total is every message ever sent to the queue (its msg_id sequence).
	Total int64
}

// DLQCount is the number of tasks_dlq entries with one reason and one
// resolution status.
type DLQCount struct {
	Reason, Status string
	Count          int64
}

// StaleCount is the number of active tasks in State at Level ("warning":
// at least 80 % of the threshold, "stale": at least 100 %), as
// v_task_staleness_monitoring's health_status counts them.
type StaleCount struct {
	State, Level string
	Count        int64
}

// Staleness levels, the view's health_status values other than healthy.
const (
	LevelWarning = "warning"
	LevelStale   = "stale"
)

// MonitoredStates are the states v_task_staleness_monitoring watches, in
// the engine's order, with the view's default thresholds in minutes and the
// key of named_tasks.configuration->'lifecycle' that overrides each
// (calculate_staleness_threshold in tasker-core's
// migrations/20260110000003_sql_functions.sql; the view passes 60, 30, 30).
var MonitoredStates = []struct {
	State, ConfigKey string
	DefaultMinutes   int
}{
	{engine.StepsInProcess, "max_steps_in_process_minutes", 30},
	{engine.WaitingForDependencies, "max_waiting_for_dependencies_minutes", 60},
	{engine.WaitingForRetry, "max_waiting_for_retry_minutes", 30},
}

// Snapshot is one read. Each part has its own error: a missing pgmq
// schema or a failing DLQ query leaves the other parts good.
type Snapshot struct {
	TakenAt time.Time

	// QueuesFound is whether pgmq.metrics_all() exists in the queue
	// database; without it Queues is empty and QueuesErr nil.
	QueuesFound bool
	Queues      []Queue
	QueuesErr   error

	// DLQ has every (reason, resolution status) pair of the two enums, in
	// their order, zeros included.
	DLQ []DLQCount
	// DLQOldestPending is the age in seconds of the oldest entry still
	// pending; nil when none is.
	DLQOldestPending *float64
	DLQErr           error

	// Stale has every monitored state at both levels, zeros included.
	Stale []StaleCount
	// OldestActive is, per non-terminal task state, how long the task
	// longest in it has been there (seconds; v_task_state_analysis's
	// time_in_state for incomplete tasks). States with no task are 0.
	OldestActive map[string]float64
	StaleErr     error
}

// Err joins the parts' errors.
func (s Snapshot) Err() error { return errors.Join(s.QueuesErr, s.DLQErr, s.StaleErr) }

// pgmqSQL is PGMQ's own summary: one row per queue in pgmq.meta, with
// count(*) of the live table and the msg_id sequence's last value
// (pgmq-extension/sql/pgmq.sql, pgmq.metrics). Ages are whole seconds there.
const pgmqSQL = `
SELECT queue_name::text, queue_length, newest_msg_age_sec::float8, oldest_msg_age_sec::float8, total_messages
FROM pgmq.metrics_all()
ORDER BY queue_name`

const pgmqFoundSQL = `SELECT to_regprocedure('pgmq.metrics_all()') IS NOT NULL`

// readQueues reads pgmq.metrics_all() when it exists.
func readQueues(ctx context.Context, q Querier) (found bool, queues []Queue, err error) {
	if err := q.QueryRow(ctx, pgmqFoundSQL).Scan(&found); err != nil {
		return false, nil, fmt.Errorf("pgmq: %w", err)
	}
	if !found {
		return false, nil, nil
	}
	rows, err := q.Query(ctx, pgmqSQL)
	if err != nil {
		return true, nil, fmt.Errorf("pgmq.metrics_all(): %w", err)
	}
	queues, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Queue, error) {
		var qu Queue
		err := r.Scan(&qu.Name, &qu.Length, &qu.NewestAge, &qu.OldestAge, &qu.Total)
		return qu, err
	})
	if err != nil {
		return true, nil, fmt.Errorf("pgmq.metrics_all(): %w", err)
	}
	return true, queues, nil
}

// dlqSQL counts tasks_dlq by reason and status and joins the counts onto
// both enums' labels, so that every pair is present. The enums are read
// from the catalog rather than listed here, so a value a newer engine adds
// appears without a release of the sidecar.
const dlqSQL = `
WITH c AS (
    SELECT dlq_reason::text AS reason, resolution_status::text AS status, count(*) AS n
    FROM tasker.tasks_dlq GROUP BY 1, 2
)
SELECT r.enumlabel::text, s.enumlabel::text, COALESCE(c.n, 0)::bigint
FROM pg_enum r
CROSS JOIN pg_enum s
LEFT JOIN c ON c.reason = r.enumlabel::text AND c.status = s.enumlabel::text
WHERE r.enumtypid = 'tasker.dlq_reason'::regtype
  AND s.enumtypid = 'tasker.dlq_resolution_status'::regtype
ORDER BY r.enumsortorder, s.enumsortorder`

// dlqOldestSQL: pending is the status v_dlq_investigation_queue lists as
// awaiting investigation. dlq_timestamp has no time zone; the sidecar's
// sessions are UTC (collector/db.go), as the engine's are.
const dlqOldestSQL = `
SELECT EXTRACT(epoch FROM now() - min(dlq_timestamp))::float8
FROM tasker.tasks_dlq WHERE resolution_status = 'pending'`

func readDLQ(ctx context.Context, q Querier) ([]DLQCount, *float64, error) {
	rows, err := q.Query(ctx, dlqSQL)
	if err != nil {
		return nil, nil, fmt.Errorf("tasks_dlq: %w", err)
	}
	counts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DLQCount, error) {
		var c DLQCount
		err := r.Scan(&c.Reason, &c.Status, &c.Count)
		return c, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("tasks_dlq: %w", err)
	}
	var oldest *float64
	if err := q.QueryRow(ctx, dlqOldestSQL).Scan(&oldest); err != nil {
		return nil, nil, fmt.Errorf("tasks_dlq oldest pending: %w", err)
	}
	return counts, oldest, nil
}

// staleSQL is v_task_staleness_monitoring's count by state and
// health_status, without the per-row plpgsql call: the threshold is
// calculate_staleness_threshold's CASE inlined, a template's lifecycle
// value overriding the default. One difference: a value that is not an
// integer makes the engine's cast fail the whole view; here it falls back
// to the default for that template only (docs/tasker-semantics.md).
// Like the view it reads incomplete tasks joined to their template,
// namespace and most recent transition; the partial index on
// tasks(complete) WHERE complete = false keeps it to the active tasks.
const staleSQL = `
WITH active AS (
    SELECT tt.to_state,
           EXTRACT(epoch FROM (now() - tt.created_at)) / 60 AS minutes,
           nt.configuration -> 'lifecycle' AS lc
    FROM tasker.tasks t
    JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
    JOIN tasker.task_namespaces tns ON tns.task_namespace_uuid = nt.task_namespace_uuid
    JOIN tasker.task_transitions tt ON tt.task_uuid = t.task_uuid AND tt.most_recent = true
    WHERE t.complete = false
), judged AS (
    SELECT to_state, minutes,
           CASE WHEN lc ->> m.key ~ '^\s*[+-]?[0-9]{1,9}\s*$' THEN (lc ->> m.key)::integer
                ELSE m.dflt END AS threshold
    FROM active
    LEFT JOIN unnest($1::text[], $2::text[], $3::int[]) AS m(state, key, dflt) ON m.state = active.to_state
)
SELECT to_state,
       count(*) FILTER (WHERE threshold IS NOT NULL AND minutes >= threshold)::bigint,
       count(*) FILTER (WHERE threshold IS NOT NULL AND minutes < threshold AND minutes >= threshold * 0.8)::bigint,
       (max(minutes) * 60)::float8
FROM judged
GROUP BY to_state`

func readStaleness(ctx context.Context, q Querier, e engine.Engine) ([]StaleCount, map[string]float64, error) {
	var states, keys []string
	var dflts []int32
	for _, m := range MonitoredStates {
		states, keys, dflts = append(states, m.State), append(keys, m.ConfigKey), append(dflts, int32(m.DefaultMinutes))
	}
	rows, err := q.Query(ctx, staleSQL, states, keys, dflts)
	if err != nil {
		return nil, nil, fmt.Errorf("staleness: %w", err)
	}
	stale := map[string][2]int64{}
	oldest := map[string]float64{}
	for _, st := range e.TaskStates.Active() {
		oldest[st] = 0
	}
	for rows.Next() {
		var state string
		var s, w int64
		var age float64
		if err := rows.Scan(&state, &s, &w, &age); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("staleness: %w", err)
		}
		stale[state] = [2]int64{w, s}
		// complete = false with a terminal most recent state is a task the
		// engine has not finalized yet. Only the non-terminal states have
		// an age series, so that a task left so does not grow one forever.
		if _, ok := oldest[state]; ok {
			oldest[state] = age
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("staleness: %w", err)
	}
	var out []StaleCount
	for _, m := range MonitoredStates {
		c := stale[m.State]
		out = append(out, StaleCount{State: m.State, Level: LevelWarning, Count: c[0]},
			StaleCount{State: m.State, Level: LevelStale, Count: c[1]})
	}
	return out, oldest, nil
}

// Read takes one Snapshot: the DLQ and staleness from db, the queues from
// queues (the same pool when PGMQ lives in the Tasker database). Each part
// is bounded by ctx.
func Read(ctx context.Context, db, queues Querier, e engine.Engine, now time.Time) Snapshot {
	snap := Snapshot{TakenAt: now}
	if queues != nil {
		snap.QueuesFound, snap.Queues, snap.QueuesErr = readQueues(ctx, queues)
	}
	snap.DLQ, snap.DLQOldestPending, snap.DLQErr = readDLQ(ctx, db)
	snap.Stale, snap.OldestActive, snap.StaleErr = readStaleness(ctx, db, e)
	return snap
}
