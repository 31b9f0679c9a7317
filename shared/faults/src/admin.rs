//! The authenticated admin API that `tracelab fault` and the console drive.
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/faults` | 200 [`FaultsReport`] |
//! | `PUT /admin/faults` with a [`FaultSpec`] | 200 [`ActiveFault`]; 400 naming the field |
//! | `DELETE /admin/faults/{point}` | 200 `{"cleared":point}`; 404 when none |
//! | `DELETE /admin/faults` | 200 `{"cleared":n}` |
//! | `GET`/`PUT /admin/faults/_visible` `{"visible":bool}` | 200 `{"visible":bool}` |
//!
//! Every request needs `Authorization: Bearer <admin token>`; otherwise 401.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracelab_service::{ApiError, Json};

use crate::registry::{ActiveFault, FaultRegistry};
use crate::spec::{FaultError, FaultSpec};

/// The answer to `GET /admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultsReport {
    pub service: String,
    pub points: Vec<String>,
    pub faults: Vec<ActiveFault>,
    pub visible: bool,
}

/// The body of `PUT /admin/faults/_visible` and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visibility {
    pub visible: bool,
}

/// The admin routes for `registry`, guarded by `admin_token`. Merge it into
/// the service's router. An empty token refuses every request.
pub fn admin_router(registry: FaultRegistry, admin_token: String) -> Router {
    if admin_token.is_empty() {
        tracing::warn!("empty admin token: the fault admin API refuses every request");
    }
    let token = TokenDigest::new(&admin_token);
    Router::new()
        .route("/admin/faults", get(report).put(set_fault).delete(clear_all))
        .route("/admin/faults/_visible", get(get_visible).put(set_visible))
        .route("/admin/faults/{point}", delete(clear_one))
        .route_layer(from_fn_with_state(token, require_token))
        .with_state(registry)
}

/// The token's SHA-256, so the comparison takes the same time whatever the
/// length or content of what a client sends.
#[derive(Clone)]
struct TokenDigest(Option<[u8; 32]>);

impl TokenDigest {
    fn new(token: &str) -> Self {
        Self((!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into()))
    }

    fn matches(&self, candidate: &str) -> bool {
        let Some(expected) = &self.0 else { return false };
        let got: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let diff = expected.iter().zip(got.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

async fn require_token(State(token): State<TokenDigest>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim());
    match presented {
        Some(value) if token.matches(value) => next.run(req).await,
        _ => {
            let mut response = ApiError::unauthorized("missing or invalid admin token").into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn report(State(registry): State<FaultRegistry>) -> Json<FaultsReport> {
    Json(FaultsReport {
        service: registry.service().to_string(),
        points: registry.points().iter().map(|p| p.to_string()).collect(),
        faults: registry.list(),
        visible: registry.visible(),
    })
}

async fn set_fault(
    State(registry): State<FaultRegistry>,
    Json(body): Json<Value>,
) -> Result<Json<ActiveFault>, ApiError> {
    let spec = FaultSpec::from_value(body).map_err(invalid)?;
    let active = registry.set(spec).map_err(invalid)?;
    tracing::info!(point = %active.spec.point, kind = active.spec.kind.name(), "fault set");
    Ok(Json(active))
}

fn invalid(e: FaultError) -> ApiError {
    let error = ApiError::bad_request("invalid_fault", e.to_string());
    match e.field() {
        Some(field) => error.with_details(json!({ "field": field })),
        None => error,
    }
}

async fn clear_one(State(registry): State<FaultRegistry>, Path(point): Path<String>) -> Result<Json<Value>, ApiError> {
    if registry.clear(&point) {
        tracing::info!(point = %point, "fault cleared");
        Ok(Json(json!({ "cleared": point })))
    } else {
        Err(ApiError::not_found(format!("no fault at point {point:?}")))
    }
}

async fn clear_all(State(registry): State<FaultRegistry>) -> Json<Value> {
    let n = registry.clear_all();
    tracing::info!(cleared = n, "all faults cleared");
    Json(json!({ "cleared": n }))
}

async fn get_visible(State(registry): State<FaultRegistry>) -> Json<Visibility> {
    Json(Visibility {
        visible: registry.visible(),
    })
}

async fn set_visible(State(registry): State<FaultRegistry>, Json(body): Json<Value>) -> Result<Json<Visibility>, ApiError> {
    // Parsed here rather than by the extractor, which would answer 422.
    let body: Visibility = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("expected {{\"visible\": true|false}}: {e}")))?;
    registry.set_visible(body.visible);
    tracing::info!(visible = body.visible, "fault visibility changed");
    Ok(Json(body))
}
