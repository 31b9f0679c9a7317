//! The load generator against a small in-process fake gateway (axum, port
//! 0): the schedule holds whatever the server does (open loop), latency
//! counts from the scheduled instant, errors, declines and token refreshes
//! are accounted. Then `tracelab load`, the console's client, against a
//! console in this process whose gateway is the fake: it starts, follows
//! and stops the console's load, and bad input ends with a readable message.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use std::path::PathBuf;

use tracelab::console::{ConsoleConfig, ConsoleState, Mode, RunningConsole};
use tracelab::load::{self, LoadConfig, Mix, Route, Summary, User};
use tracelab::scenario::Catalog;

/// The fake gateway's knobs and what it saw.
#[derive(Default)]
struct Fake {
    /// Added to every search answer.
    delay: Mutex<Duration>,
    /// Status of the search answers (0 = 200).
    search_status: AtomicU16,
    /// When each search arrived.
    search_arrivals: Mutex<Vec<Instant>>,
    logins: AtomicU64,
    /// Valid token -> user.
    tokens: Mutex<HashMap<String, String>>,
    /// Idempotency keys seen, and how many came twice.
    keys: Mutex<HashSet<String>>,
    duplicate_keys: AtomicU64,
    /// Order id -> user.
    orders: Mutex<HashMap<String, String>>,
    /// Order lookups for an order of another user.
    foreign_lookups: AtomicU64,
}

type S = State<Arc<Fake>>;

fn user_of(fake: &Fake, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    fake.tokens.lock().unwrap().get(token).cloned()
}

async fn login(State(fake): S, axum::Json(body): axum::Json<Value>) -> Response {
    let n = fake.logins.fetch_add(1, Ordering::SeqCst);
    let user = body["username"].as_str().unwrap_or_default().to_string();
    if body["password"].as_str() != Some(&format!("{user}-password")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "bad password"})),
        )
            .into_response();
    }
    let token = format!("token-{user}-{n}");
    fake.tokens.lock().unwrap().insert(token.clone(), user);
    axum::Json(json!({ "token": token })).into_response()
}

async fn products(State(fake): S) -> Response {
    fake.search_arrivals.lock().unwrap().push(Instant::now());
    let delay = *fake.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let status = match fake.search_status.load(Ordering::SeqCst) {
        0 => StatusCode::OK,
        s => StatusCode::from_u16(s).unwrap(),
    };
    (status, axum::Json(json!({"products": []}))).into_response()
}

