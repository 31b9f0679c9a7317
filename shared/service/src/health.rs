//! `GET /health`: 200 when every dependency answers, 503 otherwise.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};

/// One dependency's state.
pub struct Check {
    pub name: &'static str,
    pub result: Result<(), String>,
}

impl Check {
    pub fn new(name: &'static str, result: Result<(), String>) -> Self {
        Self { name, result }
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
