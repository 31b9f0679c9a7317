//! The lab console: the lab's one URL. A long-running HTTP API that does
//! what the CLI does to a lab (health, faults, scenarios, exercises, load,
//! one-shot actions, traces through the Tempo API), with the web page on
//! top of it. `tracelab up` serves it next to the lab it started;
//! `tracelab console` serves it for a lab started elsewhere (the compose
//! stack's `console` container).
//!
//! The console holds the services' admin token and the exercise state: the
//! CLI, the page and a second terminal are all clients of the same
//! console, so they see the same exercise. The routes are listed in
//! `docs/console-api.md`.
//!
//! The parts: [`api`] (the `/api/...` routes), `web` (the page),
//! [`sampling`] (the lab's two sampling policies and the samplers that
//! apply them) and [`client`] (the CLI's client of the API). `tracelab up` writes the
//! console's URL into the lab record (`crate::supervisor::LabRecord`), where
//! later commands find it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::exercise::Exercises;
use crate::fault::FaultClient;
use crate::scenario::Catalog;
use crate::supervisor::{ChildState, ChildStatus, Lab, LabMonitor, LabOptions};

pub mod api;
pub mod client;
pub mod sampling;
mod web;

pub use client::ConsoleClient;

/// The console's default port: clear of the gateway (8080), the services
/// (8081-8090) and their admin listeners (8180-8190), Tempo (3200), OTLP
/// (4317/4318), Grafana (3000) and Prometheus (9090) on the host. (In
/// compose the S3 store also listens on 7070, on its own address inside
/// the network, unpublished.)
pub const DEFAULT_PORT: u16 = 7070;

/// The console's default URL, where the CLI looks when no `--lab`,
/// `TRACELAB_URL` or record of a running lab says otherwise.
pub fn default_url() -> String {
    format!(
        "http://{}:{DEFAULT_PORT}",
        tracelab_contract::defaults::HOST
    )
}

/// How the lab the console drives was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// By `tracelab up`, in this process: the supervisor's view is known.
    Native,
    /// Elsewhere (the compose stack): only the URLs are known.
    Compose,
}

/// One service process as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Service (binary name).
    pub name: String,
    /// Process id, while a process runs.
    pub pid: Option<u32>,
    /// What the supervisor is doing with it.
    pub state: ChildState,
    /// Whether a process of it runs now.
    pub running: bool,
    /// How its last process ended, when one did.
    pub exit: Option<String>,
    /// How often the supervisor restarted it.
    pub restarts: u32,
    /// Resident memory of its process in KiB, while one runs.
    #[serde(default)]
    pub memory_kib: Option<u64>,
}

impl ProcessStatus {
    /// The console's view of one child of the supervisor.
    pub fn of_child(child: &ChildStatus) -> ProcessStatus {
        ProcessStatus {
            name: child.name.clone(),
            pid: child.pid,
            state: child.state,
            running: matches!(child.state, ChildState::Starting | ChildState::Running),
            exit: child.last_exit.as_ref().map(|e| e.reason.clone()),
            restarts: child.restarts,
            memory_kib: child.memory_kib,
        }
    }
}

/// What `scenario verify` and the DLQ routes (`/api/dlq`) need beyond
/// the URLs: the lab's Postgres and the notification dead-letter queue.
#[derive(Debug, Clone)]
pub struct VerifyBackends {
    /// Postgres URL of the lab's database.
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// The notification queue (its DLQ is `<queue>.dlq`).
    pub queue: String,
}

/// Everything the console needs to know about the lab it drives.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Native or compose.
    pub mode: Mode,
    /// Gateway base URL.
    pub gateway: String,
    /// Tempo API base URL.
    pub tempo: String,
    /// The services' base URLs (`/health`), `(name, URL)`.
    pub services: Vec<(String, String)>,
    /// The services' admin (fault) API base URLs, `(name, URL)`.
    pub admin: Vec<(String, String)>,
    /// The admin API's token (never sent to a console client).
    pub admin_token: String,
    /// The scenario catalog.
    pub catalog: Catalog,
    /// Where the exercise state and history are kept.
    pub state_dir: PathBuf,
    /// The supervisor's view of the processes (native only).
    pub processes: Option<LabMonitor>,
    /// Postgres and RabbitMQ for `scenario verify` and the DLQ routes, when known.
    pub verify: Option<VerifyBackends>,
    /// The embedded collector's API (its tail policy), when the lab has
    /// one: natively, unless the lab exports to an external collector.
    pub collector: Option<String>,
}

