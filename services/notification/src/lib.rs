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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use tracelab_service::{Check, health_response};
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

/// notification's fault injection points (see docs/architecture.md).
pub const FAULT_POINTS: &[&str] = &[
    "notification.consume",
    "notification.send_email",
    "notification.telemetry",
];

pub fn router(state: AppState, admin: Router) -> Router {
    tracelab_service::app::service_router(routes(state), admin)
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
        })),
    )
}

/// A bound notification service with its consumer.
pub struct App {
    listener: TcpListener,
    router: Router,
    consumer: Consumer,
}

impl App {
    /// Connects to Postgres, migrates, declares the queue and binds.
    ///
    /// Fails when a dependency stays unreachable or the address is taken.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = tracelab_db::connect(
            &config.database_url,
            config.db_pool_size,
            Duration::from_secs(10),
        )
        .await?;
        tracelab_db::migrate(&pool).await?;
        let stats = Arc::new(Stats::default());
        let (faults, admin) = tracelab_faults::for_service("notification", FAULT_POINTS);
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
        let listener = tracelab_service::bind(config.listen).await?;
        Ok(Self {
            router: router(AppState { pool, stats }, admin),
            listener,
            consumer,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves and consumes until `shutdown`; the message in hand is
    /// finished (and acked) before returning.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let consumer = tokio::spawn(self.consumer.run(stop_rx));
        let served =
            tracelab_service::serve(self.listener, self.router, shutdown, Duration::from_secs(5))
                .await;
        let _ = stop_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .is_err()
        {
            tracing::warn!("consumer did not stop within 5 s");
        }
        served?;
        Ok(())
    }
}
