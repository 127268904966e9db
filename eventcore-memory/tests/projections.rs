//! The projection conformance suite, run against the in-memory adapter.

use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};

eventcore::projection_conformance_tests!(|| async {
    (InMemoryEventStore::new(), InMemoryCheckpointStore::new())
});
