//! `tracelab scenario list|show|start|stop|verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::args::{LabArgs, duration_arg};
use crate::scenario::render::render_full;
use crate::scenario::verify::{Target, verify};
use crate::scenario::{Catalog, Lang, Scenario};

/// `tracelab scenario`
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub command: ScenarioCommand,
    /// Scenario directory [default: $TRACELAB_SCENARIOS, ./scenarios, or the workspace's].
    #[arg(long, value_name = "DIR", global = true)]
    pub scenarios: Option<PathBuf>,
    /// Language of the texts [default: from $LANG].
    #[arg(long, global = true, value_name = "en|ja")]
    pub lang: Option<Lang>,
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
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Clear a scenario's faults (or, without an id, every fault).
    Stop {
        /// Scenario id.
        id: Option<String>,
        #[command(flatten)]
        lab: LabArgs,
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
    pub settle: Option<std::time::Duration>,
    /// How long a running scenario may take to show its signature.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
    pub timeout: std::time::Duration,
    /// Postgres of the lab (for the one-charge-per-key invariant) [default:
    /// the recorded lab's, else the contract's].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ of the lab (for the dead-letter queue depth) [default: the
    /// recorded lab's, else the contract's].
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// The notification queue (its DLQ is `<queue>.dlq`) [default: the
    /// recorded lab's, else the lab's own, named after its database].
    #[arg(long, env = "TRACELAB_QUEUE")]
    pub queue: Option<String>,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// Runs `tracelab scenario ...`.
///
/// # Errors
/// An invalid catalog, an unknown id, an unreachable lab.
pub async fn run(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::load_or_default(args.scenarios.as_deref())?;
    let lang = args.lang.unwrap_or_else(Lang::from_env);
    match args.command {
        ScenarioCommand::List => {
            println!("{:<34} {:<9} {:>4}  TITLE", "ID", "KIND", "DIFF");
            for s in &catalog.scenarios {
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
                "\n{} scenarios in {}. Play one blind: tracelab exercise start --random",
                catalog.scenarios.len(),
                catalog.dir.display()
            );
        }
        ScenarioCommand::Show { id } => {
            let s = catalog.get(&id)?;
            print!("{}", render_full(s, lang));
        }
        ScenarioCommand::Start {
            id,
            show_in_traces,
            lab,
        } => {
            let s = catalog.get(&id)?;
            let client = lab.fault_client()?;
            let set = s.start(&client, show_in_traces).await?;
            println!("{}: {}", s.id, s.title.get(lang));
            for a in set {
                let params = crate::fault::params_text(&a.spec);
                println!(
                    "  set {} {}{}{params}",
                    a.spec.point,
                    a.spec.kind.name(),
                    if params.is_empty() { "" } else { " " },
                );
            }
            println!(
                "\nsymptom: {}\nsend traffic (tracelab checkout, or tracelab load), then look in Tempo.\n\
                 stop it with: tracelab scenario stop {}",
                s.symptom.get(lang),
                s.id
            );
        }
        ScenarioCommand::Verify(v) => return verify_cli(&catalog, v).await,
        ScenarioCommand::Stop { id, lab } => {
            let client = lab.fault_client()?;
            match id {
                Some(id) => {
                    let s = catalog.get(&id)?;
                    s.stop(&client).await?;
                    println!("stopped {}", s.id);
                }
                None => {
                    let n = client.clear_all().await?;
                    println!("cleared {n} fault(s) on every service");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_cli(catalog: &Catalog, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let recorded = args.lab.recorded();
    let database_url = args
        .database_url
        .clone()
        .or_else(|| recorded.as_ref().map(|r| r.database_url.clone()))
        .unwrap_or_else(|| crate::supervisor::DEFAULT_DATABASE_URL.to_string());
    let amqp_url = args
        .amqp_url
        .clone()
        .or_else(|| recorded.as_ref().map(|r| r.amqp_url.clone()))
        .unwrap_or_else(|| crate::supervisor::DEFAULT_AMQP_URL.to_string());
    let queue = args
        .queue
        .clone()
        .or_else(|| recorded.as_ref().map(|r| r.queue.clone()))
        .unwrap_or_else(|| tracelab_contract::messaging::lab_queue(&database_url));
    let target = Target {
        gateway: args.lab.url("gateway"),
        tempo: tracelab_client::TempoClient::new(&args.lab.url("tempo"))?,
        faults: args.lab.fault_client()?,
        database_url: Some(database_url),
        dlq: Some((amqp_url, tracelab_contract::messaging::dlq_name(&queue))),
    };
    let scenarios: Vec<&Scenario> = if args.id == "all" {
        catalog.scenarios.iter().collect()
    } else {
        vec![catalog.get(&args.id)?]
    };
    let mut failed = Vec::new();
    for s in scenarios {
        let mut s = s.clone();
        if let Some(settle) = args.settle {
            s.traffic.settle_ms = settle.as_millis() as u64;
        }
        let v = verify(&target, &s, args.timeout).await?;
        println!("{}", v.render());
        if !v.passed() {
            failed.push(s.id.clone());
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
