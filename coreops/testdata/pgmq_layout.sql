-- PGMQ's documented layout, for the tests when the real PGMQ SQL is not at
-- hand (scripts/e2e-pgmq.sh runs the same tests against the real one): the
-- pgmq schema, its meta table, one pgmq.q_<name> table per queue with an
-- identity msg_id, and pgmq.metrics_all() returning pgmq.metrics_result
-- (queue_name, queue_length, newest_msg_age_sec, oldest_msg_age_sec,
-- total_messages, scrape_time, queue_visible_length): the live table's count
-- and message ages in whole seconds, and the msg_id sequence's last value
-- (0 before the first message). Written for the tests from PGMQ's docs.
CREATE SCHEMA IF NOT EXISTS pgmq;
CREATE TABLE IF NOT EXISTS pgmq.meta (
    queue_name varchar UNIQUE NOT NULL,
    is_partitioned boolean NOT NULL DEFAULT false,
    is_unlogged boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
DO $$
BEGIN
    IF to_regtype('pgmq.metrics_result') IS NULL THEN
        CREATE TYPE pgmq.metrics_result AS (
            queue_name text, queue_length bigint, newest_msg_age_sec int, oldest_msg_age_sec int,
            total_messages bigint, scrape_time timestamptz, queue_visible_length bigint);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION pgmq.create(queue_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS pgmq.%I (
        msg_id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
        read_ct int NOT NULL DEFAULT 0,
        enqueued_at timestamptz NOT NULL DEFAULT now(),
        vt timestamptz NOT NULL,
        message jsonb,
        headers jsonb)', 'q_' || queue_name);
    INSERT INTO pgmq.meta (queue_name) VALUES (queue_name) ON CONFLICT DO NOTHING;
END $$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE id bigint;
BEGIN
    EXECUTE format('INSERT INTO pgmq.%I (vt, message) VALUES (clock_timestamp(), $1) RETURNING msg_id', 'q_' || queue_name)
        INTO id USING msg;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION pgmq.delete(queue_name text, id bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
    EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', 'q_' || queue_name) USING id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END $$;

CREATE OR REPLACE FUNCTION pgmq.metrics(queue_name text) RETURNS pgmq.metrics_result LANGUAGE plpgsql AS $$
DECLARE r pgmq.metrics_result;
BEGIN
    EXECUTE format($q$
        SELECT %L, count(*),
               EXTRACT(epoch FROM now() - max(enqueued_at))::int,
               EXTRACT(epoch FROM now() - min(enqueued_at))::int,
               (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgmq.%I),
               now(),
               count(*) FILTER (WHERE vt <= now())
        FROM pgmq.%I$q$, queue_name, 'q_' || queue_name || '_msg_id_seq', 'q_' || queue_name)
        INTO r;
    RETURN r;
END $$;

CREATE OR REPLACE FUNCTION pgmq.metrics_all() RETURNS SETOF pgmq.metrics_result LANGUAGE plpgsql AS $$
DECLARE q record;
BEGIN
    FOR q IN SELECT queue_name FROM pgmq.meta LOOP
        RETURN NEXT pgmq.metrics(q.queue_name);
    END LOOP;
END $$;
