-- tasker-core-compatible schema (schema `tasker`: tables, constraints and
-- indexes), written for tasker-sidecar's demos and tests from tasker-core's
-- migrations (tasker-systems/tasker-core, migrations/
-- 20260110000001_schema_and_tables.sql, 20260110000002_constraints_and_indexes.sql
-- and 20260120000001_add_identity_strategy.sql).
-- Idempotent: every statement can run against a database that already has it.
--
-- Column names, types, nullability and defaults, constraint names and every
-- index follow the engine's migrations, so that a query the sidecar runs here
-- plans and behaves as on a tasker-core database. Left out on purpose: the
-- engine's functions, triggers and views (…0003_sql_functions.sql and the view
-- step_dag_relationships); the sidecar never calls or reads them, and it must
-- not depend on them existing.

CREATE SCHEMA IF NOT EXISTS tasker;

-- UUIDv7 keys. The engine's column defaults call uuid_generate_v7(): from the
-- pg_uuidv7 extension on PostgreSQL 17, an alias of the native uuidv7() on 18
-- (…0001_schema_and_tables.sql). Older servers have neither, so below 18 this
-- file installs public.uuidv7() in plpgsql, the function tasker-core expects
-- to find there on such servers, and the same alias on top of it.
DO $uuid$
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        CREATE OR REPLACE FUNCTION tasker.uuid_generate_v7() RETURNS uuid
            AS $fn$ SELECT uuidv7() $fn$ LANGUAGE sql VOLATILE PARALLEL SAFE;
        RETURN;
    END IF;

    -- RFC 9562 version 7: bytes 0-5 the Unix time in milliseconds, then the
    -- version nibble 7 with 12 bits of sub-millisecond time (the spec's
    -- method 3, as PostgreSQL 18's uuidv7() does, so keys made by one session
    -- sort in creation order), then the variant bits 10 and 62 random bits.
    -- gen_random_uuid() is built in since PostgreSQL 13 and supplies the
    -- random bits without pgcrypto.
    CREATE OR REPLACE FUNCTION public.uuidv7() RETURNS uuid AS $fn$
    DECLARE
        now_ms numeric := extract(epoch FROM clock_timestamp()) * 1000;
        ms bigint := floor(now_ms);
        sub_ms int := floor((now_ms - ms) * 4096);
        b bytea := uuid_send(gen_random_uuid());
    BEGIN
        b := overlay(b PLACING substring(int8send(ms) FROM 3) FROM 1 FOR 6);
        b := set_byte(b, 6, 112 | (sub_ms >> 8));
        b := set_byte(b, 7, sub_ms & 255);
        b := set_byte(b, 8, (get_byte(b, 8) & 63) | 128);
        RETURN encode(b, 'hex')::uuid;
    END
    $fn$ LANGUAGE plpgsql VOLATILE PARALLEL SAFE;

    CREATE OR REPLACE FUNCTION tasker.uuid_generate_v7() RETURNS uuid
        AS $fn$ SELECT public.uuidv7() $fn$ LANGUAGE sql VOLATILE PARALLEL SAFE;
END
$uuid$;

-- Enums: CREATE TYPE has no IF NOT EXISTS.
DO $types$
BEGIN
    IF to_regtype('tasker.dlq_reason') IS NULL THEN
        CREATE TYPE tasker.dlq_reason AS ENUM (
            'staleness_timeout', 'max_retries_exceeded', 'dependency_cycle_detected',
            'worker_unavailable', 'manual_dlq');
    END IF;
    IF to_regtype('tasker.dlq_resolution_status') IS NULL THEN
        CREATE TYPE tasker.dlq_resolution_status AS ENUM (
            'pending', 'manually_resolved', 'permanently_failed', 'cancelled');
    END IF;
    IF to_regtype('tasker.identity_strategy') IS NULL THEN
        CREATE TYPE tasker.identity_strategy AS ENUM ('strict', 'caller_provided', 'always_unique');
    END IF;
END
$types$;

-- Tables, in foreign key order so that every constraint can be declared with
-- its table. Constraint names are the engine's: PostgreSQL's default
-- <table>_pkey for primary keys, the migration's names for the rest.

