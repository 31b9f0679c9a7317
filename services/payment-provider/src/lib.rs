//! payment-provider: a Stripe-like mock of the external payment API.
//!
//! `POST /v1/charges` takes `{amount, currency, card, description?,
//! metadata?}` and answers like a real provider: a charge object on success,
//! `402` with a `card_error` for the documented decline test cards (see
//! [`cards`]), `400` with an `invalid_request_error` for bad parameters. Each
//! charge takes a simulated 100-200 ms (`TRACELAB_PROVIDER_LATENCY_MS`), the
//! slow external hop of the lesson's story. An `Idempotency-Key` header
//! replays the first answer instead of charging again, as real providers do
//! (409 `idempotency_key_in_use` while the first is still running), and a
//! charge runs to its end even when the caller hangs up.
//!
//! `GET /v1/charges?idempotency_key=KEY` answers the list of charges the
//! request with that key created (`{"object":"list","data":[charge]}`; the
//! charge's `status` is `pending`, `succeeded` or `failed` with its
//! `failure_code`; `data` is empty when no charge was made): how payment's
//! reconciler learns how a charge ended when it lost the answer.
//!
//! `POST /v1/charges/cancel` with `{"idempotency_key": KEY}` is the caller's
//! way to know for good (a technical cancel by its own reference, as
//! acquirers offer for a lost answer): when no request with the key was
//! processed, the key is closed, `{"cancelled": true, "charge": null}`, and
//! a charge request with it arriving later is refused (400
//! `idempotency_key_cancelled`), so a request delayed on its way can never
//! charge a card whose order was given up; when one was processed, the
//! answer is `{"cancelled": false, "charge": {..}}`; while one runs, 409
//! `idempotency_key_in_use`.
//!
//! Run: `cargo run -p payment-provider` (listens on 127.0.0.1:8090).

pub mod cards;
pub mod config;
pub mod ledger;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::Context;
use opentelemetry::trace::FutureExt;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_contract::service::ServiceName;
use tracelab_faults::FaultRegistry;
use tracelab_service::{ApiError, App, Check, RawBody, W3cHarness, health_response};

pub use config::Config;
use ledger::{Begin, Cancel, Ledger};

/// How many idempotency keys are remembered before the oldest are forgotten.
const MAX_REMEMBERED_KEYS: usize = 50_000;

/// Shared state of the mock.
#[derive(Clone)]
pub struct AppState {
    faults: FaultRegistry,
    latency_ms: std::ops::RangeInclusive<u64>,
    ledger: Arc<Ledger>,
}

impl AppState {
    pub fn new(config: &Config, faults: FaultRegistry) -> Self {
        Self {
            faults,
            latency_ms: config.latency_ms.clone(),
            ledger: Arc::new(Ledger::new(MAX_REMEMBERED_KEYS)),
        }
    }
}

/// The service's routes, without the standard layers (tests use it with `oneshot`).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/charges", post(create_charge).get(list_charges))
        .route("/v1/charges/cancel", post(cancel_charge))
        .route("/health", get(health))
        .with_state(state)
}

/// The full router as served.
pub fn router(state: AppState, w3c: &W3cHarness) -> Router {
    tracelab_service::app::service_router(routes(state), w3c)
}

async fn health() -> Response {
    health_response("payment-provider", vec![Check::ok("self")], None)
}

#[derive(Debug, Deserialize)]
struct ChargeRequest {
    amount: Option<i64>,
    currency: Option<String>,
    card: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

fn invalid(param: &str, code: &str, message: String) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": "invalid_request_error", "code": code, "param": param, "message": message}}),
    )
}

