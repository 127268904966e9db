-- EventCore schema, version 2: projection checkpoints.
CREATE TABLE __SCHEMA__.eventcore_checkpoints (
    projection text PRIMARY KEY,
    -- The last event applied: its position in the global order (transaction_id, sequence).
    transaction_id xid8 NOT NULL,
    sequence bigint NOT NULL,
    events_processed bigint NOT NULL CHECK (events_processed >= 0),
    status text NOT NULL CHECK (status IN ('running', 'paused', 'rebuilding', 'failed', 'stopped')),
    last_error text,
    updated_at timestamptz NOT NULL
);
