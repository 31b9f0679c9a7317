//! `tracelab trace ID`: one trace as a waterfall (or Tempo's JSON).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use tracelab_client::{TempoClient, render_waterfall};

use super::args::{DisplayArgs, TempoArg, duration_arg, parse_trace_id_arg};

/// `tracelab trace`
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace id: 32 hex digits (shorter is zero-padded), a traceparent, or base64.
    #[arg(value_parser = parse_trace_id_arg)]
    pub trace_id: String,
    #[command(flatten)]
    pub tempo: TempoArg,
    #[command(flatten)]
    pub display: DisplayArgs,
    /// Print the raw Tempo JSON instead of the waterfall.
    #[arg(long)]
    pub json: bool,
    /// Keep polling this long while the trace is not found, e.g. 5s.
    #[arg(long, default_value = "0s", value_parser = duration_arg, value_name = "DURATION")]
    pub wait: Duration,
}

pub(super) async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let tempo = TempoClient::new(&args.tempo.url())?;
    if args.json {
        let body = tempo.get_trace_json(&args.trace_id).await?;
        let Some(body) = body else {
            bail!("trace {} not found at {}", args.trace_id, tempo.base_url());
        };
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let trace = if !args.wait.is_zero() {
        tempo
            .wait_for_trace(&args.trace_id, |t| !t.is_empty(), args.wait)
            .await?
    } else {
        tempo.get_trace(&args.trace_id).await?.with_context(|| {
            format!(
                "trace {} not found at {} (not sampled, not exported yet, or evicted; try --wait 5s)",
                args.trace_id,
                tempo.base_url()
            )
        })?
    };
    print!(
        "{}",
        render_waterfall(&trace, args.display.width(), args.display.color())
    );
    Ok(ExitCode::SUCCESS)
}
