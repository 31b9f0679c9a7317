//! `tracelab load`: an open-loop load generator for the gateway.
//!
//! Requests are scheduled at fixed instants from the start, `t0 + i / rps`,
//! and each one is sent on its own task whatever happened to the previous
//! ones. A slow gateway therefore sees the rate it was promised (requests
//! pile up in flight) instead of quietly slowing the generator down, and
//! latency is measured from the *scheduled* instant, so time a request spent
//! waiting for the generator counts against it (no coordinated omission).
//!
//! When the generator itself cannot keep its schedule (a late timer, a busy
//! machine) it does not skip or stretch anything: it sends the late requests
//! at once and counts them as "behind schedule", with the maximum lag. Above
//! `max_in_flight` requests it drops the slot and counts it as "dropped by
//! generator". Both are printed in the summary, with a warning.
//!
//! Library use (tests, examples): build a [`LoadConfig`] and call [`run`] or
//! [`run_until`]; both return a [`Summary`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use tracelab_contract::fault::duration;

use crate::tempo::http_error_summary;

/// The card the payment provider declines (402).
pub const DECLINE_CARD: &str = "4000000000000002";
/// The default mix of `--mix`.
pub const DEFAULT_MIX: &str = "checkout=1,search=5,login=1,order=0";
/// Terms for `GET /api/products?q=`, all matching the seeded catalogue.
pub const SEARCH_TERMS: &[&str] = &[
    "tea", "matcha", "green", "sencha", "cup", "teapot", "crackers", "tracing",
];
/// How many created orders are remembered for the `order` route.
const ORDERS_KEPT: usize = 1024;

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// `tracelab load`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("length").required(true).args(["duration", "forever"])))]
pub struct LoadArgs {
    /// Requests per second to offer. Open loop: they are sent on schedule
    /// whatever the answers, and latency counts from the scheduled instant.
    #[arg(long, value_parser = parse_rps)]
    pub rps: f64,
    /// How long to send, e.g. 30s, 1m, 500ms, 1m30s (whole numbers with a unit).
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Send until Ctrl-C.
    #[arg(long)]
    pub forever: bool,
    /// Relative weights of the routes (login, search, checkout, order);
    /// routes left out get 0.
    #[arg(long, value_parser = parse_mix, default_value = DEFAULT_MIX, value_name = "ROUTE=WEIGHT,..")]
    pub mix: Mix,
    /// Gateway base URL.
    #[arg(
        long,
        env = "TRACELAB_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub gateway: Url,
    /// Users to log in as, round robin (NAME or NAME:PASSWORD; the password
    /// defaults to NAME-password).
    #[arg(long, value_delimiter = ',', value_parser = parse_user, default_value = "alice,bob,carol")]
    pub users: Vec<User>,
    /// Card of the checkouts.
    #[arg(long, default_value = "4242424242424242")]
    pub card: String,
    /// Share of checkouts sent with the declining card 4000000000000002; their
    /// 402 answers are expected and counted as "declined", not as errors.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, value_name = "0..1")]
    pub decline_share: f64,
    /// Timeout of one request (an expired one counts as an error).
    #[arg(long, default_value = "10s", value_parser = duration::parse, value_name = "DURATION")]
    pub timeout: Duration,
    /// Most requests in flight; a scheduled request over it is not sent and
    /// is counted as "dropped by generator".
    #[arg(long, default_value_t = 2000, value_parser = parse_max_in_flight, value_name = "N")]
    pub max_in_flight: usize,
    /// A request sent later than this after its scheduled instant counts as
    /// "behind schedule".
    #[arg(long, default_value = "5ms", value_parser = duration::parse, value_name = "DURATION")]
    pub lag_threshold: Duration,
    /// No progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as JSON on stdout (progress, if any, goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    /// The generator configuration these arguments describe.
    pub fn config(&self) -> LoadConfig {
        LoadConfig {
            gateway: self.gateway.to_string(),
            rps: self.rps,
            duration: if self.forever { None } else { self.duration },
            mix: self.mix.clone(),
            users: self.users.clone(),
            card: self.card.clone(),
            decline_share: self.decline_share,
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
            lag_threshold: self.lag_threshold,
            progress: match (self.no_progress, self.json) {
                (true, _) => Progress::Off,
                (false, false) => Progress::Stdout,
                (false, true) => Progress::Stderr,
            },
        }
    }
}

