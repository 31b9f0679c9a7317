//! The call to the external payment API (payment-provider).
//!
//! The lesson's `callExternalPaymentAPI` span IS the HTTP client span of
//! this call: it carries both the payment attributes and the HTTP ones, and
//! the provider's SERVER span is its direct child.

use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use tracelab_telemetry::propagation::inject_http;

/// The provider's name on spans (`payment.provider`).
pub const PROVIDER_NAME: &str = "stripe-mock";

/// A successful charge.
#[derive(Debug, Clone)]
pub struct Charge {
    pub transaction_id: String,
}

/// Why a charge did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChargeError {
    /// The card was declined (402): final for this order.
    #[error("{code}: {message}")]
    Declined {
        code: String,
        decline_code: String,
        message: String,
    },
    /// The provider refused the request itself (4xx other than 402).
    #[error("provider rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The provider asked us to slow down (429).
    #[error("provider rate limited the request (retry after {retry_after:?} s)")]
    RateLimited { retry_after: Option<u64> },
    /// 5xx or a transport failure: worth retrying later with the same key.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The attempt's idempotency key was cancelled (by the reconciler,
    /// which found it unused) before this request reached the provider:
    /// nothing was charged, and this attempt never will.
    #[error("the attempt's idempotency key was cancelled: {0}")]
    Cancelled(String),
}

#[derive(Deserialize)]
struct ProviderError {
    error: ProviderErrorBody,
}

#[derive(Deserialize)]
struct ProviderErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ChargeObject {
    id: String,
}

/// A charge as the provider's lookup shows it.
#[derive(Debug, Deserialize)]
struct FoundCharge {
    id: String,
    status: String,
    #[serde(default)]
    failure_code: Option<String>,
    #[serde(default)]
    failure_message: Option<String>,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default)]
    payment_method_details: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Outcome {
    #[serde(default)]
    reason: Option<String>,
}

/// The provider's answer to `POST /v1/charges/cancel`.
#[derive(Debug, Deserialize)]
struct Cancellation {
    cancelled: bool,
    #[serde(default)]
    charge: Option<FoundCharge>,
}

/// How the charge made with an order's idempotency key ended, as the
/// provider tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The card was charged.
    Succeeded {
        transaction_id: String,
        card_last4: String,
    },
    /// The charge was declined (`code` as the charge call would have
    /// answered it).
    Declined {
        code: String,
        decline_code: String,
        message: String,
    },
    /// The provider is still processing it.
    Pending,
    /// No request with the key was processed, and the key is cancelled, so
    /// none will be: the card was not charged by this attempt.
    NotCharged,
}

