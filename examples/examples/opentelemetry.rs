//! EventCore's traces and metrics through the OpenTelemetry SDK, exported
//! into memory and printed: opens an account, deposits, and tries an
//! overdraft, on the memory store or on PostgreSQL when `DATABASE_URL` is set
//! (then with a span per database call).
//!
//! ```text
//! cargo run -p eventcore-examples --example opentelemetry
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run -p eventcore-examples --example opentelemetry
//! ```

use anyhow::Context;
use eventcore::{CommandExecutor, EventStore, ExecutionOptions, StreamId};
use eventcore_examples::{
    banking::{Amount, Deposit, OpenAccount, Withdraw},
    otel::InMemoryTelemetry,
};

async fn run_commands<S: EventStore>(store: S) -> anyhow::Result<()> {
    let executor = CommandExecutor::new(store);
    let account = StreamId::try_new(format!("otel-example/{:08x}", fastrand::u32(..)))?;
    executor
        .execute(
            &OpenAccount {
                account: account.clone(),
                owner: "ann".into(),
            },
            ExecutionOptions::default(),
        )
        .await?;
    executor
        .execute(
            &Deposit {
                account: account.clone(),
                amount: Amount::try_new(100)?,
                reference: Some("slip 42".into()),
            },
            ExecutionOptions::default(),
        )
        .await?;
    let overdraft = executor
        .execute(
            &Withdraw {
                account,
                amount: Amount::try_new(1_000)?,
            },
            ExecutionOptions::default(),
        )
        .await;
    println!(
        "overdraft: {}",
        overdraft.map_or_else(|e| e.to_string(), |_| "written".into())
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = InMemoryTelemetry::new();
    tracing::subscriber::set_global_default(telemetry.subscriber())
        .context("installing the tracing subscriber")?;
    metrics::set_global_recorder(telemetry.recorder())
        .map_err(|_| anyhow::anyhow!("a metrics recorder is installed already"))?;

    if std::env::var_os("DATABASE_URL").is_some() {
        let store = eventcore_postgres::PostgresEventStore::new(
            eventcore_postgres::PostgresConfig::from_env()?.schema("otel_example")?,
        )
        .await?;
        store.initialize().await?;
        run_commands(store).await?;
    } else {
        run_commands(eventcore_memory::InMemoryEventStore::new()).await?;
    }
    telemetry.flush()?;

    println!("\nspans exported:");
    for span in telemetry.spans().map_err(|e| anyhow::anyhow!(e))? {
        let attributes: Vec<String> = span
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        println!(
            "  {} [{:?}] {}",
            span.name,
            span.status,
            attributes.join(" ")
        );
    }
    println!("\nmetrics exported:");
    for name in telemetry.metric_names().map_err(|e| anyhow::anyhow!(e))? {
        println!("  {name}");
    }
    Ok(())
}
