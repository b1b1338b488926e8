package schema_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

// taskerIndexes is every index of Tasker's db/init/schema.sql (the deployed
// schema, facts §1.3), primary keys included, each with the definition
// pg_dump printed for it there, which is what pg_indexes.indexdef returns.
// Comparing whole definitions checks columns, order, uniqueness, operator
// classes and partial predicates at once.
var taskerIndexes = []struct{ name, def string }{
	// Transitions: the table of facts §1.3, row by row.
	{"idx_on_workflow_step_id_most_recent_97d5374ad6", "CREATE UNIQUE INDEX idx_on_workflow_step_id_most_recent_97d5374ad6 ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, most_recent) WHERE (most_recent = true)"},
	{"idx_on_workflow_step_id_sort_key_4d476d7adb", "CREATE UNIQUE INDEX idx_on_workflow_step_id_sort_key_4d476d7adb ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, sort_key)"},
	{"idx_step_transitions_current_state", "CREATE INDEX idx_step_transitions_current_state ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, most_recent, to_state) WHERE (most_recent = true)"},
	{"idx_step_transitions_most_recent", "CREATE INDEX idx_step_transitions_most_recent ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, most_recent) WHERE (most_recent = true)"},
	{"index_step_transitions_current_state_optimized", "CREATE INDEX index_step_transitions_current_state_optimized ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, most_recent) WHERE (most_recent = true)"},
	{"index_step_transitions_completed", "CREATE INDEX index_step_transitions_completed ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, to_state) WHERE ((to_state)::text = 'complete'::text)"},
	{"index_step_transitions_completed_parents", "CREATE INDEX index_step_transitions_completed_parents ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, most_recent) WHERE (((to_state)::text = ANY ((ARRAY['complete'::character varying, 'resolved_manually'::character varying])::text[])) AND (most_recent = true))"},
	{"index_step_transitions_current_errors", "CREATE INDEX index_step_transitions_current_errors ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, most_recent, created_at) WHERE (((to_state)::text = 'error'::text) AND (most_recent = true))"},
	{"index_step_transitions_failures_with_timing", "CREATE INDEX index_step_transitions_failures_with_timing ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, to_state, created_at) WHERE ((to_state)::text = 'failed'::text)"},
	{"index_step_transitions_for_current_state", "CREATE INDEX index_step_transitions_for_current_state ON public.tasker_workflow_step_transitions USING btree (workflow_step_id, created_at)"},
	{"index_tasker_workflow_step_transitions_on_sort_key", "CREATE INDEX index_tasker_workflow_step_transitions_on_sort_key ON public.tasker_workflow_step_transitions USING btree (sort_key)"},
	{"index_tasker_workflow_step_transitions_on_workflow_step_id", "CREATE INDEX index_tasker_workflow_step_transitions_on_workflow_step_id ON public.tasker_workflow_step_transitions USING btree (workflow_step_id)"},
	{"index_tasker_task_transitions_on_task_id_and_most_recent", "CREATE UNIQUE INDEX index_tasker_task_transitions_on_task_id_and_most_recent ON public.tasker_task_transitions USING btree (task_id, most_recent) WHERE (most_recent = true)"},
	{"index_tasker_task_transitions_on_task_id_and_sort_key", "CREATE UNIQUE INDEX index_tasker_task_transitions_on_task_id_and_sort_key ON public.tasker_task_transitions USING btree (task_id, sort_key)"},
	{"idx_task_transitions_most_recent", "CREATE INDEX idx_task_transitions_most_recent ON public.tasker_task_transitions USING btree (task_id, most_recent) WHERE (most_recent = true)"},
	{"index_task_transitions_current_state_optimized", "CREATE INDEX index_task_transitions_current_state_optimized ON public.tasker_task_transitions USING btree (task_id, most_recent) WHERE (most_recent = true)"},
	{"index_task_transitions_current_state", "CREATE INDEX index_task_transitions_current_state ON public.tasker_task_transitions USING btree (task_id, created_at)"},
	{"index_tasker_task_transitions_on_sort_key", "CREATE INDEX index_tasker_task_transitions_on_sort_key ON public.tasker_task_transitions USING btree (sort_key)"},
	{"index_tasker_task_transitions_on_task_id", "CREATE INDEX index_tasker_task_transitions_on_task_id ON public.tasker_task_transitions USING btree (task_id)"},

	// Workflow steps (facts §1.3; the three identical (task_id,
	// workflow_step_id) indexes are index_workflow_steps_task_and_*).
	{"idx_steps_active_operations", "CREATE INDEX idx_steps_active_operations ON public.tasker_workflow_steps USING btree (workflow_step_id, task_id) WHERE ((processed = false) OR (processed IS NULL))"},
	{"idx_workflow_steps_task_grouping_active", "CREATE INDEX idx_workflow_steps_task_grouping_active ON public.tasker_workflow_steps USING btree (task_id, workflow_step_id) WHERE ((processed = false) OR (processed IS NULL))"},
	{"idx_workflow_steps_task_readiness", "CREATE INDEX idx_workflow_steps_task_readiness ON public.tasker_workflow_steps USING btree (task_id, processed, workflow_step_id) WHERE (processed = false)"},
	{"index_workflow_steps_backoff_timing", "CREATE INDEX index_workflow_steps_backoff_timing ON public.tasker_workflow_steps USING btree (last_attempted_at, backoff_request_seconds) WHERE (backoff_request_seconds IS NOT NULL)"},
	{"index_workflow_steps_by_task", "CREATE INDEX index_workflow_steps_by_task ON public.tasker_workflow_steps USING btree (task_id)"},
	{"workflow_steps_task_id_index", "CREATE INDEX workflow_steps_task_id_index ON public.tasker_workflow_steps USING btree (task_id)"},
	{"index_workflow_steps_processing_status", "CREATE INDEX index_workflow_steps_processing_status ON public.tasker_workflow_steps USING btree (task_id, processed, in_process)"},
	{"index_workflow_steps_retry_logic", "CREATE INDEX index_workflow_steps_retry_logic ON public.tasker_workflow_steps USING btree (attempts, retry_limit, retryable)"},
	{"index_workflow_steps_retry_status", "CREATE INDEX index_workflow_steps_retry_status ON public.tasker_workflow_steps USING btree (attempts, retry_limit)"},
	{"index_workflow_steps_task_and_id", "CREATE INDEX index_workflow_steps_task_and_id ON public.tasker_workflow_steps USING btree (task_id, workflow_step_id)"},
	{"index_workflow_steps_task_and_step_id", "CREATE INDEX index_workflow_steps_task_and_step_id ON public.tasker_workflow_steps USING btree (task_id, workflow_step_id)"},
	{"index_workflow_steps_task_and_step_optimized", "CREATE INDEX index_workflow_steps_task_and_step_optimized ON public.tasker_workflow_steps USING btree (task_id, workflow_step_id)"},
	{"index_workflow_steps_task_covering", "CREATE INDEX index_workflow_steps_task_covering ON public.tasker_workflow_steps USING btree (task_id) INCLUDE (workflow_step_id, processed, in_process, attempts, retry_limit)"},
	{"workflow_steps_last_attempted_at_index", "CREATE INDEX workflow_steps_last_attempted_at_index ON public.tasker_workflow_steps USING btree (last_attempted_at)"},
	{"workflow_steps_processed_at_index", "CREATE INDEX workflow_steps_processed_at_index ON public.tasker_workflow_steps USING btree (processed_at)"},
	{"workflow_steps_named_step_id_index", "CREATE INDEX workflow_steps_named_step_id_index ON public.tasker_workflow_steps USING btree (named_step_id)"},

	// Tasks (facts §1.3; the GIN pairs are tasks_*_idx and tasks_*_idx1).
	{"idx_tasks_active_operations", "CREATE INDEX idx_tasks_active_operations ON public.tasker_tasks USING btree (task_id) WHERE ((complete = false) OR (complete IS NULL))"},
	{"idx_tasks_active_workflow_summary", "CREATE INDEX idx_tasks_active_workflow_summary ON public.tasker_tasks USING btree (task_id, complete) WHERE ((complete = false) OR (complete IS NULL))"},
	{"idx_tasks_completion_status_created", "CREATE INDEX idx_tasks_completion_status_created ON public.tasker_tasks USING btree (complete, created_at, task_id)"},
	{"index_tasks_on_identity_hash", "CREATE UNIQUE INDEX index_tasks_on_identity_hash ON public.tasker_tasks USING btree (identity_hash)"},
	{"tasks_identity_hash_index", "CREATE INDEX tasks_identity_hash_index ON public.tasker_tasks USING btree (identity_hash)"},
	{"tasks_named_task_id_index", "CREATE INDEX tasks_named_task_id_index ON public.tasker_tasks USING btree (named_task_id)"},
	{"tasks_requested_at_index", "CREATE INDEX tasks_requested_at_index ON public.tasker_tasks USING btree (requested_at)"},
	{"tasks_source_system_index", "CREATE INDEX tasks_source_system_index ON public.tasker_tasks USING btree (source_system)"},
	{"tasks_context_idx", "CREATE INDEX tasks_context_idx ON public.tasker_tasks USING gin (context)"},
	{"tasks_context_idx1", "CREATE INDEX tasks_context_idx1 ON public.tasker_tasks USING gin (context jsonb_path_ops)"},
	{"tasks_tags_idx", "CREATE INDEX tasks_tags_idx ON public.tasker_tasks USING gin (tags)"},
	{"tasks_tags_idx1", "CREATE INDEX tasks_tags_idx1 ON public.tasker_tasks USING gin (tags jsonb_path_ops)"},

	// Edges (facts §1.3: composites several times over, single-column
	// indexes on each side).
	{"idx_step_edges_from_to", "CREATE INDEX idx_step_edges_from_to ON public.tasker_workflow_step_edges USING btree (from_step_id, to_step_id)"},
	{"index_step_edges_from_to_composite", "CREATE INDEX index_step_edges_from_to_composite ON public.tasker_workflow_step_edges USING btree (from_step_id, to_step_id)"},
	{"idx_step_edges_to_from", "CREATE INDEX idx_step_edges_to_from ON public.tasker_workflow_step_edges USING btree (to_step_id, from_step_id)"},
	{"index_step_edges_to_from_composite", "CREATE INDEX index_step_edges_to_from_composite ON public.tasker_workflow_step_edges USING btree (to_step_id, from_step_id)"},
	{"index_step_edges_dependency_pair", "CREATE INDEX index_step_edges_dependency_pair ON public.tasker_workflow_step_edges USING btree (to_step_id, from_step_id)"},
	{"idx_workflow_step_edges_dependency_lookup", "CREATE INDEX idx_workflow_step_edges_dependency_lookup ON public.tasker_workflow_step_edges USING btree (to_step_id, from_step_id)"},
	{"index_workflow_step_edges_dependency_lookup", "CREATE INDEX index_workflow_step_edges_dependency_lookup ON public.tasker_workflow_step_edges USING btree (to_step_id, from_step_id)"},
	{"index_tasker_workflow_step_edges_on_from_step_id", "CREATE INDEX index_tasker_workflow_step_edges_on_from_step_id ON public.tasker_workflow_step_edges USING btree (from_step_id)"},
	{"index_step_edges_from_step_for_children", "CREATE INDEX index_step_edges_from_step_for_children ON public.tasker_workflow_step_edges USING btree (from_step_id)"},
	{"index_step_edges_parent_lookup", "CREATE INDEX index_step_edges_parent_lookup ON public.tasker_workflow_step_edges USING btree (from_step_id)"},
	{"index_tasker_workflow_step_edges_on_to_step_id", "CREATE INDEX index_tasker_workflow_step_edges_on_to_step_id ON public.tasker_workflow_step_edges USING btree (to_step_id)"},
	{"index_step_edges_to_step_for_parents", "CREATE INDEX index_step_edges_to_step_for_parents ON public.tasker_workflow_step_edges USING btree (to_step_id)"},
	{"index_step_edges_child_lookup", "CREATE INDEX index_step_edges_child_lookup ON public.tasker_workflow_step_edges USING btree (to_step_id)"},

	// Names and namespaces: the unique indexes of facts §1.1 and §1.3, the
	// GIN indexes on configuration and annotation, and the plain indexes the
	// facts leave out (name columns, foreign key columns).
	{"named_tasks_namespace_name_version_unique", "CREATE UNIQUE INDEX named_tasks_namespace_name_version_unique ON public.tasker_named_tasks USING btree (task_namespace_id, name, version)"},
	{"named_tasks_name_index", "CREATE INDEX named_tasks_name_index ON public.tasker_named_tasks USING btree (name)"},
	{"named_tasks_task_namespace_id_index", "CREATE INDEX named_tasks_task_namespace_id_index ON public.tasker_named_tasks USING btree (task_namespace_id)"},
	{"named_tasks_version_index", "CREATE INDEX named_tasks_version_index ON public.tasker_named_tasks USING btree (version)"},
	{"named_tasks_configuration_gin_index", "CREATE INDEX named_tasks_configuration_gin_index ON public.tasker_named_tasks USING gin (configuration)"},
	{"task_namespaces_name_unique", "CREATE UNIQUE INDEX task_namespaces_name_unique ON public.tasker_task_namespaces USING btree (name)"},
	{"task_namespaces_name_index", "CREATE INDEX task_namespaces_name_index ON public.tasker_task_namespaces USING btree (name)"},
	{"named_step_by_system_uniq", "CREATE UNIQUE INDEX named_step_by_system_uniq ON public.tasker_named_steps USING btree (dependent_system_id, name)"},
	{"named_steps_dependent_system_id_index", "CREATE INDEX named_steps_dependent_system_id_index ON public.tasker_named_steps USING btree (dependent_system_id)"},
	{"named_steps_name_index", "CREATE INDEX named_steps_name_index ON public.tasker_named_steps USING btree (name)"},
	{"named_tasks_steps_ids_unique", "CREATE UNIQUE INDEX named_tasks_steps_ids_unique ON public.tasker_named_tasks_named_steps USING btree (named_task_id, named_step_id)"},
	{"named_tasks_named_steps_named_step_id_index", "CREATE INDEX named_tasks_named_steps_named_step_id_index ON public.tasker_named_tasks_named_steps USING btree (named_step_id)"},
	{"named_tasks_named_steps_named_task_id_index", "CREATE INDEX named_tasks_named_steps_named_task_id_index ON public.tasker_named_tasks_named_steps USING btree (named_task_id)"},
	{"dependent_systems_name_unique", "CREATE UNIQUE INDEX dependent_systems_name_unique ON public.tasker_dependent_systems USING btree (name)"},
	{"dependent_systems_name_index", "CREATE INDEX dependent_systems_name_index ON public.tasker_dependent_systems USING btree (name)"},
	{"dependent_system_object_maps_dependent_system_one_id_dependent_", "CREATE UNIQUE INDEX dependent_system_object_maps_dependent_system_one_id_dependent_ ON public.tasker_dependent_system_object_maps USING btree (dependent_system_one_id, dependent_system_two_id, remote_id_one, remote_id_two)"},
	{"dependent_system_object_maps_dependent_system_one_id_index", "CREATE INDEX dependent_system_object_maps_dependent_system_one_id_index ON public.tasker_dependent_system_object_maps USING btree (dependent_system_one_id)"},
	{"dependent_system_object_maps_dependent_system_two_id_index", "CREATE INDEX dependent_system_object_maps_dependent_system_two_id_index ON public.tasker_dependent_system_object_maps USING btree (dependent_system_two_id)"},
	{"dependent_system_object_maps_remote_id_one_index", "CREATE INDEX dependent_system_object_maps_remote_id_one_index ON public.tasker_dependent_system_object_maps USING btree (remote_id_one)"},
	{"dependent_system_object_maps_remote_id_two_index", "CREATE INDEX dependent_system_object_maps_remote_id_two_index ON public.tasker_dependent_system_object_maps USING btree (remote_id_two)"},
	{"annotation_types_name_unique", "CREATE UNIQUE INDEX annotation_types_name_unique ON public.tasker_annotation_types USING btree (name)"},
	{"annotation_types_name_index", "CREATE INDEX annotation_types_name_index ON public.tasker_annotation_types USING btree (name)"},
	{"task_annotations_task_id_index", "CREATE INDEX task_annotations_task_id_index ON public.tasker_task_annotations USING btree (task_id)"},
	{"task_annotations_annotation_type_id_index", "CREATE INDEX task_annotations_annotation_type_id_index ON public.tasker_task_annotations USING btree (annotation_type_id)"},
	{"task_annotations_annotation_idx", "CREATE INDEX task_annotations_annotation_idx ON public.tasker_task_annotations USING gin (annotation)"},
	{"task_annotations_annotation_idx1", "CREATE INDEX task_annotations_annotation_idx1 ON public.tasker_task_annotations USING gin (annotation jsonb_path_ops)"},

	// Primary keys (schema.sql's ADD CONSTRAINT ... PRIMARY KEY).
	{"tasker_annotation_types_pkey", "CREATE UNIQUE INDEX tasker_annotation_types_pkey ON public.tasker_annotation_types USING btree (annotation_type_id)"},
	{"tasker_dependent_system_object_maps_pkey", "CREATE UNIQUE INDEX tasker_dependent_system_object_maps_pkey ON public.tasker_dependent_system_object_maps USING btree (dependent_system_object_map_id)"},
	{"tasker_dependent_systems_pkey", "CREATE UNIQUE INDEX tasker_dependent_systems_pkey ON public.tasker_dependent_systems USING btree (dependent_system_id)"},
	{"tasker_named_steps_pkey", "CREATE UNIQUE INDEX tasker_named_steps_pkey ON public.tasker_named_steps USING btree (named_step_id)"},
	{"tasker_named_tasks_named_steps_pkey", "CREATE UNIQUE INDEX tasker_named_tasks_named_steps_pkey ON public.tasker_named_tasks_named_steps USING btree (id)"},
	{"tasker_named_tasks_pkey", "CREATE UNIQUE INDEX tasker_named_tasks_pkey ON public.tasker_named_tasks USING btree (named_task_id)"},
	{"tasker_task_annotations_pkey", "CREATE UNIQUE INDEX tasker_task_annotations_pkey ON public.tasker_task_annotations USING btree (task_annotation_id)"},
	{"tasker_task_namespaces_pkey", "CREATE UNIQUE INDEX tasker_task_namespaces_pkey ON public.tasker_task_namespaces USING btree (task_namespace_id)"},
	{"tasker_task_transitions_pkey", "CREATE UNIQUE INDEX tasker_task_transitions_pkey ON public.tasker_task_transitions USING btree (id)"},
	{"tasker_tasks_pkey", "CREATE UNIQUE INDEX tasker_tasks_pkey ON public.tasker_tasks USING btree (task_id)"},
	{"tasker_workflow_step_edges_pkey", "CREATE UNIQUE INDEX tasker_workflow_step_edges_pkey ON public.tasker_workflow_step_edges USING btree (id)"},
	{"tasker_workflow_step_transitions_pkey", "CREATE UNIQUE INDEX tasker_workflow_step_transitions_pkey ON public.tasker_workflow_step_transitions USING btree (id)"},
	{"tasker_workflow_steps_pkey", "CREATE UNIQUE INDEX tasker_workflow_steps_pkey ON public.tasker_workflow_steps USING btree (workflow_step_id)"},
}

