//! The lab supervisor: starts Postgres-backed services and the embedded
//! collector on localhost, used by `tracelab up` and the end-to-end tests.
//!
//! [`Lab::start`] checks that Postgres and RabbitMQ are reachable, creates the
//! database if missing, starts the embedded collector in this process (unless
//! an external OTLP endpoint is given), then spawns the six service binaries as
//! child processes, leaves first (payment-provider, auth, search, notification;
//! then payment; then gateway), each wired to the real bound addresses of the
//! ones it calls. It learns each child's address from its `"listening"` log
//! line (so port 0 works) and returns once every `/health` answers 200.
//!
//! [`Lab::stop`] sends SIGTERM in reverse order (gateway first, so no request
//! is cut in half), waits a bounded grace period, kills what is left, shuts the
//! collector down last so the services' final spans land, and drops a test
//! database. Dropping a [`Lab`] without `stop` kills the children (and drops a
//! test database), so a panicking test leaves no processes behind.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tracelab::lab::{Lab, LabOptions};
//! let lab = Lab::start(LabOptions::for_tests()).await?;
//! let resp = reqwest::get(format!("{}/api/products?q=tea", lab.gateway_url())).await?;
//! assert!(resp.status().is_success());
//! lab.stop().await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tracelab_collector::{Collector, CollectorConfig, TailPolicy};

/// The six services, in start order: leaves first, gateway last.
pub const SERVICES: [&str; 6] = [
    "payment-provider",
    "auth",
    "search",
    "notification",
    "payment",
    "gateway",
];

/// Start stages: every service of a stage starts concurrently, and a stage
/// starts once the previous one is listening (its addresses are needed).
const STAGES: [&[&str]; 3] = [
    &["payment-provider", "auth", "search", "notification"],
    &["payment"],
    &["gateway"],
];

/// Default database URL (the contract's).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tracelab";
/// Default RabbitMQ URL (the contract's).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default exchange (the contract's).
pub const DEFAULT_EXCHANGE: &str = "tracelab.events";
/// Default notification queue (the contract's).
pub const DEFAULT_QUEUE: &str = "notification.payment-completed";
/// Default admin token (the contract's).
pub const DEFAULT_ADMIN_TOKEN: &str = "tracelab-admin";
/// How many log lines are kept per child for error messages and [`Lab::logs`].
pub const LOG_TAIL_LINES: usize = 200;
/// How many of those an error message shows.
const ERROR_TAIL_LINES: usize = 25;

/// Ports of everything the lab runs. 0 means "any free port".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// gateway (8080)
    pub gateway: u16,
    /// auth (8081)
    pub auth: u16,
    /// search (8082)
    pub search: u16,
    /// payment (8083)
    pub payment: u16,
    /// notification (8084)
    pub notification: u16,
    /// payment-provider (8090)
    pub provider: u16,
    /// embedded collector OTLP/HTTP (4318)
    pub otlp_http: u16,
    /// embedded collector OTLP/gRPC (4317)
    pub otlp_grpc: u16,
    /// embedded collector Tempo API (3200)
    pub tempo: u16,
}

impl Ports {
    /// The contract's fixed ports (docs/architecture.md).
    pub const CONTRACT: Ports = Ports {
        gateway: 8080,
        auth: 8081,
        search: 8082,
        payment: 8083,
        notification: 8084,
        provider: 8090,
        otlp_http: 4318,
        otlp_grpc: 4317,
        tempo: 3200,
    };

    /// Every port 0: the OS picks free ports (tests).
    pub const ANY: Ports = Ports {
        gateway: 0,
        auth: 0,
        search: 0,
        payment: 0,
        notification: 0,
        provider: 0,
        otlp_http: 0,
        otlp_grpc: 0,
        tempo: 0,
    };

    /// The port of a service by binary name (`payment-provider` or `provider`).
    pub fn for_service(&self, name: &str) -> Option<u16> {
        Some(match name {
            "gateway" => self.gateway,
            "auth" => self.auth,
            "search" => self.search,
            "payment" => self.payment,
            "notification" => self.notification,
            "payment-provider" | "provider" => self.provider,
            _ => return None,
        })
    }
}

impl Default for Ports {
    fn default() -> Ports {
        Ports::CONTRACT
    }
}

/// Where the children's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogSink {
    /// Printed to stdout, prefixed with the service name (`gateway | ...`) and
    /// condensed from JSON to `LEVEL message key=value`.
    #[default]
    Prefix,
    /// Not printed. The last [`LOG_TAIL_LINES`] lines per child are kept either
    /// way, for failure messages and [`Lab::logs`].
    Quiet,
}

