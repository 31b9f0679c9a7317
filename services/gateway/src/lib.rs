//! gateway: the lab's only public API, and the root of every trace.
//!
//! | route | does |
//! |---|---|
//! | `POST /api/login` | `{"username","password"}` → auth `POST /login` → `{"token",...}` |
//! | `GET /api/products?q=` | search `GET /products` |
//! | `POST /api/checkout` | bearer token (auth `POST /verify`), `Idempotency-Key`, `{"items":[..]}` or `{"amount","currency"}` plus `"card"` → payment `POST /payments` |
//! | `GET /api/orders/{id}` | bearer token, then payment `GET /orders/{id}` |
//!
//! Every response carries the trace id twice: the W3C `traceresponse`
//! header and `trace_id` in the JSON body, so a learner can always jump from
//! a response to its trace.
//!
//! Run: `cargo run -p gateway` (listens on 127.0.0.1:8080).

pub mod config;
#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use reqwest_middleware::{ClientWithMiddleware, RequestBuilder};
use serde::Deserialize;
use serde_json::{Value, json};

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_contract::routes;
use tracelab_contract::service::ServiceName;
use tracelab_faults::FaultRegistry;
use tracelab_service::{ApiError, App, Check, Json, RawBody, StandardLimits, health_response};
use tracelab_telemetry::client::{SkipPropagation, UrlTemplate, traced_client};
use tracelab_telemetry::span::current_trace_id;

pub use config::Config;

#[derive(Clone)]
pub struct AppState {
    pub config: Config,
    pub faults: FaultRegistry,
    /// Traced: every call is a CLIENT span carrying `traceparent`.
    pub client: ClientWithMiddleware,
    /// Untraced, for health probes only: probes are not part of any trace.
    pub probe: reqwest::Client,
}

impl AppState {
    /// Fails only if the TLS-less HTTP clients cannot be built.
    pub fn new(config: Config, faults: FaultRegistry) -> anyhow::Result<Self> {
        Ok(Self {
            faults,
            client: traced_client(config.upstream_timeout)?,
            probe: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            config,
        })
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(routes::LOGIN.path, post(login))
        .route(routes::PRODUCTS.path, get(products))
        .route(routes::CHECKOUT.path, post(checkout))
        .route(routes::ORDER.path, get(order))
        .route("/health", get(health))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let w3c = state.config.w3c_harness.clone();
    let limits = StandardLimits {
        request_timeout: state.config.request_timeout(),
        ..StandardLimits::default()
    };
    tracelab_service::app::standard(routes(state), limits, &w3c)
}

async fn health(State(state): State<AppState>) -> Response {
    let probe = |name: &'static str, base: String| {
        let client = state.probe.clone();
        async move {
            let result = match client.get(format!("{base}/health")).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{name} answered {}", r.status())),
                Err(e) => Err(format!("{name} unreachable: {e}")),
            };
            Check::new(name, result)
        }
    };
    let (auth, search, payment) = tokio::join!(
        probe("auth", state.config.auth_url.clone()),
        probe("search", state.config.search_url.clone()),
        probe("payment", state.config.payment_url.clone()),
    );
    health_response("gateway", vec![auth, search, payment], None)
}

/// A JSON response with the trace id added to the body.
fn with_trace_id(status: StatusCode, mut body: Value) -> Response {
    if let (Some(obj), Some(trace_id)) = (body.as_object_mut(), current_trace_id()) {
        obj.insert("trace_id".into(), trace_id.into());
    }
    (status, axum::Json(body)).into_response()
}

/// An upstream's answer, passed on as it is.
struct Answer {
    status: StatusCode,
    body: Value,
    /// The upstream's `Retry-After` (payment's `payment_in_progress`), kept
    /// so the client learns when to retry its Idempotency-Key.
    retry_after: Option<HeaderValue>,
}

