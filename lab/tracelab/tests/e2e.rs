//! End-to-end behaviour of the lab: real service processes, real Postgres
//! and RabbitMQ, the embedded collector, asserted on the exported spans.
//!
//! Each test starts its own lab (free ports, a fresh database, its own
//! exchange and queues), so the tests run in parallel. They need Postgres
//! and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); without them they fail and say why.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tracelab::supervisor::{Lab, LabOptions, SERVICES, default_bin_dir};
use tracelab_client::gateway;
use tracelab_client::{Span, SpanKind, StatusCode as SpanStatus, TempoClient, Trace};

async fn start_lab() -> Lab {
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
    Lab::start(LabOptions::for_tests())
        .await
        .expect("the lab starts (Postgres and RabbitMQ must be running)")
}

async fn login(lab: &Lab) -> String {
    gateway::login(
        &reqwest::Client::new(),
        &lab.gateway_url(),
        "alice",
        &gateway::demo_password("alice"),
    )
    .await
    .expect("alice logs in")
}

struct Answer {
    status: StatusCode,
    body: Value,
    traceresponse: Option<String>,
}

async fn checkout(lab: &Lab, token: &str, key: &str, body: Value) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{}/api/checkout", lab.gateway_url()))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    answer(response).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let traceresponse = response
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        traceresponse,
    }
}

fn trace_id_of(answer: &Answer) -> String {
    let id = answer.body["trace_id"]
        .as_str()
        .expect("trace_id in the body")
        .to_string();
    let header = answer
        .traceresponse
        .as_deref()
        .expect("traceresponse header");
    assert_eq!(
        header.split('-').nth(1),
        Some(id.as_str()),
        "header and body name the same trace"
    );
    id
}

/// Every span of a successful checkout, as (service, name): the lesson's
/// diagram. A test that asserts on a whole checkout trace waits for all of
/// them, since each service exports its spans in its own batches.
const CHECKOUT_SPANS: &[(&str, &str)] = &[
    ("gateway", "POST /api/checkout"),
    ("gateway", "POST /verify"),
    ("auth", "POST /verify"),
    ("gateway", "POST /payments"),
    ("payment", "POST /payments"),
    ("payment", "processPayment"),
    ("payment", "validateOrder"),
    ("payment", "SELECT orders"),
    ("payment", "callExternalPaymentAPI"),
    ("payment-provider", "POST /v1/charges"),
    ("payment", "savePaymentResult"),
    ("payment", "INSERT payments"),
    ("payment", "INSERT outbox"),
    ("payment", "publish payment.completed"),
    ("notification", "process payment.completed"),
    ("notification", "sendEmail"),
    ("notification", "INSERT notifications"),
];

/// Whether the trace holds a span of each (service, name).
fn has_spans(trace: &Trace, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(service, name)| trace.find_in(service, name).is_some())
}

fn tempo(lab: &Lab) -> TempoClient {
    TempoClient::new(&lab.tempo_url()).expect("tempo client")
}

/// The one span called `name` in `service`, or a failure listing what is there.
fn span<'a>(trace: &'a Trace, service: &str, name: &str) -> &'a Span {
    trace.find_in(service, name).unwrap_or_else(|| {
        let have: Vec<String> = trace
            .spans
            .iter()
            .map(|s| format!("{}:{}", s.service, s.name))
            .collect();
        panic!("no span {service}:{name} in the trace; spans: {have:?}")
    })
}

fn assert_child(trace: &Trace, child: &Span, parent: &Span) {
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "{}:{} should be a child of {}:{}",
        child.service,
        child.name,
        parent.service,
        parent.name
    );
    assert_eq!(child.trace_id, parent.trace_id);
    assert!(trace.span(&parent.span_id).is_some());
}

/// Rows of `table` (payments or notifications) belonging to an order.
async fn rows_for_order(lab: &Lab, table: &str, order_id: &str) -> i64 {
    db_count(
        lab,
        &format!("SELECT count(*) FROM {table} WHERE order_id = $1"),
        order_id,
    )
    .await
}

