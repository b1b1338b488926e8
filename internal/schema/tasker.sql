-- Tasker-compatible schema (tables, indexes and view), written for tasker-sidecar's
-- demos and tests from the facts in shared/reference/tasker-facts.md §1.
-- Idempotent: every statement can run against a database that already has it.
-- Column types, nullability and defaults follow Tasker's schema.sql exactly,
-- because the sidecar's queries must behave identically on both.
--
-- Indexes: every index of Tasker's db/init/schema.sql (facts §1.3 cites
-- schema.sql:1535-2134), with Tasker's names, columns and partial predicates,
-- duplicates and the dead 'failed' index included, and none that Tasker lacks:
-- the planner must have exactly the choices it has on a real Tasker database,
-- or demos and benchmarks would flatter the sidecar. Predicates are written in
-- the form pg_dump printed them, so pg_indexes.indexdef reads as in Tasker's
-- dump (schema_test.go compares them). Facts §1.3 names most of them; those
-- it only describes ("three identical (task_id, workflow_step_id) indexes",
-- "GIN ... jsonb_path_ops", "single-column from/to indexes", the unique name
-- indexes) and the few it leaves out (the plain *_name_index and foreign key
-- column indexes) take their names and definitions from Tasker's schema.sql
-- (jcoletaylor/tasker, same in ea699def and 94d36f57).

-- Indexes this file created under names of its own before it used Tasker's;
-- dropped so that a re-applied demo database converges on Tasker's set. No
-- Tasker database has these names, so there the drops do nothing.
DROP INDEX IF EXISTS index_named_tasks_on_task_namespace_id;
DROP INDEX IF EXISTS index_named_tasks_on_version;
DROP INDEX IF EXISTS index_named_tasks_configuration_gin;
DROP INDEX IF EXISTS index_step_edges_from_to;
DROP INDEX IF EXISTS index_step_edges_to_from;

