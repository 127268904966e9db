-- EventCore schema, version 1. `__SCHEMA__` is replaced by the quoted schema name.

-- A stream's row is created (at version 0) outside the serializable append
-- that first writes it, and only ever updated in place inside one: with room
-- on every page (fillfactor) those updates are HOT and add no index entries,
-- so appends to disjoint streams do not trip over each other's predicate locks.
CREATE TABLE __SCHEMA__.eventcore_streams (
    stream_id text PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 0)
) WITH (fillfactor = 20, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

CREATE TABLE __SCHEMA__.eventcore_events (
    sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: the global order is (transaction_id, sequence),
    -- delivered only below the oldest running transaction (gap-safe).
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id uuid NOT NULL,
    stream_id text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version >= 1),
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT eventcore_events_event_id_key UNIQUE (event_id),
    CONSTRAINT eventcore_events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX eventcore_events_global_order ON __SCHEMA__.eventcore_events (transaction_id, sequence);
CREATE INDEX eventcore_events_type_order ON __SCHEMA__.eventcore_events (event_type, transaction_id, sequence);

-- Events are immutable: the database refuses updates, deletes and truncation.
CREATE FUNCTION __SCHEMA__.eventcore_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventcore events are append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER eventcore_events_append_only
    BEFORE UPDATE OR DELETE ON __SCHEMA__.eventcore_events
    FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.eventcore_refuse_change();

CREATE TRIGGER eventcore_events_no_truncate
    BEFORE TRUNCATE ON __SCHEMA__.eventcore_events
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.eventcore_refuse_change();

-- Checks every listed stream's expected version (NULL = any) and, only if all
-- hold, inserts the events and bumps the versions: the whole append in one
-- statement. Returns one 'conflict' row per stream whose expectation fails
-- (and writes nothing), or one 'event' row per written event followed by one
-- 'version' row per listed stream with its version after the append.
CREATE FUNCTION __SCHEMA__.eventcore_append(
    p_streams text[],
    p_expected bigint[],
    p_event_stream int[],
    p_event_ids uuid[],
    p_event_types text[],
    p_payloads jsonb[],
    p_metadata jsonb[],
    p_channel text
) RETURNS TABLE (
    o_kind text,
    o_stream_id text,
    o_version bigint,
    o_event_id uuid,
    o_transaction_id text,
    o_sequence bigint,
    o_recorded_at timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    current_versions bigint[] := '{}';
    added bigint[];
    found_version bigint;
    has_conflict boolean := false;
    k int;
BEGIN
    -- The version checks are only sound under SERIALIZABLE.
    IF current_setting('transaction_isolation') <> 'serializable' THEN
        RAISE EXCEPTION 'eventcore_append must run in a SERIALIZABLE transaction, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- One index point lookup per stream, so predicate locks stay on tuples.
    FOR k IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        SELECT s.version INTO found_version
            FROM __SCHEMA__.eventcore_streams s WHERE s.stream_id = p_streams[k];
        found_version := coalesce(found_version, 0);
        current_versions := current_versions || found_version;
        IF p_expected[k] IS NOT NULL AND p_expected[k] <> found_version THEN
            has_conflict := true;
            RETURN QUERY SELECT 'conflict'::text, p_streams[k], found_version,
                NULL::uuid, NULL::text, NULL::bigint, NULL::timestamptz;
        END IF;
    END LOOP;
    IF has_conflict THEN
        RETURN;
    END IF;

    IF coalesce(array_length(p_event_ids, 1), 0) > 0 THEN
        RETURN QUERY
        WITH input AS (
            SELECT t.idx, t.eid, t.etype, t.pl, t.md, t.ord
            FROM unnest(p_event_stream, p_event_ids, p_event_types, p_payloads, p_metadata)
                WITH ORDINALITY AS t(idx, eid, etype, pl, md, ord)
        ), numbered AS (
            SELECT i.ord, p_streams[i.idx] AS sid,
                   current_versions[i.idx] + row_number() OVER (PARTITION BY i.idx ORDER BY i.ord) AS ver,
                   i.eid, i.etype, i.pl, i.md
            FROM input i
        ), inserted AS (
            INSERT INTO __SCHEMA__.eventcore_events
                (event_id, stream_id, stream_version, event_type, payload, metadata)
            SELECT n.eid, n.sid, n.ver, n.etype, n.pl, n.md FROM numbered n ORDER BY n.ord
            RETURNING sequence, event_id, stream_id, stream_version, transaction_id, recorded_at
        )
        SELECT 'event'::text, ins.stream_id, ins.stream_version, ins.event_id,
               ins.transaction_id::text, ins.sequence, ins.recorded_at
        FROM inserted ins ORDER BY ins.sequence;

        SELECT array_agg(coalesce(c.n, 0) ORDER BY s.k) INTO added
        FROM generate_subscripts(p_streams, 1) AS s(k)
        LEFT JOIN (SELECT e.i, count(*) AS n FROM unnest(p_event_stream) AS e(i) GROUP BY e.i) c
            ON c.i = s.k;

        -- In stream-id order, so concurrent appends lock rows in one order.
        FOR k IN SELECT s.k FROM generate_subscripts(p_streams, 1) AS s(k)
                 WHERE added[s.k] > 0 ORDER BY p_streams[s.k] LOOP
            current_versions[k] := current_versions[k] + added[k];
            UPDATE __SCHEMA__.eventcore_streams s SET version = current_versions[k]
                WHERE s.stream_id = p_streams[k];
            IF NOT FOUND THEN
                -- The row is normally created before the transaction; create it now if it was not.
                INSERT INTO __SCHEMA__.eventcore_streams (stream_id, version)
                VALUES (p_streams[k], current_versions[k]);
            END IF;
        END LOOP;

        PERFORM pg_notify(p_channel, '');
    END IF;

    RETURN QUERY SELECT 'version'::text, p_streams[s.k], current_versions[s.k],
        NULL::uuid, NULL::text, NULL::bigint, NULL::timestamptz
        FROM generate_subscripts(p_streams, 1) AS s(k);
END
$$;
