//! The W3C trace-context test harness endpoint, `POST /_w3c/test`, which the
//! official test suite (w3c/trace-context `test/`) drives: for each
//! `{url, arguments}` in the body, the service POSTs `arguments` to `url`
//! with its own context propagated, and the suite judges the headers.
//!
//! Such an endpoint forwards a caller's JSON to a URL of the caller's
//! choosing, so it is off unless `TRACELAB_W3C_HARNESS` names the suite's
//! own server, and then it forwards there and nowhere else: on the public
//! gateway it would otherwise let anyone reach (and charge cards at) the
//! services behind it.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use reqwest::Url;
use serde::Deserialize;
use tracelab_telemetry::config::ConfigError;

use crate::error::{ApiError, Json};

/// The harness endpoint's setting: off (the default), or on and forwarding
/// only to the test suite's server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct W3cHarness {
    target: Option<Url>,
}

impl W3cHarness {
    /// The environment variable that switches the endpoint on.
    pub const ENV: &'static str = "TRACELAB_W3C_HARNESS";

    /// Off: `POST /_w3c/test` is an unknown route (404).
    pub fn off() -> Self {
        Self::default()
    }

    /// On, forwarding only to `base` (`http://127.0.0.1:7777`): a call's
    /// URL must have its scheme, host and port, and a path under its path.
    ///
    /// Fails unless `base` is an `http(s)://host[:port][/path]` URL without
    /// user info, query or fragment.
    pub fn forwarding_to(base: &str) -> Result<Self, ConfigError> {
        let refuse = |reason: &str| ConfigError::new(Self::ENV, base, reason);
        let url = Url::parse(base.trim()).map_err(|e| refuse(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(refuse(
                "expected the test harness's http://host:port (or unset: off)",
            ));
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(refuse("expected http://host:port[/path], nothing more"));
        }
        Ok(Self { target: Some(url) })
    }

    /// Reads [`Self::ENV`]: unset or empty is off.
    ///
    /// Fails when the value is not a URL [`Self::forwarding_to`] accepts.
    pub fn from_value(raw: Option<String>) -> Result<Self, ConfigError> {
        match raw.filter(|v| !v.trim().is_empty()) {
            None => Ok(Self::off()),
            Some(value) => Self::forwarding_to(&value),
        }
    }

    /// The address calls may go to; `None` when off.
    pub fn target(&self) -> Option<&Url> {
        self.target.as_ref()
    }

    /// Whether `url` is the harness's address: same scheme, host and port,
    /// and a path at or under the configured one.
    fn allows(&self, url: &Url) -> bool {
        let Some(base) = &self.target else {
            return false;
        };
        let base_path = base.path().trim_end_matches('/');
        let path = url.path();
        let under = path == base_path
            || path
                .strip_prefix(base_path)
                .is_some_and(|rest| rest.starts_with('/'));
        url.scheme() == base.scheme()
            && url.host() == base.host()
            && url.port_or_known_default() == base.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && under
    }

    /// The endpoint's route (nothing when off), to be served inside the
    /// traced layers so the forwarded calls carry the request's context.
    pub(crate) fn routes(&self) -> Router {
        if self.target.is_none() {
            return Router::new();
        }
        Router::new().route(
            "/_w3c/test",
            post(w3c_test).with_state(Forwarder {
                harness: self.clone(),
                client: harness_client(),
            }),
        )
    }
}

/// The traced client of the W3C harness endpoint. It follows no redirect:
/// the endpoint may reach the harness's address and nothing else, not even
/// where that address points on.
fn harness_client() -> reqwest_middleware::ClientWithMiddleware {
    let inner = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a TLS-less reqwest client always builds");
    reqwest_middleware::ClientBuilder::new(inner)
        .with(tracelab_telemetry::client::TracePropagation)
        .build()
}

#[derive(Clone)]
struct Forwarder {
    harness: W3cHarness,
    client: reqwest_middleware::ClientWithMiddleware,
}

/// One entry of the W3C trace-context test harness request.
#[derive(Debug, Deserialize)]
struct W3cCall {
    url: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

/// `POST /_w3c/test`: for each `{url, arguments}`, POST `arguments` as JSON
/// to `url` with the current context propagated, then answer 200. Every
/// URL is checked before anything is sent, so a batch holding one foreign
/// target sends nothing.
async fn w3c_test(
    State(forwarder): State<Forwarder>,
    Json(calls): Json<Vec<W3cCall>>,
) -> Result<StatusCode, ApiError> {
    let mut targets = Vec::with_capacity(calls.len());
    for call in calls {
        let url = Url::parse(&call.url)
            .map_err(|e| ApiError::bad_request("invalid_url", format!("{}: {e}", call.url)))?;
        if !forwarder.harness.allows(&url) {
            // The configured address is not named: it is the lab's business.
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "target_not_allowed",
                format!(
                    "{url} is not the W3C test harness's address; this endpoint forwards only there"
                ),
            ));
        }
        targets.push((url, call.arguments));
    }
    for (url, arguments) in targets {
        // The harness judges the headers we send, not the replies we get.
        if let Err(e) = forwarder.client.post(url).json(&arguments).send().await {
            tracing::warn!(error = %e, "w3c harness callback failed");
        }
    }
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    use super::*;
    use crate::app::{StandardLimits, standard};

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// A service with no routes of its own and the harness as given.
    fn service(w3c: &W3cHarness) -> Router {
        standard(Router::new(), StandardLimits::default(), w3c)
    }

