//! `tracelab status` against a real lab whose collector accepts
//! connections and never answers: the spans the services drop from their
//! full export queues are shown by the console's `GET /api/lab` and by the
//! command, in the row of the service that lost them.
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); without them the test FAILS and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracelab::console::{ConsoleConfig, ConsoleState, RunningConsole};
use tracelab::scenario::Catalog;
use tracelab::supervisor::{Lab, LabOptions};
use tracelab_client::gateway;

/// An OTLP endpoint that accepts every connection and never answers: the
/// services' exports hang until their timeout, and their queues fill.
async fn blackhole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{addr}"), task)
}

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn gateway_dropped(lab: &Value) -> u64 {
    lab["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "gateway")
        .and_then(|s| s["health"]["telemetry"]["spans_dropped_queue_full"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_spans_a_blackholed_collector_made_services_drop() {
    let (otlp, hole) = blackhole().await;
    let mut opts = LabOptions::for_tests();
    opts.otlp_endpoint = Some(otlp);
    opts.extra_env
        .push(("OTEL_BSP_MAX_QUEUE_SIZE".into(), "16".into()));
    let lab = Lab::start(opts.clone()).await.unwrap_or_else(|e| {
        panic!("the lab starts (Postgres and RabbitMQ must be running, binaries built): {e:#}")
    });
    let home = std::env::temp_dir().join(format!(
        "tracelab-status-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&home).unwrap();
    let catalog = Catalog::load(&catalog_dir()).expect("catalog");
    let config = ConsoleConfig::for_lab(&lab, &opts, catalog, home.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let console_url = format!("http://{}", listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let console = RunningConsole::start(listener, ConsoleState::new(config).unwrap()).unwrap();

    // Logins (gateway and auth spans) until the console shows the gateway
    // dropping spans from its full queue.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        for _ in 0..20 {
            gateway::login(
                &http,
                &lab.gateway_url(),
                "alice",
                &gateway::demo_password("alice"),
            )
            .await
            .expect("alice logs in");
        }
        let view: Value = http
            .get(format!("{console_url}/api/lab"))
            .send()
            .await
            .expect("console answers")
            .json()
            .await
            .expect("JSON");
        let dropped = gateway_dropped(&view);
        if dropped > 0 {
            break dropped;
        }
        assert!(
            Instant::now() < deadline,
            "no span dropped after 60 s of logins: {view:#}"
        );
    };

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(["status", "--lab", &console_url])
        .env("TRACELAB_HOME", &home)
        .output()
        .await
        .expect("tracelab runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "every service is healthy, so status exits 0: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("service"))
        .expect("a header row")
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "dropped:queue")
        .expect("a dropped:queue column");
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("gateway "))
        .expect("a gateway row")
        .split_whitespace()
        .collect();
    let shown: u64 = row[column].parse().expect("a count");
    // Counters only grow: the command read them after the console did.
    assert!(
        shown >= seen,
        "status shows {shown}, the console saw {seen}:\n{text}"
    );
    assert!(text.contains("never reached the collector"), "{text}");

    console.stop().await.expect("the console stops");
    lab.stop().await.expect("the lab stops");
    hole.abort();
    let _ = std::fs::remove_dir_all(&home);
}
