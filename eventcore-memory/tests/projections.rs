//! The projection conformance suite, run against the in-memory adapter.

use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};

eventcore::projection_conformance_tests!(|| async {
    (InMemoryEventStore::new(), InMemoryCheckpointStore::new())
});

#[test]
fn one_leader_per_projection_name() {
    eventcore::conformance::run(
        || async { (InMemoryEventStore::new(), InMemoryCheckpointStore::new()) },
        |(store, checkpoints)| {
            eventcore::projection_conformance::one_leader_per_projection_name(
                store,
                checkpoints,
                eventcore_memory::InMemoryLeadership::new(),
            )
        },
    );
}
