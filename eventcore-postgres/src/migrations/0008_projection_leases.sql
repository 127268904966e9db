-- EventCore schema, version 8: fenced projection checkpoints.

-- The leadership generation of the runner that wrote the checkpoint (NULL:
-- unfenced). A save offering an older generation is refused in the same
-- statement, so a runner that lost its lease cannot overwrite its successor.
ALTER TABLE __SCHEMA__.eventcore_checkpoints
    ADD COLUMN fence bigint,
    ADD COLUMN last_event_id uuid,
    ADD COLUMN last_processed_at timestamptz,
    -- An operator's request to the running leader, from any process:
    --   UPDATE eventcore_checkpoints SET request = 'pause', requested_at = now()
    --    WHERE projection = 'name';
    -- The leader carries it out and sets both back to NULL.
    ADD COLUMN request text CHECK (request IN ('pause', 'resume', 'rebuild')),
    ADD COLUMN requested_at timestamptz,
    ADD CONSTRAINT eventcore_checkpoints_request_time
        CHECK ((request IS NULL) = (requested_at IS NULL));

-- One row per projection led through PostgresLeadership: the generation is
-- raised by every new holder of the projection's advisory lock, on the lock's
-- own connection, before it claims the checkpoint.
CREATE TABLE __SCHEMA__.eventcore_projection_leases (
    projection text PRIMARY KEY,
    generation bigint NOT NULL CHECK (generation >= 1),
    acquired_at timestamptz NOT NULL DEFAULT now()
);
