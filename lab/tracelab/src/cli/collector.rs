//! `tracelab collector`: the embedded collector alone (the compose image's
//! `collector` mode and a learner's own experiments).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use tracelab_collector::{Collector, CollectorConfig, TailPolicy};

use super::logging::{LogFormat, init_logging};
use super::signal::shutdown_signal;

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
    /// Most memory the stored traces may take, in MiB (an estimate of their
    /// heap size; the oldest traces go first) [default: the collector's].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_mib: Option<u32>,
    /// Token that replacing the tail policy (`PUT /api/tracelab/sampling`)
    /// requires [default: none, and then no replacement is accepted].
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Log format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}
pub(super) async fn run(args: CollectorArgs) -> anyhow::Result<ExitCode> {
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
        max_bytes: args
            .max_mib
            .map_or(defaults.max_bytes, |mib| mib as usize * 1024 * 1024),
        tail,
        admin_token: args.admin_token.filter(|t| !t.trim().is_empty()),
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
