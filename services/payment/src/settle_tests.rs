//! Payments that always end: the reconciler, retries of a key whose first
//! attempt went wrong, and a charge that outlives its request. Each test
//! has a database of its own (real Postgres) and the real payment-provider
//! mock on port 0, so a charge, its lookup by idempotency key and its
//! latency are the provider's own.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use tracelab_contract::fault::{FaultKind, FaultSpec};
use tracelab_db::testing::TestDatabase;

use crate::store::PaymentRow;

use super::tests::{CARD, pay, state};
use super::*;

/// A card the provider declines for insufficient funds.
const POOR_CARD: &str = "4000000000009995";

/// The real mock provider, served on port 0.
struct RealProvider {
    url: String,
    faults: FaultRegistry,
    http: reqwest::Client,
}

impl RealProvider {
    async fn start(latency_ms: u64) -> Self {
        let faults = FaultRegistry::new(ServiceName::PaymentProvider);
        let config = payment_provider::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency_ms: latency_ms..=latency_ms,
            w3c_harness: W3cHarness::off(),
            admin: tracelab_service::config::Admin {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                token: tracelab_service::config::AdminToken::random(),
            },
        };
        let app =
            payment_provider::routes(payment_provider::AppState::new(&config, faults.clone()));
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            faults,
            http: reqwest::Client::new(),
        }
    }

    /// Charges `card` with the order's id as the idempotency key, the way
    /// payment does, and returns the provider's answer.
    async fn charge(&self, order: &OrderRow, card: &str) -> Value {
        self.http
            .post(format!("{}/v1/charges", self.url))
            .header("idempotency-key", order.id.to_string())
            .json(&json!({"amount": order.amount, "currency": "jpy", "card": card}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The charge made with `order_id` as its key, or `Null`.
    async fn charge_of(&self, order_id: Uuid) -> Value {
        let list: Value = self
            .http
            .get(format!(
                "{}/v1/charges?idempotency_key={order_id}",
                self.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["data"][0].clone()
    }

    /// Waits until the charge of `order_id` is no longer pending.
    async fn wait_until_settled(&self, order_id: Uuid) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let charge = self.charge_of(order_id).await;
            if charge["status"] != "pending" {
                return charge;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the provider never finished charging {order_id}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A slow link to the provider, as a congested network or a queueing proxy
/// is: it delivers every `POST /v1/charges` `delay` late, and carries it to
/// the provider whether or not the sender is still listening (the bytes
/// were sent). Everything else passes at once.
struct LateLink {
    url: String,
    /// The provider's answers to the delayed charges, as they arrive.
    delivered: tokio::sync::watch::Receiver<Vec<(u16, Value)>>,
}

impl LateLink {
    async fn start(provider: &str, delay: Duration) -> Self {
        let (tx, delivered) = tokio::sync::watch::channel(Vec::new());
        let tx = Arc::new(tx);
        let upstream = provider.to_string();
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let (tx, upstream, http) = (tx.clone(), upstream.clone(), http.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let late = parts.method == http::Method::POST && parts.uri.path() == "/v1/charges";
                let send = async move {
                    if late {
                        tokio::time::sleep(delay).await;
                    }
                    let mut forward =
                        http.request(parts.method.clone(), format!("{upstream}{}", parts.uri));
                    for (name, value) in &parts.headers {
                        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
                            forward = forward.header(name, value);
                        }
                    }
                    let answer = forward.body(body).send().await.unwrap();
                    let status = answer.status().as_u16();
                    let answer: Value = answer.json().await.unwrap();
                    if late {
                        tx.send_modify(|d| d.push((status, answer.clone())));
                    }
                    (StatusCode::from_u16(status).unwrap(), axum::Json(answer))
                };
                // On a task of its own: the sender hanging up does not
                // recall what it sent.
                tokio::spawn(send).await.unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, delivered }
    }

    /// Waits until `n` delayed charges have reached the provider and been
    /// answered, and returns their answers.
    async fn wait_delivered(&mut self, n: usize) -> Vec<(u16, Value)> {
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            self.delivered.wait_for(|d| d.len() >= n),
        )
        .await;
        got.expect("the delayed charges were never delivered")
            .unwrap()
            .clone()
    }
}

/// A database, the real provider answering after `latency_ms`, and a
/// payment state using both.
async fn setup(latency_ms: u64) -> (AppState, TestDatabase, RealProvider) {
    let db = TestDatabase::create().await;
    let provider = RealProvider::start(latency_ms).await;
    let state = state(db.pool().clone(), db.url(), &provider.url);
    (state, db, provider)
}

/// An order left `processing`, as a request that died would leave it.
async fn processing_order(state: &AppState, key: &str, amount: i64) -> OrderRow {
    let new = NewOrder {
        id: Uuid::new_v4(),
        user_id: "u-1".into(),
        idempotency_key: key.into(),
        amount,
        currency: "JPY".into(),
        items: Vec::new(),
        trace_context: Default::default(),
    };
    let Created::New(id) = state.store.create_order(&new).await.unwrap() else {
        panic!("the key {key} was new");
    };
    state.store.find_order(id).await.unwrap().unwrap()
}

/// Makes the order look untouched for an hour.
async fn abandon(db: &TestDatabase, id: Uuid) {
    sqlx::query("UPDATE orders SET updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();
}

async fn count(db: &TestDatabase, table: &str, id: Uuid) -> i64 {
    let sql = match table {
        "payments" => "SELECT count(*) FROM payments WHERE order_id = $1",
        "outbox" => "SELECT count(*) FROM outbox WHERE payload->>'order_id' = $1::text",
        other => panic!("no count for {other}"),
    };
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn order_of(state: &AppState, id: Uuid) -> OrderRow {
    state.store.find_order(id).await.unwrap().unwrap()
}

fn body(amount: i64) -> String {
    format!(r#"{{"user_id": "u-1", "card": "{CARD}", "amount": {amount}}}"#)
}

/// `POST /payments` with the response headers.
async fn pay_with_headers(
    state: &AppState,
    key: &str,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let request = Request::post("/payments")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router(state.clone(), &W3cHarness::off())
        .oneshot(request)
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

const HOUR: Duration = Duration::from_secs(3600);
const AFTER: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_stuck_order_charged_at_the_provider_is_completed_once_by_the_reconciler() {
    let (state, db, provider) = setup(0).await;
    let order = processing_order(&state, "stuck-1", 4980).await;
    let charge = provider.charge(&order, CARD).await;
    assert_eq!(charge["status"], "succeeded", "{charge}");

    // Fresh orders belong to their request: not touched.
    assert_eq!(
        reconcile::pass(&state, AFTER).await.unwrap(),
        reconcile::Pass::default()
    );
    assert_eq!(order_of(&state, order.id).await.status, "processing");

    abandon(&db, order.id).await;
    let done = reconcile::pass(&state, AFTER).await.unwrap();
    assert_eq!(done.completed, 1, "{done:?}");
    let settled = order_of(&state, order.id).await;
    assert_eq!(settled.status, "completed");
    let payment = state.store.find_payment(order.id).await.unwrap().unwrap();
    assert_eq!(payment.transaction_id, charge["id"].as_str().unwrap());
    assert_eq!(payment.card_last4, "4242");
    assert_eq!(payment.amount, 4980);
    assert_eq!(count(&db, "payments", order.id).await, 1);
    assert_eq!(
        count(&db, "outbox", order.id).await,
        1,
        "one payment.completed event"
    );
    let event: Value = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_id IS NOT NULL")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(event["payment_id"], payment.id.to_string());
    assert_eq!(event["transaction_id"], charge["id"]);

    // Settled orders are not looked at again.
    assert_eq!(
        reconcile::pass(&state, Duration::ZERO).await.unwrap(),
        reconcile::Pass::default()
    );
    assert_eq!(count(&db, "payments", order.id).await, 1);
    assert_eq!(count(&db, "outbox", order.id).await, 1);
}

#[tokio::test]
async fn a_stuck_order_never_charged_is_failed_and_a_declined_one_declined() {
    let (state, db, provider) = setup(0).await;
    let never = processing_order(&state, "never-charged", 300).await;
    let poor = processing_order(&state, "declined", 300).await;
    let charge = provider.charge(&poor, POOR_CARD).await;
    assert_eq!(charge["error"]["code"], "card_declined", "{charge}");
    abandon(&db, never.id).await;
    abandon(&db, poor.id).await;

    let done = reconcile::pass(&state, AFTER).await.unwrap();
    assert_eq!(
        (done.failed, done.declined, done.completed),
        (1, 1, 0),
        "{done:?}"
    );
    let never = order_of(&state, never.id).await;
    assert_eq!(
        (never.status.as_str(), never.failure_code.as_deref()),
        ("failed", Some("not_charged"))
    );
    let poor = order_of(&state, poor.id).await;
    assert_eq!(
        (poor.status.as_str(), poor.failure_code.as_deref()),
        ("declined", Some("card_declined"))
    );
    for id in [never.id, poor.id] {
        assert_eq!(count(&db, "payments", id).await, 0);
        assert_eq!(
            count(&db, "outbox", id).await,
            0,
            "no event for an unpaid order"
        );
    }

    // The declined key answers as a decline; the failed one charges anew.
    let (status, answer) = pay(&state, Some("declined"), &body(300)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    let (status, answer) = pay(&state, Some("never-charged"), &body(300)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["order_id"], never.id.to_string());
}

#[tokio::test]
async fn a_provider_that_does_not_answer_leaves_the_order_for_the_next_pass() {
    let (state, db, provider) = setup(0).await;
    let order = processing_order(&state, "outage", 300).await;
    provider.charge(&order, CARD).await;
    abandon(&db, order.id).await;
    provider
        .faults
        // The provider's own point, named as a learner types it.
        .set(FaultSpec::new(
            "provider.charge",
            FaultKind::Outage { status: 503 },
        ))
        .unwrap();

    let done = reconcile::pass(&state, AFTER).await.unwrap();
    assert_eq!(
        done,
        reconcile::Pass {
            left: 1,
            ..Default::default()
        }
    );
    assert_eq!(order_of(&state, order.id).await.status, "processing");
    assert_eq!(count(&db, "payments", order.id).await, 0);

    provider.faults.clear_all();
    let done = reconcile::pass(&state, AFTER).await.unwrap();
    assert_eq!(done.completed, 1, "{done:?}");
    assert_eq!(count(&db, "payments", order.id).await, 1);
}

#[tokio::test]
async fn two_reconcilers_at_once_settle_each_order_once() {
    let (state, db, provider) = setup(30).await;
    let mut orders = Vec::new();
    for i in 0..6 {
        let order = processing_order(&state, &format!("race-{i}"), 100 + i).await;
        provider.charge(&order, CARD).await;
        abandon(&db, order.id).await;
        orders.push(order);
    }
    let (a, b) = tokio::join!(
        reconcile::pass(&state, AFTER),
        reconcile::pass(&state, AFTER)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.completed + b.completed, 6, "{a:?} {b:?}");
    assert!(
        a.completed > 0 && b.completed > 0,
        "both did work: {a:?} {b:?}"
    );
    for order in &orders {
        assert_eq!(count(&db, "payments", order.id).await, 1);
        assert_eq!(count(&db, "outbox", order.id).await, 1);
    }
}

#[tokio::test]
async fn the_normal_path_saving_after_the_reconciler_returns_the_recorded_payment() {
    let (state, db, provider) = setup(0).await;
    let order = processing_order(&state, "late-save", 300).await;
    let charge = provider.charge(&order, CARD).await;
    abandon(&db, order.id).await;
    reconcile::pass(&state, AFTER).await.unwrap();
    let recorded = state.store.find_payment(order.id).await.unwrap().unwrap();

    // The request's own save arrives late, with the same charge.
    let late = PaymentRow {
        id: Uuid::new_v4(),
        order_id: order.id,
        provider: provider::PROVIDER_NAME.into(),
        transaction_id: charge["id"].as_str().unwrap().into(),
        amount: order.amount,
        currency: order.currency.clone(),
        card_last4: "4242".into(),
        status: "succeeded".into(),
    };
    let event = process::completed_event(&order, &late, &Context::new());
    match state.store.save_payment(&late, &event, 0).await.unwrap() {
        store::Saved::AlreadyRecorded(existing) => assert_eq!(existing, recorded),
        store::Saved::Recorded => panic!("a second payment row was written"),
    }
    assert_eq!(count(&db, "payments", order.id).await, 1);
    assert_eq!(count(&db, "outbox", order.id).await, 1);
}

#[tokio::test]
async fn a_retry_after_the_reconciler_completed_the_order_gets_the_payment() {
    let (state, db, provider) = setup(0).await;
    let order = processing_order(&state, "retry-after-fix", 700).await;
    let charge = provider.charge(&order, CARD).await;

    // Before: the first attempt may still be running, so 409 with Retry-After.
    let (status, headers, answer) = pay_with_headers(&state, "retry-after-fix", &body(700)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "payment_in_progress");
    assert_eq!(answer["error"]["order_id"], order.id.to_string());
    let retry = headers[http::header::RETRY_AFTER].to_str().unwrap();
    assert_eq!(
        retry,
        reconcile::retry_after_secs(state.settings.reconcile_interval).to_string()
    );

    abandon(&db, order.id).await;
    reconcile::pass(&state, AFTER).await.unwrap();
    let (status, answer) = pay(&state, Some("retry-after-fix"), &body(700)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["idempotent_replay"], true);
    assert_eq!(answer["order_id"], order.id.to_string());
    assert_eq!(answer["transaction_id"], charge["id"]);
    assert_eq!(count(&db, "payments", order.id).await, 1);
}

#[tokio::test]
async fn an_abandoned_order_is_settled_by_the_retry_itself() {
    let (state, db, provider) = setup(0).await;
    let order = processing_order(&state, "settle-on-retry", 900).await;
    let charge = provider.charge(&order, CARD).await;
    abandon(&db, order.id).await;
    // No reconciler pass: the retry asks the provider itself.
    let (status, answer) = pay(&state, Some("settle-on-retry"), &body(900)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["transaction_id"], charge["id"]);
    assert_eq!(count(&db, "payments", order.id).await, 1);
    assert_eq!(count(&db, "outbox", order.id).await, 1);
}

#[tokio::test]
async fn a_provider_timeout_leaves_the_order_unsettled_and_a_retry_gets_the_final_answer() {
    let (mut state, db, provider) = setup(600).await;
    // payment stops waiting after 200 ms; the provider charges at 600 ms.
    state.provider = ProviderClient::new(&provider.url, Duration::from_millis(200)).unwrap();
    let (status, headers, first) = pay_with_headers(&state, "slow-provider", &body(1200)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{first}");
    assert_eq!(first["error"]["code"], "provider_timeout");
    assert!(headers.contains_key(http::header::RETRY_AFTER));
    let id: Uuid = first["error"]["order_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let order = order_of(&state, id).await;
    assert_eq!(
        (order.status.as_str(), order.failure_code.as_deref()),
        ("processing", Some("provider_timeout")),
        "unknown whether charged: not failed"
    );

    let charge = provider.wait_until_settled(id).await;
    assert_eq!(charge["status"], "succeeded");
    let (status, answer) = pay(&state, Some("slow-provider"), &body(1200)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["transaction_id"], charge["id"]);
    assert_eq!(count(&db, "payments", id).await, 1);
    assert_eq!(count(&db, "outbox", id).await, 1);
}

/// The race the reconciler must not lose: an attempt gives up on the
/// provider (timeout), the reconciler settles the order while the charge
/// request is still on its way, and the request then reaches the provider.
/// Whatever the order ends as, the provider's books must agree with it: a
/// succeeded charge has its payment row and a completed order, a failed
/// order has no succeeded charge. A retry with the same key then charges
/// exactly once.
#[tokio::test]
async fn a_charge_arriving_after_the_reconciler_settled_the_order_never_goes_unrecorded() {
    let (mut state, db, provider) = setup(50).await;
    let mut link = LateLink::start(&provider.url, Duration::from_millis(1500)).await;
    // payment gives up after 300 ms; the charge reaches the provider at 1.5 s.
    state.provider = ProviderClient::new(&link.url, Duration::from_millis(300)).unwrap();
    let (status, _, first) = pay_with_headers(&state, "late-charge", &body(900)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{first}");
    let id: Uuid = first["error"]["order_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        order_of(&state, id).await.failure_code.as_deref(),
        Some("provider_timeout")
    );

    // The reconciler's next pass comes while the charge is still on its way.
    let done = reconcile::pass(&state, HOUR).await.unwrap();
    assert!(
        link.delivered.borrow().is_empty(),
        "the pass came too late to race"
    );
    assert_eq!(done.completed + done.declined + done.failed + done.left, 1);
    let delivered = link.wait_delivered(1).await;
    // And whatever it left, the next passes settle.
    for _ in 0..10 {
        if order_of(&state, id).await.status != "processing" {
            break;
        }
        reconcile::pass(&state, HOUR).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let order = order_of(&state, id).await;
    let charge = provider.charge_of(id).await;
    let payment = state.store.find_payment(id).await.unwrap();
    if charge["status"] == "succeeded" {
        let payment = payment.unwrap_or_else(|| {
            panic!(
                "the card was charged ({}) but the order is {} ({:?}) with no payment row; \
                 the late request got {delivered:?}",
                charge["id"], order.status, order.failure_code
            )
        });
        assert_eq!(payment.transaction_id, charge["id"].as_str().unwrap());
        assert_eq!(order.status, "completed");
    } else {
        assert_eq!(charge, Value::Null, "no charge at all: {charge}");
        assert!(payment.is_none());
        assert_eq!(
            (order.status.as_str(), order.failure_code.as_deref()),
            ("failed", Some("not_charged"))
        );
    }

    // The customer tries again with the same key: charged exactly once.
    state.provider = ProviderClient::new(&provider.url, Duration::from_secs(5)).unwrap();
    let (status, answer) = pay(&state, Some("late-charge"), &body(900)).await;
    assert!(status.is_success(), "{status} {answer}");
    assert_eq!(answer["order_id"], id.to_string());
    let payment = state.store.find_payment(id).await.unwrap().unwrap();
    assert_eq!(
        payment.transaction_id,
        answer["transaction_id"].as_str().unwrap()
    );
    assert_eq!(count(&db, "payments", id).await, 1);
    assert_eq!(count(&db, "outbox", id).await, 1);
    let keys = [id.to_string(), format!("{id}.1")];
    let mut succeeded = Vec::new();
    for key in &keys {
        let list: Value =
            reqwest::get(format!("{}/v1/charges?idempotency_key={key}", provider.url))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        if list["data"][0]["status"] == "succeeded" {
            succeeded.push(list["data"][0]["id"].clone());
        }
    }
    assert_eq!(
        succeeded,
        vec![answer["transaction_id"].clone()],
        "one succeeded charge across the order's attempts, the recorded one"
    );
}

#[tokio::test]
async fn a_cancelled_request_still_records_its_charge() {
    let (state, db, provider) = setup(400).await;
    // The client hangs up after 100 ms, while the provider is charging.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        pay(&state, Some("hung-up"), &body(500)),
    )
    .await;
    assert!(cancelled.is_err(), "the request was cut before it answered");
    let id: Uuid = sqlx::query_scalar("SELECT id FROM orders WHERE idempotency_key = 'hung-up'")
        .fetch_one(db.pool())
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&db, "payments", id).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the charge of a cancelled request was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let charge = provider.charge_of(id).await;
    let payment = state.store.find_payment(id).await.unwrap().unwrap();
    assert_eq!(payment.transaction_id, charge["id"].as_str().unwrap());
    assert_eq!(order_of(&state, id).await.status, "completed");
    assert_eq!(count(&db, "outbox", id).await, 1);
}

#[tokio::test]
async fn a_request_past_its_deadline_answers_in_progress_and_its_charge_is_recorded() {
    let (mut state, db, _provider) = setup(400).await;
    state.settings.deadline = Duration::from_millis(150);
    let (status, headers, answer) = pay_with_headers(&state, "past-deadline", &body(800)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "payment_in_progress");
    assert!(headers.contains_key(http::header::RETRY_AFTER));
    let id: Uuid = answer["error"]["order_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while order_of(&state, id).await.status == "processing" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the charge never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    state.settings.deadline = HOUR;
    let (status, answer) = pay(&state, Some("past-deadline"), &body(800)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["order_id"], id.to_string());
    assert_eq!(count(&db, "payments", id).await, 1);
}
