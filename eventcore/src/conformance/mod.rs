//! The behaviour every [`EventStore`] adapter must show, as a reusable test suite.
//!
//! Each case is a public `async fn` taking a fresh, empty store. Run them all
//! as `#[test]`s with [`conformance_tests!`](crate::conformance_tests),
//! giving it a factory that returns a future of a new, empty store. Each
//! test calls the factory once; stores must not share events.
//!
//! ```text
//! // In an adapter's tests/conformance.rs
//! eventcore::conformance_tests!(|| async { my_adapter::MyStore::connect_fresh().await });
//! ```
//!
//! Cases fail by panicking, like any test; the suite runs each on a
//! two-thread tokio runtime with a two-minute time limit.
// A test suite reports failure by panicking; nothing here runs in production.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{future::Future, num::NonZeroUsize, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    AppendRequest, AppendResult, Event, EventMetadata, EventStore, ExpectedVersion, NewEvent,
    ReadAllQuery, RecordedEvent, StoreError, StreamAppend, StreamId, StreamVersion,
};

pub mod archive;
mod concurrency;
pub mod evolution;
mod keys;
mod order;
mod payloads;
mod reads;
mod snapshots;
mod streams;
mod versions;

pub use concurrency::{
    concurrent_appends_to_disjoint_streams_all_succeed,
    concurrent_appends_with_the_same_expectation_one_wins,
};
pub use keys::{
    an_idempotency_key_is_refused_for_another_purpose,
    an_idempotency_key_writes_once_and_replays_the_result,
    concurrent_appends_with_one_idempotency_key_write_once,
};
pub use payloads::{
    nul_characters_are_refused_before_the_store, ten_thousand_events_in_one_append,
    undecodable_event_is_a_typed_error,
};
pub use reads::{
    multi_stream_read_is_in_global_order, read_all_filters_by_event_type,
    read_all_pages_without_duplicates_or_holes, subscription_catches_up_then_follows_live_appends,
    subscription_starts_after_its_position_and_filters,
};
pub use snapshots::{
    own_appends_keep_the_executors_snapshot_current,
    read_from_snapshot_returns_the_snapshot_and_what_follows,
    read_streams_after_returns_only_later_events, snapshots_keep_the_one_reaching_furthest,
    snapshots_shorten_folds_without_changing_decisions, unusable_snapshots_are_ignored,
};
pub use versions::{
    absent_stream_reads_as_version_zero, append_then_read_back_is_equal,
    check_only_stream_is_not_written, conflict_names_every_conflicting_stream,
    conflict_on_one_stream_writes_nothing_to_any, expected_any_accepts_every_version,
    expected_exact_accepts_only_that_version, expected_no_stream_accepts_only_absent_streams,
    moved_check_only_stream_fails_the_whole_append, streams_are_isolated,
    versions_are_contiguous_from_one,
};

pub use streams::{
    stream_pages_backwards_newest_first, stream_pages_filter_by_event_type,
    stream_pages_forwards_without_holes_or_duplicates,
    stream_pages_past_the_end_and_of_absent_streams,
};

pub use order::{
    a_commands_events_keep_the_order_it_emitted_them, an_event_order_must_match_the_streams_events,
    one_appends_events_keep_the_order_they_were_given,
};

/// How long one case may take before it fails.
pub const CASE_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Runs one case on a fresh store from `factory`, on a two-thread runtime, within [`CASE_TIME_LIMIT`].
pub fn run<S, F, Fut, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
    C: FnOnce(S) -> CFut,
    CFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance case");
    runtime.block_on(async {
        let store = factory().await;
        tokio::time::timeout(CASE_TIME_LIMIT, case(store))
            .await
            .expect("the conformance case did not finish within its time limit");
    });
}

