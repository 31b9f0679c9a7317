//! [`Lab`]: the running lab, its children and the embedded collector.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::sync::oneshot;
use tracelab_collector::{Collector, CollectorConfig, TailPolicy};

use super::binaries::{bin_path, check_binaries};
use super::child::{ChildProc, describe_status, send_sigterm};
use super::deps::{
    check_postgres_and_create_db, check_rabbitmq, delete_broker_objects, drop_database,
};
use super::logs::{Listening, LogTail, lock, print_prefixed, read_lines};
use super::options::{LOG_TAIL_LINES, LabOptions, LogSink, SERVICES, STAGES};

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
        check_binaries(&opts.bin_dir, &SERVICES)?;
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
            exchange: opts.exchange_name(),
            queue: opts.queue_name(),
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

    /// Spawns one child with piped output; returns its index and the channel
    /// that receives its listening address.
    fn spawn(
        &mut self,
        name: &'static str,
        bin_dir: &Path,
        env: Vec<(String, String)>,
        sink: LogSink,
    ) -> anyhow::Result<(usize, oneshot::Receiver<Listening>)> {
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
            admin_url: String::new(),
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
        mut pending: Vec<(usize, oneshot::Receiver<Listening>)>,
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
                    Ok(Listening { addr, admin }) => {
                        let host = if addr.ip().is_unspecified() {
                            reach_host
                        } else {
                            addr.ip()
                        };
                        proc.url = format!("http://{}", SocketAddr::new(host, addr.port()));
                        if let Some(admin) = admin {
                            proc.admin_url = format!("http://{admin}");
                        }
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

    /// `(service name, admin API base URL)` in start order: where the
    /// fault API listens, on loopback, apart from the public port. Give it
    /// to `FaultClient::new` with [`Lab::admin_token`].
    pub fn admin_urls(&self) -> Vec<(&'static str, String)> {
        self.children
            .iter()
            .filter(|c| !c.admin_url.is_empty())
            .map(|c| (c.name, c.admin_url.clone()))
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