/// Everything [`Lab::start`] needs. `Default` gives the contract's defaults;
/// [`LabOptions::for_tests`] gives an isolated lab for one test.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Directory holding the service binaries. Default: [`default_bin_dir`].
    pub bin_dir: PathBuf,
    /// Full Postgres URL including the database name (created if missing).
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Topic exchange for payment events.
    pub exchange: String,
    /// Notification queue (its DLQ is `<queue>.dlq`).
    pub queue: String,
    /// Ports; 0 = any free port.
    pub ports: Ports,
    /// An external collector's OTLP/HTTP base URL; when set, no embedded
    /// collector is started and [`Lab::tempo_url`] assumes Tempo on `ports.tempo`.
    pub otlp_endpoint: Option<String>,
    /// Sampling policy file given to the services (head) and the embedded
    /// collector (tail). `None`: the services use their own default.
    pub sampling_file: Option<PathBuf>,
    /// Address the services and the collector bind to.
    pub bind_host: IpAddr,
    /// Extra environment for every child, applied last (overrides).
    pub extra_env: Vec<(String, String)>,
    /// Where child logs go.
    pub log: LogSink,
    /// Token of the services' admin (fault) API.
    pub admin_token: String,
    /// Drop the database, and delete the exchange and the queues, in
    /// [`Lab::stop`] (and on drop). Set by `for_tests`, so test runs leave
    /// nothing behind in Postgres or RabbitMQ.
    pub drop_database: bool,
    /// Budget for the whole start: listening lines plus healthy `/health`.
    pub startup_timeout: Duration,
    /// How long each stop stage waits after SIGTERM before killing.
    pub stop_grace: Duration,
}

impl Default for LabOptions {
    fn default() -> LabOptions {
        LabOptions {
            bin_dir: default_bin_dir(),
            database_url: DEFAULT_DATABASE_URL.to_string(),
            amqp_url: DEFAULT_AMQP_URL.to_string(),
            exchange: DEFAULT_EXCHANGE.to_string(),
            queue: DEFAULT_QUEUE.to_string(),
            ports: Ports::CONTRACT,
            otlp_endpoint: None,
            sampling_file: None,
            bind_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra_env: Vec::new(),
            log: LogSink::Prefix,
            admin_token: DEFAULT_ADMIN_TOKEN.to_string(),
            drop_database: false,
            startup_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl LabOptions {
    /// An isolated lab for one test: every port 0, a fresh database
    /// `tracelab_test_<uuid>` (dropped by `stop`), unique exchange and queue
    /// names, quiet logs.
    ///
    /// The Postgres server defaults to `postgres://postgres@127.0.0.1:5432`;
    /// `TRACELAB_TEST_DATABASE_URL` (any database name, it is replaced) and
    /// `TRACELAB_TEST_AMQP_URL` point tests at other servers.
    pub fn for_tests() -> LabOptions {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let server = std::env::var("TRACELAB_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let database_url = with_database(&server, &format!("tracelab_test_{id}"));
        LabOptions {
            database_url,
            amqp_url: std::env::var("TRACELAB_TEST_AMQP_URL")
                .unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string()),
            exchange: format!("tracelab.test.{id}"),
            queue: format!("notification.test.{id}"),
            ports: Ports::ANY,
            log: LogSink::Quiet,
            drop_database: true,
            ..LabOptions::default()
        }
    }
}

/// Replaces the database name (the URL path) of a Postgres URL.
fn with_database(url: &str, db: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        // Not a URL: leave it to sqlx to report later.
        Err(_) => url.to_string(),
    }
}

/// When `tracelab` itself was started by `cargo run` from this workspace,
/// builds the service binaries first (same profile), so `cargo run -p
/// tracelab -- up` on a fresh clone is the only command needed and a code
/// change is never served by a stale binary. Does nothing otherwise.
///
/// # Errors
/// When the build fails (cargo's own output says why).
pub fn build_services_when_run_by_cargo() -> anyhow::Result<()> {
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    let workspace = PathBuf::from(manifest_dir).join("../../Cargo.toml");
    if !workspace.is_file() {
        return Ok(());
    }
    let release = default_bin_dir().ends_with("release");
    let mut build = std::process::Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(&workspace)
        .args(["--workspace", "--bins", "--quiet"]);
    if release {
        build.arg("--release");
    }
    println!("building the services (cargo build --workspace --bins)…");
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        anyhow::bail!("building the services failed ({status})");
    }
    Ok(())
}

/// Where the service binaries are: `$TRACELAB_BIN_DIR` if set, else the
/// directory of the running executable, stepping out of `deps/` (where cargo
/// puts test binaries) so tests find `target/<profile>/<service>`.
pub fn default_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRACELAB_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    else {
        return PathBuf::from(".");
    };
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The last log lines of one child, shared with its reader tasks.
type LogTail = Arc<Mutex<VecDeque<String>>>;

struct ChildProc {
    name: &'static str,
    child: Child,
    pid: Option<u32>,
    url: String,
    /// The `TRACELAB_LISTEN` it was given, for hints.
    listen: String,
    logs: LogTail,
    readers: Vec<JoinHandle<()>>,
}

/// A running lab. Stop it with [`Lab::stop`]; dropping it kills the children.
pub struct Lab {
    children: Vec<ChildProc>,
    collector: Option<Collector>,
    otlp_endpoint: String,
    tempo_url: String,
    database_url: String,
    admin_token: String,
    exchange: String,
    queue: String,
    amqp_url: String,
    drop_database: bool,
    stop_grace: Duration,
    startup: Duration,
    log: LogSink,
    stopped: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field(
                "services",
                &self
                    .children
                    .iter()
                    .map(|c| (c.name, &c.url))
                    .collect::<Vec<_>>(),
            )
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("tempo_url", &self.tempo_url)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Starts the lab and returns once every service answers `/health` 200.
    ///
    /// # Errors
    /// When a service binary is missing (build them with `cargo build
    /// --workspace --bins`), Postgres or RabbitMQ is unreachable (the message
    /// says how to start them), the collector cannot bind, a child exits early
    /// (with its exit status and last log lines), or a service is not healthy
    /// within `startup_timeout` (naming it, with its last `/health` answer and
    /// log lines). Whatever was started is stopped again before returning.
    pub async fn start(opts: LabOptions) -> anyhow::Result<Lab> {
        let t0 = Instant::now();
        let deadline = t0 + opts.startup_timeout;
        check_binaries(&opts.bin_dir)?;
        // RabbitMQ first: a failed check must not leave a created database.
        check_rabbitmq(&opts.amqp_url).await?;
        check_postgres_and_create_db(&opts.database_url).await?;

        let mut lab = Lab {
            children: Vec::new(),
            collector: None,
            otlp_endpoint: String::new(),
            tempo_url: String::new(),
            database_url: opts.database_url.clone(),
            admin_token: opts.admin_token.clone(),
            exchange: opts.exchange.clone(),
            queue: opts.queue.clone(),
            amqp_url: opts.amqp_url.clone(),
            drop_database: opts.drop_database,
            stop_grace: opts.stop_grace,
            startup: Duration::ZERO,
            log: opts.log,
            stopped: false,
        };
        match lab.boot(&opts, deadline).await {
            Ok(()) => {
                lab.startup = t0.elapsed();
                Ok(lab)
            }
            Err(e) => {
                // Tear down what was started; the start error is the one to report.
                let _ = lab.stop_inner(false).await;
                Err(e)
            }
        }
    }

