//! Through PgBouncer in `pool_mode = transaction` (round robin over its
//! server connections, so consecutive statements of one client land on
//! different sessions): the store conformance suite with appends, reads
//! and snapshots through the pooler and a session URL for the rest; a
//! lease through an undeclared pooler refused. A cluster and a PgBouncer of
//! their own; needs `pgbouncer` (`.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use eventcore::Leadership;
use eventcore_postgres::{
    PostgresConfig, PostgresEventStore,
    testing::{PgBouncer, ThrowawayCluster},
};
use sqlx::{Connection, PgConnection};

/// A store in a fresh schema: appends and reads through `bouncer`,
/// sessions on `cluster`.
async fn pooled_store(cluster: &ThrowawayCluster, bouncer: &PgBouncer) -> PostgresEventStore {
    let config = PostgresConfig::new(bouncer.url())
        .transaction_pooler(cluster.url())
        .max_connections(8)
        .poll_interval(Duration::from_millis(50))
        .schema(&eventcore_postgres::testing::fresh_schema_name())
        .unwrap();
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    store
}

/// Opens two server connections behind the pooler (two transactions at
/// once), so that round robin alternates between them from then on.
async fn warm(bouncer: &PgBouncer) {
    let mut a = PgConnection::connect(&bouncer.url()).await.unwrap();
    let mut b = PgConnection::connect(&bouncer.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut a).await.unwrap();
    sqlx::query("BEGIN").execute(&mut b).await.unwrap();
    let pids: Vec<i32> = vec![
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut a)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut b)
            .await
            .unwrap(),
    ];
    assert_ne!(pids[0], pids[1], "two server sessions behind the pooler");
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();
    sqlx::query("COMMIT").execute(&mut b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_through_a_transaction_pooler() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let bouncer = PgBouncer::start(&cluster, 4).await.unwrap();
    warm(&bouncer).await;
    let started = Instant::now();
    let mut passed = 0;
    macro_rules! run {
        ($case:ident) => {
            let store = pooled_store(&cluster, &bouncer).await;
            tokio::time::timeout(
                eventcore::conformance::CASE_TIME_LIMIT,
                eventcore::conformance::$case(store),
            )
            .await
            .expect(concat!(stringify!($case), " finished in time"));
            passed += 1;
        };
    }
    run!(absent_stream_reads_as_version_zero);
    run!(append_then_read_back_is_equal);
    run!(versions_are_contiguous_from_one);
    run!(expected_any_accepts_every_version);
    run!(expected_no_stream_accepts_only_absent_streams);
    run!(expected_exact_accepts_only_that_version);
    run!(conflict_on_one_stream_writes_nothing_to_any);
    run!(conflict_names_every_conflicting_stream);
    run!(moved_check_only_stream_fails_the_whole_append);
    run!(check_only_stream_is_not_written);
    run!(streams_are_isolated);
    run!(multi_stream_read_is_in_global_order);
    run!(read_all_pages_without_duplicates_or_holes);
    run!(read_all_filters_by_event_type);
    run!(subscription_catches_up_then_follows_live_appends);
    run!(subscription_starts_after_its_position_and_filters);
    run!(concurrent_appends_with_the_same_expectation_one_wins);
    run!(concurrent_appends_to_disjoint_streams_all_succeed);
    run!(undecodable_event_is_a_typed_error);
    run!(ten_thousand_events_in_one_append);
    run!(nul_characters_are_refused_before_the_store);
    run!(an_idempotency_key_writes_once_and_replays_the_result);
    run!(concurrent_appends_with_one_idempotency_key_write_once);
    run!(snapshots_keep_the_one_reaching_furthest);
    run!(read_streams_after_returns_only_later_events);
    run!(read_from_snapshot_returns_the_snapshot_and_what_follows);
    run!(snapshots_shorten_folds_without_changing_decisions);
    run!(own_appends_keep_the_executors_snapshot_current);
    run!(unusable_snapshots_are_ignored);
    run!(one_appends_events_keep_the_order_they_were_given);
    run!(an_event_order_must_match_the_streams_events);
    run!(a_commands_events_keep_the_order_it_emitted_them);
    run!(an_idempotency_key_is_refused_for_another_purpose);
    run!(stream_pages_forwards_without_holes_or_duplicates);
    run!(stream_pages_backwards_newest_first);
    run!(stream_pages_past_the_end_and_of_absent_streams);
    run!(stream_pages_filter_by_event_type);
    println!(
        "through PgBouncer (transaction mode, round robin over 4 server connections): \
         {passed} conformance cases passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_through_an_undeclared_transaction_pooler_is_refused() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let bouncer = PgBouncer::start(&cluster, 4).await.unwrap();
    warm(&bouncer).await;
    // Declared: leases go to the session URL and hold.
    let declared = pooled_store(&cluster, &bouncer).await;
    let leadership = declared.leadership(Duration::from_millis(50));
    let mut lease = leadership
        .try_acquire("through-the-pooler")
        .await
        .unwrap()
        .expect("the lease is free");
    assert!(leadership.holds(&mut lease).await);

    // Undeclared: the pooler's URL used as a session; the lease is refused.
    let undeclared = PostgresEventStore::new(
        PostgresConfig::new(bouncer.url())
            .schema(declared.schema().as_str())
            .unwrap(),
    )
    .await
    .unwrap();
    let error = undeclared
        .leadership(Duration::from_millis(50))
        .try_acquire("another")
        .await
        .expect_err("a lease through a transaction pooler is refused");
    println!("undeclared pooler: {error}");
    assert!(error.to_string().contains("transaction_pooler"), "{error}");
    assert!(
        leadership.holds(&mut lease).await,
        "the declared lease is untouched"
    );
}
