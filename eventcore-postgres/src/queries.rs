//! The store's statements, with the schema name filled in once.

use crate::SchemaName;

/// Statements with the schema name filled in once; values are always bound.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) append: String,
    pub(crate) create_streams: String,
    pub(crate) versions: String,
    pub(crate) read_streams: String,
    pub(crate) read_all: String,
    pub(crate) read_stream_forwards: String,
    pub(crate) read_stream_backwards: String,
    pub(crate) delivery_lag: String,
    pub(crate) record_key: String,
    pub(crate) find_key: String,
    pub(crate) purge_keys: String,
    pub(crate) read_after: String,
    pub(crate) load_snapshot: String,
    pub(crate) save_snapshot: String,
    pub(crate) read_from_snapshot: String,
}

impl Queries {
    pub(crate) fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        let columns = "event_id, stream_id, stream_version, transaction_id::text AS transaction_text, \
                       sequence, recorded_at, event_type, event_version, payload::text AS payload, metadata";
        Self {
            append: format!(
                "SELECT * FROM {s}.eventcore_append($1, $2, $3, $4, $5, $6::text[]::jsonb[], $7, $8, $9, $10)"
            ),
            create_streams: format!(
                "INSERT INTO {s}.eventcore_streams (stream_id, version) \
                 SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING"
            ),
            versions: format!(
                "SELECT stream_id, version FROM {s}.eventcore_streams WHERE stream_id = ANY($1)"
            ),
            read_streams: format!(
                "SELECT {columns} FROM {s}.eventcore_events WHERE stream_id = ANY($1) \
                 ORDER BY transaction_id, sequence"
            ),
            read_all: format!(
                "SELECT {columns} FROM {s}.eventcore_events \
                 WHERE (transaction_id, sequence) > ($1::text::xid8, $2) \
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   AND ($3::text[] IS NULL OR event_type = ANY($3)) \
                 ORDER BY transaction_id, sequence LIMIT $4"
            ),
            read_stream_forwards: read_stream(&s, columns, ">=", "ASC"),
            read_stream_backwards: read_stream(&s, columns, "<=", "DESC"),
            record_key: format!(
                "INSERT INTO {s}.eventcore_idempotency (key, result, purpose) VALUES ($1, $2, $3)"
            ),
            find_key: format!(
                "SELECT result, purpose FROM {s}.eventcore_idempotency WHERE key = $1"
            ),
            purge_keys: format!(
                "DELETE FROM {s}.eventcore_idempotency \
                 WHERE recorded_at < clock_timestamp() - make_interval(secs => $1)"
            ),
            // One statement, so the versions and the events come from one snapshot.
            // `OFFSET 0` keeps each stream's events a parameterized index
            // scan: flattened, the planner may hash-join the whole table.
            read_after: format!(
                "SELECT w.stream_id AS wanted, \
                        coalesce((SELECT st.version FROM {s}.eventcore_streams st \
                                  WHERE st.stream_id = w.stream_id), 0) AS current_version, \
                        e.event_id, e.stream_id, e.stream_version, \
                        e.transaction_id::text AS transaction_text, e.sequence, e.recorded_at, \
                        e.event_type, e.event_version, e.payload::text AS payload, e.metadata \
                 FROM unnest($1::text[], $2::bigint[]) AS w(stream_id, after) \
                 LEFT JOIN LATERAL ( \
                     SELECT * FROM {s}.eventcore_events x \
                     WHERE x.stream_id = w.stream_id AND x.stream_version > w.after \
                     OFFSET 0 \
                 ) e ON true \
                 ORDER BY e.transaction_id, e.sequence"
            ),
            // The snapshot (part 0: versions in `payload`, state in
            // `metadata`) and the events after it (part 1), in one statement.
            read_from_snapshot: format!(
                "WITH snap AS ( \
                     SELECT versions, state FROM {s}.eventcore_snapshots \
                     WHERE md5(key) = md5($1) AND key = $1 AND state_version = $2 \
                 ), wanted AS MATERIALIZED ( \
                     SELECT w.stream_id, \
                            coalesce((SELECT (snap.versions ->> w.stream_id)::bigint FROM snap), 0) AS after, \
                            coalesce((SELECT st.version FROM {s}.eventcore_streams st \
                                      WHERE st.stream_id = w.stream_id), 0) AS current_version \
                     FROM unnest($3::text[]) AS w(stream_id) \
                 ) \
                 SELECT 0 AS part, NULL::text AS wanted, NULL::bigint AS current_version, \
                        NULL::uuid AS event_id, NULL::text AS stream_id, NULL::bigint AS stream_version, \
                        NULL::text AS transaction_text, NULL::bigint AS sequence, \
                        NULL::timestamptz AS recorded_at, NULL::text AS event_type, \
                        NULL::int AS event_version, \
                        snap.versions::text AS payload, snap.state AS metadata, NULL::bigint AS tx \
                 FROM snap \
                 UNION ALL \
                 SELECT 1, w.stream_id, w.current_version, \
                        e.event_id, e.stream_id, e.stream_version, \
                        e.transaction_id::text, e.sequence, e.recorded_at, \
                        e.event_type, e.event_version, e.payload::text, e.metadata, \
                        e.transaction_id::text::bigint \
                 FROM wanted w \
                 LEFT JOIN LATERAL ( \
                     SELECT * FROM {s}.eventcore_events x \
                     WHERE x.stream_id = w.stream_id AND x.stream_version > w.after \
                     OFFSET 0 \
                 ) e ON true \
                 ORDER BY part, tx, sequence"
            ),
            load_snapshot: format!(
                "SELECT state_version, versions, state FROM {s}.eventcore_snapshots \
                 WHERE md5(key) = md5($1) AND key = $1"
            ),
            save_snapshot: format!(
                "INSERT INTO {s}.eventcore_snapshots AS old (key, state_version, reach, versions, state) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb) \
                 ON CONFLICT ((md5(key))) DO UPDATE SET key = excluded.key, \
                    state_version = excluded.state_version, reach = excluded.reach, \
                    versions = excluded.versions, state = excluded.state, saved_at = clock_timestamp() \
                 WHERE old.state_version <> excluded.state_version OR old.reach < excluded.reach"
            ),
            delivery_lag: format!(
                "SELECT count(*) FROM {s}.eventcore_events \
                 WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())"
            ),
        }
    }
}

/// One page of one stream and its version, in one statement (one snapshot):
/// a row per event, or one row without an event for an empty page.
fn read_stream(s: &str, columns: &str, compare: &str, order: &str) -> String {
    format!(
        "SELECT cur.current_version, e.* \
         FROM (SELECT coalesce((SELECT st.version FROM {s}.eventcore_streams st \
                                WHERE st.stream_id = $1), 0) AS current_version) cur \
         LEFT JOIN LATERAL ( \
             SELECT {columns} FROM {s}.eventcore_events x \
             WHERE x.stream_id = $1 AND x.stream_version {compare} $2 \
               AND ($3::text[] IS NULL OR x.event_type = ANY($3)) \
             ORDER BY x.stream_version {order} LIMIT $4 \
         ) e ON true \
         ORDER BY e.stream_version {order}"
    )
}
