//! The bank as an HTTP JSON API (see `eventcore_examples::web` for the
//! routes and how errors map to statuses).
//!
//! ```sh
//! cargo run -p eventcore-examples --bin bank-api -- --addr 127.0.0.1:3000
//! curl -s -X POST localhost:3000/accounts -H 'content-type: application/json' \
//!      -d '{"account": "alice", "owner": "Alice"}'
//! curl -s -X POST localhost:3000/accounts/alice/deposits -H 'content-type: application/json' \
//!      -H 'Idempotency-Key: deposit-1' -d '{"cents": 500}'
//! curl -s localhost:3000/accounts/alice/balance
//! ```
//!
//! On the in-memory store by default; on PostgreSQL (schema `bank_api`,
//! created when missing) when `DATABASE_URL` is set. Ctrl-C or SIGTERM
//! stops it gracefully: requests in flight finish first.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use eventcore_examples::{banking, web};
use eventcore_memory::InMemoryEventStore;
use eventcore_postgres::{PostgresConfig, PostgresEventStore};

/// Serves the bank over HTTP.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// PostgreSQL schema (when DATABASE_URL is set).
    #[arg(long, default_value = "bank_api")]
    schema: String,
}

/// Ctrl-C, or SIGTERM on Unix: what a terminal or a service manager sends.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    eprintln!("shutting down: finishing the requests in flight");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let upcasters = banking::upcasters()?;
    if std::env::var_os("DATABASE_URL").is_some() {
        let config = PostgresConfig::from_env()?
            .schema(&args.schema)?
            .upcasters(upcasters);
        let store = PostgresEventStore::new(config).await?;
        store.initialize().await?;
        eprintln!(
            "bank API on http://{addr} (PostgreSQL, schema {})",
            args.schema
        );
        web::serve(store, listener, shutdown_signal()).await?;
    } else {
        eprintln!("bank API on http://{addr} (in memory; set DATABASE_URL for PostgreSQL)");
        let store = InMemoryEventStore::new().with_upcasters(upcasters);
        web::serve(store, listener, shutdown_signal()).await?;
    }
    eprintln!("stopped");
    Ok(())
}
