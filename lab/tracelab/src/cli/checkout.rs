//! `tracelab checkout`: one checkout through the lab's console (its
//! checkout action, `POST /api/actions/checkout`), then its whole trace,
//! read through the console's Tempo pass-through. The same command works
//! natively, from the host against compose, and inside the compose stack.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tracelab_client::gateway::{CheckoutRequest, checkout_trace_complete};
use tracelab_client::{TempoClient, TraceWaitTimeout, render_waterfall};

use super::args::{DisplayArgs, LabUrlArg, duration_arg};
use crate::console::api::actions::Action;

/// `tracelab checkout`
#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Demo user (alice, bob, carol); the console logs in with its demo password.
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// Amount in minor units (JPY has none), used when no --items are given.
    #[arg(long, default_value_t = 4980, conflicts_with = "items")]
    pub amount: u64,
    /// Currency of --amount.
    #[arg(long, default_value = "JPY", conflicts_with = "items")]
    pub currency: String,
    /// Items as PRODUCT_IDxQUANTITY (or just PRODUCT_ID), comma separated, e.g. 1x2,3.
    #[arg(long, value_parser = parse_items, value_name = "ITEMS")]
    pub items: Option<Items>,
    /// Card number; 4000000000000002 is declined (402).
    #[arg(long, default_value = "4242424242424242")]
    pub card: String,
    /// Idempotency-Key header [default: a new UUID]. Reuse one to see a replay.
    #[arg(long, value_parser = parse_idempotency_key, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// How long to wait for the whole trace, notification included. The
    /// embedded collector of `tracelab up` shows a kept trace at once (only
    /// a dropped one waits for `decision_wait_ms`); the Docker stack's
    /// collector holds every trace for `decision_wait_ms` (10 s in
    /// sampling.yaml) before Tempo has it.
    #[arg(long, default_value = "15s", value_parser = duration_arg, value_name = "DURATION")]
    pub wait: Duration,
    /// Do not fetch and show the trace.
    #[arg(long)]
    pub no_trace: bool,
    #[command(flatten)]
    pub display: DisplayArgs,
    /// The lab (its console), which sends the checkout.
    #[command(flatten)]
    pub lab: LabUrlArg,
}

impl CheckoutArgs {
    /// The body of `POST /api/actions/checkout` these arguments describe,
    /// with `key` as the Idempotency-Key.
    pub fn action_body(&self, key: &str) -> Value {
        let mut body = json!({
            "user": self.user,
            "card": self.card,
            "idempotency_key": key,
        });
        match &self.items {
            Some(Items(items)) => {
                body["items"] = items
                    .iter()
                    .map(|(id, qty)| json!({"product_id": id, "quantity": qty}))
                    .collect();
            }
            None => {
                body["amount"] = json!(self.amount);
                body["currency"] = json!(self.currency);
            }
        }
        body
    }

    /// The body of the checkout the gateway gets.
    pub fn request(&self) -> CheckoutRequest {
        match &self.items {
            Some(Items(items)) => CheckoutRequest::Items {
                items: items.clone(),
                card: self.card.clone(),
            },
            None => CheckoutRequest::Amount {
                amount: self.amount,
                currency: self.currency.clone(),
                card: self.card.clone(),
            },
        }
    }
}

/// Checkout items: `(product id, quantity)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items(pub Vec<(u64, u32)>);

/// Parses `1x2,3` into `[(1, 2), (3, 1)]`.
pub fn parse_items(s: &str) -> Result<Items, String> {
    let mut items = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, qty) = match part.split_once(['x', 'X', ':', '*']) {
            Some((id, qty)) => (id.trim(), qty.trim()),
            None => (part, "1"),
        };
        let id: u64 = id
            .parse()
            .map_err(|_| format!("bad product id {id:?} in {part:?} (expected e.g. 1x2)"))?;
        let qty: u32 = qty.parse().ok().filter(|&q| q > 0).ok_or_else(|| {
            format!("bad quantity {qty:?} in {part:?} (expected a positive number)")
        })?;
        items.push((id, qty));
    }
    if items.is_empty() {
        return Err("no items given (expected e.g. 1x2,3)".into());
    }
    Ok(Items(items))
}

/// An Idempotency-Key a header can carry: visible ASCII, 1 to 255 characters.
fn parse_idempotency_key(s: &str) -> Result<String, String> {
    let key = s.trim();
    if key.is_empty() || key.len() > 255 {
        return Err("expected 1 to 255 characters".into());
    }
    if !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(format!("{key:?}: only visible ASCII can go in a header"));
    }
    Ok(key.to_string())
}

/// Runs `tracelab checkout`: exit 0 on a 2xx checkout, 1 otherwise.
///
/// # Errors
/// A console that cannot be reached, or that cannot reach the gateway or
/// log the user in; a Tempo error other than "not complete yet".
pub(super) async fn run(args: CheckoutArgs) -> anyhow::Result<ExitCode> {
    let console = args.lab.client(Duration::from_secs(30))?;
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    println!(
        "checkout as {} through the lab at {}  Idempotency-Key: {key}",
        args.user,
        console.base_url()
    );
    println!("{}", serde_json::to_string(&args.request())?);
    let action: Action = console
        .post("/api/actions/checkout", Some(&args.action_body(&key)))
        .await?;
    println!("\n{}  HTTP {}", action.route, action.status);
    println!("{}", serde_json::to_string_pretty(&action.body)?);
    let succeeded = (200..300).contains(&action.status);
    let exit = if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let Some(trace_id) = action.trace_id else {
        println!("\n(no trace id in the answer: no trace_id field, no traceresponse header)");
        return Ok(exit);
    };
    println!("\ntrace id: {trace_id}");
    if let Some(link) = &action.link {
        println!("in the console: {}{link}", console.base_url());
    }
    if args.no_trace {
        return Ok(exit);
    }

    // Wait for the trace to be complete, then show it.
    let tempo = TempoClient::new(&format!("{}/api/tempo", console.base_url()))?;
    let wait = args.wait;
    println!(
        "waiting up to {:.0}s for the whole trace, notification included…",
        wait.as_secs_f64()
    );
    let trace = match tempo
        .wait_for_trace(&trace_id, |t| checkout_trace_complete(t, succeeded), wait)
        .await
    {
        Ok(t) => {
            // Late spans of the same batch may land just after: one more look.
            tokio::time::sleep(Duration::from_millis(300)).await;
            match tempo.get_trace(&trace_id).await {
                Ok(Some(newer)) if newer.len() >= t.len() => newer,
                _ => t,
            }
        }
        Err(e) => match e.downcast_ref::<TraceWaitTimeout>() {
            Some(timeout) => match &timeout.last {
                Some(t) => {
                    println!("\n(note: {timeout}; showing what has arrived)");
                    t.clone()
                }
                None => {
                    println!(
                        "\n{timeout}: it may not be sampled, or still held by the tail sampler.\n\
                         try later: tracelab trace {trace_id}"
                    );
                    return Ok(exit);
                }
            },
            None => return Err(e.context("fetching the trace")),
        },
    };
    println!();
    print!(
        "{}",
        render_waterfall(&trace, args.display.width(), args.display.color())
    );
    Ok(exit)
}
