//! The gateway's own logic, without the rest of the lab: requests go
//! through `router(state)` with `oneshot`, and auth, search and payment are
//! one small axum server on port 0 that answers like them and records every
//! call it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;

use tracelab_service::testing::{assert_error, call_json};

use super::*;

/// The token the fake auth accepts, for user `u-1001`.
const TOKEN: &str = "good-token";

/// One call the fake upstreams received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    key: Option<String>,
    body: Value,
}

/// auth, search and payment as the gateway sees them.
#[derive(Clone)]
struct Upstreams {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstreams {
    /// Starts the fake; payment answers its n-th call (from 0) with
    /// `payment_status(n)`.
    async fn start(payment_status: fn(usize) -> StatusCode) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let seen = seen.clone();
            move |path: &str, headers: &HeaderMap, body: Value| {
                let mut seen = seen.lock().unwrap();
                seen.push(Seen {
                    path: path.to_string(),
                    key: headers
                        .get("idempotency-key")
                        .map(|k| k.to_str().unwrap().to_string()),
                    body,
                });
                seen.iter().filter(|s| s.path == path).count() - 1
            }
        };
        let products = {
            let record = record.clone();
            move |headers: HeaderMap| {
                record("/products", &headers, Value::Null);
                async { axum::Json(json!({"products": [], "count": 0})) }
            }
        };
        let payments = move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let n = record("/payments", &headers, body);
            async move { Self::payment_answer(payment_status(n), n) }
        };
        let verify = |headers: HeaderMap| async move {
            let bearer = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if bearer == Some(&format!("Bearer {TOKEN}")) {
                (StatusCode::OK, axum::Json(json!({"user_id": "u-1001"})))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": {"code": "invalid_token", "message": "bad token"}})),
                )
            }
        };
        let app = Router::new()
            .route("/verify", post(verify))
            .route("/products", get(products))
            .route("/payments", post(payments));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    /// What the fake payment answers: a payment, or an error naming the
    /// attempt (a 409 `payment_in_progress` with `Retry-After: 2`).
    fn payment_answer(status: StatusCode, n: usize) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        if status == StatusCode::CONFLICT {
            let error = json!({"error": {"code": "payment_in_progress", "message": "in progress"}});
            return (
                status,
                [(http::header::RETRY_AFTER, "2")],
                axum::Json(error),
            )
                .into_response();
        }
        let answer = if status.is_success() {
            json!({"order_id": "o-1", "status": "completed", "attempt": n})
        } else {
            json!({"error": {"code": "boom", "message": format!("attempt {n} failed")}})
        };
        (status, axum::Json(answer)).into_response()
    }

    fn calls(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    /// A gateway whose upstreams are all this fake.
    fn gateway(&self) -> AppState {
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_url: self.url.clone(),
            search_url: self.url.clone(),
            payment_url: self.url.clone(),
            upstream_timeout: Duration::from_secs(5),
            payment_timeout: Duration::from_secs(15),
            w3c_harness: W3cHarness::off(),
            admin: tracelab_service::config::Admin {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                token: tracelab_service::config::AdminToken::random(),
            },
        };
        AppState::new(config, FaultRegistry::new(ServiceName::Gateway)).unwrap()
    }
}

fn always(status: StatusCode) -> fn(usize) -> StatusCode {
    match status {
        StatusCode::CREATED => |_| StatusCode::CREATED,
        StatusCode::INTERNAL_SERVER_ERROR => |_| StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::CONFLICT => |_| StatusCode::CONFLICT,
        other => panic!("no canned answer for {other}"),
    }
}

/// Sets the fault as a learner writes it (`tracelab fault`, scenario files).
fn retry_storm_at(state: &AppState, point: &str, retries: u32) {
    let spec = json!({"point": point, "kind": "retry_storm", "retries": retries});
    state
        .faults
        .set(serde_json::from_value(spec).unwrap())
        .unwrap();
}

/// Sends `request` through the full router and reads the JSON answer.
async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    call_json(router(state.clone()), request).await
}

