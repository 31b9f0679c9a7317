//! The generator: one task per scheduled request, logins first, counters
//! shared with the progress line, the summary at the end.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::config::{DECLINE_CARD, LoadConfig, Route, SEARCH_TERMS, User};
use super::histogram::Histogram;
use super::progress::{Snapshot, clear_progress, spawn_progress};
use super::schedule::{RoutePicker, declines, mix64, send_offset, slots_within};
use super::summary::{Latency, LiveSummary, RouteSummary, Summary, rate};
use tracelab_client::gateway::{self, LoginError, transport_kind};
use tracelab_client::http_error_summary;
use tracelab_contract::routes;

/// How often [`run_watched`] publishes the summary so far.
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// How many created orders are remembered for the `order` route.
const ORDERS_KEPT: usize = 1024;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Declined,
    Error(String),
}

/// Answers recorded for one route (shared by the request tasks).
#[derive(Debug, Default)]
struct RouteStats {
    ok: u64,
    errors: u64,
    declined: u64,
    errors_by_kind: BTreeMap<String, u64>,
    latency_us: Histogram,
}

impl RouteStats {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Declined => self.declined += 1,
            Outcome::Error(kind) => {
                self.errors += 1;
                *self.errors_by_kind.entry(kind).or_default() += 1;
            }
        }
        self.latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn count(&self) -> u64 {
        self.ok + self.errors + self.declined
    }
}

/// Slot counters kept by the scheduling loop alone.
#[derive(Debug, Default, Clone, Copy)]
struct SlotCounts {
    scheduled: u64,
    sent: u64,
    dropped: u64,
    skipped: u64,
}

struct TokenSlot {
    /// The token and its generation (bumped on every refresh).
    current: RwLock<(Arc<str>, u64)>,
    /// Serializes refreshes, so a burst of 401s logs in once.
    refresh: tokio::sync::Mutex<()>,
}

struct Urls {
    base: String,
    login: Url,
    checkout: Url,
    orders: String,
    searches: Vec<Url>,
}

/// What the request tasks share.
struct Shared {
    client: reqwest::Client,
    urls: Urls,
    users: Vec<User>,
    tokens: Vec<TokenSlot>,
    card: String,
    orders: Mutex<VecDeque<(usize, String)>>,
    stats: [Mutex<RouteStats>; 4],
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    sent: AtomicU64,
    behind: AtomicU64,
    refreshes: AtomicU64,
}

/// One request to make.
enum Job {
    Login { user: usize },
    Search { term: usize },
    Checkout { user: usize, decline: bool },
    Order { user: usize, id: String },
}

/// Sends a request and reads the whole answer (latency ends with the body).
async fn exchange(
    rb: reqwest::RequestBuilder,
) -> Result<(StatusCode, impl AsRef<[u8]> + use<>), Outcome> {
    let resp = rb
        .send()
        .await
        .map_err(|e| Outcome::Error(transport_kind(&e).to_string()))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Outcome::Error(if e.is_timeout() { "timeout" } else { "body" }.to_string()))?;
    Ok((status, body))
}

fn outcome_of(status: StatusCode, decline: bool) -> Outcome {
    if status.is_success() {
        Outcome::Ok
    } else if decline && status == StatusCode::PAYMENT_REQUIRED {
        Outcome::Declined
    } else {
        Outcome::Error(status.as_u16().to_string())
    }
}

