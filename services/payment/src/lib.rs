//! payment: takes a checkout from the gateway, charges the card through the
//! external provider and records the result.
//!
//! - `POST /payments` (header `Idempotency-Key`, body `{user_id, card,
//!   items:[{product_id, quantity}]}` or `{user_id, card, amount, currency}`)
//!   creates the order, runs [`process::process_payment`] and answers
//!   `{order_id, payment_id, status, transaction_id, amount, currency}`;
//!   402 JSON when the card is declined. The same user and key never charge
//!   twice: a repeat replays the first result, and while the first is still
//!   running it gets 409 `payment_in_progress` with `Retry-After`.
//! - `GET /orders/{id}?user_id=` returns an order and its payment.
//!
//! The charge and its recording run in a task of their own: a client that
//! hangs up (or a request past `TRACELAB_PAYMENT_DEADLINE_MS`, answered 503
//! `payment_in_progress`) cannot leave a charge without its payment row.
//! The payment row and a `payment.completed` outbox row commit in one
//! transaction; [`relay`] publishes the outbox to RabbitMQ. [`reconcile`]
//! settles every order left `processing` with the provider.
//!
//! Run: `cargo run -p payment` (127.0.0.1:8083; needs Postgres, RabbitMQ and
//! payment-provider).

pub mod config;
pub mod process;
pub mod provider;
pub mod reconcile;
pub mod relay;
#[cfg(test)]
mod settle_tests;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::Context;
use opentelemetry::trace::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use tracelab_contract::service::ServiceName;
use tracelab_contract::timeouts;
use tracelab_faults::FaultRegistry;
use tracelab_service::{ApiError, App, Check, Json, StandardLimits, W3cHarness, health_response};
use tracelab_telemetry::db::DbTarget;
use tracelab_telemetry::propagation::inject_map;

pub use config::Config;
use process::PaymentError;
use provider::{ChargeError, ProviderClient};
use store::{Created, NewOrder, OrderRow, PricedItem, Store};

/// Currencies the lab accepts.
pub const CURRENCIES: &[&str] = &["JPY", "USD", "EUR"];

/// Shared state.
#[derive(Clone)]
pub struct AppState {
    pub faults: FaultRegistry,
    pub store: Store,
    pub provider: ProviderClient,
    pub relay_wakeup: Arc<Notify>,
    pub publisher: Arc<tokio::sync::Mutex<relay::Publisher>>,
    pub settings: Settings,
}

/// The time limits the handlers and the reconciler work to.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long `POST /payments` waits for its charge before answering 503
    /// `payment_in_progress`.
    pub deadline: Duration,
    /// How long an order may stay `processing` untouched before the
    /// reconciler settles it.
    pub reconcile_after: Duration,
    /// How often the reconciler looks.
    pub reconcile_interval: Duration,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            deadline: config.deadline,
            reconcile_after: config.reconcile_after,
            reconcile_interval: config.reconcile_interval,
        }
    }

    /// The contract's defaults.
    pub fn defaults() -> Self {
        Self {
            deadline: Duration::from_millis(timeouts::PAYMENT_DEADLINE_MS),
            reconcile_after: Duration::from_millis(timeouts::RECONCILE_AFTER_MS),
            reconcile_interval: Duration::from_millis(timeouts::RECONCILE_INTERVAL_MS),
        }
    }

    /// The request timeout of payment's listener: past the deadline, so a
    /// request always gets payment's own answer first.
    pub fn request_timeout(&self) -> Duration {
        self.deadline + Duration::from_millis(timeouts::MARGIN_MS)
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/payments", post(create_payment))
        .route("/orders/{id}", get(get_order))
        .route("/health", get(health))
        .with_state(state)
}

pub fn router(state: AppState, w3c: &W3cHarness) -> Router {
    let limits = StandardLimits {
        request_timeout: state.settings.request_timeout(),
        ..StandardLimits::default()
    };
    tracelab_service::app::standard(routes(state), limits, w3c)
}

