//! The console's web page. Not built yet: `GET /` says so.

use axum::Router;
use axum::routing::get;

/// The page's routes.
pub(crate) fn router() -> Router {
    Router::new().route(
        "/",
        get(|| async {
            "tracelab console: the web page is not built yet; the API is under /api/ (docs/console-api.md)\n"
        }),
    )
}
