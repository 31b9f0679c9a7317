//! The lab console's API over HTTP, against real labs: each test starts a
//! lab (`LabOptions::for_tests`: free ports, its own database, exchange and
//! queue) and a console on a free port, and drives every route group,
//! error cases included. The exercise test also reads the exercise through
//! the CLI (`tracelab exercise status --lab URL`): the console holds one
//! exercise for every client.
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); without them the tests FAIL and say so.

#[path = "support/lab_data.rs"]
mod lab_data;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracelab::console::{ConsoleConfig, ConsoleState, RunningConsole};
use tracelab::scenario::Catalog;
use tracelab::supervisor::{Lab, LabOptions};
use tracelab_client::TempoClient;
use tracelab_client::gateway::checkout_trace_complete;

struct Console {
    lab: Lab,
    console: RunningConsole,
    http: reqwest::Client,
    home: PathBuf,
    /// Every answer body, to check the admin token never leaves.
    seen: std::sync::Mutex<String>,
}

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

async fn start() -> Console {
    let mut opts = LabOptions::for_tests();
    // A token no answer could contain by chance.
    opts.admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let lab = Lab::start(opts.clone()).await.unwrap_or_else(|e| {
        panic!(
            "the console tests need a running lab and could not start one: {e:#}\n\
             (build the services with `cargo build --workspace --bins`; start Postgres and RabbitMQ)"
        )
    });
    let home = std::env::temp_dir().join(format!(
        "tracelab-console-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let catalog = Catalog::load(&catalog_dir()).expect("the catalog loads");
    let config = ConsoleConfig::for_lab(&lab, &opts, catalog, home.clone());
    let state = ConsoleState::new(config).expect("console state");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console = RunningConsole::start(listener, state).expect("console starts");
    Console {
        lab,
        console,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        home,
        seen: Default::default(),
    }
}

impl Console {
    fn url(&self) -> &str {
        self.console.url()
    }

    /// Sends a request; returns the status and the JSON answer.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.expect("the console answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        self.seen.lock().unwrap().push_str(&text);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn stop(self) {
        let seen = self.seen.lock().unwrap().clone();
        assert!(
            !seen.contains(self.lab.admin_token()),
            "an answer carried the admin token"
        );
        self.console.stop().await.expect("the console stops");
        self.lab.stop().await.expect("the lab stops cleanly");
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Reads `path` of the Tempo API through the console and directly until
/// both answers are the same (spans of the traffic above may still be
/// landing between two reads); returns the answer.
async fn same_as_tempo(c: &Console, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, through) = c.get(&format!("/api/tempo{path}")).await;
        assert_eq!(status, 200, "{through}");
        let direct: Value = reqwest::get(format!("{}{path}", c.lab.tempo_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if through == direct {
            return through;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: the console's answer differs from Tempo's:\n{through}\n{direct}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts the services' JSON error shape with this status and code.
#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_tempo_actions_faults_and_load() {
    let c = start().await;

    // The lab: URLs, every service's health with its export counters, the processes.
    let (status, lab) = c.get("/api/lab").await;
    assert_eq!(status, 200, "{lab}");
    assert_eq!(lab["mode"], "native");
    assert_eq!(lab["gateway"], c.lab.gateway_url());
    assert_eq!(lab["tempo"], c.lab.tempo_url());
    let services = lab["services"].as_array().unwrap();
    assert_eq!(services.len(), 6, "{lab}");
    for s in services {
        assert_eq!(s["health_status"], 200, "{s}");
        assert_eq!(s["health"]["status"], "ok", "{s}");
        assert!(s["health"]["telemetry"].is_object(), "{s}");
        let name = s["name"].as_str().unwrap();
        assert_eq!(s["process"]["pid"], json!(c.lab.pid(name)), "{s}");
        assert_eq!(s["process"]["running"], true, "{s}");
        assert_eq!(s["process"]["restarts"], 0, "{s}");
        let pid = c.lab.pid(name).unwrap();
        let kib = s["process"]["memory_kib"].as_u64().expect("memory_kib");
        assert!(kib > 1000, "{name}: {kib} KiB");
        // The figure is the process's own, not the console's: it is within
        // a factor of two of what /proc says a moment later.
        let now = tracelab::supervisor::resident_kib(pid).unwrap();
        assert!(
            kib / 2 <= now && now <= kib * 2,
            "{name}: {kib} then {now} KiB"
        );
    }
    let memory = &lab["memory"];
    let collector = memory["collector_kib"].as_u64().expect("collector_kib");
    let summed: u64 = services
        .iter()
        .map(|s| s["process"]["memory_kib"].as_u64().unwrap())
        .sum();
    assert_eq!(memory["services_kib"], summed, "{memory}");
    assert_eq!(
        memory["total_kib"].as_u64(),
        Some(summed + collector + memory["console_kib"].as_u64().unwrap()),
        "{memory}"
    );

    // One-shot actions answer with the trace and the page's link to it.
    let (status, action) = c.post("/api/actions/checkout", json!({})).await;
    assert_eq!(status, 200, "{action}");
    assert_eq!(action["status"], 201, "{action}");
    let trace_id = action["trace_id"].as_str().expect("a trace id").to_string();
    assert_eq!(trace_id.len(), 32);
    assert_eq!(action["link"], format!("/#/trace/{trace_id}"));
    assert!(action["body"]["order_id"].is_string(), "{action}");

    let (status, declined) = c
        .post("/api/actions/declined-checkout", json!({"user": "bob"}))
        .await;
    assert_eq!(status, 200, "{declined}");
    assert_eq!(declined["status"], 402, "{declined}");
    assert!(declined["trace_id"].is_string(), "{declined}");
    assert_error(
        &c.post(
            "/api/actions/declined-checkout",
            json!({"card": "4242424242424242"}),
        )
        .await,
        400,
        "invalid_body",
    );
    let (status, search) = c.post("/api/actions/search", json!({"q": "matcha"})).await;
    assert_eq!(
        (status, search["status"].clone()),
        (200, json!(200)),
        "{search}"
    );
    assert!(
        search["body"].to_string().to_lowercase().contains("matcha"),
        "{search}"
    );

    let (status, burst) = c.post("/api/actions/burst", json!({"count": 6})).await;
    assert_eq!(status, 200, "{burst}");
    assert_eq!(burst["sent"], 6, "{burst}");
    assert_eq!(burst["ok"], 6, "{burst}");
    let ids: std::collections::BTreeSet<&str> = burst["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "each request is a trace of its own: {burst}");
    assert_error(
        &c.post("/api/actions/burst", json!({"count": 0})).await,
        400,
        "invalid_count",
    );
    assert_error(
        &c.post("/api/actions/burst", json!({"count": 101})).await,
        400,
        "invalid_count",
    );

    // Tempo through the console: the same answer as Tempo's own.
    let tempo = TempoClient::new(&c.lab.tempo_url()).unwrap();
    tempo
        .wait_for_trace(
            &trace_id,
            |t| checkout_trace_complete(t, true),
            Duration::from_secs(20),
        )
        .await
        .expect("the checkout's trace is complete");
    let through = same_as_tempo(&c, &format!("/api/traces/{trace_id}")).await;
    assert!(
        through["batches"].as_array().is_some_and(|b| b.len() >= 5),
        "{through}"
    );
    let query = "/api/search?q=%7B%20resource.service.name%20%3D%20%22gateway%22%20%7D&limit=3";
    let through = same_as_tempo(&c, query).await;
    assert_eq!(
        through["traces"].as_array().map(Vec::len),
        Some(3),
        "{through}"
    );
    let (status, _) = c
        .get("/api/tempo/api/traces/00000000000000000000000000000001")
        .await;
    assert_eq!(status, 404, "Tempo's own status passes through");

    // Faults.
    let (status, points) = c.get("/api/faults/points").await;
    assert_eq!(status, 200);
    let save = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["point"] == "payment.save")
        .expect("payment.save is a point");
    assert_eq!(save["service"], "payment");
    assert!(
        save["kinds"]
            .as_array()
            .unwrap()
            .contains(&json!("latency"))
    );

    let spec = json!({"point": "payment.save", "kind": "latency", "ms": 300, "for": "5m"});
    let (status, set) = c.call("PUT", "/api/faults", Some(spec)).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["service"], "payment");
    assert_eq!(set["fault"]["point"], "payment.save");
    assert_eq!(set["fault"]["ms"], 300);
    assert!(set["fault"]["expires_at"].is_string(), "{set}");
    let (status, list) = c.get("/api/faults").await;
    assert_eq!(status, 200);
    assert_eq!(
        (list["hidden"].clone(), list["count"].clone()),
        (json!(false), json!(1))
    );
    let payment = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "payment")
        .unwrap();
    assert_eq!(payment["faults"][0]["point"], "payment.save", "{list}");

    let missing = c
        .call(
            "PUT",
            "/api/faults",
            Some(json!({"point": "payment.save", "kind": "latency"})),
        )
        .await;
    assert_error(&missing, 400, "invalid_fault");
    assert!(
        missing.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ms"),
        "{}",
        missing.1
    );
    let unknown = c
        .call(
            "PUT",
            "/api/faults",
            Some(json!({"point": "payment.nope", "kind": "dead_letter"})),
        )
        .await;
    assert_error(&unknown, 400, "unknown_point");
    assert_eq!(unknown.1["error"]["field"], "point");
    assert_error(
        &c.call(
            "PUT",
            "/api/faults",
            Some(json!({"point": "payment.save", "kind": "dead_letter"})),
        )
        .await,
        400,
        "kind_not_here",
    );
    let resp = c
        .http
        .put(format!("{}/api/faults", c.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let bad = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    assert_error(&bad, 400, "invalid_json");

    let (status, cleared) = c.call("DELETE", "/api/faults/payment.save", None).await;
    assert_eq!(
        (status, cleared["cleared"].clone()),
        (200, json!(true)),
        "{cleared}"
    );
    let (_, again) = c.call("DELETE", "/api/faults/payment.save", None).await;
    assert_eq!(again["cleared"], false);
    assert_error(
        &c.call("DELETE", "/api/faults/nope", None).await,
        404,
        "unknown_point",
    );
    assert_error(
        &c.call("DELETE", "/api/faults?service=bogus", None).await,
        400,
        "unknown_service",
    );
    let spec = json!({"point": "auth.verify", "kind": "error", "status": 503});
    assert_eq!(c.call("PUT", "/api/faults", Some(spec)).await.0, 200);
    let (status, cleared) = c.call("DELETE", "/api/faults", None).await;
    assert_eq!(
        (status, cleared["cleared"].clone()),
        (200, json!(1)),
        "{cleared}"
    );

    // The CLI sets and clears through the console.
    let (ok, out) = cli(
        &c,
        &[
            "fault",
            "set",
            "search.query",
            "latency",
            "ms=5",
            "--for",
            "1m",
        ],
    )
    .await;
    assert!(
        ok && out.contains("set search.query latency") && out.contains("ms=5 on search"),
        "{out}"
    );
    let (_, list) = c.get("/api/faults").await;
    assert_eq!(list["count"], 1, "{list}");
    let (ok, out) = cli(&c, &["fault", "list"]).await;
    assert!(ok && out.contains("search.query"), "{out}");
    let (ok, out) = cli(&c, &["fault", "set", "payment.save", "dead_letter"]).await;
    assert!(
        !ok && out.contains("lock_contention"),
        "refused locally, kinds named: {out}"
    );
    let (ok, out) = cli(&c, &["fault", "clear", "all"]).await;
    assert!(ok && out.contains("cleared 1 fault"), "{out}");
    assert_eq!(c.get("/api/faults").await.1["count"], 0);

    // Load: start, watch the live summary, stop.
    assert_error(
        &c.post("/api/load", json!({"rate": 0})).await,
        400,
        "invalid_load",
    );
    assert_error(
        &c.post("/api/load", json!({"rate": 5, "mix": "bogus=1"}))
            .await,
        400,
        "invalid_load",
    );
    assert_error(&c.call("DELETE", "/api/load", None).await, 409, "no_load");
    let (status, load) = c
        .post("/api/load", json!({"rate": 20, "mix": "search=1"}))
        .await;
    assert_eq!(status, 200, "{load}");
    assert_eq!(load["running"], true);
    assert_eq!(load["owner"]["by"], "console", "{load}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let live = loop {
        let (_, load) = c.get("/api/load").await;
        let answered = load["summary"]["routes"][0]["count"].as_u64().unwrap_or(0);
        if answered >= 10 {
            break load;
        }
        assert!(Instant::now() < deadline, "no live summary: {load}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(live["running"], true, "{live}");
    assert_eq!(live["summary"]["routes"][0]["route"], "search", "{live}");
    let (status, stopped) = c.call("DELETE", "/api/load", None).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["running"], false);
    assert!(
        stopped["summary"]["total"]["ok"].as_u64().unwrap() >= 10,
        "{stopped}"
    );
    assert_eq!(stopped["summary"]["total"]["errors"], 0, "{stopped}");

    // Unknown routes and methods answer in the same shape.
    assert_error(&c.get("/api/nope").await, 404, "not_found");
    assert_error(
        &c.call("DELETE", "/api/lab", None).await,
        405,
        "method_not_allowed",
    );
    c.stop().await;
}

/// Runs the `tracelab` binary against the console; returns success and output.
/// Whole minutes between a fault's `set_at` and its `expires_at`.
fn lifetime_minutes(fault: &Value) -> i64 {
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(
            fault[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} is not a time: {fault}")),
        )
        .unwrap()
    };
    (at("expires_at") - at("set_at")).num_minutes()
}

async fn cli(c: &Console, args: &[&str]) -> (bool, String) {
    let mut argv = vec![args[0], "--lab", c.url()];
    argv.extend(&args[1..]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(&argv)
        .env("TRACELAB_LANG", "en")
        .env_remove("TRACELAB_URL")
        .output()
        .await
        .expect("tracelab runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `tracelab checkout` and `tracelab load` are clients of the console:
/// the checkout action with the CLI's options (user, items or amount,
/// card, idempotency key), the trace read through the console's Tempo
/// pass-through; the load started, followed and summarized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_load_through_the_console() {
    let c = start().await;

    // The checkout action's options, and what it refuses.
    let key = format!("k-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"user": "bob", "amount": 1200, "currency": "JPY", "idempotency_key": key});
    let (status, first) = c.post("/api/actions/checkout", body.clone()).await;
    assert_eq!(
        (status, first["status"].clone()),
        (200, json!(201)),
        "{first}"
    );
    assert_eq!(first["body"]["amount"], 1200, "{first}");
    let (status, again) = c.post("/api/actions/checkout", body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["body"]["order_id"], first["body"]["order_id"],
        "{again}"
    );
    assert_eq!(again["body"]["idempotent_replay"], true, "{again}");
    for bad in [
        json!({"items": [{"product_id": 1, "quantity": 1}], "amount": 5}),
        json!({"items": []}),
        json!({"idempotency_key": " "}),
        json!({"idempotency_key": "caf\u{e9}"}),
        json!({"password": "x"}),
    ] {
        assert_error(
            &c.post("/api/actions/checkout", bad).await,
            400,
            "invalid_body",
        );
    }
    assert_error(
        &c.post("/api/actions/declined-checkout", json!({"amount": 5}))
            .await,
        400,
        "invalid_body",
    );
    assert_error(
        &c.post("/api/actions/checkout", json!({"user": "mallory"}))
            .await,
        400,
        "login_refused",
    );

    // The command: the answer, the trace id, the link, the waterfall.
    let (ok, out) = cli(
        &c,
        &[
            "checkout", "--user", "carol", "--items", "1x2,3", "--color", "never", "--width", "120",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("checkout as carol through the lab at"),
        "{out}"
    );
    assert!(out.contains("POST /api/checkout  HTTP 201"), "{out}");
    let trace_id = out
        .lines()
        .find_map(|l| l.strip_prefix("trace id: "))
        .expect("a trace id")
        .trim()
        .to_string();
    assert!(
        out.contains(&format!("in the console: {}/#/trace/{trace_id}", c.url())),
        "{out}"
    );
    for span in [
        "POST /api/checkout",
        "processPayment",
        "callExternalPaymentAPI",
        "payment.completed",
    ] {
        assert!(out.contains(span), "the waterfall lacks {span}: {out}");
    }
    // The trace the command waited for is the one Tempo holds, complete.
    let tempo = TempoClient::new(&c.lab.tempo_url()).unwrap();
    let trace = tempo.get_trace(&trace_id).await.unwrap().expect("in Tempo");
    assert!(checkout_trace_complete(&trace, true), "{out}");

    // A declined card: exit 1, the 402 and its trace shown.
    let (ok, out) = cli(
        &c,
        &[
            "checkout",
            "--card",
            "4000000000000002",
            "--no-trace",
            "--color",
            "never",
        ],
    )
    .await;
    assert!(
        !ok && out.contains("HTTP 402") && out.contains("trace id: "),
        "{out}"
    );

    // Load through the console: started, followed, the summary printed.
    let (ok, out) = cli(
        &c,
        &[
            "load",
            "--rps",
            "10",
            "--duration",
            "2s",
            "--mix",
            "search=2,checkout=1",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let json_start = out.find('{').expect("a JSON summary");
    let summary: Value = serde_json::Deserializer::from_str(&out[json_start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(summary["sent"], 20, "{summary}");
    assert_eq!(summary["total"]["ok"], 20, "{summary}");
    assert_eq!(summary["gateway"], c.lab.gateway_url(), "{summary}");
    let (_, load) = c.get("/api/load").await;
    assert_eq!(load["running"], false, "{load}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_and_one_exercise_for_every_client() {
    let c = start().await;

    // The catalog: summaries keep the answer back, a scenario in full has it.
    let (status, list) = c.get("/api/scenarios").await;
    assert_eq!(status, 200);
    let scenarios = list["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 16, "{list}");
    for s in scenarios {
        assert!(
            s["title"]["ja"].is_string() && s["symptom"]["en"].is_string(),
            "{s}"
        );
        assert!(
            s.get("answer").is_none() && s.get("faults").is_none(),
            "{s}"
        );
    }
    let (status, full) = c.get("/api/scenarios/payment-save-slow").await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["answer"]["service"], "payment");
    assert_eq!(full["faults"][0]["service"], "payment");
    assert_eq!(full["hints"].as_array().map(Vec::len), Some(3));
    assert_error(&c.get("/api/scenarios/nope").await, 404, "unknown_scenario");
    let (ok, out) = cli(&c, &["scenario", "list"]).await;
    assert!(ok && out.contains("payment-save-slow"), "{out}");
    let (ok, out) = cli(&c, &["scenario", "show", "payment-save-slow"]).await;
    assert!(
        ok && out.contains("answer: payment / savePaymentResult"),
        "{out}"
    );
    let (ok, out) = cli(&c, &["scenario", "show", "payment-save-slo"]).await;
    assert!(
        !ok && out.contains("did you mean payment-save-slow"),
        "{out}"
    );

    // No exercise yet.
    let (status, none) = c.get("/api/exercise").await;
    assert_eq!((status, none["exercise"].clone()), (200, Value::Null));
    assert_error(
        &c.post("/api/exercise/answer", json!({"service": "auth"}))
            .await,
        409,
        "no_exercise",
    );
    assert_error(
        &c.post("/api/exercise/hint", json!({})).await,
        409,
        "no_exercise",
    );
    assert_error(
        &c.post("/api/exercise/reveal", json!({})).await,
        409,
        "no_exercise",
    );

    // A scenario, openly.
    let (status, started) = c
        .post("/api/scenarios/payment-save-slow/start", json!({}))
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["set"][0]["service"], "payment");
    assert_eq!(started["set"][0]["fault"]["point"], "payment.save");
    // A scenario left running heals itself: its faults expire like one
    // set by hand (the file gives no `for`).
    assert_eq!(
        lifetime_minutes(&started["set"][0]["fault"]),
        15,
        "{started}"
    );
    assert_eq!(c.get("/api/faults").await.1["count"], 1);
    let (status, stopped) = c
        .post("/api/scenarios/stop", json!({"id": "payment-save-slow"}))
        .await;
    assert_eq!(
        (status, stopped["stopped"].clone()),
        (200, json!("payment-save-slow"))
    );
    assert_eq!(c.get("/api/faults").await.1["count"], 0);
    assert_error(
        &c.post("/api/scenarios/nope/start", json!({})).await,
        404,
        "unknown_scenario",
    );

    // Verification: its answer key on this lab.
    assert_error(
        &c.post("/api/scenarios/nope/verify", json!({})).await,
        404,
        "unknown_scenario",
    );
    assert_error(
        &c.post(
            "/api/scenarios/auth-verify-errors/verify",
            json!({"timeout_ms": 0}),
        )
        .await,
        400,
        "invalid_body",
    );
    let (status, verified) = c
        .post(
            "/api/scenarios/auth-verify-errors/verify",
            json!({"timeout_ms": 20000}),
        )
        .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["passed"], true, "{}", verified["report"]);

    // An exercise: started here, seen by the CLI, hints from the CLI seen here.
    let (status, ex) = c
        .post(
            "/api/exercise",
            json!({"scenario": "auth-verify-errors", "load": false}),
        )
        .await;
    assert_eq!(status, 201, "{ex}");
    assert_eq!(ex["number"], 1);
    assert_eq!(ex["load"], Value::Null);
    assert!(!ex.to_string().contains("auth-verify-errors"), "{ex}");
    let symptom = ex["symptom"]["en"].as_str().unwrap().trim().to_string();
    assert_error(
        &c.post("/api/exercise", json!({"scenario": "provider-slow"}))
            .await,
        409,
        "exercise_running",
    );
    assert_error(
        &c.post("/api/scenarios/provider-slow/start", json!({}))
            .await,
        409,
        "exercise_running",
    );
    let (_, hidden) = c.get("/api/faults").await;
    assert_eq!(hidden["hidden"], true, "{hidden}");
    assert_eq!(hidden["services"], json!([]), "{hidden}");
    assert!(hidden["count"].as_u64().unwrap() >= 1, "{hidden}");
    let (_, peeked) = c.get("/api/faults?peek=true").await;
    assert_eq!(peeked["hidden"], false);
    let set = peeked["services"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["faults"].as_array().and_then(|f| f.first()))
        .unwrap_or_else(|| panic!("no fault set: {peeked}"));
    assert_eq!(lifetime_minutes(set), 60, "an exercise's bound: {peeked}");
    assert_eq!(ex["faults_expire_at"], set["expires_at"], "{ex}");

    let (ok, out) = cli(&c, &["exercise", "status"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("exercise #1 running"), "{out}");
    assert!(out.contains("its faults expire at"), "{out}");
    let first_line = symptom.lines().next().unwrap();
    assert!(
        out.contains(first_line),
        "the CLI shows the console's symptom:\n{out}"
    );
    let (ok, out) = cli(&c, &["exercise", "hint"]).await;
    assert!(ok && out.contains("hint 1/3"), "{out}");
    let (_, now) = c.get("/api/exercise").await;
    assert_eq!(
        now["exercise"]["hints"].as_array().map(Vec::len),
        Some(1),
        "{now}"
    );

    // Answers: refused input, wrong, half right, right with a proving trace.
    let unknown = c
        .post("/api/exercise/answer", json!({"service": "nope"}))
        .await;
    assert_error(&unknown, 400, "unknown_service");
    assert_eq!(unknown.1["error"]["field"], "service");
    assert_error(
        &c.post(
            "/api/exercise/answer",
            json!({"service": "auth", "operation": "POST /verify", "trace_id": "xyz"}),
        )
        .await,
        400,
        "invalid_trace_id",
    );
    let (status, wrong) = c
        .post("/api/exercise/answer", json!({"service": "search"}))
        .await;
    assert_eq!(status, 200, "{wrong}");
    assert_eq!(
        (wrong["grade"].clone(), wrong["correct"].clone()),
        (json!("wrong"), json!(false))
    );
    assert_eq!(wrong["solution"], Value::Null);
    let (_, half) = c
        .post("/api/exercise/answer", json!({"service": "auth"}))
        .await;
    assert_eq!(half["grade"], "needs_operation", "{half}");

    let (_, action) = c.post("/api/actions/checkout", json!({})).await;
    let trace_id = action["trace_id"].as_str().unwrap().to_string();
    let ok = (200..300).contains(&action["status"].as_u64().unwrap());
    TempoClient::new(&c.lab.tempo_url())
        .unwrap()
        .wait_for_trace(
            &trace_id,
            |t| checkout_trace_complete(t, ok),
            Duration::from_secs(20),
        )
        .await
        .expect("the checkout's trace");
    let (status, right) = c
        .post(
            "/api/exercise/answer",
            json!({"service": "auth", "operation": "POST /verify", "trace_id": trace_id}),
        )
        .await;
    assert_eq!(status, 200, "{right}");
    assert_eq!(right["correct"], true, "{right}");
    assert_eq!(right["trace"]["found"], true, "{right}");
    assert_eq!(right["trace"]["has_answered_span"], true, "{right}");
    let solution = &right["solution"];
    assert_eq!(solution["scenario"]["id"], "auth-verify-errors");
    assert_eq!(solution["faults_cleared"], true, "{solution}");
    assert_eq!(solution["hints_used"], 1);
    let link = solution["query_link"].as_str().unwrap();
    assert!(link.starts_with("/api/tempo/api/search?q="), "{link}");
    let (status, found) = c.get(link).await;
    assert_eq!(status, 200, "{found}");
    assert!(found["traces"].is_array(), "{found}");
    assert_eq!(c.get("/api/faults").await.1["count"], 0);
    assert_eq!(c.get("/api/exercise").await.1["exercise"], Value::Null);

    // A second exercise with the console's background load, given up.
    assert_error(
        &c.post("/api/exercise", json!({"load": {"rate": 0}})).await,
        400,
        "invalid_body",
    );
    let (status, ex) = c
        .post("/api/exercise", json!({"seed": 3, "load": {"rate": 1}}))
        .await;
    assert_eq!(status, 201, "{ex}");
    assert_eq!(ex["seed"], 3);
    assert_eq!(ex["load"]["rate"], 1.0, "{ex}");
    let (_, load) = c.get("/api/load").await;
    assert_eq!(load["running"], true, "{load}");
    assert_eq!(
        load["owner"],
        json!({"by": "exercise", "exercise": 2}),
        "{load}"
    );
    let (status, revealed) = c.post("/api/exercise/reveal", json!({})).await;
    assert_eq!(status, 200, "{revealed}");
    assert_eq!(revealed["outcome"], "revealed");
    assert!(revealed["scenario"]["id"].is_string());
    assert_eq!(c.get("/api/load").await.1["running"], false);

    let (status, history) = c.get("/api/exercise/history").await;
    assert_eq!(status, 200);
    let outcomes: Vec<&Value> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        [&json!("solved"), &json!("revealed")],
        "{history}"
    );
    assert_eq!(history["solved"], 1);
    assert!(history["mean_secs"].as_f64().unwrap() > 0.0, "{history}");
    let (ok, out) = cli(&c, &["exercise", "history"]).await;
    assert!(
        ok && out.contains("auth-verify-errors") && out.contains("revealed"),
        "{out}"
    );
    c.stop().await;
}

/// `tracelab up` serves the console, records where it is, and later
/// commands find it with no flag; stopping `up` removes the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_console_and_records_it() {
    let opts = LabOptions::for_tests();
    let dir = std::env::temp_dir().join(format!(
        "tracelab-up-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let record = dir.join("home").join("lab.json");
    let (exchange, queue) = (opts.exchange_name(), opts.queue_name());
    let mut args: Vec<String> = [
        "up",
        "--quiet",
        "--console-port",
        "0",
        "--database-url",
        &opts.database_url,
        "--amqp-url",
        &opts.amqp_url,
        "--exchange",
        &exchange,
        "--queue",
        &queue,
        "--bin-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(
        tracelab::supervisor::default_bin_dir()
            .display()
            .to_string(),
    );
    for port in [
        "gateway",
        "auth",
        "search",
        "payment",
        "notification",
        "provider",
        "otlp-http",
        "otlp-grpc",
        "tempo",
    ] {
        args.push(format!("--{port}-port"));
        args.push("0".into());
    }
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(&args)
        .env("TRACELAB_HOME", dir.join("home"))
        .env("TRACELAB_SCENARIOS", catalog_dir())
        .env_remove("TRACELAB_CONSOLE_PORT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tracelab up runs");

    // The record appears once the lab and its console are up.
    let deadline = Instant::now() + Duration::from_secs(90);
    let recorded: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&record)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        if let Ok(Some(status)) = up.try_wait() {
            let out = up.wait_with_output().await.unwrap();
            panic!(
                "tracelab up exited ({status}) before recording the lab:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no record at {}",
            record.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the record holds the admin token");
    }
    let console = recorded["console"].as_str().unwrap().to_string();
    assert!(
        console.starts_with("http://127.0.0.1:") && !console.ends_with(":0"),
        "{recorded}"
    );
    assert_eq!(recorded["pid"], up.id().unwrap());

    let lab: Value = reqwest::get(format!("{console}/api/lab"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lab["mode"], "native", "{lab}");
    assert_eq!(lab["gateway"], recorded["gateway"], "{lab}");
    let services = lab["services"].as_array().unwrap();
    assert_eq!(services.len(), 6, "{lab}");
    assert!(services.iter().all(|s| s["health_status"] == 200), "{lab}");

    // A later command, with no flag, finds the lab through the record.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(["exercise", "status"])
        .env("TRACELAB_HOME", dir.join("home"))
        .env_remove("TRACELAB_URL")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("no exercise running"),
        "{text}"
    );

    // Ctrl-C: the lab stops, the record goes.
    let pid = up.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait())
        .await
        .expect("tracelab up stops after SIGINT")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!record.exists(), "the record outlived its lab");
    lab_data::remove_lab_data(&opts).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The notification dead-letter queue through the console: a message
/// parked by a real fault is listed with its reason and event, stays
/// parked while listed, and a replay by id sends it back to the consumer,
/// which processes it once the fault is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_queue_list_and_replay() {
    let c = start().await;
    let (status, empty) = c.get("/api/dlq").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["count"], 0, "{empty}");
    assert_eq!(empty["queue"], format!("{}.dlq", c.lab.queue()), "{empty}");
    assert_eq!(empty["messages"], json!([]));

    // Bad input: the JSON error shape, saying what to send.
    assert_error(&c.get("/api/dlq?limit=0").await, 400, "invalid_query");
    assert_error(&c.get("/api/dlq?limit=x").await, 400, "invalid_query");
    assert_error(
        &c.post("/api/dlq/replay", json!({})).await,
        400,
        "invalid_selection",
    );
    assert_error(
        &c.post("/api/dlq/replay", json!({"all": true, "id": "x"}))
            .await,
        400,
        "invalid_selection",
    );
    assert_error(
        &c.post("/api/dlq/replay", json!({"every": true})).await,
        400,
        "invalid_body",
    );
    let resp = c
        .http
        .post(format!("{}/api/dlq/replay", c.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(&(status, body), 400, "invalid_body");
    assert_error(
        &c.post("/api/dlq/replay", json!({"id": "no-such-message"}))
            .await,
        404,
        "unknown_message",
    );
    assert_error(
        &c.call("PUT", "/api/dlq", None).await,
        405,
        "method_not_allowed",
    );

    // notification rejects every message: a checkout's event is parked.
    let (status, set) = c
        .call(
            "PUT",
            "/api/faults",
            Some(json!({"point": "notification.consume", "kind": "dead_letter", "for": "2m"})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let (status, action) = c.post("/api/actions/checkout", json!({})).await;
    assert_eq!(
        (status, action["status"].clone()),
        (200, json!(201)),
        "{action}"
    );
    let order_id = action["body"]["order_id"].as_str().unwrap().to_string();
    let trace_id = action["trace_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let (status, parked) = c.get("/api/dlq").await;
        assert_eq!(status, 200, "{parked}");
        if parked["count"] == 1 {
            break parked;
        }
        assert!(Instant::now() < deadline, "nothing parked: {parked}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let message = &parked["messages"][0];
    assert_eq!(message["kind"], "poison", "{message}");
    assert!(
        message["reason"].as_str().unwrap().contains("template"),
        "{message}"
    );
    assert_eq!(message["event"]["type"], "payment.completed", "{message}");
    assert_eq!(message["event"]["order_id"], order_id.as_str(), "{message}");
    assert!(
        message["traceparent"].as_str().unwrap().contains(&trace_id),
        "the parked message carries the checkout's trace: {message}"
    );
    let id = message["message_id"].as_str().unwrap().to_string();
    // Listing leaves it parked; replaying all leaves poison parked.
    let (_, again) = c.get("/api/dlq").await;
    assert_eq!(again["count"], 1, "{again}");
    let (status, kept) = c.post("/api/dlq/replay", json!({"all": true})).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        kept,
        json!({"replayed": 0, "kept_poison": 1, "kept_other": 0})
    );
    // `tracelab dlq` is a client of these routes.
    let (ok, text) = cli(&c, &["dlq", "list"]).await;
    assert!(ok, "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("poison"), "{text}");
    assert!(text.contains(&trace_id), "{text}");
    assert!(text.contains("1 message(s)."), "{text}");
    let (ok, text) = cli(&c, &["dlq", "replay", "--all"]).await;
    assert!(ok, "{text}");
    assert!(
        text.starts_with("replayed 0; left in the DLQ: 1 poison, 0 other"),
        "{text}"
    );
    let (ok, text) = cli(&c, &["dlq", "replay", "--id", "no-such-message"]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("no message with id no-such-message"),
        "{text}"
    );
    let (ok, text) = cli(&c, &["dlq", "list", "--limit", "0"]).await;
    assert!(!ok && text.contains("--limit"), "{text}");

    // The cause fixed, the message replayed by id is processed.
    let (status, _) = c.call("DELETE", "/api/faults", None).await;
    assert_eq!(status, 200);
    let (status, done) = c.post("/api/dlq/replay", json!({"id": id})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["replayed"], 1, "{done}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, lab) = c.get("/api/lab").await;
        let notification = lab["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "notification")
            .unwrap()
            .clone();
        if notification["health"]["processed"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed event was never processed: {notification}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, after) = c.get("/api/dlq").await;
    assert_eq!(after["count"], 0, "{after}");
    c.stop().await;
}
