package collector

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// The stream's reads. Every query takes the same three inputs: the
// watermark ($1), the batch size ($2) and the open gaps as two arrays of
// bounds ($3, $4). The first half returns the next rows above the
// watermark, the second the rows that have appeared inside gaps; a caller
// tells them apart by comparing ids with the watermark. Both halves are
// index range scans on the primary key, so the cost follows the rows
// returned, not the table size.
//
// Every lookup per row is a LATERAL subquery with LIMIT 1, which the
// planner cannot flatten into a join: it stays a parameterized index probe
// per returned row. As plain joins, PostgreSQL hashes the whole task and
// step tables (it cannot know how few rows the first half returns), which
// makes every poll cost as much as a full count.
//
// The previous state of a transition is the row before it for the same
// entity by sort_key (a LATERAL probe of the unique (parent, sort_key)
// index), never from_state, which Tasker leaves NULL, and never sort_key
// arithmetic (docs/tasker-semantics.md#how-transitions-are-written).

// terminalTaskStates end a run of a task: its span ends there and the task
// duration is observed (engine.RunEndStates). The queries take them as a
// parameter.
var terminalTaskStates = engine.RunEndStates()

const newAndLate = `
    (SELECT * FROM %[1]s WHERE id > $1 ORDER BY id LIMIT $2)
    UNION ALL
    (SELECT r.* FROM %[1]s r JOIN unnest($3::bigint[], $4::bigint[]) AS g(lo, hi) ON r.id BETWEEN g.lo AND g.hi)`

const taskEntitiesSQL = `
    (SELECT task_id, named_task_id FROM tasker_tasks WHERE task_id > $1 ORDER BY task_id LIMIT $2)
    UNION ALL
    (SELECT r.task_id, r.named_task_id FROM tasker_tasks r
     JOIN unnest($3::bigint[], $4::bigint[]) AS g(lo, hi) ON r.task_id BETWEEN g.lo AND g.hi)`

const stepEntitiesSQL = `
WITH n AS (
    (SELECT workflow_step_id, task_id FROM tasker_workflow_steps WHERE workflow_step_id > $1 ORDER BY workflow_step_id LIMIT $2)
    UNION ALL
    (SELECT r.workflow_step_id, r.task_id FROM tasker_workflow_steps r
     JOIN unnest($3::bigint[], $4::bigint[]) AS g(lo, hi) ON r.workflow_step_id BETWEEN g.lo AND g.hi)
)
SELECT n.workflow_step_id, t.named_task_id
FROM n
LEFT JOIN LATERAL (SELECT named_task_id FROM tasker_tasks t WHERE t.task_id = n.task_id LIMIT 1) t ON true`

var taskTransitionsSQL = fmt.Sprintf(`
WITH n AS (%s)
SELECT n.id, n.task_id, n.to_state, n.sort_key, n.created_at,
       p.to_state, p.created_at,
       t.named_task_id, t.created_at,
       CASE WHEN n.to_state = ANY($5::text[]) THEN
           -- A retried task's run starts at the first transition after its
           -- previous terminal one (error -> pending), or at that terminal
           -- one when nothing came between (error -> resolved_manually).
           (SELECT COALESCE(
                (SELECT r.created_at FROM tasker_task_transitions r
                 WHERE r.task_id = n.task_id AND r.sort_key > q.sort_key AND r.sort_key < n.sort_key
                 ORDER BY r.sort_key LIMIT 1),
                q.created_at)
            FROM tasker_task_transitions q
            WHERE q.task_id = n.task_id AND q.sort_key < n.sort_key AND q.to_state = ANY($5::text[])
            ORDER BY q.sort_key DESC LIMIT 1)
       END
FROM n
LEFT JOIN LATERAL (
    SELECT p.to_state, p.created_at FROM tasker_task_transitions p
    WHERE p.task_id = n.task_id AND p.sort_key < n.sort_key
    ORDER BY p.sort_key DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (
    SELECT t.named_task_id, t.created_at FROM tasker_tasks t WHERE t.task_id = n.task_id LIMIT 1) t ON true`, fmt.Sprintf(newAndLate, engine.RailsTables.TaskTransitions))

