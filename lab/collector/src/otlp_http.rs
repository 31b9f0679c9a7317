//! OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, optionally gzip.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::pipeline::Pipeline;

/// Largest accepted request body, compressed or not, and largest body after
/// decompression (a small gzip body must not expand without limit).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// `google.rpc.Status`, the error body the OTLP/HTTP spec asks for.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC code INVALID_ARGUMENT, as used in the error body.
const INVALID_ARGUMENT: i32 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

pub(crate) fn router(pipeline: Arc<Pipeline>) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(pipeline)
}

async fn export(
    State(pipeline): State<Arc<Pipeline>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return error(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content-type {other:?}: use application/x-protobuf or application/json"
                ),
            );
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = match content_encoding.as_str() {
        "" | "identity" => body,
        "gzip" => match gunzip(&body) {
            Ok(b) => b,
            Err(GunzipError::TooLarge) => {
                return error(
                    encoding,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("decompressed body exceeds {MAX_BODY_BYTES} bytes"),
                );
            }
            Err(GunzipError::Invalid(e)) => {
                return error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    format!("invalid gzip body: {e}"),
                );
            }
        },
        other => {
            return error(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content-encoding {other:?}: use gzip or none"),
            );
        }
    };
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body.as_ref())
            .map_err(|e| format!("invalid protobuf ExportTraceServiceRequest: {e}")),
        Encoding::Json => crate::otlp_json::decode_request(&body),
    };
    let request = match request {
        Ok(r) => r,
        Err(msg) => return error(encoding, StatusCode::BAD_REQUEST, msg),
    };
    let outcome = pipeline.ingest(request);
    let partial = (outcome.rejected > 0).then_some(ExportTracePartialSuccess {
        rejected_spans: outcome.rejected as i64,
        error_message: outcome.message,
    });
    match encoding {
        Encoding::Protobuf => {
            let resp = ExportTraceServiceResponse {
                partial_success: partial,
            };
            (
                [(header::CONTENT_TYPE, encoding.content_type())],
                resp.encode_to_vec(),
            )
                .into_response()
        }
        Encoding::Json => {
            let body = match partial {
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            (
                [(header::CONTENT_TYPE, encoding.content_type())],
                body.to_string(),
            )
                .into_response()
        }
    }
}

enum GunzipError {
    TooLarge,
    Invalid(std::io::Error),
}

fn gunzip(body: &[u8]) -> Result<Bytes, GunzipError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_BODY_BYTES));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(MAX_BODY_BYTES as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(GunzipError::Invalid)?;
    if out.len() > MAX_BODY_BYTES {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(out))
}

fn error(encoding: Encoding, status: StatusCode, message: String) -> Response {
    let rpc = RpcStatus {
        code: INVALID_ARGUMENT,
        message,
    };
    match encoding {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, encoding.content_type())],
            rpc.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, encoding.content_type())],
            serde_json::json!({"code": rpc.code, "message": rpc.message}).to_string(),
        )
            .into_response(),
    }
}
