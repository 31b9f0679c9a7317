//! The gateway as a learner's client sees it: log in as a demo user, send a
//! checkout, and read the trace id the answer carries.
//!
//! Every tool that sends traffic (`tracelab checkout`, the load generator,
//! the scenario driver, the tests) logs in through [`login`], so a change to
//! the login contract is made once.

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};
use tracelab_contract::{routes, users};

use crate::http::http_error_summary;
use crate::ids::parse_trace_id;
use crate::trace::{SpanKind, Trace};

/// Path of the login route on the gateway.
pub const LOGIN_PATH: &str = routes::LOGIN.path;
/// Path of the checkout route on the gateway.
pub const CHECKOUT_PATH: &str = routes::CHECKOUT.path;

/// Why a login did not produce a token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No answer: connection refused, timed out, or the body was cut.
    #[error("cannot reach the gateway at {url}: {}", http_error_summary(.source))]
    Unreachable {
        /// The login URL.
        url: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered, but not 2xx (wrong password, auth down...).
    #[error("login as {user:?} failed: {status}: {body}")]
    Refused {
        /// Who tried to log in.
        user: String,
        /// The gateway's status.
        status: reqwest::StatusCode,
        /// The start of the gateway's answer (at most 200 characters).
        body: String,
    },
    /// A 2xx answer without a `token` string.
    #[error("the login answer for {user:?} has no \"token\"")]
    NoToken {
        /// Who logged in.
        user: String,
    },
}

impl LoginError {
    /// A short label for counting failures by kind: `timeout`, `connect`,
    /// `io`, the HTTP status (`401`), or `body`.
    pub fn kind(&self) -> String {
        match self {
            LoginError::Unreachable { source, .. } => transport_kind(source).to_string(),
            LoginError::Refused { status, .. } => status.as_u16().to_string(),
            LoginError::NoToken { .. } => "body".to_string(),
        }
    }
}

/// `timeout`, `connect` or `io`: what kind of transport failure `e` is.
pub fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "io"
    }
}

/// The password of a demo user; for any other name, the demo users'
/// convention `<user>-password`.
pub fn demo_password(user: &str) -> String {
    users::find(user).map_or_else(|| format!("{user}-password"), |u| u.password.to_string())
}

/// `base` + `path`, with exactly one slash between them.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Logs in at the gateway `base` (e.g. `http://127.0.0.1:8080`) and returns
/// the bearer token.
///
/// # Errors
/// [`LoginError`]: unreachable, refused (with the status and the start of
/// the answer), or an answer without a token.
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> Result<String, LoginError> {
    let url = join(base, LOGIN_PATH);
    let unreachable = |source| LoginError::Unreachable {
        url: url.clone(),
        source,
    };
    let resp = http
        .post(&url)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(LoginError::Refused {
            user: user.to_string(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| LoginError::NoToken {
            user: user.to_string(),
        })
}

/// The body of `POST /api/checkout`: either priced items or an amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CheckoutRequest {
    /// Products from the catalog; the gateway prices them.
    Items {
        /// `(product id, quantity)` pairs.
        #[serde(serialize_with = "items_as_objects")]
        items: Vec<(u64, u32)>,
        /// Card number (`4000000000000002` is declined).
        card: String,
    },
    /// A plain amount in minor units.
    Amount {
        /// Amount in minor units (JPY has none).
        amount: u64,
        /// ISO currency code.
        currency: String,
        /// Card number.
        card: String,
    },
}

fn items_as_objects<S: serde::Serializer>(items: &[(u64, u32)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        items
            .iter()
            .map(|(id, q)| json!({"product_id": id, "quantity": q})),
    )
}

/// The trace id of a gateway answer: the body's `trace_id`, else the
/// `traceresponse` header.
pub fn response_trace_id(headers: &HeaderMap, body: &Value) -> Option<String> {
    body.get("trace_id")
        .and_then(Value::as_str)
        .and_then(|id| parse_trace_id(id).ok())
        .or_else(|| {
            headers
                .get("traceresponse")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_trace_id(v).ok())
        })
}

/// Whether a checkout trace looks complete: the gateway's root is there, no
/// span waits for a missing parent, and (for a successful checkout) the
/// asynchronous notification part has arrived.
pub fn checkout_trace_complete(trace: &Trace, succeeded: bool) -> bool {
    let has_root = trace.roots().iter().any(|r| r.service == "gateway");
    let notified = trace
        .spans
        .iter()
        .any(|s| s.service == "notification" && s.kind == SpanKind::Consumer);
    has_root && trace.orphans().is_empty() && (!succeeded || notified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Span;

    #[test]
    fn checkout_bodies() {
        let items = CheckoutRequest::Items {
            items: vec![(1, 2), (3, 1)],
            card: "4242424242424242".into(),
        };
        assert_eq!(
            serde_json::to_value(&items).unwrap(),
            json!({"items": [{"product_id": 1, "quantity": 2}, {"product_id": 3, "quantity": 1}],
                   "card": "4242424242424242"})
        );
        let amount = CheckoutRequest::Amount {
            amount: 4980,
            currency: "JPY".into(),
            card: "4000000000000002".into(),
        };
        assert_eq!(
            serde_json::to_value(&amount).unwrap(),
            json!({"amount": 4980, "currency": "JPY", "card": "4000000000000002"})
        );
    }

    #[test]
    fn trace_id_from_body_or_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceresponse",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            response_trace_id(&h, &json!({})).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            response_trace_id(&h, &json!({"trace_id": "0af7651916cd43dd8448eb211c80319c"}))
                .as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(response_trace_id(&HeaderMap::new(), &json!({})), None);
    }

    #[test]
    fn checkout_completeness() {
        let root = Span {
            span_id: "a".repeat(16),
            service: "gateway".into(),
            kind: SpanKind::Server,
            ..Default::default()
        };
        let consumer = Span {
            span_id: "b".repeat(16),
            parent_span_id: Some("a".repeat(16)),
            service: "notification".into(),
            kind: SpanKind::Consumer,
            ..Default::default()
        };
        let only_root = Trace::new(vec![root.clone()]);
        assert!(checkout_trace_complete(&only_root, false));
        assert!(!checkout_trace_complete(&only_root, true));
        assert!(checkout_trace_complete(
            &Trace::new(vec![root, consumer.clone()]),
            true
        ));
        assert!(!checkout_trace_complete(&Trace::new(vec![consumer]), true));
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join("http://h:1/", LOGIN_PATH), "http://h:1/api/login");
        assert_eq!(join("http://h:1", CHECKOUT_PATH), "http://h:1/api/checkout");
    }

    #[tokio::test]
    async fn login_against_nothing_is_unreachable_with_the_url() {
        // Port 1 on loopback: nothing listens there.
        let err = login(&reqwest::Client::new(), "http://127.0.0.1:1", "alice", "x")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "connect");
        assert!(
            err.to_string()
                .starts_with("cannot reach the gateway at http://127.0.0.1:1/api/login"),
            "{err}"
        );
    }
}
