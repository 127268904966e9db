-- EventCore schema, version 3: idempotency keys.
-- One row per append that carried a key, committed with its events; the
-- result is what a repeated append with the same key returns.
CREATE TABLE __SCHEMA__.eventcore_idempotency (
    key text NOT NULL,
    result jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT eventcore_idempotency_key PRIMARY KEY (key)
);