    async fn boot(&mut self, opts: &LabOptions, deadline: Instant) -> anyhow::Result<()> {
        let reach_host = reachable_host(opts.bind_host);
        match &opts.otlp_endpoint {
            Some(endpoint) => {
                self.otlp_endpoint = endpoint.trim_end_matches('/').to_string();
                self.tempo_url =
                    format!("http://{}", SocketAddr::new(reach_host, opts.ports.tempo));
            }
            None => {
                let tail = match &opts.sampling_file {
                    Some(path) => TailPolicy::from_sampling_file(path).with_context(|| {
                        format!("reading tail sampling policy from {}", path.display())
                    })?,
                    None => None,
                };
                let config = CollectorConfig {
                    otlp_http: SocketAddr::new(opts.bind_host, opts.ports.otlp_http),
                    otlp_grpc: SocketAddr::new(opts.bind_host, opts.ports.otlp_grpc),
                    api: SocketAddr::new(opts.bind_host, opts.ports.tempo),
                    tail,
                    ..CollectorConfig::default()
                };
                let collector = Collector::start(config)
                    .await
                    .context("starting the embedded collector (is another lab running? try other ports, e.g. --otlp-http-port)")?;
                self.otlp_endpoint = format!(
                    "http://{}",
                    SocketAddr::new(reach_host, collector.otlp_http_addr().port())
                );
                self.tempo_url = format!(
                    "http://{}",
                    SocketAddr::new(reach_host, collector.api_addr().port())
                );
                self.lab_log(&format!(
                    "collector listening: otlp http {}, grpc {}, tempo api {}",
                    collector.otlp_http_addr(),
                    collector.otlp_grpc_addr(),
                    collector.api_addr()
                ));
                self.collector = Some(collector);
            }
        }

        for stage in STAGES {
            let mut pending = Vec::new();
            for &name in stage {
                let env = self.child_env(name, opts);
                self.lab_log(&format!("starting {name}"));
                pending.push(self.spawn(name, &opts.bin_dir, env, opts.log)?);
            }
            self.wait_listening(pending, deadline, reach_host).await?;
        }
        self.wait_healthy(deadline).await
    }