async fn health(State(state): State<AppState>) -> Response {
    let db = tracelab_db::ping(&state.store.pool).await;
    // A held lock means the relay is publishing right now: connected.
    let broker = match state.publisher.try_lock() {
        Ok(p) if !p.connected() => Err("not connected".to_string()),
        _ => Ok(()),
    };
    let pending = relay::pending(&state.store.pool).await.ok();
    health_response(
        "payment",
        vec![Check::new("postgres", db), Check::new("rabbitmq", broker)],
        Some(json!({ "outbox_pending": pending })),
    )
}

/// One line of an order. Unknown fields are refused, as in [`PaymentRequest`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemRequest {
    product_id: i64,
    quantity: i32,
}

/// A checkout as the gateway forwards it. Unknown fields are refused: a
/// typo such as `currncy` must not quietly charge in the default currency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentRequest {
    user_id: String,
    card: String,
    #[serde(default)]
    items: Option<Vec<ItemRequest>>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
}

/// Reads and checks the `Idempotency-Key` header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_idempotency_key",
                "the Idempotency-Key header is required",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be visible ASCII",
            )
        })?
        .trim()
        .to_string();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(key)
}

/// Digits of a card number, or a 400 explaining what is wrong.
pub fn normalise_card(raw: &str) -> Result<String, ApiError> {
    let digits: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_card",
            "card must be 12 to 19 digits",
        ));
    }
    Ok(digits)
}

async fn create_payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<PaymentRequest>,
) -> Result<Response, Response> {
    let deadline = tokio::time::Instant::now() + state.settings.deadline;
    let key = idempotency_key(&headers).map_err(IntoResponse::into_response)?;
    let card = normalise_card(&req.card).map_err(IntoResponse::into_response)?;
    if req.user_id.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_user", "user_id is required").into_response());
    }
    let (amount, currency, items) = price(&state, &req)
        .await
        .map_err(IntoResponse::into_response)?;
    let db_error = |e: sqlx::Error| ApiError::internal("database_error", e).into_response();
    let mut trace_context = std::collections::HashMap::new();
    inject_map(&Context::current(), &mut trace_context);
    let new_order = NewOrder {
        id: Uuid::new_v4(),
        user_id: req.user_id.clone(),
        idempotency_key: key,
        amount,
        currency,
        items,
        trace_context,
    };
    let order = match state
        .store
        .create_order(&new_order)
        .await
        .map_err(db_error)?
    {
        Created::New(id) => OrderRow {
            id,
            user_id: new_order.user_id.clone(),
            idempotency_key: new_order.idempotency_key.clone(),
            amount: new_order.amount,
            currency: new_order.currency.clone(),
            status: "processing".into(),
            failure_code: None,
            created_at: chrono::Utc::now(),
            attempt: 0,
        },
        Created::Existing(mut existing) => {
            if existing.amount != new_order.amount || existing.currency != new_order.currency {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different checkout",
                )
                .into_response());
            }
            // An attempt that ended unsettled, or an order abandoned by a
            // crashed process, is settled now: the retry gets the answer.
            if existing.status == "processing"
                && let Some(settled) =
                    reconcile::settle_now(&state, existing.id, state.settings.reconcile_after)
                        .await
                        .map_err(db_error)?
            {
                tracing::info!(order_id = %existing.id, outcome = ?settled, "settled on retry");
                existing = state
                    .store
                    .find_order(existing.id)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| {
                        ApiError::internal("inconsistent_order", "settled order vanished")
                            .into_response()
                    })?;
            }
            let reopened = match existing.status.as_str() {
                "failed" => state
                    .store
                    .reopen_failed(existing.id)
                    .await
                    .map_err(db_error)?,
                _ => None,
            };
            let Some(attempt) = reopened else {
                return replay(&state, existing).await;
            };
            tracing::info!(order_id = %existing.id, attempt, "retrying a failed payment with the same key");
            OrderRow {
                status: "processing".into(),
                failure_code: None,
                attempt,
                ..existing
            }
        }
    };
    // The charge and its recording run to completion in a task of their
    // own: the client hanging up, or this handler giving up at the
    // deadline, must not cut them between "charged" and "recorded".
    let section = {
        let (state, order) = (state.clone(), order.clone());
        tokio::spawn(
            async move { process::process_payment(&state, &order, &card).await }
                .with_context(Context::current()),
        )
    };
    let outcome = match tokio::time::timeout_at(deadline, section).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panicked)) => {
            return Err(ApiError::internal("internal_error", panicked).into_response());
        }
        Err(_) => {
            return Err(in_progress(
                &state,
                order.id,
                StatusCode::SERVICE_UNAVAILABLE,
            ));
        }
    };
    match outcome {
        Ok(payment) => Ok((
            StatusCode::CREATED,
            axum::Json(json!({
                "order_id": order.id,
                "payment_id": payment.id,
                "status": "completed",
                "transaction_id": payment.transaction_id,
                "amount": payment.amount,
                "currency": payment.currency,
                "card_last4": payment.card_last4,
                "idempotent_replay": false,
            })),
        )
            .into_response()),
        Err(err) => {
            let unsettled = process::is_unsettled(&err);
            let mut response = payment_error(order.id, err).into_response();
            if unsettled {
                // The outcome will be known after the reconciler's next pass.
                retry_after(&mut response, &state);
            }
            Err(response)
        }
    }
}

