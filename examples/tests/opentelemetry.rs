//! EventCore's spans and metrics, exported through the OpenTelemetry SDK
//! into memory, have the documented names and fields.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventcore::{CommandExecutor, ExecutionError, ExecutionOptions, StreamId, telemetry};
use eventcore_examples::{
    banking::{Amount, BankError, Deposit, OpenAccount, Withdraw},
    otel::InMemoryTelemetry,
};
use opentelemetry::{KeyValue, trace::Status};

fn attribute(attributes: &[KeyValue], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == name)
        .map(|kv| kv.value.to_string())
}

#[test]
fn spans_and_metrics_reach_opentelemetry_with_the_documented_names() {
    let telemetry = InMemoryTelemetry::new();
    let _spans = tracing::subscriber::set_default(telemetry.subscriber());
    let recorder = telemetry.recorder();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = runtime.block_on(async {
        let store = eventcore_postgres::testing::fresh_store()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let executor = CommandExecutor::new(store.clone());
        let account = StreamId::try_new("otel-account").unwrap();
        let open = OpenAccount {
            account: account.clone(),
            owner: "ann".into(),
        };
        executor
            .execute(&open, ExecutionOptions::default())
            .await
            .unwrap();
        let deposit = Deposit {
            account: account.clone(),
            amount: Amount::try_new(100).unwrap(),
            reference: None,
        };
        executor
            .execute(&deposit, ExecutionOptions::default())
            .await
            .unwrap();
        let overdraw = Withdraw {
            account,
            amount: Amount::try_new(1_000).unwrap(),
        };
        let refused = executor
            .execute(&overdraw, ExecutionOptions::default())
            .await;
        assert!(matches!(
            refused,
            Err(ExecutionError::Rejected(
                BankError::InsufficientFunds { .. }
            ))
        ));
        store.schema().to_string()
    });
    telemetry.flush().unwrap();

    let spans = telemetry.spans().unwrap();
    let executions: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "eventcore.execute")
        .collect();
    assert_eq!(
        executions.len(),
        3,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for execution in &executions {
        for field in [
            "command",
            "streams",
            "stream_count",
            "correlation_id",
            "attempt",
            "outcome",
        ] {
            assert!(
                attribute(&execution.attributes, field).is_some(),
                "{field} missing on {:?}",
                execution.attributes
            );
        }
    }
    let outcomes: Vec<String> = executions
        .iter()
        .map(|e| attribute(&e.attributes, "outcome").unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "rejected"]);
    let rejected = executions[2];
    assert!(
        matches!(rejected.status, Status::Error { .. }),
        "{:?}",
        rejected.status
    );
    assert_eq!(
        attribute(&rejected.attributes, "error.type").as_deref(),
        Some("rejected")
    );

    // Each execution's PostgreSQL calls are its children, named after the
    // operation and the schema, with the database convention's fields.
    let first = executions[0].span_context.span_id();
    let calls: Vec<_> = spans.iter().filter(|s| s.parent_span_id == first).collect();
    let names: Vec<String> = calls.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        names,
        [format!("read_streams {schema}"), format!("append {schema}")],
        "{calls:#?}"
    );
    for call in &calls {
        assert_eq!(
            attribute(&call.attributes, "db.system.name").as_deref(),
            Some("postgresql")
        );
        assert_eq!(
            attribute(&call.attributes, "db.namespace"),
            Some(schema.clone())
        );
        assert!(attribute(&call.attributes, "db.operation.name").is_some());
        assert_eq!(call.span_kind, opentelemetry::trace::SpanKind::Client);
    }

    let exported = telemetry.metric_names().unwrap();
    println!(
        "{} spans, {} metrics: {exported:?}",
        spans.len(),
        exported.len()
    );
    for name in [
        telemetry::COMMANDS_TOTAL,
        telemetry::COMMAND_DURATION_SECONDS,
        telemetry::COMMAND_ATTEMPTS,
        telemetry::STORE_OPERATION_DURATION_SECONDS,
        telemetry::EVENTS_WRITTEN_TOTAL,
        telemetry::BYTES_WRITTEN_TOTAL,
        telemetry::SNAPSHOT_CACHE_MISSES_TOTAL,
        eventcore_postgres::telemetry::POOL_CONNECTIONS,
        eventcore_postgres::telemetry::POOL_ACQUIRE_SECONDS,
    ] {
        assert!(
            exported.iter().any(|n| n == name),
            "{name} not exported: {exported:?}"
        );
    }
}
