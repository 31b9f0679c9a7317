//! Smoke test of the supervisor: `Lab::start(LabOptions::for_tests())` brings
//! up the six services on free ports with a fresh database, one checkout
//! produces one trace that reaches the notification consumer, and `stop`
//! leaves no process and no database behind.
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries next to
//! the test binary (`cargo build --workspace --bins`); without them it fails
//! and says how to build them.
//! The full end-to-end suite lives in the workspace's `tests/`.

#[path = "support/pids.rs"]
mod pids;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection as _;
use tracelab::supervisor::{Lab, LabOptions, SERVICES, default_bin_dir};
use tracelab_client::gateway::{self, checkout_trace_complete};
use tracelab_client::{SpanKind, TempoClient};

/// Fails the test, saying how to build them, when a service binary is missing.
fn require_binaries() {
    let dir = default_bin_dir();
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| !dir.join(s).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "service binaries missing in {}: {} (run `cargo build --workspace --bins`)",
        dir.display(),
        missing.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_starts_serves_a_checkout_and_stops_clean() {
    require_binaries();
    let opts = LabOptions::for_tests();
    let database_url = opts.database_url.clone();
    let lab = Lab::start(opts).await.expect("lab starts");
    let pids: Vec<u32> = SERVICES.iter().filter_map(|s| lab.pid(s)).collect();
    assert_eq!(pids.len(), 6);
    for (name, url) in lab.services() {
        assert!(url.starts_with("http://127.0.0.1:"), "{name}: {url}");
        assert!(!url.ends_with(":0"), "{name}: {url}");
    }

    let http = reqwest::Client::new();
    let gw = lab.gateway_url();
    let token = gateway::login(&http, &gw, "alice", &gateway::demo_password("alice"))
        .await
        .expect("alice logs in");
    let resp = http
        .post(format!("{gw}/api/checkout"))
        .bearer_auth(&token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"amount": 4980, "currency": "JPY", "card": "4242424242424242"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status} {body}\n{}", lab.dump_logs());
    let trace_id = body["trace_id"].as_str().expect("trace_id").to_string();

    let tempo = TempoClient::new(&lab.tempo_url()).unwrap();
    let trace = tempo
        .wait_for_trace(
            &trace_id,
            |t| checkout_trace_complete(t, true),
            Duration::from_secs(15),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.dump_logs()));
    let root = trace.roots()[0];
    assert_eq!(
        (root.service.as_str(), root.name.as_str(), root.kind),
        ("gateway", "POST /api/checkout", SpanKind::Server)
    );
    let consumer = trace
        .find_by(|s| s.service == "notification" && s.kind == SpanKind::Consumer)
        .unwrap();
    let producer = trace
        .parent(consumer)
        .expect("consumer has its producer parent");
    assert_eq!(producer.kind, SpanKind::Producer);
    assert_eq!(producer.service, "payment");
    assert!(trace.errors().is_empty(), "{trace:#?}");

    lab.stop().await.expect("clean stop");
    for pid in pids {
        assert!(!pids::pid_alive(pid), "service pid {pid} still running");
    }
    let gone = sqlx::PgConnection::connect(&database_url).await;
    assert!(gone.is_err(), "test database still exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_is_explained() {
    let mut opts = LabOptions::for_tests();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    opts.database_url = format!("postgres://postgres@127.0.0.1:{port}/x");
    require_binaries();
    let err = Lab::start(opts).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot connect to Postgres"), "{msg}");
    assert!(msg.contains("pg_ctlcluster"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_rabbitmq_is_explained() {
    let mut opts = LabOptions::for_tests();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    opts.amqp_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let database_url = opts.database_url.clone();
    require_binaries();
    let err = Lab::start(opts).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot connect to RabbitMQ"), "{msg}");
    assert!(msg.contains("rabbitmq-server -detached"), "{msg}");
    // Checked before the database is created: nothing to clean up.
    let created = sqlx::PgConnection::connect(&database_url).await;
    assert!(
        created.is_err(),
        "database created despite the failed start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_lab_kills_children_and_drops_the_test_db() {
    require_binaries();
    let opts = LabOptions::for_tests();
    let database_url = opts.database_url.clone();
    let lab = Lab::start(opts).await.expect("lab starts");
    let pids: Vec<u32> = SERVICES.iter().filter_map(|s| lab.pid(s)).collect();
    drop(lab); // as a panicking test would
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| pids::pid_alive(p)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in pids {
        assert!(!pids::pid_alive(pid), "service pid {pid} survived the drop");
    }
    let gone = sqlx::PgConnection::connect(&database_url).await;
    assert!(gone.is_err(), "test database survived the drop");
}