    fn child_env(&self, name: &str, opts: &LabOptions) -> Vec<(String, String)> {
        let port = opts.ports.for_service(name).unwrap_or(0);
        let mut env: Vec<(String, String)> = vec![
            (
                "TRACELAB_LISTEN".into(),
                SocketAddr::new(opts.bind_host, port).to_string(),
            ),
            ("OTEL_SERVICE_NAME".into(), name.into()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                self.otlp_endpoint.clone(),
            ),
            ("DATABASE_URL".into(), opts.database_url.clone()),
            ("AMQP_URL".into(), opts.amqp_url.clone()),
            ("TRACELAB_EXCHANGE".into(), opts.exchange.clone()),
            ("TRACELAB_QUEUE".into(), opts.queue.clone()),
            ("TRACELAB_ADMIN_TOKEN".into(), opts.admin_token.clone()),
        ];
        if self.collector.is_some() {
            // The embedded collector speaks OTLP/HTTP on the endpoint we give.
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()));
        }
        if let Some(file) = &opts.sampling_file {
            let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            env.push(("TRACELAB_SAMPLING_FILE".into(), abs.display().to_string()));
        }
        let url_of = |svc: &str| self.service_url(svc).unwrap_or_default();
        match name {
            "gateway" => {
                env.push(("TRACELAB_AUTH_URL".into(), url_of("auth")));
                env.push(("TRACELAB_SEARCH_URL".into(), url_of("search")));
                env.push(("TRACELAB_PAYMENT_URL".into(), url_of("payment")));
            }
            "payment" => {
                env.push(("TRACELAB_PROVIDER_URL".into(), url_of("payment-provider")));
            }
            _ => {}
        }
        env.extend(opts.extra_env.iter().cloned());
        env
    }

    /// Spawns one child with piped output; returns its index and the channel
    /// that receives its listening address.
    fn spawn(
        &mut self,
        name: &'static str,
        bin_dir: &Path,
        env: Vec<(String, String)>,
        sink: LogSink,
    ) -> anyhow::Result<(usize, oneshot::Receiver<SocketAddr>)> {
        let path = bin_path(bin_dir, name);
        let listen = env
            .iter()
            .rev()
            .find(|(k, _)| k == "TRACELAB_LISTEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut child = Command::new(&path)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", path.display()))?;
        let logs: LogTail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                name,
                out,
                logs.clone(),
                tx.clone(),
                sink,
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(name, err, logs.clone(), tx, sink)));
        }
        self.children.push(ChildProc {
            name,
            pid: child.id(),
            child,
            url: String::new(),
            listen,
            logs,
            readers,
        });
        Ok((self.children.len() - 1, rx))
    }

    /// Waits until every child of a stage has logged its listening address.
    /// Polls them together, so the first one to exit is reported at once.
    async fn wait_listening(
        &mut self,
        mut pending: Vec<(usize, oneshot::Receiver<SocketAddr>)>,
        deadline: Instant,
        reach_host: IpAddr,
    ) -> anyhow::Result<()> {
        use tokio::sync::oneshot::error::TryRecvError;
        loop {
            let mut i = 0;
            while i < pending.len() {
                let (idx, rx) = &mut pending[i];
                let proc = &mut self.children[*idx];
                let name = proc.name;
                if let Ok(Some(status)) = proc.child.try_wait() {
                    let tail = proc.finish_and_tail().await;
                    bail!(
                        "{name} exited early ({}){tail}{}",
                        describe_status(status),
                        proc.hint()
                    );
                }
                match rx.try_recv() {
                    Ok(addr) => {
                        let host = if addr.ip().is_unspecified() {
                            reach_host
                        } else {
                            addr.ip()
                        };
                        proc.url = format!("http://{}", SocketAddr::new(host, addr.port()));
                        self.lab_log(&format!("{name} listening on {addr}"));
                        pending.swap_remove(i);
                    }
                    // Closed: its output ended without the line; the exit check
                    // above reports it once the process is gone.
                    Err(TryRecvError::Empty | TryRecvError::Closed) => i += 1,
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut msg = String::new();
                for (idx, _) in &pending {
                    let proc = &self.children[*idx];
                    let _ = write!(
                        msg,
                        "\n{} did not log its \"listening\" line (with \"addr\") within the startup timeout{}",
                        proc.name,
                        proc.tail_text()
                    );
                }
                bail!("services did not start:{msg}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building HTTP client")?;
        let mut healthy = vec![false; self.children.len()];
        let mut last_answer: Vec<String> = vec!["no answer yet".into(); self.children.len()];
        loop {
            for (i, proc) in self.children.iter_mut().enumerate() {
                if healthy[i] {
                    continue;
                }
                if let Ok(Some(status)) = proc.child.try_wait() {
                    let tail = proc.finish_and_tail().await;
                    bail!(
                        "{} exited while starting ({}){tail}",
                        proc.name,
                        describe_status(status)
                    );
                }
                match http.get(format!("{}/health", proc.url)).send().await {
                    Ok(resp) if resp.status() == reqwest::StatusCode::OK => healthy[i] = true,
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.text().await.unwrap_or_default();
                        last_answer[i] = format!("{status} {}", body.trim());
                    }
                    Err(e) => last_answer[i] = format!("{e}"),
                }
            }
            if healthy.iter().all(|h| *h) {
                self.lab_log("all services healthy");
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut msg = String::new();
                for (i, proc) in self.children.iter().enumerate() {
                    if !healthy[i] {
                        let _ = write!(
                            msg,
                            "\n{} is not healthy: GET {}/health -> {}{}",
                            proc.name,
                            proc.url,
                            last_answer[i],
                            proc.tail_text()
                        );
                    }
                }
                bail!("services not healthy within the startup timeout:{msg}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn lab_log(&self, msg: &str) {
        if self.log == LogSink::Prefix {
            print_prefixed("lab", msg);
        }
    }

    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub fn gateway_url(&self) -> String {
        self.service_url("gateway").unwrap_or_default()
    }

    /// The Tempo API base URL: the embedded collector's, or (with an external
    /// OTLP endpoint) `http://<host>:<ports.tempo>`.
    pub fn tempo_url(&self) -> String {
        self.tempo_url.clone()
    }

    /// A service's base URL by binary name (`payment-provider` or `provider`),
    /// `None` for an unknown (or not yet started) service.
    pub fn service_url(&self, name: &str) -> Option<String> {
        let name = if name == "provider" {
            "payment-provider"
        } else {
            name
        };
        self.children
            .iter()
            .find(|c| c.name == name && !c.url.is_empty())
            .map(|c| c.url.clone())
    }

    /// The RabbitMQ exchange payment publishes to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The queue notification consumes (its dead-letter queue is `<queue>.dlq`).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The OTLP/HTTP base URL the services export to (no `/v1/traces`).
    pub fn otlp_http_endpoint(&self) -> String {
        self.otlp_endpoint.clone()
    }

    /// `(service name, base URL)` in start order.
    pub fn services(&self) -> Vec<(&'static str, String)> {
        self.children
            .iter()
            .map(|c| (c.name, c.url.clone()))
            .collect()
    }

    /// The database URL the services use.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The admin API token the services were given.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The embedded collector, `None` with an external OTLP endpoint.
    pub fn collector(&self) -> Option<&Collector> {
        self.collector.as_ref()
    }

    /// The process id of a service.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.iter().find(|c| c.name == name)?.pid
    }

    /// How long `start` took, from call to all healthy.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// The last (up to [`LOG_TAIL_LINES`]) raw log lines of a service.
    pub fn logs(&self, name: &str) -> Vec<String> {
        self.children
            .iter()
            .find(|c| c.name == name)
            .map(|c| lock(&c.logs).iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The last log lines of every service, for a failing test's message.
    pub fn dump_logs(&self) -> String {
        let mut out = String::new();
        for c in &self.children {
            let _ = write!(
                out,
                "--- {} ---\n{}\n",
                c.name,
                c.tail_lines(LOG_TAIL_LINES)
            );
        }
        out
    }

    /// Checks that no child has exited; returns the ones that did.
    pub fn exited(&mut self) -> Vec<(&'static str, String)> {
        self.children
            .iter_mut()
            .filter_map(|c| match c.child.try_wait() {
                Ok(Some(status)) => Some((c.name, describe_status(status))),
                _ => None,
            })
            .collect()
    }

    /// Stops the lab: SIGTERM to the gateway, then payment, then the leaves
    /// (each stage waits up to `stop_grace`, then kills), then shuts the
    /// collector down (last, so the services' final spans land), then drops a
    /// test database.
    ///
    /// # Errors
    /// After everything is stopped, when a service exited with a failure
    /// status, had to be killed, or the test database could not be dropped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner(true).await
    }

    async fn stop_inner(&mut self, report: bool) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        let mut problems = Vec::new();
        // Reverse of the start stages: callers stop before the services they call.
        for stage in STAGES.iter().rev() {
            let procs: Vec<&mut ChildProc> = self
                .children
                .iter_mut()
                .filter(|c| stage.contains(&c.name))
                .collect();
            if procs.is_empty() {
                continue;
            }
            for p in &procs {
                if let Some(pid) = p.pid {
                    send_sigterm(pid);
                }
            }
            // One deadline for the stage: they were all signalled together and
            // shut down concurrently, so waiting in turn costs one grace period.
            let grace = self.stop_grace;
            let deadline = tokio::time::Instant::now() + grace;
            for p in procs {
                let name = p.name;
                match tokio::time::timeout_at(deadline, p.child.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => problems.push(format!(
                        "{name} exited with {} after SIGTERM{}",
                        describe_status(status),
                        p.finish_and_tail().await
                    )),
                    Ok(Err(e)) => problems.push(format!("{name}: {e}")),
                    Err(_) => {
                        let _ = p.child.kill().await;
                        problems.push(format!(
                            "{name} did not exit within {grace:.0?} of SIGTERM and was killed{}",
                            p.tail_text()
                        ));
                    }
                }
            }
        }
        if let Some(collector) = self.collector.take() {
            collector.shutdown().await;
        }
        if self.drop_database {
            if let Err(e) = drop_database(&self.database_url).await {
                problems.push(format!("dropping the test database: {e:#}"));
            }
            if let Err(e) = delete_broker_objects(&self.amqp_url, &self.exchange, &self.queue).await
            {
                problems.push(format!("deleting the test exchange and queues: {e:#}"));
            }
        }
        // Only now: if anything above panicked, Drop still cleans up.
        self.stopped = true;
        if report && !problems.is_empty() {
            bail!("lab stopped with problems:\n{}", problems.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // `kill_on_drop` would do this as the children drop; do it first so the
        // database drop below is not racing live connections.
        for c in &mut self.children {
            let _ = c.child.start_kill();
        }
        if self.drop_database {
            let url = self.database_url.clone();
            let (amqp, exchange, queue) = (
                self.amqp_url.clone(),
                self.exchange.clone(),
                self.queue.clone(),
            );
            // Best effort, on a thread with its own runtime: Drop cannot await,
            // and may run inside (or outside) a tokio runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                // The timer must be created inside the runtime, hence the async block.
                let _ = rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(5), drop_database(&url)).await;
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        delete_broker_objects(&amqp, &exchange, &queue),
                    )
                    .await
                });
            })
            .join();
        }
    }
}

