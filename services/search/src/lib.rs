//! search: product search over the seeded catalogue in Postgres.
//!
//! `GET /products?q=tea&limit=20` → `{"products":[{"id","sku","name","description","price","currency"}]}`.
//! The busiest and cheapest route of the lab: in the lesson's sampling
//! example it is the one kept at 1%.
//!
//! Run: `cargo run -p search` (listens on 127.0.0.1:8082; needs Postgres).

pub mod config;

use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_contract::service::ServiceName;
use tracelab_faults::FaultRegistry;
use tracelab_service::{ApiError, App, Check, Json, W3cHarness, health_response};
use tracelab_telemetry::db::DbTarget;

pub use config::Config;

#[derive(Clone)]
pub struct AppState {
    pub faults: FaultRegistry,
    pub pool: PgPool,
    pub db: DbTarget,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/products", get(search))
        .route("/health", get(health))
        .with_state(state)
}

pub fn router(state: AppState, w3c: &W3cHarness) -> Router {
    tracelab_service::app::service_router(routes(state), w3c)
}

async fn health(State(state): State<AppState>) -> Response {
    health_response(
        "search",
        vec![Check::new("postgres", tracelab_db::ping(&state.pool).await)],
        None,
    )
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    #[serde(default)]
    q: String,
    limit: Option<i64>,
}

/// One product as returned to clients.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: String,
}

const SEARCH_SQL: &str = "SELECT id, sku, name, description, price, currency FROM products \
     WHERE name ILIKE $1 OR description ILIKE $1 OR sku ILIKE $1 ORDER BY id LIMIT $2";

async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let q = params.q.trim();
    // Postgres refuses a NUL in text, and no product name holds a control
    // character: say so here instead of failing in the database.
    if let Some((at, c)) = q.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "q must not contain control characters (U+{:04X} at character {})",
                c as u32,
                at + 1
            ),
        ));
    }
    if q.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "query_too_long",
            "q must be at most 100 characters",
        ));
    }
    let limit = params.limit.unwrap_or(20);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 50",
        ));
    }
    // Escape LIKE wildcards so a user's % or _ is matched literally.
    let pattern = format!(
        "%{}%",
        q.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let pause_ms = match state.faults.inject(FaultPoint::SearchQuery).await? {
        Some(FaultKind::SlowQuery { ms }) => ms,
        _ => 0,
    };
    // The slow-query fault makes the database itself slow, so the time
    // lands inside the db span.
    let products: Vec<Product> = tracelab_db::query_with_pause(
        &state.db,
        "SELECT",
        "products",
        SEARCH_SQL,
        Duration::from_millis(pause_ms),
        &state.pool,
        |mut conn, sql| async move {
            sqlx::query_as(sql)
                .bind(&pattern)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
        },
    )
    .await
    .map_err(|e| ApiError::internal("search_failed", e))?;
    let cx = opentelemetry::Context::current();
    cx.span()
        .set_attribute(KeyValue::new("search.results", products.len() as i64));
    Ok(Json(
        serde_json::json!({ "products": products, "count": products.len() }),
    ))
}

/// Connects to Postgres (waiting up to 10 s), migrates and binds.
///
/// Fails when Postgres is unreachable, migrations fail or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let pool = tracelab_db::connect(
        &config.database_url,
        config.db_pool_size,
        Duration::from_secs(10),
    )
    .await?;
    tracelab_db::migrate(&pool).await?;
    let (faults, admin) = tracelab_faults::for_service(ServiceName::Search, &config.admin.token);
    let state = AppState {
        faults,
        db: DbTarget::from_url(&config.database_url),
        pool,
    };
    Ok(App::bind(config.listen, router(state, &config.w3c_harness))
        .await?
        .with_admin(config.admin.listen, admin)
        .await?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use sqlx::postgres::PgPoolOptions;
    use tracelab_service::testing::call_json;

    use super::*;

    /// A state whose database fails if it is ever used: a request refused
    /// by validation never gets that far.
    fn state_without_database() -> AppState {
        let url = "postgres://postgres@127.0.0.1:1/unreachable";
        AppState {
            faults: FaultRegistry::new(ServiceName::Search),
            pool: PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(2))
                .connect_lazy(url)
                .unwrap(),
            db: DbTarget::from_url(url),
        }
    }

    async fn get(uri: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        call_json(routes(state_without_database()), request).await
    }

    #[tokio::test]
    async fn control_characters_in_q_are_a_400_not_a_database_error() {
        for q in ["tea%00", "%00", "te%07a", "matcha%1b%5b2J"] {
            let (status, body) = get(&format!("/products?q={q}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
            assert_eq!(body["error"]["code"], "invalid_query", "{q}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("control characters")),
                "{q}: {body}"
            );
        }
        let (_, body) = get("/products?q=tea%00").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("U+0000 at character 4")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn other_bad_input_is_refused_before_the_database() {
        let (status, body) = get(&format!("/products?q={}", "a".repeat(101))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("query_too_long"))
        );
        let (status, body) = get("/products?q=tea&limit=0").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_limit"))
        );
    }
}