impl Answer {
    /// The answer for the client, with the trace id added.
    fn respond(self) -> Response {
        let mut response = with_trace_id(self.status, self.body);
        if let Some(value) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
        response
    }
}

/// Sends an upstream request; any HTTP answer is returned as-is (the
/// upstream's JSON error shape is the same as ours), transport failures
/// become 502/504.
async fn upstream(
    state: &AppState,
    point: FaultPoint,
    service: &'static str,
    mut request: RequestBuilder,
) -> Result<Answer, ApiError> {
    let mut extra_attempts = 0;
    match state.faults.inject(point).await? {
        Some(FaultKind::PropagationBreak) => request = request.with_extension(SkipPropagation),
        Some(FaultKind::RetryStorm { retries }) => extra_attempts = retries,
        _ => {}
    }
    if extra_attempts > 0 {
        return retry_storm(service, request, extra_attempts).await;
    }
    send(service, request).await
}

/// The retry-storm fault: the same request fired again `extra` times at
/// once, with no backoff, as a client with an over-eager retry policy does.
/// The first success wins; the Idempotency-Key must keep it to one charge.
async fn retry_storm(
    service: &'static str,
    request: RequestBuilder,
    extra: u32,
) -> Result<Answer, ApiError> {
    let mut attempts = Vec::new();
    for _ in 0..extra {
        if let Some(copy) = request.try_clone() {
            attempts.push(send(service, copy));
        }
    }
    let first = send(service, request);
    let (first, others) = tokio::join!(first, futures::future::join_all(attempts));
    let success = others
        .into_iter()
        .find_map(|r| r.ok().filter(|answer| answer.status.is_success()));
    match (first, success) {
        (Ok(answer), _) if answer.status.is_success() => Ok(answer),
        (_, Some(answer)) => Ok(answer),
        (first, None) => first,
    }
}

async fn send(service: &'static str, request: RequestBuilder) -> Result<Answer, ApiError> {
    let response = request.send().await.map_err(|e| {
        let timed_out = match &e {
            reqwest_middleware::Error::Reqwest(e) => e.is_timeout(),
            reqwest_middleware::Error::Middleware(_) => false,
        };
        if timed_out {
            ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("{service}: {e}"),
            )
        } else {
            ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("{service}: {e}"),
            )
        }
    })?;
    let status = response.status();
    let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
    let body = response.json::<Value>().await.map_err(|e| {
        ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "bad_upstream_response",
            format!("{service}: {e}"),
        )
    })?;
    Ok(Answer {
        status,
        body,
        retry_after,
    })
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let answer = upstream(
        &state,
        FaultPoint::GatewayAuth,
        "auth",
        state
            .client
            .post(format!("{}/login", state.config.auth_url))
            .with_extension(UrlTemplate("/login"))
            .json(&json!({"username": req.username, "password": req.password})),
    )
    .await?;
    Ok(answer.respond())
}

async fn products(
    State(state): State<AppState>,
    query: axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let mut url = reqwest::Url::parse(&format!("{}/products", state.config.search_url))
        .map_err(|e| ApiError::internal("bad_upstream_url", e))?;
    url.set_query(query.0.as_deref());
    let answer = upstream(
        &state,
        FaultPoint::GatewaySearch,
        "search",
        state
            .client
            .get(url)
            .with_extension(UrlTemplate("/products")),
    )
    .await?;
    Ok(answer.respond())
}

