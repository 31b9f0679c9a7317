//! `tracelab load`: a client of the console's load (`/api/load`). It starts
//! the load, follows its live per-route summary, and prints the final
//! summary when the load ends; Ctrl-C stops the load it started. The
//! generator itself ([`crate::load`]) runs inside the console, so the same
//! command works natively, from the host against compose, and inside the
//! compose stack.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args};
use serde_json::json;
use tracelab_contract::fault::duration;

use super::args::{LabUrlArg, duration_arg, parse_rate};
use crate::console::ConsoleClient;
use crate::console::api::load::{LoadStatus, MAX_RATE};
use crate::console::client::ConsoleError;
use crate::load::summary::fmt_rate;
use crate::load::{DEFAULT_MIX, Follower, Mix, Progress, Summary, parse_mix};

/// How often the live summary is read.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Reads of the live summary that may fail in a row (a console restarting)
/// before the command gives up.
const POLL_FAILURES: u32 = 5;

/// `tracelab load`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("length").required(true).args(["duration", "forever"])))]
pub struct LoadArgs {
    /// Requests per second to offer (at most 1000). Open loop: they are sent
    /// on schedule whatever the answers, and latency counts from the
    /// scheduled instant.
    #[arg(long, value_parser = parse_load_rate)]
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
    /// Share of checkouts sent with the declining card 4000000000000002; their
    /// 402 answers are expected and counted as "declined", not as errors.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, value_name = "0..1")]
    pub decline_share: f64,
    /// No progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as JSON on stdout (progress, if any, goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// The lab (its console), where the load runs.
    #[command(flatten)]
    pub lab: LabUrlArg,
}

impl LoadArgs {
    /// The body of `POST /api/load` these arguments describe.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "rate": self.rps,
            "mix": self.mix.to_string(),
            "decline_share": self.decline_share,
            "duration": if self.forever { None } else { self.duration.map(duration::format) },
        })
    }

    fn progress(&self) -> Progress {
        match (self.no_progress, self.json) {
            (true, _) => Progress::Off,
            (false, false) => Progress::Stdout,
            (false, true) => Progress::Stderr,
        }
    }
}

/// How the followed load ended.
enum End {
    /// It ran its duration, or was stopped (by this command on Ctrl-C, or
    /// by another client): its final summary.
    Finished(LoadStatus),
    /// Another load replaced it; the last summary seen of it.
    Replaced {
        by: Option<u64>,
        last: Option<Summary>,
    },
}

/// Runs `tracelab load`: starts the load in the console, follows it until
/// its duration ends, someone stops it, or `stop` resolves (Ctrl-C, which
/// stops it), then prints the summary. Exit 0 when the load ran, 1 when it
/// failed (the lab down, a login refused).
///
/// # Errors
/// A console that cannot be reached or refuses the load.
pub async fn run(args: LoadArgs, stop: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let console = args.lab.client(Duration::from_secs(30))?;
    tokio::pin!(stop);
    // Polled from the start, so Ctrl-C is ours (not the default kill)
    // while the load is being started.
    let mut interrupted = false;

    let before: LoadStatus = console.get("/api/load").await?;
    if before.running {
        let rate = before.config.as_ref().map_or(0.0, |c| c.rate);
        eprintln!(
            "note: replacing the load running in the lab ({} req/s, load {})",
            fmt_rate(rate),
            before.id.unwrap_or_default()
        );
    }
    let body = args.body();
    let post = console.post::<LoadStatus>("/api/load", Some(&body));
    tokio::pin!(post);
    let started = loop {
        tokio::select! {
            started = &mut post => break started?,
            () = &mut stop, if !interrupted => interrupted = true,
        }
    };
    let id = started
        .id
        .context("the lab console answered a load without a number; is it an older tracelab?")?;
    if !args.json {
        let length = match (args.forever, args.duration) {
            (false, Some(d)) => format!("for {}", duration::format(d)),
            _ => "until Ctrl-C".to_string(),
        };
        println!(
            "load: {} req/s {length} through the lab at {} (mix {}); Ctrl-C stops it and prints the summary",
            fmt_rate(args.rps),
            console.base_url(),
            args.mix
        );
    }

    let mut follower = Follower::new(args.progress());
    let end = if interrupted {
        stop_load(&console, id).await?
    } else {
        follow(&console, id, &mut follower, &mut stop).await?
    };
    follower.clear();
    match end {
        End::Finished(status) => {
            let Some(summary) = status.summary else {
                bail!(
                    "load {id} ended without a summary{}",
                    status.error.map(|e| format!(": {e}")).unwrap_or_default()
                );
            };
            print_summary(&summary, args.json)?;
            if let Some(error) = status.error {
                eprintln!("error: the load failed: {error}");
                return Ok(ExitCode::FAILURE);
            }
        }
        End::Replaced { by, last } => {
            eprintln!(
                "load {id} was replaced by {} (the page, an exercise or another `tracelab load`); \
                 its last summary:",
                by.map_or("another load".to_string(), |n| format!("load {n}"))
            );
            if let Some(summary) = last {
                print_summary(&summary, args.json)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the load's live summary every second until it ends, is replaced,
/// or `stop` resolves (then stops it).
async fn follow(
    console: &ConsoleClient,
    id: u64,
    follower: &mut Follower,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> anyhow::Result<End> {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    let mut last = None;
    loop {
        tokio::select! {
            () = &mut *stop => return stop_load(console, id).await,
            _ = tick.tick() => {}
        }
        let status: LoadStatus = match console.get("/api/load").await {
            Ok(status) => {
                failures = 0;
                status
            }
            Err(e) => {
                failures += 1;
                if failures >= POLL_FAILURES {
                    return Err(e.context(format!("following load {id}")));
                }
                continue;
            }
        };
        match status.id {
            Some(n) if n == id => {}
            None => {
                bail!("the lab console no longer knows load {id} (it restarted?); the load is gone")
            }
            other => return Ok(End::Replaced { by: other, last }),
        }
        if !status.running {
            return Ok(End::Finished(status));
        }
        if let Some(summary) = &status.summary {
            follower.show(summary);
        }
        last = status.summary;
    }
}

/// Stops load `id` and returns its final summary; when it had already
/// ended or was replaced, what the console still knows of it.
async fn stop_load(console: &ConsoleClient, id: u64) -> anyhow::Result<End> {
    match console
        .delete::<LoadStatus>(&format!("/api/load?id={id}"))
        .await
    {
        Ok(status) => Ok(End::Finished(status)),
        Err(e) => match e.downcast_ref::<ConsoleError>().map(|c| c.code.as_str()) {
            // Ended on its own in the meantime (its duration, or stopped
            // by another client): the console still holds its summary.
            Some("no_load") => {
                let status: LoadStatus = console.get("/api/load").await?;
                if status.id == Some(id) {
                    Ok(End::Finished(status))
                } else {
                    Ok(End::Replaced {
                        by: status.id,
                        last: None,
                    })
                }
            }
            Some("load_replaced") => Ok(End::Replaced {
                by: console
                    .get::<LoadStatus>("/api/load")
                    .await
                    .ok()
                    .and_then(|s| s.id),
                last: None,
            }),
            _ => Err(e.context(format!("stopping load {id}"))),
        },
    }
}

fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(())
}

/// A rate the console takes: [`parse_rate`]'s, at most [`MAX_RATE`].
fn parse_load_rate(s: &str) -> Result<f64, String> {
    let rate = parse_rate(s)?;
    if rate > MAX_RATE {
        return Err(format!(
            "the lab sends at most {MAX_RATE} requests per second, got {s}"
        ));
    }
    Ok(rate)
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