CREATE TABLE IF NOT EXISTS tasker.task_namespaces (
    task_namespace_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    CONSTRAINT task_namespaces_pkey PRIMARY KEY (task_namespace_uuid),
    CONSTRAINT task_namespaces_name_key UNIQUE (name)
);
-- The engine has a second, identical unique constraint on name. CREATE TABLE
-- would merge the two into one index, so the second is added on its own.
DO $ns$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'task_namespaces_name_unique'
                     AND conrelid = 'tasker.task_namespaces'::regclass) THEN
        ALTER TABLE tasker.task_namespaces ADD CONSTRAINT task_namespaces_name_unique UNIQUE (name);
    END IF;
END
$ns$;
CREATE INDEX IF NOT EXISTS idx_task_namespaces_name ON tasker.task_namespaces (name);

CREATE TABLE IF NOT EXISTS tasker.named_tasks (
    named_task_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    task_namespace_uuid uuid NOT NULL,
    name varchar(64) NOT NULL,
    description varchar(255),
    version varchar(16) DEFAULT '0.1.0' NOT NULL,
    -- Per-template settings, lifecycle thresholds among them.
    configuration jsonb DEFAULT '{}'::jsonb,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    identity_strategy tasker.identity_strategy DEFAULT 'strict' NOT NULL,
    CONSTRAINT named_tasks_pkey PRIMARY KEY (named_task_uuid),
    CONSTRAINT named_tasks_namespace_name_version_unique UNIQUE (task_namespace_uuid, name, version),
    CONSTRAINT named_tasks_task_namespace_uuid_fkey FOREIGN KEY (task_namespace_uuid)
        REFERENCES tasker.task_namespaces (task_namespace_uuid)
);
CREATE INDEX IF NOT EXISTS idx_named_tasks_namespace_uuid ON tasker.named_tasks (task_namespace_uuid);
CREATE INDEX IF NOT EXISTS idx_named_tasks_identity_strategy ON tasker.named_tasks (identity_strategy);
CREATE INDEX IF NOT EXISTS idx_named_tasks_lifecycle_config ON tasker.named_tasks
    USING gin ((configuration -> 'lifecycle')) WHERE (configuration -> 'lifecycle') IS NOT NULL;

CREATE TABLE IF NOT EXISTS tasker.named_steps (
    named_step_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    name varchar(128) NOT NULL,
    description varchar(255),
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    CONSTRAINT named_steps_pkey PRIMARY KEY (named_step_uuid),
    CONSTRAINT named_steps_name_unique UNIQUE (name)
);

CREATE TABLE IF NOT EXISTS tasker.named_tasks_named_steps (
    ntns_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    named_task_uuid uuid NOT NULL,
    named_step_uuid uuid NOT NULL,
    default_retryable boolean DEFAULT true NOT NULL,
    default_max_attempts integer DEFAULT 3 NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    CONSTRAINT named_tasks_named_steps_pkey PRIMARY KEY (ntns_uuid),
    CONSTRAINT named_tasks_named_steps_unique UNIQUE (named_task_uuid, named_step_uuid),
    CONSTRAINT named_tasks_named_steps_named_task_uuid_fkey FOREIGN KEY (named_task_uuid)
        REFERENCES tasker.named_tasks (named_task_uuid),
    CONSTRAINT named_tasks_named_steps_named_step_uuid_fkey FOREIGN KEY (named_step_uuid)
        REFERENCES tasker.named_steps (named_step_uuid)
);

