//! The authenticated admin API that `tracelab fault` and the console drive.
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/faults` | 200 [`FaultsReport`] |
//! | `PUT /admin/faults` with a [`FaultSpec`] | 200 [`ActiveFault`]; 400 naming the field |
//! | `DELETE /admin/faults/{point}` | 200 `{"cleared":point}`; 404 when none |
//! | `DELETE /admin/faults` | 200 `{"cleared":n}` |
//! | `GET`/`PUT /admin/faults/_visible` `{"visible":bool}` | 200 `{"visible":bool}` |
//! | `GET`/`PUT /admin/sampling` | the head sampling rules ([`crate::sampling`]) |
//!
//! Every request needs `Authorization: Bearer <admin token>`; otherwise 401.
//! Bodies are JSON with `Content-Type: application/json`. Errors use the
//! project's shape, `{"error":{"code","message"}}`; a refused spec answers
//! 400 `invalid_fault` with `"field"` naming the culprit when there is one.
//!
//! Changes are logged at `debug` only: the service's logs are in the
//! learner's view, and an `info` line naming the point would give an
//! exercise away.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::{HeaderValue, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracelab_contract::fault::{
    ActiveFault, FaultError, FaultPoint, FaultSpec, FaultsReport, Visibility,
};
use tracelab_service::{ApiError, Json};
use tracelab_telemetry::sampling::HeadControl;

use crate::registry::FaultRegistry;

/// The admin routes for `registry` and the process's head sampler
/// (`tracelab_telemetry::sampling::installed`), guarded by `admin_token`,
/// for the service's admin listener. An empty token refuses every request.
pub fn admin_router(registry: FaultRegistry, admin_token: String) -> Router {
    admin_router_with_head(
        registry,
        admin_token,
        tracelab_telemetry::sampling::installed(),
    )
}

/// [`admin_router`] over the head sampler `head` (`None`: the sampling
/// routes answer 409).
pub fn admin_router_with_head(
    registry: FaultRegistry,
    admin_token: String,
    head: Option<HeadControl>,
) -> Router {
    if admin_token.is_empty() {
        tracing::warn!("empty admin token: the fault admin API refuses every request");
    }
    let token = TokenDigest::new(&admin_token);
    Router::new()
        .route(
            "/admin/faults",
            get(report).put(set_fault).delete(clear_all),
        )
        .route("/admin/faults/_visible", get(get_visible).put(set_visible))
        .route("/admin/faults/{point}", delete(clear_one))
        .merge(crate::sampling::routes(head))
        .route_layer(from_fn_with_state(token, require_token))
        .with_state(registry)
}

/// The token's SHA-256, so the comparison takes the same time whatever the
/// length or content of what a client sends.
#[derive(Clone)]
struct TokenDigest(Option<[u8; 32]>);

impl TokenDigest {
    fn new(token: &str) -> Self {
        Self((!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into()))
    }

    fn matches(&self, candidate: &str) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let diff = expected
            .iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

async fn require_token(State(token): State<TokenDigest>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim());
    match presented {
        Some(value) if token.matches(value) => next.run(req).await,
        _ => {
            let mut response =
                ApiError::unauthorized("missing or invalid admin token").into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn report(State(registry): State<FaultRegistry>) -> Json<FaultsReport> {
    Json(FaultsReport {
        service: registry.service().to_string(),
        points: registry.points().iter().map(|p| p.to_string()).collect(),
        faults: registry.list(),
        visible: registry.visible(),
    })
}

async fn set_fault(
    State(registry): State<FaultRegistry>,
    Json(body): Json<Value>,
) -> Result<Json<ActiveFault>, ApiError> {
    let spec = FaultSpec::from_value(body).map_err(invalid)?;
    let active = registry.set(spec).map_err(invalid)?;
    tracing::debug!(point = %active.spec.point, kind = active.spec.kind.name(), "fault set");
    Ok(Json(active))
}

fn invalid(e: FaultError) -> ApiError {
    let error = ApiError::bad_request("invalid_fault", e.to_string());
    match e.field() {
        Some(field) => error.with_details(json!({ "field": field })),
        None => error,
    }
}

async fn clear_one(
    State(registry): State<FaultRegistry>,
    Path(point): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // A name outside the catalogue has no fault either: same answer, so
    // the wire stays the same whatever the name.
    let cleared = point
        .parse::<FaultPoint>()
        .is_ok_and(|parsed| registry.clear(parsed));
    if cleared {
        tracing::debug!(point = %point, "fault cleared");
        Ok(Json(json!({ "cleared": point })))
    } else {
        Err(ApiError::not_found(format!("no fault at point {point:?}")))
    }
}

async fn clear_all(State(registry): State<FaultRegistry>) -> Json<Value> {
    let n = registry.clear_all();
    tracing::debug!(cleared = n, "all faults cleared");
    Json(json!({ "cleared": n }))
}

async fn get_visible(State(registry): State<FaultRegistry>) -> Json<Visibility> {
    Json(Visibility {
        visible: registry.visible(),
    })
}

async fn set_visible(
    State(registry): State<FaultRegistry>,
    Json(body): Json<Value>,
) -> Result<Json<Visibility>, ApiError> {
    // Parsed here rather than by the extractor, which would answer 422.
    let body: Visibility = serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"visible\": true|false}}: {e}"),
        )
    })?;
    registry.set_visible(body.visible);
    tracing::debug!(visible = body.visible, "fault visibility changed");
    Ok(Json(body))
}

#[cfg(test)]
pub(crate) mod tests {
    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use tracelab_contract::fault::FaultKind;
    use tracelab_contract::service::ServiceName;

    use super::*;

    const TOKEN: &str = "s3cret-token";

    fn app() -> (Router, FaultRegistry) {
        let registry = FaultRegistry::new(ServiceName::Auth);
        (admin_router(registry.clone(), TOKEN.to_string()), registry)
    }

    /// One request to `app`, with the token and JSON body given; the
    /// status and the JSON answer (`Null` when empty).
    pub(crate) async fn call(
        app: &Router,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    #[tokio::test]
    async fn every_route_needs_the_token() {
        let (app, registry) = app();
        registry
            .set(FaultSpec::new("auth.verify", FaultKind::DropSpans))
            .unwrap();
        let routes = [
            (Method::GET, "/admin/faults", None),
            (
                Method::PUT,
                "/admin/faults",
                Some(r#"{"point":"auth.verify","kind":"dead_letter"}"#),
            ),
            (Method::DELETE, "/admin/faults", None),
            (Method::DELETE, "/admin/faults/auth.verify", None),
            (Method::GET, "/admin/faults/_visible", None),
            (
                Method::PUT,
                "/admin/faults/_visible",
                Some(r#"{"visible":true}"#),
            ),
        ];
        for (method, uri, body) in routes {
            for token in [
                None,
                Some("wrong"),
                Some(""),
                Some("s3cret-token-and-more"),
                Some("s3cret-toke"),
            ] {
                let (status, value) = call(&app, method.clone(), uri, token, body).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {uri} with {token:?}"
                );
                assert_eq!(value["error"]["code"], "unauthorized");
            }
            let (status, _) = call(&app, method.clone(), uri, Some(TOKEN), body).await;
            assert!(
                status.is_success(),
                "{method} {uri} with the token: {status}"
            );
            registry
                .set(FaultSpec::new("auth.verify", FaultKind::DropSpans))
                .unwrap();
            registry.set_visible(false);
        }
    }

    #[tokio::test]
    async fn refused_requests_change_nothing() {
        let (app, registry) = app();
        registry
            .set(FaultSpec::new("auth.verify", FaultKind::DropSpans))
            .unwrap();
        call(&app, Method::DELETE, "/admin/faults", Some("wrong"), None).await;
        call(
            &app,
            Method::DELETE,
            "/admin/faults/auth.verify",
            None,
            None,
        )
        .await;
        let put = r#"{"point":"auth.telemetry","kind":"dead_letter"}"#;
        call(&app, Method::PUT, "/admin/faults", Some("wrong"), Some(put)).await;
        call(
            &app,
            Method::PUT,
            "/admin/faults/_visible",
            Some("wrong"),
            Some(r#"{"visible":true}"#),
        )
        .await;
        let points: Vec<String> = registry.list().into_iter().map(|f| f.spec.point).collect();
        assert_eq!(points, ["auth.verify"]);
        assert!(!registry.visible());
    }

    #[tokio::test]
    async fn a_put_without_for_answers_when_the_fault_expires() {
        let (app, registry) = app();
        let (status, value) = call(
            &app,
            Method::PUT,
            "/admin/faults",
            Some(TOKEN),
            Some(r#"{"point":"auth.verify","kind":"outage"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(value["for"], "15m");
        let set_at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(value["set_at"].clone()).unwrap();
        let expires_at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(value["expires_at"].clone()).unwrap();
        assert_eq!(expires_at - set_at, chrono::Duration::minutes(15));

        let (status, value) = call(
            &app,
            Method::PUT,
            "/admin/faults",
            Some(TOKEN),
            Some(r#"{"point":"auth.verify","kind":"outage","for":"never"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(value["for"], "never");
        assert_eq!(value["expires_at"], Value::Null);
        assert_eq!(registry.list()[0].expires_at, None);

        let (_, report) = call(&app, Method::GET, "/admin/faults", Some(TOKEN), None).await;
        assert_eq!(report["faults"][0]["for"], "never");
    }

    #[tokio::test]
    async fn the_scheme_must_be_bearer() {
        let (app, _) = app();
        let request = Request::get("/admin/faults")
            .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let request = Request::get("/admin/faults")
            .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_empty_token_refuses_everyone() {
        let app = admin_router(FaultRegistry::new(ServiceName::Auth), String::new());
        for header in ["Bearer ", "Bearer", ""] {
            let request = Request::get("/admin/faults")
                .header(header::AUTHORIZATION, header)
                .body(Body::empty())
                .unwrap();
            assert_eq!(
                app.clone().oneshot(request).await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "{header:?}"
            );
        }
    }

    #[tokio::test]
    async fn set_list_clear_round_trip() {
        let (app, registry) = app();
        let (status, report) = call(&app, Method::GET, "/admin/faults", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            report,
            json!({"service":"auth","points":["auth.verify","auth.telemetry"],"faults":[],"visible":false})
        );

        let (status, active) = call(
            &app,
            Method::PUT,
            "/admin/faults",
            Some(TOKEN),
            Some(
                r#"{"point":"auth.verify","kind":"latency","ms":300,"probability":0.5,"for":"5m"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{active}");
        assert_eq!(active["point"], "auth.verify");
        assert_eq!(active["kind"], "latency");
        assert_eq!(active["ms"], 300);
        assert_eq!(active["for"], "5m");
        assert_eq!(active["active"], true);
        assert!(active["expires_at"].is_string());
        assert_eq!(
            registry.is_active(FaultPoint::AuthVerify),
            Some(FaultKind::Latency {
                ms: 300,
                jitter_ms: 0
            })
        );

        let put = r#"{"point":"auth.telemetry","kind":"error","status":503}"#;
        assert_eq!(
            call(&app, Method::PUT, "/admin/faults", Some(TOKEN), Some(put))
                .await
                .0,
            StatusCode::OK
        );

        let (_, report) = call(&app, Method::GET, "/admin/faults", Some(TOKEN), None).await;
        let report: FaultsReport = serde_json::from_value(report).unwrap();
        assert_eq!(report.faults.len(), 2);
        // Sorted by point name: auth.telemetry before auth.verify.
        assert_eq!(
            report.faults[1],
            serde_json::from_value::<ActiveFault>(active).unwrap()
        );
        assert_eq!(
            report.faults[0].spec.kind,
            FaultKind::Error {
                status: 503,
                message: None
            }
        );

        let (status, body) = call(
            &app,
            Method::DELETE,
            "/admin/faults/auth.verify",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"cleared":"auth.verify"}))
        );
        assert_eq!(registry.is_active(FaultPoint::AuthVerify), None);
        let (status, body) = call(
            &app,
            Method::DELETE,
            "/admin/faults/auth.verify",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");

        let (status, body) = call(&app, Method::DELETE, "/admin/faults", Some(TOKEN), None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"cleared":1})));
        assert!(registry.list().is_empty());
    }

    #[tokio::test]
    async fn bad_specs_are_400_naming_the_field() {
        let (app, registry) = app();
        let cases = [
            (
                r#"{"point":"auth.verify","kind":"latency","ms":5,"probability":2}"#,
                Some("probability"),
                "probability must be within 0..=1",
            ),
            (
                r#"{"point":"auth.x","kind":"dead_letter"}"#,
                Some("point"),
                r#"unknown point "auth.x" (known: auth.verify, auth.telemetry)"#,
            ),
            (
                r#"{"point":"auth.verify","kind":"latency","ms":60001}"#,
                Some("latency.ms"),
                "latency.ms must be <= 60000",
            ),
            (
                r#"{"point":"auth.verify","kind":"latency","ms":5,"for":"soon"}"#,
                None,
                "invalid duration \"soon\"",
            ),
            (
                r#"{"point":"auth.verify","kind":"warp"}"#,
                None,
                "unknown variant `warp`",
            ),
            (
                r#"{"point":"auth.verify","kind":"latency"}"#,
                None,
                "missing field `ms`",
            ),
            (r#"[1,2]"#, None, "invalid fault spec"),
        ];
        for (body, field, message) in cases {
            let (status, value) =
                call(&app, Method::PUT, "/admin/faults", Some(TOKEN), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {value}");
            assert_eq!(value["error"]["code"], "invalid_fault", "{body}: {value}");
            let text = value["error"]["message"].as_str().unwrap();
            assert!(text.contains(message), "{body}: {text}");
            match field {
                Some(field) => assert_eq!(value["error"]["field"], field, "{body}: {value}"),
                None => assert!(value["error"].get("field").is_none(), "{body}: {value}"),
            }
        }
        let (status, value) = call(
            &app,
            Method::PUT,
            "/admin/faults",
            Some(TOKEN),
            Some("{not json"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(value["error"]["code"], "invalid_json");
        assert!(registry.list().is_empty());
    }

    #[tokio::test]
    async fn visibility_toggles() {
        let (app, registry) = app();
        let (status, body) = call(
            &app,
            Method::PUT,
            "/admin/faults/_visible",
            Some(TOKEN),
            Some(r#"{"visible":true}"#),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!({"visible":true})));
        assert!(registry.visible());
        let (_, report) = call(&app, Method::GET, "/admin/faults", Some(TOKEN), None).await;
        assert_eq!(report["visible"], true);
        let (_, body) = call(
            &app,
            Method::GET,
            "/admin/faults/_visible",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(body, json!({"visible":true}));

        let (status, body) = call(
            &app,
            Method::PUT,
            "/admin/faults/_visible",
            Some(TOKEN),
            Some(r#"{"visible":"yes"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(registry.visible(), "a bad body changes nothing");
        call(
            &app,
            Method::PUT,
            "/admin/faults/_visible",
            Some(TOKEN),
            Some(r#"{"visible":false}"#),
        )
        .await;
        assert!(!registry.visible());
    }
}
