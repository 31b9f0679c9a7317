//! The `tracelab` command line: argument definitions (clap derive) and the
//! implementation of each subcommand. `main.rs` only parses and calls [`run`].

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use serde_json::{Value, json};

use crate::lab::{self, Lab, LabOptions, LogSink, Ports};
use crate::tempo::{self, SearchQuery, TempoClient, Trace, TraceWaitTimeout};
use crate::waterfall::render_waterfall;

const DEFAULT_TEMPO: &str = "http://127.0.0.1:3200";
const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// tracelab: a lab for learning distributed tracing.
///
/// Start everything with `tracelab up`, send a checkout with `tracelab
/// checkout`, and read traces with `tracelab traces` / `tracelab trace <id>`.
#[derive(Debug, Parser)]
#[command(name = "tracelab", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the embedded collector and the six services on localhost, until Ctrl-C.
    Up(UpArgs),
    /// Run the embedded collector alone (OTLP in, Tempo API out), until Ctrl-C.
    Collector(CollectorArgs),
    /// Exit 0 if URL answers 2xx within the timeout, 1 otherwise (Docker healthcheck).
    Health(HealthArgs),
    /// Show one trace as a waterfall.
    Trace(TraceArgs),
    /// List recent traces.
    Traces(TracesArgs),
    /// Log in, send one checkout through the gateway, and show its trace.
    Checkout(CheckoutArgs),
    /// Send open-loop load through the gateway at a fixed rate, then summarize latency and errors.
    Load(crate::load::LoadArgs),
    /// Set, list and clear faults on the running lab's services.
    Fault(crate::fault::FaultArgs),
    /// The scenario catalog: list, show, start and stop scenarios.
    Scenario(crate::scenario::ScenarioArgs),
    /// Play a hidden scenario: find the cause from the traces, with hints.
    Exercise(crate::exercise::ExerciseArgs),
}

/// `tracelab up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Postgres URL including the database name (created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = lab::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = lab::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Topic exchange for payment events.
    #[arg(long, env = "TRACELAB_EXCHANGE", default_value = lab::DEFAULT_EXCHANGE)]
    pub exchange: String,
    /// Notification queue.
    #[arg(long, env = "TRACELAB_QUEUE", default_value = lab::DEFAULT_QUEUE)]
    pub queue: String,
    /// Send spans to this external collector (OTLP/HTTP base URL) instead of
    /// starting the embedded one.
    #[arg(long, env = "TRACELAB_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<Url>,
    /// Sampling policy file [default: ./sampling.yaml if present].
    #[arg(long, env = "TRACELAB_SAMPLING_FILE", value_name = "PATH")]
    pub sampling_file: Option<PathBuf>,
    /// Address every listener binds to.
    #[arg(long, env = "TRACELAB_BIND_HOST", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Token of the services' admin (fault) API.
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", default_value = lab::DEFAULT_ADMIN_TOKEN)]
    pub admin_token: String,
    /// Directory of the service binaries [default: next to this executable].
    #[arg(long, env = "TRACELAB_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Extra environment for every service (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Do not print the services' logs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Seconds to wait for every service to be healthy.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub startup_timeout: u64,
    /// Ports (0 = any free port).
    #[command(flatten)]
    pub ports: PortArgs,
}

/// Per-listener ports of `tracelab up`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// gateway port.
    #[arg(long, env = "TRACELAB_GATEWAY_PORT", default_value_t = Ports::CONTRACT.gateway)]
    pub gateway_port: u16,
    /// auth port.
    #[arg(long, env = "TRACELAB_AUTH_PORT", default_value_t = Ports::CONTRACT.auth)]
    pub auth_port: u16,
    /// search port.
    #[arg(long, env = "TRACELAB_SEARCH_PORT", default_value_t = Ports::CONTRACT.search)]
    pub search_port: u16,
    /// payment port.
    #[arg(long, env = "TRACELAB_PAYMENT_PORT", default_value_t = Ports::CONTRACT.payment)]
    pub payment_port: u16,
    /// notification port.
    #[arg(long, env = "TRACELAB_NOTIFICATION_PORT", default_value_t = Ports::CONTRACT.notification)]
    pub notification_port: u16,
    /// payment-provider port.
    #[arg(long, env = "TRACELAB_PROVIDER_PORT", default_value_t = Ports::CONTRACT.provider)]
    pub provider_port: u16,
    /// Embedded collector OTLP/HTTP port.
    #[arg(long, env = "TRACELAB_OTLP_HTTP_PORT", default_value_t = Ports::CONTRACT.otlp_http)]
    pub otlp_http_port: u16,
    /// Embedded collector OTLP/gRPC port.
    #[arg(long, env = "TRACELAB_OTLP_GRPC_PORT", default_value_t = Ports::CONTRACT.otlp_grpc)]
    pub otlp_grpc_port: u16,
    /// Embedded collector Tempo API port.
    #[arg(long, env = "TRACELAB_TEMPO_PORT", default_value_t = Ports::CONTRACT.tempo)]
    pub tempo_port: u16,
}

