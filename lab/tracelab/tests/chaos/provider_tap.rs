//! A recording pass-through between payment and payment-provider: the
//! provider's own view of what it charged, kept outside both services.
//!
//! payment is pointed at the tap (`TRACELAB_PROVIDER_URL`); the tap
//! forwards every request unchanged to the provider and notes each answer
//! to `POST /v1/charges`: the idempotency key, the order named in the
//! charge's metadata, the status, and the charge's id and status. The
//! forwarding runs on its own task, so a charge whose caller was killed
//! mid-request (`kill -9 payment`) is still seen to its end, as the
//! provider saw it. A charge here without a payment row is a card charged
//! for nothing; two charge ids for one order is a double charge.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One answer of the provider to `POST /v1/charges`.
#[derive(Debug, Clone)]
pub(crate) struct TappedCharge {
    /// The `Idempotency-Key` payment sent (its order id).
    pub(crate) idempotency_key: Option<String>,
    /// `metadata.order_id` of the request.
    pub(crate) order_id: Option<String>,
    /// The provider's HTTP status, or `None` when it did not answer.
    pub(crate) status: Option<u16>,
    /// The charge object's `id` (`ch_...`) in a 2xx answer.
    pub(crate) charge_id: Option<String>,
    /// The charge object's `status` (`succeeded`, ...).
    pub(crate) charge_status: Option<String>,
}

impl TappedCharge {
    /// A 2xx answer carrying a succeeded charge: money moved.
    pub(crate) fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
            && self.charge_id.is_some()
            && self.charge_status.as_deref() == Some("succeeded")
    }
}

#[derive(Clone)]
struct Tap {
    upstream: String,
    http: reqwest::Client,
    charges: Arc<Mutex<Vec<TappedCharge>>>,
    in_flight: Arc<AtomicUsize>,
}

/// The running tap.
pub(crate) struct ProviderTap {
    addr: SocketAddr,
    tap: Tap,
    server: tokio::task::JoinHandle<()>,
}

impl ProviderTap {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`http://127.0.0.1:<provider port>`).
    pub(crate) async fn start(upstream: &str) -> ProviderTap {
        let tap = Tap {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            charges: Arc::default(),
            in_flight: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the provider tap");
        let addr = listener.local_addr().expect("tap address");
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(tap.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ProviderTap { addr, tap, server }
    }

    /// The URL payment is given as the provider's.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every charge answer so far.
    pub(crate) fn charges(&self) -> Vec<TappedCharge> {
        self.tap
            .charges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests being forwarded right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.tap.in_flight.load(Ordering::SeqCst)
    }

    /// Distinct succeeded charge ids per order id (from the request's
    /// metadata, else its idempotency key).
    pub(crate) fn succeeded_by_order(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in self.charges().into_iter().filter(TappedCharge::succeeded) {
            let order = c
                .order_id
                .clone()
                .or(c.idempotency_key.clone())
                .unwrap_or_default();
            let ids = by_order.entry(order).or_default();
            let id = c.charge_id.unwrap_or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        by_order
    }
}

impl Drop for ProviderTap {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Headers that belong to one hop, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive"
    )
}

async fn forward(State(tap): State<Tap>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let is_charge = parts.method == axum::http::Method::POST && parts.uri.path() == "/v1/charges";
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // On its own task: the caller may go away (killed), the provider's
    // answer is still recorded.
    let task = tokio::spawn(send(tap, parts.method, path, headers, body, is_charge));
    match task.await {
        Ok(Some((status, headers, body))) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if !hop_by_hop(name) {
                    response.headers_mut().append(name.clone(), value.clone());
                }
            }
            response
        }
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn send(
    tap: Tap,
    method: axum::http::Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    is_charge: bool,
) -> Option<(StatusCode, HeaderMap, Bytes)> {
    tap.in_flight.fetch_add(1, Ordering::SeqCst);
    let request_json: Option<Value> = is_charge
        .then(|| serde_json::from_slice(&body).ok())
        .flatten();
    let result = async {
        let response = tap
            .http
            .request(method, format!("{}{path}", tap.upstream))
            .headers(headers.clone())
            .body(body)
            .send()
            .await
            .ok()?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.ok()?;
        Some((status, headers, body))
    }
    .await;
    if is_charge {
        let answer: Option<Value> = result
            .as_ref()
            .and_then(|(_, _, b)| serde_json::from_slice(b).ok());
        let str_at = |v: &Option<Value>, path: &[&str]| {
            let mut at = v.as_ref()?;
            for key in path {
                at = at.get(key)?;
            }
            at.as_str().map(str::to_string)
        };
        let record = TappedCharge {
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            order_id: str_at(&request_json, &["metadata", "order_id"]),
            status: result.as_ref().map(|(s, _, _)| s.as_u16()),
            charge_id: str_at(&answer, &["id"]).filter(|id| id.starts_with("ch_")),
            charge_status: str_at(&answer, &["status"]),
        };
        tap.charges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
    tap.in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}