/// Runs `tracelab load` until its duration ends or `stop` resolves (Ctrl-C),
/// then prints the summary.
///
/// # Errors
/// Invalid configuration, or a gateway that cannot be reached (or refuses
/// the users' logins) before the first request.
pub async fn command(args: LoadArgs, stop: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let config = args.config();
    if !args.json {
        let length = match config.duration {
            Some(d) => format!("for {}", duration::format(d)),
            None => "until Ctrl-C".to_string(),
        };
        println!(
            "load: {} req/s {length} against {} (mix {}); Ctrl-C stops and prints the summary",
            fmt_rate(config.rps),
            config.gateway.trim_end_matches('/'),
            config.mix
        );
    }
    if let Some(limit) = open_files_limit() {
        // Each request in flight holds a socket; running out of descriptors
        // would show up as connect errors that are the generator's fault.
        if (config.max_in_flight as u64).saturating_add(64) > limit {
            eprintln!(
                "warning: --max-in-flight {} is close to the open files limit ({limit}); \
                 raise it (ulimit -n) or lower --max-in-flight",
                config.max_in_flight
            );
        }
    }
    let summary = run_until(config, stop).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_rps(s: &str) -> Result<f64, String> {
    let rps: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of requests per second, got {s:?}"))?;
    if !rps.is_finite() || rps <= 0.0 {
        return Err(format!("must be greater than 0, got {s}"));
    }
    if rps > 1_000_000.0 {
        return Err(format!("at most 1000000 requests per second, got {s}"));
    }
    Ok(rps)
}

fn parse_share(s: &str) -> Result<f64, String> {
    let share: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a share between 0 and 1, got {s:?}"))?;
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("expected a share between 0 and 1, got {s}"));
    }
    Ok(share)
}

fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got {s:?}")),
    }
}

/// Parses `NAME` or `NAME:PASSWORD` (password defaults to `NAME-password`).
///
/// # Errors
/// When the name is empty.
pub fn parse_user(s: &str) -> Result<User, String> {
    let (name, password) = match s.split_once(':') {
        Some((n, p)) => (n.trim(), p.to_string()),
        None => (s.trim(), format!("{}-password", s.trim())),
    };
    if name.is_empty() {
        return Err(format!("expected NAME or NAME:PASSWORD, got {s:?}"));
    }
    Ok(User {
        name: name.to_string(),
        password,
    })
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A route of the gateway the generator can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `POST /api/login`
    Login,
    /// `GET /api/products?q=`
    Search,
    /// `POST /api/checkout`
    Checkout,
    /// `GET /api/orders/{id}` of an order created by an earlier checkout.
    Order,
}

impl Route {
    /// Every route, in the order of the summary table.
    pub const ALL: [Route; 4] = [Route::Login, Route::Search, Route::Checkout, Route::Order];