impl PortArgs {
    /// The ports as the supervisor takes them.
    pub fn ports(&self) -> Ports {
        Ports {
            gateway: self.gateway_port,
            auth: self.auth_port,
            search: self.search_port,
            payment: self.payment_port,
            notification: self.notification_port,
            provider: self.provider_port,
            otlp_http: self.otlp_http_port,
            otlp_grpc: self.otlp_grpc_port,
            tempo: self.tempo_port,
        }
    }
}

/// `tracelab collector`
#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// OTLP/HTTP listen address (port 0 = any).
    #[arg(long, default_value = "127.0.0.1:4318", value_name = "ADDR")]
    pub otlp_http: SocketAddr,
    /// OTLP/gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:4317", value_name = "ADDR")]
    pub otlp_grpc: SocketAddr,
    /// Tempo API listen address.
    #[arg(long, default_value = "127.0.0.1:3200", value_name = "ADDR")]
    pub api: SocketAddr,
    /// Sampling policy file (its tail_based part applies here).
    #[arg(long, env = "TRACELAB_SAMPLING_FILE", value_name = "PATH")]
    pub sampling_file: Option<PathBuf>,
    /// Maximum traces kept in memory [default: the collector's].
    #[arg(long)]
    pub max_traces: Option<usize>,
    /// Maximum spans kept in memory [default: the collector's].
    #[arg(long)]
    pub max_spans: Option<usize>,
    /// Log format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human readable.
    Text,
    /// One JSON object per line (the process contract).
    Json,
}

/// `tracelab health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// URL to GET, e.g. http://127.0.0.1:8080/health.
    pub url: Url,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub timeout: f64,
}

/// Where to find Tempo's API.
#[derive(Debug, Args)]
pub struct TempoArg {
    /// Tempo API base URL (the embedded collector or a real Tempo).
    #[arg(long, env = "TRACELAB_TEMPO_URL", default_value = DEFAULT_TEMPO, value_name = "URL")]
    pub tempo: Url,
}

/// How wide and colorful the output is.
#[derive(Debug, Args)]
pub struct DisplayArgs {
    /// Output width in columns [default: $COLUMNS, else 100].
    #[arg(long)]
    pub width: Option<usize>,
    /// Colors: auto = on a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

impl DisplayArgs {
    fn width(&self) -> usize {
        self.width.unwrap_or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
                .filter(|&c: &usize| c > 0)
                .unwrap_or(100)
        })
    }

    fn color(&self) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// `--color`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `tracelab trace`
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace id: 32 hex digits (shorter is zero-padded), a traceparent, or base64.
    #[arg(value_parser = parse_trace_id_arg)]
    pub trace_id: String,
    #[command(flatten)]
    pub tempo: TempoArg,
    #[command(flatten)]
    pub display: DisplayArgs,
    /// Print the raw Tempo JSON instead of the waterfall.
    #[arg(long)]
    pub json: bool,
    /// Keep polling up to this many seconds while the trace is not found.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub wait: f64,
}

/// `tracelab traces`
#[derive(Debug, Args)]
pub struct TracesArgs {
    #[command(flatten)]
    pub tempo: TempoArg,
    /// How many traces.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// TraceQL query, e.g. '{ status = error }'.
    #[arg(long, value_name = "TRACEQL")]
    pub q: Option<String>,
    /// Tag filter (repeatable), e.g. --tags service.name=payment.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub tags: Vec<(String, String)>,
    /// Only traces at least this long, e.g. 100ms.
    #[arg(long, value_name = "DURATION")]
    pub min_duration: Option<String>,
    /// Only traces from the last N minutes.
    #[arg(long, value_name = "MINUTES")]
    pub since: Option<u64>,
}

