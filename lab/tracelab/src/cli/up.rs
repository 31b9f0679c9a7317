//! `tracelab up`: the whole lab on localhost until Ctrl-C.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use reqwest::Url;
use tokio::sync::broadcast::error::RecvError;

use super::args::{PortArgs, default_tempo, duration_arg, parse_key_value};
use super::logging::{LogFormat, init_logging};
use super::signal::shutdown_signal;
use crate::console::{self, ConsoleConfig, ConsoleState, RunningConsole};
use crate::exercise::state_dir;
use crate::scenario::Catalog;
use crate::supervisor::{
    self, Lab, LabEvent, LabOptions, LabRecord, LabStatus, LogSink, print_prefixed,
};
use tracelab_contract::defaults::MIN_ADMIN_TOKEN_LEN;

/// `tracelab up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Postgres URL including the database name (created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = supervisor::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = supervisor::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Topic exchange for payment events [default: the lab's own,
    /// tracelab.events.<lab id>, named after its database].
    #[arg(long, env = "TRACELAB_EXCHANGE")]
    pub exchange: Option<String>,
    /// Notification queue [default: the lab's own,
    /// notification.payment-completed.<lab id>].
    #[arg(long, env = "TRACELAB_QUEUE")]
    pub queue: Option<String>,
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
    /// Token of the services' admin (fault) API [default: a random one for
    /// this lab, recorded for the other commands].
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", hide_env_values = true, value_parser = admin_token_arg)]
    pub admin_token: Option<String>,
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
    /// Port of the lab console, the lab's one URL (0 = any free port).
    #[arg(long, env = "TRACELAB_CONSOLE_PORT", default_value_t = console::DEFAULT_PORT)]
    pub console_port: u16,
    /// Scenario directory of the console [default: $TRACELAB_SCENARIOS, ./scenarios, or the workspace's].
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// Ports (0 = any free port).
    #[command(flatten)]
    pub ports: PortArgs,
}
pub(super) async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    // The supervisor's own lines (the collector runs as a child now).
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
    // The console's port first: a taken port is reported before anything starts.
    let console_listener = tokio::net::TcpListener::bind((args.bind, args.console_port))
        .await
        .with_context(|| {
            format!(
                "binding the lab console to {}:{} (another lab running? pick another --console-port, or 0)",
                args.bind, args.console_port
            )
        })?;
    let catalog = match Catalog::load_or_default(args.scenarios.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: the console has no scenarios: {e:#}");
            Catalog {
                scenarios: Vec::new(),
                dir: args.scenarios.clone().unwrap_or_else(Catalog::default_dir),
            }
        }
    };
    let exercise_dir = state_dir()?;
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
        drop_database: false,
        startup_timeout: args.startup_timeout,
        ..LabOptions::default()
    };
    let opts = match &args.admin_token {
        Some(token) => LabOptions {
            admin_token: token.clone(),
            ..opts
        },
        None => opts,
    };
    let record_opts = opts.clone();
    println!(
        "starting tracelab (services from {})…",
        opts.bin_dir.display()
    );
    let lab = tokio::select! {
        lab = Lab::start(opts.clone()) => lab?,
        () = shutdown_signal() => {
            println!("interrupted while starting; stopped");
            return Ok(ExitCode::from(130));
        }
    };
    let config = ConsoleConfig::for_lab(&lab, &opts, catalog, exercise_dir);
    let console_state = ConsoleState::new(config)?;
    let console = RunningConsole::start(console_listener, console_state)?;
    let console_url = console.url().to_string();
    // Where the lab is, its console and its admin token, for `fault`,
    // `scenario` and `exercise` in another terminal. Without it the lab
    // still runs; those commands then need `--lab` or the token and ports.
    let record = LabRecord {
        console: Some(console_url.clone()),
        ..LabRecord::of(&lab, &record_opts)
    };
    let record_path = match LabRecord::default_path().and_then(|path| {
        record.save(&path)?;
        Ok(path)
    }) {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!(
                "warning: the lab is not recorded, so later commands need --lab {console_url}: {e:#}"
            );
            None
        }
    };
    print_up_banner(&lab, &console_url, record_path.as_deref());

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
    if let Err(e) = console.stop().await {
        eprintln!("the lab console stopped with an error: {e:#}");
    }
    let stopped = lab.stop().await;
    if let Some(path) = &record_path
        && let Err(e) = record.remove(path)
    {
        eprintln!("warning: {e:#}");
    }
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

