//! The subcommands, one module per group.

pub mod archive;
pub mod browse;
pub mod projections;
pub mod schema;
pub mod stats;

use eventcore_postgres::{ConnectError, PostgresConfig, PostgresEventStore};

use crate::{
    Cli, Command,
    failure::{Failure, Kind},
};

/// What every command gets: the connected store and how to print.
pub struct Context {
    pub store: PostgresEventStore,
    pub json: bool,
}

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Import(args) = &cli.command
        && args.is_offline()
    {
        return archive::import_into_file(args, cli.json).await;
    }
    let store = connect(&cli).await?;
    let context = Context {
        store,
        json: cli.json,
    };
    match cli.command {
        Command::Init => return schema::init(&context).await,
        Command::Migrate { dry_run } => return schema::migrate(&context, dry_run).await,
        _ => {}
    }
    schema::require_current(&context).await?;
    match cli.command {
        Command::Init | Command::Migrate { .. } => Ok(()),
        Command::Status => schema::status(&context).await,
        Command::Streams(args) => browse::streams(&context, &args).await,
        Command::Stream(args) => browse::stream(&context, &args).await,
        Command::Tail(args) => browse::tail(&context, &args).await,
        Command::Projections => projections::list(&context).await,
        Command::Projection(args) => projections::steer(&context, &args).await,
        Command::Export(args) => archive::export(&context, &args).await,
        Command::Import(args) => archive::import(&context, &args).await,
        Command::Stats(args) => stats::stats(&context, &args).await,
    }
}

async fn connect(cli: &Cli) -> Result<PostgresEventStore, Failure> {
    let Some(url) = &cli.database_url else {
        return Err(Failure::input(
            "no database given: set DATABASE_URL or pass --database-url postgres://...",
        ));
    };
    let config = PostgresConfig::new(url.clone())
        .max_connections(4)
        .schema(&cli.schema)
        .map_err(ConnectError::Config)?;
    Ok(PostgresEventStore::new(config).await?)
}

/// A failure for something that is not there.
pub fn not_found(message: impl std::fmt::Display) -> Failure {
    Failure::new(Kind::NotFound, message)
}
