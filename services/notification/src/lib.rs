//! notification: consumes `payment.completed` events from RabbitMQ and
//! records the email it would send, exactly once per event.
//!
//! See [`consumer`] for the delivery rules (CONSUMER span continuing the
//! producer's trace, ack after commit, dead-letter queue). `GET /health`
//! reports Postgres, the broker connection and counters.
//!
//! Run: `cargo run -p notification` (127.0.0.1:8084; needs Postgres and RabbitMQ).

pub mod config;
pub mod consumer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use tracelab_contract::service::ServiceName;
use tracelab_service::{App, Check, W3cHarness, health_response};
use tracelab_telemetry::db::DbTarget;

pub use config::Config;
use consumer::{Consumer, Stats};

#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    pub stats: Arc<Stats>,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

pub fn router(state: AppState, w3c: &W3cHarness) -> Router {
    tracelab_service::app::service_router(routes(state), w3c)
}

async fn health(State(state): State<AppState>) -> Response {
    let db = tracelab_db::ping(&state.pool).await;
    let broker = if state.stats.connected.load(Ordering::Relaxed) {
        Ok(())
    } else {
        Err("consumer not connected".to_string())
    };
    health_response(
        "notification",
        vec![Check::new("postgres", db), Check::new("rabbitmq", broker)],
        Some(json!({
            "processed": state.stats.processed.load(Ordering::Relaxed),
            "duplicates": state.stats.duplicates.load(Ordering::Relaxed),
            "dead_lettered": state.stats.dead_lettered.load(Ordering::Relaxed),
            "requeued": state.stats.requeued.load(Ordering::Relaxed),
        })),
    )
}

/// Connects to Postgres, migrates, declares the queue and binds. The
/// consumer runs beside the HTTP server and finishes (and acks) the message
/// in hand before stopping.
///
/// Fails when a dependency stays unreachable or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let pool = tracelab_db::connect(
        &config.database_url,
        config.db_pool_size,
        Duration::from_secs(10),
    )
    .await?;
    tracelab_db::migrate(&pool).await?;
    let stats = Arc::new(Stats::default());
    let token = &config.admin.token;
    let (faults, admin) = tracelab_faults::for_service(ServiceName::Notification, token);
    let consumer = Consumer {
        faults,
        pool: pool.clone(),
        db: DbTarget::from_url(&config.database_url),
        amqp_url: config.amqp_url.clone(),
        exchange: config.exchange.clone(),
        queue: config.queue.clone(),
        prefetch: config.prefetch,
        stats: stats.clone(),
    };
    consumer.declare().await?;
    Ok(App::bind(
        config.listen,
        router(AppState { pool, stats }, &config.w3c_harness),
    )
    .await?
    .with_admin(config.admin.listen, admin)
    .await?
    .with_background("consumer", move |stop| consumer.run(stop)))
}