/// `tracelab checkout`
#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Gateway base URL.
    #[arg(long, env = "TRACELAB_GATEWAY_URL", default_value = DEFAULT_GATEWAY, value_name = "URL")]
    pub gateway: Url,
    #[command(flatten)]
    pub tempo: TempoArg,
    /// Demo user (alice, bob, carol).
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// Password [default: USER-password].
    #[arg(long)]
    pub password: Option<String>,
    /// Amount in minor units (JPY has none), used when no --items are given.
    #[arg(long, default_value_t = 4980, conflicts_with = "items")]
    pub amount: u64,
    /// Currency of --amount.
    #[arg(long, default_value = "JPY", conflicts_with = "items")]
    pub currency: String,
    /// Items as PRODUCT_IDxQUANTITY (or just PRODUCT_ID), comma separated, e.g. 1x2,3.
    #[arg(long, value_parser = parse_items, value_name = "ITEMS")]
    pub items: Option<Items>,
    /// Card number; 4000000000000002 is declined (402).
    #[arg(long, default_value = "4242424242424242")]
    pub card: String,
    /// Idempotency-Key header [default: a new UUID]. Reuse one to see a replay.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Seconds to wait for the trace to be complete. The lab's tail sampler
    /// holds a trace for its decision_wait_ms (10 s in sampling.yaml) before
    /// it becomes visible.
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    pub wait: f64,
    /// Do not fetch and show the trace.
    #[arg(long)]
    pub no_trace: bool,
    #[command(flatten)]
    pub display: DisplayArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_trace_id_arg(s: &str) -> Result<String, String> {
    tempo::parse_trace_id(s).map_err(|e| e.to_string())
}

/// Checkout items: `(product id, quantity)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items(pub Vec<(u64, u32)>);

/// Parses `1x2,3` into `[(1, 2), (3, 1)]`.
pub fn parse_items(s: &str) -> Result<Items, String> {
    let mut items = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, qty) = match part.split_once(['x', 'X', ':', '*']) {
            Some((id, qty)) => (id.trim(), qty.trim()),
            None => (part, "1"),
        };
        let id: u64 = id
            .parse()
            .map_err(|_| format!("bad product id {id:?} in {part:?} (expected e.g. 1x2)"))?;
        let qty: u32 = qty.parse().ok().filter(|&q| q > 0).ok_or_else(|| {
            format!("bad quantity {qty:?} in {part:?} (expected a positive number)")
        })?;
        items.push((id, qty));
    }
    if items.is_empty() {
        return Err("no items given (expected e.g. 1x2,3)".into());
    }
    Ok(Items(items))
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; `main` prints it and exits 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Collector(args) => collector(args).await,
        Command::Health(args) => Ok(health(args).await),
        Command::Trace(args) => trace(args).await,
        Command::Traces(args) => traces(args).await,
        Command::Checkout(args) => checkout(args).await,
        Command::Load(args) => crate::load::command(args, shutdown_signal()).await,
        Command::Fault(args) => crate::fault::run(args).await,
        Command::Scenario(args) => crate::scenario::run(args).await,
        Command::Exercise(args) => crate::exercise::run(args).await,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn init_logging(format: LogFormat, prefix: Option<&'static str>, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_env("TRACELAB_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off"
        ))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (format, prefix) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .try_init(),
        (LogFormat::Text, Some(prefix)) => builder
            .with_target(false)
            .without_time()
            .with_ansi(false)
            .with_writer(move || PrefixWriter::new(prefix))
            .try_init(),
        (LogFormat::Text, None) => builder.with_writer(std::io::stdout).try_init(),
    };
}

/// Writes each log line as `name | line`, like the children's output.
struct PrefixWriter {
    name: &'static str,
    buf: Vec<u8>,
}

impl PrefixWriter {
    fn new(name: &'static str) -> PrefixWriter {
        PrefixWriter {
            name,
            buf: Vec::new(),
        }
    }
}

impl std::io::Write for PrefixWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lab::print_prefixed(self.name, line.trim_end());
        }
        self.buf.clear();
        Ok(())
    }
}

