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

use futures::FutureExt as _;
use tracelab_telemetry::server::server_span;

use crate::error::ApiError;
use crate::serve::{ConnectionLimits, serve_with_limits};
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
/// test-harness endpoint. The admin (fault) API is not here: it has its own
/// listener ([`App::with_admin`]), so `/admin/...` on the public port is a
/// 404 like any unknown route.
pub fn standard(routes: Router, limits: StandardLimits, w3c: &W3cHarness) -> Router {
    routes
        .merge(w3c.routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(limits.request_timeout, timeout))
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(from_fn_with_state(limits.body_limit, refuse_oversized))
        .layer(from_fn(server_span))
}

/// The admin listener's router: `admin` (the fault API, which guards itself
/// with the admin token) with JSON 404/405 and the body limit, and no SERVER
/// span: admin calls must never show up in the traces a learner is
/// investigating.
pub fn admin_router(admin: Router, limits: StandardLimits) -> Router {
    admin
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(from_fn_with_state(limits.body_limit, refuse_oversized))
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

/// Binds `addr` (port 0 picks one). [`App::run_until`] logs the real
/// address in its `listening` line.
///
/// Fails when the address is taken or not local.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `router` within the default [`ConnectionLimits`] until `shutdown`
/// resolves, then lets in-flight requests finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with_limits(
        listener,
        router,
        ConnectionLimits::default(),
        shutdown,
        grace,
    )
    .await
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
pub fn service_router(routes: Router, w3c: &W3cHarness) -> Router {
    standard(routes, StandardLimits::default(), w3c)
}

type Background =
    Box<dyn FnOnce(tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> + Send>;

/// A service ready to run: its bound listener and router, its admin
/// listener and router, and the background tasks (an outbox relay, a queue
/// consumer) that start with it and stop after the HTTP side has drained.
pub struct App {
    listener: TcpListener,
    router: Router,
    admin: Option<(TcpListener, Router)>,
    background: Vec<(&'static str, Background)>,
}

impl App {
    /// Binds `addr` (port 0 allowed; the `listening` line reports the real
    /// port). Fails when the address cannot be bound.
    pub async fn bind(addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        Ok(Self {
            listener: bind(addr).await?,
            router,
            admin: None,
            background: Vec::new(),
        })
    }

    /// Serves `admin` (the fault API) on a listener of its own at `addr`
    /// (port 0 allowed), never on the public one: bind it to loopback or to
    /// a network only the lab's tools reach. Fails when the address cannot
    /// be bound.
    pub async fn with_admin(mut self, addr: SocketAddr, admin: Router) -> std::io::Result<Self> {
        let listener = bind(addr).await?;
        self.admin = Some((listener, admin_router(admin, StandardLimits::default())));
        Ok(self)
    }

    /// The admin listener's address, once [`App::with_admin`] bound one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("a bound listener has an address"))
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

    /// Logs a `listening` line per listener (`addr`; the admin one also
    /// `listener=admin`) that `tracelab up` and the tests read to learn the
    /// real addresses, serves both listeners until `shutdown` resolves and
    /// drains them for at most 5 s, then stops the background tasks
    /// (waiting up to 5 s for them, together).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "listening");
        if let Some(admin) = self.admin_addr() {
            tracing::info!(listener = "admin", addr = %admin, "listening");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = self
            .background
            .into_iter()
            .map(|(name, start)| (name, start(stop_rx.clone())))
            .collect();
        let shutdown = shutdown.shared();
        let grace = Duration::from_secs(5);
        let public = serve(self.listener, self.router, shutdown.clone(), grace);
        let served = match self.admin {
            Some((listener, router)) => {
                let (public, admin) =
                    tokio::join!(public, serve(listener, router, shutdown, grace));
                public.and(admin)
            }
            None => public.await,
        };
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
    use axum::routing::get;

    use super::*;

    /// `/admin/...` answers on the admin listener and nowhere else: on the
    /// public port it is the JSON 404 of any unknown route.
    #[tokio::test]
    async fn the_admin_api_answers_on_its_own_listener_only() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let public = service_router(
            Router::new().route("/health", get(|| async { "ok" })),
            &W3cHarness::off(),
        );
        let admin = Router::new().route("/admin/faults", get(|| async { "faults" }));
        let app = App::bind(any, public)
            .await
            .unwrap()
            .with_admin(any, admin)
            .await
            .unwrap();
        let (public, admin) = (app.local_addr(), app.admin_addr().unwrap());
        assert_ne!(public.port(), admin.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let get = |url: String| async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status(), response.text().await.unwrap())
        };
        let (status, body) = get(format!("http://{public}/admin/faults")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(
            get(format!("http://{admin}/admin/faults")).await,
            (StatusCode::OK, "faults".to_string())
        );
        let (status, body) = get(format!("http://{admin}/health")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(
            get(format!("http://{public}/health")).await.0,
            StatusCode::OK
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

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