CREATE TABLE IF NOT EXISTS tasker_annotation_types (
    annotation_type_id serial PRIMARY KEY,
    name varchar(64) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS annotation_types_name_unique ON tasker_annotation_types (name);
CREATE INDEX IF NOT EXISTS annotation_types_name_index ON tasker_annotation_types (name);

CREATE TABLE IF NOT EXISTS tasker_dependent_systems (
    dependent_system_id serial PRIMARY KEY,
    name varchar(64) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dependent_systems_name_unique ON tasker_dependent_systems (name);
CREATE INDEX IF NOT EXISTS dependent_systems_name_index ON tasker_dependent_systems (name);

CREATE TABLE IF NOT EXISTS tasker_dependent_system_object_maps (
    dependent_system_object_map_id bigserial PRIMARY KEY,
    dependent_system_one_id integer NOT NULL REFERENCES tasker_dependent_systems (dependent_system_id),
    dependent_system_two_id integer NOT NULL REFERENCES tasker_dependent_systems (dependent_system_id),
    remote_id_one varchar(128) NOT NULL,
    remote_id_two varchar(128) NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dependent_system_object_maps_dependent_system_one_id_dependent_ ON tasker_dependent_system_object_maps
    (dependent_system_one_id, dependent_system_two_id, remote_id_one, remote_id_two);
CREATE INDEX IF NOT EXISTS dependent_system_object_maps_dependent_system_one_id_index
    ON tasker_dependent_system_object_maps (dependent_system_one_id);
CREATE INDEX IF NOT EXISTS dependent_system_object_maps_dependent_system_two_id_index
    ON tasker_dependent_system_object_maps (dependent_system_two_id);
CREATE INDEX IF NOT EXISTS dependent_system_object_maps_remote_id_one_index ON tasker_dependent_system_object_maps (remote_id_one);
CREATE INDEX IF NOT EXISTS dependent_system_object_maps_remote_id_two_index ON tasker_dependent_system_object_maps (remote_id_two);

CREATE TABLE IF NOT EXISTS tasker_task_namespaces (
    task_namespace_id serial PRIMARY KEY,
    name varchar(64) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS task_namespaces_name_unique ON tasker_task_namespaces (name);
CREATE INDEX IF NOT EXISTS task_namespaces_name_index ON tasker_task_namespaces (name);

CREATE TABLE IF NOT EXISTS tasker_named_tasks (
    named_task_id serial PRIMARY KEY,
    name varchar(64) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    task_namespace_id bigint NOT NULL DEFAULT 1 REFERENCES tasker_task_namespaces (task_namespace_id),
    version varchar(16) NOT NULL DEFAULT '0.1.0',
    configuration jsonb DEFAULT '"{}"'::jsonb
);
CREATE UNIQUE INDEX IF NOT EXISTS named_tasks_namespace_name_version_unique ON tasker_named_tasks (task_namespace_id, name, version);
CREATE INDEX IF NOT EXISTS named_tasks_task_namespace_id_index ON tasker_named_tasks (task_namespace_id);
CREATE INDEX IF NOT EXISTS named_tasks_version_index ON tasker_named_tasks (version);
CREATE INDEX IF NOT EXISTS named_tasks_name_index ON tasker_named_tasks (name);
CREATE INDEX IF NOT EXISTS named_tasks_configuration_gin_index ON tasker_named_tasks USING gin (configuration);

CREATE TABLE IF NOT EXISTS tasker_named_steps (
    named_step_id serial PRIMARY KEY,
    dependent_system_id integer NOT NULL REFERENCES tasker_dependent_systems (dependent_system_id),
    name varchar(128) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS named_step_by_system_uniq ON tasker_named_steps (dependent_system_id, name);
CREATE INDEX IF NOT EXISTS named_steps_dependent_system_id_index ON tasker_named_steps (dependent_system_id);
CREATE INDEX IF NOT EXISTS named_steps_name_index ON tasker_named_steps (name);

CREATE TABLE IF NOT EXISTS tasker_named_tasks_named_steps (
    id serial PRIMARY KEY,
    named_task_id integer NOT NULL REFERENCES tasker_named_tasks (named_task_id),
    named_step_id integer NOT NULL REFERENCES tasker_named_steps (named_step_id),
    skippable boolean NOT NULL DEFAULT false,
    default_retryable boolean NOT NULL DEFAULT true,
    default_retry_limit integer NOT NULL DEFAULT 3,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS named_tasks_steps_ids_unique ON tasker_named_tasks_named_steps (named_task_id, named_step_id);
CREATE INDEX IF NOT EXISTS named_tasks_named_steps_named_step_id_index ON tasker_named_tasks_named_steps (named_step_id);
CREATE INDEX IF NOT EXISTS named_tasks_named_steps_named_task_id_index ON tasker_named_tasks_named_steps (named_task_id);

CREATE TABLE IF NOT EXISTS tasker_tasks (
    task_id bigserial PRIMARY KEY,
    named_task_id integer NOT NULL REFERENCES tasker_named_tasks (named_task_id),
    complete boolean NOT NULL DEFAULT false,
    requested_at timestamp without time zone NOT NULL,
    initiator varchar(128),
    source_system varchar(128),
    reason varchar(128),
    bypass_steps json,
    tags jsonb,
    context jsonb,
    identity_hash varchar(128) NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS index_tasks_on_identity_hash ON tasker_tasks (identity_hash);
CREATE INDEX IF NOT EXISTS tasks_identity_hash_index ON tasker_tasks (identity_hash);
CREATE INDEX IF NOT EXISTS tasks_named_task_id_index ON tasker_tasks (named_task_id);
CREATE INDEX IF NOT EXISTS tasks_requested_at_index ON tasker_tasks (requested_at);
CREATE INDEX IF NOT EXISTS tasks_source_system_index ON tasker_tasks (source_system);
CREATE INDEX IF NOT EXISTS idx_tasks_active_operations ON tasker_tasks (task_id) WHERE (complete = false OR complete IS NULL);
CREATE INDEX IF NOT EXISTS idx_tasks_active_workflow_summary ON tasker_tasks (task_id, complete)
    WHERE (complete = false OR complete IS NULL);
-- No plain index on created_at: Tasker has none, so time windows scan (facts §1.3).
CREATE INDEX IF NOT EXISTS idx_tasks_completion_status_created ON tasker_tasks (complete, created_at, task_id);
-- GIN on context and tags twice each, default operator class and jsonb_path_ops.
CREATE INDEX IF NOT EXISTS tasks_context_idx ON tasker_tasks USING gin (context);
CREATE INDEX IF NOT EXISTS tasks_context_idx1 ON tasker_tasks USING gin (context jsonb_path_ops);
CREATE INDEX IF NOT EXISTS tasks_tags_idx ON tasker_tasks USING gin (tags);
CREATE INDEX IF NOT EXISTS tasks_tags_idx1 ON tasker_tasks USING gin (tags jsonb_path_ops);

CREATE TABLE IF NOT EXISTS tasker_workflow_steps (
    workflow_step_id bigserial PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES tasker_tasks (task_id),
    named_step_id integer NOT NULL REFERENCES tasker_named_steps (named_step_id),
    retryable boolean NOT NULL DEFAULT true,
    retry_limit integer DEFAULT 3,
    in_process boolean NOT NULL DEFAULT false,
    processed boolean NOT NULL DEFAULT false,
    processed_at timestamp without time zone,
    attempts integer,
    last_attempted_at timestamp without time zone,
    backoff_request_seconds integer,
    inputs jsonb,
    results jsonb,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    skippable boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS index_workflow_steps_by_task ON tasker_workflow_steps (task_id);
CREATE INDEX IF NOT EXISTS workflow_steps_task_id_index ON tasker_workflow_steps (task_id);
CREATE INDEX IF NOT EXISTS workflow_steps_named_step_id_index ON tasker_workflow_steps (named_step_id);
CREATE INDEX IF NOT EXISTS workflow_steps_last_attempted_at_index ON tasker_workflow_steps (last_attempted_at);
CREATE INDEX IF NOT EXISTS workflow_steps_processed_at_index ON tasker_workflow_steps (processed_at);
CREATE INDEX IF NOT EXISTS idx_steps_active_operations ON tasker_workflow_steps (workflow_step_id, task_id)
    WHERE (processed = false OR processed IS NULL);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_task_grouping_active ON tasker_workflow_steps (task_id, workflow_step_id)
    WHERE (processed = false OR processed IS NULL);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_task_readiness ON tasker_workflow_steps (task_id, processed, workflow_step_id)
    WHERE processed = false;
CREATE INDEX IF NOT EXISTS index_workflow_steps_backoff_timing ON tasker_workflow_steps (last_attempted_at, backoff_request_seconds)
    WHERE backoff_request_seconds IS NOT NULL;
CREATE INDEX IF NOT EXISTS index_workflow_steps_processing_status ON tasker_workflow_steps (task_id, processed, in_process);
CREATE INDEX IF NOT EXISTS index_workflow_steps_retry_logic ON tasker_workflow_steps (attempts, retry_limit, retryable);
CREATE INDEX IF NOT EXISTS index_workflow_steps_retry_status ON tasker_workflow_steps (attempts, retry_limit);
-- The three identical (task_id, workflow_step_id) indexes of facts §1.3.
CREATE INDEX IF NOT EXISTS index_workflow_steps_task_and_id ON tasker_workflow_steps (task_id, workflow_step_id);
CREATE INDEX IF NOT EXISTS index_workflow_steps_task_and_step_id ON tasker_workflow_steps (task_id, workflow_step_id);
CREATE INDEX IF NOT EXISTS index_workflow_steps_task_and_step_optimized ON tasker_workflow_steps (task_id, workflow_step_id);
CREATE INDEX IF NOT EXISTS index_workflow_steps_task_covering ON tasker_workflow_steps (task_id)
    INCLUDE (workflow_step_id, processed, in_process, attempts, retry_limit);

CREATE TABLE IF NOT EXISTS tasker_workflow_step_edges (
    id bigserial PRIMARY KEY,
    from_step_id bigint NOT NULL REFERENCES tasker_workflow_steps (workflow_step_id),
    to_step_id bigint NOT NULL REFERENCES tasker_workflow_steps (workflow_step_id),
    name varchar NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
-- (from, to) twice, (to, from) five times, and three single-column indexes on
-- each side: Tasker's duplicates, kept so that plans match (facts §1.3).
CREATE INDEX IF NOT EXISTS idx_step_edges_from_to ON tasker_workflow_step_edges (from_step_id, to_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_from_to_composite ON tasker_workflow_step_edges (from_step_id, to_step_id);
CREATE INDEX IF NOT EXISTS idx_step_edges_to_from ON tasker_workflow_step_edges (to_step_id, from_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_to_from_composite ON tasker_workflow_step_edges (to_step_id, from_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_dependency_pair ON tasker_workflow_step_edges (to_step_id, from_step_id);
CREATE INDEX IF NOT EXISTS idx_workflow_step_edges_dependency_lookup ON tasker_workflow_step_edges (to_step_id, from_step_id);
CREATE INDEX IF NOT EXISTS index_workflow_step_edges_dependency_lookup ON tasker_workflow_step_edges (to_step_id, from_step_id);
CREATE INDEX IF NOT EXISTS index_tasker_workflow_step_edges_on_from_step_id ON tasker_workflow_step_edges (from_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_from_step_for_children ON tasker_workflow_step_edges (from_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_parent_lookup ON tasker_workflow_step_edges (from_step_id);
CREATE INDEX IF NOT EXISTS index_tasker_workflow_step_edges_on_to_step_id ON tasker_workflow_step_edges (to_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_to_step_for_parents ON tasker_workflow_step_edges (to_step_id);
CREATE INDEX IF NOT EXISTS index_step_edges_child_lookup ON tasker_workflow_step_edges (to_step_id);

CREATE TABLE IF NOT EXISTS tasker_task_transitions (
    id bigserial PRIMARY KEY,
    to_state varchar NOT NULL,
    from_state varchar,
    metadata jsonb DEFAULT '{}'::jsonb,
    sort_key integer NOT NULL,
    most_recent boolean NOT NULL DEFAULT true,
    task_id bigint NOT NULL REFERENCES tasker_tasks (task_id),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS index_tasker_task_transitions_on_task_id_and_most_recent
    ON tasker_task_transitions (task_id, most_recent) WHERE most_recent = true;
CREATE UNIQUE INDEX IF NOT EXISTS index_tasker_task_transitions_on_task_id_and_sort_key
    ON tasker_task_transitions (task_id, sort_key);
CREATE INDEX IF NOT EXISTS idx_task_transitions_most_recent
    ON tasker_task_transitions (task_id, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS index_task_transitions_current_state_optimized
    ON tasker_task_transitions (task_id, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS index_task_transitions_current_state ON tasker_task_transitions (task_id, created_at);
CREATE INDEX IF NOT EXISTS index_tasker_task_transitions_on_sort_key ON tasker_task_transitions (sort_key);
CREATE INDEX IF NOT EXISTS index_tasker_task_transitions_on_task_id ON tasker_task_transitions (task_id);

CREATE TABLE IF NOT EXISTS tasker_workflow_step_transitions (
    id bigserial PRIMARY KEY,
    to_state varchar NOT NULL,
    from_state varchar,
    metadata jsonb DEFAULT '{}'::jsonb,
    sort_key integer NOT NULL,
    most_recent boolean NOT NULL DEFAULT true,
    workflow_step_id bigint NOT NULL REFERENCES tasker_workflow_steps (workflow_step_id),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_on_workflow_step_id_most_recent_97d5374ad6
    ON tasker_workflow_step_transitions (workflow_step_id, most_recent) WHERE most_recent = true;
CREATE UNIQUE INDEX IF NOT EXISTS idx_on_workflow_step_id_sort_key_4d476d7adb
    ON tasker_workflow_step_transitions (workflow_step_id, sort_key);
CREATE INDEX IF NOT EXISTS idx_step_transitions_current_state
    ON tasker_workflow_step_transitions (workflow_step_id, most_recent, to_state) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_step_transitions_most_recent
    ON tasker_workflow_step_transitions (workflow_step_id, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS index_step_transitions_current_state_optimized
    ON tasker_workflow_step_transitions (workflow_step_id, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS index_step_transitions_completed
    ON tasker_workflow_step_transitions (workflow_step_id, to_state) WHERE to_state = 'complete';
CREATE INDEX IF NOT EXISTS index_step_transitions_completed_parents
    ON tasker_workflow_step_transitions (workflow_step_id, most_recent)
    WHERE to_state IN ('complete', 'resolved_manually') AND most_recent = true;
CREATE INDEX IF NOT EXISTS index_step_transitions_current_errors
    ON tasker_workflow_step_transitions (workflow_step_id, most_recent, created_at)
    WHERE to_state = 'error' AND most_recent = true;
-- 'failed' is not a state (facts §2.1): Tasker's index never holds a row. Kept
-- because Tasker has it and it costs every insert a predicate check.
CREATE INDEX IF NOT EXISTS index_step_transitions_failures_with_timing
    ON tasker_workflow_step_transitions (workflow_step_id, to_state, created_at) WHERE to_state = 'failed';
CREATE INDEX IF NOT EXISTS index_step_transitions_for_current_state
    ON tasker_workflow_step_transitions (workflow_step_id, created_at);
CREATE INDEX IF NOT EXISTS index_tasker_workflow_step_transitions_on_sort_key
    ON tasker_workflow_step_transitions (sort_key);
CREATE INDEX IF NOT EXISTS index_tasker_workflow_step_transitions_on_workflow_step_id
    ON tasker_workflow_step_transitions (workflow_step_id);

CREATE TABLE IF NOT EXISTS tasker_task_annotations (
    task_annotation_id bigserial PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES tasker_tasks (task_id),
    annotation_type_id integer NOT NULL REFERENCES tasker_annotation_types (annotation_type_id),
    annotation jsonb,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS task_annotations_task_id_index ON tasker_task_annotations (task_id);
CREATE INDEX IF NOT EXISTS task_annotations_annotation_type_id_index ON tasker_task_annotations (annotation_type_id);
CREATE INDEX IF NOT EXISTS task_annotations_annotation_idx ON tasker_task_annotations USING gin (annotation);
CREATE INDEX IF NOT EXISTS task_annotations_annotation_idx1 ON tasker_task_annotations USING gin (annotation jsonb_path_ops);

-- One row per workflow step with its parents, children and shortest depth from
-- a root (depth walk capped at 50 so a cycle cannot recurse forever).
CREATE OR REPLACE VIEW tasker_step_dag_relationships AS
WITH step_parents AS (
    SELECT to_step_id AS workflow_step_id,
           jsonb_agg(from_step_id ORDER BY from_step_id) AS parent_ids,
           count(*) AS parent_count
    FROM tasker_workflow_step_edges GROUP BY to_step_id
), step_children AS (
    SELECT from_step_id AS workflow_step_id,
           jsonb_agg(to_step_id ORDER BY to_step_id) AS child_ids,
           count(*) AS child_count
    FROM tasker_workflow_step_edges GROUP BY from_step_id
), depth_walk AS (
    WITH RECURSIVE walk(workflow_step_id, depth) AS (
        SELECT ws.workflow_step_id, 0
        FROM tasker_workflow_steps ws
        WHERE NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges e WHERE e.to_step_id = ws.workflow_step_id)
        UNION ALL
        SELECT e.to_step_id, w.depth + 1
        FROM walk w JOIN tasker_workflow_step_edges e ON e.from_step_id = w.workflow_step_id
        WHERE w.depth < 50
    )
    SELECT workflow_step_id, min(depth) AS min_depth FROM walk GROUP BY workflow_step_id
)
SELECT ws.workflow_step_id,
       ws.task_id,
       ws.named_step_id,
       COALESCE(sp.parent_ids, '[]'::jsonb) AS parent_step_ids,
       COALESCE(sc.child_ids, '[]'::jsonb) AS child_step_ids,
       COALESCE(sp.parent_count, 0) AS parent_count,
       COALESCE(sc.child_count, 0) AS child_count,
       COALESCE(sp.parent_count, 0) = 0 AS is_root_step,
       COALESCE(sc.child_count, 0) = 0 AS is_leaf_step,
       dw.min_depth AS min_depth_from_root
FROM tasker_workflow_steps ws
LEFT JOIN step_parents sp ON sp.workflow_step_id = ws.workflow_step_id
LEFT JOIN step_children sc ON sc.workflow_step_id = ws.workflow_step_id
LEFT JOIN depth_walk dw ON dw.workflow_step_id = ws.workflow_step_id;