/// Sets `Retry-After` to the reconciler's interval.
fn retry_after(response: &mut Response, state: &AppState) {
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(reconcile::retry_after_secs(
            state.settings.reconcile_interval,
        )),
    );
}

/// `payment_in_progress` with `Retry-After`: 409 to a retry that found the
/// first attempt still running, 503 to a request past its deadline.
fn in_progress(state: &AppState, order_id: Uuid, status: StatusCode) -> Response {
    let retry = reconcile::retry_after_secs(state.settings.reconcile_interval);
    let mut response = ApiError::new(
        status,
        "payment_in_progress",
        "a payment with this Idempotency-Key is in progress; retry with the same key for its result",
    )
    .with_details(json!({ "order_id": order_id, "retry_after": retry }))
    .into_response();
    retry_after(&mut response, state);
    response
}

/// A priced checkout: the total, its currency and, for `items`, the lines.
type Priced = (i64, String, Vec<PricedItem>);

/// Prices the request: from the catalogue for `items`, or as given.
async fn price(state: &AppState, req: &PaymentRequest) -> Result<Priced, ApiError> {
    match (&req.items, req.amount) {
        (Some(items), None) => {
            check_items(items)?;
            let ids: Vec<i64> = items.iter().map(|i| i.product_id).collect();
            let catalogue: BTreeMap<i64, (i64, String)> = state
                .store
                .price_products(&ids)
                .await
                .map_err(|e| ApiError::internal("database_error", e))?
                .into_iter()
                .map(|(id, price, currency)| (id, (price, currency)))
                .collect();
            let priced = price_items(items, &catalogue)?;
            // A currency sent with items can only confirm the catalogue's.
            if let Some(asked) = &req.currency
                && !asked.eq_ignore_ascii_case(&priced.1)
            {
                return Err(ApiError::bad_request(
                    "invalid_currency",
                    format!(
                        "these items are priced in {}, not {asked} (leave out currency with items)",
                        priced.1
                    ),
                ));
            }
            Ok(priced)
        }
        (None, Some(amount)) => {
            let (amount, currency) = price_amount(amount, req.currency.as_deref())?;
            Ok((amount, currency, Vec::new()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_order",
            "give either items or amount (with currency), not both",
        )),
    }
}

/// Checks the order lines before the catalogue is asked.
///
/// Fails with 400 unless there are 1 to 20 lines of quantity 1 to 99.
fn check_items(items: &[ItemRequest]) -> Result<(), ApiError> {
    if items.is_empty() || items.len() > 20 {
        return Err(ApiError::bad_request(
            "invalid_items",
            "items must hold 1 to 20 lines",
        ));
    }
    if let Some(bad) = items.iter().find(|i| !(1..=99).contains(&i.quantity)) {
        return Err(ApiError::bad_request(
            "invalid_quantity",
            format!("quantity for product {} must be 1 to 99", bad.product_id),
        ));
    }
    Ok(())
}

/// Prices `items` from `catalogue` (product id → price and currency).
///
/// Fails with 400 on a product the catalogue does not have, a product
/// listed twice, or products priced in different currencies (their sum
/// would be meaningless).
fn price_items(
    items: &[ItemRequest],
    catalogue: &BTreeMap<i64, (i64, String)>,
) -> Result<Priced, ApiError> {
    let mut priced: Vec<PricedItem> = Vec::new();
    let mut total = 0_i64;
    let mut currency: Option<&str> = None;
    for item in items {
        let (price, cur) = catalogue.get(&item.product_id).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_product",
                format!("no product with id {}", item.product_id),
            )
        })?;
        if priced.iter().any(|p| p.product_id == item.product_id) {
            return Err(ApiError::bad_request(
                "duplicate_product",
                format!("product {} appears twice", item.product_id),
            ));
        }
        match currency {
            Some(first) if first != cur => {
                return Err(ApiError::bad_request(
                    "mixed_currency",
                    format!("items are priced in both {first} and {cur}: order them separately"),
                ));
            }
            _ => currency = Some(cur),
        }
        total += price * i64::from(item.quantity);
        priced.push(PricedItem {
            product_id: item.product_id,
            quantity: item.quantity,
            unit_price: *price,
        });
    }
    Ok((total, currency.unwrap_or("JPY").to_string(), priced))
}

