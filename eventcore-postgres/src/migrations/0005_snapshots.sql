-- EventCore schema, version 5: snapshots of commands' folded state.
-- One row per key (a policy name and its streams, JSON-encoded; looked up by
-- its md5 so long keys stay indexable); a save replaces the row only if it
-- reaches further or carries another state version.
CREATE TABLE __SCHEMA__.eventcore_snapshots (
    key text NOT NULL,
    state_version bigint NOT NULL,
    reach bigint NOT NULL,
    versions jsonb NOT NULL,
    state jsonb NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE UNIQUE INDEX eventcore_snapshots_key ON __SCHEMA__.eventcore_snapshots (md5(key));
