//! [`Lab`]: the running lab, its children (the six services and the
//! embedded collector), and what they are doing ([`Lab::status`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::broadcast;
use tracelab_collector::TailPolicy;

use super::binaries::{bin_path, check_binaries, collector_binary};
use super::child::ChildProc;
use super::collector::{COLLECTOR, CollectorAddrs, collector_spec};
use super::deps::{
    check_postgres_and_create_db, check_rabbitmq, delete_broker_objects, drop_database,
};
use super::exit::send_signal;
use super::keeper::{KeeperContext, StopOutcome, start_keeper, start_process};
use super::logs::{LogTail, bound_address, lock, print_prefixed};
use super::options::{LOG_TAIL_LINES, LabOptions, LogSink, SERVICES, STAGES};
use super::restart::RestartPolicy;
use super::spawner::Spawner;
use super::spec::{ChildSpec, Listener, Pin};
use super::status::{LabEvent, LabStatus, Record};

/// A running lab. Stop it with [`Lab::stop`]; dropping it kills the children.
pub struct Lab {
    children: Vec<ChildProc>,
    collector: Option<CollectorAddrs>,
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
    restart: RestartPolicy,
    spawner: Spawner,
    http: reqwest::Client,
    events: broadcast::Sender<LabEvent>,
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
    /// Starts the lab and returns once every service answers `/health` 200
    /// (and the embedded collector `/ready`). From then on a child that
    /// exits is started again ([`LabOptions::restart`]).
    ///
    /// # Errors
    /// When a service binary or the `tracelab` binary that runs the collector
    /// is missing (build them with `cargo build --workspace --bins`), Postgres
    /// or RabbitMQ is unreachable (the message says how to start them), a
    /// child exits early (with its exit status and last log lines; a port in
    /// use is pointed out), or a child is not healthy within
    /// `startup_timeout` (naming it, with its last health answer and log
    /// lines). Whatever was started is stopped again before returning.
    pub async fn start(opts: LabOptions) -> anyhow::Result<Lab> {
        let t0 = Instant::now();
        let deadline = t0 + opts.startup_timeout;
        check_binaries(&opts.bin_dir, &SERVICES)?;
        let collector_program = match opts.otlp_endpoint {
            None => Some(collector_binary(
                opts.collector_bin.as_deref(),
                &opts.bin_dir,
            )?),
            Some(_) => None,
        };
        // RabbitMQ first: a failed check must not leave a created database.
        check_rabbitmq(&opts.amqp_url).await?;
        check_postgres_and_create_db(&opts.database_url).await?;

        let spawner = Spawner::start().context("starting the lab's spawning thread")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building HTTP client")?;
        let mut lab = Lab {
            children: Vec::new(),
            collector: None,
            otlp_endpoint: String::new(),
            tempo_url: String::new(),
            database_url: opts.database_url.clone(),
            admin_token: opts.admin_token.clone(),
            exchange: opts.exchange_name(),
            queue: opts.queue_name(),
            amqp_url: opts.amqp_url.clone(),
            drop_database: opts.drop_database,
            stop_grace: opts.stop_grace,
            startup: Duration::ZERO,
            log: opts.log,
            stopped: false,
            restart: opts.restart,
            spawner,
            http,
            events: broadcast::channel(64).0,
        };
        match lab.boot(&opts, collector_program, deadline).await {
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

    async fn boot(
        &mut self,
        opts: &LabOptions,
        collector_program: Option<PathBuf>,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let reach_host = reachable_host(opts.bind_host);
        match (&opts.otlp_endpoint, collector_program) {
            (Some(endpoint), _) => {
                self.otlp_endpoint = endpoint.trim_end_matches('/').to_string();
                self.tempo_url =
                    format!("http://{}", SocketAddr::new(reach_host, opts.ports.tempo));
            }
            (None, program) => {
                let program = program.context("no collector binary")?;
                // Checked here, for a clear message before anything starts.
                if let Some(path) = &opts.sampling_file {
                    TailPolicy::from_sampling_file(path).with_context(|| {
                        format!("reading tail sampling policy from {}", path.display())
                    })?;
                }
                self.lab_log(&format!("starting {COLLECTOR}"));
                let idx = self.spawn(collector_spec(program, opts)).await?;
                self.wait_listening(vec![idx], deadline, reach_host).await?;
                let collector = CollectorAddrs::from_bound(&self.children[idx].bound)
                    .context("the collector did not report its three listeners")?;
                self.otlp_endpoint = format!(
                    "http://{}",
                    SocketAddr::new(reach_host, collector.otlp_http.port())
                );
                self.tempo_url = self.children[idx].url.clone();
                self.lab_log(&format!(
                    "collector listening: otlp http {}, grpc {}, tempo api {}",
                    collector.otlp_http, collector.otlp_grpc, collector.api
                ));
                self.collector = Some(collector);
            }
        }

        for stage in STAGES {
            let mut pending = Vec::new();
            for &name in stage {
                let spec = self.service_spec(name, opts);
                self.lab_log(&format!("starting {name}"));
                pending.push(self.spawn(spec).await?);
            }
            self.wait_listening(pending, deadline, reach_host).await?;
        }
        self.wait_healthy(deadline).await?;
        // Up: from now on a child that exits is started again.
        for c in &self.children {
            c.keeper.supervise(c.url.clone(), c.bound.clone());
        }
        Ok(())
    }

    fn service_spec(&self, name: &'static str, opts: &LabOptions) -> ChildSpec {
        let env = self.child_env(name, opts);
        let listen = env
            .iter()
            .rev()
            .find(|(k, _)| k == "TRACELAB_LISTEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        ChildSpec {
            name,
            program: bin_path(&opts.bin_dir, name),
            args: Vec::new(),
            env,
            env_remove: Vec::new(),
            listeners: vec![
                Listener {
                    name: None,
                    pin: Pin::Env("TRACELAB_LISTEN"),
                },
                Listener {
                    name: Some(ADMIN_LISTENER),
                    pin: Pin::Env("TRACELAB_ADMIN_LISTEN"),
                },
            ],
            health_path: "/health",
            listen_hint: listen,
        }
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
            (
                "TRACELAB_ADMIN_LISTEN".into(),
                SocketAddr::new(admin_host(opts.bind_host), 0).to_string(),
            ),
            ("TRACELAB_EXCHANGE".into(), self.exchange.clone()),
            ("TRACELAB_QUEUE".into(), self.queue.clone()),
            ("TRACELAB_ADMIN_TOKEN".into(), opts.admin_token.clone()),
        ];
        if name == "auth" {
            env.push(("TRACELAB_TOKEN_SECRET".into(), opts.token_secret.clone()));
        }
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

    /// Starts one child and its keeper; returns its index.
    async fn spawn(&mut self, spec: ChildSpec) -> anyhow::Result<usize> {
        let logs: LogTail = Arc::new(Mutex::new(VecDeque::new()));
        let (process, listening) = start_process(&spec, &self.spawner, &logs, self.log)
            .await
            .with_context(|| format!("spawning {}", spec.program.display()))?;
        let record = Arc::new(Mutex::new(Record::started(process.pid())));
        let proc_listeners = spec.listeners.clone();
        let (name, listen, health_path) = (spec.name, spec.listen_hint.clone(), spec.health_path);
        let keeper = start_keeper(
            KeeperContext {
                spec,
                record: record.clone(),
                logs: logs.clone(),
                sink: self.log,
                policy: self.restart,
                spawner: self.spawner.clone(),
                http: self.http.clone(),
                events: self.events.clone(),
            },
            process,
        );
        self.children.push(ChildProc {
            name,
            url: String::new(),
            listen,
            health_path,
            listeners: proc_listeners,
            logs,
            record,
            keeper,
            listening,
            bound: Vec::new(),
        });
        Ok(self.children.len() - 1)
    }

    /// Waits until every child of a stage has logged its listening
    /// addresses. Polls them together, so the first one to exit is reported
    /// at once.
    async fn wait_listening(
        &mut self,
        mut pending: Vec<usize>,
        deadline: Instant,
        reach_host: IpAddr,
    ) -> anyhow::Result<()> {
        loop {
            let mut i = 0;
            while i < pending.len() {
                let proc = &mut self.children[pending[i]];
                let name = proc.name;
                if let Some(status) = proc.exited() {
                    bail!(
                        "{name} exited early ({status}){}{}",
                        proc.tail_text(),
                        proc.hint()
                    );
                }
                if proc.collect_listening() {
                    let first = proc.listeners.first().and_then(|l| l.name);
                    if let Some(addr) = bound_address(&proc.bound, first) {
                        let host = if addr.ip().is_unspecified() {
                            reach_host
                        } else {
                            addr.ip()
                        };
                        proc.url = format!("http://{}", SocketAddr::new(host, addr.port()));
                        self.lab_log(&format!("{name} listening on {addr}"));
                    }
                    pending.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut msg = String::new();
                for idx in &pending {
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
        let http = self.http.clone();
        let mut healthy = vec![false; self.children.len()];
        let mut last_answer: Vec<String> = vec!["no answer yet".into(); self.children.len()];
        loop {
            for (i, proc) in self.children.iter().enumerate() {
                if healthy[i] {
                    continue;
                }
                if let Some(status) = proc.exited() {
                    bail!(
                        "{} exited while starting ({status}){}",
                        proc.name,
                        proc.tail_text()
                    );
                }
                match http
                    .get(format!("{}{}", proc.url, proc.health_path))
                    .send()
                    .await
                {
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
                            "\n{} is not healthy: GET {}{} -> {}{}",
                            proc.name,
                            proc.url,
                            proc.health_path,
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

    /// `(service name, admin API base URL)` in start order: where the
    /// fault API listens, on loopback, apart from the public port. Give it
    /// to `FaultClient::new` with [`Lab::admin_token`].
    pub fn admin_urls(&self) -> Vec<(&'static str, String)> {
        self.children
            .iter()
            .filter_map(|c| {
                let addr = bound_address(&c.bound, Some(ADMIN_LISTENER))?;
                Some((c.name, format!("http://{addr}")))
            })
            .collect()
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

    /// `(service name, base URL)` of the six services, in start order.
    pub fn services(&self) -> Vec<(&'static str, String)> {
        self.children
            .iter()
            .filter(|c| c.name != COLLECTOR)
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

    /// Where the embedded collector listens, `None` with an external OTLP
    /// endpoint. It runs as the child [`COLLECTOR`] (`tracelab collector`).
    pub fn collector(&self) -> Option<CollectorAddrs> {
        self.collector
    }

    /// The process id of a service, or of the collector (`"collector"`);
    /// `None` while it is not running (waiting to be restarted).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.iter().find(|c| c.name == name)?.pid()
    }

    /// What every child is doing: state, pid, restarts, last exit.
    pub fn status(&self) -> LabStatus {
        LabStatus {
            children: self.children.iter().map(ChildProc::status).collect(),
        }
    }

    /// A handle on [`Lab::status`] and [`Lab::subscribe`] that can be kept
    /// apart from the lab (in a web server's state, another task).
    pub fn monitor(&self) -> LabMonitor {
        LabMonitor {
            children: self
                .children
                .iter()
                .map(|c| (c.name, c.url.clone(), c.record.clone()))
                .collect(),
            events: self.events.clone(),
        }
    }

    /// The lab's events from now on: children that exit and are restarted,
    /// and their recovery. A receiver that falls more than 64 events behind
    /// loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<LabEvent> {
        self.events.subscribe()
    }

    /// How long `start` took, from call to all healthy.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// The last (up to [`LOG_TAIL_LINES`]) raw log lines of a service (or
    /// the collector), across its restarts.
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

    /// Stops the lab: no more restarts, then SIGTERM to the gateway, then
    /// payment, then the leaves (each stage waits up to `stop_grace`, then
    /// kills), then the collector (last, so the services' final spans land),
    /// then drops a test database.
    ///
    /// # Errors
    /// After everything is stopped, when a child exited with a failure
    /// status, had to be killed, or the test database could not be dropped.
    /// A child that had crashed and was waiting for its restart is not one.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner(true).await
    }

    async fn stop_inner(&mut self, report: bool) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        let mut problems = Vec::new();
        for c in &self.children {
            c.keeper.hold();
        }
        // Reverse of the start stages: callers stop before the services they
        // call, and the collector after them all.
        let collector: &[&str] = &[COLLECTOR];
        for stage in STAGES.iter().rev().copied().chain([collector]) {
            let procs: Vec<&ChildProc> = self
                .children
                .iter()
                .filter(|c| stage.contains(&c.name))
                .collect();
            // Signalled together, they shut down concurrently: stopping a
            // stage costs one grace period at most.
            let grace = self.stop_grace;
            let outcomes =
                futures::future::join_all(procs.iter().map(|p| p.keeper.stop(grace))).await;
            for (p, outcome) in procs.into_iter().zip(outcomes) {
                let name = p.name;
                match outcome {
                    StopOutcome::Clean | StopOutcome::NotRunning => {}
                    StopOutcome::Failed(status) => problems.push(format!(
                        "{name} exited with {status} after SIGTERM{}",
                        p.tail_text()
                    )),
                    StopOutcome::Error(e) => problems.push(format!("{name}: {e}")),
                    StopOutcome::Killed => problems.push(format!(
                        "{name} did not exit within {grace:.0?} of SIGTERM and was killed{}",
                        p.tail_text()
                    )),
                }
            }
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

/// A lab's status and events, apart from the [`Lab`] (see [`Lab::monitor`]).
#[derive(Debug, Clone)]
pub struct LabMonitor {
    children: Vec<(&'static str, String, Arc<Mutex<Record>>)>,
    events: broadcast::Sender<LabEvent>,
}

impl LabMonitor {
    /// As [`Lab::status`].
    pub fn status(&self) -> LabStatus {
        LabStatus {
            children: self
                .children
                .iter()
                .map(|(name, url, record)| {
                    record
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .snapshot(name, url)
                })
                .collect(),
        }
    }

    /// As [`Lab::subscribe`].
    pub fn subscribe(&self) -> broadcast::Receiver<LabEvent> {
        self.events.subscribe()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Killed here and now, not as their keepers' tasks wind down, so the
        // database drop below is not racing live connections.
        for c in &self.children {
            c.keeper.hold();
            if let Some(pid) = c.pid() {
                send_signal(pid, "KILL");
            }
            c.keeper.abort();
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

/// The `listener` of a service's admin `"listening"` line.
const ADMIN_LISTENER: &str = "admin";

/// Where the admin listeners bind: loopback, whatever the public listeners
/// bind to, so `--bind 0.0.0.0` never puts the fault API on the network.
fn admin_host(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn reachable_host(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Lab>();
        shareable::<LabMonitor>();
    }
}
