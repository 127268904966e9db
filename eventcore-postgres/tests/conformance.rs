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

/// The same suite on a store made from the caller's pool: appends run in
/// explicit SERIALIZABLE transactions on that pool.
mod from_pool {
    use super::support;

    eventcore::conformance_tests!(support::fresh_store_from_pool);
}

/// The same suite with group commit on: concurrent appends share
/// transactions, each with its own checks and result.
mod group_commit {
    use super::support;

    eventcore::conformance_tests!(support::fresh_store_grouped);

    /// And on the caller's pool, where batches are explicit transactions.
    mod from_pool {
        use super::support;

        eventcore::conformance_tests!(support::fresh_store_from_pool_grouped);
    }
}
