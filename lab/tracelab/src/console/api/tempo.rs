//! `GET /api/tempo/{*path}`: the lab's Tempo API (the embedded collector
//! natively, Tempo in compose), passed through. The page reads traces only
//! through this route, so it works against both.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::{ApiError, upstream};
use crate::console::ConsoleState;

pub(crate) async fn pass_through(
    State(state): State<ConsoleState>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let mut url = format!(
        "{}/{}",
        inner.config.tempo.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(&q);
    }
    let resp = inner
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| upstream("tempo_unreachable", Some("tempo"), &e.into()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let body = resp
        .bytes()
        .await
        .map_err(|e| upstream("tempo_unreachable", Some("tempo"), &e.into()))?;
    let mut response = (status, body).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(response)
}
