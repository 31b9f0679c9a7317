//! OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, optionally gzip.
//!
//! What a request holds while it is decoded (its body, the inflated body, the
//! decoded spans) is first reserved from the store's byte bound
//! ([`crate::store::Store::reserve`] evicts the oldest traces to make room),
//! so stored and in-flight bytes together stay under `max_bytes`. A request
//! that could never fit is a 413; one that finds the bound held by other
//! requests in flight is a 503 (retry later).

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use crate::pipeline::{Decoded, Pipeline};
use crate::span::Interner;
use crate::store::{Refused, Reservation};

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
/// gRPC code UNAVAILABLE, for a busy collector (retryable).
const UNAVAILABLE: i32 = 14;

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
    let max_bytes = pipeline.store.max_bytes();
    let mut held = match reserve(&pipeline, None, body.len()) {
        Ok(Some(r)) => r,
        Ok(None) => unreachable!("a new reservation is returned"),
        Err(answer) => return answer(encoding, max_bytes),
    };
    let body = match content_encoding.as_str() {
        "" | "identity" => body,
        // Inflate no more than the bound could ever hold for it.
        "gzip" => match gunzip(&body, (max_bytes - held.bytes()).min(MAX_BODY_BYTES)) {
            Ok(inflated) => {
                if let Err(answer) = reserve(&pipeline, Some(&mut held), inflated.len()) {
                    return answer(encoding, max_bytes);
                }
                inflated
            }
            Err(GunzipError::TooLarge(room)) => {
                if room < MAX_BODY_BYTES {
                    return refused(encoding, Refused::TooLarge, max_bytes);
                }
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
    // Decoding copies the strings (and JSON goes through a value tree about
    // twice the text's size); the decoded size is known only after, so the
    // wire size is reserved first and the rest once it is known.
    let decode_reserve = match encoding {
        Encoding::Protobuf => body.len(),
        Encoding::Json => body.len().saturating_mul(2),
    };
    if let Err(answer) = reserve(&pipeline, Some(&mut held), decode_reserve) {
        return answer(encoding, max_bytes);
    }
    let request = match encoding {
        // Straight into stored spans, under one interner lock.
        Encoding::Protobuf => {
            crate::otlp_proto::decode_request(&body, &pipeline.records, &mut Interner::global())
                .map_err(|e| format!("invalid protobuf ExportTraceServiceRequest: {e}"))
        }
        Encoding::Json => crate::otlp_json::decode_request(&body)
            .map(|r| Decoded::from_proto(r, &pipeline.records, &mut Interner::global())),
    };
    let request = match request {
        Ok(r) => r,
        Err(msg) => return error(encoding, StatusCode::BAD_REQUEST, msg),
    };
    drop(body);
    let decoded = request.bytes().saturating_sub(decode_reserve);
    if let Err(answer) = reserve(&pipeline, Some(&mut held), decoded) {
        return answer(encoding, max_bytes);
    }
    let outcome = pipeline.ingest_decoded(request, Some(held));
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
    /// Inflates to more than the limit given (carried).
    TooLarge(usize),
    Invalid(std::io::Error),
}

/// Inflates `body`, refusing to hold more than `limit` bytes.
fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, GunzipError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(GunzipError::Invalid)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// A refused reservation, answered once the encoding is known.
type RefusedAnswer = fn(Encoding, usize) -> Response;

/// Reserves `bytes` more of the byte bound for this request (a new
/// reservation when `held` is `None`), counting the traces evicted for it.
fn reserve<'p>(
    pipeline: &'p Pipeline,
    held: Option<&mut Reservation<'p>>,
    bytes: usize,
) -> Result<Option<Reservation<'p>>, RefusedAnswer> {
    let outcome = match held {
        Some(r) => r.grow(bytes).map(|ev| (None, ev)),
        None => pipeline.store.reserve(bytes).map(|(r, ev)| (Some(r), ev)),
    };
    match outcome {
        Ok((new, (evicted, for_bytes))) => {
            pipeline.count_evictions(evicted, for_bytes);
            Ok(new)
        }
        Err(Refused::Busy) => Err(|e, max| refused(e, Refused::Busy, max)),
        Err(Refused::TooLarge) => Err(|e, max| refused(e, Refused::TooLarge, max)),
    }
}

/// The answer to a request the byte bound cannot take.
fn refused(encoding: Encoding, why: Refused, max_bytes: usize) -> Response {
    let mib = max_bytes as f64 / (1024.0 * 1024.0);
    match why {
        Refused::Busy => {
            let mut r = status_body(
                encoding,
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!(
                    "other requests being decoded hold the collector's memory bound \
                     ({mib:.1} MiB): retry later"
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Refused::TooLarge => error(
            encoding,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "decoding this request needs more memory than the collector's bound \
                 ({mib:.1} MiB) allows"
            ),
        ),
    }
}

fn error(encoding: Encoding, status: StatusCode, message: String) -> Response {
    status_body(encoding, status, INVALID_ARGUMENT, message)
}

fn status_body(encoding: Encoding, status: StatusCode, code: i32, message: String) -> Response {
    let rpc = RpcStatus { code, message };
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
