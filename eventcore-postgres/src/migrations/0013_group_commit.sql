-- EventCore schema, version 13: group commit, several appends in one
-- transaction.
--
-- `eventcore_append_batch` takes the appends of a batch as one list of
-- streams (no stream in two appends of a batch: the caller makes sure)
-- and one list of events, with `p_stream_append` saying which append each
-- stream belongs to. Every append is checked on its own: an append with a
-- stream not at its expected version gets its 'conflict' rows and writes
-- nothing, and the others are written as if they were alone. Since the
-- streams do not overlap, one append's writes cannot change another's
-- checks. Rows name their stream, which names the append.
--
-- Compared with `eventcore_append` (kept, unchanged, for single appends
-- and for processes of earlier releases):
-- * the update order comes from one sorted query instead of an insertion
--   sort in PL/pgSQL, in the same collation, so batches and single appends
--   take row locks in one order and do not deadlock each other;
-- * the INSERT's rows are returned with RETURN QUERY, not fetched through
--   a FOR loop's cursor (18% of the backends' CPU in the profile of
--   version 11, BENCHMARKS.md);
-- * one notification per batch.
CREATE OR REPLACE FUNCTION __SCHEMA__.eventcore_append_batch(
    p_streams text[],
    p_expected bigint[],
    p_stream_append int[],
    p_event_stream int[],
    p_event_ids uuid[],
    p_event_types text[],
    p_payloads jsonb[],
    p_metadata jsonb[],
    p_event_versions int[],
    p_channel text,
    p_lock_timeout_ms bigint
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
    refused int[] := '{}';
    -- As long as the event arrays from the start: an element assigned to
    -- an empty array would start it at that index, and unnest, which
    -- ignores bounds, would pair it with another event's id and payload.
    event_streams text[] := array_fill(NULL::text, ARRAY[n_events]);
    event_versions bigint[] := array_fill(NULL::bigint, ARRAY[n_events]);
    update_order int[];
    found_version bigint;
    any_written boolean := false;
    k int;
    j int;
BEGIN
    -- The version checks are only sound under SERIALIZABLE.
    IF current_setting('transaction_isolation') <> 'serializable' THEN
        RAISE EXCEPTION 'eventcore_append_batch must run in a SERIALIZABLE transaction, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- The tightest bound of the batch's appends bounds every lock wait.
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
            refused[p_stream_append[k]] := 1;
            o_kind := 'conflict';
            o_stream_id := p_streams[k];
            o_version := versions[k];
            RETURN NEXT;
        END IF;
    END LOOP;

    -- Each event of an accepted append: its stream and version, numbered
    -- on from the stream's version. A refused append's events keep a NULL
    -- version and are not inserted.
    FOR j IN 1 .. n_events LOOP
        k := p_event_stream[j];
        IF refused[p_stream_append[k]] IS NULL THEN
            added[k] := added[k] + 1;
            event_streams[j] := p_streams[k];
            event_versions[j] := versions[k] + added[k];
            any_written := true;
        END IF;
    END LOOP;

    IF any_written THEN
        -- Stream rows first, in stream-id order (see version 7): appends
        -- meeting on the same rows then wait on the first, in one order.
        SELECT array_agg(t.k::int ORDER BY t.stream_id) INTO update_order
            FROM unnest(p_streams) WITH ORDINALITY AS t(stream_id, k)
            WHERE added[t.k::int] > 0;
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

        -- In array order: the identity numbers the batch's events in the
        -- order of its appends, each append's in its own order.
        RETURN QUERY
            WITH written AS (
                INSERT INTO __SCHEMA__.eventcore_events
                    (event_id, stream_id, stream_version, event_type, payload, metadata, event_version)
                SELECT e.id, e.stream_id, e.version, e.event_type, e.payload, e.metadata, e.event_version
                    FROM unnest(p_event_ids, event_streams, event_versions,
                                p_event_types, p_payloads, p_metadata, p_event_versions)
                         AS e(id, stream_id, version, event_type, payload, metadata, event_version)
                    WHERE e.version IS NOT NULL
                RETURNING stream_id, stream_version, event_id, transaction_id, sequence, recorded_at
            )
            SELECT 'event'::text, w.stream_id, w.stream_version, w.event_id,
                   w.transaction_id::text, w.sequence, w.recorded_at
                FROM written w;

        PERFORM pg_notify(p_channel, '');
    END IF;

    -- Every stream of every accepted append, at its version now.
    o_kind := 'version';
    o_event_id := NULL;
    o_transaction_id := NULL;
    o_sequence := NULL;
    o_recorded_at := NULL;
    FOR k IN 1 .. n_streams LOOP
        IF refused[p_stream_append[k]] IS NULL THEN
            o_stream_id := p_streams[k];
            o_version := versions[k];
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