impl Shared {
    /// The figures of the progress line.
    fn snapshot(&self) -> Snapshot {
        let mut hist = Histogram::new();
        let (mut errors, mut count) = (0, 0);
        for stats in &self.stats {
            let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
            hist.merge(&stats.latency_us);
            errors += stats.errors;
            count += stats.count();
        }
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            errors,
            count,
            p99_ms: hist.quantile(0.99) as f64 / 1000.0,
            behind: self.behind.load(Ordering::Relaxed),
        }
    }
    fn token(&self, user: usize) -> (Arc<str>, u64) {
        let guard = self.tokens[user]
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }

    /// A fresh token for `user` after `stale` was refused: logs in again
    /// unless another task already did since.
    async fn refresh(&self, user: usize, stale_generation: u64) -> Result<Arc<str>, Outcome> {
        let slot = &self.tokens[user];
        let _one_at_a_time = slot.refresh.lock().await;
        let (token, generation) = self.token(user);
        if generation != stale_generation {
            return Ok(token);
        }
        let u = &self.users[user];
        let token: Arc<str> = gateway::login(&self.client, &self.urls.base, &u.name, &u.password)
            .await
            .map_err(|e| Outcome::Error(e.kind()))?
            .into();
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let mut current = slot.current.write().unwrap_or_else(|e| e.into_inner());
        *current = (token.clone(), generation + 1);
        Ok(token)
    }

    /// Sends an authenticated request; on 401 logs in again and retries once.
    async fn authed<F: Fn(&str) -> reqwest::RequestBuilder>(
        &self,
        user: usize,
        build: F,
    ) -> Result<(StatusCode, impl AsRef<[u8]> + use<F>), Outcome> {
        let (token, generation) = self.token(user);
        let (status, body) = exchange(build(&token)).await?;
        if status != StatusCode::UNAUTHORIZED {
            return Ok((status, body));
        }
        let token = self.refresh(user, generation).await?;
        exchange(build(&token)).await
    }

    async fn execute(&self, job: Job) -> Outcome {
        let result = match job {
            Job::Login { user } => {
                let u = &self.users[user];
                exchange(
                    self.client
                        .post(self.urls.login.clone())
                        .json(&json!({"username": u.name, "password": u.password})),
                )
                .await
                .map(|(status, _)| outcome_of(status, false))
            }
            Job::Search { term } => exchange(self.client.get(self.urls.searches[term].clone()))
                .await
                .map(|(status, _)| outcome_of(status, false)),
            Job::Checkout { user, decline } => {
                let key = uuid::Uuid::new_v4().to_string();
                let card = if decline { DECLINE_CARD } else { &self.card };
                let body = json!({"amount": 4980, "currency": "JPY", "card": card});
                self.authed(user, |token| {
                    self.client
                        .post(self.urls.checkout.clone())
                        .bearer_auth(token)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                })
                .await
                .map(|(status, body)| {
                    if status.is_success() {
                        self.remember_order(user, body.as_ref());
                    }
                    outcome_of(status, decline)
                })
            }
            Job::Order { user, id } => {
                let url = format!("{}{id}", self.urls.orders);
                self.authed(user, |token| self.client.get(&url).bearer_auth(token))
                    .await
                    .map(|(status, _)| outcome_of(status, false))
            }
        };
        result.unwrap_or_else(|failure| failure)
    }

    fn remember_order(&self, user: usize, body: &[u8]) {
        let Some(id) = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            v.get("order_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) else {
            return;
        };
        let mut orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        if orders.len() == ORDERS_KEPT {
            orders.pop_front();
        }
        orders.push_back((user, id));
    }

    /// An earlier order to look up, round robin over the remembered ones.
    fn pick_order(&self, n: u64) -> Option<(usize, String)> {
        let orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        if orders.is_empty() {
            return None;
        }
        orders.get((n % orders.len() as u64) as usize).cloned()
    }
}

/// Keeps the in-flight count right even when a request task is aborted.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the load for `config.duration` (which must be set; with `None` it
/// runs forever) and returns the summary.
///
/// # Errors
/// As [`run_until`].
pub async fn run(config: LoadConfig) -> anyhow::Result<Summary> {
    run_until(config, std::future::pending()).await
}

/// Runs the load until `config.duration` has passed or `stop` resolves,
/// whichever comes first, waits for the requests in flight (up to the
/// request timeout, 2 s after a stop), and returns the summary.
///
/// # Errors
/// Invalid configuration; a gateway that cannot be reached before the first
/// request; a user whose login is refused when checkout or order is in the
/// mix; or `stop` resolving before the first request.
pub async fn run_until(
    config: LoadConfig,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    run_watched(config, stop, None).await
}

