-- EventCore schema, version 4: streams are found through a hash index.
--
-- Under SERIALIZABLE, PostgreSQL locks what a transaction read in a B-tree
-- page by page, so an append that looks up stream A holds a lock on the leaf
-- page it shares with hundreds of other stream ids, and any index entry added
-- to that page (a new stream, or a version update that no longer fits in
-- place because pruning is held back by a long transaction elsewhere) counts
-- as a conflict with it. A hash index locks bucket by bucket instead, so
-- unrelated streams rarely meet. Uniqueness stays, as an exclusion constraint
-- on the same hash index, and no B-tree on stream ids is left for a lookup to
-- lock.
ALTER TABLE __SCHEMA__.eventcore_streams
    DROP CONSTRAINT eventcore_streams_pkey,
    ADD CONSTRAINT eventcore_streams_unique_id
        EXCLUDE USING hash (stream_id WITH =) WITH (fillfactor = 10);