/// HTTP client for the provider's `/v1/charges`.
#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl ProviderClient {
    /// Fails only if the TLS-less reqwest client cannot be built.
    pub fn new(base_url: &str, timeout: Duration) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.to_string(),
            timeout,
        })
    }

    /// Charges `card`, under the span in `cx` (the `callExternalPaymentAPI`
    /// span). `key` is the attempt's idempotency key at the provider
    /// ([`crate::store::OrderRow::provider_key`]), so a repeated call for the
    /// same attempt never charges twice.
    pub async fn charge(
        &self,
        cx: &Context,
        order_id: Uuid,
        key: &str,
        amount: i64,
        currency: &str,
        card: &str,
    ) -> Result<Charge, ChargeError> {
        let url = format!("{}/v1/charges", self.base_url);
        let span = cx.span();
        span.set_attribute(KeyValue::new("http.request.method", "POST"));
        span.set_attribute(KeyValue::new("url.full", url.clone()));
        if let Ok(parsed) = reqwest::Url::parse(&url) {
            if let Some(host) = parsed.host_str() {
                span.set_attribute(KeyValue::new("server.address", host.to_owned()));
            }
            if let Some(port) = parsed.port_or_known_default() {
                span.set_attribute(KeyValue::new("server.port", i64::from(port)));
            }
        }
        let mut headers = http::HeaderMap::new();
        inject_http(cx, &mut headers);
        let response = self
            .http
            .post(&url)
            .headers(headers)
            .header("idempotency-key", key)
            .json(&json!({
                "amount": amount,
                "currency": currency.to_ascii_lowercase(),
                "card": card,
                "description": format!("tracelab order {order_id}"),
                "metadata": {"order_id": order_id.to_string()},
            }))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ChargeError::Timeout(self.timeout)
                } else {
                    ChargeError::Unavailable(e.to_string())
                }
            })?;
        let status = response.status();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ChargeError::Timeout(self.timeout)
            } else {
                ChargeError::Unavailable(e.to_string())
            }
        })?;
        if status.is_success() {
            let charge: ChargeObject = serde_json::from_slice(&body)
                .map_err(|e| ChargeError::Unavailable(format!("unreadable charge object: {e}")))?;
            return Ok(Charge {
                transaction_id: charge.id,
            });
        }
        let detail = serde_json::from_slice::<ProviderError>(&body)
            .ok()
            .map(|e| e.error);
        let message = detail
            .as_ref()
            .and_then(|d| d.message.clone())
            .unwrap_or_else(|| status.to_string());
        Err(match status.as_u16() {
            402 => {
                let code = detail
                    .as_ref()
                    .and_then(|d| d.code.clone())
                    .unwrap_or_else(|| "card_declined".into());
                let decline_code = detail
                    .and_then(|d| d.decline_code)
                    .unwrap_or_else(|| code.clone());
                ChargeError::Declined {
                    code,
                    decline_code,
                    message,
                }
            }
            429 => ChargeError::RateLimited { retry_after },
            // idempotency_key_in_use: another attempt with this order's key
            // is running at the provider; how it ends is not known yet.
            409 => ChargeError::Unavailable(format!("{status}: {message}")),
            400 if detail.as_ref().and_then(|d| d.code.as_deref())
                == Some("idempotency_key_cancelled") =>
            {
                ChargeError::Cancelled(message)
            }
            s if s >= 500 => ChargeError::Unavailable(format!("{status}: {message}")),
            s => ChargeError::Rejected { status: s, message },
        })
    }

    /// Settles for good how the attempt with idempotency key `key` ended
    /// (`POST /v1/charges/cancel`), under the span in `cx` (the
    /// reconciler's `lookupCharge`): the charge its request made, or, when
    /// no request with the key reached the provider, [`Lookup::NotCharged`]
    /// with the key cancelled at the provider, so a request still on its
    /// way can no longer charge. [`Lookup::Pending`] while a request with
    /// the key is being processed.
    ///
    /// Fails with [`ChargeError::Timeout`] or [`ChargeError::Unavailable`]
    /// when the provider does not answer or answers an error: then nothing
    /// is known (the key may or may not be cancelled), and the order must
    /// be left for a later look.
    pub async fn cancel_unless_charged(
        &self,
        cx: &Context,
        key: &str,
    ) -> Result<Lookup, ChargeError> {
        let url = format!("{}/v1/charges/cancel", self.base_url);
        let span = cx.span();
        span.set_attribute(KeyValue::new("http.request.method", "POST"));
        span.set_attribute(KeyValue::new("url.full", url.clone()));
        let mut headers = http::HeaderMap::new();
        inject_http(cx, &mut headers);
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                ChargeError::Timeout(self.timeout)
            } else {
                ChargeError::Unavailable(e.to_string())
            }
        };
        let response = self
            .http
            .post(url)
            .headers(headers)
            .json(&json!({ "idempotency_key": key }))
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        let body = response.bytes().await.map_err(failed)?;
        if status == reqwest::StatusCode::CONFLICT {
            // idempotency_key_in_use: a request with the key is running.
            return Ok(Lookup::Pending);
        }
        if !status.is_success() {
            return Err(ChargeError::Unavailable(format!(
                "charge cancellation answered {status}"
            )));
        }
        let answer: Cancellation = serde_json::from_slice(&body)
            .map_err(|e| ChargeError::Unavailable(format!("unreadable cancellation: {e}")))?;
        let charge = match answer {
            Cancellation {
                cancelled: true, ..
            } => return Ok(Lookup::NotCharged),
            Cancellation {
                charge: Some(charge),
                ..
            } => charge,
            Cancellation { charge: None, .. } => {
                return Err(ChargeError::Unavailable(
                    "cancellation neither cancelled nor named a charge".into(),
                ));
            }
        };
        span.set_attribute(KeyValue::new("payment.transaction_id", charge.id.clone()));
        Ok(match charge.status.as_str() {
            "succeeded" => Lookup::Succeeded {
                card_last4: charge
                    .payment_method_details
                    .as_ref()
                    .and_then(|d| d["card"]["last4"].as_str())
                    .unwrap_or("")
                    .to_string(),
                transaction_id: charge.id,
            },
            "failed" => {
                let code = charge
                    .failure_code
                    .unwrap_or_else(|| "card_declined".into());
                Lookup::Declined {
                    decline_code: charge
                        .outcome
                        .and_then(|o| o.reason)
                        .unwrap_or_else(|| code.clone()),
                    message: charge
                        .failure_message
                        .unwrap_or_else(|| "Your card was declined.".into()),
                    code,
                }
            }
            _ => Lookup::Pending,
        })
    }
}
