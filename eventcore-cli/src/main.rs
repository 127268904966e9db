//! `eventcore`: the operator's tool for an EventCore store on PostgreSQL.
//!
//! Configured like the store: `DATABASE_URL` (or `--database-url`) and
//! `--schema` (or `EVENTCORE_SCHEMA`, default `public`). Every command
//! prints a table for people, or JSON with `--json` for scripts.
//!
//! Exit codes: 0 done; 1 failed; 2 bad usage or input (an invalid stream
//! id, position or archive line); 3 not found (a stream or projection);
//! 4 the database cannot be reached; 5 the schema is not initialized, or
//! is at another migration than this tool's.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod commands;
mod failure;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// Inspect, steer, export and import an EventCore store on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "eventcore", version, about, long_about = None)]
struct Cli {
    /// The PostgreSQL database (a postgres:// URL).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// The schema holding EventCore's tables.
    #[arg(
        long,
        env = "EVENTCORE_SCHEMA",
        default_value = "public",
        global = true
    )]
    schema: String,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create EventCore's tables, or bring them to this version.
    Init,
    /// Apply pending migrations; with --dry-run only list them.
    Migrate {
        /// List the pending migrations, apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Schema version, totals, the delivery watermark and the projections.
    Status,
    /// The streams that received most of the latest events.
    Streams(commands::browse::StreamsArgs),
    /// The events of one stream, a page at a time.
    Stream(commands::browse::StreamArgs),
    /// Follow the global order live, until Ctrl-C (or --count events).
    Tail(commands::browse::TailArgs),
    /// Every projection with its state, lag and last error.
    Projections,
    /// Ask a projection's running leader to pause, resume or rebuild.
    Projection(commands::projections::SteerArgs),
    /// Write events to a JSON Lines archive, in global order.
    Export(commands::archive::ExportArgs),
    /// Read a JSON Lines archive into the schema (or into a memory-store file).
    Import(commands::archive::ImportArgs),
    /// Events per day and per type.
    Stats(commands::stats::StatsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return failure::report(&Failure::other(error), json),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure::report(&failure, json),
    }
}
