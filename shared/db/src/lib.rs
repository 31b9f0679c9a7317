//! Postgres for tracelab: a pool that waits briefly for the server, the
//! embedded migrations in `migrations/` (schema and seed data for every
//! service), a health probe, and [`query_with_pause`], which runs a
//! statement in its db span with the `slow_query` fault's pause. (`tracelab
//! up` creates and drops databases itself, with its own hints on how to
//! start Postgres; tests get a database of their own from
//! `testing::TestDatabase`, feature `test-support`.)
//!
//! The services share one database but each owns its tables: search reads
//! `products`, payment writes `orders`, `payments` and `outbox`,
//! notification writes `notifications`.

pub mod query;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

use std::time::Duration;

pub use query::{query_with_pause, query_with_pause_on};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// The migrations compiled into every binary that needs them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Database errors with the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url:?}: {source}")]
    Url { url: String, source: sqlx::Error },
    #[error("cannot connect to Postgres at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Query(#[from] sqlx::Error),
}

fn options(url: &str) -> Result<PgConnectOptions, DbError> {
    url.parse::<PgConnectOptions>()
        .map_err(|source| DbError::Url {
            url: url.to_string(),
            source,
        })
}

fn target(opts: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("")
    )
}

/// How long a query waits for a pooled connection unless the service says
/// otherwise ([`connect_with_acquire_timeout`]).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool of at most `max_connections`, retrying for up to `wait`
/// while the server comes up.
///
/// Fails when the URL is invalid or the server stays unreachable.
pub async fn connect(url: &str, max_connections: u32, wait: Duration) -> Result<PgPool, DbError> {
    connect_with(
        options(url)?,
        max_connections,
        DEFAULT_ACQUIRE_TIMEOUT,
        wait,
    )
    .await
}

/// [`connect`], with a query waiting at most `acquire_timeout` for a pooled
/// connection (a service whose callers give up at a known time keeps this
/// below it).
///
/// Fails when the URL is invalid or the server stays unreachable.
pub async fn connect_with_acquire_timeout(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    wait: Duration,
) -> Result<PgPool, DbError> {
    connect_with(options(url)?, max_connections, acquire_timeout, wait).await
}

/// [`connect`] with options already parsed.
async fn connect_with(
    opts: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
    wait: Duration,
) -> Result<PgPool, DbError> {
    let opts = opts.log_statements(tracing::log::LevelFilter::Trace);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(opts.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(DbError::Connect {
                    target: target(&opts),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Applies the embedded migrations (safe to call from several services at
/// once: sqlx serialises them with an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// How long [`ping`] waits for Postgres to answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why [`ping`] found Postgres unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The probe query failed: no connection could be had, or the server
    /// refused it.
    #[error("SELECT 1 failed: {0}")]
    Query(#[from] sqlx::Error),
    /// No answer in time (a hung server, or a pool with no free connection).
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// A cheap reachability probe for `/health`.
///
/// Fails when `SELECT 1` fails or takes longer than [`PING_TIMEOUT`].
pub async fn ping(pool: &PgPool) -> Result<(), PingError> {
    match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(PingError::Query(e)),
        Err(_) => Err(PingError::Timeout(PING_TIMEOUT)),
    }
}