// The retry class uses the step's columns as they are now, with the same
// NULL handling as the full count (stepGroupsSQL): a NULL comparison
// counts in no class.
var stepTransitionsSQL = fmt.Sprintf(`
WITH n AS (%s)
SELECT n.id, n.workflow_step_id, s.task_id, n.to_state, n.sort_key, n.created_at,
       p.to_state, p.created_at,
       t.named_task_id,
       COALESCE(s.attempts < s.retry_limit AND COALESCE(s.retryable, true), false),
       COALESCE(s.attempts >= s.retry_limit, false),
       COALESCE(s.attempts < s.retry_limit AND COALESCE(s.retryable, true) AND s.last_attempted_at IS NOT NULL, false),
       CASE WHEN n.to_state = 'in_progress' THEN
           (SELECT q.created_at FROM tasker_workflow_step_transitions q
            WHERE q.workflow_step_id = n.workflow_step_id AND q.sort_key < n.sort_key AND q.to_state = 'error'
            ORDER BY q.sort_key DESC LIMIT 1)
       END,
       NULL::boolean, NULL::bigint, NULL::text -- no step result audit on Rails (stream_audit.go)
FROM n
LEFT JOIN LATERAL (
    SELECT p.to_state, p.created_at FROM tasker_workflow_step_transitions p
    WHERE p.workflow_step_id = n.workflow_step_id AND p.sort_key < n.sort_key
    ORDER BY p.sort_key DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (
    SELECT s.task_id, s.attempts, s.retry_limit, s.retryable, s.last_attempted_at
    FROM tasker_workflow_steps s WHERE s.workflow_step_id = n.workflow_step_id LIMIT 1) s ON true
LEFT JOIN LATERAL (SELECT t.named_task_id FROM tasker_tasks t WHERE t.task_id = s.task_id LIMIT 1) t ON true`, fmt.Sprintf(newAndLate, engine.RailsTables.StepTransitions))

// The classes of the steps currently in error, in the full count's
// snapshot, with the full count's definitions (docs/tasker-semantics.md#health-counts).
const errorStepsSQL = `
SELECT s.workflow_step_id,
       COALESCE(s.attempts < s.retry_limit AND COALESCE(s.retryable, true), false),
       COALESCE(s.attempts >= s.retry_limit, false),
       COALESCE(s.attempts < s.retry_limit AND COALESCE(s.retryable, true) AND s.last_attempted_at IS NOT NULL, false),
       (SELECT t.named_task_id FROM tasker_tasks t WHERE t.task_id = s.task_id)
FROM tasker_workflow_step_transitions st
JOIN tasker_workflow_steps s ON s.workflow_step_id = st.workflow_step_id
WHERE st.most_recent = true AND st.to_state = 'error'`

// The steps currently in a running state ($1, StepStates.Running), and
// since when. No index covers the state, so this reads every current step
// row (about as long as the step half of the full count); it runs with the
// full count only.
const runningStepsSQL = `
SELECT st.workflow_step_id, st.to_state, st.created_at
FROM tasker_workflow_step_transitions st
WHERE st.most_recent = true AND st.to_state = ANY($1::text[])`

// churnSQL reads PostgreSQL's cumulative statistics of the four tables the
// stream follows: rows deleted, and the file node, which TRUNCATE
// replaces. Statesman never deletes; a cleanup job or a data fix does, and
// the stream cannot see a row that is gone.
const churnSQL = `
SELECT c.oid::regclass::text, COALESCE(s.n_tup_del, 0), COALESCE(pg_relation_filenode(c.oid), 0)
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY ($1::text[]::regclass[])`

// tableChurn is what churnSQL read of one table.
type tableChurn struct {
	deleted  int64
	filenode uint32
}