    async fn post_calls(app: Router, calls: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let request = http::Request::post("/_w3c/test")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(calls.to_string()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// A listener on port 0 standing for a server the endpoint could be
    /// aimed at, and its address as `http://ip:port`.
    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        (listener, base)
    }

    /// Answers one request with 200; returns what was sent, or `None` when
    /// nobody connected within `wait`.
    async fn one_request(listener: TcpListener, wait: Duration) -> Option<String> {
        let (mut socket, _) = tokio::time::timeout(wait, listener.accept())
            .await
            .ok()?
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.ok()?;
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                body.len() >= length
            });
            if n == 0 || complete {
                break;
            }
        }
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    #[tokio::test]
    async fn the_endpoint_is_off_by_default() {
        let (listener, base) = listener().await;
        let (status, body) = post_calls(
            service(&W3cHarness::off()),
            serde_json::json!([{"url": format!("{base}/callback"), "arguments": []}]),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found", "like any unknown route");
        assert_eq!(
            one_request(listener, Duration::from_millis(300)).await,
            None,
            "nothing was sent"
        );
    }

    #[tokio::test]
    async fn a_target_other_than_the_harness_is_refused_and_nothing_is_sent() {
        let (harness, harness_base) = listener().await;
        let (elsewhere, other_base) = listener().await;
        let app = service(&W3cHarness::forwarding_to(&harness_base).unwrap());
        // The foreign target second: the first, allowed one must not be sent either.
        let (status, body) = post_calls(
            app,
            serde_json::json!([
                {"url": format!("{harness_base}/callback"), "arguments": []},
                {"url": format!("{other_base}/v1/charges"), "arguments": {"amount": 1}},
            ]),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "target_not_allowed");
        assert_eq!(
            one_request(elsewhere, Duration::from_millis(300)).await,
            None,
            "nothing reached the other listener"
        );
        assert_eq!(
            one_request(harness, Duration::from_millis(300)).await,
            None,
            "a refused batch sends nothing at all"
        );
    }

    #[tokio::test]
    async fn calls_to_the_harness_are_forwarded() {
        let (harness, base) = listener().await;
        let app = service(&W3cHarness::forwarding_to(&base).unwrap());
        let received = tokio::spawn(one_request(harness, Duration::from_secs(10)));
        let (status, body) = post_calls(
            app,
            serde_json::json!([{"url": format!("{base}/callback"), "arguments": [{"url": "x", "arguments": []}]}]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let request = received.await.unwrap().expect("the harness got the call");
        assert!(request.starts_with("POST /callback "), "{request}");
        let (_, sent) = request.split_once("\r\n\r\n").unwrap();
        let sent: serde_json::Value = serde_json::from_str(sent).unwrap();
        assert_eq!(sent, serde_json::json!([{"url": "x", "arguments": []}]));
    }

    #[test]
    fn off_unless_set() {
        assert_eq!(W3cHarness::from_value(None).unwrap(), W3cHarness::off());
        assert_eq!(
            W3cHarness::from_value(Some("  ".into())).unwrap(),
            W3cHarness::off()
        );
        assert!(!W3cHarness::off().allows(&url("http://127.0.0.1:7777/")));
        let on = W3cHarness::from_value(Some("http://127.0.0.1:7777".into())).unwrap();
        assert_eq!(on.target().unwrap().as_str(), "http://127.0.0.1:7777/");
    }

    #[test]
    fn refuses_values_that_are_not_one_address() {
        for bad in [
            "127.0.0.1:7777",
            "ftp://127.0.0.1/",
            "http://",
            "http://user:pw@127.0.0.1:7777",
            "http://127.0.0.1:7777/?x=1",
            "http://127.0.0.1:7777/#f",
            "not a url",
        ] {
            let err = W3cHarness::from_value(Some(bad.into())).expect_err(bad);
            assert!(err.to_string().contains("TRACELAB_W3C_HARNESS"), "{err}");
        }
    }

    #[test]
    fn forwards_only_to_the_harness_address() {
        let harness = W3cHarness::forwarding_to("http://127.0.0.1:7777").unwrap();
        for ok in [
            "http://127.0.0.1:7777/",
            "http://127.0.0.1:7777/callback",
            "http://127.0.0.1:7777/a/b?x=1",
        ] {
            assert!(harness.allows(&url(ok)), "{ok}");
        }
        for other in [
            "http://127.0.0.1:7778/callback",
            "https://127.0.0.1:7777/callback",
            "http://localhost:7777/callback",
            "http://127.0.0.2:7777/callback",
            "http://user@127.0.0.1:7777/callback",
            "http://127.0.0.1/callback",
        ] {
            assert!(!harness.allows(&url(other)), "{other}");
        }
        let scoped = W3cHarness::forwarding_to("http://h:80/suite/").unwrap();
        assert!(scoped.allows(&url("http://h/suite/cb")));
        assert!(scoped.allows(&url("http://h/suite")));
        assert!(!scoped.allows(&url("http://h/suitex/cb")));
        assert!(!scoped.allows(&url("http://h/other")));
    }
}
