//! One-shot actions, HotROD style: a checkout, a declined checkout, a
//! search, a burst. Each answers with the gateway's status and answer, the
//! trace id and the page's link to the trace.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracelab_client::gateway::{self, CheckoutRequest, LoginError, response_trace_id};
use tracelab_contract::routes;
use tracelab_contract::users::DEMO_USERS;

use super::{ApiError, ApiResult, Json, optional_body, upstream};
use crate::console::ConsoleState;
use crate::load::{DECLINE_CARD, SEARCH_TERMS};

/// The card every demo checkout pays with.
const GOOD_CARD: &str = "4242424242424242";
/// The most requests one burst sends.
pub const MAX_BURST: u32 = 100;
/// Requests of a burst in flight at once.
const BURST_CONCURRENCY: usize = 10;

/// What an action did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    /// The gateway route (`POST /api/checkout`).
    pub route: String,
    /// The gateway's HTTP status; 0 when it did not answer.
    pub status: u16,
    /// The trace of the request.
    pub trace_id: Option<String>,
    /// The page's view of that trace.
    pub link: Option<String>,
    /// The gateway's answer.
    pub body: Value,
    /// Why there is no answer, when the gateway did not answer.
    pub error: Option<String>,
}

/// The page's link to a trace.
pub fn trace_link(trace_id: &str) -> String {
    format!("/#/trace/{trace_id}")
}

/// The amount of a checkout without items, in minor units (JPY has none).
const DEFAULT_AMOUNT: u64 = 4980;
/// Its currency.
const DEFAULT_CURRENCY: &str = "JPY";

/// `POST /api/actions/checkout` body: everything optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutBody {
    user: Option<String>,
    card: Option<String>,
    items: Option<Vec<Item>>,
    /// With no items: the amount in minor units.
    amount: Option<u64>,
    /// With no items: the amount's currency.
    currency: Option<String>,
    /// The `Idempotency-Key` header; reusing one shows the replay.
    idempotency_key: Option<String>,
}

impl CheckoutBody {
    /// The gateway's checkout body these fields describe.
    ///
    /// # Errors
    /// 400 `invalid_body` for an empty item list, or items given together
    /// with an amount or a currency.
    fn request(&self) -> Result<CheckoutRequest, ApiError> {
        let card = self.card.clone().unwrap_or_else(|| GOOD_CARD.to_string());
        match &self.items {
            Some(_) if self.amount.is_some() || self.currency.is_some() => {
                Err(ApiError::bad_request(
                    "invalid_body",
                    "give items, or amount and currency, not both: items are priced by the shop",
                ))
            }
            Some(items) if items.is_empty() => Err(ApiError::bad_request(
                "invalid_body",
                "items: give at least one {product_id, quantity}, or leave items out",
            )),
            Some(items) => Ok(CheckoutRequest::Items {
                items: items.iter().map(|i| (i.product_id, i.quantity)).collect(),
                card,
            }),
            None => Ok(CheckoutRequest::Amount {
                amount: self.amount.unwrap_or(DEFAULT_AMOUNT),
                currency: self
                    .currency
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CURRENCY.to_string()),
                card,
            }),
        }
    }

    /// The idempotency key to send: the one given, else a new one.
    ///
    /// # Errors
    /// 400 `invalid_body` for a blank key or one that cannot be a header
    /// (the payment service judges the rest, e.g. its length).
    fn idempotency_key(&self) -> Result<String, ApiError> {
        match &self.idempotency_key {
            Some(key)
                if key.trim().is_empty()
                    || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
            {
                Err(ApiError::bad_request(
                    "invalid_body",
                    "idempotency_key: give a non-blank key of visible ASCII, or leave it out for a new one",
                ))
            }
            Some(key) => Ok(key.clone()),
            None => Ok(uuid::Uuid::new_v4().to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    product_id: u64,
    quantity: u32,
}

/// `POST /api/actions/search` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchBody {
    q: Option<String>,
}

/// `POST /api/actions/burst` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BurstBody {
    count: Option<u32>,
}

/// The answer of a burst.
#[derive(Debug, Serialize, Deserialize)]
pub struct Burst {
    /// Requests sent.
    pub sent: usize,
    /// 2xx answers.
    pub ok: usize,
    /// Each request, in the order sent.
    pub actions: Vec<Action>,
}

pub(crate) async fn checkout(State(state): State<ConsoleState>, body: Bytes) -> ApiResult<Action> {
    let body: CheckoutBody = optional_body(&body)?;
    let request = body.request()?;
    let key = body.idempotency_key()?;
    let user = body.user.as_deref().unwrap_or("alice");
    answered(send_checkout(&state, user, &request, &key).await?)
}

