//! The console's `/api/...` routes, one file per group; the table of routes
//! is `docs/console-api.md`. Errors answer in the services' JSON shape
//! (`tracelab-service`'s [`ApiError`]).

use axum::Router;
use axum::routing::{delete, get, post};
use http::StatusCode;
pub(crate) use tracelab_service::{ApiError, Json};

use super::ConsoleState;

pub mod actions;
pub mod dlq;
pub mod exercise;
pub mod faults;
pub mod lab;
pub mod load;
pub mod sampling;
pub mod scenarios;
pub mod tempo;

/// A handler's answer: JSON, or the JSON error shape.
pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

/// The `/api/...` routes.
pub(crate) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/api/lab", get(lab::get_lab))
        .route("/api/tempo/{*path}", get(tempo::pass_through))
        .route("/api/faults/points", get(faults::points))
        .route(
            "/api/faults",
            get(faults::list).put(faults::set).delete(faults::clear_all),
        )
        .route("/api/faults/{point}", delete(faults::clear_point))
        .route("/api/scenarios", get(scenarios::list))
        .route("/api/scenarios/stop", post(scenarios::stop))
        .route("/api/scenarios/{id}", get(scenarios::show))
        .route("/api/scenarios/{id}/start", post(scenarios::start))
        .route("/api/scenarios/{id}/verify", post(scenarios::verify))
        .route("/api/exercise", get(exercise::status).post(exercise::start))
        .route("/api/exercise/hint", post(exercise::hint))
        .route("/api/exercise/answer", post(exercise::answer))
        .route("/api/exercise/reveal", post(exercise::reveal))
        .route("/api/exercise/history", get(exercise::history))
        .route(
            "/api/load",
            get(load::status).post(load::start).delete(load::stop),
        )
        .route("/api/actions/checkout", post(actions::checkout))
        .route(
            "/api/actions/declined-checkout",
            post(actions::declined_checkout),
        )
        .route("/api/actions/search", post(actions::search))
        .route("/api/actions/burst", post(actions::burst))
        .route("/api/dlq", get(dlq::list))
        .route("/api/dlq/replay", post(dlq::replay))
        .route(
            "/api/sampling",
            get(sampling::get_sampling).put(sampling::set_sampling),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .route("/api", get(not_found))
        .route("/api/{*rest}", get(not_found).fallback(not_found))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such console route; docs/console-api.md lists them")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; docs/console-api.md lists them",
    )
}

/// A failure to reach part of the lab: 502 with `code`, the cause logged
/// (not sent: 5xx answers carry a generic message), the part named in
/// `service` when known.
pub(crate) fn upstream(code: &'static str, service: Option<&str>, e: &anyhow::Error) -> ApiError {
    tracing::warn!(code, service, error = %format!("{e:#}"), "console: lab request failed");
    let err = ApiError::new(StatusCode::BAD_GATEWAY, code, format!("{e:#}"));
    match service {
        Some(s) => err.with_details(serde_json::json!({ "service": s })),
        None => err,
    }
}

/// The 409 of a route that needs a running exercise.
pub(crate) fn no_exercise() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_exercise",
        "no exercise is running; start one with POST /api/exercise (`tracelab exercise start`)",
    )
}

/// An optional JSON body: absent or empty means the default.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the request body is not valid: {e}"),
        )
    })
}