CREATE TABLE IF NOT EXISTS tasker.tasks (
    task_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    named_task_uuid uuid NOT NULL,
    complete boolean DEFAULT false NOT NULL,
    requested_at timestamp without time zone NOT NULL,
    completed_at timestamp without time zone,
    initiator varchar(128),
    source_system varchar(128),
    reason varchar(128),
    tags jsonb,
    context jsonb,
    identity_hash varchar(128) NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    -- The engine's tracing id (a UUIDv7 it generates when the caller gives none).
    correlation_id uuid NOT NULL,
    parent_correlation_id uuid,
    CONSTRAINT tasks_pkey PRIMARY KEY (task_uuid),
    CONSTRAINT tasks_named_task_uuid_fkey FOREIGN KEY (named_task_uuid)
        REFERENCES tasker.named_tasks (named_task_uuid)
);
CREATE INDEX IF NOT EXISTS idx_tasks_complete ON tasker.tasks (complete);
CREATE INDEX IF NOT EXISTS idx_tasks_completed_at ON tasker.tasks (completed_at);
CREATE INDEX IF NOT EXISTS idx_tasks_correlation_hierarchy ON tasker.tasks
    (parent_correlation_id, correlation_id) WHERE parent_correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_tasks_correlation_id ON tasker.tasks (correlation_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_identity_hash ON tasker.tasks (identity_hash);
CREATE INDEX IF NOT EXISTS idx_tasks_named_task_uuid ON tasker.tasks (named_task_uuid);
CREATE INDEX IF NOT EXISTS idx_tasks_parent_correlation_id ON tasker.tasks (parent_correlation_id)
    WHERE parent_correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_tasks_priority ON tasker.tasks (priority);
CREATE INDEX IF NOT EXISTS idx_tasks_requested_at ON tasker.tasks (requested_at);
CREATE INDEX IF NOT EXISTS idx_tasks_source_system ON tasker.tasks (source_system);
CREATE INDEX IF NOT EXISTS idx_tasks_tags_gin ON tasker.tasks USING gin (tags);
CREATE INDEX IF NOT EXISTS idx_tasks_tags_gin_path ON tasker.tasks USING gin (tags jsonb_path_ops);
CREATE INDEX IF NOT EXISTS idx_tasks_active_with_priority_covering ON tasker.tasks
    (complete, priority, task_uuid) INCLUDE (named_task_uuid, requested_at) WHERE complete = false;
CREATE INDEX IF NOT EXISTS idx_tasks_uuid_temporal ON tasker.tasks (task_uuid, created_at);

CREATE TABLE IF NOT EXISTS tasker.workflow_steps (
    workflow_step_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    task_uuid uuid NOT NULL,
    named_step_uuid uuid NOT NULL,
    retryable boolean DEFAULT true NOT NULL,
    -- Rails' retry_limit.
    max_attempts integer DEFAULT 3,
    in_process boolean DEFAULT false NOT NULL,
    processed boolean DEFAULT false NOT NULL,
    processed_at timestamp without time zone,
    attempts integer,
    last_attempted_at timestamp without time zone,
    backoff_request_seconds integer,
    inputs jsonb,
    results jsonb,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    checkpoint jsonb,
    CONSTRAINT workflow_steps_pkey PRIMARY KEY (workflow_step_uuid),
    CONSTRAINT uq_workflow_step_task_named_step UNIQUE (task_uuid, named_step_uuid),
    CONSTRAINT workflow_steps_task_uuid_fkey FOREIGN KEY (task_uuid)
        REFERENCES tasker.tasks (task_uuid),
    CONSTRAINT workflow_steps_named_step_uuid_fkey FOREIGN KEY (named_step_uuid)
        REFERENCES tasker.named_steps (named_step_uuid)
);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_named_step_uuid ON tasker.workflow_steps (named_step_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_task_uuid ON tasker.workflow_steps (task_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_active_operations ON tasker.workflow_steps
    (workflow_step_uuid, task_uuid) WHERE processed = false OR processed IS NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_steps_checkpoint_cursor ON tasker.workflow_steps
    ((checkpoint ->> 'cursor')) WHERE checkpoint IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_steps_checkpoint_exists ON tasker.workflow_steps
    (workflow_step_uuid) WHERE checkpoint IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_steps_processed_at ON tasker.workflow_steps (processed_at);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_processing_status ON tasker.workflow_steps
    (task_uuid, processed, in_process);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_ready_covering ON tasker.workflow_steps
    (task_uuid, processed, in_process) INCLUDE (workflow_step_uuid, attempts, max_attempts, retryable)
    WHERE processed = false;
CREATE INDEX IF NOT EXISTS idx_workflow_steps_retry_logic ON tasker.workflow_steps (attempts, max_attempts, retryable);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_retry_status ON tasker.workflow_steps (attempts, max_attempts);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_task_covering ON tasker.workflow_steps
    (task_uuid) INCLUDE (workflow_step_uuid, processed, in_process, attempts, max_attempts);
CREATE INDEX IF NOT EXISTS idx_workflow_steps_task_grouping_active ON tasker.workflow_steps
    (task_uuid, workflow_step_uuid) WHERE processed = false OR processed IS NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_steps_task_readiness ON tasker.workflow_steps
    (task_uuid, processed, workflow_step_uuid) WHERE processed = false;
CREATE INDEX IF NOT EXISTS idx_workflow_steps_transitive_deps ON tasker.workflow_steps
    (workflow_step_uuid, named_step_uuid) INCLUDE (task_uuid, processed);

CREATE TABLE IF NOT EXISTS tasker.workflow_step_edges (
    workflow_step_edge_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    from_step_uuid uuid NOT NULL,
    to_step_uuid uuid NOT NULL,
    name varchar NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    CONSTRAINT workflow_step_edges_pkey PRIMARY KEY (workflow_step_edge_uuid),
    CONSTRAINT unique_edge_per_step_pair UNIQUE (from_step_uuid, to_step_uuid, name),
    CONSTRAINT workflow_step_edges_from_step_uuid_fkey FOREIGN KEY (from_step_uuid)
        REFERENCES tasker.workflow_steps (workflow_step_uuid),
    CONSTRAINT workflow_step_edges_to_step_uuid_fkey FOREIGN KEY (to_step_uuid)
        REFERENCES tasker.workflow_steps (workflow_step_uuid)
);
CREATE INDEX IF NOT EXISTS idx_workflow_step_edges_from_step ON tasker.workflow_step_edges (from_step_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_step_edges_to_step ON tasker.workflow_step_edges (to_step_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_step_edges_from_step_name ON tasker.workflow_step_edges (from_step_uuid, name);

-- Transitions. The engine writes sort_key = max + 1 and flips most_recent in
-- the same transaction (crates/tasker-shared/src/models/core/task_transition.rs),
-- but (task_uuid, sort_key) is not unique: readers break ties on created_at,
-- then the key. One most_recent row per task is enforced by a partial unique
-- index. The CHECK constraints hold the engine's 12 task states
-- (crates/tasker-shared/src/state_machine/states.rs); each state is cast to
-- varchar as in the migration, so that the stored constraint reads as the
-- engine's does.
CREATE TABLE IF NOT EXISTS tasker.task_transitions (
    task_transition_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    task_uuid uuid NOT NULL,
    to_state varchar NOT NULL,
    from_state varchar,
    metadata jsonb DEFAULT '{}'::jsonb,
    sort_key integer NOT NULL,
    most_recent boolean DEFAULT false NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    processor_uuid uuid,
    -- transition_task_state_atomic writes here instead of metadata.
    transition_metadata jsonb DEFAULT '{}'::jsonb,
    CONSTRAINT task_transitions_pkey PRIMARY KEY (task_transition_uuid),
    CONSTRAINT task_transitions_task_uuid_fkey FOREIGN KEY (task_uuid)
        REFERENCES tasker.tasks (task_uuid),
    CONSTRAINT chk_task_transitions_from_state CHECK (from_state IS NULL OR from_state::text = ANY (ARRAY[
        'pending'::varchar, 'initializing'::varchar, 'enqueuing_steps'::varchar, 'steps_in_process'::varchar,
        'evaluating_results'::varchar, 'waiting_for_dependencies'::varchar, 'waiting_for_retry'::varchar, 'blocked_by_failures'::varchar,
        'complete'::varchar, 'error'::varchar, 'cancelled'::varchar, 'resolved_manually'::varchar]::text[])),
    CONSTRAINT chk_task_transitions_to_state CHECK (to_state::text = ANY (ARRAY[
        'pending'::varchar, 'initializing'::varchar, 'enqueuing_steps'::varchar, 'steps_in_process'::varchar,
        'evaluating_results'::varchar, 'waiting_for_dependencies'::varchar, 'waiting_for_retry'::varchar, 'blocked_by_failures'::varchar,
        'complete'::varchar, 'error'::varchar, 'cancelled'::varchar, 'resolved_manually'::varchar]::text[]))
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_task_transitions_uuid_most_recent ON tasker.task_transitions
    (task_uuid, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_task_transitions_uuid_sort_key ON tasker.task_transitions (task_uuid, sort_key);
CREATE INDEX IF NOT EXISTS idx_task_transitions_processor ON tasker.task_transitions (processor_uuid)
    WHERE processor_uuid IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_task_transitions_state_lookup ON tasker.task_transitions
    (task_uuid, to_state, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_task_transitions_timeout ON tasker.task_transitions
    ((transition_metadata ->> 'timeout_at')) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_task_transitions_uuid_temporal ON tasker.task_transitions
    (task_transition_uuid, created_at);
CREATE INDEX IF NOT EXISTS idx_task_transitions_most_recent ON tasker.task_transitions (most_recent)
    WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_task_transitions_task_uuid ON tasker.task_transitions (task_uuid);

-- The same for steps, with the engine's 10 step states.
CREATE TABLE IF NOT EXISTS tasker.workflow_step_transitions (
    workflow_step_transition_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    workflow_step_uuid uuid NOT NULL,
    to_state varchar NOT NULL,
    from_state varchar,
    metadata jsonb DEFAULT '{}'::jsonb,
    sort_key integer NOT NULL,
    most_recent boolean DEFAULT false NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL,
    CONSTRAINT workflow_step_transitions_pkey PRIMARY KEY (workflow_step_transition_uuid),
    CONSTRAINT workflow_step_transitions_workflow_step_uuid_fkey FOREIGN KEY (workflow_step_uuid)
        REFERENCES tasker.workflow_steps (workflow_step_uuid),
    CONSTRAINT chk_workflow_step_transitions_from_state CHECK (from_state IS NULL OR from_state::text = ANY (ARRAY[
        'pending'::varchar, 'enqueued'::varchar, 'in_progress'::varchar,
        'enqueued_for_orchestration'::varchar, 'enqueued_as_error_for_orchestration'::varchar, 'waiting_for_retry'::varchar,
        'complete'::varchar, 'error'::varchar, 'cancelled'::varchar,
        'resolved_manually'::varchar]::text[])),
    CONSTRAINT chk_workflow_step_transitions_to_state CHECK (to_state::text = ANY (ARRAY[
        'pending'::varchar, 'enqueued'::varchar, 'in_progress'::varchar,
        'enqueued_for_orchestration'::varchar, 'enqueued_as_error_for_orchestration'::varchar, 'waiting_for_retry'::varchar,
        'complete'::varchar, 'error'::varchar, 'cancelled'::varchar,
        'resolved_manually'::varchar]::text[]))
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_workflow_step_transitions_uuid_most_recent ON tasker.workflow_step_transitions
    (workflow_step_uuid, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_workflow_step_transitions_uuid_sort_key ON tasker.workflow_step_transitions
    (workflow_step_uuid, sort_key);
CREATE INDEX IF NOT EXISTS idx_workflow_step_transitions_most_recent ON tasker.workflow_step_transitions (most_recent)
    WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_workflow_step_transitions_step_uuid ON tasker.workflow_step_transitions
    (workflow_step_uuid);
CREATE INDEX IF NOT EXISTS idx_workflow_step_transitions_state_lookup ON tasker.workflow_step_transitions
    (workflow_step_uuid, to_state, most_recent) WHERE most_recent = true;
CREATE INDEX IF NOT EXISTS idx_workflow_step_transitions_uuid_temporal ON tasker.workflow_step_transitions
    (workflow_step_transition_uuid, created_at);

-- Dead-letter queue: an investigation record per stuck task, at most one
-- pending at a time.
CREATE TABLE IF NOT EXISTS tasker.tasks_dlq (
    dlq_entry_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    task_uuid uuid NOT NULL,
    original_state varchar(50) NOT NULL,
    dlq_reason tasker.dlq_reason NOT NULL,
    dlq_timestamp timestamp without time zone DEFAULT now() NOT NULL,
    resolution_status tasker.dlq_resolution_status DEFAULT 'pending' NOT NULL,
    resolution_timestamp timestamp without time zone,
    resolution_notes text,
    resolved_by varchar(255),
    task_snapshot jsonb NOT NULL,
    metadata jsonb,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL,
    CONSTRAINT tasks_dlq_pkey PRIMARY KEY (dlq_entry_uuid),
    CONSTRAINT tasks_dlq_task_uuid_fkey FOREIGN KEY (task_uuid) REFERENCES tasker.tasks (task_uuid)
);
CREATE INDEX IF NOT EXISTS idx_dlq_reason ON tasker.tasks_dlq (dlq_reason);
CREATE INDEX IF NOT EXISTS idx_dlq_resolution_status ON tasker.tasks_dlq (resolution_status, dlq_timestamp);
CREATE INDEX IF NOT EXISTS idx_dlq_task_lookup ON tasker.tasks_dlq (task_uuid);
CREATE INDEX IF NOT EXISTS idx_dlq_timestamp ON tasker.tasks_dlq (dlq_timestamp DESC);
CREATE UNIQUE INDEX IF NOT EXISTS idx_dlq_unique_pending_task ON tasker.tasks_dlq (task_uuid)
    WHERE resolution_status = 'pending';

-- Step results: the engine's trigger trg_step_result_audit fills this from
-- the orchestration hand-off transitions; here nothing does (no triggers).
CREATE TABLE IF NOT EXISTS tasker.workflow_step_result_audit (
    workflow_step_result_audit_uuid uuid DEFAULT tasker.uuid_generate_v7() NOT NULL,
    workflow_step_uuid uuid NOT NULL,
    workflow_step_transition_uuid uuid NOT NULL,
    task_uuid uuid NOT NULL,
    recorded_at timestamp(6) without time zone DEFAULT now() NOT NULL,
    worker_uuid uuid,
    correlation_id uuid,
    success boolean NOT NULL,
    execution_time_ms bigint,
    created_at timestamp(6) without time zone DEFAULT now() NOT NULL,
    updated_at timestamp(6) without time zone DEFAULT now() NOT NULL,
    CONSTRAINT workflow_step_result_audit_pkey PRIMARY KEY (workflow_step_result_audit_uuid),
    CONSTRAINT uq_audit_step_transition UNIQUE (workflow_step_uuid, workflow_step_transition_uuid),
    CONSTRAINT workflow_step_result_audit_workflow_step_uuid_fkey FOREIGN KEY (workflow_step_uuid)
        REFERENCES tasker.workflow_steps (workflow_step_uuid),
    CONSTRAINT workflow_step_result_audit_step_transition_uuid_fkey FOREIGN KEY (workflow_step_transition_uuid)
        REFERENCES tasker.workflow_step_transitions (workflow_step_transition_uuid),
    CONSTRAINT workflow_step_result_audit_task_uuid_fkey FOREIGN KEY (task_uuid)
        REFERENCES tasker.tasks (task_uuid)
);
CREATE INDEX IF NOT EXISTS idx_audit_correlation_id ON tasker.workflow_step_result_audit (correlation_id)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_audit_recorded_at ON tasker.workflow_step_result_audit (recorded_at);
CREATE INDEX IF NOT EXISTS idx_audit_step_uuid ON tasker.workflow_step_result_audit (workflow_step_uuid);
CREATE INDEX IF NOT EXISTS idx_audit_success ON tasker.workflow_step_result_audit (success);
CREATE INDEX IF NOT EXISTS idx_audit_task_uuid ON tasker.workflow_step_result_audit (task_uuid);
CREATE INDEX IF NOT EXISTS idx_audit_worker_uuid ON tasker.workflow_step_result_audit (worker_uuid)
    WHERE worker_uuid IS NOT NULL;
