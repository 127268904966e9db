-- EventCore schema, version 6: appends always find stream rows through the index.
--
-- Once the streams table has statistics saying it is small (autovacuum's
-- ANALYZE runs at any time), a sequential scan becomes the cheapest plan for
-- `stream_id = $1`. Under SERIALIZABLE a sequential scan locks the whole
-- table, so every append then conflicts with every other one, streams shared
-- or not. The append function plans with sequential and bitmap scans disabled,
-- leaving the index scan, whose predicate locks cover one hash bucket and the
-- rows it returns.
ALTER FUNCTION __SCHEMA__.eventcore_append(text[], bigint[], int[], uuid[], text[], jsonb[], jsonb[], text)
    SET enable_seqscan = off
    SET enable_bitmapscan = off;
