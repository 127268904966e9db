//! The store conformance suite, the same code as for the memory store, on a real PostgreSQL.

mod support;

eventcore::conformance_tests!(support::fresh_store);

mod evolution {
    use super::support;

    eventcore::evolution_conformance_tests!(|upcasters| async move {
        let store = support::fresh_store().await;
        let checkpoints = store.checkpoints();
        (store.clone().with_upcasters(upcasters), store, checkpoints)
    });
}

mod archive {
    use super::support;

    eventcore::archive_conformance_tests!(support::fresh_store);
}
