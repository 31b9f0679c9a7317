//! payment: takes a checkout from the gateway, charges the card through the
//! external provider and records the result.
//!
//! - `POST /payments` (header `Idempotency-Key`, body `{user_id, card,
//!   items:[{product_id, quantity}]}` or `{user_id, card, amount, currency}`)
//!   creates the order, runs [`process::process_payment`] and answers
//!   `{order_id, payment_id, status, transaction_id, amount, currency}`;
//!   402 JSON when the card is declined. The same user and key never charge
//!   twice: a repeat replays the first result.
//! - `GET /orders/{id}?user_id=` returns an order and its payment.
//!
//! The payment row and a `payment.completed` outbox row commit in one
//! transaction; [`relay`] publishes the outbox to RabbitMQ.
//!
//! Run: `cargo run -p payment` (127.0.0.1:8083; needs Postgres, RabbitMQ and
//! payment-provider).

pub mod config;
pub mod process;
pub mod provider;
pub mod relay;
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
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use tracelab_contract::service::ServiceName;
use tracelab_faults::FaultRegistry;
use tracelab_service::{ApiError, App, Check, Json, W3cHarness, health_response};
use tracelab_telemetry::db::DbTarget;

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
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/payments", post(create_payment))
        .route("/orders/{id}", get(get_order))
        .route("/health", get(health))
        .with_state(state)
}

pub fn router(state: AppState, w3c: &W3cHarness) -> Router {
    tracelab_service::app::service_router(routes(state), w3c)
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
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let card = normalise_card(&req.card)?;
    if req.user_id.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_user", "user_id is required"));
    }
    let (amount, currency, items) = price(&state, &req).await?;
    let new_order = NewOrder {
        id: Uuid::new_v4(),
        user_id: req.user_id.clone(),
        idempotency_key: key,
        amount,
        currency,
        items,
    };
    let order = match state
        .store
        .create_order(&new_order)
        .await
        .map_err(|e| ApiError::internal("database_error", e))?
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
        },
        Created::Existing(existing) => {
            if existing.amount != new_order.amount || existing.currency != new_order.currency {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different checkout",
                ));
            }
            match existing.status.as_str() {
                "failed"
                    if state
                        .store
                        .reopen_failed(existing.id)
                        .await
                        .map_err(|e| ApiError::internal("database_error", e))? =>
                {
                    tracing::info!(order_id = %existing.id, "retrying a failed payment with the same key");
                    existing
                }
                _ => return replay(&state, existing).await,
            }
        }
    };
    match process::process_payment(&state, &order, &card).await {
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
        Err(err) => Err(payment_error(order.id, err)),
    }
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
    }
}

/// Answers a repeated key with the first outcome, charging nothing.
async fn replay(state: &AppState, order: OrderRow) -> Result<Response, ApiError> {
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
        .with_details(json!({ "order_id": order.id, "idempotent_replay": true }))),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "payment_in_progress",
            "a payment with this Idempotency-Key is in progress; retry shortly",
        )
        .with_details(json!({ "order_id": order.id }))),
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
/// and binds. The outbox relay runs beside the HTTP server and stops after
/// it has drained, publishing what is committed on its way out.
///
/// Fails when a dependency stays unreachable or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let pool = tracelab_db::connect(
        &config.database_url,
        config.db_pool_size,
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
    };
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
        }))
}