// readChurn reads the statistics of e's four stream tables.
func readChurn(ctx context.Context, q querier, e engine.Engine) (map[string]tableChurn, error) {
	rows, err := q.Query(ctx, churnSQL, e.Tables.List()[:4])
	if err != nil {
		return nil, fmt.Errorf("read table statistics: %w", err)
	}
	out := map[string]tableChurn{}
	var (
		name string
		c    tableChurn
	)
	if _, err := pgx.ForEachRow(rows, []any{&name, &c.deleted, &c.filenode}, func() error {
		out[name] = c
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read table statistics: %w", err)
	}
	return out, nil
}

// churned names the first table in now that lost rows since before:
// deletions counted, or a new file node (TRUNCATE). reset is set when a
// table's counter went down: it was reset (pg_stat_reset, a crash, a
// failover to a standby, whose counters are its own), and deletions
// counted before the reset and after the last read are lost, so the
// caller counts the rows (stream_rowcheck.go). The next comparison starts
// from the lower value: a reset never stops the check.
func churned(before, now map[string]tableChurn) (table string, reset bool) {
	if before == nil {
		return "", false
	}
	for _, name := range slices.Sorted(maps.Keys(now)) {
		b, ok := before[name]
		c := now[name]
		if !ok {
			continue
		}
		if c.deleted < b.deleted {
			reset = true
		}
		if table == "" && (c.deleted > b.deleted || c.filenode != b.filenode) {
			table = name
		}
	}
	return table, reset
}

// namedTasksSQL: see coreNamedTasksSQL for core.
const namedTasksSQL = `
SELECT nt.named_task_id, COALESCE(ns.name, ''), nt.name, nt.version
FROM tasker_named_tasks nt
LEFT JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id`

// The identity stored in a checkpoint: the OIDs change when the tables are
// recreated (a restore), the name when we point at another database.
const identitySQL = `
SELECT current_database() || '/' || $1::regclass::oid || '/' || $2::regclass::oid`

// gapsSQL finds the missing ids in ($1, $2] of a table, as ranges; $2 is
// the table's highest id, so there is no gap after the last row.
const gapsSQL = `
SELECT lo, hi FROM (
    SELECT lag(%[2]s, 1, $1::bigint) OVER (ORDER BY %[2]s) + 1 AS lo, %[2]s - 1 AS hi
    FROM %[1]s WHERE %[2]s > $1 AND %[2]s <= $2
) g WHERE hi >= lo`

// table is one of the four tables the stream follows.
type table int

const (
	tableTasks table = iota
	tableSteps
	tableTaskTransitions
	tableStepTransitions
	numTables
)

func (t table) String() string {
	tables := engine.RailsTables
	return [...]string{tables.Tasks, tables.Steps, tables.TaskTransitions, tables.StepTransitions}[t]
}

func (t table) idColumn() string {
	return [...]string{"task_id", "workflow_step_id", "id", "id"}[t]
}

// name is the table as e's SQL spells it, and the stream metrics' table
// label.
func (t table) name(e engine.Engine) string {
	tables := e.Tables
	return [...]string{tables.Tasks, tables.Steps, tables.TaskTransitions, tables.StepTransitions}[t]
}

// keyColumn is t's key column on core.
func (t table) keyColumn() string {
	return [...]string{"task_uuid", "workflow_step_uuid", "task_transition_uuid", "workflow_step_transition_uuid"}[t]
}

// position is a cursor per table.
type position [numTables]Cursor

func (p position) clone() position {
	for i := range p {
		p[i] = p[i].clone()
	}
	return p
}

// row is one row of any of the four reads. Entity rows fill id and
// namedTask only.
type row struct {
	id        engine.ID
	taskID    engine.ID
	stepID    engine.ID
	namedTask *engine.ID
	toState   string
	sortKey   int32
	at        time.Time
	fromState *string
	fromAt    *time.Time

	taskCreated *time.Time // task transitions
	runStartAt  *time.Time // task transitions to a terminal state after an earlier one: the run's start
	lastErrorAt *time.Time // step transitions to in_progress
	class       uint8      // step transitions

	// Step hand-off rows on tasker-core: the step result audit row written
	// with the transition (auditSuccess nil when there is none) and the
	// step's name (stream_audit.go).
	auditSuccess *bool
	auditMillis  *int64
	stepName     *string
}

// readRows reads the Rails rows above the watermark wm and in gaps' gaps.
func readRows(ctx context.Context, tx pgx.Tx, t table, wm int64, limit int, gaps Cursor) ([]row, error) {
	lo, hi := gaps.gapBounds()
	var (
		rows pgx.Rows
		err  error
	)
	switch t {
	case tableTasks:
		rows, err = tx.Query(ctx, taskEntitiesSQL, wm, limit, lo, hi)
	case tableSteps:
		rows, err = tx.Query(ctx, stepEntitiesSQL, wm, limit, lo, hi)
	case tableTaskTransitions:
		rows, err = tx.Query(ctx, taskTransitionsSQL, wm, limit, lo, hi, terminalTaskStates)
	case tableStepTransitions:
		rows, err = tx.Query(ctx, stepTransitionsSQL, wm, limit, lo, hi)
	}
	return scanRows(t, rows, err)
}

// readCoreRows reads the core rows from the key from up, skipping seen.
// audit says whether the database has tasker.workflow_step_result_audit
// (stream_audit.go).
func readCoreRows(ctx context.Context, tx pgx.Tx, t table, from engine.ID, limit int, seen []engine.ID, audit bool) ([]row, error) {
	keys := keyArgsOf(true, seen)
	var (
		rows pgx.Rows
		err  error
	)
	switch t {
	case tableTasks:
		rows, err = tx.Query(ctx, coreTaskEntitiesSQL, from, limit, keys)
	case tableSteps:
		rows, err = tx.Query(ctx, coreStepEntitiesSQL, from, limit, keys)
	case tableTaskTransitions:
		rows, err = tx.Query(ctx, coreTaskTransitionsSQL, from, limit, keys, terminalTaskStates)
	case tableStepTransitions:
		q := coreStepTransitionsNoAuditSQL
		if audit {
			q = coreStepTransitionsSQL
		}
		rows, err = tx.Query(ctx, q, from, limit, keys)
	}
	return scanRows(t, rows, err)
}

// scanRows reads either engine's rows: the queries return the same
// columns in the same order.
func scanRows(t table, rows pgx.Rows, err error) ([]row, error) {
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		var err error
		switch t {
		case tableTasks, tableSteps:
			err = r.Scan(&x.id, &x.namedTask)
		case tableTaskTransitions:
			err = r.Scan(&x.id, &x.taskID, &x.toState, &x.sortKey, &x.at, &x.fromState, &x.fromAt,
				&x.namedTask, &x.taskCreated, &x.runStartAt)
		case tableStepTransitions:
			var retryable, exhausted, backoff bool
			err = r.Scan(&x.id, &x.stepID, &x.taskID, &x.toState, &x.sortKey, &x.at, &x.fromState, &x.fromAt,
				&x.namedTask, &retryable, &exhausted, &backoff, &x.lastErrorAt,
				&x.auditSuccess, &x.auditMillis, &x.stepName)
			if retryable {
				x.class |= classRetryable
			}
			if exhausted {
				x.class |= classExhausted
			}
			if backoff {
				x.class |= classBackoff
			}
		}
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t, err)
	}
	return out, nil
}

