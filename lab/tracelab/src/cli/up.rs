//! `tracelab up`: the whole lab on localhost until Ctrl-C.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use reqwest::Url;
use tokio::sync::broadcast::error::RecvError;

use super::args::{PortArgs, default_gateway, default_tempo, duration_arg, parse_key_value};
use super::logging::{LogFormat, init_logging};
use super::signal::shutdown_signal;

use crate::supervisor::{self, Lab, LabEvent, LabOptions, LabStatus, LogSink, print_prefixed};

/// `tracelab up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Postgres URL including the database name (created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = supervisor::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = supervisor::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Topic exchange for payment events.
    #[arg(long, env = "TRACELAB_EXCHANGE", default_value = supervisor::DEFAULT_EXCHANGE)]
    pub exchange: String,
    /// Notification queue.
    #[arg(long, env = "TRACELAB_QUEUE", default_value = supervisor::DEFAULT_QUEUE)]
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
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", default_value = supervisor::DEFAULT_ADMIN_TOKEN)]
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
    /// How long every service may take to be healthy, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = duration_arg, value_name = "DURATION")]
    pub startup_timeout: Duration,
    /// Ports (0 = any free port).
    #[command(flatten)]
    pub ports: PortArgs,
}
pub(super) async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Text, Some("lab"), args.quiet);
    let sampling_file = args.sampling_file.clone().or_else(|| {
        let default = PathBuf::from("sampling.yaml");
        default.is_file().then_some(default)
    });
    if args.bin_dir.is_none()
        && let Some(mut build) = supervisor::services_build_when_run_by_cargo()
    {
        println!("building the services (cargo build --workspace --bins)…");
        let status = build.status().context("running cargo build")?;
        if !status.success() {
            bail!("building the services failed ({status})");
        }
    }
    let opts = LabOptions {
        bin_dir: args
            .bin_dir
            .clone()
            .unwrap_or_else(supervisor::default_bin_dir),
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
        startup_timeout: args.startup_timeout,
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

    let mut events = lab.subscribe();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            event = events.recv() => match event {
                Ok(event) => print_prefixed("lab", &describe_event(&event)),
                Err(RecvError::Lagged(n)) => {
                    print_prefixed("lab", &format!("({n} restart events not shown: too many at once)"));
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    let status = lab.status();
    println!("\nstopping tracelab…");
    let t = Instant::now();
    let stopped = lab.stop().await;
    if status.total_restarts() > 0 {
        println!("{}", restart_summary(&status));
    }
    match stopped {
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

/// One line (and a child's last log lines) for an exit or a recovery.
fn describe_event(event: &LabEvent) -> String {
    match event {
        LabEvent::Exited {
            child,
            reason,
            restart,
            delay_ms,
            last_lines,
        } => {
            let mut text = format!(
                "⚠ {child} exited ({reason}); restarting in {:.1} s (restart {restart})",
                *delay_ms as f64 / 1000.0
            );
            if !last_lines.is_empty() {
                text.push_str(". Last lines:");
                for line in last_lines {
                    let line = match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(v) if v.is_object() => supervisor::condense_log(&v),
                        _ => line.clone(),
                    };
                    text.push_str(&format!("\n    {line}"));
                }
            }
            text
        }
        LabEvent::Recovered {
            child,
            restarts,
            pid,
            down_ms,
        } => format!(
            "✓ {child} is healthy again, {:.1} s after it exited (pid {}, restarts so far: {restarts})",
            *down_ms as f64 / 1000.0,
            pid.map_or_else(|| "?".to_string(), |p| p.to_string())
        ),
    }
}

/// The children that were restarted while the lab ran, with their last exit.
fn restart_summary(status: &LabStatus) -> String {
    let mut out = String::from("restarts while the lab ran:");
    for c in status.children.iter().filter(|c| c.restarts > 0) {
        let last = c
            .last_exit
            .as_ref()
            .map(|e| format!("last exit {} at {}", e.reason, e.at.format("%H:%M:%S")))
            .unwrap_or_default();
        out.push_str(&format!("\n  {:<18} {:>3}  {last}", c.name, c.restarts));
    }
    out
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
        rows.push(("otlp/grpc".into(), format!("http://{}", c.otlp_grpc)));
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
    if lab.gateway_url() != default_gateway() {
        flags.push_str(&format!(" --gateway {}", lab.gateway_url()));
    }
    if lab.tempo_url() != default_tempo() {
        flags.push_str(&format!(" --tempo {}", lab.tempo_url()));
    }
    println!("\nTry:  cargo run -p tracelab -- checkout{flags}");
    println!(
        "      cargo run -p tracelab -- traces{}",
        if lab.tempo_url() != default_tempo() {
            format!(" --tempo {}", lab.tempo_url())
        } else {
            String::new()
        }
    );
    println!("Press Ctrl-C to stop.\n");
}