/// As [`run_until`], publishing the summary so far to `live` about once a
/// second while it runs, and the final summary at the end.
///
/// # Errors
/// As [`run_until`].
pub async fn run_watched(
    config: LoadConfig,
    stop: impl Future<Output = ()>,
    live: Option<LiveSummary>,
) -> anyhow::Result<Summary> {
    let base = config.validate()?;
    let join = |path: &str| -> anyhow::Result<Url> {
        Url::parse(&format!("{}{path}", base.as_str().trim_end_matches('/')))
            .with_context(|| format!("bad gateway URL {:?}", config.gateway))
    };
    let mut searches = Vec::new();
    for term in SEARCH_TERMS {
        let mut url = join(routes::PRODUCTS.path)?;
        url.query_pairs_mut().append_pair("q", term);
        searches.push(url);
    }
    let urls = Urls {
        base: base.to_string(),
        login: join(gateway::LOGIN_PATH)?,
        checkout: join(gateway::CHECKOUT_PATH)?,
        orders: join(routes::ORDER.path.trim_end_matches("{id}"))?.to_string(),
        searches,
    };
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(config.max_in_flight)
        .user_agent(concat!("tracelab-load/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")?;

    tokio::pin!(stop);
    let tokens = tokio::select! {
        tokens = preflight(&client, &base, &urls, &config) => tokens?,
        () = &mut stop => bail!("interrupted before the first request"),
    };
    let shared = Arc::new(Shared {
        client,
        urls,
        users: config.users.clone(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenSlot {
                current: RwLock::new((t.into(), 0)),
                refresh: tokio::sync::Mutex::new(()),
            })
            .collect(),
        card: config.card.clone(),
        orders: Mutex::new(VecDeque::new()),
        stats: Default::default(),
        in_flight: AtomicU64::new(0),
        peak_in_flight: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        behind: AtomicU64::new(0),
        refreshes: AtomicU64::new(0),
    });

    let t0 = Instant::now();
    let progress = {
        let shared = shared.clone();
        spawn_progress(config.progress, t0, move || shared.snapshot())
    };
    let end_slot = config.duration.map(|d| slots_within(d, config.rps));
    let share_ppm = (config.decline_share * 1_000_000.0).round() as u64;
    let lag_threshold = config.lag_threshold;
    let max_in_flight = config.max_in_flight as u64;
    let user_count = config.users.len().max(1);

    let mut picker = RoutePicker::new(&config.mix);
    let mut slots = [SlotCounts::default(); 4];
    let mut per_route_n = [0u64; 4];
    let mut max_lag = Duration::ZERO;
    let mut tasks = JoinSet::new();
    let mut next: u64 = 0;
    let mut interrupted = false;
    let mut last_send = t0;
    let mut published = t0;
    let sleep = tokio::time::sleep_until(t0);
    tokio::pin!(sleep);

    'schedule: loop {
        if end_slot == Some(next) {
            break;
        }
        let due = t0 + send_offset(next, config.rps);
        sleep.as_mut().reset(due);
        tokio::select! {
            biased;
            () = &mut stop => {
                interrupted = true;
                break 'schedule;
            }
            () = &mut sleep => {}
        }
        // Everything due by now goes out now: the timer wakes at millisecond
        // granularity, and after a stall the backlog is sent at once rather
        // than skipped, so the offered load stays what was asked.
        let now = Instant::now();
        loop {
            let due = t0 + send_offset(next, config.rps);
            if due > now || end_slot == Some(next) {
                break;
            }
            let lag = now.saturating_duration_since(due);
            max_lag = max_lag.max(lag);
            if lag > lag_threshold {
                shared.behind.fetch_add(1, Ordering::Relaxed);
            }
            let route = picker.next_route();
            let r = route.index();
            let n = per_route_n[r];
            per_route_n[r] += 1;
            slots[r].scheduled += 1;
            next += 1;

            let user = (n % user_count as u64) as usize;
            let job = match route {
                Route::Login => Job::Login { user },
                Route::Search => Job::Search {
                    term: (mix64(n) % SEARCH_TERMS.len() as u64) as usize,
                },
                Route::Checkout => Job::Checkout {
                    user,
                    decline: declines(n, share_ppm),
                },
                Route::Order => match shared.pick_order(n) {
                    Some((user, id)) => Job::Order { user, id },
                    None => {
                        slots[r].skipped += 1;
                        continue;
                    }
                },
            };
            let in_flight = shared.in_flight.load(Ordering::Relaxed);
            if in_flight >= max_in_flight {
                slots[r].dropped += 1;
                continue;
            }
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            shared
                .peak_in_flight
                .fetch_max(in_flight + 1, Ordering::Relaxed);
            slots[r].sent += 1;
            shared.sent.fetch_add(1, Ordering::Relaxed);
            last_send = now;
            let shared = shared.clone();
            tasks.spawn(async move {
                let _in_flight = InFlight(shared.clone());
                let outcome = shared.execute(job).await;
                let latency = due.elapsed();
                shared.stats[r]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(outcome, latency);
            });
        }
        // Reap finished tasks so the set does not grow over a long run.
        while tasks.try_join_next().is_some() {}
        if let Some(live) = &live
            && now.duration_since(published) >= LIVE_EVERY
        {
            published = now;
            live.set(summarize(
                &config,
                &shared,
                &slots,
                now - t0,
                false,
                max_lag,
            ));
        }
    }
    let stopped_at = Instant::now();

    // Let the requests in flight finish; each is bounded by the timeout.
    let drain = if interrupted {
        config.timeout.min(Duration::from_secs(2))
    } else {
        config.timeout + Duration::from_millis(500)
    };
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
        clear_progress(config.progress);
    }

    let elapsed = if interrupted {
        stopped_at - t0
    } else {
        let planned = config.duration.unwrap_or_default();
        planned.max(last_send - t0)
    };
    let summary = summarize(&config, &shared, &slots, elapsed, interrupted, max_lag);
    if let Some(live) = &live {
        live.set(summary.clone());
    }
    Ok(summary)
}