// readCoreReplay returns the terminal task transitions pos has read and
// old had not, at most limit of them, the newest first.
func readCoreReplay(ctx context.Context, tx pgx.Tx, pos, old Cursor, limit int) ([]row, error) {
	rows, err := tx.Query(ctx, coreReplaySQL, old.Floor, terminalTaskStates, limit+len(old.Seen))
	if err != nil {
		return nil, fmt.Errorf("read replay: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.taskID, &x.toState, &x.sortKey, &x.at, &x.namedTask)
	})
	if err != nil {
		return nil, fmt.Errorf("read replay: %w", err)
	}
	out := all[:0]
	for _, x := range all {
		if pos.readSince(old, x.id) && len(out) < limit {
			out = append(out, x)
		}
	}
	return out, nil
}

// readReplay returns the terminal task transitions with ids in ranges, at
// most limit of them, the newest first.
func readReplay(ctx context.Context, tx pgx.Tx, ranges []Gap, limit int) ([]row, error) {
	lo, hi := Cursor{Gaps: ranges}.gapBounds()
	rows, err := tx.Query(ctx, `
SELECT r.id, r.task_id, r.to_state, r.sort_key, r.created_at, t.named_task_id
FROM tasker_task_transitions r
JOIN unnest($1::bigint[], $2::bigint[]) AS g(lo, hi) ON r.id BETWEEN g.lo AND g.hi
LEFT JOIN LATERAL (SELECT t.named_task_id FROM tasker_tasks t WHERE t.task_id = r.task_id LIMIT 1) t ON true
WHERE r.to_state = ANY($3::text[])
ORDER BY r.id DESC LIMIT $4`, lo, hi, terminalTaskStates, limit)
	if err != nil {
		return nil, fmt.Errorf("read replay: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.taskID, &x.toState, &x.sortKey, &x.at, &x.namedTask)
	})
	if err != nil {
		return nil, fmt.Errorf("read replay: %w", err)
	}
	return out, nil
}