/// Generates one `#[test]` per conformance case, each on a fresh store from `$factory`.
///
/// `$factory` is an expression evaluating to a closure (or function) that
/// returns a future of a new, empty store. It is evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__conformance_cases!(
            $factory;
            absent_stream_reads_as_version_zero,
            append_then_read_back_is_equal,
            versions_are_contiguous_from_one,
            expected_any_accepts_every_version,
            expected_no_stream_accepts_only_absent_streams,
            expected_exact_accepts_only_that_version,
            conflict_on_one_stream_writes_nothing_to_any,
            conflict_names_every_conflicting_stream,
            moved_check_only_stream_fails_the_whole_append,
            check_only_stream_is_not_written,
            streams_are_isolated,
            multi_stream_read_is_in_global_order,
            read_all_pages_without_duplicates_or_holes,
            read_all_filters_by_event_type,
            subscription_catches_up_then_follows_live_appends,
            subscription_starts_after_its_position_and_filters,
            concurrent_appends_with_the_same_expectation_one_wins,
            concurrent_appends_to_disjoint_streams_all_succeed,
            undecodable_event_is_a_typed_error,
            ten_thousand_events_in_one_append,
            nul_characters_are_refused_before_the_store,
            an_idempotency_key_writes_once_and_replays_the_result,
            concurrent_appends_with_one_idempotency_key_write_once,
            snapshots_keep_the_one_reaching_furthest,
            read_streams_after_returns_only_later_events,
            read_from_snapshot_returns_the_snapshot_and_what_follows,
            snapshots_shorten_folds_without_changing_decisions,
            own_appends_keep_the_executors_snapshot_current,
            unusable_snapshots_are_ignored,
            one_appends_events_keep_the_order_they_were_given,
            an_event_order_must_match_the_streams_events,
            a_commands_events_keep_the_order_it_emitted_them,
            an_idempotency_key_is_refused_for_another_purpose,
            stream_pages_forwards_without_holes_or_duplicates,
            stream_pages_backwards_newest_first,
            stream_pages_past_the_end_and_of_absent_streams,
            stream_pages_filter_by_event_type,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run($factory, $crate::conformance::$case);
            }
        )*
    };
}

/// The event type the suite writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestEvent {
    /// A first kind of event.
    Created {
        /// Unique per event within a case.
        marker: u64,
    },
    /// A second kind, to test type filters.
    Noted {
        /// Unique per event within a case.
        marker: u64,
        /// Free text, including characters that need escaping.
        text: String,
    },
}

impl TestEvent {
    /// The event's marker.
    pub fn marker(&self) -> u64 {
        match self {
            Self::Created { marker } | Self::Noted { marker, .. } => *marker,
        }
    }
}

impl Event for TestEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Created { .. } => "conformance.Created",
            Self::Noted { .. } => "conformance.Noted",
        }
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).expect("a valid stream id")
}

fn created(marker: u64) -> NewEvent {
    NewEvent::from_event(&TestEvent::Created { marker }, EventMetadata::default()).unwrap()
}

fn noted(marker: u64) -> NewEvent {
    let text = format!("note {marker}: quotes ' \" ; -- ünïcødé");
    NewEvent::from_event(&TestEvent::Noted { marker, text }, EventMetadata::default()).unwrap()
}

fn markers(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.decode::<TestEvent>().unwrap().payload.marker())
        .collect()
}

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

async fn append<S: EventStore>(
    store: &S,
    streams: Vec<StreamAppend>,
) -> Result<AppendResult, StoreError> {
    store.append(AppendRequest::new(streams).unwrap()).await
}

async fn append_ok<S: EventStore>(store: &S, id: &StreamId, events: Vec<NewEvent>) -> AppendResult {
    store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .expect("an append with ExpectedVersion::Any succeeds")
}

async fn read_one<S: EventStore>(store: &S, id: &StreamId) -> (Vec<RecordedEvent>, StreamVersion) {
    let read = store.read_streams(std::slice::from_ref(id)).await.unwrap();
    let version = read.version(id);
    (read.events, version)
}

async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    store
        .read_all(&ReadAllQuery::from_start().page_size(NonZeroUsize::new(1_000_000).unwrap()))
        .await
        .unwrap()
}

fn expect_conflict(result: Result<AppendResult, StoreError>) -> Vec<crate::VersionConflict> {
    match result {
        Err(StoreError::Conflict { conflicts }) => conflicts,
        other => panic!("expected a version conflict, got {other:?}"),
    }
}