async fn create_charge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let body = match body {
        Ok(RawBody(body)) => body,
        Err(e) => return e.into_response(),
    };
    // Before the idempotency lookup: a throttled or failed call was never
    // processed, so a retry with the same key must really be tried again.
    if let Some(refused) = fault_response(&state).await {
        return refused;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let charge_id = format!("ch_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
    let charge_id = match &key {
        None => charge_id,
        Some(key) => {
            let fingerprint = String::from_utf8_lossy(&body);
            match state.ledger.begin(key, &fingerprint, charge_id) {
                Begin::Started { charge_id } => charge_id,
                Begin::Replay { status, answer } => {
                    let mut response = (status, axum::Json(answer)).into_response();
                    response.headers_mut().insert(
                        "idempotent-replayed",
                        http::HeaderValue::from_static("true"),
                    );
                    return response;
                }
                Begin::Mismatch => {
                    return idempotency_error(
                        StatusCode::BAD_REQUEST,
                        None,
                        "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    );
                }
                Begin::InUse => return key_in_use(),
                Begin::Cancelled => {
                    return idempotency_error(
                        StatusCode::BAD_REQUEST,
                        Some("idempotency_key_cancelled"),
                        "This idempotency key was cancelled before any request with it was processed; nothing was charged.",
                    );
                }
            }
        }
    };
    // The charge runs to its end even if the caller hangs up: a provider
    // does not undo a charge because its client stopped listening, and the
    // ledger must then know how it ended.
    let task_state = state.clone();
    let task_key = key.clone();
    let task = tokio::spawn(
        async move {
            let (status, answer, charge) = match serde_json::from_slice::<ChargeRequest>(&body) {
                Err(e) => {
                    let (status, answer) = invalid(
                        "body",
                        "parameter_invalid",
                        format!("Invalid JSON body: {e}"),
                    );
                    (status, answer, None)
                }
                Ok(request) => charge(&task_state, request, charge_id).await,
            };
            if let Some(key) = &task_key {
                task_state
                    .ledger
                    .finish(key, status, answer.clone(), charge);
            }
            (status, answer)
        }
        .with_context(Context::current()),
    );
    match task.await {
        Ok((status, answer)) => (status, axum::Json(answer)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "charge task failed");
            if let Some(key) = &key {
                state.ledger.abandon(key);
            }
            provider_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "An unexpected error occurred.",
            )
        }
    }
}

/// The answer of an injected provider failure, or `None` when the request
/// goes through (after any injected latency). `error` and `outage` come back
/// from the registry as `Err` with their status; a rate limit is applied
/// here, with its `Retry-After`.
async fn fault_response(state: &AppState) -> Option<Response> {
    match state.faults.inject(FaultPoint::ProviderCharge).await {
        Err(injected) => Some(provider_error(
            injected.status_code(),
            "api_error",
            &injected.message,
        )),
        Ok(Some(FaultKind::RateLimit { retry_after_s })) => {
            let mut response = provider_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Too many requests hit the API too quickly.",
            );
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_s),
            );
            Some(response)
        }
        Ok(_) => None,
    }
}

fn key_in_use() -> Response {
    idempotency_error(
        StatusCode::CONFLICT,
        Some("idempotency_key_in_use"),
        "There is currently another in-progress request using this idempotency key. Try again later.",
    )
}

fn idempotency_error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut error = json!({"type": "idempotency_error", "message": message});
    if let Some(code) = code {
        error["code"] = code.into();
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    idempotency_key: Option<String>,
}

