//! The projection conformance suite, the same code as for the memory store, on a real PostgreSQL.

mod support;

eventcore::projection_conformance_tests!(|| async {
    let store = support::fresh_store().await;
    let checkpoints = store.checkpoints();
    (store, checkpoints)
});

mod report {
    use std::{convert::Infallible, time::Duration};

    use eventcore::{
        AppendRequest, EventStore, ExpectedVersion, Projection, ProjectionRunner, ProjectionState,
        RecordedEvent,
    };
    use serde_json::json;

    use super::support::{self, event, stream};

    struct Nothing;

    impl Projection for Nothing {
        type Error = Infallible;
        fn name(&self) -> &str {
            "nothing"
        }
        async fn apply(&mut self, _: &RecordedEvent) -> Result<(), Infallible> {
            Ok(())
        }
        async fn reset(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    async fn append(store: &impl EventStore, n: usize) {
        for i in 0..n {
            store
                .append(AppendRequest::single(
                    stream("reported"),
                    ExpectedVersion::Any,
                    vec![event(json!({ "i": i }))],
                ))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_monitoring_report_shows_state_progress_and_lag() {
        let store = support::fresh_store().await;
        append(&store, 3).await;
        let handle = ProjectionRunner::new(store.clone(), Nothing, store.checkpoints()).start();
        tokio::time::timeout(
            Duration::from_secs(30),
            handle.wait_for(|s| s.events_processed >= 3),
        )
        .await
        .unwrap()
        .unwrap();
        handle.pause();
        handle
            .wait_for(|s| s.state == ProjectionState::Paused)
            .await
            .unwrap();
        append(&store, 4).await;
        // The lag counts events a reader may be handed now: below every
        // transaction still running anywhere on the server. Another test's
        // transaction (or autovacuum's) can hide the new events for a while.
        let mut report = store.checkpoints().report().await.unwrap();
        for _ in 0..200 {
            if report.first().is_some_and(|r| r.lag == 4) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            report = store.checkpoints().report().await.unwrap();
        }
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].checkpoint.name, "nothing");
        assert_eq!(report[0].checkpoint.state, ProjectionState::Paused);
        assert_eq!(report[0].checkpoint.events_processed, 3);
        assert_eq!(report[0].lag, 4);
        handle.stop().await.unwrap();
    }
}

#[test]
fn one_leader_per_projection_name() {
    eventcore::conformance::run(support::fresh_store, |store| {
        let checkpoints = store.checkpoints();
        let leadership = store.leadership(std::time::Duration::from_millis(100));
        eventcore::projection_conformance::one_leader_per_projection_name(
            store,
            checkpoints,
            leadership,
        )
    });
}