impl ChildProc {
    fn tail_lines(&self, n: usize) -> String {
        let logs = lock(&self.logs);
        let skip = logs.len().saturating_sub(n);
        logs.iter()
            .skip(skip)
            .map(|l| format!("  {} | {l}", self.name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A hint for a well-known cause found in the last log lines.
    fn hint(&self) -> String {
        let in_use = lock(&self.logs)
            .iter()
            .any(|l| l.contains("Address already in use") || l.contains("AddrInUse"));
        if in_use {
            format!(
                "\n  hint: {} is taken (another lab running?); pick another port, or 0 for any free one",
                self.listen
            )
        } else {
            String::new()
        }
    }

    fn tail_text(&self) -> String {
        let lines = self.tail_lines(ERROR_TAIL_LINES);
        if lines.is_empty() {
            format!("\n  ({} wrote no output)", self.name)
        } else {
            format!("\n  last log lines of {}:\n{lines}", self.name)
        }
    }

    /// After the process exited: let the readers drain its last output, then
    /// return the tail for an error message.
    async fn finish_and_tail(&mut self) -> String {
        // Taken, so a second call does not poll finished handles again.
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        self.tail_text()
    }
}

fn lock(logs: &LogTail) -> std::sync::MutexGuard<'_, VecDeque<String>> {
    logs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            let name = match sig {
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM: no graceful shutdown handler?)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// SIGTERM without unsafe code or a signal crate: the `kill` utility.
fn send_sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn reachable_host(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn bin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn check_binaries(dir: &Path) -> anyhow::Result<()> {
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| !bin_path(dir, s).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "service binaries not found in {}: {}\n  build them with `cargo build --workspace --bins` \
             (add --release for a release lab), or point TRACELAB_BIN_DIR / --bin-dir at them",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

fn pg_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).with_context(|| format!("invalid database URL {url:?}"))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn connect_maintenance(opts: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let maint = opts.clone().database("postgres");
    let where_ = format!("{}:{}", opts.get_host(), opts.get_port());
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&maint)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!(
            "cannot connect to Postgres at {where_}\n  start it with `pg_ctlcluster <version> main start` \
             (see `pg_lsclusters`), `service postgresql start`, or `docker compose up -d postgres rabbitmq`"
        ))),
        Err(_) => bail!(
            "Postgres at {where_} did not answer within 5s\n  start it with `pg_ctlcluster <version> main start` \
             (see `pg_lsclusters`), or `docker compose up -d postgres rabbitmq`"
        ),
    }
}

