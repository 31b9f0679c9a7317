//! `tracelab scenario list|show|start|stop|verify`: a client of the lab
//! console, which holds the catalog and the services' admin token.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::args::{LabUrlArg, duration_arg};
use crate::console::api::scenarios::{ScenarioList, ScenarioView, Started, Stopped, Verified};
use crate::fault::params_text;
use crate::scenario::Lang;

/// `tracelab scenario`
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub command: ScenarioCommand,
    /// Language of the texts [default: from $LANG].
    #[arg(long, global = true, value_name = "en|ja")]
    pub lang: Option<Lang>,
    #[command(flatten)]
    pub lab: LabUrlArg,
}

/// The `scenario` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// List the scenarios.
    List,
    /// Show a scenario in full: faults, hints, query, answer (spoilers).
    Show {
        /// Scenario id.
        id: String,
    },
    /// Set a scenario's faults on the running lab (openly: not an exercise).
    Start {
        /// Scenario id.
        id: String,
        /// Add a `fault.injected` event to the spans where a fault fires.
        #[arg(long)]
        show_in_traces: bool,
    },
    /// Clear a scenario's faults (or, without an id, every fault).
    Stop {
        /// Scenario id.
        id: Option<String>,
    },
    /// Check a scenario's answer key on the running lab: its signature must be
    /// absent while it is stopped and present while it runs (sends traffic).
    Verify(VerifyArgs),
}

/// `tracelab scenario verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Scenario id, or `all`.
    pub id: String,
    /// How long to wait after the traffic before judging [default: the
    /// scenario's]. With the tail sampling of `sampling.yaml` traces appear
    /// only after its decision_wait_ms: pass e.g. 11s.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub settle: Option<Duration>,
    /// How long a running scenario may take to show its signature (at most 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
    pub timeout: Duration,
}

/// Runs `tracelab scenario ...`.
///
/// # Errors
/// No console, an unknown id, or the console's refusal.
pub async fn run(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    let lang = args.lang.unwrap_or_else(Lang::from_env);
    // A verification sends traffic and waits for traces: minutes, not seconds.
    let console = args.lab.client(Duration::from_secs(15 * 60))?;
    match args.command {
        ScenarioCommand::List => {
            let list: ScenarioList = console.get("/api/scenarios").await?;
            println!("{:<34} {:<9} {:>4}  TITLE", "ID", "KIND", "DIFF");
            for s in &list.scenarios {
                let kind = match s.pitfall {
                    Some(_) => "pitfall".to_string(),
                    None => s.category.to_string(),
                };
                println!(
                    "{:<34} {:<9} {:>4}  {}",
                    s.id,
                    kind,
                    "*".repeat(s.difficulty as usize),
                    s.title.get(lang)
                );
            }
            println!(
                "\n{} scenarios. Play one blind: tracelab exercise start --random",
                list.scenarios.len()
            );
        }
        ScenarioCommand::Show { id } => {
            let s: ScenarioView = console.get(&format!("/api/scenarios/{id}")).await?;
            print!("{}", render_full(&s, lang));
        }
        ScenarioCommand::Start { id, show_in_traces } => {
            let started: Started = console
                .post(
                    &format!("/api/scenarios/{id}/start"),
                    Some(&json!({ "show_in_traces": show_in_traces })),
                )
                .await?;
            println!("{}: {}", started.id, started.title.get(lang));
            for set in &started.set {
                let params = params_text(&set.fault.spec);
                let until = match set.fault.expires_at {
                    Some(at) => format!(
                        ", until {}",
                        at.with_timezone(&chrono::Local).format("%H:%M:%S")
                    ),
                    None => ", until stopped (never expires)".into(),
                };
                println!(
                    "  set {} {}{}{params}{until}",
                    set.fault.spec.point,
                    set.fault.spec.kind.name(),
                    if params.is_empty() { "" } else { " " },
                );
            }
            println!(
                "\nsymptom: {}\nsend traffic (tracelab checkout, or tracelab load), then look in Tempo.\n\
                 stop it with: tracelab scenario stop {}",
                started.symptom.get(lang),
                started.id
            );
        }
        ScenarioCommand::Stop { id } => {
            let stopped: Stopped = console
                .post("/api/scenarios/stop", Some(&json!({ "id": id })))
                .await?;
            match (stopped.stopped, stopped.cleared) {
                (Some(id), _) => println!("stopped {id}"),
                (None, n) => println!("cleared {} fault(s) on every service", n.unwrap_or(0)),
            }
        }
        ScenarioCommand::Verify(v) => {
            let ids: Vec<String> = if v.id == "all" {
                let list: ScenarioList = console.get("/api/scenarios").await?;
                list.scenarios.into_iter().map(|s| s.id).collect()
            } else {
                vec![v.id.clone()]
            };
            let body = json!({
                "settle_ms": v.settle.map(|d| d.as_millis() as u64),
                "timeout_ms": v.timeout.as_millis() as u64,
            });
            let mut failed = Vec::new();
            for id in ids {
                let verified: Verified = console
                    .post(&format!("/api/scenarios/{id}/verify"), Some(&body))
                    .await?;
                println!("{}", verified.report);
                if !verified.passed {
                    failed.push(id);
                }
            }
            if !failed.is_empty() {
                println!("failed: {}", failed.join(", "));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything about a scenario, answer included.
fn render_full(s: &ScenarioView, lang: Lang) -> String {
    let summary = &s.summary;
    let mut out = String::new();
    let _ = writeln!(out, "{} — {}", summary.id, summary.title.get(lang));
    let _ = writeln!(
        out,
        "category: {}{}   difficulty: {}",
        summary.category,
        summary
            .pitfall
            .map(|p| format!(
                " ({})",
                serde_json::to_string(&p)
                    .unwrap_or_default()
                    .trim_matches('"')
            ))
            .unwrap_or_default(),
        summary.difficulty
    );
    let _ = writeln!(out, "\nstory:\n  {}", summary.story.get(lang).trim());
    let _ = writeln!(out, "\nsymptom:\n  {}", summary.symptom.get(lang).trim());
    let _ = writeln!(out, "\nfaults:");
    for f in &s.faults {
        let _ = writeln!(
            out,
            "  {:<17} {} {} {}{}",
            f.service,
            f.spec.point,
            f.spec.kind.name(),
            params_text(&f.spec),
            if f.spec.probability < 1.0 {
                format!(" probability={}", f.spec.probability)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out, "\nhints:");
    for (i, h) in s.hints.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, h.get(lang).trim());
    }
    let _ = writeln!(out, "\nquery:\n  {}", s.query);
    let _ = writeln!(out, "\nanswer: {}", s.answer.display());
    for a in &s.answer.accept {
        let _ = writeln!(
            out,
            "  also accepted: {}{}",
            a.service,
            a.operation
                .as_deref()
                .map(|o| format!(" / {o}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\nexplanation:\n  {}", s.explanation.get(lang).trim());
    let _ = writeln!(out, "\nsignature:");
    for c in &s.signature {
        let _ = writeln!(out, "  - {c}");
    }
    for c in &s.invariants {
        let _ = writeln!(out, "  - always: {c}");
    }
    out
}
