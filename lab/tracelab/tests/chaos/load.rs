//! Steady checkout load with every answer kept: an open loop (request `i`
//! is due at `t0 + i / rate`, sent on its own task whatever the earlier
//! ones are doing, so a stalled lab is not offered less), each checkout
//! with a fresh Idempotency-Key, the demo users in turn. Unlike
//! `tracelab load`, which keeps figures, this keeps every request: its key,
//! when it was sent, how long it took, the status and the order id, which
//! the invariants are checked against.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tracelab_client::gateway;

/// The demo users the load checks out as.
const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// A checkout gives up after this (the gateway's own upstream timeout is
/// shorter: this only ends a request the lab never answers).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a checkout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The gateway answered.
    Status {
        status: u16,
        /// `order_id` of the answer (2xx), if any.
        order_id: Option<String>,
        /// `trace_id` of the answer.
        trace_id: Option<String>,
        /// `error.code` of a 4xx/5xx answer.
        code: Option<String>,
    },
    /// No answer: `timeout`, `connect` or `io`.
    Transport(&'static str),
}

/// One checkout as sent and answered.
#[derive(Debug, Clone)]
pub(crate) struct Checkout {
    pub(crate) key: String,
    /// Which demo user (index into the load's tokens) sent it.
    pub(crate) user: usize,
    pub(crate) sent: Instant,
    pub(crate) latency: Duration,
    pub(crate) outcome: Outcome,
}

impl Checkout {
    /// A 2xx answer.
    pub(crate) fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Status { status, .. } if (200..300).contains(&status))
    }

    /// The order id of a 2xx answer.
    pub(crate) fn order_id(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Status { order_id, .. } => order_id.as_deref(),
            Outcome::Transport(_) => None,
        }
    }

    /// The trace id the gateway answered with.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Status { trace_id, .. } => trace_id.as_deref(),
            Outcome::Transport(_) => None,
        }
    }

    /// `201`, `502 upstream_timeout`, `timeout`: for a tally.
    pub(crate) fn label(&self) -> String {
        match &self.outcome {
            Outcome::Status {
                status,
                code: Some(code),
                ..
            } => format!("{status} {code}"),
            Outcome::Status { status, .. } => status.to_string(),
            Outcome::Transport(kind) => (*kind).to_string(),
        }
    }
}

/// How to send a checkout again as the same user, once the load stopped.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    tokens: Vec<String>,
}

impl Client {
    /// Sends `checkout` again with its key and user, as a client does
    /// after an error, until the answer is final: while it is 409 or 5xx
    /// or nothing, waits for `Retry-After` (1 s without one) and tries
    /// again, up to `limit`. Returns the last attempt.
    pub(crate) async fn retry_until_final(&self, checkout: &Checkout, limit: Duration) -> Checkout {
        let deadline = Instant::now() + limit;
        loop {
            let (attempt, retry_after) = send_once(
                &self.http,
                &self.url,
                &self.tokens[checkout.user],
                checkout.user,
                checkout.key.clone(),
            )
            .await;
            let again = match &attempt.outcome {
                Outcome::Status { status, .. } => *status == 409 || *status >= 500,
                Outcome::Transport(_) => true,
            };
            let wait = retry_after.unwrap_or(Duration::from_secs(1));
            if !again || Instant::now() + wait >= deadline {
                return attempt;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The running load.
pub(crate) struct CheckoutLoad {
    client: Client,
    done: Arc<Mutex<Vec<Checkout>>>,
    stop: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>>,
}

impl CheckoutLoad {
    /// Logs the demo users in at `gateway_url` and starts sending `rate`
    /// checkouts a second.
    ///
    /// # Panics
    /// When a demo user cannot log in.
    pub(crate) async fn start(gateway_url: &str, rate: f64) -> CheckoutLoad {
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("reqwest client");
        let mut tokens = Vec::new();
        for user in USERS {
            let token = gateway::login(&http, gateway_url, user, &gateway::demo_password(user))
                .await
                .unwrap_or_else(|e| panic!("{user} logs in before the load: {e}"));
            tokens.push(token);
        }
        let done: Arc<Mutex<Vec<Checkout>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let url = format!("{}/api/checkout", gateway_url.trim_end_matches('/'));
        let client = Client {
            http: http.clone(),
            url: url.clone(),
            tokens: tokens.clone(),
        };
        let sink = done.clone();
        let scheduler = tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for i in 0u64.. {
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                let user = (i as usize) % tokens.len();
                tasks.push(tokio::spawn(send(
                    http.clone(),
                    url.clone(),
                    tokens[user].clone(),
                    user,
                    sink.clone(),
                )));
            }
            tasks
        });
        CheckoutLoad {
            client,
            done,
            stop,
            scheduler,
        }
    }

    /// The checkouts answered so far.
    pub(crate) fn answered(&self) -> Vec<Checkout> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `count` checkouts sent at or after `since` got a 2xx.
    /// Returns the send time of the first of them, or `None` after `limit`.
    pub(crate) async fn wait_ok_since(
        &self,
        since: Instant,
        count: usize,
        limit: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let mut ok: Vec<Instant> = self
                .answered()
                .iter()
                .filter(|c| c.ok() && c.sent >= since)
                .map(|c| c.sent)
                .collect();
            if ok.len() >= count {
                ok.sort();
                return ok.first().copied();
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops sending and waits for every request in flight to be answered
    /// (or to time out); returns every checkout, in the order answered,
    /// and the client to send them again with.
    pub(crate) async fn stop(self) -> (Vec<Checkout>, Client) {
        self.stop.send_replace(true);
        let tasks = self.scheduler.await.expect("load scheduler");
        for task in tasks {
            let _ = task.await;
        }
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (done, self.client)
    }
}

async fn send(
    http: reqwest::Client,
    url: String,
    token: String,
    user: usize,
    sink: Arc<Mutex<Vec<Checkout>>>,
) {
    let key = uuid::Uuid::new_v4().to_string();
    let (checkout, _) = send_once(&http, &url, &token, user, key).await;
    sink.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(checkout);
}

/// One checkout with `key`; also returns the answer's `Retry-After`.
async fn send_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    user: usize,
    key: String,
) -> (Checkout, Option<Duration>) {
    let sent = Instant::now();
    let result = http
        .post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", &key)
        .json(&json!({"amount": 4980, "currency": "JPY", "card": "4242424242424242"}))
        .send()
        .await;
    let mut retry_after = None;
    let outcome = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs);
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let text = |v: &Value| v.as_str().map(str::to_string);
            Outcome::Status {
                status,
                order_id: text(&body["order_id"]),
                trace_id: text(&body["trace_id"]),
                code: text(&body["error"]["code"]),
            }
        }
        Err(e) => Outcome::Transport(gateway::transport_kind(&e)),
    };
    let checkout = Checkout {
        key,
        user,
        sent,
        latency: sent.elapsed(),
        outcome,
    };
    (checkout, retry_after)
}

/// The `q` quantile (0..=1) of `latencies`, nearest rank; zero when empty.
pub(crate) fn quantile(latencies: &[Duration], q: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
