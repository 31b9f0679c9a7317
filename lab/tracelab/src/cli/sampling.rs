//! `tracelab sampling [show]` and `tracelab sampling set lab|lesson`: the
//! head rules and tail policy in force, with their counts, and the switch
//! between the lab's policy (`sampling.yaml`) and the lesson's
//! (`sampling.lesson.yaml`), without a restart.
//!
//! ```text
//! tracelab sampling                 # what is in force, kept and dropped
//! tracelab sampling set lesson      # 10% head, errors + slow + 5% tail
//! tracelab sampling set lab         # keep every trace again
//! ```
//!
//! A client of the lab console (`--lab`), like `tracelab fault`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::args::LabUrlArg;
use crate::console::api::sampling::{SamplingView, Switched};

/// `tracelab sampling`
#[derive(Debug, Args)]
pub struct SamplingArgs {
    #[command(subcommand)]
    pub command: Option<SamplingCommand>,
    /// Print the console's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub lab: LabUrlArg,
}

/// The `sampling` subcommands.
#[derive(Debug, Subcommand)]
pub enum SamplingCommand {
    /// Show the policy in force (the default).
    Show,
    /// Put a policy in force on every service (head) and the collector (tail).
    Set {
        /// `lab` (sampling.yaml) or `lesson` (sampling.lesson.yaml).
        policy: PolicyArg,
    },
}

/// The named policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// sampling.yaml: keep every trace.
    Lab,
    /// sampling.lesson.yaml: 10% head; errors, slow traces and 5% tail.
    Lesson,
}

impl PolicyArg {
    fn name(self) -> &'static str {
        match self {
            PolicyArg::Lab => "lab",
            PolicyArg::Lesson => "lesson",
        }
    }
}

/// Runs `tracelab sampling`.
///
/// # Errors
/// An unreachable console or an error answer (a switch that did not reach
/// every target names them).
pub async fn run(args: SamplingArgs) -> anyhow::Result<ExitCode> {
    let client = args.lab.client(Duration::from_secs(30))?;
    match args.command.unwrap_or(SamplingCommand::Show) {
        SamplingCommand::Show => {
            let view: Value = client.get("/api/sampling").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", describe(&serde_json::from_value(view)?));
            }
        }
        SamplingCommand::Set { policy } => {
            let answer: Value = client
                .put("/api/sampling", &json!({ "policy": policy.name() }))
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let switched: Switched = serde_json::from_value(answer)?;
                println!(
                    "sampling policy {} applied to {}",
                    switched.requested,
                    switched
                        .applied
                        .iter()
                        .map(|a| a.target.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                print!("{}", describe(&switched.sampling));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The view as text: the policy, each service's head rate and counts, the
/// tail policies with their counts.
fn describe(v: &SamplingView) -> String {
    let mut out = format!("policy in force: {} ({} lab)\n", v.policy, v.mode);
    out.push_str("\nhead sampling (decided at the root span, before the outcome is known)\n");
    out.push_str(&format!(
        "  {:<18} {:>6} {:>8} {:>12}  {}\n",
        "service", "rate", "sampled", "not sampled", "policy"
    ));
    for s in &v.head.services {
        match &s.report {
            Some(r) => out.push_str(&format!(
                "  {:<18} {:>6} {:>8} {:>12}  {}\n",
                s.service,
                format!("{}%", (r.service_rate * 10_000.0).round() / 100.0),
                r.counts.sampled,
                r.counts.not_sampled,
                s.policy.as_deref().unwrap_or("?"),
            )),
            None => out.push_str(&format!(
                "  {:<18} {}\n",
                s.service,
                s.error.as_deref().unwrap_or("no answer")
            )),
        }
    }
    out.push_str("\ntail sampling (decided by the collector once the trace is complete)\n");
    match &v.tail.report {
        Some(r) => {
            out.push_str(&format!(
                "  policy {}, since {}: kept {}, dropped {}, waiting {}\n",
                v.tail.policy.as_deref().unwrap_or("?"),
                r["since"].as_str().unwrap_or("?"),
                r["kept"],
                r["dropped"],
                r["pending"],
            ));
            out.push_str(&format!(
                "  {:<16} {:<14} {:>6} {:>9}\n",
                "policy", "type", "kept", "not kept"
            ));
            for p in r["policies"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  {:<16} {:<14} {:>6} {:>9}\n",
                    p["name"].as_str().unwrap_or("?"),
                    p["type"].as_str().unwrap_or("?"),
                    // Value's Display ignores the width: format the numbers first.
                    p["kept"].to_string(),
                    p["not_kept"].to_string(),
                ));
            }
        }
        None => out.push_str(&format!(
            "  {}\n",
            v.tail.note.as_deref().unwrap_or("not available")
        )),
    }
    out
}