/// Checks an amount given as is, and its currency (`JPY` when absent,
/// upper-cased).
///
/// Fails with 400 on an amount outside 1..=10000000 or a currency not in
/// [`CURRENCIES`].
fn price_amount(amount: i64, currency: Option<&str>) -> Result<(i64, String), ApiError> {
    if !(1..=10_000_000).contains(&amount) {
        return Err(ApiError::bad_request(
            "invalid_amount",
            "amount must be 1 to 10000000",
        ));
    }
    let currency = currency.unwrap_or("JPY").to_ascii_uppercase();
    if !CURRENCIES.contains(&currency.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_currency",
            format!("currency must be one of {}", CURRENCIES.join(", ")),
        ));
    }
    Ok((amount, currency))
}

fn payment_error(order_id: Uuid, err: PaymentError) -> ApiError {
    let order = json!({ "order_id": order_id });
    match err {
        PaymentError::Charge(ChargeError::Declined {
            code,
            decline_code,
            message,
        }) => ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_declined", message).with_details(
            json!({ "order_id": order_id, "decline_code": decline_code, "provider_code": code }),
        ),
        PaymentError::Charge(ChargeError::Rejected { message, .. }) => {
            ApiError::new(StatusCode::PAYMENT_REQUIRED, "payment_rejected", message)
                .with_details(order)
        }
        PaymentError::Charge(ChargeError::Cancelled(_)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "payment_not_charged",
            "the payment attempt was given up before it charged; retry with the same Idempotency-Key",
        )
        .with_details(order),
        PaymentError::Charge(ChargeError::Timeout(_)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "provider_timeout",
            "provider timed out",
        )
        .with_details(order),
        PaymentError::Charge(ChargeError::RateLimited { retry_after }) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_rate_limited",
            "provider is rate limiting",
        )
        .with_details(json!({ "order_id": order_id, "retry_after": retry_after })),
        PaymentError::Charge(ChargeError::Unavailable(_)) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider_unavailable",
            "provider unavailable",
        )
        .with_details(order),
        PaymentError::InvalidOrder(_, reason) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_order", reason)
        }
        PaymentError::Database(e) => ApiError::internal("database_error", e),
        PaymentError::Fault(injected) => injected.into(),
        // Charged, recording failed: the reconciler records it shortly.
        PaymentError::NotRecorded(cause) => {
            tracelab_telemetry::span::record_error(
                &Context::current(),
                "payment_not_recorded",
                &cause.to_string(),
            );
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_in_progress",
                "the payment is being recorded; retry with the same Idempotency-Key for its result",
            )
            .with_details(order)
        }
    }
}

