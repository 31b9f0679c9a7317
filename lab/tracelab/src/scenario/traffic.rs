//! The traffic of a scenario: the `traffic:` section of its file, and a
//! small driver that sends it (checkouts, product searches and order
//! look-ups through the gateway), each request recorded with its route,
//! status, latency, trace id and Idempotency-Key, so a scenario's checks can
//! follow the very requests that were sent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use tracelab_client::gateway;
use tracelab_contract::routes;
use tracelab_contract::users::DEMO_USERS;

/// Route name of a checkout, as the gateway's root span is named.
pub const CHECKOUT: &str = routes::CHECKOUT.name;
/// Route name of a product search.
pub const SEARCH: &str = routes::PRODUCTS.name;
/// Route name of an order look-up.
pub const ORDER: &str = routes::ORDER.name;

const QUERIES: [&str; 5] = ["tea", "matcha", "cup", "sencha", ""];

/// The traffic that makes a scenario visible: how many of each request,
/// sent `concurrency` at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Traffic {
    /// `POST /api/checkout` requests (each with its own Idempotency-Key).
    pub checkouts: u32,
    /// `GET /api/products?q=...` requests.
    pub searches: u32,
    /// `GET /api/orders/{id}` requests (for orders of earlier checkouts).
    pub orders: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Card number of the checkouts.
    pub card: String,
    /// How long to wait after the traffic before judging the traces (ms):
    /// spans are exported in batches and the queue hop is asynchronous.
    pub settle_ms: u64,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            checkouts: 6,
            searches: 4,
            orders: 0,
            concurrency: 3,
            card: "4242424242424242".into(),
            settle_ms: 1500,
        }
    }
}

/// One request that was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// Route, e.g. [`CHECKOUT`].
    pub route: &'static str,
    /// HTTP status; 0 when no answer came (transport error or timeout).
    pub status: u16,
    /// The trace id of the answer (`trace_id` or `traceresponse`).
    pub trace_id: Option<String>,
    /// The checkout's Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// The checkout's order id, when it answered one.
    pub order_id: Option<String>,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// How long the answer took.
    pub latency: Duration,
    /// The error code of a failed answer, or the transport error.
    pub error: Option<String>,
    /// The demo user who sent it (checkouts and look-ups).
    pub user: Option<usize>,
}

