//! Errors a new user meets, and what they say: the cause and what to do,
//! never a password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    error::Error,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventcore::EventStore;
use eventcore_postgres::{ConfigError, ConnectError, PostgresConfig, PostgresEventStore};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

/// The error and its causes, each once, as `anyhow`'s `{:#}` prints them.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A port on loopback nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_schema_never_initialized_says_to_call_initialize() {
    let config = support::fresh_config().await;
    let store = PostgresEventStore::new(config).await.unwrap();
    let error = store
        .read_streams(&[support::stream("anything")])
        .await
        .unwrap_err();
    let text = chain(&error);
    println!("{text}");
    assert!(text.contains("initialize()"), "{text}");
    assert!(
        text.contains("eventcore_events"),
        "names the missing table: {text}"
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_named_by_host_and_port() {
    let port = closed_port();
    let config = PostgresConfig::new(format!("postgres://u:hunter2@127.0.0.1:{port}/db"))
        .acquire_timeout(Duration::from_secs(2));
    let error = PostgresEventStore::new(config).await.unwrap_err();
    let text = chain(&error);
    println!("{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn a_server_that_goes_down_is_named_by_host_and_port_on_every_call() {
    let port = closed_port();
    let pool_options = sqlx::postgres::PgPoolOptions::new().acquire_timeout(Duration::from_secs(1));
    let connect_options = format!("postgres://u:hunter2@127.0.0.1:{port}/db")
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap();
    let store = PostgresEventStore::from_pool(pool_options.connect_lazy_with(connect_options));
    let error = store
        .read_streams(&[support::stream("anything")])
        .await
        .unwrap_err();
    let text = chain(&error);
    println!("{text}");
    assert!(
        matches!(error, eventcore::StoreError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn urls_of_other_databases_are_refused() {
    for url in [
        "mysql://root:hunter2@127.0.0.1:3306/bank",
        "sqlite:///tmp/bank.db",
        "http://127.0.0.1/",
    ] {
        let error = PostgresEventStore::new(PostgresConfig::new(url))
            .await
            .unwrap_err();
        let text = chain(&error);
        println!("{text}");
        assert!(
            matches!(error, ConnectError::Config(ConfigError::NotPostgres { .. })),
            "{url}: {error:?}"
        );
        assert!(text.contains("postgres://"), "says what to use: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// Counts the notices sqlx logs.
#[derive(Clone, Default)]
struct Notices(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for Notices {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::postgres::notice" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn initialize_prints_no_notices() {
    let notices = Notices::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(notices.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = support::fresh_store().await;
        // Everything exists now: a second run would say "already exists, skipping".
        store.initialize().await.unwrap();
        store.initialize().await.unwrap();
    });
    assert_eq!(notices.0.load(Ordering::Relaxed), 0);
}
