//! payment-provider: a Stripe-like mock of the external payment API.
//!
//! `POST /v1/charges` takes `{amount, currency, card, description?,
//! metadata?}` and answers like a real provider: a charge object on success,
//! `402` with a `card_error` for the documented decline test cards (see
//! [`cards`]), `400` with an `invalid_request_error` for bad parameters. Each
//! charge takes a simulated 100-200 ms (`TRACELAB_PROVIDER_LATENCY_MS`), the
//! slow external hop of the lesson's story. An `Idempotency-Key` header
//! replays the first answer instead of charging again, as real providers do.
//!
//! Run: `cargo run -p payment-provider` (listens on 127.0.0.1:8090).

pub mod cards;
pub mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_contract::service::ServiceName;
use tracelab_faults::FaultRegistry;
use tracelab_service::{ApiError, App, Check, RawBody, W3cHarness, health_response};

pub use config::Config;

/// How many idempotency keys are remembered before the oldest are forgotten.
const MAX_REMEMBERED_KEYS: usize = 50_000;

/// Shared state of the mock.
#[derive(Clone)]
pub struct AppState {
    faults: FaultRegistry,
    latency_ms: std::ops::RangeInclusive<u64>,
    idempotency: Arc<Mutex<Replays>>,
}

#[derive(Default)]
struct Replays {
    answers: HashMap<String, (String, StatusCode, Value)>,
    order: VecDeque<String>,
}

impl AppState {
    pub fn new(config: &Config, faults: FaultRegistry) -> Self {
        Self {
            faults,
            latency_ms: config.latency_ms.clone(),
            idempotency: Arc::default(),
        }
    }
}

/// The service's routes, without the standard layers (tests use it with `oneshot`).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/charges", post(create_charge))
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
    match state.faults.inject(FaultPoint::ProviderCharge).await {
        Err(injected) => {
            return provider_error(injected.status_code(), "api_error", &injected.message);
        }
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
            return response;
        }
        Ok(Some(FaultKind::Outage { status })) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return provider_error(
                status,
                "api_error",
                "The payment service is temporarily unavailable.",
            );
        }
        Ok(_) => {}
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fingerprint = String::from_utf8_lossy(&body).into_owned();
    if let Some(key) = &key {
        let replays = state.idempotency.lock().expect("replay lock");
        if let Some((first_body, status, answer)) = replays.answers.get(key) {
            if *first_body != fingerprint {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}})),
                )
                    .into_response();
            }
            let mut response = (*status, axum::Json(answer.clone())).into_response();
            response.headers_mut().insert(
                "idempotent-replayed",
                http::HeaderValue::from_static("true"),
            );
            return response;
        }
    }

    let (status, answer) = match serde_json::from_slice::<ChargeRequest>(&body) {
        Err(e) => invalid(
            "body",
            "parameter_invalid",
            format!("Invalid JSON body: {e}"),
        ),
        Ok(request) => charge(&state, request).await,
    };

    if let Some(key) = key {
        let mut replays = state.idempotency.lock().expect("replay lock");
        replays
            .answers
            .insert(key.clone(), (fingerprint, status, answer.clone()));
        replays.order.push_back(key);
        while replays.order.len() > MAX_REMEMBERED_KEYS {
            if let Some(old) = replays.order.pop_front() {
                replays.answers.remove(&old);
            }
        }
    }
    (status, axum::Json(answer)).into_response()
}

/// An error answered the way the provider's real API shapes them.
fn provider_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

async fn charge(state: &AppState, request: ChargeRequest) -> (StatusCode, Value) {
    let Some(amount) = request.amount else {
        return invalid(
            "amount",
            "parameter_missing",
            "Missing required param: amount.".into(),
        );
    };
    if amount <= 0 {
        return invalid(
            "amount",
            "amount_too_small",
            "Amount must be a positive integer.".into(),
        );
    }
    let Some(currency) = request.currency.map(|c| c.to_ascii_lowercase()) else {
        return invalid(
            "currency",
            "parameter_missing",
            "Missing required param: currency.".into(),
        );
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return invalid(
            "currency",
            "parameter_invalid",
            format!("Invalid currency: {currency}."),
        );
    }
    let Some(card) = request.card else {
        return invalid(
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

    let charge_id = format!("ch_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
    let last4 = card
        .get(card.len().saturating_sub(4)..)
        .unwrap_or("")
        .to_string();
    match cards::outcome(&card) {
        cards::CardOutcome::Approve => {
            tracing::info!(charge_id, amount, currency, last4, "charge succeeded");
            (
                StatusCode::OK,
                json!({
                    "id": charge_id,
                    "object": "charge",
                    "amount": amount,
                    "currency": currency,
                    "status": "succeeded",
                    "paid": true,
                    "captured": true,
                    "description": request.description,
                    "metadata": request.metadata.unwrap_or_default(),
                    "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "payment_method_details": {"card": {"brand": cards::brand(&card), "last4": last4}},
                }),
            )
        }
        cards::CardOutcome::Decline {
            code,
            decline_code,
            message,
        } => {
            tracing::info!(charge_id, code, decline_code, last4, "charge declined");
            (
                StatusCode::PAYMENT_REQUIRED,
                json!({"error": {"type": "card_error", "code": code, "decline_code": decline_code, "message": message, "charge": charge_id}}),
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
        AppState::new(
            &Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                latency_ms: 0..=0,
                w3c_harness: W3cHarness::off(),
                admin: tracelab_service::config::Admin {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    token: tracelab_service::config::AdminToken::random(),
                },
            },
            FaultRegistry::new(ServiceName::PaymentProvider),
        )
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
}
