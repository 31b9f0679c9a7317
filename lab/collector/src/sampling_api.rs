//! tracelab's own tail sampling endpoint: the policy in force and its
//! decisions, and replacing the policy while the collector runs (the lab
//! console's switch between the lab's and the lesson's policy).
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/tracelab/sampling` | 200 [`TailReport`]; 409 `no_tail_sampling` |
//! | `PUT /api/tracelab/sampling` `{"tail_based": {...}}` | 200 [`TailReport`] of the new policy; 400 `invalid_policy`; 401; 409 `no_tail_sampling` |
//!
//! Reading is open, like the rest of the query API. Replacing needs
//! `Authorization: Bearer <admin token>` (`CollectorConfig::admin_token`,
//! `TRACELAB_ADMIN_TOKEN`): without a token configured the collector
//! refuses every replacement. A collector started without a tail policy
//! stores every span as it comes and has nothing to replace (409): tail
//! sampling is on or off for the life of the process.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::pipeline::Pipeline;
use crate::store::Counters;
use crate::tail::TailPolicy;

/// The JSON error shape of every tracelab HTTP API.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn no_tail() -> Response {
    error(
        StatusCode::CONFLICT,
        "no_tail_sampling",
        "this collector was started without a tail sampling policy (no sampling file): it \
         stores every span, and its policy cannot be replaced; start it with --sampling-file",
    )
}

#[derive(Clone)]
struct Sampling {
    pipeline: Arc<Pipeline>,
    token: Option<Arc<str>>,
}

/// The `/api/tracelab/sampling` route; `token` guards `PUT`.
pub(crate) fn router(pipeline: Arc<Pipeline>, token: Option<String>) -> Router {
    let token = token.filter(|t| !t.is_empty()).map(Arc::from);
    Router::new()
        .route("/api/tracelab/sampling", get(report).put(replace))
        .with_state(Sampling { pipeline, token })
}

async fn report(State(s): State<Sampling>) -> Response {
    match &s.pipeline.tail {
        Some(tail) => axum::Json(tail.report()).into_response(),
        None => no_tail(),
    }
}

/// Compares every byte whatever the first difference, so the time taken
/// does not tell how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let diff = (0..a.len().max(b.len())).fold(a.len() ^ b.len(), |acc, i| {
        acc | usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0))
    });
    std::hint::black_box(diff) == 0
}

async fn replace(State(s): State<Sampling>, headers: HeaderMap, body: String) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim());
    let authorized = matches!((&s.token, presented), (Some(t), Some(p)) if same(t, p));
    if !authorized {
        let message = if s.token.is_none() {
            "this collector has no admin token (TRACELAB_ADMIN_TOKEN), so it refuses every change"
        } else {
            "missing or invalid admin token"
        };
        let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        return response;
    }
    let Some(tail) = &s.pipeline.tail else {
        return no_tail();
    };
    // The body is JSON, which is YAML: the sampling file's own reader
    // checks it, with the file's messages.
    let policy = serde_json::from_str::<serde_json::Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))
        .and_then(|v| match v.get("tail_based") {
            Some(_) => TailPolicy::from_yaml_str(&body).map_err(|e| format!("{e:#}")),
            None => Err(
                "expected {\"tail_based\": {\"decision_wait_ms\": ..., \"policies\": [...]}}"
                    .into(),
            ),
        })
        .and_then(|p| p.ok_or_else(|| "tail_based is null".to_string()));
    let policy = match policy {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_policy", &message),
    };
    let kept = tail.replace(policy);
    let rejected = s.pipeline.store_fragments(kept);
    Counters::add(&s.pipeline.counters.spans_rejected, rejected);
    let report = tail.report();
    tracing::info!(policy = %report.tail_based, "tail sampling policy replaced");
    axum::Json(report).into_response()
}
