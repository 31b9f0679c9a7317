//! `tracelab bench`: what tracing costs, measured on labs of its own
//! ([`crate::bench`]), printed as a table (or JSON).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::args::{duration_arg, parse_key_value};
use crate::bench::{BenchOptions, BenchReport, Mode, Route, run};
use crate::supervisor::DEFAULT_AMQP_URL;

/// `tracelab bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Rounds: each drives every route in every mode's lab in turn, the
    /// modes in a rotated order (the labs start once, before the first).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// How long each route is driven in each lab per round, e.g. 3s, 500ms.
    #[arg(long, default_value = "3s", value_parser = positive_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Concurrent connections of the throughput runs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// How long login is sent on one connection for p50/p99 (0s: skip).
    #[arg(long, default_value = "1s", value_parser = duration_arg, value_name = "DURATION")]
    pub latency: Duration,
    /// Traffic before each lab's first measurement.
    #[arg(long, default_value = "500ms", value_parser = duration_arg, value_name = "DURATION")]
    pub warmup: Duration,
    /// The modes to compare, from: off, always_off, 10%, 100%,
    /// collector-down, blackholed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off,always_off,10%,100%,collector-down,blackholed",
        value_name = "MODE,.."
    )]
    pub modes: Vec<Mode>,
    /// Measure only login (gateway -> auth), not the checkout.
    #[arg(long)]
    pub login_only: bool,
    /// A Postgres URL on the server to use: each lab gets its own database
    /// there, dropped when it stops.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        value_name = "URL"
    )]
    pub database_url: String,
    /// RabbitMQ URL: each lab gets its own exchange and queue.
    #[arg(long, default_value = DEFAULT_AMQP_URL, value_name = "URL")]
    pub amqp_url: String,
    /// Directory of the service binaries (default: beside this executable).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Extra environment for every service, NAME=VALUE (repeatable), e.g. to
    /// try another export setting against the same modes.
    #[arg(short = 'e', long = "env", value_parser = parse_key_value, value_name = "NAME=VALUE")]
    pub env: Vec<(String, String)>,
    /// Checkouts sent one at a time in the 100% lab, each timed until its
    /// whole trace is in the collector (0: skip).
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub readable: usize,
    /// Print the summary and every run as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A duration flag that must be longer than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration_arg(s)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

impl BenchArgs {
    /// The bench's options.
    pub fn options(&self) -> BenchOptions {
        let mut modes = self.modes.clone();
        let mut seen = std::collections::HashSet::new();
        modes.retain(|m| seen.insert(*m));
        BenchOptions {
            modes,
            routes: if self.login_only {
                vec![Route::Login]
            } else {
                Route::ALL.to_vec()
            },
            rounds: self.rounds,
            duration: self.duration,
            connections: usize::from(self.connections),
            latency_duration: self.latency,
            warmup: self.warmup,
            database_server: self.database_url.clone(),
            amqp_url: self.amqp_url.clone(),
            bin_dir: self.bin_dir.clone(),
            extra_env: self.env.clone(),
            readable_checkouts: self.readable,
        }
    }
}

/// Runs `tracelab bench`: progress on stderr, the table (or JSON) on stdout.
///
/// # Errors
/// When a lab does not start or a route fails outright.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let opts = args.options();
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build of tracelab; the services are as built in {}. \
             Measure release builds: cargo build --release --workspace --bins, then target/release/tracelab bench",
            opts.bin_dir
                .clone()
                .unwrap_or_else(crate::supervisor::default_bin_dir)
                .display()
        );
    }
    // Ctrl-C or SIGTERM stops the labs (and drops their databases) first.
    let runs = run(
        &opts,
        |line| eprintln!("bench | {line}"),
        super::shutdown_signal(),
    )
    .await?;
    let report = BenchReport::new(runs, &opts.modes, &opts.routes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command};
    use crate::bench::{Mode, Route};

    fn bench(args: &[&str]) -> Result<super::BenchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["tracelab", "bench"].iter().chain(args))?;
        match cli.command {
            Command::Bench(b) => Ok(b),
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn defaults_measure_every_mode_on_both_routes() {
        let opts = bench(&[]).unwrap().options();
        assert_eq!(opts.modes, Mode::ALL.to_vec());
        assert_eq!(opts.routes, Route::ALL.to_vec());
        assert_eq!(opts.rounds, 3);
    }

    #[test]
    fn flags_pick_modes_routes_and_lengths() {
        let b = bench(&[
            "--modes",
            "off,100%,off",
            "--login-only",
            "--duration",
            "500ms",
            "--rounds",
            "2",
            "-e",
            "OTEL_BSP_SCHEDULE_DELAY=200",
        ])
        .unwrap();
        let opts = b.options();
        assert_eq!(
            opts.modes,
            vec![Mode::Off, Mode::Full],
            "duplicates removed"
        );
        assert_eq!(opts.routes, vec![Route::Login]);
        assert_eq!(opts.duration.as_millis(), 500);
        assert_eq!(
            opts.extra_env,
            vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into())]
        );
        assert!(bench(&["--duration", "0s"]).is_err());
        assert!(bench(&["--rounds", "0"]).is_err());
        assert!(bench(&["--modes", "sometimes"]).is_err());
    }
}