/// Checks Postgres is reachable and creates the URL's database if missing.
async fn check_postgres_and_create_db(url: &str) -> anyhow::Result<()> {
    let opts = pg_options(url)?;
    let db = opts
        .get_database()
        .filter(|d| !d.is_empty())
        .with_context(|| format!("database URL {url:?} names no database"))?
        .to_string();
    let mut conn = connect_maintenance(&opts).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&db)
        .fetch_optional(&mut conn)
        .await
        .context("checking whether the database exists")?;
    if exists.is_none() {
        let sql = format!("CREATE DATABASE {}", quote_ident(&db));
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            // Another process may have created it between the check and now.
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !duplicate {
                return Err(anyhow::Error::new(e).context(format!("creating database {db}")));
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Deletes a test lab's queue, its dead-letter queue and its exchange.
async fn delete_broker_objects(url: &str, exchange: &str, queue: &str) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    use lapin::types::ShortString;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = conn.create_channel().await?;
    for q in [queue.to_string(), format!("{queue}.dlq")] {
        channel
            .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(
            ShortString::from(exchange.to_string()),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    let _ = conn.close(200, ShortString::from("test lab stopped")).await;
    Ok(())
}

/// Drops the URL's database, disconnecting its sessions (`WITH (FORCE)`).
async fn drop_database(url: &str) -> anyhow::Result<()> {
    let opts = pg_options(url)?;
    let Some(db) = opts.get_database().map(str::to_string) else {
        return Ok(());
    };
    let mut conn = connect_maintenance(&opts).await?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&db));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {db}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Checks that the AMQP URL's host:port accepts TCP connections.
async fn check_rabbitmq(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid AMQP URL {url:?}"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("AMQP URL {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port().unwrap_or(if parsed.scheme() == "amqps" {
        5671
    } else {
        5672
    });
    let hint = "start it with `rabbitmq-server -detached` (or `service rabbitmq-server start`, \
                or `docker compose up -d postgres rabbitmq`)";
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("cannot connect to RabbitMQ at {host}:{port}: {e}\n  {hint}"),
        Err(_) => bail!("RabbitMQ at {host}:{port} did not answer within 5s\n  {hint}"),
    }
}

/// Reads a child's output line by line: keeps the tail, reports the
/// `"listening"` address once, and prints when the sink says so.
async fn read_lines(
    name: &'static str,
    stream: impl AsyncRead + Unpin,
    logs: LogTail,
    tx: Arc<Mutex<Option<oneshot::Sender<SocketAddr>>>>,
    sink: LogSink,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let json: Option<serde_json::Value> = if line.starts_with('{') {
            serde_json::from_str(&line).ok()
        } else {
            None
        };
        if let Some(addr) = json.as_ref().and_then(listening_addr) {
            let sender = tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(sender) = sender {
                let _ = sender.send(addr);
            }
        }
        if sink == LogSink::Prefix {
            let text = match &json {
                Some(v) => condense_log(v),
                None => line.clone(),
            };
            print_prefixed(name, &text);
        }
        let mut tail = lock(&logs);
        if tail.len() == LOG_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The address of a `{"message":"listening","addr":"ip:port"}` log line.
/// Also accepts the fields nested under `"fields"` (tracing's unflattened JSON).
pub fn listening_addr(v: &serde_json::Value) -> Option<SocketAddr> {
    let fields = v.get("fields").unwrap_or(v);
    let message = v
        .get("message")
        .or_else(|| fields.get("message"))?
        .as_str()?;
    if message != "listening" {
        return None;
    }
    fields
        .get("addr")
        .or_else(|| v.get("addr"))?
        .as_str()?
        .parse()
        .ok()
}

/// Condenses a JSON log line to `LEVEL message key=value ...`.
pub fn condense_log(v: &serde_json::Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let mut out = String::new();
    if let Some(level) = obj.get("level").and_then(|l| l.as_str()) {
        let _ = write!(out, "{level:<5} ");
    }
    let mut fields: Vec<(&String, &serde_json::Value)> = obj.iter().collect();
    if let Some(serde_json::Value::Object(nested)) = obj.get("fields") {
        fields.extend(nested.iter());
    }
    if let Some(msg) = fields
        .iter()
        .find(|(k, _)| *k == "message")
        .and_then(|(_, v)| v.as_str())
    {
        out.push_str(msg);
    }
    for (k, val) in fields {
        if matches!(
            k.as_str(),
            // `service` repeats the line's prefix.
            "timestamp"
                | "level"
                | "message"
                | "target"
                | "fields"
                | "span"
                | "spans"
                | "threadId"
                | "service"
        ) {
            continue;
        }
        match val {
            serde_json::Value::String(s) => {
                let _ = write!(out, " {k}={s}");
            }
            other => {
                let _ = write!(out, " {k}={other}");
            }
        }
    }
    out
}

/// Width of the `name |` column in `tracelab up` output.
const PREFIX_W: usize = 16;

fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints `name | text` to stdout (colored by service on a terminal).
pub fn print_prefixed(name: &str, text: &str) {
    const COLORS: [&str; 6] = [
        "\x1b[36m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[96m",
    ];
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let prefix = format!("{name:<PREFIX_W$}|");
    let mut stdout = std::io::stdout().lock();
    let _ = if use_color() {
        writeln!(
            stdout,
            "{}{prefix}\x1b[0m {text}",
            COLORS[h as usize % COLORS.len()]
        )
    } else {
        writeln!(stdout, "{prefix} {text}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contract_defaults() {
        let o = LabOptions::default();
        assert_eq!(o.ports, Ports::CONTRACT);
        assert_eq!(o.ports.gateway, 8080);
        assert_eq!(o.ports.provider, 8090);
        assert_eq!(o.ports.tempo, 3200);
        assert_eq!(o.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(o.exchange, "tracelab.events");
        assert_eq!(o.queue, "notification.payment-completed");
        assert_eq!(o.admin_token, "tracelab-admin");
        assert_eq!(o.log, LogSink::Prefix);
        assert!(!o.drop_database);
        assert_eq!(o.bind_host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn test_options_are_isolated() {
        let a = LabOptions::for_tests();
        let b = LabOptions::for_tests();
        assert_eq!(a.ports, Ports::ANY);
        assert_eq!(a.log, LogSink::Quiet);
        assert!(a.drop_database);
        assert_ne!(a.database_url, b.database_url);
        assert_ne!(a.exchange, b.exchange);
        assert_ne!(a.queue, b.queue);
        if std::env::var_os("TRACELAB_TEST_DATABASE_URL").is_none() {
            assert!(
                a.database_url
                    .starts_with("postgres://postgres@127.0.0.1:5432/tracelab_test_"),
                "{}",
                a.database_url
            );
        }
        let db = pg_options(&a.database_url).unwrap();
        let name = db.get_database().unwrap();
        assert_eq!(name.len(), "tracelab_test_".len() + 32);
    }

    #[test]
    fn ports_by_service_name() {
        let p = Ports::CONTRACT;
        for s in SERVICES {
            assert!(p.for_service(s).is_some(), "{s}");
        }
        assert_eq!(p.for_service("provider"), Some(8090));
        assert_eq!(p.for_service("nope"), None);
    }

    #[test]
    fn parses_listening_lines() {
        let flat = json!({"level":"INFO","message":"listening","addr":"127.0.0.1:41234"});
        assert_eq!(
            listening_addr(&flat),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        let nested = json!({"level":"INFO","fields":{"message":"listening","addr":"[::1]:80"}});
        assert_eq!(listening_addr(&nested), Some("[::1]:80".parse().unwrap()));
        assert_eq!(
            listening_addr(&json!({"message":"ready","addr":"1.2.3.4:5"})),
            None
        );
        assert_eq!(
            listening_addr(&json!({"message":"listening","addr":"nope"})),
            None
        );
    }

    #[test]
    fn condenses_json_logs() {
        let v = json!({"timestamp":"t","level":"INFO","target":"gateway","message":"request done",
                       "status":200,"trace_id":"abc"});
        assert_eq!(
            condense_log(&v),
            "INFO  request done status=200 trace_id=abc"
        );
    }

    #[test]
    fn database_url_helpers() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x_1"),
            "postgres://postgres@127.0.0.1:5432/x_1"
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert!(pg_options("not a url").is_err());
    }

    #[test]
    fn bin_dir_steps_out_of_deps() {
        // This unit test binary lives in target/<profile>/deps.
        if std::env::var_os("TRACELAB_BIN_DIR").is_none() {
            let dir = default_bin_dir();
            assert_ne!(dir.file_name().unwrap(), "deps", "{}", dir.display());
        }
    }

    #[test]
    fn missing_binaries_are_named() {
        let err = check_binaries(Path::new("/nonexistent-dir")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("payment-provider") && msg.contains("gateway"),
            "{msg}"
        );
        assert!(msg.contains("cargo build --workspace --bins"), "{msg}");
    }

    #[test]
    fn describes_exit_statuses() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
        assert!(describe_status(ExitStatus::from_raw(9)).contains("SIGKILL"));
    }
}
