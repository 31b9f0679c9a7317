//! Building, binding and serving a service.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tokio::net::TcpListener;

use tracelab_telemetry::server::server_span;

use crate::error::ApiError;
use crate::w3c::W3cHarness;

/// Limits every service applies to incoming requests.
#[derive(Debug, Clone, Copy)]
pub struct StandardLimits {
    pub body_limit: usize,
    pub request_timeout: Duration,
}

impl Default for StandardLimits {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Wraps a service's routes with what every service has: JSON 404/405, a
/// body limit, a request timeout, the SERVER span (outermost, so it records
/// the status the client really got) and, when `w3c` is on, the W3C
/// test-harness endpoint. `admin` (the fault API) is merged after the
/// layers: admin calls must never show up in the traces a learner is
/// investigating.
pub fn standard(routes: Router, limits: StandardLimits, w3c: &W3cHarness, admin: Router) -> Router {
    let traced = routes
        .merge(w3c.routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(limits.request_timeout, timeout))
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(from_fn_with_state(limits.body_limit, refuse_oversized))
        .layer(from_fn(server_span));
    admin
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .merge(traced)
}

/// Answers a declared-too-large body with 413 JSON before any handler runs,
/// after reading what the client sends (up to a bound): closing a socket
/// with unread data resets the connection, and the client would never see
/// the answer. Bodies without a length are still capped by the extractors.
async fn refuse_oversized(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(length) if length > limit => {
            if length <= limit.saturating_mul(32) {
                let _ = axum::body::to_bytes(req.into_body(), length).await;
            }
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is {length} bytes; the limit is {limit}"),
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("request exceeded {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Binds `addr` (port 0 picks one) and logs the `listening` line that
/// `tracelab up` and the tests read to learn the real address.
///
/// Fails when the address is taken or not local.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "listening");
    Ok(listener)
}

/// Serves `router` until `shutdown` resolves, then lets in-flight requests
/// finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "drain grace period over, closing remaining connections");
            Ok(())
        }
    }
}

/// What a service's `main` runs: telemetry first, then config, then the
/// service until SIGINT/SIGTERM, then the span flush.
///
/// `run` receives the config and a shutdown future; it returns when the
/// service has stopped. Config and startup errors print a readable message
/// and exit with status 2 or 1.
pub struct Service;

impl Service {
    pub async fn main<C, E, F, Fut>(
        name: &'static str,
        config: fn() -> Result<C, E>,
        run: F,
    ) -> ExitCode
    where
        E: std::fmt::Display,
        F: FnOnce(C, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let telemetry = match tracelab_telemetry::init(name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: invalid telemetry configuration: {e}");
                return ExitCode::from(2);
            }
        };
        let config = match config() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name}: invalid configuration: {e}");
                telemetry.shutdown().await;
                return ExitCode::from(2);
            }
        };
        let signal = Box::pin(tracelab_telemetry::shutdown::shutdown_signal());
        let result = run(config, signal).await;
        let code = match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "{name} stopped with an error");
                eprintln!("{name}: {e:#}");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown().await;
        code
    }
}

/// [`standard`] with the default limits.
pub fn service_router(routes: Router, w3c: &W3cHarness, admin: Router) -> Router {
    standard(routes, StandardLimits::default(), w3c, admin)
}

type Background =
    Box<dyn FnOnce(tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> + Send>;

/// A service ready to run: its bound listener, its router, and the
/// background tasks (an outbox relay, a queue consumer) that start with it
/// and stop after the HTTP side has drained.
pub struct App {
    listener: TcpListener,
    router: Router,
    background: Vec<(&'static str, Background)>,
}

impl App {
    /// Binds `addr` (port 0 allowed; the `listening` line reports the real
    /// port). Fails when the address cannot be bound.
    pub async fn bind(addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        Ok(Self {
            listener: bind(addr).await?,
            router,
            background: Vec::new(),
        })
    }

    /// Adds a task started by [`App::run_until`]; it must return soon after
    /// its `stop` receiver turns true.
    pub fn with_background<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push((name, Box::new(move |stop| tokio::spawn(task(stop)))));
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves and drains for at most 5 s, then
    /// stops the background tasks (waiting up to 5 s for them, together).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = self
            .background
            .into_iter()
            .map(|(name, start)| (name, start(stop_rx.clone())))
            .collect();
        let served = serve(self.listener, self.router, shutdown, Duration::from_secs(5)).await;
        let _ = stop_tx.send(true);
        // Side by side: one slow task must not eat the others' grace time.
        futures::future::join_all(tasks.into_iter().map(|(name, task)| async move {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!(task = name, "background task did not stop within 5 s");
            }
        }))
        .await;
        served?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks that ignore `stop`: each gets 5 s, both in the same 5 s.
    #[tokio::test(start_paused = true)]
    async fn background_tasks_get_their_grace_time_together() {
        let app = App::bind(SocketAddr::from(([127, 0, 0, 1], 0)), Router::new())
            .await
            .unwrap();
        let stubborn = |_stop| async { tokio::time::sleep(Duration::from_secs(60)).await };
        let app = app
            .with_background("one", stubborn)
            .with_background("two", stubborn);
        let started = tokio::time::Instant::now();
        app.run_until(async {}).await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
}
