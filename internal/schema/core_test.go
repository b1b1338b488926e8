package schema_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

// coreIndexes is every index tasker-core's migrations create in schema
// tasker (tasker-systems/tasker-core, migrations/20260110000002_constraints_and_indexes.sql
// and 20260120000001_add_identity_strategy.sql), primary keys and unique
// constraints included, as pg_indexes.indexdef prints them on a database
// migrated by the engine itself (PostgreSQL 15, tasker-core c8733f95).
var coreIndexes = []struct{ name, def string }{
	{"idx_audit_correlation_id", "CREATE INDEX idx_audit_correlation_id ON tasker.workflow_step_result_audit USING btree (correlation_id) WHERE (correlation_id IS NOT NULL)"},
	{"idx_audit_recorded_at", "CREATE INDEX idx_audit_recorded_at ON tasker.workflow_step_result_audit USING btree (recorded_at)"},
	{"idx_audit_step_uuid", "CREATE INDEX idx_audit_step_uuid ON tasker.workflow_step_result_audit USING btree (workflow_step_uuid)"},
	{"idx_audit_success", "CREATE INDEX idx_audit_success ON tasker.workflow_step_result_audit USING btree (success)"},
	{"idx_audit_task_uuid", "CREATE INDEX idx_audit_task_uuid ON tasker.workflow_step_result_audit USING btree (task_uuid)"},
	{"idx_audit_worker_uuid", "CREATE INDEX idx_audit_worker_uuid ON tasker.workflow_step_result_audit USING btree (worker_uuid) WHERE (worker_uuid IS NOT NULL)"},
	{"idx_dlq_reason", "CREATE INDEX idx_dlq_reason ON tasker.tasks_dlq USING btree (dlq_reason)"},
	{"idx_dlq_resolution_status", "CREATE INDEX idx_dlq_resolution_status ON tasker.tasks_dlq USING btree (resolution_status, dlq_timestamp)"},
	{"idx_dlq_task_lookup", "CREATE INDEX idx_dlq_task_lookup ON tasker.tasks_dlq USING btree (task_uuid)"},
	{"idx_dlq_timestamp", "CREATE INDEX idx_dlq_timestamp ON tasker.tasks_dlq USING btree (dlq_timestamp DESC)"},
	{"idx_dlq_unique_pending_task", "CREATE UNIQUE INDEX idx_dlq_unique_pending_task ON tasker.tasks_dlq USING btree (task_uuid) WHERE (resolution_status = 'pending'::tasker.dlq_resolution_status)"},
	{"idx_named_tasks_identity_strategy", "CREATE INDEX idx_named_tasks_identity_strategy ON tasker.named_tasks USING btree (identity_strategy)"},
	{"idx_named_tasks_lifecycle_config", "CREATE INDEX idx_named_tasks_lifecycle_config ON tasker.named_tasks USING gin (((configuration -> 'lifecycle'::text))) WHERE ((configuration -> 'lifecycle'::text) IS NOT NULL)"},
	{"idx_named_tasks_namespace_uuid", "CREATE INDEX idx_named_tasks_namespace_uuid ON tasker.named_tasks USING btree (task_namespace_uuid)"},
	{"idx_task_namespaces_name", "CREATE INDEX idx_task_namespaces_name ON tasker.task_namespaces USING btree (name)"},
	{"idx_task_transitions_most_recent", "CREATE INDEX idx_task_transitions_most_recent ON tasker.task_transitions USING btree (most_recent) WHERE (most_recent = true)"},
	{"idx_task_transitions_processor", "CREATE INDEX idx_task_transitions_processor ON tasker.task_transitions USING btree (processor_uuid) WHERE (processor_uuid IS NOT NULL)"},
	{"idx_task_transitions_state_lookup", "CREATE INDEX idx_task_transitions_state_lookup ON tasker.task_transitions USING btree (task_uuid, to_state, most_recent) WHERE (most_recent = true)"},
	{"idx_task_transitions_task_uuid", "CREATE INDEX idx_task_transitions_task_uuid ON tasker.task_transitions USING btree (task_uuid)"},
	{"idx_task_transitions_timeout", "CREATE INDEX idx_task_transitions_timeout ON tasker.task_transitions USING btree (((transition_metadata ->> 'timeout_at'::text))) WHERE (most_recent = true)"},
	{"idx_task_transitions_uuid_most_recent", "CREATE UNIQUE INDEX idx_task_transitions_uuid_most_recent ON tasker.task_transitions USING btree (task_uuid, most_recent) WHERE (most_recent = true)"},
	{"idx_task_transitions_uuid_sort_key", "CREATE INDEX idx_task_transitions_uuid_sort_key ON tasker.task_transitions USING btree (task_uuid, sort_key)"},
	{"idx_task_transitions_uuid_temporal", "CREATE INDEX idx_task_transitions_uuid_temporal ON tasker.task_transitions USING btree (task_transition_uuid, created_at)"},
	{"idx_tasks_active_with_priority_covering", "CREATE INDEX idx_tasks_active_with_priority_covering ON tasker.tasks USING btree (complete, priority, task_uuid) INCLUDE (named_task_uuid, requested_at) WHERE (complete = false)"},
	{"idx_tasks_complete", "CREATE INDEX idx_tasks_complete ON tasker.tasks USING btree (complete)"},
	{"idx_tasks_completed_at", "CREATE INDEX idx_tasks_completed_at ON tasker.tasks USING btree (completed_at)"},
	{"idx_tasks_correlation_hierarchy", "CREATE INDEX idx_tasks_correlation_hierarchy ON tasker.tasks USING btree (parent_correlation_id, correlation_id) WHERE (parent_correlation_id IS NOT NULL)"},
	{"idx_tasks_correlation_id", "CREATE INDEX idx_tasks_correlation_id ON tasker.tasks USING btree (correlation_id)"},
	{"idx_tasks_identity_hash", "CREATE UNIQUE INDEX idx_tasks_identity_hash ON tasker.tasks USING btree (identity_hash)"},
	{"idx_tasks_named_task_uuid", "CREATE INDEX idx_tasks_named_task_uuid ON tasker.tasks USING btree (named_task_uuid)"},
	{"idx_tasks_parent_correlation_id", "CREATE INDEX idx_tasks_parent_correlation_id ON tasker.tasks USING btree (parent_correlation_id) WHERE (parent_correlation_id IS NOT NULL)"},
	{"idx_tasks_priority", "CREATE INDEX idx_tasks_priority ON tasker.tasks USING btree (priority)"},
	{"idx_tasks_requested_at", "CREATE INDEX idx_tasks_requested_at ON tasker.tasks USING btree (requested_at)"},
	{"idx_tasks_source_system", "CREATE INDEX idx_tasks_source_system ON tasker.tasks USING btree (source_system)"},
	{"idx_tasks_tags_gin", "CREATE INDEX idx_tasks_tags_gin ON tasker.tasks USING gin (tags)"},
	{"idx_tasks_tags_gin_path", "CREATE INDEX idx_tasks_tags_gin_path ON tasker.tasks USING gin (tags jsonb_path_ops)"},
	{"idx_tasks_uuid_temporal", "CREATE INDEX idx_tasks_uuid_temporal ON tasker.tasks USING btree (task_uuid, created_at)"},
	{"idx_workflow_step_edges_from_step", "CREATE INDEX idx_workflow_step_edges_from_step ON tasker.workflow_step_edges USING btree (from_step_uuid)"},
	{"idx_workflow_step_edges_from_step_name", "CREATE INDEX idx_workflow_step_edges_from_step_name ON tasker.workflow_step_edges USING btree (from_step_uuid, name)"},
	{"idx_workflow_step_edges_to_step", "CREATE INDEX idx_workflow_step_edges_to_step ON tasker.workflow_step_edges USING btree (to_step_uuid)"},
	{"idx_workflow_step_transitions_most_recent", "CREATE INDEX idx_workflow_step_transitions_most_recent ON tasker.workflow_step_transitions USING btree (most_recent) WHERE (most_recent = true)"},
	{"idx_workflow_step_transitions_state_lookup", "CREATE INDEX idx_workflow_step_transitions_state_lookup ON tasker.workflow_step_transitions USING btree (workflow_step_uuid, to_state, most_recent) WHERE (most_recent = true)"},
	{"idx_workflow_step_transitions_step_uuid", "CREATE INDEX idx_workflow_step_transitions_step_uuid ON tasker.workflow_step_transitions USING btree (workflow_step_uuid)"},
	{"idx_workflow_step_transitions_uuid_most_recent", "CREATE UNIQUE INDEX idx_workflow_step_transitions_uuid_most_recent ON tasker.workflow_step_transitions USING btree (workflow_step_uuid, most_recent) WHERE (most_recent = true)"},
	{"idx_workflow_step_transitions_uuid_sort_key", "CREATE INDEX idx_workflow_step_transitions_uuid_sort_key ON tasker.workflow_step_transitions USING btree (workflow_step_uuid, sort_key)"},
	{"idx_workflow_step_transitions_uuid_temporal", "CREATE INDEX idx_workflow_step_transitions_uuid_temporal ON tasker.workflow_step_transitions USING btree (workflow_step_transition_uuid, created_at)"},
	{"idx_workflow_steps_active_operations", "CREATE INDEX idx_workflow_steps_active_operations ON tasker.workflow_steps USING btree (workflow_step_uuid, task_uuid) WHERE ((processed = false) OR (processed IS NULL))"},
	{"idx_workflow_steps_checkpoint_cursor", "CREATE INDEX idx_workflow_steps_checkpoint_cursor ON tasker.workflow_steps USING btree (((checkpoint ->> 'cursor'::text))) WHERE (checkpoint IS NOT NULL)"},
	{"idx_workflow_steps_checkpoint_exists", "CREATE INDEX idx_workflow_steps_checkpoint_exists ON tasker.workflow_steps USING btree (workflow_step_uuid) WHERE (checkpoint IS NOT NULL)"},
	{"idx_workflow_steps_named_step_uuid", "CREATE INDEX idx_workflow_steps_named_step_uuid ON tasker.workflow_steps USING btree (named_step_uuid)"},
	{"idx_workflow_steps_processed_at", "CREATE INDEX idx_workflow_steps_processed_at ON tasker.workflow_steps USING btree (processed_at)"},
	{"idx_workflow_steps_processing_status", "CREATE INDEX idx_workflow_steps_processing_status ON tasker.workflow_steps USING btree (task_uuid, processed, in_process)"},
	{"idx_workflow_steps_ready_covering", "CREATE INDEX idx_workflow_steps_ready_covering ON tasker.workflow_steps USING btree (task_uuid, processed, in_process) INCLUDE (workflow_step_uuid, attempts, max_attempts, retryable) WHERE (processed = false)"},
	{"idx_workflow_steps_retry_logic", "CREATE INDEX idx_workflow_steps_retry_logic ON tasker.workflow_steps USING btree (attempts, max_attempts, retryable)"},
	{"idx_workflow_steps_retry_status", "CREATE INDEX idx_workflow_steps_retry_status ON tasker.workflow_steps USING btree (attempts, max_attempts)"},
	{"idx_workflow_steps_task_covering", "CREATE INDEX idx_workflow_steps_task_covering ON tasker.workflow_steps USING btree (task_uuid) INCLUDE (workflow_step_uuid, processed, in_process, attempts, max_attempts)"},
	{"idx_workflow_steps_task_grouping_active", "CREATE INDEX idx_workflow_steps_task_grouping_active ON tasker.workflow_steps USING btree (task_uuid, workflow_step_uuid) WHERE ((processed = false) OR (processed IS NULL))"},
	{"idx_workflow_steps_task_readiness", "CREATE INDEX idx_workflow_steps_task_readiness ON tasker.workflow_steps USING btree (task_uuid, processed, workflow_step_uuid) WHERE (processed = false)"},
	{"idx_workflow_steps_task_uuid", "CREATE INDEX idx_workflow_steps_task_uuid ON tasker.workflow_steps USING btree (task_uuid)"},
	{"idx_workflow_steps_transitive_deps", "CREATE INDEX idx_workflow_steps_transitive_deps ON tasker.workflow_steps USING btree (workflow_step_uuid, named_step_uuid) INCLUDE (task_uuid, processed)"},
	{"named_steps_name_unique", "CREATE UNIQUE INDEX named_steps_name_unique ON tasker.named_steps USING btree (name)"},
	{"named_steps_pkey", "CREATE UNIQUE INDEX named_steps_pkey ON tasker.named_steps USING btree (named_step_uuid)"},
	{"named_tasks_named_steps_pkey", "CREATE UNIQUE INDEX named_tasks_named_steps_pkey ON tasker.named_tasks_named_steps USING btree (ntns_uuid)"},
	{"named_tasks_named_steps_unique", "CREATE UNIQUE INDEX named_tasks_named_steps_unique ON tasker.named_tasks_named_steps USING btree (named_task_uuid, named_step_uuid)"},
	{"named_tasks_namespace_name_version_unique", "CREATE UNIQUE INDEX named_tasks_namespace_name_version_unique ON tasker.named_tasks USING btree (task_namespace_uuid, name, version)"},
	{"named_tasks_pkey", "CREATE UNIQUE INDEX named_tasks_pkey ON tasker.named_tasks USING btree (named_task_uuid)"},
	{"task_namespaces_name_key", "CREATE UNIQUE INDEX task_namespaces_name_key ON tasker.task_namespaces USING btree (name)"},
	{"task_namespaces_name_unique", "CREATE UNIQUE INDEX task_namespaces_name_unique ON tasker.task_namespaces USING btree (name)"},
	{"task_namespaces_pkey", "CREATE UNIQUE INDEX task_namespaces_pkey ON tasker.task_namespaces USING btree (task_namespace_uuid)"},
	{"task_transitions_pkey", "CREATE UNIQUE INDEX task_transitions_pkey ON tasker.task_transitions USING btree (task_transition_uuid)"},
	{"tasks_dlq_pkey", "CREATE UNIQUE INDEX tasks_dlq_pkey ON tasker.tasks_dlq USING btree (dlq_entry_uuid)"},
	{"tasks_pkey", "CREATE UNIQUE INDEX tasks_pkey ON tasker.tasks USING btree (task_uuid)"},
	{"unique_edge_per_step_pair", "CREATE UNIQUE INDEX unique_edge_per_step_pair ON tasker.workflow_step_edges USING btree (from_step_uuid, to_step_uuid, name)"},
	{"uq_audit_step_transition", "CREATE UNIQUE INDEX uq_audit_step_transition ON tasker.workflow_step_result_audit USING btree (workflow_step_uuid, workflow_step_transition_uuid)"},
	{"uq_workflow_step_task_named_step", "CREATE UNIQUE INDEX uq_workflow_step_task_named_step ON tasker.workflow_steps USING btree (task_uuid, named_step_uuid)"},
	{"workflow_step_edges_pkey", "CREATE UNIQUE INDEX workflow_step_edges_pkey ON tasker.workflow_step_edges USING btree (workflow_step_edge_uuid)"},
	{"workflow_step_result_audit_pkey", "CREATE UNIQUE INDEX workflow_step_result_audit_pkey ON tasker.workflow_step_result_audit USING btree (workflow_step_result_audit_uuid)"},
	{"workflow_step_transitions_pkey", "CREATE UNIQUE INDEX workflow_step_transitions_pkey ON tasker.workflow_step_transitions USING btree (workflow_step_transition_uuid)"},
	{"workflow_steps_pkey", "CREATE UNIQUE INDEX workflow_steps_pkey ON tasker.workflow_steps USING btree (workflow_step_uuid)"},
}

