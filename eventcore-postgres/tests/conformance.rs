//! The store conformance suite, the same code as for the memory store, on a real PostgreSQL.

mod support;

eventcore::conformance_tests!(support::fresh_store);