async fn checkout(
    State(fake): S,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Some(user) = user_of(&fake, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if !fake.keys.lock().unwrap().insert(key.to_string()) {
        fake.duplicate_keys.fetch_add(1, Ordering::SeqCst);
    }
    if body["card"] == load::DECLINE_CARD {
        return (
            StatusCode::PAYMENT_REQUIRED,
            axum::Json(json!({"error": "declined"})),
        )
            .into_response();
    }
    let id = format!("order-{}", fake.keys.lock().unwrap().len());
    fake.orders.lock().unwrap().insert(id.clone(), user);
    axum::Json(json!({"order_id": id, "status": "completed"})).into_response()
}

async fn order(State(fake): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(user) = user_of(&fake, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match fake.orders.lock().unwrap().get(&id) {
        Some(owner) if *owner == user => axum::Json(json!({"order": {"id": id}})).into_response(),
        Some(_) => {
            fake.foreign_lookups.fetch_add(1, Ordering::SeqCst);
            StatusCode::NOT_FOUND.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start(fake: Arc<Fake>) -> SocketAddr {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/login", post(login))
        .route("/api/products", get(products))
        .route("/api/checkout", post(checkout))
        .route("/api/orders/{id}", get(order))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn config(addr: SocketAddr, mix: &str, rps: f64, duration: Duration) -> LoadConfig {
    LoadConfig {
        gateway: format!("http://{addr}"),
        rps,
        duration: Some(duration),
        mix: load::parse_mix(mix).unwrap(),
        ..LoadConfig::default()
    }
}

fn row(summary: &Summary, route: Route) -> &load::RouteSummary {
    summary
        .route(route)
        .unwrap_or_else(|| panic!("no {route:?} row: {summary:#?}"))
}

/// Counts of the slots add up, for every row.
fn assert_slots_add_up(s: &Summary) {
    for r in s.routes.iter().chain([&s.total]) {
        assert_eq!(r.scheduled, r.sent + r.dropped + r.skipped, "{r:#?}");
        assert!(r.count <= r.sent, "{r:#?}");
        assert_eq!(r.count, r.ok + r.errors + r.declined, "{r:#?}");
    }
    assert_eq!(s.scheduled, s.total.scheduled);
    assert_eq!(s.sent, s.total.sent);
    assert_eq!(s.unfinished, s.sent - s.total.count);
}

/// How many of `times` fall in `[from, to)` seconds after the first.
fn arrivals_between(times: &[Instant], from: f64, to: f64) -> usize {
    let first = *times.iter().min().unwrap();
    times
        .iter()
        .map(|t| t.duration_since(first).as_secs_f64())
        .filter(|s| *s >= from && *s < to)
        .count()
}

// The schedule tests run on paused time: the generator's timers, the fake
// server's delays and the arrival instants all read the test's clock, which
// moves only when every task waits. What they assert is then exact, on a
// busy machine as on an idle one.

#[tokio::test(start_paused = true)]
async fn sends_on_schedule_and_latency_includes_the_server_delay() {
    let fake = Arc::new(Fake::default());
    *fake.delay.lock().unwrap() = Duration::from_millis(20);
    let addr = start(fake.clone()).await;

    let s = load::run(config(addr, "search=1", 200.0, Duration::from_secs(2)))
        .await
        .unwrap();

    assert_slots_add_up(&s);
    assert_eq!(s.scheduled, 400, "{s:#?}");
    assert_eq!((s.sent, s.dropped_by_generator, s.unfinished), (400, 0, 0));
    let search = row(&s, Route::Search);
    assert_eq!((search.count, search.ok, search.errors), (400, 400, 0));
    assert_eq!(fake.search_arrivals.lock().unwrap().len(), 400);
    // Latency counts from the scheduled instant, so never below the delay.
    assert!(search.latency.p50_ms >= 20.0, "{:?}", search.latency);
    assert!(search.latency.p90_ms >= search.latency.p50_ms);
    assert!(search.latency.p99_ms >= search.latency.p90_ms);
    assert!(search.latency.max_ms >= search.latency.p99_ms);
    assert_eq!(s.achieved_rps, 200.0);
    assert_eq!(s.behind_schedule, 0);
    // Sent evenly, not in a burst: one every 5 ms, half in each second.
    let arrivals = fake.search_arrivals.lock().unwrap().clone();
    assert_eq!(arrivals_between(&arrivals, 0.0, 1.0), 200);
    assert_eq!(arrivals_between(&arrivals, 1.0, 2.0), 200);
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.dedup();
    assert_eq!(gaps, [Duration::from_millis(5)]);
    assert_eq!(s.total.latency, search.latency);
}

#[tokio::test(start_paused = true)]
async fn a_server_slower_than_the_schedule_still_gets_the_scheduled_rate() {
    // Each answer takes 1 s, ten times the 100 ms between sends: a closed
    // loop would wait for answers; an open loop keeps sending on schedule
    // and lets the requests pile up in flight.
    let fake = Arc::new(Fake::default());
    *fake.delay.lock().unwrap() = Duration::from_secs(1);
    let addr = start(fake.clone()).await;

    let s = load::run(config(addr, "search=1", 100.0, Duration::from_secs(2)))
        .await
        .unwrap();

    assert_slots_add_up(&s);
    assert_eq!((s.scheduled, s.sent, s.dropped_by_generator), (200, 200, 0));
    let arrivals = fake.search_arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 200);
    // In the first second, before any answer came back, the server already
    // got its 100 requests; and as many again in the next one.
    let first = arrivals_between(&arrivals, 0.0, 1.0);
    let second = arrivals_between(&arrivals, 1.0, 2.0);
    assert_eq!((first, second), (100, 100));
    // Answers take 1 s, so the 100 sent in a second are all in flight (101
    // at the instant the first answer and the 101st send fall together).
    assert!(
        (100..=101).contains(&s.peak_in_flight),
        "peak in flight {}",
        s.peak_in_flight
    );
    let search = row(&s, Route::Search);
    assert_eq!(search.ok, 200);
    assert!(search.latency.p50_ms >= 1000.0, "{:?}", search.latency);
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_generator_reports_its_lag_and_charges_it_to_latency() {
    // The server answers at once, but the only runtime thread is blocked for
    // 300 ms in the middle of the run: the ~30 requests due meanwhile go out
    // late. They must still be sent (not skipped), be counted as behind
    // schedule, and carry the lag in their latency (measured from the
    // scheduled instant, not from when they finally left).
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let stall = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::thread::sleep(Duration::from_millis(300));
    });

    let s = load::run(config(addr, "search=1", 100.0, Duration::from_secs(1)))
        .await
        .unwrap();
    stall.await.unwrap();

    assert_slots_add_up(&s);
    assert_eq!((s.scheduled, s.sent, s.total.ok), (100, 100, 100), "{s:#?}");
    assert!(s.behind_schedule >= 20, "{s:#?}");
    assert!(s.max_lag_ms >= 250.0, "{s:#?}");
    assert!(s.total.latency.max_ms >= 250.0, "{:?}", s.total.latency);
    assert!(s.total.latency.max_ms >= s.max_lag_ms);
    assert!(
        s.render()
            .contains("warning: the generator fell behind its schedule")
    );
}

#[tokio::test(start_paused = true)]
async fn slots_over_the_in_flight_limit_are_dropped_and_reported() {
    let fake = Arc::new(Fake::default());
    *fake.delay.lock().unwrap() = Duration::from_secs(3);
    let addr = start(fake.clone()).await;

    let s = load::run(LoadConfig {
        max_in_flight: 10,
        ..config(addr, "search=1", 50.0, Duration::from_secs(1))
    })
    .await
    .unwrap();

    assert_slots_add_up(&s);
    assert_eq!(s.scheduled, 50);
    assert_eq!((s.sent, s.dropped_by_generator), (10, 40), "{s:#?}");
    assert_eq!(s.peak_in_flight, 10);
    assert!(s.fell_behind());
    let text = s.render();
    assert!(
        text.contains("40 dropped at the limit of 10 in flight"),
        "{text}"
    );
    assert_eq!(fake.search_arrivals.lock().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_counted_per_route_and_status() {
    let fake = Arc::new(Fake::default());
    fake.search_status.store(500, Ordering::SeqCst);
    let addr = start(fake.clone()).await;

    let s = load::run(config(
        addr,
        "search=1,login=1",
        100.0,
        Duration::from_secs(1),
    ))
    .await
    .unwrap();

    assert_slots_add_up(&s);
    let search = row(&s, Route::Search);
    assert_eq!((search.count, search.ok, search.errors), (50, 0, 50));
    assert_eq!(search.error_rate, 1.0);
    assert_eq!(search.errors_by_kind.get("500"), Some(&50));
    assert_eq!(search.errors_by_kind.len(), 1);
    let login = row(&s, Route::Login);
    assert_eq!((login.ok, login.errors), (50, 0));
    assert_eq!(s.total.errors, 50);
    assert_eq!(s.total.error_rate, 0.5);
    assert_eq!(s.total.errors_by_kind.get("search:500"), Some(&50));
    assert!(
        s.render().contains("errors: search 500 ×50"),
        "{}",
        s.render()
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_errors_with_their_own_kind() {
    let fake = Arc::new(Fake::default());
    *fake.delay.lock().unwrap() = Duration::from_secs(5);
    let addr = start(fake.clone()).await;

    let s = load::run(LoadConfig {
        timeout: Duration::from_millis(300),
        ..config(addr, "search=1", 20.0, Duration::from_millis(500))
    })
    .await
    .unwrap();

    let search = row(&s, Route::Search);
    assert_eq!((search.count, search.errors), (10, 10), "{s:#?}");
    assert_eq!(search.errors_by_kind.get("timeout"), Some(&10));
    assert!(search.latency.p50_ms >= 300.0, "{:?}", search.latency);
    assert!(search.latency.max_ms < 5000.0, "{:?}", search.latency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_reuses_tokens_declines_on_purpose_and_looks_orders_up() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;

    let s = load::run(LoadConfig {
        decline_share: 0.1,
        ..config(addr, "checkout=2,order=1", 90.0, Duration::from_secs(2))
    })
    .await
    .unwrap();

    assert_slots_add_up(&s);
    // One login per user up front, none per checkout.
    assert_eq!(fake.logins.load(Ordering::SeqCst), 3);
    assert_eq!(s.token_refreshes, 0);
    let checkout = row(&s, Route::Checkout);
    assert_eq!(checkout.scheduled, 120);
    assert_eq!(checkout.sent, 120);
    // Every checkout has its own idempotency key.
    assert_eq!(fake.keys.lock().unwrap().len(), 120);
    assert_eq!(fake.duplicate_keys.load(Ordering::SeqCst), 0);
    // Exactly a tenth decline, and a 402 on purpose is not an error.
    assert_eq!(
        (checkout.ok, checkout.declined, checkout.errors),
        (108, 12, 0)
    );
    assert_eq!(checkout.error_rate, 0.0);
    // Orders are looked up with the token of the user who created them.
    let order = row(&s, Route::Order);
    assert_eq!(order.scheduled, 60);
    assert!(order.ok >= 55, "{order:#?}");
    assert_eq!(order.errors, 0, "{order:#?}");
    assert_eq!(fake.foreign_lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refreshed_once_per_user() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let revoke = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            fake.tokens.lock().unwrap().clear();
        })
    };

    let s = load::run(config(
        addr,
        "checkout=1",
        60.0,
        Duration::from_millis(1500),
    ))
    .await
    .unwrap();
    revoke.await.unwrap();

    let checkout = row(&s, Route::Checkout);
    assert_eq!((checkout.ok, checkout.errors), (90, 0), "{s:#?}");
    assert_eq!(s.token_refreshes, 3);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 6);
}

/// A port nothing listens on (bound then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_gateway_is_a_readable_error() {
    let addr: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    for mix in ["search=1", "checkout=1"] {
        let err = load::run(config(addr, mix, 10.0, Duration::from_secs(1)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot reach the gateway at http://127.0.0.1:"),
            "{mix}: {err}"
        );
        assert!(err.contains("is the lab running?"), "{mix}: {err}");
    }
}

#[tokio::test]
async fn a_refused_login_is_a_readable_error() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake).await;
    let err = load::run(LoadConfig {
        users: vec![User::demo("alice"), load::parse_user("bob:wrong").unwrap()],
        ..config(addr, "checkout=1", 10.0, Duration::from_secs(1))
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot log in as \"bob\""), "{err}");
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn stop_ends_a_forever_run_with_a_summary() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let started = Instant::now();
    let s = load::run_until(
        LoadConfig {
            duration: None,
            mix: Mix::of(&[(Route::Search, 1)]),
            ..config(addr, "search=1", 100.0, Duration::from_secs(1))
        },
        tokio::time::sleep(Duration::from_millis(800)),
    )
    .await
    .unwrap();
    assert!(s.interrupted);
    // Stopped when `stop` resolved: the slots at 0, 10, ... 790 ms were sent
    // (and the one at 800 ms, when it wins the tie with the stop).
    assert_eq!(started.elapsed(), Duration::from_millis(800));
    assert!((80..=81).contains(&s.sent), "{}", s.sent);
    assert_eq!(s.total.ok, s.sent);
    assert!(s.render().contains("interrupted after"));
}

// --- the binary: a client of the console's load ------------------------------

/// A console (in this process, on a free port) whose gateway is `gateway`:
/// `tracelab load` starts and follows the load there. Nothing but the
/// gateway is reached, so the other URLs lead nowhere.
async fn console_for(gateway: &str) -> (RunningConsole, PathBuf) {
    let home = std::env::temp_dir().join(format!(
        "tracelab-load-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let config = ConsoleConfig {
        mode: Mode::Compose,
        gateway: gateway.to_string(),
        tempo: nowhere.clone(),
        services: vec![("gateway".to_string(), gateway.to_string())],
        admin: vec![("gateway".to_string(), nowhere)],
        admin_token: "not-used-here".to_string(),
        catalog: Catalog {
            scenarios: Vec::new(),
            dir: home.join("scenarios"),
        },
        state_dir: home.clone(),
        processes: None,
        verify: None,
        collector: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console = RunningConsole::start(listener, ConsoleState::new(config).unwrap()).unwrap();
    (console, home)
}

async fn tracelab(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(args)
        .env_remove("TRACELAB_URL")
        .output()
        .await
        .expect("run tracelab")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_readable_message() {
    let closed = format!("http://127.0.0.1:{}", closed_port());
    // A console whose gateway is down: it refuses to start the load.
    let (console, home) = console_for(&closed).await;
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--rps", "0", "--duration", "1s"],
            2,
            "must be greater than 0",
        ),
        (
            &["--rps", "x", "--duration", "1s"],
            2,
            "expected a number of requests per second",
        ),
        (&["--rps", "1001", "--forever"], 2, "at most 1000"),
        (&["--rps", "10"], 2, "--duration"),
        (
            &["--rps", "10", "--duration", "1s", "--forever"],
            2,
            "cannot be used with",
        ),
        (&["--rps", "10", "--duration", "10"], 2, "missing unit"),
        (
            &["--rps", "10", "--duration", "1s", "--mix", "search"],
            2,
            "expected ROUTE=WEIGHT",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--mix", "pay=1"],
            2,
            "unknown route \"pay\"",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--mix", "order=0"],
            2,
            "no route with a weight",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--decline-share", "2"],
            2,
            "between 0 and 1",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--gateway", &closed],
            2,
            "unexpected argument '--gateway'",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--lab", "::"],
            2,
            "--lab",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--lab", &closed],
            1,
            "cannot reach the lab console",
        ),
        (
            &["--rps", "10", "--duration", "1s", "--lab", console.url()],
            1,
            "[gateway_unreachable (gateway)]: the console at",
        ),
    ];
    for (args, code, expected) in cases {
        let mut all = vec!["load"];
        all.extend_from_slice(args);
        let out = tracelab(&all).await;
        let t = text(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {t}");
        assert!(
            t.contains(expected),
            "{args:?}: expected {expected:?} in:\n{t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
    let help = tracelab(&["load", "--help"]).await;
    assert!(help.status.success());
    for flag in [
        "--rps",
        "--duration",
        "--forever",
        "--mix",
        "--decline-share",
        "--json",
        "--lab",
    ] {
        assert!(text(&help).contains(flag), "{flag}");
    }
    console.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_json_or_a_table() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let (console, home) = console_for(&format!("http://{addr}")).await;
    let base = [
        "load",
        "--rps",
        "40",
        "--duration",
        "1s",
        "--lab",
        console.url(),
    ];

    let mut args = base.to_vec();
    args.extend(["--mix", "search=3,checkout=1", "--json"]);
    let out = tracelab(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    let s: Summary = serde_json::from_slice(&out.stdout).expect("stdout is the JSON summary");
    assert_eq!((s.scheduled, s.sent, s.total.ok), (40, 40, 40), "{s:#?}");
    assert_eq!(row(&s, Route::Search).sent, 30);
    assert_eq!(row(&s, Route::Checkout).sent, 10);
    assert!(!s.interrupted);
    assert_eq!(s.gateway, format!("http://{addr}"), "the console sent it");

    let mut args = base.to_vec();
    args.extend(["--mix", "search=1"]);
    let out = tracelab(&args).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "load: 40 req/s for 1s through the lab at {}",
            console.url()
        )),
        "{t}"
    );
    let header = t.lines().find(|l| l.starts_with("route")).expect(&t);
    assert!(header.contains("p99"), "{header}");
    let search = t.lines().find(|l| l.starts_with("search")).expect(&t);
    assert_eq!(search.split_whitespace().nth(1), Some("40"), "{search}");
    assert!(t.contains("scheduled 40, sent 40"), "{t}");
    assert_eq!(fake.search_arrivals.lock().unwrap().len(), 30 + 40);
    console.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(home);
}

/// Polls the console's load until `done` holds.
async fn load_status_until(console: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Value = reqwest::get(format!("{console}/api/load"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never reached: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_load_it_started_and_prints_the_summary() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let (console, home) = console_for(&format!("http://{addr}")).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args([
            "load",
            "--rps",
            "50",
            "--forever",
            "--mix",
            "search=1",
            "--json",
            "--lab",
            console.url(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the load is flowing, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.search_arrivals.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "no load arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits soon after Ctrl-C")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s: Summary = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert!(s.interrupted);
    assert!(s.sent >= 20, "{s:#?}");
    assert_eq!(s.total.ok, s.sent);
    // The console's load is stopped: nothing more arrives.
    let status = load_status_until(console.url(), |s| s["running"] == false).await;
    assert_eq!(status["summary"]["sent"], s.sent, "{status}");
    let arrived = fake.search_arrivals.lock().unwrap().len();
    assert_eq!(s.sent as usize, arrived);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.search_arrivals.lock().unwrap().len(), arrived);
    console.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(home);
}

/// Another client replacing the load: the command leaves the new load
/// alone (Ctrl-C or not) and says who replaced it; a load stopped from
/// elsewhere ends the command with its final summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_stopped_or_replaced_elsewhere_ends_the_command() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let (console, home) = console_for(&format!("http://{addr}")).await;
    let http = reqwest::Client::new();
    let follow = |extra: &'static [&'static str]| {
        let mut args = vec![
            "load",
            "--rps",
            "20",
            "--forever",
            "--mix",
            "search=1",
            "--no-progress",
            "--lab",
            console.url(),
        ];
        args.extend_from_slice(extra);
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Stopped from elsewhere (the page's switch): the final summary, exit 0.
    let child = follow(&[]);
    let started = load_status_until(console.url(), |s| s["running"] == true).await;
    let id = started["id"].as_u64().unwrap();
    // A stale id does not stop the running load.
    let stale = http
        .delete(format!("{}/api/load?id={}", console.url(), id + 7))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "load_replaced", "{body}");
    let bad = http
        .delete(format!("{}/api/load?id=x", console.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let stopped = http
        .delete(format!("{}/api/load?id={id}", console.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the command ends with the load")
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("interrupted after"), "{t}");

    // Replaced by another load: the command ends and names it; the new one runs on.
    let child = follow(&[]);
    let first = load_status_until(console.url(), |s| {
        s["running"] == true && s["id"].as_u64() > Some(id)
    })
    .await;
    let replaced = http
        .post(format!("{}/api/load", console.url()))
        .json(&json!({"rate": 5, "mix": "search=1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let second: Value = replaced.json().await.unwrap();
    assert_ne!(second["id"], first["id"]);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the command ends when its load is replaced")
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("was replaced by load {}", second["id"])),
        "{t}"
    );
    let now = load_status_until(console.url(), |s| s["running"] == true).await;
    assert_eq!(now["id"], second["id"], "the new load still runs: {now}");
    console.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(home);
}