/// `GET /v1/charges?idempotency_key=`: the charge a request with that key
/// created, as a one-element list (empty when there is none). A caller
/// that lost the answer to its `POST` (a timeout, a crash) learns here how
/// the charge ended without charging again. The provider's outage and
/// error faults apply here too: a provider that is down answers nothing.
async fn list_charges(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    if let Some(refused) = fault_response(&state).await {
        return refused;
    }
    let key = match query {
        Ok(Query(ListQuery {
            idempotency_key: Some(key),
        })) if !key.is_empty() => key,
        Ok(_) => {
            let (status, body) = invalid(
                "idempotency_key",
                "parameter_missing",
                "Missing required param: idempotency_key (this mock lists charges by key only)."
                    .into(),
            );
            return (status, axum::Json(body)).into_response();
        }
        Err(e) => {
            let (status, body) = invalid("query", "parameter_invalid", e.body_text());
            return (status, axum::Json(body)).into_response();
        }
    };
    let data: Vec<Value> = state.ledger.charge(&key).into_iter().collect();
    axum::Json(json!({
        "object": "list",
        "url": "/v1/charges",
        "has_more": false,
        "data": data,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct CancelRequest {
    idempotency_key: Option<String>,
}

/// `POST /v1/charges/cancel`: closes an idempotency key no request has
/// used, or tells what its request did (see the crate doc). The provider's
/// outage and error faults apply here too.
async fn cancel_charge(State(state): State<AppState>, body: Result<RawBody, ApiError>) -> Response {
    let body = match body {
        Ok(RawBody(body)) => body,
        Err(e) => return e.into_response(),
    };
    if let Some(refused) = fault_response(&state).await {
        return refused;
    }
    let key = match serde_json::from_slice::<CancelRequest>(&body) {
        Ok(CancelRequest {
            idempotency_key: Some(key),
        }) if !key.is_empty() => key,
        Ok(_) => {
            let (status, body) = invalid(
                "idempotency_key",
                "parameter_missing",
                "Missing required param: idempotency_key.".into(),
            );
            return (status, axum::Json(body)).into_response();
        }
        Err(e) => {
            let (status, body) = invalid(
                "body",
                "parameter_invalid",
                format!("Invalid JSON body: {e}"),
            );
            return (status, axum::Json(body)).into_response();
        }
    };
    let (cancelled, charge) = match state.ledger.cancel(&key) {
        Cancel::InUse => return key_in_use(),
        Cancel::NoCharge => (true, Value::Null),
        Cancel::Charged(charge) => (false, charge),
    };
    if cancelled {
        tracing::info!(
            idempotency_key = key,
            "idempotency key cancelled: nothing charged"
        );
    }
    axum::Json(json!({
        "object": "idempotency_key_cancellation",
        "idempotency_key": key,
        "cancelled": cancelled,
        "charge": charge,
    }))
    .into_response()
}

/// An error answered the way the provider's real API shapes them.
fn provider_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// A charge request's answer, and the charge object it created (none when
/// the request itself was refused).
type Charged = (StatusCode, Value, Option<Value>);

/// [`invalid`], creating no charge.
fn refused(param: &str, code: &str, message: String) -> Charged {
    let (status, body) = invalid(param, code, message);
    (status, body, None)
}

async fn charge(state: &AppState, request: ChargeRequest, charge_id: String) -> Charged {
    let Some(amount) = request.amount else {
        return refused(
            "amount",
            "parameter_missing",
            "Missing required param: amount.".into(),
        );
    };
    if amount <= 0 {
        return refused(
            "amount",
            "amount_too_small",
            "Amount must be a positive integer.".into(),
        );
    }
    let Some(currency) = request.currency.map(|c| c.to_ascii_lowercase()) else {
        return refused(
            "currency",
            "parameter_missing",
            "Missing required param: currency.".into(),
        );
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return refused(
            "currency",
            "parameter_invalid",
            format!("Invalid currency: {currency}."),
        );
    }
    let Some(card) = request.card else {
        return refused(
            "card",
            "parameter_missing",
            "Missing required param: card.".into(),
        );
    };
    let card: String = card
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();

    let delay = rand::rng().random_range(state.latency_ms.clone());
    tokio::time::sleep(Duration::from_millis(delay)).await;

    let last4 = card
        .get(card.len().saturating_sub(4)..)
        .unwrap_or("")
        .to_string();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let card_details = json!({"card": {"brand": cards::brand(&card), "last4": last4}});
    match cards::outcome(&card) {
        cards::CardOutcome::Approve => {
            tracing::info!(charge_id, amount, currency, last4, "charge succeeded");
            let charge = json!({
                    "id": charge_id,
                    "object": "charge",
                    "amount": amount,
                    "currency": currency,
                    "status": "succeeded",
                    "paid": true,
                    "captured": true,
                    "description": request.description,
                    "metadata": request.metadata.unwrap_or_default(),
                    "created": created,
                    "payment_method_details": card_details,
            });
            (StatusCode::OK, charge.clone(), Some(charge))
        }
        cards::CardOutcome::Decline {
            code,
            decline_code,
            message,
        } => {
            tracing::info!(charge_id, code, decline_code, last4, "charge declined");
            // A declined charge still exists, as `failed`, with why.
            let charge = json!({
                "id": charge_id,
                "object": "charge",
                "amount": amount,
                "currency": currency,
                "status": "failed",
                "paid": false,
                "captured": false,
                "failure_code": code,
                "failure_message": message,
                "outcome": {"type": "issuer_declined", "reason": decline_code},
                "description": request.description,
                "metadata": request.metadata.unwrap_or_default(),
                "created": created,
                "payment_method_details": card_details,
            });
            (
                StatusCode::PAYMENT_REQUIRED,
                json!({"error": {"type": "card_error", "code": code, "decline_code": decline_code, "message": message, "charge": charge_id}}),
                Some(charge),
            )
        }
    }
}

/// Builds the provider and binds its listener (port 0 allowed).
///
/// Fails when the address cannot be bound.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let token = &config.admin.token;
    let (faults, admin) = tracelab_faults::for_service(ServiceName::PaymentProvider, token);
    let router = router(AppState::new(&config, faults), &config.w3c_harness);
    Ok(App::bind(config.listen, router)
        .await?
        .with_admin(config.admin.listen, admin)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use std::net::SocketAddr;
    use tower::ServiceExt;

    fn state() -> AppState {
        state_with_latency(0)
    }

    fn state_with_latency(ms: u64) -> AppState {
        AppState::new(
            &Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                latency_ms: ms..=ms,
                w3c_harness: W3cHarness::off(),
                admin: tracelab_service::config::Admin {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    token: tracelab_service::config::AdminToken::random(),
                },
            },
            FaultRegistry::new(ServiceName::PaymentProvider),
        )
    }

    async fn lookup(app: Router, key: &str) -> (StatusCode, Value) {
        let response = app
            .oneshot(
                Request::get(format!("/v1/charges?idempotency_key={key}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn post(app: Router, key: Option<&str>, body: &str) -> (StatusCode, Value, bool) {
        let mut req = Request::post("/v1/charges").header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let response = app
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), replayed)
    }

    #[tokio::test]
    async fn approves_declines_and_validates() {
        let app = routes(state());
        let (status, body, _) = post(
            app.clone(),
            None,
            r#"{"amount":4980,"currency":"JPY","card":"4242 4242 4242 4242"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["id"].as_str().unwrap().starts_with("ch_"));
        assert_eq!(body["payment_method_details"]["card"]["last4"], "4242");

        let (status, body, _) = post(
            app.clone(),
            None,
            r#"{"amount":4980,"currency":"jpy","card":"4000000000000002"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(body["error"]["code"], "card_declined");

        let (status, body, _) = post(
            app.clone(),
            None,
            r#"{"currency":"jpy","card":"4242424242424242"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["param"], "amount");

        let (status, _, _) = post(app, None, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn idempotency_key_replays_the_first_answer() {
        let app = routes(state());
        let body = r#"{"amount":100,"currency":"usd","card":"4242424242424242"}"#;
        let (_, first, replayed) = post(app.clone(), Some("k1"), body).await;
        assert!(!replayed);
        let (_, second, replayed) = post(app.clone(), Some("k1"), body).await;
        assert!(replayed);
        assert_eq!(first["id"], second["id"], "same key, same charge");
        let (status, _, _) = post(
            app,
            Some("k1"),
            r#"{"amount":101,"currency":"usd","card":"4242424242424242"}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "same key, different parameters"
        );
    }

    #[tokio::test]
    async fn a_charge_is_found_by_its_idempotency_key_with_its_final_state() {
        let app = routes(state());
        let (status, list) = lookup(app.clone(), "none-yet").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"], json!([]), "no request, no charge");

        let ok = r#"{"amount":100,"currency":"jpy","card":"4242424242424242"}"#;
        let (_, charged, _) = post(app.clone(), Some("paid"), ok).await;
        let (_, list) = lookup(app.clone(), "paid").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["data"][0]["id"], charged["id"]);
        assert_eq!(list["data"][0]["status"], "succeeded");
        assert_eq!(list["data"][0]["amount"], 100);

        let declined = r#"{"amount":100,"currency":"jpy","card":"4000000000009995"}"#;
        let (status, answer, _) = post(app.clone(), Some("declined"), declined).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
        let (_, list) = lookup(app.clone(), "declined").await;
        let charge = &list["data"][0];
        assert_eq!(charge["id"], answer["error"]["charge"]);
        assert_eq!(charge["status"], "failed");
        assert_eq!(charge["failure_code"], "card_declined");
        assert_eq!(charge["outcome"]["reason"], "insufficient_funds");

        // A refused request made no charge.
        let (status, _, _) = post(app.clone(), Some("refused"), r#"{"currency":"jpy"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, list) = lookup(app.clone(), "refused").await;
        assert_eq!(list["data"], json!([]));

        let response = app
            .oneshot(Request::get("/v1/charges").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_still_gets_its_charge_recorded_and_in_use_meanwhile() {
        let app = routes(state_with_latency(300));
        let body = r#"{"amount":100,"currency":"usd","card":"4242424242424242"}"#;
        // The caller gives up after 50 ms, long before the 300 ms charge ends.
        let hung_up = tokio::time::timeout(
            Duration::from_millis(50),
            post(app.clone(), Some("gone"), body),
        )
        .await;
        assert!(hung_up.is_err(), "the caller gave up first");
        let (_, list) = lookup(app.clone(), "gone").await;
        assert_eq!(list["data"][0]["status"], "pending", "{list}");
        let (status, answer, _) = post(app.clone(), Some("gone"), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], "idempotency_key_in_use");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let charge = loop {
            let (_, list) = lookup(app.clone(), "gone").await;
            if list["data"][0]["status"] != "pending" || tokio::time::Instant::now() > deadline {
                break list["data"][0].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(charge["status"], "succeeded", "{charge}");
        let (status, replayed, was_replay) = post(app, Some("gone"), body).await;
        assert_eq!(status, StatusCode::OK);
        assert!(was_replay);
        assert_eq!(
            replayed["id"], charge["id"],
            "the retry gets the charge that ran on"
        );
    }

    async fn cancel(app: Router, body: &str) -> (StatusCode, Value) {
        let response = app
            .oneshot(
                Request::post("/v1/charges/cancel")
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_cancelled_key_refuses_a_late_charge_and_a_charged_one_is_not_cancelled() {
        let app = routes(state());
        let body = r#"{"amount":100,"currency":"usd","card":"4242424242424242"}"#;
        let (status, answer) = cancel(app.clone(), r#"{"idempotency_key":"late"}"#).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["cancelled"], true);
        assert_eq!(answer["charge"], Value::Null);
        let (status, answer, _) = post(app.clone(), Some("late"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "idempotency_key_cancelled");
        let (_, list) = lookup(app.clone(), "late").await;
        assert_eq!(list["data"], json!([]), "nothing was charged");

        let (status, charge, _) = post(app.clone(), Some("paid"), body).await;
        assert_eq!(status, StatusCode::OK, "{charge}");
        let (status, answer) = cancel(app.clone(), r#"{"idempotency_key":"paid"}"#).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["cancelled"], false);
        assert_eq!(answer["charge"]["id"], charge["id"]);
        assert_eq!(answer["charge"]["status"], "succeeded");

        let (status, answer) = cancel(app.clone(), r#"{"key":"x"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], "idempotency_key");
        let (status, _) = cancel(app, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_running_charge_cannot_be_cancelled() {
        let app = routes(state_with_latency(300));
        let body = r#"{"amount":100,"currency":"usd","card":"4242424242424242"}"#;
        let running = tokio::spawn(post(app.clone(), Some("running"), body));
        // Wait until the charge is being processed (its lookup says so).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while lookup(app.clone(), "running").await.1["data"][0]["status"] != "pending" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the charge never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, answer) = cancel(app.clone(), r#"{"idempotency_key":"running"}"#).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], "idempotency_key_in_use");
        let (status, _, _) = running.await.unwrap();
        assert_eq!(status, StatusCode::OK, "the charge went through");
    }

    #[tokio::test]
    async fn a_provider_outage_answers_lookups_with_5xx_too() {
        let state = state();
        state
            .faults
            .set(tracelab_contract::fault::FaultSpec::new(
                FaultPoint::ProviderCharge.name(),
                FaultKind::Outage { status: 503 },
            ))
            .unwrap();
        let (status, body) = lookup(routes(state), "any").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
}