fn checkout(token: Option<&str>, key: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post("/api/checkout").header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

fn headers_with_key(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
    headers
}

#[test]
fn the_payment_request_adds_the_user_and_keeps_only_what_was_sent() {
    let (key, body) = payment_request(
        "u-1",
        &headers_with_key("k-1"),
        br#"{"amount": 4980, "currency": "JPY", "card": "4242 4242 4242 4242"}"#,
    )
    .unwrap();
    assert_eq!(key, "k-1");
    assert_eq!(
        body,
        json!({"user_id": "u-1", "card": "4242 4242 4242 4242", "amount": 4980, "currency": "JPY"})
    );

    let (_, body) = payment_request(
        "u-2",
        &headers_with_key("k-2"),
        br#"{"items": [{"product_id": 1, "quantity": 2}], "card": "4242424242424242"}"#,
    )
    .unwrap();
    assert_eq!(
        body,
        json!({"user_id": "u-2", "card": "4242424242424242", "items": [{"product_id": 1, "quantity": 2}]})
    );
}

#[test]
fn the_payment_request_refuses_what_is_not_a_checkout() {
    let card = r#""card": "4242424242424242""#;
    let cases = [
        (
            None,
            format!("{{\"amount\": 1, {card}}}"),
            "missing_idempotency_key",
        ),
        (Some("k"), "{\"amount\": 10,".to_string(), "invalid_json"),
        (Some("k"), "".to_string(), "invalid_json"),
        (Some("k"), r#"{"amount": 1}"#.to_string(), "invalid_body"),
        (
            Some("k"),
            r#"{"amount": 1, "card": 4242}"#.to_string(),
            "invalid_body",
        ),
        (Some("k"), r#"[1, 2]"#.to_string(), "invalid_body"),
        (
            Some("k"),
            format!("{{\"amount\": 1, \"currncy\": \"USD\", {card}}}"),
            "invalid_body",
        ),
    ];
    for (key, body, code) in cases {
        let headers = key.map(headers_with_key).unwrap_or_default();
        let err = payment_request("u-1", &headers, body.as_bytes()).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_checkout_reaches_payment_with_its_key_and_user() {
    let upstreams = Upstreams::start(always(StatusCode::CREATED)).await;
    let state = upstreams.gateway();
    let (status, body) = call(
        &state,
        checkout(
            Some(TOKEN),
            Some("key-42"),
            r#"{"amount": 4980, "currency": "JPY", "card": "4242424242424242"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["order_id"], "o-1");
    let payments = upstreams.calls("/payments");
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].key.as_deref(), Some("key-42"));
    assert_eq!(
        payments[0].body,
        json!({"user_id": "u-1001", "card": "4242424242424242", "amount": 4980, "currency": "JPY"})
    );
}

#[tokio::test]
async fn bad_checkouts_get_a_json_4xx_and_never_reach_payment() {
    let upstreams = Upstreams::start(always(StatusCode::CREATED)).await;
    let state = upstreams.gateway();
    let good = r#"{"amount": 1, "card": "4242424242424242"}"#;
    let cases = [
        (
            Some(TOKEN),
            None,
            good,
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
        ),
        (
            Some(TOKEN),
            Some("k"),
            "{\"amount\": 10,",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Some(TOKEN),
            Some("k"),
            r#"{"amount": 1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some(TOKEN),
            Some("k"),
            r#"{"amount": 1, "card": "4242424242424242", "currncy": "USD"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            None,
            Some("k"),
            good,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        // auth's own answer is passed on as it is.
        (
            Some("forged"),
            Some("k"),
            good,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
    ];
    for (token, key, body, expected, code) in cases {
        let (status, answer) = call(&state, checkout(token, key, body)).await;
        assert_error(status, &answer, expected, code);
    }
    assert!(upstreams.calls("/payments").is_empty());
}

#[tokio::test]
async fn a_retry_storm_repeats_the_downstream_call_n_times() {
    let upstreams = Upstreams::start(always(StatusCode::CREATED)).await;
    let state = upstreams.gateway();
    let products = || {
        Request::get("/api/products?q=tea")
            .body(Body::empty())
            .unwrap()
    };

    let (status, _) = call(&state, products()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstreams.calls("/products").len(), 1, "no fault: one call");

    retry_storm_at(&state, "gateway.search", 3);
    let (status, body) = call(&state, products()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The one call before, then the call and its 3 copies.
    assert_eq!(upstreams.calls("/products").len(), 1 + (1 + 3));
}

#[tokio::test]
async fn in_a_retry_storm_every_copy_carries_the_key_and_any_success_wins() {
    // Only the last of the 5 calls to arrive succeeds. The original is sent
    // first, so it is (almost always) a copy's success that must win; the
    // test passes either way, it cannot flake.
    let upstreams = Upstreams::start(|n| {
        if n == 4 {
            StatusCode::CREATED
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    })
    .await;
    let state = upstreams.gateway();
    retry_storm_at(&state, "gateway.payment", 4);
    let (status, body) = call(
        &state,
        checkout(
            Some(TOKEN),
            Some("storm-1"),
            r#"{"amount": 7, "card": "4242424242424242"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["attempt"], 4);
    let payments = upstreams.calls("/payments");
    assert_eq!(payments.len(), 5);
    assert!(
        payments.iter().all(|p| p.key.as_deref() == Some("storm-1")),
        "{payments:?}"
    );
}

#[tokio::test]
async fn a_retry_storm_with_no_success_answers_like_the_first_attempt() {
    let upstreams = Upstreams::start(always(StatusCode::INTERNAL_SERVER_ERROR)).await;
    let client = tracelab_telemetry::client::traced_client(Duration::from_secs(5)).unwrap();
    let request = client
        .post(format!("{}/payments", upstreams.url))
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}));
    let Answer { status, body, .. } = retry_storm("payment", request, 2).await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "boom");
    assert_eq!(upstreams.calls("/payments").len(), 3);
}

#[tokio::test]
async fn a_payment_in_progress_reaches_the_client_with_its_retry_after() {
    let upstreams = Upstreams::start(always(StatusCode::CONFLICT)).await;
    let state = upstreams.gateway();
    let response = router(state)
        .oneshot(checkout(
            Some(TOKEN),
            Some("key-busy"),
            r#"{"amount": 4980, "currency": "JPY", "card": "4242424242424242"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
}

#[test]
fn the_gateway_waits_longer_than_payment_and_its_own_limit_covers_both_calls() {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth_url: String::new(),
        search_url: String::new(),
        payment_url: String::new(),
        upstream_timeout: Duration::from_millis(tracelab_contract::timeouts::UPSTREAM_TIMEOUT_MS),
        payment_timeout: Duration::from_millis(
            tracelab_contract::timeouts::GATEWAY_PAYMENT_TIMEOUT_MS,
        ),
        w3c_harness: W3cHarness::off(),
        admin: tracelab_service::config::Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: tracelab_service::config::AdminToken::random(),
        },
    };
    assert!(
        config.request_timeout() > config.upstream_timeout + config.payment_timeout,
        "{:?}",
        config.request_timeout()
    );
    assert!(
        config.payment_timeout.as_millis() as u64
            > tracelab_contract::timeouts::PAYMENT_DEADLINE_MS
                + tracelab_contract::timeouts::MARGIN_MS
    );
}