// startPosition is where a fresh count leaves the stream: the highest
// visible id of each table, with the missing ids of the window below it as
// gaps, since some of them may belong to transactions still open.
func startPosition(ctx context.Context, tx pgx.Tx, e engine.Engine, window int64, now time.Time, snap xidSnapshot) (position, error) {
	if e.Kind == engine.KindCore {
		return coreStartPosition(ctx, tx, snap.at.Add(-coreStartLookback))
	}
	var p position
	for t := range numTables {
		var wm int64
		err := tx.QueryRow(ctx, fmt.Sprintf("SELECT COALESCE(max(%s), 0) FROM %s", t.idColumn(), t)).Scan(&wm)
		if err != nil {
			return p, fmt.Errorf("read %s watermark: %w", t, err)
		}
		p[t].Watermark = wm
		if window == 0 || wm == 0 {
			continue
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(gapsSQL, t, t.idColumn()), max(wm-window, 0), wm)
		if err != nil {
			return p, fmt.Errorf("read %s gaps: %w", t, err)
		}
		gaps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Gap, error) {
			g := Gap{Since: now, XMax: snap.xmax}
			return g, r.Scan(&g.Lo, &g.Hi)
		})
		if err != nil {
			return p, fmt.Errorf("read %s gaps: %w", t, err)
		}
		p[t].Gaps = normalizeGaps(gaps)
	}
	return p, nil
}

// coreStartLookback is how long before a fresh count a transaction still
// running then is assumed to have begun writing: the stream remembers the
// keys from there, so that rows such a transaction commits later are
// found. A transaction that wrote earlier still and commits later is
// counted by the next recount.
const coreStartLookback = time.Minute

// coreStartPosition is where a fresh count leaves the core stream: each
// table's floor at from, with every key at or above it already seen; at
// most maxSeenKeys of them, the floor raised to the oldest kept (the rows
// below are counted by the fresh count all the same).
func coreStartPosition(ctx context.Context, tx pgx.Tx, from time.Time) (position, error) {
	var p position
	floor := engine.UUIDLowerBound(from)
	for t := range numTables {
		rows, err := tx.Query(ctx, fmt.Sprintf(coreKeysSinceSQL, t.name(engine.Core()), t.keyColumn()), floor, maxSeenKeys)
		if err != nil {
			return p, fmt.Errorf("read %s keys: %w", t.name(engine.Core()), err)
		}
		seen, err := pgx.CollectRows(rows, pgx.RowTo[engine.ID])
		if err != nil {
			return p, fmt.Errorf("read %s keys: %w", t.name(engine.Core()), err)
		}
		slices.Reverse(seen)
		c := Cursor{Floor: floor, Seen: seen}
		if len(seen) == maxSeenKeys {
			c.raiseFloor(seen[0])
		}
		p[t] = c
	}
	return p, nil
}