/// Waits until `table` holds `expected` rows for the order (rows written
/// asynchronously, after the answer), failing after 30 s with the count seen.
async fn wait_for_rows(lab: &Lab, table: &str, order_id: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = rows_for_order(lab, table, order_id).await;
        if n == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{table} holds {n} rows for order {order_id} after 30 s, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Outbox rows (published or not) carrying the order's event.
async fn outbox_rows(lab: &Lab, order_id: &str) -> i64 {
    db_count(
        lab,
        "SELECT count(*) FROM outbox WHERE payload->>'order_id' = $1::text",
        order_id,
    )
    .await
}

async fn db_count(lab: &Lab, sql: &str, order_id: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(lab.database_url())
        .await
        .expect("database");
    let id = uuid::Uuid::parse_str(order_id).expect("order id");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .expect("count query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_one_connected_trace_across_http_and_the_queue() {
    let lab = start_lab().await;
    let token = login(&lab).await;
    let ok = checkout(
        &lab,
        &token,
        "e2e-1",
        json!({"amount": 4980, "currency": "JPY", "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let trace_id = trace_id_of(&ok);
    let trace = tempo(&lab)
        .wait_for_trace(
            &trace_id,
            |t| has_spans(t, CHECKOUT_SPANS),
            Duration::from_secs(30),
        )
        .await
        .expect("the whole trace, notification included, arrives");

    assert!(
        trace.spans.iter().all(|s| s.trace_id == trace_id),
        "one trace id everywhere"
    );
    assert!(
        trace.orphans().is_empty(),
        "no span points at a missing parent"
    );
    let roots = trace.roots();
    assert_eq!(roots.len(), 1, "exactly one root");
    let root = span(&trace, "gateway", "POST /api/checkout");
    assert_eq!(root.span_id, roots[0].span_id);
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.attr_str("http.route"), Some("/api/checkout"));
    assert_eq!(root.attr_i64("http.response.status_code"), Some(201));

    // gateway -> auth
    let verify_client = span(&trace, "gateway", "POST /verify");
    assert_eq!(verify_client.kind, SpanKind::Client);
    assert_child(&trace, verify_client, root);
    let verify_server = span(&trace, "auth", "POST /verify");
    assert_eq!(verify_server.kind, SpanKind::Server);
    assert_child(&trace, verify_server, verify_client);

    // gateway -> payment
    let pay_client = span(&trace, "gateway", "POST /payments");
    assert_eq!(pay_client.kind, SpanKind::Client);
    assert_child(&trace, pay_client, root);
    let pay_server = span(&trace, "payment", "POST /payments");
    assert_eq!(pay_server.kind, SpanKind::Server);
    assert_child(&trace, pay_server, pay_client);

    // processPayment and its children, with the lesson's attributes
    let process = span(&trace, "payment", "processPayment");
    assert_eq!(process.kind, SpanKind::Internal);
    assert_child(&trace, process, pay_server);
    assert_eq!(
        process.attr_str("payment.order_id"),
        ok.body["order_id"].as_str()
    );
    assert_eq!(process.attr_i64("payment.amount"), Some(4980));
    assert_eq!(process.attr_str("payment.currency"), Some("JPY"));
    assert_eq!(process.status_code, SpanStatus::Ok);

    let validate = span(&trace, "payment", "validateOrder");
    assert_child(&trace, validate, process);
    assert_eq!(validate.attr_str("order.status"), Some("processing"));
    let select = span(&trace, "payment", "SELECT orders");
    assert_child(&trace, select, validate);
    assert_eq!(select.kind, SpanKind::Client);
    assert_eq!(select.attr_str("db.system.name"), Some("postgresql"));
    assert_eq!(select.attr_str("db.operation.name"), Some("SELECT"));
    assert_eq!(select.attr_str("db.collection.name"), Some("orders"));
    assert!(
        select
            .attr_str("db.query.text")
            .is_some_and(|q| q.contains("FROM orders"))
    );
    assert!(
        select
            .attr_str("db.namespace")
            .is_some_and(|n| n.starts_with("tracelab_test_"))
    );

    let external = span(&trace, "payment", "callExternalPaymentAPI");
    assert_eq!(external.kind, SpanKind::Client);
    assert_child(&trace, external, process);
    assert_eq!(external.attr_str("payment.provider"), Some("stripe-mock"));
    assert_eq!(
        external.attr_str("payment.transaction_id"),
        ok.body["transaction_id"].as_str()
    );
    assert_eq!(external.status_code, SpanStatus::Ok);
    let charge = span(&trace, "payment-provider", "POST /v1/charges");
    assert_eq!(charge.kind, SpanKind::Server);
    assert_child(&trace, charge, external);
    assert!(
        charge.duration_ms() >= 90.0,
        "the provider's simulated latency shows: {} ms",
        charge.duration_ms()
    );

    let save = span(&trace, "payment", "savePaymentResult");
    assert_child(&trace, save, process);
    let insert = span(&trace, "payment", "INSERT payments");
    assert_child(&trace, insert, save);
    assert_eq!(insert.attr_str("db.system.name"), Some("postgresql"));
    let outbox = span(&trace, "payment", "INSERT outbox");
    assert_child(&trace, outbox, save);

    // the asynchronous hop
    let producer = span(&trace, "payment", "publish payment.completed");
    assert_eq!(producer.kind, SpanKind::Producer);
    assert_child(&trace, producer, process);
    assert_eq!(producer.attr_str("messaging.system"), Some("rabbitmq"));
    assert_eq!(producer.attr_str("messaging.operation.type"), Some("send"));
    assert!(
        producer
            .attr_str("messaging.destination.name")
            .is_some_and(|d| d.starts_with("tracelab.test."))
    );
    assert_eq!(
        producer.attr_str("messaging.rabbitmq.destination.routing_key"),
        Some("payment.completed")
    );
    let consumer = span(&trace, "notification", "process payment.completed");
    assert_eq!(consumer.kind, SpanKind::Consumer);
    assert_child(&trace, consumer, producer);
    assert_eq!(
        consumer.attr_str("messaging.operation.type"),
        Some("process")
    );
    assert_eq!(
        consumer.attr_str("messaging.message.id"),
        producer.attr_str("messaging.message.id")
    );
    let email = span(&trace, "notification", "sendEmail");
    assert_child(&trace, email, consumer);
    let notify = span(&trace, "notification", "INSERT notifications");
    assert_child(&trace, notify, email);

    assert!(trace.spans.len() >= 12, "{} spans", trace.spans.len());
    assert!(
        trace.errors().is_empty(),
        "a good checkout has no error spans"
    );
    lab.stop().await.expect("lab stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_the_published_development_secret_is_refused() {
    let lab = start_lab().await;
    // What anyone could do with the source before: sign any identity with
    // the development secret it published (bob, or a user that does not
    // exist) and read alice's order or check out. Every auth now has its own
    // secret.
    let now = chrono::Utc::now().timestamp();
    let forge = |sub: &str, name: &str| {
        auth::token::Signer::new("tracelab-dev-secret-change-me").issue(&auth::token::Claims {
            sub: sub.into(),
            name: name.into(),
            iat: now,
            exp: now + 600,
        })
    };
    let bob = forge("u-1002", "bob");
    let nobody = forge("u-9999", "nobody");
    let body = json!({"amount": 100, "currency": "JPY", "card": "4242424242424242"});

    let genuine = checkout(&lab, &login(&lab).await, "genuine-1", body.clone()).await;
    assert_eq!(genuine.status, StatusCode::CREATED, "{}", genuine.body);
    let alices_order = genuine.body["order_id"].as_str().expect("order id");

    for (who, token) in [("bob", &bob), ("a user that does not exist", &nobody)] {
        let refused = checkout(&lab, token, &format!("forged-{who}"), body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNAUTHORIZED,
            "a checkout as {who}: {}",
            refused.body
        );
        let read = reqwest::Client::new()
            .get(format!("{}/api/orders/{alices_order}", lab.gateway_url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("gateway answers");
        let status = read.status();
        let text = read.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "alice's order read as {who}: {text}"
        );
        assert!(
            !text.contains(alices_order) && !text.contains("4242"),
            "a refused read leaks nothing of the order: {text}"
        );
    }
    lab.stop().await.expect("lab stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_an_error_trace_a_402_and_no_notification() {
    let lab = start_lab().await;
    let token = login(&lab).await;
    let declined = checkout(
        &lab,
        &token,
        "e2e-declined",
        json!({"amount": 1200, "currency": "JPY", "card": "4000000000000002"}),
    )
    .await;
    assert_eq!(
        declined.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        declined.body
    );
    assert_eq!(declined.body["error"]["code"], "card_declined");
    assert_eq!(declined.body["error"]["message"], "Your card was declined.");
    let order_id = declined.body["error"]["order_id"]
        .as_str()
        .expect("order id")
        .to_string();
    let trace_id = trace_id_of(&declined);
    // Every span asserted on below; each service exports in its own batches.
    let expected = [
        ("gateway", "POST /api/checkout"),
        ("gateway", "POST /payments"),
        ("payment", "processPayment"),
        ("payment", "callExternalPaymentAPI"),
        ("payment-provider", "POST /v1/charges"),
    ];
    let trace = tempo(&lab)
        .wait_for_trace(
            &trace_id,
            |t| {
                expected
                    .iter()
                    .all(|(svc, name)| t.spans.iter().any(|s| s.service == *svc && s.name == *name))
            },
            Duration::from_secs(30),
        )
        .await
        .expect("the declined checkout's spans arrive");

    for name in ["callExternalPaymentAPI", "processPayment"] {
        let s = span(&trace, "payment", name);
        assert_eq!(s.status_code, SpanStatus::Error, "{name} is ERROR");
        assert!(
            s.status_message.contains("declined"),
            "{name} status message says why: {:?}",
            s.status_message
        );
        let exception = s
            .event("exception")
            .unwrap_or_else(|| panic!("{name} records the exception event"));
        assert!(exception.attributes.contains_key("exception.message"));
        assert!(exception.attributes.contains_key("exception.type"));
    }
    assert_eq!(
        span(&trace, "payment", "callExternalPaymentAPI").attr_i64("http.response.status_code"),
        Some(402)
    );
    assert_eq!(
        span(&trace, "payment-provider", "POST /v1/charges").attr_i64("http.response.status_code"),
        Some(402)
    );
    // The client side of a 4xx is an error; the gateway's server span is not.
    assert_eq!(
        span(&trace, "gateway", "POST /payments").status_code,
        SpanStatus::Error
    );
    assert_ne!(
        span(&trace, "gateway", "POST /api/checkout").status_code,
        SpanStatus::Error
    );

    // A span payment ends before processPayment is queued for export before
    // it, so with processPayment here a savePaymentResult would be too.
    assert!(trace.find("savePaymentResult").is_none(), "nothing saved");
    // The answer came after payment's transaction: no payment and no outbox
    // row now means nothing is ever published or consumed for this order.
    assert_eq!(outbox_rows(&lab, &order_id).await, 0, "nothing to publish");
    assert_eq!(rows_for_order(&lab, "notifications", &order_id).await, 0);
    assert_eq!(rows_for_order(&lab, "payments", &order_id).await, 0);
    lab.stop().await.expect("lab stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_charges_and_notifies_once() {
    let lab = start_lab().await;
    let token = login(&lab).await;
    let body = json!({"items": [{"product_id": 1, "quantity": 2}], "card": "4242424242424242"});
    let first = checkout(&lab, &token, "e2e-same-key", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(
        first.body["amount"], 4960,
        "priced from the catalogue: 2 x 2480"
    );
    let second = checkout(&lab, &token, "e2e-same-key", body).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["idempotent_replay"], true);
    assert_eq!(second.body["order_id"], first.body["order_id"]);
    assert_eq!(second.body["transaction_id"], first.body["transaction_id"]);
    let reused = checkout(
        &lab,
        &token,
        "e2e-same-key",
        json!({"amount": 1, "currency": "JPY", "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.body
    );
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");

    // The replay's trace shows no second charge.
    let replay_trace = tempo(&lab)
        .wait_for_trace(
            &trace_id_of(&second),
            // payment's server span ends after any call it makes.
            |t| has_spans(t, &[("payment", "POST /payments")]),
            Duration::from_secs(30),
        )
        .await
        .expect("replay trace");
    assert!(
        replay_trace.find("callExternalPaymentAPI").is_none(),
        "a replay never calls the provider"
    );

    let order_id = first.body["order_id"].as_str().unwrap().to_string();
    wait_for_rows(&lab, "notifications", &order_id, 1).await;
    assert_eq!(rows_for_order(&lab, "payments", &order_id).await, 1);
    assert_eq!(outbox_rows(&lab, &order_id).await, 1);
    assert_eq!(rows_for_order(&lab, "notifications", &order_id).await, 1);
    lab.stop().await.expect("lab stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_4xx_and_the_services_stay_healthy() {
    let lab = start_lab().await;
    let token = login(&lab).await;
    let http = reqwest::Client::new();
    let gw = lab.gateway_url();
    let expect = |a: &Answer, status: StatusCode, code: &str| {
        assert_eq!(a.status, status, "{}", a.body);
        assert_eq!(a.body["error"]["code"], code, "{}", a.body);
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };

    let a = answer(
        http.post(format!("{gw}/api/login"))
            .header("content-type", "application/json")
            .body("{\"username\":")
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::BAD_REQUEST, "invalid_json");
    let a = answer(
        http.post(format!("{gw}/api/login"))
            .json(&json!({"user": "alice"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let a = answer(
        http.post(format!("{gw}/api/login"))
            .json(&json!({"username": "alice", "password": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::UNAUTHORIZED, "unauthorized");

    let card = "4242424242424242";
    let big = format!(
        "{{\"card\":\"{card}\",\"amount\":1,\"pad\":\"{}\"}}",
        "x".repeat(200 * 1024)
    );
    // (body, Idempotency-Key, signed in, expected status, expected code)
    let cases: Vec<(String, Option<&str>, bool, StatusCode, &str)> = vec![
        (
            "{\"amount\": 10,".into(),
            Some("bad-1"),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            big,
            Some("bad-2"),
            true,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            json!({"amount": 1, "card": card}).to_string(),
            None,
            true,
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
        ),
        (
            json!({"amount": 1, "card": card}).to_string(),
            Some("bad-3"),
            false,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            json!({"amount": -5, "currency": "JPY", "card": card}).to_string(),
            Some("bad-4"),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_amount",
        ),
        (
            json!({"amount": 5, "currency": "XXX", "card": card}).to_string(),
            Some("bad-5"),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_currency",
        ),
        (
            json!({"items": [{"product_id": 99999, "quantity": 1}], "card": card}).to_string(),
            Some("bad-6"),
            true,
            StatusCode::BAD_REQUEST,
            "unknown_product",
        ),
        (
            json!({"amount": 5, "card": "12ab"}).to_string(),
            Some("bad-7"),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_card",
        ),
    ];
    for (body, key, signed_in, status, code) in cases {
        let mut req = http
            .post(format!("{gw}/api/checkout"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        if signed_in {
            req = req.bearer_auth(&token);
        }
        expect(&answer(req.send().await.unwrap()).await, status, code);
    }

    let a = answer(
        http.get(format!("{gw}/api/products?limit=0"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::BAD_REQUEST, "invalid_limit");
    // A NUL reached Postgres before, which refuses it: a 500.
    let a = answer(
        http.get(format!("{gw}/api/products?q=tea%00"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::BAD_REQUEST, "invalid_query");
    let a = answer(
        http.get(format!("{gw}/api/orders/not-a-uuid"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::BAD_REQUEST, "invalid_order_id");
    let a = answer(
        http.get(format!("{gw}/api/nothing-here"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::NOT_FOUND, "not_found");
    let a = answer(
        http.delete(format!("{gw}/api/checkout"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // The admin API is not on the public port at all (tests/isolation.rs).
    let a = answer(http.get(format!("{gw}/admin/faults")).send().await.unwrap()).await;
    expect(&a, StatusCode::NOT_FOUND, "not_found");
    // The W3C harness endpoint is off unless switched on: no service, the
    // gateway's public port included, forwards a caller's JSON anywhere.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/v1/charges", elsewhere.local_addr().unwrap());
    for (name, url) in lab.services() {
        let a = answer(
            http.post(format!("{url}/_w3c/test"))
                .json(&json!([{"url": target, "arguments": {"amount": 100}}]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{name}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "not_found", "{name}");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), elsewhere.accept())
            .await
            .is_err(),
        "nothing was forwarded"
    );

    for (name, url) in lab.services() {
        let health = http.get(format!("{url}/health")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK, "{name} is still healthy");
    }
    // And a good checkout still works.
    let ok = checkout(
        &lab,
        &token,
        "after-bad",
        json!({"amount": 10, "currency": "JPY", "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    lab.stop().await.expect("lab stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_traceparents_are_continued_and_invalid_ones_restart_the_trace() {
    let lab = start_lab().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/products?q=tea", lab.gateway_url());
    let tempo = tempo(&lab);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let a = answer(
        http.get(&url)
            .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
            .header("tracestate", "rojo=00f067aa0ba902b7")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        trace_id_of(&a),
        trace_id,
        "a valid traceparent is continued"
    );
    let trace = tempo
        .wait_for_trace(
            trace_id,
            |t| {
                has_spans(
                    t,
                    &[
                        ("gateway", "GET /api/products"),
                        ("search", "GET /products"),
                    ],
                )
            },
            Duration::from_secs(30),
        )
        .await
        .expect("continued trace");
    let root = span(&trace, "gateway", "GET /api/products");
    assert_eq!(
        root.parent_span_id.as_deref(),
        Some(parent_id),
        "the caller's span is the parent"
    );
    let search = span(&trace, "search", "GET /products");
    assert_eq!(search.trace_id, trace_id);

    let bad_id = "4bf92f3577b34da6a3ce929d0e0e4736".to_uppercase();
    let invalid = [
        format!("00-{bad_id}-{parent_id}-01"), // uppercase
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".to_string(), // short trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01".to_string(), // short parent id
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(), // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_string(), // all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(), // version ff
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(), // short version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x".to_string(), // v00 with extra field
        "00-abc123def456-span789-01".to_string(), // the lesson's sketch
    ];
    for header in invalid {
        let a = answer(
            http.get(&url)
                .header("traceparent", &header)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        let new_id = trace_id_of(&a);
        assert_ne!(new_id, trace_id, "{header} must restart the trace");
        assert_ne!(new_id, "00000000000000000000000000000000");
        let trace = tempo
            .wait_for_trace(
                &new_id,
                |t| t.find("GET /api/products").is_some(),
                Duration::from_secs(30),
            )
            .await
            .expect("new trace");
        let root = span(&trace, "gateway", "GET /api/products");
        assert_eq!(
            root.parent_span_id, None,
            "{header}: the new trace starts at the gateway"
        );
    }
    lab.stop().await.expect("lab stops");
}

/// Reads one HTTP request from a socket and returns its header block.
async fn capture_one_request(listener: tokio::net::TcpListener) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener.accept().await.expect("harness callback arrives");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await.expect("read");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    String::from_utf8_lossy(&buf).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_w3c_harness_endpoint_propagates_the_context() {
    // The harness's server, and a server it must never reach.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let harness = format!("http://{}", listener.local_addr().unwrap());
    let callback = format!("{harness}/callback");
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign = format!("http://{}/v1/charges", elsewhere.local_addr().unwrap());
    let mut opts = LabOptions::for_tests();
    opts.extra_env
        .push(("TRACELAB_W3C_HARNESS".into(), harness.clone()));
    let lab = Lab::start(opts).await.expect("lab starts");

    let refused = reqwest::Client::new()
        .post(format!("{}/_w3c/test", lab.gateway_url()))
        .json(&json!([{"url": foreign, "arguments": {"amount": 100}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "target_not_allowed", "{body}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), elsewhere.accept())
            .await
            .is_err(),
        "nothing reached the foreign address"
    );

    let captured = tokio::spawn(capture_one_request(listener));
    let response = reqwest::Client::new()
        .post(format!("{}/_w3c/test", lab.gateway_url()))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("tracestate", "congo=t61rcWkgMzE")
        .json(&json!([{"url": callback, "arguments": [{"url": "http://unused", "arguments": []}]}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = captured.await.unwrap();
    let traceparent = headers
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .expect("the callback carries a traceparent");
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
    assert_ne!(
        parts[2], "b7ad6b7169203331",
        "a new parent id: our own span"
    );
    assert!(
        headers.contains("tracestate: congo=t61rcwkgmze"),
        "tracestate is passed on: {headers}"
    );
    lab.stop().await.expect("lab stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_queue_and_the_consumer_keeps_going() {
    let lab = start_lab().await;
    let opts_exchange = lab_exchange(&lab);
    let conn = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ is running on 127.0.0.1:5672");
    let channel = conn.create_channel().await.unwrap();
    // Well-formed JSON with a NUL in user_id: invalid (Postgres refuses NUL),
    // so poison at once, not a transient failure retried.
    let nul_user = json!({
        "event_id": "00000000-0000-4000-8000-000000000001",
        "occurred_at": "2026-01-01T00:00:00Z",
        "order_id": "00000000-0000-4000-8000-000000000002",
        "payment_id": "00000000-0000-4000-8000-000000000003",
        "user_id": "u-1001\u{0}",
        "amount": 100,
        "currency": "JPY"
    })
    .to_string();
    for poison in [
        &b"not json at all"[..],
        br#"{"event_id":"also not a uuid"}"#,
        nul_user.as_bytes(),
    ] {
        channel
            .basic_publish(
                ShortString::from(opts_exchange.0.clone()),
                ShortString::from("payment.completed"),
                BasicPublishOptions::default(),
                poison,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dlq = format!("{}.dlq", opts_exchange.1);
    let mut parked = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if let Some(message) = channel
            .basic_get(
                ShortString::from(dlq.clone()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            parked.push(message.delivery.data.clone());
            if parked.len() == 3 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(parked.len(), 3, "every poison message is parked in {dlq}");
    assert_eq!(
        parked[0], b"not json at all",
        "nothing the producer sent is lost"
    );

    // The consumer is still running: the next good event is processed.
    let token = login(&lab).await;
    let ok = checkout(
        &lab,
        &token,
        "after-poison",
        json!({"amount": 700, "currency": "JPY", "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let trace = tempo(&lab)
        .wait_for_trace(
            &trace_id_of(&ok),
            |t| {
                has_spans(
                    t,
                    &[
                        ("notification", "process payment.completed"),
                        ("notification", "INSERT notifications"),
                    ],
                )
            },
            Duration::from_secs(30),
        )
        .await
        .expect("the good event is consumed");
    assert!(trace.find("process payment.completed").is_some());
    // The counters move when the message is settled, just after its span.
    let health_url = format!("{}/health", lab.service_url("notification").unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let health = loop {
        let health: Value = reqwest::get(&health_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["processed"] == 1 || tokio::time::Instant::now() >= deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health["dead_lettered"], 3, "{health}");
    assert_eq!(
        health["requeued"], 0,
        "poison is parked at once, never retried: {health}"
    );
    assert_eq!(health["processed"], 1, "{health}");
    let _ = conn.close(200, ShortString::from("done")).await;
    lab.stop().await.expect("lab stops");
}

/// The test lab's exchange and queue names, read back from its services' env.
fn lab_exchange(lab: &Lab) -> (String, String) {
    (lab.exchange().to_string(), lab.queue().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_export_over_grpc_when_asked() {
    // A collector of our own, so the lab's services can be pointed at its
    // gRPC port with the standard variables.
    let collector =
        tracelab_collector::Collector::start(tracelab_collector::CollectorConfig::ephemeral())
            .await
            .expect("collector starts");
    let dir = default_bin_dir();
    assert!(
        dir.join("gateway").is_file(),
        "service binaries missing in {} (run `cargo build --workspace --bins`)",
        dir.display()
    );
    let mut opts = LabOptions::for_tests();
    opts.otlp_endpoint = Some(format!("http://{}", collector.otlp_grpc_addr()));
    opts.extra_env
        .push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()));
    let lab = Lab::start(opts).await.expect("lab starts");
    let token = login(&lab).await;
    let ok = checkout(
        &lab,
        &token,
        "grpc-1",
        json!({"amount": 300, "currency": "JPY", "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let tempo = TempoClient::new(&format!("http://{}", collector.api_addr())).unwrap();
    let trace = tempo
        .wait_for_trace(
            &trace_id_of(&ok),
            |t| has_spans(t, CHECKOUT_SPANS),
            Duration::from_secs(30),
        )
        .await
        .expect("the trace arrives over OTLP/gRPC");
    assert!(trace.orphans().is_empty());
    assert_eq!(trace.services().len(), 5, "{:?}", trace.services());
    // The login trace (3 spans) arrived the same way.
    assert_eq!(
        collector.stats().spans_received as usize,
        trace.spans.len() + 3,
        "every span came over gRPC"
    );
    lab.stop().await.expect("lab stops");
    collector.shutdown().await;
}
