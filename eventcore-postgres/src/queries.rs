//! The store's statements, with the schema name filled in once.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::SchemaName;

/// A statement text assembled in this crate: SQL written here plus, at
/// most, a schema name that [`SchemaName`] has validated and quoted, and
/// numbers. Nothing a caller passes at run time enters the text (values are
/// always bound), so it is safe to run. Held as shared text, a statement is
/// cloned for every call without copying.
pub(crate) fn statement(sql: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(sql)).into_sql_str()
}

/// [`statement`] of a `format!`: for statement texts whose only argument is
/// a quoted schema name (or a fragment built from one).
macro_rules! schema_sql {
    ($($format:tt)*) => {
        $crate::queries::statement(format!($($format)*))
    };
}
#[allow(unused_imports)] // used by the modules that build statements
pub(crate) use schema_sql;

/// Statements with the schema name filled in once; values are always bound.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) append: SqlStr,
    pub(crate) append_batch: SqlStr,
    pub(crate) record_keys: SqlStr,
    pub(crate) create_streams: SqlStr,
    pub(crate) versions: SqlStr,
    pub(crate) read_streams: SqlStr,
    pub(crate) read_all: SqlStr,
    pub(crate) read_stream_forwards: SqlStr,
    pub(crate) read_stream_backwards: SqlStr,
    pub(crate) delivery_lag: SqlStr,
    pub(crate) record_key: SqlStr,
    pub(crate) find_key: SqlStr,
    pub(crate) purge_keys: SqlStr,
    pub(crate) read_after: SqlStr,
    pub(crate) load_snapshot: SqlStr,
    pub(crate) save_snapshot: SqlStr,
    pub(crate) read_from_snapshot: SqlStr,
}

impl Queries {
    pub(crate) fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        let columns = "event_id, stream_id, stream_version, transaction_id::text AS transaction_text, \
                       sequence, recorded_at, event_type, event_version, payload::text AS payload, metadata";
        Self {
            append: schema_sql!(
                "SELECT * FROM {s}.eventcore_append($1, $2, $3, $4, $5, $6::text[]::jsonb[], $7, $8, $9, $10)"
            ),
            append_batch: schema_sql!(
                "SELECT * FROM {s}.eventcore_append_batch($1, $2, $3, $4, $5, $6, \
                 $7::text[]::jsonb[], $8, $9, $10, $11)"
            ),
            record_keys: schema_sql!(
                "INSERT INTO {s}.eventcore_idempotency (key, result, purpose) \
                 SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[])"
            ),
            create_streams: schema_sql!(
                "INSERT INTO {s}.eventcore_streams (stream_id, version) \
                 SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING"
            ),
            versions: schema_sql!(
                "SELECT stream_id, version FROM {s}.eventcore_streams WHERE stream_id = ANY($1)"
            ),
            read_streams: schema_sql!(
                "SELECT {columns} FROM {s}.eventcore_events WHERE stream_id = ANY($1) \
                 ORDER BY transaction_id, sequence"
            ),
            read_all: schema_sql!(
                "SELECT {columns} FROM {s}.eventcore_events \
                 WHERE (transaction_id, sequence) > ($1::text::xid8, $2) \
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   AND ($3::text[] IS NULL OR event_type = ANY($3)) \
                 ORDER BY transaction_id, sequence LIMIT $4"
            ),
            read_stream_forwards: read_stream(&s, columns, ">=", "ASC"),
            read_stream_backwards: read_stream(&s, columns, "<=", "DESC"),
            record_key: schema_sql!(
                "INSERT INTO {s}.eventcore_idempotency (key, result, purpose) VALUES ($1, $2, $3)"
            ),
            find_key: schema_sql!(
                "SELECT result, purpose FROM {s}.eventcore_idempotency WHERE key = $1"
            ),
            purge_keys: schema_sql!(
                "DELETE FROM {s}.eventcore_idempotency \
                 WHERE recorded_at < clock_timestamp() - make_interval(secs => $1)"
            ),
            // One statement, so the versions and the events come from one snapshot.
            // `OFFSET 0` keeps each stream's events a parameterized index
            // scan: flattened, the planner may hash-join the whole table.
            read_after: schema_sql!(
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
            read_from_snapshot: schema_sql!(
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
            load_snapshot: schema_sql!(
                "SELECT state_version, versions, state FROM {s}.eventcore_snapshots \
                 WHERE md5(key) = md5($1) AND key = $1"
            ),
            save_snapshot: schema_sql!(
                "INSERT INTO {s}.eventcore_snapshots AS old (key, state_version, reach, versions, state) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb) \
                 ON CONFLICT ((md5(key))) DO UPDATE SET key = excluded.key, \
                    state_version = excluded.state_version, reach = excluded.reach, \
                    versions = excluded.versions, state = excluded.state, saved_at = clock_timestamp() \
                 WHERE old.state_version <> excluded.state_version OR old.reach < excluded.reach"
            ),
            delivery_lag: schema_sql!(
                "SELECT count(*) FROM {s}.eventcore_events \
                 WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())"
            ),
        }
    }
}

/// One page of one stream and its version, in one statement (one snapshot):
/// a row per event, or one row without an event for an empty page.
fn read_stream(s: &str, columns: &str, compare: &str, order: &str) -> SqlStr {
    schema_sql!(
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