    /// The name used in `--mix` and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Search => "search",
            Route::Checkout => "checkout",
            Route::Order => "order",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of the routes, e.g. `checkout=1,search=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    /// The weight of `route` (0 = never sent).
    pub fn weight(&self, route: Route) -> u32 {
        self.weights[route.index()]
    }

    /// Routes with a weight above 0, in table order.
    pub fn routes(&self) -> Vec<Route> {
        Route::ALL
            .into_iter()
            .filter(|r| self.weight(*r) > 0)
            .collect()
    }

    /// A mix of only these routes, each with its weight.
    ///
    /// # Panics
    /// When every weight is 0 (use [`parse_mix`] for untrusted input).
    pub fn of(weights: &[(Route, u32)]) -> Mix {
        let mut mix = Mix { weights: [0; 4] };
        for (r, w) in weights {
            mix.weights[r.index()] = *w;
        }
        assert!(mix.weights.iter().any(|w| *w > 0), "a mix needs a route");
        mix
    }

    fn needs_token(&self) -> bool {
        self.weight(Route::Checkout) > 0 || self.weight(Route::Order) > 0
    }
}

impl Default for Mix {
    fn default() -> Mix {
        parse_mix(DEFAULT_MIX).expect("the default mix parses")
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Route::ALL
            .iter()
            .filter(|r| self.weight(**r) > 0)
            .map(|r| format!("{}={}", r.name(), self.weight(*r)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `checkout=1,search=5,login=1,order=0`.
///
/// # Errors
/// On a part without `=`, an unknown route, a weight that is not a whole
/// number (0..=1000000), a route given twice, or when every weight is 0.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut weights = [0u32; 4];
    let mut seen = [false; 4];
    let names = "login, search, checkout, order";
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, weight)) = part.split_once('=') else {
            return Err(format!(
                "expected ROUTE=WEIGHT, got {part:?} (e.g. search=5)"
            ));
        };
        let name = name.trim();
        let route = Route::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown route {name:?} (routes: {names})"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| *w <= 1_000_000)
            .ok_or_else(|| {
                format!("bad weight {weight:?} for {name} (a whole number 0..=1000000)")
            })?;
        if std::mem::replace(&mut seen[route.index()], true) {
            return Err(format!("route {name} given twice"));
        }
        weights[route.index()] = weight;
    }
    if weights.iter().all(|w| *w == 0) {
        return Err(format!(
            "no route with a weight above 0 in {s:?} (routes: {names})"
        ));
    }
    Ok(Mix { weights })
}

/// A demo user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password.
    pub password: String,
}

impl User {
    /// A demo user whose password is `NAME-password`.
    pub fn demo(name: &str) -> User {
        User {
            name: name.to_string(),
            password: format!("{name}-password"),
        }
    }
}

/// Where the progress line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No progress output.
    Off,
    /// On stdout: refreshed in place on a terminal, a line every 5 s otherwise.
    Stdout,
    /// The same on stderr (keeps stdout clean for `--json`).
    Stderr,
}

/// What to send, how fast, for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Gateway base URL.
    pub gateway: String,
    /// Requests per second (> 0).
    pub rps: f64,
    /// How long to send; `None` until the stop future resolves.
    pub duration: Option<Duration>,
    /// Route weights.
    pub mix: Mix,
    /// Users for login, checkout and order, round robin.
    pub users: Vec<User>,
    /// Card of the checkouts.
    pub card: String,
    /// Share of checkouts sent with [`DECLINE_CARD`] (0..=1).
    pub decline_share: f64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Most requests in flight before slots are dropped.
    pub max_in_flight: usize,
    /// Lateness from which a send counts as behind schedule.
    pub lag_threshold: Duration,
    /// Progress output.
    pub progress: Progress,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            gateway: "http://127.0.0.1:8080".to_string(),
            rps: 10.0,
            duration: Some(Duration::from_secs(10)),
            mix: Mix::default(),
            users: ["alice", "bob", "carol"].map(User::demo).to_vec(),
            card: "4242424242424242".to_string(),
            decline_share: 0.0,
            timeout: Duration::from_secs(10),
            max_in_flight: 2000,
            lag_threshold: Duration::from_millis(5),
            progress: Progress::Off,
        }
    }
}

impl LoadConfig {
    fn validate(&self) -> anyhow::Result<Url> {
        if !(self.rps.is_finite() && self.rps > 0.0) {
            bail!("rps must be greater than 0 (got {})", self.rps);
        }
        if self.duration == Some(Duration::ZERO) {
            bail!("duration must be greater than 0");
        }
        if !(0.0..=1.0).contains(&self.decline_share) {
            bail!(
                "decline share must be between 0 and 1 (got {})",
                self.decline_share
            );
        }
        if self.max_in_flight == 0 {
            bail!("max in flight must be at least 1");
        }
        if self.timeout.is_zero() {
            bail!("timeout must be greater than 0");
        }
        if self.users.is_empty() && (self.mix.needs_token() || self.mix.weight(Route::Login) > 0) {
            bail!("no users given (checkout, order and login need one)");
        }
        let url = Url::parse(&self.gateway)
            .with_context(|| format!("bad gateway URL {:?}", self.gateway))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("bad gateway URL {:?}: not http(s)", self.gateway);
        }
        Ok(url)
    }
}

// ---------------------------------------------------------------------------
// Schedule and route choice (pure, unit tested)
// ---------------------------------------------------------------------------

/// When the `i`-th request (from 0) is due, as an offset from the start:
/// `i / rps`, computed from `i` directly so that rounding never accumulates
/// (exact to the nanosecond for a whole-number rate).
pub fn send_offset(i: u64, rps: f64) -> Duration {
    if rps.fract() == 0.0 && rps >= 1.0 {
        let nanos = u128::from(i) * 1_000_000_000 / rps as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    } else {
        Duration::from_secs_f64(i as f64 / rps)
    }
}

/// How many requests are due in `[0, duration)`: the first `i` with
/// `send_offset(i) >= duration`.
pub fn slots_within(duration: Duration, rps: f64) -> u64 {
    let mut n = (duration.as_secs_f64() * rps).ceil() as u64;
    while n > 0 && send_offset(n - 1, rps) >= duration {
        n -= 1;
    }
    while send_offset(n, rps) < duration {
        n += 1;
    }
    n
}

/// Picks routes by smooth weighted round robin: over any run of
/// `sum(weights)` picks each route comes up exactly `weight` times, spread
/// out rather than in bursts, and the same way on every run.
#[derive(Debug, Clone)]
pub struct RoutePicker {
    weights: [i64; 4],
    current: [i64; 4],
    total: i64,
}

impl RoutePicker {
    /// A picker for `mix`.
    pub fn new(mix: &Mix) -> RoutePicker {
        let weights = mix.weights.map(i64::from);
        RoutePicker {
            weights,
            current: [0; 4],
            total: weights.iter().sum(),
        }
    }

    /// The next route.
    pub fn next_route(&mut self) -> Route {
        let mut best = 0;
        for i in 0..4 {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        Route::ALL[best]
    }
}

/// Whether the `n`-th checkout (from 0) uses the declining card, for a share
/// given in parts per million: exactly `floor(n * share)` of the first `n`
/// checkouts decline, evenly spread.
pub fn declines(n: u64, share_ppm: u64) -> bool {
    let n = u128::from(n);
    let ppm = u128::from(share_ppm);
    (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
}

/// A well-mixed 64-bit hash (splitmix64), for picking search terms.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Below this every value has its own bucket.
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (63 - SUB_BITS as u64) * SUB) as usize;

/// A log-linear histogram of `u64` values (the generator records
/// microseconds): exact below 256, then 128 buckets per power of two, so a
/// reported value is at most 1/128 (0.8 %) above the true one. Fixed size
/// (about 58 KiB), constant-time record, mergeable.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    fn bucket(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let sub = (v >> (exp - SUB_BITS)) - SUB; // the 7 bits under the top one
        (LINEAR + u64::from(exp - SUB_BITS - 1) * SUB + sub) as usize
    }

    /// The largest value that lands in bucket `b`.
    fn bucket_high(b: usize) -> u64 {
        let b = b as u64;
        if b < LINEAR {
            return b;
        }
        let k = b - LINEAR;
        let shift = k / SUB + 1; // exp - SUB_BITS
        let low = (SUB + k % SUB) << shift;
        low + ((1u64 << shift) - 1)
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Largest value (exact); 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value (exact); 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// Mean (exact); 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value `v`
    /// with at least `q` of the values `<= v`, overestimated by at most
    /// 1/128 and never above the maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_high(b).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

/// Latency percentiles in milliseconds, measured from the scheduled send
/// instant to the end of the response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn from_micros(h: &Histogram) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.quantile(0.50)),
            p90_ms: ms(h.quantile(0.90)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One row of the summary: a route, or the total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteSummary {
    /// Route name, or `total`.
    pub route: String,
    /// Slots of the schedule given to this route.
    pub scheduled: u64,
    /// Requests actually sent.
    pub sent: u64,
    /// Slots not sent because `max_in_flight` requests were in flight.
    pub dropped: u64,
    /// Slots not sent for lack of a target (`order` before any checkout).
    pub skipped: u64,
    /// Requests answered (or failed) before the end: ok + errors + declined.
    pub count: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else, except the expected declines.
    pub errors: u64,
    /// 402 answers to checkouts sent with the declining card on purpose.
    pub declined: u64,
    /// errors / count (0 when nothing was answered).
    pub error_rate: f64,
    /// Errors by HTTP status (`"500"`) or failure (`timeout`, `connect`, `io`, `body`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency of every answered request (ok, errors and declines).
    pub latency: Latency,
    /// sent / elapsed.
    pub achieved_rps: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Gateway base URL.
    pub gateway: String,
    /// The mix, as `--mix` takes it.
    pub mix: String,
    /// Requested rate.
    pub target_rps: f64,
    /// Requested duration; `None` for `--forever`.
    pub duration_s: Option<f64>,
    /// Sending window: from the start to the last send (at least the
    /// requested duration), or to the interruption.
    pub elapsed_s: f64,
    /// Whether the run was stopped early (Ctrl-C).
    pub interrupted: bool,
    /// Slots of the schedule that came due.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Slots dropped because `max_in_flight` requests were in flight.
    pub dropped_by_generator: u64,
    /// Slots skipped for lack of a target (`order` with no order yet).
    pub skipped: u64,
    /// Requests still in flight when the run ended (after the drain).
    pub unfinished: u64,
    /// sent / elapsed.
    pub achieved_rps: f64,
    /// Sends later than `lag_threshold_ms` after their scheduled instant.
    pub behind_schedule: u64,
    /// Largest lateness of a send.
    pub max_lag_ms: f64,
    /// The threshold for `behind_schedule`.
    pub lag_threshold_ms: f64,
    /// Most requests in flight at once.
    pub peak_in_flight: u64,
    /// The `max_in_flight` limit.
    pub max_in_flight: u64,
    /// Logins redone after a 401.
    pub token_refreshes: u64,
    /// One row per route of the mix.
    pub routes: Vec<RouteSummary>,
    /// All routes together.
    pub total: RouteSummary,
}

impl Summary {
    /// The row of `route`, if it was in the mix.
    pub fn route(&self, route: Route) -> Option<&RouteSummary> {
        self.routes.iter().find(|r| r.route == route.name())
    }

    /// The generator could not keep its schedule (late sends or drops).
    pub fn fell_behind(&self) -> bool {
        self.behind_schedule > 0 || self.dropped_by_generator > 0
    }

    /// The human summary: a table per route, the schedule figures, the
    /// errors by kind, and a warning when the generator fell behind.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} {:.1}s against {} at {} req/s (mix {})",
            if self.interrupted {
                "interrupted after"
            } else {
                "ran"
            },
            self.elapsed_s,
            self.gateway.trim_end_matches('/'),
            fmt_rate(self.target_rps),
            self.mix
        );
        let _ = writeln!(
            out,
            "\n{:<9} {:>8} {:>8} {:>7} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "route",
            "count",
            "ok",
            "errors",
            "declined",
            "err%",
            "p50",
            "p90",
            "p99",
            "max",
            "req/s"
        );
        for row in self.routes.iter().chain(std::iter::once(&self.total)) {
            let _ = writeln!(
                out,
                "{:<9} {:>8} {:>8} {:>7} {:>8} {:>6.2}% {:>9} {:>9} {:>9} {:>9} {:>8}",
                row.route,
                row.count,
                row.ok,
                row.errors,
                row.declined,
                row.error_rate * 100.0,
                fmt_ms(row.latency.p50_ms, row.count),
                fmt_ms(row.latency.p90_ms, row.count),
                fmt_ms(row.latency.p99_ms, row.count),
                fmt_ms(row.latency.max_ms, row.count),
                fmt_rate(row.achieved_rps),
            );
        }
        let _ = writeln!(
            out,
            "\nscheduled {}, sent {} ({} req/s achieved of {} asked), \
             dropped by generator {}, skipped {}, unfinished {}",
            self.scheduled,
            self.sent,
            fmt_rate(self.achieved_rps),
            fmt_rate(self.target_rps),
            self.dropped_by_generator,
            self.skipped,
            self.unfinished
        );
        let _ = writeln!(
            out,
            "behind schedule {} (sent > {} late), max lag {}; peak in flight {} (limit {})",
            self.behind_schedule,
            fmt_ms(self.lag_threshold_ms, 1),
            fmt_ms(self.max_lag_ms, 1),
            self.peak_in_flight,
            self.max_in_flight
        );
        if self.token_refreshes > 0 {
            let _ = writeln!(out, "token refreshes after 401: {}", self.token_refreshes);
        }
        let errors: Vec<String> = self
            .routes
            .iter()
            .flat_map(|r| {
                r.errors_by_kind
                    .iter()
                    .map(move |(k, n)| format!("{} {k} ×{n}", r.route))
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "errors: {}", errors.join(", "));
        }
        if let Some(order) = self.route(Route::Order)
            && order.skipped > 0
        {
            let _ = writeln!(
                out,
                "order: {} slots skipped (no order created yet to look up)",
                order.skipped
            );
        }
        if self.fell_behind() {
            let _ = writeln!(
                out,
                "warning: the generator fell behind its schedule: {} sends more than {} late \
                 (max lag {}), {} dropped at --max-in-flight {}. The offered load was lower \
                 or burstier than asked; latencies include the lag.",
                self.behind_schedule,
                fmt_ms(self.lag_threshold_ms, 1),
                fmt_ms(self.max_lag_ms, 1),
                self.dropped_by_generator,
                self.max_in_flight
            );
        }
        out
    }
}

fn fmt_ms(ms: f64, count: u64) -> String {
    if count == 0 {
        "-".to_string()
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn fmt_rate(r: f64) -> String {
    if r.fract() == 0.0 && r < 1e12 {
        format!("{r:.0}")
    } else if r >= 100.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

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

/// Why a login failed.
enum LoginError {
    Unreachable(reqwest::Error),
    Refused(StatusCode, String),
    NoToken,
}

impl LoginError {
    fn kind(&self) -> String {
        match self {
            LoginError::Unreachable(e) => transport_kind(e).to_string(),
            LoginError::Refused(status, _) => status.as_u16().to_string(),
            LoginError::NoToken => "body".to_string(),
        }
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "io"
    }
}

async fn login(client: &reqwest::Client, url: &Url, user: &User) -> Result<String, LoginError> {
    let resp = client
        .post(url.clone())
        .json(&json!({"username": user.name, "password": user.password}))
        .send()
        .await
        .map_err(LoginError::Unreachable)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(LoginError::Unreachable)?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(LoginError::Refused(status, text));
    }
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_string))
        .ok_or(LoginError::NoToken)
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
        let token: Arc<str> = login(&self.client, &self.urls.login, &self.users[user])
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
    let base = config.validate()?;
    let join = |path: &str| -> anyhow::Result<Url> {
        Url::parse(&format!("{}{path}", base.as_str().trim_end_matches('/')))
            .with_context(|| format!("bad gateway URL {:?}", config.gateway))
    };
    let mut searches = Vec::new();
    for term in SEARCH_TERMS {
        let mut url = join("/api/products")?;
        url.query_pairs_mut().append_pair("q", term);
        searches.push(url);
    }
    let urls = Urls {
        login: join("/api/login")?,
        checkout: join("/api/checkout")?,
        orders: join("/api/orders/")?.to_string(),
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
    let progress = spawn_progress(&config, &shared, t0);
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
    Ok(summarize(
        &config,
        &shared,
        &slots,
        elapsed,
        interrupted,
        max_lag,
    ))
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
        let (client, url, user) = (client.clone(), urls.login.clone(), u.clone());
        async move { login(&client, &url, &user).await }
    });
    let results = futures_join_all(logins).await;
    let mut tokens = Vec::new();
    for (user, result) in config.users.iter().zip(results) {
        match result {
            Ok(token) => tokens.push(token),
            Err(LoginError::Unreachable(e)) => return Err(unreachable(&e)),
            Err(LoginError::Refused(status, body)) => bail!(
                "cannot log in as {:?} at {}: {status} {body}",
                user.name,
                urls.login
            ),
            Err(LoginError::NoToken) => bail!(
                "logging in as {:?} at {}: the answer has no \"token\"",
                user.name,
                urls.login
            ),
        }
    }
    Ok(tokens)
}

/// Awaits every future concurrently, results in order (a few logins; not
/// worth a dependency).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, f) in futures.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out: Vec<Option<F::Output>> = Vec::new();
    out.resize_with(set.len(), || None);
    while let Some(Ok((i, v))) = set.join_next().await {
        out[i] = Some(v);
    }
    out.into_iter().flatten().collect()
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

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

// ---------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------

fn progress_is_terminal(p: Progress) -> bool {
    match p {
        Progress::Off => false,
        Progress::Stdout => std::io::stdout().is_terminal(),
        Progress::Stderr => std::io::stderr().is_terminal(),
    }
}

fn write_progress(p: Progress, text: &str) {
    let _ = match p {
        Progress::Off => Ok(()),
        Progress::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Progress::Stderr => {
            let mut out = std::io::stderr().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
    };
}

fn clear_progress(p: Progress) {
    if progress_is_terminal(p) {
        write_progress(p, "\r\x1b[K");
    }
}

/// The progress line: elapsed, sent, achieved rate, in flight, errors, p99.
fn progress_line(
    elapsed: Duration,
    sent: u64,
    in_flight: u64,
    errors: u64,
    count: u64,
    p99_ms: f64,
    behind: u64,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut line = format!(
        "{:>6.1}s  sent {sent}  {} req/s  in flight {in_flight}  errors {errors} ({:.2}%)  p99 {}",
        elapsed.as_secs_f64(),
        fmt_rate((sent as f64 / secs * 10.0).round() / 10.0),
        rate(errors, count) * 100.0,
        fmt_ms(p99_ms, count),
    );
    if behind > 0 {
        let _ = write!(line, "  behind schedule {behind}");
    }
    line
}

fn spawn_progress(
    config: &LoadConfig,
    shared: &Arc<Shared>,
    t0: Instant,
) -> Option<tokio::task::JoinHandle<()>> {
    let sink = config.progress;
    if sink == Progress::Off {
        return None;
    }
    let in_place = progress_is_terminal(sink);
    let every = if in_place {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let shared = shared.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(t0 + every, every);
        loop {
            tick.tick().await;
            let mut hist = Histogram::new();
            let (mut errors, mut count) = (0, 0);
            for stats in &shared.stats {
                let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
                hist.merge(&stats.latency_us);
                errors += stats.errors;
                count += stats.count();
            }
            let line = progress_line(
                t0.elapsed(),
                shared.sent.load(Ordering::Relaxed),
                shared.in_flight.load(Ordering::Relaxed),
                errors,
                count,
                hist.quantile(0.99) as f64 / 1000.0,
                shared.behind.load(Ordering::Relaxed),
            );
            if in_place {
                write_progress(sink, &format!("\r{line}\x1b[K"));
            } else {
                write_progress(sink, &format!("{line}\n"));
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_offsets_follow_the_rate_without_drift() {
        assert_eq!(send_offset(0, 2000.0), Duration::ZERO);
        assert_eq!(send_offset(1, 2000.0), Duration::from_micros(500));
        assert_eq!(send_offset(2000, 2000.0), Duration::from_secs(1));
        // 1/3 s is not a whole number of nanoseconds, yet the 3rd, the
        // 3000th and the 3 millionth sends land exactly on whole seconds.
        assert_eq!(send_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(send_offset(3, 3.0), Duration::from_secs(1));
        assert_eq!(send_offset(3_000_000, 3.0), Duration::from_secs(1_000_000));
        // Fractional rates.
        assert_eq!(send_offset(1, 0.5), Duration::from_secs(2));
        assert_eq!(send_offset(5, 2.5), Duration::from_secs(2));
        let d = send_offset(1_000_001, 7.5).as_secs_f64();
        assert!((d - 1_000_001.0 / 7.5).abs() < 1e-6, "{d}");
    }

    #[test]
    fn slots_in_a_duration() {
        assert_eq!(slots_within(Duration::from_secs(2), 200.0), 400);
        assert_eq!(slots_within(Duration::from_secs(1), 3.0), 3);
        assert_eq!(slots_within(Duration::from_secs(1), 2.5), 3); // 0, .4, .8
        assert_eq!(slots_within(Duration::from_millis(1), 2000.0), 2);
        assert_eq!(slots_within(Duration::from_millis(1001), 1.0), 2);
        assert_eq!(slots_within(Duration::from_nanos(1), 1.0), 1);
        for (d, rps) in [(10_000, 2000.0), (1500, 7.0), (333, 3.3)] {
            let d = Duration::from_millis(d);
            let n = slots_within(d, rps);
            assert!(send_offset(n - 1, rps) < d && send_offset(n, rps) >= d);
        }
    }

    #[test]
    fn mix_parsing() {
        let mix = parse_mix("checkout=1, search=5,login=1,order=0").unwrap();
        assert_eq!(mix.weight(Route::Checkout), 1);
        assert_eq!(mix.weight(Route::Search), 5);
        assert_eq!(mix.weight(Route::Order), 0);
        assert_eq!(
            mix.routes(),
            vec![Route::Login, Route::Search, Route::Checkout]
        );
        assert_eq!(mix.to_string(), "login=1,search=5,checkout=1");
        assert_eq!(parse_mix(&mix.to_string()).unwrap(), mix);
        assert_eq!(parse_mix("Search=2").unwrap().routes(), vec![Route::Search]);
        assert_eq!(Mix::default(), mix);

        let err = |s: &str| parse_mix(s).unwrap_err();
        assert!(
            err("search").contains("expected ROUTE=WEIGHT"),
            "{}",
            err("search")
        );
        assert!(err("payments=1").contains("unknown route \"payments\""));
        assert!(err("payments=1").contains("login, search, checkout, order"));
        assert!(err("search=-1").contains("bad weight"));
        assert!(err("search=1.5").contains("bad weight"));
        assert!(err("search=1,search=2").contains("twice"));
        assert!(err("search=0,login=0").contains("no route"));
        assert!(err("").contains("no route"));
    }

    #[test]
    fn picker_follows_the_weights_exactly_and_spreads_them() {
        let mix = parse_mix("checkout=1,search=5,login=1").unwrap();
        let mut p = RoutePicker::new(&mix);
        let picks: Vec<Route> = (0..700).map(|_| p.next_route()).collect();
        for window in picks.chunks(7) {
            let n = |r: Route| window.iter().filter(|x| **x == r).count();
            assert_eq!(
                (n(Route::Login), n(Route::Search), n(Route::Checkout)),
                (1, 5, 1)
            );
        }
        // Spread: the two rare routes never come back to back.
        assert!(
            picks
                .windows(2)
                .all(|w| w[0] == Route::Search || w[0] != w[1]),
            "{picks:?}"
        );
        let only = RoutePicker::new(&parse_mix("order=3").unwrap()).next_route();
        assert_eq!(only, Route::Order);
    }

    #[test]
    fn declines_hit_the_share_exactly() {
        let count = |ppm: u64, n: u64| (0..n).filter(|i| declines(*i, ppm)).count();
        assert_eq!(count(50_000, 1000), 50);
        assert_eq!(count(50_000, 19), 0);
        assert_eq!(count(50_000, 20), 1);
        assert_eq!(count(0, 10_000), 0);
        assert_eq!(count(1_000_000, 100), 100);
        assert_eq!(count(333_333, 300), 99);
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("alice"), Ok(User::demo("alice")));
        let u = parse_user("dave:secret:x").unwrap();
        assert_eq!((u.name.as_str(), u.password.as_str()), ("dave", "secret:x"));
        assert!(parse_user(":pw").is_err());
    }

    #[test]
    fn histogram_buckets_bound_the_error() {
        // Every value lands in a bucket whose reported value is >= it and at
        // most 1/128 above it; buckets are contiguous.
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((0..64).flat_map(|s| {
            let p = 1u64 << s;
            [p.saturating_sub(1), p, p.saturating_add(1), p / 3 * 2]
        }));
        values.push(u64::MAX);
        for v in values {
            let b = Histogram::bucket(v);
            assert!(b < BUCKETS, "{v}");
            let high = Histogram::bucket_high(b);
            assert!(high >= v, "{v} -> {high}");
            assert!((high - v) as f64 <= v as f64 / 128.0, "{v} -> {high}");
            if b > 0 {
                assert_eq!(Histogram::bucket(Histogram::bucket_high(b - 1) + 1), b);
            }
        }
        assert_eq!(Histogram::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histogram_percentiles_of_known_distributions() {
        // Uniform 1..=100_000: the q-quantile is q * 100_000.
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        assert_eq!(h.len(), 100_000);
        for (q, want) in [
            (0.5, 50_000.0),
            (0.9, 90_000.0),
            (0.99, 99_000.0),
            (0.999, 99_900.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!(got >= want && got <= want * 1.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.min(), 1);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);

        // A bimodal one: 90 % at 1 ms, 10 % at 500 ms (in microseconds).
        let mut h = Histogram::new();
        for i in 0..1000 {
            h.record(if i % 10 == 0 { 500_000 } else { 1_000 });
        }
        let p50 = h.quantile(0.5);
        assert!((1_000..=1_008).contains(&p50), "{p50}");
        assert!((1_000..=1_008).contains(&h.quantile(0.9)));
        assert_eq!(h.quantile(0.91), 500_000); // clamped to the max
        assert_eq!(h.quantile(0.99), 500_000);

        // Small values are exact; merging adds.
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 0..100 {
            a.record(v);
            b.record(v + 100);
        }
        a.merge(&b);
        assert_eq!(a.len(), 200);
        assert_eq!(a.quantile(0.5), 99);
        assert_eq!(a.quantile(0.995), 198); // rank 199 of 200
        assert_eq!(a.quantile(1.0), 199);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }

    fn sample_summary() -> Summary {
        let mut by_kind = BTreeMap::new();
        by_kind.insert("500".to_string(), 3);
        by_kind.insert("timeout".to_string(), 1);
        let checkout = RouteSummary {
            route: "checkout".into(),
            scheduled: 100,
            sent: 100,
            count: 100,
            ok: 90,
            errors: 4,
            declined: 6,
            error_rate: 0.04,
            errors_by_kind: by_kind,
            latency: Latency {
                p50_ms: 12.34,
                p90_ms: 56.7,
                p99_ms: 250.0,
                max_ms: 1234.5,
                mean_ms: 20.0,
            },
            achieved_rps: 10.0,
            ..RouteSummary::default()
        };
        let order = RouteSummary {
            route: "order".into(),
            scheduled: 5,
            skipped: 5,
            ..RouteSummary::default()
        };
        Summary {
            gateway: "http://127.0.0.1:8080/".into(),
            mix: "checkout=1".into(),
            target_rps: 10.0,
            duration_s: Some(10.0),
            elapsed_s: 10.0,
            scheduled: 105,
            sent: 100,
            skipped: 5,
            achieved_rps: 10.0,
            lag_threshold_ms: 5.0,
            max_lag_ms: 1.25,
            max_in_flight: 2000,
            peak_in_flight: 7,
            total: RouteSummary {
                route: "total".into(),
                ..checkout.clone()
            },
            routes: vec![checkout, order],
            ..Summary::default()
        }
    }

    #[test]
    fn summary_renders_a_table() {
        let s = sample_summary();
        let text = s.render();
        let row = text
            .lines()
            .find(|l| l.starts_with("checkout"))
            .expect(&text);
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "checkout", "100", "90", "4", "6", "4.00%", "12.3ms", "56.7ms", "250ms", "1234ms",
                "10"
            ],
            "{text}"
        );
        let order = text.lines().find(|l| l.starts_with("order ")).expect(&text);
        assert!(order.contains(" - "), "no latency without answers: {order}");
        assert!(text.lines().any(|l| l.starts_with("total")), "{text}");
        assert!(
            text.contains("against http://127.0.0.1:8080 at 10 req/s"),
            "{text}"
        );
        assert!(text.contains("scheduled 105, sent 100"), "{text}");
        assert!(text.contains("dropped by generator 0, skipped 5"), "{text}");
        assert!(
            text.contains("behind schedule 0 (sent > 5.00ms late), max lag 1.25ms"),
            "{text}"
        );
        assert!(
            text.contains("errors: checkout 500 ×3, checkout timeout ×1"),
            "{text}"
        );
        assert!(text.contains("order: 5 slots skipped"), "{text}");
        assert!(!text.contains("warning"), "{text}");
        assert!(text.starts_with("\nran 10.0s"), "{text}");
    }

    #[test]
    fn summary_warns_when_the_generator_fell_behind() {
        let mut s = sample_summary();
        s.behind_schedule = 12;
        s.max_lag_ms = 340.0;
        s.interrupted = true;
        let text = s.render();
        assert!(text.starts_with("\ninterrupted after"), "{text}");
        assert!(
            text.contains("warning: the generator fell behind its schedule: 12 sends more than 5.00ms late (max lag 340ms), 0 dropped"),
            "{text}"
        );
        let mut s = sample_summary();
        s.dropped_by_generator = 3;
        assert!(s.render().contains("3 dropped at --max-in-flight 2000"));
    }

    #[test]
    fn summary_json_round_trips() {
        let s = sample_summary();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["routes"][0]["route"], "checkout");
        assert_eq!(v["routes"][0]["latency"]["p99_ms"], 250.0);
        assert_eq!(v["routes"][0]["errors_by_kind"]["500"], 3);
        assert_eq!(v["dropped_by_generator"], 0);
        assert_eq!(v["behind_schedule"], 0);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn progress_line_shows_the_figures() {
        let line = progress_line(Duration::from_secs(12), 2400, 3, 6, 2397, 4.126, 0);
        assert_eq!(
            line,
            "  12.0s  sent 2400  200 req/s  in flight 3  errors 6 (0.25%)  p99 4.13ms"
        );
        let line = progress_line(Duration::from_secs(1), 10, 0, 0, 0, 0.0, 2);
        assert!(line.ends_with("p99 -  behind schedule 2"), "{line}");
    }

    #[test]
    fn config_validation() {
        let ok = LoadConfig::default();
        assert!(ok.validate().is_ok());
        let bad = |c: LoadConfig| c.validate().unwrap_err().to_string();
        assert!(
            bad(LoadConfig {
                rps: 0.0,
                ..LoadConfig::default()
            })
            .contains("rps")
        );
        assert!(
            bad(LoadConfig {
                rps: f64::NAN,
                ..LoadConfig::default()
            })
            .contains("rps")
        );
        assert!(
            bad(LoadConfig {
                gateway: "ftp://x".into(),
                ..LoadConfig::default()
            })
            .contains("not http")
        );
        assert!(
            bad(LoadConfig {
                gateway: "nope".into(),
                ..LoadConfig::default()
            })
            .contains("bad gateway URL")
        );
        assert!(
            bad(LoadConfig {
                users: vec![],
                ..LoadConfig::default()
            })
            .contains("no users")
        );
        assert!(
            bad(LoadConfig {
                decline_share: 1.5,
                ..LoadConfig::default()
            })
            .contains("decline")
        );
        assert!(
            bad(LoadConfig {
                duration: Some(Duration::ZERO),
                ..LoadConfig::default()
            })
            .contains("duration")
        );
        assert!(
            bad(LoadConfig {
                max_in_flight: 0,
                ..LoadConfig::default()
            })
            .contains("in flight")
        );
    }
}
