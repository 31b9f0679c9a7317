//! `tracelab checkout`: log in, send one checkout through the gateway,
//! then show its whole trace.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use reqwest::Url;
use serde_json::Value;
use tracelab_client::gateway::{
    self, CHECKOUT_PATH, CheckoutRequest, checkout_trace_complete, response_trace_id,
};
use tracelab_client::{TempoClient, TraceWaitTimeout, http_error_summary, render_waterfall};

use super::args::{DisplayArgs, TempoArg, duration_arg, gateway_or_recorded};

/// `tracelab checkout`
#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Gateway base URL [default: the lab `tracelab up` recorded, else http://127.0.0.1:8080].
    #[arg(long, env = "TRACELAB_GATEWAY_URL", value_name = "URL")]
    pub gateway: Option<Url>,
    #[command(flatten)]
    pub tempo: TempoArg,
    /// Demo user (alice, bob, carol).
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// Password [default: USER-password].
    #[arg(long)]
    pub password: Option<String>,
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
    #[arg(long)]
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
}

impl CheckoutArgs {
    /// The body of the checkout these arguments describe.
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

/// Runs `tracelab checkout`: exit 0 on a 2xx checkout, 1 otherwise.
///
/// # Errors
/// A gateway that cannot be reached or refuses the login; a Tempo error
/// other than "not complete yet".
pub(super) async fn run(args: CheckoutArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building HTTP client")?;
    // 1. Log in.
    let gateway = gateway_or_recorded(args.gateway.as_ref());
    let base = gateway.as_str();
    let password = args
        .password
        .clone()
        .unwrap_or_else(|| gateway::demo_password(&args.user));
    let token = gateway::login(&http, base, &args.user, &password)
        .await
        .map_err(|e| match e {
            gateway::LoginError::Unreachable { .. } => {
                anyhow::anyhow!("{e}; is the lab running? (`cargo run -p tracelab -- up`)")
            }
            other => other.into(),
        })?;
    println!("logged in as {}", args.user);

    // 2. Check out.
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let url = gateway::join(base, CHECKOUT_PATH);
    let request = args.request();
    println!("POST {url}  Idempotency-Key: {key}");
    println!("{}", serde_json::to_string(&request)?);
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .header("Idempotency-Key", &key)
        .json(&request)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the gateway at {url}: {}; is the lab running? (`cargo run -p tracelab -- up`)",
                http_error_summary(&e)
            )
        })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    println!("\nHTTP {status}");
    println!("{}", serde_json::to_string_pretty(&body)?);
    let trace_id = response_trace_id(&headers, &body);
    let Some(trace_id) = trace_id else {
        println!("\n(no trace id in the answer: no trace_id field, no traceresponse header)");
        return Ok(exit_for(status));
    };
    println!("\ntrace id: {trace_id}");
    if args.no_trace {
        return Ok(exit_for(status));
    }

    // 3. Wait for the trace to be complete, then show it.
    let tempo = TempoClient::new(&args.tempo.url())?;
    let succeeded = status.is_success();
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
                         try later: tracelab trace {trace_id} --tempo {}",
                        tempo.base_url()
                    );
                    return Ok(exit_for(status));
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
    Ok(exit_for(status))
}

/// 2xx → 0; anything else → 1 (the answer was printed already).
fn exit_for(status: reqwest::StatusCode) -> ExitCode {
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