/// Answers a repeated key with the first outcome, charging nothing.
async fn replay(state: &AppState, order: OrderRow) -> Result<Response, Response> {
    replay_final(state, order.clone())
        .await
        .map_err(|e| match e {
            None => in_progress(state, order.id, StatusCode::CONFLICT),
            Some(e) => e.into_response(),
        })
}

/// The first outcome of a finished order; `Err(None)` while it is in progress.
async fn replay_final(state: &AppState, order: OrderRow) -> Result<Response, Option<ApiError>> {
    match order.status.as_str() {
        "completed" => {
            let payment = state
                .store
                .find_payment(order.id)
                .await
                .map_err(|e| ApiError::internal("database_error", e))?
                .ok_or_else(|| {
                    ApiError::internal("inconsistent_order", "completed order without payment")
                })?;
            Ok((
                StatusCode::OK,
                axum::Json(json!({
                    "order_id": order.id,
                    "payment_id": payment.id,
                    "status": "completed",
                    "transaction_id": payment.transaction_id,
                    "amount": payment.amount,
                    "currency": payment.currency,
                    "card_last4": payment.card_last4,
                    "idempotent_replay": true,
                })),
            )
                .into_response())
        }
        "declined" => Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "card_declined",
            format!(
                "this checkout was declined ({})",
                order.failure_code.as_deref().unwrap_or("card_declined")
            ),
        )
        .with_details(json!({ "order_id": order.id, "idempotent_replay": true }))
        .into()),
        _ => Err(None),
    }
}

#[derive(Deserialize)]
struct OrderQuery {
    user_id: Option<String>,
}

async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<OrderQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request("invalid_order_id", "order id must be a UUID"))?;
    let order = state
        .store
        .find_order(id)
        .await
        .map_err(|e| ApiError::internal("database_error", e))?
        .filter(|o| q.user_id.as_deref().is_none_or(|u| u == o.user_id))
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    let payment = state
        .store
        .find_payment(id)
        .await
        .map_err(|e| ApiError::internal("database_error", e))?;
    Ok(Json(json!({ "order": order, "payment": payment })))
}

/// Connects to Postgres and RabbitMQ (waiting up to 10 s each), migrates
/// and binds. The outbox relay and the reconciler run beside the HTTP
/// server and stop after it has drained; the relay publishes what is
/// committed on its way out.
///
/// Fails when a dependency stays unreachable or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let pool = tracelab_db::connect_with_acquire_timeout(
        &config.database_url,
        config.db_pool_size,
        config.db_acquire_timeout,
        Duration::from_secs(10),
    )
    .await?;
    tracelab_db::migrate(&pool).await?;
    let connection =
        tracelab_service::amqp::connect(&config.amqp_url, "payment", Duration::from_secs(10))
            .await?;
    let (faults, admin) = tracelab_faults::for_service(ServiceName::Payment, &config.admin.token);
    let state = AppState {
        faults: faults.clone(),
        store: Store {
            pool,
            db: DbTarget::from_url(&config.database_url),
        },
        provider: ProviderClient::new(&config.provider_url, config.provider_timeout)?,
        relay_wakeup: Arc::new(Notify::new()),
        publisher: Arc::new(tokio::sync::Mutex::new(relay::Publisher::new(
            &config.amqp_url,
            &config.exchange,
            connection,
            faults,
        ))),
        settings: Settings::of(&config),
    };
    let reconciler = state.clone();
    let (pool, publisher, wakeup) = (
        state.store.pool.clone(),
        state.publisher.clone(),
        state.relay_wakeup.clone(),
    );
    Ok(App::bind(config.listen, router(state, &config.w3c_harness))
        .await?
        .with_admin(config.admin.listen, admin)
        .await?
        .with_background("outbox relay", move |stop| {
            relay::run(pool, publisher, wakeup, stop)
        })
        .with_background("reconciler", move |stop| {
            let settings = reconciler.settings;
            reconcile::run(
                reconciler,
                settings.reconcile_after,
                settings.reconcile_interval,
                stop,
            )
        }))
}
