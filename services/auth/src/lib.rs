//! auth: logs demo users in and verifies their bearer tokens.
//!
//! - `POST /login` `{"username","password"}` → `{"token","token_type","expires_at","user_id"}`
//! - `POST /verify` with `Authorization: Bearer <token>` → `{"user_id","username","expires_at"}`,
//!   or 401 JSON when the token is missing, forged or expired.
//!
//! Demo users: alice, bob and carol, each with password `<name>-password`
//! (`tracelab_contract::users`).
//!
//! Run: `cargo run -p auth` (listens on 127.0.0.1:8081).

pub mod config;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use serde::Deserialize;
use serde_json::{Value, json};

use tracelab_service::{ApiError, App, Check, Json, W3cHarness, health_response};

pub use config::Config;
use token::{Claims, Signer};
use tracelab_contract::fault::FaultPoint;
use tracelab_contract::service::ServiceName;
use tracelab_contract::users::DEMO_USERS;
use tracelab_faults::FaultRegistry;

/// A demo account.
struct User {
    id: &'static str,
    password_digest: Vec<u8>,
}

/// Shared state.
#[derive(Clone)]
pub struct AppState {
    faults: FaultRegistry,
    signer: Signer,
    users: Arc<HashMap<&'static str, User>>,
    ttl_secs: i64,
}

impl AppState {
    pub fn new(config: &Config, faults: FaultRegistry) -> Self {
        let signer = Signer::new(&config.token_secret);
        let users = DEMO_USERS
            .iter()
            .map(|user| {
                (
                    user.username,
                    User {
                        id: user.user_id,
                        password_digest: signer.password_digest(user.password),
                    },
                )
            })
            .collect();
        Self {
            faults,
            signer,
            users: Arc::new(users),
            ttl_secs: config.token_ttl_secs,
        }
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/verify", post(verify))
        .route("/health", get(health))
        .with_state(state)
}

pub fn router(state: AppState, w3c: &W3cHarness) -> Router {
    tracelab_service::app::service_router(routes(state), w3c)
}

async fn health() -> Response {
    health_response("auth", vec![Check::ok("self")], None)
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<Value>, ApiError> {
    let user = state.users.get(req.username.as_str()).filter(|u| {
        state
            .signer
            .password_matches(&req.password, &u.password_digest)
    });
    let Some(user) = user else {
        return Err(ApiError::unauthorized("unknown user or wrong password"));
    };
    let iat = now();
    let claims = Claims {
        sub: user.id.to_string(),
        name: req.username.clone(),
        iat,
        exp: iat + state.ttl_secs,
    };
    opentelemetry::Context::current()
        .span()
        .set_attribute(KeyValue::new("enduser.id", user.id));
    tracing::info!(user_id = user.id, "login");
    Ok(Json(json!({
        "token": state.signer.issue(&claims),
        "token_type": "Bearer",
        "expires_at": rfc3339(claims.exp),
        "user_id": user.id,
    })))
}

/// The bearer token from an `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.faults.inject(FaultPoint::AuthVerify).await?;
    let token = bearer(&headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let claims = state
        .signer
        .verify(token, now())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    opentelemetry::Context::current()
        .span()
        .set_attribute(KeyValue::new("enduser.id", claims.sub.clone()));
    Ok(Json(json!({
        "user_id": claims.sub,
        "username": claims.name,
        "expires_at": rfc3339(claims.exp),
    })))
}

/// Builds auth and binds its listener (port 0 allowed).
///
/// Fails when the address cannot be bound.
pub async fn build(config: Config) -> anyhow::Result<App> {
    if config.token_secret_is_random {
        tracing::info!(
            "TRACELAB_TOKEN_SECRET is not set: tokens are signed with a secret drawn at start \
             and end when auth restarts"
        );
    }
    let (faults, admin) = tracelab_faults::for_service(ServiceName::Auth, &config.admin.token);
    let router = router(AppState::new(&config, faults), &config.w3c_harness);
    Ok(App::bind(config.listen, router)
        .await?
        .with_admin(config.admin.listen, admin)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tower::ServiceExt;

    fn app(ttl: i64) -> Router {
        routes(AppState::new(
            &Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                token_secret: "test-secret-0123456789".into(),
                token_secret_is_random: false,
                token_ttl_secs: ttl,
                w3c_harness: W3cHarness::off(),
                admin: tracelab_service::config::Admin {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    token: tracelab_service::config::AdminToken::random(),
                },
            },
            FaultRegistry::new(ServiceName::Auth),
        ))
    }

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, Value) {
        let response = app.oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn login_req(user: &str, password: &str) -> Request<Body> {
        Request::post("/login")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"username": user, "password": password}).to_string(),
            ))
            .unwrap()
    }

    fn verify_req(token: &str) -> Request<Body> {
        Request::post("/verify")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn login_then_verify() {
        let app = app(60);
        let (status, body) = call(app.clone(), login_req("bob", "bob-password")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().unwrap().to_string();
        let (status, body) = call(app.clone(), verify_req(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["user_id"], "u-1002");
        assert_eq!(body["username"], "bob");
    }

    #[tokio::test]
    async fn refusals_are_401_json() {
        let app = app(60);
        let (status, body) = call(app.clone(), login_req("bob", "alice-password")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, body) = call(app.clone(), verify_req("v1.abc.def")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"]["message"].as_str().unwrap().contains("token"));
        let req = Request::post("/verify").body(Body::empty()).unwrap();
        let (status, _) = call(app, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let app = app(1);
        let (_, body) = call(app.clone(), login_req("carol", "carol-password")).await;
        let token = body["token"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (status, body) = call(app, verify_req(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["message"], "token expired");
    }
}