/// The signed-in user, checked by auth.
struct User {
    id: String,
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<User, Response> {
    let Some(authorization) = headers.get(http::header::AUTHORIZATION) else {
        return Err(
            ApiError::unauthorized("missing bearer token (log in with POST /api/login)")
                .into_response(),
        );
    };
    let result = upstream(
        state,
        FaultPoint::GatewayAuth,
        "auth",
        state
            .client
            .post(format!("{}/verify", state.config.auth_url))
            .with_extension(UrlTemplate("/verify"))
            .header(http::header::AUTHORIZATION, authorization.clone()),
    )
    .await;
    match result {
        Ok(answer) if answer.status.is_success() => match answer.body["user_id"].as_str() {
            Some(id) => {
                opentelemetry::Context::current()
                    .span()
                    .set_attribute(KeyValue::new("enduser.id", id.to_owned()));
                Ok(User { id: id.to_owned() })
            }
            None => Err(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "bad_upstream_response",
                "auth: no user_id",
            )
            .into_response()),
        },
        Ok(answer) => Err(answer.respond()),
        Err(e) => Err(e.into_response()),
    }
}

/// A checkout as the client sends it. Unknown fields are refused: a typo
/// such as `currncy` must not quietly charge in the default currency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    card: String,
    #[serde(default)]
    items: Option<Value>,
    #[serde(default)]
    amount: Option<Value>,
    #[serde(default)]
    currency: Option<Value>,
}

/// Checks what the gateway can check before anything is charged, and builds
/// what payment gets: the `Idempotency-Key` header as sent, and the checkout
/// with the signed-in user added. Amounts, currencies, cards and items are
/// payment's to judge.
///
/// Fails with 400 when the key is missing or the body is not a checkout (not
/// JSON, `card` missing, a field of the wrong type or unknown).
fn payment_request(
    user_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HeaderValue, Value), ApiError> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_idempotency_key",
                "the Idempotency-Key header is required so a retried checkout never charges twice",
            )
        })?
        .clone();
    let req: CheckoutRequest = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() {
            "invalid_body"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, format!("checkout body: {e}"))
    })?;
    let mut payload = json!({ "user_id": user_id, "card": req.card });
    for (name, value) in [
        ("items", req.items),
        ("amount", req.amount),
        ("currency", req.currency),
    ] {
        if let Some(value) = value {
            payload[name] = value;
        }
    }
    Ok((key, payload))
}

async fn checkout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Response, Response> {
    let RawBody(body) = body.map_err(IntoResponse::into_response)?;
    let user = authenticate(&state, &headers).await?;
    let (key, payload) =
        payment_request(&user.id, &headers, &body).map_err(IntoResponse::into_response)?;
    let answer = upstream(
        &state,
        FaultPoint::GatewayPayment,
        "payment",
        state
            .client
            .post(format!("{}/payments", state.config.payment_url))
            .with_extension(UrlTemplate("/payments"))
            .timeout(state.config.payment_timeout)
            .header("idempotency-key", key)
            .json(&payload),
    )
    .await
    .map_err(IntoResponse::into_response)?;
    Ok(answer.respond())
}

async fn order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let user = authenticate(&state, &headers).await?;
    let mut url = reqwest::Url::parse(&format!("{}/orders/", state.config.payment_url))
        .map_err(|e| ApiError::internal("bad_upstream_url", e).into_response())?;
    url.path_segments_mut()
        .map_err(|_| ApiError::internal("bad_upstream_url", "cannot-be-a-base").into_response())?
        .pop_if_empty()
        .push(&id);
    url.query_pairs_mut().append_pair("user_id", &user.id);
    let answer = upstream(
        &state,
        FaultPoint::GatewayPayment,
        "payment",
        state
            .client
            .get(url)
            .timeout(state.config.payment_timeout)
            .with_extension(UrlTemplate("/orders/{id}")),
    )
    .await
    .map_err(IntoResponse::into_response)?;
    Ok(answer.respond())
}

/// Builds the clients and binds the public and the admin listener (port 0
/// allowed).
///
/// Fails when an address cannot be bound.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let (listen, admin_listen) = (config.listen, config.admin.listen);
    let (faults, admin) = tracelab_faults::for_service(ServiceName::Gateway, &config.admin.token);
    let router = router(AppState::new(config, faults)?);
    Ok(App::bind(listen, router)
        .await?
        .with_admin(admin_listen, admin)
        .await?)
}