impl ConsoleConfig {
    /// The console of a lab started by this process.
    ///
    /// The admin URLs are set here, and only here, from the lab.
    pub fn for_lab(
        lab: &Lab,
        opts: &LabOptions,
        catalog: Catalog,
        state_dir: PathBuf,
    ) -> ConsoleConfig {
        let services: Vec<(String, String)> = lab
            .services()
            .into_iter()
            .map(|(n, u)| (n.to_string(), u))
            .collect();
        ConsoleConfig {
            mode: Mode::Native,
            gateway: lab.gateway_url(),
            tempo: lab.tempo_url(),
            admin: lab
                .admin_urls()
                .into_iter()
                .map(|(n, u)| (n.to_string(), u))
                .collect(),
            services,
            admin_token: lab.admin_token().to_string(),
            catalog,
            state_dir,
            processes: Some(lab.monitor()),
            collector: lab.collector().map(|_| lab.tempo_url()),
            verify: Some(VerifyBackends {
                database_url: lab.database_url().to_string(),
                amqp_url: opts.amqp_url.clone(),
                queue: lab.queue().to_string(),
            }),
        }
    }
}

/// The console's shared state: the lab's clients, the catalog, the
/// exercise store and the load runner.
#[derive(Clone)]
pub struct ConsoleState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ConsoleConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) faults: FaultClient,
    pub(crate) exercises: Exercises,
    /// Serializes exercise changes: two answers at once grade one state.
    pub(crate) exercise_lock: tokio::sync::Mutex<()>,
    pub(crate) load: api::load::LoadRunner,
    /// Serializes the DLQ routes: a listing holds the messages it reads
    /// until it closes, and a replay meanwhile would not see them.
    pub(crate) dlq_lock: tokio::sync::Mutex<()>,
    /// The head and tail samplers (`/api/sampling`).
    pub(crate) sampling: sampling::SamplingTargets,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("mode", &self.inner.config.mode)
            .field("gateway", &self.inner.config.gateway)
            .field("tempo", &self.inner.config.tempo)
            .finish_non_exhaustive()
    }
}

impl ConsoleState {
    /// The state for `config`.
    ///
    /// # Errors
    /// When an HTTP client cannot be built.
    pub fn new(config: ConsoleConfig) -> anyhow::Result<ConsoleState> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the console's HTTP client")?;
        let faults = FaultClient::new(config.admin.clone(), &config.admin_token)?;
        let exercises = Exercises::new(config.state_dir.clone());
        let sampling = sampling::SamplingTargets::new(
            config.admin.clone(),
            config.collector.clone(),
            &config.admin_token,
        )?;
        Ok(ConsoleState {
            inner: Arc::new(Inner {
                http,
                faults,
                exercises,
                exercise_lock: tokio::sync::Mutex::new(()),
                load: api::load::LoadRunner::default(),
                dlq_lock: tokio::sync::Mutex::new(()),
                sampling,
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConsoleConfig {
        &self.inner.config
    }

    /// Stops what the console runs in the background (the load).
    pub async fn shutdown(&self) {
        self.inner.load.stop().await;
    }
}

/// The console's router: the `/api/...` routes and the page.
pub fn router(state: ConsoleState) -> Router {
    api::router().with_state(state).merge(web::router())
}

/// Serves the console on `listener` until `shutdown` resolves, then stops
/// its background work.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: TcpListener,
    state: ConsoleState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the console");
    state.shutdown().await;
    served
}

/// A console serving in the background (`tracelab up`, tests).
#[derive(Debug)]
pub struct RunningConsole {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningConsole {
    /// Serves `state` on `listener` in a task of its own.
    ///
    /// # Errors
    /// When the listener has no address.
    pub fn start(listener: TcpListener, state: ConsoleState) -> anyhow::Result<RunningConsole> {
        let addr = listener.local_addr().context("the console's address")?;
        let host = if addr.ip().is_unspecified() {
            tracelab_contract::defaults::HOST.to_string()
        } else {
            addr.ip().to_string()
        };
        let url = format!(
            "http://{}",
            std::net::SocketAddr::new(host.parse()?, addr.port())
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(RunningConsole { url, stop, task })
    }

    /// The console's base URL, e.g. `http://127.0.0.1:7070`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops serving (requests in progress finish) and the background load.
    ///
    /// # Errors
    /// When serving failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the console's task")?
    }
}
