//! `ApiError` and the JSON extractor.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use opentelemetry::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use tracelab_telemetry::span::{current_trace_id, record_error};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_json`, `card_declined`.
    pub code: &'static str,
    /// Shown to the client for 4xx; replaced by a generic text for 5xx.
    pub message: String,
    /// Extra fields merged into the `error` object (e.g. `retry_after`).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// A server-side failure: `cause` is recorded on the current span and
    /// logged, the client sees only `code` and a generic message.
    pub fn internal(code: &'static str, cause: impl std::fmt::Display) -> Self {
        let cause = cause.to_string();
        record_error(&Context::current(), code, &cause);
        tracing::error!(code, error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, cause)
    }
    /// An upstream dependency failed or is unreachable (502/503/504).
    pub fn upstream(status: StatusCode, code: &'static str, cause: impl std::fmt::Display) -> Self {
        let cause = cause.to_string();
        record_error(&Context::current(), code, &cause);
        tracing::warn!(code, error = %cause, "upstream failed");
        Self::new(status, code, cause)
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            match self.status {
                StatusCode::BAD_GATEWAY => "an upstream service failed".to_string(),
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the service is unavailable, try again later".to_string()
                }
                StatusCode::GATEWAY_TIMEOUT => "an upstream service timed out".to_string(),
                _ => "internal error; the trace id identifies this failure".to_string(),
            }
        } else {
            self.message
        };
        let mut error = json!({ "code": self.code, "message": message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.details, error.as_object_mut())
        {
            obj.extend(extra);
        }
        let mut body = json!({ "error": error });
        if let Some(trace_id) = current_trace_id() {
            body["trace_id"] = trace_id.into();
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// `axum::Json` whose rejections answer in the `ApiError` shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The raw request body, with the body limit answered in the `ApiError`
/// shape (axum's own rejection is plain text).
#[derive(Debug, Clone)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "invalid_body"
                };
                ApiError::new(status, code, rejection.body_text())
            })
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match &rejection {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "invalid_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        _ => "invalid_body",
    };
    ApiError::new(status, code, rejection.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_errors_hide_their_cause() {
        let response = ApiError::internal("db_failed", "password authentication failed for user x")
            .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains("db_failed"), "{text}");
    }

    #[tokio::test]
    async fn client_errors_keep_their_message_and_details() {
        let response = ApiError::bad_request("bad_amount", "amount must be positive")
            .with_details(json!({"field": "amount"}))
            .into_response();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["message"], "amount must be positive");
        assert_eq!(value["error"]["field"], "amount");
    }
}
