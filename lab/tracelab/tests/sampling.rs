//! The sampling switch against a real lab: the six service processes and
//! the embedded collector started with the repository's `sampling.yaml`,
//! the console on a free port. `PUT /api/sampling` puts the lesson's policy
//! in force without a restart; traffic through the gateway then shows it in
//! the head counts (most roots not sampled) and in the collector's tail
//! counts (traces dropped once their decision wait is over); switching back
//! restores the lab's. The CLI reads the same state (`tracelab sampling`),
//! and a compose-mode console over the same services says plainly that it
//! cannot switch the tail policy.
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); without them the test FAILS and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracelab::console::{ConsoleConfig, ConsoleState, Mode, RunningConsole};
use tracelab::scenario::Catalog;
use tracelab::supervisor::{Lab, LabOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Client {
    http: reqwest::Client,
    base: String,
    /// Every answer body, to check the admin token never leaves.
    seen: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.to_string(),
            seen: String::new(),
        }
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the console answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        self.seen.push_str(&text);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, value)
    }

    async fn sampling(&mut self) -> Value {
        let (status, view) = self.call("GET", "/api/sampling", None).await;
        assert_eq!(status, 200, "{view}");
        view
    }

    async fn switch(&mut self, policy: &str) -> Value {
        let body = json!({ "policy": policy }).to_string();
        let (status, answer) = self.call("PUT", "/api/sampling", Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

fn service<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["head"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no {name} in {view}"))
}

fn gateway_counts(view: &Value) -> (u64, u64) {
    let c = &service(view, "gateway")["report"]["counts"];
    (
        c["sampled"].as_u64().unwrap(),
        c["not_sampled"].as_u64().unwrap(),
    )
}

#[track_caller]
fn assert_everywhere(view: &Value, policy: &str, rate: f64) {
    assert_eq!(view["policy"], policy, "{view}");
    let services = view["head"]["services"].as_array().unwrap();
    assert_eq!(services.len(), 6, "{view}");
    for s in services {
        assert_eq!(s["policy"], policy, "{s}");
        assert_eq!(s["report"]["head_based"]["rate"], rate, "{s}");
    }
    assert_eq!(view["tail"]["live"], true, "{view}");
    assert_eq!(view["tail"]["policy"], policy, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lesson_policy_is_switched_on_and_off_without_a_restart() {
    let mut opts = LabOptions::for_tests();
    opts.sampling_file = Some(repo().join("sampling.yaml"));
    opts.admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let lab = Lab::start(opts.clone()).await.unwrap_or_else(|e| {
        panic!(
            "the sampling test needs a running lab and could not start one: {e:#}\n\
             (build the services with `cargo build --workspace --bins`; start Postgres and RabbitMQ)"
        )
    });
    let pids: Vec<Option<u32>> = lab.status().children.iter().map(|c| c.pid).collect();
    let home = std::env::temp_dir().join(format!(
        "tracelab-sampling-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let catalog = Catalog::load(&repo().join("scenarios")).expect("the catalog loads");
    let config = ConsoleConfig::for_lab(&lab, &opts, catalog, home.clone());
    let compose_config = ConsoleConfig {
        mode: Mode::Compose,
        collector: None,
        processes: None,
        ..config.clone()
    };
    let console = RunningConsole::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ConsoleState::new(config).unwrap(),
    )
    .unwrap();
    let mut c = Client::new(console.url());

    // The lab's policy, as started.
    let view = c.sampling().await;
    assert_everywhere(&view, "lab", 1.0);
    assert_eq!(view["mode"], "native");
    let names: Vec<&Value> = view["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert_eq!(names, [&json!("lab"), &json!("lesson")]);
    let tail = &view["tail"]["report"];
    assert_eq!(tail["tail_based"]["decision_wait_ms"], 10_000, "{tail}");

    // Bad requests change nothing.
    for (body, code) in [
        (r#"{"policy":"half"}"#, "unknown_policy"),
        (r#"{"policy":"Lesson"}"#, "unknown_policy"),
        (r#"{"policy":"lab""#, "invalid_body"),
        (r#"{}"#, "invalid_body"),
        (r#"{"policy":"lab","extra":1}"#, "invalid_body"),
    ] {
        let (status, answer) = c.call("PUT", "/api/sampling", Some(body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (status, answer) = c.call("DELETE", "/api/sampling", None).await;
    assert_eq!(status, 405, "{answer}");
    assert_eq!(c.sampling().await["policy"], "lab");

    // The lesson's policy, on every service and the collector at once.
    let switched = c.switch("lesson").await;
    let targets: Vec<&str> = switched["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["ok"], true, "{a}");
            a["target"].as_str().unwrap()
        })
        .collect();
    assert_eq!(targets.len(), 7, "{switched}");
    assert!(targets.contains(&"collector"), "{switched}");
    let view = &switched["sampling"];
    assert_everywhere(view, "lesson", 0.1);
    assert_eq!(service(view, "search")["report"]["service_rate"], 0.01);
    assert_eq!(service(view, "payment")["report"]["service_rate"], 1.0);
    let tail = &view["tail"]["report"];
    let default = tail["tail_based"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .unwrap();
    assert_eq!(default["probabilistic"]["sampling_percentage"], 5.0);
    assert_eq!(
        (tail["kept"].as_u64(), tail["dropped"].as_u64()),
        (Some(0), Some(0))
    );

    // Traffic: 100 requests, every one a root at the gateway.
    let before = gateway_counts(view);
    let (status, burst) = c
        .call("POST", "/api/actions/burst", Some(r#"{"count":100}"#))
        .await;
    assert_eq!(status, 200, "{burst}");
    assert_eq!(burst["sent"], 100, "{burst}");
    let after = gateway_counts(&c.sampling().await);
    let roots = (after.0 + after.1) - (before.0 + before.1);
    let not_sampled = after.1 - before.1;
    assert!(roots >= 100, "{roots} roots for 100 requests");
    // At 10% a share of 1/2 or more is dropped with near certainty.
    assert!(
        not_sampled * 2 >= roots,
        "{not_sampled} of {roots} roots not sampled at a 10% head rate"
    );

    // The few traces that head sampling let through: most are dropped
    // when their 10 s wait is over (5% of the ordinary ones are kept).
    let deadline = Instant::now() + Duration::from_secs(40);
    let tail = loop {
        let view = c.sampling().await;
        let tail = view["tail"]["report"].clone();
        if tail["dropped"].as_u64() > Some(0) && tail["pending"] == 0 {
            break tail;
        }
        assert!(
            Instant::now() < deadline,
            "no trace dropped by the lesson's tail policy: {tail}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let votes = |name: &str| {
        tail["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| (p["kept"].as_u64().unwrap(), p["not_kept"].as_u64().unwrap()))
            .unwrap()
    };
    let decided = tail["kept"].as_u64().unwrap() + tail["dropped"].as_u64().unwrap();
    let (default_kept, default_not) = votes("default");
    assert_eq!(default_kept + default_not, decided, "{tail}");
    assert!(default_not > 0, "{tail}");
    println!("lesson tail after 100 requests: {tail}");

    // The CLI reads the same state.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(["sampling", "--lab", console.url()])
        .env_remove("TRACELAB_URL")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("policy in force: lesson"), "{text}");
    assert!(text.contains("default"), "{text}");

    // And switches back: every trace kept again, counts from zero.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(["sampling", "set", "lab", "--lab", console.url()])
        .env_remove("TRACELAB_URL")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("policy in force: lab"), "{text}");
    let view = c.sampling().await;
    assert_everywhere(&view, "lab", 1.0);
    assert_eq!(view["tail"]["report"]["dropped"], 0, "{view}");

    // No process was restarted for any of it.
    let now: Vec<Option<u32>> = lab.status().children.iter().map(|c| c.pid).collect();
    assert_eq!(pids, now);

    // In compose the tail policy is the OpenTelemetry Collector's: the
    // console says so, and switches the services' head rules only.
    let compose = RunningConsole::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ConsoleState::new(compose_config).unwrap(),
    )
    .unwrap();
    let mut cc = Client::new(compose.url());
    let view = cc.sampling().await;
    assert_eq!(view["mode"], "compose");
    assert_eq!(view["tail"]["live"], false, "{view}");
    assert!(view["tail"]["report"].is_null(), "{view}");
    let note = view["tail"]["note"].as_str().unwrap();
    assert!(note.contains("otel-collector.yaml"), "{note}");
    assert_eq!(view["policy"], "lab", "{view}");
    let switched = cc.switch("lesson").await;
    assert_eq!(
        switched["applied"].as_array().unwrap().len(),
        6,
        "{switched}"
    );
    assert_eq!(switched["sampling"]["policy"], "lesson");
    // Seen from the native console: the services have the lesson's rules,
    // the collector still the lab's, so the policy in force is neither.
    let view = c.sampling().await;
    assert_eq!(view["policy"], "custom", "{view}");
    assert_eq!(view["tail"]["policy"], "lab", "{view}");
    c.switch("lab").await;

    assert!(
        !format!("{}{}", c.seen, cc.seen).contains(lab.admin_token()),
        "an answer carried the admin token"
    );
    compose.stop().await.unwrap();
    console.stop().await.unwrap();
    lab.stop().await.expect("the lab stops cleanly");
    let _ = std::fs::remove_dir_all(&home);
}
