//! The store conformance suite, run against the in-memory adapter.

use eventcore_memory::InMemoryEventStore;

eventcore::conformance_tests!(|| async { InMemoryEventStore::new() });

mod evolution {
    use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};

    eventcore::evolution_conformance_tests!(|upcasters| async move {
        let store = InMemoryEventStore::new();
        (
            store.clone().with_upcasters(upcasters),
            store,
            InMemoryCheckpointStore::new(),
        )
    });
}

mod archive {
    use eventcore_memory::InMemoryEventStore;

    eventcore::archive_conformance_tests!(|| async { InMemoryEventStore::new() });
}
