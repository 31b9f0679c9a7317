//! `tracelab collector` runs the embedded collector alone: it reports its
//! bound addresses (port 0 works), answers `/ready`, accepts OTLP/JSON, and
//! the Tempo client, `tracelab trace` and `tracelab traces` read what it stored.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tracelab_client::{SearchQuery, SpanKind, StatusCode, TempoClient};

struct Running {
    child: Child,
    otlp_http: SocketAddr,
    api: SocketAddr,
}

/// Starts `tracelab collector` on free ports and waits for its three
/// `listening` lines.
async fn start_collector() -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args([
            "collector",
            "--otlp-http",
            "127.0.0.1:0",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env_remove("TRACELAB_SAMPLING_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tracelab collector");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut otlp_http, mut api, mut grpc) = (None, None, None);
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] != "listening" {
                continue;
            }
            let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
            match v["listener"].as_str() {
                Some("otlp_http") => otlp_http = Some(addr),
                Some("otlp_grpc") => grpc = Some(addr),
                Some("api") => api = Some(addr),
                _ => {}
            }
            if otlp_http.is_some() && api.is_some() && grpc.is_some() {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "collector did not log its listening lines");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (otlp_http, api) = (otlp_http.unwrap(), api.unwrap());
    assert_ne!(api.port(), 0);
    Running {
        child,
        otlp_http,
        api,
    }
}

const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";

/// A 4-span checkout-like trace in OTLP/JSON (hex ids, as the spec says).
fn export_body() -> Value {
    let span = |id: &str, parent: &str, name: &str, kind: u8, start_ms: u64, end_ms: u64| {
        let base: u64 = 1_700_000_000_000_000_000;
        json!({
            "traceId": TRACE_ID, "spanId": id, "parentSpanId": parent, "name": name, "kind": kind,
            "startTimeUnixNano": (base + start_ms * 1_000_000).to_string(),
            "endTimeUnixNano": (base + end_ms * 1_000_000).to_string(),
        })
    };
    let mut charge = span(
        "3333333333333333",
        "2222222222222222",
        "POST /v1/charges",
        3,
        20,
        80,
    );
    charge["status"] = json!({"code": 2, "message": "card declined"});
    charge["attributes"] =
        json!([{"key": "http.response.status_code", "value": {"intValue": "402"}}]);
    json!({"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gateway"}}]},
         "scopeSpans": [{"scope": {"name": "test"}, "spans": [
            span("1111111111111111", "", "POST /api/checkout", 2, 0, 100),
         ]}]},
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payment"}}]},
         "scopeSpans": [{"scope": {"name": "test"}, "spans": [
            span("2222222222222222", "1111111111111111", "POST /payments", 2, 10, 90),
            charge,
            span("4444444444444444", "2222222222222222", "INSERT payments", 3, 82, 88),
         ]}]}
    ]})
}

async fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_command_serves_tempo_api() {
    let mut running = start_collector().await;
    let api = format!("http://{}", running.api);
    let http = reqwest::Client::new();

    // /ready, directly and through `tracelab health`.
    let ready = http.get(format!("{api}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap().trim(), "ready");
    let out = run_cli(&["health", &format!("{api}/ready")]).await;
    assert!(out.status.success(), "{out:?}");

    // Export one trace over OTLP/HTTP JSON.
    let resp = http
        .post(format!("http://{}/v1/traces", running.otlp_http))
        .header("content-type", "application/json")
        .body(export_body().to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);

    // Read it back through the Tempo client (base64 ids on the wire).
    let tempo = TempoClient::new(&api).unwrap();
    let trace = tempo
        .wait_for_trace(TRACE_ID, |t| t.len() == 4, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(trace.trace_id(), Some(TRACE_ID));
    let roots = trace.roots();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].name, "POST /api/checkout");
    assert_eq!(roots[0].service, "gateway");
    assert_eq!(roots[0].kind, SpanKind::Server);
    let payment = trace.children(&roots[0].span_id);
    assert_eq!(payment.len(), 1);
    assert_eq!(payment[0].service, "payment");
    let kids: Vec<&str> = trace
        .children(&payment[0].span_id)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(kids, ["POST /v1/charges", "INSERT payments"]);
    let charge = trace.find("POST /v1/charges").unwrap();
    assert_eq!(charge.status_code, StatusCode::Error);
    assert_eq!(charge.status_message, "card declined");
    assert_eq!(charge.attr_i64("http.response.status_code"), Some(402));
    assert_eq!(trace.service_of("3333333333333333"), Some("payment"));
    assert!(trace.orphans().is_empty());

    // An unknown trace is None, not an error.
    assert!(
        tempo
            .get_trace("00000000000000000000000000000abc")
            .await
            .unwrap()
            .is_none()
    );

    // Search finds it, with per-service stats.
    let found = tempo
        .search(&SearchQuery {
            tags: vec![("service.name".into(), "gateway".into())],
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    let hit = found
        .iter()
        .find(|t| t.trace_id == TRACE_ID)
        .expect("trace in search results");
    assert_eq!(hit.root_service_name, "gateway");
    assert_eq!(hit.root_trace_name, "POST /api/checkout");

    // The waterfall command.
    let out = run_cli(&["trace", TRACE_ID, "--tempo", &api, "--width", "100"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gateway  POST /api/checkout"), "{stdout}");
    assert!(stdout.contains("└─ payment  POST /payments"), "{stdout}");
    assert!(
        stdout.contains("   ├─ payment  POST /v1/charges"),
        "{stdout}"
    );
    assert!(stdout.contains("✗ card declined"), "{stdout}");
    assert!(stdout.contains("4 spans · 2 services"), "{stdout}");

    // The list command.
    let out = run_cli(&["traces", "--tempo", &api]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(TRACE_ID), "{stdout}");

    // An unknown id is a readable error.
    let out = run_cli(&["trace", "abc", "--tempo", &api]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // SIGTERM: clean exit.
    let pid = running.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), running.child.wait())
        .await
        .expect("collector exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