impl RequestRecord {
    /// Whether the gateway answered 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends requests to the gateway as the demo users.
#[derive(Debug, Clone)]
pub struct Driver {
    http: reqwest::Client,
    gateway: String,
    tokens: Arc<Mutex<Vec<Option<String>>>>,
    counter: Arc<std::sync::atomic::AtomicUsize>,
}

impl Driver {
    /// A driver for the gateway at `gateway` (base URL).
    ///
    /// # Errors
    /// When the URL is not one, or the HTTP client cannot be built.
    pub fn new(gateway: &str) -> anyhow::Result<Driver> {
        reqwest::Url::parse(gateway).with_context(|| format!("bad gateway URL {gateway:?}"))?;
        Ok(Driver {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("building HTTP client")?,
            gateway: gateway.trim_end_matches('/').to_string(),
            tokens: Arc::new(Mutex::new(vec![None; DEMO_USERS.len()])),
            counter: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }

    fn next(&self) -> usize {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn token(&self, user: usize) -> anyhow::Result<String> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = &tokens[user] {
            return Ok(t.clone());
        }
        let demo = &DEMO_USERS[user];
        let token = gateway::login(&self.http, &self.gateway, demo.username, demo.password).await?;
        tokens[user] = Some(token.clone());
        Ok(token)
    }

    async fn send(
        &self,
        route: &'static str,
        request: reqwest::RequestBuilder,
        key: Option<String>,
    ) -> RequestRecord {
        let sent_at = SystemTime::now();
        let started = Instant::now();
        let mut record = RequestRecord {
            route,
            status: 0,
            trace_id: None,
            idempotency_key: key,
            order_id: None,
            sent_at,
            latency: Duration::ZERO,
            error: None,
            user: None,
        };
        match request.send().await {
            Ok(resp) => {
                record.status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                record.latency = started.elapsed();
                record.trace_id = gateway::response_trace_id(&headers, &body);
                record.order_id = body
                    .get("order_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if !record.ok() {
                    record.error = body
                        .pointer("/error/code")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
            }
            Err(e) => {
                record.latency = started.elapsed();
                record.error = Some(tracelab_client::http_error_summary(&e));
            }
        }
        record
    }

    /// One checkout as the next demo user, with a fresh Idempotency-Key.
    pub async fn checkout(&self, card: &str) -> RequestRecord {
        let n = self.next();
        let user = n % DEMO_USERS.len();
        let key = uuid::Uuid::new_v4().to_string();
        let token = match self.token(user).await {
            Ok(t) => t,
            Err(e) => return failed(CHECKOUT, Some(key), &e),
        };
        let items = json!([{"product_id": 1 + (n % 5) as i64, "quantity": 1 + (n % 2) as i64}]);
        let request = self
            .http
            .post(gateway::join(&self.gateway, routes::CHECKOUT.path))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&json!({"items": items, "card": card}));
        let mut record = self.send(CHECKOUT, request, Some(key)).await;
        record.user = Some(user);
        record
    }

    /// One product search.
    pub async fn search(&self) -> RequestRecord {
        let q = QUERIES[self.next() % QUERIES.len()];
        let mut url = reqwest::Url::parse(&gateway::join(&self.gateway, routes::PRODUCTS.path))
            .expect("gateway base URL was parsed before");
        url.query_pairs_mut().append_pair("q", q);
        let request = self.http.get(url);
        self.send(SEARCH, request, None).await
    }

    /// Looks up an order as demo user number `user` (0 alice, 1 bob, 2 carol).
    pub async fn order(&self, order_id: &str, user: usize) -> RequestRecord {
        let user = user % DEMO_USERS.len();
        let token = match self.token(user).await {
            Ok(t) => t,
            Err(e) => return failed(ORDER, None, &e),
        };
        let request = self
            .http
            .get(gateway::join(
                &self.gateway,
                &routes::ORDER.path.replace("{id}", order_id),
            ))
            .bearer_auth(token);
        let mut record = self.send(ORDER, request, None).await;
        record.user = Some(user);
        record
    }

    /// Sends `traffic`: the checkouts and searches interleaved,
    /// `concurrency` at a time, then the order look-ups.
    pub async fn run(&self, traffic: &Traffic) -> Vec<RequestRecord> {
        let permits = Arc::new(Semaphore::new(traffic.concurrency.max(1) as usize));
        let mut tasks = tokio::task::JoinSet::new();
        let total = traffic.checkouts.max(traffic.searches);
        for i in 0..total {
            for kind in [0u8, 1] {
                let wanted = if kind == 0 {
                    i < traffic.checkouts
                } else {
                    i < traffic.searches
                };
                if !wanted {
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let driver = self.clone();
                let card = traffic.card.clone();
                tasks.spawn(async move {
                    let record = if kind == 0 {
                        driver.checkout(&card).await
                    } else {
                        driver.search().await
                    };
                    drop(permit);
                    record
                });
            }
        }
        let mut records = Vec::new();
        let mut placed = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(record) = done {
                if let (Some(order), Some(user)) = (&record.order_id, record.user) {
                    placed.push((order.clone(), user));
                }
                records.push(record);
            }
        }
        // Look-ups as the order's owner, cycling over the placed orders.
        for (order, user) in placed.iter().cycle().take(traffic.orders as usize) {
            records.push(self.order(order, *user).await);
        }
        records.sort_by_key(|r| r.sent_at);
        records
    }
}

fn failed(route: &'static str, key: Option<String>, e: &anyhow::Error) -> RequestRecord {
    RequestRecord {
        route,
        status: 0,
        trace_id: None,
        idempotency_key: key,
        order_id: None,
        sent_at: SystemTime::now(),
        latency: Duration::ZERO,
        error: Some(format!("{e:#}")),
        user: None,
    }
}

/// A one-line summary per route: `POST /api/checkout: 6 sent, 4 ok, p50 120ms, max 900ms`.
pub fn summarize(records: &[RequestRecord]) -> Vec<String> {
    let mut out = Vec::new();
    for route in [CHECKOUT, SEARCH, ORDER] {
        let mut of: Vec<&RequestRecord> = records.iter().filter(|r| r.route == route).collect();
        if of.is_empty() {
            continue;
        }
        of.sort_by_key(|r| r.latency);
        let ok = of.iter().filter(|r| r.ok()).count();
        let p50 = of[of.len() / 2].latency.as_millis();
        let max = of[of.len() - 1].latency.as_millis();
        let mut statuses: Vec<u16> = of.iter().map(|r| r.status).collect();
        statuses.sort_unstable();
        statuses.dedup();
        out.push(format!(
            "{route}: {} sent, {ok} ok, p50 {p50}ms, max {max}ms, statuses {statuses:?}",
            of.len()
        ));
    }
    out
}
