//! `tracelab load`: the command line of the load generator ([`crate::load`]).

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};
use reqwest::Url;
use tracelab_contract::fault::duration;

use super::args::{duration_arg, gateway_or_recorded, parse_rate};
use crate::load::summary::fmt_rate;
use crate::load::{DEFAULT_MIX, LoadConfig, Mix, Progress, User, parse_mix, parse_user, run_until};

/// `tracelab load`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("length").required(true).args(["duration", "forever"])))]
pub struct LoadArgs {
    /// Requests per second to offer. Open loop: they are sent on schedule
    /// whatever the answers, and latency counts from the scheduled instant.
    #[arg(long, value_parser = parse_rate)]
    pub rps: f64,
    /// How long to send, e.g. 30s, 1m, 500ms, 1m30s (whole numbers with a unit).
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Send until Ctrl-C.
    #[arg(long)]
    pub forever: bool,
    /// Relative weights of the routes (login, search, checkout, order);
    /// routes left out get 0.
    #[arg(long, value_parser = parse_mix, default_value = DEFAULT_MIX, value_name = "ROUTE=WEIGHT,..")]
    pub mix: Mix,
    /// Gateway base URL [default: the lab `tracelab up` recorded, else http://127.0.0.1:8080].
    #[arg(long, env = "TRACELAB_GATEWAY_URL", value_name = "URL")]
    pub gateway: Option<Url>,
    /// Users to log in as, round robin (NAME or NAME:PASSWORD; the password
    /// defaults to NAME-password).
    #[arg(long, value_delimiter = ',', value_parser = parse_user, default_value = "alice,bob,carol")]
    pub users: Vec<User>,
    /// Card of the checkouts.
    #[arg(long, default_value = "4242424242424242")]
    pub card: String,
    /// Share of checkouts sent with the declining card 4000000000000002; their
    /// 402 answers are expected and counted as "declined", not as errors.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, value_name = "0..1")]
    pub decline_share: f64,
    /// Timeout of one request (an expired one counts as an error).
    #[arg(long, default_value = "10s", value_parser = duration_arg, value_name = "DURATION")]
    pub timeout: Duration,
    /// Most requests in flight; a scheduled request over it is not sent and
    /// is counted as "dropped by generator".
    #[arg(long, default_value_t = 2000, value_parser = parse_max_in_flight, value_name = "N")]
    pub max_in_flight: usize,
    /// A request sent later than this after its scheduled instant counts as
    /// "behind schedule".
    #[arg(long, default_value = "5ms", value_parser = duration_arg, value_name = "DURATION")]
    pub lag_threshold: Duration,
    /// No progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as JSON on stdout (progress, if any, goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    /// The generator configuration these arguments describe.
    pub fn config(&self) -> LoadConfig {
        LoadConfig {
            gateway: gateway_or_recorded(self.gateway.as_ref()),
            rps: self.rps,
            duration: if self.forever { None } else { self.duration },
            mix: self.mix.clone(),
            users: self.users.clone(),
            card: self.card.clone(),
            decline_share: self.decline_share,
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
            lag_threshold: self.lag_threshold,
            progress: match (self.no_progress, self.json) {
                (true, _) => Progress::Off,
                (false, false) => Progress::Stdout,
                (false, true) => Progress::Stderr,
            },
        }
    }
}

/// Runs `tracelab load` until its duration ends or `stop` resolves (Ctrl-C),
/// then prints the summary.
///
/// # Errors
/// Invalid configuration, or a gateway that cannot be reached (or refuses
/// the users' logins) before the first request.
pub async fn run(args: LoadArgs, stop: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let config = args.config();
    if !args.json {
        let length = match config.duration {
            Some(d) => format!("for {}", duration::format(d)),
            None => "until Ctrl-C".to_string(),
        };
        println!(
            "load: {} req/s {length} against {} (mix {}); Ctrl-C stops and prints the summary",
            fmt_rate(config.rps),
            config.gateway.trim_end_matches('/'),
            config.mix
        );
    }
    if let Some(limit) = open_files_limit() {
        // Each request in flight holds a socket; running out of descriptors
        // would show up as connect errors that are the generator's fault.
        if (config.max_in_flight as u64).saturating_add(64) > limit {
            eprintln!(
                "warning: --max-in-flight {} is close to the open files limit ({limit}); \
                 raise it (ulimit -n) or lower --max-in-flight",
                config.max_in_flight
            );
        }
    }
    let summary = run_until(config, stop).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_share(s: &str) -> Result<f64, String> {
    let share: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a share between 0 and 1, got {s:?}"))?;
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("expected a share between 0 and 1, got {s}"));
    }
    Ok(share)
}

fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got {s:?}")),
    }
}
