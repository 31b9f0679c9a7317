//! `tracelab traces`: recent traces, filtered by TraceQL or tags.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tracelab_client::{SearchQuery, TempoClient};

use super::args::{TempoArg, default_tempo, duration_arg, parse_key_value};

/// `tracelab traces`
#[derive(Debug, Args)]
pub struct TracesArgs {
    #[command(flatten)]
    pub tempo: TempoArg,
    /// How many traces.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// TraceQL query, e.g. '{ status = error }'.
    #[arg(long, value_name = "TRACEQL")]
    pub q: Option<String>,
    /// Tag filter (repeatable), e.g. --tags service.name=payment.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub tags: Vec<(String, String)>,
    /// Only traces at least this long, e.g. 100ms.
    #[arg(long, value_name = "DURATION")]
    pub min_duration: Option<String>,
    /// Only traces from this far back, e.g. 5m or 1h.
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub since: Option<Duration>,
}

pub(super) async fn run(args: TracesArgs) -> anyhow::Result<ExitCode> {
    let tempo = TempoClient::new(&args.tempo.url())?;
    let now = chrono::Utc::now().timestamp();
    let query = SearchQuery {
        tags: args.tags.clone(),
        q: args.q.clone(),
        limit: Some(args.limit),
        start: args.since.map(|d| now - d.as_secs() as i64),
        end: args.since.map(|_| now),
        min_duration: args.min_duration.clone(),
        max_duration: None,
    };
    let mut found = tempo.search(&query).await?;
    found.sort_by_key(|t| std::cmp::Reverse(t.start_ns));
    if found.is_empty() {
        println!("no traces found at {}", tempo.base_url());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<32}  {:<40} {:>10} {:>6} {:>6}",
        "TIME", "TRACE ID", "ROOT", "DURATION", "SPANS", "ERRORS"
    );
    for t in &found {
        let time = chrono::DateTime::from_timestamp_nanos(t.start_ns as i64)
            .with_timezone(&chrono::Local)
            .format("%H:%M:%S%.3f");
        let root = if t.root_service_name.is_empty() {
            "<root span not yet received>".to_string()
        } else {
            format!("{}  {}", t.root_service_name, t.root_trace_name)
        };
        let root: String = if root.chars().count() > 40 {
            root.chars().take(39).chain(['…']).collect()
        } else {
            root
        };
        let duration = t
            .duration_ms
            .map(|d| format!("{d:.0}ms"))
            .unwrap_or_else(|| "<1ms".into());
        let (spans, errors) = if t.service_stats.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (t.span_count().to_string(), t.error_count().to_string())
        };
        println!(
            "{time:<12} {:<32}  {root:<40} {duration:>10} {spans:>6} {errors:>6}",
            t.trace_id
        );
    }
    println!(
        "\n{} trace{}. Show one with: tracelab trace <TRACE ID>{}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        if args.tempo.url() != default_tempo() {
            format!(" --tempo {}", tempo.base_url())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
