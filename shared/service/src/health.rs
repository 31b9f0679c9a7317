//! `GET /health`: 200 when every dependency answers, 503 otherwise.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};

/// One dependency's state.
pub struct Check {
    /// The dependency as `/health` names it, e.g. `postgres`.
    pub name: &'static str,
    /// `Err` holds what `/health` shows for the failed dependency.
    pub result: Result<(), String>,
}

impl Check {
    /// A check named `name`; an error is shown by its `Display` text.
    pub fn new(name: &'static str, result: Result<(), impl std::fmt::Display>) -> Self {
        Self {
            name,
            result: result.map_err(|e| e.to_string()),
        }
    }

    /// A check that always passes: a service with no dependency to probe.
    pub fn ok(name: &'static str) -> Self {
        Self::new(name, Ok::<(), String>(()))
    }
}

/// Builds the health response for `service` from its checks; `extra` is
/// merged in (e.g. active faults, outbox backlog).
pub fn health_response(service: &str, checks: Vec<Check>, extra: Option<Value>) -> Response {
    let healthy = checks.iter().all(|c| c.result.is_ok());
    let mut map = Map::new();
    for check in checks {
        let value = match check.result {
            Ok(()) => Value::from("ok"),
            Err(e) => Value::from(e),
        };
        map.insert(check.name.to_owned(), value);
    }
    let mut body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "service": service,
        "checks": map,
        // Lost spans are not a reason to be unhealthy, but they must be visible.
        "telemetry": tracelab_telemetry::stats::export_stats(),
    });
    if let (Some(Value::Object(extra)), Some(obj)) = (extra, body.as_object_mut()) {
        obj.extend(extra);
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