/// A token for `--admin-token`: as long as the services require.
fn admin_token_arg(s: &str) -> Result<String, String> {
    let token = s.trim();
    if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
        return Err(format!(
            "the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters (leave it out for a random one)"
        ));
    }
    Ok(token.to_string())
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
            let delay = *delay_ms as f64 / 1000.0;
            let mut text = if reason.starts_with("could not start") {
                format!("⚠ {child}: {reason}; trying again in {delay:.1} s (restart {restart})")
            } else {
                format!(
                    "⚠ {child} exited ({reason}); restarting in {delay:.1} s (restart {restart})"
                )
            };
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

fn print_up_banner(lab: &Lab, console_url: &str, record: Option<&std::path::Path>) {
    let mut rows: Vec<(String, String)> = vec![("console".into(), console_url.to_string())];
    rows.extend(
        lab.services()
            .into_iter()
            .rev()
            .map(|(n, u)| (n.to_string(), u)),
    );
    rows.push(("tempo api".into(), lab.tempo_url()));
    rows.push(("otlp/http".into(), lab.otlp_http_endpoint()));
    if let Some(c) = lab.collector() {
        rows.push(("otlp/grpc".into(), format!("http://{}", c.otlp_grpc)));
    }
    rows.push(("database".into(), lab.database_url().to_string()));
    rows.push((
        "exchange, queue".into(),
        format!("{}, {}", lab.exchange(), lab.queue()),
    ));
    rows.push((
        "admin api".into(),
        match record {
            Some(path) => format!("loopback only; addresses and token in {}", path.display()),
            None => "loopback only".into(),
        },
    ));
    println!(
        "\ntracelab is up: all services healthy in {:.1}s\n",
        lab.startup_duration().as_secs_f64()
    );
    for (name, url) in &rows {
        println!("  {name:<18} {url}");
    }
    // `checkout` finds the console in the record; without one, only at
    // the default URL.
    let flags = if record.is_none() && console_url != crate::console::default_url() {
        format!(" --lab {console_url}")
    } else {
        String::new()
    };
    println!("\nThe lab's one URL: {console_url} (the console; the CLI's lab commands use it)");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_lines_say_why_when_and_which_restart() {
        let exited = LabEvent::Exited {
            child: "payment".into(),
            reason: "SIGKILL".into(),
            restart: 2,
            delay_ms: 1000,
            last_lines: vec![
                r#"{"level":"INFO","message":"listening","addr":"127.0.0.1:8083"}"#.into(),
                "plain text".into(),
            ],
        };
        assert_eq!(
            describe_event(&exited),
            "⚠ payment exited (SIGKILL); restarting in 1.0 s (restart 2). Last lines:\n    \
             INFO  listening addr=127.0.0.1:8083\n    plain text"
        );
        let unstartable = LabEvent::Exited {
            child: "payment".into(),
            reason: "could not start /x/payment: No such file or directory".into(),
            restart: 3,
            delay_ms: 2000,
            last_lines: Vec::new(),
        };
        assert_eq!(
            describe_event(&unstartable),
            "⚠ payment: could not start /x/payment: No such file or directory; \
             trying again in 2.0 s (restart 3)"
        );
        let recovered = LabEvent::Recovered {
            child: "payment".into(),
            restarts: 2,
            pid: Some(41),
            down_ms: 1300,
        };
        assert_eq!(
            describe_event(&recovered),
            "✓ payment is healthy again, 1.3 s after it exited (pid 41, restarts so far: 2)"
        );
    }
}
