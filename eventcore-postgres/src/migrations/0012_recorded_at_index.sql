-- EventCore schema, version 12: a BRIN index on the recording time, for
-- the operator's events-per-day query (`PostgresEventStore::events_per_day`).
--
-- Events are inserted in time order, so a block-range index stays a few
-- pages for any table size and costs appends next to nothing, where a
-- B-tree would add an entry per event. Built in one sequential scan of the
-- table when the migration runs.
CREATE INDEX IF NOT EXISTS eventcore_events_recorded_at
    ON __SCHEMA__.eventcore_events USING brin (recorded_at);
