//! The store conformance suite, run against the in-memory adapter.

use eventcore_memory::InMemoryEventStore;

eventcore::conformance_tests!(|| async { InMemoryEventStore::new() });
