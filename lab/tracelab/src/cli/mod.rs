//! The `tracelab` command line: the only layer that knows clap and prints.
//! One file per command; [`args`] holds the argument groups several
//! commands share. `main.rs` only parses and calls [`run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod admin_token;
pub mod args;
pub mod bench;
pub mod checkout;
pub mod collector;
pub mod console;
pub mod dlq;
pub mod exercise;
pub mod fault;
pub mod health;
pub mod load;
mod logging;
pub mod sampling;
pub mod scenario;
mod signal;
pub mod status;
pub mod trace;
pub mod traces;
pub mod up;

pub use signal::shutdown_signal;

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
    Up(up::UpArgs),
    /// Run the embedded collector alone (OTLP in, Tempo API out), until Ctrl-C.
    Collector(collector::CollectorArgs),
    /// Serve the lab console for a lab started elsewhere (compose), until Ctrl-C.
    Console(console::ConsoleArgs),
    /// Exit 0 if URL answers 2xx within the timeout, 1 otherwise (Docker healthcheck).
    Health(health::HealthArgs),
    /// Show the lab's services: health, span export counters (lost spans included), restarts.
    Status(status::StatusArgs),
    /// Show one trace as a waterfall.
    Trace(trace::TraceArgs),
    /// List recent traces.
    Traces(traces::TracesArgs),
    /// Send one checkout through the lab (its console's checkout action) and show its trace.
    Checkout(checkout::CheckoutArgs),
    /// Run open-loop load in the lab (its console) at a fixed rate, follow it, then summarize latency and errors.
    Load(load::LoadArgs),
    /// Set, list and clear faults on the running lab's services.
    Fault(fault::FaultArgs),
    /// The scenario catalog: list, show, start and stop scenarios.
    Scenario(scenario::ScenarioArgs),
    /// Play a hidden scenario: find the cause from the traces, with hints.
    Exercise(exercise::ExerciseArgs),
    /// Show the sampling policy in force, or switch between the lab's and the lesson's.
    Sampling(sampling::SamplingArgs),
    /// Measure what tracing costs: throughput and CPU per request with tracing off, sampled, unsampled, and a broken collector, on labs of its own.
    Bench(bench::BenchArgs),
    /// Print a random admin token, or make sure a file holds one (compose's init step).
    AdminToken(admin_token::AdminTokenArgs),
    /// The notification dead-letter queue: list it, replay messages back to work.
    Dlq(dlq::DlqArgs),
}
/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; `main` prints it and exits 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Collector(args) => collector::run(args).await,
        Command::Console(args) => console::run(args).await,
        Command::Health(args) => Ok(health::run(args).await),
        Command::Status(args) => status::run(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::Traces(args) => traces::run(args).await,
        Command::Checkout(args) => checkout::run(args).await,
        Command::Load(args) => load::run(args, shutdown_signal()).await,
        Command::Fault(args) => fault::run(args).await,
        Command::Scenario(args) => scenario::run(args).await,
        Command::Exercise(args) => exercise::run(args).await,
        Command::Sampling(args) => sampling::run(args).await,
        Command::Bench(args) => bench::run_bench(args).await,
        Command::AdminToken(args) => admin_token::run(args),
        Command::Dlq(args) => dlq::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use serde_json::json;

    use super::checkout::{Items, parse_items};

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
    fn parses_sampling() {
        let cli = parse(&["sampling"]).unwrap();
        let Command::Sampling(s) = cli.command else {
            panic!("not sampling")
        };
        assert!(s.command.is_none());
        let cli = parse(&["sampling", "set", "lesson", "--json"]).unwrap();
        let Command::Sampling(s) = cli.command else {
            panic!("not sampling")
        };
        assert!(s.json);
        assert!(matches!(
            s.command,
            Some(sampling::SamplingCommand::Set {
                policy: sampling::PolicyArg::Lesson
            })
        ));
        assert!(parse(&["sampling", "set", "half"]).is_err());
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
            serde_json::to_value(c.request()).unwrap(),
            json!({"items": [{"product_id": 1, "quantity": 2}, {"product_id": 3, "quantity": 1}],
                   "card": "4242424242424242"})
        );
        let cli = parse(&["checkout", "--card", "4000000000000002"]).unwrap();
        let Command::Checkout(c) = cli.command else {
            panic!()
        };
        assert_eq!(
            serde_json::to_value(c.request()).unwrap(),
            json!({"amount": 4980, "currency": "JPY", "card": "4000000000000002"})
        );
        assert_eq!(
            c.action_body("k-1"),
            json!({"user": "alice", "card": "4000000000000002", "idempotency_key": "k-1",
                   "amount": 4980, "currency": "JPY"})
        );
        let cli = parse(&["checkout", "--items", "2x3", "--user", "bob"]).unwrap();
        let Command::Checkout(c) = cli.command else {
            panic!()
        };
        assert_eq!(
            c.action_body("k-2"),
            json!({"user": "bob", "card": "4242424242424242", "idempotency_key": "k-2",
                   "items": [{"product_id": 2, "quantity": 3}]})
        );
        assert!(parse(&["checkout", "--idempotency-key", " "]).is_err());
        assert!(parse(&["checkout", "--idempotency-key", "caf\u{e9}"]).is_err());
        assert!(parse(&["checkout", "--gateway", "http://h:1"]).is_err());
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
        let cli = parse(&["collector", "--max-mib", "64"]).unwrap();
        let Command::Collector(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.max_mib, Some(64));
        assert!(parse(&["collector", "--max-mib", "0"]).is_err());
        assert!(parse(&["collector", "--max-mib", "1e9"]).is_err());
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

    /// Values a person (or a script gone wrong) may pass to any flag.
    const HOSTILE: &[&str] = &[
        "inf",
        "-inf",
        "nan",
        "NaN",
        "1e30",
        "1e309",
        "-1",
        "0",
        "-0",
        "",
        " ",
        "0x10",
        "18446744073709551616",
        "9223372036854775807ms",
        "99999999999999999999h",
        "10000000000000000000s",
        "604801s",
        "3.5s",
        "-5s",
        "1s1s",
        "ms",
        "1",
        "1e-400",
        "\u{ff15}",
        "\u{1f4a5}",
        "=",
        "a=b",
        "1x0",
        "::",
        "http://",
        "999999",
    ];

    /// Every flag and positional of every command, with every hostile value:
    /// clap's value parsers never panic, whatever they decide.
    #[test]
    fn no_flag_value_panics_the_parser() {
        fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            for arg in cmd.get_arguments() {
                if !arg.get_action().takes_values() {
                    continue;
                }
                for value in HOSTILE {
                    let mut argv = vec!["tracelab".to_string()];
                    argv.extend(path.iter().cloned());
                    match arg.get_long() {
                        Some(long) => argv.push(format!("--{long}={value}")),
                        None => argv.push((*value).to_string()),
                    }
                    out.push(argv);
                }
            }
            for sub in cmd.get_subcommands() {
                path.push(sub.get_name().to_string());
                walk(sub, path, out);
                path.pop();
            }
        }
        let mut cases = Vec::new();
        walk(&Cli::command(), &mut Vec::new(), &mut cases);
        assert!(cases.len() > 500, "{} cases", cases.len());
        for argv in cases {
            let parsed = std::panic::catch_unwind(|| Cli::try_parse_from(&argv));
            assert!(parsed.is_ok(), "parsing {argv:?} panicked");
        }
    }

    /// A deterministic stream of short strings built from the pieces that
    /// make durations and numbers (splitmix64, so a failure replays).
    fn random_values(n: usize) -> Vec<String> {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "7",
            "30",
            "500",
            "99999",
            "18446744073709551615",
            "h",
            "m",
            "s",
            "ms",
            "d",
            ".",
            "5",
            "e",
            "e9",
            "-",
            "+",
            "inf",
            "nan",
            " ",
            "_",
        ];
        let mut state: u64 = 0x5EED;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| {
                let len = 1 + (next() % 5) as usize;
                (0..len)
                    .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    /// What the commands compute from duration and rate flags never panics:
    /// an accepted duration is at most a week and can be added to a clock,
    /// an accepted rate is finite and positive and schedules a whole run.
    #[test]
    fn accepted_durations_and_rates_are_safe_to_compute_with() {
        use std::time::{Duration, Instant};

        use crate::load::schedule::{send_offset, slots_within};

        let mut values: Vec<String> = HOSTILE.iter().map(|v| (*v).to_string()).collect();
        values.extend(random_values(20_000));
        let mut accepted = (0, 0);
        for v in &values {
            if let Ok(d) = args::duration_arg(v) {
                accepted.0 += 1;
                assert!(d <= args::MAX_FLAG_DURATION, "{v:?} gave {d:?}");
                let _ = Instant::now() + d;
                let _ = tokio::time::Instant::now() + d;
                let _ = chrono::Utc::now().timestamp() - d.as_secs() as i64;
            }
            if let Ok(rate) = args::parse_rate(v) {
                accepted.1 += 1;
                assert!(rate.is_finite() && rate > 0.0, "{v:?} gave {rate}");
                let slots = slots_within(args::MAX_FLAG_DURATION, rate);
                let _ = send_offset(slots, rate);
                let _ = Duration::from_secs_f64(rate.clamp(0.05, 50.0) * 3.0);
            }
        }
        // The stream does reach the accepting side of both parsers.
        assert!(accepted.0 > 100 && accepted.1 > 100, "{accepted:?}");
    }

    #[test]
    fn duration_flags_take_the_fault_grammar() {
        let cli = parse(&[
            "trace",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "--wait",
            "1m30s",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.wait, std::time::Duration::from_secs(90));
        for bad in ["inf", "1e30", "15", "nan", "8d", "169h"] {
            let err = parse(&["checkout", "--wait", bad]).unwrap_err().to_string();
            assert!(err.contains("--wait"), "{bad}: {err}");
        }
        assert!(parse(&["health", "http://h/health", "--timeout", "nan"]).is_err());
        assert!(parse(&["traces", "--since", "5"]).is_err());
        assert!(parse(&["traces", "--since", "5m"]).is_ok());
        assert!(parse(&["exercise", "start", "--rate", "nan"]).is_err());
    }

    #[test]
    fn lab_commands_take_the_lab_url() {
        let cli = parse(&["fault", "list", "--lab", "http://10.0.0.5:7070/"]).unwrap();
        let Command::Fault(f) = cli.command else {
            panic!()
        };
        assert!(matches!(f.command, fault::FaultCommand::List(_)));
        assert_eq!(f.lab.url().unwrap(), "http://10.0.0.5:7070");
        // Global: before or after the subcommand.
        let cli = parse(&[
            "exercise",
            "--lab",
            "http://h:1",
            "answer",
            "auth",
            "POST",
            "/verify",
        ])
        .unwrap();
        let Command::Exercise(e) = cli.command else {
            panic!()
        };
        assert_eq!(e.lab.url().unwrap(), "http://h:1");
        let exercise::ExerciseCommand::Answer(a) = e.command else {
            panic!()
        };
        assert_eq!(a.operation, ["POST", "/verify"]);
        assert!(parse(&["scenario", "list", "--lab", "not a url"]).is_err());
        let cli = parse(&["checkout", "--lab", "http://h:2"]).unwrap();
        let Command::Checkout(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.lab.url().unwrap(), "http://h:2");
        let cli = parse(&[
            "load",
            "--rps",
            "2.5",
            "--forever",
            "--decline-share",
            "0.05",
            "--lab",
            "http://h:3",
        ])
        .unwrap();
        let Command::Load(l) = cli.command else {
            panic!()
        };
        assert_eq!(l.lab.url().unwrap(), "http://h:3");
        assert_eq!(
            l.body(),
            json!({"rate": 2.5, "mix": l.mix.to_string(), "decline_share": 0.05, "duration": null})
        );
        let cli = parse(&["load", "--rps", "1", "--duration", "1m30s"]).unwrap();
        let Command::Load(l) = cli.command else {
            panic!()
        };
        assert_eq!(l.body()["duration"], "1m30s");
        let err = parse(&["load", "--rps", "1001", "--forever"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 1000"), "{err}");
        assert!(parse(&["load", "--rps", "1", "--forever", "--gateway", "http://h:1"]).is_err());
        assert!(parse(&["fault", "list", "--compose"]).is_err());
    }
}