/// Logs every user in when checkout or order is in the mix (their tokens
/// are reused), otherwise checks the gateway answers at all.
async fn preflight(
    client: &reqwest::Client,
    base: &Url,
    urls: &Urls,
    config: &LoadConfig,
) -> anyhow::Result<Vec<String>> {
    let unreachable = |e: &reqwest::Error| {
        anyhow::anyhow!(
            "cannot reach the gateway at {}: {}; is the lab running? (`cargo run -p tracelab -- up`)",
            base.as_str().trim_end_matches('/'),
            http_error_summary(e)
        )
    };
    if !config.mix.needs_token() {
        // Any answer will do: a gateway whose upstreams are down still takes
        // the load, and measuring that is legitimate.
        let health = format!("{}/health", base.as_str().trim_end_matches('/'));
        client
            .get(&health)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        return Ok(config.users.iter().map(|_| String::new()).collect());
    }
    let logins = config.users.iter().map(|u| {
        let (client, base) = (client.clone(), urls.base.clone());
        async move { gateway::login(&client, &base, &u.name, &u.password).await }
    });
    let results = futures::future::join_all(logins).await;
    let mut tokens = Vec::new();
    for (user, result) in config.users.iter().zip(results) {
        match result {
            Ok(token) => tokens.push(token),
            Err(LoginError::Unreachable { source, .. }) => return Err(unreachable(&source)),
            Err(LoginError::Refused { status, body, .. }) => bail!(
                "cannot log in as {:?} at {}: {status} {body}",
                user.name,
                urls.login
            ),
            Err(LoginError::NoToken { .. }) => bail!(
                "logging in as {:?} at {}: the answer has no \"token\"",
                user.name,
                urls.login
            ),
        }
    }
    Ok(tokens)
}

fn summarize(
    config: &LoadConfig,
    shared: &Shared,
    slots: &[SlotCounts; 4],
    elapsed: Duration,
    interrupted: bool,
    max_lag: Duration,
) -> Summary {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut total = RouteSummary {
        route: "total".to_string(),
        ..RouteSummary::default()
    };
    let mut total_hist = Histogram::new();
    let mut routes = Vec::new();
    for route in config.mix.routes() {
        let r = route.index();
        let stats = shared.stats[r].lock().unwrap_or_else(|e| e.into_inner());
        let s = slots[r];
        let count = stats.count();
        let row = RouteSummary {
            route: route.name().to_string(),
            scheduled: s.scheduled,
            sent: s.sent,
            dropped: s.dropped,
            skipped: s.skipped,
            count,
            ok: stats.ok,
            errors: stats.errors,
            declined: stats.declined,
            error_rate: rate(stats.errors, count),
            errors_by_kind: stats.errors_by_kind.clone(),
            latency: Latency::from_micros(&stats.latency_us),
            achieved_rps: s.sent as f64 / secs,
        };
        total_hist.merge(&stats.latency_us);
        total.scheduled += row.scheduled;
        total.sent += row.sent;
        total.dropped += row.dropped;
        total.skipped += row.skipped;
        total.count += row.count;
        total.ok += row.ok;
        total.errors += row.errors;
        total.declined += row.declined;
        for (k, n) in &row.errors_by_kind {
            *total
                .errors_by_kind
                .entry(format!("{}:{k}", row.route))
                .or_default() += n;
        }
        routes.push(row);
    }
    total.error_rate = rate(total.errors, total.count);
    total.latency = Latency::from_micros(&total_hist);
    total.achieved_rps = total.sent as f64 / secs;
    Summary {
        gateway: config.gateway.clone(),
        mix: config.mix.to_string(),
        target_rps: config.rps,
        duration_s: config.duration.map(|d| d.as_secs_f64()),
        elapsed_s: elapsed.as_secs_f64(),
        interrupted,
        scheduled: total.scheduled,
        sent: total.sent,
        dropped_by_generator: total.dropped,
        skipped: total.skipped,
        unfinished: total.sent - total.count,
        achieved_rps: total.achieved_rps,
        behind_schedule: shared.behind.load(Ordering::Relaxed),
        max_lag_ms: max_lag.as_secs_f64() * 1000.0,
        lag_threshold_ms: config.lag_threshold.as_secs_f64() * 1000.0,
        peak_in_flight: shared.peak_in_flight.load(Ordering::Relaxed),
        max_in_flight: config.max_in_flight as u64,
        token_refreshes: shared.refreshes.load(Ordering::Relaxed),
        routes,
        total,
    }
}
