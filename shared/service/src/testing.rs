//! For the services' `oneshot` tests (feature `test-support`).

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

/// Sends `request` through `router` (no listener, no network) and reads the
/// answer as JSON.
///
/// # Panics
/// When the answer is not JSON: every answer of a tracelab service is, so
/// that is the test's failure to report, with the body that came back.
pub async fn call_json(router: Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("reading the body: {e}"));
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

/// Asserts the JSON error shape every 4xx answer uses,
/// `{"error":{"code","message"}}`, with this status and code and a message.
///
/// # Panics
/// When the answer differs, showing the body.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
}
