//! `tracelab dlq list|replay`: the notification dead-letter queue.
//!
//! ```text
//! tracelab dlq list                      # what is parked, poison or transient, and why
//! tracelab dlq replay --all              # every transient message back to work
//! tracelab dlq replay --all --include-poison
//! tracelab dlq replay --id <message id>  # one message, whatever its kind
//! ```
//!
//! A client of the lab console (`--lab`), like `tracelab fault`: the console
//! knows the lab's RabbitMQ and queue, and runs one DLQ operation at a time,
//! whether it came from the page or from here.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::args::LabUrlArg;
use crate::dlq::{Parked, Replayed};

/// `tracelab dlq`
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub lab: LabUrlArg,
}

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the parked messages (they stay parked).
    List {
        /// Show at most this many (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
        limit: u16,
        /// Print the console's JSON answer.
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
/// An unreachable console, or its error answer (RabbitMQ unreachable, an
/// id that matches nothing).
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let client = args.lab.client(Duration::from_secs(60))?;
    match args.command {
        DlqCommand::List { limit, json } => {
            let raw: serde_json::Value = client.get(&format!("/api/dlq?limit={limit}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&raw)?);
            } else {
                print!("{}", describe_parked(&serde_json::from_value(raw)?));
            }
        }
        DlqCommand::Replay {
            all: _,
            include_poison,
            id,
        } => {
            let body = match &id {
                Some(id) => json!({ "id": id }),
                None => json!({ "all": true, "include_poison": include_poison }),
            };
            let done: Replayed = client.post("/api/dlq/replay", Some(&body)).await?;
            print!("{}", describe_replayed(&done, id.is_none()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_parked(parked: &Parked) -> String {
    let mut out = String::new();
    if parked.messages.is_empty() {
        let _ = writeln!(out, "{} is empty", parked.queue);
        return out;
    }
    let _ = writeln!(
        out,
        "{:<38} {:<9} {:>7}  REASON",
        "MESSAGE ID", "KIND", "REPLAYS"
    );
    for m in &parked.messages {
        let kind = m.kind.map_or("unknown", |k| k.as_str());
        let _ = writeln!(
            out,
            "{:<38} {:<9} {:>7}  {}",
            m.message_id.as_deref().unwrap_or("-"),
            kind,
            m.replays,
            m.reason.as_deref().unwrap_or("(parked by the broker)")
        );
        if let Some(tp) = &m.traceparent {
            let _ = writeln!(out, "{:<38} traceparent {tp}", "");
        }
    }
    let shown = parked.messages.len();
    let total = parked.count as usize;
    let _ = writeln!(
        out,
        "\n{} message(s){}. Poison ones fail again as they are; replay transient ones with `tracelab dlq replay --all`.",
        total.max(shown),
        if total > shown {
            format!(", the first {shown} shown (--limit)")
        } else {
            String::new()
        }
    );
    out
}

fn describe_replayed(done: &Replayed, all: bool) -> String {
    let mut out = format!(
        "replayed {}; left in the DLQ: {} poison, {} other\n",
        done.replayed, done.kept_poison, done.kept_other
    );
    if done.kept_poison > 0 && all {
        out.push_str(
            "poison messages fail again as they are: `--include-poison` replays them once their cause is fixed\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::DeadLetter;
    use tracelab_contract::messaging::FailureKind;

    fn letter(id: &str, kind: Option<FailureKind>) -> DeadLetter {
        DeadLetter {
            message_id: Some(id.into()),
            kind,
            reason: Some("database down".into()),
            exchange: "tracelab.events".into(),
            routing_key: "payment.completed".into(),
            replays: 1,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            size: 120,
            event: None,
        }
    }

    #[test]
    fn a_listing_names_each_message_its_kind_and_trace_and_says_when_more_are_parked() {
        let parked = Parked {
            queue: "q.dlq".into(),
            count: 5,
            messages: vec![
                letter("m-1", Some(FailureKind::Transient)),
                letter("m-2", None),
            ],
        };
        let text = describe_parked(&parked);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("m-")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(
            rows[0].contains("transient") && rows[0].ends_with("database down"),
            "{text}"
        );
        assert!(rows[1].contains("unknown"), "{text}");
        assert!(
            text.contains("traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736"),
            "{text}"
        );
        assert!(
            text.contains("5 message(s), the first 2 shown (--limit)"),
            "{text}"
        );
        let empty = Parked {
            queue: "q.dlq".into(),
            count: 0,
            messages: vec![],
        };
        assert_eq!(describe_parked(&empty), "q.dlq is empty\n");
    }

    #[test]
    fn a_replay_of_all_says_why_poison_ones_stayed() {
        let done = Replayed {
            replayed: 2,
            kept_poison: 1,
            kept_other: 0,
        };
        let all = describe_replayed(&done, true);
        assert!(all.starts_with("replayed 2; left in the DLQ: 1 poison, 0 other\n"));
        assert!(all.contains("--include-poison"), "{all}");
        assert!(!describe_replayed(&done, false).contains("--include-poison"));
    }
}