// legacyIndexes are names an earlier version of tasker.sql used instead of
// Tasker's; Apply must drop them from a database it created back then.
var legacyIndexes = []string{
	"CREATE INDEX index_named_tasks_on_task_namespace_id ON tasker_named_tasks (task_namespace_id)",
	"CREATE INDEX index_named_tasks_on_version ON tasker_named_tasks (version)",
	"CREATE INDEX index_named_tasks_configuration_gin ON tasker_named_tasks USING gin (configuration)",
	"CREATE INDEX index_step_edges_from_to ON tasker_workflow_step_edges (from_step_id, to_step_id)",
	"CREATE INDEX index_step_edges_to_from ON tasker_workflow_step_edges (to_step_id, from_step_id)",
}

// A fresh database gets exactly Tasker's indexes: each one present with
// Tasker's definition, and none Tasker lacks, which would give the planner
// choices a real Tasker database does not offer.
func TestApplyCreatesTaskersIndexes(t *testing.T) {
	db := pgtest.New(t)
	conn := db.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := schema.Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// A database from before the Tasker names, re-applied: idempotent, and it
	// converges on Tasker's set.
	for _, ddl := range legacyIndexes {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	if err := schema.Apply(ctx, conn); err != nil {
		t.Fatalf("second apply: %v", err)
	}

	got := indexDefs(ctx, t, conn, "public")

	compareIndexes(t, got, taskerIndexes, "Tasker's")
	if len(taskerIndexes) != 99 { // 86 indexes and 13 primary keys
		t.Errorf("the table lists %d indexes, Tasker's schema has 99", len(taskerIndexes))
	}
}

// indexDefs is every index of a schema, by name, as pg_indexes prints it.
func indexDefs(ctx context.Context, t *testing.T, conn *pgx.Conn, schema string) map[string]string {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatal(err)
		}
		got[name] = def
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// compareIndexes reports every index of want (name and pg_indexes
// definition) that got lacks or defines otherwise, every index got has
// beyond want, and any name want lists twice; whose names the schema.
func compareIndexes(t *testing.T, got map[string]string, want []struct{ name, def string }, whose string) {
	t.Helper()
	listed := map[string]bool{}
	for _, ix := range want {
		if listed[ix.name] {
			t.Errorf("%s is listed twice", ix.name)
		}
		listed[ix.name] = true
		switch def, ok := got[ix.name]; {
		case !ok:
			t.Errorf("index %s is missing", ix.name)
		case def != ix.def:
			t.Errorf("index %s differs from %s:\n got: %s\nwant: %s", ix.name, whose, def, ix.def)
		}
	}
	var extra []string
	for name := range got {
		if !listed[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		t.Errorf("index %s is not in %s schema: %s", name, whose, got[name])
	}
}
