//! `tracelab dlq list|replay`: the notification dead-letter queue.
//!
//! ```text
//! tracelab dlq list                      # what is parked, poison or transient, and why
//! tracelab dlq replay --all              # every transient message back to work
//! tracelab dlq replay --all --include-poison
//! tracelab dlq replay --id <message id>  # one message, whatever its kind
//! ```

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::args::recorded_lab;
use crate::dlq::{DlqTarget, Selection, list, replay};
use crate::supervisor::{DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL};

/// `tracelab dlq`
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    /// RabbitMQ of the lab [default: the recorded lab's, else the contract's].
    #[arg(long, env = "AMQP_URL", global = true)]
    pub amqp_url: Option<String>,
    /// The notification queue (its DLQ is `<queue>.dlq`) [default: the
    /// recorded lab's, else the lab's own, named after its database].
    #[arg(long, env = "TRACELAB_QUEUE", global = true)]
    pub queue: Option<String>,
    /// Postgres of the lab, which names its queue [default: the recorded
    /// lab's, else the contract's].
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

impl DlqArgs {
    /// The DLQ of the lab the flags name, else the one `tracelab up` recorded.
    fn target(&self) -> DlqTarget {
        let recorded = recorded_lab();
        let database_url = self
            .database_url
            .clone()
            .or_else(|| recorded.as_ref().map(|r| r.database_url.clone()))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        DlqTarget {
            amqp_url: self
                .amqp_url
                .clone()
                .or_else(|| recorded.as_ref().map(|r| r.amqp_url.clone()))
                .unwrap_or_else(|| DEFAULT_AMQP_URL.to_string()),
            queue: self
                .queue
                .clone()
                .or_else(|| recorded.as_ref().map(|r| r.queue.clone()))
                .unwrap_or_else(|| tracelab_contract::messaging::lab_queue(&database_url)),
        }
    }
}

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the parked messages (they stay parked).
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish parked messages back to work, with their headers (traceparent).
    Replay {
        /// Every transient message (poison ones too with --include-poison).
        #[arg(long, required_unless_present = "id", conflicts_with = "id")]
        all: bool,
        /// Also replay poison messages (after fixing what made them fail).
        #[arg(long, requires = "all")]
        include_poison: bool,
        /// Only the message with this message id, whatever its kind.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Runs `tracelab dlq ...`.
///
/// # Errors
/// RabbitMQ unreachable, no such queue, an id that matches nothing.
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let target = args.target();
    match args.command {
        DlqCommand::List { limit, json } => {
            let parked = list(&target, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&parked)?);
                return Ok(ExitCode::SUCCESS);
            }
            if parked.is_empty() {
                println!("{}.dlq is empty", target.queue);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<38} {:<9} {:>7}  REASON",
                "MESSAGE ID", "KIND", "REPLAYS"
            );
            for m in &parked {
                let kind = m.kind.map_or("unknown", |k| k.as_str());
                println!(
                    "{:<38} {:<9} {:>7}  {}",
                    m.message_id.as_deref().unwrap_or("-"),
                    kind,
                    m.replays,
                    m.reason.as_deref().unwrap_or("(parked by the broker)")
                );
                if let Some(tp) = &m.traceparent {
                    println!("{:<38} traceparent {tp}", "");
                }
            }
            println!(
                "\n{} message(s). Poison ones fail again as they are; replay transient ones with `tracelab dlq replay --all`.",
                parked.len()
            );
        }
        DlqCommand::Replay {
            all: _,
            include_poison,
            id,
        } => {
            let selection = match id {
                Some(id) => Selection::Id(id),
                None => Selection::All { include_poison },
            };
            let done = replay(&target, &selection).await?;
            println!(
                "replayed {}; left in the DLQ: {} poison, {} other",
                done.replayed, done.kept_poison, done.kept_other
            );
            if done.kept_poison > 0 && matches!(selection, Selection::All { .. }) {
                println!(
                    "poison messages fail again as they are: `--include-poison` replays them once their cause is fixed"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