// canSettleGaps reports whether the Rails sequences behind the stream's
// keys hand out one id at a time (cache_size 1, PostgreSQL's default and
// Rails'), which Cursor.resolve relies on: with a larger cache a session
// keeps ids it drew long ago and inserts them later.
func canSettleGaps(ctx context.Context, tx pgx.Tx) (bool, error) {
	var cache int64
	err := tx.QueryRow(ctx, `
SELECT COALESCE(max(s.cache_size), 1)
FROM unnest($1::text[], $2::text[]) AS t(tbl, col)
JOIN pg_sequences s
  ON format('%I.%I', s.schemaname, s.sequencename)::regclass = pg_get_serial_sequence(t.tbl, t.col)::regclass`,
		[]string{"tasker_tasks", "tasker_workflow_steps", "tasker_task_transitions", "tasker_workflow_step_transitions"},
		[]string{"task_id", "workflow_step_id", "id", "id"}).Scan(&cache)
	if err != nil {
		return false, fmt.Errorf("read the key sequences: %w", err)
	}
	return cache <= 1, nil
}

// normalizeGaps sorts and merges ranges.
func normalizeGaps(gs []Gap) []Gap {
	if len(gs) == 0 {
		return nil
	}
	sortGaps(gs)
	out := gs[:1]
	for _, g := range gs[1:] {
		last := &out[len(out)-1]
		if g.Lo <= last.Hi+1 {
			// The merged gap waits for the longer of the two.
			last.Hi = max(last.Hi, g.Hi)
			last.XMax = max(last.XMax, g.XMax)
			if g.Since.Before(last.Since) {
				last.Since = g.Since
			}
			continue
		}
		out = append(out, g)
	}
	return out
}

// readErrorSteps returns the retry class and group of every step in error;
// named resolves the groups (a dangling named task is the ("", "") group, as
// in the full count).
func readErrorSteps(ctx context.Context, tx pgx.Tx, e engine.Engine, named map[engine.ID]namedTask) (map[engine.ID]errorStep, error) {
	rows, err := tx.Query(ctx, pick(e, errorStepsSQL, coreErrorStepsSQL))
	if err != nil {
		return nil, fmt.Errorf("read steps in error: %w", err)
	}
	steps := map[engine.ID]errorStep{}
	var (
		id                            engine.ID
		retryable, exhausted, backoff bool
		namedTask                     *engine.ID
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &retryable, &exhausted, &backoff, &namedTask}, func() error {
		var c uint8
		if retryable {
			c |= classRetryable
		}
		if exhausted {
			c |= classExhausted
		}
		if backoff {
			c |= classBackoff
		}
		var g group
		if namedTask != nil {
			g = named[*namedTask].group
		}
		steps[id] = errorStep{class: c, group: g}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read steps in error: %w", err)
	}
	return steps, nil
}

func readRunningSteps(ctx context.Context, tx pgx.Tx, e engine.Engine) (map[engine.ID]stateSince, error) {
	rows, err := tx.Query(ctx, pick(e, runningStepsSQL, coreRunningStepsSQL), e.StepStates.Running)
	if err != nil {
		return nil, fmt.Errorf("read running steps: %w", err)
	}
	out := map[engine.ID]stateSince{}
	var (
		id engine.ID
		r  stateSince
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &r.state, &r.at}, func() error {
		out[id] = r
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read running steps: %w", err)
	}
	return out, nil
}

// namedTask is what the stream needs of a named task: its group and version.
type namedTask struct {
	group
	version string
}

func readNamedTasks(ctx context.Context, tx pgx.Tx, e engine.Engine) (map[engine.ID]namedTask, error) {
	rows, err := tx.Query(ctx, pick(e, namedTasksSQL, coreNamedTasksSQL))
	if err != nil {
		return nil, fmt.Errorf("read named tasks: %w", err)
	}
	out := map[engine.ID]namedTask{}
	var (
		id                engine.ID
		ns, name, version string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &ns, &name, &version}, func() error {
		out[id] = namedTask{group{ns, name}, version}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read named tasks: %w", err)
	}
	return out, nil
}

// pick is the Rails or the core text of a query, for e.
func pick(e engine.Engine, rails, core string) string {
	if e.Kind == engine.KindCore {
		return core
	}
	return rails
}