func applyCore(t *testing.T) (*pgx.Conn, context.Context) {
	t.Helper()
	conn := pgtest.New(t).Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	for i := 0; i < 2; i++ { // the second run must change nothing and not fail
		if err := schema.ApplyCore(ctx, conn); err != nil {
			t.Fatalf("apply %d: %v", i+1, err)
		}
	}
	return conn, ctx
}

// A fresh database, applied twice, holds exactly tasker-core's tables and
// indexes, each index with the engine's definition.
func TestApplyCoreCreatesEnginesSchema(t *testing.T) {
	conn, ctx := applyCore(t)

	var tables []string
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'tasker' AND table_type = 'BASE TABLE' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	wantTables := []string{"named_steps", "named_tasks", "named_tasks_named_steps", "task_namespaces",
		"task_transitions", "tasks", "tasks_dlq", "workflow_step_edges", "workflow_step_result_audit",
		"workflow_step_transitions", "workflow_steps"}
	if !equal(tables, wantTables) {
		t.Errorf("tables %v, want %v", tables, wantTables)
	}

	got := indexDefs(ctx, t, conn, "tasker")
	compareIndexes(t, got, coreIndexes, "tasker-core's")
	if len(coreIndexes) != 79 { // 11 primary keys, 8 unique constraints, 60 indexes
		t.Errorf("the table lists %d indexes, tasker-core's schema has 79", len(coreIndexes))
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The key generator returns RFC 9562 version-7 UUIDs: the version and
// variant bits set, the first 48 bits the Unix time in milliseconds, and keys
// made later sort after keys made earlier.
func TestCoreUUIDv7(t *testing.T) {
	conn, ctx := applyCore(t)

	var prev [16]byte
	for i := 0; i < 20; i++ {
		before := time.Now().UnixMilli()
		var id [16]byte
		if err := conn.QueryRow(ctx, `SELECT tasker.uuid_generate_v7()`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		after := time.Now().UnixMilli()
		if v := id[6] >> 4; v != 7 {
			t.Fatalf("%x: version %d, want 7", id, v)
		}
		if v := id[8] >> 6; v != 0b10 {
			t.Fatalf("%x: variant bits %02b, want 10", id, v)
		}
		ms := int64(id[0])<<40 | int64(id[1])<<32 | int64(id[2])<<24 | int64(id[3])<<16 | int64(id[4])<<8 | int64(id[5])
		// The database and the test share a clock; 5 ms of slack for rounding.
		if ms < before-5 || ms > after+5 {
			t.Errorf("%x: timestamp %d ms outside [%d, %d]", id, ms, before, after)
		}
		if i > 0 && bytes.Compare(id[:], prev[:]) <= 0 {
			t.Errorf("%x made after %x sorts before it", id, prev)
		}
		prev = id
		time.Sleep(2 * time.Millisecond)
	}

	// Many in one statement: distinct, whatever the clock does.
	var n, distinct int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT u)
		FROM (SELECT tasker.uuid_generate_v7() AS u FROM generate_series(1, 10000)) s`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != n {
		t.Errorf("%d distinct keys of %d", distinct, n)
	}

	// Below PostgreSQL 18 the schema brings public.uuidv7(), which the engine's
	// own migrations expect to find there on such servers.
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	var ours bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_proc
		WHERE proname = 'uuidv7' AND pronamespace = 'public'::regnamespace)`).Scan(&ours); err != nil {
		t.Fatal(err)
	}
	if ours != (version < 180000) {
		t.Errorf("PostgreSQL %d: public.uuidv7() installed = %v", version, ours)
	}
}

// The constraints a reader relies on hold as on tasker-core: states outside
// the engine's sets are refused, one most_recent row per task and per step,
// and sort_key may repeat (unlike Rails).
func TestCoreTransitionConstraints(t *testing.T) {
	conn, ctx := applyCore(t)
	// One task with one step, each with a most_recent transition at sort_key 1.
	if _, err := conn.Exec(ctx, `
		INSERT INTO tasker.task_namespaces (task_namespace_uuid, name, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000001', 'ns', now(), now());
		INSERT INTO tasker.named_tasks (named_task_uuid, task_namespace_uuid, name, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', 'task', now(), now());
		INSERT INTO tasker.named_steps (named_step_uuid, name, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000003', 'step', now(), now());
		INSERT INTO tasker.tasks (task_uuid, named_task_uuid, requested_at, identity_hash, correlation_id, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000004', '00000000-0000-7000-8000-000000000002', now(), 'h',
				tasker.uuid_generate_v7(), now(), now());
		INSERT INTO tasker.workflow_steps (workflow_step_uuid, task_uuid, named_step_uuid, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000005', '00000000-0000-7000-8000-000000000004',
				'00000000-0000-7000-8000-000000000003', now(), now());
		INSERT INTO tasker.task_transitions (task_uuid, to_state, sort_key, most_recent, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000004', 'pending', 1, true, now(), now());
		INSERT INTO tasker.workflow_step_transitions (workflow_step_uuid, to_state, sort_key, most_recent, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000005', 'pending', 1, true, now(), now());
	`); err != nil {
		t.Fatal(err)
	}

	const (
		task = `INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000004', $1, $2, $3, $4, now(), now())`
		step = `INSERT INTO tasker.workflow_step_transitions (workflow_step_uuid, from_state, to_state, sort_key, most_recent, created_at, updated_at)
			VALUES ('00000000-0000-7000-8000-000000000005', $1, $2, $3, $4, now(), now())`
		checkViolation  = "23514"
		uniqueViolation = "23505"
	)
	type transitionCase struct {
		name       string
		sql        string
		from, to   any
		sortKey    int
		mostRecent bool
		code       string // SQLSTATE; "" when the row is accepted
	}
	cases := []transitionCase{
		{"task: engine states", task, "waiting_for_retry", "blocked_by_failures", 2, false, ""},
		{"task: unknown to_state", task, "pending", "in_progress", 2, false, checkViolation},
		{"task: unknown from_state", task, "running", "pending", 2, false, checkViolation},
		{"task: second most_recent row", task, "pending", "initializing", 2, true, uniqueViolation},
		{"task: repeated sort_key", task, "pending", "initializing", 1, false, ""},
		{"step: engine states", step, "in_progress", "enqueued_as_error_for_orchestration", 2, false, ""},
		{"step: unknown to_state", step, "pending", "skipped", 2, false, checkViolation},
		{"step: unknown from_state", step, "processing", "pending", 2, false, checkViolation},
		{"step: second most_recent row", step, "pending", "enqueued", 2, true, uniqueViolation},
		{"step: repeated sort_key", step, "pending", "enqueued", 1, false, ""},
	}
	// Every state of the engine's state machines (crates/tasker-shared/src/state_machine/states.rs)
	// is accepted on both sides of a transition.
	for _, st := range []string{"pending", "initializing", "enqueuing_steps", "steps_in_process",
		"evaluating_results", "waiting_for_dependencies", "waiting_for_retry", "blocked_by_failures",
		"complete", "error", "cancelled", "resolved_manually"} {
		cases = append(cases, transitionCase{"task: " + st, task, st, st, 2, false, ""})
	}
	for _, st := range []string{"pending", "enqueued", "in_progress", "enqueued_for_orchestration",
		"enqueued_as_error_for_orchestration", "waiting_for_retry", "complete", "error", "cancelled",
		"resolved_manually"} {
		cases = append(cases, transitionCase{"step: " + st, step, st, st, 2, false, ""})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, tc.sql, tc.from, tc.to, tc.sortKey, tc.mostRecent)
			var pgErr *pgconn.PgError
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != "" && !errors.As(err, &pgErr):
				t.Fatalf("accepted (err %v), want SQLSTATE %s", err, tc.code)
			case tc.code != "" && pgErr.Code != tc.code:
				t.Fatalf("SQLSTATE %s (%s), want %s", pgErr.Code, pgErr.Message, tc.code)
			}
		})
	}
}

// Both engines' schemas fit in one database without touching each other:
// the Rails tables live in public, tasker-core's in schema tasker.
func TestApplyBothEngines(t *testing.T) {
	conn := pgtest.New(t).Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, step := range []struct {
		name  string
		apply func(context.Context, *pgx.Conn) error
	}{{"rails", schema.Apply}, {"core", schema.ApplyCore}, {"rails again", schema.Apply}} {
		if err := step.apply(ctx, conn); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
	var rails, core int
	if err := conn.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE table_schema = 'public' AND table_name LIKE 'tasker\_%'),
		count(*) FILTER (WHERE table_schema = 'tasker')
		FROM information_schema.tables WHERE table_type = 'BASE TABLE'`).Scan(&rails, &core); err != nil {
		t.Fatal(err)
	}
	if rails != 13 || core != 11 {
		t.Errorf("%d Rails and %d tasker-core tables, want 13 and 11", rails, core)
	}
}
