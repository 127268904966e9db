-- EventCore schema, version 11: every event stores the schema version of
-- its payload's shape.
--
-- Events written before this migration (and by processes still running
-- the previous release, through version 9's function, during a rolling
-- upgrade) get version 1: the shape they were written in is the first
-- one the application knew. Adding a column with a constant default
-- rewrites nothing; the check is added NOT VALID so existing rows (all at
-- the default) are not scanned under the table lock.
ALTER TABLE __SCHEMA__.eventcore_events
    ADD COLUMN event_version integer NOT NULL DEFAULT 1;
ALTER TABLE __SCHEMA__.eventcore_events
    ADD CONSTRAINT eventcore_events_event_version_check CHECK (event_version >= 1) NOT VALID;

-- The append function, taking each event's schema version. Same body as
-- version 9 otherwise; version 9's function stays for the previous release.
CREATE OR REPLACE FUNCTION __SCHEMA__.eventcore_append(
    p_streams text[],
    p_expected bigint[],
    p_event_stream int[],
    p_event_ids uuid[],
    p_event_types text[],
    p_payloads jsonb[],
    p_metadata jsonb[],
    p_channel text,
    p_lock_timeout_ms bigint,
    p_event_versions int[]
) RETURNS TABLE (
    o_kind text,
    o_stream_id text,
    o_version bigint,
    o_event_id uuid,
    o_transaction_id text,
    o_sequence bigint,
    o_recorded_at timestamptz
) LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    n_streams int := coalesce(array_length(p_streams, 1), 0);
    n_events int := coalesce(array_length(p_event_ids, 1), 0);
    versions bigint[] := '{}';
    added int[] := '{}';
    event_streams text[] := '{}';
    event_versions bigint[] := '{}';
    update_order int[] := '{}';
    found_version bigint;
    has_conflict boolean := false;
    k int;
    j int;
    written record;
BEGIN
    -- The version checks are only sound under SERIALIZABLE.
    IF current_setting('transaction_isolation') <> 'serializable' THEN
        RAISE EXCEPTION 'eventcore_append must run in a SERIALIZABLE transaction, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- The caller's time left bounds every lock wait of this transaction.
    IF p_lock_timeout_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', greatest(p_lock_timeout_ms, 1)::text || 'ms', true);
    END IF;

    -- One index point lookup per stream, so predicate locks stay on tuples.
    FOR k IN 1 .. n_streams LOOP
        found_version := NULL;
        SELECT s.version INTO found_version
            FROM __SCHEMA__.eventcore_streams s WHERE s.stream_id = p_streams[k];
        versions[k] := coalesce(found_version, 0);
        added[k] := 0;
        IF p_expected[k] IS NOT NULL AND p_expected[k] <> versions[k] THEN
            has_conflict := true;
            o_kind := 'conflict';
            o_stream_id := p_streams[k];
            o_version := versions[k];
            RETURN NEXT;
        END IF;
    END LOOP;
    IF has_conflict THEN
        RETURN;
    END IF;

    IF n_events > 0 THEN
        -- Each event's stream and version, numbered on from the stream's version.
        FOR j IN 1 .. n_events LOOP
            k := p_event_stream[j];
            added[k] := added[k] + 1;
            event_streams[j] := p_streams[k];
            event_versions[j] := versions[k] + added[k];
        END LOOP;

        -- Streams that got events, in stream-id order (an insertion sort:
        -- a handful of streams), updated before any event is inserted: two
        -- appends to the same streams then meet on the first row lock, in
        -- one order, instead of inserting the same (stream, version) keys in
        -- opposite orders and deadlocking.
        FOR k IN 1 .. n_streams LOOP
            IF added[k] > 0 THEN
                j := coalesce(array_length(update_order, 1), 0);
                update_order[j + 1] := k;
                WHILE j > 0 AND p_streams[update_order[j]] > p_streams[k] LOOP
                    update_order[j + 1] := update_order[j];
                    update_order[j] := k;
                    j := j - 1;
                END LOOP;
            END IF;
        END LOOP;
        FOREACH k IN ARRAY update_order LOOP
            versions[k] := versions[k] + added[k];
            UPDATE __SCHEMA__.eventcore_streams s SET version = versions[k]
                WHERE s.stream_id = p_streams[k];
            IF NOT FOUND THEN
                -- The row is normally created before the transaction; create it now if it was not.
                INSERT INTO __SCHEMA__.eventcore_streams (stream_id, version)
                VALUES (p_streams[k], versions[k]);
            END IF;
        END LOOP;

        FOR written IN
            INSERT INTO __SCHEMA__.eventcore_events
                (event_id, stream_id, stream_version, event_type, payload, metadata, event_version)
            SELECT * FROM unnest(p_event_ids, event_streams, event_versions,
                                 p_event_types, p_payloads, p_metadata, p_event_versions)
            RETURNING stream_id, stream_version, event_id, transaction_id, sequence, recorded_at
        LOOP
            o_kind := 'event';
            o_stream_id := written.stream_id;
            o_version := written.stream_version;
            o_event_id := written.event_id;
            o_transaction_id := written.transaction_id::text;
            o_sequence := written.sequence;
            o_recorded_at := written.recorded_at;
            RETURN NEXT;
        END LOOP;
        o_event_id := NULL;
        o_transaction_id := NULL;
        o_sequence := NULL;
        o_recorded_at := NULL;

        PERFORM pg_notify(p_channel, '');
    END IF;

    o_kind := 'version';
    FOR k IN 1 .. n_streams LOOP
        o_stream_id := p_streams[k];
        o_version := versions[k];
        RETURN NEXT;
    END LOOP;
END
$$;