pub(crate) async fn declined_checkout(
    State(state): State<ConsoleState>,
    body: Bytes,
) -> ApiResult<Action> {
    let body: CheckoutBody = optional_body(&body)?;
    let CheckoutBody {
        user,
        card: None,
        items: None,
        amount: None,
        currency: None,
        idempotency_key: None,
    } = body
    else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "a declined checkout takes only `user`: its card is the declining one",
        ));
    };
    let request = CheckoutRequest::Amount {
        amount: DEFAULT_AMOUNT,
        currency: DEFAULT_CURRENCY.into(),
        card: DECLINE_CARD.to_string(),
    };
    let user = user.as_deref().unwrap_or("alice");
    let key = uuid::Uuid::new_v4().to_string();
    answered(send_checkout(&state, user, &request, &key).await?)
}

pub(crate) async fn search(State(state): State<ConsoleState>, body: Bytes) -> ApiResult<Action> {
    let body: SearchBody = optional_body(&body)?;
    let q = body.q.unwrap_or_else(|| SEARCH_TERMS[0].to_string());
    answered(send_search(&state, &q).await?)
}

/// A single action the gateway did not answer is the lab's failure: 502.
fn answered(action: Action) -> ApiResult<Action> {
    match &action.error {
        Some(e) => Err(upstream(
            "gateway_unreachable",
            Some("gateway"),
            &anyhow::anyhow!("{} got no answer: {e}", action.route),
        )),
        None => Ok(Json(action)),
    }
}

pub(crate) async fn burst(State(state): State<ConsoleState>, body: Bytes) -> ApiResult<Burst> {
    let body: BurstBody = optional_body(&body)?;
    let count = body.count.unwrap_or(20);
    if !(1..=MAX_BURST).contains(&count) {
        return Err(ApiError::bad_request(
            "invalid_count",
            format!("count: 1 to {MAX_BURST}, got {count}"),
        ));
    }
    // Checkouts and searches, two searches to a checkout, as the demo users.
    let permits = Arc::new(Semaphore::new(BURST_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count as usize {
        let state = state.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let action = if i % 3 == 0 {
                let user = DEMO_USERS[(i / 3) % DEMO_USERS.len()].username;
                let request = CheckoutRequest::Amount {
                    amount: 1000 + (i as u64 % 7) * 480,
                    currency: DEFAULT_CURRENCY.into(),
                    card: GOOD_CARD.into(),
                };
                let key = uuid::Uuid::new_v4().to_string();
                send_checkout(&state, user, &request, &key).await
            } else {
                send_search(&state, SEARCH_TERMS[i % SEARCH_TERMS.len()]).await
            };
            (i, action)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, action) = joined.map_err(|e| ApiError::internal("burst_failed", e))?;
        done.push((i, action?));
    }
    done.sort_by_key(|(i, _)| *i);
    let actions: Vec<Action> = done.into_iter().map(|(_, a)| a).collect();
    Ok(Json(Burst {
        sent: actions.len(),
        ok: actions
            .iter()
            .filter(|a| (200..300).contains(&a.status))
            .count(),
        actions,
    }))
}

async fn send_checkout(
    state: &ConsoleState,
    user: &str,
    request: &CheckoutRequest,
    idempotency_key: &str,
) -> Result<Action, ApiError> {
    let inner = &state.inner;
    let base = &inner.config.gateway;
    let token = gateway::login(&inner.http, base, user, &gateway::demo_password(user))
        .await
        .map_err(|e| match e {
            LoginError::Refused { status, .. } if status.is_client_error() => {
                ApiError::bad_request("login_refused", format!("{e}"))
            }
            other => upstream("gateway_unreachable", Some("gateway"), &other.into()),
        })?;
    let http_request = inner
        .http
        .post(gateway::join(base, gateway::CHECKOUT_PATH))
        .bearer_auth(token)
        .header("Idempotency-Key", idempotency_key)
        .json(request);
    Ok(answer_of(routes::CHECKOUT.name, http_request.send().await).await)
}

async fn send_search(state: &ConsoleState, q: &str) -> Result<Action, ApiError> {
    let inner = &state.inner;
    let mut url = reqwest::Url::parse(&gateway::join(&inner.config.gateway, routes::PRODUCTS.path))
        .map_err(|e| ApiError::internal("bad_gateway_url", e))?;
    url.query_pairs_mut().append_pair("q", q);
    Ok(answer_of(routes::PRODUCTS.name, inner.http.get(url).send().await).await)
}

/// The action an answer (or its absence) makes.
async fn answer_of(route: &str, sent: Result<reqwest::Response, reqwest::Error>) -> Action {
    match sent {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let trace_id = response_trace_id(&headers, &body);
            Action {
                route: route.to_string(),
                status: status.as_u16(),
                link: trace_id.as_deref().map(trace_link),
                trace_id,
                body,
                error: None,
            }
        }
        Err(e) => Action {
            route: route.to_string(),
            status: 0,
            trace_id: None,
            link: None,
            body: Value::Null,
            error: Some(tracelab_client::http_error_summary(&e)),
        },
    }
}