impl Drop for PrefixWriter {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Text, Some("collector"), args.quiet);
    let sampling_file = args.sampling_file.clone().or_else(|| {
        let default = PathBuf::from("sampling.yaml");
        default.is_file().then_some(default)
    });
    if args.bin_dir.is_none() {
        lab::build_services_when_run_by_cargo()?;
    }
    let opts = LabOptions {
        bin_dir: args.bin_dir.clone().unwrap_or_else(lab::default_bin_dir),
        database_url: args.database_url.clone(),
        amqp_url: args.amqp_url.clone(),
        exchange: args.exchange.clone(),
        queue: args.queue.clone(),
        ports: args.ports.ports(),
        otlp_endpoint: args.otlp_endpoint.as_ref().map(ToString::to_string),
        sampling_file,
        bind_host: args.bind,
        extra_env: args.env.clone(),
        log: if args.quiet {
            LogSink::Quiet
        } else {
            LogSink::Prefix
        },
        admin_token: args.admin_token.clone(),
        drop_database: false,
        startup_timeout: Duration::from_secs(args.startup_timeout),
        ..LabOptions::default()
    };
    println!(
        "starting tracelab (services from {})…",
        opts.bin_dir.display()
    );
    let lab = tokio::select! {
        lab = Lab::start(opts) => lab?,
        () = shutdown_signal() => {
            println!("interrupted while starting; stopped");
            return Ok(ExitCode::from(130));
        }
    };
    print_up_banner(&lab);

    let mut lab = lab;
    let mut reported = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = tick.tick() => {
                for (name, status) in lab.exited() {
                    if reported.insert(name) {
                        lab::print_prefixed("lab", &format!(
                            "⚠ {name} exited ({status}); the rest keeps running. Last lines:\n{}",
                            lab.logs(name).iter().rev().take(10).rev()
                                .map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
                        ));
                    }
                }
            }
        }
    }
    println!("\nstopping tracelab…");
    let t = Instant::now();
    match lab.stop().await {
        Ok(()) => {
            println!("tracelab stopped cleanly in {} ms", t.elapsed().as_millis());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tracelab stopped, with problems: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_up_banner(lab: &Lab) {
    let mut rows: Vec<(String, String)> = lab
        .services()
        .into_iter()
        .rev()
        .map(|(n, u)| (n.to_string(), u))
        .collect();
    rows.push(("tempo api".into(), lab.tempo_url()));
    rows.push(("otlp/http".into(), lab.otlp_http_endpoint()));
    if let Some(c) = lab.collector() {
        rows.push(("otlp/grpc".into(), format!("http://{}", c.otlp_grpc_addr())));
    }
    rows.push(("database".into(), lab.database_url().to_string()));
    println!(
        "\ntracelab is up: all services healthy in {:.1}s\n",
        lab.startup_duration().as_secs_f64()
    );
    for (name, url) in &rows {
        println!("  {name:<18} {url}");
    }
    let mut flags = String::new();
    if lab.gateway_url() != DEFAULT_GATEWAY {
        flags.push_str(&format!(" --gateway {}", lab.gateway_url()));
    }
    if lab.tempo_url() != DEFAULT_TEMPO {
        flags.push_str(&format!(" --tempo {}", lab.tempo_url()));
    }
    println!("\nTry:  cargo run -p tracelab -- checkout{flags}");
    println!(
        "      cargo run -p tracelab -- traces{}",
        if lab.tempo_url() != DEFAULT_TEMPO {
            format!(" --tempo {}", lab.tempo_url())
        } else {
            String::new()
        }
    );
    println!("Press Ctrl-C to stop.\n");
}

async fn collector(args: CollectorArgs) -> anyhow::Result<ExitCode> {
    use tracelab_collector::{Collector, CollectorConfig, TailPolicy};
    let format = args
        .log_format
        .unwrap_or(if std::io::stdout().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        });
    init_logging(format, None, false);
    let tail = match &args.sampling_file {
        Some(path) => TailPolicy::from_sampling_file(path)
            .with_context(|| format!("reading sampling file {}", path.display()))?,
        None => None,
    };
    let defaults = CollectorConfig::default();
    let config = CollectorConfig {
        otlp_http: args.otlp_http,
        otlp_grpc: args.otlp_grpc,
        api: args.api,
        max_traces: args.max_traces.unwrap_or(defaults.max_traces),
        max_spans: args.max_spans.unwrap_or(defaults.max_spans),
        tail,
    };
    let collector = Collector::start(config)
        .await
        .context("starting the collector")?;
    tracing::info!(
        otlp_http = %collector.otlp_http_addr(),
        otlp_grpc = %collector.otlp_grpc_addr(),
        api = %collector.api_addr(),
        "collector ready"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    collector.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn health(args: HealthArgs) -> ExitCode {
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.05, 3600.0));
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            println!("unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(args.url.clone()).send().await {
        Ok(resp) if resp.status().is_success() => {
            println!("healthy: {} answered {}", args.url, resp.status());
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(200).collect();
            println!("unhealthy: {} answered {status} {body}", args.url);
            ExitCode::FAILURE
        }
        Err(e) if e.is_timeout() => {
            println!(
                "unhealthy: {} did not answer within {:.1}s",
                args.url,
                timeout.as_secs_f64()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("unhealthy: {}: {}", args.url, tempo::http_error_summary(&e));
            ExitCode::FAILURE
        }
    }
}

async fn trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let tempo = TempoClient::new(args.tempo.tempo.as_str())?;
    if args.json {
        let body = tempo.get_trace_json(&args.trace_id).await?;
        let Some(body) = body else {
            bail!("trace {} not found at {}", args.trace_id, tempo.base_url());
        };
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let trace = if args.wait > 0.0 {
        tempo
            .wait_for_trace(
                &args.trace_id,
                |t| !t.is_empty(),
                Duration::from_secs_f64(args.wait),
            )
            .await?
    } else {
        tempo.get_trace(&args.trace_id).await?.with_context(|| {
            format!(
                "trace {} not found at {} (not sampled, not exported yet, or evicted; try --wait 5)",
                args.trace_id,
                tempo.base_url()
            )
        })?
    };
    print!(
        "{}",
        render_waterfall(&trace, args.display.width(), args.display.color())
    );
    Ok(ExitCode::SUCCESS)
}

async fn traces(args: TracesArgs) -> anyhow::Result<ExitCode> {
    let tempo = TempoClient::new(args.tempo.tempo.as_str())?;
    let now = chrono::Utc::now().timestamp();
    let query = SearchQuery {
        tags: args.tags.clone(),
        q: args.q.clone(),
        limit: Some(args.limit),
        start: args.since.map(|m| now - (m as i64) * 60),
        end: args.since.map(|_| now),
        min_duration: args.min_duration.clone(),
        max_duration: None,
    };
    let mut found = tempo.search(&query).await?;
    found.sort_by_key(|t| std::cmp::Reverse(t.start_ns));
    if found.is_empty() {
        println!("no traces found at {}", tempo.base_url());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<32}  {:<40} {:>10} {:>6} {:>6}",
        "TIME", "TRACE ID", "ROOT", "DURATION", "SPANS", "ERRORS"
    );
    for t in &found {
        let time = chrono::DateTime::from_timestamp_nanos(t.start_ns as i64)
            .with_timezone(&chrono::Local)
            .format("%H:%M:%S%.3f");
        let root = if t.root_service_name.is_empty() {
            "<root span not yet received>".to_string()
        } else {
            format!("{}  {}", t.root_service_name, t.root_trace_name)
        };
        let root: String = if root.chars().count() > 40 {
            root.chars().take(39).chain(['…']).collect()
        } else {
            root
        };
        let duration = t
            .duration_ms
            .map(|d| format!("{d:.0}ms"))
            .unwrap_or_else(|| "<1ms".into());
        let (spans, errors) = if t.service_stats.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (t.span_count().to_string(), t.error_count().to_string())
        };
        println!(
            "{time:<12} {:<32}  {root:<40} {duration:>10} {spans:>6} {errors:>6}",
            t.trace_id
        );
    }
    println!(
        "\n{} trace{}. Show one with: tracelab trace <TRACE ID>{}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        if args.tempo.tempo.as_str().trim_end_matches('/') != DEFAULT_TEMPO {
            format!(" --tempo {}", tempo.base_url())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the JSON body of `POST /api/checkout`.
pub fn checkout_body(args: &CheckoutArgs) -> Value {
    match &args.items {
        Some(Items(items)) => json!({
            "items": items.iter().map(|(id, q)| json!({"product_id": id, "quantity": q})).collect::<Vec<_>>(),
            "card": args.card,
        }),
        None => json!({"amount": args.amount, "currency": args.currency, "card": args.card}),
    }
}

fn join_url(base: &Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// The trace id of a gateway answer: the body's `trace_id`, else the
/// `traceresponse` header.
fn response_trace_id(headers: &reqwest::header::HeaderMap, body: &Value) -> Option<String> {
    body.get("trace_id")
        .and_then(Value::as_str)
        .and_then(|id| tempo::parse_trace_id(id).ok())
        .or_else(|| {
            headers
                .get("traceresponse")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| tempo::parse_trace_id(v).ok())
        })
}

/// Whether a checkout trace looks complete: the gateway's root is there, no
/// span waits for a missing parent, and (for a successful checkout) the
/// asynchronous notification part has arrived.
pub fn checkout_trace_complete(trace: &Trace, succeeded: bool) -> bool {
    let has_root = trace.roots().iter().any(|r| r.service == "gateway");
    let notified = trace
        .spans
        .iter()
        .any(|s| s.service == "notification" && s.kind == tempo::SpanKind::Consumer);
    has_root && trace.orphans().is_empty() && (!succeeded || notified)
}

async fn checkout(args: CheckoutArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building HTTP client")?;
    let unreachable = |url: &str, e: reqwest::Error| {
        anyhow::anyhow!(
            "cannot reach the gateway at {url}: {}; is the lab running? (`cargo run -p tracelab -- up`)",
            tempo::http_error_summary(&e)
        )
    };

    // 1. Log in.
    let login_url = join_url(&args.gateway, "/api/login");
    let password = args
        .password
        .clone()
        .unwrap_or_else(|| format!("{}-password", args.user));
    let resp = http
        .post(&login_url)
        .json(&json!({"username": args.user, "password": password}))
        .send()
        .await
        .map_err(|e| unreachable(&login_url, e))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "login as {:?} failed: {status}: {}",
            args.user,
            serde_json::to_string(&body).unwrap_or_default()
        );
    }
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .context("login answer has no \"token\"")?
        .to_string();
    println!("logged in as {}", args.user);

    // 2. Check out.
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let url = join_url(&args.gateway, "/api/checkout");
    let request = checkout_body(&args);
    println!("POST {url}  Idempotency-Key: {key}");
    println!("{}", serde_json::to_string(&request)?);
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .header("Idempotency-Key", &key)
        .json(&request)
        .send()
        .await
        .map_err(|e| unreachable(&url, e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    println!("\nHTTP {status}");
    println!("{}", serde_json::to_string_pretty(&body)?);
    let trace_id = response_trace_id(&headers, &body);
    let Some(trace_id) = trace_id else {
        println!("\n(no trace id in the answer: no trace_id field, no traceresponse header)");
        return Ok(exit_for(status));
    };
    println!("\ntrace id: {trace_id}");
    if args.no_trace {
        return Ok(exit_for(status));
    }

    // 3. Wait for the trace to be complete, then show it.
    let tempo = TempoClient::new(args.tempo.tempo.as_str())?;
    let succeeded = status.is_success();
    let wait = Duration::from_secs_f64(args.wait.max(0.0));
    println!(
        "waiting up to {:.0}s for the whole trace, notification included…",
        wait.as_secs_f64()
    );
    let trace = match tempo
        .wait_for_trace(&trace_id, |t| checkout_trace_complete(t, succeeded), wait)
        .await
    {
        Ok(t) => {
            // Late spans of the same batch may land just after: one more look.
            tokio::time::sleep(Duration::from_millis(300)).await;
            match tempo.get_trace(&trace_id).await {
                Ok(Some(newer)) if newer.len() >= t.len() => newer,
                _ => t,
            }
        }
        Err(e) => match e.downcast_ref::<TraceWaitTimeout>() {
            Some(timeout) => match &timeout.last {
                Some(t) => {
                    println!("\n(note: {timeout}; showing what has arrived)");
                    t.clone()
                }
                None => {
                    println!(
                        "\n{timeout}: it may not be sampled, or still held by the tail sampler.\n\
                         try later: tracelab trace {trace_id} --tempo {}",
                        tempo.base_url()
                    );
                    return Ok(exit_for(status));
                }
            },
            None => return Err(e.context("fetching the trace")),
        },
    };
    println!();
    print!(
        "{}",
        render_waterfall(&trace, args.display.width(), args.display.color())
    );
    Ok(exit_for(status))
}

/// 2xx → 0; anything else → 1 (the answer was printed already).
fn exit_for(status: reqwest::StatusCode) -> ExitCode {
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracelab").chain(args.iter().copied()))
    }

    #[test]
    fn parses_up_ports_and_env() {
        let cli = parse(&["up", "--gateway-port", "0", "-e", "A=b=c", "--quiet"]).unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.ports.ports().gateway, 0);
        assert_eq!(up.env, vec![("A".to_string(), "b=c".to_string())]);
        assert!(up.quiet);
        assert!(parse(&["up", "--gateway-port", "70000"]).is_err());
        assert!(parse(&["up", "--otlp-endpoint", "not a url"]).is_err());
        assert!(parse(&["up", "-e", "novalue"]).is_err());
    }

    #[test]
    fn parses_trace_ids() {
        let cli = parse(&["trace", "4BF92F3577B34DA6A3CE929D0E0E4736"]).unwrap();
        let Command::Trace(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let err = parse(&["trace", "xyz"]).unwrap_err().to_string();
        assert!(err.contains("malformed trace id"), "{err}");
        assert!(parse(&["trace", "abc", "--tempo", "::"]).is_err());
    }

    #[test]
    fn parses_checkout() {
        let cli = parse(&["checkout", "--items", "1x2, 3"]).unwrap();
        let Command::Checkout(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.items, Some(Items(vec![(1, 2), (3, 1)])));
        assert_eq!(
            checkout_body(&c),
            json!({"items": [{"product_id": 1, "quantity": 2}, {"product_id": 3, "quantity": 1}],
                   "card": "4242424242424242"})
        );
        let cli = parse(&["checkout", "--card", "4000000000000002"]).unwrap();
        let Command::Checkout(c) = cli.command else {
            panic!()
        };
        assert_eq!(
            checkout_body(&c),
            json!({"amount": 4980, "currency": "JPY", "card": "4000000000000002"})
        );
        assert!(parse(&["checkout", "--items", "1x0"]).is_err());
        assert!(parse(&["checkout", "--items", "a"]).is_err());
        assert!(parse(&["checkout", "--items", "1", "--amount", "5"]).is_err());
    }

    #[test]
    fn parses_health_and_collector() {
        assert!(parse(&["health", "http://127.0.0.1:1/health"]).is_ok());
        assert!(parse(&["health", "nope"]).is_err());
        let cli = parse(&["collector", "--api", "127.0.0.1:0"]).unwrap();
        let Command::Collector(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.api.port(), 0);
        assert_eq!(c.otlp_http.port(), 4318);
        assert!(parse(&["collector", "--api", "localhost"]).is_err());
    }

    #[test]
    fn items_parser() {
        assert_eq!(
            parse_items("1x2,3X4,5:6").unwrap(),
            Items(vec![(1, 2), (3, 4), (5, 6)])
        );
        assert!(parse_items("").is_err());
        assert!(parse_items("1x-1").is_err());
    }

    #[test]
    fn trace_id_from_body_or_header() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "traceresponse",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            response_trace_id(&h, &json!({})).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            response_trace_id(&h, &json!({"trace_id": "0af7651916cd43dd8448eb211c80319c"}))
                .as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            response_trace_id(&reqwest::header::HeaderMap::new(), &json!({})),
            None
        );
    }

    #[test]
    fn checkout_completeness() {
        use crate::tempo::{Span, SpanKind};
        let root = Span {
            span_id: "a".repeat(16),
            service: "gateway".into(),
            kind: SpanKind::Server,
            ..Default::default()
        };
        let consumer = Span {
            span_id: "b".repeat(16),
            parent_span_id: Some("a".repeat(16)),
            service: "notification".into(),
            kind: SpanKind::Consumer,
            ..Default::default()
        };
        let only_root = Trace::new(vec![root.clone()]);
        assert!(checkout_trace_complete(&only_root, false));
        assert!(!checkout_trace_complete(&only_root, true));
        assert!(checkout_trace_complete(
            &Trace::new(vec![root, consumer.clone()]),
            true
        ));
        assert!(!checkout_trace_complete(&Trace::new(vec![consumer]), true));
    }
}
